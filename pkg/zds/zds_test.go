package zds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/netns/netnstest"
	"github.com/zmesh/zmesh/pkg/zdsapi"
)

const wait = 5 * time.Second

// fakeZtunnel is a Handler that, like ztunnel, opens a listener inside each
// added pod's namespace and drops pods missing from a snapshot.
type fakeZtunnel struct {
	mu        sync.Mutex
	listeners map[string]net.Listener
	events    chan string
	fail      map[string]bool // uids whose Add fails
}

func newFakeZtunnel() *fakeZtunnel {
	return &fakeZtunnel{listeners: map[string]net.Listener{}, events: make(chan string, 100), fail: map[string]bool{}}
}

func (f *fakeZtunnel) Add(ctx context.Context, uid string, info *zdsapi.WorkloadInfo, ns *os.File) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[uid] {
		f.events <- "add-failed " + uid
		return fmt.Errorf("cannot start proxy for %s", uid)
	}
	if old := f.listeners[uid]; old != nil {
		old.Close()
	}
	ln, err := netns.Listen(ctx, ns, "tcp4", "127.0.0.1:15001", nil)
	if err != nil {
		return err
	}
	f.listeners[uid] = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(uid))
			c.Close()
		}
	}()
	f.events <- fmt.Sprintf("add %s %s/%s", uid, info.GetNamespace(), info.GetName())
	return nil
}

func (f *fakeZtunnel) Del(_ context.Context, uid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ln := f.listeners[uid]; ln != nil {
		ln.Close()
		delete(f.listeners, uid)
	}
	f.events <- "del " + uid
	return nil
}

func (f *fakeZtunnel) SnapshotSent(_ context.Context, in map[string]struct{}) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for uid, ln := range f.listeners {
		if _, ok := in[uid]; !ok {
			ln.Close()
			delete(f.listeners, uid)
		}
	}
	uids := make([]string, 0, len(in))
	for uid := range in {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	f.events <- "snapshot " + strings.Join(uids, ",")
	return nil
}

func (f *fakeZtunnel) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for uid, ln := range f.listeners {
		ln.Close()
		delete(f.listeners, uid)
	}
}

func (f *fakeZtunnel) expect(t *testing.T, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-f.events:
			if got != w {
				t.Fatalf("event %q, want %q", got, w)
			}
		case <-time.After(wait):
			t.Fatalf("no event, want %q", w)
		}
	}
}

// serving reports whether the fake ztunnel's listener answers inside ns,
// which proves the listener was opened in the pod's namespace.
func serving(t *testing.T, ns *netnstest.NS, uid string) bool {
	t.Helper()
	c, err := netns.Dial(context.Background(), ns.File, "tcp4", "127.0.0.1:15001", &net.Dialer{Timeout: time.Second})
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	if string(buf[:n]) != uid {
		t.Fatalf("listener in %s answered %q, want %q", ns.Name, buf[:n], uid)
	}
	return true
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// checkNoLeak fails t if, within a grace period, the process does not get
// back to n open descriptors.
func checkNoLeak(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := countFDs(t)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadDir("/proc/self/fd")
			var names []string
			for _, e := range out {
				l, _ := os.Readlink("/proc/self/fd/" + e.Name())
				names = append(names, e.Name()+"→"+l)
			}
			t.Fatalf("descriptor leak: %d open, want %d: %v", got, n, names)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func info(name string) *zdsapi.WorkloadInfo {
	return &zdsapi.WorkloadInfo{Name: name, Namespace: "default", ServiceAccount: "sa-" + name}
}

func sockPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "ztunnel.sock")
}

