package authz

import (
	"testing"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

var (
	matchAll = grp()                                                                         // a group without rules
	fromNS1  = grp(any1(&security.Match{Namespaces: []*security.StringMatch{exact("ns1")}})) // source namespace ns1
	fromNS2  = grp(any1(&security.Match{Namespaces: []*security.StringMatch{exact("ns2")}}))
)

// TestScopeSelection puts one deny-all policy in place at a time and checks
// whether it applies to a workload of ns1.
func TestScopeSelection(t *testing.T) {
	const (
		G = security.Scope_GLOBAL
		N = security.Scope_NAMESPACE
		W = security.Scope_WORKLOAD_SELECTOR
	)
	tests := []struct {
		name    string
		policy  *security.Authorization
		listed  []string
		applies bool
	}{
		{"global in root namespace", pol("istio-system", "p", G, security.Action_DENY, matchAll), nil, true},
		{"global in any namespace", pol("other", "p", G, security.Action_DENY, matchAll), nil, true},
		{"namespace scope, same namespace", pol("ns1", "p", N, security.Action_DENY, matchAll), nil, true},
		{"namespace scope, other namespace", pol("ns2", "p", N, security.Action_DENY, matchAll), nil, false},
		{"selector, listed", pol("ns1", "p", W, security.Action_DENY, matchAll), []string{"ns1/p"}, true},
		{"selector, listed from root namespace", pol("istio-system", "istio_converted_static_strict", W, security.Action_DENY, matchAll), []string{"istio-system/istio_converted_static_strict"}, true},
		{"selector, not listed", pol("ns1", "p", W, security.Action_DENY, matchAll), nil, false},
		{"namespace scope of other namespace, listed", pol("ns2", "p", N, security.Action_DENY, matchAll), []string{"ns2/p"}, true},
		{"global listed too (counted once)", pol("istio-system", "p", G, security.Action_DENY, matchAll), []string{"istio-system/p"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := workload("ns1", "api", "10.244.1.1", tt.listed...)
			_, e := newEngine(t, []*workloadapi.Workload{w}, tt.policy)
			v := e.Evaluate(mtls(), w)
			if v.Allowed == tt.applies {
				t.Fatalf("allowed = %v, policy applies = %v (%+v)", v.Allowed, tt.applies, v)
			}
			if tt.applies && (v.Policy != tt.policy.Namespace+"/"+tt.policy.Name || v.Reason != ReasonDenyMatched) {
				t.Fatalf("verdict %+v", v)
			}
			if !tt.applies && v.Reason != ReasonNoAllowPolicy {
				t.Fatalf("verdict %+v", v)
			}
		})
	}
	t.Run("nil workload: global only", func(t *testing.T) {
		_, e := newEngine(t, nil, pol("ns1", "n", N, security.Action_DENY, matchAll))
		if v := e.Evaluate(mtls(), nil); !v.Allowed {
			t.Fatalf("%+v", v)
		}
		_, e = newEngine(t, nil, pol("x", "g", G, security.Action_DENY, matchAll))
		if v := e.Evaluate(mtls(), nil); v.Allowed {
			t.Fatalf("%+v", v)
		}
	})
}

func TestDecisions(t *testing.T) {
	const (
		N     = security.Scope_NAMESPACE
		ALLOW = security.Action_ALLOW
		DENY  = security.Action_DENY
	)
	port := func(p uint32) *security.Match { return &security.Match{DestinationPorts: []uint32{p}} }
	tests := []struct {
		name     string
		policies []*security.Authorization
		conn     Conn
		allowed  bool
		policy   string
		reason   Reason
	}{
		{"no policies", nil, mtls(), true, "", ReasonNoAllowPolicy},
		{"deny not matching, no allow", []*security.Authorization{pol("ns1", "d", N, DENY, fromNS2)}, mtls(), true, "", ReasonNoAllowPolicy},
		{"deny matching", []*security.Authorization{pol("ns1", "d", N, DENY, fromNS1)}, mtls(), false, "ns1/d", ReasonDenyMatched},
		{"deny wins over matching allow", []*security.Authorization{pol("ns1", "a", N, ALLOW, fromNS1), pol("ns1", "z", N, DENY, fromNS1)}, mtls(), false, "ns1/z", ReasonDenyMatched},
		{"allow matching", []*security.Authorization{pol("ns1", "a", N, ALLOW, fromNS1)}, mtls(), true, "ns1/a", ReasonAllowMatched},
		{"allow present but not matching", []*security.Authorization{pol("ns1", "a", N, ALLOW, fromNS2)}, mtls(), false, "", ReasonAllowNotMatched},
		{"second allow matches", []*security.Authorization{pol("ns1", "a", N, ALLOW, fromNS2), pol("ns1", "b", N, ALLOW, fromNS1)}, mtls(), true, "ns1/b", ReasonAllowMatched},
		{"allow with no groups denies all", []*security.Authorization{pol("ns1", "a", N, ALLOW)}, mtls(), false, "", ReasonAllowNotMatched},
		{"deny with no groups matches nothing", []*security.Authorization{pol("ns1", "d", N, DENY)}, mtls(), true, "", ReasonNoAllowPolicy},
		{"allow with empty group allows all", []*security.Authorization{pol("ns1", "a", N, ALLOW, matchAll)}, plaintext(), true, "ns1/a", ReasonAllowMatched},
		{"deny with empty group denies all", []*security.Authorization{pol("ns1", "d", N, DENY, matchAll)}, plaintext(), false, "ns1/d", ReasonDenyMatched},
		{"rule without matches constrains nothing", []*security.Authorization{pol("ns1", "a", N, ALLOW, grp(any1()))}, mtls(), true, "ns1/a", ReasonAllowMatched},
		{"group rules are ANDed: both hold", []*security.Authorization{pol("ns1", "a", N, ALLOW, grp(fromNS1[0], any1(port(8080))))}, mtls(), true, "ns1/a", ReasonAllowMatched},
		{"group rules are ANDed: one fails", []*security.Authorization{pol("ns1", "a", N, ALLOW, grp(fromNS1[0], any1(port(80))))}, mtls(), false, "", ReasonAllowNotMatched},
		{"rule matches are ORed", []*security.Authorization{pol("ns1", "a", N, ALLOW, grp(any1(port(80), port(8080))))}, mtls(), true, "ns1/a", ReasonAllowMatched},
		{"groups are ORed", []*security.Authorization{pol("ns1", "a", N, ALLOW, fromNS2, grp(any1(port(8080))))}, mtls(), true, "ns1/a", ReasonAllowMatched},
		{"empty match matches all (L4 remainder of an L7 DENY)", []*security.Authorization{pol("ns1", "d", N, DENY, grp(any1(&security.Match{})))}, mtls(), false, "ns1/d", ReasonDenyMatched},
		{"ipv4-mapped connection addresses", []*security.Authorization{pol("ns1", "a", N, ALLOW, grp(any1(&security.Match{SourceIps: []*security.Address{cidr("10.244.0.0/16")}})))},
			func() Conn { c := mtls(); c.SrcIP = ipMapped("10.244.0.5"); c.DstIP = ipMapped("10.244.1.1"); return c }(), true, "ns1/a", ReasonAllowMatched},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := workload("ns1", "api", "10.244.1.1")
			_, e := newEngine(t, []*workloadapi.Workload{w}, tt.policies...)
			v := e.Evaluate(tt.conn, w)
			if v.Allowed != tt.allowed || v.Policy != tt.policy || v.Reason != tt.reason {
				t.Fatalf("verdict %+v, want allowed=%v policy=%q reason=%s", v.Decision, tt.allowed, tt.policy, tt.reason)
			}
			if v.DryRunApplied {
				t.Fatal("no dry-run policy applied")
			}
		})
	}
}

