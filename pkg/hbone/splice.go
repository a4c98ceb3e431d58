package hbone

import (
	"errors"
	"io"
	"net"
	"sync"
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
// Each direction reads into a small buffer of its own and borrows a buffer
// from pool only while bulk data flows (see smallBufferSize); pool may be
// nil, in which case buffers of DefaultBufferSize are allocated. Splice owns a
// and b for its duration and closes them before returning.
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.BToA, res.BErr = copyHalf(a, b, pool)
		if res.BErr != nil {
			closeBoth()
		}
	}()
	res.AToB, res.AErr = copyHalf(b, a, pool)
	if res.AErr != nil {
		closeBoth()
	}
	wg.Wait()
	closeBoth()
	return res
}

// smallBufferSize is the buffer each direction starts with, so an idle or
// interactive connection holds no more than this. A read that fills it means
// bulk data is flowing: the direction then takes a full-size pooled buffer,
// and gives it back as soon as a read comes back short of the small size.
const smallBufferSize = 4 << 10

// copyHalf copies src to dst and closes dst's write half on EOF. It returns
// the bytes written and the first error that is not a clean EOF from src.
func copyHalf(dst, src HalfCloser, pool *BufferPool) (int64, error) {
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
	b := make([]byte, DefaultBufferSize)
	return &b
}
