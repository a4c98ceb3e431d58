package waypoints

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwac "sigs.k8s.io/gateway-api/applyconfiguration/apis/v1"
)

// gatewayStatus is the part of a Gateway's status the Deployer owns.
type gatewayStatus struct {
	conditions []metav1.Condition
	addresses  []string
}

// desiredGatewayStatus computes the Accepted and Programmed conditions and
// the addresses of gw. svc is the deployed Service (nil when none);
// deployErr is set when deploying failed.
func (d *Deployer) desiredGatewayStatus(gw *gatewayv1.Gateway, v verdict, svc *corev1.Service, deployErr string) gatewayStatus {
	gen := gw.Generation
	cond := func(t gatewayv1.GatewayConditionType, ok bool, reason gatewayv1.GatewayConditionReason, msg string) metav1.Condition {
		st := metav1.ConditionFalse
		if ok {
			st = metav1.ConditionTrue
		}
		return metav1.Condition{Type: string(t), Status: st, Reason: string(reason), Message: msg, ObservedGeneration: gen}
	}
	var st gatewayStatus
	if !v.ok {
		st.conditions = []metav1.Condition{
			cond(gatewayv1.GatewayConditionAccepted, false, v.reason, v.message),
			cond(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid, "the Gateway is not accepted, so no waypoint is deployed"),
		}
		return st
	}
	accepted := cond(gatewayv1.GatewayConditionAccepted, true, gatewayv1.GatewayReasonAccepted, "Resource accepted")
	if svc != nil {
		for _, ip := range svc.Spec.ClusterIPs {
			if ip != "" && ip != corev1.ClusterIPNone {
				st.addresses = append(st.addresses, ip)
			}
		}
		if len(st.addresses) == 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			st.addresses = []string{svc.Spec.ClusterIP}
		}
	}
	var programmed metav1.Condition
	switch {
	case deployErr != "":
		programmed = cond(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonNoResources, deployErr)
	case len(st.addresses) == 0:
		programmed = cond(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonAddressNotAssigned,
			fmt.Sprintf("waiting for Service %s to be assigned a cluster IP", d.serviceHost(gw)))
	default:
		programmed = cond(gatewayv1.GatewayConditionProgrammed, true, gatewayv1.GatewayReasonProgrammed,
			fmt.Sprintf("Resource programmed, assigned to service(s) %s:%d", d.serviceHost(gw), HBONEPort))
	}
	st.conditions = []metav1.Condition{accepted, programmed}
	return st
}

