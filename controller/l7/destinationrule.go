package l7

import (
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// destRule is the DestinationRule chosen for one service.
type destRule struct {
	obj     *networkingv1.DestinationRule
	subsets map[string]*networkingapi.Subset
}

// indexDestinationRules picks, for every service, the DestinationRule whose
// host names it: one in the service's namespace first, then one in the root
// namespace, then any other; ties go to the oldest. Losers of a tie are
// reported. Rules with a workloadSelector configure sidecars only.
func (b *builder) indexDestinationRules() {
	type cand struct {
		dr   *networkingv1.DestinationRule
		tier int
	}
	cands := map[string][]cand{}
	for _, dr := range b.drs {
		if dr.Spec.WorkloadSelector != nil {
			b.problem(kindDestinationRule, dr.Namespace, dr.Name, "a DestinationRule with a workloadSelector applies to sidecars only; waypoints ignore it")
			continue
		}
		if strings.Contains(dr.Spec.Host, "*") {
			b.problem(kindDestinationRule, dr.Namespace, dr.Name, fmt.Sprintf("wildcard host %q is not supported for waypoints; ignored", dr.Spec.Host))
			continue
		}
		if reasons := validateTrafficPolicy(dr.Spec.TrafficPolicy); len(reasons) > 0 {
			b.problem(kindDestinationRule, dr.Namespace, dr.Name, "invalid: "+strings.Join(reasons, "; "))
			continue
		}
		bad := false
		names := map[string]bool{}
		for _, ss := range dr.Spec.Subsets {
			if ss == nil || ss.Name == "" || strings.Contains(ss.Name, "|") || names[ss.Name] {
				b.problem(kindDestinationRule, dr.Namespace, dr.Name, "invalid: every subset needs a unique name without '|'")
				bad = true
				break
			}
			names[ss.Name] = true
			if reasons := validateTrafficPolicy(ss.TrafficPolicy); len(reasons) > 0 {
				b.problem(kindDestinationRule, dr.Namespace, dr.Name, "invalid: subset "+ss.Name+": "+strings.Join(reasons, "; "))
				bad = true
				break
			}
		}
		if bad {
			continue
		}
		if hashesOnQuery(dr) {
			b.problem(kindDestinationRule, dr.Namespace, dr.Name, "consistentHash.httpQueryParameterName is not supported by waypoints; requests are spread without affinity")
		}
		s := b.lookupHost(dr.Spec.Host, dr.Namespace)
		if s == nil {
			continue // a host of no known service: nothing of ours to shape
		}
		// Clusters are shared by every waypoint, so exportTo is judged for
		// the namespace of the host's own waypoint (the host's namespace
		// when it has none): where the waypoints sending to it usually are.
		if to := viewerNamespace(s); !exportedTo(dr.Spec.ExportTo, dr.Namespace, to) {
			b.problem(kindDestinationRule, dr.Namespace, dr.Name, fmt.Sprintf(
				"exportTo does not include namespace %q, where %s is served; ignored", to, s.host))
			continue
		}
		tier := 2
		switch dr.Namespace {
		case s.ns:
			tier = 0
		case b.cfg.RootNamespace:
			tier = 1
		}
		cands[s.key] = append(cands[s.key], cand{dr, tier})
	}
	for key, cs := range cands {
		slices.SortFunc(cs, func(x, y cand) int {
			if x.tier != y.tier {
				return x.tier - y.tier
			}
			return olderFirst(x.dr, y.dr)
		})
		win := cs[0].dr
		d := &destRule{obj: win, subsets: map[string]*networkingapi.Subset{}}
		for _, ss := range win.Spec.Subsets {
			d.subsets[ss.Name] = ss
		}
		b.dr[key] = d
		for _, c := range cs[1:] {
			if c.tier == cs[0].tier {
				b.problem(kindDestinationRule, c.dr.Namespace, c.dr.Name, fmt.Sprintf(
					"DestinationRule %s/%s already applies to host %s; this one is ignored", win.Namespace, win.Name, b.svcs[key].host))
			}
		}
	}
}

// viewerNamespace is the namespace a service's configuration is seen
// from: its waypoint's, else its own.
func viewerNamespace(s *service) string {
	if s.waypoint != nil {
		return s.waypoint.ns
	}
	return s.ns
}

// validateTrafficPolicy checks the fields Build translates.
func validateTrafficPolicy(tp *networkingapi.TrafficPolicy) []string {
	if tp == nil {
		return nil
	}
	var r []string
	check := func(lb *networkingapi.LoadBalancerSettings, cp *networkingapi.ConnectionPoolSettings, od *networkingapi.OutlierDetection, where string) {
		if ch := lb.GetConsistentHash(); ch != nil {
			if c := ch.GetHttpCookie(); c != nil && c.Name == "" {
				r = append(r, where+"consistentHash.httpCookie needs a name")
			}
			if ch.GetHttpHeaderName() == "" && ch.GetHttpCookie() == nil && !ch.GetUseSourceIp() && ch.GetHttpQueryParameterName() == "" {
				r = append(r, where+"consistentHash needs a hash key")
			}
		}
		if d := cp.GetTcp().GetConnectTimeout(); d != nil && !positive(d) {
			r = append(r, where+"connectionPool.tcp.connectTimeout must be positive")
		}
		if d := od.GetInterval(); d != nil && !positive(d) {
			r = append(r, where+"outlierDetection.interval must be positive")
		}
		if d := od.GetBaseEjectionTime(); d != nil && !positive(d) {
			r = append(r, where+"outlierDetection.baseEjectionTime must be positive")
		}
		if p := od.GetMaxEjectionPercent(); p < 0 || p > 100 {
			r = append(r, where+"outlierDetection.maxEjectionPercent must be 0-100")
		}
		for _, v := range []int32{cp.GetTcp().GetMaxConnections(), cp.GetHttp().GetHttp1MaxPendingRequests(), cp.GetHttp().GetHttp2MaxRequests(),
			cp.GetHttp().GetMaxRetries(), cp.GetHttp().GetMaxRequestsPerConnection()} {
			if v < 0 {
				r = append(r, where+"connectionPool limits must not be negative")
				break
			}
		}
	}
	check(tp.LoadBalancer, tp.ConnectionPool, tp.OutlierDetection, "")
	for _, pl := range tp.PortLevelSettings {
		if pl == nil || pl.Port == nil || pl.Port.Number == 0 {
			r = append(r, "portLevelSettings entries need a port number")
			continue
		}
		check(pl.LoadBalancer, pl.ConnectionPool, pl.OutlierDetection, fmt.Sprintf("port %d: ", pl.Port.Number))
	}
	return r
}

func positive(d *durationpb.Duration) bool {
	return d.CheckValid() == nil && d.AsDuration() > 0
}

// effectivePolicy merges, section by section, the top-level policy, the
// port's level and the subset's policy (and its port level): the most
// specific section that is set wins, as in Istio.
type effectivePolicy struct {
	lb *networkingapi.LoadBalancerSettings
	cp *networkingapi.ConnectionPoolSettings
	od *networkingapi.OutlierDetection
}

func (e *effectivePolicy) apply(tp *networkingapi.TrafficPolicy, port uint32) {
	if tp == nil {
		return
	}
	if tp.LoadBalancer != nil {
		e.lb = tp.LoadBalancer
	}
	if tp.ConnectionPool != nil {
		e.cp = tp.ConnectionPool
	}
	if tp.OutlierDetection != nil {
		e.od = tp.OutlierDetection
	}
	for _, pl := range tp.PortLevelSettings {
		if pl.GetPort().GetNumber() != port {
			continue
		}
		if pl.LoadBalancer != nil {
			e.lb = pl.LoadBalancer
		}
		if pl.ConnectionPool != nil {
			e.cp = pl.ConnectionPool
		}
		if pl.OutlierDetection != nil {
			e.od = pl.OutlierDetection
		}
	}
}

func (b *builder) policyFor(s *service, port uint32, subset string) effectivePolicy {
	var e effectivePolicy
	d := b.dr[s.key]
	if d == nil {
		return e
	}
	e.apply(d.obj.Spec.TrafficPolicy, port)
	if ss := d.subsets[subset]; ss != nil {
		e.apply(ss.TrafficPolicy, port)
	}
	return e
}

// shapeCluster sets the load balancer, circuit breakers, outlier detection
// and connection options of c from the effective policy.
func shapeCluster(c *clusterv3.Cluster, e effectivePolicy) {
	if lb := e.lb; lb != nil {
		if ch := lb.GetConsistentHash(); ch != nil {
			if ch.GetMaglev() != nil {
				c.LbPolicy = clusterv3.Cluster_MAGLEV
			} else {
				c.LbPolicy = clusterv3.Cluster_RING_HASH
				min := ch.GetMinimumRingSize() //nolint:staticcheck // deprecated in Istio, still accepted
				if r := ch.GetRingHash(); r != nil && r.MinimumRingSize > 0 {
					min = r.MinimumRingSize
				}
				if min > 0 {
					c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
						MinimumRingSize: wrapperspb.UInt64(min),
					}}
				}
			}
		} else {
			switch lb.GetSimple() {
			case networkingapi.LoadBalancerSettings_RANDOM:
				c.LbPolicy = clusterv3.Cluster_RANDOM
			case networkingapi.LoadBalancerSettings_LEAST_REQUEST, networkingapi.LoadBalancerSettings_LEAST_CONN: //nolint:staticcheck // LEAST_CONN is deprecated, still accepted
				c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			default:
				c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
			}
		}
	}
	if cp := e.cp; cp != nil {
		t := &clusterv3.CircuitBreakers_Thresholds{}
		set := false
		u32 := func(v int32) *wrapperspb.UInt32Value {
			if v <= 0 {
				return nil
			}
			set = true
			return wrapperspb.UInt32(uint32(v))
		}
		t.MaxConnections = u32(cp.GetTcp().GetMaxConnections())
		t.MaxPendingRequests = u32(cp.GetHttp().GetHttp1MaxPendingRequests())
		t.MaxRequests = u32(cp.GetHttp().GetHttp2MaxRequests())
		t.MaxRetries = u32(cp.GetHttp().GetMaxRetries())
		if set {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
		}
		if d := cp.GetTcp().GetConnectTimeout(); d != nil {
			c.ConnectTimeout = durationpb.New(d.AsDuration())
		}
		h := &corev3.HttpProtocolOptions{}
		hset := false
		if n := cp.GetHttp().GetMaxRequestsPerConnection(); n > 0 {
			h.MaxRequestsPerConnection = wrapperspb.UInt32(uint32(n))
			hset = true
		}
		if d := cp.GetHttp().GetIdleTimeout(); d != nil && d.CheckValid() == nil {
			h.IdleTimeout = durationpb.New(d.AsDuration())
			hset = true
		}
		if hset {
			c.CommonHttpProtocolOptions = h //nolint:staticcheck // the contract names this field
		}
	}
	if od := e.od; od != nil {
		o := &clusterv3.OutlierDetection{}
		if v := od.GetConsecutive_5XxErrors(); v != nil {
			o.Consecutive_5Xx = wrapperspb.UInt32(v.Value)
			o.EnforcingConsecutive_5Xx = wrapperspb.UInt32(100)
		} else if n := od.GetConsecutiveErrors(); n > 0 { //nolint:staticcheck // deprecated in Istio, still accepted
			o.Consecutive_5Xx = wrapperspb.UInt32(uint32(n))
			o.EnforcingConsecutive_5Xx = wrapperspb.UInt32(100)
		} else {
			// Istio turns the 5xx detector off unless asked for.
			o.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
		}
		if v := od.GetConsecutiveGatewayErrors(); v != nil {
			o.ConsecutiveGatewayFailure = wrapperspb.UInt32(v.Value)
			o.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
		}
		if d := od.GetInterval(); d != nil {
			o.Interval = durationpb.New(d.AsDuration())
		}
		if d := od.GetBaseEjectionTime(); d != nil {
			o.BaseEjectionTime = durationpb.New(d.AsDuration())
		}
		if p := od.GetMaxEjectionPercent(); p > 0 {
			o.MaxEjectionPercent = wrapperspb.UInt32(uint32(p))
		}
		c.OutlierDetection = o
	}
}

