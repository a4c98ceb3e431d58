package authz

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/ztunnel/state"
)

func k8sPod(ns, name, ip, app string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": app},
			Annotations: map[string]string{index.AnnotationRedirection: index.RedirectionEnabled}},
		Spec: corev1.PodSpec{ServiceAccountName: app, Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// buildMesh runs controller/index.Build and loads its output into a State.
func buildMesh(t *testing.T, in *index.Inputs) (*state.State, *Engine) {
	t.Helper()
	out := index.Build(index.Config{}, in)
	if len(out.Problems) > 0 {
		t.Fatalf("index problems: %v", out.Problems)
	}
	st := state.New(nil)
	var ups []xds.Upsert
	for _, uid := range slices.Sorted(maps.Keys(out.Workloads)) {
		ups = append(ups, xds.Upsert{Name: uid, Message: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: out.Workloads[uid]}}})
	}
	if rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: ups}); len(rej) > 0 {
		t.Fatal(rej)
	}
	var pols []xds.Upsert
	for _, key := range slices.Sorted(maps.Keys(out.Policies)) {
		pols = append(pols, xds.Upsert{Name: key, Message: out.Policies[key]})
	}
	if rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: pols}); len(rej) > 0 {
		t.Fatal(rej)
	}
	return st, NewEngine(st, nil)
}

// TestControllerPolicies evaluates the policies controller/index produces
// for a mesh-wide STRICT PeerAuthentication, a port-level PERMISSIVE
// exception and a namespace ALLOW policy.
func TestControllerPolicies(t *testing.T) {
	ambient := map[string]string{index.LabelDataplaneMode: index.DataplaneModeAmbient}
	in := &index.Inputs{
		Namespaces: []*corev1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "ns1", Labels: ambient}},
			{ObjectMeta: metav1.ObjectMeta{Name: "ns2", Labels: ambient}},
		},
		Pods: []*corev1.Pod{
			k8sPod("ns1", "api", "10.244.1.1", "api"),
			k8sPod("ns1", "metrics", "10.244.1.2", "metrics"),
			k8sPod("ns2", "web", "10.244.2.1", "web"),
		},
		PeerAuthentications: []*securityv1.PeerAuthentication{
			{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "istio-system"},
				Spec: securityapi.PeerAuthentication{Mtls: &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "scrape", Namespace: "ns1"},
				Spec: securityapi.PeerAuthentication{
					Selector:      &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "metrics"}},
					PortLevelMtls: map[uint32]*securityapi.PeerAuthentication_MutualTLS{9090: {Mode: securityapi.PeerAuthentication_MutualTLS_PERMISSIVE}},
				}},
		},
		AuthorizationPolicies: []*securityv1.AuthorizationPolicy{
			{ObjectMeta: metav1.ObjectMeta{Name: "same-namespace", Namespace: "ns1"},
				Spec: securityapi.AuthorizationPolicy{
					Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "api"}},
					Rules:    []*securityapi.Rule{{From: []*securityapi.Rule_From{{Source: &securityapi.Source{Namespaces: []string{"ns1"}}}}}},
				}},
		},
	}
	st, e := buildMesh(t, in)
	api := st.WorkloadByAddr("", netip.MustParseAddr("10.244.1.1"))
	metrics := st.WorkloadByAddr("", netip.MustParseAddr("10.244.1.2"))
	web := st.WorkloadByAddr("", netip.MustParseAddr("10.244.2.1"))
	conn := func(id, dst string, port uint16) Conn {
		return Conn{SrcIdentity: id, SrcIP: netip.MustParseAddr("10.244.2.1"), DstIP: netip.MustParseAddr(dst), DstPort: port}
	}
	fromNS1 := "spiffe://cluster.local/ns/ns1/sa/metrics"
	fromNS2 := "spiffe://cluster.local/ns/ns2/sa/web"
	tests := []struct {
		name    string
		c       Conn
		dst     *workloadapi.Workload
		allowed bool
		policy  string
	}{
		{"STRICT denies plaintext", conn("", "10.244.2.1", 8080), web, false, "istio-system/istio_converted_static_strict"},
		{"STRICT allows mTLS", conn(fromNS1, "10.244.2.1", 8080), web, true, ""},
		{"ALLOW same namespace", conn(fromNS1, "10.244.1.1", 8080), api, true, "ns1/same-namespace"},
		{"ALLOW other namespace not matched", conn(fromNS2, "10.244.1.1", 8080), api, false, ""},
		{"STRICT before ALLOW for plaintext", conn("", "10.244.1.1", 8080), api, false, "istio-system/istio_converted_static_strict"},
		{"port-level PERMISSIVE lets plaintext in", conn("", "10.244.1.2", 9090), metrics, true, ""},
		{"other ports stay STRICT", conn("", "10.244.1.2", 8080), metrics, false, "ns1/converted_peer_authentication_scrape"},
		{"mTLS on a permissive port", conn(fromNS2, "10.244.1.2", 9090), metrics, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.dst == nil {
				t.Fatal("workload missing")
			}
			v := e.Evaluate(tt.c, tt.dst)
			if v.Allowed != tt.allowed || v.Policy != tt.policy {
				t.Fatalf("verdict %+v (workload policies %v)", v.Decision, tt.dst.GetAuthorizationPolicies())
			}
		})
	}
}
