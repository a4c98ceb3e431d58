package hbone

import (
	"context"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// benchChain is a loopback ztunnel pair: app TCP → front listener → splice
// → HBONE client stream … HBONE server stream → splice → TCP backend, both
// splices asynchronous as in ztunnel.
type benchChain struct {
	front net.Addr
}

// startBenchChain builds the chain; backend serves each backend
// connection (and closes it).
func startBenchChain(tb testing.TB, backend func(net.Conn)) *benchChain {
	tb.Helper()
	pki := newPKI(tb, "cluster.local")
	bp := NewBufferPool(0)
	be := serveLoopback(tb, func(c net.Conn) {
		defer func() { _ = c.Close() }()
		backend(c)
	})
	_, addr := startServer(tb, pki, spliceHandler(be, func(st *ServerStream, up *net.TCPConn) {
		SpliceAsync(st, up, bp, nil)
	}), nil)
	pool := newTestPool(tb, pki, nil)
	req := dialReq(pki, tb, addr, nil)
	front := serveLoopback(tb, func(c net.Conn) {
		st, err := pool.Dial(context.Background(), req)
		if err != nil {
			_ = c.Close()
			return
		}
		SpliceAsync(c.(*net.TCPConn), st, bp, nil)
	})
	return &benchChain{front: front}
}

func (sc *benchChain) dial(b *testing.B) *net.TCPConn {
	b.Helper()
	c, err := net.Dial("tcp", sc.front.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// BenchmarkSpliceThroughput uploads 64 KiB writes through a loopback
// ztunnel pair (both proxies splicing asynchronously, as ztunnel does).
func BenchmarkSpliceThroughput(b *testing.B) {
	sc := startBenchChain(b, func(c net.Conn) { sinkThenAck(c, make([]byte, benchChunk)) })
	runThroughput(b, sc.dial(b))
}

// BenchmarkSpliceRoundTrip measures 1 KiB request/response round trips
// through a loopback ztunnel pair to an echoing backend.
func BenchmarkSpliceRoundTrip(b *testing.B) {
	sc := startBenchChain(b, echoBackend)
	c := sc.dial(b)
	msg := make([]byte, 1<<10)
	got := make([]byte, len(msg))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSplicePacedLatency sends paced 1 KiB request/response round
// trips over 16 connections through a loopback ztunnel pair (each
// connection one request every 16 ms, about what 1000 req/s over 16
// connections gives each; HBONE_BENCH_INTERVAL overrides the interval) and
// reports the latency distribution; b.N is the total number of requests
// (run it with -benchtime 3000x or so).
func BenchmarkSplicePacedLatency(b *testing.B) {
	const conns = 16
	interval := 16 * time.Millisecond
	if v := os.Getenv("HBONE_BENCH_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		interval = d
	}
	sc := startBenchChain(b, echoBackend)
	cs := make([]*net.TCPConn, conns)
	for i := range cs {
		cs[i] = sc.dial(b)
	}
	per := max(1, b.N/conns)
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	b.ResetTimer()
	for i, c := range cs {
		wg.Go(func() {
			msg := make([]byte, 1<<10)
			got := make([]byte, len(msg))
			tick := time.NewTicker(interval)
			defer tick.Stop()
			time.Sleep(time.Duration(i) * interval / conns)
			for range per {
				<-tick.C
				start := time.Now()
				if _, err := c.Write(msg); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(start))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.9), "p90-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(q(1), "max-µs")
}

// echoBackend echoes what it reads until the connection ends.
func echoBackend(c net.Conn) {
	buf := make([]byte, 4<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
