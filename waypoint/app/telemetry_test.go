package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/waypoint/app"
	"github.com/zmesh/zmesh/waypoint/config"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestMetricsAndAccessLog(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	c := m.httpClient(reviewsVIP+":9080", false)
	for range 3 {
		m.do(c, http.MethodPost, "http://reviews:9080/x", map[string]string{"User-Agent": "probe"}, "12345")
	}
	m.get(c, "http://reviews:9080/?status=404", nil)
	body := scrape(t, "http://"+m.wp.MetricsAddr().String()+"/metrics")
	var reqLine string
	total := 0
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "istio_requests_total{") && strings.Contains(l, `response_code="200"`) {
			reqLine = l
			n, _ := strconv.Atoi(l[strings.LastIndexByte(l, ' ')+1:])
			total += n
		}
	}
	for _, want := range []string{`reporter="waypoint"`, `source_principal="spiffe://cluster.local/ns/demo/sa/client"`, `source_workload_namespace="demo"`,
		`destination_service="reviews.demo.svc.cluster.local"`, `destination_service_name="reviews"`, `destination_service_namespace="demo"`,
		`destination_principal="spiffe://cluster.local/ns/demo/sa/reviews"`, `request_protocol="http"`, `response_flags="-"`, `connection_security_policy="mutual_tls"`} {
		if !strings.Contains(reqLine, want) {
			t.Errorf("istio_requests_total lacks %s: %s", want, reqLine)
		}
	}
	if total != 3 {
		t.Errorf("%d requests with code 200 counted, want 3", total)
	}
	for _, name := range []string{"istio_request_duration_milliseconds_bucket{", "istio_request_bytes_sum{", "istio_response_bytes_sum{", `response_code="404"`} {
		if !strings.Contains(body, name) {
			t.Errorf("metrics lack %s", name)
		}
	}
	lines := accessLines(t, m.logBuf.String())
	if len(lines) != 4 {
		t.Fatalf("%d access log lines, want 4", len(lines))
	}
	l := lines[0]
	if _, err := time.Parse(time.RFC3339Nano, l["start_time"].(string)); err != nil {
		t.Fatalf("start_time: %v", err)
	}
	if l["method"] != "POST" || l["path"] != "/x" || l["bytes_received"] != float64(5) || l["user_agent"] != "probe" ||
		l["response_flags"] != "-" || l["upstream_cluster"] != "outbound|9080||reviews.demo.svc.cluster.local" ||
		l["source_principal"] != "spiffe://cluster.local/ns/demo/sa/client" || l["downstream_remote_address"] != "10.1.0.5:40000" {
		t.Fatalf("access log line: %v", l)
	}
}

