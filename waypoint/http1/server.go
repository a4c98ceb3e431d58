// Package http1 serves HTTP/1.1 (and 1.0) on one connection to an
// http.Handler: the waypoint's tunnel streams. It does what net/http's
// server does for such a connection with less work per request: the head
// is parsed into one string, nothing is sorted or cloned, and no goroutine
// reads the connection while the handler runs. A request's context still
// ends when its client goes away: with the connection's context, and when
// the connection reports the client's end of sending (peerWatcher). A
// connection that goes an hour without a request being served is closed,
// as Envoy closes idle downstream connections (Options.IdleTimeout).
//
// It is strict where a lenient reading could differ from another hop's:
// lines must end in CRLF, obsolete line folding, a request with both
// Content-Length and Transfer-Encoding, conflicting lengths, and encodings
// other than chunked are refused with 400 (501 for an unknown encoding)
// and the connection is closed.
package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Options configures Serve.
type Options struct {
	// MaxHeaderBytes bounds a request's head (request line and fields)
	// and a chunked body's trailer. Default 96 KiB.
	MaxHeaderBytes int
	// HTTP2 serves a connection that opens with the HTTP/2 client preface
	// (prior knowledge); the conn it gets replays the bytes already read.
	// When nil such a connection is closed.
	HTTP2 func(conn net.Conn)
	// Log records handler panics. Default discards.
	Log *slog.Logger
	// IdleTimeout closes the connection once it has gone that long
	// without a request being served (waiting for, or reading, the next
	// request's head). Zero means DefaultIdleTimeout; negative disables.
	IdleTimeout time.Duration
}

