package hbone

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (near, far *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// asyncTCPSplice is app1 ⇄ p1 ⇐SpliceAsync⇒ p2 ⇄ app2, all plain TCP, so
// both directions wait in the read poller.
type asyncTCPSplice struct {
	app1, app2 *net.TCPConn
	h          *SpliceHandle
	done       chan SpliceResult
}

func startAsyncTCPSplice(t *testing.T) *asyncTCPSplice {
	t.Helper()
	app1, p1 := tcpPair(t)
	p2, app2 := tcpPair(t)
	s := &asyncTCPSplice{app1: app1, app2: app2, done: make(chan SpliceResult, 1)}
	s.h = SpliceAsync(p1, p2, NewBufferPool(0), func(r SpliceResult) { s.done <- r })
	return s
}

func (s *asyncTCPSplice) result(t *testing.T, within time.Duration) SpliceResult {
	t.Helper()
	select {
	case r := <-s.done:
		return r
	case <-time.After(within):
		t.Fatalf("splice did not finish within %v", within)
		return SpliceResult{}
	}
}

func exchange(t *testing.T, from, to net.Conn, msg []byte) {
	t.Helper()
	if _, err := from.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if err := to.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(to, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("bytes differ")
	}
}

// TestSpliceAsyncTCP covers how an asynchronous TCP↔TCP splice ends: both
// sides half-closing (each direction propagates its EOF, counts are
// exact), the handle closing it while idle (well before the sweep), and a
// connection closed directly behind the handle's back (the sweep).
func TestSpliceAsyncTCP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		end    func(t *testing.T, s *asyncTCPSplice)
		within time.Duration
		clean  bool
	}{
		{"half-close both ways", func(t *testing.T, s *asyncTCPSplice) {
			_ = s.app1.CloseWrite()
			if rest, err := io.ReadAll(s.app2); err != nil || len(rest) != 0 {
				t.Errorf("app2 after app1's half-close: %d bytes, %v", len(rest), err)
			}
			// The other direction still flows.
			exchange(t, s.app2, s.app1, []byte("late"))
			_ = s.app2.CloseWrite()
			if rest, err := io.ReadAll(s.app1); err != nil || len(rest) != 0 {
				t.Errorf("app1 after app2's half-close: %d bytes, %v", len(rest), err)
			}
		}, 5 * time.Second, true},
		{"handle close while idle", func(_ *testing.T, s *asyncTCPSplice) {
			time.Sleep(restDelay)
			_ = s.h.Close()
		}, sweepInterval / 2, false},
		{"direct close while idle", func(_ *testing.T, s *asyncTCPSplice) {
			time.Sleep(restDelay)
			_ = s.h.a.Close()
			_ = s.h.b.Close()
		}, 3 * sweepInterval, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startAsyncTCPSplice(t)
			exchange(t, s.app1, s.app2, []byte("ping"))
			exchange(t, s.app2, s.app1, []byte("pong!"))
			time.Sleep(restDelay) // both directions idle in the poller
			exchange(t, s.app1, s.app2, []byte("again"))
			tc.end(t, s)
			r := s.result(t, tc.within)
			if tc.clean {
				if r.Err() != nil || r.AToB != 9 || r.BToA != 9 {
					t.Errorf("result %+v, want 9 bytes each way and no error", r)
				}
				return
			}
			if !errors.Is(r.AErr, net.ErrClosed) || !errors.Is(r.BErr, net.ErrClosed) {
				t.Errorf("result %+v, want both directions ended by the close", r)
			}
			// The apps see the proxy's sockets closed.
			_ = s.app1.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(s.app1); err != nil && !errors.Is(err, io.EOF) && !isReset(err) {
				t.Errorf("app1 after close: %v", err)
			}
		})
	}
}

