package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults for issued certificates.
const (
	// DefaultTTL is the lifetime of a certificate when the request gives none.
	DefaultTTL = 24 * time.Hour
	// DefaultMaxTTL is the longest lifetime issued. Longer requests are
	// clamped to it, not refused (an Istio CA refuses them; clamping keeps
	// clients that ask for long certificates working).
	DefaultMaxTTL = 90 * 24 * time.Hour
)

// AuthorityOptions tune NewAuthority.
type AuthorityOptions struct {
	// TrustDomain is the mesh trust domain; Sign refuses identities outside
	// it. Required.
	TrustDomain spiffeid.TrustDomain
	// DefaultTTL applies when Sign is called with ttl <= 0 (DefaultTTL when
	// zero).
	DefaultTTL time.Duration
	// MaxTTL caps the lifetime (DefaultMaxTTL when zero).
	MaxTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Authority signs leaf certificates with validated SigningMaterial. It is
// safe for concurrent use.
type Authority struct {
	// m is the current signing material; SetMaterial replaces it.
	m          atomic.Pointer[SigningMaterial]
	td         spiffeid.TrustDomain
	defaultTTL time.Duration
	maxTTL     time.Duration
	now        func() time.Time
}

// NewAuthority validates the material at the current time and returns an
// Authority.
func NewAuthority(m *SigningMaterial, opts AuthorityOptions) (*Authority, error) {
	if opts.TrustDomain.IsZero() {
		return nil, errors.New("ca: authority needs a trust domain")
	}
	a := &Authority{
		td:         opts.TrustDomain,
		defaultTTL: opts.DefaultTTL,
		maxTTL:     opts.MaxTTL,
		now:        opts.Now,
	}
	if a.defaultTTL <= 0 {
		a.defaultTTL = DefaultTTL
	}
	if a.maxTTL <= 0 {
		a.maxTTL = DefaultMaxTTL
	}
	if a.defaultTTL > a.maxTTL {
		return nil, fmt.Errorf("ca: default TTL %s exceeds max TTL %s", a.defaultTTL, a.maxTTL)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if err := a.SetMaterial(m); err != nil {
		return nil, err
	}
	return a, nil
}

// SetMaterial validates m at the current time and makes it the material
// of every certificate issued afterwards. When m is not valid, the current
// material stays and the error says why.
func (a *Authority) SetMaterial(m *SigningMaterial) error {
	if err := m.Validate(a.now()); err != nil {
		return err
	}
	a.m.Store(m)
	return nil
}

// Material is the current signing material. Callers must not modify it.
func (a *Authority) Material() *SigningMaterial { return a.m.Load() }

// TrustDomain is the mesh trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// Root is the trust anchor every issued chain ends at.
func (a *Authority) Root() *x509.Certificate { return a.m.Load().Root }

// Roots is the mesh's trust bundle: every anchor peers must accept, the
// issuing root among them.
func (a *Authority) Roots() []*x509.Certificate { return a.m.Load().Anchors() }

// MaxTTL is the longest lifetime the authority issues.
func (a *Authority) MaxTTL() time.Duration { return a.maxTTL }

// Sign issues a workload certificate (an X.509-SVID) for identity from a
// PEM CSR. Only the CSR's public key is used; its subject and SANs are
// ignored. The leaf has exactly one URI SAN (identity), is not a CA, has key
// usage digitalSignature|keyEncipherment and extended key usage
// serverAuth+clientAuth, a random 128-bit serial and NotBefore backdated by
// a few minutes. ttl <= 0 means the default TTL; ttl is clamped to the max
// TTL and never extends past the signing chain's expiry. The returned chain
// is leaf first, root last. Errors caused by the CSR wrap ErrInvalidCSR.
func (a *Authority) Sign(csrPEM []byte, identity spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if identity.IsZero() {
		return nil, errors.New("ca: sign: empty identity")
	}
	if !identity.MemberOf(a.td) {
		return nil, fmt.Errorf("ca: sign: identity %q is outside trust domain %q", identity, a.td)
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", identity, err)
	}
	tmpl := &x509.Certificate{
		URIs:        []*url.URL{identity.URL()},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return a.issue(tmpl, csr.PublicKey, ttl)
}

// IssueServing issues a server certificate with the given DNS and IP SANs
// (no URI SAN), e.g. for the controller's own endpoint. TTL rules are those
// of Sign. The returned chain is leaf first, root last.
func (a *Authority) IssueServing(pub crypto.PublicKey, dnsNames []string, ips []net.IP, ttl time.Duration) ([]*x509.Certificate, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, errors.New("ca: serving certificate needs at least one DNS name or IP")
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("ca: serving certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		DNSNames:    append([]string(nil), dnsNames...),
		IPAddresses: append([]net.IP(nil), ips...),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return a.issue(tmpl, pub, ttl)
}

// effectiveTTL applies the default and the cap.
func (a *Authority) effectiveTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return a.defaultTTL
	}
	return min(ttl, a.maxTTL)
}

func (a *Authority) issue(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) ([]*x509.Certificate, error) {
	m := a.m.Load()
	now := a.now()
	notAfter := now.Add(a.effectiveTTL(ttl))
	if limit := m.NotAfter(); notAfter.After(limit) {
		notAfter = limit
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca: signing certificate expired at %s", m.NotAfter().UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	if tmpl.NotBefore.Before(m.Cert.NotBefore) {
		tmpl.NotBefore = m.Cert.NotBefore
	}
	tmpl.NotAfter = notAfter
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.Cert, pub, m.Key)
	if err != nil {
		return nil, fmt.Errorf("ca: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse issued certificate: %w", err)
	}
	return append([]*x509.Certificate{leaf}, m.Chain()...), nil
}

// randomSerial returns a uniformly random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("ca: random serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
