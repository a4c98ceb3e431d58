package app

import (
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zmesh/zmesh/controller/index"
)

// TestPodsOnNode: the CA lets a node's ztunnel impersonate the service
// accounts of the pods scheduled on that node that have not finished,
// including a pod whose IP the kubelet has not reported yet.
func TestPodsOnNode(t *testing.T) {
	pod := func(name, node, sa string, phase corev1.PodPhase, ip string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa}, Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
	}
	s := newSnapshot(&index.Output{}, []*corev1.Pod{
		pod("running", "n1", "a", corev1.PodRunning, "10.0.0.1"),
		pod("no-ip-yet", "n1", "b", corev1.PodPending, ""),
		pod("finished", "n1", "c", corev1.PodSucceeded, "10.0.0.3"),
		pod("failed", "n2", "c", corev1.PodFailed, ""),
		pod("unscheduled", "", "d", corev1.PodPending, ""),
		pod("default-sa", "n2", "", corev1.PodRunning, "10.0.0.6"),
		nil,
	})
	got := slices.Sorted(maps.Keys(s.podsOnNode()))
	want := []string{"n1/ns/a", "n1/ns/b", "n2/ns/default"}
	if !slices.Equal(got, want) {
		t.Fatalf("pods on nodes %v, want %v", got, want)
	}
}
