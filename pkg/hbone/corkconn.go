package hbone

import (
	"net"
	"sync"
)

// corkConn sits between a TLS connection and its TCP socket and batches
// system calls in both directions.
//
// Writes: between cork and uncork every write (one per TLS record) is
// appended to a buffer, and uncork sends the whole batch with one write, so
// an HTTP/2 frame that TLS splits into several records, or a batch of
// control frames, costs one system call. Outside cork/uncork, writes (the
// handshake, or a KeyUpdate TLS answers on its own) go straight through.
// The batch buffer is pooled and held only while corked.
//
// Reads: while bulk data is arriving (the last socket read filled at least
// corkReadBulk bytes) reads go through a pooled buffer of corkReadSize so
// several TLS records come in per system call; otherwise they go straight
// into the caller's slice, so an idle connection holds no read buffer.
//
// Read is called only by the TLS layer's reader (which serialises it);
// cork/uncork by the connection's writer under its write lock.
type corkConn struct {
	net.Conn
	// raw, when not nil, does the socket's reads and writes (rawSocket).
	raw *rawSocket

	// Read side; no lock, see above.
	rbuf     *[]byte
	rr, rw   int   // unread bytes are (*rbuf)[rr:rw]
	rerr     error // error of the buffered socket read, returned once rbuf is drained
	bulkRead bool  // the last socket read was large

	wmu    sync.Mutex // guards corked, wbuf, and orders writes on the socket
	corked bool
	wbuf   *[]byte
}

const (
	// corkReadSize is the read buffer used during bulk transfers: four
	// full TLS records and their overhead.
	corkReadSize = 4*(16<<10+256) + 512
	// corkReadBulk is the socket read size from which the next read is
	// buffered.
	corkReadBulk = 8 << 10
	// corkWriteSize is the write batch size; a batch that outgrows it is
	// sent in several writes. It matches SpliceBufferSize, so that what
	// one bulk read brings goes out in one write.
	corkWriteSize = SpliceBufferSize
)

var (
	corkReadPool  = sync.Pool{New: func() any { b := make([]byte, corkReadSize); return &b }}
	corkWritePool = sync.Pool{New: func() any { b := make([]byte, 0, corkWriteSize); return &b }}
)

func newCorkConn(c net.Conn) *corkConn {
	cc := &corkConn{Conn: c}
	if tc, ok := c.(*net.TCPConn); ok {
		cc.raw = newRawSocket(tc)
	}
	return cc
}

// read and write do the socket's I/O, with raw system calls when they can.
func (c *corkConn) read(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.Read(p)
	}
	return c.Conn.Read(p)
}

func (c *corkConn) write(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.Write(p)
	}
	return c.Conn.Write(p)
}

// Read implements net.Conn for the TLS layer.
func (c *corkConn) Read(p []byte) (int, error) {
	if c.rbuf != nil {
		if c.rr < c.rw {
			n := copy(p, (*c.rbuf)[c.rr:c.rw])
			c.rr += n
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if !c.bulkRead {
			corkReadPool.Put(c.rbuf)
			c.rbuf = nil
		}
	}
	if !c.bulkRead || len(p) >= corkReadSize {
		n, err := c.read(p)
		c.bulkRead = n >= corkReadBulk
		return n, err
	}
	if c.rbuf == nil {
		c.rbuf = corkReadPool.Get().(*[]byte)
	}
	n, err := c.read(*c.rbuf)
	c.bulkRead = n >= corkReadBulk
	c.rr, c.rw, c.rerr = 0, n, err
	if n == 0 {
		return 0, err
	}
	m := copy(p, (*c.rbuf)[:n])
	c.rr = m
	if m == n {
		return m, err
	}
	return m, nil // err, if any, comes once the buffer is drained
}

// Write implements net.Conn for the TLS layer.
func (c *corkConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.corked {
		return c.write(p)
	}
	if len(*c.wbuf)+len(p) > cap(*c.wbuf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(*c.wbuf) {
			return c.write(p)
		}
	}
	*c.wbuf = append(*c.wbuf, p...)
	return len(p), nil
}

// cork starts collecting writes.
func (c *corkConn) cork() {
	c.wmu.Lock()
	if !c.corked {
		c.corked = true
		c.wbuf = corkWritePool.Get().(*[]byte)
	}
	c.wmu.Unlock()
}

// uncork sends what was collected since cork in one write.
func (c *corkConn) uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.corked {
		return nil
	}
	err := c.flushLocked()
	c.corked = false
	*c.wbuf = (*c.wbuf)[:0]
	corkWritePool.Put(c.wbuf)
	c.wbuf = nil
	return err
}

func (c *corkConn) flushLocked() error {
	b := *c.wbuf
	*c.wbuf = b[:0]
	if len(b) == 0 {
		return nil
	}
	_, err := c.write(b)
	return err
}
