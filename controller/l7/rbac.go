package l7

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/zmesh/zmesh/controller/index"
)

// Filter names in a Listener.
const (
	HTTPRBACDenyFilterName    = "envoy.filters.http.rbac/deny"
	HTTPRBACAllowFilterName   = "envoy.filters.http.rbac/allow"
	NetworkRBACDenyFilterName = "envoy.filters.network.rbac/deny"
	// NetworkRBACAllowFilterName is the L4 ALLOW filter of TCP listeners.
	NetworkRBACAllowFilterName = "envoy.filters.network.rbac/allow"
	// JWTFilterName is where jwt_authn writes token payloads (under each
	// provider's issuer) and where RBAC reads claims from.
	JWTFilterName = "envoy.filters.http.jwt_authn"
)

// policyTarget resolves a targetRef of an AuthorizationPolicy or
// RequestAuthentication in ns to the services it covers. Policies apply
// at waypoints only through targetRefs: to the waypoint Gateway (every
// service bound to it), to a Service or ServiceEntry bound to a waypoint,
// or, in the root namespace, to the istio-waypoint GatewayClass (every
// bound service).
func (b *builder) policyTarget(kind, ns, name string, ref *typeapi.PolicyTargetReference) []*service {
	if ref == nil {
		return nil
	}
	if ref.Namespace != "" && ref.Namespace != ns {
		b.problem(kind, ns, name, fmt.Sprintf("targetRef %s %s/%s is in another namespace; ignored", ref.Kind, ref.Namespace, ref.Name))
		return nil
	}
	var res []*service
	switch {
	case ref.Group == groupGateway && ref.Kind == "Gateway":
		w := b.waypoints[ns+"/"+ref.Name]
		if w == nil {
			// Possibly an ingress Gateway: not a waypoint's concern.
			return nil
		}
		for _, s := range b.svcList {
			if s.waypoint == w {
				res = append(res, s)
			}
		}
	case ref.Group == groupGateway && ref.Kind == "GatewayClass":
		if ref.Name != index.WaypointGatewayClass {
			return nil // another class: not a waypoint's concern
		}
		if ns != b.cfg.RootNamespace {
			b.problem(kind, ns, name, fmt.Sprintf("a GatewayClass target applies only in the root namespace %s; ignored", b.cfg.RootNamespace))
			return nil
		}
		for _, s := range b.svcList {
			if s.waypoint != nil {
				res = append(res, s)
			}
		}
	case (ref.Group == "" || ref.Group == "core") && ref.Kind == kindService:
		s := b.svcs[ns+"/"+b.hostnameOf(ns, ref.Name)]
		if s == nil || s.kind != kindService {
			b.problem(kind, ns, name, fmt.Sprintf("target Service %s/%s does not exist", ns, ref.Name))
			return nil
		}
		if s.waypoint == nil {
			b.problem(kind, ns, name, fmt.Sprintf("target Service %s/%s is not bound to a waypoint; the policy is not enforced for it", ns, ref.Name))
			return nil
		}
		res = append(res, s)
	case ref.Group == groupNetworking && ref.Kind == kindServiceEntry:
		for _, s := range b.svcList {
			if s.kind == kindServiceEntry && s.ns == ns && s.name == ref.Name {
				if s.waypoint == nil {
					b.problem(kind, ns, name, fmt.Sprintf("target ServiceEntry %s/%s is not bound to a waypoint; the policy is not enforced for it", ns, ref.Name))
					return nil
				}
				res = append(res, s)
			}
		}
		if len(res) == 0 {
			b.problem(kind, ns, name, fmt.Sprintf("target ServiceEntry %s/%s does not exist", ns, ref.Name))
		}
	default:
		b.problem(kind, ns, name, fmt.Sprintf("targetRef kind %s (group %q) is not supported", ref.Kind, ref.Group))
	}
	return res
}

func allTargetRefs(one *typeapi.PolicyTargetReference, many []*typeapi.PolicyTargetReference) []*typeapi.PolicyTargetReference {
	refs := slices.Clone(many)
	if one != nil {
		refs = append(refs, one)
	}
	return refs
}