func TestDryRun(t *testing.T) {
	const N = security.Scope_NAMESPACE
	dry := func(a *security.Authorization) *security.Authorization { a.DryRun = true; return a }
	w := workload("ns1", "api", "10.244.1.1")
	tests := []struct {
		name     string
		policies []*security.Authorization
		enforced Decision
		dryRun   Decision
	}{
		{"dry-run deny matching is not enforced",
			[]*security.Authorization{dry(pol("ns1", "d", N, security.Action_DENY, fromNS1))},
			Decision{true, "", ReasonNoAllowPolicy}, Decision{false, "ns1/d", ReasonDenyMatched}},
		{"dry-run allow not matching",
			[]*security.Authorization{dry(pol("ns1", "a", N, security.Action_ALLOW, fromNS2))},
			Decision{true, "", ReasonNoAllowPolicy}, Decision{false, "", ReasonAllowNotMatched}},
		{"dry-run allow next to an enforced one",
			[]*security.Authorization{pol("ns1", "a", N, security.Action_ALLOW, fromNS2), dry(pol("ns1", "b", N, security.Action_ALLOW, fromNS1))},
			Decision{false, "", ReasonAllowNotMatched}, Decision{true, "ns1/b", ReasonAllowMatched}},
		{"enforced deny, dry-run deny",
			[]*security.Authorization{dry(pol("ns1", "a", N, security.Action_DENY, fromNS1)), pol("ns1", "b", N, security.Action_DENY, fromNS1)},
			Decision{false, "ns1/b", ReasonDenyMatched}, Decision{false, "ns1/a", ReasonDenyMatched}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := newEngine(t, []*workloadapi.Workload{w}, tt.policies...)
			v := e.Evaluate(mtls(), w)
			if v.Decision != tt.enforced || !v.DryRunApplied || v.DryRun != tt.dryRun {
				t.Fatalf("got %+v, want enforced %+v dry-run %+v", v, tt.enforced, tt.dryRun)
			}
		})
	}
}