func TestEndToEnd(t *testing.T) {
	netnstest.RequireRoot(t)
	podA := netnstest.New(t, "zdsa")
	podB := netnstest.New(t, "zdsb")
	podC := netnstest.New(t, "zdsc")
	path := sockPath(t)
	ctx := context.Background()

	// Warm up the runtime's poller before counting descriptors.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	fds := countFDs(t)

	srv, err := NewServer(ServerConfig{Path: path, AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A pod known before ztunnel ever connects.
	if err := srv.AddPod(ctx, "uid-a", info("a"), podA.File); err != nil {
		t.Fatalf("AddPod without ztunnel: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}

	zt := newFakeZtunnel()
	zt.fail["uid-bad"] = true
	cli, err := NewClient(ClientConfig{Path: path, Handler: zt, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	zt.expect(t, "add uid-a default/a", "snapshot uid-a")
	if !serving(t, podA, "uid-a") {
		t.Fatal("no listener in pod A's namespace after replay")
	}

	// Live add and del.
	if err := srv.AddPod(ctx, "uid-b", info("b"), podB.File); err != nil {
		t.Fatal(err)
	}
	zt.expect(t, "add uid-b default/b")
	if !serving(t, podB, "uid-b") {
		t.Fatal("no listener in pod B's namespace")
	}
	err = srv.AddPod(ctx, "uid-bad", info("bad"), podC.File)
	var ackErr *AckError
	if !errors.As(err, &ackErr) || !strings.Contains(ackErr.Message, "cannot start proxy") {
		t.Fatalf("AddPod with failing handler = %v", err)
	}
	zt.expect(t, "add-failed uid-bad")
	if got := srv.Stats().AckErrors; got != 1 {
		t.Fatalf("AckErrors = %d", got)
	}
	if err := srv.DelPod(ctx, "uid-b"); err != nil {
		t.Fatal(err)
	}
	zt.expect(t, "del uid-b")
	if serving(t, podB, "uid-b") {
		t.Fatal("pod B still served after del")
	}

	// ztunnel restarts: a new client gets the snapshot (a, bad) again. A
	// pod deleted while ztunnel is away is not replayed.
	cli.Stop()
	zt.closeAll()
	waitFor(t, func() bool { return !srv.Connected() })
	if err := srv.DelPod(ctx, "uid-bad"); err != nil {
		t.Fatalf("DelPod without ztunnel: %v", err)
	}
	if err := srv.AddPod(ctx, "uid-c", info("c"), podC.File); err != nil {
		t.Fatal(err)
	}
	zt2 := newFakeZtunnel()
	cli2, err := NewClient(ClientConfig{Path: path, Handler: zt2, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli2.Start(); err != nil {
		t.Fatal(err)
	}
	defer cli2.Stop()
	zt2.expect(t, "add uid-a default/a", "add uid-c default/c", "snapshot uid-a,uid-c")
	if !serving(t, podA, "uid-a") || !serving(t, podC, "uid-c") {
		t.Fatal("replayed pods not served")
	}

	// The agent restarts: the old server goes away, a new one learns the
	// pods again (here only A) and the client reconnects by itself; ztunnel
	// drops C, which is not in the new snapshot.
	srv.Stop()
	srv2, err := NewServer(ServerConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.AddPod(ctx, "uid-a", info("a"), podA.File); err != nil {
		t.Fatal(err)
	}
	if err := srv2.Start(); err != nil {
		t.Fatal(err)
	}
	zt2.expect(t, "add uid-a default/a", "snapshot uid-a")
	if serving(t, podC, "uid-c") {
		t.Fatal("pod C still served after a snapshot without it")
	}
	if !serving(t, podA, "uid-a") {
		t.Fatal("pod A not served after agent restart")
	}
	if cli2.Sessions() != 2 {
		t.Fatalf("client sessions = %d, want 2", cli2.Sessions())
	}
	// The server counts the snapshot once ztunnel's ack for it is in,
	// which may be just after the handler saw it.
	waitFor(t, func() bool { st := srv2.Stats(); return st.Connections == 1 && st.Snapshots == 1 })

	cli2.Stop()
	zt2.closeAll()
	srv2.Stop()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
	checkNoLeak(t, fds)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
