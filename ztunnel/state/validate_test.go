package state

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
)

// TestAddressRejections sends each bad resource together with a valid
// sibling and checks that exactly the bad one is rejected and the sibling
// applies. The rules themselves are tested rule by rule in pkg/workloadapi
// (TestValidateWorkload, TestValidateService); the rows here check that
// the State applies them.
func TestAddressRejections(t *testing.T) {
	good := pod("ns1", "good", "10.244.0.1")
	u := func(w *workloadapi.Workload) xds.Upsert { return wlUpsert(w) }
	mut := func(f func(w *workloadapi.Workload)) xds.Upsert {
		w := pod("ns1", "bad", "10.244.0.2")
		f(w)
		return u(w)
	}
	smut := func(f func(s *workloadapi.Service)) xds.Upsert {
		s := svc("ns1", "bad", "10.96.0.2", 80, 8080)
		f(s)
		return svcUpsert(s)
	}
	tests := []struct {
		name    string
		up      xds.Upsert
		wantErr string
	}{
		{"workload without uid", xds.Upsert{Name: "x", Message: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Namespace: "ns1"}}}}, "workload: workload has no uid"},
		{"name differs from uid", func() xds.Upsert { x := u(pod("ns1", "bad", "10.244.0.2")); x.Name = "other"; return x }(), "differs from workload uid"},
		{"workload without namespace", mut(func(w *workloadapi.Workload) { w.Namespace = "" }), "workload: workload has no namespace"},
		{"legacy istio mtls", mut(func(w *workloadapi.Workload) { w.TunnelProtocol = workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS }), "LEGACY_ISTIO_MTLS"},
		{"unknown status", mut(func(w *workloadapi.Workload) { w.Status = 7 }), "unknown status"},
		{"waypoint bad address", mut(func(w *workloadapi.Workload) {
			w.Waypoint = &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: []byte{1}}}}
		}), "1 bytes"},
		{"invalid trust domain", mut(func(w *workloadapi.Workload) { w.TrustDomain = "Bad Domain" }), "identity"},
		{"service without hostname", func() xds.Upsert {
			s := svc("ns1", "bad", "10.96.0.2", 80, 8080)
			s.Hostname = ""
			return xds.Upsert{Name: "ns1/", Message: &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}}
		}(), "service: service needs namespace and hostname"},
		{"service name mismatch", func() xds.Upsert { x := svcUpsert(svc("ns1", "bad", "10.96.0.2")); x.Name = "ns1/other"; return x }(), "differs from service key"},
		{"service target port too big", smut(func(s *workloadapi.Service) { s.Ports[0].TargetPort = 65536 }), "out of range"},
		{"service unknown lb mode", smut(func(s *workloadapi.Service) { s.LoadBalancing = &workloadapi.LoadBalancing{Mode: 9} }), "load_balancing mode"},
		{"empty address", xds.Upsert{Name: "x", Message: &workloadapi.Address{}}, "neither workload nor service"},
		{"wrong message type", xds.Upsert{Name: "x", Message: &security.Authorization{}}, "want *workloadapi.Address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := New(nil)
			rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{wlUpsert(clone(good)), tt.up}})
			if len(rej) != 1 || rej[0].Name != tt.up.Name {
				t.Fatalf("rejections = %v, want exactly %q", rej, tt.up.Name)
			}
			if !errors.Is(rej[0].Err, ErrInvalid) || !strings.Contains(rej[0].Err.Error(), tt.wantErr) {
				t.Fatalf("error %q: want ErrInvalid containing %q", rej[0].Err, tt.wantErr)
			}
			if st.WorkloadByUID(good.Uid) == nil {
				t.Fatal("valid sibling was not applied")
			}
			if st.WorkloadByUID(tt.up.Name) != nil || st.Service(tt.up.Name) != nil {
				t.Fatal("rejected resource was applied")
			}
		})
	}
}

