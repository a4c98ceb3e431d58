package l7

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// redirectInput: reviews has two HTTP ports; an HTTPRoute on every port
// and a VirtualService on ratings redirect in each way a port is chosen.
const redirectInput = waypointNamespace + `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: demo}
spec:
  selector: {app: reviews}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080}, {name: http-alt, port: 8000}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: demo}
spec:
  selector: {app: ratings}
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /https}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /http}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: demo}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /default}}]
    redirect: {authority: example.org}
  - match: [{uri: {prefix: /protocol}}]
    redirect: {authority: example.org, derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {prefix: /request}}]
    redirect: {authority: example.org, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /explicit}}]
    redirect: {authority: example.org, port: 8443}
`

// TestRedirectPorts checks the port each redirect gets: Gateway API's
// rules (the request's service port unless a scheme or port is given; a
// scheme alone gives its well-known port) and Istio's derivePort.
func TestRedirectPorts(t *testing.T) {
	// port of the redirect route whose prefix is given, per listener.
	ports := map[string]map[string]uint32{}
	for name, routes := range httpRoutes(t, redirectInput) {
		ports[name] = map[string]uint32{}
		for _, rt := range routes {
			if ra := rt.GetRedirect(); ra != nil {
				ports[name][pathPrefix(rt.GetMatch())] = ra.PortRedirect
			}
		}
	}
	for _, tc := range []struct {
		listener, prefix string
		want             uint32
	}{
		{"demo/reviews.demo.svc.cluster.local:9080", "/host", 9080},
		{"demo/reviews.demo.svc.cluster.local:8000", "/host", 8000},
		{"demo/reviews.demo.svc.cluster.local:9080", "/https", 443},
		{"demo/reviews.demo.svc.cluster.local:8000", "/http", 80},
		{"demo/reviews.demo.svc.cluster.local:9080", "/port", 8443},
		{"demo/ratings.demo.svc.cluster.local:9080", "/default", 0},
		{"demo/ratings.demo.svc.cluster.local:9080", "/protocol", 0},
		{"demo/ratings.demo.svc.cluster.local:9080", "/request", 9080},
		{"demo/ratings.demo.svc.cluster.local:9080", "/explicit", 8443},
	} {
		got, ok := ports[tc.listener][tc.prefix]
		if !ok {
			t.Errorf("%s: no redirect route %s (have %v)", tc.listener, tc.prefix, ports[tc.listener])
			continue
		}
		if got != tc.want {
			t.Errorf("%s %s: port_redirect %d, want %d", tc.listener, tc.prefix, got, tc.want)
		}
	}
}

// waypointNamespace starts a test input: namespace demo, in the mesh and
// bound to its waypoint.
const waypointNamespace = `apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: demo}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
status:
  addresses: [{type: IPAddress, value: 10.96.0.100}]
---
`

// httpRoutes builds input, which must raise no problem, and returns the
// routes of each HTTP listener by listener name.
func httpRoutes(t *testing.T, input string) map[string][]*routev3.Route {
	t.Helper()
	cfg, in, err := decodeInputs(manifesttest.Scheme(), []byte(input), true)
	if err != nil {
		t.Fatal(err)
	}
	out := Build(cfg, in)
	if len(out.Problems) > 0 {
		t.Fatalf("problems: %v", out.Problems)
	}
	routes := map[string][]*routev3.Route{}
	for _, l := range out.Listeners {
		var hcm hcmv3.HttpConnectionManager
		if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			continue // a TCP listener
		}
		routes[l.Name] = hcm.GetRouteConfig().VirtualHosts[0].Routes
	}
	return routes
}

// pathPrefix is the prefix a route matches, however it is expressed.
func pathPrefix(m *routev3.RouteMatch) string {
	switch {
	case m.GetPrefix() != "":
		return m.GetPrefix()
	case m.GetPathSeparatedPrefix() != "":
		return m.GetPathSeparatedPrefix()
	}
	// A regular expression for "prefix, then / or the end".
	re := m.GetSafeRegex().GetRegex()
	return strings.TrimPrefix(re[:max(strings.IndexAny(re, "(["), 0)], "^")
}
