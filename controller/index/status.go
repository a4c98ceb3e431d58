package index

import (
	"fmt"
	"strings"

	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
)

// This file derives the status the controller writes back to Kubernetes:
// the istio.io/WaypointBound condition of Services and the
// ZtunnelAccepted/WaypointAccepted conditions of AuthorizationPolicies.

// recordServiceBinding files the waypoint binding of a Kubernetes Service
// that asked for one.
func (b *builder) recordServiceBinding(svc *corev1.Service, r bindResult, ingressUseWaypoint bool) {
	b.serviceBindings[kindService+"/"+svc.Namespace+"/"+svc.Name] = r
	if r.waypoint == "" {
		return
	}
	c := r.condition()
	if c.Status {
		_, own := svc.Labels[LabelIngressUseWaypoint]
		_, nsl := b.nsLabels(svc.Namespace)[LabelIngressUseWaypoint]
		switch {
		case ingressUseWaypoint:
			c.Message += ". Ingress traffic will traverse the waypoint"
		case own || nsl:
			c.Message += ". Ingress traffic is not using the waypoint, set the " + LabelIngressUseWaypoint + " label to true if desired."
		}
	}
	b.out.ServiceWaypoints[svc.Namespace+"/"+svc.Name] = WaypointBinding{Waypoint: r.waypoint, Condition: c}
}

// ztunnelPolicyStatus is the ZtunnelAccepted condition of a policy without
// targetRefs. l7 names the HTTP attributes ztunnel had to leave out and
// l7Problem explains the consequence.
func ztunnelPolicyStatus(ap *securityv1.AuthorizationPolicy, l7 []string, l7Problem string) *Condition {
	switch ap.Spec.Action {
	case securityapi.AuthorizationPolicy_ALLOW, securityapi.AuthorizationPolicy_DENY:
	default:
		return &Condition{Reason: ReasonUnsupportedValue,
			Message: fmt.Sprintf("ztunnel does not support the %s action", ap.Spec.Action)}
	}
	if len(l7) > 0 {
		// Accepted, with a warning: the L4 part is enforced.
		return &Condition{Status: true, Reason: ReasonUnsupportedValue, Message: l7Problem}
	}
	return &Condition{Status: true, Reason: ReasonAccepted, Message: "attached to ztunnel"}
}

// policyTargetRefs returns the targetRefs of a policy, the deprecated
// singular targetRef included.
func policyTargetRefs(ap *securityv1.AuthorizationPolicy) []*typeapi.PolicyTargetReference {
	refs := ap.Spec.TargetRefs
	if ap.Spec.TargetRef != nil {
		refs = append([]*typeapi.PolicyTargetReference{ap.Spec.TargetRef}, refs...)
	}
	return refs
}

// buildWaypointPolicyStatus computes the WaypointAccepted condition of every
// policy with targetRefs. It runs after services are built, since a policy
// attached to a Service is served only when that Service has a waypoint.
func (b *builder) buildWaypointPolicyStatus() {
	for _, ap := range b.authzPolicies {
		refs := policyTargetRefs(ap)
		if len(refs) == 0 {
			continue
		}
		var bound, unbound []string
		var single Condition
		for _, ref := range refs {
			c := b.targetRefCondition(ap.Namespace, ref)
			single = c
			if c.Status {
				bound = append(bound, ref.Name)
			} else {
				unbound = append(unbound, ancestorName(ap.Namespace, ref))
			}
		}
		c := single
		if len(refs) > 1 {
			// Several targets fold into one condition, as Istio does.
			c = Condition{Status: len(bound) > 0, Reason: ReasonAccepted, Message: "bound to all targetRefs"}
			switch {
			case len(bound) > 0 && len(unbound) > 0:
				c.Reason = ReasonPartiallyInvalid
			case len(bound) == 0:
				c.Reason = ReasonInvalid
			}
			if len(unbound) > 0 {
				c.Message = "Invalid targetRefs: " + strings.Join(unbound, ", ")
			}
		}
		st := b.out.PolicyStatus[ap.Namespace+"/"+ap.Name]
		st.Generation = ap.Generation
		st.Waypoint = &c
		b.out.PolicyStatus[ap.Namespace+"/"+ap.Name] = st
	}
}

