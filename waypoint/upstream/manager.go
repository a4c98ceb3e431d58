package upstream

import (
	"context"
	"errors"
	"hash/maphash"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Target is a resolved endpoint: where to tunnel and whom to expect there.
type Target struct {
	Addr     netip.AddrPort
	Identity spiffeid.ID
}

// DialFunc opens a byte stream to t (an HBONE tunnel in production).
type DialFunc func(ctx context.Context, t Target) (net.Conn, error)

// Errors from Pick and Acquire.
var (
	ErrNoHealthy = errors.New("no healthy upstream")
	ErrOverflow  = errors.New("upstream overflow")
)

// Manager owns per-cluster runtime state. Clusters are created on first
// use and keep their hosts (transports, outlier state) across
// configuration updates; Retain drops clusters that are gone.
type Manager struct {
	dial DialFunc
	now  func() time.Time

	mu       sync.Mutex // guards clusters
	clusters map[string]*Cluster
}

// NewManager returns a Manager dialling with dial.
func NewManager(dial DialFunc) *Manager {
	return &Manager{dial: dial, now: time.Now, clusters: map[string]*Cluster{}}
}

// Cluster returns the runtime state for cfg, installing cfg as current.
func (m *Manager) Cluster(cfg *ClusterConfig) *Cluster {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.clusters[cfg.Name]
	if c == nil {
		c = &Cluster{m: m, hosts: map[netip.AddrPort]*Host{}}
		m.clusters[cfg.Name] = c
	}
	c.cfg.Store(cfg)
	return c
}

// Retain drops the state of clusters not in keep and closes their idle
// connections.
func (m *Manager) Retain(keep func(name string) bool) {
	m.mu.Lock()
	var gone []*Cluster
	for n, c := range m.clusters {
		if !keep(n) {
			gone = append(gone, c)
			delete(m.clusters, n)
		}
	}
	m.mu.Unlock()
	for _, c := range gone {
		c.closeIdle()
	}
}

// Close closes every idle connection.
func (m *Manager) Close() {
	m.Retain(func(string) bool { return false })
}

// Cluster is one cluster's runtime state.
type Cluster struct {
	m       *Manager
	cfg     atomic.Pointer[ClusterConfig]
	rr      atomic.Uint64
	active  atomic.Int64 // requests in flight
	retries atomic.Int64 // retries in flight
	picks   atomic.Uint64

	mu    sync.Mutex // guards hosts and every Host's outlier fields
	hosts map[netip.AddrPort]*Host
}

// Config returns the current configuration.
func (c *Cluster) Config() *ClusterConfig { return c.cfg.Load() }

// Host is one endpoint's state within a cluster.
type Host struct {
	Target Target
	// Addr is Target.Addr formatted, once, for requests and logs.
	Addr   string
	active atomic.Int64
	end    func() // Begin's result, made once

	// Outlier detection state, guarded by Cluster.mu.
	consecutive  uint32
	ejections    int
	ejectedUntil time.Time

	tmu sync.Mutex   // guards rt
	rt  [2]transport // HTTP/1.1, HTTP/2 (prior knowledge)
}

// transport is an endpoint's HTTP client: h1Transport for HTTP/1.1,
// net/http's Transport for HTTP/2.
type transport interface {
	http.RoundTripper
	CloseIdleConnections()
}

// Active is the number of requests in flight to the host.
func (h *Host) Active() int64 { return h.active.Load() }

// Acquire reserves a request slot under the circuit breaker: HTTP/2 is
// bounded by max_requests, HTTP/1 by max_connections + max_pending_requests
// as well. The caller must call the returned release exactly once.
func (c *Cluster) Acquire(http2 bool) (release func(), err error) {
	cfg := c.cfg.Load()
	limit := int64(cfg.MaxRequests)
	if !http2 {
		limit = min(limit, int64(cfg.MaxConnections)+int64(cfg.MaxPending))
	}
	if c.active.Add(1) > limit {
		c.active.Add(-1)
		return nil, ErrOverflow
	}
	return func() { c.active.Add(-1) }, nil
}

// AcquireRetry reserves a retry under max_retries.
func (c *Cluster) AcquireRetry() (release func(), ok bool) {
	if c.retries.Add(1) > int64(c.cfg.Load().MaxRetries) {
		c.retries.Add(-1)
		return nil, false
	}
	return func() { c.retries.Add(-1) }, true
}

// Pick chooses a host among targets with the cluster's policy, skipping
// ejected hosts (all of them are used when every host is ejected) and
// hosts in avoid (retries prefer other hosts). hash is used by the
// consistent-hash policy when hasHash is set.
func (c *Cluster) Pick(targets []Target, hash uint64, hasHash bool, avoid *Host) (*Host, error) {
	if len(targets) == 0 {
		return nil, ErrNoHealthy
	}
	cfg := c.cfg.Load()
	now := c.m.now()
	c.mu.Lock()
	cands := make([]*Host, 0, len(targets))
	all := make([]*Host, 0, len(targets))
	for _, t := range targets {
		h := c.hosts[t.Addr]
		if h == nil || h.Target != t {
			if h != nil {
				h.closeIdle()
			}
			h = newHost(t)
			c.hosts[t.Addr] = h
		}
		all = append(all, h)
		if now.Before(h.ejectedUntil) {
			continue
		}
		cands = append(cands, h)
	}
	if c.picks.Add(1)%1024 == 0 {
		c.pruneLocked(all)
	}
	c.mu.Unlock()
	if len(cands) == 0 {
		cands = all // panic mode: every host is ejected
	}
	if avoid != nil && len(cands) > 1 {
		for i, h := range cands {
			if h == avoid {
				cands = append(cands[:i:i], cands[i+1:]...)
				break
			}
		}
	}
	switch {
	case len(cands) == 1:
		return cands[0], nil
	case cfg.LB == ConsistentHash && hasHash:
		return rendezvous(cands, hash), nil
	case cfg.LB == Random || cfg.LB == ConsistentHash:
		return cands[rand.IntN(len(cands))], nil
	case cfg.LB == LeastRequest:
		a, b := cands[rand.IntN(len(cands))], cands[rand.IntN(len(cands))]
		if b.active.Load() < a.active.Load() {
			return b, nil
		}
		return a, nil
	default:
		return cands[(c.rr.Add(1)-1)%uint64(len(cands))], nil
	}
}

var seed = maphash.MakeSeed()

// rendezvous picks the host with the highest hash of (key, address):
// consistent across calls and minimally disrupted by host changes.
func rendezvous(hosts []*Host, key uint64) *Host {
	var best *Host
	var bestScore uint64
	for _, h := range hosts {
		var mh maphash.Hash
		mh.SetSeed(seed)
		b := h.Target.Addr.Addr().As16()
		_, _ = mh.Write(b[:])
		var k [10]byte
		for i := 0; i < 8; i++ {
			k[i] = byte(key >> (8 * i))
		}
		k[8], k[9] = byte(h.Target.Addr.Port()), byte(h.Target.Addr.Port()>>8)
		_, _ = mh.Write(k[:])
		if s := mh.Sum64(); best == nil || s > bestScore {
			best, bestScore = h, s
		}
	}
	return best
}

// HashString hashes a consistent-hash input.
func HashString(s string) uint64 { return maphash.String(seed, s) }

// Report records the outcome of a request to h for outlier detection:
// failed means a 5xx answer or a connection failure.
func (c *Cluster) Report(h *Host, failed bool) {
	od := c.cfg.Load().Outlier
	if od == nil || od.Consecutive5xx == 0 {
		return
	}
	now := c.m.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !failed {
		h.consecutive = 0
		if h.ejections > 0 && now.After(h.ejectedUntil.Add(od.Interval)) {
			h.ejections--
		}
		return
	}
	h.consecutive++
	if h.consecutive < od.Consecutive5xx || now.Before(h.ejectedUntil) {
		return
	}
	total, ejected := len(c.hosts), 0
	for _, o := range c.hosts {
		if now.Before(o.ejectedUntil) {
			ejected++
		}
	}
	if total == 0 || uint32(ejected*100/total) >= od.MaxEjectionPercent {
		return
	}
	h.ejections++
	h.consecutive = 0
	h.ejectedUntil = now.Add(od.BaseEjectionTime * time.Duration(h.ejections))
}

// Ejected reports whether h is currently ejected.
func (c *Cluster) Ejected(h *Host) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m.now().Before(h.ejectedUntil)
}

