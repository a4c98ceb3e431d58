// Package caclient requests workload certificates from the mesh CA over
// Istio's IstioCertificateService.CreateCertificate: it generates a key and
// CSR, authenticates with a bearer token, optionally asks for an
// impersonated identity (node proxies), and verifies what comes back before
// handing it out as an mtls.Certificate.
package caclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/zmesh/zmesh/pkg/mtls"
)

// ImpersonatedIdentityKey is the request metadata field carrying the
// identity a node proxy asks for.
const ImpersonatedIdentityKey = "ImpersonatedIdentity"

// DefaultServerName is the DNS name the CA endpoint's certificate is checked
// against, as in Istio.
const DefaultServerName = "istiod.istio-system.svc"

// Options configure New.
type Options struct {
	// Roots are the mesh trust anchors: returned chains must verify to one
	// of them. Required unless RootsFrom is set.
	Roots []*x509.Certificate
	// RootsFrom, when set, is called at each fetch for the trust anchors
	// (for example a reloaded root file, so a root rotation needs no
	// restart); it takes precedence over Roots.
	RootsFrom func() []*x509.Certificate
	// Token is the bearer token sent as "authorization: Bearer <token>".
	Token string
	// TokenFile, when set, is read on every request (projected tokens
	// rotate); it takes precedence over Token.
	TokenFile string
	// TTL is the requested validity (0 lets the CA pick its default).
	TTL time.Duration
	// Timeout bounds one CreateCertificate call, so a CA that went away
	// without closing the connection fails the fetch (and its caller
	// retries) instead of hanging it. Default DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout is Options.Timeout's default.
const DefaultTimeout = 30 * time.Second

// Client fetches certificates over a gRPC connection it does not own.
type Client struct {
	rpc  pb.IstioCertificateServiceClient
	opts Options // RootsFrom always set
}

// New validates the options. conn is typically built with TransportCredentials.
func New(conn grpc.ClientConnInterface, opts Options) (*Client, error) {
	if conn == nil {
		return nil, errors.New("caclient: nil connection")
	}
	if len(opts.Roots) == 0 && opts.RootsFrom == nil {
		return nil, errors.New("caclient: no trust anchors")
	}
	if opts.Token == "" && opts.TokenFile == "" {
		return nil, errors.New("caclient: need Token or TokenFile")
	}
	if opts.TTL < 0 || opts.Timeout < 0 {
		return nil, fmt.Errorf("caclient: negative TTL %s or Timeout %s", opts.TTL, opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.RootsFrom == nil {
		roots := append([]*x509.Certificate(nil), opts.Roots...)
		opts.RootsFrom = func() []*x509.Certificate { return roots }
	}
	return &Client{rpc: pb.NewIstioCertificateServiceClient(conn), opts: opts}, nil
}

// TransportCredentials returns TLS 1.3 gRPC credentials for the CA endpoint:
// the server's chain must verify to roots and carry serverName
// (DefaultServerName when empty). No client certificate is sent.
func TransportCredentials(roots []*x509.Certificate, serverName string) (credentials.TransportCredentials, error) {
	return credentialsFor(mtls.ClientOptions{Roots: roots}, serverName)
}

// TransportCredentialsFrom is TransportCredentials with the trust anchors
// read from roots at each handshake (a reloaded root file).
func TransportCredentialsFrom(roots func() []*x509.Certificate, serverName string) (credentials.TransportCredentials, error) {
	if roots == nil {
		return nil, errors.New("caclient: nil roots function")
	}
	return credentialsFor(mtls.ClientOptions{RootsFrom: roots}, serverName)
}

func credentialsFor(opts mtls.ClientOptions, serverName string) (credentials.TransportCredentials, error) {
	if serverName == "" {
		serverName = DefaultServerName
	}
	opts.ServerName = serverName
	cfg, err := mtls.ClientConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("caclient: %w", err)
	}
	return credentials.NewTLS(cfg), nil
}

// Request says which certificate to fetch.
type Request struct {
	// Identity is the SPIFFE ID the certificate must carry. Required.
	Identity spiffeid.ID
	// Impersonate sends Identity as ImpersonatedIdentity: the caller (a node
	// proxy) asks on behalf of a workload on its node. Otherwise Identity
	// must be the caller's own.
	Impersonate bool
}

// Fetch generates an ECDSA P-256 key and a CSR (empty subject, one URI SAN:
// the identity), calls CreateCertificate and verifies the response: the leaf
// is for the generated key, is an X.509-SVID whose only URI SAN is the
// requested identity, and the chain verifies to one of the client's roots.
// The returned Certificate's roots are the client's trust anchors.
func (c *Client) Fetch(ctx context.Context, req Request) (*mtls.Certificate, error) {
	if req.Identity.IsZero() {
		return nil, errors.New("caclient: empty identity")
	}
	token, err := c.token()
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("caclient: generate key: %w", err)
	}
	csrPEM, err := newCSR(key, req.Identity)
	if err != nil {
		return nil, err
	}
	in := &pb.IstioCertificateRequest{
		Csr:              string(csrPEM),
		ValidityDuration: int64(c.opts.TTL / time.Second),
	}
	if req.Impersonate {
		in.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			ImpersonatedIdentityKey: structpb.NewStringValue(req.Identity.String()),
		}}
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp, err := c.rpc.CreateCertificate(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("caclient: CreateCertificate for %s: %w", req.Identity, err)
	}
	cert, err := c.verify(key, req.Identity, resp.GetCertChain())
	if err != nil {
		return nil, fmt.Errorf("caclient: response for %s: %w", req.Identity, err)
	}
	return cert, nil
}

func (c *Client) token() (string, error) {
	if c.opts.TokenFile == "" {
		return c.opts.Token, nil
	}
	b, err := os.ReadFile(c.opts.TokenFile)
	if err != nil {
		return "", fmt.Errorf("caclient: read token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("caclient: token file %s is empty", c.opts.TokenFile)
	}
	return t, nil
}
