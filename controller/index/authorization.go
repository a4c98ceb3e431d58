package index

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/emptypb"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// selectorPolicy is a WORKLOAD_SELECTOR policy waiting to be listed on the
// workloads it selects.
type selectorPolicy struct {
	key      string
	selector map[string]string
}

// buildAuthorizationPolicies converts every AuthorizationPolicy that ztunnel
// enforces. Policies attached with targetRef(s) belong to waypoints, and
// AUDIT/CUSTOM actions are not ztunnel's: both are skipped silently.
func (b *builder) buildAuthorizationPolicies() {
	for _, ap := range b.authzPolicies {
		a, l7 := convertAuthorizationPolicy(b.cfg.RootNamespace, ap)
		var l7Problem string
		if a != nil && len(l7) > 0 {
			how := "DENY rules are enforced without them, which denies more than asked"
			if a.Action == security.Action_ALLOW {
				how = "ALLOW rules using them are left out, which allows less than asked"
			}
			l7Problem = fmt.Sprintf(
				"ztunnel cannot enforce HTTP attributes (%s); %s; attach the policy to a waypoint with targetRefs to enforce them",
				strings.Join(l7, ", "), how)
			b.problem(kindAuthorizationPolicy, ap.Namespace, ap.Name, l7Problem)
		}
		if len(policyTargetRefs(ap)) == 0 {
			b.out.PolicyStatus[ap.Namespace+"/"+ap.Name] = PolicyStatus{
				Generation: ap.Generation,
				Ztunnel:    ztunnelPolicyStatus(ap, l7, l7Problem),
			}
		}
		if a == nil {
			continue
		}
		key := a.Namespace + "/" + a.Name
		b.out.Policies[key] = a
		if a.Scope == security.Scope_WORKLOAD_SELECTOR {
			b.selectorPolicies[ap.Namespace] = append(b.selectorPolicies[ap.Namespace],
				selectorPolicy{key: key, selector: ap.Spec.GetSelector().GetMatchLabels()})
		}
	}
}

// policiesFor returns the keys of the selector-scoped policies whose
// selector matches labels: those of ns and, as in Istio, those of the root
// namespace, which select workloads in every namespace. Each namespace's
// list is in name order; the caller sorts the union.
func (b *builder) policiesFor(ns string, labels map[string]string) []string {
	res := b.selectedIn(ns, labels, nil)
	if ns != b.cfg.RootNamespace {
		res = b.selectedIn(b.cfg.RootNamespace, labels, res)
	}
	return res
}

// selectedIn appends to res the selector-scoped policies of ns that select
// labels.
func (b *builder) selectedIn(ns string, labels map[string]string, res []string) []string {
	for _, p := range b.selectorPolicies[ns] {
		if selects(p.selector, labels) {
			res = append(res, p.key)
		}
	}
	return res
}

// convertAuthorizationPolicy maps one valid policy to its ztunnel form, or
// nil when ztunnel does not enforce it. It also returns the sorted names of
// the HTTP attributes ztunnel had to leave out.
func convertAuthorizationPolicy(rootNS string, ap *securityv1.AuthorizationPolicy) (*security.Authorization, []string) {
	spec := &ap.Spec
	if spec.TargetRef != nil || len(spec.TargetRefs) > 0 {
		return nil, nil
	}
	var action security.Action
	switch spec.Action {
	case securityapi.AuthorizationPolicy_ALLOW:
		action = security.Action_ALLOW
	case securityapi.AuthorizationPolicy_DENY:
		action = security.Action_DENY
	default:
		return nil, nil
	}
	scope := security.Scope_WORKLOAD_SELECTOR
	if len(spec.GetSelector().GetMatchLabels()) == 0 {
		// An empty selector selects the whole namespace, exactly like none.
		scope = security.Scope_NAMESPACE
		if ap.Namespace == rootNS {
			scope = security.Scope_GLOBAL
		}
	}
	a := &security.Authorization{
		Name:      ap.Name,
		Namespace: ap.Namespace,
		Scope:     scope,
		Action:    action,
	}
	var l7 []string
	for _, rule := range spec.Rules {
		g, found := convertRule(action, rule, ap.Namespace)
		if g != nil {
			a.Groups = append(a.Groups, g)
		}
		l7 = append(l7, found...)
	}
	slices.Sort(l7)
	return a, slices.Compact(l7)
}

