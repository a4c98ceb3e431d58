package xdsserver

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zmesh/zmesh/controller/auth"
)

// Defaults for Options.
const (
	DefaultDebounceQuiet = 15 * time.Millisecond
	DefaultDebounceMax   = 200 * time.Millisecond
)

// Options configure a Server.
type Options struct {
	// Authenticator identifies each stream's caller before anything else
	// happens; a stream it refuses ends with Unauthenticated. Required.
	Authenticator auth.Authenticator
	// Registry receives the server's metrics. Required.
	Registry prometheus.Registerer
	// Logger; nil discards logs.
	Logger *slog.Logger
	// DebounceQuiet is how long the server waits for more changes after the
	// latest one before pushing (default DefaultDebounceQuiet).
	DebounceQuiet time.Duration
	// DebounceMax bounds how long the first change of a burst waits
	// (default DefaultDebounceMax).
	DebounceMax time.Duration
}

// withDefaults validates opts and fills in defaults.
func (opts Options) withDefaults() (Options, error) {
	if opts.Authenticator == nil {
		return opts, errors.New("xdsserver: Options.Authenticator is required")
	}
	if opts.Registry == nil {
		return opts, errors.New("xdsserver: Options.Registry is required")
	}
	if opts.DebounceQuiet < 0 || opts.DebounceMax < 0 {
		return opts, errors.New("xdsserver: negative debounce duration")
	}
	if opts.DebounceQuiet == 0 {
		opts.DebounceQuiet = DefaultDebounceQuiet
	}
	if opts.DebounceMax == 0 {
		opts.DebounceMax = DefaultDebounceMax
	}
	if opts.DebounceMax < opts.DebounceQuiet {
		return opts, fmt.Errorf("xdsserver: DebounceMax %v is shorter than DebounceQuiet %v", opts.DebounceMax, opts.DebounceQuiet)
	}
	return opts, nil
}
