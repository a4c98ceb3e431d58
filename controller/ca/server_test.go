package ca_test

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
)

const (
	ztunnelID = "spiffe://cluster.local/ns/istio-system/sa/ztunnel"
	appID     = "spiffe://cluster.local/ns/default/sa/app"
	reviewsID = "spiffe://cluster.local/ns/default/sa/reviews"
	ratingsID = "spiffe://cluster.local/ns/default/sa/ratings"
)

const tokenTable = `# test tokens
ztunnel-node1  spiffe://cluster.local/ns/istio-system/sa/ztunnel  node1
ztunnel-nonode spiffe://cluster.local/ns/istio-system/sa/ztunnel
app            spiffe://cluster.local/ns/default/sa/app           node1
foreign        spiffe://other.domain/ns/default/sa/app            node1
`

// nodeIndex is a fixed node → namespace/serviceaccount table standing in
// for the controller's workload index.
type nodeIndex map[string][]string

func (n nodeIndex) HasWorkload(node, namespace, sa string) bool {
	for _, w := range n[node] {
		if w == namespace+"/"+sa {
			return true
		}
	}
	return false
}

// testLogWriter sends log lines to the test log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

type caEnv struct {
	addr  string
	roots []*x509.Certificate
	reg   *prometheus.Registry
	auth  *ca.Authority
}

