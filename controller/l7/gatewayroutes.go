package l7

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

const (
	groupGateway    = "gateway.networking.k8s.io"
	groupNetworking = "networking.istio.io"
)

// parentTarget is one service (and port, 0 for all) a route attaches to.
type parentTarget struct {
	svc  *service
	port uint32
}

// routeParents resolves the parentRefs of a route that name a Service or
// ServiceEntry (the GAMMA model). Gateway parents are not the waypoint's
// and are skipped silently; unusable service parents are reported.
func (b *builder) routeParents(kind, ns, name string, refs []gatewayv1.ParentReference, http bool) []parentTarget {
	var res []parentTarget
	for _, ref := range refs {
		group := groupGateway
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		pkind := "Gateway"
		if ref.Kind != nil {
			pkind = string(*ref.Kind)
		}
		var svcs []*service
		pns := ns
		if ref.Namespace != nil && *ref.Namespace != "" {
			pns = string(*ref.Namespace)
		}
		switch {
		case (group == "" || group == "core") && pkind == kindService:
			if s := b.svcs[pns+"/"+b.hostnameOf(pns, string(ref.Name))]; s != nil && s.kind == kindService {
				svcs = append(svcs, s)
			}
		case group == groupGateway && pkind == kindService:
			// The API server defaults an omitted group to Gateway API's own.
			b.problem(kind, ns, name, fmt.Sprintf("parent Service %s needs group \"\" (core); ignored", ref.Name))
			continue
		case group == groupNetworking && pkind == kindServiceEntry:
			for _, s := range b.svcList {
				if s.kind == kindServiceEntry && s.ns == pns && s.name == string(ref.Name) {
					svcs = append(svcs, s)
				}
			}
		default:
			continue
		}
		if pns != ns {
			b.problem(kind, ns, name, fmt.Sprintf("parent %s %s/%s is in another namespace: consumer routes are not applied by waypoints; ignored", pkind, pns, ref.Name))
			continue
		}
		if len(svcs) == 0 {
			b.problem(kind, ns, name, fmt.Sprintf("parent %s %s/%s does not exist", pkind, pns, ref.Name))
			continue
		}
		for _, s := range svcs {
			if s.waypoint == nil {
				b.problem(kind, ns, name, fmt.Sprintf("parent %s %s/%s is not bound to a waypoint; the route has no effect", pkind, pns, ref.Name))
				continue
			}
			var port uint32
			switch {
			case ref.Port != nil:
				p := s.port(uint32(*ref.Port))
				if p == nil {
					b.problem(kind, ns, name, fmt.Sprintf("parent %s %s/%s has no port %d", pkind, pns, ref.Name, *ref.Port))
					continue
				}
				port = p.port
			case ref.SectionName != nil && *ref.SectionName != "":
				p := s.portByName(string(*ref.SectionName))
				if p == nil {
					b.problem(kind, ns, name, fmt.Sprintf("parent %s %s/%s has no port named %q", pkind, pns, ref.Name, *ref.SectionName))
					continue
				}
				port = p.port
			}
			if port != 0 && s.port(port).http != http {
				want := "an HTTP"
				if !http {
					want = "a TCP"
				}
				b.problem(kind, ns, name, fmt.Sprintf("port %d of %s %s/%s is not %s port; ignored", port, pkind, pns, ref.Name, want))
				continue
			}
			res = append(res, parentTarget{svc: s, port: port})
		}
	}
	return res
}