func TestAuthorizationRejections(t *testing.T) {
	good := &security.Authorization{Name: "good", Namespace: "ns1"}
	mut := func(f func(m *security.Match)) *security.Authorization {
		m := &security.Match{}
		f(m)
		return &security.Authorization{Name: "bad", Namespace: "ns1", Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{m}}}}}}
	}
	tests := []struct {
		name    string
		pol     *security.Authorization
		resName string
		wantErr string
	}{
		{name: "no name", pol: &security.Authorization{Namespace: "ns1"}, resName: "ns1/", wantErr: "name and namespace"},
		{name: "no namespace", pol: &security.Authorization{Name: "x"}, resName: "/x", wantErr: "name and namespace"},
		{name: "name mismatch", pol: &security.Authorization{Name: "x", Namespace: "ns1"}, resName: "ns1/y", wantErr: "differs from policy key"},
		{name: "unknown scope", pol: &security.Authorization{Name: "bad", Namespace: "ns1", Scope: 5}, wantErr: "unknown scope"},
		{name: "unknown action", pol: &security.Authorization{Name: "bad", Namespace: "ns1", Action: 5}, wantErr: "unknown action"},
		{name: "cidr 5 bytes", pol: mut(func(m *security.Match) {
			m.SourceIps = []*security.Address{{Address: []byte{1, 2, 3, 4, 5}, Length: 8}}
		}), wantErr: "5 bytes"},
		{name: "v4 cidr length 33", pol: mut(func(m *security.Match) { m.NotSourceIps = []*security.Address{{Address: ipb("10.0.0.0"), Length: 33}} }), wantErr: "length beyond 32"},
		{name: "v6 cidr length 129", pol: mut(func(m *security.Match) { m.DestinationIps = []*security.Address{{Address: ipb("fd00::"), Length: 129}} }), wantErr: "length beyond 128"},
		{name: "not destination ip empty", pol: mut(func(m *security.Match) { m.NotDestinationIps = []*security.Address{{}} }), wantErr: "0 bytes"},
		{name: "string match without type", pol: mut(func(m *security.Match) { m.Principals = []*security.StringMatch{{}} }), wantErr: "without a match type"},
		{name: "empty service account match", pol: mut(func(m *security.Match) { m.ServiceAccounts = []*security.ServiceAccountMatch{{Namespace: "ns1"}} }), wantErr: "service account match"},
		{name: "port out of range", pol: mut(func(m *security.Match) { m.NotDestinationPorts = []uint32{65536} }), wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := New(nil)
			up := polUpsert(tt.pol)
			if tt.resName != "" {
				up.Name = tt.resName
			}
			rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{polUpsert(clone(good)), up}})
			if len(rej) != 1 || rej[0].Name != up.Name {
				t.Fatalf("rejections = %v, want exactly %q", rej, up.Name)
			}
			if !errors.Is(rej[0].Err, ErrInvalid) || !strings.Contains(rej[0].Err.Error(), tt.wantErr) {
				t.Fatalf("error %q: want ErrInvalid containing %q", rej[0].Err, tt.wantErr)
			}
			// The valid sibling is applied; the refused one is kept as
			// refused, to be enforced fail-closed.
			ps := st.Policies()
			if ps.Get("ns1/good") == nil || ps.Refused("ns1/good") != nil || ps.Len() != 2 {
				t.Fatalf("valid sibling not applied: %d policies", ps.Len())
			}
			if err := ps.Refused(up.Name); err == nil || err.Error() != strings.TrimPrefix(rej[0].Err.Error(), "authorization: ") {
				t.Fatalf("refusal recorded as %v, rejection %v", err, rej[0].Err)
			}
		})
	}
	t.Run("valid kinds accepted", func(t *testing.T) {
		st := New(nil)
		ok := mut(func(m *security.Match) {
			m.Principals = []*security.StringMatch{
				{MatchType: &security.StringMatch_Exact{Exact: "a"}}, {MatchType: &security.StringMatch_Prefix{Prefix: "b"}},
				{MatchType: &security.StringMatch_Suffix{Suffix: "c"}}, {MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}},
			}
			m.SourceIps = []*security.Address{{Address: ipb("10.0.0.0"), Length: 8}, {Address: ipb("fd00::"), Length: 128}}
			m.DestinationPorts = []uint32{0, 65535}
		})
		if rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{polUpsert(ok)}}); len(rej) != 0 {
			t.Fatal(rej)
		}
	})
}

func TestRejectedUpdateKeepsPrevious(t *testing.T) {
	st := New(nil)
	w := pod("ns1", "a", "10.244.0.1")
	applyAddr(t, st, wlUpsert(w))
	bad := clone(w)
	bad.TunnelProtocol = workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS
	bad.Addresses = [][]byte{ipb("10.244.0.9")}
	if rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{wlUpsert(bad)}}); len(rej) != 1 {
		t.Fatalf("rejections %v", rej)
	}
	if got := st.WorkloadByUID(w.Uid); got != w {
		t.Fatalf("previous version replaced: %v", got)
	}
	if st.WorkloadByAddr("", netipAddr("10.244.0.9")) != nil {
		t.Fatal("rejected address indexed")
	}
	pol := &security.Authorization{Name: "p", Namespace: "ns1", Action: security.Action_DENY}
	if rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{polUpsert(pol)}}); len(rej) != 0 {
		t.Fatal(rej)
	}
	badPol := &security.Authorization{Name: "p", Namespace: "ns1", Scope: 9}
	if rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{polUpsert(badPol)}}); len(rej) != 1 {
		t.Fatal(rej)
	}
	if st.Policies().Get("ns1/p") != pol {
		t.Fatal("previous policy replaced by rejected update")
	}
}