func startCA(t *testing.T, nodes ca.NodeWorkloads) *caEnv {
	t.Helper()
	m, err := ca.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), ca.LoadOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.NewAuthority(m, ca.AuthorityOptions{TrustDomain: meshTD})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.NewServingCert(a, ca.ServingCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := serving.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serving.Stop)

	tokens, err := auth.ParseStaticTokens(strings.NewReader(tokenTable))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := ca.NewServer(ca.ServerOptions{
		Authority:     a,
		Authenticator: auth.Chain{tokens, auth.ClientCert{TrustDomain: meshTD}},
		NodeWorkloads: nodes,
		Registerer:    reg,
		Logger:        slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := mtls.ServerConfig(serving.Holder(), mtls.ServerOptions{TrustDomain: meshTD, ClientCertOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	srv.Register(gs)
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
	return &caEnv{addr: lis.Addr().String(), roots: []*x509.Certificate{a.Root()}, reg: reg, auth: a}
}

func (e *caEnv) conn(t *testing.T, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		var err error
		creds, err = caclient.TransportCredentials(e.roots, "")
		if err != nil {
			t.Fatal(err)
		}
	}
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (e *caEnv) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestCreateCertificate(t *testing.T) {
	env := startCA(t, nodeIndex{"node1": {"default/reviews"}, "node2": {"default/ratings"}})
	rpc := pb.NewIstioCertificateServiceClient(env.conn(t, nil))
	bundle := x509bundle.FromX509Authorities(meshTD, env.roots)

	str := structpb.NewStringValue
	tests := []struct {
		name        string
		token       string // "" sends no authorization header
		rawAuth     string // overrides the header value when set
		impersonate *structpb.Value
		csr         []byte
		validity    int64
		wantCode    codes.Code
		wantID      string
		wantTTL     time.Duration
	}{
		{name: "own identity", token: "app", wantID: appID, wantTTL: 24 * time.Hour},
		{name: "node proxy own identity", token: "ztunnel-node1", wantID: ztunnelID, wantTTL: 24 * time.Hour},
		{name: "impersonation of a pod on the node", token: "ztunnel-node1", impersonate: str(reviewsID), wantID: reviewsID, wantTTL: 24 * time.Hour},
		{name: "requested validity", token: "app", validity: 3600, wantID: appID, wantTTL: time.Hour},
		{name: "validity clamped", token: "app", validity: 1 << 40, wantID: appID, wantTTL: 90 * 24 * time.Hour},
		{name: "empty impersonation is none", token: "app", impersonate: str(""), wantID: appID, wantTTL: 24 * time.Hour},
		{name: "impersonation of a service account not on the node", token: "ztunnel-node1", impersonate: str(ratingsID), wantCode: codes.Unauthenticated},
		{name: "non-node caller impersonating", token: "app", impersonate: str(reviewsID), wantCode: codes.Unauthenticated},
		{name: "node caller without node", token: "ztunnel-nonode", impersonate: str(reviewsID), wantCode: codes.Unauthenticated},
		{name: "impersonation in another trust domain", token: "ztunnel-node1", impersonate: str("spiffe://other.domain/ns/default/sa/reviews"), wantCode: codes.Unauthenticated},
		{name: "impersonation of a non-workload id", token: "ztunnel-node1", impersonate: str("spiffe://cluster.local/ns/default"), wantCode: codes.Unauthenticated},
		{name: "impersonation not a string", token: "ztunnel-node1", impersonate: structpb.NewNumberValue(1), wantCode: codes.Unauthenticated},
		{name: "caller in another trust domain", token: "foreign", wantCode: codes.Unauthenticated},
		{name: "missing token", token: "", wantCode: codes.Unauthenticated},
		{name: "wrong token", token: "nope", wantCode: codes.Unauthenticated},
		{name: "not bearer", rawAuth: "Basic YXBwOmFwcA==", wantCode: codes.Unauthenticated},
		{name: "malformed CSR", token: "app", csr: []byte("garbage"), wantCode: codes.InvalidArgument},
		{name: "CSR checked after authentication", token: "nope", csr: []byte("garbage"), wantCode: codes.Unauthenticated},
	}
	var ok, refused, invalid int
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := newKey(t)
			csr := tt.csr
			if csr == nil {
				// The CSR asks for something else: the SAN must come from
				// the authorization decision.
				csr = csrFor(t, key, "spiffe://cluster.local/ns/kube-system/sa/admin")
			}
			req := &pb.IstioCertificateRequest{Csr: string(csr), ValidityDuration: tt.validity}
			if tt.impersonate != nil {
				req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{ca.ImpersonatedIdentityKey: tt.impersonate}}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			switch {
			case tt.rawAuth != "":
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tt.rawAuth)
			case tt.token != "":
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tt.token)
			}
			resp, err := rpc.CreateCertificate(ctx, req)
			if tt.wantCode != codes.OK {
				if status.Code(err) != tt.wantCode {
					t.Fatalf("code %v (%v), want %v", status.Code(err), err, tt.wantCode)
				}
				if tt.wantCode == codes.Unauthenticated {
					refused++
					if msg := status.Convert(err).Message(); msg != "request authentication failure" {
						t.Fatalf("refusal message %q is not the opaque one", msg)
					}
				} else {
					invalid++
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ok++
			chain := parseChain(t, resp.CertChain)
			if len(chain) != 2 || !chain[1].Equal(env.roots[0]) {
				t.Fatalf("chain has %d certificates, want leaf and root", len(chain))
			}
			if !strings.HasSuffix(resp.CertChain[0], "\n") {
				t.Error("chain element does not end in a newline")
			}
			leaf := chain[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tt.wantID {
				t.Fatalf("URI SANs %v, want exactly %s", leaf.URIs, tt.wantID)
			}
			if leaf.IsCA {
				t.Fatal("leaf is a CA")
			}
			id, _, err := x509svid.Verify(chain[:1], bundle)
			if err != nil {
				t.Fatal(err)
			}
			if id.String() != tt.wantID {
				t.Fatalf("verified %s", id)
			}
			lifetime := leaf.NotAfter.Sub(leaf.NotBefore) - 5*time.Minute
			if d := lifetime - tt.wantTTL; d < -time.Minute || d > time.Minute {
				t.Fatalf("lifetime %s, want ~%s", lifetime, tt.wantTTL)
			}
		})
	}

	for name, want := range map[string]int{
		"citadel_server_csr_count":                    len(tests),
		"citadel_server_success_cert_issuance_count":  ok,
		"citadel_server_authentication_failure_count": refused,
		"citadel_server_csr_parsing_err_count":        invalid,
	} {
		if got := env.counter(t, name); got != float64(want) {
			t.Errorf("%s = %v, want %d", name, got, want)
		}
	}
}

func parseChain(t *testing.T, elems []string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, e := range elems {
		certs, err := mtls.ParseCertificatesPEM([]byte(e))
		if err != nil {
			t.Fatal(err)
		}
		if len(certs) != 1 {
			t.Fatalf("chain element holds %d certificates, want 1", len(certs))
		}
		out = append(out, certs...)
	}
	return out
}

// TestCaClientAndClientCert fetches certificates with pkg/caclient (token
// and impersonation), then authenticates with the issued certificate alone.
func TestCaClientAndClientCert(t *testing.T) {
	env := startCA(t, nodeIndex{"node1": {"default/reviews"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	node, err := caclient.New(env.conn(t, nil), caclient.Options{Roots: env.roots, Token: "ztunnel-node1", TTL: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	reviews := spiffeID(t, reviewsID)
	cert, err := node.Fetch(ctx, caclient.Request{Identity: reviews, Impersonate: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.Leaf().URIs[0].String(); got != reviewsID {
		t.Fatalf("issued %s", got)
	}
	if d := time.Until(cert.NotAfter()); d > 2*time.Hour || d < 2*time.Hour-time.Minute {
		t.Fatalf("NotAfter in %s, want ~2h", d)
	}
	if _, err := node.Fetch(ctx, caclient.Request{Identity: spiffeID(t, ratingsID), Impersonate: true}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("impersonating ratings: %v, want Unauthenticated", err)
	}
	// Asking for someone else's identity without impersonation: the CA
	// issues the caller's own identity, which the client rejects.
	if _, err := node.Fetch(ctx, caclient.Request{Identity: reviews}); err == nil || !strings.Contains(err.Error(), "issued for") {
		t.Fatalf("fetch of a foreign identity without impersonation: %v", err)
	}

	// A client presenting the reviews certificate (no token) gets its own
	// identity through the ClientCert authenticator.
	tlsCfg, err := mtls.ClientConfig(mtls.ClientOptions{
		Roots:      env.roots,
		Cert:       mtls.NewHolder(cert),
		ServerName: caclient.DefaultServerName,
	})
	if err != nil {
		t.Fatal(err)
	}
	rpc := pb.NewIstioCertificateServiceClient(env.conn(t, credentials.NewTLS(tlsCfg)))
	resp, err := rpc.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csrFor(t, newKey(t)))})
	if err != nil {
		t.Fatal(err)
	}
	if got := parseChain(t, resp.CertChain)[0].URIs[0].String(); got != reviewsID {
		t.Fatalf("client-cert caller got %s", got)
	}
}

func TestServingCertificate(t *testing.T) {
	a, m := newRootAuthority(t, ca.AuthorityOptions{})
	sc, err := ca.NewServingCert(a, ca.ServingCertOptions{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Holder().Load() != nil {
		t.Fatal("holder filled before Start")
	}
	if err := sc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sc.Stop()
	if err := sc.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	first := sc.Holder().Load()
	leaf := first.Leaf()
	for _, name := range []string{"istiod.istio-system.svc", "zmesh-controller.istio-system.svc", "localhost", "127.0.0.1"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("serving certificate: %v", err)
		}
	}
	if len(leaf.URIs) != 0 || leaf.IsCA {
		t.Fatal("serving certificate has URI SANs or is a CA")
	}
	if err := first.Verify(time.Now()); err != nil {
		t.Fatal(err)
	}
	if !first.Roots()[0].Equal(m.Root) {
		t.Fatal("serving certificate roots are not the CA root")
	}
	// Renewed at half life (~1s).
	deadline := time.Now().Add(5 * time.Second)
	for sc.Holder().Load() == first {
		if time.Now().After(deadline) {
			t.Fatal("serving certificate not renewed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if sc.Holder().Load().Leaf().SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("renewal reused the serial")
	}
	sc.Stop()
	sc.Stop()

	if _, err := ca.NewServingCert(a, ca.ServingCertOptions{DNSNames: []string{}, IPs: []net.IP{}}); err == nil {
		t.Fatal("serving certificate without names accepted")
	}
}

func TestNewServerValidation(t *testing.T) {
	a, _ := newRootAuthority(t, ca.AuthorityOptions{})
	tokens, err := auth.NewStaticTokens(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.NewServer(ca.ServerOptions{Authenticator: tokens}); err == nil {
		t.Error("server without authority accepted")
	}
	if _, err := ca.NewServer(ca.ServerOptions{Authority: a}); err == nil {
		t.Error("server without authenticator accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := ca.NewServer(ca.ServerOptions{Authority: a, Authenticator: tokens, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.NewServer(ca.ServerOptions{Authority: a, Authenticator: tokens, Registerer: reg}); err == nil {
		t.Error("duplicate metric registration not reported")
	}
}
