package hbone

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// HalfCloser is a connection whose write side can be closed on its own. Both
// stream types of this package and *net.TCPConn implement it.
type HalfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// SpliceResult reports what Splice moved.
type SpliceResult struct {
	// AToB counts bytes read from a and written to b; BToA the reverse.
	AToB, BToA int64
	// AErr and BErr are the first non-EOF error of the a→b and b→a
	// directions, nil when the direction ended with a clean EOF.
	AErr, BErr error
}

// Err returns the first error of either direction, or nil.
func (r SpliceResult) Err() error { return errors.Join(r.AErr, r.BErr) }

// Splice copies a→b and b→a concurrently until both directions have ended,
// then closes both connections and reports the byte counts. When one side's
// read ends with EOF the other side's write half is closed (half-close
// propagation) and the opposite direction keeps running; any other error
// closes both connections, which ends the opposite direction too.
//
// A direction that reads from a *net.TCPConn waits for readability holding
// no buffer and borrows a small one per read (a full-size one from pool
// while bulk data flows, see smallBufferSize); any other HalfCloser source
// gets a read loop that holds a small buffer of its own. A direction that
// reads from one of this package's streams has no goroutine while the
// stream is idle: it runs only while the stream has data, with a buffer
// borrowed from pool for that time. So an idle TCP↔HBONE splice holds one
// goroutine (the caller's) and no buffer; under SpliceAsync it holds none.
// pool may be nil, in which case buffers of SpliceBufferSize are
// allocated. Splice owns a and b for its duration and closes them before
// returning.
func Splice(a, b HalfCloser, pool *BufferPool) SpliceResult {
	var (
		res       SpliceResult
		wg        sync.WaitGroup
		closeOnce sync.Once
	)
	closeBoth := func() {
		closeOnce.Do(func() {
			_ = a.Close()
			_ = b.Close()
		})
	}
	finisher := func(n *int64, e *error) func(int64, error) {
		return func(cnt int64, err error) {
			*n, *e = cnt, err
			if err != nil {
				closeBoth()
			}
			wg.Done()
		}
	}
	aToB := finisher(&res.AToB, &res.AErr)
	bToA := finisher(&res.BToA, &res.BErr)
	wg.Add(2)
	an, aNotifies := a.(readNotifier)
	bn, bNotifies := b.(readNotifier)
	switch {
	case bNotifies:
		drainAsync(a, bn, pool, bToA)
		if aNotifies {
			drainAsync(b, an, pool, aToB)
		} else {
			aToB(copyHalf(b, a, pool))
		}
	case aNotifies:
		drainAsync(b, an, pool, aToB)
		bToA(copyHalf(a, b, pool))
	default:
		go func() { bToA(copyHalf(a, b, pool)) }()
		aToB(copyHalf(b, a, pool))
	}
	wg.Wait()
	closeBoth()
	return res
}

// SpliceHandle is a splice started by SpliceAsync.
type SpliceHandle struct {
	a, b      HalfCloser
	srcs      [2]*tcpSource // directions waiting in the readPoller, if any
	closeOnce sync.Once
}

// Close closes both connections, which ends the splice; its done callback
// still runs (on another goroutine). A connection under SpliceAsync must
// be closed through its handle: closing a plain TCP connection directly
// while its direction is idle is only noticed by a periodic sweep, up to a
// second later. Calling Close more than once is harmless.
func (h *SpliceHandle) Close() error {
	h.closeOnce.Do(func() {
		_ = h.a.Close()
		_ = h.b.Close()
		for _, s := range h.srcs {
			if s != nil {
				s.abort(fmt.Errorf("hbone: read: %w", net.ErrClosed))
			}
		}
	})
	return nil
}

