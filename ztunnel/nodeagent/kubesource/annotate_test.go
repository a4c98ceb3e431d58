package kubesource

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/zmesh/zmesh/pkg/kube/kubetest"
	"github.com/zmesh/zmesh/ztunnel/nodeagent"
)

// TestPatchRedirectionThroughStatus checks on the real API server that an
// annotation patch through pods/status takes effect, that removal works,
// and how a stale uid and a deleted pod answer.
func TestPatchRedirectionThroughStatus(t *testing.T) {
	c := kubetest.Clients(t)
	ctx := context.Background()
	ns := kubetest.Namespace(t, c, "nak-annot", nil)
	pod, err := c.Kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: map[string]string{"keep": "me"}},
		Spec:       corev1.PodSpec{NodeName: "nak-annot-node", Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	get := func() *corev1.Pod {
		t.Helper()
		p, err := c.Kube.CoreV1().Pods(ns).Get(ctx, "p", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		uid     types.UID
		enabled bool
		want    string // annotation afterwards; "" absent
		check   func(error) bool
	}{
		{"enable", pod.UID, true, AnnotationEnabled, nil},
		{"enable again", pod.UID, true, AnnotationEnabled, nil},
		{"stale uid", "00000000-0000-0000-0000-000000000000", false, AnnotationEnabled, func(err error) bool {
			return apierrors.IsInvalid(err)
		}},
		{"remove", pod.UID, false, "", nil},
		{"remove again", pod.UID, false, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := PatchRedirection(ctx, c.Kube, ns, "p", tt.uid, tt.enabled)
			if tt.check == nil && err != nil {
				t.Fatal(err)
			}
			if tt.check != nil && !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
			p := get()
			if got := p.Annotations[nodeagent.AnnotationRedirection]; got != tt.want {
				t.Errorf("annotation %q, want %q", got, tt.want)
			}
			if p.Annotations["keep"] != "me" {
				t.Errorf("other annotations changed: %v", p.Annotations)
			}
		})
	}
	if err := c.Kube.CoreV1().Pods(ns).Delete(ctx, "p", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	if err := PatchRedirection(ctx, c.Kube, ns, "p", pod.UID, true); !apierrors.IsNotFound(err) {
		t.Fatalf("patching a deleted pod: %v", err)
	}
}
