package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/zmesh/zmesh/pkg/mtls"
)

// SigningMaterial is what the CA signs with: a key, its certificate, the
// certificates between that certificate and the root, and the root. For a
// self-signed root, Cert and Root are the same certificate and
// Intermediates is empty.
type SigningMaterial struct {
	// Key is the private key of Cert.
	Key crypto.Signer
	// Cert is the certificate that signs issued leaves.
	Cert *x509.Certificate
	// Intermediates lead from Cert's issuer towards the root, nearest first,
	// excluding Cert and Root.
	Intermediates []*x509.Certificate
	// Root is the trust anchor the chain ends at.
	Root *x509.Certificate
	// Bundle lists every trust anchor of the mesh, Root among them: a
	// plugged-in CA's root-cert.pem, which holds the old and the new root
	// while a root is rotated. Nil means Root alone.
	Bundle []*x509.Certificate
	// Plugged is set for a plugged-in CA (Istio's cacerts), which the
	// operator may replace while the controller runs.
	Plugged bool
}

// Anchors returns the mesh's trust anchors: Bundle, or Root alone.
func (m *SigningMaterial) Anchors() []*x509.Certificate {
	if len(m.Bundle) == 0 {
		return []*x509.Certificate{m.Root}
	}
	return m.Bundle
}

// SelfSigned reports whether the signing certificate is the root.
func (m *SigningMaterial) SelfSigned() bool { return m.Cert.Equal(m.Root) }

// Chain returns the certificates an issued leaf must be followed by: Cert
// (unless it is the root), the intermediates and the root, root last.
func (m *SigningMaterial) Chain() []*x509.Certificate {
	var out []*x509.Certificate
	if !m.SelfSigned() {
		out = append(out, m.Cert)
	}
	out = append(out, m.Intermediates...)
	return append(out, m.Root)
}

// NotAfter is the earliest expiry among Cert, the intermediates and Root:
// no leaf may outlive it.
func (m *SigningMaterial) NotAfter() time.Time {
	na := m.Cert.NotAfter
	for _, c := range m.Chain() {
		if c.NotAfter.Before(na) {
			na = c.NotAfter
		}
	}
	return na
}

// Validate checks that the material can sign at time now: the key matches
// Cert, Cert and Root are CA certificates allowed to sign certificates and
// currently valid, Root is self-signed, and Cert chains to Root through the
// intermediates.
func (m *SigningMaterial) Validate(now time.Time) error {
	if m == nil || m.Key == nil || m.Cert == nil || m.Root == nil {
		return errors.New("ca: incomplete signing material (need key, certificate and root)")
	}
	if err := mtls.KeyMatchesCertificate(m.Key, m.Cert); err != nil {
		return fmt.Errorf("ca: signing key: %w", err)
	}
	if err := checkCACert("signing certificate", m.Cert, now); err != nil {
		return err
	}
	if err := checkCACert("root certificate", m.Root, now); err != nil {
		return err
	}
	if err := m.Root.CheckSignatureFrom(m.Root); err != nil {
		return fmt.Errorf("ca: root certificate %q is not self-signed: %w", m.Root.Subject, err)
	}
	if len(m.Bundle) > 0 && !containsCert(m.Bundle, m.Root) {
		return fmt.Errorf("ca: root certificate %q is not in the trust bundle", m.Root.Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(m.Root)
	inter := x509.NewCertPool()
	for _, c := range m.Intermediates {
		inter.AddCert(c)
	}
	if _, err := m.Cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("ca: signing certificate %q does not chain to root %q: %w", m.Cert.Subject, m.Root.Subject, err)
	}
	return nil
}

func checkCACert(what string, c *x509.Certificate, now time.Time) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("ca: %s %q is not a CA certificate (basic constraints CA:false or missing)", what, c.Subject)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("ca: %s %q lacks the certSign key usage", what, c.Subject)
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("ca: %s %q is not valid before %s", what, c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(c.NotAfter) {
		return fmt.Errorf("ca: %s %q expired at %s", what, c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
