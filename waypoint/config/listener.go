package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/zmesh/zmesh/waypoint/filter/fault"
	"github.com/zmesh/zmesh/waypoint/filter/jwt"
	"github.com/zmesh/zmesh/waypoint/filter/rbac"
	"github.com/zmesh/zmesh/waypoint/route"
)

// Listener is a compiled Listener: the L7 (HTTP) or L4 (TCP) chain for
// one service port. Immutable.
type Listener struct {
	Name      string
	Namespace string
	Hostname  string
	Port      uint32
	// Exactly one of HTTP and TCP is set.
	HTTP *HTTPChain
	TCP  *TCPChain
}

// HTTPChain is an HTTP connection manager's configuration.
type HTTPChain struct {
	Routes  *route.Table
	Filters []HTTPFilter
	// AccessLog is where the chain's requests are logged: "" (not
	// logged), AccessLogStdout or AccessLogStderr.
	AccessLog string
}

// Paths a listener's file access log may name: the waypoint's own
// standard output and error (Istio's "envoy" access log provider).
const (
	AccessLogStdout = "/dev/stdout"
	AccessLogStderr = "/dev/stderr"
)

// HTTPFilter is one http_filters entry; exactly one field is set.
type HTTPFilter struct {
	Name  string
	JWT   *jwt.Authenticator
	RBAC  *rbac.Engine // nil rules: the filter is a no-op
	Fault *FaultFilter
}

// FaultFilter is the fault filter; Default applies to routes without
// their own per-route fault.
type FaultFilter struct{ Default *fault.Fault }

// TCPChain is an L4 chain: optional RBAC, then tcp_proxy.
type TCPChain struct {
	RBAC     []*rbac.Engine
	Clusters []route.WeightedCluster
	// AccessLog is where the chain's connections are logged, as
	// HTTPChain.AccessLog.
	AccessLog string
	total     uint32
}

// Pick chooses a TCP backend by weight; rnd is uniform in [0, 1).
func (t *TCPChain) Pick(rnd float64) string {
	if len(t.Clusters) == 1 || t.total == 0 {
		return t.Clusters[0].Name
	}
	n := uint32(rnd * float64(t.total))
	for _, c := range t.Clusters {
		if n < c.Weight {
			return c.Name
		}
		n -= c.Weight
	}
	return t.Clusters[len(t.Clusters)-1].Name
}

// harmlessHTTPFilters are filters whose absence does not change routing
// or security; they are accepted and ignored.
var harmlessHTTPFilters = map[string]bool{
	"envoy.filters.http.cors":          true,
	"envoy.filters.http.grpc_stats":    true,
	"istio.stats":                      true,
	"istio.metadata_exchange":          true,
	"istio.alpn":                       true,
	"envoy.filters.http.grpc_web":      true,
	"envoy.filters.http.peer_metadata": true,
	"istio.peer_metadata":              true,
	"envoy.filters.http.health_check":  true,
	"envoy.filters.http.compressor":    true,
}

// SplitListenerName parses "<namespace>/<hostname>:<port>".
func SplitListenerName(name string) (ns, host string, port uint32, err error) {
	slash := strings.IndexByte(name, '/')
	colon := strings.LastIndexByte(name, ':')
	if slash <= 0 || colon < slash+2 {
		return "", "", 0, fmt.Errorf("listener name %q is not <namespace>/<hostname>:<port>", name)
	}
	p, perr := strconv.ParseUint(name[colon+1:], 10, 16)
	if perr != nil || p == 0 {
		return "", "", 0, fmt.Errorf("listener name %q: bad port", name)
	}
	return name[:slash], name[slash+1 : colon], uint32(p), nil
}

