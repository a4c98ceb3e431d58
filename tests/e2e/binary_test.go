package e2e

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
	"github.com/zmesh/zmesh/tests/e2e/meshenv"
)

// TestBinaries runs the node side as it runs on a real node: each node's
// ztunnel is the real binary, configured by its flags; the node agent
// daemon learns pods from the manifests; and every pod is enrolled by
// running the zmesh-cni plugin the way a container runtime does.
func TestBinaries(t *testing.T) {
	cluster.SkipUnlessRoot(t)
	dir := t.TempDir()
	for name, pkg := range map[string]string{"ztunnel": "ztunnel/cmd/ztunnel", "zmesh-cni": "ztunnel/cmd/zmesh-cni"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), "github.com/zmesh/zmesh/"+pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec := basicMesh()
	spec.Prefix, spec.EchoPath, spec.EchoEnv = "zme2eb", self, echoEnvVars()
	spec.ZtunnelBinary, spec.CNIPlugin = filepath.Join(dir, "ztunnel"), filepath.Join(dir, "zmesh-cni")
	spec.Logger = slog.New(slog.NewTextHandler(&testWriter{t}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := meshenv.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			m.Cluster.DumpLogs(&testWriter{t})
		}
		_ = m.Close()
	}()
	capture, err := m.Cluster.CaptureLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := echo.Get(ctx, m.Pods["sleep-0"].Netns.HTTPClient(10*time.Second), "http://"+m.Pods["httpbin-0"].IP.String()+":8080/binaries", nil)
	if err != nil || resp.Status != 200 {
		t.Fatalf("sleep -> httpbin through ztunnel processes: %v %+v", err, resp)
	}
	segs, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) == 0 || cluster.Contains(segs, []byte("GET /binaries")) {
		t.Fatalf("traffic was not tunnelled (%d segments captured)", len(segs))
	}
	for _, name := range []string{"sleep-0", "httpbin-0", "httpbin-1"} {
		if !m.Agents[m.Pods[name].Node.Name].IsEnrolled(m.Pods[name].UID) {
			t.Errorf("%s not enrolled through the CNI plugin", name)
		}
	}
	if m.Agents["node1"].IsEnrolled(m.Pods["client-0"].UID) {
		t.Error("a pod in a namespace outside the mesh was enrolled")
	}
}
