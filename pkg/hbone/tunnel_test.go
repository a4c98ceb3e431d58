package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEchoClientHalfClose(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	h := &echoHandler{}
	srv, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)

	req := dialReq(pki, t, addr, nil)
	req.Traceparent = ""
	st, err := pool.Dial(testCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()

	// 9 MiB exceeds the 4 MiB stream window and exercises flow control in
	// both directions at once.
	payload := make([]byte, 9<<20+123)
	_, _ = rand.Read(payload)
	errc := make(chan error, 1)
	go func() {
		_, err := st.Write(payload)
		if err == nil {
			err = st.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo mismatch: got %d bytes, want %d", len(got), len(payload))
	}

	h.mu.Lock()
	r := h.requests[0]
	h.mu.Unlock()
	if r.Authority != netip.MustParseAddrPort("10.0.0.2:8080") {
		t.Errorf("authority = %v", r.Authority)
	}
	if r.PeerID != spiffeid.RequireFromString(clientSPIFFE) {
		t.Errorf("peer = %v", r.PeerID)
	}
	if r.Forwarded != `for="10.0.0.1:40000"` {
		t.Errorf("forwarded = %q", r.Forwarded)
	}
	if r.Baggage != "k8s.namespace.name=a" {
		t.Errorf("baggage = %q", r.Baggage)
	}
	if _, err := ParseTraceparent(r.Traceparent); err != nil {
		t.Errorf("generated traceparent: %v", err)
	}
	if r.LocalAddr.String() != addr.String() {
		t.Errorf("local addr = %v, want %v", r.LocalAddr, addr)
	}
	if srv.handshakes.Load() != 1 {
		t.Errorf("handshakes = %d", srv.handshakes.Load())
	}
}

func TestServerHalfCloseFirst(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	received := make(chan []byte, 1)
	h := HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
		st, err := rw.Accept()
		if err != nil {
			return
		}
		defer func() { _ = st.Close() }()
		if _, err := st.Write([]byte("server says bye")); err != nil {
			t.Error(err)
			return
		}
		if err := st.CloseWrite(); err != nil {
			t.Error(err)
			return
		}
		// The client keeps talking after our half-close.
		b, err := io.ReadAll(st)
		if err != nil {
			t.Errorf("server read after CloseWrite: %v", err)
		}
		received <- b
	})
	_, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)
	st, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "server says bye" {
		t.Fatalf("read = %q, %v", got, err)
	}
	late := bytes.Repeat([]byte("late data "), 100000) // ~1 MB after the server's EOF
	if _, err := st.Write(late); err != nil {
		t.Fatalf("write after server EOF: %v", err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-received:
		if !bytes.Equal(b, late) {
			t.Fatalf("server got %d bytes, want %d", len(b), len(late))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server never saw client EOF")
	}
}

func TestHandlerRejections(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	h := HandlerFunc(func(_ context.Context, req *Request, rw *ResponseWriter) {
		switch req.Authority.Port() {
		case 401:
			_ = rw.Reject(http.StatusUnauthorized)
		case 503:
			_ = rw.Reject(http.StatusServiceUnavailable)
		default:
			// Returning without an answer means 503.
		}
	})
	_, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)
	for _, tc := range []struct {
		port uint16
		want int
	}{{401, 401}, {503, 503}, {9999, 503}} {
		req := dialReq(pki, t, addr, nil)
		req.Authority = netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), tc.port)
		_, err := pool.Dial(testCtx(t), req)
		var se *StatusError
		if !errors.As(err, &se) || se.Code != tc.want {
			t.Errorf("port %d: err = %v, want status %d", tc.port, err, tc.want)
		}
	}
	// Rejected streams give their slots back and the connection stays usable.
	if s := pool.Stats(); s.Streams != 0 || s.Dials != 1 {
		t.Errorf("stats after rejections = %+v", s)
	}
}

// TestConnWindowReturnedForDroppedData: streams closed by the server with
// unread data must give the connection window back, or the connection
// stalls once 16 MiB have been dropped.
func TestConnWindowReturnedForDroppedData(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	sent := make(chan struct{})
	echo := &echoHandler{}
	h := HandlerFunc(func(ctx context.Context, req *Request, rw *ResponseWriter) {
		if req.Authority.Port() != 1 {
			echo.ServeHBONE(ctx, req, rw)
			return
		}
		st, err := rw.Accept()
		if err != nil {
			return
		}
		select {
		case <-sent:
		case <-ctx.Done():
		}
		_ = st.Close() // never read a byte
	})
	_, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)
	cert := pki.leaf(t, clientSPIFFE)
	chunk := make([]byte, 3<<20)
	for i := range 7 { // 21 MiB dropped in total
		req := dialReq(pki, t, addr, cert)
		req.Authority = netip.MustParseAddrPort("10.0.0.2:1")
		st, err := pool.Dial(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := st.Write(chunk); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("stream %d: write: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d: write stalled; connection window leaked", i)
		}
		sent <- struct{}{}
		_, _ = io.Copy(io.Discard, st)
		_ = st.Close()
	}
	st, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, cert))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	go func() { _, _ = st.Write(chunk); _ = st.CloseWrite() }()
	n, err := io.Copy(io.Discard, st)
	if err != nil || n != int64(len(chunk)) {
		t.Fatalf("echo after drops: %d bytes, %v", n, err)
	}
	if s := pool.Stats(); s.Dials != 1 {
		t.Errorf("dials = %d, want 1 (all on one connection)", s.Dials)
	}
}