func TestInvalidConfigIsRejectedAndLastGoodServes(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	good := httpListener(reviews+":9080", []*routev3.Route{{Name: "ok", Match: prefix("/"), Action: direct(200, "good")}})
	m.push(config.ListenerTypeURL, good)
	c := m.httpClient(reviewsVIP+":9080", false)
	if r := m.get(c, "http://reviews:9080/", nil); r.body != "good" {
		t.Fatalf("good config: %q", r.body)
	}
	bad := httpListener(reviews+":9080", []*routev3.Route{{Name: "bad", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{
		SafeRegex: &matcherv3RegexMatcher{Regex: "(unclosed"}}}, Action: direct(200, "bad")}})
	other := httpListener("demo/ratings.demo.svc.cluster.local:9080", []*routev3.Route{{Name: "r", Match: prefix("/"), Action: direct(200, "ratings")}})
	noRouter := &listenerv3.Listener{Name: "demo/details.demo.svc.cluster.local:9080"}
	m.push(config.ListenerTypeURL, bad, other, noRouter)
	m.eventually("rejections recorded", func() error {
		d := m.wp.Store().Dump()
		if len(d.Rejected) != 2 || !strings.Contains(d.Rejected["listener "+reviews+":9080"], "invalid regex") ||
			!strings.Contains(d.Rejected["listener demo/details.demo.svc.cluster.local:9080"], "filter chain") {
			return errorf("rejected: %v", d.Rejected)
		}
		return nil
	})
	if r := m.get(c, "http://reviews:9080/", nil); r.body != "good" {
		t.Fatalf("after a rejected update the last good listener must serve: %q", r.body)
	}
	var dump struct {
		Config struct {
			Listeners []struct{ Name string }
			Rejected  map[string]string
		}
	}
	resp, err := http.Get("http://" + m.wp.AdminAddr().String() + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		t.Fatal(err)
	}
	if len(dump.Config.Listeners) != 2 || len(dump.Config.Rejected) != 2 {
		t.Fatalf("config dump: %+v", dump.Config)
	}
	// Readiness.
	if r := scrape(t, "http://"+m.wp.ReadyAddr().String()+"/healthz/ready"); r != "ready\n" {
		t.Fatalf("ready endpoint: %q", r)
	}
	// A later valid version replaces the last good one and clears the rejection.
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{{Name: "ok", Match: prefix("/"), Action: direct(200, "better")}}), other)
	if r := m.get(c, "http://reviews:9080/", nil); r.body != "better" {
		t.Fatalf("fixed config: %q", r.body)
	}
	if d := m.wp.Store().Dump(); len(d.Rejected) != 0 {
		t.Fatalf("rejections not cleared: %v", d.Rejected)
	}
}

func TestSpansExportedOverOTLP(t *testing.T) {
	got := make(chan map[string]any, 16)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "bad export", 400)
			return
		}
		got <- body
	}))
	defer collector.Close()
	m := newMesh(t, func(c *app.Config) { c.OTLPEndpoint = collector.URL + "/v1/traces" })
	m.addService("reviews", reviewsVIP, httpPort(9080, 8080))
	m.addPod("reviews-v1", "reviews", "10.244.1.1", map[string]map[uint32]uint32{reviews: {9080: 8080}})
	c := m.httpClient(reviewsVIP+":9080", false)
	sampled := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	r := m.get(c, "http://reviews:9080/p", map[string]string{"traceparent": sampled})
	m.get(c, "http://reviews:9080/unsampled", map[string]string{"traceparent": "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"})
	ourSpan := strings.Split(r.echo.Headers["traceparent"], "-")[2]
	select {
	case body := <-got:
		b, _ := json.Marshal(body)
		s := string(b)
		for _, want := range []string{`"traceId":"0af7651916cd43dd8448eb211c80319c"`, `"parentSpanId":"b7ad6b7169203331"`, `"spanId":"` + ourSpan + `"`,
			`"name":"reviews.demo.svc.cluster.local:9080/*"`, `"stringValue":"waypoint-0.demo"`, `"key":"http.status_code","value":{"stringValue":"200"}`} {
			if !strings.Contains(s, want) {
				t.Errorf("exported spans lack %s:\n%s", want, s)
			}
		}
		if strings.Contains(s, "1af7651916cd43dd8448eb211c80319c") {
			t.Error("an unsampled trace was exported")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no span exported")
	}
}

// withAccessLog returns l with a file access log to path on its last
// network filter (the HTTP connection manager or tcp_proxy), as the
// controller renders a Telemetry's accessLogging.
func withAccessLog(t *testing.T, l *listenerv3.Listener, path string) *listenerv3.Listener {
	t.Helper()
	l = proto.Clone(l).(*listenerv3.Listener)
	fs := l.FilterChains[0].Filters
	f := fs[len(fs)-1]
	msg, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	logs := []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&filev3.FileAccessLog{Path: path})}}}
	switch m := msg.(type) {
	case *hcmv3.HttpConnectionManager:
		m.AccessLog = logs
	case *tcpproxyv3.TcpProxy:
		m.AccessLog = logs
	default:
		t.Fatalf("last filter is %T", msg)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(msg)}
	return l
}

