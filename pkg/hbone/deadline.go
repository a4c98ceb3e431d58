package hbone

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadlines gives a stream net.Conn's deadline methods.
type deadlines struct{ rdl, wdl deadline }

// SetDeadline sets the read and write deadlines, as net.Conn does.
func (d *deadlines) SetDeadline(t time.Time) error {
	d.rdl.set(t)
	d.wdl.set(t)
	return nil
}

// SetReadDeadline sets the deadline for Read, as net.Conn does: once it
// passes, Read fails with os.ErrDeadlineExceeded (a net.Error whose
// Timeout is true) and loses no data.
func (d *deadlines) SetReadDeadline(t time.Time) error {
	d.rdl.set(t)
	return nil
}

// SetWriteDeadline sets the deadline for Write, as net.Conn does: once it
// passes, Write fails with os.ErrDeadlineExceeded, also while it waits for
// HTTP/2 flow-control window. (A frame already handed to the connection is
// sent; the connection's keepalive bounds how long that can take.)
func (d *deadlines) SetWriteDeadline(t time.Time) error {
	d.wdl.set(t)
	return nil
}

// deadline is one direction's deadline of a stream, in the net.Conn sense:
// once it passes, blocked and later calls in that direction fail with
// os.ErrDeadlineExceeded (a net.Error whose Timeout is true) until it is
// moved or cleared. The zero value has no deadline; a stream that never
// sets one pays one atomic load per call, plus one channel allocated the
// first time a call blocks.
type deadline struct {
	ever atomic.Bool // a deadline was set at some point; until then passed skips mu

	mu      sync.Mutex    // guards the fields below
	timer   *time.Timer   // pending expiry, or nil
	expired chan struct{} // closed once the deadline has passed; nil until first needed
}

// set moves the deadline to t; the zero t clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
	if t.IsZero() {
		if d.expired != nil && isClosed(d.expired) {
			d.expired = nil
		}
		return
	}
	d.ever.Store(true)
	if d.expired == nil || isClosed(d.expired) {
		d.expired = make(chan struct{})
	}
	if wait := time.Until(t); wait > 0 {
		ch := d.expired
		d.timer = time.AfterFunc(wait, func() { close(ch) })
		return
	}
	close(d.expired)
}

// done returns a channel that is closed once the deadline has passed.
// Waiters must call it again after each wake-up: set replaces the channel
// when it moves a passed deadline.
func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.expired == nil {
		d.expired = make(chan struct{})
	}
	return d.expired
}

// passed reports whether the deadline has passed.
func (d *deadline) passed() bool {
	if !d.ever.Load() {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired != nil && isClosed(d.expired)
}

// stop releases the pending timer, for a stream that ends.
func (d *deadline) stop() {
	d.mu.Lock()
	d.stopLocked()
	d.mu.Unlock()
}

func (d *deadline) stopLocked() {
	if d.timer != nil && !d.timer.Stop() {
		<-d.expired // it fired: wait until it has closed the channel
	}
	d.timer = nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
