package l7

import (
	"os"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/internal/manifesttest"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// allowFixture reads the allow-from-waypoint test mesh.
func allowFixture(t *testing.T) *index.Inputs {
	t.Helper()
	data, err := os.ReadFile("testdata/allow/waypoints.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, in, err := decodeInputs(manifesttest.Scheme(), data, true)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestAllowFromWaypoints(t *testing.T) {
	in := allowFixture(t)
	cfg := index.Config{}
	base := index.Build(cfg, in)
	if len(base.Problems) > 0 {
		t.Fatalf("index problems: %v", base.Problems)
	}
	snapshot := map[string][]byte{}
	for uid, w := range base.Workloads {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		snapshot[uid] = b
	}
	out := AllowFromWaypoints(cfg, in, base)
	if len(out.ServiceWaypoints) != len(base.ServiceWaypoints) || len(out.ServiceWaypoints) == 0 ||
		len(out.PolicyStatus) != len(base.PolicyStatus) || len(out.Services) != len(base.Services) {
		t.Error("fields of the index output other than workloads and policies were not carried over")
	}

	const (
		svcWaypoint = "demo/istio_allow_waypoint_demo_waypoint"
		podWaypoint = "demo/istio_allow_waypoint_demo_pod-waypoint"
	)
	uid := func(ns, name string) string { return "Kubernetes//Pod/" + ns + "/" + name }
	cases := []struct {
		uid     string
		want    []string
		without []string
	}{
		// An ALLOW selects it and its service has a waypoint.
		{uid("demo", "reviews-1"), []string{svcWaypoint, "demo/reviews-allow"}, nil},
		// Its own waypoint and its service's.
		{uid("demo", "reviews-own"), []string{podWaypoint, svcWaypoint, "demo/reviews-allow"}, nil},
		// Only a DENY applies: nothing to open.
		{uid("demo", "ratings-1"), []string{"demo/deny-only"}, []string{svcWaypoint}},
		// A namespace-wide ALLOW applies; the waypoint is in another namespace.
		{uid("locked", "db-1"), []string{svcWaypoint}, nil},
		// ALLOW applies but no waypoint serves it.
		{uid("locked", "lonely"), nil, []string{svcWaypoint}},
	}
	for _, tc := range cases {
		w := out.Workloads[tc.uid]
		if w == nil {
			t.Fatalf("workload %s missing", tc.uid)
		}
		if !slices.Equal(w.AuthorizationPolicies, tc.want) {
			t.Errorf("%s: policies %v, want %v", tc.uid, w.AuthorizationPolicies, tc.want)
		}
		for _, p := range tc.want {
			if out.Policies[p] == nil {
				t.Errorf("%s lists %s, which is not published", tc.uid, p)
			}
		}
	}
	p := out.Policies[podWaypoint]
	want := &security.Authorization{
		Name: "istio_allow_waypoint_demo_pod-waypoint", Namespace: "demo",
		Scope: security.Scope_WORKLOAD_SELECTOR, Action: security.Action_ALLOW,
		Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{
			Principals: []*security.StringMatch{{MatchType: &security.StringMatch_Exact{Exact: "cluster.local/ns/demo/sa/custom-sa"}}},
		}}}}}},
	}
	if !proto.Equal(p, want) {
		t.Errorf("policy %s = %v, want %v", podWaypoint, p, want)
	}
	if got := out.Policies[svcWaypoint].GetGroups()[0].GetRules()[0].GetMatches()[0].GetPrincipals()[0].GetExact(); got != "cluster.local/ns/demo/sa/waypoint" {
		t.Errorf("service waypoint principal %q", got)
	}
	// The input output is untouched.
	for uid, w := range base.Workloads {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(w)
		if string(b) != string(snapshot[uid]) {
			t.Errorf("workload %s of the input output was modified", uid)
		}
	}
	if _, ok := base.Policies[svcWaypoint]; ok {
		t.Error("policy added to the input output")
	}
	// Idempotent.
	again := AllowFromWaypoints(cfg, in, out)
	for uid, w := range out.Workloads {
		if !proto.Equal(w, again.Workloads[uid]) {
			t.Errorf("second application changed %s", uid)
		}
	}
}

// TestWaypointAllowerReuse: a WaypointAllower reuses its decisions while the
// output's maps are the same, and decides again when they are not, even
// for the same workload messages.
func TestWaypointAllowerReuse(t *testing.T) {
	in := allowFixture(t)
	cfg := index.Config{}
	base := index.Build(cfg, in)
	a := NewWaypointAllower(cfg)
	first := a.Apply(in, base)
	again := a.Apply(in, base)
	changed := 0
	for uid, w := range first.Workloads {
		if again.Workloads[uid] != w {
			t.Errorf("workload %s decided again", uid)
		}
		if w != base.Workloads[uid] {
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("the fixture gives no workload an implicit policy")
	}

	// The same workload messages with the ALLOW policies gone: nothing
	// needs the implicit policy any more.
	denyOnly := *base
	denyOnly.Policies = map[string]*security.Authorization{}
	for k, p := range base.Policies {
		if p.Action != security.Action_ALLOW {
			denyOnly.Policies[k] = p
		}
	}
	got, want := a.Apply(in, &denyOnly), AllowFromWaypoints(cfg, in, &denyOnly)
	for uid, w := range want.Workloads {
		if !proto.Equal(got.Workloads[uid], w) {
			t.Errorf("workload %s: %v, want %v", uid, got.Workloads[uid].GetAuthorizationPolicies(), w.GetAuthorizationPolicies())
		}
	}
	if len(got.Policies) != len(want.Policies) {
		t.Errorf("%d policies, want %d", len(got.Policies), len(want.Policies))
	}
}
