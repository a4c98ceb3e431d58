package nodeagent

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// TestLocalDaemonRestartKeepsPods: in local mode too, a restarted daemon
// restores captured pods from its state directory before it returns from
// Start, and a pod whose record is gone and whose address no namespace
// holds is reported lost.
func TestLocalDaemonRestartKeepsPods(t *testing.T) {
	e := newCNIEnv(t)
	ctx := context.Background()
	amb, err := e.c.AddPod(ctx, cluster.PodSpec{Name: "amb", Namespace: "mesh", Node: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	nsLabels := map[string]map[string]string{"mesh": {LabelDataplaneMode: ModeAmbient}}
	e.write(t, nsLabels, amb)
	state := filepath.Join(t.TempDir(), "pods")
	start := func() *Daemon {
		t.Helper()
		d, err := NewDaemon(DaemonConfig{
			NodeName: "node1", ConfigDir: e.dir, StateDir: state,
			ZDSSocket: filepath.Join(filepath.Dir(e.socket), "ztunnel.sock"), CNISocket: e.socket,
			ReadyAddr: "127.0.0.1:0", PodWait: 3 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Stop)
		e.daemon = d
		return d
	}
	d := start()
	if out, err := e.cni(t, "ADD", amb, cluster.CNIVersion); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !e.captured(t, amb) || !d.Agent().IsEnrolled(amb.UID) {
		t.Fatal("not captured after ADD")
	}
	d.Stop()
	if !e.captured(t, amb) {
		t.Fatal("stopping the agent removed the redirection")
	}
	d = start()
	if !d.Agent().IsEnrolled(amb.UID) || !e.captured(t, amb) {
		t.Fatal("pod not restored by Start")
	}
	if st, _ := d.Agent().Status(amb.UID); st.NetnsPath != amb.Netns.Path {
		t.Errorf("restored netns %q, want %q", st.NetnsPath, amb.Netns.Path)
	}
	if lost := d.Lost(); len(lost) != 0 {
		t.Errorf("lost %+v", lost)
	}

	// Without its record, and with no search configured, the pod is lost
	// (and reported), its rules left alone.
	d.Stop()
	store, _ := NewNetnsStore(state)
	if err := store.Delete(amb.UID); err != nil {
		t.Fatal(err)
	}
	d = start()
	lost := d.Lost()
	if len(lost) != 1 || lost[0].Pod.UID != amb.UID || d.Agent().IsEnrolled(amb.UID) {
		t.Fatalf("lost %+v, enrolled %v", lost, d.Agent().IsEnrolled(amb.UID))
	}
	if !e.captured(t, amb) {
		t.Error("rules of a lost pod removed")
	}
	// Its next sandbox (CNI ADD) captures it again.
	if out, err := e.cni(t, "ADD", amb, cluster.CNIVersion); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !d.Agent().IsEnrolled(amb.UID) {
		t.Fatal("not enrolled after a new ADD")
	}
}
