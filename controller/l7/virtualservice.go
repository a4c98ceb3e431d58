package l7

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// FaultFilterName is the HTTP fault filter; routes carry its per-route
// configuration under this key.
const FaultFilterName = "envoy.filters.http.fault"

// meshGateway is the VirtualService gateway name of mesh traffic.
const meshGateway = "mesh"

// attachVirtualServices attaches to each service bound to a waypoint the
// VirtualService whose hosts name it and which is exported to the
// waypoint's namespace (exportTo, as a sidecar there would see it). A service already configured with
// Gateway API routes ignores VirtualServices (Gateway API takes
// precedence, as Istio documents for waypoints). Several VirtualServices
// for one service: one naming the host exactly beats a wildcard, then the
// oldest applies; the others are reported.
func (b *builder) attachVirtualServices() {
	type cand struct {
		vs       *networkingv1.VirtualService
		wildcard bool
	}
	cands := map[*service][]cand{}
	for _, vs := range b.vss {
		if len(vs.Spec.Gateways) > 0 && !slices.Contains(vs.Spec.Gateways, meshGateway) {
			continue
		}
		seen := map[*service]int{}
		for _, h := range vs.Spec.Hosts {
			for _, s := range b.vsHostServices(h, vs.Namespace) {
				if s.waypoint == nil {
					continue
				}
				if !exportedTo(vs.Spec.ExportTo, vs.Namespace, s.waypoint.ns) {
					if _, reported := seen[s]; !reported {
						seen[s] = -1
						b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf(
							"exportTo does not include namespace %q of waypoint %s, which serves %s; ignored for it", s.waypoint.ns, s.waypoint.name, s.host))
					}
					continue
				}
				wild := strings.HasPrefix(h, "*")
				if i, ok := seen[s]; ok {
					if !wild {
						cands[s][i].wildcard = false
					}
					continue
				}
				seen[s] = len(cands[s])
				cands[s] = append(cands[s], cand{vs: vs, wildcard: wild})
			}
		}
	}
	for s, list := range cands {
		if s.att.gatewayAPI {
			for _, c := range list {
				b.problem(kindVirtualService, c.vs.Namespace, c.vs.Name, fmt.Sprintf(
					"Gateway API routes already configure %s, and take precedence; this VirtualService is ignored for it", s.host))
			}
			continue
		}
		slices.SortFunc(list, func(x, y cand) int {
			if x.wildcard != y.wildcard {
				return boolCompare(x.wildcard, y.wildcard)
			}
			return olderFirst(x.vs, y.vs)
		})
		win := list[0].vs
		s.att.vs = win
		for _, c := range list[1:] {
			b.problem(kindVirtualService, c.vs.Namespace, c.vs.Name, fmt.Sprintf(
				"VirtualService %s/%s already applies to %s; this one is ignored for it", win.Namespace, win.Name, s.host))
		}
	}
}

// exportedTo reports whether a resource of namespace ns with the given
// exportTo list is visible in namespace to: an empty list exports to all
// namespaces (Istio's default), "*" to all, "." to ns itself, "~" to none,
// and any other entry to the namespace it names.
func exportedTo(exportTo []string, ns, to string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		switch e {
		case "*":
			return true
		case ".":
			if ns == to {
				return true
			}
		case to:
			return true
		}
	}
	return false
}

// vsHostServices resolves one VirtualService host: a name, an FQDN, or a
// wildcard "*.suffix" / "*".
func (b *builder) vsHostServices(h, ns string) []*service {
	if strings.HasPrefix(h, "*") {
		suffix := h[1:]
		var res []*service
		for _, s := range b.svcList {
			if strings.HasSuffix(s.host, suffix) {
				res = append(res, s)
			}
		}
		return res
	}
	if s := b.lookupHost(h, ns); s != nil {
		return []*service{s}
	}
	return nil
}

