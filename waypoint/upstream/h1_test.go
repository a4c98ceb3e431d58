package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zmesh/zmesh/waypoint/http1"
)

// h1Server is a real HTTP/1.1 server on loopback that counts the
// connections it accepted.
type h1Server struct {
	*httptest.Server
	conns atomic.Int64
}

func newH1Server(t *testing.T, h http.Handler) *h1Server {
	t.Helper()
	s := &h1Server{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// tcpDial dials addr over loopback TCP, as the HBONE dial does for a
// tunnel, counting dials.
func tcpDial(addr string, dials *atomic.Int64) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func get(t *testing.T, rt http.RoundTripper, ctx context.Context, method, url string, body io.Reader) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return rt.RoundTrip(req)
}

// roundTripErr runs a request expected to fail and returns its error,
// closing the body of an unexpected response.
func roundTripErr(t *testing.T, rt http.RoundTripper, ctx context.Context, method, url string, body io.Reader) error {
	t.Helper()
	resp, err := get(t, rt, ctx, method, url, body)
	if resp != nil {
		_ = resp.Body.Close()
	}
	return err
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	_ = resp.Body.Close()
	return string(b)
}

// TestH1KeepAlive checks when a connection is reused: after a body read to
// its end, not after an early close, a "Connection: close" answer, or with
// keep-alive off (which also sends "Connection: close").
func TestH1KeepAlive(t *testing.T) {
	srv := newH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("close") != "" {
			w.Header().Set("Connection", "close")
		}
		if r.Close {
			w.Header().Set("X-Saw-Close", "1")
		}
		if r.Method == http.MethodHead {
			return
		}
		_, _ = io.WriteString(w, strings.Repeat("x", 10000))
	}))
	tests := []struct {
		name      string
		keepAlive bool
		path      string
		method    string
		readBody  bool
		wantConns int64 // for three requests
	}{
		{"read to the end reuses", true, "/", http.MethodGet, true, 1},
		{"HEAD reuses", true, "/", http.MethodHead, false, 1},
		{"closed early is not reused", true, "/", http.MethodGet, false, 3},
		{"connection close from the server", true, "/?close=1", http.MethodGet, true, 3},
		{"keep-alive off", false, "/", http.MethodGet, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.conns.Load()
			var dials atomic.Int64
			rt := newH1Transport(tcpDial(srv.Listener.Addr().String(), &dials), tt.keepAlive, time.Minute)
			defer rt.CloseIdleConnections()
			for range 3 {
				resp, err := get(t, rt, context.Background(), tt.method, srv.URL+tt.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if got := resp.Header.Get("X-Saw-Close") == "1"; got != !tt.keepAlive {
					t.Errorf("server saw Connection: close = %v, want %v", got, !tt.keepAlive)
				}
				if tt.readBody {
					if b := readAll(t, resp); tt.method == http.MethodGet && len(b) != 10000 {
						t.Fatalf("body of %d bytes", len(b))
					}
				} else {
					_ = resp.Body.Close()
				}
			}
			if got := srv.conns.Load() - before; got != tt.wantConns || dials.Load() != tt.wantConns {
				t.Errorf("%d connections (%d dials), want %d", got, dials.Load(), tt.wantConns)
			}
		})
	}
}

// TestH1Bodies checks request bodies (sized and chunked), trailers and an
// upstream that answers without reading a large body.
func TestH1Bodies(t *testing.T) {
	srv := newH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Trailer", "X-Sum")
			n, _ := io.Copy(w, r.Body)
			w.Header().Set("X-Sum", fmt.Sprint(n))
		case "/early":
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		}
	}))
	var dials atomic.Int64
	rt := newH1Transport(tcpDial(srv.Listener.Addr().String(), &dials), true, time.Minute)
	defer rt.CloseIdleConnections()

	resp, err := get(t, rt, context.Background(), http.MethodPost, srv.URL+"/echo", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp); b != "hello" || resp.Trailer.Get("X-Sum") != "5" {
		t.Fatalf("echo %q, trailer %q", b, resp.Trailer.Get("X-Sum"))
	}
	if n, err := resp.Body.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read after the end: %d, %v", n, err)
	}

	// Unknown length: chunked.
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "part1-")
		_, _ = io.WriteString(pw, "part2")
		_ = pw.Close()
	}()
	resp, err = get(t, rt, context.Background(), http.MethodPost, srv.URL+"/echo", pr)
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp); b != "part1-part2" {
		t.Fatalf("chunked echo %q", b)
	}

	// 8 MiB the server never reads: the answer must come back anyway.
	big := strings.NewReader(strings.Repeat("y", 8<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err = get(t, rt, ctx, http.MethodPost, srv.URL+"/early", big)
	if err != nil {
		t.Fatalf("early answer: %v", err)
	}
	_ = readAll(t, resp)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// rawServer answers each connection with script, run once per accepted
// connection.
func rawServer(t *testing.T, script func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				script(c, bufio.NewReader(c))
			})
		}
	})
	return ln.Addr().String()
}

