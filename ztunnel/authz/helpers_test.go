package authz

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/ztunnel/state"
)

func exact(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}}
}
func prefix(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Prefix{Prefix: s}}
}
func suffix(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Suffix{Suffix: s}}
}
func presence() *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
}

func cidr(s string) *security.Address {
	p := netip.MustParsePrefix(s)
	return &security.Address{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
}

func sa(ns, name string) *security.ServiceAccountMatch {
	return &security.ServiceAccountMatch{Namespace: ns, ServiceAccount: name}
}

// pol builds a policy whose groups are given as lists of rules, each rule a
// list of matches.
func pol(ns, name string, scope security.Scope, action security.Action, groups ...[][]*security.Match) *security.Authorization {
	a := &security.Authorization{Name: name, Namespace: ns, Scope: scope, Action: action}
	for _, g := range groups {
		cg := &security.Group{}
		for _, r := range g {
			cg.Rules = append(cg.Rules, &security.Rules{Matches: r})
		}
		a.Groups = append(a.Groups, cg)
	}
	return a
}

// grp is one group of the given rules.
func grp(rules ...[]*security.Match) [][]*security.Match { return rules }

// any1 is a rule of the given alternative matches.
func any1(ms ...*security.Match) []*security.Match { return ms }

func workload(ns, name, ip string, policies ...string) *workloadapi.Workload {
	return &workloadapi.Workload{
		Uid: "Kubernetes//Pod/" + ns + "/" + name, Name: name, Namespace: ns,
		Addresses:             [][]byte{netip.MustParseAddr(ip).AsSlice()},
		TunnelProtocol:        workloadapi.TunnelProtocol_HBONE,
		AuthorizationPolicies: policies,
	}
}

func newEngine(t testing.TB, workloads []*workloadapi.Workload, policies ...*security.Authorization) (*state.State, *Engine) {
	t.Helper()
	st := state.New(nil)
	var ups []xds.Upsert
	for _, w := range workloads {
		ups = append(ups, xds.Upsert{Name: w.GetUid(), Message: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}})
	}
	if rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: ups}); len(rej) > 0 {
		t.Fatalf("workloads rejected: %v", rej)
	}
	setPolicies(t, st, policies...)
	return st, NewEngine(st, nil)
}

func setPolicies(t testing.TB, st *state.State, policies ...*security.Authorization) {
	t.Helper()
	var ups []xds.Upsert
	for _, p := range policies {
		ups = append(ups, xds.Upsert{Name: p.GetNamespace() + "/" + p.GetName(), Message: p})
	}
	if rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: ups}); len(rej) > 0 {
		t.Fatalf("policies rejected: %v", rej)
	}
}

const webID = "spiffe://cluster.local/ns/ns1/sa/web"

// mtls is a connection from ns1/web (10.244.0.5) to 10.244.1.1:8080.
func mtls() Conn {
	return Conn{SrcIdentity: webID, SrcIP: netip.MustParseAddr("10.244.0.5"), DstIP: netip.MustParseAddr("10.244.1.1"), DstPort: 8080}
}

func plaintext() Conn {
	c := mtls()
	c.SrcIdentity = ""
	return c
}

func ipMapped(s string) netip.Addr {
	return netip.AddrFrom16(netip.MustParseAddr(s).As16())
}