// vsHTTPRoutes translates the http section of a VirtualService for one
// port of a service. Routes that cannot be translated are reported and
// left out.
func (b *builder) vsHTTPRoutes(vs *networkingv1.VirtualService, s *service, port uint32) []*routev3.Route {
	var res []*routev3.Route
	for i, hr := range vs.Spec.Http {
		if hr == nil {
			continue
		}
		if hr.Delegate != nil {
			b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("http[%d]: delegation is not supported; left out", i))
			continue
		}
		matches := hr.Match
		if len(matches) == 0 {
			matches = []*networkingapi.HTTPMatchRequest{nil}
		}
		var routes []*routev3.Route
		var err error
		for j, m := range matches {
			if m != nil && m.Port != 0 && m.Port != port {
				continue
			}
			if m != nil && (len(m.SourceLabels) > 0 || m.SourceNamespace != "" || len(m.Gateways) > 0) {
				b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf(
					"http[%d].match[%d]: sourceLabels, sourceNamespace and gateways cannot be matched by a waypoint; the match is left out", i, j))
				continue
			}
			var rm *routev3.RouteMatch
			rm, err = vsMatch(m)
			if err != nil {
				break
			}
			name := hr.Name
			if name == "" {
				name = fmt.Sprintf("%s.%s.%d", vs.Namespace, vs.Name, i)
			}
			if len(matches) > 1 {
				name += "." + strconv.Itoa(j)
			}
			rt := &routev3.Route{Name: name, Match: rm}
			if err = b.vsAction(vs, hr, s, port, rt); err != nil {
				break
			}
			routes = append(routes, rt)
		}
		if err != nil {
			b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("http[%d] is left out on port %d: %v", i, port, err))
			continue
		}
		if hr.CorsPolicy != nil {
			b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("http[%d]: corsPolicy is not supported; ignored", i))
		}
		res = append(res, routes...)
	}
	return res
}

func vsStringMatch(sm *networkingapi.StringMatch) (*matcherv3.StringMatcher, error) {
	switch m := sm.GetMatchType().(type) {
	case *networkingapi.StringMatch_Exact:
		return exactString(m.Exact), nil
	case *networkingapi.StringMatch_Prefix:
		if m.Prefix == "" {
			return nil, nil
		}
		return prefixString(m.Prefix), nil
	case *networkingapi.StringMatch_Regex:
		if err := checkRegex(m.Regex); err != nil {
			return nil, err
		}
		return regexString(m.Regex), nil
	}
	return nil, nil // presence
}

