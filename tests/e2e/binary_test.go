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

// TestZtunnelBinary runs each node's ztunnel as the real binary, configured
// by its flags, and sends mesh traffic through them.
func TestZtunnelBinary(t *testing.T) {
	cluster.SkipUnlessRoot(t)
	bin := filepath.Join(t.TempDir(), "ztunnel")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/zmesh/zmesh/ztunnel/cmd/ztunnel").CombinedOutput(); err != nil {
		t.Fatalf("build ztunnel: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec := basicMesh()
	spec.Prefix, spec.EchoPath, spec.EchoEnv, spec.ZtunnelBinary = "zme2eb", self, echoEnvVars(), bin
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
	resp, err := echo.Get(ctx, m.Pods["sleep-0"].Netns.HTTPClient(10*time.Second), "http://10.96.0.10/", nil)
	if err != nil || resp.Status != 200 {
		t.Fatalf("sleep -> httpbin through ztunnel processes: %v %+v", err, resp)
	}
}
