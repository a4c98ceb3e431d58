// Package meshenv brings up a complete zmesh on this machine: a
// network-namespace cluster with an echo app in every pod, the controller in
// local mode serving a manifest directory, and on each node a ZDS server, a
// node agent and a ztunnel. The e2e tests, `make demo` and the benchmarks
// share it.
//
// The controller, agents and ztunnels run inside the calling process, in
// the root network namespace; ztunnel opens its pod sockets inside the
// pods' namespaces, exactly as in-pod mode does in a real node. Needs root.
package meshenv

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	controllerapp "github.com/zmesh/zmesh/controller/app"
	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/zds"
	"github.com/zmesh/zmesh/tests/e2e/cluster"
	ztunnelapp "github.com/zmesh/zmesh/ztunnel/app"
	"github.com/zmesh/zmesh/ztunnel/nodeagent"
	"github.com/zmesh/zmesh/ztunnel/redirect"
)

// Spec describes the mesh to start.
type Spec struct {
	// Nodes in the cluster (default 2).
	Nodes int
	// Prefix names the cluster's namespaces; leftovers of crashed runs with
	// the same prefix are removed first.
	Prefix string
	// Namespaces and their labels.
	Namespaces map[string]map[string]string
	Pods       []cluster.PodSpec
	Services   []cluster.ServiceSpec
	// Extra objects for the controller (policies...).
	Extra []runtime.Object
	// EchoPath and EchoEnv run the echo app in every pod (HTTP 8080, TCP
	// 9000); EchoArgs are extra flags for it (--grpc 7070, say).
	EchoPath string
	EchoEnv  []string
	EchoArgs []string
	// ZtunnelBinary, when set, runs each node's ztunnel as its own process
	// (for benchmarks that measure its CPU and memory) instead of in this
	// process.
	ZtunnelBinary string
	// CNIPlugin, when set, is the zmesh-cni binary: each node runs the node
	// agent daemon (which learns pods from the manifest directory) and each
	// pod is enrolled by running the plugin as a container runtime would.
	// Without it the agents are driven directly.
	CNIPlugin string
	// Waypoints run a waypoint process (WaypointBinary, the
	// waypoint/cmd/waypoint binary) inside each named pod, with a token
	// for the pod's service account. The pods themselves are declared in
	// Pods (labelled istio.io/dataplane-mode=none and
	// gateway.networking.k8s.io/gateway-name=<gateway>, with the Gateway's
	// name as service account); the Gateway and its Service in Extra or
	// written later with WriteConfig.
	Waypoints      []string
	WaypointBinary string
	// WaypointArgs are extra flags for every waypoint process
	// (--otlp-endpoint, say).
	WaypointArgs []string
	// CAFiles are written into the controller's CA directory (CADir)
	// before it starts: a plugged-in CA (ca-cert.pem, ca-key.pem,
	// root-cert.pem). Without them the controller makes its own root.
	CAFiles map[string][]byte
	// CAReloadInterval is how often the controller re-reads a plugged-in
	// CA (its default when zero).
	CAReloadInterval time.Duration
	Logger           *slog.Logger
}

// Waypoint ports inside a waypoint pod (Istio's).
const (
	WaypointHBONEPort   = 15008
	WaypointMetricsPort = 15020
	WaypointReadyPort   = 15021
)

// ZtunnelAddrs are where a ztunnel's HTTP endpoints listen.
type ZtunnelAddrs struct {
	Admin, Metrics, Ready string
}

// Mesh is a running mesh. Close tears everything down.
type Mesh struct {
	Cluster    *cluster.Cluster
	ConfigDir  string
	Pods       map[string]*cluster.Pod // by pod name
	Controller *controllerapp.App
	Agents     map[string]*nodeagent.Agent // by node
	// Ztunnels holds in-process ztunnels; ZtunnelProcs ztunnel processes
	// (Spec.ZtunnelBinary). ZtunnelHTTP has both kinds' endpoints.
	Ztunnels     map[string]*ztunnelapp.App // by node
	ZtunnelProcs map[string]*cluster.Process
	ZtunnelHTTP  map[string]ZtunnelAddrs
	Redirector   *redirect.Redirector
	// WaypointProcs are the running waypoints (Spec.Waypoints), by pod.
	WaypointProcs map[string]*cluster.Process

	log       *slog.Logger
	ztBinary  string
	cniPlugin string
	// waypoints are the pods that run a waypoint; wpBinary its binary,
	// wpArgs its extra flags.
	waypoints []string
	wpBinary  string
	wpArgs    []string
	// caFiles and caReload are Spec.CAFiles and Spec.CAReloadInterval.
	caFiles   map[string][]byte
	caReload  time.Duration
	ztConfigs map[string]ztunnelapp.Config
	closers   []func() // run in reverse by Close
	closeErr  error    // the cluster's teardown error
}

