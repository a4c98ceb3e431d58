package kubesource

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zmesh/zmesh/pkg/kube/kubetest"
	"github.com/zmesh/zmesh/ztunnel/nodeagent"
)

// recAgent records what the source feeds it; enrolled decides IsEnrolled.
type recAgent struct {
	mu       sync.Mutex
	events   []string
	ns       map[string]map[string]string
	pods     map[string]nodeagent.Pod
	enrolled map[string]bool
}

func newRecAgent() *recAgent {
	return &recAgent{ns: map[string]map[string]string{}, pods: map[string]nodeagent.Pod{}, enrolled: map[string]bool{}}
}

func (a *recAgent) SetNamespace(_ context.Context, name string, labels map[string]string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, "ns "+name)
	a.ns[name] = maps.Clone(labels)
	return nil
}

func (a *recAgent) UpsertPod(_ context.Context, p nodeagent.Pod) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, "pod "+p.Namespace+"/"+p.Name)
	a.pods[p.UID] = p
	return nil
}

func (a *recAgent) DeletePod(_ context.Context, uid string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, "del "+uid)
	delete(a.pods, uid)
	return nil
}

func (a *recAgent) IsEnrolled(uid string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enrolled[uid]
}

func (a *recAgent) pod(uid string) (nodeagent.Pod, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pods[uid]
	return p, ok
}

// TestSourceFeedsTheAgent runs the source against the real API server with
// a recording agent (no root needed).
func TestSourceFeedsTheAgent(t *testing.T) {
	c := kubetest.Clients(t)
	ctx := context.Background()
	node := fmt.Sprintf("naks-src-%08x", rand.Uint32())
	ns := kubetest.Namespace(t, c, "naks-src", map[string]string{nodeagent.LabelDataplaneMode: nodeagent.ModeAmbient})
	pods := c.Kube.CoreV1().Pods(ns)
	mk := func(name, nodeName string, hostNet bool, phase corev1.PodPhase) *corev1.Pod {
		t.Helper()
		p, err := pods.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
			Spec:       corev1.PodSpec{NodeName: nodeName, HostNetwork: hostNet, Containers: []corev1.Container{{Name: "c", Image: "none"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if phase != "" {
			p.Status = corev1.PodStatus{Phase: phase, PodIP: "10.244.9.9", PodIPs: []corev1.PodIP{{IP: "10.244.9.9"}}}
			if p, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	mine := mk("mine", node, false, corev1.PodRunning)
	other := mk("other", node+"-x", false, "")
	hostNet := mk("hostnet", node, true, "")
	done := mk("done", node, false, corev1.PodSucceeded)

	agent := newRecAgent()
	s, err := New(Config{Client: c.Kube, NodeName: node, Agent: agent, SyncTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()

	t.Run("first view: namespaces before pods, only this node's live pods", func(t *testing.T) {
		agent.mu.Lock()
		events := slices.Clone(agent.events)
		agent.mu.Unlock()
		iNS := slices.Index(events, "ns "+ns)
		iPod := slices.Index(events, "pod "+ns+"/mine")
		if iNS < 0 || iPod < 0 || iNS > iPod {
			t.Fatalf("events %v", events)
		}
		p, _ := agent.pod(string(mine.UID))
		if p.Name != "mine" || p.ServiceAccount != "default" || p.Labels["app"] != "mine" || len(p.IPs) != 1 || p.IPs[0].String() != "10.244.9.9" {
			t.Errorf("pod %+v", p)
		}
		for _, x := range []*corev1.Pod{other, hostNet, done} {
			if _, ok := agent.pod(string(x.UID)); ok {
				t.Errorf("%s fed to the agent", x.Name)
			}
		}
	})
	t.Run("SyncPod", func(t *testing.T) {
		for _, tt := range []struct {
			uid  string
			want bool
		}{{string(mine.UID), true}, {string(other.UID), false}, {string(hostNet.UID), false}, {"nope", false}} {
			if known, err := s.SyncPod(ctx, tt.uid); err != nil || known != tt.want {
				t.Errorf("SyncPod(%s) = %v, %v", tt.uid, known, err)
			}
		}
	})
	eventually := func(what string, cond func() bool) {
		t.Helper()
		kubetest.Eventually(t, 15*time.Second, what, func() (bool, error) { return cond(), nil })
	}
	t.Run("label changes reach the agent", func(t *testing.T) {
		n, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Labels[nodeagent.LabelDataplaneMode] = nodeagent.ModeNone
		if _, err := c.Kube.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually("namespace label", func() bool {
			agent.mu.Lock()
			defer agent.mu.Unlock()
			return agent.ns[ns][nodeagent.LabelDataplaneMode] == nodeagent.ModeNone
		})
		p, _ := pods.Get(ctx, "mine", metav1.GetOptions{})
		p.Labels[nodeagent.LabelDataplaneMode] = nodeagent.ModeAmbient
		if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually("pod label", func() bool {
			p, _ := agent.pod(string(mine.UID))
			return p.Labels[nodeagent.LabelDataplaneMode] == nodeagent.ModeAmbient
		})
	})
	t.Run("annotation follows IsEnrolled once restored", func(t *testing.T) {
		agent.mu.Lock()
		agent.enrolled[string(mine.UID)] = true
		agent.mu.Unlock()
		s.PodChanged(nodeagent.Pod{Namespace: ns, Name: "mine"}, true)
		time.Sleep(300 * time.Millisecond)
		if p, _ := pods.Get(ctx, "mine", metav1.GetOptions{}); p.Annotations[nodeagent.AnnotationRedirection] != "" {
			t.Fatal("annotation written before Restored")
		}
		s.Restored()
		annotation := func() string {
			p, err := pods.Get(ctx, "mine", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return p.Annotations[nodeagent.AnnotationRedirection]
		}
		eventually("annotation written", func() bool { return annotation() == AnnotationEnabled })
		agent.mu.Lock()
		agent.enrolled[string(mine.UID)] = false
		agent.mu.Unlock()
		s.PodChanged(nodeagent.Pod{Namespace: ns, Name: "mine"}, false)
		eventually("annotation removed", func() bool { return annotation() == "" })
	})
	t.Run("pod terminates, is deleted, is recreated under its name", func(t *testing.T) {
		p, _ := pods.Get(ctx, "mine", metav1.GetOptions{})
		p.Status.Phase = corev1.PodFailed
		if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually("terminated pod deleted from the agent", func() bool { _, ok := agent.pod(string(mine.UID)); return !ok })
		if err := pods.Delete(ctx, "mine", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		again := mk("mine", node, false, corev1.PodRunning)
		eventually("recreated pod fed", func() bool { _, ok := agent.pod(string(again.UID)); return ok })
		if _, ok := agent.pod(string(mine.UID)); ok {
			t.Error("old uid still held")
		}
	})
}
