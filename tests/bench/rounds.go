package main

import (
	"slices"
	"time"
)

// summarise turns the rounds into the reported values: the median round
// of each number. A measurement with at least one good round reports it
// (failed rounds are warnings).
func (r *PathResult) summarise() {
	if n := len(r.ThroughputRounds); n > 0 {
		bps := make([]float64, n)
		var retr, bytes int64
		for i, t := range r.ThroughputRounds {
			bps[i] = t.BitsPerSecond
			retr += t.Retransmits
			bytes += t.Bytes
		}
		// Bytes and retransmits are totals over the rounds (the CPU
		// per byte divides the rounds' total CPU by them).
		r.Throughput, r.ThroughputErr = Throughput{BitsPerSecond: median(bps), Bytes: bytes, Retransmits: retr}, nil
	}
	if n := len(r.LatencyRounds); n > 0 {
		var p50, p90, p99 []time.Duration
		var l Latency
		for _, x := range r.LatencyRounds {
			p50, p90, p99 = append(p50, x.P50), append(p90, x.P90), append(p99, x.P99)
			l.QPS += x.QPS / float64(n)
			l.Requests += x.Requests
			l.Errors += x.Errors
		}
		l.P50, l.P90, l.P99 = median(p50), median(p90), median(p99)
		// The bucket of the round whose p99 is nearest the median.
		best := time.Duration(-1)
		for _, x := range r.LatencyRounds {
			if d := (x.P99 - l.P99).Abs(); best < 0 || d < best {
				best, l.P99Bucket = d, x.P99Bucket
			}
		}
		r.Latency, r.LatencyErr = l, nil
	}
}

// median returns the middle value (the mean of the two middle ones for an
// even count).
func median[T ~int64 | ~float64](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// addUsage accumulates one round's usage into acc (same processes, same
// order): CPU, wall time and requests add up, the peak is the highest.
func addUsage(acc, u []Usage) []Usage {
	if acc == nil {
		return u
	}
	for i := range min(len(acc), len(u)) {
		a := &acc[i]
		a.CPU += u[i].CPU
		a.Wall += u[i].Wall
		a.Requests += u[i].Requests
		a.ReadCalls += u[i].ReadCalls
		a.WriteCalls += u[i].WriteCalls
		a.PeakRSSKB = max(a.PeakRSSKB, u[i].PeakRSSKB)
		a.PeakReset = a.PeakReset && u[i].PeakReset
	}
	return acc
}
