package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"
)

// SkipUnlessRoot skips t with an explanation when the test process is not
// root (network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN).
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces, veth pairs and bridges (run the e2e tests as root)")
	}
}

// Setup skips t unless root, removes leftovers of crashed runs with the
// same prefix, creates and starts a Cluster, and registers its Close with
// t.Cleanup. If t failed, the cleanup first writes every process log to
// the test log.
func Setup(t testing.TB, opts Options) *Cluster {
	t.Helper()
	SkipUnlessRoot(t)
	if err := Cleanup(opts.Prefix); err != nil {
		t.Logf("cleanup of earlier runs: %v", err)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.Processes() {
				t.Logf("==== log of %s (pid %d, netns %s) ====\n%s", p.Name(), p.Pid(), p.Netns(), p.Log())
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("cluster close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// DumpLogs writes every process's log to w, each under a header line.
func (c *Cluster) DumpLogs(w io.Writer) {
	for _, p := range c.Processes() {
		fmt.Fprintf(w, "==== %s (pid %d, netns %s) ====\n%s\n", p.Name(), p.Pid(), p.Netns(), p.Log())
	}
}
