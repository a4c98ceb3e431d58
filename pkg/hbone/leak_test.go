package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestNoGoroutinesLeftBehind runs traffic, then Shutdown and Pool.Close,
// and expects every goroutine either side started to be gone.
func TestNoGoroutinesLeftBehind(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	before := runtime.NumGoroutine()

	srv, err := NewServer(ServerConfig{
		Certificate: staticCert(pki.leaf(t, serverSPIFFE)),
		TrustBundle: pki.bundle,
		TrustDomain: pki.td,
		Handler:     &echoHandler{},
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	pool, err := NewPool(PoolConfig{TrustBundle: pki.bundle, Logger: testLogger(t), MaxStreamsPerConn: 2})
	if err != nil {
		t.Fatal(err)
	}
	addr := netipOf(ln.Addr())
	var open []*ClientStream
	for range 5 {
		st, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	// Finish some streams cleanly, leave the rest open across shutdown.
	for _, st := range open[:3] {
		_ = st.CloseWrite()
		if _, err := io.ReadAll(st); err != nil {
			t.Fatal(err)
		}
		_ = st.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = srv.Shutdown(ctx)
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve = %v", err)
	}
	for _, st := range open[3:] {
		_ = st.Close()
	}
	_ = pool.Close()

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			var ours []string
			for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
				if strings.Contains(g, "hbone") || strings.Contains(g, "http2") {
					ours = append(ours, g)
				}
			}
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), strings.Join(ours, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
