//go:build linux

package hbone

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawSocket reads and writes a TCP socket with raw system calls, waiting
// for readiness in Go's netpoller as net.Conn does.
//
// The socket is non-blocking, so its reads and writes return at once and
// need none of the scheduler's bookkeeping for system calls that may block
// (entersyscall). That bookkeeping has a cost beyond its own: the first
// such call after the process went idle wakes the runtime's monitor thread
// (sysmon), which then polls every 20 µs until the process is idle again.
// A proxy serving bursts paid that at every burst. When all of a burst's
// system calls are raw (this package's sockets, its readPoller, the inline
// writes of streams to TCP), sysmon sleeps on until the next timer.
//
// The trade-off: while sysmon sleeps it does not preempt a goroutine that
// computes for more than 10 ms without blocking, so one could hold its P
// until the next timer fires or any other system call is made. The
// scheduler's own hand-offs and the garbage collector do not depend on it.
// A raw call also keeps its P for its duration, which for a non-blocking
// socket is microseconds.
//
// Reads come from one goroutine at a time; writes from one at a time
// (corkConn's write lock, or the one drainer of a splice direction).
type rawSocket struct {
	conn *net.TCPConn
	rc   syscall.RawConn

	rbuf   []byte // the current Read's slice
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wbuf    []byte // what the current Write has still to send
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// newRawSocket returns nil when c gives no raw access; the caller then
// uses c's own Read and Write.
func newRawSocket(c *net.TCPConn) *rawSocket {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	s := &rawSocket{conn: c, rc: rc}
	s.readFn, s.writeFn = s.readReady, s.writeReady
	return s
}

func (s *rawSocket) readReady(fd uintptr) bool {
	n, err := rawRead(fd, s.rbuf)
	if errors.Is(err, syscall.EAGAIN) {
		return false
	}
	s.rn, s.rerr = n, err
	switch {
	case err != nil:
		s.rerr = os.NewSyscallError("read", err)
	case n == 0:
		s.rerr = io.EOF
	}
	return true
}

func (s *rawSocket) writeReady(fd uintptr) bool {
	for len(s.wbuf) > 0 {
		n, err := rawWrite(fd, s.wbuf)
		if errors.Is(err, syscall.EAGAIN) {
			return false
		}
		if err != nil {
			s.werr = os.NewSyscallError("write", err)
			return true
		}
		s.wn += n
		s.wbuf = s.wbuf[n:]
	}
	return true
}

// rawRead is read(2) on a non-blocking descriptor without the scheduler's
// bookkeeping for blocking system calls (see rawSocket). It retries on
// EINTR; on failure n is 0 and err the errno.
func rawRead(fd uintptr, p []byte) (int, error) { return rawIO(syscall.SYS_READ, fd, p) }

// rawWrite is write(2) as rawRead is read(2).
func rawWrite(fd uintptr, p []byte) (int, error) { return rawIO(syscall.SYS_WRITE, fd, p) }

func rawIO(trap, fd uintptr, p []byte) (int, error) {
	if raceBuild {
		return syscallIO(trap, fd, p)
	}
	return rawRetry(trap, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), 0)
}

// rawEpollWait collects ready events without waiting (epoll_pwait with a
// zero timeout), as rawRead reads.
func rawEpollWait(epfd uintptr, events []syscall.EpollEvent) (int, error) {
	return rawRetry(syscall.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0)
}

// rawRetry makes a raw system call of up to four arguments (the rest
// zero), again while it is interrupted (EINTR).
func rawRetry(trap, a1, a2, a3, a4 uintptr) (int, error) {
	for {
		n, _, errno := syscall.RawSyscall6(trap, a1, a2, a3, a4, 0, 0)
		if errno != syscall.EINTR {
			return rawResult(n, errno)
		}
	}
}

// syscallIO is rawIO through the syscall package (see raceBuild).
func syscallIO(trap, fd uintptr, p []byte) (int, error) {
	for {
		var n int
		var err error
		if trap == syscall.SYS_READ {
			n, err = syscall.Read(int(fd), p)
		} else {
			n, err = syscall.Write(int(fd), p)
		}
		if !errors.Is(err, syscall.EINTR) {
			return max(n, 0), err
		}
	}
}

func rawResult(n uintptr, errno syscall.Errno) (int, error) {
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// rawEpollCtl is epoll_ctl(2), as rawRead is read(2).
func rawEpollCtl(epfd, op, fd int, ev *syscall.EpollEvent) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Read reads like net.Conn's Read.
func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerr = p, 0, nil
	err := s.rc.Read(s.readFn)
	n := s.rn
	if err == nil {
		err = s.rerr
	}
	s.rbuf = nil
	if err != nil && !errors.Is(err, io.EOF) {
		err = s.opError("read", err)
	}
	return n, err
}

// Write writes all of p like net.Conn's Write.
func (s *rawSocket) Write(p []byte) (int, error) {
	s.wbuf, s.wn, s.werr = p, 0, nil
	err := s.rc.Write(s.writeFn)
	n := s.wn
	if err == nil {
		err = s.werr
	}
	s.wbuf = nil
	if err != nil {
		err = s.opError("write", err)
	}
	return n, err
}

// opError reports err as net.Conn's Read and Write do; RawConn's own
// errors (a deadline, a closed socket) are unwrapped first.
func (s *rawSocket) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.conn.LocalAddr(), Addr: s.conn.RemoteAddr(), Err: err}
}
