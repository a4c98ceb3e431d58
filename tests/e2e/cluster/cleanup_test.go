package cluster_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// TestCleanupRemovesCrashedRun fakes the leftovers of a run whose process
// died: a namespace and a work dir named after a dead pid, with a process
// still sleeping inside the namespace. Cleanup must remove all three and
// leave a live run's namespace alone.
func TestCleanupRemovesCrashedRun(t *testing.T) {
	cluster.SkipUnlessRoot(t)
	const prefix = "zmcleanup"
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := dead.Process.Pid
	stale := prefix + "-" + strconv.Itoa(deadPID) + "-0badc0de-node1"
	live := prefix + "-" + strconv.Itoa(os.Getpid()) + "-600dc0de-node1"
	for _, n := range []string{stale, live} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", n, err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", stale).Run()
		_ = exec.Command("ip", "netns", "del", live).Run()
	})
	sleeper := exec.Command("ip", "netns", "exec", stale, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(exited) }()
	dir := filepath.Join(os.TempDir(), prefix+"-"+strconv.Itoa(deadPID)+"-0badc0de-x")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Let ip netns exec reach the sleep.
	time.Sleep(100 * time.Millisecond)

	if err := cluster.Cleanup(prefix); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), stale) {
		t.Errorf("stale netns still listed:\n%s", out)
	}
	if !strings.Contains(string(out), live) {
		t.Errorf("live run's netns was removed:\n%s", out)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Error("process inside the stale netns was not killed")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("stale work dir: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []cluster.Options{{Nodes: -1}, {Nodes: cluster.MaxNodes + 1}, {Prefix: "Bad/Prefix"}} {
		if _, err := cluster.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	c, err := cluster.New(cluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := c.Nodes(); len(n) != 2 || n[1].IP.String() != "172.30.0.12" || n[1].PodCIDR.String() != "10.244.2.0/24" || n[1].Gateway.String() != "10.244.2.1" {
		t.Errorf("nodes %+v", n)
	}
	if _, err := c.AddPod(t.Context(), cluster.PodSpec{Name: "x"}); err == nil {
		t.Error("AddPod before Start succeeded")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close without Start: %v", err)
	}
}