// attachAuthorizationPolicies attaches ALLOW and DENY policies with
// targetRefs to the services they cover. Policies with a selector (or
// neither) are ztunnel's, handled by the index.
func (b *builder) attachAuthorizationPolicies() {
	for _, ap := range b.authz {
		refs := allTargetRefs(ap.Spec.TargetRef, ap.Spec.TargetRefs)
		if len(refs) == 0 {
			continue
		}
		if len(ap.Spec.GetSelector().GetMatchLabels()) > 0 {
			b.problem(kindAuthorizationPolicy, ap.Namespace, ap.Name, "selector and targetRefs are exclusive; the policy is not enforced")
			continue
		}
		switch ap.Spec.Action {
		case securityapi.AuthorizationPolicy_ALLOW, securityapi.AuthorizationPolicy_DENY:
		default:
			b.problem(kindAuthorizationPolicy, ap.Namespace, ap.Name, fmt.Sprintf("action %s is not supported at waypoints; the policy is not enforced", ap.Spec.Action))
			continue
		}
		for _, ref := range refs {
			for _, s := range b.policyTarget(kindAuthorizationPolicy, ap.Namespace, ap.Name, ref) {
				if !slices.Contains(s.att.policies, ap) {
					s.att.policies = append(s.att.policies, ap)
				}
			}
		}
	}
}

// rbacFilters converts the policies attached to a listener into RBAC
// rules for its DENY and ALLOW filters (nil when no policy of that action
// applies). An ALLOW filter with no policy left denies every request.
func (b *builder) rbacFilters(policies []*securityv1.AuthorizationPolicy, http bool, issuers []string) (deny, allow *rbacconfigv3.RBAC) {
	for _, ap := range policies {
		isAllow := ap.Spec.Action == securityapi.AuthorizationPolicy_ALLOW
		target := &deny
		action := rbacconfigv3.RBAC_DENY
		if isAllow {
			target, action = &allow, rbacconfigv3.RBAC_ALLOW
		}
		if *target == nil {
			*target = &rbacconfigv3.RBAC{Action: action, Policies: map[string]*rbacconfigv3.Policy{}}
		}
		for i, rule := range ap.Spec.Rules {
			if rule == nil {
				continue
			}
			t := &ruleTranslator{b: b, http: http, issuers: issuers, ns: ap.Namespace, widen: !isAllow}
			p := t.rule(rule)
			if len(t.unsupported) > 0 {
				how := "the rule is enforced without them, which denies more"
				if isAllow {
					how = "the rule is left out, which allows less"
				}
				where := "at a waypoint"
				if !http {
					where = "on TCP ports"
				}
				b.problem(kindAuthorizationPolicy, ap.Namespace, ap.Name, fmt.Sprintf("rule %d: %s cannot be enforced %s; %s", i, strings.Join(t.unsupported, ", "), where, how))
				if isAllow {
					continue
				}
			}
			(*target).Policies[fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ap.Namespace, ap.Name, i)] = p
		}
	}
	return deny, allow
}

// ruleTranslator converts one rule. widen (DENY) turns what cannot be
// enforced into "matches anything"; otherwise (ALLOW) the caller drops the
// rule. unsupported lists what could not be enforced.
type ruleTranslator struct {
	b           *builder
	http        bool
	issuers     []string
	ns          string
	widen       bool
	unsupported []string
	// misses counts unsupported values, repeated ones included.
	misses int
}

func (t *ruleTranslator) unsupportedAttr(what string) {
	t.misses++
	if !slices.Contains(t.unsupported, what) {
		t.unsupported = append(t.unsupported, what)
	}
}

func anyPermission() *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
}

func anyPrincipal() *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
}

func andPerm(ps []*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	switch len(ps) {
	case 0:
		return anyPermission()
	case 1:
		return ps[0]
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_AndRules{AndRules: &rbacconfigv3.Permission_Set{Rules: ps}}}
}

