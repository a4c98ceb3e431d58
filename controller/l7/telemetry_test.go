package l7

import (
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// telemetryBase: the demo namespace's waypoint serves reviews (HTTP) and
// db (TCP).
const telemetryBase = waypointNamespace + `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: demo}
spec: {selector: {app: reviews}, clusterIP: 10.96.0.10, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec: {selector: {app: db}, clusterIP: 10.96.0.20, ports: [{name: tcp-db, port: 5432}]}
---
`

const (
	reviewsListener = "demo/reviews.demo.svc.cluster.local:9080"
	dbListener      = "demo/db.demo.svc.cluster.local:5432"
)

// telemetry renders a Telemetry manifest; spec is YAML flow mappings.
func telemetry(ns, name, created, spec string) string {
	return "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: " + name + ", namespace: " + ns +
		", creationTimestamp: \"" + created + "\"}\nspec: " + spec + "\n---\n"
}

const (
	meshOn  = `{accessLogging: [{providers: [{name: envoy}]}]}`
	meshOff = `{accessLogging: [{providers: [{name: envoy}], disabled: true}]}`
	t1      = "2026-01-01T00:00:00Z"
	t2      = "2026-02-01T00:00:00Z"
)

// accessLogged builds input and returns, per listener, the path its
// HTTP connection manager or tcp_proxy logs to ("" for none), with the
// problems' reasons.
func accessLogged(t *testing.T, input string) (map[string]string, []string) {
	t.Helper()
	cfg, in, err := decodeInputs(manifesttest.Scheme(), []byte(input), true)
	if err != nil {
		t.Fatal(err)
	}
	out := Build(cfg, in)
	var problems []string
	for _, p := range out.Problems {
		problems = append(problems, p.Kind+" "+p.Namespace+"/"+p.Name+": "+p.Reason)
	}
	got := map[string]string{}
	for _, l := range out.Listeners {
		f := l.FilterChains[0].Filters[len(l.FilterChains[0].Filters)-1]
		msg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		logs := func() []string {
			switch m := msg.(type) {
			case *hcmv3.HttpConnectionManager:
				return filePaths(t, m.AccessLog)
			case *tcpproxyv3.TcpProxy:
				return filePaths(t, m.AccessLog)
			}
			t.Fatalf("%s: last filter %T", l.Name, msg)
			return nil
		}()
		got[l.Name] = strings.Join(logs, ",")
	}
	return got, problems
}

// filePaths returns the paths of file access logs.
func filePaths(t *testing.T, logs []*accesslogv3.AccessLog) []string {
	t.Helper()
	var paths []string
	for _, l := range logs {
		var f filev3.FileAccessLog
		if l.GetName() != FileAccessLogName {
			t.Errorf("access log named %q", l.GetName())
		}
		if err := l.GetTypedConfig().UnmarshalTo(&f); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, f.Path)
	}
	return paths
}

func TestTelemetryAccessLogging(t *testing.T) {
	on := map[string]string{reviewsListener: AccessLogPath, dbListener: AccessLogPath}
	off := map[string]string{reviewsListener: "", dbListener: ""}
	for _, tc := range []struct {
		name     string
		input    string
		want     map[string]string
		problems []string // substrings, one per expected problem
	}{
		{name: "no telemetry", want: off},
		{name: "mesh default", input: telemetry("istio-system", "mesh-default", t1, meshOn), want: on},
		{name: "default provider", input: telemetry("istio-system", "mesh-default", t1, `{accessLogging: [{disabled: false}]}`), want: on},
		{name: "namespace turns the mesh default off",
			input: telemetry("istio-system", "mesh-default", t1, meshOn) + telemetry("demo", "quiet", t1, meshOff), want: off},
		{name: "a namespace Telemetry without accessLogging leaves the mesh default",
			input: telemetry("istio-system", "mesh-default", t1, meshOn) + telemetry("demo", "tracing", t1, `{tracing: [{randomSamplingPercentage: 10}]}`),
			want:  on},
		{name: "the waypoint, then one service, override the namespace",
			input: telemetry("demo", "ns", t1, meshOn) +
				telemetry("demo", "wp", t1, `{targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}], `+meshOff[1:]) +
				telemetry("demo", "reviews", t1, `{targetRefs: [{kind: Service, name: reviews}], `+meshOn[1:]),
			want: map[string]string{reviewsListener: AccessLogPath, dbListener: ""}},
		{name: "the waypoint class from the root namespace",
			input: telemetry("istio-system", "waypoints", t1, `{targetRefs: [{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}], `+meshOn[1:]),
			want:  on},
		{name: "the waypoint class outside the root namespace",
			input:    telemetry("demo", "waypoints", t1, `{targetRefs: [{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}], `+meshOn[1:]),
			want:     off,
			problems: []string{"Telemetry demo/waypoints: a GatewayClass target applies only in the root namespace"}},
		{name: "later entries win",
			input: telemetry("istio-system", "mesh-default", t1, `{accessLogging: [{providers: [{name: envoy}]}, {providers: [{name: envoy}], disabled: true}]}`),
			want:  off},
		{name: "server mode applies, client mode does not",
			input: telemetry("demo", "server", t1, `{accessLogging: [{match: {mode: SERVER}, providers: [{name: envoy}]}]}`) +
				telemetry("demo", "db", t1, `{targetRefs: [{kind: Service, name: db}], accessLogging: [{match: {mode: CLIENT}, providers: [{name: envoy}]}]}`),
			want: map[string]string{reviewsListener: AccessLogPath, dbListener: ""}},
		{name: "other providers are reported and ignored",
			input:    telemetry("istio-system", "mesh-default", t1, `{accessLogging: [{providers: [{name: otel}]}]}`),
			want:     off,
			problems: []string{`Telemetry istio-system/mesh-default: accessLogging[0]: provider "otel" is not supported`}},
		{name: "a filter is reported and everything logged",
			input:    telemetry("istio-system", "mesh-default", t1, `{accessLogging: [{providers: [{name: envoy}], filter: {expression: "response.code >= 400"}}]}`),
			want:     on,
			problems: []string{"Telemetry istio-system/mesh-default: accessLogging[0]: filter expressions are not supported"}},
		{name: "of two namespace Telemetries the older wins",
			input:    telemetry("demo", "a-newer", t2, meshOff) + telemetry("demo", "b-older", t1, meshOn),
			want:     on,
			problems: []string{"Telemetry demo/a-newer: configures access logging for the same waypoint services as the older demo/b-older"}},
		{name: "workload selectors are for sidecars",
			input: telemetry("demo", "pods", t1, `{selector: {matchLabels: {app: reviews}}, `+meshOn[1:]), want: off},
		{name: "selector and targetRefs",
			input:    telemetry("demo", "both", t1, `{selector: {matchLabels: {app: reviews}}, targetRefs: [{kind: Service, name: reviews}], `+meshOn[1:]),
			want:     off,
			problems: []string{"Telemetry demo/both: selector and targetRefs are exclusive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := accessLogged(t, telemetryBase+tc.input)
			for l, want := range tc.want {
				if got[l] != want {
					t.Errorf("%s logs to %q, want %q", l, got[l], want)
				}
			}
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %d", problems, len(tc.problems))
			}
			for i, p := range tc.problems {
				if !strings.Contains(problems[i], p) {
					t.Errorf("problem %q, want %q", problems[i], p)
				}
			}
		})
	}
}
