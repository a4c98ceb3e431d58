package authz

import (
	"net/netip"
	"slices"
	"strings"
)

// peer is the source identity of a connection, split once per evaluation
// into substrings of Conn.SrcIdentity (no allocation).
type peer struct {
	// principal is the SPIFFE ID without "spiffe://"; "" when the peer has
	// no (SPIFFE) identity.
	principal string
	// ns and sa are the namespace and service account of a workload
	// identity (.../ns/<ns>/sa/<sa>); "" otherwise.
	ns, sa string
}

func parsePeer(id string) peer {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok || rest == "" {
		return peer{}
	}
	p := peer{principal: rest}
	_, path, ok := strings.Cut(rest, "/")
	if !ok {
		return p
	}
	path, ok = strings.CutPrefix(path, "ns/")
	if !ok {
		return p
	}
	ns, sa, ok := strings.Cut(path, "/sa/")
	if !ok || ns == "" || sa == "" || strings.Contains(ns, "/") || strings.Contains(sa, "/") {
		return p
	}
	p.ns, p.sa = ns, sa
	return p
}

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strPresence
)

// strMatch is a compiled StringMatch.
type strMatch struct {
	kind strKind
	s    string
}

// matches reports whether v satisfies m. An absent value ("") satisfies
// nothing: a peer without identity has no namespace or principal, so
// positive identity conditions fail and negated ones hold.
func (m strMatch) matches(v string) bool {
	if v == "" {
		return false
	}
	switch m.kind {
	case strExact:
		return v == m.s
	case strPrefix:
		return strings.HasPrefix(v, m.s)
	case strSuffix:
		return strings.HasSuffix(v, m.s)
	default: // strPresence
		return true
	}
}

func anyString(l []strMatch, v string) bool {
	for _, m := range l {
		if m.matches(v) {
			return true
		}
	}
	return false
}

type saMatch struct{ ns, sa string }

func anySA(l []saMatch, p *peer) bool {
	if p.ns == "" {
		return false
	}
	for _, m := range l {
		if m.ns == p.ns && m.sa == p.sa {
			return true
		}
	}
	return false
}

func anyPrefix(l []netip.Prefix, ip netip.Addr) bool {
	for _, p := range l {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// portSet is a sorted, deduplicated list of ports.
type portSet []uint16

func (s portSet) has(p uint16) bool {
	if len(s) <= 8 {
		for _, v := range s {
			if v == p {
				return true
			}
		}
		return false
	}
	_, ok := slices.BinarySearch(s, p)
	return ok
}

// match is a compiled Match: every non-empty condition must hold; for a
// negated condition, no listed value may match.
type match struct {
	ports, notPorts                 portSet
	dstIPs, notDstIPs               []netip.Prefix
	srcIPs, notSrcIPs               []netip.Prefix
	namespaces, notNamespaces       []strMatch
	principals, notPrincipals       []strMatch
	serviceAccounts, notServiceAccs []saMatch
}

// holds evaluates the match; cheap conditions first. c's addresses are
// unmapped by the caller.
func (m *match) holds(p *peer, c *Conn) bool {
	if len(m.ports) > 0 && !m.ports.has(c.DstPort) {
		return false
	}
	if len(m.notPorts) > 0 && m.notPorts.has(c.DstPort) {
		return false
	}
	if len(m.dstIPs) > 0 && !anyPrefix(m.dstIPs, c.DstIP) {
		return false
	}
	if len(m.notDstIPs) > 0 && anyPrefix(m.notDstIPs, c.DstIP) {
		return false
	}
	if len(m.srcIPs) > 0 && !anyPrefix(m.srcIPs, c.SrcIP) {
		return false
	}
	if len(m.notSrcIPs) > 0 && anyPrefix(m.notSrcIPs, c.SrcIP) {
		return false
	}
	if len(m.namespaces) > 0 && !anyString(m.namespaces, p.ns) {
		return false
	}
	if len(m.notNamespaces) > 0 && anyString(m.notNamespaces, p.ns) {
		return false
	}
	if len(m.principals) > 0 && !anyString(m.principals, p.principal) {
		return false
	}
	if len(m.notPrincipals) > 0 && anyString(m.notPrincipals, p.principal) {
		return false
	}
	if len(m.serviceAccounts) > 0 && !anySA(m.serviceAccounts, p) {
		return false
	}
	if len(m.notServiceAccs) > 0 && anySA(m.notServiceAccs, p) {
		return false
	}
	return true
}

// rule is a compiled Rules: any match; no matches constrains nothing.
type rule []match

func (r rule) holds(p *peer, c *Conn) bool {
	if len(r) == 0 {
		return true
	}
	for i := range r {
		if r[i].holds(p, c) {
			return true
		}
	}
	return false
}

// group is a compiled Group: all rules; no rules matches everything.
type group []rule

func (g group) holds(p *peer, c *Conn) bool {
	for _, r := range g {
		if !r.holds(p, c) {
			return false
		}
	}
	return true
}
