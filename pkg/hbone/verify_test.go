package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestServerRejectsClientCertificates covers the server's client
// certificate checks: the handshake fails and no stream is ever opened.
func TestServerRejectsClientCertificates(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	otherRoot := newPKI(t, "cluster.local")
	h := &echoHandler{}
	var failed atomic.Int64
	srv, addr := startServer(t, pki, h, func(c *ServerConfig) { c.HandshakeFailed = func(error) { failed.Add(1) } })

	cases := map[string]*tls.Certificate{
		"another root":         otherRoot.leaf(t, clientSPIFFE),
		"another trust domain": pki.leaf(t, "spiffe://other.example/ns/a/sa/client"),
		"two URI SANs":         pki.leaf(t, clientSPIFFE, "spiffe://cluster.local/ns/a/sa/second"),
		"no URI SAN":           pki.leaf(t),
	}
	for name, cert := range cases {
		t.Run(name, func(t *testing.T) {
			pool := newTestPool(t, pki, nil)
			req := dialReq(pki, t, addr, cert)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := pool.Dial(ctx, req)
			if err == nil {
				_ = st.Close()
				t.Fatal("dial succeeded with a bad client certificate")
			}
			var se *StatusError
			if errors.As(err, &se) {
				t.Fatalf("got an HTTP answer (%v); the handshake should have failed", err)
			}
		})
	}
	if n := srv.handshakes.Load(); n != 0 {
		t.Errorf("server completed %d handshakes", n)
	}
	// Each refused client is reported (the server sees the failure just
	// after the client does).
	for deadline := time.Now().Add(5 * time.Second); failed.Load() < int64(len(cases)); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d handshake failures reported, want %d", failed.Load(), len(cases))
		}
	}
	if n := srv.streamsOpened.Load(); n != 0 {
		t.Errorf("server opened %d streams", n)
	}
	if n := h.calls.Load(); n != 0 {
		t.Errorf("handler called %d times", n)
	}
}

// TestClientRejectsUnexpectedServer checks that a server presenting an
// identity outside the expected set gets no HTTP/2 bytes at all.
func TestClientRejectsUnexpectedServer(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	otherRoot := newPKI(t, "cluster.local")
	h := &echoHandler{}
	srv, addr := startServer(t, pki, h, nil)
	// A second server whose certificate comes from an untrusted root.
	srv2, addr2 := startServer(t, otherRoot, h, func(c *ServerConfig) {
		c.TrustBundle = pki.bundle // it would trust our client
	})

	pool := newTestPool(t, pki, nil)
	req := dialReq(pki, t, addr, nil)
	req.ExpectedIDs = []spiffeid.ID{sid("spiffe://cluster.local/ns/b/sa/someone-else")}
	if st, err := pool.Dial(testCtx(t), req); err == nil {
		_ = st.Close()
		t.Fatal("dial succeeded against an unexpected server identity")
	}
	req2 := dialReq(pki, t, addr2, nil)
	if st, err := pool.Dial(testCtx(t), req2); err == nil {
		_ = st.Close()
		t.Fatal("dial succeeded against a server from another root")
	}
	for i, s := range []*Server{srv, srv2} {
		if n := s.handshakes.Load(); n != 0 {
			t.Errorf("server %d completed %d handshakes", i, n)
		}
		if n := s.streamsOpened.Load(); n != 0 {
			t.Errorf("server %d opened %d streams", i, n)
		}
	}
	if h.calls.Load() != 0 {
		t.Error("handler was called")
	}
	if st := pool.Stats(); st.Conns != 0 || st.Dials != 0 {
		t.Errorf("pool stats = %+v", st)
	}

	// The same pool dials fine when the identity is one of the expected.
	req.ExpectedIDs = []spiffeid.ID{sid("spiffe://cluster.local/ns/x/sa/y"), sid(serverSPIFFE)}
	st, err := pool.Dial(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
}

// TestClientSendsNoSNI looks at the ClientHello the pool sends.
func TestClientSendsNoSNI(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hello := make(chan *tls.ClientHelloInfo, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		tc := tls.Server(c, &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			hello <- chi
			return nil, errors.New("stop here")
		}})
		_ = tc.Handshake()
	}()
	pool := newTestPool(t, pki, nil)
	_, _ = pool.Dial(testCtx(t), dialReq(pki, t, netipOf(ln.Addr()), nil))
	chi := <-hello
	if chi.ServerName != "" {
		t.Errorf("SNI = %q, want none", chi.ServerName)
	}
	if len(chi.SupportedProtos) != 1 || chi.SupportedProtos[0] != "h2" {
		t.Errorf("ALPN = %v, want [h2]", chi.SupportedProtos)
	}
}

