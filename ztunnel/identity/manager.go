package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// Fetcher obtains a certificate from the CA; *caclient.Client is one.
type Fetcher interface {
	Fetch(ctx context.Context, req caclient.Request) (*mtls.Certificate, error)
}

// Options configure a Manager.
type Options struct {
	// Fetcher talks to the CA. Required.
	Fetcher Fetcher
	// RetryInitial and RetryMax bound the backoff between failed fetches
	// (defaults 1 s and 1 min).
	RetryInitial, RetryMax time.Duration
	// Now is the clock (time.Now when nil).
	Now    func() time.Time
	Logger *slog.Logger
}

// minRenewWait keeps a nearly expired certificate from renewing in a tight loop.
const minRenewWait = 100 * time.Millisecond

// ErrNoCertificate is returned for an identity that has no valid
// certificate yet (or any more).
var ErrNoCertificate = errors.New("no valid certificate")

// Manager tracks the identities in use and keeps a certificate for each.
// Create it with New, Start it, then Acquire and Release identities as pods
// come and go; Stop ends every renewal loop and waits for them.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex // guards entries, ctx and stopped
	entries map[spiffeid.ID]*entry
	ctx     context.Context
	cancel  context.CancelFunc
	stopped bool
	wg      sync.WaitGroup
}

// entry is one identity's certificate and renewal loop.
type entry struct {
	refs   int // guarded by Manager.mu
	cancel context.CancelFunc
	// renewNow wakes the renewal loop before its timer (see RenewUntrusted).
	renewNow chan struct{}

	mu      sync.Mutex // guards cert, lastErr and changed
	cert    *mtls.Certificate
	lastErr error
	changed chan struct{} // closed and replaced whenever cert or lastErr changes
}

// New validates opts.
func New(opts Options) (*Manager, error) {
	if opts.Fetcher == nil {
		return nil, errors.New("identity: Fetcher is required")
	}
	if opts.RetryInitial <= 0 {
		opts.RetryInitial = time.Second
	}
	if opts.RetryMax < opts.RetryInitial {
		opts.RetryMax = max(time.Minute, opts.RetryInitial)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{opts: opts, log: log, entries: map[spiffeid.ID]*entry{}}, nil
}

// Start allows renewal loops to run; identities acquired before Start begin
// fetching now.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx != nil || m.stopped {
		return errors.New("identity: Start called twice or after Stop")
	}
	m.ctx, m.cancel = context.WithCancel(ctx)
	for id, e := range m.entries {
		m.launch(id, e)
	}
	return nil
}

// Stop ends every renewal loop and waits for them.
func (m *Manager) Stop() {
	m.mu.Lock()
	m.stopped = true
	if m.cancel != nil {
		m.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// Acquire declares that a pod with identity id runs on this node; the first
// acquisition starts fetching its certificate. Each Acquire must be paired
// with a Release.
func (m *Manager) Acquire(id spiffeid.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[id]; e != nil {
		e.refs++
		return
	}
	e := &entry{refs: 1, changed: make(chan struct{}), renewNow: make(chan struct{}, 1)}
	m.entries[id] = e
	if m.ctx != nil && !m.stopped {
		m.launch(id, e)
	}
}

// Release drops one acquisition; the last one stops renewal and forgets the
// certificate.
func (m *Manager) Release(id spiffeid.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil {
		return
	}
	if e.refs--; e.refs > 0 {
		return
	}
	delete(m.entries, id)
	if e.cancel != nil {
		e.cancel()
	}
}

// Certificate returns id's current certificate if it is valid now, without
// waiting. It fails for identities not acquired, not fetched yet, or whose
// certificate expired while renewal failed.
func (m *Manager) Certificate(id spiffeid.ID) (*mtls.Certificate, error) {
	m.mu.Lock()
	e := m.entries[id]
	m.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("identity %s: not in use on this node: %w", id, ErrNoCertificate)
	}
	cert, _, err := e.current(m.opts.Now())
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", id, err)
	}
	return cert, nil
}

// Wait returns id's certificate, waiting until the first fetch succeeds or
// ctx ends.
func (m *Manager) Wait(ctx context.Context, id spiffeid.ID) (*mtls.Certificate, error) {
	m.mu.Lock()
	e := m.entries[id]
	m.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("identity %s: not in use on this node: %w", id, ErrNoCertificate)
	}
	for {
		cert, changed, err := e.current(m.opts.Now())
		if err == nil {
			return cert, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("identity %s: %w (%w)", id, ctx.Err(), err)
		}
	}
}

