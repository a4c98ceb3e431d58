package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/zmesh/zmesh/pkg/spiffe"
)

// ClientCert authenticates a caller by the TLS client certificate the
// transport already verified (tls.ConnectionState.VerifiedChains, as filled
// by an mtls.ServerConfig server). The Caller's Identity is the leaf's
// SPIFFE ID; its Node is unknown. The zero value accepts any trust domain.
type ClientCert struct {
	// TrustDomain, when set, is the only trust domain accepted.
	TrustDomain spiffeid.TrustDomain
}

// Authenticate implements Authenticator.
func (c ClientCert) Authenticate(ctx context.Context) (Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, errors.New("auth: no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Caller{}, errors.New("auth: connection is not TLS")
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return Caller{}, errors.New("auth: no verified client certificate")
	}
	id, err := spiffe.IDFromCert(chains[0][0])
	if err != nil {
		return Caller{}, fmt.Errorf("auth: client certificate: %w", err)
	}
	if !c.TrustDomain.IsZero() && !id.MemberOf(c.TrustDomain) {
		return Caller{}, fmt.Errorf("auth: client identity %q is outside trust domain %q", id, c.TrustDomain)
	}
	return Caller{Identity: id.String()}, nil
}
