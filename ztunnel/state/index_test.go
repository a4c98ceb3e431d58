package state

import (
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
)

// feedIndex applies a controller index Output through the handlers, the way
// the xDS client would, and fails on any rejection.
func feedIndex(t *testing.T, st *State, out *index.Output) {
	t.Helper()
	var ups []xds.Upsert
	for _, uid := range slices.Sorted(maps.Keys(out.Workloads)) {
		ups = append(ups, wlUpsert(out.Workloads[uid]))
	}
	for _, key := range slices.Sorted(maps.Keys(out.Services)) {
		ups = append(ups, svcUpsert(out.Services[key]))
	}
	applyAddr(t, st, ups...)
	var pols []xds.Upsert
	for _, key := range slices.Sorted(maps.Keys(out.Policies)) {
		pols = append(pols, polUpsert(out.Policies[key]))
	}
	if rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: pols}); len(rej) > 0 {
		t.Fatalf("policies rejected: %v", rej)
	}
}

func k8sPod(ns, name, ip string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "cart"},
			Annotations: map[string]string{index.AnnotationRedirection: index.RedirectionEnabled}},
		Spec: corev1.PodSpec{ServiceAccountName: "cart", Containers: []corev1.Container{{Name: "app", Image: "x", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// TestControllerIndexResources runs controller/index.Build on a small
// cluster (named target ports resolved per pod) and checks endpoint
// selection on the resources it produces.
func TestControllerIndexResources(t *testing.T) {
	in := &index.Inputs{
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{index.LabelDataplaneMode: index.DataplaneModeAmbient}}}},
		Pods: []*corev1.Pod{
			k8sPod("shop", "cart-1", "10.244.1.1", corev1.ContainerPort{Name: "web", ContainerPort: 8080}, corev1.ContainerPort{Name: "admin", ContainerPort: 9090}),
			k8sPod("shop", "cart-2", "10.244.1.2", corev1.ContainerPort{Name: "web", ContainerPort: 8081}),
		},
		Services: []*corev1.Service{{
			ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: "shop"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "cart"}, ClusterIP: "10.96.1.1", ClusterIPs: []string{"10.96.1.1"},
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
					{Name: "admin", Port: 9090, TargetPort: intstr.FromString("admin")},
					{Name: "grpc", Port: 7070, TargetPort: intstr.FromInt32(7070)},
				},
			},
		}},
	}
	out := index.Build(index.Config{}, in)
	if len(out.Problems) > 0 {
		t.Fatalf("index problems: %v", out.Problems)
	}
	st := New(nil)
	feedIndex(t, st, out)

	tg := st.Destination("", netipAddr("10.96.1.1"), 80)
	if tg.Kind != TargetService || tg.Service.Key != "shop/cart.shop.svc.cluster.local" {
		t.Fatalf("VIP resolved to %v", tg.Kind)
	}
	want := map[uint16]map[string]uint16{
		80:   {"cart-1": 8080, "cart-2": 8081},
		9090: {"cart-1": 9090},
		7070: {"cart-1": 7070, "cart-2": 7070},
	}
	for port, w := range want {
		got := map[string]uint16{}
		for range 4 {
			up, err := st.PickEndpoint(tg.Service, port)
			if err != nil {
				t.Fatalf("port %d: %v", port, err)
			}
			got[up.Workload.GetName()] = up.Port
			if up.Identities[0] != "spiffe://cluster.local/ns/shop/sa/cart" {
				t.Fatalf("identity %v", up.Identities)
			}
		}
		if !maps.Equal(got, w) {
			t.Errorf("port %d: picked %v, want %v", port, got, w)
		}
	}
	w := st.WorkloadByAddr("", netipAddr("10.244.1.2"))
	if w.GetTunnelProtocol() != workloadapi.TunnelProtocol_HBONE || Identity(w) != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("workload %v", w)
	}
}