func orPerm(ps []*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_OrRules{OrRules: &rbacconfigv3.Permission_Set{Rules: ps}}}
}

func notPerm(p *rbacconfigv3.Permission) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_NotRule{NotRule: p}}
}

func andID(ps []*rbacconfigv3.Principal) *rbacconfigv3.Principal {
	switch len(ps) {
	case 0:
		return anyPrincipal()
	case 1:
		return ps[0]
	}
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{Ids: ps}}}
}

func orID(ps []*rbacconfigv3.Principal) *rbacconfigv3.Principal {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_OrIds{OrIds: &rbacconfigv3.Principal_Set{Ids: ps}}}
}

func notID(p *rbacconfigv3.Principal) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_NotId{NotId: p}}
}

// rule: a rule matches when some from matches, some to matches and every
// when condition matches.
func (t *ruleTranslator) rule(r *securityapi.Rule) *rbacconfigv3.Policy {
	var perms []*rbacconfigv3.Permission
	var ids []*rbacconfigv3.Principal
	if len(r.From) > 0 {
		var or []*rbacconfigv3.Principal
		for _, f := range r.From {
			or = append(or, t.source(f.GetSource()))
		}
		ids = append(ids, orID(or))
	}
	if len(r.To) > 0 {
		var or []*rbacconfigv3.Permission
		for _, to := range r.To {
			or = append(or, t.operation(to.GetOperation()))
		}
		perms = append(perms, orPerm(or))
	}
	for _, c := range r.When {
		if c == nil {
			continue
		}
		p, id := t.condition(c)
		if p != nil {
			perms = append(perms, p)
		}
		if id != nil {
			ids = append(ids, id)
		}
	}
	return &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{andPerm(perms)}, Principals: []*rbacconfigv3.Principal{andID(ids)}}
}

// idValues builds an AND of (OR over values) and NOT(OR over notValues).
// A negated set holding an unsupported value is dropped (matches
// anything): negating the widened value would narrow a DENY rule.
func (t *ruleTranslator) idValues(vals, notVals []string, one func(string) *rbacconfigv3.Principal) []*rbacconfigv3.Principal {
	var res []*rbacconfigv3.Principal
	mk := func(vs []string) *rbacconfigv3.Principal {
		var or []*rbacconfigv3.Principal
		for _, v := range vs {
			if p := one(v); p != nil {
				or = append(or, p)
			}
		}
		if len(or) == 0 {
			// Nothing can match (e.g. no JWT provider for a wildcard).
			return notID(anyPrincipal())
		}
		return orID(or)
	}
	if len(vals) > 0 {
		res = append(res, mk(vals))
	}
	if len(notVals) > 0 {
		before := t.misses
		p := mk(notVals)
		if t.misses == before {
			res = append(res, notID(p))
		}
	}
	return res
}

func (t *ruleTranslator) permValues(vals, notVals []string, one func(string) *rbacconfigv3.Permission) []*rbacconfigv3.Permission {
	var res []*rbacconfigv3.Permission
	mk := func(vs []string) *rbacconfigv3.Permission {
		var or []*rbacconfigv3.Permission
		for _, v := range vs {
			if p := one(v); p != nil {
				or = append(or, p)
			}
		}
		if len(or) == 0 {
			return notPerm(anyPermission())
		}
		return orPerm(or)
	}
	if len(vals) > 0 {
		res = append(res, mk(vals))
	}
	if len(notVals) > 0 {
		before := t.misses
		p := mk(notVals)
		if t.misses == before {
			res = append(res, notPerm(p))
		}
	}
	return res
}

// istioString maps Istio's wildcard strings: "*" any non-empty value
// (nil here: the caller decides presence), "x*" prefix, "*x" suffix.
func istioString(v, addPrefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return nil
	case strings.HasPrefix(v, "*"):
		return suffixString(v[1:])
	case strings.HasSuffix(v, "*"):
		return prefixString(addPrefix + v[:len(v)-1])
	}
	return exactString(addPrefix + v)
}

