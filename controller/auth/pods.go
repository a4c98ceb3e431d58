package auth

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// DefaultPodLookupTimeout bounds one APIPods lookup.
const DefaultPodLookupTimeout = 5 * time.Second

// APIPods is a PodLookup that GETs each pod from the API server (for tests
// and command-line tools; the controller uses its informer cache). Any
// error, including a timeout, reports the pod as absent.
type APIPods struct {
	// Client reads pods. Required.
	Client kubernetes.Interface
	// Timeout bounds one GET (DefaultPodLookupTimeout when zero).
	Timeout time.Duration
}

// Pod implements PodLookup.
func (a APIPods) Pod(namespace, name string) (*corev1.Pod, bool) {
	if a.Client == nil {
		return nil, false
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = DefaultPodLookupTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pod, err := a.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, false
	}
	return pod, true
}

// PodsFromLister adapts an informer's pod lister to PodLookup. The returned
// pods belong to the cache and must not be modified.
func PodsFromLister(l corelisters.PodLister) PodLookup {
	return listerPods{l: l}
}

type listerPods struct{ l corelisters.PodLister }

func (p listerPods) Pod(namespace, name string) (*corev1.Pod, bool) {
	pod, err := p.l.Pods(namespace).Get(name)
	if err != nil {
		return nil, false
	}
	return pod, true
}
