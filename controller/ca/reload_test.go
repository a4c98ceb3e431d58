package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// writePlugged writes a plugged-in CA's files: signer and its key, the
// trust bundle in root-cert.pem, and cert-chain.pem (signer, root).
func writePlugged(t *testing.T, dir string, signer *x509.Certificate, key crypto.Signer, root *x509.Certificate, bundle ...*x509.Certificate) {
	t.Helper()
	writePEM(t, dir, ca.CACertFile, mtls.EncodeCertificatesPEM(signer))
	writePEM(t, dir, ca.CAKeyFile, keyPEM(t, key))
	writePEM(t, dir, ca.CertChainFile, mtls.EncodeCertificatesPEM(signer, root))
	writePEM(t, dir, ca.RootCertFile, mtls.EncodeCertificatesPEM(bundle...))
}

// A root rotation as an operator does it: first the new root joins the
// trust bundle, then a new intermediate of the new root signs, then the
// old root leaves the bundle. Each step reaches the Authority; a broken
// version in between is ignored and the last good one keeps signing.
func TestReloaderFollowsRootRotation(t *testing.T) {
	dir := t.TempDir()
	year := time.Now().Add(365 * 24 * time.Hour)
	oldRoot, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	oldInter, oldKey := newIntermediate(t, "intermediate-old", oldRoot.Root, oldRoot.Key, year)
	newInter, newInterKey := newIntermediate(t, "intermediate-new", newRoot.Root, newRoot.Key, year)

	writePlugged(t, dir, oldInter, oldKey, oldRoot.Root, oldRoot.Root)
	m, err := ca.LoadPlugged(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !m.Plugged {
		t.Fatal("plugged-in material not marked Plugged")
	}
	a, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD})
	if err != nil {
		t.Fatal(err)
	}
	var changes []*ca.SigningMaterial
	r, err := ca.NewReloader(ca.ReloaderOptions{Load: ca.PluggedDirLoader(dir), Authority: a,
		OnChange: func(m *ca.SigningMaterial) { changes = append(changes, m) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id := spiffeID(t, "spiffe://cluster.local/ns/demo/sa/app")
	signedBy := func() (signer, root *x509.Certificate) {
		t.Helper()
		chain, err := a.Sign(csrFor(t, newKey(t)), id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return chain[1], chain[len(chain)-1]
	}
	step := func(name string, wantChange bool, wantSigner, wantRoot *x509.Certificate, wantAnchors int) {
		t.Helper()
		if got := r.Check(ctx); got != wantChange {
			t.Fatalf("%s: Check changed = %v, want %v", name, got, wantChange)
		}
		signer, root := signedBy()
		if !signer.Equal(wantSigner) || !root.Equal(wantRoot) {
			t.Fatalf("%s: signed by %s under %s, want %s under %s", name, signer.Subject, root.Subject, wantSigner.Subject, wantRoot.Subject)
		}
		if n := len(a.Roots()); n != wantAnchors {
			t.Fatalf("%s: %d trust anchors, want %d", name, n, wantAnchors)
		}
	}

	step("unchanged", false, oldInter, oldRoot.Root, 1)
	writePlugged(t, dir, oldInter, oldKey, oldRoot.Root, oldRoot.Root, newRoot.Root)
	step("new root trusted", true, oldInter, oldRoot.Root, 2)
	// A key that does not match the signer: refused, nothing changes.
	writePEM(t, dir, ca.CACertFile, mtls.EncodeCertificatesPEM(newInter))
	step("mismatched key", false, oldInter, oldRoot.Root, 2)
	writePlugged(t, dir, newInter, newInterKey, newRoot.Root, oldRoot.Root, newRoot.Root)
	step("new intermediate signs", true, newInter, newRoot.Root, 2)
	if err := os.Remove(filepath.Join(dir, ca.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	step("files missing", false, newInter, newRoot.Root, 2)
	writePlugged(t, dir, newInter, newInterKey, newRoot.Root, newRoot.Root)
	step("old root retired", true, newInter, newRoot.Root, 1)

	if len(changes) != 3 || !changes[2].Root.Equal(newRoot.Root) {
		t.Fatalf("OnChange saw %d versions, want 3 ending with the new root", len(changes))
	}
}

// The serving certificate is reissued on demand, by the new material, and
// accepts clients of every root in the bundle.
func TestServingCertRenewedAfterReload(t *testing.T) {
	a, m := newRootAuthority(t, ca.AuthorityOptions{})
	s, err := ca.NewServingCert(a, ca.ServingCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	first := s.Holder().Load()
	next, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	next.Bundle = []*x509.Certificate{m.Root, next.Root}
	if err := a.SetMaterial(next); err != nil {
		t.Fatal(err)
	}
	s.Renew()
	deadline := time.Now().Add(10 * time.Second)
	for s.Holder().Load() == first {
		if time.Now().After(deadline) {
			t.Fatal("serving certificate not reissued after Renew")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := s.Holder().Load()
	if err := c.Leaf().CheckSignatureFrom(next.Root); err != nil {
		t.Fatalf("reissued certificate not signed by the new root: %v", err)
	}
	if n := len(c.Roots()); n != 2 {
		t.Fatalf("serving certificate trusts %d roots, want the bundle's 2", n)
	}
	if err := a.SetMaterial(&ca.SigningMaterial{Key: next.Key, Cert: next.Cert, Root: next.Root, Bundle: []*x509.Certificate{m.Root}}); err == nil {
		t.Fatal("material whose root is not in its bundle accepted")
	}
}

// A version that stays broken is logged once, and its repair once.
func TestReloaderLogsABrokenVersionOnce(t *testing.T) {
	dir := t.TempDir()
	root, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writePlugged(t, dir, root.Cert, root.Key, root.Root, root.Root)
	m, err := ca.LoadPlugged(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r, err := ca.NewReloader(ca.ReloaderOptions{Load: ca.PluggedDirLoader(dir), Authority: a,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	writePEM(t, dir, ca.CAKeyFile, []byte("junk"))
	for range 3 {
		r.Check(ctx)
	}
	writePlugged(t, dir, root.Cert, root.Key, root.Root, root.Root)
	for range 3 {
		r.Check(ctx)
	}
	if errs, ok := strings.Count(logs.String(), "level=ERROR"), strings.Count(logs.String(), "valid again"); errs != 1 || ok != 1 {
		t.Fatalf("%d error lines and %d recovery lines, want 1 and 1:\n%s", errs, ok, logs.String())
	}
}
