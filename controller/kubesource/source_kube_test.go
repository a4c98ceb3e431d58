package kubesource_test

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/kubesource"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
)

const waitFor = 20 * time.Second

// manifests holds one valid object of every namespaced kind the source
// follows; NAME stands for the object's name.
var manifests = []struct {
	kind     string
	resource schema.GroupVersionResource
	yaml     string
}{
	{"Pod", gvr("", "v1", "pods"), `spec: {containers: [{name: app, image: "app:1"}]}`},
	{"Service", gvr("", "v1", "services"), `spec: {ports: [{port: 80}]}`}, // no selector: KCM adds no EndpointSlice
	{"EndpointSlice", gvr("discovery.k8s.io", "v1", "endpointslices"),
		`{addressType: IPv4, endpoints: [{addresses: ["10.244.1.1"]}], ports: [{port: 80}]}`},
	{"AuthorizationPolicy", gvr("security.istio.io", "v1", "authorizationpolicies"),
		`spec: {action: DENY, rules: [{from: [{source: {namespaces: [other]}}]}]}`},
	{"PeerAuthentication", gvr("security.istio.io", "v1", "peerauthentications"), `spec: {mtls: {mode: STRICT}}`},
	{"RequestAuthentication", gvr("security.istio.io", "v1", "requestauthentications"),
		`spec: {jwtRules: [{issuer: "https://issuer.example"}]}`},
	{"ServiceEntry", gvr("networking.istio.io", "v1", "serviceentries"),
		`spec: {hosts: ["NAME.example.com"], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}`},
	{"WorkloadEntry", gvr("networking.istio.io", "v1", "workloadentries"), `spec: {address: "10.244.9.9"}`},
	{"VirtualService", gvr("networking.istio.io", "v1", "virtualservices"),
		`spec: {hosts: ["NAME"], http: [{route: [{destination: {host: "NAME"}}]}]}`},
	{"DestinationRule", gvr("networking.istio.io", "v1", "destinationrules"), `spec: {host: "NAME"}`},
	{"Telemetry", gvr("telemetry.istio.io", "v1", "telemetries"), `spec: {accessLogging: [{providers: [{name: envoy}]}]}`},
	{"Gateway", gvr("gateway.networking.k8s.io", "v1", "gateways"),
		`spec: {gatewayClassName: zmesh-test-other, listeners: [{name: http, port: 80, protocol: HTTP}]}`},
	{"HTTPRoute", gvr("gateway.networking.k8s.io", "v1", "httproutes"),
		`spec: {parentRefs: [{group: "", kind: Service, name: "NAME"}]}`},
	{"GRPCRoute", gvr("gateway.networking.k8s.io", "v1", "grpcroutes"),
		`spec: {parentRefs: [{group: "", kind: Service, name: "NAME"}]}`},
	{"TCPRoute", gvr("gateway.networking.k8s.io", "v1", "tcproutes"),
		`spec: {parentRefs: [{group: "", kind: Service, name: "NAME"}], rules: [{backendRefs: [{name: "NAME", port: 80}]}]}`},
}

