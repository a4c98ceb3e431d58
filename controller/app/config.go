package app

import (
	"errors"
	"log/slog"
	"time"

	"github.com/zmesh/zmesh/controller/index"
)

// Config is everything the controller needs to run.
type Config struct {
	// ConfigDir is the directory of manifests served in local mode. Required
	// until the Kubernetes source exists.
	ConfigDir string
	// GRPCAddr serves xDS and the CA (default ":15012").
	GRPCAddr string
	// MonitoringAddr serves /metrics, /healthz/ready and /debug/config_dump
	// (default ":15014"; "-" disables it).
	MonitoringAddr string
	// CADir holds the CA's root (created on first start) or a plugged-in CA.
	CADir string
	// TokensFile lists static bearer tokens: "<token> <spiffe-id> [node]".
	// Optional; callers can also authenticate with a mesh client certificate.
	TokensFile string
	// NodeIdentities may request certificates for pods on their node.
	// Default spiffe://<trust-domain>/ns/istio-system/sa/ztunnel.
	NodeIdentities []string
	// ServingNames are the DNS names and IPs in the controller's serving
	// certificate (default: istiod.istio-system.svc, localhost, 127.0.0.1...).
	ServingNames []string
	// Index shapes the resources (trust domain, cluster id, ...).
	Index index.Config
	// DebounceQuiet and DebounceMax bound how long xDS pushes wait to
	// coalesce bursts of changes. Sources coalesce their events before the
	// index is rebuilt (that is where a burst costs), so by default the xDS
	// server only merges what arrives within a millisecond.
	DebounceQuiet, DebounceMax time.Duration
	Logger                     *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.ConfigDir == "" {
		return c, errors.New("a config directory is required (the Kubernetes source is not available yet)")
	}
	if c.CADir == "" {
		return c, errors.New("a CA directory is required")
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = ":15012"
	}
	if c.MonitoringAddr == "" {
		c.MonitoringAddr = ":15014"
	}
	if c.DebounceQuiet == 0 {
		c.DebounceQuiet = time.Millisecond
	}
	if c.DebounceMax == 0 {
		c.DebounceMax = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Index.TrustDomain == "" {
		c.Index.TrustDomain = "cluster.local"
	}
	return c, nil
}
