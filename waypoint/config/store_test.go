package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
)

func handler(s *Store, typ string) xds.Handler {
	for _, tc := range s.Types() {
		if tc.TypeURL == typ {
			return tc.Handler
		}
	}
	panic(typ)
}

func anyOf(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func hcmListener(name string, filters ...*hcmv3.HttpFilter) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
		VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}}}}}}},
		HttpFilters: filters}
	return &listenerv3.Listener{Name: name, FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(hcm)}}}}}}
}

func router() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(&routerv3.Router{})}}
}

func TestListenerValidation(t *testing.T) {
	s := NewStore(nil, nil)
	h := handler(s, ListenerTypeURL)
	const name = "ns/svc.ns.svc.cluster.local:80"
	if rej := h.HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: name, Message: hcmListener(name, router())}}}); len(rej) != 0 {
		t.Fatalf("good listener rejected: %v", rej)
	}
	good := s.Snapshot()
	unknownFilter := &hcmv3.HttpFilter{Name: "envoy.filters.http.lua", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(&structpb.Struct{})}}
	optional := &hcmv3.HttpFilter{Name: "vendor.thing", IsOptional: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(&structpb.Struct{})}}
	for _, tc := range []struct {
		name string
		l    *listenerv3.Listener
		want string // "" = accepted
	}{
		{"no router", hcmListener(name), "must end with envoy.filters.http.router"},
		{"unsupported filter", hcmListener(name, unknownFilter, router()), "unsupported type"},
		{"optional unknown filter", hcmListener(name, optional, router()), ""},
		{"filter after router", hcmListener(name, router(), router()), "after the router"},
		{"bad name", hcmListener("nonsense", router()), "is not <namespace>/<hostname>:<port>"},
		{"no chains", &listenerv3.Listener{Name: name}, "no filter chain"},
	} {
		rej := h.HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: tc.l.GetName(), Message: tc.l}}})
		switch {
		case tc.want == "" && len(rej) != 0:
			t.Errorf("%s: rejected %v", tc.name, rej)
		case tc.want != "" && (len(rej) != 1 || !strings.Contains(rej[0].Err.Error(), tc.want)):
			t.Errorf("%s: rejections %v, want %q", tc.name, rej, tc.want)
		}
	}
	svc := &Service{Namespace: "ns", Hostname: "svc.ns.svc.cluster.local"}
	if s.Snapshot().Listener(svc, 80) == nil || good.Listener(svc, 80) == nil {
		t.Fatal("the last good listener is gone")
	}
	if d := s.Dump(); len(d.Rejected) != 2 { // "bad name" and the latest version of name ("no chains")
		t.Fatalf("rejected %v", d.Rejected)
	}
	h.HandleDelta(xds.Delta{Removals: []string{name}})
	if s.Snapshot().Listener(svc, 80) != nil {
		t.Fatal("removed listener still served")
	}
}

