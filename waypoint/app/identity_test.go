package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
)

type failingFetcher struct{ err error }

func (f failingFetcher) Fetch(context.Context, caclient.Request) (*mtls.Certificate, error) {
	return nil, f.err
}

// TestIdentityReportsWhyItHasNoCertificate: while the CA refuses, the
// handshake error and the config dump say why.
func TestIdentityReportsWhyItHasNoCertificate(t *testing.T) {
	caErr := errors.New("ca says no")
	i := &identity{id: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/waypoint"), fetch: failingFetcher{caErr}, log: slog.New(slog.DiscardHandler)}
	if _, err := i.certificate(); !errors.Is(err, errNoCertificate) || errors.Is(err, caErr) {
		t.Fatalf("before any fetch: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); i.run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for i.lastErr.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if _, err := i.certificate(); !errors.Is(err, errNoCertificate) || !errors.Is(err, caErr) {
		t.Fatalf("after a failed fetch: %v", err)
	}
	if got := i.status()["last_error"]; got != caErr.Error() {
		t.Fatalf("config dump last_error %v", got)
	}
}

// rootFetcher issues certificates under one self-signed root.
type rootFetcher struct {
	key     *ecdsa.PrivateKey
	root    *x509.Certificate
	fetches atomic.Int32
}

func newRootFetcher(t *testing.T) *rootFetcher {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &rootFetcher{key: key, root: root}
}

func (f *rootFetcher) Fetch(_ context.Context, req caclient.Request) (*mtls.Certificate, error) {
	n := f.fetches.Add(1)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(n) + 1), URIs: []*url.URL{req.Identity.URL()},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.root, key.Public(), f.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return mtls.NewCertificate(key, []*x509.Certificate{leaf}, []*x509.Certificate{f.root})
}

// TestIdentityRenewsWhenItsRootIsRetired: a certificate the changed trust
// anchors still accept waits for its half life; one they no longer accept
// is renewed at once.
func TestIdentityRenewsWhenItsRootIsRetired(t *testing.T) {
	f := newRootFetcher(t)
	i := &identity{id: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/waypoint"), fetch: f,
		log: slog.New(slog.DiscardHandler), renewNow: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); i.run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFetches := func(n int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for f.fetches.Load() < n || i.cur.Load() == nil {
			if time.Now().After(deadline) {
				t.Fatalf("%d fetches, want %d", f.fetches.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFetches(1)
	other := newRootFetcher(t).root
	i.renewIfUntrusted([]*x509.Certificate{other, f.root})
	time.Sleep(100 * time.Millisecond)
	if n := f.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches while its root is still trusted, want 1", n)
	}
	i.renewIfUntrusted([]*x509.Certificate{other})
	waitFetches(2)
}