// vsHeader matches a header; an empty StringMatch means present.
func vsHeader(name string, sm *networkingapi.StringMatch, invert bool) (*routev3.HeaderMatcher, error) {
	if !validHeaderName(strings.TrimPrefix(name, ":")) {
		return nil, fmt.Errorf("header name %q is invalid", name)
	}
	m, err := vsStringMatch(sm)
	if err != nil {
		return nil, err
	}
	var hm *routev3.HeaderMatcher
	if m == nil {
		hm = &routev3.HeaderMatcher{Name: strings.ToLower(name), HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	} else {
		hm = headerMatch(name, m)
	}
	hm.InvertMatch = invert
	return hm, nil
}

func vsMatch(m *networkingapi.HTTPMatchRequest) (*routev3.RouteMatch, error) {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm, nil
	}
	switch u := m.Uri.GetMatchType().(type) {
	case *networkingapi.StringMatch_Exact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case *networkingapi.StringMatch_Prefix:
		if u.Prefix != "" {
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
		}
	case *networkingapi.StringMatch_Regex:
		if err := checkRegex(u.Regex); err != nil {
			return nil, err
		}
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher(u.Regex)}
	}
	if m.IgnoreUriCase {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	add := func(name string, sm *networkingapi.StringMatch, invert bool) error {
		hm, err := vsHeader(name, sm, invert)
		if err != nil {
			return err
		}
		rm.Headers = append(rm.Headers, hm)
		return nil
	}
	for _, p := range []struct {
		name string
		sm   *networkingapi.StringMatch
	}{{":method", m.Method}, {":scheme", m.Scheme}, {":authority", m.Authority}} {
		if p.sm != nil {
			if err := add(p.name, p.sm, false); err != nil {
				return nil, err
			}
		}
	}
	for _, k := range sortedKeys(m.Headers) {
		if err := add(k, m.Headers[k], false); err != nil {
			return nil, err
		}
	}
	for _, k := range sortedKeys(m.WithoutHeaders) {
		if err := add(k, m.WithoutHeaders[k], true); err != nil {
			return nil, err
		}
	}
	for _, k := range sortedKeys(m.QueryParams) {
		if k == "" {
			return nil, fmt.Errorf("query parameter match without a name")
		}
		sm, err := vsStringMatch(m.QueryParams[k])
		if err != nil {
			return nil, err
		}
		qm := &routev3.QueryParameterMatcher{Name: k}
		if sm == nil {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// vsDestination resolves a destination to a cluster name, and its service
// (nil when it does not resolve: the waypoint answers 500).
func (b *builder) vsDestination(vs *networkingv1.VirtualService, d *networkingapi.Destination, listenerPort uint32) (string, *service, uint32) {
	if d == nil || d.Host == "" {
		b.problem(kindVirtualService, vs.Namespace, vs.Name, "a destination has no host; requests to it fail")
		return missingCluster(vs.Namespace + "/" + vs.Name), nil, 0
	}
	if strings.Contains(d.Subset, "|") {
		b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("subset %q is invalid; requests to it fail", d.Subset))
		return missingCluster(vs.Namespace + "/" + vs.Name), nil, 0
	}
	s := b.lookupHost(d.Host, vs.Namespace)
	port := d.GetPort().GetNumber()
	if s == nil {
		b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("destination host %s is not a known service; requests to it fail with 500", d.Host))
		if port == 0 {
			port = listenerPort
		}
		return ClusterName(port, d.Subset, b.expandHost(d.Host, vs.Namespace)), nil, port
	}
	if port == 0 {
		switch {
		case len(s.ports) == 1:
			port = s.ports[0].port
		case s.port(listenerPort) != nil:
			port = listenerPort
		default:
			b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("destination %s has several ports and none is given; requests to it fail", d.Host))
			return missingCluster(s.host), nil, 0
		}
	}
	if s.port(port) == nil {
		b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("destination %s has no port %d; requests to it fail with 500", d.Host, port))
	} else if d.Subset != "" {
		if dr := b.dr[s.key]; dr == nil || dr.subsets[d.Subset] == nil {
			b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("subset %q of %s is not defined by a DestinationRule; requests to it fail with 500", d.Subset, d.Host))
		}
	}
	return b.ref(s, port, d.Subset), s, port
}