// convertRule maps one rule to a Group: its from list becomes one clause
// (OR over sources), its to list another (OR over operations), and each
// when condition a clause of its own; clauses are ANDed. A rule with no
// fields gives a Group with no clauses, which matches every connection.
//
// ztunnel cannot see HTTP attributes. An ALLOW rule that uses any is dropped
// (nil): it can never be proven to match. A DENY rule keeps its L4 parts
// and enforces them alone, which denies at least what was asked.
//
// The second result names the HTTP attributes found.
func convertRule(action security.Action, rule *securityapi.Rule, policyNS string) (*security.Group, []string) {
	var l7 []string
	g := &security.Group{}
	if len(rule.From) > 0 {
		c := &security.Rules{}
		for _, f := range rule.From {
			s := f.GetSource()
			l7 = appendIfSet(l7, "requestPrincipals", s.RequestPrincipals)
			l7 = appendIfSet(l7, "notRequestPrincipals", s.NotRequestPrincipals)
			l7 = appendIfSet(l7, "remoteIpBlocks", s.RemoteIpBlocks)
			l7 = appendIfSet(l7, "notRemoteIpBlocks", s.NotRemoteIpBlocks)
			// The workload API has no trust domain match: like an HTTP
			// attribute, ztunnel cannot enforce it.
			l7 = appendIfSet(l7, "trustDomains", s.TrustDomains)
			l7 = appendIfSet(l7, "notTrustDomains", s.NotTrustDomains)
			c.Matches = append(c.Matches, &security.Match{
				Principals:         principalMatches(s.Principals),
				NotPrincipals:      principalMatches(s.NotPrincipals),
				Namespaces:         stringMatches(s.Namespaces),
				NotNamespaces:      stringMatches(s.NotNamespaces),
				ServiceAccounts:    serviceAccountMatches(s.ServiceAccounts, policyNS),
				NotServiceAccounts: serviceAccountMatches(s.NotServiceAccounts, policyNS),
				SourceIps:          addressMatches(s.IpBlocks),
				NotSourceIps:       addressMatches(s.NotIpBlocks),
			})
		}
		g.Rules = append(g.Rules, c)
	}
	if len(rule.To) > 0 {
		c := &security.Rules{}
		for _, t := range rule.To {
			op := t.GetOperation()
			l7 = appendIfSet(l7, "hosts", op.Hosts)
			l7 = appendIfSet(l7, "notHosts", op.NotHosts)
			l7 = appendIfSet(l7, "methods", op.Methods)
			l7 = appendIfSet(l7, "notMethods", op.NotMethods)
			l7 = appendIfSet(l7, "paths", op.Paths)
			l7 = appendIfSet(l7, "notPaths", op.NotPaths)
			c.Matches = append(c.Matches, &security.Match{
				DestinationPorts:    portMatches(op.Ports),
				NotDestinationPorts: portMatches(op.NotPorts),
			})
		}
		g.Rules = append(g.Rules, c)
	}
	for _, cond := range rule.When {
		m := &security.Match{}
		switch cond.Key {
		case "source.ip":
			m.SourceIps, m.NotSourceIps = addressMatches(cond.Values), addressMatches(cond.NotValues)
		case "source.namespace":
			m.Namespaces, m.NotNamespaces = stringMatches(cond.Values), stringMatches(cond.NotValues)
		case "source.principal":
			m.Principals, m.NotPrincipals = principalMatches(cond.Values), principalMatches(cond.NotValues)
		case "source.serviceAccount":
			m.ServiceAccounts = serviceAccountMatches(cond.Values, policyNS)
			m.NotServiceAccounts = serviceAccountMatches(cond.NotValues, policyNS)
		case "destination.ip":
			m.DestinationIps, m.NotDestinationIps = addressMatches(cond.Values), addressMatches(cond.NotValues)
		case "destination.port":
			m.DestinationPorts, m.NotDestinationPorts = portMatches(cond.Values), portMatches(cond.NotValues)
		default:
			// An HTTP attribute: nothing ztunnel can check.
			l7 = append(l7, cond.Key)
			continue
		}
		g.Rules = append(g.Rules, &security.Rules{Matches: []*security.Match{m}})
	}
	if len(l7) > 0 && action == security.Action_ALLOW {
		return nil, l7
	}
	return g, l7
}

func appendIfSet(list []string, name string, vals []string) []string {
	if len(vals) > 0 {
		return append(list, name)
	}
	return list
}

// stringMatches maps Istio's string patterns: "*" is presence, "*x" a
// suffix, "x*" a prefix, anything else exact.
func stringMatches(vals []string) []*security.StringMatch {
	if len(vals) == 0 {
		return nil
	}
	res := make([]*security.StringMatch, 0, len(vals))
	for _, v := range vals {
		res = append(res, stringMatch(v))
	}
	return res
}

func stringMatch(v string) *security.StringMatch {
	switch {
	case v == "*":
		return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
	case strings.HasPrefix(v, "*"):
		return &security.StringMatch{MatchType: &security.StringMatch_Suffix{Suffix: v[1:]}}
	case strings.HasSuffix(v, "*"):
		return &security.StringMatch{MatchType: &security.StringMatch_Prefix{Prefix: v[:len(v)-1]}}
	default:
		return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: v}}
	}
}

// principalMatches is stringMatches over principals written with or
// without "spiffe://"; ztunnel compares them without it.
func principalMatches(vals []string) []*security.StringMatch {
	if len(vals) == 0 {
		return nil
	}
	res := make([]*security.StringMatch, 0, len(vals))
	for _, v := range vals {
		res = append(res, stringMatch(strings.TrimPrefix(v, "spiffe://")))
	}
	return res
}

// serviceAccountMatches reads "sa" (in the policy's namespace) or "ns/sa".
func serviceAccountMatches(vals []string, policyNS string) []*security.ServiceAccountMatch {
	if len(vals) == 0 {
		return nil
	}
	res := make([]*security.ServiceAccountMatch, 0, len(vals))
	for _, v := range vals {
		ns, sa, ok := strings.Cut(v, "/")
		if !ok {
			ns, sa = policyNS, v
		}
		res = append(res, &security.ServiceAccountMatch{Namespace: ns, ServiceAccount: sa})
	}
	return res
}

// addressMatches maps IPs and CIDRs; values were validated.
func addressMatches(vals []string) []*security.Address {
	if len(vals) == 0 {
		return nil
	}
	res := make([]*security.Address, 0, len(vals))
	for _, v := range vals {
		p, err := parseCIDR(v)
		if err != nil {
			continue
		}
		res = append(res, &security.Address{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())})
	}
	return res
}

// portMatches maps decimal ports; values were validated.
func portMatches(vals []string) []uint32 {
	if len(vals) == 0 {
		return nil
	}
	res := make([]uint32, 0, len(vals))
	for _, v := range vals {
		if p, err := parsePort(v); err == nil {
			res = append(res, p)
		}
	}
	return res
}