// Start builds the cluster and starts every component; on error it tears
// down what it started.
func Start(ctx context.Context, spec Spec) (_ *Mesh, err error) {
	if spec.Nodes == 0 {
		spec.Nodes = 2
	}
	if spec.Logger == nil {
		spec.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Mesh{Pods: map[string]*cluster.Pod{}, Agents: map[string]*nodeagent.Agent{},
		Ztunnels: map[string]*ztunnelapp.App{}, ZtunnelProcs: map[string]*cluster.Process{}, ZtunnelHTTP: map[string]ZtunnelAddrs{},
		ztConfigs: map[string]ztunnelapp.Config{}, log: spec.Logger, ztBinary: spec.ZtunnelBinary, cniPlugin: spec.CNIPlugin,
		waypoints: spec.Waypoints, wpBinary: spec.WaypointBinary, wpArgs: spec.WaypointArgs, WaypointProcs: map[string]*cluster.Process{},
		caFiles: spec.CAFiles, caReload: spec.CAReloadInterval}
	if len(spec.Waypoints) > 0 && spec.WaypointBinary == "" {
		return nil, fmt.Errorf("waypoints need Spec.WaypointBinary")
	}
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
	m.closers = append(m.closers, func() { m.closeErr = c.Close() })
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	if err := m.startPods(ctx, spec); err != nil {
		return nil, err
	}
	if err := m.writeManifests(spec); err != nil {
		return nil, err
	}
	if err := m.startControlPlane(ctx); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes() {
		if err := m.startNode(ctx, n); err != nil {
			return nil, err
		}
	}
	for _, name := range m.waypoints {
		if err := m.StartWaypoint(ctx, name); err != nil {
			return nil, err
		}
	}
	if err := m.enrol(ctx, spec); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes() {
		if err := m.WaitReady(ctx, n.Name); err != nil {
			return nil, err
		}
	}
	for _, p := range m.Pods {
		if err := p.Netns.WaitDial(ctx, p.IP.String()+":8080"); err != nil {
			return nil, fmt.Errorf("echo app in %s: %w", p.Name, err)
		}
	}
	return m, nil
}

func (m *Mesh) startPods(ctx context.Context, spec Spec) error {
	for _, ps := range spec.Pods {
		p, err := m.Cluster.AddPod(ctx, ps)
		if err != nil {
			return err
		}
		m.Pods[p.Name] = p
		if spec.EchoPath == "" {
			continue
		}
		if _, err := m.Cluster.StartProcess(cluster.ProcessSpec{
			Name: "echo-" + p.Name, Netns: p.Netns, Path: spec.EchoPath, Env: spec.EchoEnv,
			Args: append([]string{"serve", "--pod", p.Name, "--namespace", p.Namespace, "--http", "8080", "--tcp", "9000"}, spec.EchoArgs...),
		}); err != nil {
			return err
		}
	}
	return nil
}

// writeManifests writes the controller's directory: namespaces, pods,
// services and the extra objects.
func (m *Mesh) writeManifests(spec Spec) error {
	m.ConfigDir = filepath.Join(m.Cluster.WorkDir(), "config")
	if err := os.MkdirAll(m.ConfigDir, 0o755); err != nil {
		return err
	}
	objs := []any{cluster.NamespaceObject("istio-system", nil)}
	for name, labels := range spec.Namespaces {
		objs = append(objs, cluster.NamespaceObject(name, labels))
	}
	for _, p := range m.Cluster.PodObjects() {
		objs = append(objs, p)
	}
	for _, s := range spec.Services {
		objs = append(objs, cluster.ServiceObject(s))
	}
	for _, o := range spec.Extra {
		objs = append(objs, o)
	}
	return cluster.WriteYAML(filepath.Join(m.ConfigDir, "mesh.yaml"), objs...)
}

// CADir is the controller's CA directory; its root-cert.pem is the trust
// bundle every proxy reads.
func (m *Mesh) CADir() string { return filepath.Join(m.Cluster.WorkDir(), "ca") }

// startControlPlane starts the controller with a token per node's ztunnel.
func (m *Mesh) startControlPlane(ctx context.Context) error {
	work := m.Cluster.WorkDir()
	var lines string
	for _, n := range m.Cluster.Nodes() {
		lines += fmt.Sprintf("%s-token spiffe://cluster.local/ns/istio-system/sa/ztunnel %s\n", n.Name, n.Name)
		if err := os.WriteFile(filepath.Join(work, n.Name+".token"), []byte(n.Name+"-token\n"), 0o600); err != nil {
			return err
		}
	}
	for _, name := range m.waypoints {
		p := m.Pods[name]
		if p == nil {
			return fmt.Errorf("waypoint pod %s is not in Spec.Pods", name)
		}
		lines += fmt.Sprintf("%s-token spiffe://cluster.local/ns/%s/sa/%s\n", name, p.Namespace, p.ServiceAccount)
		if err := os.WriteFile(m.waypointToken(name), []byte(name+"-token\n"), 0o600); err != nil {
			return err
		}
	}
	tokens := filepath.Join(work, "tokens")
	if err := os.WriteFile(tokens, []byte(lines), 0o600); err != nil {
		return err
	}
	if err := os.MkdirAll(m.CADir(), 0o700); err != nil {
		return err
	}
	for name, data := range m.caFiles {
		if err := os.WriteFile(filepath.Join(m.CADir(), name), data, 0o600); err != nil {
			return err
		}
	}
	ctrl, err := controllerapp.New(controllerapp.Config{
		ConfigDir: m.ConfigDir, CADir: m.CADir(), CAReloadInterval: m.caReload, TokensFile: tokens,
		GRPCAddr: "127.0.0.1:0", MonitoringAddr: "-",
		Index:  index.Config{AssumeCaptured: true},
		Logger: m.log.With("proc", "controller"),
	})
	if err != nil {
		return err
	}
	if err := ctrl.Start(ctx); err != nil {
		return err
	}
	m.Controller = ctrl
	m.closers = append(m.closers, ctrl.Stop)
	return nil
}

// startNode starts a node's agent (with its ZDS server) and its ztunnel.
func (m *Mesh) startNode(ctx context.Context, n *cluster.Node) error {
	log := m.log.With("proc", "ztunnel-"+n.Name)
	sock := filepath.Join(m.Cluster.WorkDir(), n.Name+"-ztunnel.sock")
	if m.Redirector == nil {
		var err error
		if m.Redirector, err = redirect.New(redirect.Config{Logger: log}); err != nil {
			return err
		}
	}
	if m.cniPlugin != "" {
		d, err := nodeagent.NewDaemon(nodeagent.DaemonConfig{
			NodeName: n.Name, ConfigDir: m.ConfigDir, ZDSSocket: sock, CNISocket: m.cniSocket(n.Name),
			ReadyAddr: "127.0.0.1:0", Logger: m.log.With("proc", "nodeagent-"+n.Name),
		})
		if err != nil {
			return err
		}
		if err := d.Start(ctx); err != nil {
			return err
		}
		m.closers = append(m.closers, d.Stop)
		m.Agents[n.Name] = d.Agent()
	} else {
		srv, err := zds.NewServer(zds.ServerConfig{Path: sock, Logger: log.With("component", "zds-server")})
		if err != nil {
			return err
		}
		if err := srv.Start(); err != nil {
			return err
		}
		m.closers = append(m.closers, srv.Stop)
		agent, err := nodeagent.New(nodeagent.Config{Redirector: m.Redirector, Workloads: srv, Logger: log.With("component", "nodeagent")})
		if err != nil {
			return err
		}
		m.Agents[n.Name] = agent
	}
	m.ztConfigs[n.Name] = ztunnelapp.Config{
		ControllerAddr: m.Controller.GRPCAddr().String(), ControllerName: "localhost",
		RootCertFile: filepath.Join(m.CADir(), "root-cert.pem"),
		TokenFile:    filepath.Join(m.Cluster.WorkDir(), n.Name+".token"),
		NodeName:     n.Name, NodeIP: n.IP.String(), ZDSSocket: sock,
		AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0",
		Logger: log,
	}
	return m.StartZtunnel(ctx, n.Name)
}

// cniSocket is where node's agent takes CNI plugin calls.
func (m *Mesh) cniSocket(node string) string {
	return filepath.Join(m.Cluster.WorkDir(), node+"-cni.sock")
}

// enrol plays the kubelet: with the CNI plugin, it runs the plugin's ADD for
// every pod (the agents learned pods and labels from the manifests);
// otherwise it tells the agents about namespaces, pods and netns directly.
func (m *Mesh) enrol(ctx context.Context, spec Spec) error {
	if m.cniPlugin != "" {
		for _, p := range m.Pods {
			conf, err := cluster.ChainedConfig("zmesh", map[string]any{
				"type": filepath.Base(m.cniPlugin), "agent_socket": m.cniSocket(p.Node.Name)}, p)
			if err != nil {
				return err
			}
			if _, err := m.Cluster.RunCNI(ctx, cluster.CNIRequest{Plugin: m.cniPlugin, Command: "ADD", Config: conf, Pod: p}); err != nil {
				return fmt.Errorf("CNI ADD for %s: %w", p.Name, err)
			}
		}
		return nil
	}
	for name, labels := range spec.Namespaces {
		for _, a := range m.Agents {
			if err := a.SetNamespace(ctx, name, labels); err != nil {
				return err
			}
		}
	}
	for _, p := range m.Pods {
		a := m.Agents[p.Node.Name]
		if err := a.UpsertPod(ctx, nodeagent.Pod{UID: p.UID, Name: p.Name, Namespace: p.Namespace,
			ServiceAccount: p.ServiceAccount, Labels: p.Labels}); err != nil {
			return err
		}
		if err := a.SetNetns(ctx, p.UID, p.Netns.Path); err != nil {
			return err
		}
	}
	return nil
}

// StartZtunnel (re)starts node's ztunnel; the agent replays its pods.
func (m *Mesh) StartZtunnel(ctx context.Context, node string) error {
	cfg := m.ztConfigs[node]
	if m.ztBinary != "" {
		return m.startZtunnelProcess(cfg)
	}
	zt, err := ztunnelapp.New(cfg)
	if err != nil {
		return err
	}
	if err := zt.Start(ctx); err != nil {
		return err
	}
	m.Ztunnels[node] = zt
	m.ZtunnelHTTP[node] = ZtunnelAddrs{Admin: zt.AdminAddr().String(), Metrics: zt.MetricsAddr().String(), Ready: zt.ReadyAddr().String()}
	m.closers = append(m.closers, zt.Stop)
	return nil
}

// startZtunnelProcess runs the ztunnel binary for a node, in the root
// netns like the in-process one, on free loopback ports.
func (m *Mesh) startZtunnelProcess(cfg ztunnelapp.Config) error {
	free, err := freeLoopbackAddrs(3)
	if err != nil {
		return err
	}
	addrs := ZtunnelAddrs{Admin: free[0], Metrics: free[1], Ready: free[2]}
	p, err := m.Cluster.StartProcess(cluster.ProcessSpec{
		Name: "ztunnel-" + cfg.NodeName, Path: m.ztBinary,
		Args: []string{"--controller", cfg.ControllerAddr, "--controller-name", cfg.ControllerName,
			"--root-cert", cfg.RootCertFile, "--token-file", cfg.TokenFile, "--node-name", cfg.NodeName,
			"--node-ip", cfg.NodeIP, "--zds-socket", cfg.ZDSSocket,
			"--admin-addr", addrs.Admin, "--metrics-addr", addrs.Metrics, "--ready-addr", addrs.Ready},
	})
	if err != nil {
		return err
	}
	m.ZtunnelProcs[cfg.NodeName] = p
	m.ZtunnelHTTP[cfg.NodeName] = addrs
	return nil
}

// freeLoopbackAddrs returns n distinct loopback addresses, free when
// checked, for a child process to listen on. The ports are drawn below
// Linux's default ephemeral range (32768-60999), so the outgoing
// connections made before the child binds them cannot take them meanwhile,
// as they can a port that listening on port 0 handed out.
func freeLoopbackAddrs(n int) ([]string, error) {
	// Each port is held until all are picked, so that they differ.
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var addrs []string
	for len(addrs) < n {
		var err error
		for range 50 {
			var ln net.Listener
			ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12768))))
			if err == nil {
				lns = append(lns, ln)
				addrs = append(addrs, ln.Addr().String())
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("no free loopback port: %w", err)
		}
	}
	return addrs, nil
}

