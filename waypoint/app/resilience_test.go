package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/zmesh/zmesh/waypoint/config"
)

var allReviews = "outbound|9080||" + reviewsHost

func TestRetries(t *testing.T) {
	m, v1, v2 := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	rt := routeTo("r", prefix("/"), allReviews)
	rt.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,connect-failure", NumRetries: u32(2), PerTryTimeout: dur(200 * time.Millisecond)}
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{rt}))
	c := m.httpClient(reviewsVIP+":9080", false)

	// v1 answers 503: every request still succeeds, served by v2 (POST body replayed).
	v1.status.Store(503)
	for range 6 {
		r := m.do(c, http.MethodPost, "http://reviews:9080/", nil, "payload")
		if r.code != 200 || r.echo.Pod != "reviews-v2" || r.echo.Body != "payload" {
			t.Fatalf("with retries: %d from %q body %q", r.code, r.echo.Pod, r.echo.Body)
		}
	}
	if v1.hits.Load() == 0 {
		t.Fatal("v1 was never tried: the retry test proved nothing")
	}
	// Per-try timeout: v1 is slow, the retry goes to v2 in time.
	v1.status.Store(0)
	v1.delay.Store(int64(2 * time.Second))
	for range 4 {
		start := time.Now()
		r := m.get(c, "http://reviews:9080/", nil)
		if r.code != 200 || r.echo.Pod != "reviews-v2" || time.Since(start) > 1500*time.Millisecond {
			t.Fatalf("per-try timeout: %d from %q after %v", r.code, r.echo.Pod, time.Since(start))
		}
	}
	v1.delay.Store(0)
	// Connect failures are retried too.
	v1.refuse.Store(true)
	for range 4 {
		if r := m.get(c, "http://reviews:9080/", nil); r.code != 200 {
			t.Fatalf("connect failure not retried: %d", r.code)
		}
	}
	// Both failing: the retries run out and the last answer is relayed.
	v1.refuse.Store(false)
	v1.status.Store(503)
	v2.status.Store(503)
	before := v1.hits.Load() + v2.hits.Load()
	if r := m.get(c, "http://reviews:9080/", nil); r.code != 503 {
		t.Fatalf("exhausted retries: %d", r.code)
	}
	if n := v1.hits.Load() + v2.hits.Load() - before; n != 3 {
		t.Fatalf("%d attempts, want 1 + 2 retries", n)
	}
	// Without a retry policy a 503 is relayed after one attempt.
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{routeTo("r", prefix("/"), allReviews)}))
	before = v1.hits.Load() + v2.hits.Load()
	if r := m.get(c, "http://reviews:9080/", nil); r.code != 503 || v1.hits.Load()+v2.hits.Load()-before != 1 {
		t.Fatalf("no retry policy: %d after %d attempts", r.code, v1.hits.Load()+v2.hits.Load()-before)
	}
}

func faultRoute(cfg *faultv3.HTTPFault) *routev3.Route {
	rt := routeTo("r", prefix("/"), allReviews)
	a, _ := anypb.New(cfg)
	rt.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": a}
	return rt
}

func pct(n uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}
}

func TestFaultInjection(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	faultFilter := httpFilter("envoy.filters.http.fault", &faultv3.HTTPFault{})
	c := m.httpClient(reviewsVIP+":9080", false)

	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{faultRoute(&faultv3.HTTPFault{
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: pct(100)}})}, faultFilter))
	r := m.get(c, "http://reviews:9080/", nil)
	if r.code != 418 || r.echo.Pod != "" {
		t.Fatalf("abort 100%%: %d from %q", r.code, r.echo.Pod)
	}
	if l := accessLines(t, m.logBuf.String()); l[len(l)-1]["response_flags"] != "FI" {
		t.Fatalf("abort flag %v", l[len(l)-1]["response_flags"])
	}

	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{faultRoute(&faultv3.HTTPFault{
		Delay: &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: dur(300 * time.Millisecond)}, Percentage: pct(100)}})}, faultFilter))
	start := time.Now()
	if r := m.get(c, "http://reviews:9080/", nil); r.code != 200 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("delay 100%%: %d after %v", r.code, time.Since(start))
	}

	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{faultRoute(&faultv3.HTTPFault{
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}, Percentage: pct(50)}})}, faultFilter))
	aborted := 0
	const n = 200
	for range n {
		if m.get(c, "http://reviews:9080/", nil).code == 503 {
			aborted++
		}
	}
	if aborted < 70 || aborted > 130 { // binomial(200, .5): outside with p < 1e-4
		t.Fatalf("abort 50%%: %d of %d aborted", aborted, n)
	}

	// Without the fault filter in http_filters, per-route faults do nothing.
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{faultRoute(&faultv3.HTTPFault{
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: pct(100)}})}))
	if r := m.get(c, "http://reviews:9080/", nil); r.code != 200 {
		t.Fatalf("fault without the filter: %d", r.code)
	}
}

