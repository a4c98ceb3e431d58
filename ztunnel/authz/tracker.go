package authz

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// Tracker holds the live inbound connections and closes those that a
// policy (or workload) change has made denied. Register connections with
// Track and call Run once; Recheck may also be called directly.
//
// Locking: mu guards conns; checkMu serialises Recheck runs and guards the
// per-connection record of what it was last checked against. closeFn of a
// connection is called at most once, by whichever of Track, Recheck or
// Untrack (which suppresses it) gets there first.
type Tracker struct {
	eng *Engine
	log *slog.Logger

	mu    sync.Mutex
	conns map[*Tracked]struct{}

	checkMu sync.Mutex
	scratch []*Tracked // guarded by checkMu

	wake chan struct{}
}

// Tracked is a connection registered with a Tracker.
type Tracked struct {
	t       *Tracker
	conn    Conn
	uid     string
	closeFn func()
	done    atomic.Bool

	// Guarded by Tracker.checkMu: what the last Recheck evaluated.
	lastPolicies *policySet
	lastWorkload *workloadapi.Workload
}

// NewTracker returns a Tracker evaluating with eng. log may be nil.
func NewTracker(eng *Engine, log *slog.Logger) *Tracker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tracker{eng: eng, log: log, conns: map[*Tracked]struct{}{}, wake: make(chan struct{}, 1)}
}

// Run re-checks the live connections once at start (so changes made
// before it subscribed are not missed) and then after every state change,
// until ctx is done. Changes arriving during a re-check coalesce into one
// more run.
func (t *Tracker) Run(ctx context.Context) {
	cancel := t.eng.st.Subscribe(func() {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	})
	defer cancel()
	t.Recheck()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
			t.Recheck()
		}
	}
}

// Track registers a live connection c to the workload with uid dstUID;
// closeFn closes it and must not block for long. Because the policies may
// have changed since the caller authorized c, Track evaluates c again after
// registering it and, if it is now denied, calls closeFn before returning.
// Call Untrack on the result when the connection ends.
func (t *Tracker) Track(c Conn, dstUID string, closeFn func()) *Tracked {
	h := &Tracked{t: t, conn: c, uid: dstUID, closeFn: closeFn}
	t.mu.Lock()
	t.conns[h] = struct{}{}
	t.mu.Unlock()
	if w := t.eng.st.WorkloadByUID(dstUID); w != nil {
		if v := t.eng.compiled().evaluate(c, w); closes(v) {
			t.closeDenied(h, v)
		}
	}
	return h
}

// Untrack deregisters the connection; closeFn will not be called after it
// returns (unless a call was already under way).
func (h *Tracked) Untrack() {
	h.done.Store(true)
	h.t.mu.Lock()
	delete(h.t.conns, h)
	h.t.mu.Unlock()
}

// Len is the number of tracked connections.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// Recheck evaluates every tracked connection whose policies or destination
// workload changed since its last check, and closes the denied ones (but
// see closes). A connection whose workload is no longer known is left
// alone (the workload's removal tears it down). It returns how many it closed.
func (t *Tracker) Recheck() int {
	t.checkMu.Lock()
	defer t.checkMu.Unlock()
	ps := t.eng.compiled()
	t.mu.Lock()
	t.scratch = t.scratch[:0]
	for h := range t.conns {
		t.scratch = append(t.scratch, h)
	}
	t.mu.Unlock()
	closed := 0
	for _, h := range t.scratch {
		if h.done.Load() {
			continue
		}
		w := t.eng.st.WorkloadByUID(h.uid)
		if w == nil || (h.lastPolicies == ps && h.lastWorkload == w) {
			continue
		}
		h.lastPolicies, h.lastWorkload = ps, w
		if v := ps.evaluate(h.conn, w); closes(v) {
			if t.closeDenied(h, v) {
				closed++
			}
		}
	}
	clear(t.scratch)
	if closed > 0 {
		t.log.Info("policy re-check closed connections", "closed", closed, "tracked", len(t.scratch))
	}
	return closed
}

// closes reports whether v ends a live connection: any denial but one
// for a listed policy ztunnel does not have (yet), since the connection
// was admitted with it known. Once it arrives, the next re-check decides.
func closes(v Verdict) bool {
	return !v.Allowed && v.Reason != ReasonPolicyUnknown
}

// closeDenied closes and forgets h unless that already happened.
func (t *Tracker) closeDenied(h *Tracked, v Verdict) bool {
	if !h.done.CompareAndSwap(false, true) {
		return false
	}
	t.mu.Lock()
	delete(t.conns, h)
	t.mu.Unlock()
	t.log.Info("connection closed: denied by updated policy",
		"src", h.conn.SrcIP, "identity", h.conn.SrcIdentity, "dst", h.conn.DstIP, "port", h.conn.DstPort,
		"workload", h.uid, "policy", v.Policy, "reason", v.Reason)
	h.closeFn()
	return true
}
