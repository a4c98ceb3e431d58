package http1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// bytesConn is a net.Conn reading a fixed input and discarding writes: a
// harness that lets the fuzzer drive Serve without sockets.
type bytesConn struct {
	r   *bytes.Reader
	out bytes.Buffer
}

func (c *bytesConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *bytesConn) Close() error                     { return nil }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }

// checkResponses checks that out is a sequence of well-formed responses.
func checkResponses(t *testing.T, out *bytes.Buffer) {
	br := bufio.NewReader(out)
	for n := 0; ; n++ {
		if _, err := br.Peek(1); err == io.EOF {
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d unreadable: %v", n, err)
		}
		_, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil && resp.ContentLength >= 0 {
			t.Fatalf("response %d body: %v", n, err)
		}
	}
}

// FuzzServe feeds arbitrary bytes to the server: it must not panic or
// hang, and everything it writes must be well-formed responses.
func FuzzServe(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: T\r\n\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"GET http://a/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(r.URL.Path, "chunk") {
			w.(http.Flusher).Flush()
		}
		_, _ = w.Write(b)
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &bytesConn{r: bytes.NewReader(in)}
		Serve(context.Background(), c, h, Options{MaxHeaderBytes: 4096})
		checkResponses(t, &c.out)
	})
}

// FuzzReadResponse feeds arbitrary bytes to the upstream response reader.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: A\r\n\r\n2\r\nhi\r\n0\r\nA: b\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nrest",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, head bool) {
		rr := NewResponseReader(bufio.NewReader(bytes.NewReader(in)), 4096)
		req := &http.Request{Method: http.MethodGet}
		if head {
			req.Method = http.MethodHead
		}
		for range 8 {
			resp, err := rr.Read(req)
			if err != nil {
				return
			}
			if resp.Header == nil || resp.Body == nil {
				t.Fatal("response without header or body")
			}
			_, err = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				return
			}
		}
	})
}

// FuzzParseAgreesWithNetHTTP checks that a request head this package
// accepts is read the same way by net/http: method, target, host, framing
// and fields. This package may refuse more (it is stricter), never read
// differently, as a disagreement between hops is how requests are
// smuggled.
func FuzzParseAgreesWithNetHTTP(f *testing.F) {
	for _, s := range []string{
		"GET /a?b HTTP/1.1\r\nHost: h\r\nX: 1\r\nx: 2\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET http://a:1/b HTTP/1.0\r\nHost: c\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		hr := headReader{br: bufio.NewReader(bytes.NewReader(in))}
		var ours http.Request
		if err := hr.parseRequest(&ours, 4096, false); err != nil {
			return
		}
		// net/http does not skip the empty lines RFC 9112 lets a server
		// skip before a request.
		theirs, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(bytes.TrimLeft(in, "\r\n"))))
		if err != nil {
			t.Fatalf("accepted here, refused by net/http (%v): %q", err, in)
		}
		if ours.Method != theirs.Method || ours.RequestURI != theirs.RequestURI || ours.Host != theirs.Host ||
			ours.ContentLength != theirs.ContentLength || ours.Close != theirs.Close || ours.ProtoMinor != theirs.ProtoMinor {
			t.Fatalf("read differently: ours %s %s host=%q cl=%d close=%v 1.%d, net/http %s %s host=%q cl=%d close=%v 1.%d: %q",
				ours.Method, ours.RequestURI, ours.Host, ours.ContentLength, ours.Close, ours.ProtoMinor,
				theirs.Method, theirs.RequestURI, theirs.Host, theirs.ContentLength, theirs.Close, theirs.ProtoMinor, in)
		}
		for k, vs := range ours.Header {
			if strings.Join(vs, "\x00") != strings.Join(theirs.Header[k], "\x00") {
				t.Fatalf("field %q: ours %q, net/http %q: %q", k, vs, theirs.Header[k], in)
			}
		}
	})
}