func (b *builder) vsAction(vs *networkingv1.VirtualService, hr *networkingapi.HTTPRoute, s *service, port uint32, rt *routev3.Route) error {
	if err := vsHeaders(hr.Headers, &rt.RequestHeadersToAdd, &rt.RequestHeadersToRemove, &rt.ResponseHeadersToAdd, &rt.ResponseHeadersToRemove); err != nil {
		return err
	}
	if hr.Fault != nil {
		f, err := vsFault(hr.Fault)
		if err != nil {
			return err
		}
		anyf, err := typed(f)
		if err != nil {
			return fmt.Errorf("fault: %w", err)
		}
		rt.TypedPerFilterConfig = map[string]*anypb.Any{FaultFilterName: anyf}
	}
	switch {
	case hr.Redirect != nil:
		ra, err := vsRedirect(hr.Redirect, port)
		if err != nil {
			return err
		}
		rt.Action = &routev3.Route_Redirect{Redirect: ra}
		return nil
	case hr.DirectResponse != nil:
		st := hr.DirectResponse.Status
		if st < 200 || st > 599 {
			return fmt.Errorf("directResponse status %d is invalid", st)
		}
		dr := &routev3.DirectResponseAction{Status: st}
		switch body := hr.DirectResponse.GetBody().GetSpecifier().(type) {
		case *networkingapi.HTTPBody_String_:
			dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body.String_}}
		case *networkingapi.HTTPBody_Bytes:
			dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: body.Bytes}}
		}
		rt.Action = &routev3.Route_DirectResponse{DirectResponse: dr}
		return nil
	}
	action := &routev3.RouteAction{}
	var wcs []*routev3.WeightedCluster_ClusterWeight
	for _, d := range hr.Route {
		if d == nil {
			continue
		}
		w := uint32(max(d.Weight, 0))
		if len(hr.Route) == 1 && w == 0 {
			w = 100
		}
		name, ds, dport := b.vsDestination(vs, d.Destination, port)
		if w == 0 {
			continue
		}
		cw := &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(w)}
		if err := vsHeaders(d.Headers, &cw.RequestHeadersToAdd, &cw.RequestHeadersToRemove, &cw.ResponseHeadersToAdd, &cw.ResponseHeadersToRemove); err != nil {
			return err
		}
		if ds != nil {
			action.HashPolicy = appendUniqueHash(action.HashPolicy, hashPolicies(b.policyFor(ds, dport, d.Destination.Subset))...)
		}
		wcs = append(wcs, cw)
	}
	if len(wcs) == 0 {
		return fmt.Errorf("no route destination with a positive weight")
	}
	setClusters(action, wcs, rt)
	if rw := hr.Rewrite; rw != nil {
		if rw.Authority != "" {
			action.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Authority}
		}
		if rw.Uri != "" && rw.UriRegexRewrite != nil {
			return fmt.Errorf("rewrite: uri and uriRegexRewrite are exclusive")
		}
		if rw.Uri != "" {
			if _, regex := rt.Match.PathSpecifier.(*routev3.RouteMatch_SafeRegex); regex {
				return fmt.Errorf("rewrite.uri cannot follow a regex uri match; use uriRegexRewrite")
			}
			action.PrefixRewrite = rw.Uri
		}
		if rr := rw.UriRegexRewrite; rr != nil {
			if err := checkRegex(rr.Match); err != nil {
				return fmt.Errorf("uriRegexRewrite: %w", err)
			}
			action.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regexMatcher(rr.Match), Substitution: rr.Rewrite}
		}
	}
	action.Timeout = noTimeout()
	if hr.Timeout != nil {
		if !nonNegative(hr.Timeout) {
			return fmt.Errorf("timeout is invalid")
		}
		action.Timeout = durationpb.New(hr.Timeout.AsDuration())
	}
	if r := hr.Retries; r != nil {
		rp, unknown, err := vsRetry(r)
		if err != nil {
			return err
		}
		if len(unknown) > 0 {
			b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("retryOn conditions %s are not supported; left out", strings.Join(unknown, ",")))
		}
		action.RetryPolicy = rp
	}
	mirrors := hr.Mirrors
	if hr.Mirror != nil {
		pct := hr.MirrorPercentage
		if old := hr.MirrorPercent; pct == nil && old != nil { //nolint:staticcheck // deprecated in Istio, still accepted
			pct = &networkingapi.Percent{Value: float64(old.Value)}
		}
		mirrors = append([]*networkingapi.HTTPMirrorPolicy{{Destination: hr.Mirror, Percentage: pct}}, mirrors...)
	}
	for _, mp := range mirrors {
		if mp == nil {
			continue
		}
		name, _, _ := b.vsDestination(vs, mp.Destination, port)
		p := &routev3.RouteAction_RequestMirrorPolicy{Cluster: name}
		if mp.Percentage != nil {
			if mp.Percentage.Value < 0 || mp.Percentage.Value > 100 {
				return fmt.Errorf("mirror percentage %v is not 0-100", mp.Percentage.Value)
			}
			p.RuntimeFraction = runtimeFraction(mp.Percentage.Value)
		}
		action.RequestMirrorPolicies = append(action.RequestMirrorPolicies, p)
	}
	if rt.Action == nil {
		rt.Action = &routev3.Route_Route{Route: action}
	}
	return nil
}

func nonNegative(d *durationpb.Duration) bool {
	return d.CheckValid() == nil && d.AsDuration() >= 0
}

// retryConditions are the retry_on conditions the waypoint contract
// accepts (Envoy's, less retriable-headers).
var retryConditions = map[string]bool{
	"5xx": true, "gateway-error": true, "connect-failure": true, "reset": true, "refused-stream": true,
	"retriable-4xx": true, "retriable-status-codes": true, "cancelled": true, "deadline-exceeded": true,
	"internal": true, "resource-exhausted": true, "unavailable": true, "envoy-ratelimited": true,
	"reset-before-request": true, "http3-post-connect-failure": true,
}

