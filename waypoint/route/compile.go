package route

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zmesh/zmesh/waypoint/filter/fault"
	"github.com/zmesh/zmesh/waypoint/matcher"
)

// Compile validates rc and compiles its single virtual host. Features that
// would change behaviour if ignored (unsupported path specifiers, cluster
// headers, unknown retry conditions...) are errors; purely informational
// fields are ignored.
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	vhs := rc.GetVirtualHosts()
	if len(vhs) != 1 {
		return nil, fmt.Errorf("route config %q: want exactly one virtual host, have %d", rc.GetName(), len(vhs))
	}
	vh := vhs[0]
	t := &Table{Name: rc.GetName()}
	var err error
	t.Headers, err = compileHeaderOps(vh.GetRequestHeadersToAdd(), vh.GetRequestHeadersToRemove(), vh.GetResponseHeadersToAdd(), vh.GetResponseHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("virtual host %q: %w", vh.GetName(), err)
	}
	for i, r := range vh.GetRoutes() {
		rt, err := compileRoute(r)
		if err != nil {
			return nil, fmt.Errorf("route %d (%q): %w", i, r.GetName(), err)
		}
		t.Routes = append(t.Routes, rt)
	}
	return t, nil
}

func compileRoute(r *routev3.Route) (*Route, error) {
	rt := &Route{Name: r.GetName(), caseSensitive: true}
	m := r.GetMatch()
	if m == nil {
		return nil, errors.New("missing match")
	}
	if cs := m.GetCaseSensitive(); cs != nil {
		rt.caseSensitive = cs.GetValue()
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rt.pathKind, rt.path = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		rt.pathKind, rt.path = pathExact, p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		if strings.HasSuffix(p.PathSeparatedPrefix, "/") || strings.ContainsAny(p.PathSeparatedPrefix, "?#") {
			return nil, fmt.Errorf("invalid path_separated_prefix %q", p.PathSeparatedPrefix)
		}
		rt.pathKind, rt.path = pathSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := matcher.CompileRegex(p.SafeRegex)
		if err != nil {
			return nil, err
		}
		rt.pathKind, rt.pathRE = pathRegex, re
	default:
		return nil, fmt.Errorf("unsupported path specifier %T", p)
	}
	if !rt.caseSensitive {
		rt.path = strings.ToLower(rt.path)
	}
	if m.GetRuntimeFraction() != nil || len(m.GetCookies()) > 0 || len(m.GetDynamicMetadata()) > 0 || m.GetTlsContext() != nil {
		return nil, errors.New("unsupported match field (runtime_fraction, cookies, dynamic_metadata or tls_context)")
	}
	for _, h := range m.GetHeaders() {
		hm, err := CompileHeaderMatcher(h)
		if err != nil {
			return nil, err
		}
		rt.headers = append(rt.headers, hm)
	}
	for _, q := range m.GetQueryParameters() {
		qm := queryMatcher{name: q.GetName()}
		switch s := q.GetQueryParameterMatchSpecifier().(type) {
		case *routev3.QueryParameterMatcher_PresentMatch:
			qm.present = s.PresentMatch
			if !qm.present {
				return nil, fmt.Errorf("query parameter %q: present_match false is not supported", q.GetName())
			}
		case *routev3.QueryParameterMatcher_StringMatch:
			v, err := matcher.CompileString(s.StringMatch)
			if err != nil {
				return nil, fmt.Errorf("query parameter %q: %w", q.GetName(), err)
			}
			qm.value = v
		default:
			return nil, fmt.Errorf("query parameter %q: missing matcher", q.GetName())
		}
		rt.query = append(rt.query, qm)
	}
	var err error
	rt.Headers, err = compileHeaderOps(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove())
	if err != nil {
		return nil, err
	}
	for name, cfg := range r.GetTypedPerFilterConfig() {
		if name != fault.FilterName {
			continue // other per-filter overrides are advisory here
		}
		var hf faultv3.HTTPFault
		if err := cfg.UnmarshalTo(&hf); err != nil {
			return nil, fmt.Errorf("typed_per_filter_config %s: %w", name, err)
		}
		if rt.Fault, err = fault.Compile(&hf); err != nil {
			return nil, err
		}
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		rt.Forward, err = compileForward(a.Route)
	case *routev3.Route_Redirect:
		rt.Redirect, err = compileRedirect(a.Redirect)
	case *routev3.Route_DirectResponse:
		rt.Direct = &Direct{Status: int(a.DirectResponse.GetStatus())}
		if rt.Direct.Status < 200 || rt.Direct.Status > 599 {
			return nil, fmt.Errorf("direct_response status %d out of range", rt.Direct.Status)
		}
		if b := a.DirectResponse.GetBody(); b != nil {
			switch {
			case b.GetInlineString() != "":
				rt.Direct.Body = b.GetInlineString()
			case len(b.GetInlineBytes()) > 0:
				rt.Direct.Body = string(b.GetInlineBytes())
			case b.GetFilename() != "" || b.GetEnvironmentVariable() != "":
				return nil, errors.New("direct_response body must be inline")
			}
		}
	default:
		return nil, fmt.Errorf("unsupported route action %T", a)
	}
	if err != nil {
		return nil, err
	}
	return rt, nil
}

