package auth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/zmesh/zmesh/controller/auth"
)

// reviewServer is a loopback HTTP server answering TokenReviews from a
// table of statuses keyed by token, for the cases a real API server never
// produces (mismatched audiences, odd extras).
type reviewServer struct {
	mu       sync.Mutex
	statuses map[string]authnv1.TokenReviewStatus
	// failing tokens get a 500 instead of a review.
	failing  map[string]bool
	calls    atomic.Int64
	lastSpec authnv1.TokenReviewSpec
	// gate, when set, holds every review until it is closed; inflight and
	// peak count the reviews held.
	gate           chan struct{}
	inflight, peak atomic.Int64
}

func newReviewServer(t *testing.T) (*reviewServer, kubernetes.Interface) {
	t.Helper()
	rs := &reviewServer{statuses: map[string]authnv1.TokenReviewStatus{}, failing: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.NotFound(w, r)
			return
		}
		var tr authnv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rs.calls.Add(1)
		if rs.gate != nil {
			n := rs.inflight.Add(1)
			for p := rs.peak.Load(); n > p && !rs.peak.CompareAndSwap(p, n); p = rs.peak.Load() {
			}
			<-rs.gate
			rs.inflight.Add(-1)
		}
		rs.mu.Lock()
		rs.lastSpec = tr.Spec
		tr.Status = rs.statuses[tr.Spec.Token]
		failing := rs.failing[tr.Spec.Token]
		rs.mu.Unlock()
		if failing {
			http.Error(w, "etcd unavailable", http.StatusInternalServerError)
			return
		}
		tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&tr)
	}))
	t.Cleanup(srv.Close)
	k, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, QPS: 1000, Burst: 1000, ContentConfig: rest.ContentConfig{
		ContentType: "application/json", AcceptContentTypes: "application/json",
	}})
	if err != nil {
		t.Fatal(err)
	}
	return rs, k
}

func (rs *reviewServer) set(token string, st authnv1.TokenReviewStatus) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.statuses[token] = st
}

func (rs *reviewServer) setFailing(token string, failing bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.failing[token] = failing
}

// podTable is a PodLookup over a mutable map.
type podTable struct {
	mu   sync.Mutex
	pods map[string]*corev1.Pod
}

func (p *podTable) Pod(namespace, name string) (*corev1.Pod, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pod, ok := p.pods[namespace+"/"+name]
	return pod, ok
}

func (p *podTable) put(pod *corev1.Pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pods[pod.Namespace+"/"+pod.Name] = pod
}

func testPod(ns, name, uid, sa, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: node},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func saStatus(ns, sa string, extra map[string]authnv1.ExtraValue, audiences ...string) authnv1.TokenReviewStatus {
	if len(audiences) == 0 {
		audiences = []string{"istio-ca"}
	}
	return authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     audiences,
		User:          authnv1.UserInfo{Username: "system:serviceaccount:" + ns + ":" + sa, Extra: extra},
	}
}

func podExtra(name, uid, node string) map[string]authnv1.ExtraValue {
	e := map[string]authnv1.ExtraValue{auth.ExtraPodName: {name}, auth.ExtraPodUID: {uid}}
	if node != "" {
		e[auth.ExtraNodeName] = authnv1.ExtraValue{node}
	}
	return e
}

