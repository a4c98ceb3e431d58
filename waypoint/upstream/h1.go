package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/zmesh/zmesh/waypoint/http1"
)

// h1Transport is an HTTP/1.1 client to one endpoint over its tunnels, with
// keep-alive pooling. It does what net/http's Transport does for a proxy's
// upstream requests, but in the caller's goroutine: the request is written
// and the response read by the goroutine that calls RoundTrip (a request
// with a body is written by one extra goroutine, so an upstream that
// answers before reading the whole body cannot deadlock it). net/http's
// Transport hands every request to a write goroutine and every response
// from a read goroutine, two scheduler hand-offs per request on the
// waypoint's hottest path.
//
// Connections are reused only after a response was read to its end with
// the request fully written and neither side asking to close. Idle
// connections are closed after idleTimeout, or by CloseIdleConnections.
// Safe for concurrent use.
type h1Transport struct {
	dial func(ctx context.Context) (net.Conn, error)
	// keepAlive false sends "Connection: close" and never reuses.
	keepAlive      bool
	maxIdle        int
	idleTimeout    time.Duration
	maxHeaderBytes int
	bufSize        int

	mu    sync.Mutex // guards idle and sweep
	idle  []*h1Conn  // most recently used last
	sweep *time.Timer
}

// h1Conn is one tunnel carrying HTTP/1.1.
type h1Conn struct {
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	rr   *http1.ResponseReader
	// read counts bytes read from conn for the current request.
	read   int64
	idleAt time.Time
	reused bool
	// closeConn closes conn; made once, for each round trip's AfterFunc.
	closeConn func()
}

func (c *h1Conn) Read(p []byte) (int, error) {
	n, err := c.conn.Read(p)
	c.read += int64(n)
	return n, err
}

func newH1Transport(dial func(ctx context.Context) (net.Conn, error), keepAlive bool, idleTimeout time.Duration) *h1Transport {
	return &h1Transport{dial: dial, keepAlive: keepAlive, maxIdle: 64, idleTimeout: idleTimeout, maxHeaderBytes: 64 << 10, bufSize: 4 << 10}
}

// RoundTrip implements http.RoundTripper. It closes req.Body in every
// case. A request on a reused connection that fails before any byte of
// the answer arrived is retried once on a new connection when it is
// replayable (as net/http's Transport does): idle tunnels may have been
// closed by the other side.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.check(req); err != nil {
		closeReqBody(req)
		return nil, err
	}
	ctx := req.Context()
	if !t.keepAlive && !req.Close {
		req = req.WithContext(ctx) // a shallow copy: the caller's stays as it was
		req.Close = true
	}
	for retried := false; ; retried = true {
		c, err := t.get(ctx)
		if err != nil {
			closeReqBody(req)
			return nil, err
		}
		resp, err := t.roundTrip(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		if retried || !c.reused || c.read > 0 || ctx.Err() != nil || !replayable(req) {
			return nil, err
		}
		if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.WithContext(ctx)
			req.Body = body
		}
	}
}