func (t *ruleTranslator) principalName(v string) *rbacconfigv3.Principal {
	v = strings.TrimPrefix(v, "spiffe://")
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{
		PrincipalName: istioString(v, "spiffe://"),
	}}}
}

func principalRegex(re string) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{
		PrincipalName: regexString(re),
	}}}
}

// wildcardRegex quotes v for a regular expression, turning a leading or
// trailing "*" into seg (a run of characters within one segment).
func wildcardRegex(v, seg string) string {
	switch {
	case v == "*":
		return seg
	case strings.HasPrefix(v, "*"):
		return seg + regexp.QuoteMeta(v[1:])
	case strings.HasSuffix(v, "*"):
		return regexp.QuoteMeta(v[:len(v)-1]) + seg
	}
	return regexp.QuoteMeta(v)
}

func (t *ruleTranslator) namespace(v string) *rbacconfigv3.Principal {
	return principalRegex("spiffe://[^/]+/ns/" + wildcardRegex(v, "[^/]*") + "/sa/[^/]+")
}

func (t *ruleTranslator) serviceAccount(v string) *rbacconfigv3.Principal {
	ns, sa, ok := strings.Cut(v, "/")
	if !ok {
		ns, sa = t.ns, v
	}
	return principalRegex("spiffe://[^/]+/ns/" + regexp.QuoteMeta(ns) + "/sa/" + regexp.QuoteMeta(sa))
}

func (t *ruleTranslator) trustDomain(v string) *rbacconfigv3.Principal {
	return principalRegex("spiffe://" + wildcardRegex(v, "[^/]*") + "/.*")
}

func cidr(v string) *corev3.CidrRange {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		a, aerr := netip.ParseAddr(v)
		if aerr != nil {
			return nil
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return &corev3.CidrRange{AddressPrefix: p.Masked().Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

func (t *ruleTranslator) ipID(remote bool) func(string) *rbacconfigv3.Principal {
	return func(v string) *rbacconfigv3.Principal {
		c := cidr(v)
		if c == nil {
			t.unsupportedAttr(fmt.Sprintf("address %q", v))
			return t.widened()
		}
		if remote {
			return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: c}}
		}
		return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{DirectRemoteIp: c}}
	}
}

// widened is what an unsupported value becomes: anything in a DENY rule;
// in an ALLOW rule the caller drops the whole rule anyway.
func (t *ruleTranslator) widened() *rbacconfigv3.Principal {
	return anyPrincipal()
}

// jwtMetadata matches a value in the token payload of one issuer.
func jwtMetadata(issuer string, path []string, vm *matcherv3.ValueMatcher) *rbacconfigv3.Principal {
	segs := []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: issuer}}}
	for _, p := range path {
		segs = append(segs, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: p}})
	}
	//nolint:staticcheck // the contract matches claims with Principal.metadata
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: JWTFilterName, Path: segs, Value: vm,
	}}}
}

// claimValue matches a claim equal to the value, or a list claim holding it.
func claimValue(sm *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	if sm == nil {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}
	}
	str := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm}}
	list := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: str},
	}}}
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{str, list}}}}
}

