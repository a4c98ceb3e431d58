package zmeshctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/zmesh/zmesh/pkg/kube"
)

// ztunnelAdminPort is where a ztunnel serves /config_dump (on its pod's
// localhost).
const ztunnelAdminPort = 15000

// findZtunnel picks the ztunnel pod to read: pod ("name" or
// "name.namespace") when given, else the one on node, else the first running
// one in ns (label app=ztunnel).
func findZtunnel(ctx context.Context, c *kube.Clients, ns, pod, node string) (*corev1.Pod, error) {
	if pod != "" {
		name, podNS := pod, ns
		if i := strings.LastIndexByte(pod, '.'); i > 0 {
			name, podNS = pod[:i], pod[i+1:]
		}
		p, err := c.Kube.CoreV1().Pods(podNS).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("pod %s/%s not found", podNS, name)
		}
		if err != nil {
			return nil, explain(c, fmt.Errorf("reading pod %s/%s: %w", podNS, name, err))
		}
		return p, nil
	}
	list, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=ztunnel"})
	if err != nil {
		return nil, explain(c, fmt.Errorf("listing ztunnel pods in %s: %w", ns, err))
	}
	var candidate *corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if node != "" && p.Spec.NodeName != node {
			continue
		}
		if p.Status.Phase == corev1.PodRunning {
			return p, nil
		}
		if candidate == nil {
			candidate = p
		}
	}
	if candidate != nil {
		return candidate, nil
	}
	where := "namespace " + ns
	if node != "" {
		where += " on node " + node
	}
	return nil, fmt.Errorf("no ztunnel pod (label app=ztunnel) in %s; name one, or read a ztunnel directly with --admin-addr", where)
}

// adminForward is a local port forwarded to a ztunnel's admin port.
// Close stops it and waits for its goroutine.
type adminForward struct {
	addr   string
	errOut *lockedBuffer // what the forwarder reported
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func (f *adminForward) Addr() string { return f.addr }

// Errors returns what the forwarder reported so far (for example the
// kubelet refusing a stream).
func (f *adminForward) Errors() string { return strings.TrimSpace(f.errOut.String()) }

func (f *adminForward) Close() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
}

// forwardAdmin port-forwards a loopback port to pod's admin port through
// the API server (and the pod's kubelet).
func forwardAdmin(ctx context.Context, c *kube.Clients, pod *corev1.Pod) (*adminForward, error) {
	fail := func(err error) error {
		return fmt.Errorf("cannot port-forward to ztunnel %s/%s port %d (use --admin-addr to read a ztunnel directly): %w",
			pod.Namespace, pod.Name, ztunnelAdminPort, err)
	}
	if pod.Spec.NodeName == "" {
		return nil, fail(errors.New("the pod is not scheduled to a node"))
	}
	transport, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return nil, fail(err)
	}
	u := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	f := &adminForward{errOut: &lockedBuffer{}, stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(ztunnelAdminPort)},
		f.stop, ready, nil, f.errOut)
	if err != nil {
		return nil, fail(err)
	}
	errc := make(chan error, 1)
	go func() {
		defer close(f.done)
		errc <- pf.ForwardPorts()
	}()
	select {
	case <-ready:
	case err := <-errc:
		if err == nil {
			err = errors.New("port-forward ended before it was ready")
		}
		if msg := f.Errors(); msg != "" {
			err = fmt.Errorf("%w (%s)", err, msg)
		}
		return nil, fail(explain(c, err))
	case <-ctx.Done():
		f.Close()
		return nil, fail(ctx.Err())
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		f.Close()
		return nil, fail(fmt.Errorf("no local port: %w", err))
	}
	f.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local)))
	return f, nil
}

// lockedBuffer lets the port forwarder write errors from its goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
