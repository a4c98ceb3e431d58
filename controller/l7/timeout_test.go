package l7

import (
	"testing"
	"time"
)

// timeoutInput: details has no route at all, reviews a VirtualService
// with and without a timeout, ratings an HTTPRoute with and without
// timeouts, greeter a GRPCRoute (which has no timeouts field).
const timeoutInput = waypointNamespace + `apiVersion: v1
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
	// timeout of each forwarding route, by listener and path prefix.
	got := map[string]map[string]time.Duration{}
	for name, routes := range httpRoutes(t, timeoutInput) {
		got[name] = map[string]time.Duration{}
		for _, rt := range routes {
			ra := rt.GetRoute()
			if ra == nil {
				continue
			}
			if ra.Timeout == nil {
				t.Errorf("%s route %q: no timeout field", name, rt.Name)
				continue
			}
			got[name][pathPrefix(rt.GetMatch())] = ra.Timeout.AsDuration()
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