func TestAddressIndex(t *testing.T) {
	s := NewStore(nil, nil)
	h := handler(s, workloadapi.AddressTypeURL)
	key := "ns/svc.ns.svc.cluster.local"
	svc := &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{Name: "svc", Namespace: "ns", Hostname: "svc.ns.svc.cluster.local",
		Addresses: []*workloadapi.NetworkAddress{{Address: []byte{10, 96, 0, 1}}},
		Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080, AppProtocol: workloadapi.AppProtocol_HTTP2}}}}}
	wl := func(uid string, ip byte, status workloadapi.WorkloadStatus) *workloadapi.Address {
		return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Uid: uid, Name: uid, Namespace: "ns", ServiceAccount: "sa",
			Addresses: [][]byte{{10, 244, 0, ip}}, Status: status, Services: map[string]*workloadapi.PortList{key: {Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8081}}}}}}}
	}
	bad := &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Uid: "bad", Namespace: "ns", Addresses: [][]byte{{1, 2, 3}}}}}
	rej := h.HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: key, Message: svc}, {Name: "a", Message: wl("a", 1, workloadapi.WorkloadStatus_HEALTHY)},
		{Name: "b", Message: wl("b", 2, workloadapi.WorkloadStatus_UNHEALTHY)}, {Name: "bad", Message: bad}}})
	if len(rej) != 1 || rej[0].Name != "bad" || !strings.Contains(rej[0].Err.Error(), "address 0 has 3 bytes") {
		t.Fatalf("rejections %v", rej)
	}
	snap := s.Snapshot()
	got, sp, ok := snap.ServiceByVIP(netip.MustParseAddrPort("10.96.0.1:80"))
	if !ok || got.Key != key || sp.Protocol != HTTP2 || sp.TargetPort != 8080 {
		t.Fatalf("by VIP: %v %+v %v", got, sp, ok)
	}
	if _, _, ok := snap.ServiceByVIP(netip.MustParseAddrPort("10.96.0.1:81")); ok {
		t.Fatal("undeclared port matched")
	}
	eps := snap.ServiceEndpoints(got, 80)
	if len(eps) != 1 || eps[0].Addr.String() != "10.244.0.1:8081" || eps[0].Workload.Identity.String() != "spiffe://cluster.local/ns/ns/sa/sa" {
		t.Fatalf("endpoints %+v", eps)
	}
	h.HandleDelta(xds.Delta{Removals: []string{"a"}})
	if len(s.Snapshot().ServiceEndpoints(got, 80)) != 0 || s.Snapshot().WorkloadByIP(netip.MustParseAddr("10.244.0.1")) != nil {
		t.Fatal("removed workload still indexed")
	}
	if len(snap.ServiceEndpoints(got, 80)) != 1 {
		t.Fatal("an old snapshot changed: snapshots must be immutable")
	}
	// A name that is not the entry's key is refused: two names for one
	// workload or service would let either's removal drop the entry.
	rej = h.HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: "alias-of-b", Message: wl("b", 2, workloadapi.WorkloadStatus_HEALTHY)},
		{Name: "ns/other", Message: svc}}})
	if len(rej) != 2 || rej[0].Name != "alias-of-b" || rej[1].Name != "ns/other" {
		t.Fatalf("rejections %v", rej)
	}
	if w := s.Snapshot().WorkloadByIP(netip.MustParseAddr("10.244.0.2")); w == nil || w.Healthy {
		t.Fatalf("workload b changed through another name: %+v", w)
	}
	// The waypoint applies the workload API's shared validation, as
	// ztunnel does: an enum value this version does not know is refused,
	// not read as the default (here: a status that is not HEALTHY must not
	// become "unhealthy", nor an unknown tunnel protocol plaintext), and so
	// is anything else ztunnel would NACK. A refused update keeps the last
	// good version.
	svcWith := func(f func(*workloadapi.Service)) *workloadapi.Address {
		c := proto.Clone(svc).(*workloadapi.Address)
		f(c.GetService())
		return c
	}
	wlWith := func(f func(*workloadapi.Workload)) *workloadapi.Address {
		a := wl("b", 2, workloadapi.WorkloadStatus_HEALTHY)
		f(a.GetWorkload())
		return a
	}
	for _, tc := range []struct {
		name, resName string
		a             *workloadapi.Address
		want          string
	}{
		{"unknown status", "b", wlWith(func(w *workloadapi.Workload) { w.Status = 7 }), "unknown status 7"},
		{"unknown tunnel protocol", "b", wlWith(func(w *workloadapi.Workload) { w.TunnelProtocol = 9 }), "unknown tunnel_protocol 9"},
		{"unknown network mode", "b", wlWith(func(w *workloadapi.Workload) { w.NetworkMode = 3 }), "unknown network_mode 3"},
		{"workload without namespace", "b", wlWith(func(w *workloadapi.Workload) { w.Namespace = "" }), "workload: workload has no namespace"},
		{"bad waypoint address", "b", wlWith(func(w *workloadapi.Workload) {
			w.Waypoint = &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: []byte{10, 0, 0}}}}
		}), "workload: waypoint: network address has 3 bytes"},
		{"bad network gateway", "b", wlWith(func(w *workloadapi.Workload) { w.NetworkGateway = &workloadapi.GatewayAddress{} }), "network_gateway has no destination"},
		{"application tunnel port out of range", "b", wlWith(func(w *workloadapi.Workload) {
			w.ApplicationTunnel = &workloadapi.ApplicationTunnel{Port: 70000}
		}), "application_tunnel port 70000 out of range"},
		{"malformed services key", "b", wlWith(func(w *workloadapi.Workload) { w.Services["nohost"] = &workloadapi.PortList{} }), `services key "nohost"`},
		{"service with unknown lb mode", key, svcWith(func(s *workloadapi.Service) { s.LoadBalancing = &workloadapi.LoadBalancing{Mode: 9} }), "service: unknown load_balancing mode 9"},
		{"service with unknown ip families", key, svcWith(func(s *workloadapi.Service) { s.IpFamilies = 9 }), "unknown ip_families 9"},
		{"service vip prefix too long", key, svcWith(func(s *workloadapi.Service) { l := uint32(33); s.Addresses[0].Length = &l }), "prefix length 33 too long"},
		{"empty address", "x", &workloadapi.Address{}, "neither workload nor service"},
	} {
		rej := h.HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: tc.resName, Message: tc.a}}})
		if len(rej) != 1 || rej[0].Name != tc.resName || !errors.Is(rej[0].Err, workloadapi.ErrInvalid) || !strings.Contains(rej[0].Err.Error(), tc.want) {
			t.Fatalf("%s: rejections %v, want %q", tc.name, rej, tc.want)
		}
	}
	if w := s.Snapshot().WorkloadByIP(netip.MustParseAddr("10.244.0.2")); w == nil || w.Healthy || w.Namespace != "ns" {
		t.Fatalf("workload b replaced by a refused update: %+v", w)
	}
	if got := s.Snapshot().Service(key); got == nil || len(got.VIPs) != 1 {
		t.Fatalf("service replaced by a refused update: %+v", got)
	}
	if rej := h.HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: "x", Message: &listenerv3.Listener{}}}}); len(rej) != 1 ||
		!strings.Contains(rej[0].Err.Error(), "want *workloadapi.Address") {
		t.Fatalf("wrong message type: rejections %v", rej)
	}
}

