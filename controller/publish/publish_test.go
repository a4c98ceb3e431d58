package publish

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/index/indextest"
	"github.com/zmesh/zmesh/controller/l7"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
)

func newPublisher(t testing.TB) *Publisher {
	t.Helper()
	tokens, err := auth.NewStaticTokens(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xdsserver.New(xdsserver.Options{Authenticator: tokens, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{XDS: srv})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPublishReusesUnchangedMessages publishes a mesh with waypoints and
// ALLOW policies (so that some workloads are the allow-from-waypoint copies),
// then the same mesh with one pod's readiness changed: every other workload,
// service and policy must be the very message published before, and every
// Address resource the very same resource, while the content equals a
// build from scratch.
func TestPublishReusesUnchangedMessages(t *testing.T) {
	spec := indextest.Spec{Namespaces: 4, Pods: 40, Services: 8, PodsPerService: 5, AuthorizationPolicies: 9, Waypoints: 2}
	in := indextest.Inputs(spec)
	p := newPublisher(t)
	first, err := p.Publish(in)
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for _, w := range first.Output.Workloads {
		if slices.ContainsFunc(w.AuthorizationPolicies, func(n string) bool { return strings.Contains(n, l7.AllowWaypointPolicyPrefix) }) {
			allowed++
		}
	}
	if allowed == 0 {
		t.Fatal("no workload carries an allow-from-waypoint policy; the fixture does not exercise them")
	}
	firstResources := resourcesByName(p)

	// Replace the first workload that carries a policy by an unready copy.
	var next *index.Inputs
	var changedUID string
	for i, pod := range in.Pods {
		uid := index.DefaultClusterID + "//Pod/" + pod.Namespace + "/" + pod.Name
		if w := first.Output.Workloads[uid]; w != nil && len(w.AuthorizationPolicies) > 0 {
			next = indextest.WithPod(in, i, func(p *corev1.Pod) { indextest.SetReady(p, false) })
			changedUID = uid
			break
		}
	}
	second, err := p.Publish(next)
	if err != nil {
		t.Fatal(err)
	}
	for uid, w := range first.Output.Workloads {
		same := second.Output.Workloads[uid] == w
		if uid == changedUID && same {
			t.Errorf("changed workload %s is the old message", uid)
		}
		if uid != changedUID && !same {
			t.Errorf("unchanged workload %s is a new message", uid)
		}
	}
	for k, s := range first.Output.Services {
		if second.Output.Services[k] != s {
			t.Errorf("unchanged service %s is a new message", k)
		}
	}
	for k, pol := range first.Output.Policies {
		if second.Output.Policies[k] != pol {
			t.Errorf("unchanged policy %s is a new message", k)
		}
	}
	for name, r := range resourcesByName(p) {
		old, ok := firstResources[name]
		if !ok {
			t.Errorf("resource %s is new", name)
			continue
		}
		if (old.Body == r.Body) == (name == changedUID) {
			t.Errorf("resource %s: reused %v", name, old.Body == r.Body)
		}
	}
	if got := second.Output.Workloads[changedUID].GetStatus(); got != workloadapi.WorkloadStatus_UNHEALTHY {
		t.Errorf("changed workload status %v", got)
	}

	// The content is what a build from scratch gives.
	requireFromScratch(t, next, second.Output)

	// Without the ALLOW policies no workload needs the waypoints' policy.
	noPolicies := *next
	noPolicies.AuthorizationPolicies = nil
	third, err := p.Publish(&noPolicies)
	if err != nil {
		t.Fatal(err)
	}
	requireFromScratch(t, &noPolicies, third.Output)
	for k := range third.Output.Policies {
		if strings.Contains(k, l7.AllowWaypointPolicyPrefix) {
			t.Errorf("implicit policy %s without ALLOW policies", k)
		}
	}
}

// requireFromScratch checks that out has the content a build from scratch
// gives for in.
func requireFromScratch(t *testing.T, in *index.Inputs, out *index.Output) {
	t.Helper()
	want := l7.AllowFromWaypoints(index.Config{}, in, index.Build(index.Config{}, in))
	if len(want.Workloads) != len(out.Workloads) || len(want.Policies) != len(out.Policies) {
		t.Fatalf("got %d workloads and %d policies, want %d and %d", len(out.Workloads),
			len(out.Policies), len(want.Workloads), len(want.Policies))
	}
	for uid, w := range want.Workloads {
		if !proto.Equal(w, out.Workloads[uid]) {
			t.Errorf("workload %s differs from a build from scratch", uid)
		}
	}
	for k, pol := range want.Policies {
		if !proto.Equal(pol, out.Policies[k]) {
			t.Errorf("policy %s differs from a build from scratch", k)
		}
	}
}

// resourcesByName renders the Address resources the Publisher would hand
// to xDS for its latest output.
func resourcesByName(p *Publisher) map[string]xdsserver.Resource {
	res := map[string]xdsserver.Resource{}
	for _, r := range p.workloads {
		res[r.res.Name] = r.res
	}
	for _, r := range p.services {
		res[r.res.Name] = r.res
	}
	return res
}

func TestNewRequiresXDS(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without an xDS server succeeded")
	}
}

// TestRenderedResourcesAreDropped: a workload gone from the output is
// forgotten, not kept for ever.
func TestRenderedResourcesAreDropped(t *testing.T) {
	in := indextest.Inputs(indextest.Spec{Namespaces: 2, Pods: 10, Services: 2, PodsPerService: 5})
	p := newPublisher(t)
	if _, err := p.Publish(in); err != nil {
		t.Fatal(err)
	}
	fewer := *in
	fewer.Pods = in.Pods[:4]
	res, err := p.Publish(&fewer)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.workloads) != len(res.Output.Workloads) || len(res.Output.Workloads) != 4 {
		t.Errorf("%d rendered workloads for %d published", len(p.workloads), len(res.Output.Workloads))
	}
}

// TestL7ReusedUnlessItsObjectsChange: the L7 output is rebuilt when a pod
// of a namespace whose endpoints it lists changes, and reused otherwise.
func TestL7ReusedUnlessItsObjectsChange(t *testing.T) {
	// Waypoints in ns-000 and ns-001 only; ns-002 and ns-003 have none.
	in := indextest.Inputs(indextest.Spec{Namespaces: 4, Pods: 40, Services: 8, PodsPerService: 5, Waypoints: 2})
	p := newPublisher(t)
	first, err := p.Publish(in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first.L7.PodNamespaces, []string{"ns-000", "ns-001"}) {
		t.Fatalf("pod namespaces %v", first.L7.PodNamespaces)
	}
	for _, tc := range []struct {
		ns      string
		rebuilt bool
	}{{"ns-003", false}, {"ns-001", true}, {"ns-002", false}} {
		before := p.l7out
		i := slices.IndexFunc(in.Pods, func(p *corev1.Pod) bool { return p.Namespace == tc.ns })
		in = indextest.WithPod(in, i, func(*corev1.Pod) {})
		res, err := p.Publish(in)
		if err != nil {
			t.Fatal(err)
		}
		if rebuilt := res.L7 != before; rebuilt != tc.rebuilt {
			t.Errorf("pod of %s changed: L7 rebuilt %v, want %v", tc.ns, rebuilt, tc.rebuilt)
		}
	}
	// A new Telemetry (mesh-wide access logging) is an L7 input too.
	before := p.l7out
	withTelemetry := *in
	withTelemetry.Telemetries = []*telemetryv1.Telemetry{{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh-default", Namespace: "istio-system", UID: "t1", ResourceVersion: "1"},
		Spec:       telemetryapi.Telemetry{AccessLogging: []*telemetryapi.AccessLogging{{}}},
	}}
	res, err := p.Publish(&withTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	if res.L7 == before {
		t.Error("Telemetry added: L7 not rebuilt")
	}
}
