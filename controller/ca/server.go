package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// ImpersonatedIdentityKey is the request metadata field through which a node
// proxy asks for a certificate on behalf of a workload.
const ImpersonatedIdentityKey = "ImpersonatedIdentity"

// Messages returned to clients. They are deliberately vague; the reason is
// logged.
const (
	msgUnauthenticated = "request authentication failure"
	msgInvalidCSR      = "invalid certificate signing request"
	msgSignFailed      = "certificate signing failed"
)

// ServerOptions configure NewServer.
type ServerOptions struct {
	// Authority signs the certificates. Required.
	Authority *Authority
	// Authenticator identifies callers. Required.
	Authenticator auth.Authenticator
	// NodeWorkloads confirms that an impersonated service account has a pod
	// on the caller's node. When nil, every impersonation is refused.
	NodeWorkloads NodeWorkloads
	// TrustedNodeIdentities may impersonate workloads on their node. Nil
	// means spiffe://<trust-domain>/ns/istio-system/sa/ztunnel.
	TrustedNodeIdentities []spiffeid.ID
	// Registerer receives the CA's counters; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Logger is the server's logger (discarded when nil).
	Logger *slog.Logger
}

// Server implements istio.v1.auth.IstioCertificateService.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer

	ca      *Authority
	authn   auth.Authenticator
	nodes   *nodeAuthorizer
	metrics *metrics
	log     *slog.Logger
}

// NewServer validates the options, registers the counters and returns a
// Server. It starts nothing.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Authority == nil {
		return nil, errors.New("ca: server needs an Authority")
	}
	if opts.Authenticator == nil {
		return nil, errors.New("ca: server needs an Authenticator")
	}
	td := opts.Authority.TrustDomain()
	trusted := opts.TrustedNodeIdentities
	if trusted == nil {
		id, err := spiffeid.FromSegments(td, "ns", "istio-system", "sa", "ztunnel")
		if err != nil {
			return nil, fmt.Errorf("ca: default trusted node identity: %w", err)
		}
		trusted = []spiffeid.ID{id}
	}
	for _, id := range trusted {
		if id.IsZero() {
			return nil, errors.New("ca: empty trusted node identity")
		}
	}
	m, err := newMetrics(opts.Registerer, opts.Authority)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		ca:    opts.Authority,
		authn: opts.Authenticator,
		nodes: &nodeAuthorizer{
			td:        td,
			trusted:   append([]spiffeid.ID(nil), trusted...),
			workloads: opts.NodeWorkloads,
		},
		metrics: m,
		log:     logger,
	}, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	pb.RegisterIstioCertificateServiceServer(r, s)
}

// CreateCertificate authenticates the caller and issues a certificate for
// its own identity (which must be in the mesh trust domain), or, when the
// metadata carries a non-empty ImpersonatedIdentity, for that identity if
// the caller is a trusted node identity with a known node, the identity is
// a spiffe://<mesh-td>/ns/<ns>/sa/<sa> ID, and NodeWorkloads reports a pod
// of that service account on the caller's node. Any refusal is codes.Unauthenticated with
// a fixed message; a bad CSR is codes.InvalidArgument. The response chain is
// PEM, one certificate per element, leaf first and root last.
// ValidityDuration (seconds) <= 0 means the default TTL; longer than the
// maximum is clamped.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	s.metrics.csr.Inc()
	log := s.log.With("peer", peerAddr(ctx))

	caller, err := s.authn.Authenticate(ctx)
	if err != nil {
		return nil, s.refuse(log, "authentication failed", err)
	}
	log = log.With("caller", caller.Identity, "node", caller.Node)
	callerID, err := spiffeid.FromString(caller.Identity)
	if err != nil {
		return nil, s.refuse(log, "caller identity is not a SPIFFE ID", err)
	}

	identity := callerID
	impersonated, present, err := impersonation(req.GetMetadata())
	if err != nil {
		return nil, s.refuse(log, "bad impersonation metadata", err)
	}
	if present {
		identity, err = s.nodes.authorize(caller, callerID, impersonated)
		if err != nil {
			return nil, s.refuse(log.With("impersonated", impersonated), "impersonation refused", err)
		}
	} else if !callerID.MemberOf(s.ca.TrustDomain()) {
		return nil, s.refuse(log, "caller identity outside the mesh trust domain", nil)
	}

	ttl := validity(req.GetValidityDuration())
	chain, err := s.ca.Sign([]byte(req.GetCsr()), identity, ttl)
	if errors.Is(err, ErrInvalidCSR) {
		s.metrics.parseErr.Inc()
		log.Warn("certificate request rejected", "reason", "invalid CSR", "identity", identity.String(), "error", err)
		return nil, status.Error(codes.InvalidArgument, msgInvalidCSR)
	}
	if err != nil {
		s.metrics.signErrors.Inc()
		log.Error("certificate signing failed", "identity", identity.String(), "error", err)
		return nil, status.Error(codes.Internal, msgSignFailed)
	}

	resp := &pb.IstioCertificateResponse{CertChain: make([]string, 0, len(chain))}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, string(mtls.EncodeCertificatesPEM(c)))
	}
	s.metrics.success.Inc()
	log.Info("certificate issued", "identity", identity.String(), "serial", chain[0].SerialNumber.Text(16), "notAfter", chain[0].NotAfter)
	return resp, nil
}

// refuse counts and logs a refusal and returns the opaque client error.
func (s *Server) refuse(log *slog.Logger, reason string, err error) error {
	s.metrics.authnErr.Inc()
	if err != nil {
		log.Warn("certificate request refused", "reason", reason, "error", err)
	} else {
		log.Warn("certificate request refused", "reason", reason)
	}
	return status.Error(codes.Unauthenticated, msgUnauthenticated)
}

// impersonation extracts ImpersonatedIdentity. An absent field or an empty
// string means no impersonation (as in Istio); any other non-string value is
// an error.
func impersonation(md *structpb.Struct) (string, bool, error) {
	v, ok := md.GetFields()[ImpersonatedIdentityKey]
	if !ok || v == nil {
		return "", false, nil
	}
	sv, ok := v.GetKind().(*structpb.Value_StringValue)
	if !ok {
		return "", false, fmt.Errorf("%s is not a string", ImpersonatedIdentityKey)
	}
	if sv.StringValue == "" {
		return "", false, nil
	}
	return sv.StringValue, true, nil
}

// validity converts the request's seconds into a duration without overflow;
// the Authority applies default and cap.
func validity(seconds int64) time.Duration {
	if seconds <= 0 {
		return 0
	}
	if seconds > math.MaxInt64/int64(time.Second) {
		return math.MaxInt64
	}
	return time.Duration(seconds) * time.Second
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
