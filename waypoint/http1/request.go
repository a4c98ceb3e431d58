package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// requestError is a request the server refuses: it answers with status
// (and text as the body) and closes the connection.
type requestError struct {
	status int
	text   string
}

func (e *requestError) Error() string { return fmt.Sprintf("%d %s", e.status, e.text) }

func badRequest(text string) error { return &requestError{status: http.StatusBadRequest, text: text} }

var errHeaderTooLarge = &requestError{status: http.StatusRequestHeaderFieldsTooLarge, text: "request header too large"}

// errPreface is the start of an HTTP/2 connection (prior knowledge).
var errPreface = errors.New("http/2 connection preface")

// h2Preface is the first line of the HTTP/2 client preface.
const h2Preface = "PRI * HTTP/2.0\r\n"

// headReader reads request and trailer header blocks into one reused
// buffer, so that a request's header strings come from one allocation.
type headReader struct {
	br  *bufio.Reader
	buf []byte // the block being read, lines without their CRLF
	// ends[i] is where line i ends in buf.
	ends []int
}

// readBlock reads lines up to and including the empty line that ends a
// header block, at most limit bytes in all (CRLFs included).
func (hr *headReader) readBlock(limit int) error {
	hr.buf, hr.ends = hr.buf[:0], hr.ends[:0]
	total := 0
	for {
		line, err := hr.readLine(limit - total)
		if err != nil {
			return err
		}
		total += len(line) + 2
		if len(line) == 0 {
			return nil
		}
		hr.buf = append(hr.buf, line...)
		hr.ends = append(hr.ends, len(hr.buf))
	}
}

// readTrailer reads the trailer section that follows a chunked body's
// last chunk, at most limit bytes, into *dst (made when a field is kept).
// Fields that may not be trailers are dropped. A malformed section is a
// *requestError; a connection that ends first, io.ErrUnexpectedEOF.
func (hr *headReader) readTrailer(limit int, dst *http.Header) error {
	if err := hr.readBlock(limit); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if len(hr.ends) == 0 {
		return nil
	}
	trailer := string(hr.buf)
	hr.release()
	t, err := parseFields(trailer, hr.ends, 0)
	if err != nil {
		return err
	}
	for k, vs := range t {
		if !trailerName(k) {
			continue
		}
		if *dst == nil {
			*dst = make(http.Header, len(t))
		}
		(*dst)[k] = vs
	}
	return nil
}

// maxKeptScratch bounds the scratch buffers a connection keeps between
// requests: one unusually large head must not pin its size for the
// connection's life.
const maxKeptScratch = 16 << 10

// maxKeptFields bounds the response header map a connection keeps for its
// next request: a map keeps the size it grew to.
const maxKeptFields = 32

// release drops the block buffer when a large head grew it.
func (hr *headReader) release() {
	if cap(hr.buf) > maxKeptScratch {
		hr.buf = nil
	}
}

// readLine returns one line without its CRLF, valid until the next read.
// A line must end in CRLF: a bare LF or CR is refused, as one a framing
// peer could read differently.
func (hr *headReader) readLine(limit int) ([]byte, error) {
	line, err := hr.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Longer than the reader's buffer: gather it, within limit.
		long := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(long) <= limit {
			line, err = hr.br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if len(line) > limit {
		return nil, errHeaderTooLarge
	}
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, badRequest("line not ended by CRLF")
	}
	line = line[:len(line)-2]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, badRequest("bare CR in line")
	}
	return line, nil
}

// parseRequest reads one request's head into req, all but its body,
// context and remote address. A clean end of input before the first byte
// is io.EOF. The first request of a connection may instead be the HTTP/2
// preface (errPreface).
func (hr *headReader) parseRequest(req *http.Request, maxHeaderBytes int, first bool) error {
	// Tolerate the empty lines RFC 9112 lets a server skip before a
	// request, a few of them.
	for range 4 {
		b, err := hr.br.Peek(1)
		if err != nil {
			return err
		}
		if b[0] != '\r' && b[0] != '\n' {
			break
		}
		if _, err := hr.readLine(2); err != nil {
			return err
		}
	}
	if first {
		if p, _ := hr.br.Peek(len(h2Preface)); string(p) == h2Preface {
			return errPreface
		}
	}
	if err := hr.readBlock(maxHeaderBytes); err != nil {
		return err
	}
	if len(hr.ends) == 0 {
		return badRequest("empty request")
	}
	// One string holds the whole head; the request's strings are parts of it.
	head := string(hr.buf)
	hr.release()
	if err := parseRequestLine(req, head[:hr.ends[0]]); err != nil {
		return err
	}
	h, err := parseFields(head, hr.ends, 1)
	if err != nil {
		return err
	}
	req.Header = h
	return finishRequest(req)
}

