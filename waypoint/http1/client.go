package http1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// WriteRequest writes req to bw as an HTTP/1.1 request for an upstream:
// its fields as they are (no User-Agent is added), framed by its
// ContentLength (chunked when unknown, with req.Trailer after the body).
// It closes req.Body, as net/http's Request.Write does. The caller
// flushes bw.
func WriteRequest(bw *bufio.Writer, req *http.Request) error {
	if req.Body != nil {
		defer req.Body.Close()
	}
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("http1: invalid Host %q", host)
	}
	if !httpguts.ValidHeaderFieldName(req.Method) && req.Method != "" {
		return fmt.Errorf("http1: invalid method %q", req.Method)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	uri := "/"
	if req.URL != nil {
		uri = req.URL.RequestURI()
	}
	if method == http.MethodConnect && (req.URL == nil || req.URL.Path == "") {
		uri = host
	}
	if strings.ContainsAny(uri, " \r\n") {
		return fmt.Errorf("http1: invalid request target %q", uri)
	}
	// Rendered in bw's free space: no copy when the head fits.
	b := bw.AvailableBuffer()
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	if req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		b = append(b, "Connection: close\r\n"...)
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := hasBody && req.ContentLength <= 0
	switch {
	case chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		if len(req.Trailer) > 0 {
			b = append(b, "Trailer: "...)
			first := true
			for k := range req.Trailer {
				if !first {
					b = append(b, ',')
				}
				b, first = append(b, k...), false
			}
			b = append(b, "\r\n"...)
		}
	case hasBody:
		b = appendLength(b, req.ContentLength)
	case method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		b = appendLength(b, 0)
	}
	b = append(b, "\r\n"...)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	if !hasBody {
		return nil
	}
	if !chunked {
		n, err := io.CopyN(bw, req.Body, req.ContentLength)
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("http1: request body of %d bytes, %d declared", n, req.ContentLength)
		}
		return err
	}
	cw := httputil.NewChunkedWriter(bw)
	if _, err := io.Copy(cw, req.Body); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	b = bw.AvailableBuffer()
	for k, vs := range req.Trailer {
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	b = append(b, "\r\n"...)
	_, err := bw.Write(b)
	return err
}

// ResponseReader reads the responses of one upstream connection.
type ResponseReader struct {
	hr             headReader
	maxHeaderBytes int
}

// NewResponseReader reads from br; a response's head may take at most
// maxHeaderBytes.
func NewResponseReader(br *bufio.Reader, maxHeaderBytes int) *ResponseReader {
	return &ResponseReader{hr: headReader{br: br}, maxHeaderBytes: maxHeaderBytes}
}

// ErrResponseHeaderTooLarge is a response head over the reader's bound.
var ErrResponseHeaderTooLarge = errors.New("upstream response header too large")

// errMalformedResponse wraps what makes a response unreadable.
var errMalformedResponse = errors.New("malformed HTTP response")

// Read reads the head of the answer to req; its Body reads the rest from
// the connection, and must be read to its end (or the connection dropped)
// before the next Read. A body's Close does not read the rest.
// Informational (1xx) answers are returned like any other.
func (rr *ResponseReader) Read(req *http.Request) (*http.Response, error) {
	if err := rr.hr.readBlock(rr.maxHeaderBytes); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		if errors.Is(err, errHeaderTooLarge) {
			return nil, ErrResponseHeaderTooLarge
		}
		if re := (*requestError)(nil); errors.As(err, &re) {
			return nil, fmt.Errorf("%w: %s", errMalformedResponse, re.text)
		}
		return nil, err
	}
	if len(rr.hr.ends) == 0 {
		return nil, fmt.Errorf("%w: empty head", errMalformedResponse)
	}
	head := string(rr.hr.buf)
	rr.hr.release()
	resp := &http.Response{Request: req}
	if err := parseStatusLine(resp, head[:rr.hr.ends[0]]); err != nil {
		return nil, err
	}
	h, err := parseFields(head, rr.hr.ends, 1)
	if err != nil {
		// Checked only on failure: errors.As's target escapes, and would
		// cost an allocation per response.
		if re := (*requestError)(nil); errors.As(err, &re) {
			return nil, fmt.Errorf("%w: %s", errMalformedResponse, re.text)
		}
		return nil, err
	}
	resp.Header = h
	if err := rr.frame(resp, req); err != nil {
		return nil, err
	}
	return resp, nil
}

