package status

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/zmesh/zmesh/controller/index"
)

// serviceConditionTypes are the Service condition types the Writer owns.
var serviceConditionTypes = sets.New(ConditionWaypointBound)

func hasServiceCondition(s *corev1.Service) bool {
	for _, c := range s.Status.Conditions {
		if serviceConditionTypes.Has(c.Type) {
			return true
		}
	}
	return false
}

// wantedServiceConditions are the conditions out asks svc to carry.
func wantedServiceConditions(key string, svc *corev1.Service, out *index.Output) []want {
	b, ok := out.ServiceWaypoints[key]
	if !ok {
		return nil
	}
	return []want{fromIndex(ConditionWaypointBound, &b.Condition, svc.Generation)}
}

// serviceCurrent reports whether svc carries exactly ws among our types.
func serviceCurrent(svc *corev1.Service, ws []want) bool {
	n := 0
	for _, c := range svc.Status.Conditions {
		if serviceConditionTypes.Has(c.Type) {
			n++
		}
	}
	if n != len(ws) {
		return false
	}
	for _, w := range ws {
		c := findCondition(svc.Status.Conditions, w.Type)
		if c == nil || string(c.Status) != w.Status || c.Reason != w.Reason || c.Message != w.Message ||
			c.ObservedGeneration != w.ObservedGeneration {
			return false
		}
	}
	return true
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// syncService applies the wanted conditions of one Service. Applying with
// none of our conditions removes the ones this field manager owns.
func (r *run) syncService(ctx context.Context, key string, out *index.Output) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil || !r.inScope(ns) {
		return nil //nolint:nilerr // malformed keys are never retried
	}
	svc, err := r.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get service: %w", err)
	}
	ws := wantedServiceConditions(key, svc, out)
	fp := fingerprint(ws)
	if serviceCurrent(svc, ws) || r.unchangedSince(svcPrefix+key, fp, svc.ResourceVersion) {
		return nil
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	st := corev1ac.ServiceStatus()
	for _, w := range ws {
		ltt := now
		if c := findCondition(svc.Status.Conditions, w.Type); c != nil && string(c.Status) == w.Status {
			ltt = c.LastTransitionTime
		}
		st.WithConditions(metav1ac.Condition().WithType(w.Type).WithStatus(metav1.ConditionStatus(w.Status)).
			WithReason(w.Reason).WithMessage(w.Message).WithObservedGeneration(w.ObservedGeneration).
			WithLastTransitionTime(ltt))
	}
	if len(ws) == 0 {
		// An explicitly empty list releases what we owned.
		st.Conditions = []metav1ac.ConditionApplyConfiguration{}
	}
	ac := corev1ac.Service(name, ns).WithStatus(st)
	if _, err := r.w.opts.Clients.Kube.CoreV1().Services(ns).ApplyStatus(ctx, ac,
		metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("apply service status: %w", err)
	}
	r.remember(svcPrefix+key, fp, svc.ResourceVersion)
	r.w.log.Debug("service status written", "service", key, "conditions", len(ws))
	return nil
}
