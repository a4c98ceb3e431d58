package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DialRequest describes one tunnel to open with Pool.Dial.
type DialRequest struct {
	// NextHop is where the HBONE connection goes: the destination's or the
	// waypoint's IP on port 15008.
	NextHop netip.AddrPort
	// Authority is the CONNECT target, the final destination ip:port.
	Authority netip.AddrPort
	// SourceID is the identity presented by Certificate. It keys the pool,
	// so a rotated certificate for the same identity reuses connections.
	SourceID spiffeid.ID
	// Certificate returns the source identity's current certificate; it is
	// called for each new connection.
	Certificate CertificateSource
	// ExpectedIDs lists the identities the server may present; its leaf
	// must carry exactly one of them. Order does not matter.
	ExpectedIDs []spiffeid.ID
	// SourceIP is the source workload's IP. It is part of the pool key and is
	// passed to PoolConfig.Dial, which may bind to it.
	SourceIP netip.Addr
	// Forwarded, Baggage and Traceparent are sent as headers when not empty,
	// except that a missing Traceparent is generated once per connection.
	// Use FormatForwarded for the forwarded value.
	Forwarded, Baggage, Traceparent string
}

// DialFunc opens the TCP connection for a new pooled HBONE connection, for
// example inside a pod's network namespace with a socket mark.
type DialFunc func(ctx context.Context, req *DialRequest) (net.Conn, error)

// PoolConfig configures a Pool. TrustBundle is required; zero values select
// the package defaults.
type PoolConfig struct {
	// TrustBundle verifies server certificate chains.
	TrustBundle x509bundle.Source
	// Dial opens TCP connections; nil dials req.NextHop with a net.Dialer.
	Dial DialFunc
	// MaxStreamsPerConn is how many concurrent streams one connection
	// carries before the pool opens another.
	MaxStreamsPerConn int
	// IdleTimeout closes connections that have had no streams this long.
	IdleTimeout time.Duration
	// KeepaliveInterval is how long a connection may receive nothing before
	// it is PINGed; KeepaliveTimeout is how long the PING may go unanswered
	// before the connection is dropped.
	KeepaliveInterval, KeepaliveTimeout time.Duration
	// HandshakeTimeout bounds TCP connect plus the TLS handshake.
	HandshakeTimeout time.Duration
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
	// BufferPool backs streams' receive queues; nil creates one per Pool.
	BufferPool *BufferPool
}

// PoolStats is a snapshot of a Pool.
type PoolStats struct {
	// Conns counts connections the pool may still put new streams on.
	Conns int
	// Streams counts streams handed out and not yet closed.
	Streams int
	// Dials counts connections ever established.
	Dials int64
}

// Pool opens HBONE streams over shared HTTP/2 connections. Connections are
// keyed by (source identity, sorted expected identities, next hop, source
// IP); each carries up to MaxStreamsPerConn streams; only one connection per
// key is being dialled at a time and other callers wait for it; connections
// idle for IdleTimeout are closed; broken connections and connections that
// received GOAWAY get no new streams.
//
// A Pool has no background goroutines of its own besides idle timers and
// each connection's three (frame reader, control-frame writer, keepalive);
// streams have none. Close closes all connections.
type Pool struct {
	cfg   PoolConfig
	log   *slog.Logger
	bufs  *BufferPool
	dials atomic.Int64

	wg      sync.WaitGroup // idle-timer callbacks
	readers sync.WaitGroup // one per connection until its goroutines have ended

	mu      sync.Mutex // guards entries, closed and every poolConn's pool-owned fields
	entries map[poolKey]*poolEntry
	all     map[*poolConn]struct{} // every connection not yet closed by the pool
	streams int                    // streams handed out and not yet closed
	closed  bool
}

type poolKey struct {
	src     spiffeid.ID
	dst     string // sorted expected identities, comma-separated
	nextHop netip.AddrPort
	srcIP   netip.Addr
}

