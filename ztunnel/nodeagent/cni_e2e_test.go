package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/ztunnel/redirect"
)

// buildPlugin builds ztunnel/cmd/zmesh-cni into a temporary directory.
func buildPlugin(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping: go toolchain not in PATH to build the plugin")
	}
	bin := filepath.Join(t.TempDir(), "zmesh-cni")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/zmesh/zmesh/ztunnel/cmd/zmesh-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go build zmesh-cni: %v: %s", err, out)
	}
	return bin
}

// cniEnv is a one-node cluster with a node agent daemon (real ZDS server,
// redirector, CNI endpoint and local source) and the real plugin binary.
type cniEnv struct {
	c      *cluster.Cluster
	dir    string // manifest directory
	socket string // agent CNI socket
	plugin string
	daemon *Daemon
	rd     *redirect.Redirector
}

func newCNIEnv(t *testing.T) *cniEnv {
	t.Helper()
	cluster.SkipUnlessRoot(t)
	bin := buildPlugin(t)
	c := cluster.Setup(t, cluster.Options{Nodes: 1, Prefix: "nacni"})
	rd, err := redirect.New(redirect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	return &cniEnv{c: c, dir: t.TempDir(), socket: filepath.Join(run, "cni.sock"), plugin: bin, rd: rd}
}

// startDaemon runs the node agent for node1 until the test ends.
func (e *cniEnv) startDaemon(t *testing.T) {
	t.Helper()
	d, err := NewDaemon(DaemonConfig{
		NodeName:  "node1",
		ConfigDir: e.dir,
		ZDSSocket: filepath.Join(filepath.Dir(e.socket), "ztunnel.sock"),
		CNISocket: e.socket,
		ReadyAddr: "127.0.0.1:0",
		// Generous: a loaded CI machine must still see the late pod arrive in time.
		PodWait: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	e.daemon = d
}

// write replaces the manifest file with namespaces and pods.
func (e *cniEnv) write(t *testing.T, nsLabels map[string]map[string]string, pods ...*cluster.Pod) {
	t.Helper()
	if err := e.writeErr(nsLabels, pods...); err != nil {
		t.Fatal(err)
	}
}

// writeErr is write for goroutines other than the test's.
func (e *cniEnv) writeErr(nsLabels map[string]map[string]string, pods ...*cluster.Pod) error {
	var parts []string
	for name, labels := range nsLabels {
		b, err := yaml.Marshal(cluster.NamespaceObject(name, labels))
		if err != nil {
			return err
		}
		parts = append(parts, string(b))
	}
	for _, p := range pods {
		b, err := yaml.Marshal(p.Object())
		if err != nil {
			return err
		}
		parts = append(parts, string(b))
	}
	path := filepath.Join(e.dir, "cluster.yaml")
	tmp := filepath.Join(e.dir, ".cluster.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(strings.Join(parts, "---\n")), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// cni runs the plugin for pod with cniVersion version.
func (e *cniEnv) cni(t *testing.T, cmd string, pod *cluster.Pod, version string) ([]byte, error) {
	t.Helper()
	conf, err := cluster.ChainedConfig("k8s-pod-network", map[string]any{
		"type": "zmesh-cni", "cniVersion": version, "agent_socket": e.socket, "agent_timeout": "20s",
	}, pod)
	if err != nil {
		t.Fatal(err)
	}
	if version != cluster.CNIVersion {
		// Express prevResult in the old version too, as a runtime would.
		var m map[string]any
		_ = json.Unmarshal(conf, &m)
		prev := m["prevResult"].(map[string]any)
		prev["cniVersion"] = version
		ips := prev["ips"].([]any)
		for _, ip := range ips {
			ip.(map[string]any)["version"] = "4"
		}
		conf, _ = json.Marshal(m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.c.RunCNI(ctx, cluster.CNIRequest{Plugin: e.plugin, Command: cmd, Config: conf, Pod: pod})
}

// captured reports whether pod's namespace holds the redirection.
func (e *cniEnv) captured(t *testing.T, pod *cluster.Pod) bool {
	t.Helper()
	f, err := netns.Open(pod.Netns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = e.rd.Check(f)
	if err != nil && !errors.Is(err, redirect.ErrNotInstalled) {
		t.Fatal(err)
	}
	return err == nil
}

// cniError decodes the CNI error object a failed plugin printed.
func cniError(t *testing.T, out []byte) (code int, msg string) {
	t.Helper()
	var e struct {
		Code    int    `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if err := json.Unmarshal(out, &e); err != nil || e.Code == 0 {
		t.Fatalf("plugin output is not a CNI error: %q (%v)", out, err)
	}
	return e.Code, e.Msg + ": " + e.Details
}

func TestCNIPluginWithAgent(t *testing.T) {
	e := newCNIEnv(t)
	ctx := context.Background()
	amb, err := e.c.AddPod(ctx, cluster.PodSpec{Name: "amb", Namespace: "mesh", Node: "node1", ServiceAccount: "sleep"})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := e.c.AddPod(ctx, cluster.PodSpec{Name: "plain", Namespace: "plain", Node: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	ghost, err := e.c.AddPod(ctx, cluster.PodSpec{Name: "ghost", Namespace: "mesh", Node: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	nsLabels := map[string]map[string]string{"mesh": {LabelDataplaneMode: ModeAmbient}, "plain": nil}
	e.write(t, nsLabels, amb, plain) // ghost is not in the manifests
	e.startDaemon(t)
	agent := e.daemon.Agent()

	t.Run("ready", func(t *testing.T) {
		resp, err := http.Get("http://" + e.daemon.ReadyAddr().String() + "/healthz/ready")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("ready: %d", resp.StatusCode)
		}
	})

	t.Run("VERSION", func(t *testing.T) {
		out, err := e.cni(t, "VERSION", amb, cluster.CNIVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"0.4.0", "1.0.0"} {
			if !strings.Contains(string(out), `"`+v+`"`) {
				t.Errorf("VERSION lacks %s: %s", v, out)
			}
		}
	})

	for _, version := range []string{cluster.CNIVersion, "0.4.0"} {
		t.Run("ADD ambient pod "+version, func(t *testing.T) {
			out, err := e.cni(t, "ADD", amb, version)
			if err != nil {
				t.Fatal(err)
			}
			var res struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Address string `json:"address"`
				} `json:"ips"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if res.CNIVersion != version || len(res.IPs) != 1 || res.IPs[0].Address != amb.IP.String()+"/32" {
				t.Fatalf("ADD did not pass prevResult through: %s", out)
			}
			if !e.captured(t, amb) || !agent.IsEnrolled(amb.UID) {
				t.Fatal("ambient pod not captured after ADD")
			}
		})
	}

	t.Run("CHECK ambient pod", func(t *testing.T) {
		if out, err := e.cni(t, "CHECK", amb, cluster.CNIVersion); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		// Rules removed behind the agent's back: CHECK must notice.
		f, err := netns.Open(amb.Netns.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := e.rd.Remove(f); err != nil {
			t.Fatal(err)
		}
		out, err := e.cni(t, "CHECK", amb, cluster.CNIVersion)
		if err == nil {
			t.Fatal("CHECK passed without redirection")
		}
		if _, msg := cniError(t, out); !strings.Contains(msg, "redirection") {
			t.Errorf("CHECK error %q", msg)
		}
		if err := e.rd.Install(f); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ADD pod in a non-ambient namespace", func(t *testing.T) {
		out, err := e.cni(t, "ADD", plain, cluster.CNIVersion)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), plain.IP.String()) {
			t.Fatalf("prevResult not printed: %s", out)
		}
		if e.captured(t, plain) || agent.IsEnrolled(plain.UID) {
			t.Fatal("non-ambient pod captured")
		}
		if out, err := e.cni(t, "CHECK", plain, cluster.CNIVersion); err != nil {
			t.Fatalf("CHECK of a non-ambient pod: %v: %s", err, out)
		}
	})

	t.Run("ADD of a pod the source never learns fails", func(t *testing.T) {
		out, err := e.cni(t, "ADD", ghost, cluster.CNIVersion)
		if err == nil {
			t.Fatalf("ADD succeeded: %s", out)
		}
		code, msg := cniError(t, out)
		if code != 11 || !strings.Contains(msg, "pod source") {
			t.Errorf("error %d %q", code, msg)
		}
		if e.captured(t, ghost) {
			t.Error("unknown pod captured")
		}
	})

	t.Run("ADD waits for the source", func(t *testing.T) {
		// The manifest gains ghost while ADD waits.
		done := make(chan error, 1)
		go func() {
			time.Sleep(200 * time.Millisecond)
			done <- e.writeErr(nsLabels, amb, plain, ghost)
		}()
		defer func() {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		if out, err := e.cni(t, "ADD", ghost, cluster.CNIVersion); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if !e.captured(t, ghost) {
			t.Fatal("late pod not captured")
		}
	})

	t.Run("manifest labels enrol and unenrol a live pod", func(t *testing.T) {
		labels := map[string]map[string]string{"mesh": {LabelDataplaneMode: ModeAmbient}, "plain": {LabelDataplaneMode: ModeAmbient}}
		e.write(t, labels, amb, plain, ghost)
		eventually(t, "plain enrolled", func() bool { return e.captured(t, plain) && agent.IsEnrolled(plain.UID) })
		if out, err := e.cni(t, "CHECK", plain, cluster.CNIVersion); err != nil {
			t.Fatalf("CHECK after enrolment: %v: %s", err, out)
		}

		// A malformed manifest keeps the last good state.
		writeFile(t, filepath.Join(e.dir, "cluster.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n")
		time.Sleep(500 * time.Millisecond)
		if !e.captured(t, plain) || !e.captured(t, amb) {
			t.Fatal("malformed manifest changed the pods' state")
		}

		opted := *plain
		opted.Labels = map[string]string{LabelDataplaneMode: ModeNone}
		e.write(t, labels, amb, &opted, ghost)
		eventually(t, "plain unenrolled", func() bool { return !e.captured(t, plain) && !agent.IsEnrolled(plain.UID) })
		if out, err := e.cni(t, "CHECK", plain, cluster.CNIVersion); err != nil {
			t.Fatalf("CHECK after opt-out: %v: %s", err, out)
		}
	})

	t.Run("DEL unenrols and is idempotent", func(t *testing.T) {
		for i := range 2 {
			if out, err := e.cni(t, "DEL", amb, cluster.CNIVersion); err != nil {
				t.Fatalf("DEL %d: %v: %s", i, err, out)
			}
		}
		if e.captured(t, amb) || agent.IsEnrolled(amb.UID) {
			t.Fatal("pod still captured after DEL")
		}
		// CHECK now reports the pod is not captured as it should be.
		out, err := e.cni(t, "CHECK", amb, cluster.CNIVersion)
		if err == nil {
			t.Fatalf("CHECK passed after DEL: %s", out)
		}
		// A new ADD (sandbox recreated) captures it again.
		if out, err := e.cni(t, "ADD", amb, cluster.CNIVersion); err != nil {
			t.Fatalf("ADD after DEL: %v: %s", err, out)
		}
		if !e.captured(t, amb) {
			t.Fatal("not captured after the second ADD")
		}
	})

	t.Run("agent down", func(t *testing.T) {
		e.daemon.Stop()
		out, err := e.cni(t, "ADD", amb, cluster.CNIVersion)
		if err == nil {
			t.Fatalf("ADD succeeded with the agent down: %s", out)
		}
		if code, msg := cniError(t, out); code != 11 || !strings.Contains(msg, "unreachable") {
			t.Errorf("error %d %q", code, msg)
		}
		if out, err := e.cni(t, "DEL", amb, cluster.CNIVersion); err != nil {
			t.Fatalf("DEL failed with the agent down: %v: %s", err, out)
		}
		if _, err := e.cni(t, "CHECK", amb, cluster.CNIVersion); err == nil {
			t.Fatal("CHECK passed with the agent down")
		}
	})
}
