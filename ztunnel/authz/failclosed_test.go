package authz

import (
	"testing"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// badSourceIP is a match the state refuses: a 33-byte address.
var badSourceIP = grp(any1(&security.Match{SourceIps: []*security.Address{{Address: make([]byte, 33), Length: 8}}}))

// sendPolicy delivers one upsert and reports whether it was refused.
func sendPolicy(t *testing.T, st *state.State, name string, msg any) bool {
	t.Helper()
	u := xds.Upsert{Name: name}
	if a, ok := msg.(*security.Authorization); ok {
		u.Message = a
	} else {
		u.Message = &workloadapi.Address{} // the wrong type
	}
	return len(st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{u}})) > 0
}

// TestFailClosed checks that a policy ztunnel cannot enforce as written
// never widens access: a refused policy with no earlier version denies
// where it applies (DENY: everything; ALLOW: it matches nothing), and a
// listed policy that is missing denies new connections.
func TestFailClosed(t *testing.T) {
	const (
		N = security.Scope_NAMESPACE
		W = security.Scope_WORKLOAD_SELECTOR
	)
	allowNS1 := pol("ns1", "allow-ns1", W, security.Action_ALLOW, fromNS1)
	tests := []struct {
		name     string
		accepted []*security.Authorization
		refused  map[string]any // resource name → message sent
		listed   []string
		ns       string // the workload's namespace (default ns1)
		want     Decision
	}{
		{
			name:   "listed, never received",
			listed: []string{"ns1/missing"},
			want:   Decision{Policy: "ns1/missing", Reason: ReasonPolicyUnknown},
		},
		{
			name:     "listed, never received, another listed ALLOW matches",
			accepted: []*security.Authorization{allowNS1},
			listed:   []string{"ns1/allow-ns1", "ns1/missing"},
			want:     Decision{Policy: "ns1/missing", Reason: ReasonPolicyUnknown},
		},
		{
			name:     "listed, never received, a DENY decides first",
			accepted: []*security.Authorization{pol("ns1", "deny-all", W, security.Action_DENY, matchAll)},
			listed:   []string{"ns1/missing", "ns1/deny-all"},
			want:     Decision{Policy: "ns1/deny-all", Reason: ReasonDenyMatched},
		},
		{
			name:    "refused ALLOW, the only one",
			refused: map[string]any{"ns1/p": pol("ns1", "p", W, security.Action_ALLOW, fromNS1, badSourceIP)},
			listed:  []string{"ns1/p"},
			want:    Decision{Reason: ReasonAllowNotMatched},
		},
		{
			name:     "refused ALLOW beside an ALLOW that matches",
			accepted: []*security.Authorization{allowNS1},
			refused:  map[string]any{"ns1/p": pol("ns1", "p", W, security.Action_ALLOW, badSourceIP)},
			listed:   []string{"ns1/p", "ns1/allow-ns1"},
			want:     Decision{Allowed: true, Policy: "ns1/allow-ns1", Reason: ReasonAllowMatched},
		},
		{
			name:    "refused DENY matches everything",
			refused: map[string]any{"ns1/p": pol("ns1", "p", W, security.Action_DENY, fromNS2, badSourceIP)},
			listed:  []string{"ns1/p"},
			want:    Decision{Policy: "ns1/p", Reason: ReasonDenyMatched},
		},
		{
			name:    "refused namespace ALLOW applies to its namespace unlisted",
			refused: map[string]any{"ns1/p": pol("ns1", "p", N, security.Action_ALLOW, badSourceIP)},
			want:    Decision{Reason: ReasonAllowNotMatched},
		},
		{
			name:    "refused namespace ALLOW leaves other namespaces alone",
			refused: map[string]any{"ns1/p": pol("ns1", "p", N, security.Action_ALLOW, badSourceIP)},
			ns:      "ns2",
			want:    Decision{Allowed: true, Reason: ReasonNoAllowPolicy},
		},
		{
			name:    "refused, unknown action",
			refused: map[string]any{"ns1/p": pol("ns1", "p", W, security.Action(7), fromNS1)},
			listed:  []string{"ns1/p"},
			want:    Decision{Policy: "ns1/p", Reason: ReasonDenyMatched},
		},
		{
			name:    "refused, not an Authorization",
			refused: map[string]any{"ns1/p": nil},
			listed:  []string{"ns1/p"},
			want:    Decision{Policy: "ns1/p", Reason: ReasonDenyMatched},
		},
		{
			name:     "refused update keeps the accepted version",
			accepted: []*security.Authorization{allowNS1},
			refused:  map[string]any{"ns1/allow-ns1": pol("ns1", "allow-ns1", W, security.Action_ALLOW, badSourceIP)},
			listed:   []string{"ns1/allow-ns1"},
			want:     Decision{Allowed: true, Policy: "ns1/allow-ns1", Reason: ReasonAllowMatched},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := tt.ns
			if ns == "" {
				ns = "ns1"
			}
			w := workload(ns, "api", "10.244.1.1", tt.listed...)
			st, e := newEngine(t, []*workloadapi.Workload{w}, tt.accepted...)
			for name, msg := range tt.refused {
				if !sendPolicy(t, st, name, msg) {
					t.Fatalf("%s was accepted", name)
				}
			}
			if v := e.Evaluate(mtls(), w); v.Decision != tt.want {
				t.Fatalf("decision %+v, want %+v", v.Decision, tt.want)
			}
		})
	}
}

