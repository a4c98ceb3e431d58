package config

import (
	"fmt"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// Protocol is how a service port is served.
type Protocol uint8

// Protocols.
const (
	TCP Protocol = iota
	HTTP1
	HTTP2 // includes gRPC
)

func (p Protocol) String() string { return [...]string{"tcp", "http", "http2"}[p] }

// ProtocolOf maps a workload API app protocol: HTTP/1.1, HTTP/2 and gRPC
// are served at L7, everything else (TCP, TLS, unknown) at L4.
func ProtocolOf(p workloadapi.AppProtocol) Protocol {
	switch p {
	case workloadapi.AppProtocol_HTTP11:
		return HTTP1
	case workloadapi.AppProtocol_HTTP2, workloadapi.AppProtocol_GRPC:
		return HTTP2
	}
	return TCP
}

// Service is a compiled workload API Service.
type Service struct {
	Key       string // "<namespace>/<hostname>"
	Name      string
	Namespace string
	Hostname  string
	VIPs      []netip.Addr
	Ports     []ServicePort
}

// ServicePort is one port of a service.
type ServicePort struct {
	Port, TargetPort uint32
	Protocol         Protocol
}

// Port returns the service port p, if declared.
func (s *Service) Port(p uint32) (ServicePort, bool) {
	for _, sp := range s.Ports {
		if sp.Port == p {
			return sp, true
		}
	}
	return ServicePort{}, false
}

// Workload is a compiled workload API Workload.
type Workload struct {
	UID, Name, Namespace string
	IPs                  []netip.Addr
	Identity             spiffeid.ID
	Healthy              bool
	Node                 string
	CanonicalName        string
	CanonicalRevision    string
	WorkloadName         string
	ClusterID            string
	TrustDomain          string
	ServiceAccount       string
	// Services maps a service key to its service-port → target-port map.
	Services map[string]map[uint32]uint32
}

type address struct {
	svc *Service
	wl  *Workload
}

// compileAddress validates m with the workload API's shared rules
// (workloadapi.ValidateAddress, the same ztunnel applies, so both proxies
// refuse the same resources) and compiles it. The rules also tie name to
// the entry's key (workload uid or "<namespace>/<hostname>"): two names for
// one entry would let the removal of either drop it. Every error wraps
// workloadapi.ErrInvalid.
func compileAddress(name string, m proto.Message) (address, error) {
	wl, svc, err := workloadapi.ValidateAddress(name, m)
	if err != nil {
		return address{}, err
	}
	if svc != nil {
		return address{svc: compileService(svc)}, nil
	}
	w, err := compileWorkload(wl)
	if err != nil {
		return address{}, fmt.Errorf("workload: %w", err)
	}
	return address{wl: w}, nil
}

// compileService compiles s, which must have passed
// workloadapi.ValidateService.
func compileService(s *workloadapi.Service) *Service {
	out := &Service{Key: s.GetNamespace() + "/" + s.GetHostname(), Name: s.GetName(), Namespace: s.GetNamespace(), Hostname: s.GetHostname()}
	for _, na := range s.GetAddresses() {
		ip, _ := netip.AddrFromSlice(na.GetAddress())
		out.VIPs = append(out.VIPs, ip.Unmap())
	}
	for _, p := range s.GetPorts() {
		out.Ports = append(out.Ports, ServicePort{Port: p.GetServicePort(), TargetPort: p.GetTargetPort(), Protocol: ProtocolOf(p.GetAppProtocol())})
	}
	return out
}

// compileWorkload compiles w, which must have passed
// workloadapi.ValidateWorkload.
func compileWorkload(w *workloadapi.Workload) (*Workload, error) {
	id, err := workloadapi.WorkloadIdentity(w)
	if err != nil {
		return nil, fmt.Errorf("workload identity: %w: %w", err, workloadapi.ErrInvalid)
	}
	out := &Workload{UID: w.GetUid(), Name: w.GetName(), Namespace: w.GetNamespace(), Identity: id, Healthy: w.GetStatus() == workloadapi.WorkloadStatus_HEALTHY,
		Node: w.GetNode(), CanonicalName: w.GetCanonicalName(), CanonicalRevision: w.GetCanonicalRevision(),
		WorkloadName: w.GetWorkloadName(), ClusterID: w.GetClusterId(), TrustDomain: w.GetTrustDomain(), ServiceAccount: w.GetServiceAccount(),
		Services: map[string]map[uint32]uint32{}}
	for _, b := range w.GetAddresses() {
		ip, _ := netip.AddrFromSlice(b)
		out.IPs = append(out.IPs, ip.Unmap())
	}
	for key, pl := range w.GetServices() {
		m := map[uint32]uint32{}
		for _, p := range pl.GetPorts() {
			m[p.GetServicePort()] = p.GetTargetPort()
		}
		out.Services[key] = m
	}
	return out, nil
}
