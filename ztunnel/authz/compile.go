package authz

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// policy is a compiled Authorization.
type policy struct {
	// key is "<namespace>/<name>".
	key    string
	ns     string
	scope  security.Scope
	deny   bool
	dryRun bool
	groups []group
	// broken is set when the resource could not be compiled; a broken
	// policy fails closed: a DENY matches everything, an ALLOW nothing.
	broken bool
	src    *security.Authorization
}

// matches reports whether the policy matches the connection.
func (p *policy) matches(pe *peer, c *Conn) bool {
	if p.broken {
		return p.deny
	}
	for _, g := range p.groups {
		if g.holds(pe, c) {
			return true
		}
	}
	return false
}

// refusedPolicy is the fail-closed form of a policy ztunnel refused (a is
// what the controller sent, possibly nil): a DENY, or a policy of unknown
// action, matches every connection and an ALLOW none, in the scope the
// message names when that scope is known and else only where listed.
func refusedPolicy(key string, a *security.Authorization) *policy {
	ns, _, _ := strings.Cut(key, "/")
	p := &policy{key: key, ns: ns, scope: security.Scope_WORKLOAD_SELECTOR, deny: true, broken: true, src: a}
	if a == nil {
		return p
	}
	if _, ok := security.Scope_name[int32(a.GetScope())]; ok {
		p.scope = a.GetScope()
	}
	p.deny = a.GetAction() != security.Action_ALLOW
	p.dryRun = a.GetDryRun()
	return p
}

// compile turns an Authorization into a matcher. On error the returned
// policy is still usable and marked broken.
func compile(a *security.Authorization) (*policy, error) {
	p := &policy{
		key:    a.GetNamespace() + "/" + a.GetName(),
		ns:     a.GetNamespace(),
		scope:  a.GetScope(),
		deny:   a.GetAction() == security.Action_DENY,
		dryRun: a.GetDryRun(),
		src:    a,
	}
	if a.GetAction() != security.Action_ALLOW && a.GetAction() != security.Action_DENY {
		p.deny, p.broken = true, true
		return p, fmt.Errorf("policy %s: unknown action %d", p.key, a.GetAction())
	}
	for gi, g := range a.GetGroups() {
		cg := make(group, 0, len(g.GetRules()))
		for ri, r := range g.GetRules() {
			cr := make(rule, 0, len(r.GetMatches()))
			for mi, m := range r.GetMatches() {
				cm, err := compileMatch(m)
				if err != nil {
					p.broken = true
					return p, fmt.Errorf("policy %s: groups[%d].rules[%d].matches[%d]: %w", p.key, gi, ri, mi, err)
				}
				cr = append(cr, cm)
			}
			cg = append(cg, cr)
		}
		p.groups = append(p.groups, cg)
	}
	return p, nil
}

func compileMatch(m *security.Match) (match, error) {
	var cm match
	var err error
	if cm.namespaces, err = compileStrings(m.GetNamespaces()); err != nil {
		return cm, fmt.Errorf("namespaces: %w", err)
	}
	if cm.notNamespaces, err = compileStrings(m.GetNotNamespaces()); err != nil {
		return cm, fmt.Errorf("not_namespaces: %w", err)
	}
	if cm.principals, err = compileStrings(m.GetPrincipals()); err != nil {
		return cm, fmt.Errorf("principals: %w", err)
	}
	if cm.notPrincipals, err = compileStrings(m.GetNotPrincipals()); err != nil {
		return cm, fmt.Errorf("not_principals: %w", err)
	}
	cm.serviceAccounts = compileSAs(m.GetServiceAccounts())
	cm.notServiceAccs = compileSAs(m.GetNotServiceAccounts())
	if cm.srcIPs, err = compilePrefixes(m.GetSourceIps()); err != nil {
		return cm, fmt.Errorf("source_ips: %w", err)
	}
	if cm.notSrcIPs, err = compilePrefixes(m.GetNotSourceIps()); err != nil {
		return cm, fmt.Errorf("not_source_ips: %w", err)
	}
	if cm.dstIPs, err = compilePrefixes(m.GetDestinationIps()); err != nil {
		return cm, fmt.Errorf("destination_ips: %w", err)
	}
	if cm.notDstIPs, err = compilePrefixes(m.GetNotDestinationIps()); err != nil {
		return cm, fmt.Errorf("not_destination_ips: %w", err)
	}
	if cm.ports, err = compilePorts(m.GetDestinationPorts()); err != nil {
		return cm, fmt.Errorf("destination_ports: %w", err)
	}
	if cm.notPorts, err = compilePorts(m.GetNotDestinationPorts()); err != nil {
		return cm, fmt.Errorf("not_destination_ports: %w", err)
	}
	return cm, nil
}

func compileStrings(l []*security.StringMatch) ([]strMatch, error) {
	if len(l) == 0 {
		return nil, nil
	}
	res := make([]strMatch, 0, len(l))
	for _, sm := range l {
		switch t := sm.GetMatchType().(type) {
		case *security.StringMatch_Exact:
			res = append(res, strMatch{kind: strExact, s: t.Exact})
		case *security.StringMatch_Prefix:
			res = append(res, strMatch{kind: strPrefix, s: t.Prefix})
		case *security.StringMatch_Suffix:
			res = append(res, strMatch{kind: strSuffix, s: t.Suffix})
		case *security.StringMatch_Presence:
			res = append(res, strMatch{kind: strPresence})
		default:
			return nil, fmt.Errorf("string match without a match type: %w", state.ErrInvalid)
		}
	}
	return res, nil
}

func compileSAs(l []*security.ServiceAccountMatch) []saMatch {
	if len(l) == 0 {
		return nil
	}
	res := make([]saMatch, 0, len(l))
	for _, m := range l {
		res = append(res, saMatch{ns: m.GetNamespace(), sa: m.GetServiceAccount()})
	}
	return res
}

func compilePrefixes(l []*security.Address) ([]netip.Prefix, error) {
	if len(l) == 0 {
		return nil, nil
	}
	res := make([]netip.Prefix, 0, len(l))
	for _, a := range l {
		p, err := state.Prefix(a)
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		res = append(res, p)
	}
	return res, nil
}

func compilePorts(l []uint32) (portSet, error) {
	if len(l) == 0 {
		return nil, nil
	}
	res := make(portSet, 0, len(l))
	for _, p := range l {
		if p > 65535 {
			return nil, fmt.Errorf("port %d out of range: %w", p, state.ErrInvalid)
		}
		res = append(res, uint16(p))
	}
	slices.Sort(res)
	return slices.Compact(res), nil
}