// compileListener validates l against the contract.
func compileListener(l *listenerv3.Listener, jwks *jwt.Fetcher) (*Listener, error) {
	ns, host, port, err := SplitListenerName(l.GetName())
	if err != nil {
		return nil, err
	}
	out := &Listener{Name: l.GetName(), Namespace: ns, Hostname: host, Port: port}
	if len(l.GetFilterChains()) == 0 {
		return nil, errors.New("listener has no filter chain")
	}
	fc := l.GetFilterChains()[0]
	if len(fc.GetFilters()) == 0 {
		return nil, errors.New("filter chain has no filters")
	}
	var netRBAC []*rbac.Engine
	for i, f := range fc.GetFilters() {
		cfg := f.GetTypedConfig()
		if cfg == nil {
			return nil, fmt.Errorf("filter %q: typed_config is required", f.GetName())
		}
		last := i == len(fc.GetFilters())-1
		msg, err := anypb.UnmarshalNew(cfg, proto.UnmarshalOptions{})
		if err != nil {
			return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
		}
		switch m := msg.(type) {
		case *rbacnetv3.RBAC:
			if m.GetMatcher() != nil || m.GetShadowMatcher() != nil {
				return nil, fmt.Errorf("filter %q: matcher-based RBAC is not supported", f.GetName())
			}
			e, err := rbac.Compile(m.GetRules())
			if err != nil {
				return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
			if e != nil {
				netRBAC = append(netRBAC, e)
			}
		case *hcmv3.HttpConnectionManager:
			if !last {
				return nil, fmt.Errorf("filter %q: the HTTP connection manager must be the last filter", f.GetName())
			}
			if len(netRBAC) > 0 {
				return nil, fmt.Errorf("filter %q: network RBAC before an HTTP connection manager is not supported", f.GetName())
			}
			if out.HTTP, err = compileHCM(m, jwks); err != nil {
				return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
		case *tcpproxyv3.TcpProxy:
			if !last {
				return nil, fmt.Errorf("filter %q: tcp_proxy must be the last filter", f.GetName())
			}
			tc := &TCPChain{RBAC: netRBAC}
			switch c := m.GetClusterSpecifier().(type) {
			case *tcpproxyv3.TcpProxy_Cluster:
				if c.Cluster == "" {
					return nil, fmt.Errorf("filter %q: empty cluster", f.GetName())
				}
				tc.Clusters, tc.total = []route.WeightedCluster{{Name: c.Cluster, Weight: 1}}, 1
			case *tcpproxyv3.TcpProxy_WeightedClusters:
				for _, wc := range c.WeightedClusters.GetClusters() {
					if wc.GetName() == "" {
						return nil, fmt.Errorf("filter %q: weighted cluster without a name", f.GetName())
					}
					tc.Clusters = append(tc.Clusters, route.WeightedCluster{Name: wc.GetName(), Weight: wc.GetWeight()})
					tc.total += wc.GetWeight()
				}
				if len(tc.Clusters) == 0 || tc.total == 0 {
					return nil, fmt.Errorf("filter %q: weighted_clusters empty or zero weight", f.GetName())
				}
			default:
				return nil, fmt.Errorf("filter %q: tcp_proxy needs cluster or weighted_clusters", f.GetName())
			}
			if tc.AccessLog, err = compileAccessLog(m.GetAccessLog()); err != nil {
				return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
			out.TCP = tc
		default:
			return nil, fmt.Errorf("filter %q: unsupported network filter %s", f.GetName(), cfg.GetTypeUrl())
		}
	}
	if out.HTTP == nil && out.TCP == nil {
		return nil, errors.New("the filter chain ends in neither http_connection_manager nor tcp_proxy")
	}
	return out, nil
}

func compileHCM(m *hcmv3.HttpConnectionManager, jwks *jwt.Fetcher) (*HTTPChain, error) {
	rc := m.GetRouteConfig()
	if rc == nil {
		return nil, errors.New("route_config must be inline (RDS is not supported)")
	}
	table, err := route.Compile(rc)
	if err != nil {
		return nil, err
	}
	ch := &HTTPChain{Routes: table}
	if ch.AccessLog, err = compileAccessLog(m.GetAccessLog()); err != nil {
		return nil, err
	}
	sawRouter := false
	for _, hf := range m.GetHttpFilters() {
		if sawRouter {
			return nil, fmt.Errorf("http filter %q after the router", hf.GetName())
		}
		if hf.GetDisabled() {
			continue
		}
		cfg := hf.GetTypedConfig()
		if cfg == nil {
			if hf.GetName() == "envoy.filters.http.router" {
				sawRouter = true
				continue
			}
			return nil, fmt.Errorf("http filter %q: typed_config is required", hf.GetName())
		}
		msg, err := anypb.UnmarshalNew(cfg, proto.UnmarshalOptions{})
		if err != nil {
			if harmlessHTTPFilters[hf.GetName()] || hf.GetIsOptional() {
				continue
			}
			return nil, fmt.Errorf("http filter %q: %w", hf.GetName(), err)
		}
		switch c := msg.(type) {
		case *routerv3.Router:
			sawRouter = true
		case *jwtv3.JwtAuthentication:
			a, err := jwt.Compile(c, jwks)
			if err != nil {
				return nil, err
			}
			ch.Filters = append(ch.Filters, HTTPFilter{Name: hf.GetName(), JWT: a})
		case *rbachttpv3.RBAC:
			if c.GetMatcher() != nil || c.GetShadowMatcher() != nil {
				return nil, fmt.Errorf("http filter %q: matcher-based RBAC is not supported", hf.GetName())
			}
			e, err := rbac.Compile(c.GetRules())
			if err != nil {
				return nil, fmt.Errorf("http filter %q: %w", hf.GetName(), err)
			}
			ch.Filters = append(ch.Filters, HTTPFilter{Name: hf.GetName(), RBAC: e})
		case *faultv3.HTTPFault:
			d, err := fault.Compile(c)
			if err != nil {
				return nil, err
			}
			ch.Filters = append(ch.Filters, HTTPFilter{Name: hf.GetName(), Fault: &FaultFilter{Default: d}})
		default:
			if harmlessHTTPFilters[hf.GetName()] || hf.GetIsOptional() {
				continue
			}
			return nil, fmt.Errorf("http filter %q: unsupported type %s", hf.GetName(), cfg.GetTypeUrl())
		}
	}
	if !sawRouter {
		return nil, errors.New("http_filters must end with envoy.filters.http.router")
	}
	return ch, nil
}

// compileAccessLog reads an access_log list: file access logs to the
// waypoint's standard output or error, all to the same one. Lines are
// always the waypoint's JSON, whatever log_format says.
func compileAccessLog(logs []*accesslogv3.AccessLog) (string, error) {
	path := ""
	for _, l := range logs {
		cfg := l.GetTypedConfig()
		if cfg == nil {
			return "", fmt.Errorf("access log %q: typed_config is required", l.GetName())
		}
		if l.GetFilter() != nil {
			return "", fmt.Errorf("access log %q: filters are not supported", l.GetName())
		}
		msg, err := anypb.UnmarshalNew(cfg, proto.UnmarshalOptions{})
		if err != nil {
			return "", fmt.Errorf("access log %q: %w", l.GetName(), err)
		}
		f, ok := msg.(*filev3.FileAccessLog)
		if !ok {
			return "", fmt.Errorf("access log %q: unsupported type %s", l.GetName(), cfg.GetTypeUrl())
		}
		switch p := f.GetPath(); {
		case p != AccessLogStdout && p != AccessLogStderr:
			return "", fmt.Errorf("access log %q: path %q: only %s and %s are supported", l.GetName(), p, AccessLogStdout, AccessLogStderr)
		case path != "" && p != path:
			return "", fmt.Errorf("access log %q: logs to both %s and %s", l.GetName(), path, p)
		default:
			path = p
		}
	}
	return path, nil
}
