package nodeagent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zmesh/zmesh/pkg/netns/netnstest"
)

// writeFile replaces path's contents atomically (as editors and ConfigMap
// mounts do), so the source never reads half a file.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func nsYAML(name string, labels string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels: {%s}\n", name, labels)
}

func podYAML(name, ns, uid, node, labels string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  uid: %s\n  labels: {%s}\n"+
		"spec:\n  nodeName: %s\n  serviceAccountName: sa\n  containers: [{name: app, image: x}]\n", name, ns, uid, labels, node)
}

func docs(d ...string) string { return strings.Join(d, "---\n") }

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLocalSourceFeedsAgent(t *testing.T) {
	h := newAgentHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	podNS := netnstest.New(t, "lsrc")
	main := filepath.Join(dir, "mesh.yaml")
	writeFile(t, main, docs(nsYAML("demo", ""), podYAML("web", "demo", "u-web", "n1", "app: web"),
		podYAML("far", "demo", "u-far", "n2", "")))

	src, err := NewLocalSource(LocalSourceConfig{Dir: dir, NodeName: "n1", Sink: h.agent, Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	if !src.Loaded() {
		t.Fatal("not loaded after Start")
	}
	if known, err := src.SyncPod(ctx, "u-far"); known || err != nil {
		t.Fatalf("pod of another node known: %v %v", known, err)
	}
	if known, err := src.SyncPod(ctx, "u-web"); !known || err != nil {
		t.Fatalf("pod of this node unknown: %v %v", known, err)
	}
	// The CNI plugin reports the namespace; the namespace is not ambient yet.
	if err := h.agent.SetNetns(ctx, "u-web", podNS.Path); err != nil {
		t.Fatal(err)
	}
	if h.captured(t, podNS) {
		t.Fatal("captured in a non-ambient namespace")
	}

	captured := func(want bool) func() bool {
		return func() bool { return h.captured(t, podNS) == want && h.agent.IsEnrolled("u-web") == want }
	}
	writeFile(t, main, docs(nsYAML("demo", "istio.io/dataplane-mode: ambient"), podYAML("web", "demo", "u-web", "n1", "app: web")))
	eventually(t, "namespace label to enrol the pod", captured(true))

	// A malformed file keeps its last good contents. A second file appears
	// in the same change, so once its pod is known the bad file was read.
	writeFile(t, main, "apiVersion: v1\nkind: Namespace\nmetadata: {name: [\n")
	writeFile(t, filepath.Join(dir, "more.yaml"), podYAML("late", "demo", "u-late", "n1", ""))
	eventually(t, "second file", func() bool { k, _ := src.SyncPod(ctx, "u-late"); return k })
	if !captured(true)() {
		t.Fatal("malformed manifest dropped the last good state")
	}
	// Other kinds and a sub-directory are fine.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub", "x.yml"), "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")

	// The pod opts out with its own label.
	writeFile(t, main, docs(nsYAML("demo", "istio.io/dataplane-mode: ambient"), podYAML("web", "demo", "u-web", "n1", "istio.io/dataplane-mode: none")))
	eventually(t, "pod label to unenrol the pod", captured(false))
	// And back in; then the pod leaves the manifests.
	writeFile(t, main, docs(nsYAML("demo", "istio.io/dataplane-mode: ambient"), podYAML("web", "demo", "u-web", "n1", "")))
	eventually(t, "pod label removed", captured(true))
	writeFile(t, main, nsYAML("demo", "istio.io/dataplane-mode: ambient"))
	eventually(t, "pod deleted", func() bool {
		_, ok := h.agent.Status("u-web")
		return !ok && !h.captured(t, podNS)
	})
	// A namespace that disappears loses its labels.
	writeFile(t, filepath.Join(dir, "more.yaml"), podYAML("late", "demo", "u-late", "n1", ""))
	if err := os.Remove(main); err != nil {
		t.Fatal(err)
	}
	eventually(t, "namespace forgotten", func() bool {
		st, _ := h.agent.Status("u-late")
		h.agent.mu.Lock()
		defer h.agent.mu.Unlock()
		return st.Known && h.agent.namespaces["demo"] == nil
	})
}

func TestNewLocalSourceValidates(t *testing.T) {
	a := &Agent{}
	for _, cfg := range []LocalSourceConfig{
		{NodeName: "n", Sink: a},
		{Dir: "/x", Sink: a},
		{Dir: "/x", NodeName: "n"},
		{Dir: "/x", NodeName: "n", Sink: a, Debounce: -1},
	} {
		if _, err := NewLocalSource(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	src, err := NewLocalSource(LocalSourceConfig{Dir: filepath.Join(t.TempDir(), "missing"), NodeName: "n", Sink: a})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err == nil {
		src.Stop()
		t.Fatal("Start on a missing directory succeeded")
	}
}

// TestLocalSourceRetriesFailedEnrolment: a namespace label whose
// enrolment fails (the pod's netns is not reachable yet) is applied again
// until it takes.
func TestLocalSourceRetriesFailedEnrolment(t *testing.T) {
	h := newAgentHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	podNS := netnstest.New(t, "lretry")
	link := filepath.Join(t.TempDir(), "netns-link")
	main := filepath.Join(dir, "m.yaml")
	writeFile(t, main, docs(nsYAML("demo", ""), podYAML("web", "demo", "u-web", "n1", "")))
	src, err := NewLocalSource(LocalSourceConfig{Dir: dir, NodeName: "n1", Sink: h.agent,
		Debounce: 10 * time.Millisecond, RetryInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	if err := h.agent.SetNetns(ctx, "u-web", link); err != nil {
		t.Fatal(err) // not wanted yet: nothing is opened
	}
	writeFile(t, main, docs(nsYAML("demo", "istio.io/dataplane-mode: ambient"), podYAML("web", "demo", "u-web", "n1", "")))
	eventually(t, "failed enrolment queued for retry", src.pendingRetries)
	if err := os.Symlink(podNS.Path, link); err != nil {
		t.Fatal(err)
	}
	eventually(t, "retry to enrol", func() bool { return h.agent.IsEnrolled("u-web") && h.captured(t, podNS) })
	eventually(t, "retry queue drained", func() bool { return !src.pendingRetries() })
}
