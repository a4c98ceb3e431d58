package workloadapi_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	wapi "github.com/zmesh/zmesh/pkg/workloadapi"
)

func ipb(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func length(n uint32) *uint32 { return &n }

const (
	goodUID = "Kubernetes//Pod/ns1/good"
	goodSvc = "ns1/good.ns1.svc.cluster.local"
)

// goodWorkload uses every field the validation looks at, with valid values.
func goodWorkload() *wapi.Workload {
	return &wapi.Workload{
		Uid: goodUID, Name: "good", Namespace: "ns1",
		Addresses:      [][]byte{ipb("10.244.0.1"), ipb("fd00::1"), ipb("::ffff:10.244.0.2")},
		TunnelProtocol: wapi.TunnelProtocol_HBONE, Status: wapi.WorkloadStatus_HEALTHY,
		TrustDomain: "cluster.local", ServiceAccount: "sa",
		Waypoint: &wapi.GatewayAddress{Destination: &wapi.GatewayAddress_Address{Address: &wapi.NetworkAddress{Address: ipb("10.0.0.9")}}, HboneMtlsPort: 15008},
		NetworkGateway: &wapi.GatewayAddress{Destination: &wapi.GatewayAddress_Hostname{Hostname: &wapi.NamespacedHostname{Namespace: "gw", Hostname: "gw.example"}},
			HboneMtlsPort: 65535},
		ApplicationTunnel: &wapi.ApplicationTunnel{Protocol: wapi.ApplicationTunnel_PROXY, Port: 15088},
		Services:          map[string]*wapi.PortList{goodSvc: {Ports: []*wapi.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 65535, TargetPort: 0}}}},
	}
}

// goodService uses every field the validation looks at, with valid values.
func goodService() *wapi.Service {
	return &wapi.Service{
		Name: "good", Namespace: "ns1", Hostname: "good.ns1.svc.cluster.local",
		Addresses: []*wapi.NetworkAddress{{Address: ipb("10.96.0.1")}, {Address: ipb("fd00::1"), Length: length(128)}, {Address: ipb("10.96.0.0"), Length: length(32)}},
		Ports:     []*wapi.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 65535, TargetPort: 0}},
		Waypoint:  &wapi.GatewayAddress{Destination: &wapi.GatewayAddress_Hostname{Hostname: &wapi.NamespacedHostname{Namespace: "ns1", Hostname: "wp"}}},
		WeightedWaypoints: []*wapi.WeightedWaypoint{{Weight: 1, Destination: &wapi.GatewayAddress{
			Destination: &wapi.GatewayAddress_Address{Address: &wapi.NetworkAddress{Address: ipb("10.0.0.8")}}}}},
		LoadBalancing: &wapi.LoadBalancing{Mode: wapi.LoadBalancing_STRICT, HealthPolicy: wapi.LoadBalancing_ALLOW_ALL,
			RoutingPreference: []wapi.LoadBalancing_Scope{wapi.LoadBalancing_REGION, wapi.LoadBalancing_NODE}},
		IpFamilies: wapi.IPFamilies_DUAL,
	}
}