// statusCurrent reports whether gw already carries want.
func statusCurrent(gw *gatewayv1.Gateway, want gatewayStatus) bool {
	for _, c := range want.conditions {
		have := findCondition(gw.Status.Conditions, c.Type)
		if have == nil || have.Status != c.Status || have.Reason != c.Reason || have.Message != c.Message ||
			have.ObservedGeneration != c.ObservedGeneration {
			return false
		}
	}
	var have []string
	for _, a := range gw.Status.Addresses {
		have = append(have, a.Value)
	}
	return slices.Equal(have, want.addresses)
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// equal reports whether s and o carry the same conditions (ignoring
// lastTransitionTime) and addresses.
func (s gatewayStatus) equal(o gatewayStatus) bool {
	return slices.Equal(s.addresses, o.addresses) &&
		slices.EqualFunc(s.conditions, o.conditions, func(a, b metav1.Condition) bool {
			return a.Type == b.Type && a.Status == b.Status && a.Reason == b.Reason &&
				a.Message == b.Message && a.ObservedGeneration == b.ObservedGeneration
		})
}

// statusWrite is a status the run applied, and the resourceVersion of the
// Gateway it was computed from.
type statusWrite struct {
	from   string
	status gatewayStatus
}

// writeGatewayStatus applies the desired status of gw unless gw already
// carries it, or the run already applied it to this very version of gw.
// The second case is the informer cache lagging behind the run's own
// write (events of the deployed objects queue the Gateway again before its
// new status arrives): writing again would be a redundant update, and
// would move lastTransitionTime of conditions the stale copy lacks.
func (r *run) writeGatewayStatus(ctx context.Context, gw *gatewayv1.Gateway, v verdict, svc *corev1.Service, deployErr string) error {
	want := r.d.desiredGatewayStatus(gw, v, svc, deployErr)
	if statusCurrent(gw, want) {
		return nil
	}
	key := gw.Namespace + "/" + gw.Name
	r.mu.Lock()
	last, ok := r.written[key]
	r.mu.Unlock()
	if ok && last.from == gw.ResourceVersion && last.status.equal(want) {
		return nil
	}
	if err := r.d.applyGatewayStatus(ctx, gw, want); err != nil {
		return err
	}
	r.mu.Lock()
	r.written[key] = statusWrite{from: gw.ResourceVersion, status: want}
	r.mu.Unlock()
	return nil
}

// forgetStatus drops what writeGatewayStatus remembers of a deleted Gateway.
func (r *run) forgetStatus(key string) {
	r.mu.Lock()
	delete(r.written, key)
	r.mu.Unlock()
}

// applyGatewayStatus server-side-applies want as gw's status, keeping the
// lastTransitionTime of conditions whose status did not change.
func (d *Deployer) applyGatewayStatus(ctx context.Context, gw *gatewayv1.Gateway, want gatewayStatus) error {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	status := gwac.GatewayStatus()
	for _, c := range want.conditions {
		ltt := now
		if have := findCondition(gw.Status.Conditions, c.Type); have != nil && have.Status == c.Status {
			ltt = have.LastTransitionTime
		}
		status.WithConditions(metav1ac.Condition().WithType(c.Type).WithStatus(c.Status).WithReason(c.Reason).
			WithMessage(c.Message).WithObservedGeneration(c.ObservedGeneration).WithLastTransitionTime(ltt))
	}
	for _, a := range want.addresses {
		status.WithAddresses(gwac.GatewayStatusAddress().WithType(gatewayv1.IPAddressType).WithValue(a))
	}
	ac := gwac.Gateway(gw.Name, gw.Namespace).WithStatus(status)
	_, err := d.opts.Clients.Gateway.GatewayV1().Gateways(gw.Namespace).ApplyStatus(ctx, ac,
		metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("apply gateway status: %w", err)
	}
	d.log.Debug("gateway status written", "gateway", gw.Namespace+"/"+gw.Name, "addresses", want.addresses)
	return nil
}

// errForeignClass: the istio-waypoint GatewayClass belongs to another controller.
var errForeignClass = errors.New("waypoints: foreign gateway class")

// ensureGatewayClass creates the istio-waypoint GatewayClass when missing
// and marks it Accepted. A class of that name owned by another controller
// is an error: its Gateways are not ours to deploy.
func (d *Deployer) ensureGatewayClass(ctx context.Context) error {
	classes := d.opts.Clients.Gateway.GatewayV1().GatewayClasses()
	gc, err := classes.Get(ctx, GatewayClassName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		desc := "The zmesh waypoint GatewayClass"
		gc, err = classes.Create(ctx, &gatewayv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: GatewayClassName},
			Spec:       gatewayv1.GatewayClassSpec{ControllerName: ControllerName, Description: &desc},
		}, metav1.CreateOptions{FieldManager: FieldManager})
		if apierrors.IsAlreadyExists(err) {
			gc, err = classes.Get(ctx, GatewayClassName, metav1.GetOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("waypoints: gateway class %s: %w", GatewayClassName, err)
	}
	if gc.Spec.ControllerName != ControllerName {
		return fmt.Errorf("%w: gateway class %s has controllerName %q, not %q", errForeignClass, GatewayClassName, gc.Spec.ControllerName, ControllerName)
	}
	const msg = "Handled by zmesh controller"
	if c := findCondition(gc.Status.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted)); c != nil &&
		c.Status == metav1.ConditionTrue && c.Message == msg && c.ObservedGeneration == gc.Generation {
		return nil
	}
	ac := gwac.GatewayClass(GatewayClassName).WithStatus(gwac.GatewayClassStatus().WithConditions(
		metav1ac.Condition().WithType(string(gatewayv1.GatewayClassConditionStatusAccepted)).
			WithStatus(metav1.ConditionTrue).WithReason(string(gatewayv1.GatewayClassReasonAccepted)).
			WithMessage(msg).WithObservedGeneration(gc.Generation).
			WithLastTransitionTime(metav1.NewTime(time.Now().Truncate(time.Second)))))
	if _, err := classes.ApplyStatus(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("waypoints: gateway class %s status: %w", GatewayClassName, err)
	}
	return nil
}
