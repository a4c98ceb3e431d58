package http1

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout is how long a connection may go without a request
// being served before Serve closes it: Envoy's default idle timeout for
// downstream HTTP connections, which Istio's proxies keep.
const DefaultIdleTimeout = time.Hour

// idleWatch closes a connection that stays idle (no request being served)
// for longer than timeout. Serve marks the connection idle when it starts
// waiting for the next request and busy once that request's head is read,
// which costs one clock read per request; a single timer per connection
// checks the mark and re-arms itself, so no timer is started or stopped
// per request. A client that sends part of a head and stalls stays idle.
type idleWatch struct {
	timeout time.Duration
	conn    net.Conn
	since   atomic.Int64 // when the connection became idle (UnixNano); 0 while busy

	mu sync.Mutex // guards t, which the timer's own callback re-arms
	t  *time.Timer
}

// startIdleWatch starts watching conn, idle from now; nil when timeout is
// not positive (no watch). Stop ends it.
func startIdleWatch(conn net.Conn, timeout time.Duration) *idleWatch {
	if timeout <= 0 {
		return nil
	}
	w := &idleWatch{timeout: timeout, conn: conn}
	w.idle()
	w.mu.Lock()
	w.t = time.AfterFunc(timeout, w.check)
	w.mu.Unlock()
	return w
}

// idle marks the connection idle from now.
func (w *idleWatch) idle() {
	if w != nil {
		w.since.Store(time.Now().UnixNano())
	}
}

// busy marks the connection as serving a request.
func (w *idleWatch) busy() {
	if w != nil {
		w.since.Store(0)
	}
}

// check runs when the timer fires: it closes the connection if it has
// been idle for the whole timeout, and otherwise re-arms for the rest.
func (w *idleWatch) check() {
	wait := w.timeout
	if since := w.since.Load(); since != 0 {
		wait -= time.Since(time.Unix(0, since))
		if wait <= 0 {
			_ = w.conn.Close()
			return
		}
	}
	w.mu.Lock()
	if w.t != nil {
		w.t.Reset(wait)
	}
	w.mu.Unlock()
}

// stop ends the watch.
func (w *idleWatch) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.t.Stop()
	w.t = nil
	w.mu.Unlock()
}
