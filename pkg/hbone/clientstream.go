package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ClientStream is the client end of an established CONNECT tunnel. Read
// returns the server's bytes and io.EOF after the server half-closes;
// CloseWrite half-closes towards the server (END_STREAM) while reads
// continue; Close ends the stream, resetting it if it is still open, and
// returns its slot to the pool.
//
// One goroutine may Read while another Writes. Read must not be called
// concurrently with itself, nor Write with Write or CloseWrite. Close may be
// called from any goroutine and unblocks pending calls. The caller of
// Pool.Dial must Close the stream.
//
// A stream has no goroutine of its own: Write frames and sends the caller's
// bytes on the connection directly, and received bytes wait in pooled
// buffers only until they are read.
type ClientStream struct {
	pool   *Pool
	pc     *poolConn
	cc     *clientConn
	id     uint32 // set under cc.w's lock before the stream is visible
	local  net.Addr
	remote net.Addr

	respDone chan struct{} // closed by answerLocked

	// Guarded by cc.mu.
	answered    bool
	status      int   // the response status; valid once respDone is closed
	respErr     error // why no response came; valid once respDone is closed
	sendWindow  int64
	sendErr     error // set once the send half is unusable (CloseWrite, reset, conn closed)
	sendDone    bool  // END_STREAM sent or stream reset
	recvEnded   bool  // no more DATA will be accepted
	recvAvail   int64
	recvUnacked int64

	wlock sync.Mutex // serializes Write and CloseWrite so END_STREAM follows all data

	rmu      sync.Mutex // guards rbuf, recvEOF, recvErr, readWake.waiting
	rbuf     chunkQueue
	recvEOF  bool
	recvErr  error
	readWake readWaiter      // signalled when rbuf, recvEOF, recvErr or the read deadline change
	notify   func()          // armed by readOrArm; taken by wakeReader
	sink     syscall.RawConn // see setSink
	inlineN  int64           // bytes written to sink by deliver

	deadlines // SetDeadline, SetReadDeadline, SetWriteDeadline

	closed    atomic.Bool
	abortOnce sync.Once
	closeOnce sync.Once
}

func newClientStream(cc *clientConn) *ClientStream {
	s := &ClientStream{
		cc:        cc,
		respDone:  make(chan struct{}),
		recvAvail: StreamWindow,
		rbuf:      chunkQueue{pool: cc.bufs},
		readWake:  newReadWaiter(),
	}
	s.waker = s
	return s
}

// wakeForDeadline wakes a blocked Read, or the connection's writers
// waiting for window, when one of s's deadlines passes.
func (s *ClientStream) wakeForDeadline(write bool) {
	if !write {
		s.readWake.signal()
		return
	}
	s.cc.mu.Lock()
	s.cc.wakeWritersLocked()
	s.cc.mu.Unlock()
}

// answerLocked records the response (status) or why there is none (err),
// once. cc.mu is held.
func (s *ClientStream) answerLocked(status int, err error) {
	if s.answered {
		return
	}
	s.answered = true
	s.status, s.respErr = status, err
	close(s.respDone)
}

