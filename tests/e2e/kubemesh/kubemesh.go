// Package kubemesh brings up zmesh against a real API server: a
// network-namespace cluster whose kubelet stand-in (tests/e2e/kubelet) runs
// the pods created through the API, the controller in Kubernetes mode, and
// on each node the node agent (Kubernetes mode, with the CNI plugin called
// as a container runtime would) and ztunnel authenticated with a real
// pod-bound service-account token.
//
// Everything runs in the calling process except the CNI plugin and the pods'
// apps. Each Mesh uses its own system namespace (CA Secrets, leader Lease,
// ztunnel service account) and node names, so meshes of several tests can
// share one API server. Needs root.
package kubemesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	controllerapp "github.com/zmesh/zmesh/controller/app"
	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/kubelet"
	ztunnelapp "github.com/zmesh/zmesh/ztunnel/app"
)

// Spec describes the mesh to start.
type Spec struct {
	Clients *kube.Clients
	// Nodes in the cluster (default 2).
	Nodes int
	// Prefix names the cluster's network namespaces, the system namespace
	// and the Node objects (default "zk").
	Prefix string
	// Namespaces the kubelet runs pods in (the test's namespaces).
	Namespaces []string
	// MeshLabel ("key=value") scopes the controllers to the namespaces
	// carrying it (Istio's discoverySelectors), so that meshes sharing an
	// API server never see each other's pods; the system namespace gets it
	// too. Empty: every namespace.
	MeshLabel string
	// CNIPlugin is the zmesh-cni binary (required).
	CNIPlugin string
	// Runtime starts each pod's app (see kubelet.Runtime).
	Runtime kubelet.Runtime
	// StartNodeAgent starts a node's agent in Kubernetes mode; it returns a
	// stop function. The mesh passes the node's API name, its ZDS and CNI
	// socket paths and a state directory.
	StartNodeAgent func(ctx context.Context, a NodeAgentArgs) (stop func(), err error)
	// Controllers is how many controller replicas run (default 1).
	Controllers int
	// WaypointImage is recorded in waypoint Deployments (the kubelet's
	// Runtime decides what actually runs).
	WaypointImage string
	Logger        *slog.Logger
}

// NodeAgentArgs is what a node agent needs to know about its node.
type NodeAgentArgs struct {
	Node                 *cluster.Node
	NodeName             string
	ZDSSocket, CNISocket string
	StateDir             string
	Clients              *kube.Clients
	Logger               *slog.Logger
}

// Mesh is a running mesh. Close tears everything down.
type Mesh struct {
	Spec        Spec
	Cluster     *cluster.Cluster
	Kubelet     *kubelet.Kubelet
	SystemNS    string
	Controllers []*controllerapp.App
	// Ztunnels by node API name.
	Ztunnels map[string]*ztunnelapp.App

	log       *slog.Logger
	rootPEM   []byte
	grpcAddrs []string // per controller replica, kept across restarts
	mu        sync.Mutex
	agents    map[string]func() // node API name → stop
	ztConfigs map[string]ztunnelapp.Config
	closers   []func()
}

