package listener

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"sync"

	"github.com/zmesh/zmesh/waypoint/http1"
)

var discardLog = log.New(io.Discard, "", 0)

// serveHTTP2 runs net/http's server for prior-knowledge HTTP/2 (gRPC) on
// conn until either side ends it.
func (h *Handler) serveHTTP2(ctx context.Context, conn net.Conn) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:        h.proxy,
		Protocols:      &protos,
		ErrorLog:       discardLog,
		MaxHeaderBytes: maxHeaderBytes,
		IdleTimeout:    http1.DefaultIdleTimeout,
		BaseContext:    func(net.Listener) context.Context { return ctx },
	}
	ln := newOneConn(conn)
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	_ = srv.Serve(ln)
}

// oneConn is a listener that yields one connection, then blocks until
// that connection is closed.
type oneConn struct {
	conn   net.Conn
	mu     sync.Mutex // guards given
	given  bool
	closed chan struct{}
	once   sync.Once
}

func newOneConn(c net.Conn) *oneConn {
	l := &oneConn{closed: make(chan struct{})}
	l.conn = &trackedConn{Conn: c, onClose: func() { l.once.Do(func() { close(l.closed) }) }}
	return l
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.given {
		l.given = true
		l.mu.Unlock()
		return l.conn, nil
	}
	l.mu.Unlock()
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	l.mu.Lock()
	given := l.given
	l.given = true
	l.mu.Unlock()
	if !given {
		return l.conn.Close()
	}
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.conn.LocalAddr() }

type trackedConn struct {
	net.Conn
	onClose func()
}

// CloseWrite half-closes the tunnel stream (END_STREAM).
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close gives net/http a TCP socket's close (endStream): net/http closes
// right after its last response when the connection is not kept alive.
func (c *trackedConn) Close() error {
	err := endStream(c.Conn)
	c.onClose()
	return err
}
