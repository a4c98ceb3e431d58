package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zmesh/zmesh/controller/zmeshctl"
	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
	"github.com/zmesh/zmesh/pkg/mtls"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
	"github.com/zmesh/zmesh/tests/e2e/kubemesh"
	"github.com/zmesh/zmesh/ztunnel/nodeagent"
	agentkube "github.com/zmesh/zmesh/ztunnel/nodeagent/kubesource"
)

// kubeMesh is a kubemesh.Mesh bound to a test, with the test's namespace.
type kubeMesh struct {
	*kubemesh.Mesh
	t  *testing.T
	c  *kube.Clients
	ns string
}

var (
	cniOnce   sync.Once
	cniPath   string
	cniErr    error
	cniOutput []byte
)

// cniPlugin builds zmesh-cni once per test binary.
func cniPlugin(t *testing.T) string {
	t.Helper()
	cniOnce.Do(func() {
		dir, err := os.MkdirTemp("", "zmesh-e2e-cni-")
		if err != nil {
			cniErr = err
			return
		}
		cniPath = filepath.Join(dir, "zmesh-cni")
		cniOutput, cniErr = exec.Command("go", "build", "-o", cniPath, "github.com/zmesh/zmesh/ztunnel/cmd/zmesh-cni").CombinedOutput()
	})
	if cniErr != nil {
		t.Fatalf("build zmesh-cni: %v\n%s", cniErr, cniOutput)
	}
	return cniPath
}

// startKubeMesh starts a mesh on the test API server with one test
// namespace (labelled nsLabels).
func startKubeMesh(t *testing.T, prefix string, nsLabels map[string]string) *kubeMesh {
	t.Helper()
	return startKubeMeshSpec(t, prefix, nsLabels, 1)
}

// startKubeMeshSpec is startKubeMesh with several controller replicas.
func startKubeMeshSpec(t *testing.T, prefix string, nsLabels map[string]string, controllers int) *kubeMesh {
	t.Helper()
	cluster.SkipUnlessRoot(t)
	c := kubetest.Clients(t)
	meshID := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	labels := map[string]string{"zmesh-e2e-mesh": meshID}
	for k, v := range nsLabels {
		labels[k] = v
	}
	ns := kubetest.Namespace(t, c, prefix, labels)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var m *kubemesh.Mesh
	m, err = kubemesh.Start(ctx, kubemesh.Spec{
		Clients: c, Prefix: prefix, Namespaces: []string{ns}, MeshLabel: "zmesh-e2e-mesh=" + meshID,
		CNIPlugin: cniPlugin(t), Logger: logger,
		Controllers: controllers,
		Runtime: func(_ context.Context, obj *corev1.Pod, p *cluster.Pod) (func(), error) {
			return runEcho(m.Cluster, self, p)
		},
		StartNodeAgent: startKubeNodeAgent,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			m.Cluster.DumpLogs(&testWriter{t})
		}
		_ = m.Close()
	})
	return &kubeMesh{Mesh: m, t: t, c: c, ns: ns}
}