// restDelay is long enough for a few hot directions to cool down and rest
// in the poller: the cooler sees them quiet for fewHotWindow only at its
// next tick, up to a quarter window later.
const restDelay = spliceSettle

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// TestSpliceAsyncIdleHoldsNoGoroutine checks the point of SpliceAsync:
// idle TCP↔HBONE splices, on both proxies of the chain, keep no goroutine,
// and they wake up correctly when data comes again.
func TestSpliceAsyncIdleHoldsNoGoroutine(t *testing.T) {
	const conns = 30
	for _, mode := range spliceModes {
		t.Run(mode.name, func(t *testing.T) {
			sc := startSpliceChain(t, mode.start)
			dial := func() net.Conn {
				app, err := net.Dial("tcp", sc.front.String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = app.Close() })
				exchange(t, app, app, []byte("hello"))
				return app
			}
			// Warm up: the pooled HBONE connection and its goroutines.
			warm := dial()
			_ = warm.(*net.TCPConn).CloseWrite()
			_, _ = io.ReadAll(warm)
			sc.checkResults(t, 5)
			settle := func() int {
				time.Sleep(restDelay)
				return runtime.NumGoroutine()
			}
			before := settle()
			apps := make([]net.Conn, conns)
			for i := range apps {
				apps[i] = dial()
			}
			// Per connection the echo backend keeps one goroutine; Splice
			// parks one per proxy on top, SpliceAsync none.
			got := settle() - before
			if mode.name == "async" && runtime.GOOS == "linux" && got > conns+5 {
				t.Errorf("%d idle connections hold %d goroutines, want at most %d (the echo backend's)", conns, got, conns+5)
			}
			if mode.name == "sync" && got < 3*conns {
				t.Errorf("%d idle connections hold %d goroutines; Splice should park one per proxy", conns, got)
			}
			for _, app := range apps {
				exchange(t, app, app, bytes.Repeat([]byte("x"), 100<<10))
			}
			for _, app := range apps {
				_ = app.(*net.TCPConn).CloseWrite()
				if rest, err := io.ReadAll(app); err != nil || len(rest) != 0 {
					t.Fatalf("after half-close: %d bytes, %v", len(rest), err)
				}
				sc.checkResults(t, 5+100<<10)
			}
		})
	}
}

// TestSpliceAsyncManyBursts runs many asynchronous TCP↔TCP splices at once
// with bursts separated by gaps shorter and longer than hotWindow, so that
// directions keep going hot, cooling down, resting in the poller and
// waking again, and checks every byte and every count.
func TestSpliceAsyncManyBursts(t *testing.T) {
	// More hot directions than fewHot, so both cooling regimes occur.
	const (
		pairs  = fewHot/2 + 8
		bursts = 6
	)
	gaps := []time.Duration{0, hotWindow + hotWindow/2, 0, restDelay}
	type run struct {
		s    *asyncTCPSplice
		sent int64
	}
	runs := make([]*run, pairs)
	for i := range runs {
		runs[i] = &run{s: startAsyncTCPSplice(t)}
	}
	errs := make(chan error, pairs)
	for i, r := range runs {
		go func() {
			errs <- func() error {
				// app2 echoes; app1 sends bursts and checks the echo.
				go func() {
					_, _ = io.Copy(r.s.app2, r.s.app2)
					_ = r.s.app2.CloseWrite()
				}()
				for b := range bursts {
					size := 1 + (i*7919+b*104729)%(100<<10)
					msg := bytes.Repeat([]byte{byte(i + b)}, size)
					if _, err := r.s.app1.Write(msg); err != nil {
						return err
					}
					got := make([]byte, size)
					if _, err := io.ReadFull(r.s.app1, got); err != nil {
						return err
					}
					if !bytes.Equal(got, msg) {
						return errors.New("echoed bytes differ")
					}
					r.sent += int64(size)
					time.Sleep(gaps[(i+b)%len(gaps)])
				}
				_ = r.s.app1.CloseWrite()
				if rest, err := io.ReadAll(r.s.app1); err != nil || len(rest) != 0 {
					return errors.New("trailing bytes or error after half-close")
				}
				return nil
			}()
		}()
	}
	for range runs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, r := range runs {
		res := r.s.result(t, 5*time.Second)
		if res.Err() != nil || res.AToB != r.sent || res.BToA != r.sent {
			t.Errorf("result %+v, want %d bytes each way and no error", res, r.sent)
		}
	}
}
