package status

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/kube"
)

func TestMergePolicyConditions(t *testing.T) {
	old := timestamppb.New(time.Unix(1000, 0))
	now := time.Unix(2000, 0)
	foreign := &metav1alpha1.IstioCondition{Type: "Reconciled", Status: "True", Reason: "Done", LastTransitionTime: old}
	zt := func(status, reason string, gen int64) *metav1alpha1.IstioCondition {
		return &metav1alpha1.IstioCondition{Type: ConditionZtunnelAccepted, Status: status, Reason: reason, Message: "m",
			ObservedGeneration: gen, LastTransitionTime: old}
	}
	wantZt := func(status, reason string, gen int64) want {
		return want{Type: ConditionZtunnelAccepted, Status: status, Reason: reason, Message: "m", ObservedGeneration: gen}
	}
	wp := want{Type: ConditionWaypointAccepted, Status: "False", Reason: "TargetNotFound", Message: "x", ObservedGeneration: 1}
	cases := []struct {
		name    string
		conds   []*metav1alpha1.IstioCondition
		ws      []want
		changed bool
		types   []string
		// ltt of our ZtunnelAccepted in the result: "old", "now" or "".
		ltt string
	}{
		{"add to empty", nil, []want{wantZt("True", "Accepted", 1)}, true, []string{ConditionZtunnelAccepted}, "now"},
		{"keep foreign, add ours", []*metav1alpha1.IstioCondition{foreign}, []want{wantZt("True", "Accepted", 1)}, true,
			[]string{"Reconciled", ConditionZtunnelAccepted}, "now"},
		{"unchanged", []*metav1alpha1.IstioCondition{foreign, zt("True", "Accepted", 1)}, []want{wantZt("True", "Accepted", 1)}, false,
			[]string{"Reconciled", ConditionZtunnelAccepted}, "old"},
		{"reason changes, status same: time kept", []*metav1alpha1.IstioCondition{zt("True", "Accepted", 1), foreign},
			[]want{wantZt("True", "UnsupportedValue", 2)}, true, []string{ConditionZtunnelAccepted, "Reconciled"}, "old"},
		{"status flips: new time", []*metav1alpha1.IstioCondition{zt("True", "Accepted", 1)},
			[]want{wantZt("False", "UnsupportedValue", 1)}, true, []string{ConditionZtunnelAccepted}, "now"},
		{"ours dropped, foreign kept", []*metav1alpha1.IstioCondition{zt("True", "Accepted", 1), foreign}, nil, true,
			[]string{"Reconciled"}, ""},
		{"switch ztunnel to waypoint", []*metav1alpha1.IstioCondition{zt("True", "Accepted", 1)}, []want{wp}, true,
			[]string{ConditionWaypointAccepted}, ""},
		{"duplicate of ours collapsed", []*metav1alpha1.IstioCondition{zt("True", "Accepted", 1), zt("True", "Accepted", 1)},
			[]want{wantZt("True", "Accepted", 1)}, true, []string{ConditionZtunnelAccepted}, "old"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, changed := mergePolicyConditions(tc.conds, tc.ws, now)
			if changed != tc.changed {
				t.Errorf("changed %v, want %v", changed, tc.changed)
			}
			var types []string
			for _, c := range res {
				types = append(types, c.Type)
				if c.Type == ConditionZtunnelAccepted {
					got := "now"
					if c.LastTransitionTime.AsTime().Equal(old.AsTime()) {
						got = "old"
					}
					if got != tc.ltt {
						t.Errorf("lastTransitionTime %s, want %s", got, tc.ltt)
					}
				}
			}
			if len(types) != len(tc.types) {
				t.Fatalf("types %v, want %v", types, tc.types)
			}
			for i := range types {
				if types[i] != tc.types[i] {
					t.Fatalf("types %v, want %v", types, tc.types)
				}
			}
			// The input list is never modified.
			for _, c := range tc.conds {
				if c.Type == ConditionZtunnelAccepted && !c.LastTransitionTime.AsTime().Equal(old.AsTime()) {
					t.Error("input condition modified")
				}
			}
		})
	}
}

func TestWantedConditions(t *testing.T) {
	out := &index.Output{
		ServiceWaypoints: map[string]index.WaypointBinding{
			"ns/a": {Waypoint: "ns/wp", Condition: index.Condition{Status: true, Reason: "WaypointAccepted", Message: "ok"}},
		},
		PolicyStatus: map[string]index.PolicyStatus{
			"ns/p": {Generation: 7, Ztunnel: &index.Condition{Status: true, Reason: "Accepted"}},
			"ns/q": {Waypoint: &index.Condition{Reason: "TargetNotFound"}},
		},
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	ws := wantedServiceConditions("ns/a", svc, out)
	if len(ws) != 1 || ws[0] != (want{Type: ConditionWaypointBound, Status: "True", Reason: "WaypointAccepted", Message: "ok", ObservedGeneration: 3}) {
		t.Errorf("service conditions %+v", ws)
	}
	if ws := wantedServiceConditions("ns/b", svc, out); len(ws) != 0 {
		t.Errorf("unbound service wants %+v", ws)
	}
	svc.Status.Conditions = []metav1.Condition{{Type: ConditionWaypointBound, Status: "True", Reason: "WaypointAccepted", Message: "ok", ObservedGeneration: 3},
		{Type: "Other", Status: "False"}}
	if !serviceCurrent(svc, ws) {
		t.Error("serviceCurrent false for a Service carrying the condition")
	}
	if serviceCurrent(svc, nil) {
		t.Error("serviceCurrent true although our condition must be removed")
	}
	ap := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Generation: 9}}
	if ws := wantedPolicyConditions("ns/p", ap, out); len(ws) != 1 || ws[0].Type != ConditionZtunnelAccepted || ws[0].ObservedGeneration != 7 || ws[0].Status != "True" {
		t.Errorf("policy p %+v", ws)
	}
	if ws := wantedPolicyConditions("ns/q", ap, out); len(ws) != 1 || ws[0].Type != ConditionWaypointAccepted || ws[0].ObservedGeneration != 9 || ws[0].Status != "False" {
		t.Errorf("policy q %+v", ws)
	}
}

// An Output that lost its status maps (a derived Output that did not carry
// them over) must not replace a real one: it would erase every condition.
func TestUpdateIgnoresOutputWithoutStatus(t *testing.T) {
	w, err := New(Options{Clients: &kube.Clients{Kube: fake.NewClientset(), Istio: istiofake.NewSimpleClientset()}})
	if err != nil {
		t.Fatal(err)
	}
	real := &index.Output{ServiceWaypoints: map[string]index.WaypointBinding{}, PolicyStatus: map[string]index.PolicyStatus{}}
	w.Update(real)
	w.Update(&index.Output{})
	w.Update(nil)
	if w.current() != real {
		t.Fatal("an Output without status maps replaced the real one")
	}
	next := &index.Output{PolicyStatus: map[string]index.PolicyStatus{}}
	w.Update(next)
	if w.current() != next {
		t.Fatal("a built Output was not taken")
	}
}
