// Package mtls builds the TLS configurations every zmesh component uses for
// mutual TLS: servers that require (or accept) mesh client certificates,
// clients that verify the peer against the mesh root and an expected
// identity (a SPIFFE ID or, for the controller's endpoint, a DNS name), all
// TLS 1.3. A Holder lets a long-running server or client swap its
// certificate without restarting.
package mtls

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Certificate is an immutable key pair with its chain and the trust anchors
// (roots) it was issued under. Build it with NewCertificate or
// ParseCertificatePEM.
type Certificate struct {
	key   crypto.Signer
	chain []*x509.Certificate
	roots []*x509.Certificate

	pool     *x509.CertPool
	tlsCert  *tls.Certificate
	notAfter time.Time
}

// NewCertificate validates and bundles a key, its chain (leaf first, then any
// intermediates, without the root) and one or more roots. The key must match
// the leaf. The chain is not verified against the roots here; call Verify.
func NewCertificate(key crypto.Signer, chain, roots []*x509.Certificate) (*Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("mtls: empty certificate chain")
	}
	if len(roots) == 0 {
		return nil, errors.New("mtls: no root certificate")
	}
	if err := KeyMatchesCertificate(key, chain[0]); err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	c := &Certificate{
		key:   key,
		chain: append([]*x509.Certificate(nil), chain...),
		roots: append([]*x509.Certificate(nil), roots...),
		pool:  x509.NewCertPool(),
	}
	for _, r := range c.roots {
		c.pool.AddCert(r)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: c.chain[0]}
	c.notAfter = c.chain[0].NotAfter
	for _, cert := range c.chain {
		tc.Certificate = append(tc.Certificate, cert.Raw)
		if cert.NotAfter.Before(c.notAfter) {
			c.notAfter = cert.NotAfter
		}
	}
	c.tlsCert = tc
	return c, nil
}

// ParseCertificatePEM is NewCertificate from PEM: a private key, the chain
// (leaf first) and the roots.
func ParseCertificatePEM(keyPEM, chainPEM, rootsPEM []byte) (*Certificate, error) {
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("mtls: private key: %w", err)
	}
	chain, err := ParseCertificatesPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("mtls: certificate chain: %w", err)
	}
	roots, err := ParseCertificatesPEM(rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("mtls: roots: %w", err)
	}
	return NewCertificate(key, chain, roots)
}

// Key returns the private key.
func (c *Certificate) Key() crypto.Signer { return c.key }

// Leaf returns the end-entity certificate.
func (c *Certificate) Leaf() *x509.Certificate { return c.chain[0] }

// Chain returns a copy of the chain, leaf first, without the root.
func (c *Certificate) Chain() []*x509.Certificate {
	return append([]*x509.Certificate(nil), c.chain...)
}

// Roots returns a copy of the trust anchors.
func (c *Certificate) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), c.roots...)
}

// RootPool returns the roots as a pool. Callers must not modify it.
func (c *Certificate) RootPool() *x509.CertPool { return c.pool }

// NotBefore is the leaf's NotBefore.
func (c *Certificate) NotBefore() time.Time { return c.chain[0].NotBefore }

// NotAfter is the earliest NotAfter in the chain: the moment the chain stops
// being usable.
func (c *Certificate) NotAfter() time.Time { return c.notAfter }

// TLSCertificate returns the chain and key in crypto/tls form. Callers must
// not modify it.
func (c *Certificate) TLSCertificate() *tls.Certificate { return c.tlsCert }

// Verify checks that the chain verifies up to one of the roots at time now.
func (c *Certificate) Verify(now time.Time) error { return c.verify(c.pool, now) }

// VerifyWith checks the chain against roots instead of the certificate's
// own: whether peers trusting roots (a trust bundle that changed since the
// certificate was issued) accept it at time now.
func (c *Certificate) VerifyWith(roots []*x509.Certificate, now time.Time) error {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return c.verify(pool, now)
}

func (c *Certificate) verify(roots *x509.CertPool, now time.Time) error {
	inter := x509.NewCertPool()
	for _, ic := range c.chain[1:] {
		inter.AddCert(ic)
	}
	_, err := c.chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("mtls: verify certificate chain: %w", err)
	}
	return nil
}

// KeyPEM returns the private key as PKCS#8 PEM.
func (c *Certificate) KeyPEM() ([]byte, error) { return EncodePrivateKeyPEM(c.key) }

// ChainPEM returns the chain, leaf first, as PEM.
func (c *Certificate) ChainPEM() []byte { return EncodeCertificatesPEM(c.chain...) }

// RootsPEM returns the roots as PEM.
func (c *Certificate) RootsPEM() []byte { return EncodeCertificatesPEM(c.roots...) }
