package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// holdHandler accepts streams and keeps them open until the client closes.
func holdHandler() Handler {
	return HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
		st, err := rw.Accept()
		if err != nil {
			return
		}
		defer func() { _ = st.Close() }()
		_, _ = io.Copy(io.Discard, st)
	})
}

func TestPoolSharesConnectionsUpToStreamLimit(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	srv, addr := startServer(t, pki, holdHandler(), nil)
	var inFlight, maxInFlight atomic.Int64
	pool := newTestPool(t, pki, func(c *PoolConfig) {
		c.MaxStreamsPerConn = 4
		c.Dial = func(ctx context.Context, req *DialRequest) (net.Conn, error) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				m := maxInFlight.Load()
				if n <= m || maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(30 * time.Millisecond) // widen the race window
			var d net.Dialer
			return d.DialContext(ctx, "tcp", req.NextHop.String())
		}
	})
	cert := pki.leaf(t, clientSPIFFE)

	const n = 10
	streams := make([]*ClientStream, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := dialReq(pki, t, addr, cert)
			// Same key regardless of identity order.
			if i%2 == 1 {
				req.ExpectedIDs = []spiffeid.ID{sid(serverSPIFFE), sid("spiffe://cluster.local/ns/b/sa/alt")}
			} else {
				req.ExpectedIDs = []spiffeid.ID{sid("spiffe://cluster.local/ns/b/sa/alt"), sid(serverSPIFFE)}
			}
			st, err := pool.Dial(testCtx(t), req)
			if err != nil {
				t.Error(err)
				return
			}
			streams[i] = st
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// ceil(10/4) connections, dialled one at a time.
	if got := srv.handshakes.Load(); got != 3 {
		t.Errorf("server handshakes = %d, want 3", got)
	}
	if got := maxInFlight.Load(); got != 1 {
		t.Errorf("max dials in flight = %d, want 1", got)
	}
	perConn := map[*poolConn]int{}
	for _, st := range streams {
		perConn[st.pc]++
	}
	for pc, k := range perConn {
		if k > 4 {
			t.Errorf("connection %p carries %d streams", pc, k)
		}
	}
	if s := pool.Stats(); s.Conns != 3 || s.Streams != n || s.Dials != 3 {
		t.Errorf("stats = %+v", s)
	}

	// Freed slots are reused before any new connection is made.
	_ = streams[0].Close()
	reuse := dialReq(pki, t, addr, cert)
	reuse.ExpectedIDs = []spiffeid.ID{sid(serverSPIFFE), sid("spiffe://cluster.local/ns/b/sa/alt")}
	st, err := pool.Dial(testCtx(t), reuse)
	if err != nil {
		t.Fatal(err)
	}
	if st.pc != streams[0].pc {
		t.Error("freed slot not reused")
	}
	_ = st.Close()
	for _, st := range streams {
		_ = st.Close()
	}
	if got := srv.handshakes.Load(); got != 3 {
		t.Errorf("handshakes after reuse = %d", got)
	}

	// A different key (another source IP) gets its own connection.
	req := reuse
	req.SourceIP = req.SourceIP.Next()
	st, err = pool.Dial(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	if got := srv.handshakes.Load(); got != 4 {
		t.Errorf("handshakes after new key = %d, want 4", got)
	}
}

func TestPoolDialErrorSharedByWaiters(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	var dials atomic.Int64
	pool := newTestPool(t, pki, func(c *PoolConfig) {
		c.Dial = func(ctx context.Context, req *DialRequest) (net.Conn, error) {
			dials.Add(1)
			time.Sleep(50 * time.Millisecond)
			return nil, errors.New("no route")
		}
	})
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := pool.Dial(testCtx(t), dialReq(pki, t, netipOf(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}), nil)); err == nil {
				t.Error("dial succeeded")
			}
		})
	}
	wg.Wait()
	if n := dials.Load(); n > 2 {
		t.Errorf("%d dials for 5 concurrent callers", n)
	}
}

