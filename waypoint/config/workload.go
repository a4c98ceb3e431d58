package config

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/spiffe"
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

func compileAddress(name string, a *workloadapi.Address) (address, error) {
	switch t := a.GetType().(type) {
	case *workloadapi.Address_Service:
		s, err := compileService(t.Service)
		if err != nil {
			return address{}, err
		}
		// The name keys the store's entry: two names for one entry would
		// let the removal of either drop it.
		if name != s.Key {
			return address{}, fmt.Errorf("resource name %q differs from service key %q", name, s.Key)
		}
		return address{svc: s}, nil
	case *workloadapi.Address_Workload:
		w, err := compileWorkload(t.Workload)
		if err != nil {
			return address{}, err
		}
		if name != w.UID {
			return address{}, fmt.Errorf("resource name %q differs from workload uid %q", name, w.UID)
		}
		return address{wl: w}, nil
	}
	return address{}, fmt.Errorf("address %q has neither a workload nor a service", name)
}

func compileService(s *workloadapi.Service) (*Service, error) {
	if s.GetHostname() == "" || s.GetNamespace() == "" {
		return nil, errors.New("service needs a hostname and a namespace")
	}
	out := &Service{Key: s.GetNamespace() + "/" + s.GetHostname(), Name: s.GetName(), Namespace: s.GetNamespace(), Hostname: s.GetHostname()}
	for _, na := range s.GetAddresses() {
		ip, ok := netip.AddrFromSlice(na.GetAddress())
		if !ok {
			return nil, fmt.Errorf("service %s: bad address %x", out.Key, na.GetAddress())
		}
		out.VIPs = append(out.VIPs, ip.Unmap())
	}
	for _, p := range s.GetPorts() {
		if p.GetServicePort() == 0 || p.GetServicePort() > 65535 || p.GetTargetPort() > 65535 {
			return nil, fmt.Errorf("service %s: bad port %d→%d", out.Key, p.GetServicePort(), p.GetTargetPort())
		}
		out.Ports = append(out.Ports, ServicePort{Port: p.GetServicePort(), TargetPort: p.GetTargetPort(), Protocol: ProtocolOf(p.GetAppProtocol())})
	}
	return out, nil
}

func compileWorkload(w *workloadapi.Workload) (*Workload, error) {
	if w.GetUid() == "" {
		return nil, errors.New("workload without a uid")
	}
	if err := workloadapi.CheckWorkloadEnums(w); err != nil {
		return nil, fmt.Errorf("workload %s: %w", w.GetUid(), err)
	}
	out := &Workload{UID: w.GetUid(), Name: w.GetName(), Namespace: w.GetNamespace(), Healthy: w.GetStatus() == workloadapi.WorkloadStatus_HEALTHY,
		Node: w.GetNode(), CanonicalName: w.GetCanonicalName(), CanonicalRevision: w.GetCanonicalRevision(),
		WorkloadName: w.GetWorkloadName(), ClusterID: w.GetClusterId(), TrustDomain: w.GetTrustDomain(), ServiceAccount: w.GetServiceAccount(),
		Services: map[string]map[uint32]uint32{}}
	for _, b := range w.GetAddresses() {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return nil, fmt.Errorf("workload %s: bad address %x", out.UID, b)
		}
		out.IPs = append(out.IPs, ip.Unmap())
	}
	td := w.GetTrustDomain()
	if td == "" {
		td = "cluster.local"
	}
	sa := w.GetServiceAccount()
	if sa == "" {
		sa = "default"
	}
	if w.GetNamespace() != "" {
		id, err := spiffe.WorkloadID(td, w.GetNamespace(), sa)
		if err != nil {
			return nil, fmt.Errorf("workload %s: identity: %w", out.UID, err)
		}
		out.Identity = id
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
