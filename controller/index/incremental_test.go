package index

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// TestBuilderMatchesBuild walks each golden input through random edits
// (objects removed, put back, replaced by equal copies or by edited
// copies, repeated) and requires the Builder's Output after every edit to
// equal what Build gives for the same snapshot.
func TestBuilderMatchesBuild(t *testing.T) {
	steps := 150
	if testing.Short() {
		steps = 40
	}
	forEachInput(t, func(t *testing.T, cfg Config, in *Inputs) {
		for seed := range uint64(4) {
			w := newWalk(in, rand.New(rand.NewPCG(seed, uint64(len(t.Name())))))
			x := NewBuilder(cfg)
			for step := 0; step <= steps; step++ {
				edit := "initial"
				if step > 0 {
					edit = w.edit()
				}
				snap := w.inputs()
				compareOutputs(t, fmt.Sprintf("seed %d step %d (%s)", seed, step, edit), x.Build(snap), Build(cfg, snap))
				if n := len(x.pods.entries); n > len(snap.Pods) {
					t.Errorf("seed %d step %d: memo holds %d pods, the snapshot %d", seed, step, n, len(snap.Pods))
				}
				if t.Failed() {
					return
				}
			}
		}
	})
}

// TestBuilderReuses checks that a one-pod change rebuilds only that pod:
// every other message is the very one of the previous Output.
func TestBuilderReuses(t *testing.T) {
	cfg, in, err := decodeInputs(manifesttest.Scheme(), mustRead(t, "testdata/services.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	x := NewBuilder(cfg)
	first := x.Build(in)
	if len(first.Workloads) < 3 {
		t.Fatalf("fixture has only %d workloads", len(first.Workloads))
	}

	// An equal snapshot reuses everything.
	again := x.Build(shuffleInputs(rand.New(rand.NewPCG(1, 1)), in))
	requireSameMessages(t, first, again, "")

	// A changed pod: only its workload is new.
	var target *corev1.Pod
	for _, p := range in.Pods {
		if len(podIPStrings(p)) > 0 && !PodTerminal(p) && !p.Spec.HostNetwork {
			target = p
			break
		}
	}
	changed := target.DeepCopy()
	changed.Labels = mergeLabels(changed.Labels, map[string]string{"zmesh.test/edit": "1"})
	edited := *in
	edited.Pods = slices.Clone(in.Pods)
	edited.Pods[slices.Index(in.Pods, target)] = changed
	next := x.Build(&edited)
	uid := DefaultClusterID + "//Pod/" + target.Namespace + "/" + target.Name
	if next.Workloads[uid] == again.Workloads[uid] {
		t.Errorf("workload %s was not rebuilt", uid)
	}
	requireSameMessages(t, again, next, uid)

	// A changed Service rebuilds the context: every pod workload is new.
	svc := in.Services[0].DeepCopy()
	svc.Labels = mergeLabels(svc.Labels, map[string]string{"zmesh.test/edit": "1"})
	edited.Services = slices.Clone(in.Services)
	edited.Services[0] = svc
	last := x.Build(&edited)
	for k, w := range last.Workloads {
		if strings.Contains(k, "//Pod/") && w == next.Workloads[k] {
			t.Errorf("workload %s reused across a context change", k)
		}
	}
	compareOutputs(t, "after the Service edit", last, Build(cfg, &edited))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// requireSameMessages checks that next holds the very messages of prev,
// except for the workload named except.
func requireSameMessages(t *testing.T, prev, next *Output, except string) {
	t.Helper()
	for k, w := range prev.Workloads {
		if k != except && next.Workloads[k] != w {
			t.Errorf("workload %s was rebuilt", k)
		}
	}
	for k, s := range prev.Services {
		if next.Services[k] != s {
			t.Errorf("service %s was rebuilt", k)
		}
	}
	for k, p := range prev.Policies {
		if next.Policies[k] != p {
			t.Errorf("policy %s was rebuilt", k)
		}
	}
}

func compareOutputs(t *testing.T, what string, got, want *Output) {
	t.Helper()
	g, w := marshalOutput(t, got), marshalOutput(t, want)
	for k, b := range w {
		if gb, ok := g[k]; !ok {
			t.Errorf("%s: resource %s missing", what, k)
		} else if !bytes.Equal(gb, b) {
			t.Errorf("%s: resource %s differs", what, k)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("%s: extra resource %s", what, k)
		}
	}
	if !slices.Equal(got.Problems, want.Problems) {
		t.Errorf("%s: problems differ:\ngot  %v\nwant %v", what, got.Problems, want.Problems)
	}
	if !reflect.DeepEqual(got.ServiceWaypoints, want.ServiceWaypoints) {
		t.Errorf("%s: service waypoints differ:\ngot  %v\nwant %v", what, got.ServiceWaypoints, want.ServiceWaypoints)
	}
	if !reflect.DeepEqual(got.PolicyStatus, want.PolicyStatus) {
		t.Errorf("%s: policy status differs", what)
	}
}

// walk is a snapshot under random edits. Objects are never modified in
// place: an edit replaces an object with an edited copy.
type walk struct {
	r       *rand.Rand
	objects []runtime.Object
	removed []runtime.Object
	// labels are the label keys and values edits choose from.
	labels map[string][]string
}

func newWalk(in *Inputs, r *rand.Rand) *walk {
	w := &walk{r: r, labels: map[string][]string{
		LabelDataplaneMode: {DataplaneModeAmbient, DataplaneModeNone, ""},
		LabelUseWaypoint:   {"none", ""},
		LabelWaypointFor:   {"service", "workload", "all", ""},
	}}
	add := func(o runtime.Object) {
		w.objects = append(w.objects, o)
		m, err := meta.Accessor(o)
		if err != nil {
			return
		}
		for k, v := range m.GetLabels() {
			if len(w.labels[k]) == 0 {
				w.labels[k] = []string{""} // removing it
			}
			if !slices.Contains(w.labels[k], v) {
				w.labels[k] = append(w.labels[k], v)
			}
		}
		if gw, ok := o.(*gatewayv1.Gateway); ok {
			w.labels[LabelUseWaypoint] = append(w.labels[LabelUseWaypoint], gw.Name)
		}
	}
	for _, l := range [][]runtime.Object{
		objectsOf(in.Namespaces), objectsOf(in.Pods), objectsOf(in.Services), objectsOf(in.EndpointSlices),
		objectsOf(in.AuthorizationPolicies), objectsOf(in.PeerAuthentications), objectsOf(in.Gateways),
		objectsOf(in.ServiceEntries), objectsOf(in.WorkloadEntries),
	} {
		for _, o := range l {
			add(o)
		}
	}
	return w
}

func objectsOf[T runtime.Object](list []T) []runtime.Object {
	res := make([]runtime.Object, 0, len(list))
	for _, o := range list {
		res = append(res, o)
	}
	return res
}

func (w *walk) inputs() *Inputs {
	in := &Inputs{}
	for _, o := range w.objects {
		in.Add(o)
	}
	// Sources list objects in no particular order.
	return shuffleInputs(w.r, in)
}

// edit applies one random edit and says what it was.
func (w *walk) edit() string {
	if len(w.objects) == 0 {
		return "nothing to edit"
	}
	i := w.r.IntN(len(w.objects))
	o := w.objects[i]
	name := fmt.Sprintf("%T", o)
	if m, err := meta.Accessor(o); err == nil {
		name += " " + m.GetNamespace() + "/" + m.GetName()
	}
	switch w.r.IntN(8) {
	case 0:
		w.removed = append(w.removed, o)
		w.objects = slices.Delete(w.objects, i, i+1)
		return "remove " + name
	case 1:
		if len(w.removed) == 0 {
			return "nothing to restore"
		}
		j := w.r.IntN(len(w.removed))
		back := w.removed[j]
		w.removed = slices.Delete(w.removed, j, j+1)
		if w.r.IntN(2) == 0 {
			back = back.DeepCopyObject()
		}
		w.objects = append(w.objects, back)
		return "restore a removed object"
	case 2:
		w.objects[i] = o.DeepCopyObject()
		return "equal copy of " + name
	case 3:
		if w.r.IntN(4) == 0 {
			w.objects = append(w.objects, o.DeepCopyObject())
			return "repeat " + name
		}
		fallthrough
	case 4, 5:
		c := o.DeepCopyObject()
		what := w.editLabels(c)
		w.objects[i] = c
		return what + " on " + name
	default:
		c := o.DeepCopyObject()
		what := w.editKind(c)
		w.objects[i] = c
		return what + " on " + name
	}
}

func (w *walk) editLabels(o runtime.Object) string {
	m, err := meta.Accessor(o)
	if err != nil {
		return "no labels"
	}
	keys := make([]string, 0, len(w.labels))
	for k := range w.labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	k := keys[w.r.IntN(len(keys))]
	vals := w.labels[k]
	v := vals[w.r.IntN(len(vals))]
	l := map[string]string{}
	for a, b := range m.GetLabels() {
		l[a] = b
	}
	if v == "" {
		delete(l, k)
	} else {
		l[k] = v
	}
	m.SetLabels(l)
	return "label " + k + "=" + v
}

// editKind changes what matters most for the object's kind.
func (w *walk) editKind(o runtime.Object) string {
	switch x := o.(type) {
	case *corev1.Pod:
		switch w.r.IntN(4) {
		case 0:
			ready := corev1.ConditionTrue
			if podStatus(x) == 1 { // HEALTHY
				ready = corev1.ConditionFalse
			}
			x.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
			return "flip readiness"
		case 1:
			x.Status.PodIP, x.Status.PodIPs = "", nil
			return "drop the IP"
		case 2:
			x.Status.Phase = corev1.PodSucceeded
			return "finish"
		default:
			if x.Annotations[AnnotationRedirection] == RedirectionEnabled {
				delete(x.Annotations, AnnotationRedirection)
			} else {
				x.Annotations = mergeLabels(x.Annotations, map[string]string{AnnotationRedirection: RedirectionEnabled})
			}
			return "toggle redirection"
		}
	case *corev1.Service:
		if len(x.Spec.Selector) > 0 {
			x.Spec.Selector = nil
			return "drop the selector"
		}
		x.Spec.Selector = map[string]string{"app": "x"}
		return "set a selector"
	case *gatewayv1.Gateway:
		x.Status.Addresses = nil
		return "drop status addresses"
	case *discoveryv1.EndpointSlice:
		if len(x.Ports) > 0 && x.Ports[0].Port != nil && w.r.IntN(2) == 0 {
			port := *x.Ports[0].Port + 1
			x.Ports[0].Port = &port
			return "change a port"
		}
		if len(x.Endpoints) > 0 {
			x.Endpoints = x.Endpoints[1:]
			return "drop the first endpoint"
		}
		return "no endpoints to drop"
	default:
		if m, err := meta.Accessor(o); err == nil {
			m.SetName(m.GetName() + "-x")
			return "rename"
		}
	}
	return "no change"
}