func (c *Cluster) pruneLocked(current []*Host) {
	keep := make(map[*Host]bool, len(current))
	for _, h := range current {
		keep[h] = true
	}
	for a, h := range c.hosts {
		if !keep[h] && h.active.Load() == 0 {
			h.closeIdle()
			delete(c.hosts, a)
		}
	}
}

func (c *Cluster) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		h.closeIdle()
	}
}

// Begin counts a request to h until the returned func is called (once).
func (h *Host) Begin() (end func()) {
	h.active.Add(1)
	return h.end
}

func newHost(t Target) *Host {
	h := &Host{Target: t, Addr: t.Addr.String()}
	h.end = func() { h.active.Add(-1) }
	return h
}

// Transport returns the host's HTTP/1.1 or HTTP/2 transport, creating it
// on first use.
func (c *Cluster) Transport(h *Host, http2 bool) http.RoundTripper {
	i := 0
	if http2 {
		i = 1
	}
	h.tmu.Lock()
	defer h.tmu.Unlock()
	if h.rt[i] != nil {
		return h.rt[i]
	}
	cfg := c.cfg.Load()
	t := h.Target
	dial := c.m.dial
	timeout := cfg.ConnectTimeout
	dialTunnel := func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		conn, err := dial(ctx, t)
		if err != nil {
			markDialFailed(ctx)
			return nil, &DialError{Err: err}
		}
		return conn, nil
	}
	idle := 5 * time.Minute
	if cfg.IdleTimeout > 0 {
		idle = cfg.IdleTimeout
	}
	if !http2 {
		rt := newH1Transport(dialTunnel, cfg.MaxRequestsPerConn != 1, idle)
		h.rt[i] = rt
		return rt
	}
	rt := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialTunnel(ctx)
		},
		DisableCompression:     true,
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        idle,
		ResponseHeaderTimeout:  0,
		MaxResponseHeaderBytes: 64 << 10,
	}
	if cfg.MaxRequestsPerConn == 1 {
		rt.DisableKeepAlives = true
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	rt.Protocols = &p
	h.rt[i] = rt
	return rt
}

