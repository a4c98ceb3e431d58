package leader

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zmesh/zmesh/pkg/kube"
)

// Defaults for Options, those of Kubernetes' own components.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
	DefaultTaskBackoff   = time.Second
	maxTaskBackoff       = 30 * time.Second
)

// Options configures an Elector.
type Options struct {
	// Clients reach the API server; Kube is required.
	Clients *kube.Clients
	// Namespace and Name of the Lease. Required.
	Namespace, Name string
	// Identity of this replica in the Lease; default "<hostname>_<random>".
	// Must be unique among the replicas.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod as in client-go's
	// leaderelection (defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// TaskBackoff is the first delay before a failed task is restarted; it
	// doubles on each consecutive failure up to 30s. Default 1s.
	TaskBackoff time.Duration
	// Registerer, when set, receives the gauge
	// leader_election_master_status{name=<lease name>} (1 while leading).
	Registerer prometheus.Registerer
	// Logger; nil is slog.Default().
	Logger *slog.Logger
}

func (opts Options) withDefaults() (Options, error) {
	switch {
	case opts.Clients == nil || opts.Clients.Kube == nil:
		return opts, errors.New("leader: Clients with a Kube clientset are required")
	case opts.Namespace == "" || opts.Name == "":
		return opts, errors.New("leader: lease Namespace and Name are required")
	case opts.LeaseDuration < 0 || opts.RenewDeadline < 0 || opts.RetryPeriod < 0 || opts.TaskBackoff < 0:
		return opts, errors.New("leader: negative duration")
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = DefaultRenewDeadline
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = DefaultRetryPeriod
	}
	if opts.TaskBackoff == 0 {
		opts.TaskBackoff = DefaultTaskBackoff
	}
	if opts.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return opts, fmt.Errorf("leader: default identity: %w", err)
		}
		var b [4]byte
		_, _ = rand.Read(b[:])
		opts.Identity = host + "_" + hex.EncodeToString(b[:])
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return opts, nil
}
