package main

import (
	"context"
	"encoding/json"
	"fmt"
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

// DefaultResolution is fortio's -r as the zmesh issues that set the
// benchmarks' targets specify it: 1 µs.
const DefaultResolution = 0.000001

// resolutionArg is fortio's -r for l, in decimal.
func (l LoadSpec) resolutionArg() string {
	r := l.Resolution
	if r <= 0 {
		r = DefaultResolution
	}
	return strconv.FormatFloat(r, 'f', -1, 64)
}

// Latency is what a fortio run measured.
type Latency struct {
	P50, P90, P99 time.Duration
	// P99Bucket is the histogram bucket fortio interpolated P99 in (it
	// interpolates linearly between a bucket's bounds, and the outermost
	// buckets run to the minimum and maximum), so its width is P99's
	// precision.
	P99Bucket [2]time.Duration
	QPS       float64 // achieved
	Requests  int64
	Errors    int64 // responses other than 200, and failed requests
}

// fortioResult is the part of fortio's JSON report the bench reads.
type fortioResult struct {
	ActualQPS         float64
	DurationHistogram struct {
		Count int64
		Data  []struct {
			Start, End float64 // seconds
			Percent    float64 // cumulative, up to End
		}
		Percentiles []struct {
			Percentile float64
			Value      float64 // seconds
		}
	}
	RetCodes map[string]int64
}

// runFortio runs fortio's HTTP load generator in the path's client pod
// against the fortio echo server, at the load's histogram resolution.
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

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

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
		d := seconds(pc.Value)
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
	for _, b := range r.DurationHistogram.Data {
		if b.Percent >= 99 {
			l.P99Bucket = [2]time.Duration{seconds(b.Start), seconds(b.End)}
			break
		}
	}
	return l, nil
}