// openStream sends the CONNECT on pc, whose slot is already reserved. retry
// reports whether the failure was the connection's fault, so another
// connection may succeed.
func (p *Pool) openStream(ctx context.Context, pc *poolConn, req *DialRequest) (_ *ClientStream, retry bool, _ error) {
	hdrs := make([]hpack.HeaderField, 0, 3)
	if req.Forwarded != "" {
		hdrs = append(hdrs, hpack.HeaderField{Name: headerForwarded, Value: req.Forwarded})
	}
	if req.Baggage != "" {
		hdrs = append(hdrs, hpack.HeaderField{Name: headerBaggage, Value: req.Baggage})
	}
	tp := req.Traceparent
	if tp == "" {
		tp = NewTraceparent()
	}
	hdrs = append(hdrs, hpack.HeaderField{Name: headerTraceparent, Value: tp})

	p.mu.Lock()
	p.streams++
	p.mu.Unlock()
	fail := func(err error, retry bool) (*ClientStream, bool, error) {
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

	st, status, retry, err := pc.cc.openStream(ctx, req.Authority.String(), hdrs)
	switch {
	case err != nil && ctx.Err() != nil:
		return fail(fmt.Errorf("connect: %w", context.Cause(ctx)), false)
	case err != nil:
		closed, closing := pc.cc.state()
		return fail(fmt.Errorf("connect: %w", err), retry || closed || closing || pc.broken.Load())
	case status != http.StatusOK:
		return fail(&StatusError{Code: status}, false)
	}
	st.pool, st.pc = p, pc
	st.local, st.remote = pc.tc.LocalAddr(), pc.tc.RemoteAddr()
	return st, false, nil
}

// deliver queues received data and signals the reader. Called by the read
// loop without cc.mu held.
func (s *ClientStream) deliver(data []byte, ended bool) {
	s.rmu.Lock()
	dropped, inline := 0, 0
	if s.recvErr == nil {
		if s.sink != nil && s.notify != nil && s.rbuf.len() == 0 {
			// The drainer is idle and nothing is queued: hand the data
			// straight to the socket if it takes it without blocking.
			inline = writeNonBlocking(s.sink, data)
			s.inlineN += int64(inline)
			data = data[inline:]
		}
		s.rbuf.write(data)
		if ended {
			s.recvEOF = true
		}
	} else {
		dropped = len(data)
	}
	s.rmu.Unlock()
	s.cc.creditConn(dropped)
	if inline > 0 {
		s.cc.consumed(s, inline)
	}
	if inline == 0 || len(data) > 0 || ended {
		s.wakeReader()
	}
}

// setSink lets deliver write received data straight to sink (the TCP
// socket Splice copies this stream to) while the Splice drainer is idle.
func (s *ClientStream) setSink(sink syscall.RawConn) {
	s.rmu.Lock()
	s.sink = sink
	s.rmu.Unlock()
}

// inlineWritten reports the bytes deliver wrote straight to the sink.
func (s *ClientStream) inlineWritten() int64 {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.inlineN
}

// peerEnded records the server's END_STREAM carried by a HEADERS frame.
func (s *ClientStream) peerEnded() {
	s.cc.mu.Lock()
	s.recvEnded = true
	s.cc.mu.Unlock()
	s.rmu.Lock()
	s.recvEOF = true
	s.rmu.Unlock()
	s.wakeReader()
	s.cc.maybeRemove(s)
}

// fail aborts the receive half with err unless it already completed.
func (s *ClientStream) fail(err error) {
	s.rmu.Lock()
	dropped := 0
	if s.recvErr == nil && !s.recvEOF {
		s.recvErr = err
		dropped = s.rbuf.len()
		s.rbuf.release()
	}
	s.rmu.Unlock()
	s.cc.creditConn(dropped)
	s.wakeReader()
}

// wakeReader wakes a blocked Read and runs an armed readOrArm callback.
// Callers change the receive state under rmu first and call this after
// releasing it.
func (s *ClientStream) wakeReader() {
	s.rmu.Lock()
	fn := s.notify
	s.notify = nil
	s.rmu.Unlock()
	if fn != nil {
		go fn()
	}
	s.readWake.signal()
}

// readOrArm is a Read that never blocks: when there is nothing to return
// yet it records fn, which is then called once, on a new goroutine, as
// soon as the stream has data, EOF or an error, and reports armed. It lets
// Splice drain the stream without a goroutine parked on an idle stream.
func (s *ClientStream) readOrArm(p []byte, fn func()) (n int, err error, armed bool) {
	s.rmu.Lock()
	switch {
	case s.rbuf.len() > 0:
		n = s.rbuf.read(p)
		s.rmu.Unlock()
		s.cc.consumed(s, n)
		return n, nil, false
	case s.recvErr != nil:
		err = s.recvErr
	case s.recvEOF:
		err = io.EOF
	default:
		s.notify = fn
		s.rmu.Unlock()
		return 0, nil, true
	}
	s.rmu.Unlock()
	return 0, err, false
}

// Read reads tunnelled bytes sent by the server.
func (s *ClientStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.rdl.passed() {
		return 0, os.ErrDeadlineExceeded
	}
	s.rmu.Lock()
	for {
		if s.rbuf.len() > 0 {
			n := s.rbuf.read(p)
			s.readWake.unlock(&s.rmu, s.rbuf.len() > 0)
			s.cc.consumed(s, n)
			return n, nil
		}
		if s.recvErr != nil {
			err := s.recvErr
			s.readWake.unlock(&s.rmu, true)
			if s.closed.Load() {
				err = net.ErrClosed
			}
			return 0, err
		}
		if s.recvEOF {
			s.readWake.unlock(&s.rmu, true)
			return 0, io.EOF
		}
		if s.rdl.passed() {
			s.readWake.unlock(&s.rmu, true)
			return 0, os.ErrDeadlineExceeded
		}
		s.readWake.wait(&s.rmu)
	}
}

// Write sends p to the server, blocking on HTTP/2 flow control.
func (s *ClientStream) Write(p []byte) (int, error) {
	s.wlock.Lock()
	defer s.wlock.Unlock()
	if s.wdl.passed() {
		return 0, os.ErrDeadlineExceeded
	}
	written := 0
	for len(p) > 0 {
		n, err := s.cc.awaitSend(s, len(p))
		if err == nil {
			err = s.cc.writeData(s, false, p[:n])
		}
		if err != nil {
			if errors.Is(err, errWriteClosed) || errors.Is(err, net.ErrClosed) {
				err = fmt.Errorf("hbone: write: %w", net.ErrClosed)
			}
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// CloseWrite half-closes the stream towards the server; reads continue.
// Calling it again, or on a stream that was reset or closed, is a no-op.
func (s *ClientStream) CloseWrite() error {
	s.wlock.Lock()
	defer s.wlock.Unlock()
	cc := s.cc
	cc.mu.Lock()
	if s.sendErr != nil {
		cc.mu.Unlock()
		return nil
	}
	s.sendErr = errWriteClosed
	s.sendDone = true
	cc.mu.Unlock()
	err := cc.writeData(s, true, nil)
	cc.maybeRemove(s)
	return err
}

// abort ends the stream on its connection: it is reset with CANCEL if
// either half is still open, and pending and later Reads and Writes fail.
func (s *ClientStream) abort() {
	s.abortOnce.Do(func() {
		cc := s.cc
		cc.mu.Lock()
		if _, live := cc.streams[s.id]; live {
			if !s.recvEnded || !s.sendDone {
				_ = cc.queueLocked(ctrlFrame{kind: ctrlRST, streamID: s.id, code: http2.ErrCodeCancel})
			}
			s.sendDone = true
			s.recvEnded = true
			cc.removeLocked(s)
		}
		if s.sendErr == nil || errors.Is(s.sendErr, errWriteClosed) {
			s.sendErr = net.ErrClosed
		}
		s.answerLocked(0, net.ErrClosed)
		cc.wakeWritersLocked()
		cc.mu.Unlock()

		s.rmu.Lock()
		if s.recvErr == nil {
			s.recvErr = net.ErrClosed
		}
		dropped := s.rbuf.len()
		s.rbuf.release()
		s.rmu.Unlock()
		cc.creditConn(dropped)
		s.wakeReader()
	})
}

// Close ends the stream and returns its slot to the pool. Calling it more
// than once is harmless.
func (s *ClientStream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.abort()
		s.stopDeadlines()
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
