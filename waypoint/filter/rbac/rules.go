package rbac

import (
	"fmt"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/zmesh/zmesh/waypoint/matcher"
	"github.com/zmesh/zmesh/waypoint/route"
)

type permission func(*Attributes) bool

type principal func(*Attributes) bool

func compilePermission(p *rbacconfigv3.Permission) (permission, error) {
	switch r := p.GetRule().(type) {
	case *rbacconfigv3.Permission_Any:
		return func(*Attributes) bool { return true }, nil
	case *rbacconfigv3.Permission_AndRules:
		subs, err := compilePermissions(r.AndRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool {
			for _, s := range subs {
				if !s(a) {
					return false
				}
			}
			return true
		}, nil
	case *rbacconfigv3.Permission_OrRules:
		subs, err := compilePermissions(r.OrRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return anyPermission(subs, a) }, nil
	case *rbacconfigv3.Permission_NotRule:
		sub, err := compilePermission(r.NotRule)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return !sub(a) }, nil
	case *rbacconfigv3.Permission_Header:
		h, err := route.CompileHeaderMatcher(r.Header)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return a.Request != nil && h.Match(a.Request) }, nil
	case *rbacconfigv3.Permission_UrlPath:
		m, err := compilePath(r.UrlPath)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return a.Request != nil && m.Match(a.Request.URL.Path) }, nil
	case *rbacconfigv3.Permission_DestinationIp:
		pfx, err := cidr(r.DestinationIp)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return pfx.Contains(a.DestinationIP) }, nil
	case *rbacconfigv3.Permission_DestinationPort:
		port := r.DestinationPort
		return func(a *Attributes) bool { return a.DestinationPort == port }, nil
	case *rbacconfigv3.Permission_DestinationPortRange:
		lo, hi := int64(r.DestinationPortRange.GetStart()), int64(r.DestinationPortRange.GetEnd())
		return func(a *Attributes) bool { p := int64(a.DestinationPort); return p >= lo && p < hi }, nil
	case *rbacconfigv3.Permission_Metadata:
		return compileMetadata(r.Metadata) //nolint:staticcheck // used by the contract for JWT claims
	case *rbacconfigv3.Permission_RequestedServerName:
		m, err := matcher.CompileString(r.RequestedServerName)
		if err != nil {
			return nil, err
		}
		return func(*Attributes) bool { return m.Match("") }, nil
	default:
		return nil, fmt.Errorf("unsupported permission %T", r)
	}
}

func compilePermissions(ps []*rbacconfigv3.Permission) ([]permission, error) {
	if len(ps) == 0 {
		return nil, errEmpty
	}
	out := make([]permission, 0, len(ps))
	for _, p := range ps {
		c, err := compilePermission(p)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func compilePrincipal(p *rbacconfigv3.Principal) (principal, error) {
	switch r := p.GetIdentifier().(type) {
	case *rbacconfigv3.Principal_Any:
		return func(*Attributes) bool { return true }, nil
	case *rbacconfigv3.Principal_AndIds:
		subs, err := compilePrincipals(r.AndIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool {
			for _, s := range subs {
				if !s(a) {
					return false
				}
			}
			return true
		}, nil
	case *rbacconfigv3.Principal_OrIds:
		subs, err := compilePrincipals(r.OrIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return anyPrincipal(subs, a) }, nil
	case *rbacconfigv3.Principal_NotId:
		sub, err := compilePrincipal(r.NotId)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return !sub(a) }, nil
	case *rbacconfigv3.Principal_Authenticated_:
		if r.Authenticated.GetPrincipalName() == nil {
			return func(a *Attributes) bool { return a.Principal != "" }, nil
		}
		m, err := matcher.CompileString(r.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return a.Principal != "" && m.Match(a.Principal) }, nil
	case *rbacconfigv3.Principal_SourceIp:
		pfx, err := cidr(r.SourceIp) //nolint:staticcheck // still emitted by Istio
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return pfx.Contains(a.SourceIP) }, nil
	case *rbacconfigv3.Principal_RemoteIp:
		pfx, err := cidr(r.RemoteIp)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return pfx.Contains(a.SourceIP) }, nil
	case *rbacconfigv3.Principal_DirectRemoteIp:
		pfx, err := cidr(r.DirectRemoteIp)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return pfx.Contains(a.DirectRemoteIP) }, nil
	case *rbacconfigv3.Principal_Header:
		h, err := route.CompileHeaderMatcher(r.Header)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return a.Request != nil && h.Match(a.Request) }, nil
	case *rbacconfigv3.Principal_UrlPath:
		m, err := compilePath(r.UrlPath)
		if err != nil {
			return nil, err
		}
		return func(a *Attributes) bool { return a.Request != nil && m.Match(a.Request.URL.Path) }, nil
	case *rbacconfigv3.Principal_Metadata:
		m, err := compileMetadata(r.Metadata) //nolint:staticcheck // used by the contract for JWT claims
		return principal(m), err
	default:
		return nil, fmt.Errorf("unsupported principal %T", r)
	}
}

func compilePrincipals(ps []*rbacconfigv3.Principal) ([]principal, error) {
	if len(ps) == 0 {
		return nil, errEmpty
	}
	out := make([]principal, 0, len(ps))
	for _, p := range ps {
		c, err := compilePrincipal(p)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func compilePath(p *matcherv3.PathMatcher) (matcher.String, error) {
	return matcher.CompileString(p.GetPath())
}

func cidr(c *corev3.CidrRange) (netip.Prefix, error) {
	ip, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr: %w", err)
	}
	bits := ip.BitLen()
	if c.GetPrefixLen() != nil {
		bits = int(c.GetPrefixLen().GetValue())
	}
	pfx, err := ip.Unmap().Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr: %w", err)
	}
	return pfx, nil
}
