package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// LoadSpec is one fortio HTTP run.
type LoadSpec struct {
	QPS      int
	Conns    int
	Duration time.Duration
	// Requests, when non-zero, replaces Duration with an exact count.
	Requests int
	// BodyBytes is the response body size (fortio's echo ?size=).
	BodyBytes int
	// Pin, when set, runs fortio under taskset -c Pin (a CPU list).
	Pin string
	// Uniform spreads each connection's requests over the period (fortio
	// -uniform). By default fortio's connections send at the same
	// instants: a burst of Conns requests every Conns/QPS seconds.
	Uniform bool
	// Resolution is fortio's -r in seconds (default DefaultResolution).
	Resolution float64
}

// DefaultResolution is the fortio -r the issues specify.
const DefaultResolution = 0.000001

// resolution is fortio's -r for l.
func (l LoadSpec) resolution() float64 {
	if l.Resolution > 0 {
		return l.Resolution
	}
	return DefaultResolution
}

// resolutionArg is resolution as fortio's -r argument, in decimal.
func (l LoadSpec) resolutionArg() string {
	return strconv.FormatFloat(l.resolution(), 'f', -1, 64)
}

// fortioBuckets are fortio v1.66.0's histogram bucket boundaries in units
// of -r (stats.histogramBucketValues). fortio interpolates a percentile
// linearly inside its bucket, so the bucket around a percentile bounds
// how precise it is.
var fortioBuckets = []float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 25, 30, 35, 40, 45, 50,
	60, 70, 80, 90, 100, 120, 140, 160, 180, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 900, 1000,
	2000, 3000, 4000, 5000, 7500, 10000, 20000, 30000, 40000, 50000, 75000, 100000}

// fortioBucket returns the bounds of the fortio histogram bucket that
// holds d at resolution res (seconds); ok is false past the last bound.
func fortioBucket(res float64, d time.Duration) (lo, hi time.Duration, ok bool) {
	unit := math.Round(res * float64(time.Second)) // ns
	v := float64(d.Nanoseconds()) / unit
	for i := 1; i < len(fortioBuckets); i++ {
		if v < fortioBuckets[i] {
			return time.Duration(fortioBuckets[i-1] * unit), time.Duration(fortioBuckets[i] * unit), true
		}
	}
	return 0, 0, false
}

// Latency is what a fortio run measured.
type Latency struct {
	P50, P90, P99 time.Duration
	QPS           float64 // achieved
	Requests      int64
	Errors        int64 // responses other than 200, and failed requests
}

// fortioResult is the part of fortio's JSON report the bench reads.
type fortioResult struct {
	ActualQPS         float64
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64 // seconds
		}
	}
	RetCodes map[string]int64
}

// runFortio runs fortio's HTTP load generator in the path's client pod
// against the fortio echo server, with 1 µs histogram resolution.
func runFortio(ctx context.Context, c *cluster.Cluster, fortio, dir string, p *Path, s LoadSpec) (Latency, error) {
	out := filepath.Join(dir, "fortio-"+p.Name+".json")
	args := []string{"load", "-qps", strconv.Itoa(s.QPS), "-c", strconv.Itoa(s.Conns),
		"-r", s.resolutionArg(), "-p", "50,90,99", "-json", out, "-quiet", "-allow-initial-errors"}
	if s.Uniform {
		args = append(args, "-uniform")
	}
	if s.Requests > 0 {
		args = append(args, "-n", strconv.Itoa(s.Requests))
	} else {
		args = append(args, "-t", s.Duration.String())
	}
	args = append(args, fmt.Sprintf("http://%s/?size=%d", p.HTTP, s.BodyBytes))
	ctx, cancel := context.WithTimeout(ctx, s.Duration+60*time.Second)
	defer cancel()
	path := fortio
	if s.Pin != "" {
		path, args = "taskset", append([]string{"-c", s.Pin, fortio}, args...)
	}
	if log, err := c.Run(ctx, cluster.ProcessSpec{Netns: p.Client.Netns, Path: path, Args: args}); err != nil {
		return Latency{}, fmt.Errorf("fortio %s: %w: %s", p.Name, err, cluster.LastLines(string(log), 3))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return Latency{}, fmt.Errorf("fortio %s: %w", p.Name, err)
	}
	return parseFortio(b)
}

func parseFortio(b []byte) (Latency, error) {
	var r fortioResult
	if err := json.Unmarshal(b, &r); err != nil {
		return Latency{}, fmt.Errorf("fortio JSON: %w", err)
	}
	l := Latency{QPS: r.ActualQPS, Requests: r.DurationHistogram.Count}
	for code, n := range r.RetCodes {
		if code != "200" {
			l.Errors += n
		}
	}
	found := 0
	for _, pc := range r.DurationHistogram.Percentiles {
		d := time.Duration(pc.Value * float64(time.Second))
		switch pc.Percentile {
		case 50:
			l.P50 = d
		case 90:
			l.P90 = d
		case 99:
			l.P99 = d
		default:
			continue
		}
		found++
	}
	if found != 3 {
		return l, fmt.Errorf("fortio JSON: p50/p90/p99 missing (%d requests)", l.Requests)
	}
	return l, nil
}