// hashPolicies returns the route hash policy of a consistent-hash load
// balancer, nil for any other.
func hashPolicies(e effectivePolicy) []*routev3.RouteAction_HashPolicy {
	ch := e.lb.GetConsistentHash()
	if ch == nil {
		return nil
	}
	var hp *routev3.RouteAction_HashPolicy
	switch {
	case ch.GetHttpHeaderName() != "":
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: ch.GetHttpHeaderName()}}}
	case ch.GetHttpCookie() != nil:
		c := ch.GetHttpCookie()
		ck := &routev3.RouteAction_HashPolicy_Cookie{Name: c.Name, Path: c.Path}
		if c.Ttl != nil {
			ck.Ttl = durationpb.New(c.Ttl.AsDuration())
		}
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: ck}}
	case ch.GetUseSourceIp():
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
	default:
		return nil
	}
	return []*routev3.RouteAction_HashPolicy{hp}
}

// hashesOnQuery reports whether any load balancer of dr hashes on a query
// parameter, which the waypoint contract has no hash policy for.
func hashesOnQuery(dr *networkingv1.DestinationRule) bool {
	var lbs []*networkingapi.LoadBalancerSettings
	add := func(tp *networkingapi.TrafficPolicy) {
		lbs = append(lbs, tp.GetLoadBalancer())
		for _, pl := range tp.GetPortLevelSettings() {
			lbs = append(lbs, pl.GetLoadBalancer())
		}
	}
	add(dr.Spec.TrafficPolicy)
	for _, ss := range dr.Spec.Subsets {
		add(ss.GetTrafficPolicy())
	}
	for _, lb := range lbs {
		if lb.GetConsistentHash().GetHttpQueryParameterName() != "" {
			return true
		}
	}
	return false
}
