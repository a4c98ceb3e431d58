package telemetry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writes that counts
// Write calls.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func TestAccessLogLine(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.FixedZone("x", 3600))
	tests := []struct {
		name  string
		entry Entry
		want  map[string]any
	}{
		{"plain", Entry{Start: start, Method: "GET", Path: "/a?b=c", Protocol: "HTTP/1.1", Authority: "svc:80", Code: 200,
			Duration: 1500 * time.Microsecond, BytesReceived: 3, BytesSent: 1024, UpstreamCluster: "outbound|80||svc", UpstreamHost: "10.0.0.1:80",
			SourceAddress: "10.0.0.2:1234", SourcePrincipal: "spiffe://td/ns/a/sa/b", DestinationService: "svc.ns.svc.cluster.local",
			RouteName: "r", UserAgent: "ua", RequestID: "id", TraceID: "t"},
			map[string]any{"start_time": "2026-01-02T02:04:05.000006Z", "method": "GET", "path": "/a?b=c", "protocol": "HTTP/1.1",
				"authority": "svc:80", "response_code": 200.0, "response_flags": "-", "duration": 1.0, "bytes_received": 3.0, "bytes_sent": 1024.0,
				"upstream_cluster": "outbound|80||svc", "upstream_host": "10.0.0.1:80", "downstream_remote_address": "10.0.0.2:1234",
				"source_principal": "spiffe://td/ns/a/sa/b", "destination_service": "svc.ns.svc.cluster.local", "route_name": "r",
				"user_agent": "ua", "x_request_id": "id", "trace_id": "t"}},
		{"escapes", Entry{Start: start, Path: "/\"q\"\\\n\r\t\x01<&>", UserAgent: "bad\xffutf8 \u2028\u2029 é", Flags: "UF,URX", Code: 503},
			map[string]any{"path": "/\"q\"\\\n\r\t\x01<&>", "user_agent": "bad\ufffdutf8 \u2028\u2029 é", "response_flags": "UF,URX", "response_code": 503.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf lockedBuffer
			NewAccessLog(&buf).Log(&tt.entry)
			line := buf.b.String()
			if !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 {
				t.Fatalf("not one line: %q", line)
			}
			if strings.ContainsRune(line, '\u2028') || strings.ContainsRune(line, '\u2029') {
				t.Errorf("line separators not escaped: %q", line)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatalf("invalid JSON %q: %v", line, err)
			}
			if len(got) != 19 {
				t.Errorf("got %d keys, want 19: %v", len(got), got)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
		})
	}
}

// TestAccessLogConcurrent checks that concurrent lines are all written
// whole, and batched into fewer writes than lines when they contend.
func TestAccessLogConcurrent(t *testing.T) {
	var buf lockedBuffer
	l := NewAccessLog(&buf)
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				l.Log(&Entry{Method: "GET", Path: strings.Repeat("x", w+i%7), Code: 200})
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.b.String(), "\n"), "\n")
	if len(lines) != workers*each {
		t.Fatalf("got %d lines, want %d", len(lines), workers*each)
	}
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("invalid line %q: %v", line, err)
		}
	}
	if buf.writes > len(lines) {
		t.Errorf("%d writes for %d lines", buf.writes, len(lines))
	}
	t.Logf("%d lines in %d writes", len(lines), buf.writes)
}

// FuzzAccessLogEscape checks that any string survives a JSON round trip
// (invalid UTF-8 becoming U+FFFD, as encoding/json does).
func FuzzAccessLogEscape(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\\n\x00", "\xff\xfe", "\u2028x\u2029", "é漢字"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONEscaped([]byte{'"'}, s)
		b = append(b, '"')
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("invalid JSON string %q for %q: %v", b, s, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		// ToValidUTF8 replaces a run of invalid bytes with one U+FFFD;
		// the encoder replaces each invalid byte.
		if strings.ReplaceAll(got, "\ufffd", "") != strings.ReplaceAll(want, "\ufffd", "") {
			t.Fatalf("round trip of %q gave %q", s, got)
		}
	})
}

// TestBufferedAccessLog checks that a buffered log holds lines until its
// interval, its size threshold or Flush, and keeps them whole and in
// order.
func TestBufferedAccessLog(t *testing.T) {
	lines := func(buf *lockedBuffer) []string {
		buf.mu.Lock()
		defer buf.mu.Unlock()
		s := strings.TrimSuffix(buf.b.String(), "\n")
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	t.Run("interval", func(t *testing.T) {
		var buf lockedBuffer
		l := NewBufferedAccessLog(&buf, 50*time.Millisecond)
		start := time.Now()
		l.Log(&Entry{Path: "/1"})
		l.Log(&Entry{Path: "/2"})
		if n := len(lines(&buf)); n != 0 && time.Since(start) < 40*time.Millisecond {
			t.Fatalf("%d lines written before the interval", n)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(lines(&buf)) < 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		got := lines(&buf)
		if len(got) != 2 || !strings.Contains(got[0], `"path":"/1"`) || !strings.Contains(got[1], `"path":"/2"`) {
			t.Fatalf("lines %q", got)
		}
		if buf.writes != 1 {
			t.Errorf("%d writes for one interval, want 1", buf.writes)
		}
	})
	t.Run("flush", func(t *testing.T) {
		var buf lockedBuffer
		l := NewBufferedAccessLog(&buf, time.Hour)
		l.Log(&Entry{Path: "/a"})
		if n := len(lines(&buf)); n != 0 {
			t.Fatalf("%d lines before Flush", n)
		}
		l.Flush()
		if n := len(lines(&buf)); n != 1 {
			t.Fatalf("%d lines after Flush", n)
		}
		l.Flush() // nothing pending: no empty write
		if buf.writes != 1 {
			t.Errorf("%d writes", buf.writes)
		}
	})
	t.Run("size threshold and order", func(t *testing.T) {
		var buf lockedBuffer
		l := NewBufferedAccessLog(&buf, time.Hour)
		const workers, each = 4, 400
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					l.Log(&Entry{Path: fmt.Sprintf("/%d/%d", w, i), UserAgent: strings.Repeat("u", 100)})
				}
			})
		}
		wg.Wait()
		if n := len(lines(&buf)); n == 0 {
			t.Fatal("nothing written past the size threshold")
		}
		l.Flush()
		got := lines(&buf)
		if len(got) != workers*each {
			t.Fatalf("%d lines, want %d", len(got), workers*each)
		}
		next := make([]int, workers)
		for _, line := range got {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("invalid line %q: %v", line, err)
			}
			var w, i int
			if _, err := fmt.Sscanf(m["path"].(string), "/%d/%d", &w, &i); err != nil || i != next[w] {
				t.Fatalf("line %q out of order (want /%d/%d)", line, w, next[w])
			}
			next[w]++
		}
	})
	t.Run("nil and zero interval", func(t *testing.T) {
		if NewBufferedAccessLog(nil, time.Second) != nil {
			t.Fatal("nil writer gave a log")
		}
		var nilLog *AccessLog
		nilLog.Flush()
		nilLog.Log(&Entry{})
		var buf lockedBuffer
		NewBufferedAccessLog(&buf, 0).Log(&Entry{Path: "/now"})
		if n := len(lines(&buf)); n != 1 {
			t.Fatalf("zero interval: %d lines right after Log", n)
		}
	})
}
