package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveOne serves one loopback TCP connection with h under ctx and
// returns the client's end (closed at cleanup, deadline 10 s) and a
// channel closed when the server side is done. The server drains its input
// before closing: unread input would turn the close into a reset that can
// drop the answer.
func serveOne(t testing.TB, ctx context.Context, h http.Handler, opts Options) (net.Conn, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		Serve(ctx, c, h, opts)
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, done
}

// exchange serves one loopback TCP connection with h, writes in, half-
// closes, and returns all the server wrote until it closed.
func exchange(t testing.TB, h http.Handler, opts Options, in string) string {
	t.Helper()
	c, done := serveOne(t, context.Background(), h, opts)
	if _, err := io.WriteString(c, in); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, out)
	}
	<-done
	return string(out)
}

// echo answers with the request's method, target, host, body and chosen
// headers, so tests can see what the handler was given.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(599)
		return
	}
	fmt.Fprintf(w, "%s %s host=%s proto=%s cl=%d body=%q x=%q trailer=%q", r.Method, r.URL.RequestURI(), r.Host, r.Proto, r.ContentLength, b, r.Header.Values("X"), r.Trailer.Get("T"))
})

// answer is a response read back from the server's output.
type answer struct {
	status  int
	close   bool
	body    string
	trailer http.Header
}

// responses reads every response in out (answers to requests with
// methods, in order).
func responses(t *testing.T, out string, methods ...string) []answer {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(out))
	var as []answer
	for _, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("response %d: %v in %q", len(as), err, out)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatalf("response %d body: %v in %q", len(as), err, out)
		}
		as = append(as, answer{status: resp.StatusCode, close: resp.Close, body: string(b), trailer: resp.Trailer})
	}
	if rest, _ := io.ReadAll(br); len(rest) > 0 {
		t.Fatalf("trailing bytes after %d responses: %q", len(as), rest)
	}
	return as
}

func TestRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		// status and body substring of the one response; a refused request
		// closes the connection.
		status int
		body   string
	}{
		{"get", "GET /a?b=c HTTP/1.1\r\nHost: svc\r\nX: 1\r\nx: 2\r\n\r\n", 200, `GET /a?b=c host=svc proto=HTTP/1.1 cl=0 body="" x=["1" "2"]`},
		{"content-length body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", 200, `cl=5 body="hello"`},
		{"repeated equal lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", 200, `body="hi"`},
		{"chunked body and trailer", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: T\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nT: tv\r\n\r\n", 200, `cl=-1 body="abcde" x=[] trailer="tv"`},
		{"absolute form sets the host", "GET http://other:8080/p HTTP/1.1\r\nHost: h\r\n\r\n", 200, `GET /p host=other:8080`},
		{"http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 200, `proto=HTTP/1.0`},
		{"value whitespace trimmed", "GET / HTTP/1.1\r\nHost: h\r\nX: \t v \t\r\n\r\n", 200, `x=["v"]`},
		{"leading empty line skipped", "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 200, `GET /`},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400, "missing Host"},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "malformed Host"},
		{"length and chunked", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "both content-length and transfer-encoding"},
		{"conflicting lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi", 400, "conflicting"},
		{"signed length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +2\r\n\r\nhi", 400, "malformed content-length"},
		{"unknown encoding", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, ""},
		{"chunked in http/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"},
		{"bare LF", "GET / HTTP/1.1\nHost: h\n\n", 400, "CRLF"},
		{"bare CR in a value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400, "bare CR"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400, "folding"},
		{"space before colon", "GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n", 400, "malformed header field"},
		{"control character in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400, "invalid header field value"},
		{"bad method", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method"},
		{"no version", "GET /\r\nHost: h\r\n\r\n", 400, "malformed request line"},
		{"http/2.0 line", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, ""},
		{"asterisk outside options", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400, "asterisk"},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "request target"},
		{"unknown expectation", "POST / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417, ""},
		{"head too large", "GET / HTTP/1.1\r\nHost: h\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n", 431, ""},
		{"line too large", "GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\nHost: h\r\n\r\n", 431, ""},
		{"forbidden trailer", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n", 400, "trailer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := exchange(t, echo, Options{MaxHeaderBytes: 1024}, tc.in)
			r := responses(t, out, http.MethodGet)[0]
			if r.status != tc.status || !strings.Contains(r.body, tc.body) {
				t.Fatalf("got %d %q, want %d with %q", r.status, out, tc.status, tc.body)
			}
			if tc.status >= 400 && !r.close {
				t.Errorf("refused request without Connection: close: %q", out)
			}
		})
	}
}

func TestKeepAliveAndClose(t *testing.T) {
	two := "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
	for _, tc := range []struct {
		name string
		in   string
		want []string // bodies' prefixes
		// closes: the last response says Connection: close.
		closes bool
	}{
		{"pipelined", two, []string{"GET /1", "POST /2"}, false},
		{"close after the first", "GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n", []string{"GET /1"}, true},
		{"http/1.0 closes", "GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", []string{"GET /1"}, true},
		{"http/1.0 keep-alive", "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", []string{"GET /1", "GET /2"}, true},
		// As net/http: close wins over keep-alive, and tokens compare in
		// ASCII only ("cloſe", with a long s, is not "close").
		{"http/1.0 close and keep-alive", "GET /1 HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", []string{"GET /1"}, true},
		{"non-ascii token is not close", "GET /1 HTTP/1.1\r\nHost: h\r\nConnection: clo\u017fe\r\n\r\n" + "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n", []string{"GET /1", "GET /2"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := exchange(t, echo, Options{}, tc.in)
			methods := make([]string, len(tc.want))
			for i := range methods {
				methods[i] = http.MethodGet
			}
			rs := responses(t, out, methods...)
			for i, r := range rs {
				if b := r.body; !strings.HasPrefix(b, tc.want[i]) {
					t.Errorf("response %d: %q, want %q", i, b, tc.want[i])
				}
			}
			if last := rs[len(rs)-1]; last.close != tc.closes {
				t.Errorf("last response closes: %v, want %v: %q", last.close, tc.closes, out)
			}
		})
	}
}

func TestUnreadBody(t *testing.T) {
	ignore := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.Path) })
	small := "POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody" + "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
	rs := responses(t, exchange(t, ignore, Options{}, small), "POST", "GET")
	if rs[1].body != "/2" {
		t.Errorf("second request after an unread body: %q", rs[1].body)
	}
	chunked := "POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n" + "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
	rs = responses(t, exchange(t, ignore, Options{}, chunked), "POST", "GET")
	if rs[1].body != "/2" {
		t.Errorf("second request after an unread chunked body: %q", rs[1].body)
	}
	big := fmt.Sprintf("POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", maxDiscard+1)
	rs = responses(t, exchange(t, ignore, Options{}, big), "POST")
	if !rs[0].close {
		t.Error("a large unread body did not close the connection")
	}
}

func TestResponseFraming(t *testing.T) {
	for _, tc := range []struct {
		name    string
		method  string
		h       http.HandlerFunc
		want    string // in the raw response
		notWant string
	}{
		{"small body gets a length", "GET", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") }, "Content-Length: 5\r\n", "Transfer-Encoding"},
		{"large body is chunked", "GET", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, strings.Repeat("a", maxPending+1))
		}, "Transfer-Encoding: chunked\r\n", "Content-Length"},
		{"flushed body is chunked", "GET", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "b")
		}, "\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n", "Content-Length"},
		{"handler's length kept", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			_, _ = io.WriteString(w, "abc")
		}, "Content-Length: 3\r\n", "chunked"},
		{"invalid handler length replaced", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "x")
			_, _ = io.WriteString(w, "abc")
		}, "Content-Length: 3\r\n", "Content-Length: x"},
		{"head has no body", "HEAD", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			_, _ = io.WriteString(w, "abc")
		}, "Content-Length: 3\r\n", "abc"},
		{"204 has no framing", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusNoContent)
		}, "204 No Content\r\n", "Content-Length"},
		{"date added", "GET", func(w http.ResponseWriter, r *http.Request) {}, "\r\nDate: ", ""},
		{"date suppressed", "GET", func(w http.ResponseWriter, r *http.Request) { w.Header()["Date"] = nil }, "", "Date:"},
		{"line break in a value", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X", "a\r\nInjected: 1")
		}, "X: a  Injected: 1\r\n", "\r\nInjected"},
		{"header after WriteHeader not sent", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			w.Header().Set("Late", "1")
		}, "200 OK", "Late"},
		{"trailers", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, "x")
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Extra", "e")
		}, "\r\n1\r\nx\r\n0\r\n", "Grpc-Status: 0\r\nTrailer"},
		{"undeclared trailer without a flush", "GET", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hi")
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}, "\r\n2\r\nhi\r\n0\r\nGrpc-Status: 0\r\n\r\n", "Content-Length"},
		{"forbidden trailer names dropped", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Evil: injected, Content-Length, Host")
			w.WriteHeader(200)
			w.Header().Set("Content-Length", "0")
			w.Header().Set("Host", "h")
			w.Header().Set(http.TrailerPrefix+"Connection", "close")
		}, "\r\n0\r\n\r\n", "\r\nX-Evil"},
		{"1xx then final", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "x")
		}, "103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\n", ""},
		{"short body closes", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "abc")
		}, "Content-Length: 10\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := exchange(t, tc.h, Options{}, tc.method+" / HTTP/1.1\r\nHost: h\r\n\r\n")
			if tc.want != "" && !strings.Contains(out, tc.want) {
				t.Errorf("%q lacks %q", out, tc.want)
			}
			if tc.notWant != "" && strings.Contains(out, tc.notWant) {
				t.Errorf("%q has %q", out, tc.notWant)
			}
		})
	}
}

