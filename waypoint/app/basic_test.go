package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/zmesh/zmesh/waypoint/app"
	"github.com/zmesh/zmesh/waypoint/config"
)

const (
	reviews     = "demo/reviews.demo.svc.cluster.local"
	reviewsVIP  = "10.96.0.10"
	reviewsHost = "reviews.demo.svc.cluster.local"
)

// reviewsMesh has a reviews service (HTTP on 9080 → 8080) with pods v1 and
// v2; opts adjust the waypoint's configuration.
func reviewsMesh(t testing.TB, opts ...func(*app.Config)) (*mesh, *pod, *pod) {
	m := newMesh(t, opts...)
	m.addService("reviews", reviewsVIP, httpPort(9080, 8080))
	v1 := m.addPod("reviews-v1", "reviews", "10.244.1.1", map[string]map[uint32]uint32{reviews: {9080: 8080}})
	v2 := m.addPod("reviews-v2", "reviews", "10.244.1.2", map[string]map[uint32]uint32{reviews: {9080: 8080}})
	return m, v1, v2
}

func TestDefaultRouteWithoutListener(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	for _, h2 := range []bool{false, true} {
		c := m.httpClient(reviewsVIP+":9080", h2)
		seen := map[string]int{}
		for range 6 {
			r := m.get(c, "http://reviews:9080/hello?x=1", nil)
			if r.code != 200 {
				t.Fatalf("h2=%v: status %d body %q", h2, r.code, r.body)
			}
			seen[r.echo.Pod]++
			if r.echo.Peer != "spiffe://cluster.local/ns/demo/sa/waypoint" {
				t.Fatalf("backend saw peer %q, want the waypoint's identity", r.echo.Peer)
			}
			if r.echo.Path != "/hello?x=1" || r.echo.Host != "reviews:9080" {
				t.Fatalf("backend saw path %q host %q", r.echo.Path, r.echo.Host)
			}
			if !strings.HasPrefix(r.echo.Headers["traceparent"], "00-") {
				t.Fatalf("no traceparent propagated: %v", r.echo.Headers)
			}
		}
		if seen["reviews-v1"] != 3 || seen["reviews-v2"] != 3 {
			t.Fatalf("h2=%v: round robin spread %v, want 3/3", h2, seen)
		}
	}
	// Unhealthy workloads get no traffic.
	m.mu.Lock()
	m.pods["reviews-v2"].healthy = false
	m.mu.Unlock()
	m.pushAddresses()
	c := m.httpClient(reviewsVIP+":9080", false)
	for range 4 {
		if r := m.get(c, "http://reviews:9080/", nil); r.echo.Pod != "reviews-v1" {
			t.Fatalf("request went to %q, want only the healthy reviews-v1", r.echo.Pod)
		}
	}
}

func TestTraceContextPropagated(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	c := m.httpClient(reviewsVIP+":9080", false)
	in := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	r := m.get(c, "http://reviews:9080/", map[string]string{"traceparent": in, "tracestate": "vendor=x"})
	got := r.echo.Headers["traceparent"]
	if !strings.HasPrefix(got, "00-0af7651916cd43dd8448eb211c80319c-") || strings.Contains(got, "b7ad6b7169203331") || !strings.HasSuffix(got, "-01") {
		t.Fatalf("traceparent upstream %q: want same trace, new span, same flags", got)
	}
	if r.echo.Headers["tracestate"] != "vendor=x" {
		t.Fatalf("tracestate not passed through: %q", r.echo.Headers["tracestate"])
	}
	if !strings.Contains(m.logBuf.String(), `"trace_id":"0af7651916cd43dd8448eb211c80319c"`) {
		t.Fatalf("access log lacks the trace id:\n%s", m.logBuf.String())
	}
}

func TestUnknownClusterIs500AndConnectFailureIs503(t *testing.T) {
	m, v1, v2 := reviewsMesh(t)
	m.push(config.ClusterTypeURL, cluster("outbound|9080||reviews.demo.svc.cluster.local", clusterv3.Cluster_ROUND_ROBIN))
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080",
		[]*routev3.Route{routeTo("missing", prefix("/missing"), "outbound|9080||nope.demo.svc.cluster.local"),
			routeTo("all", prefix("/"), "outbound|9080||reviews.demo.svc.cluster.local")}))
	c := m.httpClient(reviewsVIP+":9080", false)
	r := m.get(c, "http://reviews:9080/missing", nil)
	if r.code != 500 {
		t.Fatalf("route to a missing cluster: status %d, want 500", r.code)
	}
	v1.refuse.Store(true)
	v2.refuse.Store(true)
	r = m.get(c, "http://reviews:9080/", nil)
	if r.code != 503 || !strings.Contains(r.body, "connection failure") {
		t.Fatalf("connect failure: status %d body %q, want 503", r.code, r.body)
	}
	for _, leak := range []string{"10.244", "hbone", "127.0.0.1", "spiffe"} {
		if strings.Contains(r.body, leak) {
			t.Fatalf("error body leaks %q: %q", leak, r.body)
		}
	}
	lines := accessLines(t, m.logBuf.String())
	last := lines[len(lines)-1]
	if last["response_code"] != float64(503) || !strings.Contains(last["response_flags"].(string), "UF") {
		t.Fatalf("access log for the failure: %v", last)
	}
	if prev := lines[len(lines)-2]; prev["response_flags"] != "NC" || prev["response_code"] != float64(500) {
		t.Fatalf("access log for the missing cluster: %v", prev)
	}
}

func accessLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(s))
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("access log is not JSON lines: %v\n%s", err, s)
		}
		out = append(out, m)
	}
}

var _ = http.MethodGet

func TestWorkloadAddressedTunnel(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	// A tunnel to a pod address (workload waypoint) reaches that pod only,
	// served at L7 because a service declares the port HTTP.
	c := m.httpClient("10.244.1.2:8080", false)
	for range 4 {
		r := m.get(c, "http://reviews-v2:8080/w", nil)
		if r.code != 200 || r.echo.Pod != "reviews-v2" || r.echo.Path != "/w" {
			t.Fatalf("pod-addressed request: %d from %q", r.code, r.echo.Pod)
		}
	}
}
