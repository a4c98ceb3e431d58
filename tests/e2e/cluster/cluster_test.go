package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
)

// echoEnv makes the test binary act as the echo command, so the tests need
// no separate build step.
const echoEnv = "ZMESH_CLUSTER_TEST_RUN_ECHO"

// testPrefix keeps these tests' namespaces apart from other users'.
const testPrefix = "zmtest"

func TestMain(m *testing.M) {
	if os.Getenv(echoEnv) == "1" {
		ctx, stop := signalContext()
		code := echo.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// startEcho runs the echo server in pod (HTTP 8080, TCP 9000).
func startEcho(t *testing.T, c *cluster.Cluster, pod *cluster.Pod) *cluster.Process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.StartProcess(cluster.ProcessSpec{
		Name:  "echo-" + pod.Name,
		Netns: pod.Netns,
		Path:  self,
		Args:  []string{"serve", "--pod", pod.Name, "--namespace", pod.Namespace, "--http", "8080", "--tcp", "9000"},
		Env:   echoEnvVars(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCluster(t *testing.T) {
	c := cluster.Setup(t, cluster.Options{Nodes: 2, Prefix: testPrefix})
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()

	// Two pods per node: a1, a2 on node1; b1, b2 on node2.
	pods := map[string]*cluster.Pod{}
	for _, spec := range []cluster.PodSpec{
		{Name: "a1", Namespace: "demo", Node: "node1", ServiceAccount: "sleep", Labels: map[string]string{"app": "a"}},
		{Name: "a2", Namespace: "demo", Node: "node1"},
		{Name: "b1", Namespace: "demo", Node: "node2"},
		{Name: "b2", Namespace: "demo", Node: "node2", IP: netip.MustParseAddr("10.244.2.50")},
	} {
		p, err := c.AddPod(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		pods[p.Name] = p
	}
	if got := pods["a1"].IP.String(); got != "10.244.1.2" {
		t.Errorf("first pod on node1 got %s, want 10.244.1.2", got)
	}
	if got := pods["b2"].IP.String(); got != "10.244.2.50" {
		t.Errorf("pod with a requested IP got %s", got)
	}
	var procs []*cluster.Process
	for _, name := range []string{"a1", "a2", "b1", "b2"} {
		procs = append(procs, startEcho(t, c, pods[name]))
	}
	for _, p := range pods {
		for _, port := range []string{"8080", "9000"} {
			if err := pods["a1"].Netns.WaitDial(ctx, net.JoinHostPort(p.IP.String(), port)); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("sysctls", func(t *testing.T) {
		for _, tc := range []struct {
			ns        cluster.Netns
			key, want string
		}{
			{c.Fabric(), "net/bridge/bridge-nf-call-iptables", "0"},
			{c.Node("node1").Netns, "net/bridge/bridge-nf-call-iptables", "0"},
			{c.Node("node1").Netns, "net/ipv4/ip_forward", "1"},
			{c.Node("node2").Netns, "net/ipv4/ip_forward", "1"},
		} {
			var got []byte
			err := tc.ns.Do(func() error {
				var err error
				got, err = os.ReadFile("/proc/sys/" + tc.key)
				return err
			})
			if os.IsNotExist(err) && strings.Contains(tc.key, "bridge") {
				continue // br_netfilter not loaded: nothing to turn off
			}
			if err != nil || strings.TrimSpace(string(got)) != tc.want {
				t.Errorf("%s in %s = %q (%v), want %s", tc.key, tc.ns, got, err, tc.want)
			}
		}
	})

	t.Run("HTTP same node and across nodes", func(t *testing.T) {
		for _, tc := range []struct{ from, to string }{
			{"a1", "a2"}, {"a1", "b1"}, {"b2", "a2"}, {"b1", "b2"},
		} {
			from, to := pods[tc.from], pods[tc.to]
			url := fmt.Sprintf("http://%s:8080/x", to.IP)
			resp, err := echo.Get(ctx, from.Netns.HTTPClient(5*time.Second), url, nil)
			if err != nil {
				t.Fatalf("%s -> %s: %v", tc.from, tc.to, err)
			}
			rep := resp.Report
			if resp.Status != 200 || rep == nil {
				t.Fatalf("%s -> %s: status %d body %q", tc.from, tc.to, resp.Status, resp.Body)
			}
			peerIP, _, _ := net.SplitHostPort(rep.Peer)
			if rep.Pod != to.Name || peerIP != from.IP.String() || rep.Identity != "" {
				t.Errorf("%s -> %s: served by %q, peer %q, identity %q; want %s, %s, none",
					tc.from, tc.to, rep.Pod, rep.Peer, rep.Identity, to.Name, from.IP)
			}
		}
	})

	t.Run("TCP echo round trip across nodes", func(t *testing.T) {
		payload := bytes.Repeat([]byte("zmesh-tcp-"), 20000)
		got, err := echo.TCPRoundTrip(ctx, pods["a2"].Netns.DialContext, net.JoinHostPort(pods["b1"].IP.String(), "9000"), payload)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("got %d of %d bytes, err %v", len(got), len(payload), err)
		}
	})

	t.Run("link capture sees cross-node plaintext", func(t *testing.T) {
		cp, err := c.CaptureLink(ctx)
		if err != nil {
			t.Fatal(err)
		}
		marker := fmt.Sprintf("capture-marker-%d", time.Now().UnixNano())
		url := fmt.Sprintf("http://%s:8080/%s", pods["b2"].IP, marker)
		if _, err := echo.Get(ctx, pods["a1"].Netns.HTTPClient(5*time.Second), url, nil); err != nil {
			t.Fatal(err)
		}
		// Same-node traffic never crosses the link.
		sameNode := fmt.Sprintf("same-node-marker-%d", time.Now().UnixNano())
		if _, err := echo.Get(ctx, pods["a1"].Netns.HTTPClient(5*time.Second), fmt.Sprintf("http://%s:8080/%s", pods["a2"].IP, sameNode), nil); err != nil {
			t.Fatal(err)
		}
		// A bulk transfer must be captured completely, byte for byte.
		bulk := make([]byte, 300<<10)
		for i := range bulk {
			bulk[i] = byte(i * 7)
		}
		echoed, err := echo.TCPRoundTrip(ctx, pods["b1"].Netns.DialContext, net.JoinHostPort(pods["a2"].IP.String(), "9000"), bulk)
		if err != nil || !bytes.Equal(echoed, bulk) {
			t.Fatalf("bulk round trip: %d bytes, %v", len(echoed), err)
		}
		segs, err := cp.Stop()
		if err != nil {
			t.Fatal(err)
		}
		bulkOut, bulkBack := false, false
		for f, b := range cluster.Streams(segs) {
			if f.Src.Addr() == pods["b1"].IP && f.Dst == netip.AddrPortFrom(pods["a2"].IP, 9000) {
				bulkOut = bytes.Equal(b, bulk)
			}
			if f.Dst.Addr() == pods["b1"].IP && f.Src == netip.AddrPortFrom(pods["a2"].IP, 9000) {
				bulkBack = bytes.Equal(b, bulk)
			}
		}
		if !bulkOut || !bulkBack {
			t.Errorf("bulk transfer not captured intact: out %v back %v", bulkOut, bulkBack)
		}
		// Each frame is captured once (at its ingress bridge port): were
		// it captured on both ports, every segment would appear twice. TCP
		// itself repeats a few (window updates, tail-loss probes).
		type key struct {
			f        cluster.Flow
			seq, ack uint32
			flags    uint8
			n        int
		}
		seen, dups := map[key]bool{}, 0
		for _, s := range segs {
			k := key{s.Flow(), s.Seq, s.Ack, s.Flags, len(s.Payload)}
			if seen[k] {
				dups++
			}
			seen[k] = true
		}
		if dups*4 > len(segs) {
			t.Errorf("%d of %d segments captured twice", dups, len(segs))
		}
		if !cluster.Contains(segs, []byte("GET /"+marker)) {
			t.Fatalf("request bytes not captured; %d segments, flows %v", len(segs), cluster.Flows(segs))
		}
		if !cluster.Contains(segs, []byte("pod=b2\n")) {
			t.Errorf("response bytes not captured")
		}
		if cluster.Contains(segs, []byte(sameNode)) {
			t.Errorf("same-node request seen on the inter-node link")
		}
		want := cluster.Flow{Src: netip.AddrPortFrom(pods["a1"].IP, 0), Dst: netip.AddrPortFrom(pods["b2"].IP, 8080)}
		found := false
		for _, f := range cluster.Flows(segs) {
			if f.Src.Addr() == want.Src.Addr() && f.Dst == want.Dst {
				found = true
			}
		}
		if !found {
			t.Errorf("no flow %s -> %s in %v", want.Src.Addr(), want.Dst, cluster.Flows(segs))
		}
	})

	t.Run("echo client command inside a pod", func(t *testing.T) {
		cmdCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := runEcho(cmdCtx, c, pods["b1"].Netns, "client", "--url", fmt.Sprintf("http://%s:8080/", pods["a1"].IP))
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		rep, err := echo.ParseReport(out)
		if err != nil || !bytes.HasPrefix(out, []byte("status=200\n")) {
			t.Fatalf("output %q: %v", out, err)
		}
		if rep.Pod != "a1" || !strings.HasPrefix(rep.Peer, pods["b1"].IP.String()+":") {
			t.Errorf("report %+v", rep)
		}
		out, err = runEcho(cmdCtx, c, pods["b1"].Netns, "client", "--tcp", net.JoinHostPort(pods["a2"].IP.String(), "9000"), "--send", "ping")
		if err != nil || string(out) != "ping" {
			t.Fatalf("tcp client: %q %v", out, err)
		}
	})

	t.Run("no route out of the cluster", func(t *testing.T) {
		// 192.0.2.1 (TEST-NET-1) is never routed: the pod's default route
		// leads to its node, which has no route for it.
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		conn, err := pods["a1"].Netns.DialContext(dctx, "tcp", "192.0.2.1:80")
		if err == nil {
			conn.Close()
			t.Fatal("dial outside the cluster succeeded")
		}
		if !strings.Contains(err.Error(), "unreachable") {
			t.Logf("dial outside the cluster failed as expected, but with %v", err)
		}
	})

	t.Run("pod and node objects", func(t *testing.T) {
		obj := pods["a1"].Object()
		if obj.Status.PodIP != "10.244.1.2" || obj.Spec.NodeName != "node1" || obj.Spec.ServiceAccountName != "sleep" ||
			string(obj.UID) != pods["a1"].UID || obj.Labels["app"] != "a" || obj.Status.Phase != corev1.PodRunning {
			t.Errorf("pod object %+v", obj)
		}
		ready := false
		for _, cond := range obj.Status.Conditions {
			ready = ready || cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue
		}
		if !ready {
			t.Error("pod object not Ready")
		}
		path := filepath.Join(t.TempDir(), "pods.yaml")
		objs := []any{cluster.NamespaceObject("demo", map[string]string{"istio.io/dataplane-mode": "ambient"})}
		for _, p := range c.PodObjects() {
			objs = append(objs, p)
		}
		objs = append(objs, c.Node("node2").Object(), cluster.ServiceObject(cluster.ServiceSpec{
			Name: "a", Namespace: "demo", ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "a"},
			Ports: []cluster.ServicePort{{Name: "http", Port: 80, AppProtocol: "http"}},
		}))
		if err := cluster.WriteYAML(path, objs...); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.Split(string(b), "\n---\n")
		if len(docs) != 7 {
			t.Fatalf("%d documents, want 7:\n%s", len(docs), b)
		}
		var back corev1.Pod
		if err := yaml.UnmarshalStrict([]byte(docs[1]), &back); err != nil {
			t.Fatal(err)
		}
		if back.Kind != "Pod" || back.APIVersion != "v1" || back.Name != "a1" || back.Status.PodIP != "10.244.1.2" {
			t.Errorf("round trip: %+v", back)
		}
	})

	t.Run("CNI invocation", func(t *testing.T) {
		dir := t.TempDir()
		plugin := filepath.Join(dir, "fake-cni")
		script := "#!/bin/sh\nenv | grep '^CNI_' | sort > " + dir + "/env\ncat > " + dir + "/stdin\n" +
			"readlink /proc/self/ns/net > " + dir + "/netns\necho '{\"cniVersion\":\"1.0.0\"}'\n"
		if err := os.WriteFile(plugin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		pod := pods["b1"]
		conf, err := cluster.ChainedConfig("k8s-pod-network", map[string]any{"type": "fake-cni", "x": 1}, pod)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.RunCNI(ctx, cluster.CNIRequest{Plugin: plugin, Command: "ADD", Config: conf, Pod: pod})
		if err != nil || !strings.Contains(string(out), "1.0.0") {
			t.Fatalf("RunCNI: %q %v", out, err)
		}
		env, _ := os.ReadFile(filepath.Join(dir, "env"))
		for _, want := range []string{"CNI_COMMAND=ADD", "CNI_NETNS=" + pod.Netns.Path, "CNI_IFNAME=eth0",
			"K8S_POD_NAME=b1", "K8S_POD_NAMESPACE=demo", "K8S_POD_UID=" + pod.UID} {
			if !strings.Contains(string(env), want) {
				t.Errorf("plugin env lacks %s:\n%s", want, env)
			}
		}
		stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
		if !bytes.Contains(stdin, []byte(`"prevResult"`)) || !bytes.Contains(stdin, []byte(pod.IP.String()+"/32")) {
			t.Errorf("stdin %s", stdin)
		}
		gotNS, _ := os.ReadFile(filepath.Join(dir, "netns"))
		var st syscall.Stat_t
		if err := syscall.Stat(pod.Node.Netns.Path, &st); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("net:[%d]", st.Ino); strings.TrimSpace(string(gotNS)) != want {
			t.Errorf("plugin ran in %s, want the node's %s", gotNS, want)
		}
	})

	t.Run("remove pod", func(t *testing.T) {
		p, err := c.AddPod(ctx, cluster.PodSpec{Name: "tmp", Namespace: "demo", Node: "node2"})
		if err != nil {
			t.Fatal(err)
		}
		proc := startEcho(t, c, p)
		if err := pods["a1"].Netns.WaitDial(ctx, net.JoinHostPort(p.IP.String(), "8080")); err != nil {
			t.Fatal(err)
		}
		if err := c.RemovePod(ctx, p); err != nil {
			t.Fatal(err)
		}
		if exited, _ := proc.Exited(); !exited {
			t.Error("process of removed pod still running")
		}
		if _, err := os.Stat(p.Netns.Path); !os.IsNotExist(err) {
			t.Errorf("netns of removed pod: %v", err)
		}
		if c.Pod("demo", "tmp") != nil {
			t.Error("removed pod still listed")
		}
		// The IP is free again.
		again, err := c.AddPod(ctx, cluster.PodSpec{Name: "tmp2", Namespace: "demo", Node: "node2", IP: p.IP})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.RemovePod(ctx, again); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("close leaves nothing behind", func(t *testing.T) {
		workDir := c.WorkDir()
		names := []string{c.Fabric().Name}
		for _, n := range c.Nodes() {
			names = append(names, n.Netns.Name)
		}
		for _, p := range c.Pods() {
			names = append(names, p.Netns.Name)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("ip netns list: %v: %s", err, out)
		}
		if strings.Contains(string(out), c.ID()) {
			t.Errorf("namespaces left after Close:\n%s", out)
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join("/var/run/netns", n)); !os.IsNotExist(err) {
				t.Errorf("netns %s: %v", n, err)
			}
		}
		for _, p := range procs {
			if exited, _ := p.Exited(); !exited {
				t.Errorf("process %s still running", p.Name())
			}
			if err := syscall.Kill(p.Pid(), 0); err == nil {
				t.Errorf("pid %d (%s) still exists", p.Pid(), p.Name())
			}
		}
		if _, err := os.Stat(workDir); !os.IsNotExist(err) {
			t.Errorf("work dir %s: %v", workDir, err)
		}
		if _, err := c.AddPod(ctx, cluster.PodSpec{Name: "late"}); err == nil {
			t.Error("AddPod after Close succeeded")
		}
	})
}

// runEcho runs the test binary as the echo command inside ns.
func runEcho(ctx context.Context, c *cluster.Cluster, ns cluster.Netns, args ...string) ([]byte, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return c.Run(ctx, cluster.ProcessSpec{Netns: ns, Path: self, Args: args, Env: echoEnvVars()})
}

// echoEnvVars turns the test binary into the echo command; under -race it
// also drops the race runtime's one-second sleep at exit.
func echoEnvVars() []string {
	return []string{echoEnv + "=1", "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
