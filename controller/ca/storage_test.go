package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/pkg/mtls"
)

func TestGeneratedRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	now := time.Now()
	m, err := ca.LoadOrCreate(dir, ca.LoadOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	root := m.Root
	if !m.SelfSigned() || !root.IsCA || !root.BasicConstraintsValid {
		t.Fatalf("root is not a self-signed CA: %+v", root)
	}
	if root.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatal("root lacks certSign")
	}
	if root.Subject.CommonName != "cluster.local" || len(root.Subject.Organization) != 1 || root.Subject.Organization[0] != "cluster.local" {
		t.Fatalf("root subject %v", root.Subject)
	}
	pub, ok := root.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("root key %T, want ECDSA P-256", root.PublicKey)
	}
	if life := root.NotAfter.Sub(now); life < 3649*24*time.Hour || life > 3651*24*time.Hour {
		t.Fatalf("root lifetime %s, want ~10 years", life)
	}
	for name, want := range map[string]os.FileMode{ca.RootKeyFile: 0o600, ca.RootCertFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("CA dir has %d entries, want 2 (no temporary files left)", len(entries))
	}

	// A restart loads the same root and key.
	again, err := ca.LoadOrCreate(dir, ca.LoadOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Root.Equal(root) {
		t.Fatal("root changed across restart")
	}
	if err := mtls.KeyMatchesCertificate(again.Key, root); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	now := time.Now()
	good, err := ca.GenerateRoot("cluster.local", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.GenerateRoot("cluster.local", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := ca.GenerateRoot("cluster.local", time.Hour, now.Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// A leaf (not a CA) posing as a root.
	a, _ := newRootAuthority(t, ca.AuthorityOptions{})
	leafKey := newKey(t)
	leafChain, err := a.IssueServing(leafKey.Public(), []string{"x"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		files   map[string][]byte
		wantErr []string
	}{
		{
			name:    "corrupt key",
			files:   map[string][]byte{ca.RootCertFile: mtls.EncodeCertificatesPEM(good.Root), ca.RootKeyFile: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")},
			wantErr: []string{ca.RootKeyFile, "parse PRIVATE KEY"},
		},
		{
			name:    "not PEM key",
			files:   map[string][]byte{ca.RootCertFile: mtls.EncodeCertificatesPEM(good.Root), ca.RootKeyFile: []byte("hello")},
			wantErr: []string{ca.RootKeyFile, "no PEM private key"},
		},
		{
			name:    "corrupt cert",
			files:   map[string][]byte{ca.RootCertFile: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), ca.RootKeyFile: keyPEM(t, good.Key)},
			wantErr: []string{ca.RootCertFile, "parse certificate"},
		},
		{
			name:    "mismatched key",
			files:   map[string][]byte{ca.RootCertFile: mtls.EncodeCertificatesPEM(good.Root), ca.RootKeyFile: keyPEM(t, other.Key)},
			wantErr: []string{"does not match"},
		},
		{
			name:    "missing key",
			files:   map[string][]byte{ca.RootCertFile: mtls.EncodeCertificatesPEM(good.Root)},
			wantErr: []string{ca.RootKeyFile, "no such file"},
		},
		{
			name:    "expired root",
			files:   map[string][]byte{ca.RootCertFile: mtls.EncodeCertificatesPEM(expired.Root), ca.RootKeyFile: keyPEM(t, expired.Key)},
			wantErr: []string{"expired"},
		},
		{
			name:    "not a CA",
			files:   map[string][]byte{ca.RootCertFile: mtls.EncodeCertificatesPEM(leafChain[0]), ca.RootKeyFile: keyPEM(t, leafKey)},
			wantErr: []string{"not a CA"},
		},
		{
			name: "plugged key mismatch",
			files: map[string][]byte{
				ca.CACertFile: mtls.EncodeCertificatesPEM(good.Root), ca.CAKeyFile: keyPEM(t, other.Key),
				ca.RootCertFile: mtls.EncodeCertificatesPEM(good.Root),
			},
			wantErr: []string{"plugged-in CA", "does not match"},
		},
		{
			name: "plugged missing key",
			files: map[string][]byte{
				ca.CACertFile: mtls.EncodeCertificatesPEM(good.Root), ca.RootCertFile: mtls.EncodeCertificatesPEM(good.Root),
			},
			wantErr: []string{ca.CAKeyFile},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, b := range tt.files {
				writePEM(t, dir, n, b)
			}
			_, err := ca.LoadOrCreate(dir, ca.LoadOptions{TrustDomain: "cluster.local"})
			if err == nil {
				t.Fatal("load succeeded")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			// Nothing may be generated over broken material.
			if _, ok := tt.files[ca.RootKeyFile]; !ok {
				if _, err := os.Stat(filepath.Join(dir, ca.RootKeyFile)); err == nil {
					t.Error("a root key was generated over existing material")
				}
			}
		})
	}
}

func TestInterruptedFirstStart(t *testing.T) {
	// A key without a certificate was never published: a new root is made.
	dir := t.TempDir()
	stale, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, dir, ca.RootKeyFile, keyPEM(t, stale.Key))
	m, err := ca.LoadOrCreate(dir, ca.LoadOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	if err := mtls.KeyMatchesCertificate(stale.Key, m.Root); err == nil {
		t.Fatal("stale key reused")
	}
	again, err := ca.LoadSelfSigned(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !again.Root.Equal(m.Root) {
		t.Fatal("written root differs")
	}
}

func TestPluggedCA(t *testing.T) {
	root, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	unrelated, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	year := time.Now().Add(365 * 24 * time.Hour)
	inter1, inter1Key := newIntermediate(t, "intermediate-1", root.Root, root.Key, year)
	inter2, inter2Key := newIntermediate(t, "intermediate-2", inter1, inter1Key, year)

	tests := []struct {
		name      string
		caCert    []byte
		caKey     []byte
		certChain []byte // nil: file absent
		roots     []byte
		wantChain int // certificates in the response after the leaf
		wantErr   string
	}{
		{
			name:   "one intermediate, chain with root",
			caCert: mtls.EncodeCertificatesPEM(inter1), caKey: keyPEM(t, inter1Key),
			certChain: mtls.EncodeCertificatesPEM(inter1, root.Root),
			roots:     mtls.EncodeCertificatesPEM(root.Root),
			wantChain: 2,
		},
		{
			name:   "one intermediate, no cert-chain.pem",
			caCert: mtls.EncodeCertificatesPEM(inter1), caKey: keyPEM(t, inter1Key),
			roots:     mtls.EncodeCertificatesPEM(root.Root),
			wantChain: 2,
		},
		{
			name:   "two intermediates",
			caCert: mtls.EncodeCertificatesPEM(inter2), caKey: keyPEM(t, inter2Key),
			certChain: mtls.EncodeCertificatesPEM(inter2, inter1, root.Root),
			roots:     mtls.EncodeCertificatesPEM(root.Root),
			wantChain: 3,
		},
		{
			name:   "two roots in root-cert.pem",
			caCert: mtls.EncodeCertificatesPEM(inter1), caKey: keyPEM(t, inter1Key),
			certChain: mtls.EncodeCertificatesPEM(inter1),
			roots:     mtls.EncodeCertificatesPEM(unrelated.Root, root.Root),
			wantChain: 2,
		},
		{
			name:   "missing intermediate",
			caCert: mtls.EncodeCertificatesPEM(inter2), caKey: keyPEM(t, inter2Key),
			certChain: mtls.EncodeCertificatesPEM(inter2),
			roots:     mtls.EncodeCertificatesPEM(root.Root),
			wantErr:   "does not chain to root",
		},
		{
			name:   "wrong root",
			caCert: mtls.EncodeCertificatesPEM(inter1), caKey: keyPEM(t, inter1Key),
			roots:   mtls.EncodeCertificatesPEM(unrelated.Root),
			wantErr: "does not chain to root",
		},
		{
			name:   "intermediate as root",
			caCert: mtls.EncodeCertificatesPEM(inter2), caKey: keyPEM(t, inter2Key),
			roots:   mtls.EncodeCertificatesPEM(inter1),
			wantErr: "not self-signed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePEM(t, dir, ca.CACertFile, tt.caCert)
			writePEM(t, dir, ca.CAKeyFile, tt.caKey)
			writePEM(t, dir, ca.RootCertFile, tt.roots)
			if tt.certChain != nil {
				writePEM(t, dir, ca.CertChainFile, tt.certChain)
			}
			m, err := ca.LoadOrCreate(dir, ca.LoadOptions{TrustDomain: "cluster.local"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.SelfSigned() || !m.Root.Equal(root.Root) {
				t.Fatal("plugged material not recognised")
			}
			a, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD})
			if err != nil {
				t.Fatal(err)
			}
			id := spiffeID(t, "spiffe://cluster.local/ns/default/sa/app")
			chain, err := a.Sign(csrFor(t, newKey(t)), id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(chain) - 1; got != tt.wantChain {
				t.Fatalf("chain after leaf has %d certificates, want %d", got, tt.wantChain)
			}
			if !chain[len(chain)-1].Equal(root.Root) {
				t.Fatal("last certificate is not the root")
			}
			got, _, err := x509svid.Verify(chain[:len(chain)-1], x509bundle.FromX509Authorities(meshTD, []*x509.Certificate{root.Root}))
			if err != nil {
				t.Fatal(err)
			}
			if got != id {
				t.Fatalf("verified id %q", got)
			}
			// No files were generated in plugged mode.
			if _, err := os.Stat(filepath.Join(dir, ca.RootKeyFile)); err == nil {
				t.Fatal("root key generated in plugged mode")
			}
		})
	}
}
