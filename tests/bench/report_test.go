package main

import (
	"testing"
	"time"
)

// TestP99Verdict: a negative added p99 is noise, not a met target.
func TestP99Verdict(t *testing.T) {
	path := func(p99 time.Duration) *PathResult { return &PathResult{Latency: Latency{P99: p99}} }
	for _, tc := range []struct {
		direct, mesh time.Duration
		want         string
	}{
		{2 * time.Millisecond, 2*time.Millisecond + 200*time.Microsecond, "met (+200 µs)"},
		{2 * time.Millisecond, 3 * time.Millisecond, "MISSED (+1.00 ms)"},
		{6 * time.Millisecond, 3 * time.Millisecond, "inconclusive (-3.00 ms: direct p99 was the higher)"},
	} {
		if got := p99Verdict(path(tc.direct), path(tc.mesh)); got != tc.want {
			t.Errorf("direct %v, mesh %v: %q, want %q", tc.direct, tc.mesh, got, tc.want)
		}
	}
}
