package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
)

// The waypoint features below run as subtests of TestWaypoint, on its
// mesh: each writes its manifests, checks the behaviour through sleep ->
// ztunnel -> waypoint -> ztunnel -> pod, checks a control case that would
// tell the feature apart from its absence, and removes its manifests.

// tools are the servers the tests run in tools-0 for the waypoint to call.
type tools struct {
	jwks      atomic.Pointer[[]byte] // the key set served at /jwks.json
	jwksHits  atomic.Int64
	collector spanCollector
}

// startTools listens in tools-0 for the JWKS server and the OTLP/HTTP
// collector; both stop when t ends.
func startTools(t *testing.T, m *mesh) *tools {
	t.Helper()
	tl := &tools{}
	pod := m.pods["tools-0"]
	serve := func(port int, h http.Handler) {
		l, err := pod.Netns.Listen("tcp", fmt.Sprintf("%s:%d", toolsIP, port))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("tools server on %d: %v", port, err)
			}
		}()
		t.Cleanup(func() {
			_ = srv.Close()
			<-done
		})
	}
	serve(jwksPort, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := tl.jwks.Load()
		if r.URL.Path != "/jwks.json" || b == nil {
			http.NotFound(w, r)
			return
		}
		tl.jwksHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*b)
	}))
	serve(collectorPort, &tl.collector)
	return tl
}

// otlpSpan is the part of an exported OTLP/JSON span the tests check.
type otlpSpan struct {
	TraceID      string `json:"traceId"`
	SpanID       string `json:"spanId"`
	ParentSpanID string `json:"parentSpanId"`
	Name         string `json:"name"`
	Service      string `json:"-"` // the resource's service.name
}

// spanCollector is an OTLP/HTTP (JSON) traces receiver.
type spanCollector struct {
	mu    sync.Mutex
	spans []otlpSpan
	bad   []string // why requests were refused
}