// Listeners whose access_log names /dev/stdout or /dev/stderr (Telemetry
// accessLogging) are logged there, and only those; the mesh-wide access
// log, when set, logs everything once.
func TestListenerAccessLog(t *testing.T) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	m, _, _ := reviewsMesh(t, noAccessLog, func(c *app.Config) { c.Stdout, c.Stderr = stdout, stderr })
	m.addService("db", dbVIP, &workloadapi.Port{ServicePort: 5432, TargetPort: 9432, AppProtocol: workloadapi.AppProtocol_TCP})
	m.addPod("db-0", "db", "10.244.2.1", map[string]map[uint32]uint32{dbKey: {5432: 9432}})
	const reviewsCluster, dbCluster = "outbound|9080||reviews.demo.svc.cluster.local", "outbound|5432||db.demo.svc.cluster.local"
	m.push(config.ClusterTypeURL, cluster(reviewsCluster, clusterv3.Cluster_ROUND_ROBIN), cluster(dbCluster, clusterv3.Cluster_ROUND_ROBIN))
	httpL := httpListener(reviews+":9080", []*routev3.Route{routeTo("all", prefix("/"), reviewsCluster)})
	tcpL := tcpListener(dbKey+":5432", nil, &tcpproxyv3.TcpProxy{StatPrefix: "db", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: dbCluster}})
	c := m.httpClient(reviewsVIP+":9080", false)
	traffic := func() {
		t.Helper()
		if r := m.get(c, "http://reviews:9080/logged", nil); r.code != 200 {
			t.Fatalf("status %d", r.code)
		}
		if got := m.tcpEcho(dbVIP+":5432", "x"); got != "db-0:x" {
			t.Fatalf("tcp echo %q", got)
		}
	}

	m.push(config.ListenerTypeURL, httpL, tcpL)
	traffic()
	if stdout.String() != "" || stderr.String() != "" {
		t.Fatalf("listeners without access_log logged: stdout %q, stderr %q", stdout, stderr)
	}

	m.push(config.ListenerTypeURL, withAccessLog(t, httpL, config.AccessLogStdout), withAccessLog(t, tcpL, config.AccessLogStderr))
	traffic()
	out, errs := accessLines(t, stdout.String()), accessLines(t, stderr.String())
	if len(out) != 1 || out[0]["path"] != "/logged" || out[0]["upstream_cluster"] != reviewsCluster {
		t.Fatalf("stdout access log %v, want the one HTTP request", out)
	}
	if len(errs) != 1 || errs[0]["protocol"] != "tcp" || errs[0]["upstream_cluster"] != dbCluster {
		t.Fatalf("stderr access log %v, want the one TCP connection", errs)
	}

	// Turned off again: nothing more.
	m.push(config.ListenerTypeURL, httpL, tcpL)
	traffic()
	if n, e := len(accessLines(t, stdout.String())), len(accessLines(t, stderr.String())); n != 1 || e != 1 {
		t.Fatalf("%d and %d lines after access logging was turned off, want 1 and 1", n, e)
	}
}

// With the mesh-wide access log on, a listener's own access log does not
// log its requests a second time.
func TestMeshAccessLogWithListenerAccessLog(t *testing.T) {
	stdout := &syncBuffer{}
	m, _, _ := reviewsMesh(t, func(c *app.Config) { c.Stdout = stdout })
	const reviewsCluster = "outbound|9080||reviews.demo.svc.cluster.local"
	m.push(config.ClusterTypeURL, cluster(reviewsCluster, clusterv3.Cluster_ROUND_ROBIN))
	m.push(config.ListenerTypeURL, withAccessLog(t, httpListener(reviews+":9080", []*routev3.Route{routeTo("all", prefix("/"), reviewsCluster)}), config.AccessLogStdout))
	if r := m.get(m.httpClient(reviewsVIP+":9080", false), "http://reviews:9080/once", nil); r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	if n := len(accessLines(t, m.logBuf.String())); n != 1 || stdout.String() != "" {
		t.Fatalf("%d mesh access log lines and stdout %q, want 1 line and nothing", n, stdout)
	}
}
