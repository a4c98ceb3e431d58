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
	"os/exec"
	"path/filepath"
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
// Service has no pod.
func waypointMesh(t *testing.T) meshSpec {
	ambient := map[string]string{"istio.io/dataplane-mode": "ambient"}
	http := []cluster.ServicePort{{Name: "http", Port: 9080, TargetPort: intOrPort(8080)}}
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
		},
		Services: []cluster.ServiceSpec{
			{Name: "reviews", Namespace: "demo", ClusterIP: reviewsVIP, Selector: map[string]string{"app": "reviews"},
				Labels: map[string]string{"istio.io/use-waypoint": "wp"}, Ports: http},
			{Name: "reviews-v1", Namespace: "demo", ClusterIP: reviewsV1VIP, Selector: map[string]string{"app": "reviews", "version": "v1"}, Ports: http},
			{Name: "reviews-v2", Namespace: "demo", ClusterIP: reviewsV2VIP, Selector: map[string]string{"app": "reviews", "version": "v2"}, Ports: http},
			{Name: "details", Namespace: "demo", ClusterIP: detailsVIP, Selector: map[string]string{"app": "reviews", "version": "v1"},
				Labels: map[string]string{"istio.io/use-waypoint": "wp-down"}, Ports: http},
			{Name: "wp", Namespace: "demo", ClusterIP: waypointVIP, Selector: map[string]string{"gateway.networking.k8s.io/gateway-name": "wp"},
				Labels: map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller", "gateway.networking.k8s.io/gateway-name": "wp"}, Ports: wpPorts},
			{Name: "wp-down", Namespace: "demo", ClusterIP: downVIP, Selector: map[string]string{"gateway.networking.k8s.io/gateway-name": "wp-down"},
				Labels: map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller", "gateway.networking.k8s.io/gateway-name": "wp-down"}, Ports: wpPorts},
		},
		Waypoints:      []string{"wp-0"},
		WaypointBinary: buildWaypoint(t),
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

func sumSamples(r io.Reader, metric string, labels ...string) float64 {
	var sum float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") {
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
			if f.Src.Port() != 15008 && f.Dst.Port() != 15008 {
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