// requestPrincipal matches "<issuer>/<subject>" patterns against the
// payloads of the issuers configured on the listener. The subject is what
// follows the last "/". Wildcards match across the issuers known here; a
// request principal of an issuer not configured never matches.
func (t *ruleTranslator) requestPrincipal(v string) *rbacconfigv3.Principal {
	if !t.http {
		t.unsupportedAttr("requestPrincipals")
		return t.widened()
	}
	sub := func(iss string, sm *matcherv3.StringMatcher) *rbacconfigv3.Principal {
		vm := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}
		if sm != nil {
			vm = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm}}
		}
		return jwtMetadata(iss, []string{"sub"}, vm)
	}
	if !strings.Contains(v, "*") {
		i := strings.LastIndex(v, "/")
		if i < 0 {
			return notID(anyPrincipal())
		}
		return sub(v[:i], exactString(v[i+1:]))
	}
	var or []*rbacconfigv3.Principal
	for _, iss := range t.issuers {
		full := iss + "/"
		switch {
		case v == "*":
			or = append(or, sub(iss, nil))
		case strings.HasSuffix(v, "*"):
			p := v[:len(v)-1]
			switch {
			case strings.HasPrefix(full, p):
				or = append(or, sub(iss, nil))
			case strings.HasPrefix(p, full) && !strings.Contains(p[len(full):], "/"):
				or = append(or, sub(iss, prefixString(p[len(full):])))
			}
		default: // "*suffix"
			s := v[1:]
			i := strings.LastIndex(s, "/")
			switch {
			case i < 0:
				or = append(or, sub(iss, suffixString(s)))
			case strings.HasSuffix(iss, s[:i]):
				or = append(or, sub(iss, exactString(s[i+1:])))
			}
		}
	}
	if len(or) == 0 {
		return notID(anyPrincipal())
	}
	return orID(or)
}

// claim matches request.auth.claims[...] (and audiences, presenter)
// across the issuers configured on the listener.
func (t *ruleTranslator) claim(path []string) func(string) *rbacconfigv3.Principal {
	return func(v string) *rbacconfigv3.Principal {
		if !t.http {
			t.unsupportedAttr("request.auth.*")
			return t.widened()
		}
		var or []*rbacconfigv3.Principal
		for _, iss := range t.issuers {
			or = append(or, jwtMetadata(iss, path, claimValue(istioString(v, ""))))
		}
		if len(or) == 0 {
			return notID(anyPrincipal())
		}
		return orID(or)
	}
}

func (t *ruleTranslator) header(name string) func(string) *rbacconfigv3.Principal {
	return func(v string) *rbacconfigv3.Principal {
		if !t.http {
			t.unsupportedAttr("request.headers")
			return t.widened()
		}
		sm := istioString(v, "")
		hm := &routev3.HeaderMatcher{Name: strings.ToLower(name)}
		if sm == nil {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		} else {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
		}
		return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Header{Header: hm}}
	}
}

func (t *ruleTranslator) source(s *securityapi.Source) *rbacconfigv3.Principal {
	if s == nil {
		return anyPrincipal()
	}
	var ids []*rbacconfigv3.Principal
	ids = append(ids, t.idValues(s.Principals, s.NotPrincipals, t.principalName)...)
	ids = append(ids, t.idValues(s.RequestPrincipals, s.NotRequestPrincipals, t.requestPrincipal)...)
	ids = append(ids, t.idValues(s.Namespaces, s.NotNamespaces, t.namespace)...)
	ids = append(ids, t.idValues(s.ServiceAccounts, s.NotServiceAccounts, t.serviceAccount)...)
	ids = append(ids, t.idValues(s.TrustDomains, s.NotTrustDomains, t.trustDomain)...)
	ids = append(ids, t.idValues(s.IpBlocks, s.NotIpBlocks, t.ipID(false))...)
	ids = append(ids, t.idValues(s.RemoteIpBlocks, s.NotRemoteIpBlocks, t.ipID(true))...)
	return andID(ids)
}

func (t *ruleTranslator) l7Perm(what string, f func(string) *rbacconfigv3.Permission) func(string) *rbacconfigv3.Permission {
	return func(v string) *rbacconfigv3.Permission {
		if !t.http {
			t.unsupportedAttr(what)
			return anyPermission()
		}
		return f(v)
	}
}

func headerPerm(name string, sm *matcherv3.StringMatcher, ignoreCase bool) *rbacconfigv3.Permission {
	hm := &routev3.HeaderMatcher{Name: name}
	if sm == nil {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		sm.IgnoreCase = ignoreCase
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: hm}}
}

func (t *ruleTranslator) portPerm(v string) *rbacconfigv3.Permission {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		t.unsupportedAttr(fmt.Sprintf("port %q", v))
		return anyPermission()
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_DestinationPort{DestinationPort: uint32(n)}}
}

