package app

import (
	"errors"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/ztunnel/proxy"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// resolver routes outbound connections from the workload state.
type resolver struct {
	state   *state.State
	network string
}

var _ proxy.Resolver = (*resolver)(nil)

// Outbound resolves dst as Istio's ztunnel does: a service VIP picks a
// healthy endpoint, a workload address goes to that workload, anything else
// passes through. Mesh destinations that speak HBONE are tunnelled to their
// 15008; others are dialled directly. Destinations behind a waypoint are
// refused until waypoints are supported: sending them directly would skip
// the waypoint's policy.
func (r *resolver) Outbound(_ *proxy.PodInfo, dst netip.AddrPort) proxy.Route {
	t := r.state.Destination(r.network, dst.Addr(), dst.Port())
	switch t.Kind {
	case state.TargetService:
		svc := t.Service
		if svc.Spec.GetWaypoint() != nil {
			return proxy.Route{Kind: proxy.RouteDeny, Reason: "service is bound to a waypoint (not supported yet)"}
		}
		up, err := r.state.PickEndpoint(svc, dst.Port())
		switch {
		case errors.Is(err, state.ErrUnknownPort):
			return proxy.Route{Kind: proxy.RoutePassthrough, Authority: dst, Service: svc.Spec.GetHostname()}
		case err != nil:
			return proxy.Route{Kind: proxy.RouteDeny, Reason: err.Error(), Service: svc.Spec.GetHostname()}
		case len(up.Addrs) == 0:
			return proxy.Route{Kind: proxy.RouteDeny, Reason: "endpoint has no address", Service: svc.Spec.GetHostname()}
		}
		route := r.toWorkload(up.Workload, netip.AddrPortFrom(up.Addrs[0], up.Port), up.Identities)
		route.Service = svc.Spec.GetHostname()
		return route
	case state.TargetWorkload:
		if t.Workload.GetWaypoint() != nil {
			return proxy.Route{Kind: proxy.RouteDeny, Reason: "workload is bound to a waypoint (not supported yet)"}
		}
		return r.toWorkload(t.Workload, dst, t.Identities)
	}
	return proxy.Route{Kind: proxy.RoutePassthrough, Authority: dst}
}

func (r *resolver) toWorkload(w *workloadapi.Workload, addr netip.AddrPort, identities []string) proxy.Route {
	route := proxy.Route{Kind: proxy.RouteDirect, Authority: addr, Destination: peerOf(w)}
	if w.GetTunnelProtocol() != workloadapi.TunnelProtocol_HBONE {
		return route
	}
	ids := make([]spiffeid.ID, 0, len(identities))
	for _, s := range identities {
		if id, err := spiffeid.FromString(s); err == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return proxy.Route{Kind: proxy.RouteDeny, Reason: "no valid identity for the destination"}
	}
	route.Kind = proxy.RouteHBONE
	route.NextHop = netip.AddrPortFrom(addr.Addr(), hbone.Port)
	route.ExpectedIDs = ids
	return route
}

// PeerByIP labels an inbound source from the workload at ip, if known.
func (r *resolver) PeerByIP(ip netip.Addr) proxy.Peer {
	return peerOf(r.state.WorkloadByAddr(r.network, ip))
}

// peerOf labels a workload for metrics; nil gives an empty Peer.
func peerOf(w *workloadapi.Workload) proxy.Peer {
	if w == nil {
		return proxy.Peer{}
	}
	name := w.GetWorkloadName()
	if name == "" {
		name = w.GetName()
	}
	return proxy.Peer{Workload: name, Namespace: w.GetNamespace(), Principal: state.Identity(w)}
}
