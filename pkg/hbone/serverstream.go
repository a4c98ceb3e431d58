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
	"syscall"

	"golang.org/x/net/http2"
)

// errWriteClosed is returned by writes after CloseWrite.
var errWriteClosed = errors.New("hbone: write on closed write half")

// ServerStream is the server end of an accepted CONNECT tunnel. Read returns
// the client's bytes and io.EOF after the client half-closes; CloseWrite
// half-closes towards the client (END_STREAM) while reads continue; Close
// ends both halves, resetting the stream if either is still open.
//
// One goroutine may Read while another Writes. Read must not be called
// concurrently with itself, nor Write with Write or CloseWrite. Close may be
// called from any goroutine, any number of times, and unblocks pending Read
// and Write calls. Whoever got the stream from ResponseWriter.Accept must
// Close it.
type ServerStream struct {
	sc     *serverConn
	id     uint32
	ctx    context.Context // cancelled when the stream ends
	cancel context.CancelFunc

	// Guarded by sc.mu.
	sendWindow  int64
	sendErr     error // set once the send half is unusable (CloseWrite, reset, conn closed)
	sendDone    bool  // END_STREAM sent or stream reset
	recvEnded   bool  // no more DATA will be accepted (END_STREAM, reset, or closed)
	recvAvail   int64 // receive window remaining
	recvUnacked int64 // consumed, not yet returned by WINDOW_UPDATE

	wlock sync.Mutex // serializes Write and CloseWrite so END_STREAM follows all data

	rmu      sync.Mutex // guards rbuf, recvEOF, recvErr, readWake.waiting
	rbuf     chunkQueue
	recvEOF  bool
	recvErr  error
	readWake readWaiter      // signalled when rbuf, recvEOF, recvErr or the read deadline change
	notify   func()          // armed by readOrArm; taken by wakeReader
	peerDone func()          // set by SetPeerDone; taken by wakeReader
	sink     syscall.RawConn // see setSink
	inlineN  int64           // bytes written to sink by deliver

	deadlines // SetDeadline, SetReadDeadline, SetWriteDeadline

	closeOnce sync.Once
}

func newServerStream(sc *serverConn, id uint32) *ServerStream {
	ctx, cancel := context.WithCancel(sc.ctx)
	st := &ServerStream{
		sc:         sc,
		id:         id,
		ctx:        ctx,
		cancel:     cancel,
		sendWindow: sc.peerInitWin,
		recvAvail:  StreamWindow,
		rbuf:       chunkQueue{pool: sc.srv.cfg.BufferPool},
		readWake:   newReadWaiter(),
	}
	st.waker = st
	return st
}

// wakeForDeadline wakes a blocked Read, or the connection's writers
// waiting for window, when one of st's deadlines passes.
func (st *ServerStream) wakeForDeadline(write bool) {
	if !write {
		st.readWake.signal()
		return
	}
	st.sc.mu.Lock()
	st.sc.wakeWritersLocked()
	st.sc.mu.Unlock()
}

// run validates and dispatches the stream; it runs on its own goroutine.
func (st *ServerStream) run(req *Request, status int) {
	rw := &ResponseWriter{st: st}
	if status != 0 {
		_ = rw.Reject(status)
		return
	}
	defer func() {
		if r := recover(); r != nil {
			st.sc.srv.log.Error("hbone handler panicked", "panic", fmt.Sprint(r), "authority", req.Authority.String())
		}
		rw.mu.Lock()
		answered := rw.answered
		rw.mu.Unlock()
		if !answered {
			_ = rw.Reject(http.StatusServiceUnavailable)
		}
	}()
	st.sc.srv.cfg.Handler.ServeHBONE(st.ctx, req, rw)
}

// deliver queues received data and signals the reader. Called by the read
// loop without sc.mu held. Data for a stream whose receive half already
// failed is dropped and its connection-level credit returned.
func (st *ServerStream) deliver(data []byte, ended bool) {
	st.rmu.Lock()
	dropped, inline := 0, 0
	if st.recvErr == nil {
		if st.sink != nil && st.notify != nil && st.rbuf.len() == 0 {
			// The drainer is idle and nothing is queued: hand the data
			// straight to the socket if it takes it without blocking.
			inline = writeNonBlocking(st.sink, data)
			st.inlineN += int64(inline)
			data = data[inline:]
		}
		st.rbuf.write(data)
		if ended {
			st.recvEOF = true
		}
	} else {
		dropped = len(data)
	}
	st.rmu.Unlock()
	st.sc.creditConn(dropped)
	if inline > 0 {
		st.sc.consumed(st, inline)
	}
	if inline == 0 || len(data) > 0 || ended {
		st.wakeReader()
	}
}

