package hbone

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// smallBufPool holds the smallBufferSize buffers TCP reads borrow.
var smallBufPool = sync.Pool{New: func() any { b := make([]byte, smallBufferSize); return &b }}

// copyFromTCP is copyHalf for a plain TCP source. It waits for the socket
// to become readable without holding a buffer, borrowing a small one only
// for each read, so an idle connection pins no read buffer at all. As in
// copyHalf, a read that fills the small buffer switches to a full-size
// pooled one until a read comes back short.
func copyFromTCP(dst HalfCloser, src *net.TCPConn, pool *BufferPool) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("hbone: raw socket: %w", err)
	}
	var (
		big, small *[]byte
		buf        []byte
		nr         int
		rerr       error
	)
	defer func() {
		if big != nil && pool != nil {
			pool.Put(big)
		}
	}()
	read := func(fd uintptr) bool {
		if big != nil {
			buf = *big
		} else {
			small = smallBufPool.Get().(*[]byte)
			buf = *small
		}
		nr, rerr = rawRead(fd, buf)
		if errors.Is(rerr, syscall.EAGAIN) {
			// Nothing yet: give the buffer back while waiting.
			if small != nil {
				smallBufPool.Put(small)
				small = nil
			}
			return false
		}
		return true
	}
	var n int64
	for {
		if err := rc.Read(read); err != nil {
			nr, rerr = 0, err
		} else if rerr != nil {
			nr, rerr = 0, os.NewSyscallError("read", rerr)
		} else if nr == 0 {
			rerr = io.EOF
		}
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				putSmall(&small)
				return n, werr
			}
		}
		filled := nr == len(buf)
		putSmall(&small)
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
		case big == nil && filled:
			big = getBuffer(pool)
		case big != nil && nr < smallBufferSize:
			if pool != nil {
				pool.Put(big)
			}
			big = nil
		}
	}
}

func putSmall(b **[]byte) {
	if *b != nil {
		smallBufPool.Put(*b)
		*b = nil
	}
}

// writeNonBlocking writes as much of p to the socket as it takes right
// now, without waiting, and returns how much that was (0 on any error; the
// caller's regular write path meets the error then).
func writeNonBlocking(rc syscall.RawConn, p []byte) int {
	n := 0
	_ = rc.Write(func(fd uintptr) bool {
		for len(p) > 0 {
			m, _ := rawWrite(fd, p[n:])
			if m > 0 {
				n += m
				if n < len(p) {
					continue
				}
			}
			break
		}
		return true // never wait for writability
	})
	return n
}
