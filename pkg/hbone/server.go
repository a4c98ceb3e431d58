package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Request describes one validated CONNECT stream handed to a Handler.
type Request struct {
	// Authority is the CONNECT target (the :authority pseudo-header).
	Authority netip.AddrPort
	// PeerID is the client's verified SPIFFE ID.
	PeerID spiffeid.ID
	// Forwarded, Baggage and Traceparent are the raw header values, empty
	// when absent; repeated headers are joined with ", ".
	Forwarded, Baggage, Traceparent string
	// LocalAddr is the address the TLS connection arrived at; RemoteAddr is
	// the peer's address (the previous hop, not necessarily the source).
	LocalAddr, RemoteAddr net.Addr
}

// Handler decides the fate of each CONNECT stream. ServeHBONE is called on
// its own goroutine per stream and must answer through rw exactly once:
// rw.Accept for a 200 and a stream, or rw.Reject for an error status. If it
// returns without answering, the stream is rejected with 503. ctx is
// cancelled when the stream or its connection ends. Server.Shutdown and
// Server.Close wait for handlers to return, so a handler must return once
// its stream fails or ctx is cancelled. A handler may return while the
// accepted stream is still in use elsewhere; its owner must Close it.
type Handler interface {
	ServeHBONE(ctx context.Context, req *Request, rw *ResponseWriter)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request, rw *ResponseWriter)

// ServeHBONE calls f.
func (f HandlerFunc) ServeHBONE(ctx context.Context, req *Request, rw *ResponseWriter) {
	f(ctx, req, rw)
}

// ServerConfig configures a Server. Certificate, TrustBundle, TrustDomain
// and Handler are required; zero durations select the package defaults.
type ServerConfig struct {
	// Certificate is the server's own identity, fetched per handshake.
	Certificate CertificateSource
	// TrustBundle verifies client certificate chains.
	TrustBundle x509bundle.Source
	// TrustDomain is the server's own trust domain; client identities must
	// belong to it.
	TrustDomain spiffeid.TrustDomain
	// Handler receives validated CONNECT streams.
	Handler Handler
	// Logger receives connection-level events; nil means slog.Default().
	Logger *slog.Logger
	// KeepaliveInterval is how often the server PINGs each connection;
	// KeepaliveTimeout is how long a PING may go unanswered.
	KeepaliveInterval, KeepaliveTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake and the HTTP/2 preface.
	HandshakeTimeout time.Duration
	// BufferPool backs stream receive queues; nil creates one per Server.
	BufferPool *BufferPool
	// HandshakeFailed, when set, is called (from the connection's
	// goroutine; it must not block) for every connection whose TLS
	// handshake or HTTP/2 preface failed: an untrusted, expired or foreign
	// peer certificate, a timeout, or not HBONE at all. For metrics; the
	// Server logs failures itself, at most one line per
	// handshakeLogInterval.
	HandshakeFailed func(error)
}

// handshakeLogInterval spaces the Server's Info lines about failed
// handshakes, so a scanner or a misconfigured peer cannot flood the log;
// each line counts the failures it stands for.
const handshakeLogInterval = 10 * time.Second

// Server terminates HBONE. Create it with NewServer, run it with Serve (one
// call per listener) and stop it with Shutdown or Close.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	tlsConf *tls.Config

	// wg counts every goroutine Serve starts: per-connection goroutines and
	// handler goroutines. Shutdown and Close wait for it.
	wg sync.WaitGroup

	// Counters for tests and debugging.
	handshakes    atomic.Int64 // completed TLS handshakes
	streamsOpened atomic.Int64 // HEADERS frames that opened a stream

	// Failed handshakes not yet logged, and when the last line was.
	unloggedFailures atomic.Int64
	lastFailureLog   atomic.Int64 // unix nanoseconds

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	draining  bool // Shutdown was called: no new conns, GOAWAY sent to existing ones
	closed    bool // Shutdown or Close was called
}

// NewServer validates cfg and returns a Server. It starts nothing.
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.Certificate == nil:
		return nil, errors.New("hbone: server config: Certificate is required")
	case cfg.TrustBundle == nil:
		return nil, errors.New("hbone: server config: TrustBundle is required")
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("hbone: server config: TrustDomain is required")
	case cfg.Handler == nil:
		return nil, errors.New("hbone: server config: Handler is required")
	case cfg.KeepaliveInterval < 0 || cfg.KeepaliveTimeout < 0 || cfg.HandshakeTimeout < 0:
		return nil, errors.New("hbone: server config: negative duration")
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
	if cfg.BufferPool == nil {
		cfg.BufferPool = NewBufferPool(0)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		cfg:       cfg,
		log:       log.With("component", "hbone-server"),
		tlsConf:   serverTLSConfig(cfg.Certificate, cfg.TrustBundle, cfg.TrustDomain),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*serverConn]struct{}),
	}, nil
}

// Serve accepts connections on ln until Shutdown or Close, serving each on
// its own goroutine. It always closes ln, and returns ErrServerClosed after
// Shutdown or Close, or the accept error that stopped it otherwise.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		_ = ln.Close()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("hbone: accept: %w", err)
		}
		backoff = 0
		s.ServeConn(nc)
	}
}

// ServeConn serves one already-accepted TCP connection on a new goroutine,
// taking ownership of nc. It is for callers that accept connections
// themselves (for example inside another network namespace).
func (s *Server) ServeConn(nc net.Conn) {
	sc := newServerConn(s, nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sc.cancel()
		_ = nc.Close()
		return
	}
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, sc)
			s.mu.Unlock()
		}()
		sc.serve()
	}()
}

// Shutdown stops accepting, sends GOAWAY on every connection and waits for
// open streams to finish and their connections to close. When ctx expires
// first it closes everything, waits for the goroutines it started, and
// returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.draining = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.drain()
	}

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		_ = s.Close()
		<-done
		return fmt.Errorf("hbone: shutdown: %w", ctx.Err())
	}
}

// Close closes listeners and connections immediately, resetting open
// streams, and waits for the goroutines Serve started (handlers included).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.close(ErrServerClosed)
	}
	s.wg.Wait()
	return nil
}

// isDraining reports whether Shutdown has started.
func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// handshakeFailed reports a connection whose handshake failed: to
// HandshakeFailed, and to the log at most once per handshakeLogInterval,
// with the number of failures since the previous line.
func (s *Server) handshakeFailed(remote net.Addr, err error) {
	if f := s.cfg.HandshakeFailed; f != nil {
		f(err)
	}
	s.unloggedFailures.Add(1)
	now := time.Now().UnixNano()
	last := s.lastFailureLog.Load()
	if now-last < int64(handshakeLogInterval) || !s.lastFailureLog.CompareAndSwap(last, now) {
		s.log.Debug("hbone handshake failed", "remote", remote.String(), "err", err)
		return
	}
	s.log.Info("hbone handshake failed", "remote", remote.String(), "err", err, "failures_since_last_report", s.unloggedFailures.Swap(0))
}