// TestRefusalClearedByAValidVersion: once the controller sends a version
// ztunnel accepts, the policy is enforced as written; once it is removed,
// it no longer applies.
func TestRefusalClearedByAValidVersion(t *testing.T) {
	w := workload("ns1", "api", "10.244.1.1", "ns1/p")
	st, e := newEngine(t, []*workloadapi.Workload{w})
	if !sendPolicy(t, st, "ns1/p", pol("ns1", "p", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, fromNS1, badSourceIP)) {
		t.Fatal("bad policy accepted")
	}
	if st.Policies().Refused("ns1/p") == nil {
		t.Fatal("refusal not recorded")
	}
	if v := e.Evaluate(mtls(), w); v.Allowed {
		t.Fatalf("refused ALLOW admitted: %+v", v)
	}
	setPolicies(t, st, pol("ns1", "p", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, fromNS1))
	if err := st.Policies().Refused("ns1/p"); err != nil {
		t.Fatalf("refusal kept after a valid version: %v", err)
	}
	if v := e.Evaluate(mtls(), w); !v.Allowed || v.Reason != ReasonAllowMatched {
		t.Fatalf("valid ALLOW: %+v", v)
	}
	if !sendPolicy(t, st, "ns1/q", nil) {
		t.Fatal("wrong type accepted")
	}
	if rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Removals: []string{"ns1/q"}}); len(rej) > 0 {
		t.Fatal(rej)
	}
	if st.Policies().Get("ns1/q") != nil || st.Policies().Refused("ns1/q") != nil || st.Policies().Len() != 1 {
		t.Fatal("removed refused policy still present")
	}
}

// TestTrackerKeepsConnectionsOnUnknownPolicy: a live connection is not
// closed because its workload now lists a policy that has not arrived (it
// was admitted with policy known), but is closed once that policy arrives
// and denies it, and at once by a refused DENY.
func TestTrackerKeepsConnectionsOnUnknownPolicy(t *testing.T) {
	w := workload("ns1", "api", "10.244.1.1")
	st, e := newEngine(t, []*workloadapi.Workload{w})
	tr := NewTracker(e, nil)
	closed := 0
	h := tr.Track(mtls(), w.Uid, func() { closed++ })
	defer h.Untrack()
	listed := workload("ns1", "api", "10.244.1.1", "ns1/new")
	if rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: listed.Uid,
		Message: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: listed}}}}}); len(rej) > 0 {
		t.Fatal(rej)
	}
	if v := e.Evaluate(mtls(), st.WorkloadByUID(w.Uid)); v.Allowed || v.Reason != ReasonPolicyUnknown {
		t.Fatalf("new connection: %+v", v)
	}
	if n := tr.Recheck(); n != 0 || closed != 0 {
		t.Fatalf("re-check closed %d for a policy not yet received", n)
	}
	if !sendPolicy(t, st, "ns1/new", pol("ns1", "new", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY, badSourceIP)) {
		t.Fatal("bad policy accepted")
	}
	if n := tr.Recheck(); n != 1 || closed != 1 {
		t.Fatalf("re-check after a refused DENY closed %d", n)
	}
}