func TestCompileAccessLog(t *testing.T) {
	file := func(path string) *accesslogv3.AccessLog {
		return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(&filev3.FileAccessLog{Path: path})}}
	}
	filtered := file(AccessLogStdout)
	filtered.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_NotHealthCheckFilter{}}
	for _, tc := range []struct {
		name string
		logs []*accesslogv3.AccessLog
		want string // the path; an error's text when err is set
		err  bool
	}{
		{name: "none"},
		{name: "stdout", logs: []*accesslogv3.AccessLog{file(AccessLogStdout)}, want: AccessLogStdout},
		{name: "stderr twice", logs: []*accesslogv3.AccessLog{file(AccessLogStderr), file(AccessLogStderr)}, want: AccessLogStderr},
		{name: "a file", logs: []*accesslogv3.AccessLog{file("/var/log/x")}, want: `path "/var/log/x"`, err: true},
		{name: "two streams", logs: []*accesslogv3.AccessLog{file(AccessLogStdout), file(AccessLogStderr)}, want: "both", err: true},
		{name: "filter", logs: []*accesslogv3.AccessLog{filtered}, want: "filters are not supported", err: true},
		{name: "another logger", logs: []*accesslogv3.AccessLog{{Name: "otel",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(&structpb.Struct{})}}}, want: "unsupported type", err: true},
		{name: "no config", logs: []*accesslogv3.AccessLog{{Name: "x"}}, want: "typed_config is required", err: true},
	} {
		got, err := compileAccessLog(tc.logs)
		switch {
		case tc.err && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		case !tc.err && (err != nil || got != tc.want):
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// Through the store: a listener with a bad access log is rejected.
	s := NewStore(nil, nil)
	const name = "ns/svc.ns.svc.cluster.local:80"
	l := hcmListener(name, router())
	hcm := &hcmv3.HttpConnectionManager{}
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	hcm.AccessLog = []*accesslogv3.AccessLog{file("/etc/passwd")}
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(hcm)}
	if rej := handler(s, ListenerTypeURL).HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: name, Message: l}}}); len(rej) != 1 {
		t.Fatalf("rejections %v, want the listener", rej)
	}
}