// StopZtunnel stops node's ztunnel (its pods stay captured).
func (m *Mesh) StopZtunnel(node string) {
	if p := m.ZtunnelProcs[node]; p != nil {
		_ = p.Stop()
		return
	}
	m.Ztunnels[node].Stop()
}

// WaitReady waits for node's ztunnel to answer /healthz/ready.
func (m *Mesh) WaitReady(ctx context.Context, node string) error {
	url := "http://" + m.ZtunnelHTTP[node].Ready + "/healthz/ready"
	if err := cluster.WaitProcessReady(ctx, m.ZtunnelProcs[node], &http.Client{Timeout: time.Second}, url); err != nil {
		return fmt.Errorf("ztunnel %s: %w", node, err)
	}
	return nil
}

func (m *Mesh) waypointToken(pod string) string {
	return filepath.Join(m.Cluster.WorkDir(), "waypoint-"+pod+".token")
}

// StartWaypoint (re)starts the waypoint process in pod (one of
// Spec.Waypoints) and waits until it answers /healthz/ready on its pod IP.
func (m *Mesh) StartWaypoint(ctx context.Context, pod string) error {
	p := m.Pods[pod]
	if p == nil || m.wpBinary == "" {
		return fmt.Errorf("no waypoint pod %s", pod)
	}
	// The controller listens on the root namespace's loopback: relay to
	// it from the pod's.
	fwd, err := forward(p.Netns, m.Controller.GRPCAddr().String())
	if err != nil {
		return err
	}
	m.closers = append(m.closers, fwd.close)
	proc, err := m.Cluster.StartProcess(cluster.ProcessSpec{
		Name: fmt.Sprintf("waypoint-%s-%d", pod, time.Now().UnixNano()), Netns: p.Netns, Path: m.wpBinary,
		Args: append([]string{"--controller", fwd.addr(), "--controller-name", "localhost",
			"--root-cert", filepath.Join(m.CADir(), "root-cert.pem"), "--token-file", m.waypointToken(pod),
			"--pod-name", p.Name, "--pod-namespace", p.Namespace, "--service-account", p.ServiceAccount,
			"--node-name", p.Node.Name, "--instance-ip", p.IP.String(),
			"--admin-addr", "127.0.0.1:15000", "--metrics-addr", fmt.Sprintf(":%d", WaypointMetricsPort),
			"--ready-addr", fmt.Sprintf(":%d", WaypointReadyPort), "--hbone-addr", fmt.Sprintf(":%d", WaypointHBONEPort),
			"--log-level", "debug"}, m.wpArgs...),
	})
	if err != nil {
		return err
	}
	m.WaypointProcs[pod] = proc
	m.closers = append(m.closers, func() { _ = proc.Stop() })
	url := fmt.Sprintf("http://%s/healthz/ready", net.JoinHostPort(p.IP.String(), fmt.Sprint(WaypointReadyPort)))
	if err := cluster.WaitProcessReady(ctx, proc, p.Netns.HTTPClient(time.Second), url); err != nil {
		return fmt.Errorf("waypoint %s: %w", pod, err)
	}
	return nil
}

// StopWaypoint stops the waypoint process in pod (its pod stays).
func (m *Mesh) StopWaypoint(pod string) error {
	if p := m.WaypointProcs[pod]; p != nil {
		return p.Stop()
	}
	return fmt.Errorf("no waypoint running in %s", pod)
}

// WriteConfig adds or replaces a manifest in the controller's directory.
func (m *Mesh) WriteConfig(name, yaml string) error {
	tmp := filepath.Join(m.ConfigDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(m.ConfigDir, name))
}

// RemoveConfig removes a manifest from the controller's directory.
func (m *Mesh) RemoveConfig(name string) error {
	return os.Remove(filepath.Join(m.ConfigDir, name))
}

// Close stops every component and tears the cluster down.
func (m *Mesh) Close() error {
	for i := len(m.closers) - 1; i >= 0; i-- {
		m.closers[i]()
	}
	m.closers = nil
	return m.closeErr
}