// CompileHeaderMatcher compiles a route HeaderMatcher.
func CompileHeaderMatcher(h *routev3.HeaderMatcher) (matcher.Header, error) {
	var sm matcher.String
	present := false
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		v, err := matcher.CompileString(s.StringMatch)
		if err != nil {
			return matcher.Header{}, fmt.Errorf("header %q: %w", h.GetName(), err)
		}
		sm = v
	case *routev3.HeaderMatcher_ExactMatch:
		sm = matcher.Exact(s.ExactMatch) //nolint:staticcheck // accepted for older translators
	case *routev3.HeaderMatcher_PresentMatch:
		present = true
		if !s.PresentMatch {
			return matcher.NewHeader(h.GetName(), sm, true, !h.GetInvertMatch()), nil
		}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		v, err := matcher.CompileString(stringRegex(s.SafeRegexMatch.GetRegex())) //nolint:staticcheck // accepted for older translators
		if err != nil {
			return matcher.Header{}, err
		}
		sm = v
	case *routev3.HeaderMatcher_PrefixMatch, *routev3.HeaderMatcher_SuffixMatch, *routev3.HeaderMatcher_ContainsMatch:
		v, err := matcher.CompileString(legacyString(h))
		if err != nil {
			return matcher.Header{}, err
		}
		sm = v
	case nil:
		present = true
	default:
		return matcher.Header{}, fmt.Errorf("header %q: unsupported matcher %T", h.GetName(), s)
	}
	if h.GetName() == "" {
		return matcher.Header{}, errors.New("header matcher without a name")
	}
	return matcher.NewHeader(h.GetName(), sm, present, h.GetInvertMatch()), nil
}