func (t *ruleTranslator) pathPerm(v string) *rbacconfigv3.Permission {
	if strings.Contains(v, "{") {
		t.unsupportedAttr("path templates")
		return anyPermission()
	}
	sm := istioString(v, "")
	if sm == nil {
		sm = prefixString("/")
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: sm},
	}}}
}

func (t *ruleTranslator) operation(o *securityapi.Operation) *rbacconfigv3.Permission {
	if o == nil {
		return anyPermission()
	}
	var ps []*rbacconfigv3.Permission
	ps = append(ps, t.permValues(o.Hosts, o.NotHosts, t.l7Perm("hosts", func(v string) *rbacconfigv3.Permission {
		return headerPerm(":authority", istioString(v, ""), true)
	}))...)
	ps = append(ps, t.permValues(o.Ports, o.NotPorts, t.portPerm)...)
	ps = append(ps, t.permValues(o.Methods, o.NotMethods, t.l7Perm("methods", func(v string) *rbacconfigv3.Permission {
		return headerPerm(":method", istioString(v, ""), false)
	}))...)
	ps = append(ps, t.permValues(o.Paths, o.NotPaths, t.l7Perm("paths", t.pathPerm))...)
	return andPerm(ps)
}

// claimPath parses "request.auth.claims[a][b]" into [a b].
func claimPath(key string) ([]string, bool) {
	rest, ok := strings.CutPrefix(key, "request.auth.claims[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return nil, false
	}
	parts := strings.Split(rest[:len(rest)-1], "][")
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, "[]") {
			return nil, false
		}
	}
	return parts, true
}

func (t *ruleTranslator) condition(c *securityapi.Condition) (*rbacconfigv3.Permission, *rbacconfigv3.Principal) {
	ids := func(f func(string) *rbacconfigv3.Principal) *rbacconfigv3.Principal {
		return andID(t.idValues(c.Values, c.NotValues, f))
	}
	perms := func(f func(string) *rbacconfigv3.Permission) *rbacconfigv3.Permission {
		return andPerm(t.permValues(c.Values, c.NotValues, f))
	}
	key := c.Key
	switch {
	case key == "source.ip":
		return nil, ids(t.ipID(false))
	case key == "remote.ip":
		return nil, ids(t.ipID(true))
	case key == "source.namespace":
		return nil, ids(t.namespace)
	case key == "source.principal":
		return nil, ids(t.principalName)
	case key == "source.serviceAccount":
		return nil, ids(t.serviceAccount)
	case key == "request.auth.principal":
		return nil, ids(t.requestPrincipal)
	case key == "request.auth.audiences":
		return nil, ids(t.claim([]string{"aud"}))
	case key == "request.auth.presenter":
		return nil, ids(t.claim([]string{"azp"}))
	case strings.HasPrefix(key, "request.auth.claims["):
		path, ok := claimPath(key)
		if !ok {
			break
		}
		return nil, ids(t.claim(path))
	case strings.HasPrefix(key, "request.headers[") && strings.HasSuffix(key, "]"):
		name := key[len("request.headers[") : len(key)-1]
		if !validHeaderName(name) {
			break
		}
		return nil, ids(t.header(name))
	case key == "destination.port":
		return perms(t.portPerm), nil
	case key == "destination.ip":
		return perms(func(v string) *rbacconfigv3.Permission {
			c := cidr(v)
			if c == nil {
				t.unsupportedAttr(fmt.Sprintf("address %q", v))
				return anyPermission()
			}
			return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_DestinationIp{DestinationIp: c}}
		}), nil
	case key == "connection.sni":
		return perms(func(v string) *rbacconfigv3.Permission {
			sm := istioString(v, "")
			if sm == nil {
				sm = regexString(".+")
			}
			return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_RequestedServerName{RequestedServerName: sm}}
		}), nil
	}
	t.unsupportedAttr("condition " + strconv.Quote(key))
	return nil, nil
}
