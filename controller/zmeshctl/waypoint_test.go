package zmeshctl

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
)

// setProgrammed writes the Programmed condition the controller would.
func setProgrammed(t *testing.T, c *kube.Clients, ns, name string, status metav1.ConditionStatus) {
	t.Helper()
	ctx := context.Background()
	gw, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reason := "Programmed"
	if status != metav1.ConditionTrue {
		reason = "Pending"
	}
	meta.SetStatusCondition(&gw.Status.Conditions, metav1.Condition{
		Type: string(gwv1.GatewayConditionProgrammed), Status: status, Reason: reason,
		Message: "set by the test", ObservedGeneration: gw.Generation,
	})
	if _, err := c.Gateway.GatewayV1().Gateways(ns).UpdateStatus(ctx, gw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("zmeshctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func TestWaypointLifecycle(t *testing.T) {
	c := kubetest.Clients(t)
	kc := kubetest.Kubeconfig(t)
	ns := kubetest.Namespace(t, c, "zmeshctl-wp", nil)
	ctx := context.Background()
	gws := c.Gateway.GatewayV1().Gateways(ns)

	if got, want := mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "apply"), fmt.Sprintf("waypoint %s/waypoint applied\n", ns); got != want {
		t.Errorf("apply printed %q, want %q", got, want)
	}
	gw, err := gws.Get(ctx, "waypoint", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gw.Spec.GatewayClassName != "istio-waypoint" || len(gw.Spec.Listeners) != 1 ||
		gw.Spec.Listeners[0].Name != "mesh" || gw.Spec.Listeners[0].Port != 15008 || gw.Spec.Listeners[0].Protocol != "HBONE" {
		t.Errorf("waypoint spec = %+v", gw.Spec)
	}
	if _, ok := gw.Labels[labelWaypointFor]; ok {
		t.Errorf("label %s set without --for: %v", labelWaypointFor, gw.Labels)
	}

	// Per service account: the name defaults to the account.
	mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "apply", "--service-account", "reviews", "--for", "workload")
	gw, err = gws.Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gw.Annotations[annotationForSA] != "reviews" || gw.Labels[labelWaypointFor] != "workload" {
		t.Errorf("reviews waypoint: labels %v annotations %v", gw.Labels, gw.Annotations)
	}

	// Enrolment labels the namespace.
	out := mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "apply", "--name", "wp2", "--enroll-namespace")
	if !strings.Contains(out, fmt.Sprintf("namespace %s labeled with \"istio.io/use-waypoint: wp2\"", ns)) {
		t.Errorf("apply --enroll-namespace printed %q", out)
	}
	nsObj, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels[labelUseWaypoint] != "wp2" {
		t.Errorf("namespace labels = %v", nsObj.Labels)
	}

	// Applying again updates in place.
	mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "apply", "--for", "all")
	gw, err = gws.Get(ctx, "waypoint", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gw.Labels[labelWaypointFor] != "all" {
		t.Errorf("re-applied labels = %v", gw.Labels)
	}

	// A Gateway of another class is neither overwritten nor deleted.
	other := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "ingress", Namespace: ns},
		Spec: gwv1.GatewaySpec{GatewayClassName: "other",
			Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}},
	}
	if _, err := gws.Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"waypoint", "apply", "--name", "ingress"},
		{"waypoint", "delete", "ingress"},
		{"waypoint", "status", "--name", "ingress"},
	} {
		if _, err := run(t, append([]string{"--kubeconfig", kc, "-n", ns}, args...)...); err == nil || !strings.Contains(err.Error(), "not a waypoint") {
			t.Errorf("%v: error = %v, want 'not a waypoint'", args, err)
		}
	}

	setProgrammed(t, c, ns, "waypoint", metav1.ConditionTrue)
	setProgrammed(t, c, ns, "wp2", metav1.ConditionFalse)
	want := "NAME       REVISION   PROGRAMMED\n" +
		"reviews    default    Unknown\n" +
		"waypoint   default    True\n" +
		"wp2        default    False\n"
	if got := mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "list"); got != want {
		t.Errorf("list printed\n%s\nwant\n%s", got, want)
	}
	all := mustRun(t, "--kubeconfig", kc, "waypoint", "list", "-A")
	if !strings.HasPrefix(all, "NAMESPACE") || !strings.Contains(all, ns) || strings.Contains(all, "ingress") {
		t.Errorf("list -A printed\n%s", all)
	}
	status := mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "status", "--name", "waypoint")
	found := false
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[0] == ns && f[1] == "waypoint" && f[2] == "True" && f[3] == "Programmed" && strings.HasSuffix(line, "set by the test") {
			found = true
		}
	}
	if !strings.HasPrefix(status, "NAMESPACE") || !found {
		t.Errorf("status printed\n%s", status)
	}

	if got, want := mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "delete", "reviews"), fmt.Sprintf("waypoint %s/reviews deleted\n", ns); got != want {
		t.Errorf("delete printed %q, want %q", got, want)
	}
	if _, err := gws.Get(ctx, "reviews", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("reviews after delete: %v", err)
	}
	if _, err := run(t, "--kubeconfig", kc, "-n", ns, "waypoint", "delete", "missing"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("delete missing: %v", err)
	}
	if _, err := run(t, "--kubeconfig", kc, "-n", ns, "waypoint", "delete", "--all", "wp2"); err == nil {
		t.Error("delete with names and --all succeeded")
	}
	out = mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "delete", "--all")
	if !strings.Contains(out, "waypoint "+ns+"/waypoint deleted") || !strings.Contains(out, "waypoint "+ns+"/wp2 deleted") {
		t.Errorf("delete --all printed %q", out)
	}
	if got, want := mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "list"), "No waypoints found in namespace "+ns+".\n"; got != want {
		t.Errorf("list after delete --all printed %q, want %q", got, want)
	}
	if _, err := gws.Get(ctx, "ingress", metav1.GetOptions{}); err != nil {
		t.Errorf("delete --all touched a non-waypoint Gateway: %v", err)
	}
}

