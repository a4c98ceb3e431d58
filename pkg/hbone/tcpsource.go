package hbone

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tcpSource is a SpliceAsync direction that reads a plain TCP socket. It
// has no goroutine while the socket is idle: the socket waits in the
// readPoller, and each time it becomes readable a new goroutine runs one
// burst, reading and writing to dst until the socket has nothing more,
// then re-arms the socket and ends. So the deep write path (HTTP/2
// framing, TLS) only ever runs on short-lived goroutines, and an idle
// direction holds no stack and no buffer.
//
// A burst that moved data stays, waiting in Go's netpoller, until the
// socket has been quiet for about hotWindow (see there): the readPoller's
// cooler then sets a past read deadline to send it to rest. So bulk
// transfers and busy request/response connections pay neither a trip
// through the readPoller and a new goroutine each time the socket runs
// dry, nor a timer or an extra system call of their own.
type tcpSource struct {
	dst    HalfCloser
	tc     *net.TCPConn
	rc     syscall.RawConn
	pool   *BufferPool
	poller *readPoller
	finish func(int64, error) // called once, never on the goroutine of abort

	pollID uint64 // poller registration; set by the first arm, under mu

	mu       sync.Mutex // guards state, abortErr; held across arm
	state    srcState
	abortErr error // set by abort while a burst runs; that burst then ends

	// lastData is when (monoNow) a read last returned data; the cooler
	// reads it.
	lastData atomic.Int64

	// Owned by the running burst (handed over through mu). They are
	// fields, and readFn/armFn bound once, so that a burst allocates
	// nothing for the callbacks its raw reads and arming need.
	n      int64
	bulk   bool   // the last burst ended while bulk data was flowing
	heated bool   // s is in the poller's hot set
	buf    []byte // the read buffer of the current read
	nr     int    // result of the last read
	rerr   error
	armErr error // result of the last arm
	readFn func(fd uintptr) bool
	armFn  func(fd uintptr)
}

// monoEpoch anchors monoNow, a monotonic clock in nanoseconds.
var monoEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// hotWindow is how long a burst that moved data keeps waiting for more
// before the source goes idle in the readPoller (up to 1.5 times that,
// with the cooler's period). While no more than fewHot sources are hot,
// they keep waiting for fewHotWindow instead: going cold and waking again
// costs a few tens of microseconds of CPU, which connections with a
// request every tenth of a second or so would otherwise pay each time,
// and a bounded number of hot goroutines costs a bounded amount of memory.
const (
	hotWindow    = 50 * time.Millisecond
	fewHot       = 64
	fewHotWindow = 500 * time.Millisecond
)

// sweepInterval bounds how long a source whose connection was closed
// directly (not through its SpliceHandle) stays unnoticed.
const sweepInterval = time.Second

type srcState uint8

const (
	srcRunning srcState = iota // a burst goroutine owns the source
	srcIdle                    // armed in the poller, no goroutine
	srcDone                    // finish has been or is being called
)

// newTCPSource prepares copying src to dst; start begins it.
func newTCPSource(dst HalfCloser, src *net.TCPConn, pool *BufferPool, p *readPoller, finish func(int64, error)) (*tcpSource, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("hbone: raw socket: %w", err)
	}
	s := &tcpSource{dst: dst, tc: src, rc: rc, pool: pool, poller: p, finish: finish}
	s.readFn, s.armFn = s.readOnce, s.armOnce
	return s, nil
}

// readOnce reads what the socket has into s.buf (s.nr, s.rerr). It asks
// the netpoller to wait for more only while s is hot.
func (s *tcpSource) readOnce(fd uintptr) bool {
	s.nr, s.rerr = rawRead(fd, s.buf)
	return !s.heated || !errors.Is(s.rerr, syscall.EAGAIN)
}

// armOnce arms the socket in the poller (s.armErr).
func (s *tcpSource) armOnce(fd uintptr) { s.armErr = s.poller.arm(int(fd), s) }

// start runs the first burst on a new goroutine.
func (s *tcpSource) start() { go s.burst() }

// wake is the poller's report that the socket is readable (or closed by
// the peer): it starts a burst unless one runs or the source has ended.
func (s *tcpSource) wake() {
	s.mu.Lock()
	if s.state != srcIdle {
		s.mu.Unlock()
		return
	}
	s.state = srcRunning
	s.mu.Unlock()
	go s.burst()
}