// backendCluster resolves a backendRef of a route in ns to a cluster name
// and its service (nil when it does not resolve: the name then belongs to
// no Cluster and the waypoint answers 500).
func (b *builder) backendCluster(kind, ns, name string, ref gatewayv1.BackendObjectReference) (string, *service) {
	group := ""
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	bkind := kindService
	if ref.Kind != nil {
		bkind = string(*ref.Kind)
	}
	bns := ns
	if ref.Namespace != nil && *ref.Namespace != "" {
		bns = string(*ref.Namespace)
	}
	port := uint32(0)
	if ref.Port != nil && *ref.Port > 0 {
		port = uint32(*ref.Port)
	}
	var s *service
	host := string(ref.Name)
	switch {
	case (group == "" || group == "core") && bkind == kindService:
		host = b.hostnameOf(bns, string(ref.Name))
		s = b.svcs[bns+"/"+host]
	case group == groupNetworking && bkind == "Hostname":
		s = b.lookupHost(host, bns)
	default:
		b.problem(kind, ns, name, fmt.Sprintf("backend %s %s/%s: only Services (and networking.istio.io Hostnames) are supported", bkind, bns, ref.Name))
		return missingCluster(bns + "/" + string(ref.Name)), nil
	}
	if bns != ns {
		// Cross-namespace references need a ReferenceGrant, which the
		// waypoint configuration does not read: refused, failing closed.
		b.problem(kind, ns, name, fmt.Sprintf("backend %s/%s is in another namespace; ReferenceGrants are not supported, requests to it fail", bns, ref.Name))
		return missingCluster(bns + "/" + string(ref.Name)), nil
	}
	if port == 0 {
		b.problem(kind, ns, name, fmt.Sprintf("backend %s %s/%s has no port", bkind, bns, ref.Name))
		return missingCluster(bns + "/" + string(ref.Name)), nil
	}
	if s == nil {
		b.problem(kind, ns, name, fmt.Sprintf("backend %s %s/%s does not exist; requests to it fail with 500", bkind, bns, ref.Name))
		return ClusterName(port, "", host), nil
	}
	if s.port(port) == nil {
		b.problem(kind, ns, name, fmt.Sprintf("backend %s %s/%s has no port %d; requests to it fail with 500", bkind, bns, ref.Name, port))
	}
	return b.ref(s, port, ""), s
}

// missingCluster names a cluster that never exists: routes to it fail
// with 500, which is how a refused backend behaves.
func missingCluster(what string) string {
	return "missing|" + what
}

// attachGatewayRoutes attaches HTTPRoutes, GRPCRoutes and TCPRoutes to the
// services they name as parents.
func (b *builder) attachGatewayRoutes() {
	for _, r := range b.httpRoutes {
		parents := b.routeParents(kindHTTPRoute, r.Namespace, r.Name, r.Spec.ParentRefs, true)
		if len(parents) == 0 {
			continue
		}
		routes := b.httpRouteRoutes(r)
		b.attachRanked(parents, routes)
	}
	for _, r := range b.grpcRoutes {
		parents := b.routeParents(kindGRPCRoute, r.Namespace, r.Name, r.Spec.ParentRefs, true)
		if len(parents) == 0 {
			continue
		}
		routes := b.grpcRouteRoutes(r)
		b.attachRanked(parents, routes)
	}
	for _, r := range b.tcpRoutes {
		parents := b.routeParents(kindTCPRoute, r.Namespace, r.Name, r.Spec.ParentRefs, false)
		if len(parents) == 0 {
			continue
		}
		if len(r.Spec.Rules) > 1 {
			b.problem(kindTCPRoute, r.Namespace, r.Name, "only the first rule of a TCPRoute is used")
		}
		var clusters []weightedCluster
		if len(r.Spec.Rules) > 0 {
			for _, br := range r.Spec.Rules[0].BackendRefs {
				w := uint32(1)
				if br.Weight != nil {
					w = uint32(max(*br.Weight, 0))
				}
				name, _ := b.backendCluster(kindTCPRoute, r.Namespace, r.Name, br.BackendObjectReference)
				if w > 0 {
					clusters = append(clusters, weightedCluster{name: name, weight: w})
				}
			}
		}
		for _, p := range parents {
			s := p.svc
			s.att.gatewayAPI = true
			if s.att.tcp == nil {
				s.att.tcp = map[uint32]*tcpAttachment{}
			}
			ports := []uint32{p.port}
			if p.port == 0 {
				ports = nil
				for _, sp := range s.ports {
					if !sp.http {
						ports = append(ports, sp.port)
					}
				}
			}
			for _, port := range ports {
				a := &tcpAttachment{ns: r.Namespace, name: r.Name, created: r.CreationTimestamp.Time, clusters: clusters}
				prev := s.att.tcp[port]
				if prev != nil {
					if prev.created.Compare(a.created) <= 0 {
						b.problem(kindTCPRoute, r.Namespace, r.Name, fmt.Sprintf("TCPRoute %s/%s already serves port %d of %s; this one is ignored there", prev.ns, prev.name, port, s.host))
						continue
					}
					b.problem(kindTCPRoute, prev.ns, prev.name, fmt.Sprintf("TCPRoute %s/%s already serves port %d of %s; this one is ignored there", a.ns, a.name, port, s.host))
				}
				s.att.tcp[port] = a
			}
		}
	}
	for _, s := range b.svcList {
		slices.SortFunc(s.att.routes, compareRanked)
	}
}

