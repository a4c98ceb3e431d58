package http1

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// maxPending is how much body a response holds before its header goes
// out: a handler that finishes within it gets a Content-Length instead of
// chunks.
const maxPending = 4 << 10

// response is the http.ResponseWriter of one request. Like net/http's, it
// is for the handler's goroutine: only the header's commit is guarded
// against a concurrent "100 Continue" from a body reader (conn.wmu).
//
// WriteHeader renders the status line and the handler's fields at once,
// so later changes to the header map reach the client only as trailers,
// as with net/http. The framing fields (Content-Length or chunked,
// Connection, Date) are added when the head goes out: at the first Flush,
// when the body outgrows maxPending, or when the handler returns.
type response struct {
	c    *serverConn
	req  *http.Request
	body *body // nil when the request has none
	hdr  http.Header

	status      int
	wroteHeader bool // WriteHeader ran (the head is rendered in c.head)
	committed   bool // the head went to the connection's writer
	hijacked    bool
	isHEAD      bool
	// cl is the handler's Content-Length, -1 when it set none.
	cl      int64
	written int64 // body bytes accepted from the handler
	chunked bool
	// closeAfter ends the connection after this response.
	closeAfter bool
	hasDate    bool
	trailers   []string // names the handler declared in "Trailer"
	pending    []byte   // body held before commit (c.pend)
	size       [16]byte // scratch for a chunk's size line
}

func (w *response) Header() http.Header { return w.hdr }

// bodyAllowed reports whether status may carry a body (RFC 9110 6.4.1).
func bodyAllowed(status int) bool {
	return (status < 100 || status >= 200) && status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *response) WriteHeader(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.wroteHeader, w.status = true, code
	w.cl = -1
	if v := w.hdr.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.cl = n
		}
	}
	if httpguts.HeaderValuesContainsToken(w.hdr["Connection"], "close") {
		w.closeAfter = true
	}
	_, w.hasDate = w.hdr["Date"]
	for name := range declaredTrailers(w.hdr["Trailer"]) {
		if trailerName(name) {
			w.trailers = append(w.trailers, name)
		}
	}
	head := appendStatusLine(w.c.head[:0], w.req.ProtoMinor, code)
	w.c.head = appendFields(head, w.hdr)
}

// writeInformational sends a 1xx answer at once; the final one follows.
func (w *response) writeInformational(code int) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	if w.c.headSent {
		return
	}
	b := appendStatusLine(w.c.head[:0], w.req.ProtoMinor, code)
	b = appendFields(b, w.hdr)
	w.c.head = append(b, "\r\n"...)
	_, _ = w.c.bw.Write(w.c.head)
	_ = w.c.bw.Flush()
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	var err error
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		p, err = p[:w.cl-w.written], http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.isHEAD {
		return len(p), err
	}
	if !w.committed && len(w.pending)+len(p) <= maxPending {
		w.pending = append(w.pending, p...)
		return len(p), err
	}
	if !w.committed {
		if cerr := w.commit(false); cerr != nil {
			return 0, cerr
		}
	}
	n, werr := w.writeBody(p)
	if werr != nil {
		return n, werr
	}
	return n, err
}

