package hbone

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestClientWireFormat terminates the pool's connection with a bare framer
// and checks what ztunnel would see: settings, window sizes and the CONNECT
// header block.
func TestClientWireFormat(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	srvCfg := serverTLSConfig(staticCert(pki.leaf(t, serverSPIFFE)), pki.bundle, pki.td)

	type seen struct {
		settings map[http2.SettingID]uint32
		connWU   uint32
		fields   map[string]string
		count    map[string]int
	}
	result := make(chan seen, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		tc := tlsServer(c, srvCfg)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(tc, preface); err != nil || string(preface) != http2.ClientPreface {
			t.Errorf("preface %q, %v", preface, err)
			return
		}
		fr := http2.NewFramer(tc, tc)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		_ = fr.WriteSettings()
		s := seen{settings: map[http2.SettingID]uint32{}, fields: map[string]string{}, count: map[string]int{}}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Errorf("read: %v", err)
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = f.ForeachSetting(func(st http2.Setting) error { s.settings[st.ID] = st.Val; return nil })
					_ = fr.WriteSettingsAck()
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					s.connWU += f.Increment
				}
			case *http2.MetaHeadersFrame:
				for _, hf := range f.Fields {
					s.fields[hf.Name] = hf.Value
					s.count[hf.Name]++
				}
				result <- s
				return
			}
		}
	}()

	pool := newTestPool(t, pki, nil)
	req := dialReq(pki, t, netipOf(ln.Addr()), nil)
	req.Authority = netip.MustParseAddrPort("[fd00::7]:9090")
	req.Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := testCtx(t)
	go func() {
		if st, err := pool.Dial(ctx, req); err == nil {
			_ = st.Close()
		}
	}()
	var s seen
	select {
	case s = <-result:
	case <-time.After(10 * time.Second):
		t.Fatal("no CONNECT seen")
	}

	if got := s.settings[http2.SettingInitialWindowSize]; got != StreamWindow {
		t.Errorf("client INITIAL_WINDOW_SIZE = %d, want %d", got, StreamWindow)
	}
	if got := s.settings[http2.SettingMaxFrameSize]; got != MaxFrameSize {
		t.Errorf("client MAX_FRAME_SIZE = %d, want %d", got, MaxFrameSize)
	}
	if got := s.connWU + 65535; got != ConnWindow+65535 && got != ConnWindow {
		t.Errorf("client connection window = %d, want about %d", got, ConnWindow)
	}
	want := map[string]string{
		":method":     "CONNECT",
		":authority":  "[fd00::7]:9090",
		"forwarded":   `for="10.0.0.1:40000"`,
		"baggage":     "k8s.namespace.name=a",
		"traceparent": req.Traceparent,
	}
	for k, v := range want {
		if s.fields[k] != v || s.count[k] != 1 {
			t.Errorf("%s = %q (x%d), want %q once", k, s.fields[k], s.count[k], v)
		}
	}
	for _, k := range []string{":scheme", ":path", ":protocol", "user-agent", "accept-encoding", "content-length"} {
		if _, ok := s.fields[k]; ok {
			t.Errorf("unexpected header %s: %q", k, s.fields[k])
		}
	}
}

// TestServerWireSettings checks the SETTINGS and connection window the
// server advertises.
func TestServerWireSettings(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	_, addr := startServer(t, pki, &echoHandler{}, nil)
	rc := dialRaw(t, pki, addr)
	_ = rc.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	settings := map[http2.SettingID]uint32{}
	var connWU uint32
	for connWU == 0 {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				connWU = f.Increment
			}
		}
	}
	want := map[http2.SettingID]uint32{
		http2.SettingMaxConcurrentStreams: 200,
		http2.SettingInitialWindowSize:    4 << 20,
		http2.SettingMaxFrameSize:         1 << 20,
		http2.SettingMaxHeaderListSize:    64 << 10,
	}
	for id, v := range want {
		if settings[id] != v {
			t.Errorf("%v = %d, want %d", id, settings[id], v)
		}
	}
	if connWU+65535 != 16<<20 {
		t.Errorf("connection window = %d, want %d", connWU+65535, 16<<20)
	}
}

// TestServerAppliesPeerHeaderTableSize checks that the client's
// SETTINGS_HEADER_TABLE_SIZE reaches the server's HPACK encoder: the next
// response header block starts with a dynamic table size update (RFC 7541
// section 6.3), and only that one. The read loop hands the value over
// without taking the write lock.
func TestServerAppliesPeerHeaderTableSize(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	_, addr := startServer(t, pki, &echoHandler{}, nil)
	rc := dialRaw(t, pki, addr)
	rc.fr.ReadMetaHeaders = nil // raw header blocks
	if err := rc.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	block := func(id uint32) []byte {
		rc.headers(t, id, ":method", "CONNECT", ":authority", "10.0.0.1:80")
		f := rc.await(t, func(f http2.Frame) bool {
			_, ok := f.(*http2.HeadersFrame)
			return ok && f.Header().StreamID == id
		})
		return bytes.Clone(f.(*http2.HeadersFrame).HeaderBlockFragment())
	}
	first, second := block(1), block(3)
	if len(first) == 0 || first[0] != 0x20 {
		t.Errorf("first response block % x: want a table size update to 0 (20) first", first)
	}
	if len(second) == 0 || second[0]&0xe0 == 0x20 {
		t.Errorf("second response block % x repeats the table size update", second)
	}
}

// TestResetStreamsDoNotOutrunHandlerLimit: a peer that opens and at once
// resets streams (HTTP/2 "rapid reset") frees their table slots, but not
// their handlers, which may take a while to wind down: beyond
// MaxConcurrentStreams running handlers new streams are refused, and they
// are served again once handlers return.
func TestResetStreamsDoNotOutrunHandlerLimit(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	release := make(chan struct{})
	var running, peak atomic.Int64
	_, addr := startServer(t, pki, HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		defer running.Add(-1)
		<-release // a slow handler that ignores the reset for now
		_ = rw.Reject(http.StatusServiceUnavailable)
	}), nil)
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the server's cleanup waits for handlers
	rc := dialRaw(t, pki, addr)
	const opened = MaxConcurrentStreams + 50
	for i := range opened {
		id := uint32(2*i + 1)
		rc.headers(t, id, ":method", "CONNECT", ":authority", "10.0.0.1:80")
		if err := rc.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
	}
	last := uint32(2*(opened-1) + 1)
	f := rc.await(t, func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == last
	}).(*http2.RSTStreamFrame)
	if f.ErrCode != http2.ErrCodeRefusedStream {
		t.Fatalf("stream %d past the limit: %v, want REFUSED_STREAM", last, f.ErrCode)
	}
	if p := peak.Load(); p > MaxConcurrentStreams {
		t.Fatalf("%d handlers ran at once, limit %d", p, MaxConcurrentStreams)
	}
	releaseAll()
	// Once the handlers are gone, streams are served again.
	next := last + 2
	for {
		rc.headers(t, next, ":method", "CONNECT", ":authority", "10.0.0.1:80")
		if got := rc.status(t, next); got == "503" {
			break
		} else if got != "RST:"+http2.ErrCodeRefusedStream.String() {
			t.Fatalf("stream %d after release: %s", next, got)
		}
		time.Sleep(10 * time.Millisecond)
		next += 2
	}
}