func (b *builder) attachRanked(parents []parentTarget, routes []*rankedRoute) {
	for _, p := range parents {
		p.svc.att.gatewayAPI = true
		for _, r := range routes {
			c := *r
			c.port = p.port
			p.svc.att.routes = append(p.svc.att.routes, &c)
		}
	}
}

// routeMeta identifies the route being translated, for Problems and names.
type routeMeta struct {
	kind, ns, name string
	created        time.Time
}

func (m routeMeta) routeName(rule, match int) string {
	return fmt.Sprintf("%s.%s.%d.%d", m.ns, m.name, rule, match)
}

// httpRouteRoutes translates every rule of an HTTPRoute; a rule that
// cannot be translated is left out and reported.
func (b *builder) httpRouteRoutes(r *gatewayv1.HTTPRoute) []*rankedRoute {
	m := routeMeta{kind: kindHTTPRoute, ns: r.Namespace, name: r.Name, created: r.CreationTimestamp.Time}
	var res []*rankedRoute
	for ri, rule := range r.Spec.Rules {
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		var ranked []*rankedRoute
		var err error
		for mi, hm := range matches {
			rr, merr := httpMatch(hm)
			if merr != nil {
				err = merr
				break
			}
			rr.created, rr.ns, rr.name, rr.rule, rr.match = m.created, m.ns, m.name, ri, mi
			rr.route.Name = m.routeName(ri, mi)
			ranked = append(ranked, rr)
		}
		if err != nil {
			b.problem(m.kind, m.ns, m.name, fmt.Sprintf("rule %d is left out: %v", ri, err))
			continue
		}
		for _, rr := range ranked {
			if err := b.httpRuleAction(m, ri, rule, rr.route); err != nil {
				b.problem(m.kind, m.ns, m.name, fmt.Sprintf("rule %d is left out: %v", ri, err))
				ranked = nil
				break
			}
		}
		res = append(res, ranked...)
	}
	return res
}

// httpMatch translates one HTTPRouteMatch to a route with only its match.
func httpMatch(hm gatewayv1.HTTPRouteMatch) (*rankedRoute, error) {
	rr := &rankedRoute{route: &routev3.Route{Match: &routev3.RouteMatch{}}}
	rm := rr.route.Match
	typ, val := gatewayv1.PathMatchPathPrefix, "/"
	if hm.Path != nil {
		if hm.Path.Type != nil {
			typ = *hm.Path.Type
		}
		if hm.Path.Value != nil {
			val = *hm.Path.Value
		}
	}
	if typ != gatewayv1.PathMatchRegularExpression && (!strings.HasPrefix(val, "/") || strings.ContainsAny(val, "?#")) {
		return nil, fmt.Errorf("path %q must start with / and hold no query or fragment", val)
	}
	switch typ {
	case gatewayv1.PathMatchExact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: val}
		rr.pathKind, rr.pathLen = 3, len(val)
	case gatewayv1.PathMatchPathPrefix:
		trimmed := strings.TrimRight(val, "/")
		if trimmed == "" {
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
		} else {
			rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: trimmed}
		}
		rr.pathKind, rr.pathLen = 1, len(trimmed)
	case gatewayv1.PathMatchRegularExpression:
		if err := checkRegex(val); err != nil {
			return nil, err
		}
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher(val)}
		rr.pathKind, rr.pathLen = 2, len(val)
	default:
		return nil, fmt.Errorf("path match type %q is not supported", typ)
	}
	for _, h := range hm.Headers {
		if !validHeaderName(string(h.Name)) {
			return nil, fmt.Errorf("header name %q is invalid", h.Name)
		}
		sm, err := gwStringMatch(h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression, h.Value)
		if err != nil {
			return nil, err
		}
		rm.Headers = append(rm.Headers, headerMatch(string(h.Name), sm))
	}
	for _, q := range hm.QueryParams {
		if q.Name == "" {
			return nil, fmt.Errorf("query parameter match without a name")
		}
		sm, err := gwStringMatch(q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression, q.Value)
		if err != nil {
			return nil, err
		}
		rm.QueryParameters = append(rm.QueryParameters, &routev3.QueryParameterMatcher{
			Name: string(q.Name), QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm},
		})
	}
	if hm.Method != nil {
		rm.Headers = append(rm.Headers, methodMatch(string(*hm.Method)))
		rr.method = true
	}
	rr.headers, rr.queries = len(hm.Headers), len(hm.QueryParams)
	return rr, nil
}

