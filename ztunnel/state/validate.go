package state

import (
	"fmt"
	"math"
	"net/netip"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// ErrInvalid is wrapped by every validation error of a rejected resource.
// It is workloadapi.ErrInvalid, so errors of the shared Address validation
// (workloadapi.ValidateWorkload, workloadapi.ValidateService) match it too.
var ErrInvalid = workloadapi.ErrInvalid

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

func validPort(p uint32) bool { return p <= math.MaxUint16 }

// validateAuthorization checks an Authorization; name is the resource name.
// Unlike Istio's ztunnel, which silently drops unparsable addresses and
// string matches (which can widen a policy), any such entry rejects the
// whole resource.
func validateAuthorization(name string, a *security.Authorization) error {
	if a.GetName() == "" || a.GetNamespace() == "" {
		return invalidf("authorization needs name and namespace (have %q, %q)", a.GetName(), a.GetNamespace())
	}
	if key := a.GetNamespace() + "/" + a.GetName(); name != key {
		return invalidf("resource name %q differs from policy key %q", name, key)
	}
	if _, ok := security.Scope_name[int32(a.GetScope())]; !ok {
		return invalidf("unknown scope %d", a.GetScope())
	}
	if _, ok := security.Action_name[int32(a.GetAction())]; !ok {
		return invalidf("unknown action %d", a.GetAction())
	}
	for gi, g := range a.GetGroups() {
		for ri, r := range g.GetRules() {
			for mi, m := range r.GetMatches() {
				if err := validateMatch(m); err != nil {
					return fmt.Errorf("groups[%d].rules[%d].matches[%d]: %w", gi, ri, mi, err)
				}
			}
		}
	}
	return nil
}

func validateMatch(m *security.Match) error {
	for _, l := range [][]*security.StringMatch{m.GetNamespaces(), m.GetNotNamespaces(), m.GetPrincipals(), m.GetNotPrincipals()} {
		for _, sm := range l {
			if sm.GetMatchType() == nil {
				return invalidf("string match without a match type")
			}
		}
	}
	for _, l := range [][]*security.ServiceAccountMatch{m.GetServiceAccounts(), m.GetNotServiceAccounts()} {
		for _, sa := range l {
			if sa.GetNamespace() == "" || sa.GetServiceAccount() == "" {
				return invalidf("service account match needs namespace and service account")
			}
		}
	}
	for _, l := range [][]*security.Address{m.GetSourceIps(), m.GetNotSourceIps(), m.GetDestinationIps(), m.GetNotDestinationIps()} {
		for _, a := range l {
			if _, err := Prefix(a); err != nil {
				return err
			}
		}
	}
	for _, l := range [][]uint32{m.GetDestinationPorts(), m.GetNotDestinationPorts()} {
		for _, p := range l {
			if !validPort(p) {
				return invalidf("port %d out of range", p)
			}
		}
	}
	return nil
}

// Prefix converts a policy Address (raw 4/16 bytes and a prefix length) to
// a masked prefix, with IPv4-mapped IPv6 prefixes unmapped. It fails for a
// wrong address size or a length beyond the address's bits.
func Prefix(a *security.Address) (netip.Prefix, error) {
	ip, ok := netip.AddrFromSlice(a.GetAddress())
	if !ok {
		return netip.Prefix{}, invalidf("CIDR address has %d bytes, want 4 or 16", len(a.GetAddress()))
	}
	bits := int(a.GetLength())
	if a.GetLength() > uint32(ip.BitLen()) {
		return netip.Prefix{}, invalidf("CIDR %s/%d: length beyond %d bits", ip, a.GetLength(), ip.BitLen())
	}
	if ip.Is4In6() && bits >= 96 {
		ip, bits = ip.Unmap(), bits-96
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}
