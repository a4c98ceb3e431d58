package status

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/cache"

	"github.com/zmesh/zmesh/controller/index"
)

// policyConditionTypes are the AuthorizationPolicy condition types the
// Writer owns.
var policyConditionTypes = sets.New(ConditionZtunnelAccepted, ConditionWaypointAccepted)

func hasPolicyCondition(ap *securityv1.AuthorizationPolicy) bool {
	for _, c := range ap.Status.Conditions {
		if c != nil && policyConditionTypes.Has(c.Type) {
			return true
		}
	}
	return false
}

// wantedPolicyConditions are the conditions out asks ap to carry.
func wantedPolicyConditions(key string, ap *securityv1.AuthorizationPolicy, out *index.Output) []want {
	st, ok := out.PolicyStatus[key]
	if !ok {
		return nil
	}
	gen := st.Generation
	if gen == 0 {
		gen = ap.Generation
	}
	var ws []want
	if st.Ztunnel != nil {
		ws = append(ws, fromIndex(ConditionZtunnelAccepted, st.Ztunnel, gen))
	}
	if st.Waypoint != nil {
		ws = append(ws, fromIndex(ConditionWaypointAccepted, st.Waypoint, gen))
	}
	return ws
}

// mergePolicyConditions returns conds with our condition types replaced by
// ws: other conditions keep their place, ours keep theirs when still
// wanted, new ones are appended, unwanted ones dropped. A condition whose
// status does not change keeps its lastTransitionTime. changed is false
// when the result equals conds.
func mergePolicyConditions(conds []*metav1alpha1.IstioCondition, ws []want, now time.Time) (res []*metav1alpha1.IstioCondition, changed bool) {
	wanted := map[string]want{}
	for _, w := range ws {
		wanted[w.Type] = w
	}
	done := map[string]bool{}
	mk := func(w want, prev *metav1alpha1.IstioCondition) *metav1alpha1.IstioCondition {
		ltt := timestamppb.New(now)
		if prev != nil && prev.Status == w.Status && prev.LastTransitionTime != nil {
			ltt = prev.LastTransitionTime
		}
		return &metav1alpha1.IstioCondition{Type: w.Type, Status: w.Status, Reason: w.Reason, Message: w.Message,
			ObservedGeneration: w.ObservedGeneration, LastTransitionTime: ltt}
	}
	for _, c := range conds {
		if c == nil || !policyConditionTypes.Has(c.Type) {
			res = append(res, c)
			continue
		}
		w, ok := wanted[c.Type]
		if !ok || done[c.Type] {
			changed = true // dropped (or a duplicate of ours)
			continue
		}
		done[c.Type] = true
		if c.Status != w.Status || c.Reason != w.Reason || c.Message != w.Message || c.ObservedGeneration != w.ObservedGeneration {
			changed = true
			res = append(res, mk(w, c))
		} else {
			res = append(res, c)
		}
	}
	for _, w := range ws {
		if !done[w.Type] {
			changed = true
			res = append(res, mk(w, nil))
		}
	}
	return res, changed
}

// syncPolicy writes the wanted conditions of one AuthorizationPolicy,
// keeping every other condition, with the cached resourceVersion as a
// precondition (a conflict is retried with a fresher copy).
func (r *run) syncPolicy(ctx context.Context, key string, out *index.Output) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil || !r.inScope(ns) {
		return nil //nolint:nilerr // malformed keys are never retried
	}
	ap, err := r.policies.AuthorizationPolicies(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get authorization policy: %w", err)
	}
	ws := wantedPolicyConditions(key, ap, out)
	fp := fingerprint(ws)
	merged, changed := mergePolicyConditions(ap.Status.Conditions, ws, time.Now().Truncate(time.Second))
	if !changed || r.unchangedSince(apPrefix+key, fp, ap.ResourceVersion) {
		return nil
	}
	upd := ap.DeepCopy()
	upd.Status.Conditions = merged
	if _, err := r.w.opts.Clients.Istio.SecurityV1().AuthorizationPolicies(ns).UpdateStatus(ctx, upd,
		metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("update authorization policy status: %w", err)
	}
	r.remember(apPrefix+key, fp, ap.ResourceVersion)
	r.w.log.Debug("authorization policy status written", "policy", key, "conditions", len(ws))
	return nil
}
