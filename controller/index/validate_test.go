package index

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

func TestValidate(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "x", Namespace: "ns"}
	ap := func(spec *securityapi.AuthorizationPolicy) *securityv1.AuthorizationPolicy {
		o := &securityv1.AuthorizationPolicy{ObjectMeta: meta}
		proto.Merge(&o.Spec, spec)
		return o
	}
	pa := func(spec *securityapi.PeerAuthentication) *securityv1.PeerAuthentication {
		o := &securityv1.PeerAuthentication{ObjectMeta: meta}
		proto.Merge(&o.Spec, spec)
		return o
	}
	waypoint := func(listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
		return &gatewayv1.Gateway{ObjectMeta: meta, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: WaypointGatewayClass, Listeners: listeners,
		}}
	}
	hbone := gatewayv1.Listener{Name: "mesh", Port: 15008, Protocol: ListenerProtocolHBONE}
	tests := []struct {
		name string
		obj  runtime.Object
		// want is a substring of the error; empty means valid.
		want string
	}{
		{"pod ok", &corev1.Pod{ObjectMeta: meta, Status: corev1.PodStatus{PodIP: "10.0.0.1"}}, ""},
		{"pod without ip ok", &corev1.Pod{ObjectMeta: meta}, ""},
		{"pod bad podIP", &corev1.Pod{ObjectMeta: meta, Status: corev1.PodStatus{PodIP: "10.0.0.256"}}, `status.podIP "10.0.0.256"`},
		{"pod bad podIPs", &corev1.Pod{ObjectMeta: meta, Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "x"}}}}, `status.podIPs[0] "x"`},
		{"pod without namespace", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, "metadata.namespace is empty"},
		{"service bad clusterIPs", &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.0.0.1", "::g"}}}, `spec.clusterIPs[1] "::g"`},
		{"service headless ok", &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{ClusterIP: "None"}}, ""},
		{"service bad port", &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 70000}}}}, "spec.ports[0].port 70000"},
		{"ap unknown action", ap(&securityapi.AuthorizationPolicy{Action: 7}), "spec.action 7 is not one of"},
		{"ap selector and targetRefs", ap(&securityapi.AuthorizationPolicy{
			Selector:   &typeapi.WorkloadSelector{MatchLabels: map[string]string{"a": "b"}},
			TargetRefs: []*typeapi.PolicyTargetReference{{Kind: "Service", Name: "s"}},
		}), "mutually exclusive"},
		{"ap targetRef without name", ap(&securityapi.AuthorizationPolicy{TargetRef: &typeapi.PolicyTargetReference{Kind: "Gateway"}}), "needs kind and name"},
		{"ap custom without provider", ap(&securityapi.AuthorizationPolicy{Action: securityapi.AuthorizationPolicy_CUSTOM}), "spec.provider.name is required"},
		{"ap nil rule", func() runtime.Object {
			o := ap(&securityapi.AuthorizationPolicy{})
			o.Spec.Rules = []*securityapi.Rule{nil}
			return o
		}(), "spec.rules[0] is null"},
		{"ap nil source", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{}}}}}), "source is missing"},
		{"ap middle wildcard", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{
			Source: &securityapi.Source{Namespaces: []string{"a*b"}},
		}}}}}), "only a single leading or trailing"},
		{"ap double wildcard", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{
			Source: &securityapi.Source{Principals: []string{"*x*"}},
		}}}}}), "only a single leading or trailing"},
		{"ap bad principal empty", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{
			Source: &securityapi.Source{Principals: []string{""}},
		}}}}}), "principals[0] is empty"},
		{"ap bad ip", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{
			Source: &securityapi.Source{NotIpBlocks: []string{"1.2.3.4/40"}},
		}}}}}), "notIpBlocks[0]"},
		{"ap bad service account", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{
			Source: &securityapi.Source{ServiceAccounts: []string{"a/b/c"}},
		}}}}}), "serviceAccounts[0]"},
		{"ap bad port", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{To: []*securityapi.Rule_To{{
			Operation: &securityapi.Operation{Ports: []string{"65536"}},
		}}}}}), `"65536" is not a port number`},
		{"ap unknown when key", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{When: []*securityapi.Condition{{
			Key: "source.color", Values: []string{"red"},
		}}}}}), `"source.color" is not a supported attribute`},
		{"ap header when ok", ap(&securityapi.AuthorizationPolicy{Rules: []*securityapi.Rule{{When: []*securityapi.Condition{{
			Key: "request.headers[x-a]", Values: []string{"1"},
		}}}}}), ""},
		{"ap empty ok", ap(&securityapi.AuthorizationPolicy{}), ""},
		{"pa unknown mode", pa(&securityapi.PeerAuthentication{Mtls: &securityapi.PeerAuthentication_MutualTLS{Mode: 9}}), "spec.mtls.mode 9"},
		{"pa port-level without selector", pa(&securityapi.PeerAuthentication{
			PortLevelMtls: map[uint32]*securityapi.PeerAuthentication_MutualTLS{80: {}},
		}), "requires a workload selector"},
		{"pa port 0", pa(&securityapi.PeerAuthentication{
			Selector:      &typeapi.WorkloadSelector{MatchLabels: map[string]string{"a": "b"}},
			PortLevelMtls: map[uint32]*securityapi.PeerAuthentication_MutualTLS{0: {}},
		}), "port 0 is out of range"},
		{"waypoint ok", waypoint(hbone), ""},
		{"waypoint no listeners", waypoint(), "spec.listeners is empty"},
		{"waypoint no hbone", waypoint(gatewayv1.Listener{Name: "http", Port: 80, Protocol: "HTTP"}), "no listener with protocol HBONE"},
		{"waypoint bad port", waypoint(gatewayv1.Listener{Name: "mesh", Port: 0, Protocol: ListenerProtocolHBONE}), "port 0 is out of range"},
		{"waypoint repeated listener", waypoint(hbone, hbone), `name "mesh" is repeated`},
		{"waypoint bad status ip", &gatewayv1.Gateway{ObjectMeta: meta,
			Spec:   gatewayv1.GatewaySpec{GatewayClassName: WaypointGatewayClass, Listeners: []gatewayv1.Listener{hbone}},
			Status: gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{Value: "waypoint.local"}}},
		}, `status.addresses[0] "waypoint.local" is not an IP`},
		{"other gateway class not checked", &gatewayv1.Gateway{Spec: gatewayv1.GatewaySpec{GatewayClassName: "istio"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.obj)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: no error, want %q", tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var ie *InvalidError
			if !errors.As(err, &ie) || len(ie.Reasons) == 0 {
				t.Errorf("error %v is not an *InvalidError with reasons", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateUnsupportedKind(t *testing.T) {
	err := Validate(&corev1.ConfigMap{})
	if !errors.Is(err, ErrUnsupportedKind) {
		t.Fatalf("Validate(ConfigMap) = %v, want ErrUnsupportedKind", err)
	}
	if err := Validate(nil); !errors.Is(err, ErrUnsupportedKind) {
		t.Fatalf("Validate(nil) = %v, want ErrUnsupportedKind", err)
	}
	if err := Validate((*corev1.Pod)(nil)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate(nil *Pod) = %v, want ErrInvalid", err)
	}
}

// TestBuildSkipsWhatValidateRejects checks that Build reports exactly the
// objects Validate refuses, with the same reasons.
// TestBuildReplacesWhatValidateRejects: a policy Validate refuses is
// reported and enforced fail-closed (an unknown action: deny everything).
func TestBuildReplacesWhatValidateRejects(t *testing.T) {
	bad := &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: "ns"},
		Spec:       securityapi.AuthorizationPolicy{Action: 42},
	}
	good := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "good", Namespace: "ns"}}
	out := Build(Config{}, &Inputs{AuthorizationPolicies: []*securityv1.AuthorizationPolicy{bad, nil, good}})
	if _, ok := out.Policies["ns/good"]; !ok || len(out.Policies) != 2 {
		t.Fatalf("policies = %v, want ns/good and the stand-in for ns/bad", out.Policies)
	}
	if p := out.Policies["ns/bad"]; p.GetAction() != security.Action_DENY || len(p.GetGroups()) != 1 || len(p.GetGroups()[0].GetRules()) != 0 {
		t.Fatalf("stand-in for ns/bad: %v, want a DENY matching everything", p)
	}
	if c := out.PolicyStatus["ns/bad"].Ztunnel; c == nil || c.Status || c.Reason != ReasonInvalid {
		t.Fatalf("status of ns/bad: %+v", c)
	}
	var ie *InvalidError
	if err := Validate(bad); !errors.As(err, &ie) {
		t.Fatalf("Validate(bad) = %v", err)
	}
	want := []Problem{{Kind: "AuthorizationPolicy", Namespace: "ns", Name: "bad", Reason: joinReasons(ie.Reasons) + " (enforced fail-closed in its place)"}}
	if len(out.Problems) != 1 || out.Problems[0] != want[0] {
		t.Fatalf("problems = %v, want %v", out.Problems, want)
	}
}
