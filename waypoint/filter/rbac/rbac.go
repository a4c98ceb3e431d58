// Package rbac compiles Envoy's RBAC configuration (config.rbac.v3.RBAC, as
// carried by the HTTP and network RBAC filters) into an engine that decides
// ALLOW or DENY for a request's attributes: peer principal, addresses,
// ports, headers, path and JWT metadata.
package rbac

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// Action is what a matching policy means.
type Action uint8

// Actions.
const (
	Allow Action = iota
	Deny
)

// Attributes are what policies are evaluated against.
type Attributes struct {
	// Request is nil for TCP connections: HTTP-only rules never match then.
	Request *http.Request
	// Principal is the peer's SPIFFE ID URI ("" when unauthenticated).
	Principal string
	// SourceIP is the original client address, DirectRemoteIP the previous hop.
	SourceIP, DirectRemoteIP netip.Addr
	// DestinationIP and DestinationPort are the CONNECT target.
	DestinationIP   netip.Addr
	DestinationPort uint32
	// Metadata is dynamic metadata per filter name (e.g. the JWT payloads
	// under "envoy.filters.http.jwt_authn", keyed by provider metadata key).
	Metadata map[string]map[string]any
}

// Engine is a compiled RBAC rule set; nil allows everything.
type Engine struct {
	Action   Action
	policies []policy
}

type policy struct {
	name        string
	permissions []permission
	principals  []principal
}

// Compile compiles rules; nil rules yield a nil Engine (no enforcement).
func Compile(rules *rbacconfigv3.RBAC) (*Engine, error) {
	if rules == nil {
		return nil, nil
	}
	e := &Engine{}
	switch rules.GetAction() {
	case rbacconfigv3.RBAC_ALLOW:
		e.Action = Allow
	case rbacconfigv3.RBAC_DENY:
		e.Action = Deny
	default:
		return nil, fmt.Errorf("rbac: unsupported action %v", rules.GetAction())
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := rules.GetPolicies()[n]
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			return nil, fmt.Errorf("rbac: policy %q: CEL conditions are not supported", n)
		}
		cp := policy{name: n}
		for i, perm := range p.GetPermissions() {
			c, err := compilePermission(perm)
			if err != nil {
				return nil, fmt.Errorf("rbac: policy %q permission %d: %w", n, i, err)
			}
			cp.permissions = append(cp.permissions, c)
		}
		for i, pr := range p.GetPrincipals() {
			c, err := compilePrincipal(pr)
			if err != nil {
				return nil, fmt.Errorf("rbac: policy %q principal %d: %w", n, i, err)
			}
			cp.principals = append(cp.principals, c)
		}
		if len(cp.permissions) == 0 || len(cp.principals) == 0 {
			return nil, fmt.Errorf("rbac: policy %q needs permissions and principals", n)
		}
		e.policies = append(e.policies, cp)
	}
	return e, nil
}

// Matched returns the name of the first policy matching a, or "".
func (e *Engine) Matched(a *Attributes) (string, bool) {
	for _, p := range e.policies {
		if anyPermission(p.permissions, a) && anyPrincipal(p.principals, a) {
			return p.name, true
		}
	}
	return "", false
}

// Allowed decides a request: an ALLOW engine admits only matches, a DENY
// engine refuses matches. A nil engine allows.
func (e *Engine) Allowed(a *Attributes) bool {
	if e == nil {
		return true
	}
	_, m := e.Matched(a)
	if e.Action == Deny {
		return !m
	}
	return m
}

func anyPermission(ps []permission, a *Attributes) bool {
	for _, p := range ps {
		if p(a) {
			return true
		}
	}
	return false
}

func anyPrincipal(ps []principal, a *Attributes) bool {
	for _, p := range ps {
		if p(a) {
			return true
		}
	}
	return false
}

var errEmpty = errors.New("empty rule")