// Start builds everything; on error it tears down what it started.
func Start(ctx context.Context, spec Spec) (_ *Mesh, err error) {
	if spec.Clients == nil || spec.CNIPlugin == "" || spec.StartNodeAgent == nil {
		return nil, errors.New("kubemesh: Clients, CNIPlugin and StartNodeAgent are required")
	}
	if spec.Nodes == 0 {
		spec.Nodes = 2
	}
	if spec.Prefix == "" {
		spec.Prefix = "zk"
	}
	if spec.Controllers == 0 {
		spec.Controllers = 1
	}
	if spec.WaypointImage == "" {
		spec.WaypointImage = "zmesh/waypoint:test"
	}
	if spec.Logger == nil {
		spec.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Mesh{Spec: spec, log: spec.Logger, Ztunnels: map[string]*ztunnelapp.App{},
		agents: map[string]func(){}, ztConfigs: map[string]ztunnelapp.Config{}}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	if err := cluster.Cleanup(spec.Prefix); err != nil {
		m.log.Warn("cleanup of earlier runs failed", "err", err)
	}
	c, err := cluster.New(cluster.Options{Nodes: spec.Nodes, Prefix: spec.Prefix, Logger: spec.Logger})
	if err != nil {
		return nil, err
	}
	m.Cluster = c
	m.closers = append(m.closers, func() { _ = c.Close() }, m.stopAgents)
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	if err := m.createSystemNamespace(ctx); err != nil {
		return nil, err
	}
	for i := 0; i < spec.Controllers; i++ {
		if _, err := m.StartController(ctx); err != nil {
			return nil, err
		}
	}
	k, err := kubelet.New(kubelet.Options{
		Clients: spec.Clients, Cluster: c, NodePrefix: m.SystemNS + "-", Namespaces: spec.Namespaces,
		CNIPlugin: spec.CNIPlugin,
		CNIConfig: func(n *cluster.Node) map[string]any {
			return map[string]any{"type": filepath.Base(spec.CNIPlugin), "agent_socket": m.cniSocket(n)}
		},
		Runtime: spec.Runtime,
		Logger:  m.log.With("proc", "kubelet"),
	})
	if err != nil {
		return nil, err
	}
	m.Kubelet = k
	// Nodes first: agents and ztunnels name them. The kubelet starts pods
	// only after the node's agent listens for the CNI plugin.
	for _, n := range c.Nodes() {
		if err := m.StartNodeAgent(ctx, n); err != nil {
			return nil, err
		}
		if err := m.startZtunnel(ctx, n); err != nil {
			return nil, err
		}
	}
	if err := k.Start(ctx); err != nil {
		return nil, err
	}
	m.closers = append(m.closers, k.Stop)
	for _, n := range c.Nodes() {
		if err := m.WaitZtunnelReady(ctx, k.NodeName(n)); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// createSystemNamespace makes the mesh's own system namespace, with the
// ztunnel service account.
func (m *Mesh) createSystemNamespace(ctx context.Context) error {
	var nsLabels map[string]string
	if k, v, ok := strings.Cut(m.Spec.MeshLabel, "="); ok {
		nsLabels = map[string]string{k: v}
	}
	ns, err := m.Spec.Clients.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: m.Spec.Prefix + "-system-", Labels: nsLabels},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("system namespace: %w", err)
	}
	m.SystemNS = ns.Name
	m.closers = append(m.closers, func() {
		kubetest.ForceDeletePods(m.Spec.Clients, ns.Name)
		_ = m.Spec.Clients.Kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	_, err = m.Spec.Clients.Kube.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "ztunnel"},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("ztunnel service account: %w", err)
	}
	return nil
}

// ControllerConfig is the configuration of a controller replica.
func (m *Mesh) ControllerConfig(replica int) controllerapp.Config {
	var selectors []string
	if m.Spec.MeshLabel != "" {
		selectors = []string{m.Spec.MeshLabel}
	}
	return controllerapp.Config{
		GRPCAddr: m.grpcAddrs[replica], MonitoringAddr: "-",
		NodeIdentities: []string{"spiffe://cluster.local/ns/" + m.SystemNS + "/sa/ztunnel"},
		Index:          index.Config{RootNamespace: m.SystemNS},
		Kube: controllerapp.KubeConfig{
			Clients: m.Spec.Clients, SystemNamespace: m.SystemNS, DiscoverySelectors: selectors,
			Identity:      fmt.Sprintf("controller-%d", replica),
			WaypointImage: m.Spec.WaypointImage,
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
		},
		Logger: m.log.With("proc", fmt.Sprintf("controller-%d", replica)),
	}
}

// StartController starts one more controller replica.
func (m *Mesh) StartController(ctx context.Context) (*controllerapp.App, error) {
	m.mu.Lock()
	replica := len(m.Controllers)
	m.mu.Unlock()
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	m.grpcAddrs = append(m.grpcAddrs, addr)
	ctrl, err := m.startController(ctx, replica)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.Controllers = append(m.Controllers, ctrl)
	m.mu.Unlock()
	return ctrl, nil
}

// RestartController stops replica and starts it again on the same address.
func (m *Mesh) RestartController(ctx context.Context, replica int) error {
	m.StopController(replica)
	ctrl, err := m.startController(ctx, replica)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.Controllers[replica] = ctrl
	m.mu.Unlock()
	return nil
}

// StopController stops replica (a crash or a rollout, as far as its
// clients can tell).
func (m *Mesh) StopController(replica int) {
	m.mu.Lock()
	ctrl := m.Controllers[replica]
	m.mu.Unlock()
	ctrl.Stop()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (m *Mesh) startController(ctx context.Context, replica int) (*controllerapp.App, error) {
	ctrl, err := controllerapp.New(m.ControllerConfig(replica))
	if err != nil {
		return nil, err
	}
	if err := ctrl.Start(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.rootPEM == nil {
		m.rootPEM = ctrl.RootPEM()
	}
	m.mu.Unlock()
	m.closers = append(m.closers, ctrl.Stop)
	return ctrl, nil
}

func (m *Mesh) cniSocket(n *cluster.Node) string {
	return filepath.Join(m.Cluster.WorkDir(), n.Name+"-cni.sock")
}

func (m *Mesh) zdsSocket(n *cluster.Node) string {
	return filepath.Join(m.Cluster.WorkDir(), n.Name+"-ztunnel.sock")
}

// StartNodeAgent (re)starts node's agent.
func (m *Mesh) StartNodeAgent(ctx context.Context, n *cluster.Node) error {
	name := m.nodeName(n)
	stop, err := m.Spec.StartNodeAgent(ctx, NodeAgentArgs{
		Node: n, NodeName: name, ZDSSocket: m.zdsSocket(n), CNISocket: m.cniSocket(n),
		StateDir: filepath.Join(m.Cluster.WorkDir(), n.Name+"-agent-state"),
		Clients:  m.Spec.Clients, Logger: m.log.With("proc", "nodeagent-"+n.Name),
	})
	if err != nil {
		return fmt.Errorf("node agent %s: %w", name, err)
	}
	m.mu.Lock()
	m.agents[name] = stop
	m.mu.Unlock()
	return nil
}

// StopNodeAgent stops node's agent (its pods stay captured).
func (m *Mesh) StopNodeAgent(n *cluster.Node) {
	name := m.nodeName(n)
	m.mu.Lock()
	stop := m.agents[name]
	delete(m.agents, name)
	m.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (m *Mesh) nodeName(n *cluster.Node) string { return m.SystemNS + "-" + n.Name }

// startZtunnel registers node's ztunnel pod (for its bound token) and
// starts ztunnel.
func (m *Mesh) startZtunnel(ctx context.Context, n *cluster.Node) error {
	name := m.nodeName(n)
	work := m.Cluster.WorkDir()
	pods := m.Spec.Clients.Kube.CoreV1().Pods(m.SystemNS)
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-" + n.Name, Labels: map[string]string{"app": "ztunnel"}},
		Spec: corev1.PodSpec{NodeName: name, ServiceAccountName: "ztunnel",
			Containers: []corev1.Container{{Name: "istio-proxy", Image: "zmesh/ztunnel:test"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("ztunnel pod: %w", err)
	}
	tokenFile := filepath.Join(work, n.Name+"-ztunnel.token")
	if err := m.WriteToken(ctx, m.SystemNS, "ztunnel", pod, tokenFile); err != nil {
		return err
	}
	rootFile := filepath.Join(work, "root-cert.pem")
	if err := os.WriteFile(rootFile, m.rootPEM, 0o644); err != nil {
		return err
	}
	m.ztConfigs[name] = ztunnelapp.Config{
		ControllerAddr: m.Controllers[0].GRPCAddr().String(), ControllerName: "localhost",
		RootCertFile: rootFile, TokenFile: tokenFile,
		NodeName: name, NodeIP: n.IP.String(), ZDSSocket: m.zdsSocket(n),
		PodName: pod.Name, PodNamespace: m.SystemNS,
		AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0",
		Logger: m.log.With("proc", "ztunnel-"+n.Name),
	}
	return m.StartZtunnel(ctx, name)
}

// WriteToken writes a service-account token bound to pod, with audience
// istio-ca, as a projected token volume would.
func (m *Mesh) WriteToken(ctx context.Context, namespace, sa string, pod *corev1.Pod, path string) error {
	exp := int64(3600)
	tr, err := m.Spec.Clients.Kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{"istio-ca"},
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for %s/%s: %w", namespace, sa, err)
	}
	return os.WriteFile(path, []byte(tr.Status.Token), 0o600)
}

// StartZtunnel (re)starts the ztunnel of the node with that API name.
func (m *Mesh) StartZtunnel(ctx context.Context, node string) error {
	zt, err := ztunnelapp.New(m.ztConfigs[node])
	if err != nil {
		return err
	}
	if err := zt.Start(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	m.Ztunnels[node] = zt
	m.mu.Unlock()
	m.closers = append(m.closers, zt.Stop)
	return nil
}

// WaitZtunnelReady waits for a ztunnel's /healthz/ready.
func (m *Mesh) WaitZtunnelReady(ctx context.Context, node string) error {
	m.mu.Lock()
	zt := m.Ztunnels[node]
	m.mu.Unlock()
	if err := cluster.WaitReady(ctx, &http.Client{Timeout: time.Second}, "http://"+zt.ReadyAddr().String()+"/healthz/ready"); err != nil {
		return fmt.Errorf("ztunnel %s: %w", node, err)
	}
	return nil
}

// RootPEM is the mesh root certificate.
func (m *Mesh) RootPEM() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rootPEM
}

// ZtunnelTokenFile is the token node's ztunnel authenticates with (bound to
// its pod object ztunnel-<node> in the system namespace).
func (m *Mesh) ZtunnelTokenFile(n *cluster.Node) string {
	return filepath.Join(m.Cluster.WorkDir(), n.Name+"-ztunnel.token")
}

// NodeName is the API name of a cluster node.
func (m *Mesh) NodeName(n *cluster.Node) string { return m.nodeName(n) }

// Close stops everything in reverse order of start; node agents stop just
// before the cluster is torn down.
func (m *Mesh) Close() error {
	for i := len(m.closers) - 1; i >= 0; i-- {
		m.closers[i]()
	}
	return nil
}

func (m *Mesh) stopAgents() {
	m.mu.Lock()
	agents := m.agents
	m.agents = map[string]func(){}
	m.mu.Unlock()
	for _, stop := range agents {
		stop()
	}
}
