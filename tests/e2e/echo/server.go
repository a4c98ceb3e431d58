package echo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Protocol is what a listener speaks.
type Protocol string

// Listener protocols.
const (
	HTTP Protocol = "http"
	TCP  Protocol = "tcp"
	// GRPC serves any unary method over HTTP/2 (see GRPCCall).
	GRPC Protocol = "grpc"
)

// ListenerConfig is one listening port.
type ListenerConfig struct {
	Protocol Protocol
	// Port to listen on; 0 picks a free port (see Server.Addrs).
	Port int
	// ProxyProtocol makes the listener require a PROXY protocol header on
	// every connection and report the peer identity it carries.
	ProxyProtocol bool
}

// Config configures a Server.
type Config struct {
	// Pod and Namespace are reported in every HTTP response.
	Pod, Namespace string
	// Listeners to open; at least one.
	Listeners []ListenerConfig
	// ListenIP restricts the listeners to one address; "" means all.
	ListenIP string
	// Listen opens a listener; net.Listen if nil (tests pass a function
	// that listens inside a network namespace).
	Listen func(network, address string) (net.Listener, error)
	// Logger receives connection errors; slog.Default() if nil.
	Logger *slog.Logger
}

// Server runs the configured echo listeners. Create with NewServer, begin
// with Start, end with Close.
type Server struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool
	lns     []net.Listener
	https   []*http.Server
	grpcs   []*grpc.Server
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// NewServer validates cfg and allocates a Server; it opens nothing.
func NewServer(cfg Config) (*Server, error) {
	if len(cfg.Listeners) == 0 {
		return nil, errors.New("echo: no listeners configured")
	}
	seen := make(map[int]bool)
	for _, l := range cfg.Listeners {
		if l.Protocol != HTTP && l.Protocol != TCP && l.Protocol != GRPC {
			return nil, fmt.Errorf("echo: listener protocol %q, want http, tcp or grpc", l.Protocol)
		}
		if l.Port < 0 || l.Port > 65535 {
			return nil, fmt.Errorf("echo: port %d out of range", l.Port)
		}
		if l.Port != 0 && seen[l.Port] {
			return nil, fmt.Errorf("echo: port %d configured twice", l.Port)
		}
		seen[l.Port] = true
	}
	if cfg.ListenIP != "" && net.ParseIP(cfg.ListenIP) == nil {
		return nil, fmt.Errorf("echo: listen IP %q is not an IP address", cfg.ListenIP)
	}
	if cfg.Listen == nil {
		cfg.Listen = net.Listen
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg.Listeners = append([]ListenerConfig(nil), cfg.Listeners...)
	return &Server{cfg: cfg, log: log, conns: make(map[net.Conn]struct{})}, nil
}

// Start opens every listener (all or none) and starts serving.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("echo: Start called twice or after Close")
	}
	s.started = true
	for _, lc := range s.cfg.Listeners {
		l, err := s.cfg.Listen("tcp", net.JoinHostPort(s.cfg.ListenIP, strconv.Itoa(lc.Port)))
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			s.lns = nil
			return fmt.Errorf("echo: listen %s port %d: %w", lc.Protocol, lc.Port, err)
		}
		s.lns = append(s.lns, l)
	}
	for i, lc := range s.cfg.Listeners {
		l := s.lns[i]
		port := l.Addr().(*net.TCPAddr).Port
		if lc.ProxyProtocol {
			l = requireProxyHeader(l)
		}
		switch lc.Protocol {
		case HTTP:
			hs := &http.Server{
				Handler:           &handler{pod: s.cfg.Pod, namespace: s.cfg.Namespace, port: port, log: s.log},
				ReadHeaderTimeout: 10 * time.Second,
				ConnContext:       withConn,
				ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
			}
			s.https = append(s.https, hs)
			s.wg.Go(func() {
				if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
					s.log.Error("echo: http serve", "port", port, "err", err)
				}
			})
		case TCP:
			s.wg.Go(func() { s.serveTCP(l, port) })
		case GRPC:
			gs := s.grpcServer(port)
			s.grpcs = append(s.grpcs, gs)
			s.wg.Go(func() { s.serveGRPC(gs, l, port) })
		}
		s.log.Info("echo: listening", "protocol", lc.Protocol, "addr", l.Addr().String(), "proxy_protocol", lc.ProxyProtocol)
	}
	return nil
}

// Addrs returns the listeners' addresses, in configuration order (nil
// before Start).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.lns))
	for i, l := range s.lns {
		out[i] = l.Addr()
	}
	return out
}

// Close closes every listener and connection and waits for all serving
// goroutines. Safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var errs []error
	for _, hs := range s.https {
		if err := hs.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, gs := range s.grpcs {
		gs.Stop()
	}
	for _, l := range s.lns {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("echo: close: %w", err)
	}
	return nil
}

// track registers a TCP echo connection for Close; false when closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

type connKey struct{}

// withConn stores the accepted connection in the request context.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}