func TestTokenReviewDecisions(t *testing.T) {
	rs, client := newReviewServer(t)
	pods := &podTable{pods: map[string]*corev1.Pod{}}
	pods.put(testPod("app", "a-1", "uid-1", "app", "node-1", corev1.PodRunning))
	pods.put(testPod("app", "failed", "uid-2", "app", "node-1", corev1.PodFailed))
	pods.put(testPod("app", "other-sa", "uid-3", "web", "node-1", corev1.PodRunning))
	pods.put(testPod("app", "default-sa", "uid-4", "", "node-2", corev1.PodPending))
	gone := testPod("app", "gone-long-ago", "uid-5", "app", "node-1", corev1.PodRunning)
	gone.DeletionTimestamp = &metav1.Time{Time: time.Now().Add(-2 * time.Minute)}
	pods.put(gone)
	stopping := testPod("app", "stopping", "uid-6", "app", "node-1", corev1.PodRunning)
	stopping.DeletionTimestamp = &metav1.Time{Time: time.Now().Add(30 * time.Second)}
	pods.put(stopping)

	tests := []struct {
		name    string
		status  authnv1.TokenReviewStatus
		want    auth.Caller
		wantErr string
	}{
		{name: "pod-bound", status: saStatus("app", "app", podExtra("a-1", "uid-1", "node-1")),
			want: auth.Caller{Identity: "spiffe://cluster.local/ns/app/sa/app", Node: "node-1"}},
		{name: "pod-bound without node claim", status: saStatus("app", "app", podExtra("a-1", "uid-1", "")),
			want: auth.Caller{Identity: "spiffe://cluster.local/ns/app/sa/app", Node: "node-1"}},
		{name: "pod of the default service account", status: saStatus("app", "default", podExtra("default-sa", "uid-4", "node-2")),
			want: auth.Caller{Identity: "spiffe://cluster.local/ns/app/sa/default", Node: "node-2"}},
		{name: "not pod-bound", status: saStatus("app", "app", nil),
			want: auth.Caller{Identity: "spiffe://cluster.local/ns/app/sa/app"}},
		{name: "node-bound only", status: saStatus("app", "app", map[string]authnv1.ExtraValue{auth.ExtraNodeName: {"node-1"}}),
			want: auth.Caller{Identity: "spiffe://cluster.local/ns/app/sa/app"}},
		{name: "one of several audiences", status: saStatus("app", "app", nil, "x", "istio-ca"),
			want: auth.Caller{Identity: "spiffe://cluster.local/ns/app/sa/app"}},
		{name: "not authenticated", status: authnv1.TokenReviewStatus{Error: "token expired"}, wantErr: "token expired"},
		{name: "audience not requested", status: saStatus("app", "app", nil, "kubernetes"), wantErr: "audiences"},
		{name: "no audiences", status: authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "system:serviceaccount:app:app"}}, wantErr: "audiences"},
		{name: "user", status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"istio-ca"}, User: authnv1.UserInfo{Username: "admin"}}, wantErr: "not a service account"},
		{name: "malformed service account", status: saStatus("app", "", nil), wantErr: "malformed"},
		{name: "service account with colon", status: saStatus("app", "a:b", nil), wantErr: "malformed"},
		{name: "bad SPIFFE path", status: saStatus("a%b", "app", nil), wantErr: "service account a%b/app"},
		{name: "node mismatch", status: saStatus("app", "app", podExtra("a-1", "uid-1", "node-9")), wantErr: "differs"},
		{name: "uid mismatch", status: saStatus("app", "app", podExtra("a-1", "uid-9", "node-1")), wantErr: "UID"},
		{name: "pod missing", status: saStatus("app", "app", podExtra("gone", "uid-1", "node-1")), wantErr: "does not exist"},
		{name: "pod in another namespace", status: saStatus("web", "app", podExtra("a-1", "uid-1", "node-1")), wantErr: "does not exist"},
		{name: "pod in its grace period", status: saStatus("app", "app", podExtra("stopping", "uid-6", "node-1")),
			want: auth.Caller{Identity: "spiffe://cluster.local/ns/app/sa/app", Node: "node-1"}},
		{name: "pod deleted long ago", status: saStatus("app", "app", podExtra("gone-long-ago", "uid-5", "node-1")), wantErr: "was deleted"},
		{name: "terminal pod", status: saStatus("app", "app", podExtra("failed", "uid-2", "node-1")), wantErr: "Failed"},
		{name: "pod of another service account", status: saStatus("app", "app", podExtra("other-sa", "uid-3", "node-1")), wantErr: "runs as service account"},
		{name: "pod name without uid", status: saStatus("app", "app", map[string]authnv1.ExtraValue{auth.ExtraPodName: {"a-1"}}), wantErr: "without its"},
		{name: "uid without pod name", status: saStatus("app", "app", map[string]authnv1.ExtraValue{auth.ExtraPodUID: {"uid-1"}}), wantErr: "without its"},
		{name: "two pod names", status: saStatus("app", "app", map[string]authnv1.ExtraValue{auth.ExtraPodName: {"a-1", "b"}, auth.ExtraPodUID: {"uid-1"}}), wantErr: "2 values"},
		{name: "two node names", status: saStatus("app", "app", map[string]authnv1.ExtraValue{auth.ExtraPodName: {"a-1"}, auth.ExtraPodUID: {"uid-1"}, auth.ExtraNodeName: {"node-1", "node-2"}}), wantErr: "2 values"},
	}
	a, err := auth.NewTokenReview(auth.TokenReviewOptions{
		Client:      client,
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Pods:        pods,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := fmt.Sprintf("token-%d", i)
			rs.set(token, tt.status)
			for range 2 { // the second call may come from the cache: same answer
				got, err := a.Authenticate(bearer(token))
				if tt.wantErr != "" {
					if err == nil {
						t.Fatalf("authenticated as %+v", got)
					}
					if !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("error %q does not contain %q", err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
			}
		})
	}
	rs.mu.Lock()
	aud := rs.lastSpec.Audiences
	rs.mu.Unlock()
	if len(aud) != 1 || aud[0] != "istio-ca" {
		t.Fatalf("requested audiences %q, want [istio-ca]", aud)
	}
}

