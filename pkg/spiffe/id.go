// Package spiffe builds, parses and extracts the SPIFFE identities used by
// the mesh. Workload identities have the Istio shape
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>; the helpers
// here are thin, validating wrappers around go-spiffe's spiffeid and
// x509svid packages.
package spiffe

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultTrustDomain is the trust domain used when none is configured,
// matching Istio's default.
const DefaultTrustDomain = "cluster.local"

// Identity is a parsed workload identity.
type Identity struct {
	TrustDomain    spiffeid.TrustDomain
	Namespace      string
	ServiceAccount string
}

// ID returns the identity as a SPIFFE ID. An Identity not obtained from
// NewIdentity, ParseIdentity or IdentityFromID may hold invalid parts; ID
// then returns the zero ID. Use WorkloadID to build from unchecked strings.
func (i Identity) ID() spiffeid.ID {
	id, err := spiffeid.FromSegments(i.TrustDomain, "ns", i.Namespace, "sa", i.ServiceAccount)
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}

// String returns spiffe://<td>/ns/<ns>/sa/<sa> ("" for an invalid Identity).
func (i Identity) String() string {
	return i.ID().String()
}

// NewIdentity validates the parts and returns the identity. The trust
// domain must be a valid SPIFFE trust domain name (lowercase); namespace and
// service account must be non-empty valid SPIFFE path segments.
func NewIdentity(trustDomain, namespace, serviceAccount string) (Identity, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return Identity{}, fmt.Errorf("spiffe: invalid trust domain %q: %w", trustDomain, err)
	}
	if err := validateSegment("namespace", namespace); err != nil {
		return Identity{}, err
	}
	if err := validateSegment("service account", serviceAccount); err != nil {
		return Identity{}, err
	}
	return Identity{TrustDomain: td, Namespace: namespace, ServiceAccount: serviceAccount}, nil
}

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>, with
// the same validation as NewIdentity.
func WorkloadID(trustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	ident, err := NewIdentity(trustDomain, namespace, serviceAccount)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return ident.ID(), nil
}

// ParseIdentity parses a SPIFFE ID string of the workload shape
// spiffe://<td>/ns/<ns>/sa/<sa>. Any other shape is an error.
func ParseIdentity(s string) (Identity, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return Identity{}, fmt.Errorf("spiffe: invalid SPIFFE ID %q: %w", s, err)
	}
	return IdentityFromID(id)
}

// IdentityFromID splits an already parsed SPIFFE ID into its workload parts.
// The path must be exactly /ns/<ns>/sa/<sa>.
func IdentityFromID(id spiffeid.ID) (Identity, error) {
	if id.IsZero() {
		return Identity{}, errors.New("spiffe: empty SPIFFE ID")
	}
	parts := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return Identity{}, fmt.Errorf("spiffe: SPIFFE ID %q is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", id)
	}
	if err := validateSegment("namespace", parts[1]); err != nil {
		return Identity{}, fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	if err := validateSegment("service account", parts[3]); err != nil {
		return Identity{}, fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	return Identity{TrustDomain: id.TrustDomain(), Namespace: parts[1], ServiceAccount: parts[3]}, nil
}

// IDFromCert returns the SPIFFE ID carried by the certificate's single URI
// SAN. A certificate with no URI SAN, more than one, or one that is not a
// valid SPIFFE ID is an error.
func IDFromCert(cert *x509.Certificate) (spiffeid.ID, error) {
	if cert == nil {
		return spiffeid.ID{}, errors.New("spiffe: nil certificate")
	}
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe: certificate %q: %w", cert.Subject.String(), err)
	}
	return id, nil
}

func validateSegment(what, s string) error {
	if s == "" {
		return fmt.Errorf("spiffe: empty %s", what)
	}
	if err := spiffeid.ValidatePathSegment(s); err != nil {
		return fmt.Errorf("spiffe: invalid %s %q: %w", what, s, err)
	}
	return nil
}