func (c *spanCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ResourceSpans []struct {
			Resource struct {
				Attributes []struct {
					Key   string `json:"key"`
					Value struct {
						StringValue string `json:"stringValue"`
					} `json:"value"`
				} `json:"attributes"`
			} `json:"resource"`
			ScopeSpans []struct {
				Spans []otlpSpan `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err == nil && (r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")) {
		err = fmt.Errorf("%s %s with content type %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	if err == nil {
		err = json.Unmarshal(b, &body)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.bad = append(c.bad, err.Error())
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	for _, rs := range body.ResourceSpans {
		svc := ""
		for _, a := range rs.Resource.Attributes {
			if a.Key == "service.name" {
				svc = a.Value.StringValue
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				s.Service = svc
				c.spans = append(c.spans, s)
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
}

// byTrace returns the spans received for trace id (hex), and the refused
// requests.
func (c *spanCollector) byTrace(id string) ([]otlpSpan, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []otlpSpan
	for _, s := range c.spans {
		if strings.EqualFold(s.TraceID, id) {
			out = append(out, s)
		}
	}
	return out, append([]string(nil), c.bad...)
}

// redirectResult is the outcome of a request whose redirect is not followed.
type redirectResult struct {
	StatusCode int
	Location   string
}

// noFollow sends a GET from src without following redirects.
func noFollow(src *cluster.Pod, url string) (redirectResult, error) {
	c := src.Netns.HTTPClient(5 * time.Second)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(url)
	if err != nil {
		return redirectResult{}, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return redirectResult{resp.StatusCode, resp.Header.Get("Location")}, nil
}

// served sends n sequential requests to url and returns the serving pods
// in order ("" for a request that failed).
func served(src *cluster.Pod, url string, n int) []string {
	out := make([]string, n)
	for i := range n {
		if r, err := request(src, http.MethodGet, url, nil); err == nil && r.Status == http.StatusOK && r.Report != nil {
			out[i] = r.Report.Pod
		}
	}
	return out
}

// alternates reports whether pods strictly alternate between two pods.
func alternates(pods []string) bool {
	for i := range pods {
		if pods[i] == "" || (i > 0 && pods[i] == pods[i-1]) {
			return false
		}
	}
	return true
}

func count(pods []string) map[string]int {
	c := map[string]int{}
	for _, p := range pods {
		c[p]++
	}
	return c
}

// concurrentShare runs workers clients, each sending perWorker requests
// to url one after another, and returns how many each pod served and how
// many failed.
func concurrentShare(src *cluster.Pod, url string, workers, perWorker int) (map[string]int, int) {
	var mu sync.Mutex
	got := map[string]int{}
	failed := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				r, err := request(src, http.MethodGet, url, nil)
				mu.Lock()
				if err != nil || r.Status != http.StatusOK || r.Report == nil {
					failed++
				} else {
					got[r.Report.Pod]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return got, failed
}

// reviewsCluster is the waypoint's cluster for the reviews service port.
const reviewsCluster = "outbound|9080||reviews.demo.svc.cluster.local"

// clusterLB returns the load-balancing policy the waypoint in pod wp
// applies to cluster, from its admin config dump ("" when absent).
func clusterLB(wp *cluster.Pod, name string) (string, error) {
	resp, err := wp.Netns.HTTPClient(3 * time.Second).Get("http://127.0.0.1:15000/config_dump")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var dump struct {
		Config struct {
			Clusters []struct {
				Name string `json:"name"`
				LB   string `json:"lb_policy"`
			} `json:"clusters"`
		} `json:"config"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return "", err
	}
	for _, c := range dump.Config.Clusters {
		if c.Name == name {
			return c.LB, nil
		}
	}
	return "", nil
}

// waitLB waits until the waypoint applies policy to the reviews cluster.
func waitLB(t *testing.T, wp *cluster.Pod, policy string) {
	t.Helper()
	waitFor(t, "the waypoint balances reviews with "+policy, func() (bool, string) {
		lb, err := clusterLB(wp, reviewsCluster)
		return err == nil && lb == policy, fmt.Sprintf("%q %v", lb, err)
	})
}

// testLoadBalancing: DestinationRule loadBalancer.simple, each checked
// once the waypoint's config dump shows the policy on the reviews
// cluster. Under ROUND_ROBIN (also the default) sequential requests
// strictly alternate between the two reviews pods, and concurrent ones
// split evenly even when one pod is slow; RANDOM breaks the alternation
// while still using both; LEAST_REQUEST sends far fewer concurrent
// requests to the slow pod than round robin does.
func testLoadBalancing(t *testing.T, m *mesh, vipURL string) {
	sleep, wp := m.pods["sleep-0"], m.pods["wp-0"]
	const slow = "reviews-v2-0"
	dr := func(simple string) string {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-lb, namespace: demo}
spec:
  host: reviews.demo.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: %s}
`, simple)
	}
	t.Run("RoundRobin", func(t *testing.T) {
		m.writeConfig("dr-lb.yaml", dr("ROUND_ROBIN"))
		waitLB(t, wp, "ROUND_ROBIN")
		if pods := served(sleep, vipURL+"/lb", 20); !alternates(pods) {
			t.Errorf("round robin: sequential requests served by %v, want strict alternation", pods)
		}
	})
	// Under concurrency, with v2 slow, round robin still gives v2 half
	// of the requests (the control for LEAST_REQUEST below).
	slowURL := vipURL + "/lb?delay=400ms&delay_on=" + slow
	const workers, perWorker = 8, 15
	share := func() (float64, string) {
		got, failed := concurrentShare(sleep, slowURL, workers, perWorker)
		s := float64(got[slow]) / float64(workers*perWorker)
		if failed > 0 {
			s = -1
		}
		return s, fmt.Sprintf("slow pod served %.0f%% (%v), %d failed", 100*s, got, failed)
	}
	t.Run("RoundRobinUnderLoad", func(t *testing.T) {
		s, detail := share()
		if s < 0.45 || s > 0.55 {
			t.Errorf("round robin with a slow pod: %s; want about half each", detail)
		}
		t.Log("round robin: " + detail)
	})
	t.Run("Random", func(t *testing.T) {
		m.writeConfig("dr-lb.yaml", dr("RANDOM"))
		waitLB(t, wp, "RANDOM")
		// 40 sequential requests alternate perfectly with probability
		// 2^-39 under RANDOM, always under ROUND_ROBIN; each pod gets
		// fewer than 8 of 40 with probability below 10^-4.
		pods := served(sleep, vipURL+"/lb", 40)
		if c := count(pods); alternates(pods) || c[""] > 0 || c["reviews-v1-0"] < 8 || c["reviews-v2-0"] < 8 {
			t.Errorf("RANDOM: sequential requests served by %v", pods)
		}
	})
	t.Run("LeastRequest", func(t *testing.T) {
		m.writeConfig("dr-lb.yaml", dr("LEAST_REQUEST"))
		waitLB(t, wp, "LEAST_REQUEST")
		// With two hosts, two random choices (Envoy's default) pick the
		// busy slow pod only when both land on it: about a quarter of the
		// requests, against round robin's half (and RANDOM's half, which
		// falls under 40% of 120 with probability about 1.5%).
		s, detail := share()
		if s < 0 || s >= 0.40 {
			t.Errorf("LEAST_REQUEST with a slow pod: %s; want well under half", detail)
		}
		t.Log("least request: " + detail)
	})
	m.removeConfig("dr-lb.yaml")
}

// testCookieAffinity: DestinationRule consistentHash.httpCookie. A
// request carrying the cookie sticks to one pod per value; with a ttl, a
// request without the cookie gets one generated (Set-Cookie, as Envoy
// does) and was routed by it, so the next requests carrying it stick to
// the same pod. Without the DestinationRule, no cookie is set and one
// value reaches both pods.
func testCookieAffinity(t *testing.T, m *mesh, vipURL string) {
	sleep := m.pods["sleep-0"]
	url := vipURL + "/cookie"
	withCookie := func(v string) map[string]string { return map[string]string{"Cookie": "session=" + v} }
	sticky := func(v string, n int) (string, string) {
		pod := ""
		for range n {
			r, err := request(sleep, http.MethodGet, url, withCookie(v))
			if err != nil || r.Report == nil {
				return "", describe(r, err)
			}
			if pod != "" && r.Report.Pod != pod {
				return "", fmt.Sprintf("cookie %s served by %s and %s", v, pod, r.Report.Pod)
			}
			pod = r.Report.Pod
		}
		return pod, ""
	}
	m.writeConfig("dr-cookie.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-cookie, namespace: demo}
spec:
  host: reviews.demo.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: session, path: /, ttl: 3600s}}}
`)
	var setCookie string
	waitFor(t, "a request without the cookie gets one", func() (bool, string) {
		r, err := request(sleep, http.MethodGet, url, nil)
		if err != nil || r.Status != http.StatusOK {
			return false, describe(r, err)
		}
		setCookie = r.Header.Get("Set-Cookie")
		return strings.HasPrefix(setCookie, "session="), "Set-Cookie: " + setCookie
	})
	c, err := http.ParseSetCookie(setCookie)
	if err != nil || c.Value == "" || c.MaxAge != 3600 || c.Path != "/" {
		t.Errorf("generated cookie %q (%v): want a value, Max-Age=3600, Path=/", setCookie, err)
	}
	// Chosen values: each sticks, and the values spread.
	// All of n values land on one of the two pods with probability
	// 2^(1-n).
	spread := map[string]int{}
	for i := range 20 {
		pod, detail := sticky(fmt.Sprintf("user-%d", i), 5)
		if pod == "" {
			t.Fatal(detail)
		}
		spread[pod]++
	}
	if len(spread) != 2 {
		t.Errorf("20 cookie values all went to one pod: %v", spread)
	}
	t.Logf("chosen cookie values per pod: %v", spread)
	// Generated cookies: the first request was routed by the value it
	// was given.
	generated := map[string]int{}
	for i := range 16 {
		r, err := request(sleep, http.MethodGet, url, nil)
		if err != nil || r.Report == nil {
			t.Fatalf("request %d without a cookie: %s", i, describe(r, err))
		}
		c, err := http.ParseSetCookie(r.Header.Get("Set-Cookie"))
		if err != nil || c.Name != "session" {
			t.Fatalf("request %d without a cookie: Set-Cookie %q", i, r.Header.Get("Set-Cookie"))
		}
		pod, detail := sticky(c.Value, 4)
		if pod == "" {
			t.Fatal(detail)
		}
		if pod != r.Report.Pod {
			t.Errorf("generated cookie %s: first request served by %s, the requests carrying it by %s", c.Value, r.Report.Pod, pod)
		}
		generated[pod]++
	}
	if len(generated) != 2 {
		t.Errorf("16 generated cookies all went to one pod: %v", generated)
	}
	t.Logf("generated cookies per pod: %v", generated)
	// A request carrying the cookie gets no new one.
	if r, err := request(sleep, http.MethodGet, url, withCookie("user-1")); err != nil || r.Header.Get("Set-Cookie") != "" {
		t.Errorf("request with the cookie: %s, Set-Cookie %q; want none", describe(r, err), r.Header.Get("Set-Cookie"))
	}
	m.removeConfig("dr-cookie.yaml")
	waitFor(t, "DestinationRule removed: one cookie value reaches both pods, none is set", func() (bool, string) {
		seen := map[string]bool{}
		for range 10 {
			r, err := request(sleep, http.MethodGet, url, withCookie("user-1"))
			if err != nil || r.Report == nil {
				return false, describe(r, err)
			}
			seen[r.Report.Pod] = true
		}
		r, err := request(sleep, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		return len(seen) == 2 && r.Header.Get("Set-Cookie") == "", fmt.Sprintf("pods %v, Set-Cookie %q", seen, r.Header.Get("Set-Cookie"))
	})
}

