package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/pkg/mtls"
)

var meshTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// testPKI issues real certificates from a CA in the cluster.local trust
// domain; "foreign" identities are issued by a CA configured for another
// trust domain but chaining to the same root.
type testPKI struct {
	mesh, foreign *ca.Authority
	root          *x509.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	m, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: spiffeid.RequireTrustDomainFromString("other.domain")})
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{mesh: mesh, foreign: foreign, root: m.Root}
}

func (p *testPKI) workload(t *testing.T, id string) *mtls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	sid := spiffeid.RequireFromString(id)
	a := p.mesh
	if !sid.MemberOf(meshTD) {
		a = p.foreign
	}
	chain, err := a.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), sid, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mtls.NewCertificate(key, chain[:len(chain)-1], chain[len(chain)-1:])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (p *testPKI) serving(t *testing.T) *mtls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := p.mesh.IssueServing(key.Public(), []string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mtls.NewCertificate(key, chain[:len(chain)-1], chain[len(chain)-1:])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startServer runs a real gRPC server (health service) whose interceptor
// authenticates every call with authn and returns the identity and node as
// response headers.
func startServer(t *testing.T, p *testPKI, authn auth.Authenticator) string {
	t.Helper()
	cfg, err := mtls.ServerConfig(mtls.NewHolder(p.serving(t)), mtls.ServerOptions{ClientCertOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	intercept := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		caller, err := authn.Authenticate(ctx)
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-identity", caller.Identity, "x-node", caller.Node))
		return h(ctx, req)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(intercept))
	healthpb.RegisterHealthServer(gs, health.NewServer())
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
	return lis.Addr().String()
}

// call returns the caller the server saw, or the authentication error.
func call(t *testing.T, p *testPKI, addr string, cert *mtls.Certificate, token string) (auth.Caller, error) {
	t.Helper()
	opts := mtls.ClientOptions{Roots: []*x509.Certificate{p.root}, ServerName: "localhost"}
	if cert != nil {
		opts.Cert = mtls.NewHolder(cert)
	}
	cfg, err := mtls.ClientConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	var hdr metadata.MD
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
	if err != nil {
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("unexpected RPC error %v", err)
		}
		return auth.Caller{}, errors.New(status.Convert(err).Message())
	}
	first := func(k string) string {
		if v := hdr.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return auth.Caller{Identity: first("x-identity"), Node: first("x-node")}, nil
}

func TestClientCertAndChain(t *testing.T) {
	p := newPKI(t)
	tokens, err := auth.ParseStaticTokens(strings.NewReader("ztunnel-tok spiffe://cluster.local/ns/istio-system/sa/ztunnel node-1\n"))
	if err != nil {
		t.Fatal(err)
	}
	app := p.workload(t, "spiffe://cluster.local/ns/default/sa/app")
	foreign := p.workload(t, "spiffe://other.domain/ns/default/sa/app")

	certOnly := startServer(t, p, auth.ClientCert{TrustDomain: meshTD})
	anyTD := startServer(t, p, auth.ClientCert{})
	chained := startServer(t, p, auth.Chain{tokens, auth.ClientCert{TrustDomain: meshTD}})

	tests := []struct {
		name    string
		addr    string
		cert    *mtls.Certificate
		token   string
		want    auth.Caller
		wantErr []string
	}{
		{name: "client cert", addr: certOnly, cert: app, want: auth.Caller{Identity: "spiffe://cluster.local/ns/default/sa/app"}},
		{name: "no client cert", addr: certOnly, wantErr: []string{"no verified client certificate"}},
		{name: "foreign trust domain", addr: certOnly, cert: foreign, wantErr: []string{"outside trust domain"}},
		{name: "any trust domain", addr: anyTD, cert: foreign, want: auth.Caller{Identity: "spiffe://other.domain/ns/default/sa/app"}},
		{name: "chain: token", addr: chained, token: "ztunnel-tok", want: auth.Caller{Identity: "spiffe://cluster.local/ns/istio-system/sa/ztunnel", Node: "node-1"}},
		{name: "chain: token wins over cert", addr: chained, cert: app, token: "ztunnel-tok", want: auth.Caller{Identity: "spiffe://cluster.local/ns/istio-system/sa/ztunnel", Node: "node-1"}},
		{name: "chain: cert after bad token", addr: chained, cert: app, token: "nope", want: auth.Caller{Identity: "spiffe://cluster.local/ns/default/sa/app"}},
		{name: "chain: nothing", addr: chained, wantErr: []string{"no authorization header", "no verified client certificate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := call(t, p, tt.addr, tt.cert, tt.token)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("authenticated as %+v", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v want %+v", got, tt.want)
			}
		})
	}
}

func TestClientCertWithoutTLS(t *testing.T) {
	if _, err := (auth.ClientCert{}).Authenticate(context.Background()); err == nil {
		t.Fatal("authenticated without peer information")
	}
	if _, err := (auth.Chain{}).Authenticate(context.Background()); err == nil {
		t.Fatal("empty chain authenticated")
	}
}
