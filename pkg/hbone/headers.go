package hbone

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Header names HBONE carries on the CONNECT request.
const (
	headerForwarded   = "forwarded"
	headerBaggage     = "baggage"
	headerTraceparent = "traceparent"
)

// ParseAuthority parses a CONNECT :authority, which for HBONE is always an IP
// literal and a port: "10.0.0.1:80" or "[fd00::1]:80". Host names, zones,
// missing ports and port 0 are rejected.
func ParseAuthority(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("parse authority %q: %w", s, err)
	}
	if ap.Addr().Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("parse authority %q: zones are not allowed", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("parse authority %q: port 0", s)
	}
	return ap, nil
}

// FormatForwarded renders the forwarded header ztunnel sends:
// for="<src ip:port>", with ;host=<host> appended when host is not empty.
func FormatForwarded(src netip.AddrPort, host string) string {
	var b strings.Builder
	b.Grow(64)
	b.WriteString(`for="`)
	b.WriteString(src.String())
	b.WriteByte('"')
	if host != "" {
		b.WriteString(";host=")
		b.WriteString(quoteForwardedValue(host))
	}
	return b.String()
}

// quoteForwardedValue returns v as an RFC 7239 token, quoting it when it
// contains characters a token may not.
func quoteForwardedValue(v string) string {
	for i := 0; i < len(v); i++ {
		if !isTokenChar(v[i]) {
			return strconv.Quote(v)
		}
	}
	return v
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// ParseForwardedFor returns the address in the first "for" parameter of a
// forwarded header (RFC 7239). The port is 0 when the node has none. Obfuscated
// identifiers and "unknown" are errors.
func ParseForwardedFor(v string) (netip.AddrPort, error) {
	// Only the first element (the hop closest to the original client) matters.
	elem, _, _ := strings.Cut(v, ",")
	for pair := range strings.SplitSeq(elem, ";") {
		name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(name, "for") {
			continue
		}
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
			if strings.IndexByte(value, '\\') >= 0 {
				return netip.AddrPort{}, fmt.Errorf("parse forwarded %q: escapes in node", v)
			}
		}
		return parseForwardedNode(value)
	}
	return netip.AddrPort{}, fmt.Errorf("parse forwarded %q: no for parameter", v)
}

func parseForwardedNode(n string) (netip.AddrPort, error) {
	if strings.HasPrefix(n, "[") {
		if ap, err := netip.ParseAddrPort(n); err == nil && ap.Addr().Zone() == "" {
			return ap, nil
		}
		end := strings.IndexByte(n, ']')
		if end < 0 || end != len(n)-1 {
			return netip.AddrPort{}, fmt.Errorf("parse forwarded node %q: malformed", n)
		}
		a, err := netip.ParseAddr(n[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("parse forwarded node %q: bad IPv6", n)
		}
		return netip.AddrPortFrom(a, 0), nil
	}
	if ap, err := netip.ParseAddrPort(n); err == nil {
		if !ap.Addr().Is4() {
			return netip.AddrPort{}, fmt.Errorf("parse forwarded node %q: IPv6 must be bracketed", n)
		}
		return ap, nil
	}
	a, err := netip.ParseAddr(n)
	if err != nil || !a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("parse forwarded node %q: not an IP", n)
	}
	return netip.AddrPortFrom(a, 0), nil
}

// NewTraceparent returns a fresh W3C traceparent (version 00, random trace
// and parent IDs, not sampled), as generated for each HBONE connection that
// has none.
func NewTraceparent() string {
	var raw [24]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	var out [55]byte
	copy(out[0:], "00-")
	hex.Encode(out[3:35], raw[:16])
	out[35] = '-'
	hex.Encode(out[36:52], raw[16:])
	copy(out[52:], "-00")
	return string(out[:])
}

// Traceparent is a parsed W3C trace context traceparent header.
type Traceparent struct {
	Version  byte
	TraceID  [16]byte
	ParentID [8]byte
	Flags    byte
}

// ParseTraceparent validates a traceparent header value per W3C Trace
// Context: lowercase hex fields, non-zero IDs, version ff invalid, version 00
// exactly 55 characters, and later versions allowed to carry extra fields.
func ParseTraceparent(s string) (Traceparent, error) {
	var tp Traceparent
	if len(s) < 55 {
		return tp, fmt.Errorf("parse traceparent %q: too short", s)
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return tp, fmt.Errorf("parse traceparent %q: bad separators", s)
	}
	var v [1]byte
	if err := decodeLowerHex(v[:], s[0:2]); err != nil {
		return tp, fmt.Errorf("parse traceparent %q: version: %w", s, err)
	}
	tp.Version = v[0]
	if tp.Version == 0xff {
		return tp, fmt.Errorf("parse traceparent %q: version ff", s)
	}
	if tp.Version == 0 && len(s) != 55 {
		return tp, fmt.Errorf("parse traceparent %q: version 00 has extra data", s)
	}
	if len(s) > 55 && s[55] != '-' {
		return tp, fmt.Errorf("parse traceparent %q: bad trailing data", s)
	}
	if err := decodeLowerHex(tp.TraceID[:], s[3:35]); err != nil {
		return tp, fmt.Errorf("parse traceparent %q: trace id: %w", s, err)
	}
	if err := decodeLowerHex(tp.ParentID[:], s[36:52]); err != nil {
		return tp, fmt.Errorf("parse traceparent %q: parent id: %w", s, err)
	}
	if err := decodeLowerHex(v[:], s[53:55]); err != nil {
		return tp, fmt.Errorf("parse traceparent %q: flags: %w", s, err)
	}
	tp.Flags = v[0]
	if tp.TraceID == ([16]byte{}) || tp.ParentID == ([8]byte{}) {
		return tp, fmt.Errorf("parse traceparent %q: all-zero id", s)
	}
	return tp, nil
}

var errNotLowerHex = errors.New("not lowercase hex")

func decodeLowerHex(dst []byte, s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return errNotLowerHex
		}
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("%w: %w", errNotLowerHex, err)
	}
	return nil
}

// String renders tp in the canonical version-00 layout.
func (tp Traceparent) String() string {
	var b [55]byte
	out := hex.AppendEncode(b[:0], []byte{tp.Version})
	out = append(out, '-')
	out = hex.AppendEncode(out, tp.TraceID[:])
	out = append(out, '-')
	out = hex.AppendEncode(out, tp.ParentID[:])
	out = append(out, '-')
	out = hex.AppendEncode(out, []byte{tp.Flags})
	return string(out)
}