// runEcho is the container runtime: the echo app in the pod's namespace.
func runEcho(c *cluster.Cluster, self string, p *cluster.Pod) (func(), error) {
	name := fmt.Sprintf("echo-%s-%s-%s", p.Namespace, p.Name, p.UID[:8])
	if _, err := c.StartProcess(cluster.ProcessSpec{
		Name: name, Netns: p.Netns, Path: self, Env: echoEnvVars(),
		Args: []string{"serve", "--pod", p.Name, "--namespace", p.Namespace, "--http", "8080", "--tcp", "9000"},
	}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Netns.WaitDial(ctx, p.IP.String()+":8080"); err != nil {
		_ = c.StopProcess(name)
		return nil, err
	}
	return func() { _ = c.StopProcess(name) }, nil
}

// startKubeNodeAgent runs a node agent daemon in Kubernetes mode.
func startKubeNodeAgent(ctx context.Context, a kubemesh.NodeAgentArgs) (func(), error) {
	d, err := nodeagent.NewDaemon(nodeagent.DaemonConfig{
		NodeName:  a.NodeName,
		Source:    agentkube.ForDaemon(agentkube.Config{Client: a.Clients.Kube, NodeName: a.NodeName, Logger: a.Logger}),
		StateDir:  a.StateDir,
		ZDSSocket: a.ZDSSocket, CNISocket: a.CNISocket, ReadyAddr: "127.0.0.1:0",
		Logger: a.Logger,
	})
	if err != nil {
		return nil, err
	}
	if err := d.Start(ctx); err != nil {
		return nil, err
	}
	return d.Stop, nil
}

// createPod creates an app pod (echo on 8080) on a node and waits until it
// runs.
func (m *kubeMesh) createPod(name, sa, node string, labels map[string]string) *corev1.Pod {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := m.c.Kube.CoreV1().Pods(m.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{
			Name: "app", Image: cluster.PodImage,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "tcp", ContainerPort: 9000}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		m.t.Fatal(err)
	}
	return m.waitPod(name, func(p *corev1.Pod) bool { return p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning })
}

// waitPod waits until cond holds for the named pod in the test namespace.
func (m *kubeMesh) waitPod(name string, cond func(*corev1.Pod) bool) *corev1.Pod {
	m.t.Helper()
	var got *corev1.Pod
	kubetest.Eventually(m.t, 30*time.Second, "pod "+name, func() (bool, error) {
		p, err := m.c.Kube.CoreV1().Pods(m.ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = p
		return cond(p), nil
	})
	return got
}

func (m *kubeMesh) createService(name string, selector map[string]string) *corev1.Service {
	m.t.Helper()
	s, err := m.c.Kube.CoreV1().Services(m.ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		m.t.Fatal(err)
	}
	return s
}

// labelNamespace sets (value != "") or removes a label on the test
// namespace.
func (m *kubeMesh) labelNamespace(key, value string) {
	m.t.Helper()
	v := "null"
	if value != "" {
		v = `"` + value + `"`
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)
	if _, err := m.c.Kube.CoreV1().Namespaces().Patch(context.Background(), m.ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		m.t.Fatal(err)
	}
}

func redirected(p *corev1.Pod) bool {
	return p.Annotations["ambient.istio.io/redirection"] == "enabled"
}

// get sends one HTTP request from the running pod src to url.
func (m *kubeMesh) get(src, url string) (*echo.Response, error) {
	p := m.Kubelet.Pod(m.ns, src)
	if p == nil {
		return nil, fmt.Errorf("pod %s is not running", src)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return echo.Get(ctx, p.Netns.HTTPClient(5*time.Second), url, nil)
}

// linkCarriesOnlyHBONE sends a request from src to url while capturing the
// node link and reports whether the link carried the request only as
// HBONE (and carried it at all).
func (m *kubeMesh) linkCarriesOnlyHBONE(src, url, marker string) (hbone bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	capture, err := m.Cluster.CaptureLink(ctx)
	if err != nil {
		return false, err
	}
	resp, getErr := m.get(src, url+marker)
	segs, err := capture.Stop()
	if err != nil {
		return false, err
	}
	if getErr != nil {
		return false, getErr
	}
	if resp.Status != 200 {
		return false, fmt.Errorf("status %d", resp.Status)
	}
	if len(segs) == 0 {
		return false, fmt.Errorf("nothing crossed the node link")
	}
	if cluster.Contains(segs, []byte(marker)) {
		return false, nil
	}
	for _, f := range cluster.Flows(segs) {
		if f.Src.Port() != 15008 && f.Dst.Port() != 15008 {
			return false, nil
		}
	}
	return true, nil
}

// TestKubeNamespaceEnrolment: labelling a namespace enrols its running pods
// live (the node agent annotates them and traffic becomes HBONE);
// removing the label unenrols them live (plaintext again).
func TestKubeNamespaceEnrolment(t *testing.T) {
	m := startKubeMesh(t, "zkenrol", nil)
	nodes := m.Cluster.Nodes()
	m.createPod("sleep", "sleep", m.NodeName(nodes[0]), map[string]string{"app": "sleep"})
	server := m.createPod("httpbin", "httpbin", m.NodeName(nodes[1]), map[string]string{"app": "httpbin"})
	svc := m.createService("httpbin", map[string]string{"app": "httpbin"})
	url := "http://" + server.Status.PodIP + ":8080/"

	hbone, err := m.linkCarriesOnlyHBONE("sleep", url, "before-label")
	if err != nil || hbone {
		t.Fatalf("before the label: hbone=%v err=%v, want plaintext", hbone, err)
	}

	m.labelNamespace("istio.io/dataplane-mode", "ambient")
	for _, p := range []string{"sleep", "httpbin"} {
		m.waitPod(p, redirected)
	}
	kubetest.Eventually(t, 20*time.Second, "traffic becomes HBONE", func() (bool, error) {
		return m.linkCarriesOnlyHBONE("sleep", url, "ambient-"+time.Now().Format("150405.000"))
	})
	// There is no kube-proxy here: the service VIP works only because
	// ztunnel resolves it to httpbin's endpoint.
	kubetest.Eventually(t, 20*time.Second, "service VIP over HBONE", func() (bool, error) {
		return m.linkCarriesOnlyHBONE("sleep", "http://"+svc.Spec.ClusterIP+"/", "vip-"+time.Now().Format("150405.000"))
	})

	m.labelNamespace("istio.io/dataplane-mode", "")
	for _, p := range []string{"sleep", "httpbin"} {
		m.waitPod(p, func(p *corev1.Pod) bool { return !redirected(p) })
	}
	kubetest.Eventually(t, 20*time.Second, "traffic is plaintext again", func() (bool, error) {
		hbone, err := m.linkCarriesOnlyHBONE("sleep", url, "after-"+time.Now().Format("150405.000"))
		return err == nil && !hbone, err
	})
}

// caClient returns a CA client of the mesh's first controller that
// authenticates with the token in tokenFile.
func (m *kubeMesh) caClient(tokenFile string) *caclient.Client {
	m.t.Helper()
	roots, err := mtls.ParseCertificatesPEM(m.RootPEM())
	if err != nil {
		m.t.Fatal(err)
	}
	creds, err := caclient.TransportCredentials(roots, "localhost")
	if err != nil {
		m.t.Fatal(err)
	}
	conn, err := grpc.NewClient(m.Controllers[0].GRPCAddr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { _ = conn.Close() })
	c, err := caclient.New(conn, caclient.Options{Roots: roots, TokenFile: tokenFile, TTL: time.Hour})
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

func (m *kubeMesh) identity(sa string) spiffeid.ID {
	return spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("cluster.local"), "/ns/"+m.ns+"/sa/"+sa)
}

// TestKubeCARefusesNodeImpersonation: a node's ztunnel gets certificates for
// service accounts with a pod on its node, not for one whose pods all run
// elsewhere; and a token bound to a deleted pod is refused outright.
func TestKubeCARefusesNodeImpersonation(t *testing.T) {
	m := startKubeMesh(t, "zkca", nil)
	nodes := m.Cluster.Nodes()
	m.createPod("local", "local-sa", m.NodeName(nodes[0]), nil)
	m.createPod("remote", "remote-sa", m.NodeName(nodes[1]), nil)
	token := m.ZtunnelTokenFile(nodes[0])
	ca := m.caClient(token)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	kubetest.Eventually(t, 10*time.Second, "certificate for a service account on the node", func() (bool, error) {
		_, err := ca.Fetch(ctx, caclient.Request{Identity: m.identity("local-sa"), Impersonate: true})
		return err == nil, err
	})
	if _, err := ca.Fetch(ctx, caclient.Request{Identity: m.identity("remote-sa"), Impersonate: true}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("certificate for a service account with no pod on the node: err %v, want Unauthenticated", err)
	}
	if _, err := ca.Fetch(ctx, caclient.Request{Identity: m.identity("nobody"), Impersonate: true}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("certificate for a service account with no pod at all: err %v, want Unauthenticated", err)
	}

	// The ztunnel pod the token is bound to goes away.
	zero := int64(0)
	if err := m.c.Kube.CoreV1().Pods(m.SystemNS).Delete(ctx, "ztunnel-"+nodes[0].Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, "token of a deleted pod refused", func() (bool, error) {
		_, err := ca.Fetch(ctx, caclient.Request{Identity: m.identity("local-sa"), Impersonate: true})
		return status.Code(err) == codes.Unauthenticated, err
	})
}

// TestKubePodIPReuse: when a pod's IP is reused by a new pod of another
// service account, traffic to that IP reaches only the new pod, which the
// client's ztunnel verifies as the new identity; the old identity is never
// presented for it.
func TestKubePodIPReuse(t *testing.T) {
	m := startKubeMesh(t, "zkreuse", map[string]string{"istio.io/dataplane-mode": "ambient"})
	nodes := m.Cluster.Nodes()
	m.waitPod(m.createPod("sleep", "sleep", m.NodeName(nodes[0]), nil).Name, redirected)
	old := m.waitPod(m.createPod("old", "old-sa", m.NodeName(nodes[1]), nil).Name, redirected)
	ip := old.Status.PodIP
	url := "http://" + ip + ":8080/"
	kubetest.Eventually(t, 20*time.Second, "sleep reaches old", func() (bool, error) {
		resp, err := m.get("sleep", url)
		return err == nil && resp.Status == 200 && resp.Report != nil && resp.Report.Pod == "old", err
	})

	// Delete old; start new on the same node with the same address.
	zero := int64(0)
	if err := m.c.Kube.CoreV1().Pods(m.ns).Delete(context.Background(), "old", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 20*time.Second, "old's sandbox removed", func() (bool, error) {
		return m.Kubelet.Pod(m.ns, "old") == nil, nil
	})
	m.Kubelet.ReserveIP(m.ns, "new", ip)
	m.waitPod(m.createPod("new", "new-sa", m.NodeName(nodes[1]), nil).Name, redirected)
	if got := m.Kubelet.Pod(m.ns, "new").IP.String(); got != ip {
		t.Fatalf("new pod got %s, want the reused %s", got, ip)
	}

	// Every answer from the reused IP comes from the new pod, and the
	// client's ztunnel only ever verified the new identity for it. Until
	// the client's ztunnel learns of the new pod, the IP is outside the
	// mesh to it and the request passes through in plaintext (the new
	// pod is PERMISSIVE), so the wait is for a connection to the new
	// identity.
	newID, oldID := m.identity("new-sa").String(), m.identity("old-sa").String()
	var metrics string
	kubetest.Eventually(t, 20*time.Second, "sleep reaches new over mTLS", func() (bool, error) {
		resp, err := m.get("sleep", url)
		if err == nil && resp.Report != nil && resp.Report.Pod != "new" {
			t.Fatalf("traffic for %s answered by %q", ip, resp.Report.Pod)
		}
		if err != nil || resp.Status != 200 {
			return false, err
		}
		metrics = m.ztunnelMetrics(nodes[0])
		return strings.Contains(metrics, `destination_principal="`+newID+`"`), nil
	})
	for _, line := range strings.Split(metrics, "\n") {
		if strings.Contains(line, `destination_workload="new"`) && strings.Contains(line, oldID) {
			t.Fatalf("the new pod was reached as the old identity: %s", line)
		}
	}
	// The old identity is not issued for the new pod's node any more.
	ca := m.caClient(m.ZtunnelTokenFile(nodes[1]))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kubetest.Eventually(t, 10*time.Second, "old identity no longer issued", func() (bool, error) {
		_, err := ca.Fetch(ctx, caclient.Request{Identity: m.identity("old-sa"), Impersonate: true})
		return status.Code(err) == codes.Unauthenticated, err
	})
}

// ztunnelMetrics returns node's ztunnel's Prometheus text.
func (m *kubeMesh) ztunnelMetrics(n *cluster.Node) string {
	m.t.Helper()
	resp, err := http.Get("http://" + m.Ztunnels[m.NodeName(n)].MetricsAddr().String() + "/metrics")
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		m.t.Fatal(err)
	}
	return string(b)
}

// xdsObserver is an xDS client like a ztunnel's that records every
// Address resource it receives.
type xdsObserver struct {
	mu       sync.Mutex
	received []string // names upserted, in order
	removed  []string
	latest   map[string]*workloadapi.Address
	client   *xds.Client
}

// workload returns the latest Workload received under uid.
func (o *xdsObserver) workload(uid string) *workloadapi.Workload {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest[uid].GetWorkload()
}

func (o *xdsObserver) take() (upserts, removals []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	upserts, removals = o.received, o.removed
	o.received, o.removed = nil, nil
	return upserts, removals
}

// observeXDS connects an observer to controller replica with node's
// ztunnel token.
func (m *kubeMesh) observeXDS(replica int, n *cluster.Node) *xdsObserver {
	m.t.Helper()
	roots, err := mtls.ParseCertificatesPEM(m.RootPEM())
	if err != nil {
		m.t.Fatal(err)
	}
	creds, err := caclient.TransportCredentials(roots, "localhost")
	if err != nil {
		m.t.Fatal(err)
	}
	o := &xdsObserver{latest: map[string]*workloadapi.Address{}}
	tokenFile := m.ZtunnelTokenFile(n)
	o.client, err = xds.New(xds.Config{
		Address:     m.Controllers[replica].GRPCAddr().String(),
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(creds)},
		Node:        xds.Node{Kind: "ztunnel", IP: n.IP.String(), PodName: "observer", Namespace: m.SystemNS, NodeName: m.NodeName(n)},
		Token: func(context.Context) (string, error) {
			b, err := os.ReadFile(tokenFile)
			return strings.TrimSpace(string(b)), err
		},
		Types: []xds.TypeConfig{{
			TypeURL: workloadapi.AddressTypeURL,
			New:     func() proto.Message { return &workloadapi.Address{} },
			Handler: xds.HandlerFunc(func(d xds.Delta) []xds.Rejection {
				o.mu.Lock()
				defer o.mu.Unlock()
				for _, u := range d.Upserts {
					o.received = append(o.received, u.Name)
					o.latest[u.Name] = u.Message.(*workloadapi.Address)
				}
				for _, r := range d.Removals {
					delete(o.latest, r)
				}
				o.removed = append(o.removed, d.Removals...)
				return nil
			}),
		}},
		Backoff: xds.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
	})
	if err != nil {
		m.t.Fatal(err)
	}
	if err := o.client.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(o.client.Stop)
	select {
	case <-o.client.Synced(workloadapi.AddressTypeURL):
	case <-time.After(20 * time.Second):
		m.t.Fatal("observer never synced")
	}
	return o
}

// TestKubeControllerRestartAndLeaderChange: with two controller replicas,
// stopping the leader hands the writers to the other; ztunnels keep serving
// while their controller is gone; a client that reconnects to a restarted
// controller receives only what changed meanwhile.
func TestKubeControllerRestartAndLeaderChange(t *testing.T) {
	m := startKubeMeshSpec(t, "zkrestart", map[string]string{"istio.io/dataplane-mode": "ambient"}, 2)
	nodes := m.Cluster.Nodes()
	m.waitPod(m.createPod("sleep", "sleep", m.NodeName(nodes[0]), nil).Name, redirected)
	server := m.waitPod(m.createPod("httpbin", "httpbin", m.NodeName(nodes[1]), nil).Name, redirected)
	url := "http://" + server.Status.PodIP + ":8080/"
	kubetest.Eventually(t, 20*time.Second, "sleep reaches httpbin over HBONE", func() (bool, error) {
		return m.linkCarriesOnlyHBONE("sleep", url, "warm-"+time.Now().Format("150405.000"))
	})
	obs := m.observeXDS(0, nodes[0])
	before, _ := obs.take()
	if len(before) == 0 {
		t.Fatal("observer received no resources")
	}

	// Leader change: stop whichever replica leads (controller 0 serves the
	// ztunnels and the observer in any case: stop it too).
	leader := -1
	kubetest.Eventually(t, 10*time.Second, "a leader", func() (bool, error) {
		for i, c := range m.Controllers {
			if c.IsLeader() {
				leader = i
				return true, nil
			}
		}
		return false, nil
	})
	other := 1 - leader
	m.StopController(leader)
	kubetest.Eventually(t, 15*time.Second, "the other replica takes the lease", func() (bool, error) {
		return m.Controllers[other].IsLeader(), nil
	})
	if leader != 0 {
		m.StopController(0)
	}

	// Controller 0 is down: traffic still flows, and a change happens.
	hbone, err := m.linkCarriesOnlyHBONE("sleep", url, "controller-down")
	if err != nil || !hbone {
		t.Fatalf("with the controller down: hbone=%v err=%v", hbone, err)
	}
	m.createPod("late", "late", m.NodeName(nodes[1]), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.RestartController(ctx, 0); err != nil {
		t.Fatal(err)
	}
	lateUID := "Kubernetes//Pod/" + m.ns + "/late"
	var got []string
	kubetest.Eventually(t, 20*time.Second, "observer receives the change", func() (bool, error) {
		ups, _ := obs.take()
		got = append(got, ups...)
		return contains(got, lateUID), nil
	})
	time.Sleep(500 * time.Millisecond) // anything else the reconnect brings
	ups, _ := obs.take()
	got = append(got, ups...)
	// Only the new pod and what it changed (its annotation flips its own
	// workload to HBONE) — never the whole set again.
	for _, name := range got {
		if name != lateUID {
			t.Errorf("after the reconnect the observer received %s, which did not change", name)
		}
	}
	if len(got) >= len(before) {
		t.Errorf("after the reconnect the observer received %d resources, as many as the initial %d", len(got), len(before))
	}
	hbone, err = m.linkCarriesOnlyHBONE("sleep", url, "after-restart")
	if err != nil || !hbone {
		t.Fatalf("after the restart: hbone=%v err=%v", hbone, err)
	}
}

// zmeshctl runs the CLI against the test API server.
func (m *kubeMesh) zmeshctl(args ...string) string {
	m.t.Helper()
	var out, errOut strings.Builder
	cmd := zmeshctl.NewCommand(&out, &errOut)
	cmd.SetArgs(append([]string{"--kubeconfig", kubetest.Kubeconfig(m.t)}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cmd.ExecuteContext(ctx); err != nil {
		m.t.Fatalf("zmeshctl %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// TestKubeWaypointForServiceAccount: `zmeshctl waypoint apply
// --service-account SA` creates the Gateway; the controller deploys it
// (ServiceAccount, Deployment, Service); the kubelet runs the waypoint pod;
// the Gateway gets an address; then the SA's workloads carry the waypoint
// in xDS and other service accounts' workloads do not.
func TestKubeWaypointForServiceAccount(t *testing.T) {
	m := startKubeMesh(t, "zkwaypoint", map[string]string{"istio.io/dataplane-mode": "ambient"})
	nodes := m.Cluster.Nodes()
	m.createPod("reviews", "reviews", m.NodeName(nodes[0]), nil)
	m.createPod("ratings", "ratings", m.NodeName(nodes[1]), nil)
	obs := m.observeXDS(0, nodes[0])

	out := m.zmeshctl("waypoint", "apply", "-n", m.ns, "--service-account", "reviews", "--wait")
	t.Logf("zmeshctl: %s", out)
	ctx := context.Background()
	gw, err := m.c.Gateway.GatewayV1().Gateways(m.ns).Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gw.Annotations["istio.io/for-service-account"] != "reviews" || gw.Spec.GatewayClassName != "istio-waypoint" {
		t.Fatalf("gateway: %+v", gw.ObjectMeta)
	}
	if len(gw.Status.Addresses) == 0 {
		t.Fatalf("gateway has no address after --wait: %+v", gw.Status)
	}
	for _, get := range []func() error{
		func() error {
			_, err := m.c.Kube.CoreV1().ServiceAccounts(m.ns).Get(ctx, "reviews", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := m.c.Kube.AppsV1().Deployments(m.ns).Get(ctx, "reviews", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := m.c.Kube.CoreV1().Services(m.ns).Get(ctx, "reviews", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); err != nil {
			t.Fatalf("waypoint resources: %v", err)
		}
	}
	// kube-controller-manager turns the Deployment into a pod; the kubelet
	// schedules and runs it.
	kubetest.Eventually(t, 30*time.Second, "waypoint pod running", func() (bool, error) {
		pods, err := m.c.Kube.CoreV1().Pods(m.ns).List(ctx, metav1.ListOptions{LabelSelector: "gateway.networking.k8s.io/gateway-name=reviews"})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		p := pods.Items[0]
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", nil
	})
	uid := func(pod string) string { return "Kubernetes//Pod/" + m.ns + "/" + pod }
	kubetest.Eventually(t, 20*time.Second, "reviews carries the waypoint", func() (bool, error) {
		return obs.workload(uid("reviews")).GetWaypoint() != nil, nil
	})
	wp := obs.workload(uid("reviews")).GetWaypoint()
	if addr := wp.GetAddress().GetAddress(); len(addr) == 0 && wp.GetHostname() == nil {
		t.Fatalf("waypoint reference without an address: %v", wp)
	}
	if w := obs.workload(uid("ratings")); w == nil || w.GetWaypoint() != nil {
		t.Fatalf("ratings (another service account): %v", w)
	}
	list := m.zmeshctl("waypoint", "list", "-n", m.ns)
	if !strings.Contains(list, "reviews") {
		t.Fatalf("waypoint list:\n%s", list)
	}
}