func TestPolicyUpdatesRecompile(t *testing.T) {
	w := workload("ns1", "api", "10.244.1.1")
	st, e := newEngine(t, []*workloadapi.Workload{w}, pol("ns1", "a", security.Scope_NAMESPACE, security.Action_ALLOW, fromNS1))
	if !e.Evaluate(mtls(), w).Allowed {
		t.Fatal("allow")
	}
	first := e.compiled()
	setPolicies(t, st, pol("ns1", "b", security.Scope_NAMESPACE, security.Action_DENY, fromNS1))
	if v := e.Evaluate(mtls(), w); v.Allowed || v.Policy != "ns1/b" {
		t.Fatalf("after update: %+v", v)
	}
	if e.compiled().byKey["ns1/a"] != first.byKey["ns1/a"] {
		t.Fatal("unchanged policy was recompiled")
	}
}

// TestManyListedPolicies goes beyond the listed policies resolved on the
// stack.
func TestManyListedPolicies(t *testing.T) {
	var pols []*security.Authorization
	var names []string
	for i := range maxListedOnStack + 8 {
		name := "allow-" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		pols = append(pols, pol("ns1", name, security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, fromNS2))
		names = append(names, "ns1/"+name)
	}
	last := pols[len(pols)-1]
	last.Groups = nil
	last.Action = security.Action_DENY
	last.Groups = []*security.Group{{}}
	w := workload("ns1", "api", "10.244.1.1", names...)
	st, e := newEngine(t, []*workloadapi.Workload{w}, pols...)
	if v := e.Evaluate(mtls(), w); v.Allowed || v.Policy != names[len(names)-1] {
		t.Fatalf("deny beyond the stack buffer: %+v", v)
	}
	last = pol("ns1", last.Name, security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, fromNS1)
	setPolicies(t, st, last)
	if v := e.Evaluate(mtls(), w); !v.Allowed || v.Policy != names[len(names)-1] {
		t.Fatalf("allow beyond the stack buffer: %+v", v)
	}
}