func gwStringMatch(regex bool, v string) (*matcherv3.StringMatcher, error) {
	if regex {
		if err := checkRegex(v); err != nil {
			return nil, err
		}
		return regexString(v), nil
	}
	if !validHeaderValue(v) {
		return nil, fmt.Errorf("value %q holds control characters", v)
	}
	return exactString(v), nil
}

// httpRuleAction fills the action of a route made from one rule: filters,
// backends, timeouts and retries. rt already holds its match.
func (b *builder) httpRuleAction(m routeMeta, ri int, rule gatewayv1.HTTPRouteRule, rt *routev3.Route) error {
	var redirect *gatewayv1.HTTPRequestRedirectFilter
	var rewrite *gatewayv1.HTTPURLRewriteFilter
	var mirrors []*routev3.RouteAction_RequestMirrorPolicy
	for _, f := range rule.Filters {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			add, remove, err := headerFilter(f.RequestHeaderModifier)
			if err != nil {
				return err
			}
			rt.RequestHeadersToAdd = append(rt.RequestHeadersToAdd, add...)
			rt.RequestHeadersToRemove = append(rt.RequestHeadersToRemove, remove...)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			add, remove, err := headerFilter(f.ResponseHeaderModifier)
			if err != nil {
				return err
			}
			rt.ResponseHeadersToAdd = append(rt.ResponseHeadersToAdd, add...)
			rt.ResponseHeadersToRemove = append(rt.ResponseHeadersToRemove, remove...)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			if f.RequestRedirect == nil {
				return fmt.Errorf("RequestRedirect filter without its settings")
			}
			redirect = f.RequestRedirect
		case gatewayv1.HTTPRouteFilterURLRewrite:
			if f.URLRewrite == nil {
				return fmt.Errorf("URLRewrite filter without its settings")
			}
			rewrite = f.URLRewrite
		case gatewayv1.HTTPRouteFilterRequestMirror:
			mp, err := b.mirrorFilter(m, f.RequestMirror)
			if err != nil {
				return err
			}
			mirrors = append(mirrors, mp)
		case gatewayv1.HTTPRouteFilterCORS:
			b.problem(m.kind, m.ns, m.name, fmt.Sprintf("rule %d: the CORS filter is not supported; ignored", ri))
		default:
			// Gateway API: a filter that cannot be applied must not be
			// skipped; requests it would process get an error.
			b.problem(m.kind, m.ns, m.name, fmt.Sprintf("rule %d: filter %q is not supported; its requests get 500", ri, f.Type))
			rt.Action = directResponse(500)
			return nil
		}
	}
	if redirect != nil {
		ra, err := gwRedirect(redirect, rt.Match)
		if err != nil {
			return err
		}
		rt.Action = &routev3.Route_Redirect{Redirect: ra}
		return nil
	}
	action := &routev3.RouteAction{Timeout: noTimeout()}
	if err := b.httpBackends(m, rule.BackendRefs, action, rt); err != nil {
		return err
	}
	action.RequestMirrorPolicies = mirrors
	if rewrite != nil {
		if err := gwRewrite(rewrite, rt.Match, action); err != nil {
			return err
		}
	}
	if t := rule.Timeouts; t != nil {
		if t.Request != nil {
			d, err := gwDuration(*t.Request)
			if err != nil {
				return fmt.Errorf("timeouts.request: %w", err)
			}
			action.Timeout = d
		}
		if t.BackendRequest != nil {
			d, err := gwDuration(*t.BackendRequest)
			if err != nil {
				return fmt.Errorf("timeouts.backendRequest: %w", err)
			}
			ensureRetry(action).PerTryTimeout = d
		}
	}
	if rr := rule.Retry; rr != nil {
		rp := ensureRetry(action)
		rp.RetryOn = "connect-failure,refused-stream"
		if len(rr.Codes) > 0 {
			rp.RetryOn += ",retriable-status-codes"
			for _, c := range rr.Codes {
				if c < 400 || c > 599 {
					return fmt.Errorf("retry code %d is not an HTTP error status", c)
				}
				rp.RetriableStatusCodes = append(rp.RetriableStatusCodes, uint32(c))
			}
		}
		rp.NumRetries = wrapperspb.UInt32(defaultRetryAttempts)
		if rr.Attempts != nil {
			if *rr.Attempts < 0 {
				return fmt.Errorf("retry attempts must not be negative")
			}
			rp.NumRetries = wrapperspb.UInt32(uint32(*rr.Attempts))
		}
		if rr.Backoff != nil {
			d, err := gwDuration(*rr.Backoff)
			if err != nil {
				return fmt.Errorf("retry backoff: %w", err)
			}
			if d.AsDuration() > 0 {
				rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: d}
			}
		}
	}
	if rt.Action == nil { // else no usable backend: a direct response
		rt.Action = &routev3.Route_Route{Route: action}
	}
	return nil
}