// SpliceAsync is Splice without a caller to block: it starts copying a→b
// and b→a, returns at once, and calls done (when not nil) once, on another
// goroutine, with the result after both directions have ended and both
// connections are closed. Half-close propagation, error handling and
// byte counts are Splice's.
//
// It also keeps no goroutine on an idle direction reading a
// *net.TCPConn (on Linux): the socket waits in an epoll set shared by the
// process, and each burst of data is copied on a short-lived goroutine.
// With a stream of this package on the other side, an idle TCP↔HBONE
// splice therefore holds no goroutine and no buffer at all. Use the
// returned handle's Close, not the connections', to end it early.
func SpliceAsync(a, b HalfCloser, pool *BufferPool, done func(SpliceResult)) *SpliceHandle {
	h := &SpliceHandle{a: a, b: b}
	var (
		res  SpliceResult
		left atomic.Int32
	)
	left.Store(2)
	finisher := func(n *int64, e *error) func(int64, error) {
		return func(cnt int64, err error) {
			*n, *e = cnt, err
			if err != nil {
				_ = h.Close()
			}
			if left.Add(-1) == 0 {
				_ = h.Close()
				if done != nil {
					done(res)
				}
			}
		}
	}
	type direction struct {
		dst, src HalfCloser
		finish   func(int64, error)
	}
	dirs := [2]direction{
		{dst: b, src: a, finish: finisher(&res.AToB, &res.AErr)},
		{dst: a, src: b, finish: finisher(&res.BToA, &res.BErr)},
	}
	// Prepare every direction before starting any, so that a direction
	// that fails at once finds the handle complete.
	var starts [2]func()
	for i, d := range dirs {
		if n, ok := d.src.(readNotifier); ok {
			starts[i] = func() { drainAsync(d.dst, n, pool, d.finish) }
			continue
		}
		if tc, ok := d.src.(*net.TCPConn); ok {
			if p, err := sharedPoller(); err == nil {
				if s, err := newTCPSource(d.dst, tc, pool, p, d.finish); err == nil {
					h.srcs[i] = s
					starts[i] = s.start
					continue
				}
			}
		}
		starts[i] = func() { go func() { d.finish(copyHalf(d.dst, d.src, pool)) }() }
	}
	for _, start := range starts {
		start()
	}
	return h
}

// readNotifier is implemented by ServerStream and ClientStream; see their
// readOrArm.
type readNotifier interface {
	HalfCloser
	readOrArm(p []byte, fn func()) (n int, err error, armed bool)
	setSink(sink syscall.RawConn)
	inlineWritten() int64
}

// drainer copies a readNotifier to dst in bursts: each run copies what the
// stream has, then arms the stream to start the next run when more
// arrives. Runs never overlap, so its fields need no lock.
type drainer struct {
	dst HalfCloser
	// w writes to dst: a rawSocket when dst is a TCP socket.
	w      io.Writer
	src    readNotifier
	pool   *BufferPool
	n      int64
	finish func(int64, error)
}

// drainAsync starts copying src to dst without a goroutine parked on src;
// finish is called once with the byte count and the first non-EOF error
// after dst's write half was closed on EOF, or on failure.
//
// When dst is a *net.TCPConn the stream may also write to it directly
// from its connection's read loop, without blocking, while the drainer is
// idle (see the streams' deliver); those bytes count towards the total.
func drainAsync(dst HalfCloser, src readNotifier, pool *BufferPool, finish func(int64, error)) {
	d := &drainer{dst: dst, w: dst, src: src, pool: pool}
	d.finish = func(n int64, err error) { finish(n+src.inlineWritten(), err) }
	if tc, ok := dst.(*net.TCPConn); ok {
		if rs := newRawSocket(tc); rs != nil {
			d.w = rs
			src.setSink(rs.rc)
		} else if rc, err := tc.SyscallConn(); err == nil {
			src.setSink(rc)
		}
	}
	go d.run()
}

func (d *drainer) run() {
	var big *[]byte
	defer func() {
		if big != nil && d.pool != nil {
			d.pool.Put(big)
		}
	}()
	big = getBuffer(d.pool)
	buf := *big
	for {
		nr, rerr, armed := d.src.readOrArm(buf, d.run)
		if armed {
			return
		}
		if nr > 0 {
			nw, werr := d.w.Write(buf[:nr])
			d.n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				d.finish(d.n, werr)
				return
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if err := d.dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
					d.finish(d.n, err)
					return
				}
				d.finish(d.n, nil)
				return
			}
			d.finish(d.n, rerr)
			return
		}
	}
}

// smallBufferSize is the buffer each direction starts with, so an idle or
// interactive connection holds no more than this. A read that fills it means
// bulk data is flowing: the direction then takes a full-size pooled buffer,
// and gives it back as soon as a read comes back short of the small size.
const smallBufferSize = 4 << 10

// copyHalf copies src to dst and closes dst's write half on EOF. It returns
// the bytes written and the first error that is not a clean EOF from src.
func copyHalf(dst, src HalfCloser, pool *BufferPool) (int64, error) {
	if tc, ok := src.(*net.TCPConn); ok {
		return copyFromTCP(dst, tc, pool)
	}
	small := make([]byte, smallBufferSize)
	buf := small
	var big *[]byte
	defer func() {
		if big != nil && pool != nil {
			pool.Put(big)
		}
	}()
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
					return n, err
				}
				return n, nil
			}
			return n, rerr
		}
		switch {
		case big == nil && nr == len(small):
			big = getBuffer(pool)
			buf = *big
		case big != nil && nr < smallBufferSize:
			if pool != nil {
				pool.Put(big)
			}
			big, buf = nil, small
		}
	}
}

// getBuffer takes a full-size buffer from pool, or allocates one without a pool.
func getBuffer(pool *BufferPool) *[]byte {
	if pool != nil {
		return pool.Get()
	}
	b := make([]byte, SpliceBufferSize)
	return &b
}