// TestServerTLSPolicy: no ALPN h2 → no HTTP/2 service; TLS 1.2 only with
// GCM suites.
func TestServerTLSPolicy(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	srv, addr := startServer(t, pki, &echoHandler{}, nil)

	noALPN := genericTLS(t, pki, 0)
	noALPN.NextProtos = nil
	c, err := tls.Dial("tcp", addr.String(), noALPN)
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		_ = c.Close()
	}
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("connection without ALPN h2 was kept open (err %v)", err)
	}

	cbc := genericTLS(t, pki, tls.VersionTLS12)
	cbc.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	if c, err := tls.Dial("tcp", addr.String(), cbc); err == nil {
		_ = c.Close()
		t.Error("TLS 1.2 CBC suite accepted")
	}
	gcm := genericTLS(t, pki, tls.VersionTLS12)
	gcm.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
	c, err = tls.Dial("tcp", addr.String(), gcm)
	if err != nil {
		t.Fatalf("TLS 1.2 GCM: %v", err)
	}
	_ = c.Close()
	if srv.streamsOpened.Load() != 0 {
		t.Error("streams opened")
	}
}

// TestCertificateRotation: each new connection fetches the certificate
// again, so a rotated certificate is used without rebuilding anything.
func TestCertificateRotation(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	_, addr := startServer(t, pki, &echoHandler{}, nil)
	pool := newTestPool(t, pki, func(c *PoolConfig) { c.IdleTimeout = 20 * time.Millisecond })
	var calls atomic.Int64
	certs := []*tls.Certificate{pki.leaf(t, clientSPIFFE), pki.leaf(t, clientSPIFFE)}
	req := dialReq(pki, t, addr, nil)
	req.Certificate = func() (*tls.Certificate, error) {
		return certs[(calls.Add(1)-1)%2], nil
	}
	for range 2 {
		st, err := pool.Dial(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Close()
		waitFor(t, "idle close", func() bool { return pool.Stats().Conns == 0 })
	}
	if calls.Load() != 2 {
		t.Errorf("certificate fetched %d times for 2 connections", calls.Load())
	}
}

// TestTrustBundleReadPerHandshake: the server checks client chains
// against its TrustBundle as it is at each handshake, so adding a rotated
// root to the bundle (pkg/trustbundle does it in place) admits clients
// issued under it without a restart.
func TestTrustBundleReadPerHandshake(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	rotated := newPKI(t, "cluster.local")
	bundle := x509bundle.FromX509Authorities(pki.td, []*x509.Certificate{pki.cert})
	_, addr := startServer(t, pki, &echoHandler{}, func(c *ServerConfig) { c.TrustBundle = bundle })
	client := rotated.leaf(t, clientSPIFFE)
	dial := func() error {
		// A new pool per attempt: a fresh TLS handshake each time.
		st, err := newTestPool(t, pki, nil).Dial(testCtx(t), dialReq(pki, t, addr, client))
		if err == nil {
			_ = st.Close()
		}
		return err
	}
	if err := dial(); err == nil {
		t.Fatal("client under a root the server does not trust was admitted")
	}
	bundle.SetX509Authorities([]*x509.Certificate{pki.cert, rotated.cert})
	if err := dial(); err != nil {
		t.Fatalf("after the rotated root was added: %v", err)
	}
}
