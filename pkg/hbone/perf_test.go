package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the Read and Write calls that reach a socket: one
// system call each.
type countingConn struct {
	net.Conn
	reads, writes *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

type countingListener struct {
	net.Listener
	reads, writes *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, reads: l.reads, writes: l.writes}, nil
}

// syscallCounts are the socket calls made by each side of a tunnel.
type syscallCounts struct {
	cliReads, cliWrites, srvReads, srvWrites atomic.Int64
}

// startCountingTunnel starts a server running h behind a counting listener
// and a pool whose sockets count too, and opens one stream.
func startCountingTunnel(b *testing.B, h Handler) (*ClientStream, *syscallCounts) {
	b.Helper()
	pki := newPKI(b, "cluster.local")
	srv, err := NewServer(ServerConfig{
		Certificate: staticCert(pki.leaf(b, serverSPIFFE)),
		TrustBundle: pki.bundle,
		TrustDomain: pki.td,
		Handler:     h,
		Logger:      testLogger(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cnt := &syscallCounts{}
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(&countingListener{Listener: ln, reads: &cnt.srvReads, writes: &cnt.srvWrites})
	}()
	b.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			b.Errorf("Serve returned %v", err)
		}
	})
	pool := newTestPool(b, pki, func(c *PoolConfig) {
		c.Dial = func(ctx context.Context, req *DialRequest) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", req.NextHop.String())
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, reads: &cnt.cliReads, writes: &cnt.cliWrites}, nil
		}
	})
	st, err := pool.Dial(context.Background(), dialReq(pki, b, netipOf(ln.Addr()), nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return st, cnt
}

// report prints socket calls per MiB moved since start.
func (c *syscallCounts) report(b *testing.B, start [4]int64, bytes int64) {
	mib := float64(bytes) / (1 << 20)
	if mib == 0 {
		return
	}
	b.ReportMetric(float64(c.cliWrites.Load()-start[0])/mib, "cli-writes/MiB")
	b.ReportMetric(float64(c.cliReads.Load()-start[1])/mib, "cli-reads/MiB")
	b.ReportMetric(float64(c.srvWrites.Load()-start[2])/mib, "srv-writes/MiB")
	b.ReportMetric(float64(c.srvReads.Load()-start[3])/mib, "srv-reads/MiB")
}

func (c *syscallCounts) snapshot() [4]int64 {
	return [4]int64{c.cliWrites.Load(), c.cliReads.Load(), c.srvWrites.Load(), c.srvReads.Load()}
}

// BenchmarkTunnelSyscalls moves 64 KiB writes through one HBONE stream
// over loopback, client to server (upload) and server to client
// (download), and reports the socket reads and writes each side made per
// MiB: a load-independent measure of how well frames are batched.
func BenchmarkTunnelSyscalls(b *testing.B) {
	b.Run("upload", func(b *testing.B) {
		h := HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
			st, err := rw.Accept()
			if err != nil {
				return
			}
			defer func() { _ = st.Close() }()
			sinkThenAck(st, make([]byte, benchChunk))
			_ = st.CloseWrite()
		})
		st, cnt := startCountingTunnel(b, h)
		start := cnt.snapshot()
		runThroughput(b, st)
		cnt.report(b, start, int64(b.N)*benchChunk)
	})
	b.Run("download", func(b *testing.B) {
		n := make(chan int, 1)
		h := HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
			st, err := rw.Accept()
			if err != nil {
				return
			}
			defer func() { _ = st.Close() }()
			buf := make([]byte, benchChunk)
			for range <-n {
				if _, err := st.Write(buf); err != nil {
					return
				}
			}
			_ = st.CloseWrite()
		})
		st, cnt := startCountingTunnel(b, h)
		buf := make([]byte, benchChunk)
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		start := cnt.snapshot()
		b.ResetTimer()
		n <- b.N
		got, err := io.CopyBuffer(io.Discard, st, buf)
		if err != nil || got != int64(b.N)*benchChunk {
			b.Fatalf("received %d bytes, %v", got, err)
		}
		b.StopTimer()
		cnt.report(b, start, got)
	})
}

