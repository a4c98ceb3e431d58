package kubesource

import (
	"context"
	"time"
)

// run delivers a snapshot after each burst of events: once no event came
// for Debounce, or MaxDelay after the burst's first event, whichever is
// sooner. It closes done when ctx ends.
func (s *Source) run(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	deadline := time.NewTimer(time.Hour)
	deadline.Stop()
	defer quiet.Stop()
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.poked:
		}
		quiet.Reset(s.opts.Debounce)
		deadline.Reset(s.opts.MaxDelay)
	burst:
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.poked:
				quiet.Reset(s.opts.Debounce)
			case <-quiet.C:
				break burst
			case <-deadline.C:
				break burst
			}
		}
		quiet.Stop()
		deadline.Stop()
		s.deliver()
	}
}
