package waypoints_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/waypoints"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
)

const waitFor = 30 * time.Second

// startDeployer runs a Deployer limited to ns until the returned stop is
// called (or the test ends); stop waits for Run to return.
func startDeployer(t *testing.T, c *kube.Clients, ns string) (stop func()) {
	t.Helper()
	d, err := waypoints.New(waypoints.Options{
		Clients: c, Image: "zmesh/waypoint:test", Namespace: ns,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		begin := time.Now()
		defer func() { t.Logf("deployer stopped in %v", time.Since(begin).Round(time.Millisecond)) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func createGateway(t *testing.T, c *kube.Clients, ns, name string, listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	t.Helper()
	if listeners == nil {
		listeners = []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}
	}
	gw, err := c.Gateway.GatewayV1().Gateways(ns).Create(context.Background(), &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: waypoints.GatewayClassName, Listeners: listeners},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create gateway: %v", err)
	}
	return gw
}

func condition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

func ownedBy(m metav1.Object, gw *gatewayv1.Gateway) error {
	ref := metav1.GetControllerOf(m)
	if ref == nil || ref.UID != gw.UID || ref.Kind != "Gateway" || ref.APIVersion != "gateway.networking.k8s.io/v1" {
		return fmt.Errorf("%s: owner %+v, want Gateway %s", m.GetName(), ref, gw.UID)
	}
	if m.GetLabels()[waypoints.LabelGatewayName] != gw.Name || m.GetLabels()[waypoints.LabelManaged] != waypoints.ManagedValue {
		return fmt.Errorf("%s: labels %v", m.GetName(), m.GetLabels())
	}
	return nil
}

func TestDeployerKube(t *testing.T) {
	c := kubetest.Clients(t)
	ctx := context.Background()
	ns := kubetest.Namespace(t, c, "wp-deploy", nil)
	start := time.Now()
	step := func(what string) { t.Logf("%-45s %v", what, time.Since(start).Round(time.Millisecond)) }

	// A first Run, stopped, then a second: Run must be restartable.
	stop := startDeployer(t, c, ns)
	gw := createGateway(t, c, ns, "waypoint")
	kubetest.Eventually(t, waitFor, "service account deployed", func() (bool, error) {
		sa, err := c.Kube.CoreV1().ServiceAccounts(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return true, ownedBy(sa, gw)
	})
	step("service account deployed")
	stop()
	startDeployer(t, c, ns)

	gc, err := c.Gateway.GatewayV1().GatewayClasses().Get(ctx, waypoints.GatewayClassName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gc.Spec.ControllerName != waypoints.ControllerName {
		t.Errorf("gateway class controller %q", gc.Spec.ControllerName)
	}
	if a := condition(gc.Status.Conditions, "Accepted"); a == nil || a.Status != metav1.ConditionTrue {
		t.Errorf("gateway class Accepted: %+v", a)
	}

	var svc *corev1.Service
	kubetest.Eventually(t, waitFor, "service deployed", func() (bool, error) {
		var err error
		svc, err = c.Kube.CoreV1().Services(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return svc.Spec.ClusterIP != "", ownedBy(svc, gw)
	})
	step("service deployed")
	if svc.Spec.Selector[waypoints.LabelGatewayName] != "waypoint" {
		t.Errorf("service selector %v", svc.Spec.Selector)
	}
	var ports []string
	for _, p := range svc.Spec.Ports {
		ports = append(ports, fmt.Sprintf("%s:%d:%s", p.Name, p.Port, *p.AppProtocol))
	}
	if want := []string{"status-port:15021:tcp", "mesh:15008:hbone"}; !slices.Equal(ports, want) {
		t.Errorf("service ports %v, want %v", ports, want)
	}
	dep, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, "waypoint", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ownedBy(dep, gw); err != nil {
		t.Error(err)
	}
	if got := dep.Spec.Template.Spec.Containers[0].Image; got != "zmesh/waypoint:test" {
		t.Errorf("image %q", got)
	}

	kubetest.Eventually(t, waitFor, "gateway programmed with the service IP", func() (bool, error) {
		g, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		a, p := condition(g.Status.Conditions, "Accepted"), condition(g.Status.Conditions, "Programmed")
		if a == nil || a.Status != metav1.ConditionTrue || p == nil || p.Status != metav1.ConditionTrue {
			return false, fmt.Errorf("conditions %+v", g.Status.Conditions)
		}
		if a.ObservedGeneration != g.Generation {
			return false, fmt.Errorf("observedGeneration %d, generation %d", a.ObservedGeneration, g.Generation)
		}
		if len(g.Status.Addresses) != 1 || g.Status.Addresses[0].Value != svc.Spec.ClusterIP ||
			g.Status.Addresses[0].Type == nil || *g.Status.Addresses[0].Type != gatewayv1.IPAddressType {
			return false, fmt.Errorf("addresses %+v, want %s", g.Status.Addresses, svc.Spec.ClusterIP)
		}
		return true, nil
	})
	step("gateway programmed with the service IP")

	// Drift: someone else changes the image and deletes the Service.
	kubetest.Eventually(t, waitFor, "deployment edited by someone else", func() (bool, error) {
		d, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		d.Spec.Template.Spec.Containers[0].Image = "evil:latest"
		_, err = c.Kube.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{FieldManager: "someone-else"})
		return err == nil, err
	})
	step("deployment edited by someone else")
	if err := c.Kube.CoreV1().Services(ns).Delete(ctx, "waypoint", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, waitFor, "deployment image repaired", func() (bool, error) {
		d, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		img := d.Spec.Template.Spec.Containers[0].Image
		return img == "zmesh/waypoint:test", fmt.Errorf("image %q", img)
	})
	step("deployment image repaired")
	kubetest.Eventually(t, waitFor, "service recreated and address updated", func() (bool, error) {
		s, err := c.Kube.CoreV1().Services(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		g, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if len(g.Status.Addresses) != 1 || g.Status.Addresses[0].Value != s.Spec.ClusterIP {
			return false, fmt.Errorf("addresses %+v, service IP %s", g.Status.Addresses, s.Spec.ClusterIP)
		}
		return true, nil
	})
	step("service recreated and address updated")

	// A Gateway with a wrong listener: Accepted=False, nothing deployed.
	createGateway(t, c, ns, "bad", gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType})
	kubetest.Eventually(t, waitFor, "bad gateway rejected", func() (bool, error) {
		g, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, "bad", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		a := condition(g.Status.Conditions, "Accepted")
		if a == nil || a.Status != metav1.ConditionFalse || a.Reason != string(gatewayv1.GatewayReasonListenersNotValid) {
			return false, fmt.Errorf("Accepted %+v", a)
		}
		return len(g.Status.Addresses) == 0, fmt.Errorf("addresses %+v", g.Status.Addresses)
	})
	step("bad gateway rejected")
	for _, get := range []func() error{
		func() error {
			_, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, "bad", metav1.GetOptions{})
			return err
		},
		func() error { _, err := c.Kube.CoreV1().Services(ns).Get(ctx, "bad", metav1.GetOptions{}); return err },
		func() error {
			_, err := c.Kube.CoreV1().ServiceAccounts(ns).Get(ctx, "bad", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); !apierrors.IsNotFound(err) {
			t.Errorf("object deployed for a rejected Gateway (err %v)", err)
		}
	}

	// Deleting the Gateway: the garbage collector removes what it owned.
	if err := c.Gateway.GatewayV1().Gateways(ns).Delete(ctx, "waypoint", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 60*time.Second, "owned objects garbage-collected", func() (bool, error) {
		_, e1 := c.Kube.AppsV1().Deployments(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		_, e2 := c.Kube.CoreV1().Services(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		_, e3 := c.Kube.CoreV1().ServiceAccounts(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2) && apierrors.IsNotFound(e3),
			fmt.Errorf("deployment %w, service %w, service account %w", e1, e2, e3)
	})
	step("owned objects garbage-collected")
}

// A valid waypoint edited into an invalid one loses what was deployed and
// its address.
//
// Each change is one status write: events of the deployed objects queue
// the Gateway again before the deployer's own write reaches its cache, and
// that stale copy must not be written again.
func TestDeployerInvalidatedGatewayKube(t *testing.T) {
	c := kubetest.Clients(t)
	ctx := context.Background()
	ns := kubetest.Namespace(t, c, "wp-invalid", nil)
	var writes atomic.Int32
	startDeployer(t, countingClients(t, c, "/namespaces/"+ns+"/gateways/wp/status", &writes), ns)
	createGateway(t, c, ns, "wp")
	kubetest.Eventually(t, waitFor, "gateway programmed", func() (bool, error) {
		g, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, "wp", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(g.Status.Addresses) == 1, fmt.Errorf("addresses %+v", g.Status.Addresses)
	})
	ownedGone := func() (bool, error) {
		_, e1 := c.Kube.AppsV1().Deployments(ns).Get(ctx, "wp", metav1.GetOptions{})
		_, e2 := c.Kube.CoreV1().Services(ns).Get(ctx, "wp", metav1.GetOptions{})
		_, e3 := c.Kube.CoreV1().ServiceAccounts(ns).Get(ctx, "wp", metav1.GetOptions{})
		return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2) && apierrors.IsNotFound(e3),
			fmt.Errorf("deployment %w, service %w, service account %w", e1, e2, e3)
	}
	// The deployed objects' events have reached the deployer once their
	// owned fields are in place; give its queue a moment to drain.
	settle := func() { time.Sleep(500 * time.Millisecond) }
	settle()
	if n := writes.Load(); n != 1 {
		t.Errorf("%d status writes for the new gateway, want 1", n)
	}
	// The deployer may still be writing the Gateway's status: edit the
	// latest version, as any client racing a controller must.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		g, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, "wp", metav1.GetOptions{})
		if err != nil {
			return err
		}
		g.Spec.Listeners[0].Port = 15009
		_, err = c.Gateway.GatewayV1().Gateways(ns).Update(ctx, g, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, waitFor, "invalidated gateway cleaned up", func() (bool, error) {
		g, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, "wp", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		a := condition(g.Status.Conditions, "Accepted")
		if a == nil || a.Status != metav1.ConditionFalse || len(g.Status.Addresses) != 0 {
			return false, fmt.Errorf("Accepted %+v, addresses %+v", a, g.Status.Addresses)
		}
		return ownedGone()
	})
	settle()
	if n := writes.Load(); n != 2 {
		t.Errorf("%d status writes in all, want 2: one when deployed, one when invalidated", n)
	}
}

// countingClients returns clients like c whose PATCH requests to a path
// ending in suffix are counted in n.
func countingClients(t *testing.T, c *kube.Clients, suffix string, n *atomic.Int32) *kube.Clients {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(req)
			if err == nil && req.Method == http.MethodPatch && strings.HasSuffix(req.URL.Path, suffix) {
				n.Add(1)
			}
			return resp, err
		})
	})
	cc, err := kube.NewClients(cfg, "zmesh-test-counting")
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
