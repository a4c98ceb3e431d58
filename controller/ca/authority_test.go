package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/zmesh/zmesh/controller/ca"
)

func TestSignLeaf(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	m, err := ca.GenerateRoot("cluster.local", 0, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	granted := spiffeID(t, "spiffe://cluster.local/ns/default/sa/app")
	// The CSR asks for other identities; only the granted one may appear.
	key := newKey(t)
	chain, err := a.Sign(csrFor(t, key, "spiffe://cluster.local/ns/istio-system/sa/ztunnel", "spiffe://evil/ns/a/sa/b"), granted, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !chain[1].Equal(m.Root) {
		t.Fatalf("chain = %d certs, want leaf + root", len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != granted.String() {
		t.Fatalf("URI SANs %v, want exactly %s", leaf.URIs, granted)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Fatal("leaf is a CA or lacks basic constraints")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Fatalf("key usage %b", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("ext key usage %v", leaf.ExtKeyUsage)
	}
	if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		t.Fatal("leaf has non-URI SANs")
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Fatal("leaf key is not the CSR's key")
	}
	if got := now.Sub(leaf.NotBefore); got <= 0 || got > 10*time.Minute {
		t.Fatalf("NotBefore backdated by %s", got)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Fatalf("serial %v", leaf.SerialNumber)
	}
	id, _, err := x509svid.Verify(chain[:1], x509bundle.FromX509Authorities(meshTD, []*x509.Certificate{m.Root}), x509svid.WithTime(now))
	if err != nil {
		t.Fatal(err)
	}
	if id != granted {
		t.Fatalf("verified %s", id)
	}

	// Serials differ.
	chain2, err := a.Sign(csrFor(t, key), granted, 0)
	if err != nil {
		t.Fatal(err)
	}
	if chain2[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("serial reused")
	}
}

func TestSignTTL(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	longRoot, err := ca.GenerateRoot("cluster.local", 0, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	shortRoot, err := ca.GenerateRoot("cluster.local", 11*time.Hour, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		root *ca.SigningMaterial
		opts ca.AuthorityOptions
		ttl  time.Duration
		want time.Duration // NotAfter - now
	}{
		{name: "default", root: longRoot, ttl: 0, want: 24 * time.Hour},
		{name: "negative means default", root: longRoot, ttl: -time.Second, want: 24 * time.Hour},
		{name: "requested", root: longRoot, ttl: time.Hour, want: time.Hour},
		{name: "at max", root: longRoot, ttl: 90 * 24 * time.Hour, want: 90 * 24 * time.Hour},
		{name: "clamped to max", root: longRoot, ttl: 400 * 24 * time.Hour, want: 90 * 24 * time.Hour},
		{name: "configured default", root: longRoot, opts: ca.AuthorityOptions{DefaultTTL: 2 * time.Hour}, want: 2 * time.Hour},
		{name: "configured max", root: longRoot, opts: ca.AuthorityOptions{MaxTTL: 48 * time.Hour}, ttl: 72 * time.Hour, want: 48 * time.Hour},
		{name: "clamped to root expiry", root: shortRoot, ttl: 0, want: 10 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.TrustDomain = meshTD
			opts.Now = func() time.Time { return now }
			a, err := ca.NewAuthority(tt.root, opts)
			if err != nil {
				t.Fatal(err)
			}
			chain, err := a.Sign(csrFor(t, newKey(t)), spiffeID(t, "spiffe://cluster.local/ns/a/sa/b"), tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if got := chain[0].NotAfter.Sub(now); got != tt.want {
				t.Fatalf("lifetime %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSignRefusals(t *testing.T) {
	a, _ := newRootAuthority(t, ca.AuthorityOptions{})
	id := spiffeID(t, "spiffe://cluster.local/ns/a/sa/b")
	good := csrFor(t, newKey(t))

	tampered := func() []byte {
		block, _ := pem.Decode(good)
		der := append([]byte(nil), block.Bytes...)
		der[len(der)-5] ^= 0xff // inside the signature
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		csr     []byte
		id      string
		wantCSR bool // error wraps ErrInvalidCSR
		ok      bool
	}{
		{name: "good", csr: good, ok: true},
		{name: "rsa 2048", csr: csrFor(t, rsa2048), ok: true},
		{name: "empty", csr: nil, wantCSR: true},
		{name: "garbage", csr: []byte("not a csr"), wantCSR: true},
		{name: "certificate instead", csr: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), wantCSR: true},
		{name: "bad DER", csr: []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), wantCSR: true},
		{name: "bad signature", csr: tampered, wantCSR: true},
		{name: "P-224", csr: csrFor(t, p224), wantCSR: true},
		{name: "RSA 1024", csr: csrFor(t, rsa1024), wantCSR: true},
		{name: "two CSRs", csr: append(append([]byte(nil), good...), good...), wantCSR: true},
		{name: "outside trust domain", csr: good, id: "spiffe://other.domain/ns/a/sa/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := id
			if tt.id != "" {
				want = spiffeID(t, tt.id)
			}
			_, err := a.Sign(tt.csr, want, 0)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("Sign succeeded")
			}
			if got := errors.Is(err, ca.ErrInvalidCSR); got != tt.wantCSR {
				t.Fatalf("errors.Is(ErrInvalidCSR) = %v for %v", got, err)
			}
		})
	}
}

func TestNewAuthorityRejectsExpired(t *testing.T) {
	m, err := ca.GenerateRoot("cluster.local", time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD}); err == nil {
		t.Fatal("NewAuthority accepted an expired root")
	}
}
