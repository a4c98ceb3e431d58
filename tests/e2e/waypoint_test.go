package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
)

// Addresses of the waypoint scenario.
const (
	reviewsVIP   = "10.96.0.20"
	reviewsV1VIP = "10.96.0.21"
	reviewsV2VIP = "10.96.0.22"
	waypointVIP  = "10.96.0.30"
	// downVIP is the ClusterIP of a waypoint Service without pods.
	downVIP    = "10.96.0.40"
	detailsVIP = "10.96.0.50"
	waypointID = "spiffe://cluster.local/ns/demo/sa/wp"
	// reviewsGRPCVIP is the ClusterIP of reviews-grpc (port grpcPort).
	reviewsGRPCVIP = "10.96.0.23"
	grpcPort       = 7070
	// toolsIP is the address of tools-0, a pod outside the mesh where the
	// tests run servers the waypoint calls: a JWKS server and an OTLP
	// collector (their ports below).
	toolsIP       = "10.244.1.250"
	jwksPort      = 8081
	collectorPort = 4318
)

// buildWaypoint builds the waypoint binary for t.
func buildWaypoint(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "waypoint")
	if b, err := exec.Command("go", "build", "-o", out, "github.com/zmesh/zmesh/waypoint/cmd/waypoint").CombinedOutput(); err != nil {
		t.Fatalf("build waypoint: %v\n%s", err, b)
	}
	return out
}