func readReq(br *bufio.Reader) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, req.Body)
	return nil
}

// TestH1RetryStaleConnection: an idle connection the server closed is
// noticed on reuse; an idempotent request is retried on a new connection,
// a POST without GetBody is not.
func TestH1RetryStaleConnection(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		// One answer per connection, then close.
		if readReq(br) == nil {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	var dials atomic.Int64
	rt := newH1Transport(tcpDial(addr, &dials), true, time.Minute)
	defer rt.CloseIdleConnections()
	url := "http://" + addr + "/"
	for i := range 3 {
		resp, err := get(t, rt, context.Background(), http.MethodGet, url, nil)
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		if b := readAll(t, resp); b != "ok" {
			t.Fatalf("GET %d: %q", i, b)
		}
		time.Sleep(10 * time.Millisecond) // let the server's close arrive
	}
	if dials.Load() < 3 {
		t.Errorf("%d dials for 3 requests on one-shot connections", dials.Load())
	}
	// The pool now holds a dead connection; a POST with a body that
	// cannot be replayed fails rather than being sent twice.
	body := io.NopCloser(strings.NewReader("x"))
	if err := roundTripErr(t, rt, context.Background(), http.MethodPost, url, body); err == nil {
		t.Error("POST on a stale connection succeeded without a retry rule allowing it")
	}
}

// TestH1Errors covers a dial failure, a cancelled wait, an oversized
// header and informational answers.
func TestH1Errors(t *testing.T) {
	t.Run("dial failure closes the body", func(t *testing.T) {
		errDial := errors.New("no tunnel")
		rt := newH1Transport(func(context.Context) (net.Conn, error) { return nil, errDial }, true, time.Minute)
		body := &closeRecorder{Reader: strings.NewReader("x")}
		err := roundTripErr(t, rt, context.Background(), http.MethodPost, "http://10.0.0.1/", body)
		if !errors.Is(err, errDial) || !body.closed.Load() {
			t.Fatalf("err %v, body closed %v", err, body.closed.Load())
		}
	})
	t.Run("cancel while waiting", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
			_ = readReq(br)
			_, _ = io.Copy(io.Discard, br) // never answers
		})
		var dials atomic.Int64
		rt := newH1Transport(tcpDial(addr, &dials), true, time.Minute)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := roundTripErr(t, rt, ctx, http.MethodGet, "http://"+addr+"/", nil)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
	})
	t.Run("cancel while reading the body", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
			_ = readReq(br)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
			_, _ = io.Copy(io.Discard, br)
		})
		var dials atomic.Int64
		rt := newH1Transport(tcpDial(addr, &dials), true, time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := get(t, rt, ctx, http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Fatal("body read survived the cancel")
		}
		_ = resp.Body.Close()
		rt.mu.Lock()
		idle := len(rt.idle)
		rt.mu.Unlock()
		if idle != 0 {
			t.Fatal("a cancelled connection went back to the pool")
		}
	})
	t.Run("header too large", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
			_ = readReq(br)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("z", 70<<10)+"\r\nContent-Length: 0\r\n\r\n")
		})
		var dials atomic.Int64
		rt := newH1Transport(tcpDial(addr, &dials), true, time.Minute)
		if err := roundTripErr(t, rt, context.Background(), http.MethodGet, "http://"+addr+"/", nil); !errors.Is(err, http1.ErrResponseHeaderTooLarge) {
			t.Fatalf("err %v, want %v", err, http1.ErrResponseHeaderTooLarge)
		}
	})
	t.Run("endless informational answers", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
			_ = readReq(br)
			_, _ = io.WriteString(c, strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", maxInformational+1)+"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		})
		var dials atomic.Int64
		rt := newH1Transport(tcpDial(addr, &dials), true, time.Minute)
		if err := roundTripErr(t, rt, context.Background(), http.MethodGet, "http://"+addr+"/", nil); err == nil || !strings.Contains(err.Error(), "informational") {
			t.Fatalf("err %v, want too many informational responses", err)
		}
	})
	t.Run("informational answers are skipped", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
			_ = readReq(br)
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nz")
		})
		var dials atomic.Int64
		rt := newH1Transport(tcpDial(addr, &dials), true, time.Minute)
		resp, err := get(t, rt, context.Background(), http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp); resp.StatusCode != 201 || b != "z" {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	})
	t.Run("invalid header refused", func(t *testing.T) {
		var dials atomic.Int64
		rt := newH1Transport(tcpDial("127.0.0.1:1", &dials), true, time.Minute)
		req, _ := http.NewRequest(http.MethodGet, "http://10.0.0.1/", nil)
		req.Header["Bad Name"] = []string{"v"}
		resp, err := rt.RoundTrip(req)
		if resp != nil {
			_ = resp.Body.Close()
		}
		if err == nil || dials.Load() != 0 {
			t.Fatalf("err %v after %d dials", err, dials.Load())
		}
	})
}

