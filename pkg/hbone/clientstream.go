package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// ClientStream is the client end of an established CONNECT tunnel. Read
// returns the server's bytes and io.EOF after the server half-closes;
// CloseWrite half-closes towards the server (END_STREAM) while reads
// continue; Close ends the stream, resetting it if it is still open, and
// returns its slot to the pool.
//
// One goroutine may Read while another Writes. Close may be called from any
// goroutine and unblocks pending calls. The caller of Pool.Dial must Close
// the stream.
type ClientStream struct {
	pool   *Pool
	pc     *poolConn
	body   io.ReadCloser  // response body: bytes from the server
	pw     *io.PipeWriter // request body: bytes to the server
	cancel context.CancelFunc
	local  net.Addr
	remote net.Addr

	closed    atomic.Bool
	closeOnce sync.Once
}

// openStream sends the CONNECT on pc, whose slot is already reserved. retry
// reports whether the failure was the connection's fault, so another
// connection may succeed.
func (p *Pool) openStream(ctx context.Context, pc *poolConn, req *DialRequest) (_ *ClientStream, retry bool, _ error) {
	authority := req.Authority.String()
	h := make(http.Header, 4)
	h["User-Agent"] = []string{""} // suppress the transport's default user-agent
	if req.Forwarded != "" {
		h["Forwarded"] = []string{req.Forwarded}
	}
	if req.Baggage != "" {
		h["Baggage"] = []string{req.Baggage}
	}
	tp := req.Traceparent
	if tp == "" {
		tp = NewTraceparent()
	}
	h["Traceparent"] = []string{tp}

	// The stream must outlive ctx: its own context ends only on Close.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	pr, pw := io.Pipe()
	hreq := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: authority},
		Host:          authority,
		Header:        h,
		Body:          pr,
		ContentLength: -1,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
	}).WithContext(sctx)

	p.mu.Lock()
	p.streams++
	p.mu.Unlock()
	fail := func(err error, retry bool) (*ClientStream, bool, error) {
		cancel()
		_ = pw.CloseWithError(err)
		p.mu.Lock()
		p.streams--
		if retry {
			p.markUnusableLocked(pc)
		}
		toClose := p.releaseLocked(pc)
		p.mu.Unlock()
		closeConns(toClose)
		return nil, retry, err
	}

	resp, err := pc.cc.RoundTrip(hreq)
	if !stop() {
		// ctx ended while waiting: the stream was cancelled.
		if err == nil {
			_ = resp.Body.Close()
		}
		return fail(fmt.Errorf("connect: %w", context.Cause(ctx)), false)
	}
	if err != nil {
		st := pc.cc.State()
		var se http2.StreamError
		retry := st.Closed || st.Closing || pc.broken.Load() ||
			(errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream)
		return fail(fmt.Errorf("connect: %w", err), retry)
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return fail(&StatusError{Code: resp.StatusCode}, false)
	}
	return &ClientStream{
		pool:   p,
		pc:     pc,
		body:   resp.Body,
		pw:     pw,
		cancel: cancel,
		local:  pc.tc.LocalAddr(),
		remote: pc.tc.RemoteAddr(),
	}, false, nil
}

// Read reads tunnelled bytes sent by the server.
func (s *ClientStream) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if err != nil && s.closed.Load() {
		err = net.ErrClosed
	}
	return n, err
}

// Write sends p to the server. It blocks until the transport has taken all
// of p (HTTP/2 flow control applies).
func (s *ClientStream) Write(p []byte) (int, error) {
	n, err := s.pw.Write(p)
	if errors.Is(err, io.ErrClosedPipe) {
		err = fmt.Errorf("hbone: write: %w", net.ErrClosed)
	}
	return n, err
}

// CloseWrite half-closes the stream towards the server; reads continue.
func (s *ClientStream) CloseWrite() error {
	return s.pw.Close()
}

// Close ends the stream and returns its slot to the pool. Calling it more
// than once is harmless.
func (s *ClientStream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		_ = s.pw.CloseWithError(net.ErrClosed)
		_ = s.body.Close()
		s.cancel()
		s.pool.mu.Lock()
		s.pool.streams--
		toClose := s.pool.releaseLocked(s.pc)
		s.pool.mu.Unlock()
		closeConns(toClose)
	})
	return nil
}

// LocalAddr returns the local address of the HBONE connection.
func (s *ClientStream) LocalAddr() net.Addr { return s.local }

// RemoteAddr returns the next hop's address.
func (s *ClientStream) RemoteAddr() net.Addr { return s.remote }

// SetDeadline is not supported; it returns ErrDeadlineUnsupported.
func (s *ClientStream) SetDeadline(time.Time) error { return ErrDeadlineUnsupported }

// SetReadDeadline is not supported; it returns ErrDeadlineUnsupported.
func (s *ClientStream) SetReadDeadline(time.Time) error { return ErrDeadlineUnsupported }

// SetWriteDeadline is not supported; it returns ErrDeadlineUnsupported.
func (s *ClientStream) SetWriteDeadline(time.Time) error { return ErrDeadlineUnsupported }