// defaultRetryAttempts is Istio's number of retries when a retry policy
// leaves it unspecified.
const defaultRetryAttempts = 2

func ensureRetry(a *routev3.RouteAction) *routev3.RetryPolicy {
	if a.RetryPolicy == nil {
		a.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)}
	}
	return a.RetryPolicy
}

func directResponse(status uint32) *routev3.Route_DirectResponse {
	return &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status}}
}

// gwDuration parses a Gateway API duration (GEP-2257: a subset of Go's).
func gwDuration(d gatewayv1.Duration) (*durationpb.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return nil, fmt.Errorf("duration %q: %w", d, err)
	}
	if v < 0 {
		return nil, fmt.Errorf("duration %q is negative", d)
	}
	return durationpb.New(v), nil
}

func headerFilter(f *gatewayv1.HTTPHeaderFilter) ([]*corev3.HeaderValueOption, []string, error) {
	if f == nil {
		return nil, nil, fmt.Errorf("header filter without its settings")
	}
	var add []*corev3.HeaderValueOption
	for _, h := range f.Set {
		if !validHeaderName(string(h.Name)) || !validHeaderValue(h.Value) {
			return nil, nil, fmt.Errorf("header %q is invalid", h.Name)
		}
		add = append(add, headerValue(string(h.Name), h.Value, true))
	}
	for _, h := range f.Add {
		if !validHeaderName(string(h.Name)) || !validHeaderValue(h.Value) {
			return nil, nil, fmt.Errorf("header %q is invalid", h.Name)
		}
		add = append(add, headerValue(string(h.Name), h.Value, false))
	}
	var remove []string
	for _, h := range f.Remove {
		if !validHeaderName(h) {
			return nil, nil, fmt.Errorf("header %q is invalid", h)
		}
		remove = append(remove, strings.ToLower(h))
	}
	return add, remove, nil
}

func (b *builder) mirrorFilter(m routeMeta, f *gatewayv1.HTTPRequestMirrorFilter) (*routev3.RouteAction_RequestMirrorPolicy, error) {
	if f == nil {
		return nil, fmt.Errorf("RequestMirror filter without its settings")
	}
	name, _ := b.backendCluster(m.kind, m.ns, m.name, f.BackendRef)
	mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: name}
	switch {
	case f.Percent != nil:
		if *f.Percent < 0 || *f.Percent > 100 {
			return nil, fmt.Errorf("mirror percent %d is not 0-100", *f.Percent)
		}
		mp.RuntimeFraction = runtimeFraction(float64(*f.Percent))
	case f.Fraction != nil:
		den := int32(100)
		if f.Fraction.Denominator != nil {
			den = *f.Fraction.Denominator
		}
		if den <= 0 || f.Fraction.Numerator < 0 || f.Fraction.Numerator > den {
			return nil, fmt.Errorf("mirror fraction %d/%d is invalid", f.Fraction.Numerator, den)
		}
		mp.RuntimeFraction = runtimeFraction(float64(f.Fraction.Numerator) * 100 / float64(den))
	}
	return mp, nil
}

