package app

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/ztunnel/proxy"
	"github.com/zmesh/zmesh/ztunnel/state"
)

const (
	reviewsKey = "demo/reviews.demo.svc.cluster.local"
	wpKey      = "demo/wp.demo.svc.cluster.local"
)

var (
	reviewsVIP = netip.MustParseAddr("10.96.0.20")
	wpVIP      = netip.MustParseAddr("10.96.0.30")
	reviewsIP  = netip.MustParseAddr("10.0.1.5")
	ratingsIP  = netip.MustParseAddr("10.0.1.6")
	wpIP       = netip.MustParseAddr("10.0.2.7")
	sleepIP    = netip.MustParseAddr("10.0.1.9")
)

func byAddress(ip netip.Addr) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{
		Destination:   &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: ip.AsSlice()}},
		HboneMtlsPort: 15008,
	}
}

func byHostname(ns, host string) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{
		Destination: &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: ns, Hostname: host}},
	}
}

func workload(uid, sa string, ip netip.Addr, status workloadapi.WorkloadStatus, svcs map[string]*workloadapi.PortList, wp *workloadapi.GatewayAddress) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
		Uid: uid, Name: uid, Namespace: "demo", ServiceAccount: sa, Addresses: [][]byte{ip.AsSlice()},
		TunnelProtocol: workloadapi.TunnelProtocol_HBONE, Status: status, Services: svcs, Waypoint: wp,
	}}}
}

func service(name string, vip netip.Addr, port, target uint32, wp *workloadapi.GatewayAddress) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{
		Name: name, Namespace: "demo", Hostname: name + ".demo.svc.cluster.local",
		Addresses: []*workloadapi.NetworkAddress{{Address: vip.AsSlice()}},
		Ports:     []*workloadapi.Port{{ServicePort: port, TargetPort: target}}, Waypoint: wp,
	}}}
}

// newTestResolver builds a state: reviews (VIP, one pod) bound to the
// waypoint reviewsWP, ratings (a pod) bound to ratingsWP, and the waypoint
// service wp with one pod whose health is wpStatus.
func newTestResolver(t *testing.T, reviewsWP, ratingsWP *workloadapi.GatewayAddress, wpStatus workloadapi.WorkloadStatus) *resolver {
	t.Helper()
	st := state.New(slog.New(slog.DiscardHandler))
	upserts := []xds.Upsert{
		{Name: reviewsKey, Message: service("reviews", reviewsVIP, 9080, 8080, reviewsWP)},
		{Name: wpKey, Message: service("wp", wpVIP, 15008, 15008, nil)},
		{Name: "reviews-0", Message: workload("reviews-0", "reviews", reviewsIP, workloadapi.WorkloadStatus_HEALTHY,
			map[string]*workloadapi.PortList{reviewsKey: {Ports: []*workloadapi.Port{{ServicePort: 9080, TargetPort: 8080}}}}, nil)},
		{Name: "ratings-0", Message: workload("ratings-0", "ratings", ratingsIP, workloadapi.WorkloadStatus_HEALTHY, nil, ratingsWP)},
		{Name: "wp-0", Message: workload("wp-0", "wp", wpIP, wpStatus,
			map[string]*workloadapi.PortList{wpKey: {Ports: []*workloadapi.Port{{ServicePort: 15008, TargetPort: 15008}}}}, nil)},
	}
	if rej := st.AddressHandler().HandleDelta(xds.Delta{TypeURL: workloadapi.AddressTypeURL, Upserts: upserts}); len(rej) > 0 {
		t.Fatalf("rejected: %v", rej)
	}
	return &resolver{state: st}
}

