package xds

import (
	"math/rand/v2"
	"time"
)

const (
	defaultBackoffInitial = 200 * time.Millisecond
	defaultBackoffMax     = 30 * time.Second
)

// delay is the wait before reconnect attempt n (0-based): Initial*2^n capped
// at Max, then jittered uniformly into [d/2, d) so a fleet of proxies that
// lost the same server doesn't come back in lockstep.
func (b Backoff) delay(n int) time.Duration {
	d := b.Initial
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half)
}
