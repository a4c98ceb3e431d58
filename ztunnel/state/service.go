package state

import (
	"errors"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// Errors of PickEndpoint. They are returned unwrapped (no allocation);
// compare with errors.Is.
var (
	// ErrUnknownPort: the service does not declare the port. Istio's
	// ztunnel then passes the connection through to the original
	// destination.
	ErrUnknownPort = errors.New("service does not declare the port")
	// ErrNoEndpoint: no healthy endpoint can serve the port.
	ErrNoEndpoint = errors.New("no healthy endpoint for the port")
)

// portMap is one service port and the port it maps to.
type portMap struct {
	service, target uint16
}

func lookupPort(ports []portMap, port uint16) (target uint16, ok bool) {
	for _, p := range ports {
		if p.service == port {
			return p.target, true
		}
	}
	return 0, false
}

func portMaps(ports []*workloadapi.Port) []portMap {
	if len(ports) == 0 {
		return nil
	}
	res := make([]portMap, 0, len(ports))
	for _, p := range ports {
		// Ranges were checked by validation.
		res = append(res, portMap{service: uint16(p.GetServicePort()), target: uint16(p.GetTargetPort())})
	}
	return res
}

// Service is a service with its resolved endpoints. It is immutable once
// published (apart from the round-robin cursor); any change to the service
// or to one of its endpoint workloads publishes a new *Service.
type Service struct {
	// Key is "<namespace>/<hostname>".
	Key string
	// Spec is the resource as received. Shared: do not modify.
	Spec *workloadapi.Service

	ports     []portMap
	endpoints []Endpoint
	// candidates index endpoints that may be picked whatever the port:
	// healthy (or any, under health_policy ALLOW_ALL) and reachable.
	candidates []int
	// next is the round-robin cursor of PickEndpoint.
	next atomic.Uint32
}

// Endpoint is one workload backing a service.
type Endpoint struct {
	Workload *workloadapi.Workload
	// Addrs are the workload's addresses, unmapped. Shared.
	Addrs []netip.Addr
	// Identities the endpoint may present: the workload's SPIFFE ID, then
	// the service's subject_alt_names. Shared.
	Identities []string
	// Healthy is the workload's status.
	Healthy bool
	// ports is the workload's PortList for this service.
	ports []portMap
}

// Endpoints returns every member workload (healthy or not), by uid. Shared:
// do not modify.
func (s *Service) Endpoints() []Endpoint { return s.endpoints }

// TargetPort returns the port endpoint ep of s serves service port port
// on, or 0 when it cannot serve it. The workload's own mapping wins; an
// entry missing or with target_port 0 falls back to the service's
// target_port; a service target_port of 0 (a named port the workload does
// not define) means the endpoint cannot serve the port. A port the service
// does not declare gives 0.
func (s *Service) TargetPort(ep *Endpoint, port uint16) uint16 {
	svcTarget, ok := lookupPort(s.ports, port)
	if !ok {
		return 0
	}
	return ep.targetPort(port, svcTarget)
}

func (ep *Endpoint) targetPort(port, svcTarget uint16) uint16 {
	if t, ok := lookupPort(ep.ports, port); ok && t != 0 {
		return t
	}
	return svcTarget
}

// Upstream is the endpoint chosen by PickEndpoint.
type Upstream struct {
	Service  *Service
	Endpoint *Endpoint
	Workload *workloadapi.Workload
	// Port is the target port to dial on the workload.
	Port uint16
	// Addrs and Identities are the endpoint's. Shared: do not modify.
	Addrs      []netip.Addr
	Identities []string
}

// PickEndpoint chooses an endpoint of svc for service port port, round
// robin over the endpoints that are healthy (all of them when the service's
// load_balancing.health_policy is ALLOW_ALL), reachable (an address, a
// hostname or a network gateway) and able to serve the port (see
// TargetPort). It returns ErrUnknownPort when svc does not declare the
// port and ErrNoEndpoint when no endpoint qualifies. It does not allocate.
//
// Istio's ztunnel picks at random, weighted by capacity, and ranks by
// locality under load_balancing routing preferences; zmesh does plain
// round robin and ignores routing preferences and capacity.
func (s *State) PickEndpoint(svc *Service, port uint16) (Upstream, error) {
	svcTarget, ok := lookupPort(svc.ports, port)
	if !ok {
		return Upstream{}, ErrUnknownPort
	}
	n := len(svc.candidates)
	if n == 0 {
		return Upstream{}, ErrNoEndpoint
	}
	start := int(svc.next.Add(1)-1) % n
	for i := range n {
		ep := &svc.endpoints[svc.candidates[(start+i)%n]]
		if t := ep.targetPort(port, svcTarget); t != 0 {
			return Upstream{
				Service: svc, Endpoint: ep, Workload: ep.Workload, Port: t,
				Addrs: ep.Addrs, Identities: ep.Identities,
			}, nil
		}
	}
	return Upstream{}, ErrNoEndpoint
}

// buildService resolves a service's endpoints from its member uids.
func buildService(key string, spec *workloadapi.Service, members map[string]struct{}, workloads map[string]*wlEntry) *Service {
	svc := &Service{Key: key, Spec: spec, ports: portMaps(spec.GetPorts())}
	uids := make([]string, 0, len(members))
	for uid := range members {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	allowAll := spec.GetLoadBalancing().GetHealthPolicy() == workloadapi.LoadBalancing_ALLOW_ALL
	svc.endpoints = make([]Endpoint, 0, len(uids))
	for _, uid := range uids {
		e := workloads[uid]
		if e == nil {
			continue
		}
		ids := e.identities
		if len(spec.GetSubjectAltNames()) > 0 {
			ids = make([]string, 0, 1+len(spec.GetSubjectAltNames()))
			ids = append(ids, e.identities...)
			for _, san := range spec.GetSubjectAltNames() {
				if san != "" && !containsString(ids, san) {
					ids = append(ids, san)
				}
			}
		}
		ep := Endpoint{
			Workload:   e.w,
			Addrs:      e.addrs,
			Identities: ids,
			Healthy:    e.w.GetStatus() == workloadapi.WorkloadStatus_HEALTHY,
			ports:      portMaps(e.w.GetServices()[key].GetPorts()),
		}
		reachable := len(e.addrs) > 0 || e.w.GetHostname() != "" || e.w.GetNetworkGateway() != nil
		if (ep.Healthy || allowAll) && reachable {
			svc.candidates = append(svc.candidates, len(svc.endpoints))
		}
		svc.endpoints = append(svc.endpoints, ep)
	}
	return svc
}
