package state

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/zmesh/zmesh/pkg/spiffe"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// ErrInvalid is wrapped by every validation error of a rejected resource.
var ErrInvalid = errors.New("invalid resource")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

// ipFromBytes converts a raw 4- or 16-byte address. A 16-byte IPv4-mapped
// address stays IPv6-shaped here; index keys are unmapped by addrKey.
func ipFromBytes(b []byte) (netip.Addr, bool) {
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b)), true
	case 16:
		return netip.AddrFrom16([16]byte(b)), true
	}
	return netip.Addr{}, false
}

func validPort(p uint32) bool { return p <= math.MaxUint16 }

// validateWorkload checks everything the State relies on; the first problem
// found is returned.
func validateWorkload(name string, w *workloadapi.Workload) error {
	if w.GetUid() == "" {
		return invalidf("workload has no uid")
	}
	if name != w.GetUid() {
		return invalidf("resource name %q differs from workload uid %q", name, w.GetUid())
	}
	if w.GetNamespace() == "" {
		return invalidf("workload has no namespace")
	}
	for i, a := range w.GetAddresses() {
		if _, ok := ipFromBytes(a); !ok {
			return invalidf("address %d has %d bytes, want 4 or 16", i, len(a))
		}
	}
	if err := workloadapi.CheckWorkloadEnums(w); err != nil {
		return fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	if w.GetTunnelProtocol() == workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS {
		return invalidf("tunnel_protocol LEGACY_ISTIO_MTLS is not supported")
	}
	if err := validateGateway("waypoint", w.GetWaypoint()); err != nil {
		return err
	}
	if err := validateGateway("network_gateway", w.GetNetworkGateway()); err != nil {
		return err
	}
	if at := w.GetApplicationTunnel(); at != nil {
		if _, ok := workloadapi.ApplicationTunnel_Protocol_name[int32(at.GetProtocol())]; !ok {
			return invalidf("unknown application_tunnel protocol %d", at.GetProtocol())
		}
		if !validPort(at.GetPort()) {
			return invalidf("application_tunnel port %d out of range", at.GetPort())
		}
	}
	for key, pl := range w.GetServices() {
		ns, host, ok := strings.Cut(key, "/")
		if !ok || ns == "" || host == "" {
			return invalidf("services key %q is not <namespace>/<hostname>", key)
		}
		for _, p := range pl.GetPorts() {
			if p.GetServicePort() == 0 || !validPort(p.GetServicePort()) || !validPort(p.GetTargetPort()) {
				return invalidf("services[%q]: port %d->%d out of range", key, p.GetServicePort(), p.GetTargetPort())
			}
		}
	}
	if _, err := spiffe.WorkloadID(trustDomainOf(w), w.GetNamespace(), serviceAccountOf(w)); err != nil {
		return fmt.Errorf("workload identity: %w: %w", err, ErrInvalid)
	}
	return nil
}

func trustDomainOf(w *workloadapi.Workload) string {
	if td := w.GetTrustDomain(); td != "" {
		return td
	}
	return spiffe.DefaultTrustDomain
}

func serviceAccountOf(w *workloadapi.Workload) string {
	if sa := w.GetServiceAccount(); sa != "" {
		return sa
	}
	return DefaultServiceAccount
}

// validateGateway checks an optional GatewayAddress (nil is fine).
func validateGateway(field string, g *workloadapi.GatewayAddress) error {
	if g == nil {
		return nil
	}
	switch d := g.GetDestination().(type) {
	case *workloadapi.GatewayAddress_Address:
		if err := validateNetworkAddress(d.Address); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	case *workloadapi.GatewayAddress_Hostname:
		if d.Hostname.GetHostname() == "" {
			return invalidf("%s: empty hostname", field)
		}
	default:
		return invalidf("%s has no destination", field)
	}
	if !validPort(g.GetHboneMtlsPort()) {
		return invalidf("%s: hbone_mtls_port %d out of range", field, g.GetHboneMtlsPort())
	}
	return nil
}

func validateNetworkAddress(a *workloadapi.NetworkAddress) error {
	ip, ok := ipFromBytes(a.GetAddress())
	if !ok {
		return invalidf("network address has %d bytes, want 4 or 16", len(a.GetAddress()))
	}
	if a.Length != nil && int(a.GetLength()) > ip.BitLen() {
		return invalidf("network address %s: prefix length %d too long", ip, a.GetLength())
	}
	return nil
}

// validateService checks a Service; name is the resource name.
func validateService(name string, s *workloadapi.Service) error {
	if s.GetNamespace() == "" || s.GetHostname() == "" {
		return invalidf("service needs namespace and hostname (have %q, %q)", s.GetNamespace(), s.GetHostname())
	}
	if key := s.GetNamespace() + "/" + s.GetHostname(); name != key {
		return invalidf("resource name %q differs from service key %q", name, key)
	}
	for i, a := range s.GetAddresses() {
		if err := validateNetworkAddress(a); err != nil {
			return fmt.Errorf("address %d: %w", i, err)
		}
	}
	for _, p := range s.GetPorts() {
		if p.GetServicePort() == 0 || !validPort(p.GetServicePort()) || !validPort(p.GetTargetPort()) {
			return invalidf("port %d->%d out of range", p.GetServicePort(), p.GetTargetPort())
		}
	}
	if err := validateGateway("waypoint", s.GetWaypoint()); err != nil {
		return err
	}
	for i, ww := range s.GetWeightedWaypoints() {
		if err := validateGateway(fmt.Sprintf("weighted_waypoints[%d]", i), ww.GetDestination()); err != nil {
			return err
		}
	}
	if lb := s.GetLoadBalancing(); lb != nil {
		if _, ok := workloadapi.LoadBalancing_Mode_name[int32(lb.GetMode())]; !ok {
			return invalidf("unknown load_balancing mode %d", lb.GetMode())
		}
		if _, ok := workloadapi.LoadBalancing_HealthPolicy_name[int32(lb.GetHealthPolicy())]; !ok {
			return invalidf("unknown load_balancing health_policy %d", lb.GetHealthPolicy())
		}
		for _, sc := range lb.GetRoutingPreference() {
			if _, ok := workloadapi.LoadBalancing_Scope_name[int32(sc)]; !ok || sc == workloadapi.LoadBalancing_UNSPECIFIED_SCOPE {
				return invalidf("invalid load_balancing routing_preference %d", sc)
			}
		}
	}
	if _, ok := workloadapi.IPFamilies_name[int32(s.GetIpFamilies())]; !ok {
		return invalidf("unknown ip_families %d", s.GetIpFamilies())
	}
	return nil
}

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
	ip, ok := ipFromBytes(a.GetAddress())
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
