package rootcm_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/controller/rootcm"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
	"github.com/zmesh/zmesh/pkg/mtls"
)

func rootPEM(t *testing.T) []byte {
	t.Helper()
	m, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return mtls.EncodeCertificatesPEM(m.Root)
}

// running is one Run of a Publisher in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(p *rootcm.Publisher) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	return r
}

// stop cancels Run and requires it to return promptly with nil.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// published reports whether ns holds the ConfigMap with root and the label.
func published(c *kube.Clients, ns string, root []byte) (bool, error) {
	cm, err := c.Kube.CoreV1().ConfigMaps(ns).Get(context.Background(), rootcm.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	if cm.Data[rootcm.DataKey] != string(root) {
		return false, fmt.Errorf("data %q", cm.Data[rootcm.DataKey])
	}
	if cm.Labels[rootcm.ConfigLabel] != "true" {
		return false, fmt.Errorf("labels %v", cm.Labels)
	}
	return true, nil
}

func waitPublished(t *testing.T, c *kube.Clients, ns string, root []byte) {
	t.Helper()
	kubetest.Eventually(t, 15*time.Second, "ConfigMap in "+ns, func() (bool, error) { return published(c, ns, root) })
}

func TestPublisher(t *testing.T) {
	c := kubetest.Clients(t)
	// Only namespaces carrying this test's label are managed, so the test
	// leaves the shared API server's other namespaces alone.
	sel := map[string]string{"zmesh-rootcm-test": fmt.Sprintf("run-%d", time.Now().UnixNano())}
	root := rootPEM(t)
	p, err := rootcm.New(rootcm.Options{Client: c.Kube, RootPEM: root, NamespaceSelector: labels.SelectorFromSet(sel)})
	if err != nil {
		t.Fatal(err)
	}
	before := kubetest.Namespace(t, c, "rootcm-before", sel)
	unselected := kubetest.Namespace(t, c, "rootcm-other", nil)

	r := start(p)
	waitPublished(t, c, before, root)
	after := kubetest.Namespace(t, c, "rootcm-after", sel)
	waitPublished(t, c, after, root)

	if err := p.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("concurrent Run: %v", err)
	}

	cms := c.Kube.CoreV1().ConfigMaps(before)
	t.Run("edited data repaired", func(t *testing.T) {
		cm, err := cms.Get(context.Background(), rootcm.ConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[rootcm.DataKey] = "tampered"
		cm.Data["extra"] = "kept"
		if _, err := cms.Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPublished(t, c, before, root)
		cm, err = cms.Get(context.Background(), rootcm.ConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data["extra"] != "kept" {
			t.Fatalf("repair dropped other data: %v", cm.Data)
		}
	})
	t.Run("removed label repaired", func(t *testing.T) {
		cm, err := cms.Get(context.Background(), rootcm.ConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		delete(cm.Labels, rootcm.ConfigLabel)
		if _, err := cms.Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPublished(t, c, before, root)
	})
	t.Run("deleted recreated", func(t *testing.T) {
		if err := cms.Delete(context.Background(), rootcm.ConfigMapName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPublished(t, c, before, root)
	})
	t.Run("new root rewritten everywhere", func(t *testing.T) {
		root2 := rootPEM(t)
		if err := p.SetRoot(root2); err != nil {
			t.Fatal(err)
		}
		waitPublished(t, c, before, root2)
		waitPublished(t, c, after, root2)
		if err := p.SetRoot(root); err != nil {
			t.Fatal(err)
		}
		waitPublished(t, c, before, root)
		waitPublished(t, c, after, root)
	})
	t.Run("unselected namespace untouched", func(t *testing.T) {
		_, err := c.Kube.CoreV1().ConfigMaps(unselected).Get(context.Background(), rootcm.ConfigMapName, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("unselected namespace: %v", err)
		}
	})

	r.stop(t)
	t.Run("stopped publisher does nothing", func(t *testing.T) {
		if err := cms.Delete(context.Background(), rootcm.ConfigMapName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		late := kubetest.Namespace(t, c, "rootcm-late", sel)
		time.Sleep(2 * time.Second)
		for _, ns := range []string{before, late} {
			if _, err := c.Kube.CoreV1().ConfigMaps(ns).Get(context.Background(), rootcm.ConfigMapName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("%s: ConfigMap written after Run returned (%v)", ns, err)
			}
		}
		// Started again (a new leadership term), it catches up.
		r2 := start(p)
		defer r2.stop(t)
		waitPublished(t, c, before, root)
		waitPublished(t, c, late, root)
	})
}

func TestPublisherRestarts(t *testing.T) {
	c := kubetest.Clients(t)
	sel := map[string]string{"zmesh-rootcm-test": fmt.Sprintf("restart-%d", time.Now().UnixNano())}
	root := rootPEM(t)
	p, err := rootcm.New(rootcm.Options{Client: c.Kube, RootPEM: root, NamespaceSelector: labels.SelectorFromSet(sel)})
	if err != nil {
		t.Fatal(err)
	}
	ns := kubetest.Namespace(t, c, "rootcm-restart", sel)
	// Quick start/stop cycles, some stopped before the caches sync.
	for i := range 5 {
		r := start(p)
		if i%2 == 1 {
			waitPublished(t, c, ns, root)
		}
		r.stop(t)
	}
	// Concurrent stops and starts from several goroutines never run two
	// publishers at once and always return.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_ = p.Run(ctx)
		}()
	}
	wg.Wait()
}

func TestNewValidates(t *testing.T) {
	c := kubetest.Clients(t)
	tests := []struct {
		name string
		opts rootcm.Options
	}{
		{name: "no client", opts: rootcm.Options{RootPEM: rootPEM(t)}},
		{name: "no root", opts: rootcm.Options{Client: c.Kube}},
		{name: "garbage root", opts: rootcm.Options{Client: c.Kube, RootPEM: []byte("junk")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := rootcm.New(tt.opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	p, err := rootcm.New(rootcm.Options{Client: c.Kube, RootPEM: rootPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetRoot([]byte("junk")); err == nil {
		t.Fatal("SetRoot accepted garbage")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestTerminatingNamespaceSkipped holds a namespace in Terminating with a
// finalizer and checks the publisher sends no write there (the API server
// would refuse it anyway).
func TestTerminatingNamespaceSkipped(t *testing.T) {
	c := kubetest.Clients(t)
	sel := map[string]string{"zmesh-rootcm-test": fmt.Sprintf("term-%d", time.Now().UnixNano())}
	root := rootPEM(t)
	ctx := context.Background()
	ns, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "rootcm-term-", Labels: sel, Finalizers: []string{"zmesh.io/test-hold"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	release := func() {
		cur, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if err != nil {
			return
		}
		cur.Finalizers = nil
		_, _ = c.Kube.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{})
	}
	t.Cleanup(func() {
		release()
		_ = c.Kube.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
	})
	if err := c.Kube.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, "namespace terminating", func() (bool, error) {
		cur, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return cur.Status.Phase == corev1.NamespaceTerminating, nil
	})
	live := kubetest.Namespace(t, c, "rootcm-live", sel)

	// Record every ConfigMap write the publisher sends.
	var mu sync.Mutex
	var writes []string
	cfg := rest.CopyConfig(c.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method != http.MethodGet && strings.Contains(r.URL.Path, "/configmaps") {
				mu.Lock()
				writes = append(writes, r.Method+" "+r.URL.Path)
				mu.Unlock()
			}
			return rt.RoundTrip(r)
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := rootcm.New(rootcm.Options{Client: client, RootPEM: root, NamespaceSelector: labels.SelectorFromSet(sel)})
	if err != nil {
		t.Fatal(err)
	}
	r := start(p)
	defer r.stop(t)
	waitPublished(t, c, live, root)
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	got := strings.Join(writes, "\n")
	mu.Unlock()
	if strings.Contains(got, "/namespaces/"+ns.Name+"/") {
		t.Fatalf("publisher wrote to the terminating namespace:\n%s", got)
	}
	if !strings.Contains(got, "/namespaces/"+live+"/") {
		t.Fatalf("no write recorded for %s (the recorder is broken):\n%s", live, got)
	}
	if _, err := c.Kube.CoreV1().ConfigMaps(ns.Name).Get(ctx, rootcm.ConfigMapName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("terminating namespace got a ConfigMap (%v)", err)
	}
}
