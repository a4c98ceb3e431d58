package mtls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	idA = "spiffe://cluster.local/ns/a/sa/alpha"
	idB = "spiffe://cluster.local/ns/b/sa/beta"
	idX = "spiffe://other.domain/ns/a/sa/alpha"
)

// handshake runs a real TLS handshake over a loopback TCP connection and
// returns the server-side connection state and both errors.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer func() { _ = c.Close() }()
		sc := tls.Server(c, serverCfg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = sc.HandshakeContext(ctx)
		if err == nil {
			// In TLS 1.3 the client's certificate is checked after the
			// client finished; a read surfaces the server's verdict to it.
			_, _ = sc.Write([]byte("x"))
		}
		done <- result{st: sc.ConnectionState(), err: err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	cc := tls.Client(c, clientCfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cerr := cc.HandshakeContext(ctx)
	if cerr == nil {
		_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1)
		_, cerr = cc.Read(buf)
	}
	r := <-done
	return r.st, r.err, cerr
}

func mustID(t *testing.T, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestHandshakes(t *testing.T) {
	mesh := newTestCA(t, "mesh")
	other := newTestCA(t, "other")
	td := spiffeid.RequireTrustDomainFromString("cluster.local")

	serverA := mesh.issue(t, idA)
	clientB := mesh.issue(t, idB)
	clientX := mesh.issue(t, idX)
	clientForeign := other.issue(t, idB)
	controller := mesh.issue(t, "", "istiod.istio-system.svc", "localhost")
	foreignController := other.issue(t, "", "istiod.istio-system.svc")

	tests := []struct {
		name       string
		server     *Certificate
		serverOpts ServerOptions
		client     ClientOptions
		wantOK     bool
		wantPeer   string // SPIFFE ID of the verified client chain, if any
	}{
		{
			name:       "spiffe both ways",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td},
			client:     ClientOptions{Cert: NewHolder(clientB), ServerIDs: []spiffeid.ID{mustID(t, idA)}},
			wantOK:     true,
			wantPeer:   idB,
		},
		{
			name:       "server id one of several",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td},
			client:     ClientOptions{Cert: NewHolder(clientB), ServerIDs: []spiffeid.ID{mustID(t, idB), mustID(t, idA)}},
			wantOK:     true,
			wantPeer:   idB,
		},
		{
			name:       "unexpected server id",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td},
			client:     ClientOptions{Cert: NewHolder(clientB), ServerIDs: []spiffeid.ID{mustID(t, idB)}},
		},
		{
			name:       "client without certificate, required",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td},
			client:     ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerIDs: []spiffeid.ID{mustID(t, idA)}},
		},
		{
			name:       "client without certificate, optional",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td, ClientCertOptional: true},
			client:     ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerIDs: []spiffeid.ID{mustID(t, idA)}},
			wantOK:     true,
		},
		{
			name:       "roots read per handshake",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td, ClientCertOptional: true},
			client:     ClientOptions{RootsFrom: func() []*x509.Certificate { return []*x509.Certificate{other.cert, mesh.cert} }, ServerIDs: []spiffeid.ID{mustID(t, idA)}},
			wantOK:     true,
		},
		{
			name:       "roots read per handshake, server under another root",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td, ClientCertOptional: true},
			client:     ClientOptions{RootsFrom: func() []*x509.Certificate { return []*x509.Certificate{other.cert} }, ServerIDs: []spiffeid.ID{mustID(t, idA)}},
		},
		{
			name:       "roots read per handshake, none",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td, ClientCertOptional: true},
			client:     ClientOptions{RootsFrom: func() []*x509.Certificate { return nil }, Roots: []*x509.Certificate{mesh.cert}, ServerIDs: []spiffeid.ID{mustID(t, idA)}},
		},
		{
			name:       "client certificate from another root",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td, ClientCertOptional: true},
			client:     ClientOptions{Roots: []*x509.Certificate{mesh.cert}, Cert: NewHolder(clientForeign), ServerIDs: []spiffeid.ID{mustID(t, idA)}},
		},
		{
			name:       "client in another trust domain",
			server:     serverA,
			serverOpts: ServerOptions{TrustDomain: td},
			client:     ClientOptions{Cert: NewHolder(clientX), ServerIDs: []spiffeid.ID{mustID(t, idA)}},
		},
		{
			name:     "client in another trust domain, no trust domain check",
			server:   serverA,
			client:   ClientOptions{Cert: NewHolder(clientX), ServerIDs: []spiffeid.ID{mustID(t, idA)}},
			wantOK:   true,
			wantPeer: idX,
		},
		{
			name:       "server from another root",
			server:     other.issue(t, idA),
			serverOpts: ServerOptions{ClientCertOptional: true},
			client:     ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerIDs: []spiffeid.ID{mustID(t, idA)}},
		},
		{
			name:       "controller by DNS name",
			server:     controller,
			serverOpts: ServerOptions{TrustDomain: td, ClientCertOptional: true},
			client:     ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerName: "istiod.istio-system.svc"},
			wantOK:     true,
		},
		{
			name:       "controller wrong DNS name",
			server:     controller,
			serverOpts: ServerOptions{ClientCertOptional: true},
			client:     ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerName: "evil.example.com"},
		},
		{
			name:       "controller with foreign root",
			server:     foreignController,
			serverOpts: ServerOptions{ClientCertOptional: true},
			client:     ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerName: "istiod.istio-system.svc"},
		},
		{
			name:       "SPIFFE expected but server has only DNS",
			server:     controller,
			serverOpts: ServerOptions{ClientCertOptional: true},
			client:     ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerIDs: []spiffeid.ID{mustID(t, idA)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg, err := ServerConfig(NewHolder(tt.server), tt.serverOpts)
			if err != nil {
				t.Fatal(err)
			}
			ccfg, err := ClientConfig(tt.client)
			if err != nil {
				t.Fatal(err)
			}
			st, serr, cerr := handshake(t, scfg, ccfg)
			if !tt.wantOK {
				if serr == nil && cerr == nil {
					t.Fatal("handshake succeeded, want failure")
				}
				return
			}
			if serr != nil || cerr != nil {
				t.Fatalf("server err %v, client err %v", serr, cerr)
			}
			if st.Version != tls.VersionTLS13 {
				t.Errorf("version %x, want TLS 1.3", st.Version)
			}
			if st.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN %q, want h2", st.NegotiatedProtocol)
			}
			var got string
			if len(st.VerifiedChains) > 0 {
				got = st.VerifiedChains[0][0].URIs[0].String()
			}
			if got != tt.wantPeer {
				t.Errorf("verified peer %q, want %q", got, tt.wantPeer)
			}
		})
	}
}

