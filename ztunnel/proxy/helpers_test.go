package proxy

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
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/hbone"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// meshCA issues SVIDs for the tests.
type meshCA struct {
	key  *ecdsa.PrivateKey
	root *x509.Certificate
}

func newMeshCA(t *testing.T) *meshCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &meshCA{key: key, root: root}
}

func (ca *meshCA) issue(t *testing.T, id spiffeid.ID) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (ca *meshCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.root})
}

// loopSockets stands in for a pod's network namespace with a loopback
// address of its own: listeners bind that address on a free port (recorded
// by requested port), dials leave from it, and the "original destination"
// of captured connections is set by the test.
type loopSockets struct {
	ip netip.Addr

	mu      sync.Mutex
	ports   map[uint16]netip.AddrPort
	origDst netip.AddrPort
}

func newLoopSockets(ip string) *loopSockets {
	return &loopSockets{ip: netip.MustParseAddr(ip), ports: map[uint16]netip.AddrPort{}}
}

func (s *loopSockets) Listen(port uint16) (net.Listener, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(s.ip, 0).String())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.ports[port] = ln.Addr().(*net.TCPAddr).AddrPort()
	s.mu.Unlock()
	return ln, nil
}

func (s *loopSockets) Dial(ctx context.Context, addr netip.AddrPort, src netip.Addr) (net.Conn, error) {
	if !src.IsValid() {
		src = s.ip
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	return d.DialContext(ctx, "tcp", addr.String())
}

func (s *loopSockets) OriginalDst(net.Conn) (netip.AddrPort, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.origDst.IsValid() {
		return netip.AddrPort{}, errors.New("no original destination")
	}
	return s.origDst, nil
}

func (s *loopSockets) port(p uint16) netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ports[p]
}

func (s *loopSockets) setOrigDst(a netip.AddrPort) {
	s.mu.Lock()
	s.origDst = a
	s.mu.Unlock()
}

// routes is a Resolver whose answers the test sets.
type routes struct {
	mu    sync.Mutex
	route Route
}

func (r *routes) Outbound(*PodInfo, netip.AddrPort) Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.route
}

func (r *routes) PeerByIP(netip.Addr) Peer { return Peer{Workload: "client", Namespace: "demo"} }

func (r *routes) set(rt Route) {
	r.mu.Lock()
	r.route = rt
	r.mu.Unlock()
}

// policy is an Authorizer whose rule the test sets; changing the rule
// re-checks tracked connections, as the real one does on policy updates.
type policy struct {
	mu      sync.Mutex
	unknown bool // the destination workload is unknown
	allow   func(Conn) bool
	seen    []Conn
	tracked map[*Conn]func()
}

func newPolicy() *policy {
	return &policy{allow: func(Conn) bool { return true }, tracked: map[*Conn]func(){}}
}

func (p *policy) Authorize(_ *PodInfo, c Conn) Verdict {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, c)
	if p.unknown {
		return Verdict{UnknownDestination: true, Reason: "unknown"}
	}
	if p.allow(c) {
		return Verdict{Allow: true}
	}
	return Verdict{Policy: "test/deny", Reason: "denied by test"}
}

func (p *policy) Track(_ *PodInfo, c Conn, closeFn func()) func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := &c
	p.tracked[key] = closeFn
	return func() {
		p.mu.Lock()
		delete(p.tracked, key)
		p.mu.Unlock()
	}
}

func (p *policy) setRule(allow func(Conn) bool) {
	p.mu.Lock()
	p.allow = allow
	var closing []func()
	for c, fn := range p.tracked {
		if !allow(*c) {
			closing = append(closing, fn)
		}
	}
	p.mu.Unlock()
	for _, fn := range closing {
		fn()
	}
}

func (p *policy) conns() []Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Conn(nil), p.seen...)
}

// testPod is a started pod proxy with its sockets and an echo app.
type testPod struct {
	info    PodInfo
	sockets *loopSockets
	proxy   *PodProxy
	app     netip.AddrPort // echo server on the pod's address
}

type harness struct {
	ca       *meshCA
	routes   *routes
	policy   *policy
	registry *prometheus.Registry
	proxy    *Proxy
	certs    map[spiffeid.ID]*tls.Certificate
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{ca: newMeshCA(t), routes: &routes{}, policy: newPolicy(), registry: prometheus.NewRegistry(),
		certs: map[spiffeid.ID]*tls.Certificate{}}
	pool, err := hbone.NewPool(hbone.PoolConfig{
		TrustBundle: h.ca.bundle(),
		Dial: func(ctx context.Context, req *hbone.DialRequest) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: req.SourceIP.AsSlice()}}
			return d.DialContext(ctx, "tcp", req.NextHop.String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	m, err := NewMetrics(h.registry)
	if err != nil {
		t.Fatal(err)
	}
	h.proxy, err = New(Config{
		Resolver: h.routes, Authorizer: h.policy, Pool: pool, Metrics: m,
		TrustBundle: h.ca.bundle(), TrustDomain: td,
		Certificates: func(id spiffeid.ID) (*tls.Certificate, error) {
			if c := h.certs[id]; c != nil {
				return c, nil
			}
			return nil, errors.New("no certificate")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// pod starts a pod proxy on ip with identity sa and an echo app.
func (h *harness) pod(t *testing.T, name, ip, sa string) *testPod {
	t.Helper()
	id := spiffeid.RequireFromSegments(td, "ns", "demo", "sa", sa)
	h.certs[id] = h.ca.issue(t, id)
	s := newLoopSockets(ip)
	p := &testPod{info: PodInfo{UID: "Kubernetes//Pod/demo/" + name, Name: name, Namespace: "demo", Identity: id,
		IPs: []netip.Addr{s.ip}, Peer: Peer{Workload: name, Namespace: "demo", Principal: id.String()}}, sockets: s}
	pp, err := h.proxy.StartPod(p.info, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pp.Stop)
	p.proxy = pp
	p.app = echoServer(t, ip)
	return p
}

// echoServer echoes every connection on ip until the test ends.
func echoServer(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
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
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// hboneTo routes outbound connections to dst through its 15008.
func hboneTo(dst *testPod) Route {
	return Route{Kind: RouteHBONE, Authority: dst.app, NextHop: dst.sockets.port(InboundHBONEPort),
		ExpectedIDs: []spiffeid.ID{dst.info.Identity}, Destination: dst.info.Peer, Service: "echo.demo.svc.cluster.local"}
}

// connectOutbound opens a connection from src as its app would (to the
// outbound listener, with the original destination dst).
func connectOutbound(t *testing.T, src *testPod, dst netip.AddrPort) net.Conn {
	t.Helper()
	src.sockets.setOrigDst(dst)
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src.sockets.ip.AsSlice()}}
	c, err := d.Dial("tcp", src.sockets.port(OutboundPort).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and expects it echoed; it returns the error instead
// of failing when the connection is refused along the way.
func roundTrip(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}