// httpBackends sets the cluster or weighted clusters of action. With no
// backend, or only zero weights, rt gets a direct 500 as Gateway API asks.
func (b *builder) httpBackends(m routeMeta, refs []gatewayv1.HTTPBackendRef, action *routev3.RouteAction, rt *routev3.Route) error {
	var wcs []*routev3.WeightedCluster_ClusterWeight
	for _, br := range refs {
		w := uint32(1)
		if br.Weight != nil {
			if *br.Weight < 0 {
				return fmt.Errorf("backend weight must not be negative")
			}
			w = uint32(*br.Weight)
		}
		name, s := b.backendCluster(m.kind, m.ns, m.name, br.BackendObjectReference)
		if w == 0 {
			continue
		}
		cw := &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(w)}
		for _, f := range br.Filters {
			var err error
			switch f.Type {
			case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
				var add []*corev3.HeaderValueOption
				var rm []string
				add, rm, err = headerFilter(f.RequestHeaderModifier)
				cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = append(cw.RequestHeadersToAdd, add...), append(cw.RequestHeadersToRemove, rm...)
			case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
				var add []*corev3.HeaderValueOption
				var rm []string
				add, rm, err = headerFilter(f.ResponseHeaderModifier)
				cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = append(cw.ResponseHeadersToAdd, add...), append(cw.ResponseHeadersToRemove, rm...)
			default:
				return fmt.Errorf("backend filter %q is not supported", f.Type)
			}
			if err != nil {
				return err
			}
		}
		if s != nil {
			action.HashPolicy = appendUniqueHash(action.HashPolicy, hashPolicies(b.policyFor(s, uint32(*br.Port), ""))...)
		}
		wcs = append(wcs, cw)
	}
	setClusters(action, wcs, rt)
	return nil
}

// setClusters puts one or more weighted clusters on action, or a direct
// 500 on rt when there is none.
func setClusters(action *routev3.RouteAction, wcs []*routev3.WeightedCluster_ClusterWeight, rt *routev3.Route) {
	switch {
	case len(wcs) == 0:
		rt.Action = directResponse(500)
	case len(wcs) == 1 && len(wcs[0].RequestHeadersToAdd)+len(wcs[0].RequestHeadersToRemove)+
		len(wcs[0].ResponseHeadersToAdd)+len(wcs[0].ResponseHeadersToRemove) == 0:
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: wcs[0].Name}
	default:
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: wcs}}
	}
}

// pathPrefixOf returns the prefix a route matches on, ok false for other
// kinds of path match.
func pathPrefixOf(m *routev3.RouteMatch) (string, bool) {
	switch p := m.PathSpecifier.(type) {
	case *routev3.RouteMatch_Prefix:
		return p.Prefix, true
	case *routev3.RouteMatch_PathSeparatedPrefix:
		return p.PathSeparatedPrefix, true
	}
	return "", false
}

func gwRedirect(f *gatewayv1.HTTPRequestRedirectFilter, match *routev3.RouteMatch) (*routev3.RedirectAction, error) {
	ra := &routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND}
	if f.Scheme != nil {
		if *f.Scheme != "http" && *f.Scheme != "https" {
			return nil, fmt.Errorf("redirect scheme %q is not http or https", *f.Scheme)
		}
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: *f.Scheme}
	}
	if f.Hostname != nil {
		ra.HostRedirect = string(*f.Hostname)
	}
	switch {
	case f.Port != nil:
		ra.PortRedirect = uint32(*f.Port)
	case f.Scheme != nil:
		// Gateway API: a redirect that sets the scheme but no port goes
		// to the scheme's well-known port (which Location leaves out).
		ra.PortRedirect = wellKnownPort(*f.Scheme)
	default:
		// Without scheme or port, the port is the listener's: the
		// request's service port, filled in per port by
		// redirectToRequestPort.
	}
	if f.StatusCode != nil {
		code, ok := redirectCode(*f.StatusCode)
		if !ok {
			return nil, fmt.Errorf("redirect status %d is not supported", *f.StatusCode)
		}
		ra.ResponseCode = code
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			if p.ReplaceFullPath == nil || !strings.HasPrefix(*p.ReplaceFullPath, "/") {
				return nil, fmt.Errorf("redirect replaceFullPath must start with /")
			}
			ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: *p.ReplaceFullPath}
		case gatewayv1.PrefixMatchHTTPPathModifier:
			if _, ok := pathPrefixOf(match); !ok || p.ReplacePrefixMatch == nil {
				return nil, fmt.Errorf("redirect replacePrefixMatch needs a PathPrefix match")
			}
			ra.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: *p.ReplacePrefixMatch}
		default:
			return nil, fmt.Errorf("redirect path type %q is not supported", p.Type)
		}
	}
	return ra, nil
}