// testJWKSURI: RequestAuthentication whose keys come from jwksUri, served
// from tools-0; an ALLOW policy requires a request principal. The waypoint
// fetches the keys itself: a good token is admitted (it can only be
// verified with the fetched keys), a token signed by another key, a
// garbage one or one whose issuer's key set cannot be fetched is refused
// with 401, no token with 403.
func testJWKSURI(t *testing.T, m *mesh, tl *tools, vipURL string) {
	sleep := m.pods["sleep-0"]
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "remote", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	tl.jwks.Store(&jwks)
	sign := func(k *ecdsa.PrivateKey, iss, sub string) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", "remote").WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := josejwt.Signed(signer).Claims(map[string]any{"iss": iss, "sub": sub, "exp": time.Now().Add(time.Hour).Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	good, forged := sign(key, "https://remote.test", "alice"), sign(other, "https://remote.test", "alice")
	// An issuer whose jwksUri nothing serves: its tokens cannot be
	// verified, so they are refused (fail closed), never let through.
	unverifiable := sign(key, "https://down.test", "alice")
	m.writeConfig("jwks-uri.yaml", fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-remote, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}]
  jwtRules:
  - {issuer: "https://remote.test", jwksUri: "http://%[1]s:%[2]d/jwks.json"}
  - {issuer: "https://down.test", jwksUri: "http://%[1]s:%[2]d/missing.json", timeout: 1s}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-remote-jwt, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}]
  action: ALLOW
  rules: [{from: [{source: {requestPrincipals: ["https://remote.test/alice"]}}]}]
