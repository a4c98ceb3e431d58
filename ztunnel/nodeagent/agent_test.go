package nodeagent

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zmesh/zmesh/pkg/netns/netnstest"
	"github.com/zmesh/zmesh/pkg/zds"
	"github.com/zmesh/zmesh/ztunnel/redirect"
)

// agentHarness runs an Agent with the real Redirector and a real ZDS server
// (with no ztunnel connected, pods wait in its snapshot).
type agentHarness struct {
	agent   *Agent
	rd      *redirect.Redirector
	mu      sync.Mutex
	changes []change
}

func newAgentHarness(t *testing.T) *agentHarness {
	t.Helper()
	netnstest.RequireRoot(t)
	rd, err := redirect.New(redirect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := zds.NewServer(zds.ServerConfig{Path: filepath.Join(t.TempDir(), "ztunnel.sock")})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	h := &agentHarness{rd: rd}
	h.agent, err = New(Config{Redirector: rd, Workloads: srv, OnChange: func(p Pod, enrolled bool) {
		h.mu.Lock()
		h.changes = append(h.changes, change{p, enrolled})
		h.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// captured reports whether the pod netns holds the redirection rules.
func (h *agentHarness) captured(t *testing.T, ns *netnstest.NS) bool {
	t.Helper()
	err := h.rd.Check(ns.File)
	if err != nil && !errors.Is(err, redirect.ErrNotInstalled) {
		t.Fatal(err)
	}
	return err == nil
}

func TestEnrolmentFollowsLabels(t *testing.T) {
	h := newAgentHarness(t)
	ctx := context.Background()
	ns := netnstest.New(t, "agent")
	pod := Pod{UID: "uid-1", Name: "sleep-0", Namespace: "demo", ServiceAccount: "sleep", Labels: map[string]string{"app": "sleep"}}

	// The CNI plugin reports the netns before the source knows the pod: nothing yet.
	if err := h.agent.SetNetns(ctx, pod.UID, ns.Path); err != nil {
		t.Fatal(err)
	}
	if err := h.agent.UpsertPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if h.captured(t, ns) || h.agent.IsEnrolled(pod.UID) {
		t.Fatal("pod in an unlabelled namespace was captured")
	}

	steps := []struct {
		name   string
		apply  func() error
		wanted bool
	}{
		{"namespace labelled ambient", func() error {
			return h.agent.SetNamespace(ctx, "demo", map[string]string{LabelDataplaneMode: ModeAmbient})
		}, true},
		{"pod opts out with none", func() error {
			p := pod
			p.Labels = map[string]string{LabelDataplaneMode: ModeNone}
			return h.agent.UpsertPod(ctx, p)
		}, false},
		{"pod label removed", func() error { return h.agent.UpsertPod(ctx, pod) }, true},
		{"namespace label removed", func() error { return h.agent.SetNamespace(ctx, "demo", nil) }, false},
		{"pod labelled ambient itself", func() error {
			p := pod
			p.Labels = map[string]string{LabelDataplaneMode: ModeAmbient}
			return h.agent.UpsertPod(ctx, p)
		}, true},
		{"pod deleted", func() error { return h.agent.DeletePod(ctx, pod.UID) }, false},
	}
	for _, st := range steps {
		if err := st.apply(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := h.captured(t, ns); got != st.wanted {
			t.Fatalf("%s: captured=%v, want %v", st.name, got, st.wanted)
		}
		if got := h.agent.IsEnrolled(pod.UID); got != st.wanted && st.name != "pod deleted" {
			t.Fatalf("%s: enrolled=%v", st.name, got)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var seq []bool
	for _, c := range h.changes {
		seq = append(seq, c.enrolled)
	}
	if want := []bool{true, false, true, false, true, false}; len(seq) != len(want) {
		t.Fatalf("changes %v, want %v", seq, want)
	}
}

func TestEnrolFailsClosedWithoutNetns(t *testing.T) {
	h := newAgentHarness(t)
	ctx := context.Background()
	if err := h.agent.SetNamespace(ctx, "demo", map[string]string{LabelDataplaneMode: ModeAmbient}); err != nil {
		t.Fatal(err)
	}
	if err := h.agent.UpsertPod(ctx, Pod{UID: "u", Name: "p", Namespace: "demo"}); err != nil {
		t.Fatal(err)
	}
	err := h.agent.SetNetns(ctx, "u", "/run/netns/does-not-exist")
	if err == nil || h.agent.IsEnrolled("u") {
		t.Fatalf("enrolment with a missing netns: %v", err)
	}
}
