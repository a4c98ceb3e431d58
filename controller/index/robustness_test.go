package index

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	securityapi "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// TestBuildSurvivesOddObjects feeds Build objects with nil and empty parts
// that YAML could not easily express; it must not panic, and the one good
// pod must come through.
func TestBuildSurvivesOddObjects(t *testing.T) {
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "ns"} }
	in := &Inputs{
		Namespaces: []*corev1.Namespace{nil, {}},
		Pods: []*corev1.Pod{nil, {}, {ObjectMeta: meta("ok"), Status: corev1.PodStatus{PodIP: "10.0.0.1"}},
			{ObjectMeta: meta("owner-only"), Status: corev1.PodStatus{PodIP: "10.0.0.2"},
				Spec: corev1.PodSpec{}},
		},
		Services: []*corev1.Service{nil, {ObjectMeta: meta("s")}},
		EndpointSlices: []*discoveryv1.EndpointSlice{nil, {ObjectMeta: metav1.ObjectMeta{
			Name: "e", Namespace: "ns", Labels: map[string]string{LabelServiceName: "s"},
		}, Endpoints: []discoveryv1.Endpoint{{}, {TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "ok"}}},
			Ports: []discoveryv1.EndpointPort{{}}}},
		AuthorizationPolicies: []*securityv1.AuthorizationPolicy{nil, {ObjectMeta: meta("a"), Spec: securityapi.AuthorizationPolicy{
			Rules: []*securityapi.Rule{nil, {From: []*securityapi.Rule_From{nil}, To: []*securityapi.Rule_To{nil}, When: []*securityapi.Condition{nil}}},
		}}},
		PeerAuthentications: []*securityv1.PeerAuthentication{nil, {ObjectMeta: meta("p"), Spec: securityapi.PeerAuthentication{
			PortLevelMtls: map[uint32]*securityapi.PeerAuthentication_MutualTLS{80: nil},
		}}},
		Gateways:        []*gatewayv1.Gateway{nil, {ObjectMeta: meta("g"), Spec: gatewayv1.GatewaySpec{GatewayClassName: WaypointGatewayClass}}},
		ServiceEntries:  []*networkingv1.ServiceEntry{nil, {ObjectMeta: meta("se")}},
		WorkloadEntries: []*networkingv1.WorkloadEntry{nil, {ObjectMeta: meta("we")}},
	}
	out := Build(Config{}, in)
	if _, ok := out.Workloads["Kubernetes//Pod/ns/ok"]; !ok {
		t.Fatalf("good pod missing; workloads %v, problems %v", out.Workloads, out.Problems)
	}
	if len(out.Problems) == 0 {
		t.Fatal("no problems reported")
	}
	if Build(Config{}, nil) == nil {
		t.Fatal("Build(nil) returned nil")
	}
}

// FuzzBuild decodes arbitrary YAML into index inputs and builds them: Build
// and Validate must never panic, and a rebuild must be identical.
func FuzzBuild(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range paths {
		if strings.HasSuffix(p, ".golden.yaml") {
			continue
		}
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	s := manifesttest.Scheme()
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, in, err := decodeInputs(s, data)
		if err != nil {
			return
		}
		for _, o := range inputObjects(in) {
			_ = Validate(o)
		}
		a := marshalOutput(t, Build(cfg, in))
		b := marshalOutput(t, Build(cfg, in))
		if len(a) != len(b) {
			t.Fatalf("rebuild gave %d resources, want %d", len(b), len(a))
		}
		for k := range a {
			if string(a[k]) != string(b[k]) {
				t.Fatalf("rebuild changed %s", k)
			}
		}
	})
}

func inputObjects(in *Inputs) []runtime.Object {
	var res []runtime.Object
	for _, o := range in.Namespaces {
		res = append(res, o)
	}
	for _, o := range in.Pods {
		res = append(res, o)
	}
	for _, o := range in.Services {
		res = append(res, o)
	}
	for _, o := range in.EndpointSlices {
		res = append(res, o)
	}
	for _, o := range in.AuthorizationPolicies {
		res = append(res, o)
	}
	for _, o := range in.PeerAuthentications {
		res = append(res, o)
	}
	for _, o := range in.Gateways {
		res = append(res, o)
	}
	for _, o := range in.ServiceEntries {
		res = append(res, o)
	}
	for _, o := range in.WorkloadEntries {
		res = append(res, o)
	}
	return res
}