func TestValidateWorkload(t *testing.T) {
	mut := func(f func(w *wapi.Workload)) *wapi.Workload {
		w := goodWorkload()
		f(w)
		return w
	}
	addrGW := func(b []byte, l *uint32) *wapi.GatewayAddress {
		return &wapi.GatewayAddress{Destination: &wapi.GatewayAddress_Address{Address: &wapi.NetworkAddress{Address: b, Length: l}}}
	}
	tests := []struct {
		name    string
		resName string // "" = goodUID
		w       *wapi.Workload
		wantErr string // "" = accepted
	}{
		{name: "good", w: goodWorkload()},
		{name: "minimal", w: &wapi.Workload{Uid: goodUID, Namespace: "ns1"}},
		{name: "no uid", resName: "x", w: mut(func(w *wapi.Workload) { w.Uid = "" }), wantErr: "workload has no uid"},
		{name: "name differs from uid", resName: "other", w: goodWorkload(), wantErr: `resource name "other" differs from workload uid`},
		{name: "no namespace", w: mut(func(w *wapi.Workload) { w.Namespace = "" }), wantErr: "workload has no namespace"},
		{name: "5-byte address", w: mut(func(w *wapi.Workload) { w.Addresses = append(w.Addresses, []byte{1, 2, 3, 4, 5}) }), wantErr: "address 3 has 5 bytes"},
		{name: "empty address", w: mut(func(w *wapi.Workload) { w.Addresses = [][]byte{{}} }), wantErr: "address 0 has 0 bytes"},
		{name: "unknown tunnel protocol", w: mut(func(w *wapi.Workload) { w.TunnelProtocol = 9 }), wantErr: "unknown tunnel_protocol 9"},
		{name: "unknown status", w: mut(func(w *wapi.Workload) { w.Status = 7 }), wantErr: "unknown status 7"},
		{name: "unknown network mode", w: mut(func(w *wapi.Workload) { w.NetworkMode = 3 }), wantErr: "unknown network_mode 3"},
		{name: "legacy istio mtls", w: mut(func(w *wapi.Workload) { w.TunnelProtocol = wapi.TunnelProtocol_LEGACY_ISTIO_MTLS }), wantErr: "LEGACY_ISTIO_MTLS is not supported"},
		{name: "waypoint without destination", w: mut(func(w *wapi.Workload) { w.Waypoint = &wapi.GatewayAddress{HboneMtlsPort: 15008} }), wantErr: "waypoint has no destination"},
		{name: "waypoint 1-byte address", w: mut(func(w *wapi.Workload) { w.Waypoint = addrGW([]byte{1}, nil) }), wantErr: "waypoint: network address has 1 bytes"},
		{name: "waypoint prefix too long", w: mut(func(w *wapi.Workload) { w.Waypoint = addrGW(ipb("10.0.0.9"), length(33)) }), wantErr: "waypoint: network address 10.0.0.9: prefix length 33 too long"},
		{name: "waypoint hbone port", w: mut(func(w *wapi.Workload) { w.Waypoint.HboneMtlsPort = 65536 }), wantErr: "waypoint: hbone_mtls_port 65536 out of range"},
		{name: "network gateway empty hostname", w: mut(func(w *wapi.Workload) {
			w.NetworkGateway = &wapi.GatewayAddress{Destination: &wapi.GatewayAddress_Hostname{Hostname: &wapi.NamespacedHostname{Namespace: "x"}}}
		}), wantErr: "network_gateway: empty hostname"},
		{name: "network gateway bad address", w: mut(func(w *wapi.Workload) { w.NetworkGateway = addrGW(nil, nil) }), wantErr: "network_gateway: network address has 0 bytes"},
		{name: "unknown application tunnel protocol", w: mut(func(w *wapi.Workload) { w.ApplicationTunnel.Protocol = 4 }), wantErr: "unknown application_tunnel protocol 4"},
		{name: "application tunnel port", w: mut(func(w *wapi.Workload) { w.ApplicationTunnel.Port = 70000 }), wantErr: "application_tunnel port 70000 out of range"},
		{name: "services key without slash", w: mut(func(w *wapi.Workload) { w.Services["nohost"] = &wapi.PortList{} }), wantErr: `services key "nohost" is not <namespace>/<hostname>`},
		{name: "services key without namespace", w: mut(func(w *wapi.Workload) { w.Services["/h"] = &wapi.PortList{} }), wantErr: `services key "/h"`},
		{name: "services key without hostname", w: mut(func(w *wapi.Workload) { w.Services["ns1/"] = &wapi.PortList{} }), wantErr: `services key "ns1/"`},
		{name: "services port zero", w: mut(func(w *wapi.Workload) { w.Services[goodSvc].Ports[0].ServicePort = 0 }), wantErr: "port 0->8080 out of range"},
		{name: "services port too big", w: mut(func(w *wapi.Workload) { w.Services[goodSvc].Ports[0].ServicePort = 65536 }), wantErr: "port 65536->8080 out of range"},
		{name: "services target port too big", w: mut(func(w *wapi.Workload) { w.Services[goodSvc].Ports[0].TargetPort = 70000 }), wantErr: "port 80->70000 out of range"},
		{name: "invalid trust domain", w: mut(func(w *wapi.Workload) { w.TrustDomain = "Bad Domain" }), wantErr: "workload identity"},
		{name: "service account with slash", w: mut(func(w *wapi.Workload) { w.ServiceAccount = "a/b" }), wantErr: "workload identity"},
		{name: "namespace with slash", w: mut(func(w *wapi.Workload) { w.Namespace = "a/b" }), wantErr: "workload identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.resName
			if name == "" {
				name = goodUID
			}
			in := proto.Clone(tt.w)
			err := wapi.ValidateWorkload(name, tt.w)
			checkErr(t, err, tt.wantErr)
			if !proto.Equal(in, tt.w) {
				t.Fatal("validation modified the workload")
			}
		})
	}
}