func (h *Host) closeIdle() {
	h.tmu.Lock()
	defer h.tmu.Unlock()
	for _, rt := range h.rt {
		if rt != nil {
			rt.CloseIdleConnections()
		}
	}
}

// DialError is a failure to open the tunnel to an endpoint.
type DialError struct{ Err error }

func (e *DialError) Error() string { return "upstream connect: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

type attemptKey struct{}

// Attempt tracks what happened during one upstream attempt.
type Attempt struct{ dialFailed atomic.Bool }

// WithAttempt returns a context that records dial failures into a.
func WithAttempt(ctx context.Context, a *Attempt) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

// DialFailed reports whether the attempt's tunnel could not be opened.
func (a *Attempt) DialFailed() bool { return a.dialFailed.Load() }

func markDialFailed(ctx context.Context) {
	if a, ok := ctx.Value(attemptKey{}).(*Attempt); ok {
		a.dialFailed.Store(true)
	}
}

// Dial opens a raw stream to h for L4 proxying, bounded by the cluster's
// connect timeout.
func (c *Cluster) Dial(ctx context.Context, h *Host) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Load().ConnectTimeout)
	defer cancel()
	conn, err := c.m.dial(ctx, h.Target)
	if err != nil {
		return nil, &DialError{Err: err}
	}
	return conn, nil
}