// redirectCode maps an HTTP redirect status to Envoy's redirect code.
func redirectCode(status int) (routev3.RedirectAction_RedirectResponseCode, bool) {
	switch status {
	case 301:
		return routev3.RedirectAction_MOVED_PERMANENTLY, true
	case 302:
		return routev3.RedirectAction_FOUND, true
	case 303:
		return routev3.RedirectAction_SEE_OTHER, true
	case 307:
		return routev3.RedirectAction_TEMPORARY_REDIRECT, true
	case 308:
		return routev3.RedirectAction_PERMANENT_REDIRECT, true
	}
	return 0, false
}

// wellKnownPort is the port a redirect to scheme (http or https) uses.
func wellKnownPort(scheme string) uint32 {
	if scheme == "https" {
		return 443
	}
	return 80
}

// redirectToRequestPort makes a Gateway API redirect that names no port
// keep the port of the request, which for a waypoint is the service port
// the route serves (Gateway API's listener port; Istio's
// FROM_REQUEST_PORT). Other routes are left alone.
func redirectToRequestPort(rt *routev3.Route, port uint32) {
	if ra := rt.GetRedirect(); ra != nil && ra.PortRedirect == 0 {
		ra.PortRedirect = port
	}
}

func gwRewrite(f *gatewayv1.HTTPURLRewriteFilter, match *routev3.RouteMatch, a *routev3.RouteAction) error {
	if f.Hostname != nil {
		a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: string(*f.Hostname)}
	}
	p := f.Path
	if p == nil {
		return nil
	}
	switch p.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil || !strings.HasPrefix(*p.ReplaceFullPath, "/") {
			return fmt.Errorf("rewrite replaceFullPath must start with /")
		}
		a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regexMatcher("^/.*$"), Substitution: *p.ReplaceFullPath}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		prefix, ok := pathPrefixOf(match)
		if !ok || p.ReplacePrefixMatch == nil {
			return fmt.Errorf("rewrite replacePrefixMatch needs a PathPrefix match")
		}
		repl := *p.ReplacePrefixMatch
		if (repl == "/" || repl == "") && prefix != "/" {
			// "/foo/bar" with prefix "/foo" becomes "/bar", not "//bar".
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern:      regexMatcher("^" + regexpQuote(prefix) + "/*"),
				Substitution: "/",
			}
		} else {
			a.PrefixRewrite = repl
		}
	default:
		return fmt.Errorf("rewrite path type %q is not supported", p.Type)
	}
	return nil
}

// grpcRouteRoutes translates every rule of a GRPCRoute.
func (b *builder) grpcRouteRoutes(r *gatewayv1.GRPCRoute) []*rankedRoute {
	m := routeMeta{kind: kindGRPCRoute, ns: r.Namespace, name: r.Name, created: r.CreationTimestamp.Time}
	var res []*rankedRoute
	for ri, rule := range r.Spec.Rules {
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.GRPCRouteMatch{{}}
		}
		var ranked []*rankedRoute
		var err error
		for mi, gm := range matches {
			var rr *rankedRoute
			rr, err = grpcMatch(gm)
			if err != nil {
				break
			}
			rr.created, rr.ns, rr.name, rr.rule, rr.match = m.created, m.ns, m.name, ri, mi
			rr.route.Name = m.routeName(ri, mi)
			if err = b.grpcRuleAction(m, ri, rule, rr.route); err != nil {
				break
			}
			ranked = append(ranked, rr)
		}
		if err != nil {
			b.problem(m.kind, m.ns, m.name, fmt.Sprintf("rule %d is left out: %v", ri, err))
			continue
		}
		res = append(res, ranked...)
	}
	return res
}