func gvr(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

// object renders manifest m as an object named name.
func object(t *testing.T, m string, kind string, res schema.GroupVersionResource, name string) *unstructured.Unstructured {
	t.Helper()
	var body map[string]any
	if err := yaml.Unmarshal([]byte(strings.ReplaceAll(m, "NAME", name)), &body); err != nil {
		t.Fatalf("%s manifest: %v", kind, err)
	}
	u := &unstructured.Unstructured{Object: body}
	u.SetAPIVersion(res.GroupVersion().String())
	u.SetKind(kind)
	u.SetName(name)
	return u
}

// latest keeps the newest snapshot.
type latest struct {
	in atomic.Pointer[index.Inputs]
	n  atomic.Int64
}

func (l *latest) onChange(in *index.Inputs) {
	l.in.Store(in)
	l.n.Add(1)
}

// startSource runs a source over the test API server until the test ends.
func startSource(t *testing.T, c *kube.Clients, l *latest) *kubesource.Source {
	t.Helper()
	src, err := kubesource.New(kubesource.Options{
		Clients: c, OnChange: l.onChange, Validate: index.Validate,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	if l.n.Load() != 1 {
		t.Fatalf("Start delivered %d snapshots, want 1", l.n.Load())
	}
	return src
}

// objectsIn lists, by Go type name (which is the Kind), the objects of
// namespace ns in a snapshot: "Kind" -> sorted "name" or "name:label".
func objectsIn(in *index.Inputs, ns, label string) map[string][]string {
	res := map[string][]string{}
	v := reflect.ValueOf(in).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		kind := f.Type().Elem().Elem().Name()
		for j := range f.Len() {
			m := f.Index(j).Interface().(metav1.Object)
			if m.GetNamespace() != ns {
				continue
			}
			name := m.GetName()
			if l := m.GetLabels()[label]; l != "" {
				name += ":" + l
			}
			res[kind] = append(res[kind], name)
		}
		slices.Sort(res[kind])
	}
	return res
}

// expect is every namespaced kind with the given object names.
func expect(names ...string) map[string][]string {
	res := map[string][]string{}
	for _, m := range manifests {
		res[m.kind] = names
	}
	return res
}

func diff(got, want map[string][]string) error {
	var bad []string
	for _, m := range manifests {
		if !slices.Equal(got[m.kind], want[m.kind]) {
			bad = append(bad, fmt.Sprintf("%s: got %v, want %v", m.kind, got[m.kind], want[m.kind]))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

// TestSourceFollowsEveryKind creates, updates and deletes objects of every
// kind and checks that snapshots hold exactly what exists.
func TestSourceFollowsEveryKind(t *testing.T) {
	c := kubetest.Clients(t)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := kubetest.Namespace(t, c, "kubesource-kinds", map[string]string{"istio.io/dataplane-mode": "ambient"})
	ctx := context.Background()
	create := func(name string) {
		for _, m := range manifests {
			u := object(t, m.yaml, m.kind, m.resource, name)
			if _, err := dyn.Resource(m.resource).Namespace(ns).Create(ctx, u, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create %s %s: %v", m.kind, name, err)
			}
		}
	}
	const label = "zmesh-test"
	create("a")

	var l latest
	src := startSource(t, c, &l)
	if err := diff(objectsIn(l.in.Load(), ns, label), expect("a")); err != nil {
		t.Fatalf("first snapshot: %v", err)
	}
	if got := src.Problems(); len(got) != 0 {
		t.Fatalf("problems with valid objects: %v", got)
	}
	eventually := func(what string, want map[string][]string) {
		t.Helper()
		kubetest.Eventually(t, waitFor, what, func() (bool, error) {
			err := diff(objectsIn(l.in.Load(), ns, label), want)
			return err == nil, err
		})
	}

	create("b")
	eventually("objects b created", expect("a", "b"))

	patch := []byte(`{"metadata":{"labels":{"` + label + `":"updated"}}}`)
	for _, m := range manifests {
		if _, err := dyn.Resource(m.resource).Namespace(ns).Patch(ctx, "a", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("patch %s a: %v", m.kind, err)
		}
	}
	eventually("objects a updated", expect("a:updated", "b"))

	for _, m := range manifests {
		if err := dyn.Resource(m.resource).Namespace(ns).Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete %s b: %v", m.kind, err)
		}
	}
	eventually("objects b deleted", expect("a:updated"))

	// The namespace itself, and a change to its labels.
	if _, err := c.Kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, waitFor, "namespace label", func() (bool, error) {
		for _, n := range l.in.Load().Namespaces {
			if n.Name == ns {
				return n.Labels[label] == "updated" && n.Labels["istio.io/dataplane-mode"] == "ambient", fmt.Errorf("labels %v", n.Labels)
			}
		}
		return false, fmt.Errorf("namespace %s not in snapshot", ns)
	})
}

// TestSourceLeavesOutInvalid checks that an object Validate rejects is
// reported and left out until it is fixed, except the policy kinds the
// index enforces fail-closed, which reach it as they are.
func TestSourceLeavesOutInvalid(t *testing.T) {
	c := kubetest.Clients(t)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := kubetest.Namespace(t, c, "kubesource-invalid", nil)
	ctx := context.Background()
	res := gvr("networking.istio.io", "v1", "serviceentries")
	entry := func(addr string) string {
		return `spec: {hosts: [db.example.com], addresses: ["` + addr + `"], ports: [{number: 5432, name: tcp, protocol: TCP}], resolution: STATIC, endpoints: [{address: 10.1.0.9}]}`
	}
	for _, o := range []struct{ name, spec string }{
		{"good", entry("240.0.0.1")},
		{"bad", entry("not-a-cidr")},
	} {
		if _, err := dyn.Resource(res).Namespace(ns).Create(ctx, object(t, o.spec, "ServiceEntry", res, o.name), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", o.name, err)
		}
	}
	apRes := gvr("security.istio.io", "v1", "authorizationpolicies")
	if _, err := dyn.Resource(apRes).Namespace(ns).Create(ctx, object(t, `spec: {action: DENY, rules: [{from: [{source: {ipBlocks: ["not-a-cidr"]}}]}]}`,
		"AuthorizationPolicy", apRes, "bad-policy"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var l latest
	src := startSource(t, c, &l)
	if got := objectsIn(l.in.Load(), ns, "")["ServiceEntry"]; !slices.Equal(got, []string{"good"}) {
		t.Fatalf("service entries in snapshot = %v, want [good]", got)
	}
	if got := objectsIn(l.in.Load(), ns, "")["AuthorizationPolicy"]; !slices.Equal(got, []string{"bad-policy"}) {
		t.Fatalf("authorization policies in snapshot = %v, want [bad-policy] (the index enforces a stand-in)", got)
	}
	var mine []index.Problem
	for _, p := range src.Problems() {
		if p.Namespace == ns {
			mine = append(mine, p)
		}
	}
	if len(mine) != 1 || mine[0].Kind != "ServiceEntry" || mine[0].Name != "bad" || !strings.Contains(mine[0].Reason, "not-a-cidr") {
		t.Fatalf("problems = %v, want one for ServiceEntry bad naming not-a-cidr", mine)
	}

	fix := []byte(`{"spec":{"addresses":["240.0.0.2"]}}`)
	if _, err := dyn.Resource(res).Namespace(ns).Patch(ctx, "bad", types.MergePatchType, fix, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, waitFor, "fixed entry served", func() (bool, error) {
		got := objectsIn(l.in.Load(), ns, "")["ServiceEntry"]
		return slices.Equal(got, []string{"bad", "good"}), fmt.Errorf("service entries %v", got)
	})
	for _, p := range src.Problems() {
		if p.Namespace == ns {
			t.Fatalf("problem left after the fix: %v", p)
		}
	}
}

// TestPodLookup checks Pod answers from the cache, trimmed, and follows
// deletion.
func TestPodLookup(t *testing.T) {
	c := kubetest.Clients(t)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := kubetest.Namespace(t, c, "kubesource-pod", nil)
	ctx := context.Background()
	res := gvr("", "v1", "pods")
	created, err := dyn.Resource(res).Namespace(ns).Create(ctx, object(t, manifests[0].yaml, "Pod", res, "p"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var l latest
	src := startSource(t, c, &l)
	p, ok := src.Pod(ns, "p")
	if !ok {
		t.Fatal("Pod(p) not found")
	}
	if p.UID != created.GetUID() {
		t.Fatalf("uid %s, want %s", p.UID, created.GetUID())
	}
	if len(p.ManagedFields) != 0 || p.Spec.Containers[0].Image != "" || p.Spec.Containers[0].Name != "app" {
		t.Fatalf("pod not trimmed as documented: managedFields %d, container %+v", len(p.ManagedFields), p.Spec.Containers[0])
	}
	if _, ok := src.Pod(ns, "other"); ok {
		t.Fatal("Pod(other) found")
	}
	if err := dyn.Resource(res).Namespace(ns).Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, waitFor, "deleted pod gone", func() (bool, error) {
		_, ok := src.Pod(ns, "p")
		return !ok, nil
	})
}