`, toolsIP, jwksPort))
	url := vipURL + "/jwks"
	waitFor(t, "a request without a token is denied", func() (bool, string) {
		r, err := request(sleep, http.MethodGet, url, nil)
		return err == nil && r.Status == http.StatusForbidden, describe(r, err)
	})
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"token signed by the served key", good, http.StatusOK},
		{"token signed by another key", forged, http.StatusUnauthorized},
		{"garbage token", "Bearer not.a.jwt", http.StatusUnauthorized},
		{"token whose key set cannot be fetched", unverifiable, http.StatusUnauthorized},
		{"no token", "", http.StatusForbidden},
	} {
		h := map[string]string{}
		if tc.auth != "" {
			h["Authorization"] = tc.auth
		}
		r, err := request(sleep, http.MethodGet, url, h)
		if err != nil || r.Status != tc.want {
			t.Errorf("%s: %s, want %d", tc.name, describe(r, err), tc.want)
		}
	}
	if tl.jwksHits.Load() == 0 {
		t.Error("the waypoint never fetched the key set from its jwksUri")
	}
	m.removeConfig("jwks-uri.yaml")
	eventually(t, "JWT policy removed", func() bool {
		r, err := request(sleep, http.MethodGet, url, nil)
		return err == nil && r.Status == http.StatusOK
	})
}

// testRedirectAndRewrite: HTTPRoute RequestRedirect and URLRewrite, then
// the same through a VirtualService.
func testRedirectAndRewrite(t *testing.T, m *mesh, vipURL string) {
	sleep := m.pods["sleep-0"]
	t.Run("HTTPRoute", func(t *testing.T) {
		m.writeConfig("redirect-route.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-redirect, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /elsewhere}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /secure}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /here}}}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]
    backendRefs: [{name: reviews, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}}]
    backendRefs: [{name: reviews, port: 9080}]
  - backendRefs: [{name: reviews, port: 9080}]
`)
		// Gateway API: without a hostname the request's is kept; without
		// a port, the listener's (the service port here) when the scheme
		// is unchanged, the scheme's well-known port (left out) when it
		// is set; 302 unless statusCode says otherwise.
		host := reviewsVIP + ":9080"
		redirects := []struct{ path, location string }{
			{"/old/page?x=1", "http://" + host + "/new/page?x=1"},
			{"/elsewhere/a", "http://example.org:9080/elsewhere/a"},
			{"/secure/b", "https://" + reviewsVIP + "/secure/b"},
			{"/moved/c", "http://example.org:8443/here"},
		}
		codes := []int{http.StatusMovedPermanently, http.StatusFound, http.StatusFound, http.StatusFound}
		waitFor(t, "the HTTPRoute redirects /old", func() (bool, string) {
			resp, err := noFollow(sleep, vipURL+"/old/page?x=1")
			if err != nil {
				return false, err.Error()
			}
			return resp.StatusCode == http.StatusMovedPermanently, fmt.Sprintf("%d %s", resp.StatusCode, resp.Location)
		})
		for i, tc := range redirects {
			resp, err := noFollow(sleep, vipURL+tc.path)
			if err != nil {
				t.Errorf("%s: %v", tc.path, err)
				continue
			}
			if resp.StatusCode != codes[i] || resp.Location != tc.location {
				t.Errorf("%s: %d Location %q, want %d %q", tc.path, resp.StatusCode, resp.Location, codes[i], tc.location)
			}
		}
		rewrites := []struct{ path, wantPath, wantHost string }{
			{"/api/items", "/v2/items", "api.internal"},
			{"/full/x/y", "/replaced", host},
			// The control: the catch-all rule changes nothing.
			{"/other/z", "/other/z", host},
		}
		for _, tc := range rewrites {
			r, err := request(sleep, http.MethodGet, vipURL+tc.path, nil)
			if err != nil || r.Status != http.StatusOK || r.Report == nil {
				t.Errorf("%s: %s", tc.path, describe(r, err))
				continue
			}
			if r.Report.Path != tc.wantPath || r.Report.Host != tc.wantHost {
				t.Errorf("%s arrived as %s (Host %s), want %s (Host %s)", tc.path, r.Report.Path, r.Report.Host, tc.wantPath, tc.wantHost)
			}
		}
		m.removeConfig("redirect-route.yaml")
		eventually(t, "route removed: no redirect", func() bool {
			resp, err := noFollow(sleep, vipURL+"/old/page")
			return err == nil && resp.StatusCode == http.StatusOK
		})
	})
	t.Run("VirtualService", func(t *testing.T) {
		m.writeConfig("redirect-vs.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-redirect, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: example.org}
  - match: [{uri: {prefix: /same-port}}]
    redirect: {authority: example.org, derivePort: FROM_REQUEST_PORT, redirectCode: 307}
  - match: [{uri: {prefix: /api}}]
    rewrite: {uri: /v2, authority: api.internal}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
`)
		waitFor(t, "the VirtualService redirects /old", func() (bool, string) {
			resp, err := noFollow(sleep, vipURL+"/old/page")
			if err != nil {
				return false, err.Error()
			}
			return resp.StatusCode == http.StatusMovedPermanently && resp.Location == "http://example.org/new",
				fmt.Sprintf("%d %s", resp.StatusCode, resp.Location)
		})
		if resp, err := noFollow(sleep, vipURL+"/same-port/q"); err != nil || resp.StatusCode != http.StatusTemporaryRedirect ||
			resp.Location != "http://example.org:9080/same-port/q" {
			t.Errorf("redirect keeping the request port: %v %+v, want 307 to http://example.org:9080/same-port/q", err, resp)
		}
		r, err := request(sleep, http.MethodGet, vipURL+"/api/items", nil)
		if err != nil || r.Report == nil || r.Report.Path != "/v2/items" || r.Report.Host != "api.internal" {
			t.Errorf("rewrite: %s; want /v2/items with Host api.internal (got %+v)", describe(r, err), r)
		}
		r, err = request(sleep, http.MethodGet, vipURL+"/other", nil)
		if err != nil || r.Report == nil || r.Report.Path != "/other" || r.Report.Host != reviewsVIP+":9080" {
			t.Errorf("default route: %s; want /other unchanged", describe(r, err))
		}
		m.removeConfig("redirect-vs.yaml")
		eventually(t, "VirtualService removed: no redirect", func() bool {
			resp, err := noFollow(sleep, vipURL+"/old/page")
			return err == nil && resp.StatusCode == http.StatusOK
		})
	})
}

// testGRPC: a real gRPC client in sleep calls reviews-grpc (port named
// grpc-echo, so gRPC by Istio's port-name rule) through the waypoint. Without a route the calls
// are balanced over both pods; a GRPCRoute sends one method to v2 and the
// rest to v1; gRPC error statuses come back as they were sent.
func testGRPC(t *testing.T, m *mesh) {
	sleep, wp := m.pods["sleep-0"], m.pods["wp-0"]
	target := fmt.Sprintf("%s:%d", reviewsGRPCVIP, grpcPort)
	conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return sleep.Netns.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func(method string) (*echo.Report, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return echo.GRPCCall(ctx, conn, method, map[string]string{"x-test": "grpc"})
	}
	const pick, other = "/zmesh.echo.Echo/Pick", "/zmesh.echo.Echo/Other"
	callsTo := func(method string, n int) (map[string]int, string) {
		got := map[string]int{}
		for range n {
			rep, err := call(method)
			if err != nil {
				return nil, err.Error()
			}
			if peer, _ := netip.ParseAddrPort(rep.Peer); peer.Addr() != wp.IP {
				return nil, fmt.Sprintf("%s served by %s for peer %s, not through the waypoint", method, rep.Pod, rep.Peer)
			}
			if rep.Method != method || rep.Headers["x-test"] != "grpc" {
				return nil, fmt.Sprintf("%s arrived as %s with metadata %v", method, rep.Method, rep.Headers)
			}
			got[rep.Pod]++
		}
		return got, ""
	}
	waitFor(t, "without a route, gRPC calls go through the waypoint to both pods", func() (bool, string) {
		got, detail := callsTo(pick, 10)
		return got["reviews-v1-0"] > 0 && got["reviews-v2-0"] > 0, fmt.Sprint(got, detail)
	})
	m.writeConfig("grpcroute.yaml", fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: reviews-grpc, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews-grpc, port: %[1]d}]
  rules:
  - matches: [{method: {service: zmesh.echo.Echo, method: Pick}}]
    backendRefs: [{name: reviews-v2, port: %[1]d}]
  - backendRefs: [{name: reviews-v1, port: %[1]d}]
`, grpcPort))
	waitFor(t, "the GRPCRoute sends Pick to v2 only", func() (bool, string) {
		got, detail := callsTo(pick, 6)
		return got["reviews-v2-0"] == 6, fmt.Sprint(got, detail)
	})
	if got, detail := callsTo(other, 6); got["reviews-v1-0"] != 6 {
		t.Errorf("other methods: served %v %s, want v1 only", got, detail)
	}
	before := metricSum(t, wp, fmt.Sprintf("http://%s:15020/metrics", wp.IP), "istio_requests_total",
		`destination_service_name="reviews-grpc"`, `request_protocol="grpc"`, `grpc_response_status="9"`)
	if _, err := call("/zmesh.echo.Echo/" + echo.FailMethod); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("failing call: %v, want FailedPrecondition relayed", err)
	}
	eventually(t, "the waypoint counts the gRPC call with its status", func() bool {
		return metricSum(t, wp, fmt.Sprintf("http://%s:15020/metrics", wp.IP), "istio_requests_total",
			`destination_service_name="reviews-grpc"`, `request_protocol="grpc"`, `grpc_response_status="9"`) > before
	})
	m.removeConfig("grpcroute.yaml")
	waitFor(t, "GRPCRoute removed: Pick reaches both pods again", func() (bool, string) {
		got, detail := callsTo(pick, 10)
		return got["reviews-v1-0"] > 0 && got["reviews-v2-0"] > 0, fmt.Sprint(got, detail)
	})
}

