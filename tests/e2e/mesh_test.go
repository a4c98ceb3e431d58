package e2e

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/meshenv"
)

// mesh is a running mesh bound to a test.
type mesh struct {
	*meshenv.Mesh
	t    *testing.T
	pods map[string]*cluster.Pod
}

// meshSpec is the part of meshenv.Spec the tests vary.
type meshSpec = meshenv.Spec

// startMesh starts spec's mesh for t, with logs going to the test log, and
// tears it down when the test ends (dumping pod logs on failure).
func startMesh(t *testing.T, spec meshSpec) *mesh {
	t.Helper()
	cluster.SkipUnlessRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec.Prefix = "zme2e"
	spec.EchoPath, spec.EchoEnv = self, echoEnvVars()
	spec.Logger = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := meshenv.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			m.Cluster.DumpLogs(&testWriter{t})
		}
		if err := m.Close(); err != nil {
			t.Errorf("mesh close: %v", err)
		}
	})
	return &mesh{Mesh: m, t: t, pods: m.Pods}
}

// writeConfig adds or replaces a manifest in the controller's directory.
func (m *mesh) writeConfig(name, yaml string) {
	m.t.Helper()
	if err := m.WriteConfig(name, yaml); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mesh) removeConfig(name string) {
	m.t.Helper()
	if err := m.RemoveConfig(name); err != nil {
		m.t.Fatal(err)
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