func TestMirroring(t *testing.T) {
	m, v1, v2 := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	rt := routeTo("r", prefix("/"), subset("v1"))
	rt.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: subset("v2")}}
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{rt}))
	c := m.httpClient(reviewsVIP+":9080", false)
	for range 5 {
		if r := m.do(c, http.MethodPost, "http://reviews:9080/m", nil, "body"); r.echo.Pod != "reviews-v1" {
			t.Fatalf("primary answer from %q", r.echo.Pod)
		}
	}
	m.eventually("mirrored copies", func() error {
		if v2.hits.Load() != 5 || v1.hits.Load() != 5 {
			return errorf("v1 %d v2 %d hits, want 5 each", v1.hits.Load(), v2.hits.Load())
		}
		return nil
	})
}

func TestLoadBalancingPolicies(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	m.addPod("reviews-v3", "reviews", "10.244.1.3", map[string]map[uint32]uint32{reviews: {9080: 8080}})
	c := m.httpClient(reviewsVIP+":9080", false)
	for _, lb := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_RANDOM, clusterv3.Cluster_LEAST_REQUEST} {
		m.push(config.ClusterTypeURL, cluster(allReviews, lb))
		m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{routeTo("r-"+lb.String(), prefix("/"), allReviews)}))
		seen := map[string]int{}
		for range 60 {
			seen[m.get(c, "http://reviews:9080/", nil).echo.Pod]++
		}
		if len(seen) != 3 {
			t.Fatalf("%v: spread %v, want all three pods", lb, seen)
		}
		if lb == clusterv3.Cluster_ROUND_ROBIN && (seen["reviews-v1"] != 20 || seen["reviews-v2"] != 20) {
			t.Fatalf("round robin spread %v, want 20 each", seen)
		}
	}
}

func TestConsistentHash(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	m.addPod("reviews-v3", "reviews", "10.244.1.3", map[string]map[uint32]uint32{reviews: {9080: 8080}})
	m.push(config.ClusterTypeURL, cluster(allReviews, clusterv3.Cluster_RING_HASH))
	byHeader := routeTo("hdr", prefix("/h"), allReviews)
	byHeader.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
	byCookie := routeTo("cookie", prefix("/c"), allReviews)
	byCookie.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session", Ttl: dur(time.Hour)}}}}
	bySession := routeTo("session", prefix("/s"), allReviews)
	bySession.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session", Ttl: dur(0)}}}}
	byPresent := routeTo("present", prefix("/p"), allReviews)
	byPresent.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session"}}}}
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{byHeader, byCookie, bySession, byPresent}))
	c := m.httpClient(reviewsVIP+":9080", false)
	pods := map[string]bool{}
	for u := range 30 {
		user := "user-" + string(rune('a'+u))
		first := m.get(c, "http://reviews:9080/h", map[string]string{"x-user": user}).echo.Pod
		pods[first] = true
		for range 3 {
			if got := m.get(c, "http://reviews:9080/h", map[string]string{"x-user": user}).echo.Pod; got != first {
				t.Fatalf("%s went to %s then %s", user, first, got)
			}
		}
	}
	if len(pods) < 2 {
		t.Fatalf("30 users all hashed to %v", pods)
	}
	r := m.get(c, "http://reviews:9080/c", nil)
	sc := r.hdr.Get("Set-Cookie")
	if !strings.HasPrefix(sc, "session=") {
		t.Fatalf("no session cookie generated: %v", r.hdr)
	}
	if !strings.Contains(sc, "Max-Age=3600") {
		t.Errorf("cookie with ttl 1h: %q, want Max-Age=3600", sc)
	}
	cookie := strings.SplitN(sc, ";", 2)[0]
	for range 5 {
		if got := m.get(c, "http://reviews:9080/c", map[string]string{"Cookie": cookie}).echo.Pod; got != r.echo.Pod {
			t.Fatalf("cookie affinity broken: %s then %s", r.echo.Pod, got)
		}
	}
	// ttl 0: a session cookie (no Max-Age); no ttl: none generated.
	if sc := m.get(c, "http://reviews:9080/s", nil).hdr.Get("Set-Cookie"); !strings.HasPrefix(sc, "session=") || strings.Contains(sc, "Max-Age") {
		t.Errorf("cookie with ttl 0: %q, want a session cookie", sc)
	}
	if sc := m.get(c, "http://reviews:9080/p", nil).hdr.Get("Set-Cookie"); sc != "" {
		t.Errorf("cookie policy without ttl set %q", sc)
	}
}

