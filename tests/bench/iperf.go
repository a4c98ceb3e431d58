package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// iperfResult is the part of `iperf3 -J` the bench reads.
type iperfResult struct {
	End struct {
		SumSent struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int64   `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// Throughput is one single-stream iperf3 run.
type Throughput struct {
	BitsPerSecond float64 // as received by the server
	Bytes         int64   // received by the server
	Retransmits   int64
}

// runIperf runs a single-stream iperf3 client in the path's client pod for
// d against the path's iperf3 server.
func runIperf(ctx context.Context, c *cluster.Cluster, iperf3 string, p *Path, d time.Duration) (Throughput, error) {
	host, port, err := net.SplitHostPort(p.Iperf)
	if err != nil {
		return Throughput{}, fmt.Errorf("iperf3 target: %w", err)
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	out, err := c.Run(ctx, cluster.ProcessSpec{Netns: p.Client.Netns, Path: iperf3,
		Args: []string{"-c", host, "-p", port, "-t", strconv.Itoa(secs), "-J", "--connect-timeout", "5000"}})
	res, perr := parseIperf(out)
	if err != nil {
		if perr == nil && res.Error != "" {
			return Throughput{}, fmt.Errorf("iperf3 %s: %s: %w", p.Name, res.Error, err)
		}
		return Throughput{}, fmt.Errorf("iperf3 %s: %w: %s", p.Name, err, cluster.LastLines(string(out), 3))
	}
	if perr != nil {
		return Throughput{}, fmt.Errorf("iperf3 %s: %w", p.Name, perr)
	}
	if res.Error != "" {
		return Throughput{}, fmt.Errorf("iperf3 %s: %s", p.Name, res.Error)
	}
	return Throughput{BitsPerSecond: res.End.SumReceived.BitsPerSecond, Bytes: res.End.SumReceived.Bytes,
		Retransmits: res.End.SumSent.Retransmits}, nil
}

// parseIperf decodes iperf3's JSON report (the output may carry stray
// lines before it).
func parseIperf(out []byte) (iperfResult, error) {
	var r iperfResult
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return r, errors.New("no JSON in iperf3 output")
	}
	if err := json.NewDecoder(bytes.NewReader(out[i:])).Decode(&r); err != nil {
		return r, fmt.Errorf("iperf3 JSON: %w", err)
	}
	return r, nil
}