func TestResponseTrailersParse(t *testing.T) {
	out := exchange(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = io.WriteString(w, "x")
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Extra", "e")
	}), Options{}, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	r := responses(t, out, "GET")[0]
	if r.trailer.Get("Grpc-Status") != "0" || r.trailer.Get("Extra") != "e" {
		t.Errorf("trailers %v in %q", r.trailer, out)
	}
}

func TestContentLengthOverrun(t *testing.T) {
	var werr error
	exchange(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		_, werr = io.WriteString(w, "abc")
	}), Options{}, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if !errors.Is(werr, http.ErrContentLength) {
		t.Errorf("write past Content-Length: %v", werr)
	}
}

func TestExpectContinue(t *testing.T) {
	in := "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
	out := exchange(t, echo, Options{}, in)
	if !strings.HasPrefix(out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n") || !strings.Contains(out, `body="hi"`) {
		t.Errorf("got %q", out)
	}
	// Answered without reading: no 100, and the connection closes, as
	// the client may never send the body.
	out = exchange(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "" {
			t.Error("Expect passed to the handler")
		}
		w.WriteHeader(http.StatusForbidden)
	}), Options{}, in)
	if strings.Contains(out, "100 Continue") || !strings.Contains(out, "Connection: close") {
		t.Errorf("got %q", out)
	}
}

func TestHijack(t *testing.T) {
	out := exchange(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n\r\n")
		_ = brw.Flush()
		rest, _ := io.ReadAll(brw)
		_, _ = c.Write(append([]byte("echo:"), rest...))
	}), Options{}, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes")
	if out != "HTTP/1.1 101 Switching Protocols\r\n\r\necho:raw bytes" {
		t.Errorf("got %q", out)
	}
}

func TestPanicClosesConnection(t *testing.T) {
	out := exchange(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic(http.ErrAbortHandler)
		}
	}), Options{}, "GET /panic HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if out != "" {
		t.Errorf("got %q after a panic", out)
	}
}

func TestHTTP2Preface(t *testing.T) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	got := make(chan string, 1)
	exchange(t, echo, Options{HTTP2: func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- string(b)
	}}, preface+"frames")
	if g := <-got; g != preface+"frames" {
		t.Errorf("HTTP/2 handler read %q", g)
	}
	// Without an HTTP/2 server the connection just closes.
	if out := exchange(t, echo, Options{}, preface); out != "" {
		t.Errorf("got %q", out)
	}
}

func TestContextEndsWithConnection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	c, ended := serveOne(t, ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	}), Options{})
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	<-started
	cancel()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// TestEarlyAnswerWhileBodyIsRead: a handler that answers while another