func compileForward(a *routev3.RouteAction) (*Forward, error) {
	f := &Forward{}
	switch c := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if c.Cluster == "" {
			return nil, errors.New("empty cluster name")
		}
		f.Clusters = []WeightedCluster{{Name: c.Cluster, Weight: 1}}
		f.totalWeight = 1
	case *routev3.RouteAction_WeightedClusters:
		for _, wc := range c.WeightedClusters.GetClusters() {
			if wc.GetName() == "" {
				return nil, errors.New("weighted cluster without a name")
			}
			ops, err := compileHeaderOps(wc.GetRequestHeadersToAdd(), wc.GetRequestHeadersToRemove(), wc.GetResponseHeadersToAdd(), wc.GetResponseHeadersToRemove())
			if err != nil {
				return nil, fmt.Errorf("weighted cluster %q: %w", wc.GetName(), err)
			}
			w := wc.GetWeight().GetValue()
			f.Clusters = append(f.Clusters, WeightedCluster{Name: wc.GetName(), Weight: w, Headers: ops})
			f.totalWeight += w
		}
		if len(f.Clusters) == 0 {
			return nil, errors.New("weighted_clusters is empty")
		}
		if f.totalWeight == 0 {
			return nil, errors.New("weighted_clusters weights sum to zero")
		}
	default:
		return nil, fmt.Errorf("unsupported cluster specifier %T", c)
	}
	var err error
	if f.Timeout, err = duration(a.GetTimeout(), "timeout"); err != nil {
		return nil, err
	}
	if a.GetTimeout() == nil {
		f.Timeout = 15 * time.Second // Envoy's default route timeout
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		if f.Retry, err = compileRetry(rp); err != nil {
			return nil, err
		}
	}
	for _, mp := range a.GetRequestMirrorPolicies() {
		if mp.GetCluster() == "" {
			return nil, errors.New("mirror policy without a cluster")
		}
		ppm := uint32(1_000_000)
		if rf := mp.GetRuntimeFraction(); rf != nil {
			if ppm, err = fault.PerMillion(rf.GetDefaultValue()); err != nil {
				return nil, fmt.Errorf("mirror runtime_fraction: %w", err)
			}
		}
		f.Mirrors = append(f.Mirrors, Mirror{Cluster: mp.GetCluster(), PPM: ppm})
	}
	if a.GetPrefixRewrite() != "" {
		f.PrefixRewrite, f.hasPrefixRewrite = a.GetPrefixRewrite(), true
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		if f.hasPrefixRewrite {
			return nil, errors.New("prefix_rewrite and regex_rewrite are exclusive")
		}
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return nil, fmt.Errorf("regex_rewrite: %w", err)
		}
		f.regexRewrite, f.regexSubst = re, envoySubstitution(rr.GetSubstitution())
	}
	switch h := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		f.HostRewrite = h.HostRewriteLiteral
	case nil:
	default:
		return nil, fmt.Errorf("unsupported host rewrite %T", h)
	}
	for _, hp := range a.GetHashPolicy() {
		p := HashPolicy{Terminal: hp.GetTerminal()}
		switch s := hp.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			p.Kind, p.Name = HashHeader, s.Header.GetHeaderName()
		case *routev3.RouteAction_HashPolicy_Cookie_:
			p.Kind, p.Name, p.Path = HashCookie, s.Cookie.GetName(), s.Cookie.GetPath()
			if p.TTL, err = duration(s.Cookie.GetTtl(), "cookie ttl"); err != nil {
				return nil, err
			}
			p.Generate = s.Cookie.GetTtl() != nil
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			p.Kind = HashSourceIP
		default:
			return nil, fmt.Errorf("unsupported hash policy %T", s)
		}
		if p.Kind != HashSourceIP && p.Name == "" {
			return nil, errors.New("hash policy without a name")
		}
		f.Hash = append(f.Hash, p)
	}
	return f, nil
}

func compileRetry(rp *routev3.RetryPolicy) (*RetryPolicy, error) {
	p := &RetryPolicy{NumRetries: 1, On: map[string]bool{}, Codes: map[int]bool{}}
	if n := rp.GetNumRetries(); n != nil {
		p.NumRetries = int(n.GetValue())
	}
	var err error
	if p.PerTryTimeout, err = duration(rp.GetPerTryTimeout(), "per_try_timeout"); err != nil {
		return nil, err
	}
	for _, c := range strings.Split(rp.GetRetryOn(), ",") {
		c = strings.TrimSpace(c)
		switch c {
		case "":
		case "5xx", "gateway-error", "connect-failure", "reset", "refused-stream", "retriable-4xx", "retriable-status-codes":
			p.On[c] = true
		case "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable", "envoy-ratelimited", "reset-before-request", "http3-post-connect-failure":
			// gRPC and rarely used conditions: accepted, treated as not retriable.
		default:
			return nil, fmt.Errorf("unknown retry_on condition %q", c)
		}
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		p.Codes[int(c)] = true
	}
	return p, nil
}

func compileRedirect(a *routev3.RedirectAction) (*Redirect, error) {
	rd := &Redirect{Host: a.GetHostRedirect(), Port: a.GetPortRedirect(), StripQuery: a.GetStripQuery()}
	switch s := a.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			rd.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		rd.Scheme = s.SchemeRedirect
	}
	switch p := a.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		rd.Path = p.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		rd.PrefixRewrite, rd.hasPrefix = p.PrefixRewrite, true
	case nil:
	default:
		return nil, fmt.Errorf("unsupported redirect path rewrite %T", p)
	}
	switch a.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		rd.Code = 301
	case routev3.RedirectAction_FOUND:
		rd.Code = 302
	case routev3.RedirectAction_SEE_OTHER:
		rd.Code = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		rd.Code = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		rd.Code = 308
	default:
		return nil, fmt.Errorf("unknown redirect response code %v", a.GetResponseCode())
	}
	return rd, nil
}

func duration(d *durationpb.Duration, what string) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("%s: negative", what)
	}
	return v, nil
}

// envoySubstitution turns Envoy's "\1" group references into Go's "${1}".
func envoySubstitution(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
			b.WriteString("${" + string(s[i+1]) + "}")
			i++
			continue
		}
		if s[i] == '$' {
			b.WriteString("$$")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
