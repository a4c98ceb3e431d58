package hbone

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"

	"golang.org/x/net/http2"
)

// startGenericServer serves HBONE-style CONNECT with golang.org/x/net/http2's
// server, the HTTP/2 stack Istio's Go HBONE server is built on, so the pool's
// own client is checked against an independent implementation. Authority
// 10.0.0.9:1 is answered 401, 10.0.0.9:2 with "bye" and an immediate end of
// the response; anything else is echoed until the client half-closes.
func startGenericServer(t *testing.T, pki *testPKI, maxStreams uint32) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2 := &http2.Server{MaxConcurrentStreams: maxStreams} //nolint:staticcheck // x/net's server over our own TLS connections is what Istio's HBONE server uses
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		switch r.Host {
		case "10.0.0.9:1":
			w.WriteHeader(http.StatusUnauthorized)
			return
		case "10.0.0.9:2":
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("bye"))
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				_ = rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	tlsConf := serverTLSConfig(staticCert(pki.leaf(t, serverSPIFFE)), pki.bundle, pki.td)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(c, tlsConf)
				if err := tc.Handshake(); err != nil {
					_ = c.Close()
					return
				}
				h2.ServeConn(tc, &http2.ServeConnOpts{Handler: handler}) //nolint:staticcheck // see above
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return netipOf(ln.Addr())
}

// TestPoolAgainstGenericServer runs the pool's client against x/net's
// server: bulk echo with half-close across several flow-control windows,
// the server's stream limit, a rejection status and an early end of the
// response.
func TestPoolAgainstGenericServer(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	addr := startGenericServer(t, pki, 2)
	pool := newTestPool(t, pki, nil)
	ctx := testCtx(t)

	payload := make([]byte, 5<<20+123) // more than x/net's stream and connection windows
	_, _ = rand.Read(payload)
	var wg sync.WaitGroup
	for i := range 3 { // one more than the server's stream limit
		st, err := pool.Dial(ctx, dialReq(pki, t, addr, nil))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { _ = st.Close() }()
			errc := make(chan error, 1)
			go func() {
				_, err := st.Write(payload)
				if err == nil {
					err = st.CloseWrite()
				}
				errc <- err
			}()
			got, err := io.ReadAll(st)
			if err != nil || !bytes.Equal(got, payload) {
				t.Errorf("stream %d: echoed %d of %d bytes, equal=%v, err %v", i, len(got), len(payload), bytes.Equal(got, payload), err)
			}
			if err := <-errc; err != nil {
				t.Errorf("stream %d: write: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if s := pool.Stats(); s.Dials != 2 {
		t.Errorf("dials = %d, want 2 (server allows 2 streams per connection)", s.Dials)
	}

	req := dialReq(pki, t, addr, nil)
	req.Authority = netip.MustParseAddrPort("10.0.0.9:1")
	var se *StatusError
	if _, err := pool.Dial(ctx, req); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Errorf("dial to a rejecting server = %v, want status 401", err)
	}

	req.Authority = netip.MustParseAddrPort("10.0.0.9:2")
	st, err := pool.Dial(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "bye" {
		t.Errorf("early-ending response: %q, %v", got, err)
	}
	_ = st.Close()
	if s := pool.Stats(); s.Streams != 0 {
		t.Errorf("streams still open: %d", s.Streams)
	}
}