func grpcMatch(gm gatewayv1.GRPCRouteMatch) (*rankedRoute, error) {
	rr := &rankedRoute{route: &routev3.Route{Match: &routev3.RouteMatch{}}}
	rm := rr.route.Match
	rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	rr.pathKind = 1
	if mm := gm.Method; mm != nil {
		svc, meth := "", ""
		if mm.Service != nil {
			svc = *mm.Service
		}
		if mm.Method != nil {
			meth = *mm.Method
		}
		if strings.ContainsAny(svc+meth, "/") {
			return nil, fmt.Errorf("gRPC service and method must not contain /")
		}
		if mm.Type != nil && *mm.Type == gatewayv1.GRPCMethodMatchRegularExpression {
			s, me := svc, meth
			if s == "" {
				s = "[^/]+"
			}
			if me == "" {
				me = "[^/]+"
			}
			re := "/" + s + "/" + me
			if err := checkRegex(re); err != nil {
				return nil, err
			}
			rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher(re)}
			rr.pathKind, rr.pathLen = 2, len(re)
		} else {
			switch {
			case svc != "" && meth != "":
				rm.PathSpecifier = &routev3.RouteMatch_Path{Path: "/" + svc + "/" + meth}
				rr.pathKind, rr.pathLen = 3, len(svc)+len(meth)+2
			case svc != "":
				rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/" + svc + "/"}
				rr.pathKind, rr.pathLen = 1, len(svc)+2
			case meth != "":
				re := "/[^/]+/" + regexpQuote(meth)
				rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher(re)}
				rr.pathKind, rr.pathLen = 2, len(re)
			default:
				return nil, fmt.Errorf("gRPC method match needs a service or a method")
			}
		}
	}
	for _, h := range gm.Headers {
		if !validHeaderName(string(h.Name)) {
			return nil, fmt.Errorf("header name %q is invalid", h.Name)
		}
		sm, err := gwStringMatch(h.Type != nil && *h.Type == gatewayv1.GRPCHeaderMatchRegularExpression, h.Value)
		if err != nil {
			return nil, err
		}
		rm.Headers = append(rm.Headers, headerMatch(string(h.Name), sm))
	}
	rr.headers = len(gm.Headers)
	return rr, nil
}

func (b *builder) grpcRuleAction(m routeMeta, ri int, rule gatewayv1.GRPCRouteRule, rt *routev3.Route) error {
	var mirrors []*routev3.RouteAction_RequestMirrorPolicy
	for _, f := range rule.Filters {
		switch f.Type {
		case gatewayv1.GRPCRouteFilterRequestHeaderModifier:
			add, remove, err := headerFilter(f.RequestHeaderModifier)
			if err != nil {
				return err
			}
			rt.RequestHeadersToAdd = append(rt.RequestHeadersToAdd, add...)
			rt.RequestHeadersToRemove = append(rt.RequestHeadersToRemove, remove...)
		case gatewayv1.GRPCRouteFilterResponseHeaderModifier:
			add, remove, err := headerFilter(f.ResponseHeaderModifier)
			if err != nil {
				return err
			}
			rt.ResponseHeadersToAdd = append(rt.ResponseHeadersToAdd, add...)
			rt.ResponseHeadersToRemove = append(rt.ResponseHeadersToRemove, remove...)
		case gatewayv1.GRPCRouteFilterRequestMirror:
			mp, err := b.mirrorFilter(m, f.RequestMirror)
			if err != nil {
				return err
			}
			mirrors = append(mirrors, mp)
		default:
			b.problem(m.kind, m.ns, m.name, fmt.Sprintf("rule %d: filter %q is not supported; its requests get 500", ri, f.Type))
			rt.Action = directResponse(500)
			return nil
		}
	}
	refs := make([]gatewayv1.HTTPBackendRef, 0, len(rule.BackendRefs))
	for _, br := range rule.BackendRefs {
		hb := gatewayv1.HTTPBackendRef{BackendRef: br.BackendRef}
		for _, f := range br.Filters {
			switch f.Type {
			case gatewayv1.GRPCRouteFilterRequestHeaderModifier:
				hb.Filters = append(hb.Filters, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: f.RequestHeaderModifier})
			case gatewayv1.GRPCRouteFilterResponseHeaderModifier:
				hb.Filters = append(hb.Filters, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: f.ResponseHeaderModifier})
			default:
				return fmt.Errorf("backend filter %q is not supported", f.Type)
			}
		}
		refs = append(refs, hb)
	}
	action := &routev3.RouteAction{Timeout: noTimeout()}
	if err := b.httpBackends(m, refs, action, rt); err != nil {
		return err
	}
	if rt.Action != nil {
		return nil
	}
	action.RequestMirrorPolicies = mirrors
	rt.Action = &routev3.Route_Route{Route: action}
	return nil
}

// cloneRoute deep-copies a route so that routes shared between listeners
// stay independent resources.
func cloneRoute(r *routev3.Route) *routev3.Route {
	return proto.Clone(r).(*routev3.Route)
}