func TestTLS12Refused(t *testing.T) {
	mesh := newTestCA(t, "mesh")
	scfg, err := ServerConfig(NewHolder(mesh.issue(t, idA)), ServerOptions{ClientCertOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(mesh.cert)
	ccfg := &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true}
	_, serr, cerr := handshake(t, scfg, ccfg)
	if serr == nil && cerr == nil {
		t.Fatal("TLS 1.2 handshake succeeded")
	}
}

func TestRotation(t *testing.T) {
	mesh := newTestCA(t, "mesh")
	first := mesh.issue(t, idA)
	second := mesh.issue(t, idA)
	h := NewHolder(first)
	scfg, err := ServerConfig(h, ServerOptions{ClientCertOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	var seen *x509.Certificate
	ccfg, err := ClientConfig(ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerIDs: []spiffeid.ID{mustID(t, idA)}})
	if err != nil {
		t.Fatal(err)
	}
	inner := ccfg.VerifyConnection
	ccfg.VerifyConnection = func(cs tls.ConnectionState) error {
		seen = cs.PeerCertificates[0]
		return inner(cs)
	}
	for i, want := range []*Certificate{first, second} {
		if i == 1 {
			if err := h.Store(second); err != nil {
				t.Fatal(err)
			}
		}
		if _, serr, cerr := handshake(t, scfg, ccfg); serr != nil || cerr != nil {
			t.Fatalf("handshake %d: %v %v", i, serr, cerr)
		}
		if !seen.Equal(want.Leaf()) {
			t.Fatalf("handshake %d: served serial %v, want %v", i, seen.SerialNumber, want.Leaf().SerialNumber)
		}
	}
}

func TestEmptyHolder(t *testing.T) {
	mesh := newTestCA(t, "mesh")
	scfg, err := ServerConfig(&Holder{}, ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := ClientConfig(ClientOptions{Roots: []*x509.Certificate{mesh.cert}, ServerIDs: []spiffeid.ID{mustID(t, idA)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, serr, _ := handshake(t, scfg, ccfg); serr == nil || !strings.Contains(serr.Error(), "no serving certificate") {
		t.Fatalf("server err %v, want no serving certificate", serr)
	}
	var h Holder
	c, err := h.GetClientCertificate(nil)
	if err != nil || len(c.Certificate) != 0 {
		t.Fatalf("empty holder client cert = %v, %v", c, err)
	}
	if err := h.Store(nil); err == nil {
		t.Fatal("Store(nil) succeeded")
	}
}

func TestConfigValidation(t *testing.T) {
	mesh := newTestCA(t, "mesh")
	roots := []*x509.Certificate{mesh.cert}
	id := mustID(t, idA)
	tests := []struct {
		name string
		opts ClientOptions
	}{
		{"nothing", ClientOptions{Roots: roots}},
		{"both", ClientOptions{Roots: roots, ServerIDs: []spiffeid.ID{id}, ServerName: "x"}},
		{"no roots", ClientOptions{ServerName: "x"}},
		{"zero id", ClientOptions{Roots: roots, ServerIDs: []spiffeid.ID{{}}}},
	}
	for _, tt := range tests {
		if _, err := ClientConfig(tt.opts); err == nil {
			t.Errorf("%s: ClientConfig succeeded", tt.name)
		}
	}
	if _, err := ServerConfig(nil, ServerOptions{}); err == nil {
		t.Error("ServerConfig(nil) succeeded")
	}
}

func TestCertificate(t *testing.T) {
	mesh := newTestCA(t, "mesh")
	c := mesh.issue(t, idA)
	keyPEM, err := c.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCertificatePEM(keyPEM, c.ChainPEM(), c.RootsPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Leaf().Equal(c.Leaf()) || !back.Roots()[0].Equal(mesh.cert) {
		t.Fatal("PEM round trip changed the certificate")
	}
	if err := back.Verify(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := back.Verify(time.Now().Add(48 * time.Hour)); err == nil {
		t.Fatal("Verify after expiry succeeded")
	}
	if !c.NotAfter().Equal(c.Leaf().NotAfter) {
		t.Fatalf("NotAfter %v, leaf %v", c.NotAfter(), c.Leaf().NotAfter)
	}

	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		build   func() error
		wantErr string
	}{
		{"key mismatch", func() error {
			_, err := NewCertificate(otherKey, c.Chain(), c.Roots())
			return err
		}, "does not match"},
		{"empty chain", func() error {
			_, err := NewCertificate(otherKey, nil, c.Roots())
			return err
		}, "empty certificate chain"},
		{"no roots", func() error {
			_, err := NewCertificate(c.Key(), c.Chain(), nil)
			return err
		}, "no root"},
		{"garbage key", func() error {
			_, err := ParseCertificatePEM([]byte("nope"), c.ChainPEM(), c.RootsPEM())
			return err
		}, "private key"},
		{"key as chain", func() error {
			_, err := ParseCertificatePEM(keyPEM, keyPEM, c.RootsPEM())
			return err
		}, "unexpected type"},
		{"trailing garbage", func() error {
			_, err := ParseCertificatePEM(keyPEM, append(c.ChainPEM(), "junk"...), c.RootsPEM())
			return err
		}, "trailing data"},
	}
	for _, tt := range tests {
		err := tt.build()
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: err = %v, want containing %q", tt.name, err, tt.wantErr)
		}
	}
	if !bytes.Contains(c.ChainPEM(), []byte("BEGIN CERTIFICATE")) {
		t.Fatal("ChainPEM not PEM")
	}
}