// vsRetry maps Istio's retries: attempts 0 disables retrying; retryOn
// mixes Envoy retry conditions and status codes; unset retryOn is Istio's
// default set.
func vsRetry(r *networkingapi.HTTPRetry) (*routev3.RetryPolicy, []string, error) {
	if r.Attempts < 0 {
		return nil, nil, fmt.Errorf("retries.attempts must not be negative")
	}
	rp := &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(uint32(r.Attempts))}
	if r.Attempts == 0 {
		return rp, nil, nil
	}
	on := r.RetryOn
	if on == "" {
		on = "connect-failure,refused-stream,unavailable,cancelled,503"
	}
	var conds, unknown []string
	for _, c := range strings.Split(on, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if n, err := strconv.Atoi(c); err == nil {
			if n < 100 || n > 599 {
				return nil, nil, fmt.Errorf("retryOn status %d is invalid", n)
			}
			rp.RetriableStatusCodes = append(rp.RetriableStatusCodes, uint32(n))
			continue
		}
		if !retryConditions[c] {
			unknown = append(unknown, c)
			continue
		}
		conds = append(conds, c)
	}
	if len(rp.RetriableStatusCodes) > 0 {
		conds = append(conds, "retriable-status-codes")
	}
	rp.RetryOn = strings.Join(conds, ",")
	if r.PerTryTimeout != nil {
		if !positive(r.PerTryTimeout) {
			return nil, nil, fmt.Errorf("retries.perTryTimeout must be positive")
		}
		rp.PerTryTimeout = durationpb.New(r.PerTryTimeout.AsDuration())
	}
	if r.Backoff != nil {
		if !positive(r.Backoff) {
			return nil, nil, fmt.Errorf("retries.backoff must be positive")
		}
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(r.Backoff.AsDuration())}
	}
	return rp, unknown, nil
}

// vsRedirect translates a redirect of a route serving port. Without
// redirectPort (or with derivePort FROM_PROTOCOL_DEFAULT) no port is set,
// as Istio does; FROM_REQUEST_PORT keeps port.
func vsRedirect(r *networkingapi.HTTPRedirect, port uint32) (*routev3.RedirectAction, error) {
	status := int(r.RedirectCode)
	if status == 0 {
		status = 301
	}
	code, ok := redirectCode(status)
	if !ok {
		return nil, fmt.Errorf("redirect code %d is not supported", r.RedirectCode)
	}
	ra := &routev3.RedirectAction{ResponseCode: code, HostRedirect: r.Authority}
	if r.Scheme != "" {
		ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.Scheme}
	}
	switch p := r.RedirectPort.(type) {
	case *networkingapi.HTTPRedirect_Port:
		if p.Port > 65535 {
			return nil, fmt.Errorf("redirect port %d is invalid", p.Port)
		}
		ra.PortRedirect = p.Port
	case *networkingapi.HTTPRedirect_DerivePort:
		if p.DerivePort == networkingapi.HTTPRedirect_FROM_REQUEST_PORT {
			ra.PortRedirect = port
		}
	}
	switch {
	case r.Uri != "" && r.PrefixRewrite != "":
		return nil, fmt.Errorf("redirect: uri and prefixRewrite are exclusive")
	case r.Uri != "":
		ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.Uri}
	case r.PrefixRewrite != "":
		ra.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: r.PrefixRewrite}
	}
	return ra, nil
}

func vsHeaders(h *networkingapi.Headers, reqAdd *[]*corev3.HeaderValueOption, reqRm *[]string, respAdd *[]*corev3.HeaderValueOption, respRm *[]string) error {
	if h == nil {
		return nil
	}
	ops := func(o *networkingapi.Headers_HeaderOperations, add *[]*corev3.HeaderValueOption, rm *[]string) error {
		if o == nil {
			return nil
		}
		for _, k := range sortedKeys(o.Set) {
			if !validHeaderName(k) || !validHeaderValue(o.Set[k]) {
				return fmt.Errorf("header %q is invalid", k)
			}
			*add = append(*add, headerValue(k, o.Set[k], true))
		}
		for _, k := range sortedKeys(o.Add) {
			if !validHeaderName(k) || !validHeaderValue(o.Add[k]) {
				return fmt.Errorf("header %q is invalid", k)
			}
			*add = append(*add, headerValue(k, o.Add[k], false))
		}
		for _, k := range o.Remove {
			if !validHeaderName(k) {
				return fmt.Errorf("header %q is invalid", k)
			}
			*rm = append(*rm, strings.ToLower(k))
		}
		return nil
	}
	if err := ops(h.Request, reqAdd, reqRm); err != nil {
		return err
	}
	return ops(h.Response, respAdd, respRm)
}