// goroutine still reads the request body (as the upstream transport's
// body writer does) gets its answer to the client, which may wait for it
// before sending the rest of the body.
func TestEarlyAnswerWhileBodyIsRead(t *testing.T) {
	readerDone := make(chan error, 1)
	c, _ := serveOne(t, context.Background(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started := make(chan struct{})
		go func() {
			close(started)
			_, err := io.ReadAll(r.Body)
			readerDone <- err
		}()
		<-started
		time.Sleep(20 * time.Millisecond) // let the reader block on the client
		w.WriteHeader(http.StatusForbidden)
	}), Options{})
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer while the body is unfinished: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !resp.Close {
		t.Errorf("got %d close=%v, want 403 and close", resp.StatusCode, resp.Close)
	}
	_ = c.Close()
	if err := <-readerDone; err == nil {
		t.Error("the body of a client that went away read without error")
	}
}

// TestAnswerBeforeTheNextRequestIsWhole: an answer goes out although
// bytes of the next request are already buffered.
func TestAnswerBeforeTheNextRequestIsWhole(t *testing.T) {
	for _, next := range []string{"\r\n", "GET /x HTT"} {
		c, _ := serveOne(t, context.Background(), echo, Options{})
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"+next)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("next request starting %q: no answer: %v", next, err)
		}
		_ = resp.Body.Close()
	}
}

// TestPanicWhileBodyIsRead: a handler that panics while another goroutine
// reads a body waiting for "100 Continue" ends the connection without a
// race on the writer (go test -race).
func TestPanicWhileBodyIsRead(t *testing.T) {
	read := make(chan struct{})
	out := exchange(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			defer close(read)
			_, _ = io.Copy(io.Discard, r.Body)
		}()
		panic(http.ErrAbortHandler)
	}), Options{}, "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx")
	<-read
	if strings.Contains(out, "200") {
		t.Errorf("got %q after a panic", out)
	}
}

// TestLargeHeadIsNotKept: the scratch a large head grew is dropped once
// parsed, so one big request does not pin its size for the connection.
func TestLargeHeadIsNotKept(t *testing.T) {
	in := "GET / HTTP/1.1\r\nHost: h\r\nX: " + strings.Repeat("a", 2*maxKeptScratch) + "\r\n\r\n"
	hr := headReader{br: bufio.NewReader(strings.NewReader(in + "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))}
	var req http.Request
	if err := hr.parseRequest(&req, 96<<10, true); err != nil {
		t.Fatal(err)
	}
	if len(req.Header.Get("X")) != 2*maxKeptScratch || cap(hr.buf) != 0 {
		t.Fatalf("header %d bytes, scratch kept %d", len(req.Header.Get("X")), cap(hr.buf))
	}
	if err := hr.parseRequest(&req, 96<<10, false); err != nil || cap(hr.buf) > maxKeptScratch {
		t.Fatalf("next request: %v, scratch %d", err, cap(hr.buf))
	}
}

// TestIdleTimeout: a connection with no request being served for the idle
// timeout is closed, whether it waits between requests or holds part of a
// head; a request served for longer than the timeout is not cut; a
// negative timeout disables the watch.
func TestIdleTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(3 * timeout)
		}
		_, _ = io.WriteString(w, "done")
	})
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		in      string // written at once, then the connection is left idle
		answers int    // complete answers expected before the close
		closed  bool
	}{
		{"idle after an answer", timeout, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1, true},
		{"never sends", timeout, "", 0, true},
		{"stalls in a head", timeout, "GET / HTTP/1.1\r\nHost:", 0, true},
		{"slow request is not cut", timeout, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", 1, true},
		{"disabled", -1, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ended := serveOne(t, context.Background(), slow, Options{IdleTimeout: tc.timeout})
			if _, err := io.WriteString(c, tc.in); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			for i := range tc.answers {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("answer %d: %v", i, err)
				}
				b, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil || string(b) != "done" {
					t.Fatalf("answer %d: %q, %v", i, b, err)
				}
			}
			wait := 10 * time.Second
			if !tc.closed {
				wait = 5 * timeout
			}
			select {
			case <-ended:
				if !tc.closed {
					t.Fatal("the connection was closed with the idle timeout disabled")
				}
			case <-time.After(wait):
				if tc.closed {
					t.Fatal("the idle connection was not closed")
				}
			}
		})
	}
}
