package telemetry

import (
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// AccessLog writes one JSON line per request or connection, encoded
// without reflection. Safe for concurrent use.
//
// Unbuffered (NewAccessLog), lines are written with group commit: when
// several requests finish at once, the one that finds no write in progress
// writes every pending line in one call. Buffered (NewBufferedAccessLog),
// lines are collected and written every flush interval or once 64 KiB are
// pending, as Envoy's file access log does; Flush writes them at once.
type AccessLog struct {
	w        io.Writer
	interval time.Duration // 0: unbuffered

	mu      sync.Mutex // guards pending, spare, writing and timer
	pending []byte     // lines not yet handed to w
	spare   []byte     // the previous batch's buffer, reused
	writing bool       // unbuffered: a Log call is writing a batch to w
	timer   *time.Timer

	wmu sync.Mutex // buffered: serialises batches to w, in order
}

// NewAccessLog logs to w, each line written before Log returns (or by a
// concurrent Log call; see Log); nil w disables the log.
func NewAccessLog(w io.Writer) *AccessLog {
	if w == nil {
		return nil
	}
	return &AccessLog{w: w}
}

// NewBufferedAccessLog logs to w, writing lines at most interval after
// they are logged, sooner when maxPending bytes are waiting; interval <= 0
// is NewAccessLog. nil w disables the log. Call Flush before the writer is
// closed: it writes what is pending and cancels the timer.
func NewBufferedAccessLog(w io.Writer, interval time.Duration) *AccessLog {
	l := NewAccessLog(w)
	if l != nil && interval > 0 {
		l.interval = interval
	}
	return l
}

// Entry is one access log line.
type Entry struct {
	Start                                                   time.Time
	Method, Path, Protocol, Authority, UserAgent, RequestID string
	Code                                                    int
	Flags                                                   string
	Duration                                                time.Duration
	BytesReceived, BytesSent                                int64
	UpstreamCluster, UpstreamHost                           string
	SourceAddress, SourcePrincipal, DestinationService      string
	RouteName, TraceID                                      string
	ConnectionTermination                                   string
}

// maxPending bounds the bytes kept pending: a buffered log writes once
// this much is waiting, and an unbuffered one makes callers wait for the
// writer rather than grow memory.
const maxPending = 64 << 10

// Log records e. Unbuffered, when it returns the line has been written to
// the underlying writer, or handed to a concurrent Log call that is
// writing and writes it before it returns. Write errors are dropped: the
// access log never fails a request.
func (a *AccessLog) Log(e *Entry) {
	if a == nil {
		return
	}
	if a.interval > 0 {
		a.logBuffered(e)
		return
	}
	a.mu.Lock()
	for a.writing && len(a.pending) >= maxPending {
		// Back-pressure when the writer is slower than the requests:
		// rare, so a short sleep is enough.
		a.mu.Unlock()
		time.Sleep(100 * time.Microsecond)
		a.mu.Lock()
	}
	a.pending = appendEntry(a.pending, e)
	if a.writing {
		a.mu.Unlock()
		return
	}
	a.writing = true
	for len(a.pending) > 0 {
		batch := a.pending
		a.pending = a.spare[:0]
		a.mu.Unlock()
		_, _ = a.w.Write(batch)
		a.mu.Lock()
		a.spare = batch
	}
	a.writing = false
	if cap(a.spare) > 4*maxPending {
		a.spare = nil // don't keep a burst's buffer forever
	}
	a.mu.Unlock()
}

func (a *AccessLog) logBuffered(e *Entry) {
	a.mu.Lock()
	a.pending = appendEntry(a.pending, e)
	full := len(a.pending) >= maxPending
	if !full && a.timer == nil {
		a.timer = time.AfterFunc(a.interval, a.Flush)
	}
	a.mu.Unlock()
	if full {
		a.Flush()
	}
}

// Flush writes the pending lines now (buffered logs; unbuffered ones have
// none once Log returns) and cancels the flush timer. Safe to call at any
// time, on a nil AccessLog too.
func (a *AccessLog) Flush() {
	if a == nil || a.interval <= 0 {
		return
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.mu.Lock()
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	batch := a.pending
	a.pending = a.spare[:0]
	a.mu.Unlock()
	if len(batch) > 0 {
		_, _ = a.w.Write(batch)
	}
	a.mu.Lock()
	if cap(batch) <= 4*maxPending {
		a.spare = batch
	}
	a.mu.Unlock()
}

// appendEntry appends e as one JSON object and a newline, keys in a fixed
// order.
func appendEntry(b []byte, e *Entry) []byte {
	flags := e.Flags
	if flags == "" {
		flags = "-"
	}
	b = append(b, `{"start_time":"`...)
	b = e.Start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendString(b, "method", e.Method)
	b = appendString(b, "path", e.Path)
	b = appendString(b, "protocol", e.Protocol)
	b = appendString(b, "authority", e.Authority)
	b = appendInt(b, "response_code", int64(e.Code))
	b = appendString(b, "response_flags", flags)
	b = appendInt(b, "duration", e.Duration.Milliseconds())
	b = appendInt(b, "bytes_received", e.BytesReceived)
	b = appendInt(b, "bytes_sent", e.BytesSent)
	b = appendString(b, "upstream_cluster", e.UpstreamCluster)
	b = appendString(b, "upstream_host", e.UpstreamHost)
	b = appendString(b, "downstream_remote_address", e.SourceAddress)
	b = appendString(b, "source_principal", e.SourcePrincipal)
	b = appendString(b, "destination_service", e.DestinationService)
	b = appendString(b, "route_name", e.RouteName)
	b = appendString(b, "user_agent", e.UserAgent)
	b = appendString(b, "x_request_id", e.RequestID)
	b = appendString(b, "trace_id", e.TraceID)
	return append(b, "}\n"...)
}

func appendString(b []byte, key, v string) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":"`...)
	b = appendJSONEscaped(b, v)
	return append(b, '"')
}

func appendInt(b []byte, key string, v int64) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":`...)
	return strconv.AppendInt(b, v, 10)
}

// appendJSONEscaped appends s as the inside of a JSON string: quotes,
// backslashes and control characters escaped, invalid UTF-8 replaced by
// U+FFFD, and U+2028/U+2029 escaped so a line is safe to embed in
// JavaScript.
func appendJSONEscaped(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}
