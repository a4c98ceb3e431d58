package kubesource

import (
	"errors"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/kube"
)

// Defaults for Options.
const (
	DefaultDebounce = 10 * time.Millisecond
	DefaultMaxDelay = 100 * time.Millisecond
)

// Options configures a Source.
type Options struct {
	// Clients reach the API server. Kube, Istio and Gateway are required.
	Clients *kube.Clients
	// OnChange receives a complete snapshot once the caches have synced and
	// after every burst of changes. Calls never overlap. Each call gets fresh
	// Inputs slices, but the objects in them are the informer caches' own:
	// the callee must not modify them. Required.
	OnChange func(*index.Inputs)
	// Validate checks one object (index.Validate in production). Objects it
	// rejects are left out of snapshots and listed by Problems; an error
	// wrapping index.ErrUnsupportedKind means "no rules for this kind" and
	// accepts the object. Optional.
	Validate func(runtime.Object) error
	// Debounce is the quiet period after the latest event before a snapshot
	// is delivered. Default DefaultDebounce.
	Debounce time.Duration
	// MaxDelay bounds how long the first event of a continuous burst waits
	// for its snapshot. Default DefaultMaxDelay.
	MaxDelay time.Duration
	// ResyncPeriod, when positive, makes the informers replay their caches
	// that often, which delivers a fresh snapshot each time. Zero disables it.
	ResyncPeriod time.Duration
	// Logger; nil is slog.Default().
	Logger *slog.Logger
}

// withDefaults validates opts and fills in defaults.
func (opts Options) withDefaults() (Options, error) {
	switch {
	case opts.Clients == nil || opts.Clients.Kube == nil || opts.Clients.Istio == nil || opts.Clients.Gateway == nil:
		return opts, errors.New("kubesource: Clients with Kube, Istio and Gateway clientsets are required")
	case opts.OnChange == nil:
		return opts, errors.New("kubesource: OnChange is required")
	case opts.Debounce < 0 || opts.MaxDelay < 0 || opts.ResyncPeriod < 0:
		return opts, errors.New("kubesource: negative duration")
	}
	if opts.Debounce == 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.MaxDelay < opts.Debounce {
		return opts, errors.New("kubesource: MaxDelay is shorter than Debounce")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return opts, nil
}