// setSink lets deliver write received data straight to sink (the TCP
// socket Splice copies this stream to) while the Splice drainer is idle.
func (st *ServerStream) setSink(sink syscall.RawConn) {
	st.rmu.Lock()
	st.sink = sink
	st.rmu.Unlock()
}

// inlineWritten reports the bytes deliver wrote straight to the sink.
func (st *ServerStream) inlineWritten() int64 {
	st.rmu.Lock()
	defer st.rmu.Unlock()
	return st.inlineN
}

// peerEnded records the client's END_STREAM carried by a trailers frame.
func (st *ServerStream) peerEnded() {
	st.sc.mu.Lock()
	st.recvEnded = true
	st.sc.mu.Unlock()
	st.rmu.Lock()
	st.recvEOF = true
	st.rmu.Unlock()
	st.wakeReader()
	st.sc.maybeRemove(st)
}

// fail aborts the receive half with err unless it already completed.
func (st *ServerStream) fail(err error) {
	st.rmu.Lock()
	dropped := 0
	if st.recvErr == nil && !st.recvEOF {
		st.recvErr = err
		dropped = st.rbuf.len()
		st.rbuf.release()
	}
	st.rmu.Unlock()
	st.sc.creditConn(dropped)
	st.wakeReader()
}

// discard fails the receive half with err, dropping buffered data even if
// the client already finished sending.
func (st *ServerStream) discard(err error) {
	st.rmu.Lock()
	if st.recvErr == nil {
		st.recvErr = err
	}
	dropped := st.rbuf.len()
	st.rbuf.release()
	st.rmu.Unlock()
	st.sc.creditConn(dropped)
	st.wakeReader()
}

// wakeReader wakes a blocked Read and runs an armed readOrArm callback.
// Callers change the receive state under rmu first and call this after
// releasing it.
func (st *ServerStream) wakeReader() {
	st.rmu.Lock()
	fn := st.notify
	st.notify = nil
	done := st.takePeerDoneLocked()
	st.rmu.Unlock()
	if fn != nil {
		go fn()
	}
	if done != nil {
		go done()
	}
	st.readWake.signal()
}

// takePeerDoneLocked returns the SetPeerDone function, and forgets it,
// once the client has nothing more to send and nothing sent is unread.
// rmu is held.
func (st *ServerStream) takePeerDoneLocked() func() {
	fn := st.peerDone
	if fn == nil || st.rbuf.len() > 0 || !st.recvEOF && st.recvErr == nil {
		return nil
	}
	st.peerDone = nil
	return fn
}

// SetPeerDone arranges for fn to be called once, on a new goroutine, when
// the client has finished sending (END_STREAM, a reset, or the
// connection's end) and every byte it sent has been read: at once if that
// is already so. A stream with unread data when the client finishes does
// not call fn (the data, a next request, still wants an answer). A later
// call replaces fn; nil cancels it. It lets a server notice a client that
// went away while its request is being served, without a read.
func (st *ServerStream) SetPeerDone(fn func()) {
	st.rmu.Lock()
	st.peerDone = fn
	done := st.takePeerDoneLocked()
	st.rmu.Unlock()
	if done != nil {
		go done()
	}
}

// readOrArm is a Read that never blocks: when there is nothing to return
// yet it records fn, which is then called once, on a new goroutine, as
// soon as the stream has data, EOF or an error, and reports armed. It lets
// Splice drain the stream without a goroutine parked on an idle stream.
func (st *ServerStream) readOrArm(p []byte, fn func()) (n int, err error, armed bool) {
	st.rmu.Lock()
	switch {
	case st.rbuf.len() > 0:
		n = st.rbuf.read(p)
		st.rmu.Unlock()
		st.sc.consumed(st, n)
		return n, nil, false
	case st.recvErr != nil:
		err = st.recvErr
	case st.recvEOF:
		err = io.EOF
	default:
		st.notify = fn
		st.rmu.Unlock()
		return 0, nil, true
	}
	st.rmu.Unlock()
	return 0, err, false
}

// Read reads tunnelled bytes sent by the client.
func (st *ServerStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if st.rdl.passed() {
		return 0, os.ErrDeadlineExceeded
	}
	st.rmu.Lock()
	for {
		if st.rbuf.len() > 0 {
			n := st.rbuf.read(p)
			st.readWake.unlock(&st.rmu, st.rbuf.len() > 0)
			st.sc.consumed(st, n)
			return n, nil
		}
		if st.recvErr != nil {
			err := st.recvErr
			st.readWake.unlock(&st.rmu, true)
			return 0, err
		}
		if st.recvEOF {
			st.readWake.unlock(&st.rmu, true)
			return 0, io.EOF
		}
		if st.rdl.passed() {
			st.readWake.unlock(&st.rmu, true)
			return 0, os.ErrDeadlineExceeded
		}
		st.readWake.wait(&st.rmu)
	}
}