type poolEntry struct {
	conns   []*poolConn // connections that may take new streams
	dialing *dialCall   // the one dial in flight, if any
}

type dialCall struct {
	done chan struct{}
	err  error // valid after done is closed
	// retry is set when waiters should try again themselves rather than
	// share err (the dialling caller's own context ended).
	retry bool
}

// poolConn is one pooled HTTP/2 connection.
type poolConn struct {
	key    poolKey
	cc     *clientConn
	tc     *tls.Conn
	broken atomic.Bool // set when the connection closes

	// Guarded by Pool.mu.
	active    int  // streams reserved or open through the pool
	unusable  bool // removed from its entry; closed when active drops to 0
	idleTimer *time.Timer
}

// NewPool validates cfg and returns a Pool. It opens no connections.
func NewPool(cfg PoolConfig) (*Pool, error) {
	switch {
	case cfg.TrustBundle == nil:
		return nil, errors.New("hbone: pool config: TrustBundle is required")
	case cfg.MaxStreamsPerConn < 0 || cfg.IdleTimeout < 0 || cfg.KeepaliveInterval < 0 ||
		cfg.KeepaliveTimeout < 0 || cfg.HandshakeTimeout < 0:
		return nil, errors.New("hbone: pool config: negative limit")
	}
	if cfg.MaxStreamsPerConn == 0 {
		cfg.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if cfg.KeepaliveTimeout == 0 {
		cfg.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Dial == nil {
		cfg.Dial = func(ctx context.Context, req *DialRequest) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", req.NextHop.String())
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	bufs := cfg.BufferPool
	if bufs == nil {
		bufs = NewBufferPool(0)
	}
	return &Pool{
		cfg:     cfg,
		log:     log.With("component", "hbone-pool"),
		bufs:    bufs,
		entries: make(map[poolKey]*poolEntry),
		all:     make(map[*poolConn]struct{}),
	}, nil
}

func validateDialRequest(req *DialRequest) error {
	switch {
	case !req.NextHop.IsValid() || req.NextHop.Port() == 0:
		return errors.New("next hop address is not set")
	case !req.Authority.IsValid() || req.Authority.Port() == 0:
		return errors.New("authority is not set")
	case req.Certificate == nil:
		return errors.New("certificate source is not set")
	case req.SourceID.IsZero():
		return errors.New("source identity is not set")
	case len(req.ExpectedIDs) == 0:
		return errors.New("no expected server identities")
	}
	return nil
}

func makeKey(req *DialRequest) poolKey {
	ids := make([]string, len(req.ExpectedIDs))
	for i, id := range req.ExpectedIDs {
		ids[i] = id.String()
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return poolKey{
		src:     req.SourceID,
		dst:     strings.Join(ids, ","),
		nextHop: req.NextHop,
		srcIP:   req.SourceIP,
	}
}

// Dial opens a CONNECT stream to req.Authority through req.NextHop, reusing
// a pooled connection when one fits. It returns after the server answered
// 200; any other answer is a *StatusError. ctx bounds connecting and waiting
// for the answer, not the stream's lifetime. The caller must Close the
// returned stream.
func (p *Pool) Dial(ctx context.Context, req *DialRequest) (*ClientStream, error) {
	if err := validateDialRequest(req); err != nil {
		return nil, fmt.Errorf("hbone: dial %s via %s: %w", req.Authority, req.NextHop, err)
	}
	key := makeKey(req)
	var skip []*poolConn
	for attempt := 0; ; attempt++ {
		pc, err := p.getConn(ctx, key, req, skip)
		if err != nil {
			return nil, fmt.Errorf("hbone: dial %s via %s: %w", req.Authority, req.NextHop, err)
		}
		st, retry, err := p.openStream(ctx, pc, req)
		if err == nil {
			return st, nil
		}
		if !retry || attempt >= 3 || ctx.Err() != nil {
			return nil, fmt.Errorf("hbone: dial %s via %s: %w", req.Authority, req.NextHop, err)
		}
		skip = append(skip, pc)
		p.log.Debug("hbone stream not accepted by connection, retrying", "next_hop", req.NextHop.String(), "err", err)
	}
}

// getConn returns a connection with one stream slot reserved for the
// caller, dialling one if needed.
func (p *Pool) getConn(ctx context.Context, key poolKey, req *DialRequest, skip []*poolConn) (*poolConn, error) {
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		e := p.entries[key]
		if e == nil {
			e = &poolEntry{}
			p.entries[key] = e
		}
		var pc *poolConn
		var dead []*poolConn
		for _, c := range e.conns {
			if c.broken.Load() {
				if c.active == 0 {
					dead = append(dead, c)
				}
				continue
			}
			if c.active < p.cfg.MaxStreamsPerConn && !slices.Contains(skip, c) {
				pc = c
				break
			}
		}
		if len(dead) > 0 {
			// Broken and unused: evict now rather than at the idle timeout.
			for _, c := range dead {
				p.retireLocked(c)
			}
			p.mu.Unlock()
			closeConns(dead)
			p.mu.Lock()
			continue
		}
		if pc != nil {
			p.reserveLocked(pc)
			p.mu.Unlock()
			// The connection has its own view: GOAWAY, closed socket or
			// the server's concurrency limit.
			if pc.cc.reserve() {
				return pc, nil
			}
			closed, closing := pc.cc.state()
			p.mu.Lock()
			if closed || closing {
				p.markUnusableLocked(pc)
			} else {
				skip = append(skip, pc)
			}
			toClose := p.releaseLocked(pc)
			p.mu.Unlock()
			closeConns(toClose)
			p.mu.Lock()
			continue
		}
		if dc := e.dialing; dc != nil {
			p.mu.Unlock()
			select {
			case <-dc.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if dc.err != nil && !dc.retry {
				return nil, dc.err
			}
			p.mu.Lock()
			continue
		}

		dc := &dialCall{done: make(chan struct{})}
		e.dialing = dc
		p.mu.Unlock()
		pc, err := p.dialConn(ctx, key, req)
		p.mu.Lock()
		e.dialing = nil
		dc.err = err
		dc.retry = err != nil && ctx.Err() != nil
		close(dc.done)
		if err != nil {
			if len(e.conns) == 0 && p.entries[key] == e {
				delete(p.entries, key)
			}
			p.mu.Unlock()
			return nil, err
		}
		if p.closed {
			p.mu.Unlock()
			pc.cc.close(nil)
			return nil, ErrPoolClosed
		}
		e.conns = append(e.conns, pc)
		p.all[pc] = struct{}{}
		// A new connection has room and is not yet known to the transport
		// as busy; reserve there directly.
		p.reserveLocked(pc)
		p.mu.Unlock()
		if pc.cc.reserve() {
			return pc, nil
		}
		p.mu.Lock()
		p.markUnusableLocked(pc)
		toClose := p.releaseLocked(pc)
		p.mu.Unlock()
		closeConns(toClose)
		return nil, errors.New("new connection refused streams")
	}
}

// dialConn establishes and verifies one HBONE connection.
func (p *Pool) dialConn(ctx context.Context, key poolKey, req *DialRequest) (*poolConn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	raw, err := p.cfg.Dial(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	expected := slices.Clone(req.ExpectedIDs)
	cork := newCorkConn(raw)
	tc := tls.Client(cork, clientTLSConfig(req.Certificate, p.cfg.TrustBundle, expected))
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if proto := tc.ConnectionState().NegotiatedProtocol; proto != alpnH2 {
		_ = raw.Close()
		return nil, fmt.Errorf("server did not negotiate ALPN %q (got %q)", alpnH2, proto)
	}
	_ = raw.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	pc := &poolConn{key: key, tc: tc}
	cc, err := newClientConn(p, tc, cork, raw, &pc.broken)
	_ = raw.SetDeadline(time.Time{})
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("start http2: %w", err)
	}
	pc.cc = cc
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cc.close(nil)
		return nil, ErrPoolClosed
	}
	p.readers.Add(1) // under p.mu so it cannot race Close's Wait
	p.mu.Unlock()
	go func() {
		defer p.readers.Done()
		cc.run()
	}()
	p.dials.Add(1)
	p.log.Debug("hbone connection established", "next_hop", key.nextHop.String(), "source", key.src.String())
	return pc, nil
}

// reserveLocked takes a stream slot on pc. p.mu is held.
func (p *Pool) reserveLocked(pc *poolConn) {
	pc.active++
	if pc.idleTimer != nil && pc.idleTimer.Stop() {
		p.wg.Done()
	}
	pc.idleTimer = nil
}

// releaseLocked returns a stream slot. It returns connections that are now
// to be closed; the caller closes them after dropping p.mu. p.mu is held.
func (p *Pool) releaseLocked(pc *poolConn) []*poolConn {
	pc.active--
	if pc.active > 0 {
		return nil
	}
	if pc.unusable || pc.broken.Load() || p.closed {
		p.markUnusableLocked(pc)
		delete(p.all, pc)
		return []*poolConn{pc}
	}
	p.wg.Add(1)
	pc.idleTimer = time.AfterFunc(p.cfg.IdleTimeout, func() {
		defer p.wg.Done()
		p.idleExpired(pc)
	})
	return nil
}

func (p *Pool) idleExpired(pc *poolConn) {
	p.mu.Lock()
	if pc.active > 0 || pc.idleTimer == nil {
		p.mu.Unlock()
		return
	}
	pc.idleTimer = nil
	p.markUnusableLocked(pc)
	delete(p.all, pc)
	p.mu.Unlock()
	p.log.Debug("hbone idle connection closed", "next_hop", pc.key.nextHop.String())
	pc.cc.close(nil)
}

// retireLocked evicts an unused connection: its idle timer is stopped and
// it leaves the pool. The caller closes it after releasing p.mu.
func (p *Pool) retireLocked(pc *poolConn) {
	if pc.idleTimer != nil && pc.idleTimer.Stop() {
		p.wg.Done()
	}
	pc.idleTimer = nil
	p.markUnusableLocked(pc)
	delete(p.all, pc)
}

// markUnusableLocked removes pc from its entry so it gets no new streams.
func (p *Pool) markUnusableLocked(pc *poolConn) {
	pc.unusable = true
	e := p.entries[pc.key]
	if e == nil {
		return
	}
	e.conns = slices.DeleteFunc(e.conns, func(c *poolConn) bool { return c == pc })
	if len(e.conns) == 0 && e.dialing == nil {
		delete(p.entries, pc.key)
	}
}

func closeConns(pcs []*poolConn) {
	for _, pc := range pcs {
		pc.cc.close(nil)
	}
}

// Stats returns a snapshot of the pool.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PoolStats{Dials: p.dials.Load()}
	for _, e := range p.entries {
		for _, pc := range e.conns {
			if !pc.broken.Load() {
				s.Conns++
			}
		}
	}
	s.Streams = p.streams
	return s
}

// Close closes every pooled connection, resetting open streams, stops idle
// timers, and waits for running timer callbacks and for every connection's
// goroutines to end. Streams still held by callers fail;
// their Close remains safe. Later Dials fail with ErrPoolClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	all := make([]*poolConn, 0, len(p.all))
	for pc := range p.all {
		pc.unusable = true
		if pc.idleTimer != nil && pc.idleTimer.Stop() {
			p.wg.Done()
		}
		pc.idleTimer = nil
		all = append(all, pc)
	}
	clear(p.all)
	clear(p.entries)
	p.mu.Unlock()
	closeConns(all)
	p.wg.Wait()
	p.readers.Wait()
	return nil
}