// testTraceContext: the waypoint continues a W3C trace (same trace id, a
// new span id as the backend's parent) and exports its span over
// OTLP/HTTP to the collector in tools-0; an unsampled trace is not
// exported.
func testTraceContext(t *testing.T, m *mesh, tl *tools, vipURL string) {
	sleep := m.pods["sleep-0"]
	newID := func(n int) string {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	traced := func(tp string) (*echo.Response, []string) {
		t.Helper()
		r, err := request(sleep, http.MethodGet, vipURL+"/traced", map[string]string{"traceparent": tp})
		if err != nil || r.Status != http.StatusOK || r.Report == nil {
			t.Fatalf("traced request: %s", describe(r, err))
		}
		got := strings.Split(r.Report.Headers["Traceparent"], "-")
		if len(got) != 4 {
			t.Fatalf("backend got traceparent %q", r.Report.Headers["Traceparent"])
		}
		return r, got
	}
	unsampledTrace, parent := newID(16), newID(8)
	_, got := traced("00-" + unsampledTrace + "-" + parent + "-00")
	if got[1] != unsampledTrace || got[2] == parent || got[3] != "00" {
		t.Errorf("unsampled trace: backend got %v, want trace %s, a new parent, flags 00", got, unsampledTrace)
	}
	// Three sampled requests, each in its own trace: the backend sees
	// the trace continued with a new parent (the waypoint's span), and
	// each trace gets exactly one exported span.
	waypointSpans := map[string]string{} // trace -> the waypoint's span
	for range 3 {
		trace := newID(16)
		_, got = traced("00-" + trace + "-" + parent + "-01")
		if got[0] != "00" || got[1] != trace || got[2] == parent || got[3] != "01" {
			t.Errorf("sampled trace: backend got %v, want trace %s with a new parent span, flags 01", got, trace)
		}
		waypointSpans[trace] = got[2]
	}
	// Without a traceparent the waypoint starts a trace.
	if r, err := request(sleep, http.MethodGet, vipURL+"/untraced", nil); err != nil || r.Report == nil ||
		len(strings.Split(r.Report.Headers["Traceparent"], "-")) != 4 {
		t.Errorf("request without traceparent: %s", describe(r, err))
	}
	for trace, span := range waypointSpans {
		var spans []otlpSpan
		waitFor(t, "the waypoint exports the sampled span of trace "+trace, func() (bool, string) {
			var bad []string
			spans, bad = tl.collector.byTrace(trace)
			return len(spans) > 0, fmt.Sprintf("refused exports: %v", bad)
		})
		s := spans[0]
		if len(spans) != 1 || s.SpanID != span || s.ParentSpanID != parent || s.Service != "wp-0.demo" ||
			!strings.HasPrefix(s.Name, "reviews.demo.svc.cluster.local:9080") {
			t.Errorf("trace %s: exported spans %+v, want one with span %s, parent %s, service wp-0.demo, named after reviews", trace, spans, span, parent)
		}
	}
	if spans, _ := tl.collector.byTrace(unsampledTrace); len(spans) != 0 {
		t.Errorf("an unsampled trace was exported: %+v", spans)
	}
}

// testWebSocket: a WebSocket session through the waypoint. The upgrade
// request is routed by an HTTPRoute (to v2, with an added header) like any
// request; after the 101, messages flow both ways through ztunnel →
// waypoint → ztunnel, and the waypoint counts the session with status 101.
func testWebSocket(t *testing.T, m *mesh) {
	sleep, wp := m.pods["sleep-0"], m.pods["wp-0"]
	m.writeConfig("ws-route.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-ws, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /ws}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x-ws-route, value: "yes"}]}
    backendRefs: [{name: reviews-v2, port: 9080}]
`)
	defer m.removeConfig("ws-route.yaml")
	metrics := fmt.Sprintf("http://%s:15020/metrics", wp.IP)
	sessions := func() float64 {
		return metricSum(t, wp, metrics, "istio_requests_total", `destination_service_name="reviews"`, `response_code="101"`)
	}
	before := sessions()

	dial := func() (*websocket.Conn, *echo.Report, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := sleep.Netns.DialContext(ctx, "tcp", fmt.Sprintf("%s:9080", reviewsVIP))
		if err != nil {
			return nil, nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		cfg, err := websocket.NewConfig("ws://reviews.demo:9080/ws", "http://reviews.demo")
		if err != nil {
			_ = c.Close()
			return nil, nil, err
		}
		ws, err := websocket.NewClient(cfg, c)
		if err != nil {
			_ = c.Close()
			return nil, nil, fmt.Errorf("handshake: %w", err)
		}
		var hello string
		if err := websocket.Message.Receive(ws, &hello); err != nil {
			_ = ws.Close()
			return nil, nil, fmt.Errorf("greeting: %w", err)
		}
		rep, err := echo.ParseReport([]byte(hello))
		if err != nil {
			_ = ws.Close()
			return nil, nil, err
		}
		return ws, rep, nil
	}
	var ws *websocket.Conn
	waitFor(t, "the /ws upgrade is routed through the waypoint to v2 with the route's header", func() (bool, string) {
		c, rep, err := dial()
		if err != nil {
			return false, err.Error()
		}
		peer, _ := netip.ParseAddrPort(rep.Peer)
		if rep.Pod != "reviews-v2-0" || peer.Addr() != wp.IP || rep.Headers["X-Ws-Route"] != "yes" {
			_ = c.Close()
			return false, fmt.Sprintf("served by %s for peer %s with headers %v", rep.Pod, rep.Peer, rep.Headers)
		}
		ws = c
		return true, ""
	})
	defer func() { _ = ws.Close() }()
	for _, msg := range []string{"one", strings.Repeat("w", 256<<10), "two"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send %d bytes: %v", len(msg), err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatalf("receive the echo of %d bytes: %v", len(msg), err)
		}
		if got != "reviews-v2-0:"+msg {
			t.Fatalf("echo of %d bytes: got %d bytes %.40q", len(msg), len(got), got)
		}
	}
	_ = ws.Close()
	eventually(t, "the waypoint counts the ended session with status 101", func() bool { return sessions() > before })
}
