package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/waypoint/config"
)

const (
	dbKey = "demo/db.demo.svc.cluster.local"
	dbVIP = "10.96.0.20"
)

// tcpEcho sends msg through a tunnel and returns what came back ("" when
// the waypoint closed the connection).
func (m *mesh) tcpEcho(authority, msg string) string {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := m.tunnel(ctx, authority)
	if err != nil {
		m.t.Fatalf("tunnel: %v", err)
	}
	defer func() { _ = st.Close() }()
	if _, err := io.WriteString(st, msg); err != nil {
		return ""
	}
	_ = st.CloseWrite()
	b, _ := io.ReadAll(st)
	return string(b)
}

func dbMesh(t *testing.T) *mesh {
	m := newMesh(t)
	m.addService("db", dbVIP, &workloadapi.Port{ServicePort: 5432, TargetPort: 9432, AppProtocol: workloadapi.AppProtocol_TCP})
	m.addPod("db-0", "db", "10.244.2.1", map[string]map[uint32]uint32{dbKey: {5432: 9432}})
	m.addPod("db-1", "db", "10.244.2.2", map[string]map[uint32]uint32{dbKey: {5432: 9432}})
	return m
}

func TestTCPProxy(t *testing.T) {
	m := dbMesh(t)
	seen := map[string]bool{}
	for range 4 {
		got := m.tcpEcho(dbVIP+":5432", "ping")
		if !strings.HasSuffix(got, ":ping") {
			t.Fatalf("tcp echo %q", got)
		}
		seen[strings.TrimSuffix(got, ":ping")] = true
	}
	if len(seen) != 2 {
		t.Fatalf("default TCP routing used %v, want both pods", seen)
	}
	// TCPRoute: everything to db-1.
	m.push(config.ClusterTypeURL, cluster("outbound|5432|one|db.demo.svc.cluster.local", clusterv3.Cluster_ROUND_ROBIN, "10.244.2.2:9432"))
	m.push(config.ListenerTypeURL, tcpListener(dbKey+":5432", nil, &tcpproxyv3.TcpProxy{StatPrefix: "db",
		ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{
			{Name: "outbound|5432|one|db.demo.svc.cluster.local", Weight: 100}}}}}))
	for range 3 {
		if got := m.tcpEcho(dbVIP+":5432", "x"); got != "db-1:x" {
			t.Fatalf("tcp route: %q", got)
		}
	}
	// Network RBAC denying this client closes the connection.
	deny := &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&rbacnetv3.RBAC{StatPrefix: "db",
		Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_DENY, Policies: map[string]*rbacconfigv3.Policy{"no-client": {Permissions: anyPermission(),
			Principals: []*rbacconfigv3.Principal{principalName(clientID.String())}}}}})}}
	m.push(config.ListenerTypeURL, tcpListener(dbKey+":5432", []*listenerv3.Filter{deny}, &tcpproxyv3.TcpProxy{StatPrefix: "db",
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "outbound|5432|one|db.demo.svc.cluster.local"}}))
	if got := m.tcpEcho(dbVIP+":5432", "x"); got != "" {
		t.Fatalf("denied connection got %q", got)
	}
	body := scrape(t, "http://"+m.wp.MetricsAddr().String()+"/metrics")
	if !strings.Contains(body, "istio_tcp_connections_opened_total{") || !strings.Contains(body, `response_flags="RBAC"`) ||
		!strings.Contains(body, "istio_tcp_received_bytes_total{") {
		t.Fatalf("tcp metrics missing:\n%s", body)
	}
}

func TestUnknownDestinationRejected(t *testing.T) {
	m := dbMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.tunnel(ctx, "10.96.9.9:80"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("tunnel to an unknown destination: %v, want a 400 rejection", err)
	}
}

func TestGRPCOverHTTP2(t *testing.T) {
	// Declared gRPC, or declared HTTP/1.1 but spoken as gRPC over HTTP/2.
	for _, proto := range []workloadapi.AppProtocol{workloadapi.AppProtocol_GRPC, workloadapi.AppProtocol_HTTP11} {
		t.Run(proto.String(), func(t *testing.T) { testGRPC(t, proto) })
	}
}