// jwt builds an unsigned token whose payload is claims.
func jwt(claims string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(claims)) + ".sig"
}

// testClock is a clock the test moves by hand, from testClockStart.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

var testClockStart = time.Unix(1_000_000, 0)

func newTestClock() *testClock { return &testClock{t: testClockStart} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *testClock) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = testClockStart
}

func TestTokenReviewCache(t *testing.T) {
	rs, client := newReviewServer(t)
	pods := &podTable{pods: map[string]*corev1.Pod{}}
	pods.put(testPod("app", "a-1", "uid-1", "app", "node-1", corev1.PodRunning))
	clk := newTestClock()
	st := saStatus("app", "app", podExtra("a-1", "uid-1", "node-1"))
	longLived := jwt(`{"exp":2000000}`)
	shortLived := jwt(`{"exp":1000010}`)
	opaque := "opaque-token"
	for _, tok := range []string{longLived, shortLived, opaque} {
		rs.set(tok, st)
	}

	tests := []struct {
		name  string
		ttl   time.Duration
		token string
		// reviews is the number of TokenReviews after calls at 0s, +5s,
		// +20s, +40s and +80s from the first.
		reviews []int64
	}{
		{name: "default ttl", token: longLived, reviews: []int64{1, 1, 1, 2, 3}},
		{name: "ttl capped at a minute", ttl: time.Hour, token: longLived, reviews: []int64{1, 1, 1, 1, 2}},
		{name: "token expiry bounds the cache", ttl: time.Minute, token: shortLived, reviews: []int64{1, 1, 2, 3, 4}},
		{name: "token without exp", ttl: time.Minute, token: opaque, reviews: []int64{1, 1, 1, 1, 2}},
		{name: "caching disabled", ttl: -1, token: longLived, reviews: []int64{1, 2, 3, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := auth.NewTokenReview(auth.TokenReviewOptions{
				Client:      client,
				TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
				Pods:        pods,
				CacheTTL:    tt.ttl,
				Now:         clk.now,
			})
			if err != nil {
				t.Fatal(err)
			}
			clk.reset()
			base := rs.calls.Load()
			steps := []time.Duration{0, 5 * time.Second, 15 * time.Second, 20 * time.Second, 40 * time.Second}
			for i, d := range steps {
				clk.advance(d)
				if _, err := a.Authenticate(bearer(tt.token)); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if got := rs.calls.Load() - base; got != tt.reviews[i] {
					t.Fatalf("after call %d: %d reviews, want %d", i, got, tt.reviews[i])
				}
			}
		})
	}

	t.Run("pod re-checked on cache hits", func(t *testing.T) {
		a, err := auth.NewTokenReview(auth.TokenReviewOptions{
			Client:      client,
			TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
			Pods:        pods,
			Now:         clk.now,
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Authenticate(bearer(opaque)); err != nil {
			t.Fatal(err)
		}
		base := rs.calls.Load()
		pods.put(testPod("app", "a-1", "uid-1", "app", "node-1", corev1.PodFailed))
		if _, err := a.Authenticate(bearer(opaque)); err == nil {
			t.Fatal("failed pod's token accepted from the cache")
		}
		if rs.calls.Load() != base {
			t.Fatal("cache hit made a TokenReview")
		}
	})
}

// TestTokenReviewRefusalCache checks that a refused token is refused
// without another review for the refusal TTL, that a review that failed is
// not cached, and that refusals never push out cached reviews.
func TestTokenReviewRefusalCache(t *testing.T) {
	rs, client := newReviewServer(t)
	pods := &podTable{pods: map[string]*corev1.Pod{}}
	pods.put(testPod("app", "a-1", "uid-1", "app", "node-1", corev1.PodRunning))
	clk := newTestClock()
	newAuth := func(t *testing.T, refusalTTL time.Duration) *auth.TokenReview {
		t.Helper()
		a, err := auth.NewTokenReview(auth.TokenReviewOptions{
			Client: client, TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
			Pods: pods, RefusalCacheTTL: refusalTTL, Now: clk.now,
		})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	good := saStatus("app", "app", podExtra("a-1", "uid-1", "node-1"))
	rs.set("revoked", authnv1.TokenReviewStatus{Error: "token has been invalidated"})
	rs.set("wrong-audience", saStatus("app", "app", nil, "other"))
	rs.set("good", good)

	// Calls at 0, 5, 10, 15, 25 and 65 s.
	steps := []time.Duration{0, 5 * time.Second, 5 * time.Second, 5 * time.Second, 10 * time.Second, 40 * time.Second}
	for _, tt := range []struct {
		name  string
		ttl   time.Duration
		token string
		// reviews is the number of TokenReviews after each of steps.
		reviews []int64
	}{
		{name: "not authenticated, default ttl", token: "revoked", reviews: []int64{1, 1, 2, 2, 3, 4}},
		{name: "wrong audience, default ttl", token: "wrong-audience", reviews: []int64{1, 1, 2, 2, 3, 4}},
		{name: "ttl capped at a minute", ttl: time.Hour, token: "revoked", reviews: []int64{1, 1, 1, 1, 1, 2}},
		{name: "refusal cache disabled", ttl: -1, token: "revoked", reviews: []int64{1, 2, 3, 4, 5, 6}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuth(t, tt.ttl)
			base := rs.calls.Load()
			var first error
			for i, d := range steps {
				clk.advance(d)
				_, err := a.Authenticate(bearer(tt.token))
				if err == nil {
					t.Fatalf("call %d: refused token accepted", i)
				}
				if first == nil {
					first = err
				} else if err.Error() != first.Error() {
					t.Errorf("call %d: error %q, first call's was %q", i, err, first)
				}
				if got := rs.calls.Load() - base; got != tt.reviews[i] {
					t.Fatalf("after call %d: %d reviews, want %d", i, got, tt.reviews[i])
				}
			}
		})
	}

	t.Run("a failed review is not cached", func(t *testing.T) {
		a := newAuth(t, 0)
		rs.setFailing("good", true)
		base := rs.calls.Load()
		if _, err := a.Authenticate(bearer("good")); err == nil {
			t.Fatal("accepted while the API server fails")
		}
		rs.setFailing("good", false)
		if _, err := a.Authenticate(bearer("good")); err != nil {
			t.Fatalf("after the API server recovered: %v", err)
		}
		if got := rs.calls.Load() - base; got < 2 {
			t.Fatalf("%d reviews, want a second one after the failure", got)
		}
	})

	t.Run("refusals do not push out reviews", func(t *testing.T) {
		a := newAuth(t, 0)
		if _, err := a.Authenticate(bearer("good")); err != nil {
			t.Fatal(err)
		}
		for i := range 1100 {
			if _, err := a.Authenticate(bearer(fmt.Sprintf("random-%d", i))); err == nil {
				t.Fatal("unknown token accepted")
			}
		}
		base := rs.calls.Load()
		if _, err := a.Authenticate(bearer("good")); err != nil {
			t.Fatal(err)
		}
		if rs.calls.Load() != base {
			t.Fatal("the good token's cached review was dropped by refusals of other tokens")
		}
	})
}

func TestNewTokenReviewValidates(t *testing.T) {
	_, client := newReviewServer(t)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	pods := &podTable{}
	tests := []struct {
		name string
		opts auth.TokenReviewOptions
	}{
		{name: "no client", opts: auth.TokenReviewOptions{TrustDomain: td, Pods: pods}},
		{name: "no trust domain", opts: auth.TokenReviewOptions{Client: client, Pods: pods}},
		{name: "no pods", opts: auth.TokenReviewOptions{Client: client, TrustDomain: td}},
		{name: "empty audience", opts: auth.TokenReviewOptions{Client: client, TrustDomain: td, Pods: pods, Audiences: []string{""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := auth.NewTokenReview(tt.opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestParseServiceAccountUser(t *testing.T) {
	tests := []struct {
		user, ns, sa string
		ok           bool
	}{
		{"system:serviceaccount:istio-system:ztunnel", "istio-system", "ztunnel", true},
		{"system:serviceaccount:a:b", "a", "b", true},
		{"system:serviceaccount:a:b:c", "", "", false},
		{"system:serviceaccount:a", "", "", false},
		{"system:serviceaccount::b", "", "", false},
		{"system:serviceaccount:a:", "", "", false},
		{"system:node:n1", "", "", false},
		{"admin", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		ns, sa, err := auth.ParseServiceAccountUser(tt.user)
		if (err == nil) != tt.ok || ns != tt.ns || sa != tt.sa {
			t.Errorf("ParseServiceAccountUser(%q) = %q, %q, %v", tt.user, ns, sa, err)
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	tests := []struct {
		name  string
		token string
		want  time.Time
		ok    bool
	}{
		{name: "integer", token: jwt(`{"exp":1700000000}`), want: time.Unix(1700000000, 0), ok: true},
		{name: "fraction", token: jwt(`{"exp":1700000000.5}`), want: time.Unix(1700000000, 5e8), ok: true},
		{name: "padded payload", token: "x." + base64.URLEncoding.EncodeToString([]byte(`{"exp":12}`)) + ".y", want: time.Unix(12, 0), ok: true},
		{name: "no exp", token: jwt(`{"sub":"x"}`)},
		{name: "string exp", token: jwt(`{"exp":"1700000000"}`)},
		{name: "negative", token: jwt(`{"exp":-5}`)},
		{name: "huge", token: jwt(`{"exp":1e300}`)},
		{name: "not json", token: jwt(`exp`)},
		{name: "two parts", token: "a.b"},
		{name: "bad base64", token: "a.!!!.c"},
		{name: "opaque", token: "not-a-jwt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := auth.TokenExpiry(tt.token)
			if ok != tt.ok || !got.Equal(tt.want) {
				t.Fatalf("got %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func FuzzTokenExpiry(f *testing.F) {
	f.Add(jwt(`{"exp":1700000000}`))
	f.Add(jwt(`{"exp":1e300}`))
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		exp, ok := auth.TokenExpiry(token)
		if ok && exp.Before(time.Unix(0, 0)) {
			t.Fatalf("negative expiry %v accepted", exp)
		}
		if !ok && !exp.IsZero() {
			t.Fatalf("non-zero time %v with ok=false", exp)
		}
	})
}

// TestTokenReviewConcurrencyBounded: callers with unknown tokens cost at
// most MaxConcurrentTokenReviews API calls at a time; the rest wait.
func TestTokenReviewConcurrencyBounded(t *testing.T) {
	rs, client := newReviewServer(t)
	rs.gate = make(chan struct{})
	a, err := auth.NewTokenReview(auth.TokenReviewOptions{Client: client, TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
		Pods: &podTable{pods: map[string]*corev1.Pod{}}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const callers = 3 * auth.MaxConcurrentTokenReviews
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", fmt.Sprintf("Bearer random-%d", i)))
			if _, err := a.Authenticate(ctx); err == nil {
				t.Error("a random token authenticated")
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for rs.inflight.Load() < auth.MaxConcurrentTokenReviews && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for any call past the bound to show
	if n := rs.inflight.Load(); n != auth.MaxConcurrentTokenReviews {
		t.Errorf("%d reviews in flight, want %d", n, auth.MaxConcurrentTokenReviews)
	}
	close(rs.gate)
	wg.Wait()
	if p := rs.peak.Load(); p > auth.MaxConcurrentTokenReviews {
		t.Fatalf("%d reviews in flight at once, limit %d", p, auth.MaxConcurrentTokenReviews)
	}
	if n := rs.calls.Load(); n != callers {
		t.Fatalf("%d reviews for %d callers", n, callers)
	}
}