// abort ends the source with err: at once (finish on a new goroutine) when
// it is idle, or at the end of the running burst. Its connection should
// already be closed, so a running burst stops at its next read or write.
func (s *tcpSource) abort(err error) {
	s.mu.Lock()
	switch s.state {
	case srcIdle:
		s.state = srcDone
		s.mu.Unlock()
		s.poller.forget(s)
		go s.finish(s.n, err)
		return
	case srcRunning:
		if s.abortErr == nil {
			s.abortErr = err
		}
	}
	s.mu.Unlock()
}

// endIfClosed ends an idle source whose connection was closed directly.
func (s *tcpSource) endIfClosed() {
	s.mu.Lock()
	idle := s.state == srcIdle
	s.mu.Unlock()
	if idle && s.rc.Control(func(uintptr) {}) != nil {
		s.abort(fmt.Errorf("hbone: read: %w", net.ErrClosed))
	}
}

// end finishes the source from its running burst.
func (s *tcpSource) end(err error) {
	s.mu.Lock()
	s.state = srcDone
	s.mu.Unlock()
	s.poller.forget(s)
	s.finish(s.n, err)
}

// rest arms the socket in the poller after a burst found it empty, or
// ends the source when it was aborted or cannot be armed. Either way the
// burst's goroutine must return without touching the source again: once
// armed, another burst may start at any moment.
func (s *tcpSource) rest() {
	s.mu.Lock()
	if err := s.abortErr; err != nil {
		s.mu.Unlock()
		s.end(err)
		return
	}
	s.armErr = nil
	aerr := s.rc.Control(s.armFn)
	if aerr == nil {
		aerr = s.armErr
	}
	if aerr != nil {
		s.mu.Unlock()
		s.end(fmt.Errorf("hbone: read: %w", aerr))
		return
	}
	s.state = srcIdle
	s.mu.Unlock()
}

// burst copies what the socket has to dst. Like copyFromTCP it starts
// with a small pooled buffer and moves to a full-size one while reads fill
// it; a burst that follows bulk data starts with the full-size one. Once
// it has moved data it is hot: it waits for more in the netpoller until
// the cooler sends it to rest (see tcpSource).
func (s *tcpSource) burst() {
	var (
		big, small *[]byte
		moved      bool // this burst has read data
	)
	s.heated = false
	defer func() {
		if big != nil && s.pool != nil {
			s.pool.Put(big)
		}
		putSmall(&small)
	}()
	stop := func(err error) {
		if s.heated {
			s.poller.unheat(s)
		}
		s.buf = nil
		s.end(err)
	}
	if s.bulk {
		big = getBuffer(s.pool)
	}
	for {
		if big != nil {
			s.buf = *big
		} else {
			if small == nil {
				small = smallBufPool.Get().(*[]byte)
			}
			s.buf = *small
		}
		if moved && !s.heated {
			s.poller.heat(s)
			s.heated = true
		}
		s.nr, s.rerr = 0, nil
		err := s.rc.Read(s.readFn)
		nr, rerr := s.nr, s.rerr
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The cooler found the socket quiet and took s out of the
			// hot set; rest unless data came meanwhile.
			s.heated = false
			err = s.tc.SetReadDeadline(time.Time{})
			if err == nil {
				if time.Duration(monoNow()-s.lastData.Load()) < hotWindow {
					continue
				}
				rerr = syscall.EAGAIN
			}
		}
		switch {
		case err != nil:
			nr, rerr = 0, err
		case errors.Is(rerr, syscall.EAGAIN):
			if s.heated {
				s.poller.unheat(s)
			}
			s.bulk = big != nil
			if big != nil && s.pool != nil {
				s.pool.Put(big)
			}
			big = nil
			putSmall(&small)
			s.buf = nil // an idle source pins no buffer
			s.rest()
			return
		case rerr != nil:
			nr, rerr = 0, os.NewSyscallError("read", rerr)
		case nr == 0:
			rerr = io.EOF
		}
		if nr > 0 {
			moved = true
			s.lastData.Store(monoNow())
			nw, werr := s.dst.Write(s.buf[:nr])
			s.n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				stop(werr)
				return
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if err := s.dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
					stop(err)
					return
				}
				stop(nil)
				return
			}
			stop(rerr)
			return
		}
		switch {
		case big == nil && nr == len(s.buf):
			putSmall(&small)
			big = getBuffer(s.pool)
		case big != nil && nr < smallBufferSize:
			if s.pool != nil {
				s.pool.Put(big)
			}
			big = nil
		}
	}
}
