package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestWriteRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     func() *http.Request
		want    []string // substrings of the output
		notWant []string
		err     string
	}{
		{"get", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://svc:80/a?b=c", nil)
			r.Header.Set("X", "1")
			return r
		}, []string{"GET /a?b=c HTTP/1.1\r\nHost: svc:80\r\n", "X: 1\r\n"}, []string{"User-Agent", "Content-Length"}, ""},
		{"host overrides", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://svc/", nil)
			r.Host = "other"
			return r
		}, []string{"Host: other\r\n"}, []string{"Host: svc"}, ""},
		{"empty post", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, "http://svc/", nil)
			return r
		}, []string{"Content-Length: 0\r\n\r\n"}, nil, ""},
		{"length body", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPut, "http://svc/", strings.NewReader("hello"))
			return r
		}, []string{"Content-Length: 5\r\n\r\nhello"}, []string{"chunked"}, ""},
		{"chunked body with trailer", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, "http://svc/", io.NopCloser(strings.NewReader("abc")))
			r.ContentLength = -1
			r.Trailer = http.Header{"T": {"v"}}
			return r
		}, []string{"Transfer-Encoding: chunked\r\nTrailer: T\r\n\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n"}, []string{"Content-Length"}, ""},
		{"close", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://svc/", nil)
			r.Close = true
			return r
		}, []string{"Connection: close\r\n"}, nil, ""},
		{"framing fields from the header are replaced", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, "http://svc/", strings.NewReader("x"))
			r.Header.Set("Content-Length", "99")
			r.Header.Set("Transfer-Encoding", "gzip")
			return r
		}, []string{"Content-Length: 1\r\n"}, []string{"99", "gzip"}, ""},
		{"line break in a value", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://svc/", nil)
			r.Header.Set("X", "a\r\nInjected: 1")
			return r
		}, []string{"X: a  Injected: 1\r\n"}, []string{"\r\nInjected"}, ""},
		{"short body", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, "http://svc/", io.NopCloser(strings.NewReader("ab")))
			r.ContentLength = 5
			return r
		}, nil, nil, "2 bytes, 5 declared"},
		{"invalid host", func() *http.Request {
			return &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Host: "a b"}
		}, nil, nil, "invalid Host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			err := WriteRequest(bw, tc.req())
			_ = bw.Flush()
			if expectErr(t, err, tc.err) {
				return
			}
			got := out.String()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("%q has %q", got, w)
				}
			}
			// What we write, net/http's server reads back.
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(got)))
			if err != nil {
				t.Fatalf("net/http cannot read %q: %v", got, err)
			}
			_, _ = io.ReadAll(r.Body)
		})
	}
}

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		method  string
		in      string
		status  int
		body    string
		length  int64
		close   bool
		trailer http.Header
		err     string
	}{
		{"length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 200, "hi", 2, false, nil, ""},
		{"chunked with trailers", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n2\r\nhi\r\n0\r\nGrpc-Status: 0\r\nExtra: e\r\n\r\n", 200, "hi", -1, false,
			http.Header{"Grpc-Status": {"0"}, "Extra": {"e"}}, ""},
		{"forbidden trailer fields dropped", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nGrpc-Status: 0\r\nContent-Length: 9\r\nHost: h\r\n\r\n", 200, "hi", -1, false,
			http.Header{"Grpc-Status": {"0"}}, ""},
		{"malformed trailer", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nno colon\r\n\r\n", 0, "", 0, false, nil, "malformed HTTP response: trailer"},
		{"trailer cut short", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nGrpc-Status: 0\r\n", 0, "", 0, false, nil, "unexpected EOF"},
		{"until close", "GET", "HTTP/1.1 200 OK\r\n\r\nall of it", 200, "all of it", -1, true, nil, ""},
		{"http/1.0", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 200, "x", 1, true, nil, ""},
		{"head keeps its length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", 200, "", 7, false, nil, ""},
		{"204", "GET", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", 0, false, nil, ""},
		{"1xx", "GET", "HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n", 103, "", 0, false, nil, ""},
		{"connection close", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 200, "", 0, true, nil, ""},
		{"short length body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", 200, "", 5, false, nil, "unexpected EOF"},
		{"bad status", "GET", "HTTP/1.1 2x0 OK\r\n\r\n", 0, "", 0, false, nil, "status code"},
		{"bad proto", "GET", "HTTP/3 200 OK\r\n\r\n", 0, "", 0, false, nil, "status line"},
		{"length and chunked", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 0, "", 0, false, nil, "both"},
		{"gzip encoding", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, "", 0, false, nil, "transfer-encoding"},
		{"head too large", "GET", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 300) + "\r\n\r\n", 0, "", 0, false, nil, "too large"},
		{"cut short", "GET", "HTTP/1.1 200 OK\r\n", 0, "", 0, false, nil, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := NewResponseReader(bufio.NewReaderSize(strings.NewReader(tc.in), 64), 256)
			resp, err := rr.Read(&http.Request{Method: tc.method})
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
			}
			if expectErr(t, err, tc.err) {
				return
			}
			if resp.StatusCode != tc.status || string(body) != tc.body || resp.ContentLength != tc.length || resp.Close != tc.close {
				t.Errorf("got %d %q length %d close %v", resp.StatusCode, body, resp.ContentLength, resp.Close)
			}
			if tc.trailer != nil && !equalHeader(resp.Trailer, tc.trailer) {
				t.Errorf("trailer %v, want %v", resp.Trailer, tc.trailer)
			}
		})
	}
}

// expectErr fails t unless err contains want (or, when want is empty, is
// nil), and reports whether an error was expected.
func expectErr(t *testing.T, err error, want string) bool {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatal(err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("err %v, want %q", err, want)
	}
	return want != ""
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, vs := range a {
		if strings.Join(vs, ",") != strings.Join(b[k], ",") {
			return false
		}
	}
	return true
}

// TestResponsesInSequence reads several answers from one connection, as
// a pooled upstream connection does.
func TestResponsesInSequence(t *testing.T) {
	in := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na" +
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n" +
		"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nc"
	rr := NewResponseReader(bufio.NewReader(strings.NewReader(in)), 1024)
	var got []string
	for {
		resp, err := rr.Read(&http.Request{Method: http.MethodGet})
		if errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.Status+":"+string(b))
	}
	if want := "100 Continue:,200 OK:a,200 OK:b,404 Not Found:c"; strings.Join(got, ",") != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