func TestValidateService(t *testing.T) {
	mut := func(f func(s *wapi.Service)) *wapi.Service {
		s := goodService()
		f(s)
		return s
	}
	tests := []struct {
		name    string
		resName string // "" = goodSvc
		s       *wapi.Service
		wantErr string // "" = accepted
	}{
		{name: "good", s: goodService()},
		{name: "minimal", s: &wapi.Service{Namespace: "ns1", Hostname: "good.ns1.svc.cluster.local"}},
		{name: "no namespace", resName: "/good.ns1.svc.cluster.local", s: mut(func(s *wapi.Service) { s.Namespace = "" }), wantErr: "service needs namespace and hostname"},
		{name: "no hostname", resName: "ns1/", s: mut(func(s *wapi.Service) { s.Hostname = "" }), wantErr: "service needs namespace and hostname"},
		{name: "name mismatch", resName: "ns1/other", s: goodService(), wantErr: `resource name "ns1/other" differs from service key "ns1/good.ns1.svc.cluster.local"`},
		{name: "3-byte vip", s: mut(func(s *wapi.Service) { s.Addresses[1].Address = []byte{10, 96, 0} }), wantErr: "address 1: network address has 3 bytes"},
		{name: "v4 vip length 33", s: mut(func(s *wapi.Service) { s.Addresses[0].Length = length(33) }), wantErr: "prefix length 33 too long"},
		{name: "v6 vip length 129", s: mut(func(s *wapi.Service) { s.Addresses[1].Length = length(129) }), wantErr: "prefix length 129 too long"},
		{name: "port zero", s: mut(func(s *wapi.Service) { s.Ports[0].ServicePort = 0 }), wantErr: "port 0->8080 out of range"},
		{name: "port too big", s: mut(func(s *wapi.Service) { s.Ports[0].ServicePort = 65536 }), wantErr: "port 65536->8080 out of range"},
		{name: "target port too big", s: mut(func(s *wapi.Service) { s.Ports[0].TargetPort = 65536 }), wantErr: "port 80->65536 out of range"},
		{name: "waypoint without destination", s: mut(func(s *wapi.Service) { s.Waypoint = &wapi.GatewayAddress{} }), wantErr: "waypoint has no destination"},
		{name: "waypoint empty hostname", s: mut(func(s *wapi.Service) { s.Waypoint.GetHostname().Hostname = "" }), wantErr: "waypoint: empty hostname"},
		{name: "weighted waypoint bad address", s: mut(func(s *wapi.Service) {
			s.WeightedWaypoints = append(s.WeightedWaypoints, &wapi.WeightedWaypoint{Destination: &wapi.GatewayAddress{
				Destination: &wapi.GatewayAddress_Address{Address: &wapi.NetworkAddress{Address: []byte{1, 2}}}}})
		}), wantErr: "weighted_waypoints[1]: network address has 2 bytes"},
		{name: "weighted waypoint without destination", s: mut(func(s *wapi.Service) { s.WeightedWaypoints[0].Destination = &wapi.GatewayAddress{} }), wantErr: "weighted_waypoints[0] has no destination"},
		{name: "unknown lb mode", s: mut(func(s *wapi.Service) { s.LoadBalancing.Mode = 9 }), wantErr: "unknown load_balancing mode 9"},
		{name: "unknown lb health policy", s: mut(func(s *wapi.Service) { s.LoadBalancing.HealthPolicy = 9 }), wantErr: "unknown load_balancing health_policy 9"},
		{name: "unknown lb scope", s: mut(func(s *wapi.Service) { s.LoadBalancing.RoutingPreference[1] = 42 }), wantErr: "invalid load_balancing routing_preference 42"},
		{name: "unspecified lb scope", s: mut(func(s *wapi.Service) {
			s.LoadBalancing.RoutingPreference = append(s.LoadBalancing.RoutingPreference, wapi.LoadBalancing_UNSPECIFIED_SCOPE)
		}), wantErr: "invalid load_balancing routing_preference 0"},
		{name: "unknown ip families", s: mut(func(s *wapi.Service) { s.IpFamilies = 17 }), wantErr: "unknown ip_families 17"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.resName
			if name == "" {
				name = goodSvc
			}
			in := proto.Clone(tt.s)
			err := wapi.ValidateService(name, tt.s)
			checkErr(t, err, tt.wantErr)
			if !proto.Equal(in, tt.s) {
				t.Fatal("validation modified the service")
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("rejected: %v", err)
	case want == "":
	case err == nil:
		t.Fatalf("accepted, want an error containing %q", want)
	case !errors.Is(err, wapi.ErrInvalid) || !strings.Contains(err.Error(), want):
		t.Fatalf("error %q: want ErrInvalid containing %q", err, want)
	}
}

func TestWorkloadIdentity(t *testing.T) {
	for _, tt := range []struct {
		w    *wapi.Workload
		want string
	}{
		{&wapi.Workload{Namespace: "ns1"}, "spiffe://cluster.local/ns/ns1/sa/default"},
		{&wapi.Workload{Namespace: "ns1", TrustDomain: "example.org", ServiceAccount: "sa"}, "spiffe://example.org/ns/ns1/sa/sa"},
	} {
		id, err := wapi.WorkloadIdentity(tt.w)
		if err != nil || id.String() != tt.want {
			t.Errorf("WorkloadIdentity(%v) = %v, %v; want %s", tt.w, id, err, tt.want)
		}
	}
	if _, err := wapi.WorkloadIdentity(&wapi.Workload{}); err == nil {
		t.Error("WorkloadIdentity without namespace succeeded")
	}
}
