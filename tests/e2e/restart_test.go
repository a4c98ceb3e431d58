package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/pkg/netns"
)

// TestZtunnelRestart: while a node's ztunnel is down its pods stay captured
// (traffic to them fails closed); a new ztunnel gets the agent's snapshot
// and traffic resumes.
func TestZtunnelRestart(t *testing.T) {
	m := startMesh(t, basicMesh())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !m.reaches("sleep-0", "httpbin-0") {
		t.Fatal("no traffic before the restart")
	}
	m.StopZtunnel("node2")
	if m.reaches("sleep-0", "httpbin-0") {
		t.Fatal("traffic reached a pod whose ztunnel is down: it is not captured")
	}
	ns, err := netns.Open(m.pods["httpbin-0"].Netns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := m.Redirector.Check(ns); err != nil {
		t.Fatalf("redirection gone while ztunnel was down: %v", err)
	}
	if err := m.StartZtunnel(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitReady(ctx, "node2"); err != nil {
		t.Fatal(err)
	}
	m.eventually("traffic resumes after the restart", func() bool { return m.reaches("sleep-0", "httpbin-0") })
	if err := m.Redirector.Check(ns); err != nil {
		t.Fatalf("redirection changed by the restart: %v", err)
	}
}

// TestForeignCertificateRefused: an HBONE client whose certificate chains to
// another root cannot open a tunnel to an ambient pod.
func TestForeignCertificateRefused(t *testing.T) {
	m := startMesh(t, basicMesh())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, dst := m.pods["client-0"], m.pods["httpbin-0"]

	// A rogue CA issuing the identity the policy would allow.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rogue"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, key.Public(), key)
	root, _ := x509.ParseCertificate(rootDER)
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/sleep")
	u, _ := url.Parse(id.String())
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}},
		root, leafKey.Public(), key)
	cert := &tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}

	pool, err := hbone.NewPool(hbone.PoolConfig{
		// The rogue client trusts anything its own root signs; the server
		// is what must refuse.
		TrustBundle: x509bundle.FromX509Authorities(id.TrustDomain(), []*x509.Certificate{root}),
		Dial: func(ctx context.Context, req *hbone.DialRequest) (net.Conn, error) {
			return src.Netns.DialContext(ctx, "tcp", req.NextHop.String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pool.Close() }()
	_, err = pool.Dial(ctx, &hbone.DialRequest{
		NextHop:     netip.AddrPortFrom(dst.IP, 15008),
		Authority:   netip.AddrPortFrom(dst.IP, 8080),
		SourceID:    id,
		Certificate: func() (*tls.Certificate, error) { return cert, nil },
		ExpectedIDs: []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/httpbin")},
		SourceIP:    src.IP,
	})
	if err == nil {
		t.Fatal("a tunnel was opened with a certificate from a foreign root")
	}
	t.Logf("refused as expected: %v", err)
}
