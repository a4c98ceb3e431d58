package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/pkg/mtls"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/waypoint/app"
	"github.com/zmesh/zmesh/waypoint/config"
)

const td = "cluster.local"

// pki is a throwaway mesh CA.
type pki struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test mesh root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{cert: cert, key: key}
	p.serial.Store(1)
	return p
}

func (p *pki) issue(id spiffeid.ID) (*mtls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial.Add(1)), NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return mtls.NewCertificate(key, []*x509.Certificate{leaf}, []*x509.Certificate{p.cert})
}

func (p *pki) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), []*x509.Certificate{p.cert})
}

// fetcher is the waypoint's CA: it refuses impersonation, like the real
// CA does for a waypoint's token.
type fetcher struct {
	p     *pki
	calls atomic.Int64
}

func (f *fetcher) Fetch(_ context.Context, req caclient.Request) (*mtls.Certificate, error) {
	f.calls.Add(1)
	if req.Impersonate {
		return nil, errors.New("impersonation refused")
	}
	return f.p.issue(req.Identity)
}

type allowAll struct{}

func (allowAll) Authenticate(context.Context) (auth.Caller, error) {
	return auth.Caller{Identity: "spiffe://cluster.local/ns/demo/sa/waypoint"}, nil
}

// mesh is a waypoint with an in-process controller, backends behind real
// HBONE servers and a client speaking HBONE like ztunnel.
type mesh struct {
	t       testing.TB
	pki     *pki
	xds     *xdsserver.Server
	wp      *app.App
	logBuf  *syncBuffer
	clientC *mtls.Certificate
	client  *hbone.Pool

	mu       sync.Mutex // guards backends, pods, services
	backends map[netip.Addr]string
	pods     map[string]*pod
	services map[string]*workloadapi.Service
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	clientID = spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/client")
	clientIP = netip.MustParseAddr("10.1.0.5")
)

