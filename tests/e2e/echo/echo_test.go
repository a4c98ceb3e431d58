package echo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const testIdentity = "spiffe://cluster.local/ns/demo/sa/sleep"

// handBuiltHeader builds a PROXY v2 header byte by byte (not with the
// library under test): PROXY command, TCP over IPv4, src → dst, then the
// given TLVs.
func handBuiltHeader(src, dst netip.AddrPort, tlvs map[byte]string) []byte {
	var tlvBytes []byte
	for _, typ := range []byte{0xD0, 0xD1} {
		v, ok := tlvs[typ]
		if !ok {
			continue
		}
		tlvBytes = append(tlvBytes, typ, byte(len(v)>>8), byte(len(v)))
		tlvBytes = append(tlvBytes, v...)
	}
	b := []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}
	b = append(b, 0x21) // version 2, command PROXY
	b = append(b, 0x11) // AF_INET, STREAM
	b = binary.BigEndian.AppendUint16(b, uint16(12+len(tlvBytes)))
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	b = append(b, s4[:]...)
	b = append(b, d4[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return append(b, tlvBytes...)
}

func startServer(t *testing.T, lcs ...ListenerConfig) (*Server, []string) {
	t.Helper()
	srv, err := NewServer(Config{Pod: "echo-0", Namespace: "demo", Listeners: lcs, ListenIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	var addrs []string
	for _, a := range srv.Addrs() {
		addrs = append(addrs, a.String())
	}
	return srv, addrs
}

// rawHTTP sends prefix followed by a GET over a fresh connection and
// returns the parsed response.
func rawHTTP(t *testing.T, addr string, prefix []byte, extra string) (status int, body []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET /hello HTTP/1.1\r\nHost: echo.demo.svc.cluster.local\r\nConnection: close\r\n" + extra + "\r\n"
	if _, err := c.Write(append(append([]byte(nil), prefix...), req...)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestProxyV2IdentityHTTP(t *testing.T) {
	_, addrs := startServer(t, ListenerConfig{Protocol: HTTP, ProxyProtocol: true})
	src := netip.MustParseAddrPort("10.244.1.7:41000")
	dst := netip.MustParseAddrPort("10.244.2.9:8080")
	hdr := handBuiltHeader(src, dst, map[byte]string{0xD0: testIdentity, 0xD1: "echo.demo.svc.cluster.local"})

	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			extra := ""
			if format == "json" {
				extra = "Accept: application/json\r\n"
			}
			status, body := rawHTTP(t, addrs[0], hdr, extra)
			if status != 200 {
				t.Fatalf("status %d", status)
			}
			if format == "json" && !bytes.HasPrefix(body, []byte("{")) {
				t.Fatalf("want JSON, got %q", body)
			}
			if format == "text" && !bytes.Contains(body, []byte("identity="+testIdentity+"\n")) {
				t.Fatalf("text body lacks identity line: %q", body)
			}
			rep, err := ParseReport(body)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Identity != testIdentity {
				t.Errorf("identity = %q, want %q", rep.Identity, testIdentity)
			}
			if rep.Peer != src.String() {
				t.Errorf("peer = %q, want the PROXY source %s", rep.Peer, src)
			}
			if !strings.HasPrefix(rep.SocketPeer, "127.0.0.1:") {
				t.Errorf("socket peer = %q, want loopback", rep.SocketPeer)
			}
			if !rep.ProxyProtocol || rep.ProxyDestination != dst.String() {
				t.Errorf("proxy = %v dst %q, want true %s", rep.ProxyProtocol, rep.ProxyDestination, dst)
			}
			if rep.Service != "echo.demo.svc.cluster.local" {
				t.Errorf("service = %q", rep.Service)
			}
			if rep.Pod != "echo-0" || rep.Namespace != "demo" || rep.Host != "echo.demo.svc.cluster.local" || rep.Path != "/hello" {
				t.Errorf("report = %+v", rep)
			}
		})
	}
}

func TestProxyV2WithoutIdentityTLV(t *testing.T) {
	_, addrs := startServer(t, ListenerConfig{Protocol: HTTP, ProxyProtocol: true})
	src := netip.MustParseAddrPort("10.244.1.7:41000")
	hdr := handBuiltHeader(src, netip.MustParseAddrPort("10.244.2.9:8080"), nil)
	_, body := rawHTTP(t, addrs[0], hdr, "")
	rep, err := ParseReport(body)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Identity != "" || rep.Peer != src.String() || !rep.ProxyProtocol {
		t.Errorf("report = %+v, want no identity, peer %s", rep, src)
	}
}

func TestProxyPortRejectsMissingHeader(t *testing.T) {
	_, addrs := startServer(t, ListenerConfig{Protocol: HTTP, ProxyProtocol: true})
	c, err := net.DialTimeout("tcp", addrs[0], 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	if bytes.Contains(b, []byte("pod=")) {
		t.Fatalf("served a request without a PROXY header: %q", b)
	}
}

func TestPlainHTTPHasNoIdentity(t *testing.T) {
	_, addrs := startServer(t, ListenerConfig{Protocol: HTTP})
	resp, err := Get(context.Background(), http.DefaultClient, "http://"+addrs[0]+"/status/418?format=json", http.Header{"Host": {"svc.example"}, "X-Test": {"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 418 || resp.Report == nil {
		t.Fatalf("status %d report %v body %q", resp.Status, resp.Report, resp.Body)
	}
	rep := resp.Report
	if rep.Identity != "" || rep.ProxyProtocol {
		t.Errorf("identity %q proxy %v, want none", rep.Identity, rep.ProxyProtocol)
	}
	if !strings.HasPrefix(rep.Peer, "127.0.0.1:") || rep.Peer != rep.SocketPeer {
		t.Errorf("peer %q socket peer %q", rep.Peer, rep.SocketPeer)
	}
	if rep.Host != "svc.example" || rep.Headers["X-Test"] != "a" {
		t.Errorf("host %q headers %v", rep.Host, rep.Headers)
	}
}

func TestTCPEcho(t *testing.T) {
	_, addrs := startServer(t, ListenerConfig{Protocol: TCP}, ListenerConfig{Protocol: TCP, ProxyProtocol: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	payload := bytes.Repeat([]byte("0123456789"), 10000)
	got, err := TCPRoundTrip(ctx, nil, addrs[0], payload)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("plain: got %d bytes, err %v", len(got), err)
	}
	// With PROXY: the header is consumed, only the data comes back.
	hdr := handBuiltHeader(netip.MustParseAddrPort("10.244.1.7:41000"), netip.MustParseAddrPort("10.244.2.9:9000"), map[byte]string{0xD0: testIdentity})
	got, err = TCPRoundTrip(ctx, nil, addrs[1], append(hdr, "ping"...))
	if err != nil || string(got) != "ping" {
		t.Fatalf("proxied: got %q, err %v", got, err)
	}
}

func TestEncodeProxyHeaderMatchesHandBuilt(t *testing.T) {
	src := netip.MustParseAddrPort("10.244.1.7:41000")
	dst := netip.MustParseAddrPort("10.244.2.9:8080")
	got, err := EncodeProxyHeader(src, dst, testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	want := handBuiltHeader(src, dst, map[byte]string{0xD0: testIdentity})
	if !bytes.Equal(got, want) {
		t.Fatalf("header\n got % x\nwant % x", got, want)
	}
}

func TestReportTextRoundTrip(t *testing.T) {
	in := &Report{Pod: "p", Namespace: "n", Port: 8080, Method: "GET", Path: "/x", Host: "h:1", Peer: "1.2.3.4:5",
		SocketPeer: "1.2.3.4:5", Local: "5.6.7.8:8080", ProxyProtocol: true, ProxyDestination: "5.6.7.8:8080",
		Identity: testIdentity, Service: "s", Headers: map[string]string{"A": "b=c"}}
	for name, b := range map[string][]byte{"text": in.Text(), "json": in.JSON()} {
		out, err := ParseReport(append([]byte("status=200\n"), b...))
		if name == "json" {
			out, err = ParseReport(b)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out.Identity != in.Identity || out.Peer != in.Peer || out.Port != in.Port || out.Headers["A"] != "b=c" || !out.ProxyProtocol {
			t.Errorf("%s: round trip %+v", name, out)
		}
	}
	if _, err := ParseReport([]byte("upstream connect error")); err == nil {
		t.Error("parsed a non-report")
	}
}

func TestCLIClient(t *testing.T) {
	_, addrs := startServer(t, ListenerConfig{Protocol: HTTP}, ListenerConfig{Protocol: TCP})
	ctx := context.Background()
	var out, errb bytes.Buffer
	if code := Main(ctx, []string{"client", "--url", "http://" + addrs[0] + "/", "--header", "Host: foo", "--count", "2"}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if n := strings.Count(out.String(), "status=200\n"); n != 2 || !strings.Contains(out.String(), "host=foo\n") {
		t.Fatalf("output %q", out.String())
	}
	out.Reset()
	if code := Main(ctx, []string{"client", "--tcp", addrs[1], "--send", "hello"}, &out, &errb); code != ExitOK || out.String() != "hello" {
		t.Fatalf("tcp exit %d output %q: %s", code, out.String(), errb.String())
	}
	if code := Main(ctx, []string{"client"}, &out, &errb); code != ExitUsage {
		t.Fatalf("no target: exit %d", code)
	}
	if code := Main(ctx, []string{"serve", "--http", "8080", "--tcp", "", "--proxy-protocol", "9"}, &out, &errb); code != ExitUsage {
		t.Fatalf("proxy port not served: exit %d", code)
	}
}