func TestPoolIdleClose(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	srv, addr := startServer(t, pki, holdHandler(), nil)
	pool := newTestPool(t, pki, func(c *PoolConfig) { c.IdleTimeout = 100 * time.Millisecond })
	cert := pki.leaf(t, clientSPIFFE)

	st, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, cert))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond) // busy connections are not idle
	if s := pool.Stats(); s.Conns != 1 {
		t.Fatalf("busy connection closed: %+v", s)
	}
	_ = st.Close()
	waitFor(t, "idle connection closed", func() bool { return pool.Stats().Conns == 0 })
	waitFor(t, "server saw the close", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) == 0
	})
	st, err = pool.Dial(testCtx(t), dialReq(pki, t, addr, cert))
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	if s := pool.Stats(); s.Dials != 2 {
		t.Errorf("dials = %d, want 2", s.Dials)
	}
}

// TestShutdownGoAway: Shutdown sends GOAWAY, the open stream completes, the
// pool stops using the connection, and Shutdown returns once it is done.
func TestShutdownGoAway(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	srv, addr := startServer(t, pki, &echoHandler{}, nil)
	pool := newTestPool(t, pki, nil)
	cert := pki.leaf(t, clientSPIFFE)
	st, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, cert))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()

	shutdownErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdownErr <- srv.Shutdown(ctx)
	}()
	waitFor(t, "client saw GOAWAY", func() bool { _, closing := st.pc.cc.state(); return closing })

	// New streams must not go to the draining connection. The listener is
	// closed, so the pool's fresh connection attempt fails to connect.
	if _, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, cert)); err == nil {
		t.Fatal("dial succeeded on a draining server")
	}
	select {
	case err := <-shutdownErr:
		t.Fatalf("Shutdown returned early: %v", err)
	default:
	}

	// The open stream still works end to end.
	if _, err := st.Write([]byte("finish me")); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseWrite()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "finish me" {
		t.Fatalf("stream after GOAWAY: %q, %v", got, err)
	}
	_ = st.Close()
	select {
	case err := <-shutdownErr:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last stream ended")
	}
}

func TestShutdownDeadlineResetsStreams(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	srv, addr := startServer(t, pki, holdHandler(), nil)
	pool := newTestPool(t, pki, nil)
	st, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if _, err := io.ReadAll(st); err == nil {
		t.Error("stream survived a forced shutdown")
	}
}

// TestClientKeepaliveDropsFrozenPeer freezes a TCP proxy between client and
// server; the pool must notice via unanswered PINGs, fail the stream and
// evict the connection.
func TestClientKeepaliveDropsFrozenPeer(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	_, addr := startServer(t, pki, &echoHandler{}, nil)
	proxy := startFreezeProxy(t, addr)
	pool := newTestPool(t, pki, func(c *PoolConfig) {
		c.KeepaliveInterval = 100 * time.Millisecond
		c.KeepaliveTimeout = 200 * time.Millisecond
	})
	cert := pki.leaf(t, clientSPIFFE)
	st, err := pool.Dial(testCtx(t), dialReq(pki, t, proxy.addr(), cert))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(st, buf); err != nil {
		t.Fatal(err)
	}

	proxy.frozen.Store(true)
	start := time.Now()
	readErr := make(chan error, 1)
	go func() {
		_, err := st.Read(buf)
		readErr <- err
	}()
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("read succeeded through a frozen proxy")
		}
		t.Logf("stream failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Fatal("keepalive did not drop the frozen connection")
	}
	waitFor(t, "broken connection evicted", func() bool { return pool.Stats().Conns == 0 })

	proxy.frozen.Store(false)
	st2, err := pool.Dial(testCtx(t), dialReq(pki, t, proxy.addr(), cert))
	if err != nil {
		t.Fatal(err)
	}
	_ = st2.Close()
	if s := pool.Stats(); s.Dials != 2 {
		t.Errorf("dials = %d, want 2", s.Dials)
	}
}

func TestPoolClose(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	_, addr := startServer(t, pki, holdHandler(), nil)
	pool, err := NewPool(PoolConfig{TrustBundle: pki.bundle, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(st); err == nil {
		t.Error("stream survived Pool.Close")
	}
	_ = st.Close()
	if _, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, nil)); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("dial after close = %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