// waypointMesh: sleep on node1; reviews v1 (node2) and v2 (node1) behind
// the service reviews, which uses the waypoint wp (its pod wp-0 on node2,
// outside the mesh as Istio's waypoints are); the pod ratings-0 (node1)
// uses wp itself; details (the v1 pod too) uses wp-down, a waypoint whose
// Service has no pod. The waypoint runs as deployed by default, without
// a mesh-wide access log: Telemetry resources turn it on.
func waypointMesh(t *testing.T) meshSpec {
	ambient := map[string]string{"istio.io/dataplane-mode": "ambient"}
	http := []cluster.ServicePort{{Name: "http", Port: 9080, TargetPort: intOrPort(8080)}}
	httpAndGRPC := append(http, cluster.ServicePort{Name: "grpc", Port: grpcPort, AppProtocol: "grpc"})
	wpPorts := []cluster.ServicePort{{Name: "mesh", Port: 15008}, {Name: "status-port", Port: 15021}}
	return meshSpec{
		Namespaces: map[string]map[string]string{"demo": ambient},
		Pods: []cluster.PodSpec{
			{Name: "sleep-0", Namespace: "demo", Node: "node1", ServiceAccount: "sleep", Labels: map[string]string{"app": "sleep"}},
			{Name: "reviews-v1-0", Namespace: "demo", Node: "node2", ServiceAccount: "reviews",
				Labels: map[string]string{"app": "reviews", "version": "v1"}},
			{Name: "reviews-v2-0", Namespace: "demo", Node: "node1", ServiceAccount: "reviews",
				Labels: map[string]string{"app": "reviews", "version": "v2"}},
			{Name: "ratings-0", Namespace: "demo", Node: "node1", ServiceAccount: "ratings",
				Labels: map[string]string{"app": "ratings", "istio.io/use-waypoint": "wp"}},
			{Name: "wp-0", Namespace: "demo", Node: "node2", ServiceAccount: "wp",
				Labels: map[string]string{"istio.io/dataplane-mode": "none", "gateway.networking.k8s.io/gateway-name": "wp"}},
			{Name: "tools-0", Namespace: "demo", Node: "node1", ServiceAccount: "tools", IP: netip.MustParseAddr(toolsIP),
				Labels: map[string]string{"app": "tools", "istio.io/dataplane-mode": "none"}},
		},
		Services: []cluster.ServiceSpec{
			{Name: "reviews", Namespace: "demo", ClusterIP: reviewsVIP, Selector: map[string]string{"app": "reviews"},
				Labels: map[string]string{"istio.io/use-waypoint": "wp"}, Ports: http},
			{Name: "reviews-v1", Namespace: "demo", ClusterIP: reviewsV1VIP, Selector: map[string]string{"app": "reviews", "version": "v1"}, Ports: httpAndGRPC},
			{Name: "reviews-v2", Namespace: "demo", ClusterIP: reviewsV2VIP, Selector: map[string]string{"app": "reviews", "version": "v2"}, Ports: httpAndGRPC},
			// gRPC by port name alone (grpc-*); its backends' ports say
			// so by appProtocol.
			{Name: "reviews-grpc", Namespace: "demo", ClusterIP: reviewsGRPCVIP, Selector: map[string]string{"app": "reviews"},
				Labels: map[string]string{"istio.io/use-waypoint": "wp"}, Ports: []cluster.ServicePort{{Name: "grpc-echo", Port: grpcPort}}},
			{Name: "details", Namespace: "demo", ClusterIP: detailsVIP, Selector: map[string]string{"app": "reviews", "version": "v1"},
				Labels: map[string]string{"istio.io/use-waypoint": "wp-down"}, Ports: http},
			{Name: "wp", Namespace: "demo", ClusterIP: waypointVIP, Selector: map[string]string{"gateway.networking.k8s.io/gateway-name": "wp"},
				Labels: map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller", "gateway.networking.k8s.io/gateway-name": "wp"}, Ports: wpPorts},
			{Name: "wp-down", Namespace: "demo", ClusterIP: downVIP, Selector: map[string]string{"gateway.networking.k8s.io/gateway-name": "wp-down"},
				Labels: map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller", "gateway.networking.k8s.io/gateway-name": "wp-down"}, Ports: wpPorts},
		},
		EchoArgs:       []string{"--grpc", fmt.Sprint(grpcPort)},
		Waypoints:      []string{"wp-0"},
		WaypointBinary: buildWaypoint(t),
		// The OTLP collector runs in tools-0 (see TestWaypoint/TraceContext).
		WaypointArgs: []string{"--otlp-endpoint", fmt.Sprintf("http://%s:%d/v1/traces", toolsIP, collectorPort)},
	}
}

// gatewayYAML is a waypoint Gateway (for services and workloads) as the
// deployer leaves it: status carries its Service's ClusterIP.
func gatewayYAML(name, ip string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: %s, namespace: demo, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
status:
  addresses: [{type: IPAddress, value: %q}]
  conditions:
  - {type: Programmed, status: "True", reason: Programmed, message: ok, lastTransitionTime: "2024-01-01T00:00:00Z"}
`, name, ip)
}

// routeYAML: x-version: v2 goes to v2; otherwise 80/20 v1/v2 with a header
// added.
const routeYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: reviews-v2, port: 9080}]
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x-waypoint-added, value: "yes"}]}
    backendRefs: [{name: reviews-v1, port: 9080, weight: 80}, {name: reviews-v2, port: 9080, weight: 20}]
`

// request sends method url from pod src with headers; any HTTP status is a
// response, transport failures are errors.
func request(src *cluster.Pod, method, url string, header map[string]string) (*echo.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := src.Netns.HTTPClient(5 * time.Second).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := &echo.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if rep, err := echo.ParseReport(body); err == nil {
		out.Report = rep
	}
	return out, nil
}

// metricSum adds up the samples of metric (with every label in labels)
// served on url from pod src.
func metricSum(t *testing.T, src *cluster.Pod, url, metric string, labels ...string) float64 {
	t.Helper()
	resp, err := src.Netns.HTTPClient(3 * time.Second).Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	return sumSamples(resp.Body, metric, labels...)
}

// sumSamples sums the samples of metric (with or without labels) in a
// Prometheus text exposition that carry every one of labels.
func sumSamples(r io.Reader, metric string, labels ...string) float64 {
	var sum float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// waitFor waits (bounded) for cond, failing with its last detail.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never: %s; last: %s", what, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually waits (bounded) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, what, func() (bool, string) { return cond(), "" })
}

// describe renders a request's outcome for failure messages.
func describe(r *echo.Response, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case r.Report != nil:
		return fmt.Sprintf("%d from %s (peer %s)", r.Status, r.Report.Pod, r.Report.Peer)
	}
	return fmt.Sprintf("%d %q", r.Status, r.Body)
}

// ztunnelMetric scrapes node's ztunnel.
func (m *mesh) ztunnelMetric(node, metric string, labels ...string) float64 {
	m.t.Helper()
	resp, err := http.Get("http://" + m.ZtunnelHTTP[node].Metrics + "/metrics")
	if err != nil {
		m.t.Fatalf("scrape ztunnel %s: %v", node, err)
	}
	defer resp.Body.Close()
	return sumSamples(resp.Body, metric, labels...)
}

// TestWaypoint runs the waypoint scenarios on one mesh: ztunnel sends
// service traffic through the service's waypoint, which applies L7
// routing and policy; waypoint-only policy; a waypoint without pods fails
// closed.
func TestWaypoint(t *testing.T) {
	m := startMesh(t, waypointMesh(t))
	tl := startTools(t, m)
	sleep, wp := m.pods["sleep-0"], m.pods["wp-0"]
	wpMetrics := fmt.Sprintf("http://%s:15020/metrics", wp.IP)
	m.writeConfig("gateways.yaml", gatewayYAML("wp", waypointVIP)+"---\n"+gatewayYAML("wp-down", downVIP))
	vipURL := "http://" + reviewsVIP + ":9080"
	// Until ztunnel learns the binding, the VIP goes straight to a pod.
	waitFor(t, "reviews traffic goes through the waypoint", func() (bool, string) {
		r, err := request(sleep, http.MethodGet, vipURL+"/probe", nil)
		return err == nil && r.Report != nil && strings.HasPrefix(r.Report.Peer, wp.IP.String()+":"), describe(r, err)
	})

	t.Run("ServiceTrafficViaWaypoint", func(t *testing.T) {
		before := metricSum(t, wp, wpMetrics, "istio_requests_total", `destination_service_name="reviews"`, `response_code="200"`)
		inBefore := m.ztunnelMetric("node2", "istio_tcp_connections_opened_total", `reporter="destination"`,
			`source_principal="`+waypointID+`"`, `destination_workload="reviews-v1-0"`)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		capture, err := m.Cluster.CaptureLink(ctx)
		if err != nil {
			t.Fatal(err)
		}
		const n = 10
		served := map[string]int{}
		for i := range n {
			r, err := request(sleep, http.MethodGet, fmt.Sprintf("%s/via-waypoint/%d", vipURL, i), nil)
			if err != nil || r.Status != 200 || r.Report == nil {
				t.Fatalf("request %d: %v %+v", i, err, r)
			}
			served[r.Report.Pod]++
			// The app's client is the waypoint: ztunnel on the backend's
			// node received the tunnel from it.
			if peer, _ := netip.ParseAddrPort(r.Report.Peer); peer.Addr() != wp.IP {
				t.Errorf("request %d: app saw client %s, want the waypoint %s", i, r.Report.Peer, wp.IP)
			}
		}
		segs, err := capture.Stop()
		if err != nil {
			t.Fatal(err)
		}
		if served["reviews-v1-0"] == 0 || served["reviews-v2-0"] == 0 {
			t.Errorf("the waypoint did not balance over both pods: %v", served)
		}
		if got := metricSum(t, wp, wpMetrics, "istio_requests_total", `destination_service_name="reviews"`, `response_code="200"`) - before; got < n {
			t.Errorf("waypoint counted %v requests for reviews, want >= %d", got, n)
		}
		if got := m.ztunnelMetric("node2", "istio_tcp_connections_opened_total", `reporter="destination"`,
			`source_principal="`+waypointID+`"`, `destination_workload="reviews-v1-0"`) - inBefore; got < 1 {
			t.Errorf("node2's ztunnel saw no tunnel from the waypoint identity to reviews-v1-0")
		}
		if len(segs) == 0 || cluster.Contains(segs, []byte("GET /via-waypoint")) {
			t.Errorf("requests were not tunnelled (%d segments, plaintext seen: %v)", len(segs), cluster.Contains(segs, []byte("GET /via-waypoint")))
		}
		for _, f := range cluster.Flows(segs) {
			// The waypoint's span export to the collector outside the
			// mesh (tools-0, node1) may cross the link meanwhile.
			otlp := f.Dst.Port() == collectorPort || f.Src.Port() == collectorPort
			if f.Src.Port() != 15008 && f.Dst.Port() != 15008 && !otlp {
				t.Errorf("flow %v on the node link is not HBONE", f)
			}
		}
		// Addressed to a pod directly, the service's waypoint is not used.
		r, err := request(sleep, http.MethodGet, "http://"+m.pods["reviews-v1-0"].IP.String()+":8080/direct", nil)
		if err != nil || r.Status != 200 || r.Report == nil {
			t.Fatalf("direct: %v %+v", err, r)
		}
		if peer, _ := netip.ParseAddrPort(r.Report.Peer); peer.Addr() != sleep.IP {
			t.Errorf("direct to the pod: app saw %s, want sleep %s", r.Report.Peer, sleep.IP)
		}
	})

	t.Run("WorkloadTrafficViaWaypoint", func(t *testing.T) {
		// ratings-0 is bound to wp itself: traffic to its pod IP goes
		// through the waypoint, with the pod IP:port as target.
		url := "http://" + m.pods["ratings-0"].IP.String() + ":8080/workload"
		waitFor(t, "pod traffic goes through the waypoint", func() (bool, string) {
			r, err := request(sleep, http.MethodGet, url, nil)
			return err == nil && r.Status == 200 && r.Report != nil && r.Report.Pod == "ratings-0" &&
				strings.HasPrefix(r.Report.Peer, wp.IP.String()+":"), describe(r, err)
		})
	})

	t.Run("HTTPRoute", func(t *testing.T) {
		m.writeConfig("route.yaml", routeYAML)
		waitFor(t, "the header match routes to v2 only", func() (bool, string) {
			for range 5 {
				r, err := request(sleep, http.MethodGet, vipURL+"/match", map[string]string{"x-version": "v2"})
				if err != nil || r.Report == nil || r.Report.Pod != "reviews-v2-0" {
					return false, describe(r, err)
				}
			}
			return true, ""
		})
		eventually(t, "the default rule adds its header", func() bool {
			r, err := request(sleep, http.MethodGet, vipURL+"/split", nil)
			return err == nil && r.Report != nil && r.Report.Headers["X-Waypoint-Added"] == "yes"
		})
		const n = 100
		served := map[string]int{}
		for i := range n {
			r, err := request(sleep, http.MethodGet, vipURL+"/split", nil)
			if err != nil || r.Status != 200 || r.Report == nil {
				t.Fatalf("split request %d: %s", i, describe(r, err))
			}
			if r.Report.Headers["X-Waypoint-Added"] != "yes" {
				t.Errorf("request %d: added header missing: %v", i, r.Report.Headers)
			}
			served[r.Report.Pod]++
		}
		// 80/20: loosely, v1 gets 60..95 of 100.
		if v1 := served["reviews-v1-0"]; v1 < 60 || v1 > 95 || served["reviews-v2-0"] == 0 {
			t.Errorf("80/20 split served %v", served)
		}
		m.removeConfig("route.yaml")
		eventually(t, "route removed: the header match no longer applies", func() bool {
			for range 10 {
				r, err := request(sleep, http.MethodGet, vipURL+"/match", map[string]string{"x-version": "v2"})
				if err == nil && r.Report != nil && r.Report.Pod == "reviews-v1-0" {
					return true
				}
			}
			return false
		})
	})

	// Istio's own API at the waypoint: DestinationRule subsets, and a
	// VirtualService routing by header to a subset, injecting a fault and
	// setting a response header.
	t.Run("VirtualServiceAndDestinationRule", func(t *testing.T) {
		m.writeConfig("istio-routing.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: demo}
spec:
  host: reviews.demo.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{headers: {x-version: {exact: v2}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
    headers: {response: {set: {x-served-by-subset: v1}}}
`)
		waitFor(t, "the VirtualService routes by header to subset v2", func() (bool, string) {
			for range 5 {
				r, err := request(sleep, http.MethodGet, vipURL+"/vs", map[string]string{"x-version": "v2"})
				if err != nil || r.Report == nil || r.Report.Pod != "reviews-v2-0" {
					return false, describe(r, err)
				}
			}
			return true, ""
		})
		for i := range 10 {
			r, err := request(sleep, http.MethodGet, vipURL+"/vs", nil)
			if err != nil || r.Report == nil || r.Report.Pod != "reviews-v1-0" {
				t.Fatalf("default route request %d: want subset v1 only, got %s", i, describe(r, err))
			}
			if got := r.Header.Get("X-Served-By-Subset"); got != "v1" {
				t.Fatalf("default route request %d: response header x-served-by-subset %q", i, got)
			}
		}
		r, err := request(sleep, http.MethodGet, vipURL+"/vs", map[string]string{"x-fault": "abort"})
		if err != nil || r.Status != 418 {
			t.Fatalf("fault abort: want 418, got %s", describe(r, err))
		}
		m.removeConfig("istio-routing.yaml")
		eventually(t, "VirtualService removed: no fault", func() bool {
			r, err := request(sleep, http.MethodGet, vipURL+"/vs", map[string]string{"x-fault": "abort"})
			return err == nil && r.Status == 200
		})
	})

	// VirtualService timeout and retries: a 200ms route timeout cuts a
	// slow backend off with 504; with perTryTimeout 100ms and 3 retries on
	// 5xx the waypoint tries four times before answering 504 (URX).
	t.Run("VirtualServiceTimeoutAndRetries", func(t *testing.T) {
		m.writeConfig("vs-timeouts.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-timeouts, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /retry}}]
    timeout: 4s
    retries: {attempts: 3, perTryTimeout: 0.1s, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
  - timeout: 0.2s
    route: [{destination: {host: reviews}}]
`)
		waitFor(t, "the route timeout cuts a slow request off", func() (bool, string) {
			r, err := request(sleep, http.MethodGet, vipURL+"/slow?delay=2s", nil)
			return err == nil && r.Status == http.StatusGatewayTimeout, describe(r, err)
		})
		start := time.Now()
		r, err := request(sleep, http.MethodGet, vipURL+"/slow?delay=2s", nil)
		if took := time.Since(start); err != nil || r.Status != http.StatusGatewayTimeout || took < 180*time.Millisecond || took > 1500*time.Millisecond {
			t.Errorf("slow request under a 200ms timeout: %s after %v, want 504 after ~200ms", describe(r, err), took)
		}
		if r, err := request(sleep, http.MethodGet, vipURL+"/fast?delay=20ms", nil); err != nil || r.Status != http.StatusOK {
			t.Errorf("fast request under a 200ms timeout: %s, want 200", describe(r, err))
		}
		urx := func() float64 {
			return metricSum(t, wp, wpMetrics, "istio_requests_total", `destination_service_name="reviews"`, `response_code="504"`, "URX")
		}
		before := urx()
		start = time.Now()
		r, err = request(sleep, http.MethodGet, vipURL+"/retry?delay=2s", nil)
		// Four tries of 100ms each (plus backoff), well under the 2s the
		// backend takes and the 4s route timeout.
		if took := time.Since(start); err != nil || r.Status != http.StatusGatewayTimeout || took < 380*time.Millisecond || took > 1500*time.Millisecond {
			t.Errorf("retried slow request: %s after %v, want 504 after 4 tries of 100ms", describe(r, err), took)
		}
		eventually(t, "the waypoint counts the retried request with flag URX", func() bool { return urx()-before >= 1 })
		// A quick enough backend answers on the first try.
		if r, err := request(sleep, http.MethodGet, vipURL+"/retry?delay=10ms", nil); err != nil || r.Status != http.StatusOK {
			t.Errorf("quick request with retries: %s, want 200", describe(r, err))
		}
		m.removeConfig("vs-timeouts.yaml")
		eventually(t, "VirtualService removed: no timeout", func() bool {
			r, err := request(sleep, http.MethodGet, vipURL+"/slow?delay=400ms", nil)
			return err == nil && r.Status == http.StatusOK
		})
	})

	// VirtualService fault injection: a fixed 300ms delay on every
	// request; an abort on about half of them.
	t.Run("VirtualServiceFaultDelayAndPartialAbort", func(t *testing.T) {
		m.writeConfig("vs-faults.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-faults, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-fault: {exact: delay}}}]
    fault: {delay: {fixedDelay: 0.3s, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{headers: {x-fault: {exact: abort-half}}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
`)
		timed := func(h map[string]string) (time.Duration, *echo.Response, error) {
			start := time.Now()
			r, err := request(sleep, http.MethodGet, vipURL+"/fault", h)
			return time.Since(start), r, err
		}
		delay := map[string]string{"x-fault": "delay"}
		waitFor(t, "requests are delayed by the fault", func() (bool, string) {
			took, r, err := timed(delay)
			return err == nil && r.Status == http.StatusOK && took >= 300*time.Millisecond, fmt.Sprintf("%s after %v", describe(r, err), took)
		})
		for i := range 3 {
			if took, r, err := timed(delay); err != nil || r.Status != http.StatusOK || took < 300*time.Millisecond {
				t.Errorf("delayed request %d: %s after %v, want 200 after >= 300ms", i, describe(r, err), took)
			}
		}
		if took, r, err := timed(nil); err != nil || r.Status != http.StatusOK || took >= 300*time.Millisecond {
			t.Errorf("request without the fault header: %s after %v, want 200 without the delay", describe(r, err), took)
		}
		const n = 100
		aborted := 0
		for i := range n {
			r, err := request(sleep, http.MethodGet, vipURL+"/fault", map[string]string{"x-fault": "abort-half"})
			switch {
			case err != nil:
				t.Fatalf("abort request %d: %v", i, err)
			case r.Status == http.StatusServiceUnavailable && r.Report == nil:
				aborted++
			case r.Status != http.StatusOK || r.Report == nil:
				t.Fatalf("abort request %d: %s, want 200 from a pod or the injected 503", i, describe(r, err))
			}
		}
		// 50%: loosely 25..75 of 100.
		if aborted < 25 || aborted > 75 {
			t.Errorf("50%% abort fault aborted %d of %d requests", aborted, n)
		}
		m.removeConfig("vs-faults.yaml")
		eventually(t, "VirtualService removed: no delay", func() bool {
			took, r, err := timed(delay)
			return err == nil && r.Status == http.StatusOK && took < 300*time.Millisecond
		})
	})

	// VirtualService mirror: responses come from v1 while the waypoint
	// sends a copy to reviews-v2. v1 and the waypoint share node2, so the
	// only waypoint traffic to reviews-v2-0 (node1) on the node link is
	// the mirror's.
	t.Run("VirtualServiceMirror", func(t *testing.T) {
		v2 := m.pods["reviews-v2-0"].IP
		toV2 := func(mirror bool) (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			capture, err := m.Cluster.CaptureLink(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				r, err := request(sleep, http.MethodGet, fmt.Sprintf("%s/mirror/%d", vipURL, i), nil)
				if err != nil || r.Report == nil || r.Report.Pod != "reviews-v1-0" {
					_, _ = capture.Stop()
					return false, fmt.Sprintf("request %d: %s, want v1", i, describe(r, err))
				}
			}
			// The mirror is fire and forget: give it time to cross.
			time.Sleep(200 * time.Millisecond)
			segs, err := capture.Stop()
			if err != nil {
				t.Fatal(err)
			}
			bytes := 0
			for _, s := range segs {
				if s.Src.Addr() == wp.IP && s.Dst.Addr() == v2 && s.Dst.Port() == 15008 {
					bytes += len(s.Payload)
				}
			}
			return (bytes > 0) == mirror, fmt.Sprintf("%d payload bytes from the waypoint to reviews-v2-0", bytes)
		}
		const vs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-mirror, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews-v1}}]
`
		m.writeConfig("vs-mirror.yaml", vs)
		waitFor(t, "without a mirror, v1 alone serves and nothing goes to v2", func() (bool, string) { return toV2(false) })
		m.writeConfig("vs-mirror.yaml", vs+"    mirror: {host: reviews-v2}\n    mirrorPercentage: {value: 100}\n")
		waitFor(t, "the mirror sends copies to reviews-v2-0 while v1 answers", func() (bool, string) { return toV2(true) })
		m.removeConfig("vs-mirror.yaml")
		eventually(t, "VirtualService removed: both pods serve", func() bool {
			served := map[string]bool{}
			for range 20 {
				if r, err := request(sleep, http.MethodGet, vipURL+"/after-mirror", nil); err == nil && r.Report != nil {
					served[r.Report.Pod] = true
				}
			}
			return served["reviews-v1-0"] && served["reviews-v2-0"]
		})
	})

	// DestinationRule consistentHash on a header: every value sticks to
	// one pod, and the values spread over both.
	t.Run("DestinationRuleConsistentHash", func(t *testing.T) {
		m.writeConfig("dr-hash.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-hash, namespace: demo}
spec:
  host: reviews.demo.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
`)
		sticky := func(user string, n int) (string, string) {
			pod := ""
			for range n {
				r, err := request(sleep, http.MethodGet, vipURL+"/hash", map[string]string{"x-user": user})
				if err != nil || r.Report == nil {
					return "", describe(r, err)
				}
				if pod != "" && r.Report.Pod != pod {
					return "", fmt.Sprintf("user %s served by %s and %s", user, pod, r.Report.Pod)
				}
				pod = r.Report.Pod
			}
			return pod, ""
		}
		waitFor(t, "a header value sticks to one pod", func() (bool, string) {
			pod, detail := sticky("probe", 10)
			return pod != "", detail
		})
		served := map[string]int{}
		for i := range 16 {
			pod, detail := sticky(fmt.Sprintf("user-%d", i), 5)
			if pod == "" {
				t.Fatal(detail)
			}
			served[pod]++
		}
		if served["reviews-v1-0"] == 0 || served["reviews-v2-0"] == 0 {
			t.Errorf("16 header values all hashed to one pod: %v", served)
		}
		m.removeConfig("dr-hash.yaml")
		eventually(t, "DestinationRule removed: one header value reaches both pods", func() bool {
			seen := map[string]bool{}
			for range 20 {
				if r, err := request(sleep, http.MethodGet, vipURL+"/hash", map[string]string{"x-user": "probe"}); err == nil && r.Report != nil {
					seen[r.Report.Pod] = true
				}
			}
			return len(seen) == 2
		})
	})
	// DestinationRule outlierDetection: ztunnel on node1 refuses the
	// waypoint's tunnels to reviews-v2-0, so requests the waypoint sends
	// there fail (retries are off); with one consecutive error ejecting a
	// host, v1 then serves everything, and v2 comes back once admitted.
	t.Run("DestinationRuleOutlierDetection", func(t *testing.T) {
		m.writeConfig("od-deny.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-wp-to-v2, namespace: demo}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/wp"]}}]}]
`)
		const noRetries = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-od, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-od, namespace: demo}
spec:
  host: reviews.demo.svc.cluster.local
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
`
		m.writeConfig("od.yaml", noRetries)
		// batch sends n requests; it counts failures and the pods serving.
		batch := func(n int) (failed int, served map[string]int) {
			served = map[string]int{}
			for range n {
				r, err := request(sleep, http.MethodGet, vipURL+"/outlier", nil)
				if err != nil || r.Status != http.StatusOK || r.Report == nil {
					failed++
					continue
				}
				served[r.Report.Pod]++
			}
			return failed, served
		}
		waitFor(t, "without outlier detection, requests sent to v2 fail", func() (bool, string) {
			failed, served := batch(20)
			return failed >= 3 && served["reviews-v2-0"] == 0, fmt.Sprintf("%d failed, served %v", failed, served)
		})
		m.writeConfig("od.yaml", noRetries+`    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}
`)
		waitFor(t, "outlier detection ejects v2: v1 serves everything", func() (bool, string) {
			failed, served := batch(20)
			return failed == 0 && served["reviews-v1-0"] == 20, fmt.Sprintf("%d failed, served %v", failed, served)
		})
		// Each ejection ends after baseEjectionTime (growing with repeats):
		// at most a few failures in 40 requests, against about half.
		if failed, served := batch(40); failed > 4 {
			t.Errorf("with outlier detection %d of 40 requests failed (served %v)", failed, served)
		}
		m.removeConfig("od-deny.yaml")
		waitFor(t, "v2 admitted again: once its ejection ends, both pods serve", func() (bool, string) {
			failed, served := batch(20)
			return failed == 0 && served["reviews-v1-0"] > 0 && served["reviews-v2-0"] > 0, fmt.Sprintf("%d failed, served %v", failed, served)
		})
		m.removeConfig("od.yaml")
	})

	// DestinationRule connectionPool: one connection and one pending
	// request at most; concurrent slow requests beyond that overflow
	// with 503 and flag UO.
	t.Run("DestinationRuleConnectionPool", func(t *testing.T) {
		// The Telemetry API turns on the waypoint's access log (Istio's
		// built-in envoy provider: the waypoint's stdout) for the
		// namespace's waypoint services.
		m.writeConfig("telemetry.yaml", `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: access-logs, namespace: demo}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
`)
		defer m.removeConfig("telemetry.yaml")
		m.writeConfig("dr-pool.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-pool, namespace: demo}
spec:
  host: reviews.demo.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 1, maxRequestsPerConnection: 1}
`)
		uo := func() float64 {
			return metricSum(t, wp, wpMetrics, "istio_requests_total", `destination_service_name="reviews"`, `response_code="503"`, `response_flags="UO"`)
		}
		burst := func() (ok, overflow int, detail string) {
			const n = 6
			type result struct {
				r   *echo.Response
				err error
			}
			results := make(chan result, n)
			for range n {
				go func() {
					r, err := request(sleep, http.MethodGet, vipURL+"/pool?delay=600ms", nil)
					results <- result{r, err}
				}()
			}
			for range n {
				res := <-results
				switch {
				case res.err == nil && res.r.Status == http.StatusOK:
					ok++
				case res.err == nil && res.r.Status == http.StatusServiceUnavailable:
					overflow++
				default:
					detail = describe(res.r, res.err)
				}
			}
			return ok, overflow, detail
		}
		before := uo()
		waitFor(t, "concurrent requests overflow the pool", func() (bool, string) {
			ok, overflow, detail := burst()
			return ok >= 1 && overflow >= 3 && detail == "", fmt.Sprintf("%d ok, %d overflowed, other: %s", ok, overflow, detail)
		})
		if got := uo() - before; got < 3 {
			t.Errorf("waypoint counted %v overflowed requests with flag UO, want >= 3", got)
		}
		// The access log (the waypoint's stdout, flushed every second)
		// has them too: one JSON object per line, with the response flag.
		waitFor(t, "the access log has an overflowed request", func() (bool, string) {
			out := m.WaypointProcs["wp-0"].Log()
			for line := range strings.Lines(out) {
				var e struct {
					Path  string `json:"path"`
					Code  int    `json:"response_code"`
					Flags string `json:"response_flags"`
				}
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					continue // the waypoint's own log lines, on stderr
				}
				if strings.HasPrefix(e.Path, "/pool") && e.Code == http.StatusServiceUnavailable && e.Flags == "UO" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%d bytes of output, no 503 UO access log line for /pool", len(out))
		})
		m.removeConfig("dr-pool.yaml")
		eventually(t, "DestinationRule removed: no overflow", func() bool {
			ok, overflow, detail := burst()
			return ok == 6 && overflow == 0 && detail == ""
		})
	})

	t.Run("L7AuthorizationPolicy", func(t *testing.T) {
		m.writeConfig("l7-deny.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}]
  action: DENY
  rules:
  - to: [{operation: {methods: ["DELETE"]}}]
  - to: [{operation: {paths: ["/admin"]}}]
`)
		waitFor(t, "DELETE is denied by the waypoint", func() (bool, string) {
			r, err := request(sleep, http.MethodDelete, vipURL+"/item", nil)
			return err == nil && r.Status == http.StatusForbidden, describe(r, err)
		})
		for _, tc := range []struct {
			method, path string
			want         int
		}{
			{http.MethodGet, "/admin", http.StatusForbidden},
			{http.MethodDelete, "/item", http.StatusForbidden},
			{http.MethodGet, "/", http.StatusOK},
			{http.MethodPost, "/item", http.StatusOK},
		} {
			r, err := request(sleep, tc.method, vipURL+tc.path, nil)
			if err != nil || r.Status != tc.want {
				t.Errorf("%s %s: %s, want %d", tc.method, tc.path, describe(r, err), tc.want)
			}
		}
		if got := metricSum(t, wp, wpMetrics, "istio_requests_total", `destination_service_name="reviews"`, `response_code="403"`); got < 2 {
			t.Errorf("waypoint counted %v denied requests, want >= 2", got)
		}
		m.removeConfig("l7-deny.yaml")
		eventually(t, "policy removed", func() bool {
			r, err := request(sleep, http.MethodDelete, vipURL+"/item", nil)
			return err == nil && r.Status == http.StatusOK
		})
	})

	// RequestAuthentication with an inline JWKS plus an ALLOW policy on
	// request principals and a claim: a bad token gets 401, no token 403,
	// a good token with the claim 200.
	t.Run("RequestAuthenticationJWT", func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
		if err != nil {
			t.Fatal(err)
		}
		sign := func(k *ecdsa.PrivateKey, claims map[string]any) string {
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", "k1").WithType("JWT"))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := josejwt.Signed(signer).Claims(claims).Serialize()
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		exp := time.Now().Add(time.Hour).Unix()
		good := sign(key, map[string]any{"iss": "https://issuer.test", "sub": "alice", "group": "admins", "exp": exp})
		noClaim := sign(key, map[string]any{"iss": "https://issuer.test", "sub": "bob", "exp": exp})
		other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		forged := sign(other, map[string]any{"iss": "https://issuer.test", "sub": "alice", "group": "admins", "exp": exp})
		m.writeConfig("jwt.yaml", fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}]
  jwtRules: [{issuer: "https://issuer.test", jwks: %q}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}]
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.test/*"]}}]
    when: [{key: "request.auth.claims[group]", values: ["admins"]}]
`, string(jwks)))
		bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
		waitFor(t, "a request without a token is denied", func() (bool, string) {
			r, err := request(sleep, http.MethodGet, vipURL+"/jwt", nil)
			return err == nil && r.Status == http.StatusForbidden, describe(r, err)
		})
		for _, tc := range []struct {
			name   string
			header map[string]string
			want   int
		}{
			{"good token with the claim", bearer(good), http.StatusOK},
			{"good token without the claim", bearer(noClaim), http.StatusForbidden},
			{"token signed by another key", bearer(forged), http.StatusUnauthorized},
			{"garbage token", bearer("not.a.jwt"), http.StatusUnauthorized},
			{"no token", nil, http.StatusForbidden},
		} {
			r, err := request(sleep, http.MethodGet, vipURL+"/jwt", tc.header)
			if err != nil || r.Status != tc.want {
				t.Errorf("%s: %s, want %d", tc.name, describe(r, err), tc.want)
			}
		}
		m.removeConfig("jwt.yaml")
		eventually(t, "JWT policy removed", func() bool {
			r, err := request(sleep, http.MethodGet, vipURL+"/jwt", nil)
			return err == nil && r.Status == http.StatusOK
		})
	})

	t.Run("WaypointOnlyPolicy", func(t *testing.T) {
		direct := "http://" + m.pods["reviews-v1-0"].IP.String() + ":8080/direct"
		via := func() bool {
			r, err := request(sleep, http.MethodGet, vipURL+"/via", nil)
			return err == nil && r.Status == 200
		}
		bypass := func() bool {
			r, err := request(sleep, http.MethodGet, direct, nil)
			return err == nil && r.Status == 200
		}
		if r, err := request(wp, http.MethodGet, direct, nil); err != nil || r.Status != 200 {
			t.Fatalf("without policy, a plaintext client is refused: %s", describe(r, err))
		}
		// ALLOW only sleep on the reviews pods: the waypoint is admitted
		// by the implicit allow-from-waypoint policy, sleep directly by
		// the rule.
		m.writeConfig("allow.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-allow, namespace: demo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/sleep"]}}]}]
`)
		// In force once a plaintext client (the uncaptured waypoint pod's
		// own address, not its HBONE identity) is refused.
		waitFor(t, "ALLOW sleep is in force", func() (bool, string) {
			r, err := request(wp, http.MethodGet, direct, nil)
			return err != nil, describe(r, err)
		})
		if !via() || !bypass() {
			t.Fatalf("under ALLOW sleep: via the waypoint %v, direct %v; want both allowed", via(), bypass())
		}
		// Istio's waypoint-only pattern: ALLOW only the waypoint's
		// principal; clients must come through it.
		m.writeConfig("allow.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-allow, namespace: demo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/wp"]}}]}]
`)
		eventually(t, "direct pod access is denied", func() bool { return !bypass() })
		for i := range 5 {
			if !via() {
				t.Fatalf("request %d through the waypoint refused under the waypoint-only policy", i)
			}
		}
		if bypass() {
			t.Error("direct pod access allowed under the waypoint-only policy")
		}
		m.removeConfig("allow.yaml")
		eventually(t, "policy removed", bypass)
	})

	t.Run("LoadBalancing", func(t *testing.T) { testLoadBalancing(t, m, vipURL) })
	t.Run("CookieAffinity", func(t *testing.T) { testCookieAffinity(t, m, vipURL) })
	t.Run("RequestAuthenticationJWKSURI", func(t *testing.T) { testJWKSURI(t, m, tl, vipURL) })
	t.Run("RedirectAndRewrite", func(t *testing.T) { testRedirectAndRewrite(t, m, vipURL) })
	t.Run("GRPC", func(t *testing.T) { testGRPC(t, m) })
	t.Run("TraceContext", func(t *testing.T) { testTraceContext(t, m, tl, vipURL) })
	t.Run("WebSocket", func(t *testing.T) { testWebSocket(t, m) })
	t.Run("CurlClient", func(t *testing.T) { testCurl(t, sleep, vipURL) })

	t.Run("RuntimeSettings", func(t *testing.T) { testRuntimeSettings(t, m, wp, wpMetrics) })

	t.Run("WaypointUnavailableFailsClosed", func(t *testing.T) {
		// details uses wp-down, whose Service has no pod: refused, never
		// sent to details' pod directly.
		r, err := request(sleep, http.MethodGet, "http://"+detailsVIP+":9080/details", nil)
		if err == nil {
			t.Errorf("details (waypoint without pods) answered %d %q", r.Status, r.Body)
		}
		// The reviews waypoint goes away: reviews fails, it is not bypassed.
		if err := m.StopWaypoint("wp-0"); err != nil {
			t.Fatal(err)
		}
		r, err = request(sleep, http.MethodGet, vipURL+"/stopped", nil)
		if err == nil {
			t.Errorf("reviews answered %d %q with its waypoint stopped", r.Status, r.Body)
		}
		// And comes back with it.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.StartWaypoint(ctx, "wp-0"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "reviews served again through the restarted waypoint", func() bool {
			r, err := request(sleep, http.MethodGet, vipURL+"/back", nil)
			return err == nil && r.Status == 200 && r.Report != nil && strings.HasPrefix(r.Report.Peer, wp.IP.String()+":")
		})
	})
}

// testRuntimeSettings checks that the waypoint process runs with the
// runtime settings its flags default to: one P while it is nearly idle, as
// its go_sched_gomaxprocs_threads says.
func testRuntimeSettings(t *testing.T, m *mesh, wp *cluster.Pod, metricsURL string) {
	if m.WaypointProcs["wp-0"] == nil {
		t.Fatal("wp-0 is not a waypoint process")
	}
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: GOMAXPROCS is 1 whatever the load")
	}
	if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
		t.Skipf("GOMAXPROCS=%s is set, and the waypoint inherits it", v)
	}
	waitFor(t, "the idle waypoint runs on one P", func() (bool, string) {
		resp, err := wp.Netns.HTTPClient(3 * time.Second).Get(metricsURL)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		n := sumSamples(resp.Body, "go_sched_gomaxprocs_threads")
		return n == 1, fmt.Sprintf("go_sched_gomaxprocs_threads %v", n)
	})
}
