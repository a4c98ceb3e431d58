package proxy

import (
	"errors"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/hbone"
)

// Config is what every pod's proxy shares.
type Config struct {
	Resolver     Resolver
	Authorizer   Authorizer
	Certificates CertificateSource
	// Pool carries outbound tunnels; its DialFunc must dial from the pod that
	// owns DialRequest.SourceIP.
	Pool *hbone.Pool
	// TrustBundle and TrustDomain verify inbound tunnel peers.
	TrustBundle x509bundle.Source
	TrustDomain spiffeid.TrustDomain
	// Metrics may be nil (nothing is counted).
	Metrics *Metrics
	Logger  *slog.Logger
	// Buffers for splicing (hbone.SpliceBufferSize when nil).
	Buffers *hbone.BufferPool
}

// Proxy starts per-pod proxies with a shared Config.
type Proxy struct {
	cfg Config
	log *slog.Logger
	// recv backs the inbound tunnels' receive queues: chunks of
	// hbone.DefaultBufferSize, since a stream with any unread data holds
	// one.
	recv *hbone.BufferPool
}

// New validates cfg.
func New(cfg Config) (*Proxy, error) {
	switch {
	case cfg.Resolver == nil:
		return nil, errors.New("proxy: Resolver is required")
	case cfg.Authorizer == nil:
		return nil, errors.New("proxy: Authorizer is required")
	case cfg.Certificates == nil:
		return nil, errors.New("proxy: Certificates is required")
	case cfg.Pool == nil:
		return nil, errors.New("proxy: Pool is required")
	case cfg.TrustBundle == nil || cfg.TrustDomain.IsZero():
		return nil, errors.New("proxy: TrustBundle and TrustDomain are required")
	}
	if cfg.Buffers == nil {
		cfg.Buffers = hbone.NewBufferPool(hbone.SpliceBufferSize)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{cfg: cfg, log: log, recv: hbone.NewBufferPool(hbone.DefaultBufferSize)}, nil
}
