package l7

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
)

// Filter names of the contract.
const (
	HTTPConnectionManagerName = "envoy.filters.network.http_connection_manager"
	TCPProxyName              = "envoy.filters.network.tcp_proxy"
	RouterFilterName          = "envoy.filters.http.router"
)

// ListenerName is the contract's Listener name for a service port:
// "<namespace>/<hostname>:<port>".
func ListenerName(ns, host string, port uint32) string {
	return fmt.Sprintf("%s/%s:%d", ns, host, port)
}

// buildListeners makes one Listener per port of every service bound to a
// waypoint.
func (b *builder) buildListeners() {
	for _, s := range b.svcList {
		if s.waypoint == nil {
			continue
		}
		slices.SortFunc(s.att.policies, func(x, y *securityv1.AuthorizationPolicy) int {
			return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
		})
		slices.SortFunc(s.att.reqAuthn, func(x, y *securityv1.RequestAuthentication) int {
			return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
		})
		for _, p := range s.ports {
			var l *listenerv3.Listener
			var err error
			if p.http {
				l, err = b.httpListener(s, p)
			} else {
				l, err = b.tcpListener(s, p)
			}
			if err != nil {
				// Only encoding failures get here; they are bugs.
				b.problem(s.kind, s.ns, s.name, fmt.Sprintf("port %d: listener not built: %v", p.port, err))
				continue
			}
			b.out.Listeners = append(b.out.Listeners, l)
		}
	}
}

// typed packs m into an Any with deterministic encoding (RBAC policies
// and JWT providers are maps), so equal inputs give equal bytes.
func typed(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("encoding %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}

// noTimeout is the route timeout of a route whose source sets none. Istio
// disables the request timeout unless a VirtualService (or an HTTPRoute's
// timeouts) sets one, so routes say so explicitly: without it the
// waypoint would apply Envoy's 15s default and cut long requests that
// Istio lets run.
func noTimeout() *durationpb.Duration { return durationpb.New(0) }

// defaultRoute sends everything to the service port's cluster.
func (b *builder) defaultRoute(s *service, p *svcPort) *routev3.Route {
	return &routev3.Route{
		Name:  "default",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: b.ref(s, p.port, "")},
			HashPolicy:       hashPolicies(b.policyFor(s, p.port, "")),
			Timeout:          noTimeout(),
		}},
	}
}

// portRoutes returns the routes of one HTTP port: Gateway API routes when
// any attach to the service, else its VirtualService's, else the default
// route. A configuration that yields no route for this port falls back to
// the default route.
func (b *builder) portRoutes(s *service, p *svcPort) []*routev3.Route {
	var routes []*routev3.Route
	switch {
	case s.att.gatewayAPI:
		for _, r := range s.att.routes {
			if r.port == 0 || r.port == p.port {
				rt := cloneRoute(r.route)
				redirectToRequestPort(rt, p.port)
				routes = append(routes, rt)
			}
		}
	case s.att.vs != nil:
		routes = b.vsHTTPRoutes(s.att.vs, s, p.port)
	}
	if len(routes) == 0 {
		routes = []*routev3.Route{b.defaultRoute(s, p)}
	}
	return routes
}

func (b *builder) httpListener(s *service, p *svcPort) (*listenerv3.Listener, error) {
	name := ListenerName(s.ns, s.host, p.port)
	routes := b.portRoutes(s, p)
	var filters []*hcmv3.HttpFilter
	add := func(name string, m proto.Message) error {
		a, err := typed(m)
		if err != nil {
			return err
		}
		filters = append(filters, &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
		return nil
	}
	jwt, issuers := b.jwtFilter(s.att.reqAuthn)
	if jwt != nil {
		if err := add(JWTFilterName, jwt); err != nil {
			return nil, err
		}
	}
	deny, allow := b.rbacFilters(s.att.policies, true, issuers)
	if deny != nil {
		if err := add(HTTPRBACDenyFilterName, &rbacv3.RBAC{Rules: deny}); err != nil {
			return nil, err
		}
	}
	if allow != nil {
		if err := add(HTTPRBACAllowFilterName, &rbacv3.RBAC{Rules: allow}); err != nil {
			return nil, err
		}
	}
	if slices.ContainsFunc(routes, func(r *routev3.Route) bool { return r.TypedPerFilterConfig[FaultFilterName] != nil }) {
		if err := add(FaultFilterName, &faultv3.HTTPFault{}); err != nil {
			return nil, err
		}
	}
	if err := add(RouterFilterName, &routerv3.Router{}); err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    fmt.Sprintf("%s:%d", s.host, p.port),
				Domains: []string{"*"},
				Routes:  routes,
			}},
		}},
		HttpFilters: filters,
	}
	var err error
	if hcm.AccessLog, err = accessLogs(s); err != nil {
		return nil, err
	}
	a, err := typed(hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name: name,
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{Name: HTTPConnectionManagerName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}},
		}},
	}, nil
}

// tcpClusters picks the backends of a TCP port: its TCPRoute, else its
// VirtualService's tcp route, else the service port's own cluster.
func (b *builder) tcpClusters(s *service, p *svcPort) []weightedCluster {
	if a := s.att.tcp[p.port]; a != nil {
		return a.clusters
	}
	if s.att.vs != nil && !s.att.gatewayAPI {
		if wcs, ok := b.vsTCPClusters(s.att.vs, p.port); ok {
			return wcs
		}
	}
	return []weightedCluster{{name: b.ref(s, p.port, ""), weight: 1}}
}

func (b *builder) tcpListener(s *service, p *svcPort) (*listenerv3.Listener, error) {
	name := ListenerName(s.ns, s.host, p.port)
	var filters []*listenerv3.Filter
	add := func(fname string, m proto.Message) error {
		a, err := typed(m)
		if err != nil {
			return err
		}
		filters = append(filters, &listenerv3.Filter{Name: fname, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
		return nil
	}
	deny, allow := b.rbacFilters(s.att.policies, false, nil)
	for _, f := range []struct {
		name  string
		rules *rbacconfigv3.RBAC
	}{{NetworkRBACDenyFilterName, deny}, {NetworkRBACAllowFilterName, allow}} {
		if f.rules == nil {
			continue
		}
		if err := add(f.name, &netrbacv3.RBAC{Rules: f.rules, StatPrefix: name}); err != nil {
			return nil, err
		}
	}
	tp := &tcpproxyv3.TcpProxy{StatPrefix: name}
	wcs := b.tcpClusters(s, p)
	switch len(wcs) {
	case 0:
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: missingCluster(s.host)}
	case 1:
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: wcs[0].name}
	default:
		wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
		for _, c := range wcs {
			wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: c.name, Weight: c.weight})
		}
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	}
	var err error
	if tp.AccessLog, err = accessLogs(s); err != nil {
		return nil, err
	}
	if err := add(TCPProxyName, tp); err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: name, FilterChains: []*listenerv3.FilterChain{{Filters: filters}}}, nil
}