// Serve reads requests from conn and answers them with h, one after the
// other, until the client closes, a request or response ends the
// connection, or ctx is done (which closes conn). Requests' contexts
// derive from ctx and end when their handler returns. Serve flushes what
// it wrote before it returns; the caller closes conn.
func Serve(ctx context.Context, conn net.Conn, h http.Handler, opts Options) {
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 96 << 10
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	c := &serverConn{
		conn:           conn,
		br:             bufio.NewReaderSize(conn, 4<<10),
		bw:             bufio.NewWriterSize(conn, 4<<10),
		maxHeaderBytes: opts.MaxHeaderBytes,
		log:            opts.Log,
	}
	c.hr.br = c.br
	c.peer, _ = conn.(peerWatcher)
	if a := conn.RemoteAddr(); a != nil {
		c.remoteAddr = a.String()
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	idle := startIdleWatch(conn, opts.IdleTimeout)
	defer idle.stop()
	for first := true; ; first = false {
		var parsed http.Request
		err := c.hr.parseRequest(&parsed, c.maxHeaderBytes, first)
		idle.busy()
		if err != nil {
			if errors.Is(err, errPreface) && opts.HTTP2 != nil {
				opts.HTTP2(&replayConn{Conn: conn, r: c.br})
				return
			}
			c.refuse(err)
			return
		}
		keep := c.serve(ctx, h, &parsed)
		// Each answer goes out at once, even with more bytes buffered: they
		// may be only part of the next request, or a slow one.
		if err := c.bw.Flush(); err != nil || !keep {
			return
		}
		idle.idle()
	}
}

// serverConn is the state of one served connection. Only the goroutine
// in Serve uses it, except where a field says otherwise.
type serverConn struct {
	conn           net.Conn
	br             *bufio.Reader
	bw             *bufio.Writer
	hr             headReader
	maxHeaderBytes int
	remoteAddr     string
	log            *slog.Logger

	// resp is the current request's response: one per connection, reset
	// for each request (a ResponseWriter is not used after its handler
	// returns). Its header map is the next request's too, cleared, unless
	// it grew past maxKeptFields.
	resp response
	// head is scratch for rendering a response's head and trailer.
	head []byte
	// pend backs the body a response holds before commit.
	pend []byte

	// wmu guards headSent, and bw until the head is sent: a request body's
	// reader may write "100 Continue" from another goroutine until then.
	wmu      sync.Mutex
	headSent bool
	// peer, when the connection can tell, reports the client's end of
	// sending; cancel ends the current request's context.
	peer   peerWatcher
	cancel context.CancelFunc
}

// peerWatcher is a connection that reports, without a read, that the
// client finished sending with nothing left unread (hbone.ServerStream).
// Serve uses it as net/http's server uses a background read: a client
// that goes away (or half-closes) while its request is served cancels the
// request's context.
type peerWatcher interface {
	SetPeerDone(fn func())
}

// watchPeer cancels the current request's context once the client has
// finished sending, from when its request was read whole: any byte
// already buffered is a next request, and then the client is not gone.
func (c *serverConn) watchPeer() {
	if c.peer != nil && c.br.Buffered() == 0 {
		c.peer.SetPeerDone(c.cancel)
	}
}

// serve runs the handler for the parsed request and reports whether the
// connection can carry another request.
func (c *serverConn) serve(ctx context.Context, h http.Handler, parsed *http.Request) bool {
	expect := parsed.Header["Expect"]
	if len(expect) > 0 {
		// Answered here, so not forwarded; HTTP/1.0 expectations are
		// ignored (RFC 9110 10.1.1).
		delete(parsed.Header, "Expect")
		if parsed.ProtoMinor == 0 {
			expect = nil
		} else if len(expect) != 1 || !strings.EqualFold(expect[0], "100-continue") {
			c.refuse(&requestError{status: http.StatusExpectationFailed, text: "unsupported expectation"})
			return false
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.cancel = cancel
	if c.peer != nil {
		defer c.peer.SetPeerDone(nil)
	}
	req := parsed.WithContext(rctx)
	req.RemoteAddr = c.remoteAddr
	b := newBody(c, req)
	c.wmu.Lock()
	c.headSent = false
	c.wmu.Unlock()
	if b != nil {
		req.Body = b
		b.expected = len(expect) > 0
		b.expect100 = b.expected
	} else {
		if req.Body == nil {
			req.Body = http.NoBody
		}
		c.watchPeer()
	}
	hdr := c.resp.hdr
	if hdr == nil {
		hdr = make(http.Header)
	} else {
		clear(hdr)
	}
	c.resp = response{c: c, req: req, body: b, hdr: hdr, isHEAD: req.Method == http.MethodHead, pending: c.pend[:0]}
	w := &c.resp
	if !c.run(h, w, req) {
		c.startHead() // no "100 Continue" may race with the last flush
		return false
	}
	if w.hijacked {
		return false
	}
	keep, err := w.finish()
	c.pend = w.pending[:0]
	if cap(c.head) > maxKeptScratch {
		c.head = nil // a large response head must not stay pinned
	}
	if len(w.hdr) > maxKeptFields {
		w.hdr = nil
	}
	if err != nil {
		return false
	}
	if b != nil {
		// The answer goes out before the rest of the body is read: a
		// client may wait for it before sending more.
		if err := c.bw.Flush(); err != nil {
			return false
		}
		if !b.finish() {
			keep = false
		}
	}
	return keep && !req.Close
}

// run calls the handler, turning a panic into the end of the connection.
func (c *serverConn) run(h http.Handler, w *response, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if err, ok := v.(error); !ok || !errors.Is(err, http.ErrAbortHandler) {
				c.log.Error("panic serving HTTP/1.1", "remote", c.remoteAddr, "panic", v, "stack", string(debug.Stack()))
			}
			ok = false
		}
	}()
	h.ServeHTTP(w, req)
	return true
}

// startHead records that a response's head is going out: no "100
// Continue" may precede it any more.
func (c *serverConn) startHead() {
	c.wmu.Lock()
	c.headSent = true
	c.wmu.Unlock()
}

// sendContinue answers "Expect: 100-continue" before the body's first
// read, unless the response already started. The body's mu is held.
func (c *serverConn) sendContinue() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.headSent {
		return nil
	}
	if _, err := c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
		return err
	}
	return c.bw.Flush()
}

// refuse answers a request the server cannot take, and the connection
// ends. A connection that just ended gets no answer.
func (c *serverConn) refuse(err error) {
	var re *requestError
	if !errors.As(err, &re) {
		return // io.EOF, a read error, or the connection closed under us
	}
	text := http.StatusText(re.status)
	if re.status == http.StatusBadRequest {
		text += ": " + re.text
	}
	b := appendStatusLine(c.head[:0], 1, re.status)
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"...)
	b = appendLength(b, int64(len(text)))
	b = append(b, "\r\n"...)
	b = append(b, text...)
	_, _ = c.bw.Write(b)
	_ = c.bw.Flush()
}

// replayConn reads what a bufio.Reader already holds before the conn.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the underlying connection when it can.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
