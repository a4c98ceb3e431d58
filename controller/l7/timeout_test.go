package l7

import (
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// timeoutInput: details has no route at all, reviews a VirtualService
// with and without a timeout, ratings an HTTPRoute with and without
// timeouts, greeter a GRPCRoute (which has no timeouts field).
const timeoutInput = `apiVersion: v1
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
apiVersion: v1
kind: Service
metadata: {name: details, namespace: demo}
spec: {selector: {app: details}, clusterIP: 10.96.0.9, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: demo}
spec: {selector: {app: reviews}, clusterIP: 10.96.0.10, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: demo}
spec: {selector: {app: ratings}, clusterIP: 10.96.0.11, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: demo}
spec: {selector: {app: greeter}, clusterIP: 10.96.0.12, ports: [{name: grpc, port: 50051}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /slow}}]
    timeout: 3s
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: ratings}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 2s}
    backendRefs: [{name: ratings, port: 9080}]
  - backendRefs: [{name: ratings, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter}]
  rules:
  - backendRefs: [{name: greeter, port: 50051}]
`

// TestRouteTimeouts checks that every forwarding route states its
// timeout: the configured one, else zero, which disables it. Istio's
// request timeout is off unless configured; a route without the field
// would get Envoy's 15s default in the waypoint.
func TestRouteTimeouts(t *testing.T) {
	cfg, in, err := decodeInputs(manifesttest.Scheme(), []byte(timeoutInput), true)
	if err != nil {
		t.Fatal(err)
	}
	out := Build(cfg, in)
	if len(out.Problems) > 0 {
		t.Fatalf("problems: %v", out.Problems)
	}
	// timeout of each forwarding route, by listener and path prefix.
	got := map[string]map[string]time.Duration{}
	for _, l := range out.Listeners {
		var hcm hcmv3.HttpConnectionManager
		if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			continue // a TCP listener
		}
		got[l.Name] = map[string]time.Duration{}
		for _, rt := range hcm.GetRouteConfig().VirtualHosts[0].Routes {
			ra := rt.GetRoute()
			if ra == nil {
				continue
			}
			if ra.Timeout == nil {
				t.Errorf("%s route %q: no timeout field", l.Name, rt.Name)
				continue
			}
			got[l.Name][pathPrefix(rt.GetMatch())] = ra.Timeout.AsDuration()
		}
	}
	for _, tc := range []struct {
		listener, prefix string
		want             time.Duration
	}{
		{"demo/details.demo.svc.cluster.local:9080", "/", 0},
		{"demo/reviews.demo.svc.cluster.local:9080", "/slow", 3 * time.Second},
		{"demo/reviews.demo.svc.cluster.local:9080", "/", 0},
		{"demo/ratings.demo.svc.cluster.local:9080", "/slow", 2 * time.Second},
		{"demo/ratings.demo.svc.cluster.local:9080", "/", 0},
		{"demo/greeter.demo.svc.cluster.local:50051", "/", 0},
	} {
		d, ok := got[tc.listener][tc.prefix]
		if !ok {
			t.Errorf("%s: no forwarding route %s (have %v)", tc.listener, tc.prefix, got[tc.listener])
			continue
		}
		if d != tc.want {
			t.Errorf("%s %s: timeout %v, want %v", tc.listener, tc.prefix, d, tc.want)
		}
	}
}
