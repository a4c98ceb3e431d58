package index

import (
	"testing"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestStandIns(t *testing.T) {
	sel := &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}
	badRule := []*securityapi.Rule{{From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: []string{"a*b"}}}}}}
	ap := func(action securityapi.AuthorizationPolicy_Action, rules []*securityapi.Rule, s *typeapi.WorkloadSelector, refs ...*typeapi.PolicyTargetReference) *securityv1.AuthorizationPolicy {
		o := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Generation: 3}}
		o.Spec.Action, o.Spec.Rules, o.Spec.Selector, o.Spec.TargetRefs = action, rules, s, refs
		return o
	}
	svc := &typeapi.PolicyTargetReference{Kind: "Service", Name: "db"}
	tests := []struct {
		name      string
		in        *securityv1.AuthorizationPolicy
		want      bool // a stand-in is returned
		wantDeny  bool
		wantScope string // "selector", "targetRefs" or "namespace"
	}{
		{"valid", ap(securityapi.AuthorizationPolicy_ALLOW, nil, sel), false, false, ""},
		{"ALLOW with a bad rule", ap(securityapi.AuthorizationPolicy_ALLOW, badRule, sel), true, false, "selector"},
		{"DENY with a bad rule", ap(securityapi.AuthorizationPolicy_DENY, badRule, nil, svc), true, true, "targetRefs"},
		{"unknown action", ap(42, nil, sel), true, true, "selector"},
		{"AUDIT", ap(securityapi.AuthorizationPolicy_AUDIT, badRule, sel), false, false, ""},
		{"bad scope", ap(securityapi.AuthorizationPolicy_ALLOW, nil, sel, svc), true, false, "namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := standInAuthorizationPolicy(tt.in, validateAuthorizationPolicy(tt.in))
			if (s != nil) != tt.want {
				t.Fatalf("stand-in %v, want one: %v", s, tt.want)
			}
			if s == nil {
				return
			}
			if len(validateAuthorizationPolicy(s)) != 0 || isStandIn(s.Annotations) == "" || s.Name != "p" || s.Generation != 3 {
				t.Fatalf("stand-in %+v", s)
			}
			deny := s.Spec.Action == securityapi.AuthorizationPolicy_DENY
			if deny != tt.wantDeny || (deny && (len(s.Spec.Rules) != 1 || s.Spec.Rules[0].From != nil || s.Spec.Rules[0].To != nil || s.Spec.Rules[0].When != nil)) || (!deny && len(s.Spec.Rules) != 0) {
				t.Fatalf("stand-in action %v rules %v", s.Spec.Action, s.Spec.Rules)
			}
			scope := "namespace"
			if s.Spec.Selector != nil {
				scope = "selector"
			} else if len(s.Spec.TargetRefs) > 0 {
				scope = "targetRefs"
			}
			if scope != tt.wantScope {
				t.Fatalf("stand-in scope %s, want %s", scope, tt.wantScope)
			}
			if tt.in.Annotations != nil {
				t.Fatal("the original was modified")
			}
		})
	}
	pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "pa", Namespace: "ns"}}
	pa.Spec.Selector = sel
	pa.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_PERMISSIVE}
	pa.Spec.PortLevelMtls = map[uint32]*securityapi.PeerAuthentication_MutualTLS{0: {Mode: securityapi.PeerAuthentication_MutualTLS_DISABLE}}
	if len(validatePeerAuthentication(pa)) == 0 {
		t.Fatal("port 0 accepted")
	}
	s := standInPeerAuthentication(pa, validatePeerAuthentication(pa))
	if s == nil || s.Spec.GetMtls().GetMode() != securityapi.PeerAuthentication_MutualTLS_STRICT || s.Spec.Selector == nil || len(s.Spec.PortLevelMtls) != 0 {
		t.Fatalf("PeerAuthentication stand-in %+v", s)
	}
}