// parseStatusLine parses "HTTP/1.x SP code SP reason".
func parseStatusLine(resp *http.Response, line string) error {
	proto, rest, ok := strings.Cut(line, " ")
	codeText, _, _ := strings.Cut(rest, " ")
	switch proto {
	case "HTTP/1.1":
		resp.ProtoMinor = 1
	case "HTTP/1.0":
	default:
		return fmt.Errorf("%w: status line %q", errMalformedResponse, line)
	}
	if !ok || len(codeText) != 3 {
		return fmt.Errorf("%w: status line %q", errMalformedResponse, line)
	}
	code, err := strconv.Atoi(codeText)
	if err != nil || code < 100 {
		return fmt.Errorf("%w: status code %q", errMalformedResponse, codeText)
	}
	resp.Proto, resp.ProtoMajor, resp.StatusCode, resp.Status = proto, 1, code, rest
	return nil
}

// frame sets the response's body, length and connection fields.
func (rr *ResponseReader) frame(resp *http.Response, req *http.Request) error {
	h := resp.Header
	resp.Close = shouldClose(resp.ProtoMinor, h["Connection"])
	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	resp.ContentLength = -1
	if hasCL {
		n, err := parseContentLength(cl)
		if err != nil {
			return fmt.Errorf("%w: content-length %q", errMalformedResponse, cl)
		}
		resp.ContentLength = n
	}
	noBody := req != nil && req.Method == http.MethodHead || !bodyAllowed(resp.StatusCode)
	switch {
	case noBody:
		if !hasCL || req == nil || req.Method != http.MethodHead {
			resp.ContentLength = 0
		}
		resp.Body = http.NoBody
	case hasTE:
		if hasCL {
			return fmt.Errorf("%w: both content-length and transfer-encoding", errMalformedResponse)
		}
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return fmt.Errorf("%w: transfer-encoding %q", errMalformedResponse, te)
		}
		delete(h, "Transfer-Encoding")
		resp.TransferEncoding = []string{"chunked"}
		resp.ContentLength = -1
		for name := range declaredTrailers(h["Trailer"]) {
			if !trailerName(name) {
				continue
			}
			if resp.Trailer == nil {
				resp.Trailer = make(http.Header)
			}
			resp.Trailer[name] = nil
		}
		delete(h, "Trailer")
		resp.Body = &chunkedResponseBody{cr: httputil.NewChunkedReader(rr.hr.br), rr: rr, resp: resp}
	case hasCL && resp.ContentLength == 0:
		resp.Body = http.NoBody
	case hasCL:
		resp.Body = &lengthBody{br: rr.hr.br, remain: resp.ContentLength}
	default:
		// Delimited by the end of the connection.
		resp.Close = true
		resp.Body = io.NopCloser(rr.hr.br)
	}
	return nil
}

// lengthBody reads a Content-Length body.
type lengthBody struct {
	br     *bufio.Reader
	remain int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.br.Read(p)
	b.remain -= int64(n)
	switch {
	case b.remain == 0:
		return n, io.EOF
	case errors.Is(err, io.EOF):
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

// chunkedResponseBody reads chunks, then the trailer into the response's
// Trailer.
type chunkedResponseBody struct {
	cr   io.Reader
	rr   *ResponseReader
	resp *http.Response
	err  error // sticky, io.EOF after the trailer
}

func (b *chunkedResponseBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.cr.Read(p)
	if errors.Is(err, io.EOF) {
		err = b.readTrailer()
	}
	b.err = err
	return n, err
}

// readTrailer reads the trailer into the response's Trailer and returns
// io.EOF, the body's end, when it is well formed.
func (b *chunkedResponseBody) readTrailer() error {
	err := b.rr.hr.readTrailer(b.rr.maxHeaderBytes, &b.resp.Trailer)
	if re := (*requestError)(nil); errors.As(err, &re) {
		return fmt.Errorf("%w: trailer", errMalformedResponse)
	}
	if err != nil {
		return err
	}
	return io.EOF
}

func (b *chunkedResponseBody) Close() error { return nil }