// check refuses what net/http's Transport refuses before writing.
func (t *h1Transport) check(req *http.Request) error {
	if req.URL == nil || req.URL.Host == "" {
		return errors.New("upstream request without a host")
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("upstream request: invalid header field name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("upstream request: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// replayable mirrors net/http's rule: idempotent methods (or an
// idempotency key) whose body can be had again.
func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

func closeReqBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// get returns an idle connection that has not timed out, or dials one.
func (t *h1Transport) get(ctx context.Context) (*h1Conn, error) {
	now := time.Now()
	t.mu.Lock()
	for n := len(t.idle); n > 0; n = len(t.idle) {
		c := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		if t.idleTimeout > 0 && now.Sub(c.idleAt) > t.idleTimeout {
			_ = c.conn.Close()
			continue
		}
		t.mu.Unlock()
		c.reused, c.read = true, 0
		return c, nil
	}
	t.mu.Unlock()
	conn, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	c := &h1Conn{conn: conn, closeConn: func() { _ = conn.Close() }}
	c.br = bufio.NewReaderSize(c, t.bufSize)
	c.bw = bufio.NewWriterSize(conn, t.bufSize)
	c.rr = http1.NewResponseReader(c.br, t.maxHeaderBytes)
	return c, nil
}

// put makes c idle, or closes it when the pool is full.
func (t *h1Transport) put(c *h1Conn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	if len(t.idle) >= t.maxIdle {
		t.mu.Unlock()
		_ = c.conn.Close()
		return
	}
	t.idle = append(t.idle, c)
	if t.sweep == nil && t.idleTimeout > 0 {
		t.sweep = time.AfterFunc(t.idleTimeout, t.sweepIdle)
	}
	t.mu.Unlock()
}

// sweepIdle closes connections idle longer than idleTimeout and re-arms
// itself while any connection stays idle.
func (t *h1Transport) sweepIdle() {
	now := time.Now()
	t.mu.Lock()
	var expired []*h1Conn
	kept := t.idle[:0]
	for _, c := range t.idle {
		if now.Sub(c.idleAt) >= t.idleTimeout {
			expired = append(expired, c)
		} else {
			kept = append(kept, c)
		}
	}
	clear(t.idle[len(kept):])
	t.idle = kept
	t.sweep = nil
	if len(kept) > 0 {
		t.sweep = time.AfterFunc(t.idleTimeout-now.Sub(kept[0].idleAt), t.sweepIdle)
	}
	t.mu.Unlock()
	for _, c := range expired {
		_ = c.conn.Close()
	}
}

// CloseIdleConnections closes the idle connections; busy ones are closed
// when their response ends. The transport stays usable.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
	t.mu.Unlock()
	for _, c := range idle {
		_ = c.conn.Close()
	}
}

// roundTrip sends req on c and reads the response header. On error c is
// closed.
func (t *h1Transport) roundTrip(ctx context.Context, c *h1Conn, req *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, c.closeConn)
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = c.conn.Close()
		if cerr := context.Cause(ctx); cerr != nil {
			return nil, cerr // the context ended (and closed c, if it caused err)
		}
		return nil, err
	}

	// A request without a body is written here; one with a body by a
	// goroutine, so the answer can be read while it is sent.
	var wrote chan error
	if req.Body == nil || req.Body == http.NoBody {
		if err := http1.WriteRequest(c.bw, req); err != nil {
			return fail(fmt.Errorf("upstream write: %w", err))
		}
		if err := c.bw.Flush(); err != nil {
			return fail(fmt.Errorf("upstream write: %w", err))
		}
	} else {
		wrote = make(chan error, 1)
		go func() {
			err := http1.WriteRequest(c.bw, req)
			if err == nil {
				err = c.bw.Flush()
			}
			wrote <- err
		}()
	}

	var resp *http.Response
	informational := 0
	for {
		r, err := c.rr.Read(req)
		if err != nil {
			if wrote != nil {
				select {
				case werr := <-wrote:
					if werr != nil {
						err = fmt.Errorf("%w (request write: %w)", err, werr)
					}
				default:
					// Still writing: closing the connection (in fail) ends
					// the write, or the request body's end does.
				}
			}
			return fail(fmt.Errorf("upstream read: %w", err))
		}
		if r.StatusCode >= 100 && r.StatusCode < 200 && r.StatusCode != http.StatusSwitchingProtocols {
			// Informational: the real answer follows, after a few at most.
			if informational++; informational > maxInformational {
				return fail(fmt.Errorf("upstream read: more than %d informational responses", maxInformational))
			}
			continue
		}
		resp = r
		break
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return t.upgraded(c, req, resp, stop, wrote, fail)
	}
	b := &h1Body{t: t, c: c, rc: resp.Body, stop: stop, wrote: wrote,
		reusable: t.keepAlive && !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		// Nothing to read: the connection is done with now, unless the
		// request is still being written.
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// maxInformational bounds the 1xx answers read before the final one, as
// net/http's Transport does.
const maxInformational = 5

// h1Body is a response body that gives its connection back to the pool
// when read to the end, and closes it otherwise.
type h1Body struct {
	t        *h1Transport
	c        *h1Conn
	rc       io.ReadCloser
	stop     func() bool
	wrote    chan error
	reusable bool

	mu   sync.Mutex // guards done and eof
	done bool
	eof  bool // done because the body was read to its end
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	done, eof := b.done, b.eof
	b.mu.Unlock()
	if eof {
		return 0, io.EOF
	}
	if done {
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(true)
	case err != nil:
		b.finish(false)
	}
	return n, err
}

var errBodyClosed = errors.New("read on a closed upstream response body")

// Close ends the body; a body not read to its end costs its connection.
func (b *h1Body) Close() error {
	b.finish(false)
	return nil
}

// finish releases the connection once: back to the pool when complete is
// true and nothing prevents reuse, closed otherwise.
func (b *h1Body) finish(complete bool) {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return
	}
	b.done, b.eof = true, complete
	b.mu.Unlock()
	reuse := complete && b.reusable
	if !b.stop() {
		reuse = false // the context ended and closed the connection
	}
	if b.wrote != nil {
		select {
		case err := <-b.wrote:
			reuse = reuse && err == nil
		default:
			// Still writing the request: the connection cannot carry
			// another one. Closing it ends the write, or the request
			// body's end does; the writer is not waited for, as it may be
			// blocked reading a client that waits for this answer.
			reuse = false
		}
	}
	if reuse && b.c.br.Buffered() == 0 {
		b.t.put(b.c)
		return
	}
	_ = b.c.conn.Close()
}

// upgraded hands over c after a 101 (Switching Protocols) answer, as
// net/http's Transport does: the response's Body is the connection, an
// io.ReadWriteCloser (with CloseWrite when the tunnel has one) carrying
// the new protocol. From then on the request's context no longer governs
// the connection; the caller closes it.
func (t *h1Transport) upgraded(c *h1Conn, req *http.Request, resp *http.Response, stop func() bool, wrote chan error, fail func(error) (*http.Response, error)) (*http.Response, error) {
	if wrote != nil {
		// An upgrade request has no body; one that had is still being
		// written into what is now the new protocol's stream.
		if err := <-wrote; err != nil {
			return fail(fmt.Errorf("upstream write: %w", err))
		}
	}
	if !stop() {
		return fail(errors.New("upstream upgrade: context ended"))
	}
	if !isUpgrade(req.Header) || !strings.EqualFold(resp.Header.Get("Upgrade"), req.Header.Get("Upgrade")) {
		_ = c.conn.Close()
		return nil, fmt.Errorf("upstream answered 101 switching to %q, not the requested %q", resp.Header.Get("Upgrade"), req.Header.Get("Upgrade"))
	}
	resp.Body = NewUpgradedConn(c.conn, c.br)
	return resp, nil
}

// isUpgrade reports whether h asks for a protocol upgrade (an Upgrade
// header and the "upgrade" token in Connection).
func isUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade")
}

// UpgradedConn is a connection that switched protocols after an HTTP/1.1
// exchange: an upstream request's (a 101 response's Body) or a downstream
// one taken over from net/http. Reads return what the exchange's reader
// had buffered first.
type UpgradedConn struct {
	conn net.Conn
	br   *bufio.Reader // nil once drained
}

// NewUpgradedConn returns conn, read through br until br's buffer is empty.
func NewUpgradedConn(conn net.Conn, br *bufio.Reader) *UpgradedConn {
	return &UpgradedConn{conn: conn, br: br}
}

func (u *UpgradedConn) Read(p []byte) (int, error) {
	if u.br != nil {
		if u.br.Buffered() > 0 {
			return u.br.Read(p)
		}
		u.br = nil
	}
	return u.conn.Read(p)
}

func (u *UpgradedConn) Write(p []byte) (int, error) { return u.conn.Write(p) }

// CloseWrite half-closes the connection when the tunnel supports it, and
// closes it otherwise.
func (u *UpgradedConn) CloseWrite() error {
	if cw, ok := u.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return u.conn.Close()
}

// Close closes the connection.
func (u *UpgradedConn) Close() error { return u.conn.Close() }
