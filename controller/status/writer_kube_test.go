package status_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	metav1alpha1 "istio.io/api/meta/v1alpha1"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/status"
	"github.com/zmesh/zmesh/controller/waypoints"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
)

const waitFor = 30 * time.Second

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// run starts fn(ctx) in the background until the test ends.
func run(t *testing.T, what string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop", what)
		}
	})
}

// build reads namespace ns as the controller's index would and builds.
func build(t *testing.T, c *kube.Clients, ns string) *index.Output {
	t.Helper()
	ctx := context.Background()
	in := &index.Inputs{}
	n, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in.Namespaces = append(in.Namespaces, n)
	svcs, err := c.Kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range svcs.Items {
		in.Services = append(in.Services, &svcs.Items[i])
	}
	gws, err := c.Gateway.GatewayV1().Gateways(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range gws.Items {
		in.Gateways = append(in.Gateways, &gws.Items[i])
	}
	aps, err := c.Istio.SecurityV1().AuthorizationPolicies(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in.AuthorizationPolicies = append(in.AuthorizationPolicies, aps.Items...)
	return index.Build(index.Config{}, in)
}

func createService(t *testing.T, c *kube.Clients, ns, name string, labels map[string]string) {
	t.Helper()
	_, err := c.Kube.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
}

func createPolicy(t *testing.T, c *kube.Clients, ns string, ap *securityv1.AuthorizationPolicy) {
	t.Helper()
	ap.Namespace = ns
	if _, err := c.Istio.SecurityV1().AuthorizationPolicies(ns).Create(context.Background(), ap, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy %s: %v", ap.Name, err)
	}
}

func serviceCondition(t *testing.T, c *kube.Clients, ns, name, typ string) (*metav1.Condition, *corev1.Service, error) {
	s, err := c.Kube.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	for i := range s.Status.Conditions {
		if s.Status.Conditions[i].Type == typ {
			return &s.Status.Conditions[i], s, nil
		}
	}
	return nil, s, nil
}

func policyCondition(c *kube.Clients, ns, name, typ string) (*metav1alpha1.IstioCondition, *securityv1.AuthorizationPolicy, error) {
	ap, err := c.Istio.SecurityV1().AuthorizationPolicies(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	for _, cd := range ap.Status.Conditions {
		if cd.Type == typ {
			return cd, ap, nil
		}
	}
	return nil, ap, nil
}

func TestWriterKube(t *testing.T) {
	c := kubetest.Clients(t)
	ctx := context.Background()
	ns := kubetest.Namespace(t, c, "wp-status", nil)

	d, err := waypoints.New(waypoints.Options{Clients: c, Image: "zmesh/waypoint:test", Namespace: ns, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "deployer", d.Run)
	w, err := status.New(status.Options{Clients: c, Namespace: ns, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "writer", w.Run)

	if _, err := c.Gateway.GatewayV1().Gateways(ns).Create(ctx, &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "wp", Namespace: ns},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: waypoints.GatewayClassName,
			Listeners: []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createService(t, c, ns, "bound", map[string]string{index.LabelUseWaypoint: "wp"})
	createService(t, c, ns, "ghost", map[string]string{index.LabelUseWaypoint: "missing"})
	createService(t, c, ns, "plain", nil)
	createPolicy(t, c, ns, &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "l7"},
		Spec: securityapi.AuthorizationPolicy{
			Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "bound"}},
			Rules:    []*securityapi.Rule{{To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Methods: []string{"GET"}}}}}},
		},
	})
	createPolicy(t, c, ns, &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "on-bound"},
		Spec: securityapi.AuthorizationPolicy{
			TargetRefs: []*typeapi.PolicyTargetReference{{Kind: "Service", Name: "bound"}},
			Rules:      []*securityapi.Rule{{To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Methods: []string{"GET"}}}}}},
		},
	})
	// Another writer's condition on a policy and on a Service: kept.
	ap, err := c.Istio.SecurityV1().AuthorizationPolicies(ns).Get(ctx, "l7", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ap.Status.Conditions = []*metav1alpha1.IstioCondition{{Type: "Reconciled", Status: "True", Reason: "Other"}}
	if _, err := c.Istio.SecurityV1().AuthorizationPolicies(ns).UpdateStatus(ctx, ap, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kube.CoreV1().Services(ns).ApplyStatus(ctx, corev1ac.Service("bound", ns).WithStatus(
		corev1ac.ServiceStatus().WithConditions(metav1ac.Condition().WithType("example.com/Other").
			WithStatus(metav1.ConditionTrue).WithReason("Other").WithMessage("not ours").
			WithLastTransitionTime(metav1.Now()))),
		metav1.ApplyOptions{FieldManager: "someone-else"}); err != nil {
		t.Fatal(err)
	}

	// The controller rebuilds whenever its inputs change; here the test
	// rebuilds until the waypoint is programmed and the binding resolves.
	kubetest.Eventually(t, waitFor, "bound service gets WaypointBound=True", func() (bool, error) {
		w.Update(build(t, c, ns))
		cd, _, err := serviceCondition(t, c, ns, "bound", status.ConditionWaypointBound)
		if err != nil || cd == nil {
			return false, err
		}
		if cd.Status != metav1.ConditionTrue || cd.Reason != index.ReasonWaypointAccepted || !strings.Contains(cd.Message, ns+"/wp") {
			return false, fmt.Errorf("condition %+v", cd)
		}
		return true, nil
	})
	kubetest.Eventually(t, waitFor, "ghost service gets WaypointBound=False", func() (bool, error) {
		cd, _, err := serviceCondition(t, c, ns, "ghost", status.ConditionWaypointBound)
		if err != nil || cd == nil {
			return false, err
		}
		if cd.Status != metav1.ConditionFalse || cd.Reason != index.ReasonWaypointIsNotReady || !strings.Contains(cd.Message, "does not exist") {
			return false, fmt.Errorf("condition %+v", cd)
		}
		return true, nil
	})
	kubetest.Eventually(t, waitFor, "L7 policy gets ZtunnelAccepted with the drop reason", func() (bool, error) {
		cd, ap, err := policyCondition(c, ns, "l7", status.ConditionZtunnelAccepted)
		if err != nil || cd == nil {
			return false, err
		}
		if cd.Status != "True" || cd.Reason != index.ReasonUnsupportedValue || !strings.Contains(cd.Message, "methods") ||
			cd.ObservedGeneration != ap.Generation {
			return false, fmt.Errorf("condition %+v", cd)
		}
		if other, _, _ := policyCondition(c, ns, "l7", "Reconciled"); other == nil {
			return false, fmt.Errorf("the other writer's condition was dropped: %+v", ap.Status.Conditions)
		}
		return true, nil
	})
	kubetest.Eventually(t, waitFor, "targetRef policy gets WaypointAccepted=True", func() (bool, error) {
		cd, _, err := policyCondition(c, ns, "on-bound", status.ConditionWaypointAccepted)
		if err != nil || cd == nil {
			return false, err
		}
		return cd.Status == "True" && cd.Reason == index.ReasonAccepted, fmt.Errorf("condition %+v", cd)
	})
	if cd, _, err := serviceCondition(t, c, ns, "plain", status.ConditionWaypointBound); err != nil || cd != nil {
		t.Errorf("service without binding got %+v (err %v)", cd, err)
	}
	if cd, _, err := serviceCondition(t, c, ns, "bound", "example.com/Other"); err != nil || cd == nil {
		t.Errorf("another manager's service condition was dropped (err %v)", err)
	}

	// Converged: a rebuild with the same content writes nothing.
	_, svc, _ := serviceCondition(t, c, ns, "bound", "")
	_, pol, _ := policyCondition(c, ns, "l7", "")
	for range 3 {
		w.Update(build(t, c, ns))
		time.Sleep(300 * time.Millisecond)
	}
	_, svc2, _ := serviceCondition(t, c, ns, "bound", "")
	_, pol2, _ := policyCondition(c, ns, "l7", "")
	if svc.ResourceVersion != svc2.ResourceVersion || pol.ResourceVersion != pol2.ResourceVersion {
		t.Errorf("unchanged output was written again: service %s→%s, policy %s→%s",
			svc.ResourceVersion, svc2.ResourceVersion, pol.ResourceVersion, pol2.ResourceVersion)
	}

	// Unbinding removes our condition and keeps the other one.
	kubetest.Eventually(t, waitFor, "label removed", func() (bool, error) {
		s, err := c.Kube.CoreV1().Services(ns).Get(ctx, "bound", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		delete(s.Labels, index.LabelUseWaypoint)
		_, err = c.Kube.CoreV1().Services(ns).Update(ctx, s, metav1.UpdateOptions{})
		return err == nil, err
	})
	w.Update(build(t, c, ns))
	kubetest.Eventually(t, waitFor, "WaypointBound removed from the unbound service", func() (bool, error) {
		cd, _, err := serviceCondition(t, c, ns, "bound", status.ConditionWaypointBound)
		if err != nil {
			return false, err
		}
		other, _, _ := serviceCondition(t, c, ns, "bound", "example.com/Other")
		return cd == nil && other != nil, fmt.Errorf("ours %+v, other %+v", cd, other)
	})
	kubetest.Eventually(t, waitFor, "targetRef policy now AncestorNotBound", func() (bool, error) {
		cd, _, err := policyCondition(c, ns, "on-bound", status.ConditionWaypointAccepted)
		if err != nil || cd == nil {
			return false, err
		}
		return cd.Status == "False" && cd.Reason == index.ReasonAncestorNotBound, fmt.Errorf("condition %+v", cd)
	})
}