func TestCircuitBreaker(t *testing.T) {
	m, v1, v2 := reviewsMesh(t)
	cl := cluster(allReviews, clusterv3.Cluster_ROUND_ROBIN)
	cl.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: u32(1), MaxPendingRequests: u32(1), MaxRequests: u32(100)}}}
	m.push(config.ClusterTypeURL, cl)
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{routeTo("r", prefix("/"), allReviews)}))
	v1.delay.Store(int64(2 * time.Second))
	v2.delay.Store(int64(2 * time.Second))
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := m.httpClient(reviewsVIP+":9080", false)
			r := m.get(c, "http://reviews:9080/", nil)
			mu.Lock()
			codes[r.code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[200] != 2 || codes[503] != 4 {
		t.Fatalf("6 concurrent requests with 1 connection + 1 pending allowed: %v, want 2×200 4×503", codes)
	}
	if !strings.Contains(m.logBuf.String(), `"response_flags":"UO"`) {
		t.Fatal("overflow not logged with flag UO")
	}
}

func TestOutlierDetection(t *testing.T) {
	m, v1, _ := reviewsMesh(t)
	cl := cluster(allReviews, clusterv3.Cluster_ROUND_ROBIN)
	cl.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: u32(2), Interval: dur(100 * time.Millisecond),
		BaseEjectionTime: dur(2 * time.Second), MaxEjectionPercent: u32(100)}
	m.push(config.ClusterTypeURL, cl)
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{routeTo("r", prefix("/"), allReviews)}))
	c := m.httpClient(reviewsVIP+":9080", false)
	v1.status.Store(500)
	failures := 0
	for range 10 {
		if m.get(c, "http://reviews:9080/", nil).code == 500 {
			failures++
		}
	}
	if failures != 2 {
		t.Fatalf("%d failures reached the client, want 2 before v1 is ejected", failures)
	}
	// v1 recovers; after the ejection time it gets traffic again.
	v1.status.Store(0)
	hitsBefore := v1.hits.Load()
	time.Sleep(2100 * time.Millisecond)
	for range 10 {
		m.get(c, "http://reviews:9080/", nil)
	}
	if got := v1.hits.Load() - hitsBefore; got != 5 {
		t.Fatalf("v1 got %d of 10 requests after its ejection ended, want 5", got)
	}
}

// TestClientGoneCancelsUpstream: a client that stops sending (its tunnel
// half-closed) while its request waits on a slow backend cancels that
// request, as net/http's server and Envoy do; the access log says DC.
func TestClientGoneCancelsUpstream(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	st, err := m.tunnel(context.Background(), reviewsVIP+":9080")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if _, err := io.WriteString(st, "GET /?delay=20s HTTP/1.1\r\nHost: reviews:9080\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the request reaches the backend
	start := time.Now()
	_ = st.CloseWrite()
	m.eventually("a DC access log line", func() error {
		for _, l := range accessLines(t, m.logBuf.String()) {
			if l["response_flags"] == "DC" { // not UT: no timeout, and no fault of the host
				return nil
			}
		}
		return fmt.Errorf("none yet in %s", m.logBuf.String())
	})
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the request ran %v after its client left", d)
	}
}