// BenchmarkIdleStreamMemory opens idle tunnels the way a proxy holds them
// (a goroutine blocked reading each end, after one small exchange) and
// reports the heap and stack they keep, per tunnel, and the goroutines
// each costs. Both ends run in this process, so the figure covers the
// HBONE client and server together.
func BenchmarkIdleStreamMemory(b *testing.B) {
	const streams = 500
	pki := newPKI(b, "cluster.local")
	var held sync.WaitGroup
	h := HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
		st, err := rw.Accept()
		if err != nil {
			return
		}
		defer func() { _ = st.Close() }()
		buf := make([]byte, 4<<10)
		for {
			n, err := st.Read(buf)
			if n > 0 {
				_, _ = st.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	})
	_, addr := startServer(b, pki, h, nil)
	pool := newTestPool(b, pki, nil)
	req := dialReq(pki, b, addr, nil)
	for range b.N {
		// Warm up: one connection's worth of streams, then measure.
		warm, err := pool.Dial(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		_ = warm.Close()
		before := settledMemory(streamSettle)
		open := make([]*ClientStream, 0, streams)
		for range streams {
			st, err := pool.Dial(context.Background(), req)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := st.Write([]byte("ping")); err != nil {
				b.Fatal(err)
			}
			var one [4]byte
			if _, err := io.ReadFull(st, one[:]); err != nil {
				b.Fatal(err)
			}
			held.Add(1)
			go func() {
				defer held.Done()
				buf := make([]byte, 4<<10)
				for {
					if _, err := st.Read(buf); err != nil {
						return
					}
				}
			}()
			open = append(open, st)
		}
		reportIdle(b, before, settledMemory(streamSettle), streams, "idle-stream", 0)
		for _, st := range open {
			_ = st.Close()
		}
		held.Wait()
	}
}

// memSample is heap and stack memory in use after a GC, and the goroutine
// count.
type memSample struct {
	heap, stack uint64
	goroutines  int
}

// streamSettle lets streams settle; spliceSettle also lets SpliceAsync's
// hot directions cool down and rest (up to fewHotWindow after their last
// data, plus the cooler's period).
const (
	streamSettle = 50 * time.Millisecond
	spliceSettle = fewHotWindow*3/2 + hotWindow
)

func settledMemory(wait time.Duration) memSample {
	time.Sleep(wait)
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// reportIdle reports the growth from before to after per unit, less
// extraGoroutines per unit that belong to the test's endpoints.
func reportIdle(b *testing.B, before, after memSample, units int, unit string, extraGoroutines float64) {
	n := float64(units)
	b.ReportMetric((float64(after.heap)+float64(after.stack)-float64(before.heap)-float64(before.stack))/n, "B/"+unit)
	b.ReportMetric((float64(after.stack)-float64(before.stack))/n, "stack-B/"+unit)
	b.ReportMetric(float64(after.goroutines-before.goroutines)/n-extraGoroutines, "goroutines/"+unit)
}

// BenchmarkIdleSpliceMemory holds idle proxied connections shaped like a
// ztunnel pair: app TCP → Splice → HBONE client stream … HBONE server
// stream → Splice → TCP backend, after one small exchange each. It reports
// heap plus stack per connection and goroutines per connection for both
// proxies together, the TCP endpoints' own goroutines excluded.
func BenchmarkIdleSpliceMemory(b *testing.B) {
	const conns = 500
	// The backend answers each read with the same bytes, on one goroutine
	// per connection (subtracted below).
	sc := startBenchChain(b, func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			_, _ = c.Write(buf[:n])
		}
	})

	for range b.N {
		before := settledMemory(spliceSettle)
		apps := make([]net.Conn, 0, conns)
		for range conns {
			c, err := net.Dial("tcp", sc.front.String())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				b.Fatal(err)
			}
			var got [4]byte
			if _, err := io.ReadFull(c, got[:]); err != nil {
				b.Fatal(err)
			}
			apps = append(apps, c)
		}
		// Less the backend's goroutine per connection.
		reportIdle(b, before, settledMemory(spliceSettle), conns, "idle-conn", 1)
		for _, c := range apps {
			_ = c.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
}