// Snapshot describes every identity for /config_dump.
func (m *Manager) Snapshot() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.entries))
	now := m.opts.Now()
	for id, e := range m.entries {
		s := Status{Identity: id.String(), Pods: e.refs}
		e.mu.Lock()
		if e.cert != nil {
			s.Serial = e.cert.Leaf().SerialNumber.Text(16)
			s.Issuer = e.cert.Leaf().Issuer.String()
			s.NotBefore, s.NotAfter = e.cert.NotBefore(), e.cert.NotAfter()
			s.Valid = now.Before(e.cert.NotAfter())
		}
		if e.lastErr != nil {
			s.LastError = e.lastErr.Error()
		}
		e.mu.Unlock()
		out = append(out, s)
	}
	return out
}

// Status is one identity's certificate state.
type Status struct {
	Identity string `json:"identity"`
	Pods     int    `json:"pods"`
	Serial   string `json:"serial,omitempty"`
	// Issuer names the CA certificate that signed it (which CA, while a
	// plugged-in CA is rotated).
	Issuer    string    `json:"issuer,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	Valid     bool      `json:"valid"`
	LastError string    `json:"lastError,omitempty"`
}

// launch starts e's renewal loop; the caller holds m.mu and m.ctx is set.
func (m *Manager) launch(id spiffeid.ID, e *entry) {
	ctx, cancel := context.WithCancel(m.ctx)
	e.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.renew(ctx, id, e)
	}()
}

// renew fetches id's certificate and renews it at half life; failures retry
// with capped exponential backoff and jitter, keeping the old certificate.
func (m *Manager) renew(ctx context.Context, id spiffeid.ID, e *entry) {
	log := m.log.With("identity", id.String())
	failures := 0
	for {
		cert, err := m.opts.Fetcher.Fetch(ctx, caclient.Request{Identity: id, Impersonate: true})
		received := m.opts.Now()
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		if err != nil {
			failures++
			wait = backoff(m.opts.RetryInitial, m.opts.RetryMax, failures)
			e.set(nil, err)
			log.Warn("certificate fetch failed; keeping the current certificate while valid", "err", err, "retryIn", wait)
		} else {
			failures = 0
			e.set(cert, nil)
			// Half of the remaining life: the CA backdates NotBefore for
			// clock skew, so the nominal half-life may already have passed.
			wait = max(cert.NotAfter().Sub(received)/2, minRenewWait)
			log.Info("certificate issued", "serial", cert.Leaf().SerialNumber.Text(16), "notAfter", cert.NotAfter(), "renewIn", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-e.renewNow:
			t.Stop()
			log.Info("certificate no longer trusted by the mesh's trust anchors; renewing now")
		}
	}
}

// RenewUntrusted renews at once every certificate whose chain roots does
// not accept: after a root rotation retired the root it was issued under,
// peers refuse it long before its normal renewal. It does not wait for the
// renewals.
func (m *Manager) RenewUntrusted(roots []*x509.Certificate) {
	now := m.opts.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		e.mu.Lock()
		cert := e.cert
		e.mu.Unlock()
		if cert == nil || cert.VerifyWith(roots, now) == nil {
			continue
		}
		select {
		case e.renewNow <- struct{}{}:
		default:
		}
	}
}

// set records a fetch result: a new certificate replaces the old; an error
// leaves the old certificate in place.
func (e *entry) set(cert *mtls.Certificate, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cert != nil {
		e.cert = cert
	}
	e.lastErr = err
	close(e.changed)
	e.changed = make(chan struct{})
}

// current returns the certificate if valid at now, and the channel that
// signals the next change.
func (e *entry) current(now time.Time) (*mtls.Certificate, <-chan struct{}, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.cert != nil && now.Before(e.cert.NotAfter()) && !now.Before(e.cert.NotBefore()):
		return e.cert, e.changed, nil
	case e.cert != nil && e.lastErr != nil:
		return nil, e.changed, fmt.Errorf("certificate expired at %s, renewal failing: %w: %w", e.cert.NotAfter(), e.lastErr, ErrNoCertificate)
	case e.cert != nil:
		return nil, e.changed, fmt.Errorf("certificate expired at %s: %w", e.cert.NotAfter(), ErrNoCertificate)
	case e.lastErr != nil:
		return nil, e.changed, fmt.Errorf("%w: %w", ErrNoCertificate, e.lastErr)
	default:
		return nil, e.changed, fmt.Errorf("not fetched yet: %w", ErrNoCertificate)
	}
}

// backoff is initial*2^(n-1) capped at limit, with ±20% jitter.
func backoff(initial, limit time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