func newMesh(t testing.TB, opts ...func(*app.Config)) *mesh {
	t.Helper()
	m := &mesh{t: t, pki: newPKI(t), backends: map[netip.Addr]string{}, pods: map[string]*pod{}, services: map[string]*workloadapi.Service{}, logBuf: &syncBuffer{}}
	srv, err := xdsserver.New(xdsserver.Options{Authenticator: allowAll{}, Registry: prometheus.NewRegistry(), DebounceQuiet: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m.xds = srv
	for _, typ := range []string{workloadapi.AddressTypeURL, security.AuthorizationTypeURL, config.ListenerTypeURL, config.ClusterTypeURL} {
		if err := srv.Update(typ, nil); err != nil {
			t.Fatal(err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); gs.Stop() })

	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(root, mtls.EncodeCertificatesPEM(m.pki.cert), 0o600); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := app.Config{
		ControllerAddr: lis.Addr().String(), RootCertFile: root, TokenFile: token,
		PodName: "waypoint-0", PodNamespace: "demo", ServiceAccount: "waypoint", NodeName: "node-1", InstanceIP: "10.0.0.100",
		AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0", HBONEAddr: "127.0.0.1:0",
		AccessLog:             m.logBuf,
		Logger:                slog.New(slog.NewTextHandler(io.Discard, nil)),
		ControllerDialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Fetcher:               &fetcher{p: m.pki},
		DialUpstream: func(ctx context.Context, nextHop netip.AddrPort) (net.Conn, error) {
			m.mu.Lock()
			addr, ok := m.backends[nextHop.Addr()]
			m.mu.Unlock()
			if !ok || nextHop.Port() != 15008 {
				return nil, fmt.Errorf("no route to %s", nextHop)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	wp, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := wp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.wp = wp
	t.Cleanup(wp.Stop)

	m.clientC, err = m.pki.issue(clientID)
	if err != nil {
		t.Fatal(err)
	}
	m.client, err = hbone.NewPool(hbone.PoolConfig{TrustBundle: m.pki.bundle(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.client.Close() })
	m.eventually("waypoint ready", func() error { return wp.Ready() })
	return m
}

// eventually retries f for up to 10 s.
func (m *mesh) eventually(what string, f func() error) {
	m.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pod is a backend workload: an HBONE server in front of an echo app.
type pod struct {
	name, ns, sa string
	ip           netip.Addr
	id           spiffeid.ID
	services     map[string]map[uint32]uint32
	healthy      bool
	// status, when non-zero, is the HTTP status every request gets.
	status atomic.Int32
	// refuse makes the HBONE server reject every CONNECT (connect failure).
	refuse atomic.Bool
	hits   atomic.Int64
	// delay, when non-zero, delays every HTTP answer.
	delay atomic.Int64
	srv   *hbone.Server
	ln    net.Listener
}

// echo is what backends answer.
type echo struct {
	Pod, Method, Path, Host, Peer, Body, Proto string
	Headers                                    map[string]string
	// Trailers are the request's trailer fields, when it sent any.
	Trailers map[string]string `json:",omitempty"`
}

// addPod starts a backend and publishes its workload. services maps a
// service key to service-port → target-port.
func (m *mesh) addPod(name, sa, ip string, services map[string]map[uint32]uint32) *pod {
	m.t.Helper()
	p := &pod{name: name, ns: "demo", sa: sa, ip: netip.MustParseAddr(ip), services: services, healthy: true}
	p.id = spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/" + sa)
	cert, err := m.pki.issue(p.id)
	if err != nil {
		m.t.Fatal(err)
	}
	p.srv, err = hbone.NewServer(hbone.ServerConfig{
		Certificate: func() (*tls.Certificate, error) { return cert.TLSCertificate(), nil },
		TrustBundle: m.pki.bundle(), TrustDomain: spiffeid.RequireTrustDomainFromString(td),
		Handler: hbone.HandlerFunc(p.serve), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		m.t.Fatal(err)
	}
	p.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		m.t.Fatal(err)
	}
	go func() { _ = p.srv.Serve(p.ln) }()
	m.t.Cleanup(func() { _ = p.srv.Close() })
	m.mu.Lock()
	m.backends[p.ip] = p.ln.Addr().String()
	m.pods[name] = p
	m.mu.Unlock()
	m.pushAddresses()
	return p
}

func (p *pod) serve(ctx context.Context, req *hbone.Request, rw *hbone.ResponseWriter) {
	if p.refuse.Load() || req.Authority.Addr() != p.ip {
		_ = rw.Reject(http.StatusServiceUnavailable)
		return
	}
	st, err := rw.Accept()
	if err != nil {
		return
	}
	if req.Authority.Port() >= 9000 { // TCP echo ports
		p.hits.Add(1)
		_, _ = io.WriteString(st, p.name+":")
		_, _ = io.Copy(st, st)
		_ = st.CloseWrite() // a graceful FIN: Close alone resets the stream
		_ = st.Close()
		return
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		if r.URL.Path == "/ws" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			p.serveWebSocket(w, r)
			return
		}
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			grpcBackend.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if d := r.URL.Query().Get("delay"); d != "" || p.delay.Load() != 0 {
			dd, _ := time.ParseDuration(d)
			if dd == 0 {
				dd = time.Duration(p.delay.Load())
			}
			select {
			case <-time.After(dd):
			case <-r.Context().Done():
				return
			}
		}
		e := echo{Pod: p.name, Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Peer: req.PeerID.String(), Body: string(body),
			Proto: r.Proto, Headers: map[string]string{}}
		for k, v := range r.Header {
			e.Headers[strings.ToLower(k)] = strings.Join(v, ",")
		}
		for k, v := range r.Trailer {
			if e.Trailers == nil {
				e.Trailers = map[string]string{}
			}
			e.Trailers[strings.ToLower(k)] = strings.Join(v, ",")
		}
		code := int(p.status.Load())
		if s := r.URL.Query().Get("status"); s != "" {
			code, _ = strconv.Atoi(s)
		}
		// ?trailer=declared|undeclared sends the trailer X-Trailer: late,
		// announced in the header or not (as gRPC servers do).
		switch r.URL.Query().Get("trailer") {
		case "declared":
			w.Header().Set("Trailer", "X-Trailer")
			defer func() { w.Header().Set("X-Trailer", "late") }()
		case "undeclared":
			defer func() { w.Header().Set(http.TrailerPrefix+"X-Trailer", "late") }()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", p.name)
		if code != 0 {
			w.WriteHeader(code)
		}
		_ = json.NewEncoder(w).Encode(e)
	}), ErrorLog: nil}
	l := &single{c: st, done: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	_ = srv.Serve(l)
}

// serveWebSocket greets with the pod's name and the request's X-Route
// header, then answers each message m with "<pod>:m".
func (p *pod) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	websocket.Server{Handler: func(ws *websocket.Conn) {
		_ = websocket.Message.Send(ws, p.name+" "+ws.Request().Header.Get("X-Route"))
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, p.name+":"+msg); err != nil {
				return
			}
		}
	}}.ServeHTTP(w, r)
}

// grpcBackend answers gRPC health checks for every pod.
var grpcBackend = func() *grpc.Server {
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	return gs
}()

type single struct {
	c    net.Conn
	once sync.Once
	used atomic.Bool
	done chan struct{}
}

func (s *single) Accept() (net.Conn, error) {
	if s.used.CompareAndSwap(false, true) {
		return &closeNotify{Conn: s.c, f: func() { s.once.Do(func() { close(s.done) }) }}, nil
	}
	<-s.done
	return nil, net.ErrClosed
}
func (s *single) Close() error   { return nil }
func (s *single) Addr() net.Addr { return s.c.LocalAddr() }

type closeNotify struct {
	net.Conn
	f func()
}

func (c *closeNotify) Close() error { err := c.Conn.Close(); c.f(); return err }

// addService publishes a service with one VIP.
func (m *mesh) addService(name, vip string, ports ...*workloadapi.Port) string {
	key := "demo/" + name + ".demo.svc.cluster.local"
	ip := netip.MustParseAddr(vip).AsSlice()
	m.mu.Lock()
	m.services[key] = &workloadapi.Service{Name: name, Namespace: "demo", Hostname: name + ".demo.svc.cluster.local",
		Addresses: []*workloadapi.NetworkAddress{{Address: ip}}, Ports: ports}
	m.mu.Unlock()
	m.pushAddresses()
	return key
}

func httpPort(port, target uint32) *workloadapi.Port {
	return &workloadapi.Port{ServicePort: port, TargetPort: target, AppProtocol: workloadapi.AppProtocol_HTTP11}
}

func (m *mesh) pushAddresses() {
	m.t.Helper()
	m.mu.Lock()
	var rs []xdsserver.Resource
	for key, s := range m.services {
		rs = append(rs, xdsserver.Resource{Name: key, Body: &workloadapi.Address{Type: &workloadapi.Address_Service{Service: proto.Clone(s).(*workloadapi.Service)}}})
	}
	// The client pod: tunnels claim its address (Forwarded) with its
	// identity.
	client := &workloadapi.Workload{Uid: "Kubernetes//Pod/demo/client", Name: "client", Namespace: "demo", ServiceAccount: "client", TrustDomain: td,
		Addresses: [][]byte{clientIP.AsSlice()}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE, CanonicalName: "client", WorkloadName: "client"}
	rs = append(rs, xdsserver.Resource{Name: client.Uid, Body: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: client}}})
	for _, p := range m.pods {
		w := &workloadapi.Workload{Uid: "Kubernetes//Pod/demo/" + p.name, Name: p.name, Namespace: p.ns, ServiceAccount: p.sa, TrustDomain: td,
			Addresses: [][]byte{p.ip.AsSlice()}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE, CanonicalName: p.name, WorkloadName: p.name,
			Services: map[string]*workloadapi.PortList{}}
		if !p.healthy {
			w.Status = workloadapi.WorkloadStatus_UNHEALTHY
		}
		for key, ports := range p.services {
			pl := &workloadapi.PortList{}
			for sp, tp := range ports {
				pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: sp, TargetPort: tp})
			}
			w.Services[key] = pl
		}
		rs = append(rs, xdsserver.Resource{Name: w.Uid, Body: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}})
	}
	m.mu.Unlock()
	if err := m.xds.Update(workloadapi.AddressTypeURL, rs); err != nil {
		m.t.Fatal(err)
	}
	m.eventually("addresses applied", func() error {
		snap := m.wp.Store().Snapshot()
		for _, r := range rs {
			if w := r.Body.(*workloadapi.Address).GetWorkload(); w != nil {
				ip, _ := netip.AddrFromSlice(w.Addresses[0])
				if got := snap.WorkloadByIP(ip); got == nil || got.Healthy != (w.Status == workloadapi.WorkloadStatus_HEALTHY) {
					return fmt.Errorf("workload %s not applied", w.Name)
				}
			} else if snap.Service(r.Name) == nil {
				return fmt.Errorf("service %s not applied", r.Name)
			}
		}
		return nil
	})
}

