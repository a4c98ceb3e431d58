package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// genericTLS returns a client tls.Config a generic HTTP/2 client would use
// against an HBONE server: standard chain verification against the root, a
// client certificate, ALPN h2.
func genericTLS(t testing.TB, pki *testPKI, maxVersion uint16) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(pki.cert)
	cert := pki.leaf(t, clientSPIFFE)
	return &tls.Config{
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{"h2"},
		MaxVersion:   maxVersion,
		// SPIFFE certificates have no DNS names; verify the chain only.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}
}

// TestInteropGenericClients drives the server with golang.org/x/net/http2's
// Transport and with net/http's own HTTP/2 client, as arbitrary clients
// would: CONNECT echo over TLS 1.3 and 1.2,
// and 400s for a non-CONNECT and for a host-name authority.
func TestInteropGenericClients(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	h := &echoHandler{}
	_, addr := startServer(t, pki, h, nil)

	type roundTripper interface {
		RoundTrip(*http.Request) (*http.Response, error)
		CloseIdleConnections()
	}
	xnet := func(v uint16) roundTripper {
		return &http2.Transport{TLSClientConfig: genericTLS(t, pki, v)} //nolint:staticcheck // the x/net client is what this test exercises
	}
	std := func(v uint16) roundTripper {
		tr := &http.Transport{TLSClientConfig: genericTLS(t, pki, v), Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true)
		return tr
	}
	for _, c := range []struct {
		name string
		v    uint16
		tr   func(uint16) roundTripper
	}{{"x/net tls1.3", tls.VersionTLS13, xnet}, {"x/net tls1.2", tls.VersionTLS12, xnet}, {"net/http tls1.3", tls.VersionTLS13, std}} {
		v := c.v
		tr := c.tr(v)
		defer tr.CloseIdleConnections()
		t.Logf("client %s", c.name)
		do := func(method, authority string, body io.Reader) (*http.Response, error) {
			req, err := http.NewRequestWithContext(testCtx(t), method, "https://"+addr.String()+"/", body)
			if err != nil {
				return nil, err
			}
			if method == http.MethodConnect {
				req.URL = &url.URL{Scheme: "https", Host: addr.String()}
			}
			req.Host = authority
			return tr.RoundTrip(req)
		}

		pr, pw := io.Pipe()
		resp, err := do(http.MethodConnect, "10.1.2.3:80", pr)
		if err != nil {
			t.Fatalf("tls %x: CONNECT: %v", v, err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("tls %x: CONNECT status %d", v, resp.StatusCode)
		}
		go func() {
			_, _ = pw.Write([]byte("ping over generic client"))
			_ = pw.Close()
		}()
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != "ping over generic client" {
			t.Fatalf("tls %x: echo = %q, %v", v, got, err)
		}
		resp.Body.Close()

		before := h.calls.Load()
		resp, err = do(http.MethodGet, "10.1.2.3:80", nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("tls %x: GET = %v, %v; want 400", v, resp, err)
		}
		resp.Body.Close()
		resp, err = do(http.MethodConnect, "backend.example:80", strings.NewReader(""))
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("tls %x: CONNECT host name = %v, %v; want 400", v, resp, err)
		}
		resp.Body.Close()
		if h.calls.Load() != before {
			t.Errorf("tls %x: handler called for invalid requests", v)
		}
	}
}

// rawConn is a hand-driven HTTP/2 client for requests a well-behaved client
// library refuses to send.
type rawConn struct {
	tc   *tls.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func dialRaw(t testing.TB, pki *testPKI, addr netip.AddrPort) *rawConn {
	t.Helper()
	tc, err := tls.Dial("tcp", addr.String(), genericTLS(t, pki, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{tc: tc, fr: http2.NewFramer(tc, tc)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.henc = hpack.NewEncoder(&rc.hbuf)
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawConn) headers(t testing.TB, id uint32, fields ...string) {
	t.Helper()
	rc.hbuf.Reset()
	for i := 0; i < len(fields); i += 2 {
		_ = rc.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.hbuf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// status waits for the response HEADERS on stream id, answering pings
// unless ignorePing.
func (rc *rawConn) status(t testing.TB, id uint32) string {
	t.Helper()
	switch f := rc.await(t, func(f http2.Frame) bool {
		_, hdr := f.(*http2.MetaHeadersFrame)
		_, rst := f.(*http2.RSTStreamFrame)
		return f.Header().StreamID == id && (hdr || rst)
	}).(type) {
	case *http2.MetaHeadersFrame:
		return f.PseudoValue("status")
	case *http2.RSTStreamFrame:
		return "RST:" + f.ErrCode.String()
	}
	return ""
}

// await reads frames, acknowledging the server's SETTINGS, until pick
// accepts one, and returns it (valid until the next read).
func (rc *rawConn) await(t testing.TB, pick func(http2.Frame) bool) http2.Frame {
	t.Helper()
	_ = rc.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = rc.fr.WriteSettingsAck()
		}
		if pick(f) {
			return f
		}
	}
}

func TestMalformedConnectRequests(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	h := &echoHandler{}
	_, addr := startServer(t, pki, h, nil)
	rc := dialRaw(t, pki, addr)

	cases := []struct {
		name   string
		fields []string
	}{
		{"connect with path", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":path", "/"}},
		{"connect with scheme", []string{":method", "CONNECT", ":authority", "10.0.0.1:80", ":scheme", "https"}},
		{"extended connect", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", "10.0.0.1:80"}},
		{"post", []string{":method", "POST", ":scheme", "https", ":path", "/", ":authority", "10.0.0.1:80"}},
		{"no port", []string{":method", "CONNECT", ":authority", "10.0.0.1"}},
		{"unbracketed v6", []string{":method", "CONNECT", ":authority", "fd00::1:80"}},
		{"empty authority", []string{":method", "CONNECT"}},
	}
	id := uint32(1)
	for _, tc := range cases {
		rc.headers(t, id, tc.fields...)
		if got := rc.status(t, id); got != "400" {
			t.Errorf("%s: got %s, want 400", tc.name, got)
		}
		id += 2
	}
	// A valid v6 authority is accepted.
	rc.headers(t, id, ":method", "CONNECT", ":authority", "[fd00::1]:80")
	if got := rc.status(t, id); got != "200" {
		t.Errorf("v6 authority: got %s, want 200", got)
	}
	if n := h.calls.Load(); n != 1 {
		t.Errorf("handler calls = %d, want 1 (only the valid request)", n)
	}
}

// TestServerKeepaliveDropsSilentClient uses a client that never answers
// PINGs; the server must close the connection and reset its streams.
func TestServerKeepaliveDropsSilentClient(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	streamErr := make(chan error, 1)
	h := HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
		st, err := rw.Accept()
		if err != nil {
			return
		}
		defer func() { _ = st.Close() }()
		_, err = io.Copy(io.Discard, st)
		streamErr <- err
	})
	_, addr := startServer(t, pki, h, func(c *ServerConfig) {
		c.KeepaliveInterval = 50 * time.Millisecond
		c.KeepaliveTimeout = 150 * time.Millisecond
	})
	rc := dialRaw(t, pki, addr)
	rc.headers(t, 1, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	if got := rc.status(t, 1); got != "200" {
		t.Fatalf("status %s", got)
	}
	// Stop reading entirely: PINGs go unanswered.
	select {
	case err := <-streamErr:
		if !errors.Is(err, ErrStreamReset) {
			t.Errorf("stream ended with %v, want ErrStreamReset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not drop the silent client")
	}
	_ = rc.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var err error
	for err == nil {
		_, err = rc.fr.ReadFrame()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Error("server connection still open")
	}
}