func testGRPC(t *testing.T, proto workloadapi.AppProtocol) {
	m := newMesh(t)
	m.addService("reviews", reviewsVIP, &workloadapi.Port{ServicePort: 9080, TargetPort: 8080, AppProtocol: proto})
	v1 := m.addPod("reviews-v1", "reviews", "10.244.1.1", map[string]map[uint32]uint32{reviews: {9080: 8080}})
	conn, err := grpc.NewClient("passthrough:///reviews", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return m.tunnel(ctx, reviewsVIP+":9080") }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "reviews"})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("grpc health through the waypoint: %v %v", resp, err)
		}
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("grpc error status not relayed: %v", err)
	}
	if v1.hits.Load() != 4 {
		t.Fatalf("backend saw %d gRPC calls, want 4", v1.hits.Load())
	}
	body := scrape(t, "http://"+m.wp.MetricsAddr().String()+"/metrics")
	if !strings.Contains(body, `grpc_response_status="5"`) || !strings.Contains(body, `request_protocol="grpc"`) {
		t.Fatalf("grpc metrics labels missing")
	}
}

// TestTrailers checks that response trailers reach the client whether the
// backend declared them in its header or not (gRPC servers don't). An
// HTTP/1.1 backend can only send declared ones (its server uses chunked
// encoding only then); an HTTP/1.1 client gets none of an HTTP/2 backend's,
// whose answer carries a Content-Length (Envoy's HTTP/1 codec drops
// trailers by default too), so those cases are not checked.
func TestTrailers(t *testing.T) {
	tests := []struct {
		upstream workloadapi.AppProtocol
		h2       bool
		kind     string
		want     string
	}{
		{workloadapi.AppProtocol_HTTP11, false, "declared", "late"},
		{workloadapi.AppProtocol_HTTP11, true, "declared", "late"},
		{workloadapi.AppProtocol_HTTP11, true, "none", ""},
		{workloadapi.AppProtocol_HTTP2, true, "declared", "late"},
		{workloadapi.AppProtocol_HTTP2, true, "undeclared", "late"},
		{workloadapi.AppProtocol_HTTP2, true, "none", ""},
	}
	meshes := map[workloadapi.AppProtocol]*mesh{}
	for _, up := range []workloadapi.AppProtocol{workloadapi.AppProtocol_HTTP11, workloadapi.AppProtocol_HTTP2} {
		m := newMesh(t)
		m.addService("reviews", reviewsVIP, &workloadapi.Port{ServicePort: 9080, TargetPort: 8080, AppProtocol: up})
		m.addPod("reviews-v1", "reviews", "10.244.1.1", map[string]map[uint32]uint32{reviews: {9080: 8080}})
		meshes[up] = m
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/h2=%v/%s", tt.upstream, tt.h2, tt.kind), func(t *testing.T) {
			m := meshes[tt.upstream]
			resp, err := m.httpClient(reviewsVIP+":9080", tt.h2).Get("http://reviews:9080/?trailer=" + tt.kind)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if got := resp.Trailer.Get("X-Trailer"); resp.StatusCode != 200 || got != tt.want {
				t.Errorf("status %d, X-Trailer %q, want %q", resp.StatusCode, got, tt.want)
			}
		})
	}
}

// TestRequestTrailers checks that a request's trailer, sent after its
// body by an HTTP/1.1 (chunked) or HTTP/2 client, reaches an HTTP/1.1
// backend: the upstream request shares the trailer map that the body
// fills at its end.
func TestRequestTrailers(t *testing.T) {
	m := newMesh(t)
	m.addService("reviews", reviewsVIP, &workloadapi.Port{ServicePort: 9080, TargetPort: 8080, AppProtocol: workloadapi.AppProtocol_HTTP11})
	m.addPod("reviews-v1", "reviews", "10.244.1.1", map[string]map[uint32]uint32{reviews: {9080: 8080}})
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			// An unknown length: chunks, then the trailer, over HTTP/1.1.
			req, err := http.NewRequest(http.MethodPost, "http://reviews:9080/", io.MultiReader(strings.NewReader("chunked body")))
			if err != nil {
				t.Fatal(err)
			}
			req.Trailer = http.Header{"X-Checksum": {"abc123"}}
			resp, err := m.httpClient(reviewsVIP+":9080", h2).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e echo
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || e.Body != "chunked body" || e.Trailers["x-checksum"] != "abc123" {
				t.Errorf("status %d, body %q, trailers %v; want the body and x-checksum: abc123", resp.StatusCode, e.Body, e.Trailers)
			}
		})
	}
}
