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
	// DefaultMaxKeys bounds the names a stream may subscribe to, or say it
	// holds, per type: well above a node's on-demand needs.
	DefaultMaxKeys = 100_000
)

// maxTypesPerStream bounds the resource types one stream may watch (the
// mesh serves six).
const maxTypesPerStream = 32

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
	// MaxKeys bounds, per stream and type, the names a client subscribes
	// to, and the initial resource versions it sends beyond the number of
	// resources served (default DefaultMaxKeys); a stream that asks for
	// more ends with ResourceExhausted, so one caller cannot make the
	// server hold or resolve without bound.
	MaxKeys int
}

// withDefaults validates opts and fills in defaults.
func (opts Options) withDefaults() (Options, error) {
	if opts.Authenticator == nil {
		return opts, errors.New("xdsserver: Options.Authenticator is required")
	}
	if opts.Registry == nil {
		return opts, errors.New("xdsserver: Options.Registry is required")
	}
	if opts.DebounceQuiet < 0 || opts.DebounceMax < 0 || opts.MaxKeys < 0 {
		return opts, errors.New("xdsserver: negative debounce duration or MaxKeys")
	}
	if opts.MaxKeys == 0 {
		opts.MaxKeys = DefaultMaxKeys
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
