package telemetry

import (
	"net/http"
	"strings"
	"testing"
)

func TestStartSpan(t *testing.T) {
	h := http.Header{}
	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("tracestate", "a=b")
	s := StartSpan(h, 0)
	tp := h.Get("traceparent")
	if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || strings.Contains(tp, "00f067aa0ba902b7") || !strings.HasSuffix(tp, "-01") || h.Get("tracestate") != "a=b" {
		t.Fatalf("continued: %s", tp)
	}
	if s.TraceIDString() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatal(s.TraceIDString())
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		h := http.Header{}
		h.Set("traceparent", bad)
		h.Set("tracestate", "stale=1")
		s := StartSpan(h, 1_000_000)
		if s.Flags != 1 || s.TraceID == ([16]byte{}) || h.Get("tracestate") != "" || !strings.HasPrefix(h.Get("traceparent"), "00-"+s.TraceIDString()) {
			t.Fatalf("%q: new trace not started: %s", bad, h.Get("traceparent"))
		}
	}
}

// TestRandomID checks ids of both W3C sizes are non-zero and distinct.
func TestRandomID(t *testing.T) {
	for _, size := range []int{8, 16} {
		seen := map[string]bool{}
		for range 1000 {
			b := make([]byte, size)
			randomID(b)
			if string(b) == string(make([]byte, size)) {
				t.Fatalf("all-zero %d-byte id", size)
			}
			if seen[string(b)] {
				t.Fatalf("repeated %d-byte id %x", size, b)
			}
			seen[string(b)] = true
		}
	}
}