// parseRequestLine parses "METHOD SP target SP HTTP/1.x".
func parseRequestLine(req *http.Request, line string) error {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || target == "" {
		return badRequest("malformed request line")
	}
	if !httpguts.ValidHeaderFieldName(method) { // a token
		return badRequest("invalid method")
	}
	switch proto {
	case "HTTP/1.1":
		req.ProtoMinor = 1
	case "HTTP/1.0":
	default:
		if strings.HasPrefix(proto, "HTTP/") && len(proto) == 8 && proto[6] == '.' {
			return &requestError{status: http.StatusHTTPVersionNotSupported, text: "unsupported protocol version"}
		}
		return badRequest("malformed HTTP version")
	}
	req.Method, req.RequestURI, req.Proto, req.ProtoMajor = method, target, proto, 1
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return badRequest("invalid character in request target")
		}
	}
	var err error
	switch {
	case method == http.MethodConnect && target[0] != '/':
		// authority-form
		req.URL = &url.URL{Host: target}
	case target == "*":
		if method != http.MethodOptions {
			return badRequest("asterisk target outside OPTIONS")
		}
		req.URL = &url.URL{Path: "*"}
	default:
		req.URL, err = url.ParseRequestURI(target)
		if err != nil {
			return badRequest("malformed request target")
		}
	}
	return nil
}

// parseFields parses the field lines head[ends[from-1]:ends[from]], ... into
// a header. Names are validated and canonicalized; values have their
// surrounding whitespace removed and are validated. Obsolete line folding
// is refused.
func parseFields(head string, ends []int, from int) (http.Header, error) {
	n := len(ends) - from
	h := make(http.Header, n)
	// One backing array for the first value of each name.
	slab := make([]string, n)
	start := 0
	if from > 0 {
		start = ends[from-1]
	}
	for _, end := range ends[from:] {
		line := head[start:end]
		start = end
		if line[0] == ' ' || line[0] == '\t' {
			return nil, badRequest("obsolete line folding")
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return nil, badRequest("malformed header field")
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			return nil, badRequest("invalid header field value")
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		if vs, ok := h[name]; ok {
			h[name] = append(vs, value)
			continue
		}
		slab[0] = value
		h[name] = slab[:1:1]
		slab = slab[1:]
	}
	return h, nil
}

// finishRequest derives the host, framing and connection fields from the
// header, refusing what could be read two ways.
func finishRequest(req *http.Request) error {
	h := req.Header
	hosts := h["Host"]
	switch {
	case len(hosts) > 1:
		return badRequest("more than one Host header")
	case len(hosts) == 0 && req.ProtoMinor == 1:
		return badRequest("missing Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return badRequest("malformed Host header")
	}
	req.Host = req.URL.Host
	if req.Host == "" && len(hosts) == 1 {
		req.Host = hosts[0]
	}
	delete(h, "Host")

	req.Close = shouldClose(req.ProtoMinor, h["Connection"])

	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	switch {
	case hasTE:
		if req.ProtoMinor == 0 {
			return badRequest("transfer-encoding in an HTTP/1.0 request")
		}
		if hasCL {
			return badRequest("both content-length and transfer-encoding")
		}
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return &requestError{status: http.StatusNotImplemented, text: "unsupported transfer encoding"}
		}
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
		delete(h, "Transfer-Encoding")
		if err := declareTrailers(req); err != nil {
			return err
		}
	case hasCL:
		n, err := parseContentLength(cl)
		if err != nil {
			return err
		}
		req.ContentLength = n
	}
	if req.ContentLength == 0 {
		req.Body = http.NoBody
	}
	return nil
}

// parseContentLength accepts one decimal length, or repeats of the same.
func parseContentLength(vs []string) (int64, error) {
	first := vs[0]
	for _, v := range vs[1:] {
		if v != first {
			return 0, badRequest("conflicting content-length")
		}
	}
	if first == "" || len(first) > 18 {
		return 0, badRequest("malformed content-length")
	}
	for i := 0; i < len(first); i++ {
		if first[i] < '0' || first[i] > '9' {
			return 0, badRequest("malformed content-length")
		}
	}
	n, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0, badRequest("malformed content-length")
	}
	return n, nil
}

// declareTrailers fills req.Trailer with the names the Trailer header
// announces; the chunked body reader sets their values.
func declareTrailers(req *http.Request) error {
	for name := range declaredTrailers(req.Header["Trailer"]) {
		if !trailerName(name) {
			return badRequest("forbidden trailer name")
		}
		if req.Trailer == nil {
			req.Trailer = make(http.Header)
		}
		req.Trailer[name] = nil
	}
	return nil
}

// declaredTrailers yields the canonical names a Trailer header's values
// (comma-separated lists) announce, skipping empty elements. Whether a
// name may be a trailer (trailerName) is the caller's to judge.
func declaredTrailers(values []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range values {
			for name := range strings.SplitSeq(v, ",") {
				if name = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name)); name != "" && !yield(name) {
					return
				}
			}
		}
	}
}

// shouldClose reports whether the connection ends after this exchange:
// "Connection: close", or HTTP/1.0 without "Connection: keep-alive" (as
// net/http reads it: close wins, tokens compare in ASCII).
func shouldClose(minor int, conn []string) bool {
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	if minor == 0 {
		return hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	return hasClose
}
