package app_test

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// httpFilter wraps a typed config as an HCM http filter.
func httpFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// httpListener builds the contract's Listener for a service port.
func httpListener(name string, routes []*routev3.Route, filters ...*hcmv3.HttpFilter) *listenerv3.Listener {
	return httpListenerVH(name, &routev3.VirtualHost{Name: "vh", Domains: []string{"*"}, Routes: routes}, filters...)
}

func httpListenerVH(name string, vh *routev3.VirtualHost, filters ...*hcmv3.HttpFilter) *listenerv3.Listener {
	filters = append(filters, httpFilter("envoy.filters.http.router", &routerv3.Router{}))
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: "wp",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}},
		HttpFilters:    filters}
	return &listenerv3.Listener{Name: name, FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}}}}}
}

func tcpListener(name string, netFilters []*listenerv3.Filter, tp *tcpproxyv3.TcpProxy) *listenerv3.Listener {
	fs := append(netFilters, &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}})
	return &listenerv3.Listener{Name: name, FilterChains: []*listenerv3.FilterChain{{Filters: fs}}}
}

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func toCluster(name string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}}
}

func routeTo(name string, m *routev3.RouteMatch, cluster string) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: toCluster(cluster)}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func header(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// cluster builds an Istio-style cluster; endpoints (ip:port) make an
// inline load assignment.
func cluster(name string, lb clusterv3.Cluster_LbPolicy, endpoints ...string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{Name: name, LbPolicy: lb, ConnectTimeout: dur(2 * time.Second)}
	if len(endpoints) > 0 {
		la := &endpointv3.ClusterLoadAssignment{ClusterName: name}
		lle := &endpointv3.LocalityLbEndpoints{}
		for _, e := range endpoints {
			ip, port := splitEP(e)
			lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}}})
		}
		la.Endpoints = []*endpointv3.LocalityLbEndpoints{lle}
		c.LoadAssignment = la
	}
	return c
}

func splitEP(e string) (string, uint32) {
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] == ':' {
			var p uint32
			for _, c := range e[i+1:] {
				p = p*10 + uint32(c-'0')
			}
			return e[:i], p
		}
	}
	return e, 0
}
