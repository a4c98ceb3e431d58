package hbone

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// testPKI is a throwaway CA issuing SPIFFE leaf certificates.
type testPKI struct {
	td     spiffeid.TrustDomain
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	bundle *x509bundle.Bundle
	serial atomic.Int64
}

func newPKI(t testing.TB, td string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"zmesh test"}, CommonName: "root " + td},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	tdv := spiffeid.RequireTrustDomainFromString(td)
	p := &testPKI{td: tdv, cert: cert, key: key, bundle: x509bundle.FromX509Authorities(tdv, []*x509.Certificate{cert})}
	p.serial.Store(1)
	return p
}

// leaf issues a certificate carrying the given URI SANs.
func (p *testPKI) leaf(t testing.TB, uris ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var us []*url.URL
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, pu)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial.Add(1)),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         us,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func staticCert(c *tls.Certificate) CertificateSource {
	return func() (*tls.Certificate, error) { return c, nil }
}

func sid(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }

const (
	serverSPIFFE = "spiffe://cluster.local/ns/b/sa/server"
	clientSPIFFE = "spiffe://cluster.local/ns/a/sa/client"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer runs an HBONE server on 127.0.0.1 and returns its address.
func startServer(t testing.TB, pki *testPKI, h Handler, mod func(*ServerConfig)) (*Server, netip.AddrPort) {
	t.Helper()
	cfg := ServerConfig{
		Certificate: staticCert(pki.leaf(t, serverSPIFFE)),
		TrustBundle: pki.bundle,
		TrustDomain: pki.td,
		Handler:     h,
		Logger:      testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return srv, netip.MustParseAddrPort(ln.Addr().String())
}

func newTestPool(t testing.TB, pki *testPKI, mod func(*PoolConfig)) *Pool {
	t.Helper()
	cfg := PoolConfig{TrustBundle: pki.bundle, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dialReq(pki *testPKI, t testing.TB, next netip.AddrPort, cert *tls.Certificate) *DialRequest {
	if cert == nil {
		cert = pki.leaf(t, clientSPIFFE)
	}
	return &DialRequest{
		NextHop:     next,
		Authority:   netip.MustParseAddrPort("10.0.0.2:8080"),
		SourceID:    sid(clientSPIFFE),
		Certificate: staticCert(cert),
		ExpectedIDs: []spiffeid.ID{sid(serverSPIFFE)},
		SourceIP:    netip.MustParseAddr("10.0.0.1"),
		Forwarded:   FormatForwarded(netip.MustParseAddrPort("10.0.0.1:40000"), ""),
		Baggage:     "k8s.namespace.name=a",
	}
}

// echoHandler accepts every stream and echoes until the client half-closes,
// then half-closes back. It records requests.
type echoHandler struct {
	mu       sync.Mutex
	requests []*Request
	calls    atomic.Int64
}

func (h *echoHandler) ServeHBONE(_ context.Context, req *Request, rw *ResponseWriter) {
	h.calls.Add(1)
	h.mu.Lock()
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	st, err := rw.Accept()
	if err != nil {
		return
	}
	defer func() { _ = st.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := st.Read(buf)
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = st.CloseWrite()
			}
			return
		}
	}
}

// freezeProxy is a TCP proxy whose traffic can be frozen to simulate a peer
// that stops answering.
type freezeProxy struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startFreezeProxy(t testing.TB, target netip.AddrPort) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fp := &freezeProxy{ln: ln, target: target.String()}
	fp.wg.Add(1)
	go fp.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		fp.mu.Lock()
		for _, c := range fp.conns {
			_ = c.Close()
		}
		fp.mu.Unlock()
		fp.wg.Wait()
	})
	return fp
}

func (fp *freezeProxy) addr() netip.AddrPort { return netip.MustParseAddrPort(fp.ln.Addr().String()) }

func (fp *freezeProxy) serve() {
	defer fp.wg.Done()
	for {
		c, err := fp.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", fp.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		fp.mu.Lock()
		fp.conns = append(fp.conns, c, u)
		fp.mu.Unlock()
		// A connection accepted while frozen stays frozen; new connections
		// after unfreezing flow.
		fp.wg.Add(2)
		go fp.pipe(u, c)
		go fp.pipe(c, u)
	}
}

func (fp *freezeProxy) pipe(dst, src net.Conn) {
	defer fp.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		// While frozen everything is swallowed: each side sees silence.
		if n > 0 && !fp.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

func netipOf(a net.Addr) netip.AddrPort { return netip.MustParseAddrPort(a.String()) }

func tlsServer(c net.Conn, cfg *tls.Config) *tls.Conn { return tls.Server(c, cfg) }

// serveLoopback listens on a loopback port and runs handle on its own
// goroutine for each accepted connection until the test ends.
func serveLoopback(t testing.TB, handle func(net.Conn)) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr()
}

// spliceHandler is an inbound proxy's Handler: it dials backend for each
// tunnel, accepts the tunnel once the backend answers (503 otherwise), and
// hands both to splice.
func spliceHandler(backend net.Addr, splice func(st *ServerStream, up *net.TCPConn)) Handler {
	return HandlerFunc(func(ctx context.Context, _ *Request, rw *ResponseWriter) {
		up, err := (&net.Dialer{}).DialContext(ctx, "tcp", backend.String())
		if err != nil {
			_ = rw.Reject(503)
			return
		}
		st, err := rw.Accept()
		if err != nil {
			_ = up.Close()
			return
		}
		splice(st, up.(*net.TCPConn))
	})
}