func TestWaypointApplyWait(t *testing.T) {
	c := kubetest.Clients(t)
	kc := kubetest.Kubeconfig(t)
	ns := kubetest.Namespace(t, c, "zmeshctl-wait", nil)

	// The controller stand-in marks the waypoint Programmed once it exists.
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			if _, err := c.Gateway.GatewayV1().Gateways(ns).Get(ctx, "waypoint", metav1.GetOptions{}); err == nil {
				time.Sleep(300 * time.Millisecond) // the command is waiting by now
				setProgrammed(t, c, ns, "waypoint", metav1.ConditionTrue)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	start := time.Now()
	out := mustRun(t, "--kubeconfig", kc, "-n", ns, "waypoint", "apply", "--wait", "--timeout", "20s")
	<-done
	if !strings.Contains(out, "waypoint "+ns+"/waypoint applied\n") || !strings.Contains(out, "waypoint "+ns+"/waypoint programmed after ") {
		t.Errorf("apply --wait printed %q", out)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("apply --wait returned after %v, before the waypoint was programmed", d)
	}

	// Nobody programs wp2: the wait times out and says why.
	_, err := run(t, "--kubeconfig", kc, "-n", ns, "waypoint", "apply", "--name", "wp2", "--wait", "--timeout", "500ms")
	if err == nil || !strings.Contains(err.Error(), "waypoint not programmed") || !strings.Contains(err.Error(), "Programmed=Unknown") {
		t.Errorf("apply --wait without a controller: %v", err)
	}
}

// TestNamespaceFromKubeconfig: without -n the context's namespace is used.
func TestNamespaceFromKubeconfig(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "zmeshctl-ctx", nil)
	cfg, err := clientcmd.LoadFromFile(kubetest.Kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Contexts[cfg.CurrentContext].Namespace = ns
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)
	if got, want := mustRun(t, "waypoint", "apply"), "waypoint "+ns+"/waypoint applied\n"; got != want {
		t.Errorf("apply printed %q, want %q", got, want)
	}
	if _, err := c.Gateway.GatewayV1().Gateways(ns).Get(context.Background(), "waypoint", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
}

// writeKubeconfig points a kubeconfig at server.
func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, server)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClusterErrors runs against API servers that lack the Gateway API or
// are not there at all.
func TestClusterErrors(t *testing.T) {
	// An API server without the Gateway API: discovery of its group is 404,
	// as kube-apiserver answers for a group with no CRDs.
	noGW := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/apis/gateway.networking.k8s.io/v1" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
			return
		}
		http.NotFound(w, r)
	}))
	defer noGW.Close()
	// One that serves the group but not Gateways.
	partial := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"gateway.networking.k8s.io/v1",` +
			`"resources":[{"name":"gatewayclasses","namespaced":false,"kind":"GatewayClass","verbs":["get"]}]}`))
	}))
	defer partial.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	for _, tc := range []struct {
		name   string
		server string
		args   []string
		want   string
	}{
		{"apply without Gateway API", noGW.URL, []string{"waypoint", "apply"}, "Gateway API CRDs are not installed"},
		{"list without Gateway API", noGW.URL, []string{"waypoint", "list"}, "Gateway API CRDs are not installed"},
		{"delete without Gateway API", noGW.URL, []string{"waypoint", "delete", "--all"}, "Gateway API CRDs are not installed"},
		{"status without Gateways", partial.URL, []string{"waypoint", "status"}, "Gateway API CRDs are not installed"},
		{"unreachable apply", closedURL, []string{"waypoint", "apply"}, "cannot reach the Kubernetes API server at " + closedURL},
		{"unreachable ztunnel-config", closedURL, []string{"ztunnel-config", "workloads"}, "cannot reach the Kubernetes API server"},
		{"bad --for", closedURL, []string{"waypoint", "apply", "--for", "pods"}, "--for must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--kubeconfig", writeKubeconfig(t, tc.server), "-n", "demo"}, tc.args...)
			_, err := run(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestZtunnelConfigPortForward covers choosing the ztunnel pod and a
// port-forward that cannot work (the test cluster has no kubelets).
func TestZtunnelConfigPortForward(t *testing.T) {
	c := kubetest.Clients(t)
	kc := kubetest.Kubeconfig(t)
	ns := kubetest.Namespace(t, c, "zmeshctl-zt", nil)
	base := []string{"--kubeconfig", kc, "ztunnel-config", "workloads", "--ztunnel-namespace", ns, "--timeout", "20s"}

	if _, err := run(t, base...); err == nil || !strings.Contains(err.Error(), "no ztunnel pod (label app=ztunnel) in namespace "+ns) {
		t.Errorf("no ztunnel: %v", err)
	}
	node := "zmeshctl-missing-node-" + ns
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-abc", Namespace: ns, Labels: map[string]string{"app": "ztunnel"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "ztunnel", Image: "zmesh/ztunnel"}}},
	}
	if _, err := c.Kube.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = c.Kube.CoreV1().Pods(ns).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	if _, err := run(t, append(base, "--node", "elsewhere")...); err == nil || !strings.Contains(err.Error(), "on node elsewhere") {
		t.Errorf("--node with no ztunnel: %v", err)
	}
	for _, args := range [][]string{base, append(base, "--node", node), append(base, "ztunnel-abc."+ns)} {
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), "cannot port-forward to ztunnel "+ns+"/ztunnel-abc port 15000") {
			t.Errorf("%v: error = %v, want a port-forward failure", args[len(args)-2:], err)
		}
	}
	if _, err := run(t, append(base, "nothere."+ns)...); err == nil || !strings.Contains(err.Error(), "pod "+ns+"/nothere not found") {
		t.Errorf("missing pod: %v", err)
	}
}
