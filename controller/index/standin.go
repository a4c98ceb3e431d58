package index

import (
	"strings"

	"google.golang.org/protobuf/proto"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// standInAnnotation marks a fail-closed stand-in (see StandInAuthorizationPolicy)
// and carries why the original was refused.
const standInAnnotation = "zmesh.io/fail-closed-stand-in"

// EnforcedAuthorizationPolicies returns list as the index enforces it:
// valid policies as they are, invalid ones replaced by their fail-closed
// stand-ins (standInAuthorizationPolicy) or, without one, left out. Other
// translations of the same policies (the waypoints') use it to enforce
// exactly what the index does.
func EnforcedAuthorizationPolicies(list []*securityv1.AuthorizationPolicy) []*securityv1.AuthorizationPolicy {
	out := make([]*securityv1.AuthorizationPolicy, 0, len(list))
	for _, ap := range list {
		if ap == nil {
			continue
		}
		if reasons := validateAuthorizationPolicy(ap); len(reasons) > 0 {
			ap = standInAuthorizationPolicy(ap, reasons)
		}
		if ap != nil {
			out = append(out, ap)
		}
	}
	return out
}

// standInAuthorizationPolicy returns what is enforced in place of an
// AuthorizationPolicy that Validate refuses for reasons, so that a mistake
// in a policy never widens access: an ALLOW becomes allow-nothing (no
// rules), a DENY or a policy of unknown action deny-everything (one empty
// rule). It keeps the policy's name and scope (selector, targetRefs); when
// the scope itself is what is wrong, it covers the policy's whole
// namespace. It returns nil without reasons (a valid policy) and for AUDIT
// and CUSTOM policies, which allow or deny nothing in this mesh.
func standInAuthorizationPolicy(ap *securityv1.AuthorizationPolicy, reasons []string) *securityv1.AuthorizationPolicy {
	if len(reasons) == 0 {
		return nil
	}
	action := ap.Spec.GetAction()
	var rules []*securityapi.Rule
	switch action {
	case securityapi.AuthorizationPolicy_ALLOW:
	case securityapi.AuthorizationPolicy_AUDIT, securityapi.AuthorizationPolicy_CUSTOM:
		return nil
	default: // DENY, or an action this version does not know
		action, rules = securityapi.AuthorizationPolicy_DENY, []*securityapi.Rule{{}}
	}
	s := &securityv1.AuthorizationPolicy{TypeMeta: ap.TypeMeta, ObjectMeta: standInMeta(&ap.ObjectMeta, reasons)}
	s.Spec.Action = action
	s.Spec.Rules = rules
	if sel := ap.Spec.GetSelector(); sel != nil {
		s.Spec.Selector = proto.Clone(sel).(*typeapi.WorkloadSelector)
	}
	if ref := ap.Spec.GetTargetRef(); ref != nil {
		s.Spec.TargetRef = proto.Clone(ref).(*typeapi.PolicyTargetReference)
	}
	for _, ref := range ap.Spec.GetTargetRefs() {
		s.Spec.TargetRefs = append(s.Spec.TargetRefs, proto.Clone(ref).(*typeapi.PolicyTargetReference))
	}
	if len(validateAuthorizationPolicy(s)) > 0 {
		s.Spec.Selector, s.Spec.TargetRef, s.Spec.TargetRefs = nil, nil, nil
		if len(validateAuthorizationPolicy(s)) > 0 {
			return nil
		}
	}
	return s
}

// standInPeerAuthentication is standInAuthorizationPolicy for a
// PeerAuthentication: STRICT, in the object's scope (or its namespace).
func standInPeerAuthentication(pa *securityv1.PeerAuthentication, reasons []string) *securityv1.PeerAuthentication {
	if len(reasons) == 0 {
		return nil
	}
	s := &securityv1.PeerAuthentication{TypeMeta: pa.TypeMeta, ObjectMeta: standInMeta(&pa.ObjectMeta, reasons)}
	s.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}
	if sel := pa.Spec.GetSelector(); sel != nil {
		s.Spec.Selector = proto.Clone(sel).(*typeapi.WorkloadSelector)
	}
	if len(validatePeerAuthentication(s)) > 0 {
		s.Spec.Selector = nil
		if len(validatePeerAuthentication(s)) > 0 {
			return nil
		}
	}
	return s
}

// standInMeta is the original's metadata (a copy) marked as a stand-in
// for the reasons the original was refused.
func standInMeta(m *metav1.ObjectMeta, reasons []string) metav1.ObjectMeta {
	c := *m.DeepCopy()
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[standInAnnotation] = strings.Join(reasons, "; ")
	return c
}

// EnforcedWhenInvalid reports whether the index enforces a stand-in for
// obj when it is invalid (AuthorizationPolicy, PeerAuthentication): a
// source must hand such objects to the index even when Validate refuses
// them, since leaving them out would widen access.
func EnforcedWhenInvalid(obj runtime.Object) bool {
	switch obj.(type) {
	case *securityv1.AuthorizationPolicy, *securityv1.PeerAuthentication:
		return true
	}
	return false
}

// isStandIn reports why obj's original was refused, "" for an object that
// is not a stand-in.
func isStandIn(annotations map[string]string) string { return annotations[standInAnnotation] }
