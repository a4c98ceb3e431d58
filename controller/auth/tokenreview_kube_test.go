package auth_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
)

// countingClient returns a client for the test API server that counts the
// TokenReviews it sends.
func countingClient(t *testing.T, c *kube.Clients) (kubernetes.Interface, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	cfg := rest.CopyConfig(c.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tokenreviews") {
				n.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k, &n
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// bearer returns a context carrying the token as incoming gRPC metadata.
func bearer(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
}

func createSA(t *testing.T, c *kube.Clients, ns, name string) {
	t.Helper()
	_, err := c.Kube.CoreV1().ServiceAccounts(ns).Create(context.Background(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func createPod(t *testing.T, c *kube.Clients, ns, name, sa, node string) *corev1.Pod {
	t.Helper()
	pod, err := c.Kube.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			NodeName:           node,
			Containers:         []corev1.Container{{Name: "app", Image: "example.invalid/app"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// forceDelete deletes a pod at once (there is no kubelet to finish a
// graceful deletion) and waits until it is gone.
func forceDelete(t *testing.T, c *kube.Clients, pod *corev1.Pod) {
	t.Helper()
	zero := int64(0)
	err := c.Kube.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, "pod deleted", func() (bool, error) {
		_, err := c.Kube.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
}

// issueToken asks the TokenRequest API for a token of sa, bound to pod when
// it is not nil.
func issueToken(t *testing.T, c *kube.Clients, ns, sa string, pod *corev1.Pod, audiences ...string) string {
	t.Helper()
	exp := int64(600)
	req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &exp}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	res, err := c.Kube.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status.Token
}

// stalePods is a PodLookup that keeps answering with pods that may no
// longer exist, like an informer cache that lags behind.
type stalePods map[string]*corev1.Pod

func (s stalePods) Pod(namespace, name string) (*corev1.Pod, bool) {
	p, ok := s[namespace+"/"+name]
	return p, ok
}

func TestTokenReviewKube(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "authtr", nil)
	node := "node-" + ns
	createSA(t, c, ns, "app")
	createSA(t, c, ns, "ztunnel")
	appPod := createPod(t, c, ns, "app-1", "app", node)
	zPod := createPod(t, c, ns, "ztunnel-1", "ztunnel", node)
	unscheduled := createPod(t, c, ns, "app-2", "app", "")

	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	client, reviews := countingClient(t, c)
	newAuth := func(t *testing.T, pods auth.PodLookup) *auth.TokenReview {
		t.Helper()
		a, err := auth.NewTokenReview(auth.TokenReviewOptions{Client: client, TrustDomain: td, Pods: pods})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	apiPods := auth.APIPods{Client: c.Kube}
	appID := "spiffe://cluster.local/ns/" + ns + "/sa/app"
	zID := "spiffe://cluster.local/ns/" + ns + "/sa/ztunnel"

	tests := []struct {
		name    string
		ctx     context.Context
		want    auth.Caller
		wantErr string
	}{
		{name: "pod-bound app token", ctx: bearer(issueToken(t, c, ns, "app", appPod, "istio-ca")), want: auth.Caller{Identity: appID, Node: node}},
		{name: "pod-bound ztunnel token", ctx: bearer(issueToken(t, c, ns, "ztunnel", zPod, "istio-ca")), want: auth.Caller{Identity: zID, Node: node}},
		{name: "extra audiences", ctx: bearer(issueToken(t, c, ns, "app", appPod, "other", "istio-ca")), want: auth.Caller{Identity: appID, Node: node}},
		{name: "unscheduled pod", ctx: bearer(issueToken(t, c, ns, "app", unscheduled, "istio-ca")), want: auth.Caller{Identity: appID}},
		{name: "not pod-bound", ctx: bearer(issueToken(t, c, ns, "ztunnel", nil, "istio-ca")), want: auth.Caller{Identity: zID}},
		{name: "wrong audience", ctx: bearer(issueToken(t, c, ns, "app", appPod, "other")), wantErr: "not authenticated"},
		{name: "api server audience", ctx: bearer(issueToken(t, c, ns, "app", appPod)), wantErr: "not authenticated"},
		{name: "garbage token", ctx: bearer("not-a-token"), wantErr: "not authenticated"},
		{name: "truncated token", ctx: bearer(issueToken(t, c, ns, "app", appPod, "istio-ca")[:40]), wantErr: "not authenticated"},
		{name: "static admin token", ctx: bearer("admin-token"), wantErr: "auth: "},
		{name: "no header", ctx: context.Background(), wantErr: "no request metadata"},
	}
	a := newAuth(t, apiPods)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Authenticate(tt.ctx)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("authenticated as %+v", got)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}

	t.Run("cache hit, then deleted pod refused", func(t *testing.T) {
		pod := createPod(t, c, ns, "short-lived", "app", node)
		ctx := bearer(issueToken(t, c, ns, "app", pod, "istio-ca"))
		a := newAuth(t, apiPods)
		before := reviews.Load()
		for range 3 {
			got, err := a.Authenticate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got != (auth.Caller{Identity: appID, Node: node}) {
				t.Fatalf("got %+v", got)
			}
		}
		if n := reviews.Load() - before; n != 1 {
			t.Fatalf("%d TokenReviews for three calls with one token, want 1 (cached)", n)
		}
		forceDelete(t, c, pod)
		before = reviews.Load()
		if got, err := a.Authenticate(ctx); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("deleted pod's token: got %+v, %v; want refusal by the pod re-check", got, err)
		}
		if n := reviews.Load() - before; n != 0 {
			t.Fatalf("%d TokenReviews, want the cached review to be re-checked without one", n)
		}

		// A pod recreated under the same name has another UID.
		createPod(t, c, ns, "short-lived", "app", node)
		if got, err := a.Authenticate(ctx); err == nil || !strings.Contains(err.Error(), "UID") {
			t.Fatalf("recreated pod: got %+v, %v; want UID mismatch", got, err)
		}

		// Even with a pod cache that still shows the old pod, the API
		// server refuses the token of a deleted pod, once its own cache of
		// successful authentications (10 s in kube-apiserver) has expired:
		// until then only the pod re-check above protects.
		stale, err := auth.NewTokenReview(auth.TokenReviewOptions{
			Client: client, TrustDomain: td, Pods: stalePods{ns + "/short-lived": pod}, CacheTTL: -1,
		})
		if err != nil {
			t.Fatal(err)
		}
		kubetest.Eventually(t, 20*time.Second, "API server refuses the deleted pod's token", func() (bool, error) {
			_, err := stale.Authenticate(ctx)
			if err == nil {
				return false, nil
			}
			return strings.Contains(err.Error(), "not authenticated"), err
		})
	})

	t.Run("terminal pod refused", func(t *testing.T) {
		pod := createPod(t, c, ns, "finished", "app", node)
		ctx := bearer(issueToken(t, c, ns, "app", pod, "istio-ca"))
		a := newAuth(t, apiPods)
		if _, err := a.Authenticate(ctx); err != nil {
			t.Fatal(err)
		}
		pod.Status.Phase = corev1.PodSucceeded
		if _, err := c.Kube.CoreV1().Pods(ns).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, err := a.Authenticate(ctx); err == nil || !strings.Contains(err.Error(), "Succeeded") {
			t.Fatalf("terminal pod: got %+v, %v", got, err)
		}
	})

	t.Run("informer pod lookup", func(t *testing.T) {
		factory := informers.NewSharedInformerFactoryWithOptions(c.Kube, 0, informers.WithNamespace(ns))
		lister := factory.Core().V1().Pods().Lister()
		stop := make(chan struct{})
		defer func() {
			close(stop)
			factory.Shutdown()
		}()
		factory.Start(stop)
		for typ, ok := range factory.WaitForCacheSync(stop) {
			if !ok {
				t.Fatalf("%v cache not synced", typ)
			}
		}
		a := newAuth(t, auth.PodsFromLister(lister))
		got, err := a.Authenticate(bearer(issueToken(t, c, ns, "app", appPod, "istio-ca")))
		if err != nil {
			t.Fatal(err)
		}
		if got != (auth.Caller{Identity: appID, Node: node}) {
			t.Fatalf("got %+v", got)
		}
	})

	t.Run("custom audience", func(t *testing.T) {
		a, err := auth.NewTokenReview(auth.TokenReviewOptions{Client: client, TrustDomain: td, Pods: apiPods, Audiences: []string{"zmesh"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Authenticate(bearer(issueToken(t, c, ns, "app", appPod, "zmesh"))); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Authenticate(bearer(issueToken(t, c, ns, "app", appPod, "istio-ca"))); err == nil {
			t.Fatal("istio-ca token accepted by an authenticator for audience zmesh")
		}
	})
}
