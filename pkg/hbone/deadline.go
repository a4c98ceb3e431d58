package hbone

import (
	"sync"
	"sync/atomic"
	"time"
)

// deadlines gives a stream net.Conn's deadline methods. waker is the
// stream, set by its constructor: it wakes the stream's blocked reads or
// writes when a deadline passes, so they see it.
type deadlines struct {
	rdl, wdl deadline
	waker    deadlineWaker
}

// deadlineWaker wakes a stream's blocked Reads (write false) or Writes.
type deadlineWaker interface{ wakeForDeadline(write bool) }

// SetDeadline sets the read and write deadlines, as net.Conn does.
func (d *deadlines) SetDeadline(t time.Time) error {
	_ = d.SetReadDeadline(t)
	return d.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for Read, as net.Conn does: once it
// passes, Read fails with os.ErrDeadlineExceeded (a net.Error whose
// Timeout is true) and loses no data.
func (d *deadlines) SetReadDeadline(t time.Time) error {
	if d.rdl.set(t, d, false) {
		d.waker.wakeForDeadline(false)
	}
	return nil
}

// SetWriteDeadline sets the deadline for Write, as net.Conn does: once it
// passes, Write fails with os.ErrDeadlineExceeded, also while it waits for
// HTTP/2 flow-control window. (A frame already handed to the connection is
// sent; the connection's keepalive bounds how long that can take.)
func (d *deadlines) SetWriteDeadline(t time.Time) error {
	if d.wdl.set(t, d, true) {
		d.waker.wakeForDeadline(true)
	}
	return nil
}

// stopDeadlines releases pending timers, for a stream that ends.
func (d *deadlines) stopDeadlines() {
	d.rdl.stop()
	d.wdl.stop()
}

// deadline is one direction's deadline of a stream: once it passes, calls
// in that direction fail with os.ErrDeadlineExceeded until it is moved or
// cleared. Blocked calls check passed before they block and again each
// time they wake; passing wakes them. It allocates nothing unless a
// deadline in the future is set (a timer).
type deadline struct {
	expired atomic.Bool // the deadline has passed

	mu    sync.Mutex  // guards timer and gen
	timer *time.Timer // pending expiry, or nil
	gen   uint64      // bumped by every set, so a superseded timer does nothing
}

// passed reports whether the deadline has passed.
func (d *deadline) passed() bool { return d.expired.Load() }

// set moves the deadline to t (the zero t clears it). It reports whether
// t has already passed, in which case the caller wakes blocked calls; a
// future t arms a timer that wakes them through owner.
func (d *deadline) set(t time.Time, owner *deadlines, write bool) (passedNow bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	switch wait := time.Until(t); {
	case t.IsZero():
		d.expired.Store(false)
	case wait <= 0:
		d.expired.Store(true)
		return true
	default:
		d.expired.Store(false)
		gen := d.gen
		d.timer = time.AfterFunc(wait, func() {
			d.mu.Lock()
			current := d.gen == gen
			if current {
				d.timer = nil
				d.expired.Store(true)
			}
			d.mu.Unlock()
			if current {
				owner.waker.wakeForDeadline(write)
			}
		})
	}
	return false
}

// stop cancels the pending timer.
func (d *deadline) stop() {
	d.mu.Lock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.mu.Unlock()
}