// TestH1IdleTimeout checks that idle connections are closed after the
// idle timeout and by CloseIdleConnections.
func TestH1IdleTimeout(t *testing.T) {
	srv := newH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	var dials atomic.Int64
	rt := newH1Transport(tcpDial(srv.Listener.Addr().String(), &dials), true, 50*time.Millisecond)
	resp, err := get(t, rt, context.Background(), http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = readAll(t, resp)
	idle := func() int {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		return len(rt.idle)
	}
	if idle() != 1 {
		t.Fatalf("%d idle connections after one request", idle())
	}
	deadline := time.Now().Add(5 * time.Second)
	for idle() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if idle() != 0 {
		t.Fatal("idle connection outlived the idle timeout")
	}
	rt.idleTimeout = time.Hour
	resp, err = get(t, rt, context.Background(), http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = readAll(t, resp)
	rt.CloseIdleConnections()
	if idle() != 0 || dials.Load() != 2 {
		t.Fatalf("%d idle after CloseIdleConnections, %d dials", idle(), dials.Load())
	}
}

type closeRecorder struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeRecorder) Close() error {
	c.closed.Store(true)
	return nil
}

// TestH1Upgrade checks 101 answers: the body of an upgrade's 101 is the
// connection (bytes the server sent right after the header included, and
// half-close passed on), and a 101 nobody asked for, or to another
// protocol, is an error.
func TestH1Upgrade(t *testing.T) {
	upgradeReq := func(ctx context.Context, addr, proto string) *http.Request {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/ws", nil)
		if proto != "" {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", proto)
		}
		return req
	}
	t.Run("switches and hands over the connection", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
			_ = readReq(br)
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly;")
			line, _ := br.ReadString('\n')
			_, _ = io.WriteString(c, "echo "+line)
			if rest, _ := io.ReadAll(br); len(rest) == 0 { // the client's half-close
				_, _ = io.WriteString(c, "eof seen")
			}
			_ = c.(*net.TCPConn).CloseWrite()
		})
		var dials atomic.Int64
		rt := newH1Transport(tcpDial(addr, &dials), true, time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := rt.RoundTrip(upgradeReq(ctx, addr, "websocket"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		cancel() // the upgraded connection no longer follows the request's context
		uc, ok := resp.Body.(*UpgradedConn)
		if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
			t.Fatalf("status %d, body %T", resp.StatusCode, resp.Body)
		}
		defer func() { _ = uc.Close() }()
		if _, err := io.WriteString(uc, "hi\n"); err != nil {
			t.Fatal(err)
		}
		if err := uc.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(uc)
		if err != nil || string(got) != "early;echo hi\neof seen" {
			t.Fatalf("read %q, %v", got, err)
		}
		rt.mu.Lock()
		idle := len(rt.idle)
		rt.mu.Unlock()
		if idle != 0 {
			t.Fatal("an upgraded connection went back to the pool")
		}
	})
	for _, tc := range []struct{ name, asked string }{
		{"unrequested 101", ""},
		{"101 to another protocol", "h2c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
				_ = readReq(br)
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			})
			var dials atomic.Int64
			rt := newH1Transport(tcpDial(addr, &dials), true, time.Minute)
			resp, err := rt.RoundTrip(upgradeReq(context.Background(), addr, tc.asked))
			if err == nil {
				_ = resp.Body.Close()
				t.Fatalf("status %d accepted", resp.StatusCode)
			}
		})
	}
}