func pod(sa string, ip netip.Addr) *proxy.PodInfo {
	return &proxy.PodInfo{Identity: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/" + sa), IPs: []netip.Addr{ip}}
}

func TestResolverWaypoint(t *testing.T) {
	wpID := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/wp")
	reviewsID := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/reviews")
	healthy, unhealthy := workloadapi.WorkloadStatus_HEALTHY, workloadapi.WorkloadStatus_UNHEALTHY
	vip := netip.AddrPortFrom(reviewsVIP, 9080)
	for _, tc := range []struct {
		name                 string
		reviewsWP, ratingsWP *workloadapi.GatewayAddress
		wpStatus             workloadapi.WorkloadStatus
		src                  *proxy.PodInfo
		dst                  netip.AddrPort
		want                 proxy.Route // Reason is only checked for being set
	}{
		{name: "service VIP via waypoint address (a VIP)", reviewsWP: byAddress(wpVIP), wpStatus: healthy,
			src: pod("sleep", sleepIP), dst: vip,
			want: proxy.Route{Kind: proxy.RouteHBONE, Authority: vip, NextHop: netip.AddrPortFrom(wpIP, 15008),
				ExpectedIDs: []spiffeid.ID{wpID}, Service: "reviews.demo.svc.cluster.local",
				Destination: proxy.Peer{Workload: "wp-0", Namespace: "demo", Principal: wpID.String()}}},
		{name: "service VIP via waypoint address (its pod)", reviewsWP: byAddress(wpIP), wpStatus: healthy,
			src: pod("sleep", sleepIP), dst: vip,
			want: proxy.Route{Kind: proxy.RouteHBONE, Authority: vip, NextHop: netip.AddrPortFrom(wpIP, 15008),
				ExpectedIDs: []spiffeid.ID{wpID}, Service: "reviews.demo.svc.cluster.local",
				Destination: proxy.Peer{Workload: "wp-0", Namespace: "demo", Principal: wpID.String()}}},
		{name: "service VIP via waypoint hostname", reviewsWP: byHostname("demo", "wp.demo.svc.cluster.local"), wpStatus: healthy,
			src: pod("sleep", sleepIP), dst: vip,
			want: proxy.Route{Kind: proxy.RouteHBONE, Authority: vip, NextHop: netip.AddrPortFrom(wpIP, 15008),
				ExpectedIDs: []spiffeid.ID{wpID}, Service: "reviews.demo.svc.cluster.local",
				Destination: proxy.Peer{Workload: "wp-0", Namespace: "demo", Principal: wpID.String()}}},
		{name: "from the waypoint itself goes direct", reviewsWP: byAddress(wpVIP), wpStatus: healthy,
			src: pod("wp", wpIP), dst: vip,
			want: proxy.Route{Kind: proxy.RouteHBONE, Authority: netip.AddrPortFrom(reviewsIP, 8080),
				NextHop: netip.AddrPortFrom(reviewsIP, 15008), ExpectedIDs: []spiffeid.ID{reviewsID},
				Service:     "reviews.demo.svc.cluster.local",
				Destination: proxy.Peer{Workload: "reviews-0", Namespace: "demo", Principal: reviewsID.String()}}},
		{name: "pod IP of a service-bound workload goes direct", reviewsWP: byAddress(wpVIP), wpStatus: healthy,
			src: pod("sleep", sleepIP), dst: netip.AddrPortFrom(reviewsIP, 8080),
			want: proxy.Route{Kind: proxy.RouteHBONE, Authority: netip.AddrPortFrom(reviewsIP, 8080),
				NextHop: netip.AddrPortFrom(reviewsIP, 15008), ExpectedIDs: []spiffeid.ID{reviewsID},
				Destination: proxy.Peer{Workload: "reviews-0", Namespace: "demo", Principal: reviewsID.String()}}},
		{name: "workload waypoint", ratingsWP: byAddress(wpVIP), wpStatus: healthy,
			src: pod("sleep", sleepIP), dst: netip.AddrPortFrom(ratingsIP, 8080),
			want: proxy.Route{Kind: proxy.RouteHBONE, Authority: netip.AddrPortFrom(ratingsIP, 8080),
				NextHop: netip.AddrPortFrom(wpIP, 15008), ExpectedIDs: []spiffeid.ID{wpID},
				Destination: proxy.Peer{Workload: "wp-0", Namespace: "demo", Principal: wpID.String()}}},
		{name: "waypoint without healthy pod refuses", reviewsWP: byAddress(wpVIP), wpStatus: unhealthy,
			src: pod("sleep", sleepIP), dst: vip,
			want: proxy.Route{Kind: proxy.RouteDeny, Service: "reviews.demo.svc.cluster.local"}},
		{name: "unknown waypoint address refuses", reviewsWP: byAddress(netip.MustParseAddr("10.96.9.9")), wpStatus: healthy,
			src: pod("sleep", sleepIP), dst: vip,
			want: proxy.Route{Kind: proxy.RouteDeny, Service: "reviews.demo.svc.cluster.local"}},
		{name: "unknown waypoint hostname refuses", ratingsWP: byHostname("demo", "nope.demo.svc.cluster.local"), wpStatus: healthy,
			src: pod("sleep", sleepIP), dst: netip.AddrPortFrom(ratingsIP, 8080),
			want: proxy.Route{Kind: proxy.RouteDeny}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestResolver(t, tc.reviewsWP, tc.ratingsWP, tc.wpStatus)
			got := r.Outbound(tc.src, tc.dst)
			if (got.Reason != "") != (tc.want.Kind == proxy.RouteDeny) {
				t.Errorf("reason %q for kind %v", got.Reason, got.Kind)
			}
			got.Reason = ""
			if got.Kind != tc.want.Kind || got.Authority != tc.want.Authority || got.NextHop != tc.want.NextHop ||
				got.Service != tc.want.Service || got.Destination != tc.want.Destination ||
				len(got.ExpectedIDs) != len(tc.want.ExpectedIDs) {
				t.Fatalf("route\n got %+v\nwant %+v", got, tc.want)
			}
			for i := range got.ExpectedIDs {
				if got.ExpectedIDs[i] != tc.want.ExpectedIDs[i] {
					t.Errorf("expected ID %d: %v, want %v", i, got.ExpectedIDs[i], tc.want.ExpectedIDs[i])
				}
			}
		})
	}
}
