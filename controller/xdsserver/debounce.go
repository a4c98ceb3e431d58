package xdsserver

import (
	"context"
	"sync"
	"time"
)

// changeSet is the set of resource names that changed, by type URL. A
// flushed changeSet is shared read-only by every stream.
type changeSet map[string]map[string]struct{}

// debouncer gathers changes and hands them to flush once no change arrived
// for quiet, or max after the first change of a burst, whichever is first.
type debouncer struct {
	quiet, max time.Duration
	flush      func(changeSet)
	kick       chan struct{} // capacity 1: "something is pending"

	mu      sync.Mutex // guards pending and last
	pending changeSet
	last    time.Time // time of the latest add
}

func newDebouncer(quiet, max time.Duration, flush func(changeSet)) *debouncer {
	return &debouncer{quiet: quiet, max: max, flush: flush, kick: make(chan struct{}, 1), pending: changeSet{}}
}

// add records changed names of typeURL. It never blocks.
func (d *debouncer) add(typeURL string, names []string) {
	if len(names) == 0 {
		return
	}
	d.mu.Lock()
	set := d.pending[typeURL]
	if set == nil {
		set = make(map[string]struct{}, len(names))
		d.pending[typeURL] = set
	}
	for _, n := range names {
		set[n] = struct{}{}
	}
	d.last = time.Now()
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// run flushes bursts until ctx is done. Changes pending at that point are
// dropped: the streams they were meant for are closing too.
func (d *debouncer) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		}
		start := time.Now()
		for {
			d.mu.Lock()
			last := d.last
			d.mu.Unlock()
			deadline := last.Add(d.quiet)
			if hard := start.Add(d.max); hard.Before(deadline) {
				deadline = hard
			}
			wait := time.Until(deadline)
			if wait <= 0 {
				break
			}
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		// Kicks that arrived during the wait belong to this batch. Drain
		// before taking it: a change added in between keeps its kick and
		// at worst causes one empty round.
		select {
		case <-d.kick:
		default:
		}
		d.mu.Lock()
		batch := d.pending
		d.pending = changeSet{}
		d.mu.Unlock()
		if len(batch) > 0 {
			d.flush(batch)
		}
	}
}
