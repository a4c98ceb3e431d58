package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// ConnRate is how fast new connections completed a round trip.
type ConnRate struct {
	PerSecond float64
	Conns     int64
	Errors    int64
	// LastErr is the last failure, if any.
	LastErr error
	Elapsed time.Duration
}

// connRate opens connections from the path's client pod to the echo TCP
// server with `workers` dialers until maxConns succeeded or d passed.
// Each connection counts once a 1-byte round trip through it completes
// (so a proxy that accepts locally but fails upstream is not credited),
// then it is closed.
func connRate(ctx context.Context, p *Path, workers int, maxConns int64, d time.Duration) (ConnRate, error) {
	var ok, failed atomic.Int64
	var lastErr atomic.Pointer[error]
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			// Each worker's loop runs on a thread inside the client pod's
			// namespace, so its sockets are the pod's. No connection is
			// started after end; those in flight finish (5 s timeout).
			_ = p.Client.Netns.Do(func() error {
				dialer := net.Dialer{Timeout: 5 * time.Second}
				buf := []byte{'x'}
				for ctx.Err() == nil && time.Now().Before(end) && ok.Load() < maxConns {
					if err := roundTrip(ctx, &dialer, p.Echo, buf); err != nil {
						failed.Add(1)
						lastErr.Store(&err)
						continue
					}
					ok.Add(1)
				}
				return nil
			})
		})
	}
	wg.Wait()
	r := ConnRate{Conns: ok.Load(), Errors: failed.Load(), Elapsed: time.Since(start)}
	if e := lastErr.Load(); e != nil {
		r.LastErr = *e
	}
	r.PerSecond = float64(r.Conns) / r.Elapsed.Seconds()
	if r.Conns == 0 {
		return r, fmt.Errorf("connection rate %s: no connection completed: %w", p.Name, r.LastErr)
	}
	return r, nil
}

func roundTrip(ctx context.Context, d *net.Dialer, addr string, buf []byte) error {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write(buf); err != nil {
		return err
	}
	_, err = io.ReadFull(c, buf)
	return err
}

// IdleGrowth is a proxy's RSS growth while holding idle connections.
type IdleGrowth struct {
	Name              string
	Conns             int
	BeforeKB, AfterKB int64
}

// KBPerConn is the RSS growth per idle connection.
func (g IdleGrowth) KBPerConn() float64 {
	if g.Conns == 0 {
		return 0
	}
	return float64(g.AfterKB-g.BeforeKB) / float64(g.Conns)
}

// idleConns opens n connections from the path's client pod to the echo TCP
// server, proves each one end to end with a 1-byte round trip, lets them
// sit idle and measures the path's proxies' VmRSS before and after. The
// connections are closed before it returns; hold, when not nil, runs while
// they are open (after the measurement).
func idleConns(ctx context.Context, p *Path, n int, settle time.Duration, hold func()) ([]IdleGrowth, error) {
	// Warm up: the first connections set up pools, buffers and TLS state
	// that are not a per-connection cost.
	if _, err := connRate(ctx, p, 4, 50, 10*time.Second); err != nil {
		return nil, fmt.Errorf("idle connections warm-up: %w", err)
	}
	time.Sleep(settle)
	procs := p.Proxies[portEcho]
	out := make([]IdleGrowth, len(procs))
	for i, pr := range procs {
		kb, err := memKB(pr.Pid, "VmRSS")
		if err != nil {
			return nil, err
		}
		out[i] = IdleGrowth{Name: pr.Name, Conns: n, BeforeKB: kb}
	}
	conns, err := openIdle(ctx, p.Client.Netns, p.Echo, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("idle connections %s: %w", p.Name, err)
	}
	time.Sleep(settle)
	for i, pr := range procs {
		kb, err := memKB(pr.Pid, "VmRSS")
		if err != nil {
			return nil, err
		}
		out[i].AfterKB = kb
	}
	if hold != nil {
		hold()
	}
	return out, nil
}

// openIdle dials n connections from ns and checks each with a 1-byte echo.
// It returns what it opened even on error (the caller closes them).
func openIdle(ctx context.Context, ns cluster.Netns, addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	err := ns.Do(func() error {
		var d net.Dialer
		for range n {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return fmt.Errorf("dial %d of %d: %w", len(conns)+1, n, err)
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		return conns, err
	}
	// Round trips in parallel (any goroutine may use the sockets).
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	const workers = 32
	for w := range workers {
		wg.Go(func() {
			buf := []byte{'i'}
			for i := w; i < len(conns); i += workers {
				c := conns[i]
				if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
					errs[i] = err
					continue
				}
				if _, err := c.Write(buf); err != nil {
					errs[i] = err
					continue
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs[i] = err
					continue
				}
				errs[i] = c.SetDeadline(time.Time{})
			}
		})
	}
	wg.Wait()
	var failed int
	var first error
	for _, err := range errs {
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		return conns, fmt.Errorf("%d of %d connections failed the echo check, first: %w", failed, len(conns), first)
	}
	return conns, nil
}