// writeBody writes p after the head: as one chunk, or as it is.
func (w *response) writeBody(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	bw := w.c.bw
	if w.chunked {
		_, _ = bw.Write(strconv.AppendInt(w.size[:0], int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if err != nil {
		return n, err
	}
	if w.chunked {
		_, err = bw.WriteString("\r\n")
	}
	return n, err
}

// commit sends the head, with its framing fields, and the pending body.
// final says the handler has returned: a body that fit in maxPending then
// gets its Content-Length.
func (w *response) commit(final bool) error {
	w.c.startHead()
	w.committed = true
	switch {
	case w.body != nil && w.body.continueOwed():
		// The client waits for "100 Continue" before sending its body, and
		// the body will not be read: only closing frees the connection.
		w.closeAfter = true
	case final && w.body != nil && !w.body.keepable():
		w.closeAfter = true // the rest of the body is too long to read past
	}
	h := w.c.head
	withBody := bodyAllowed(w.status)
	switch {
	case !withBody:
	case w.cl >= 0:
		h = appendLength(h, w.cl)
	case final && !w.hasTrailers() && !w.isHEAD:
		w.cl = int64(len(w.pending))
		h = appendLength(h, w.cl)
	case w.isHEAD:
	case w.req.ProtoMinor >= 1:
		w.chunked = true
		h = append(h, "Transfer-Encoding: chunked\r\n"...)
	default:
		w.closeAfter = true // HTTP/1.0: the body ends with the connection
	}
	if w.req.Close {
		w.closeAfter = true
	}
	switch {
	case w.closeAfter:
		h = append(h, "Connection: close\r\n"...)
	case w.req.ProtoMinor == 0:
		h = append(h, "Connection: keep-alive\r\n"...)
	}
	if !w.hasDate {
		h = append(h, "Date: "...)
		h = append(h, httpDate()...)
		h = append(h, "\r\n"...)
	}
	h = append(h, "\r\n"...)
	w.c.head = h
	if _, err := w.c.bw.Write(h); err != nil {
		return err
	}
	_, err := w.writeBody(w.pending)
	w.pending = w.pending[:0]
	return err
}

// hasTrailers reports whether the handler declared trailers or set one
// under http.TrailerPrefix: then the body is chunked to carry them.
func (w *response) hasTrailers() bool {
	if len(w.trailers) > 0 {
		return true
	}
	for k := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// trailerName reports whether a (canonical) name may be sent or kept as a
// trailer: a valid field name that is not one of the fields a trailer
// must not carry (framing, routing, authentication...).
func trailerName(name string) bool {
	return httpguts.ValidHeaderFieldName(name) && httpguts.ValidTrailerHeader(name)
}

// FlushError sends what the handler wrote so far to the client.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if err := w.commit(false); err != nil {
			return err
		}
	}
	return w.c.bw.Flush()
}

// Flush implements http.Flusher.
func (w *response) Flush() { _ = w.FlushError() }

// Hijack hands the connection to the handler, which then owns it until it
// returns; only before anything was written.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.wroteHeader {
		return nil, nil, errors.New("http1: hijack after WriteHeader")
	}
	w.hijacked = true
	w.c.startHead()
	w.committed = true
	return w.c.conn, bufio.NewReadWriter(w.c.br, w.c.bw), nil
}

// finish completes the response after the handler returned: the head if
// it has not gone out, the last chunk and trailers. It reports whether the
// connection can carry another exchange.
func (w *response) finish() (keep bool, err error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if err := w.commit(true); err != nil {
			return false, err
		}
	}
	if w.chunked {
		w.writeTrailer()
	}
	if w.cl >= 0 && w.written < w.cl && bodyAllowed(w.status) && !w.isHEAD {
		w.closeAfter = true // the client waits for bytes that will not come
	}
	return !w.closeAfter, nil
}

// writeTrailer ends a chunked body: the last chunk, then the declared
// trailers' values and those set under http.TrailerPrefix.
func (w *response) writeTrailer() {
	b := append(w.c.head[:0], "0\r\n"...)
	for _, name := range w.trailers {
		for _, v := range w.hdr[name] {
			b = appendField(b, name, v)
		}
	}
	for k, vs := range w.hdr {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok {
			continue
		}
		if name = http.CanonicalHeaderKey(name); trailerName(name) {
			for _, v := range vs {
				b = appendField(b, name, v)
			}
		}
	}
	w.c.head = append(b, "\r\n"...)
	_, _ = w.c.bw.Write(w.c.head)
}

// appendStatusLine appends "HTTP/1.x code reason\r\n".
func appendStatusLine(b []byte, minor, code int) []byte {
	if minor == 0 {
		b = append(b, "HTTP/1.0 "...)
	} else {
		b = append(b, "HTTP/1.1 "...)
	}
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, "\r\n"...)
}

// appendFields appends the handler's fields, less those the server
// writes itself (framing and connection) and trailer values. Invalid
// names are dropped and line breaks in values replaced, so a handler
// cannot split the response.
func appendFields(b []byte, h http.Header) []byte {
	for k, vs := range h {
		switch k {
		case "Transfer-Encoding", "Connection", "Content-Length":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	return b
}

func appendLength(b []byte, n int64) []byte {
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, n, 10)
	return append(b, "\r\n"...)
}

// lineBreaks turns CR and LF in a field value into spaces.
var lineBreaks = strings.NewReplacer("\r", " ", "\n", " ")

func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	if strings.ContainsAny(v, "\r\n") {
		v = lineBreaks.Replace(v)
	}
	b = append(b, strings.TrimSpace(v)...)
	return append(b, "\r\n"...)
}

// dateCache holds the Date field's value, formatted once per second.
var dateCache atomic.Pointer[cachedDate]

type cachedDate struct {
	sec  int64
	text string
}

func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.text
	}
	d := &cachedDate{sec: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}