// ancestorName renders a target as Istio does: Kind.group:ns/name.
func ancestorName(policyNS string, ref *typeapi.PolicyTargetReference) string {
	group := ref.Group
	if group == "" {
		group = "core"
	}
	ns := ref.Namespace
	if ns == "" {
		ns = policyNS
	}
	return ref.Kind + "." + group + ":" + ns + "/" + ref.Name
}

// targetRefCondition says whether a waypoint serves one target of a policy.
func (b *builder) targetRefCondition(policyNS string, ref *typeapi.PolicyTargetReference) Condition {
	ns := ref.Namespace
	if ns == "" {
		ns = policyNS
	}
	key := ns + "/" + ref.Name
	switch {
	case ref.Kind == kindGateway && (ref.Group == "" || ref.Group == gatewayGroup):
		w := b.waypoints[key]
		switch {
		case w == nil:
			return Condition{Reason: ReasonTargetNotFound, Message: fmt.Sprintf("waypoint %s was not found", key)}
		case w.addr == nil:
			return Condition{Reason: ReasonTargetNotFound, Message: fmt.Sprintf("waypoint %s is not ready: it %s", key, w.notReady)}
		}
		return Condition{Status: true, Reason: ReasonAccepted, Message: "bound to " + key}
	case ref.Kind == kindService && (ref.Group == "" || ref.Group == "core"):
		return b.boundServiceCondition(kindService, key)
	case ref.Kind == kindServiceEntry && ref.Group == strings.TrimSuffix(networkingGroupPrefix, "/"):
		return b.boundServiceCondition(kindServiceEntry, key)
	}
	return Condition{Reason: ReasonInvalid, Message: fmt.Sprintf("targetRef kind %q (group %q) is not supported; use a waypoint Gateway, Service or ServiceEntry", ref.Kind, ref.Group)}
}

func (b *builder) boundServiceCondition(kind, key string) Condition {
	r, found := b.serviceBindings[kind+"/"+key]
	switch {
	case !found:
		return Condition{Reason: ReasonTargetNotFound, Message: fmt.Sprintf("%s %s was not found", kind, key)}
	case r.addr == nil:
		return Condition{Reason: ReasonAncestorNotBound, Message: fmt.Sprintf("%s %s is not bound to a waypoint", kind, key)}
	}
	return Condition{Status: true, Reason: ReasonAccepted, Message: "bound to " + r.waypoint}
}

// invalidPolicyStatus gives every AuthorizationPolicy that failed
// validation a ZtunnelAccepted=False (or WaypointAccepted=False for one
// with targetRefs) condition carrying the problem.
func (b *builder) invalidPolicyStatus(in []*securityv1.AuthorizationPolicy) {
	reasons := map[string][]string{}
	for _, p := range b.out.Problems {
		if p.Kind == kindAuthorizationPolicy {
			reasons[p.Namespace+"/"+p.Name] = append(reasons[p.Namespace+"/"+p.Name], p.Reason)
		}
	}
	for _, ap := range in {
		if ap == nil {
			continue
		}
		key := ap.Namespace + "/" + ap.Name
		if _, ok := b.out.PolicyStatus[key]; ok || len(reasons[key]) == 0 {
			continue
		}
		c := &Condition{Reason: ReasonInvalid, Message: strings.Join(reasons[key], "; ")}
		st := PolicyStatus{Generation: ap.Generation}
		if len(policyTargetRefs(ap)) > 0 {
			st.Waypoint = c
		} else {
			st.Ztunnel = c
		}
		b.out.PolicyStatus[key] = st
	}
	// A stand-in is accepted for what it is, but the user's policy was
	// not: say so, and what is enforced instead.
	for _, ap := range b.authzPolicies {
		why := isStandIn(ap.Annotations)
		if why == "" {
			continue
		}
		enforced := "allows nothing"
		if ap.Spec.GetAction() == securityapi.AuthorizationPolicy_DENY {
			enforced = "denies everything"
		}
		c := &Condition{Reason: ReasonInvalid, Message: why + "; until it is fixed, a stand-in that " + enforced + " is enforced in its place"}
		key := ap.Namespace + "/" + ap.Name
		st := b.out.PolicyStatus[key]
		st.Generation = ap.Generation
		if len(policyTargetRefs(ap)) > 0 {
			st.Waypoint = c
		} else {
			st.Ztunnel = c
		}
		b.out.PolicyStatus[key] = st
	}
}
