package caclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
)

var meshTD = spiffeid.RequireTrustDomainFromString("cluster.local")

const appID = "spiffe://cluster.local/ns/default/sa/app"

func newAuthority(t *testing.T) *ca.Authority {
	t.Helper()
	m, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// serve runs svc on a TLS gRPC server whose certificate a issues, and
// returns a client connection trusting a's root.
func serve(t *testing.T, a *ca.Authority, register func(grpc.ServiceRegistrar)) *grpc.ClientConn {
	t.Helper()
	sc, err := ca.NewServingCert(a, ca.ServingCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.Stop)
	cfg, err := mtls.ServerConfig(sc.Holder(), mtls.ServerOptions{ClientCertOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		wg.Wait()
	})
	creds, err := caclient.TransportCredentials([]*x509.Certificate{a.Root()}, "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestFetchWithTokenFile(t *testing.T) {
	a := newAuthority(t)
	tokens, err := auth.ParseStaticTokens(strings.NewReader("t1 " + appID + "\nt2 " + appID + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.NewServer(ca.ServerOptions{Authority: a, Authenticator: tokens})
	if err != nil {
		t.Fatal(err)
	}
	cc := serve(t, a, srv.Register)
	tokenFile := filepath.Join(t.TempDir(), "token")
	c, err := caclient.New(cc, caclient.Options{Roots: []*x509.Certificate{a.Root()}, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := spiffeid.RequireFromString(appID)

	if _, err := c.Fetch(ctx, caclient.Request{Identity: id}); err == nil || !strings.Contains(err.Error(), "read token") {
		t.Fatalf("fetch without token file: %v", err)
	}
	for i, tc := range []struct {
		token string
		code  codes.Code
	}{{"t1\n", codes.OK}, {"bogus", codes.Unauthenticated}, {"t2", codes.OK}} {
		if err := os.WriteFile(tokenFile, []byte(tc.token), 0o600); err != nil {
			t.Fatal(err)
		}
		cert, err := c.Fetch(ctx, caclient.Request{Identity: id})
		if status.Code(err) != tc.code {
			t.Fatalf("fetch %d: %v, want %v", i, err, tc.code)
		}
		if err != nil {
			continue
		}
		if cert.Leaf().URIs[0].String() != appID || len(cert.Leaf().URIs) != 1 {
			t.Fatalf("fetch %d: leaf URIs %v", i, cert.Leaf().URIs)
		}
		if err := cert.Verify(time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, ok := cert.Key().(*ecdsa.PrivateKey); !ok {
			t.Fatalf("key type %T", cert.Key())
		}
		if d := time.Until(cert.NotAfter()); d < 23*time.Hour || d > 25*time.Hour {
			t.Fatalf("default lifetime %s", d)
		}
	}
}

// lyingCA is a misbehaving CA: it answers with whatever chain mangle
// produces from a correct one.
type lyingCA struct {
	pb.UnimplementedIstioCertificateServiceServer
	a      *ca.Authority
	mangle func(t *testing.T, csr []byte, chain []string) []string
	t      *testing.T
}

func (l *lyingCA) CreateCertificate(_ context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	chain, err := l.a.Sign([]byte(req.Csr), spiffeid.RequireFromString(appID), 0)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var out []string
	for _, c := range chain {
		out = append(out, string(mtls.EncodeCertificatesPEM(c)))
	}
	return &pb.IstioCertificateResponse{CertChain: l.mangle(l.t, []byte(req.Csr), out)}, nil
}

func TestFetchVerifiesResponse(t *testing.T) {
	a := newAuthority(t)
	other := newAuthority(t)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signOther := func(t *testing.T, csr []byte, id string) []string {
		chain, err := other.Sign(csr, spiffeid.RequireFromString(id), 0)
		if err != nil {
			t.Fatal(err)
		}
		return []string{string(mtls.EncodeCertificatesPEM(chain[0])), string(mtls.EncodeCertificatesPEM(chain[1]))}
	}
	tests := []struct {
		name    string
		mangle  func(t *testing.T, csr []byte, chain []string) []string
		want    string
		wantErr string
	}{
		{name: "honest", mangle: func(_ *testing.T, _ []byte, c []string) []string { return c }, want: appID},
		{name: "only leaf", mangle: func(_ *testing.T, _ []byte, c []string) []string { return c[:1] }, wantErr: "at least leaf and root"},
		{name: "garbage leaf", mangle: func(_ *testing.T, _ []byte, c []string) []string { return []string{"junk", c[1]} }, wantErr: "chain element 0"},
		{name: "garbage root", mangle: func(_ *testing.T, _ []byte, c []string) []string { return []string{c[0], "junk"} }, wantErr: "root element"},
		{name: "untrusted root", mangle: func(t *testing.T, csr []byte, _ []string) []string { return signOther(t, csr, appID) }, wantErr: "x509svid"},
		{name: "wrong identity", mangle: func(t *testing.T, csr []byte, _ []string) []string {
			chain, err := a.Sign(csr, spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/other"), 0)
			if err != nil {
				t.Fatal(err)
			}
			return []string{string(mtls.EncodeCertificatesPEM(chain[0])), string(mtls.EncodeCertificatesPEM(chain[1]))}
		}, wantErr: "issued for"},
		{name: "someone else's key", mangle: func(t *testing.T, _ []byte, _ []string) []string {
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, otherKey)
			if err != nil {
				t.Fatal(err)
			}
			c2, err := a.Sign(pemCSR(csr), spiffeid.RequireFromString(appID), 0)
			if err != nil {
				t.Fatal(err)
			}
			return []string{string(mtls.EncodeCertificatesPEM(c2[0])), string(mtls.EncodeCertificatesPEM(c2[1]))}
		}, wantErr: "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := serve(t, a, func(r grpc.ServiceRegistrar) {
				pb.RegisterIstioCertificateServiceServer(r, &lyingCA{a: a, mangle: tt.mangle, t: t})
			})
			c, err := caclient.New(cc, caclient.Options{Roots: []*x509.Certificate{a.Root()}, Token: "x"})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cert, err := c.Fetch(ctx, caclient.Request{Identity: spiffeid.RequireFromString(appID)})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cert.Leaf().URIs[0].String(); got != tt.want {
				t.Fatalf("got %s", got)
			}
		})
	}
}

func TestServerIdentityChecked(t *testing.T) {
	a := newAuthority(t)
	impostor := newAuthority(t)
	// The CA endpoint's certificate comes from a root the client does not trust.
	cc := serve(t, impostor, func(r grpc.ServiceRegistrar) {})
	creds, err := caclient.TransportCredentials([]*x509.Certificate{a.Root()}, "")
	if err != nil {
		t.Fatal(err)
	}
	target := cc.Target()
	bad, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bad.Close() }()
	c, err := caclient.New(bad, caclient.Options{Roots: []*x509.Certificate{a.Root()}, Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Fetch(ctx, caclient.Request{Identity: spiffeid.RequireFromString(appID)}); status.Code(err) != codes.Unavailable {
		t.Fatalf("fetch from an untrusted endpoint: %v, want Unavailable", err)
	}
}

func TestNewValidation(t *testing.T) {
	a := newAuthority(t)
	roots := []*x509.Certificate{a.Root()}
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(credentials.NewTLS(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	tests := []struct {
		name string
		conn grpc.ClientConnInterface
		opts caclient.Options
	}{
		{"nil conn", nil, caclient.Options{Roots: roots, Token: "x"}},
		{"no roots", cc, caclient.Options{Token: "x"}},
		{"no token", cc, caclient.Options{Roots: roots}},
		{"negative ttl", cc, caclient.Options{Roots: roots, Token: "x", TTL: -time.Second}},
	}
	for _, tt := range tests {
		if _, err := caclient.New(tt.conn, tt.opts); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	c, err := caclient.New(cc, caclient.Options{Roots: roots, Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(context.Background(), caclient.Request{}); err == nil {
		t.Error("empty identity accepted")
	}
}

func pemCSR(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// silentCA accepts the call and never answers.
type silentCA struct {
	pb.UnimplementedIstioCertificateServiceServer
}

func (silentCA) CreateCertificate(ctx context.Context, _ *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestFetchTimesOut: a CA that never answers fails the fetch after
// Options.Timeout, even when the caller's context has no deadline.
func TestFetchTimesOut(t *testing.T) {
	a := newAuthority(t)
	cc := serve(t, a, func(s grpc.ServiceRegistrar) { pb.RegisterIstioCertificateServiceServer(s, silentCA{}) })
	c, err := caclient.New(cc, caclient.Options{Roots: []*x509.Certificate{a.Root()}, Token: "t", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Fetch(context.Background(), caclient.Request{Identity: spiffeid.RequireFromString(appID)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("fetch from a silent CA: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("fetch took %v", d)
	}
}

// TestFetchReadsRootsEachTime: with RootsFrom, each fetch verifies the
// CA's answer against the anchors of the moment, so a rotated root file
// takes effect without a new client; the certificate carries them.
func TestFetchReadsRootsEachTime(t *testing.T) {
	a := newAuthority(t)
	other := newAuthority(t)
	cc := serve(t, a, func(s grpc.ServiceRegistrar) {
		pb.RegisterIstioCertificateServiceServer(s, &lyingCA{a: a, t: t, mangle: func(_ *testing.T, _ []byte, c []string) []string { return c }})
	})
	var cur atomic.Pointer[[]*x509.Certificate]
	cur.Store(&[]*x509.Certificate{other.Root()})
	c, err := caclient.New(cc, caclient.Options{RootsFrom: func() []*x509.Certificate { return *cur.Load() }, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString(appID)
	if _, err := c.Fetch(context.Background(), caclient.Request{Identity: id}); err == nil || !strings.Contains(err.Error(), "x509svid") {
		t.Fatalf("fetch while the CA's root is not trusted: %v", err)
	}
	cur.Store(&[]*x509.Certificate{other.Root(), a.Root()})
	cert, err := c.Fetch(context.Background(), caclient.Request{Identity: id})
	if err != nil {
		t.Fatalf("fetch once the root is trusted: %v", err)
	}
	if len(cert.Roots()) != 2 {
		t.Fatalf("certificate carries %d roots, want the 2 current ones", len(cert.Roots()))
	}
}