// vsFault maps fault injection; a fault without a percentage applies to
// every request.
func vsFault(f *networkingapi.HTTPFaultInjection) (*faultv3.HTTPFault, error) {
	pct := func(p *networkingapi.Percent, legacy int32) (float64, error) {
		switch {
		case p != nil:
			if p.Value < 0 || p.Value > 100 {
				return 0, fmt.Errorf("fault percentage %v is not 0-100", p.Value)
			}
			return p.Value, nil
		case legacy != 0:
			if legacy < 0 || legacy > 100 {
				return 0, fmt.Errorf("fault percent %d is not 0-100", legacy)
			}
			return float64(legacy), nil
		}
		return 100, nil
	}
	out := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		fd, ok := d.HttpDelayType.(*networkingapi.HTTPFaultInjection_Delay_FixedDelay)
		if !ok || fd.FixedDelay == nil || !positive(fd.FixedDelay) {
			return nil, fmt.Errorf("fault delay needs a positive fixedDelay")
		}
		p, err := pct(d.Percentage, d.Percent) //nolint:staticcheck // deprecated in Istio, still accepted
		if err != nil {
			return nil, err
		}
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(fd.FixedDelay.AsDuration())},
			Percentage:         percent(p),
		}
	}
	if a := f.Abort; a != nil {
		p, err := pct(a.Percentage, 0)
		if err != nil {
			return nil, err
		}
		fa := &faultv3.FaultAbort{Percentage: percent(p)}
		switch e := a.ErrorType.(type) {
		case *networkingapi.HTTPFaultInjection_Abort_HttpStatus:
			if e.HttpStatus < 200 || e.HttpStatus >= 600 {
				return nil, fmt.Errorf("fault abort status %d is invalid", e.HttpStatus)
			}
			fa.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(e.HttpStatus)}
		case *networkingapi.HTTPFaultInjection_Abort_GrpcStatus:
			// The waypoint contract carries HTTP status aborts only.
			return nil, fmt.Errorf("fault abort grpcStatus is not supported; use httpStatus")
		default:
			return nil, fmt.Errorf("fault abort needs httpStatus or grpcStatus")
		}
		out.Abort = fa
	}
	if out.Delay == nil && out.Abort == nil {
		return nil, fmt.Errorf("fault needs a delay or an abort")
	}
	return out, nil
}

// vsTCPClusters picks the first tcp route of a VirtualService that
// applies to a port and returns its weighted clusters; ok is false when
// none applies.
func (b *builder) vsTCPClusters(vs *networkingv1.VirtualService, port uint32) ([]weightedCluster, bool) {
	for i, tr := range vs.Spec.Tcp {
		if tr == nil {
			continue
		}
		applies := len(tr.Match) == 0
		for _, m := range tr.Match {
			if m == nil {
				applies = true
				continue
			}
			if len(m.DestinationSubnets) > 0 || m.SourceSubnet != "" || len(m.SourceLabels) > 0 || m.SourceNamespace != "" || len(m.Gateways) > 0 {
				b.problem(kindVirtualService, vs.Namespace, vs.Name, fmt.Sprintf("tcp[%d]: only port matches apply at a waypoint; other match fields are left out", i))
				continue
			}
			if m.Port == 0 || m.Port == port {
				applies = true
			}
		}
		if !applies {
			continue
		}
		var res []weightedCluster
		for _, d := range tr.Route {
			if d == nil {
				continue
			}
			w := uint32(max(d.Weight, 0))
			if len(tr.Route) == 1 && w == 0 {
				w = 100
			}
			name, _, _ := b.vsDestination(vs, d.Destination, port)
			if w > 0 {
				res = append(res, weightedCluster{name: name, weight: w})
			}
		}
		return res, true
	}
	return nil, false
}
