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
// 15008; others are dialled directly.
//
// A destination bound to a waypoint (the service of a VIP; a workload
// addressed directly) is tunnelled to the waypoint instead, with the original destination as CONNECT authority,
// unless src is that waypoint. A waypoint that cannot be resolved refuses
// the connection: bypassing it would skip its policy.
func (r *resolver) Outbound(src *proxy.PodInfo, dst netip.AddrPort) proxy.Route {
	t := r.state.Destination(r.network, dst.Addr(), dst.Port())
	switch t.Kind {
	case state.TargetService:
		svc := t.Service
		host := svc.Spec.GetHostname()
		if gw := svc.Spec.GetWaypoint(); gw != nil {
			if route, ok := r.viaWaypoint(src, gw, dst); ok {
				route.Service = host
				return route
			}
		}
		up, err := r.state.PickEndpoint(svc, dst.Port())
		switch {
		case errors.Is(err, state.ErrUnknownPort):
			return proxy.Route{Kind: proxy.RoutePassthrough, Authority: dst, Service: host}
		case err != nil:
			return proxy.Route{Kind: proxy.RouteDeny, Reason: err.Error(), Service: host}
		case len(up.Addrs) == 0:
			return proxy.Route{Kind: proxy.RouteDeny, Reason: "endpoint has no address", Service: host}
		}
		// As in Istio, an endpoint's own (workload) waypoint applies only
		// to traffic addressed to the workload, not to its services.
		route := r.toWorkload(up.Workload, netip.AddrPortFrom(up.Addrs[0], up.Port), up.Identities)
		route.Service = host
		return route
	case state.TargetWorkload:
		if gw := t.Workload.GetWaypoint(); gw != nil {
			if route, ok := r.viaWaypoint(src, gw, dst); ok {
				return route
			}
		}
		return r.toWorkload(t.Workload, dst, t.Identities)
	}
	return proxy.Route{Kind: proxy.RoutePassthrough, Authority: dst}
}

// viaWaypoint routes a connection for authority through waypoint gw. It
// returns ok=false only when src is the waypoint itself (its traffic goes
// to the destination directly); a waypoint that cannot be resolved gives a
// RouteDeny.
func (r *resolver) viaWaypoint(src *proxy.PodInfo, gw *workloadapi.GatewayAddress, authority netip.AddrPort) (proxy.Route, bool) {
	w, addr, err := r.resolveWaypoint(gw)
	if err != nil {
		return proxy.Route{Kind: proxy.RouteDeny, Reason: "waypoint: " + err.Error()}, true
	}
	id, err := spiffeid.FromString(state.Identity(w))
	if err != nil {
		return proxy.Route{Kind: proxy.RouteDeny, Reason: "waypoint has no valid identity"}, true
	}
	if src != nil && (src.Identity == id || containsAddr(src.IPs, addr.Addr())) {
		return proxy.Route{}, false
	}
	return proxy.Route{
		Kind: proxy.RouteHBONE, Authority: authority, NextHop: addr,
		ExpectedIDs: []spiffeid.ID{id}, Destination: peerOf(w),
	}, true
}

var (
	errWaypointUnknown = errors.New("address is neither a service nor a workload")
	errWaypointNoAddr  = errors.New("waypoint workload has no address")
)

// resolveWaypoint finds the waypoint workload to tunnel to and its HBONE
// address. The address form names a waypoint service VIP (an endpoint of
// it is picked) or a waypoint workload; the hostname form names the
// waypoint service by namespace/hostname.
func (r *resolver) resolveWaypoint(gw *workloadapi.GatewayAddress) (*workloadapi.Workload, netip.AddrPort, error) {
	port := uint16(gw.GetHboneMtlsPort())
	if port == 0 {
		port = hbone.Port
	}
	var svc *state.Service
	switch {
	case gw.GetHostname() != nil:
		h := gw.GetHostname()
		if svc = r.state.Service(h.GetNamespace() + "/" + h.GetHostname()); svc == nil {
			return nil, netip.AddrPort{}, errors.New("unknown waypoint service " + h.GetNamespace() + "/" + h.GetHostname())
		}
	case gw.GetAddress() != nil:
		a := gw.GetAddress()
		ip, ok := netip.AddrFromSlice(a.GetAddress())
		if !ok {
			return nil, netip.AddrPort{}, errors.New("invalid waypoint address")
		}
		ip = ip.Unmap()
		network := a.GetNetwork()
		if network == "" {
			network = r.network
		}
		t := r.state.Destination(network, ip, port)
		switch t.Kind {
		case state.TargetService:
			svc = t.Service
		case state.TargetWorkload:
			return t.Workload, netip.AddrPortFrom(ip, port), nil
		default:
			return nil, netip.AddrPort{}, errWaypointUnknown
		}
	default:
		return nil, netip.AddrPort{}, errors.New("waypoint has no destination")
	}
	up, err := r.state.PickEndpoint(svc, port)
	if errors.Is(err, state.ErrUnknownPort) {
		// The waypoint service does not declare its HBONE port: any
		// healthy endpoint still listens on it.
		up, err = r.pickAny(svc)
	}
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	if len(up.Addrs) == 0 {
		return nil, netip.AddrPort{}, errWaypointNoAddr
	}
	return up.Workload, netip.AddrPortFrom(up.Addrs[0], port), nil
}

// pickAny returns the first healthy endpoint of svc with an address.
func (r *resolver) pickAny(svc *state.Service) (state.Upstream, error) {
	eps := svc.Endpoints()
	for i := range eps {
		if eps[i].Healthy && len(eps[i].Addrs) > 0 {
			return state.Upstream{Service: svc, Endpoint: &eps[i], Workload: eps[i].Workload, Addrs: eps[i].Addrs, Identities: eps[i].Identities}, nil
		}
	}
	return state.Upstream{}, state.ErrNoEndpoint
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
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
