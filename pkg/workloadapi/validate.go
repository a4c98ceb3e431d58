package workloadapi

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/spiffe"
)

// ErrInvalid is wrapped by every error ValidateAddress, ValidateWorkload
// and ValidateService return: errors.Is(err, ErrInvalid) tells a malformed
// resource (to be NACKed) from other failures.
var ErrInvalid = errors.New("invalid resource")

// DefaultServiceAccount is the service account of a workload that names
// none (Istio's default).
const DefaultServiceAccount = "default"

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

func validPort(p uint32) bool { return p <= math.MaxUint16 }

// WorkloadIdentity returns w's SPIFFE ID,
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>, reading an
// empty trust domain as spiffe.DefaultTrustDomain and an empty service
// account as DefaultServiceAccount. It fails when the parts do not make a
// valid SPIFFE ID; it never fails for a workload ValidateWorkload accepts.
func WorkloadIdentity(w *Workload) (spiffeid.ID, error) {
	td, sa := IdentityDefaults(w)
	return spiffe.WorkloadID(td, w.GetNamespace(), sa)
}

// IdentityDefaults returns the trust domain and service account of w's
// identity: spiffe.DefaultTrustDomain and DefaultServiceAccount where w
// names none (Istio's defaults).
func IdentityDefaults(w *Workload) (trustDomain, serviceAccount string) {
	trustDomain, serviceAccount = w.GetTrustDomain(), w.GetServiceAccount()
	if trustDomain == "" {
		trustDomain = spiffe.DefaultTrustDomain
	}
	if serviceAccount == "" {
		serviceAccount = DefaultServiceAccount
	}
	return trustDomain, serviceAccount
}

// ValidateAddress checks an Address resource m received under the xDS
// resource name name: it must be an *Address holding either a workload
// (ValidateWorkload) or a service (ValidateService). It returns the one
// it holds, the other nil; an error wraps ErrInvalid and says which kind
// failed ("workload: ..." or "service: ...").
func ValidateAddress(name string, m proto.Message) (*Workload, *Service, error) {
	a, ok := m.(*Address)
	if !ok {
		return nil, nil, fmt.Errorf("message is %T, want *workloadapi.Address: %w", m, ErrInvalid)
	}
	if w := a.GetWorkload(); w != nil {
		if err := ValidateWorkload(name, w); err != nil {
			return nil, nil, fmt.Errorf("workload: %w", err)
		}
		return w, nil, nil
	}
	if svc := a.GetService(); svc != nil {
		if err := ValidateService(name, svc); err != nil {
			return nil, nil, fmt.Errorf("service: %w", err)
		}
		return nil, svc, nil
	}
	return nil, nil, fmt.Errorf("address is neither workload nor service: %w", ErrInvalid)
}

// ValidateWorkload checks a Workload received under the xDS resource name
// name and returns the first problem found, as an error wrapping ErrInvalid,
// or nil. It requires a uid equal to name and a namespace; 4- or 16-byte
// addresses; known enum values (CheckWorkloadEnums) and a tunnel protocol
// other than LEGACY_ISTIO_MTLS; well-formed waypoint and network_gateway
// addresses; a known application_tunnel protocol and a port within 16 bits;
// services keys of the form <namespace>/<hostname> with service ports in
// 1-65535 and target ports in 0-65535; and a valid SPIFFE identity
// (WorkloadIdentity). Every proxy applies these same rules, so all of them
// accept or refuse a workload alike.
func ValidateWorkload(name string, w *Workload) error {
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
		if _, ok := netip.AddrFromSlice(a); !ok {
			return invalidf("address %d has %d bytes, want 4 or 16", i, len(a))
		}
	}
	if err := CheckWorkloadEnums(w); err != nil {
		return fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	if w.GetTunnelProtocol() == TunnelProtocol_LEGACY_ISTIO_MTLS {
		return invalidf("tunnel_protocol LEGACY_ISTIO_MTLS is not supported")
	}
	if err := validateGateway("waypoint", w.GetWaypoint()); err != nil {
		return err
	}
	if err := validateGateway("network_gateway", w.GetNetworkGateway()); err != nil {
		return err
	}
	if at := w.GetApplicationTunnel(); at != nil {
		if _, ok := ApplicationTunnel_Protocol_name[int32(at.GetProtocol())]; !ok {
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
	if _, err := WorkloadIdentity(w); err != nil {
		return fmt.Errorf("workload identity: %w: %w", err, ErrInvalid)
	}
	return nil
}

// validateGateway checks an optional GatewayAddress (nil is fine).
func validateGateway(field string, g *GatewayAddress) error {
	if g == nil {
		return nil
	}
	switch d := g.GetDestination().(type) {
	case *GatewayAddress_Address:
		if err := validateNetworkAddress(d.Address); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	case *GatewayAddress_Hostname:
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

// validateNetworkAddress checks a NetworkAddress: 4 or 16 bytes and an
// optional prefix length within the address's bits.
func validateNetworkAddress(a *NetworkAddress) error {
	ip, ok := netip.AddrFromSlice(a.GetAddress())
	if !ok {
		return invalidf("network address has %d bytes, want 4 or 16", len(a.GetAddress()))
	}
	if a.Length != nil && int(a.GetLength()) > ip.BitLen() {
		return invalidf("network address %s: prefix length %d too long", ip, a.GetLength())
	}
	return nil
}

// ValidateService checks a Service received under the xDS resource name
// name and returns the first problem found, as an error wrapping ErrInvalid,
// or nil. It requires a namespace and a hostname with name equal to
// "<namespace>/<hostname>"; well-formed addresses (4 or 16 bytes, prefix
// length within the address's bits); service ports in 1-65535 and target
// ports in 0-65535; well-formed waypoint and weighted_waypoints addresses;
// known load_balancing mode, health_policy and routing_preference scopes
// (UNSPECIFIED_SCOPE refused); and a known ip_families value. Every proxy
// applies these same rules, so all of them accept or refuse a service alike.
func ValidateService(name string, s *Service) error {
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
		if _, ok := LoadBalancing_Mode_name[int32(lb.GetMode())]; !ok {
			return invalidf("unknown load_balancing mode %d", lb.GetMode())
		}
		if _, ok := LoadBalancing_HealthPolicy_name[int32(lb.GetHealthPolicy())]; !ok {
			return invalidf("unknown load_balancing health_policy %d", lb.GetHealthPolicy())
		}
		for _, sc := range lb.GetRoutingPreference() {
			if _, ok := LoadBalancing_Scope_name[int32(sc)]; !ok || sc == LoadBalancing_UNSPECIFIED_SCOPE {
				return invalidf("invalid load_balancing routing_preference %d", sc)
			}
		}
	}
	if _, ok := IPFamilies_name[int32(s.GetIpFamilies())]; !ok {
		return invalidf("unknown ip_families %d", s.GetIpFamilies())
	}
	return nil
}
