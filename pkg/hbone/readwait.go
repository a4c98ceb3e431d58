package hbone

import "sync"

// readWaiter is how Reads of a stream wait for its receive state (data,
// end, error, read deadline) to change. Reads may run concurrently, as on
// any net.Conn, and one signal wakes one of them: a Read that leaves data
// behind, or returns for a condition every Read shares, passes the wake-up
// on while others wait (unlock), so a signal reaches each in turn.
type readWaiter struct {
	ch      chan struct{} // cap 1
	waiting int           // Reads blocked in wait; guarded by the stream's rmu
}

func newReadWaiter() readWaiter { return readWaiter{ch: make(chan struct{}, 1)} }

// signal wakes a waiting Read, or the next one to wait.
func (r *readWaiter) signal() {
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

// wait blocks until signalled. The caller holds mu (the stream's rmu),
// which wait releases while blocked and takes again.
func (r *readWaiter) wait(mu *sync.Mutex) {
	r.waiting++
	mu.Unlock()
	<-r.ch
	mu.Lock()
	r.waiting--
}

// unlock releases mu and, when pass is set and other Reads wait, passes a
// wake-up on to them.
func (r *readWaiter) unlock(mu *sync.Mutex, pass bool) {
	pass = pass && r.waiting > 0
	mu.Unlock()
	if pass {
		r.signal()
	}
}
