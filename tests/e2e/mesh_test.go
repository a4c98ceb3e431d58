package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
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

// meshSpec is what a test's mesh holds.
type meshSpec struct {
	namespaces map[string]map[string]string // name -> labels
	pods       []cluster.PodSpec
	services   []cluster.ServiceSpec
	// extra are more objects for the controller (policies...).
	extra []runtime.Object
}

// mesh is a running mesh: cluster, controller, and per node an agent and a
// ztunnel (in this process, in the root netns; their pod sockets live in
// the pods' namespaces, as in-pod mode works).
type mesh struct {
	t         *testing.T
	c         *cluster.Cluster
	spec      meshSpec
	configDir string
	pods      map[string]*cluster.Pod // by name
	agents    map[string]*nodeagent.Agent
	ztunnels  map[string]*ztunnelapp.App
	ztConfigs map[string]ztunnelapp.Config
	rd        *redirect.Redirector
}

func startMesh(t *testing.T, spec meshSpec) *mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := cluster.Setup(t, cluster.Options{Nodes: 2, Prefix: "zme2e"})
	m := &mesh{t: t, c: c, spec: spec, pods: map[string]*cluster.Pod{}, agents: map[string]*nodeagent.Agent{},
		ztunnels: map[string]*ztunnelapp.App{}, ztConfigs: map[string]ztunnelapp.Config{}}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range spec.pods {
		p, err := c.AddPod(ctx, ps)
		if err != nil {
			t.Fatal(err)
		}
		m.pods[p.Name] = p
		if _, err := c.StartProcess(cluster.ProcessSpec{
			Name: "echo-" + p.Name, Netns: p.Netns, Path: self, Env: echoEnvVars(),
			Args: []string{"serve", "--pod", p.Name, "--namespace", p.Namespace, "--http", "8080", "--tcp", "9000"},
		}); err != nil {
			t.Fatal(err)
		}
	}

	// The controller's manifests: namespaces, pods, services, policies.
	m.configDir = filepath.Join(c.WorkDir(), "config")
	if err := os.MkdirAll(m.configDir, 0o755); err != nil {
		t.Fatal(err)
	}
	objs := []any{cluster.NamespaceObject("istio-system", nil)}
	for name, labels := range spec.namespaces {
		objs = append(objs, cluster.NamespaceObject(name, labels))
	}
	for _, p := range c.PodObjects() {
		objs = append(objs, p)
	}
	for _, s := range spec.services {
		objs = append(objs, cluster.ServiceObject(s))
	}
	for _, o := range spec.extra {
		objs = append(objs, o)
	}
	if err := cluster.WriteYAML(filepath.Join(m.configDir, "mesh.yaml"), objs...); err != nil {
		t.Fatal(err)
	}

	caDir := filepath.Join(c.WorkDir(), "ca")
	tokens := filepath.Join(c.WorkDir(), "tokens")
	var tokenLines string
	for _, n := range c.Nodes() {
		tokenLines += fmt.Sprintf("%s-token spiffe://cluster.local/ns/istio-system/sa/ztunnel %s\n", n.Name, n.Name)
		if err := os.WriteFile(filepath.Join(c.WorkDir(), n.Name+".token"), []byte(n.Name+"-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(tokens, []byte(tokenLines), 0o600); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctrl, err := controllerapp.New(controllerapp.Config{
		ConfigDir: m.configDir, CADir: caDir, TokensFile: tokens,
		GRPCAddr: "127.0.0.1:0", MonitoringAddr: "-",
		Index:  index.Config{AssumeCaptured: true},
		Logger: logger.With("proc", "controller"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctrl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.Stop)

	for _, n := range c.Nodes() {
		log := logger.With("proc", "ztunnel-"+n.Name)
		sock := filepath.Join(c.WorkDir(), n.Name+"-ztunnel.sock")
		srv, err := zds.NewServer(zds.ServerConfig{Path: sock, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
		rd, err := redirect.New(redirect.Config{Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		agent, err := nodeagent.New(nodeagent.Config{Redirector: rd, Workloads: srv, Logger: log.With("component", "nodeagent")})
		if err != nil {
			t.Fatal(err)
		}
		m.agents[n.Name] = agent
		m.rd = rd
		m.ztConfigs[n.Name] = ztunnelapp.Config{
			ControllerAddr: ctrl.GRPCAddr().String(), ControllerName: "localhost",
			RootCertFile: filepath.Join(caDir, "root-cert.pem"), TokenFile: filepath.Join(c.WorkDir(), n.Name+".token"),
			NodeName: n.Name, NodeIP: n.IP.String(), ZDSSocket: sock,
			AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0",
			Logger: log,
		}
		m.startZtunnel(ctx, n.Name)
	}

	// The kubelet's part: the agent learns namespaces and pods, then each
	// pod's netns as the CNI plugin would report it.
	for name, labels := range spec.namespaces {
		for _, a := range m.agents {
			if err := a.SetNamespace(ctx, name, labels); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range m.pods {
		a := m.agents[p.Node.Name]
		if err := a.UpsertPod(ctx, nodeagent.Pod{UID: p.UID, Name: p.Name, Namespace: p.Namespace,
			ServiceAccount: p.ServiceAccount, Labels: p.Labels}); err != nil {
			t.Fatal(err)
		}
		if err := a.SetNetns(ctx, p.UID, p.Netns.Path); err != nil {
			t.Fatal(err)
		}
	}
	for name := range m.ztunnels {
		m.waitReady(ctx, name)
	}
	for _, p := range m.pods {
		if err := p.Netns.WaitDial(ctx, p.IP.String()+":8080"); err != nil {
			t.Fatalf("echo in %s: %v", p.Name, err)
		}
	}
	return m
}

// startZtunnel starts node's ztunnel from its saved config.
func (m *mesh) startZtunnel(ctx context.Context, node string) {
	m.t.Helper()
	zt, err := ztunnelapp.New(m.ztConfigs[node])
	if err != nil {
		m.t.Fatal(err)
	}
	if err := zt.Start(ctx); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(zt.Stop)
	m.ztunnels[node] = zt
}

// waitReady waits for node's ztunnel to be ready.
func (m *mesh) waitReady(ctx context.Context, node string) {
	m.t.Helper()
	for m.ztunnels[node].Ready() != nil {
		if ctx.Err() != nil {
			m.t.Fatalf("ztunnel %s not ready: %v", node, m.ztunnels[node].Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