// Write sends p to the client, blocking on HTTP/2 flow control.
func (st *ServerStream) Write(p []byte) (int, error) {
	st.wlock.Lock()
	defer st.wlock.Unlock()
	if st.wdl.passed() {
		return 0, os.ErrDeadlineExceeded
	}
	written := 0
	for len(p) > 0 {
		n, err := st.sc.awaitSend(st, len(p))
		if err != nil {
			return written, err
		}
		if err := st.sc.writeData(st.id, false, p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// CloseWrite half-closes the stream towards the client; reads continue
// until the client half-closes too. Calling it again is a no-op.
func (st *ServerStream) CloseWrite() error {
	st.wlock.Lock()
	defer st.wlock.Unlock()
	sc := st.sc
	sc.mu.Lock()
	if st.sendErr != nil {
		err := st.sendErr
		sc.mu.Unlock()
		if errors.Is(err, errWriteClosed) {
			return nil
		}
		return err
	}
	st.sendErr = errWriteClosed
	st.sendDone = true
	sc.mu.Unlock()
	err := sc.writeData(st.id, true, nil)
	sc.maybeRemove(st)
	return err
}

// Close ends the stream. If either half is still open it is reset with
// CANCEL. Pending and later Reads and Writes fail with net.ErrClosed.
func (st *ServerStream) Close() error {
	st.closeOnce.Do(func() {
		sc := st.sc
		sc.mu.Lock()
		if _, live := sc.streams[st.id]; live {
			if !st.recvEnded || !st.sendDone {
				_ = sc.queueLocked(ctrlFrame{kind: ctrlRST, streamID: st.id, code: http2.ErrCodeCancel})
			}
			st.sendDone = true
			st.recvEnded = true
			sc.removeLocked(st)
		}
		if st.sendErr == nil || errors.Is(st.sendErr, errWriteClosed) {
			st.sendErr = net.ErrClosed
		}
		sc.wakeWritersLocked()
		sc.mu.Unlock()

		st.rmu.Lock()
		st.recvErr = nil // Close wins over any earlier failure
		st.rmu.Unlock()
		st.discard(net.ErrClosed)
		st.cancel()
		st.stopDeadlines()
	})
	return nil
}

// LocalAddr returns the local address of the HBONE connection.
func (st *ServerStream) LocalAddr() net.Addr { return st.sc.localAddr }

// RemoteAddr returns the peer address of the HBONE connection.
func (st *ServerStream) RemoteAddr() net.Addr { return st.sc.remoteAddr }

// ResponseWriter answers one CONNECT request. Exactly one of Accept or
// Reject takes effect; later calls return an error.
type ResponseWriter struct {
	st       *ServerStream
	mu       sync.Mutex // guards answered
	answered bool
}

var errAnswered = errors.New("hbone: request already answered")

func (rw *ResponseWriter) claim() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.answered {
		return errAnswered
	}
	rw.answered = true
	return nil
}

// Accept sends 200 and returns the tunnel stream, which the caller must
// Close. Call it only after the upstream connection is established.
func (rw *ResponseWriter) Accept() (*ServerStream, error) {
	if err := rw.claim(); err != nil {
		return nil, err
	}
	st := rw.st
	st.sc.mu.Lock()
	err := st.sendErr
	st.sc.mu.Unlock()
	if err == nil {
		err = st.sc.writeHeaders(st.id, http.StatusOK, false)
	}
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("hbone: accept stream %d: %w", st.id, err)
	}
	return st, nil
}

// Reject answers with status (400, 401, 503, ...) and ends the stream.
func (rw *ResponseWriter) Reject(status int) error {
	if status < 400 || status > 599 {
		return fmt.Errorf("hbone: reject with non-error status %d", status)
	}
	if err := rw.claim(); err != nil {
		return err
	}
	st := rw.st
	sc := st.sc
	sc.mu.Lock()
	err := st.sendErr
	if err == nil {
		st.sendErr = errWriteClosed
		st.sendDone = true
	}
	sc.mu.Unlock()
	if err == nil {
		err = sc.writeHeaders(st.id, status, true)
	}
	sc.mu.Lock()
	if _, live := sc.streams[st.id]; live {
		if !st.recvEnded {
			// The response is complete; ask the client to stop sending.
			_ = sc.queueLocked(ctrlFrame{kind: ctrlRST, streamID: st.id, code: http2.ErrCodeNo})
			st.recvEnded = true
		}
		sc.removeLocked(st)
	}
	sc.mu.Unlock()
	st.discard(net.ErrClosed)
	if err != nil && !errors.Is(err, errWriteClosed) {
		return fmt.Errorf("hbone: reject stream %d: %w", st.id, err)
	}
	return nil
}
