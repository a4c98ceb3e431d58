package proxy

import (
	"net"
	"sync/atomic"

	"github.com/zmesh/zmesh/pkg/hbone"
)

// startRelay copies between down and up without a goroutine of its own:
// hbone.SpliceAsync keeps no goroutine, stack or buffer on an idle
// connection, so an idle proxied connection costs its sockets and a few
// small structures. finish runs once, on another goroutine, with the result
// after both ends are closed. tracked (the accepted downstream connection,
// which is down; nil for HBONE) moves from pp.conns to the relay: from then
// on Stop ends it through the relay's handle.
//
// When policy is not nil the connection is registered with the Authorizer,
// so a policy change that now denies it closes it.
//
// The relay counts in pp.wg until finish has returned, and Stop ends it
// through its handle. The caller must itself be counted in pp.wg (or run
// before Stop's Wait), so the Add cannot race Wait. When Stop has begun,
// startRelay closes down and up, runs finish with an empty result and
// reports false.
func (pp *PodProxy) startRelay(tracked net.Conn, down, up hbone.HalfCloser, policy *Conn, finish func(hbone.SpliceResult)) bool {
	var (
		handle  atomic.Pointer[hbone.SpliceHandle]
		denied  atomic.Bool
		untrack = func() {}
	)
	if policy != nil {
		untrack = pp.p.cfg.Authorizer.Track(&pp.info, *policy, func() {
			denied.Store(true)
			if h := handle.Load(); h != nil {
				_ = h.Close()
			}
		})
	}
	pp.mu.Lock()
	if pp.ctx.Err() != nil {
		pp.mu.Unlock()
		untrack()
		_ = down.Close()
		_ = up.Close()
		finish(hbone.SpliceResult{})
		return false
	}
	pp.wg.Add(1)
	var h *hbone.SpliceHandle
	// SpliceAsync never calls its callback before returning, so h is set
	// (and recorded under pp.mu) before the callback runs.
	h = hbone.SpliceAsync(down, up, pp.p.cfg.Buffers, func(res hbone.SpliceResult) {
		defer pp.wg.Done()
		untrack()
		finish(res)
		pp.mu.Lock()
		delete(pp.relays, h)
		pp.mu.Unlock()
	})
	pp.relays[h] = struct{}{}
	if tracked != nil {
		delete(pp.conns, tracked)
	}
	pp.mu.Unlock()
	handle.Store(h)
	if denied.Load() {
		_ = h.Close()
	}
	return true
}