// push publishes the full set of resources of typ and waits until the
// waypoint's store has taken (or rejected) each one.
func (m *mesh) push(typ string, msgs ...proto.Message) {
	m.t.Helper()
	var rs []xdsserver.Resource
	for _, msg := range msgs {
		name := msg.ProtoReflect().Descriptor().Fields().ByName("name")
		rs = append(rs, xdsserver.Resource{Name: msg.ProtoReflect().Get(name).String(), Body: msg})
	}
	before := m.wp.Store().Snapshot().Version
	if err := m.xds.Update(typ, rs); err != nil {
		m.t.Fatal(err)
	}
	m.eventually("config applied", func() error {
		if m.wp.Store().Snapshot().Version == before {
			return errors.New("no new snapshot yet")
		}
		return nil
	})
}

// client returns an HTTP client whose connections are HBONE tunnels to
// the waypoint with target authority.
func (m *mesh) httpClient(authority string, h2 bool) *http.Client {
	return m.httpClientFrom(authority, h2, netip.AddrPortFrom(clientIP, 40000))
}

// httpClientFrom is httpClient with tunnels that claim (Forwarded) to
// come from src, under the client's identity.
func (m *mesh) httpClientFrom(authority string, h2 bool, src netip.AddrPort) *http.Client {
	ap := netip.MustParseAddrPort(authority)
	wpAddr := netip.MustParseAddrPort(m.wp.HBONEAddr().String())
	t := &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return m.client.Dial(ctx, &hbone.DialRequest{NextHop: wpAddr, Authority: ap, SourceID: clientID,
				Certificate: func() (*tls.Certificate, error) { return m.clientC.TLSCertificate(), nil },
				ExpectedIDs: []spiffeid.ID{m.wp.Identity()}, SourceIP: src.Addr(),
				Forwarded: hbone.FormatForwarded(src, "")})
		},
	}
	var p http.Protocols
	if h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	t.Protocols = &p
	m.t.Cleanup(t.CloseIdleConnections)
	return &http.Client{Transport: t, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// result is a response as seen by the client.
type result struct {
	code int
	hdr  http.Header
	body string
	echo echo
}

func (m *mesh) do(c *http.Client, method, url string, hdr map[string]string, body string) result {
	m.t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		m.t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		m.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{code: resp.StatusCode, hdr: resp.Header, body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &r.echo)
	}
	return r
}

func (m *mesh) get(c *http.Client, url string, hdr map[string]string) result {
	m.t.Helper()
	return m.do(c, http.MethodGet, url, hdr, "")
}

// tunnel opens a raw HBONE stream to the waypoint for authority.
func (m *mesh) tunnel(ctx context.Context, authority string) (*hbone.ClientStream, error) {
	return m.client.Dial(ctx, &hbone.DialRequest{NextHop: netip.MustParseAddrPort(m.wp.HBONEAddr().String()), Authority: netip.MustParseAddrPort(authority),
		SourceID: clientID, Certificate: func() (*tls.Certificate, error) { return m.clientC.TLSCertificate(), nil },
		ExpectedIDs: []spiffeid.ID{m.wp.Identity()}, SourceIP: clientIP,
		Forwarded: hbone.FormatForwarded(netip.AddrPortFrom(clientIP, 40000), "")})
}
