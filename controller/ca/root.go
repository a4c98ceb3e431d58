package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// DefaultRootValidity is the lifetime of a generated root.
const DefaultRootValidity = 10 * 365 * 24 * time.Hour

// clockSkew is how far NotBefore is backdated on everything the CA issues,
// so peers whose clocks run a little behind accept fresh certificates.
const clockSkew = 5 * time.Minute

// GenerateRoot creates a self-signed ECDSA P-256 root for the trust domain:
// subject CN and O are the trust domain name, CA:true, key usage
// certSign|cRLSign, valid from now (backdated for clock skew) for validity
// (DefaultRootValidity when zero).
func GenerateRoot(trustDomain string, validity time.Duration, now time.Time) (*SigningMaterial, error) {
	if trustDomain == "" {
		return nil, errors.New("ca: generate root: empty trust domain")
	}
	if validity <= 0 {
		validity = DefaultRootValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: trustDomain, Organization: []string{trustDomain}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca: create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse generated root: %w", err)
	}
	return &SigningMaterial{Key: key, Cert: cert, Root: cert}, nil
}
