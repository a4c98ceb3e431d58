package l7

import (
	"cmp"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
)

// attachments is the L7 configuration attached to one service.
type attachments struct {
	// Gateway API HTTP and gRPC routes, with their precedence.
	routes []*rankedRoute
	// Gateway API TCP routes, by service port.
	tcp map[uint32]*tcpAttachment
	// gatewayAPI is set when any Gateway API route attaches: VirtualServices
	// are then ignored for this service.
	gatewayAPI bool
	// vs is the VirtualService applying to the service, if any.
	vs *networkingv1.VirtualService

	// Authorization policies and request authentications targeting the
	// service or its waypoint, in namespace/name order.
	policies []*securityv1.AuthorizationPolicy
	reqAuthn []*securityv1.RequestAuthentication

	// accessLog is set when a Telemetry turns on the waypoint's access log
	// for the service.
	accessLog bool
}

// rankedRoute is one Envoy route made from one match of one Gateway API
// route rule, with what Gateway API's precedence rules compare.
type rankedRoute struct {
	// port restricts the route to one service port; 0 applies to all.
	port uint32

	pathKind int // 3 exact, 2 regular expression, 1 prefix
	pathLen  int
	method   bool
	headers  int
	queries  int
	created  time.Time
	ns, name string
	rule     int
	match    int

	route *routev3.Route
}

// compareRanked orders routes by Gateway API precedence: exact path, then
// regular expression, then the longest prefix; then a method match; then
// the most header matches, the most query matches; then the oldest route,
// by namespace/name, and by rule and match order.
func compareRanked(x, y *rankedRoute) int {
	return cmp.Or(
		cmp.Compare(y.pathKind, x.pathKind),
		cmp.Compare(y.pathLen, x.pathLen),
		boolCompare(y.method, x.method),
		cmp.Compare(y.headers, x.headers),
		cmp.Compare(y.queries, x.queries),
		x.created.Compare(y.created),
		cmp.Compare(x.ns, y.ns),
		cmp.Compare(x.name, y.name),
		cmp.Compare(x.rule, y.rule),
		cmp.Compare(x.match, y.match),
	)
}

func boolCompare(x, y bool) int {
	switch {
	case x == y:
		return 0
	case x:
		return 1
	}
	return -1
}

// tcpAttachment is the TCPRoute rule serving one port.
type tcpAttachment struct {
	ns, name string
	created  time.Time
	clusters []weightedCluster
}

// weightedCluster is one backend of a route.
type weightedCluster struct {
	name   string
	weight uint32
}
