package mtls

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// defaultNextProtos is the ALPN list used when none is given: every zmesh
// TLS endpoint (HBONE, the controller's gRPC) speaks HTTP/2.
var defaultNextProtos = []string{"h2"}

// ServerOptions tune ServerConfig.
type ServerOptions struct {
	// TrustDomain, when set, additionally requires a presented client
	// certificate to be a valid X.509-SVID of this trust domain (exactly one
	// URI SAN, leaf not a CA, chaining to the roots).
	TrustDomain spiffeid.TrustDomain
	// ClientCertOptional accepts clients without a certificate (a presented
	// one is still verified). The controller's :15012 needs it: bootstrapping
	// clients authenticate with a token. The default requires a certificate.
	ClientCertOptional bool
	// NextProtos is the ALPN list; empty means ["h2"].
	NextProtos []string
}

// ServerConfig returns a TLS 1.3 server configuration that serves the
// holder's current certificate and verifies client certificates against the
// holder's current roots. Both are read per handshake, so storing a new
// Certificate in the holder rotates the serving certificate and the client
// trust anchors for new connections. Verified client chains are available in
// tls.ConnectionState.VerifiedChains.
func ServerConfig(h *Holder, opts ServerOptions) (*tls.Config, error) {
	if h == nil {
		return nil, errors.New("mtls: server config needs a certificate holder")
	}
	protos := opts.NextProtos
	if len(protos) == 0 {
		protos = defaultNextProtos
	}
	protos = append([]string(nil), protos...)
	clientAuth := tls.RequireAndVerifyClientCert
	if opts.ClientCertOptional {
		clientAuth = tls.VerifyClientCertIfGiven
	}

	type snapshot struct {
		cert *Certificate
		cfg  *tls.Config
	}
	var cache atomic.Pointer[snapshot]
	build := func(c *Certificate) *tls.Config {
		cfg := &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{*c.TLSCertificate()},
			ClientCAs:    c.RootPool(),
			ClientAuth:   clientAuth,
			NextProtos:   protos,
		}
		if !opts.TrustDomain.IsZero() {
			bundle := x509bundle.FromX509Authorities(opts.TrustDomain, c.Roots())
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return nil // only reachable when ClientCertOptional
				}
				id, _, err := x509svid.Verify(cs.PeerCertificates, bundle)
				if err != nil {
					return fmt.Errorf("mtls: client certificate: %w", err)
				}
				if !id.MemberOf(opts.TrustDomain) {
					return fmt.Errorf("mtls: client identity %q is not in trust domain %q", id, opts.TrustDomain)
				}
				return nil
			}
		}
		return cfg
	}

	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: protos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := h.Load()
			if c == nil {
				return nil, errors.New("mtls: no serving certificate available yet")
			}
			if s := cache.Load(); s != nil && s.cert == c {
				return s.cfg, nil
			}
			s := &snapshot{cert: c, cfg: build(c)}
			cache.Store(s)
			return s.cfg, nil
		},
	}, nil
}
