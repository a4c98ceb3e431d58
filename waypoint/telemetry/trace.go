package telemetry

import (
	"encoding/hex"
	mrand "math/rand/v2"
	"net/http"

	"github.com/zmesh/zmesh/pkg/hbone"
)

// Span is this hop's place in a W3C trace.
type Span struct {
	TraceID  [16]byte
	SpanID   [8]byte
	ParentID [8]byte // zero when this span starts the trace
	Flags    byte
}

// StartSpan continues the trace in h's traceparent (or starts one, sampled
// with probability samplePPM per million) with a fresh span id, and
// rewrites traceparent so the upstream sees this span as its parent.
// tracestate is passed through untouched. h's keys are canonical (a
// parsed request's), so it is indexed directly: Get, Set and Del would
// allocate to canonicalize the lower-case W3C names on every request.
func StartSpan(h http.Header, samplePPM uint32) Span {
	var s Span
	if tp, ok := incomingTrace(h); ok {
		s.TraceID, s.ParentID, s.Flags = tp.TraceID, tp.ParentID, tp.Flags
	} else {
		randomID(s.TraceID[:])
		delete(h, "Tracestate")
		if samplePPM >= 1_000_000 || (samplePPM > 0 && mrand.Uint32N(1_000_000) < samplePPM) {
			s.Flags = 1
		}
	}
	randomID(s.SpanID[:])
	h["Traceparent"] = []string{s.Traceparent()}
	return s
}

// incomingTrace is the request's valid traceparent, if it has one. (Most
// requests have none: that case builds no parse error.)
func incomingTrace(h http.Header) (hbone.Traceparent, bool) {
	vs := h["Traceparent"]
	if len(vs) == 0 || vs[0] == "" {
		return hbone.Traceparent{}, false
	}
	tp, err := hbone.ParseTraceparent(vs[0])
	return tp, err == nil
}

// randomID fills b with random bytes, never all zero (an invalid W3C id).
// math/rand/v2's generator (ChaCha8, seeded by the OS) is unpredictable
// enough for trace ids, and much cheaper per request than crypto/rand.
func randomID(b []byte) {
	for {
		for i := 0; i < len(b); i += 8 {
			v := mrand.Uint64()
			for j := i; j < len(b) && j < i+8; j++ {
				b[j] = byte(v)
				v >>= 8
			}
		}
		for _, x := range b {
			if x != 0 {
				return
			}
		}
	}
}

// Traceparent renders the span as a version-00 traceparent.
func (s Span) Traceparent() string {
	return hbone.Traceparent{TraceID: s.TraceID, ParentID: s.SpanID, Flags: s.Flags}.String()
}

// TraceIDString is the hex trace id.
func (s Span) TraceIDString() string { return hex.EncodeToString(s.TraceID[:]) }
