package proxy

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestOutboundOverHBONE(t *testing.T) {
	h := newHarness(t)
	a := h.pod(t, "sleep", "127.0.0.2", "sleep")
	b := h.pod(t, "httpbin", "127.0.0.3", "httpbin")
	h.routes.set(hboneTo(b))

	c := connectOutbound(t, a, b.app)
	if err := roundTrip(c, "hello through the mesh"); err != nil {
		t.Fatal(err)
	}
	// Half-close from the client still gets the rest of the echo.
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after half-close: %q %v", rest, err)
	}

	seen := h.policy.conns()
	if len(seen) != 1 || seen[0].SrcIdentity != a.info.Identity || seen[0].Dst != b.app || seen[0].Src.Addr() != a.info.IPs[0] {
		t.Fatalf("destination saw %+v", seen)
	}
	waitCounter(t, h, `istio_tcp_connections_closed_total{connection_security_policy="mutual_tls",destination_principal="spiffe://cluster.local/ns/demo/sa/httpbin",destination_service="echo.demo.svc.cluster.local",destination_workload="httpbin",destination_workload_namespace="demo",reporter="source",request_protocol="tcp",response_flags="-",source_principal="spiffe://cluster.local/ns/demo/sa/sleep",source_workload="sleep",source_workload_namespace="demo"}`, 1)
	waitCounter(t, h, `istio_tcp_received_bytes_total{connection_security_policy="mutual_tls",destination_principal="spiffe://cluster.local/ns/demo/sa/httpbin",destination_service="unknown",destination_workload="httpbin",destination_workload_namespace="demo",reporter="destination",request_protocol="tcp",response_flags="-",source_principal="spiffe://cluster.local/ns/demo/sa/sleep",source_workload="client",source_workload_namespace="demo"}`, float64(len("hello through the mesh")+3))
}

func TestInboundRefusals(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness, b *testPod) Route
		flag  string // destination's response flag, "" when the destination never counts it
	}{
		{
			name: "denied by policy",
			setup: func(h *harness, b *testPod) Route {
				h.policy.setRule(func(Conn) bool { return false })
				return hboneTo(b)
			},
			flag: flagUnauthorized,
		},
		{
			name: "destination workload unknown",
			setup: func(h *harness, b *testPod) Route {
				h.policy.mu.Lock()
				h.policy.unknown = true
				h.policy.mu.Unlock()
				return hboneTo(b)
			},
			flag: flagNoRoute,
		},
		{
			name: "app not listening",
			setup: func(h *harness, b *testPod) Route {
				r := hboneTo(b)
				r.Authority = netip.AddrPortFrom(b.app.Addr(), 1) // nothing listens on port 1
				return r
			},
			flag: flagUpstreamFailure,
		},
		{
			name: "authority is not this pod",
			setup: func(h *harness, b *testPod) Route {
				r := hboneTo(b)
				r.Authority = netip.MustParseAddrPort("127.0.0.9:8080")
				return r
			},
		},
		{
			name: "server identity not the expected one",
			setup: func(h *harness, b *testPod) Route {
				r := hboneTo(b)
				r.ExpectedIDs = []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/other")}
				return r
			},
		},
		{
			name:  "no route",
			setup: func(h *harness, b *testPod) Route { return Route{Kind: RouteDeny, Reason: "test"} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.pod(t, "sleep", "127.0.0.2", "sleep")
			b := h.pod(t, "httpbin", "127.0.0.3", "httpbin")
			h.routes.set(tt.setup(h, b))
			c := connectOutbound(t, a, b.app)
			if err := roundTrip(c, "secret application bytes"); err == nil {
				t.Fatal("connection went through")
			}
			if tt.flag != "" {
				waitCounter(t, h, `istio_tcp_connections_closed_total{connection_security_policy="mutual_tls",destination_principal="spiffe://cluster.local/ns/demo/sa/httpbin",destination_service="unknown",destination_workload="httpbin",destination_workload_namespace="demo",reporter="destination",request_protocol="tcp",response_flags="`+tt.flag+`",source_principal="spiffe://cluster.local/ns/demo/sa/sleep",source_workload="client",source_workload_namespace="demo"}`, 1)
			}
			if tt.name == "server identity not the expected one" && len(h.policy.conns()) != 0 {
				t.Error("the destination evaluated a connection whose client refused its identity")
			}
		})
	}
}

func TestPlaintextInbound(t *testing.T) {
	h := newHarness(t)
	b := h.pod(t, "httpbin", "127.0.0.3", "httpbin")
	b.sockets.setOrigDst(b.app)
	dial := func() net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 7)}}
		c, err := d.Dial("tcp", b.sockets.port(InboundPlaintextPort).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	if err := roundTrip(dial(), "plain"); err != nil {
		t.Fatalf("permissive plaintext: %v", err)
	}
	seen := h.policy.conns()
	if len(seen) != 1 || !seen[0].SrcIdentity.IsZero() || seen[0].Src.Addr() != netip.MustParseAddr("127.0.0.7") {
		t.Fatalf("policy saw %+v", seen)
	}
	// STRICT-like rule: no identity, no entry.
	h.policy.setRule(func(c Conn) bool { return !c.SrcIdentity.IsZero() })
	if err := roundTrip(dial(), "plain"); err == nil {
		t.Fatal("plaintext admitted under a rule requiring identity")
	}
}

// TestPolicyChangeClosesLiveConnection: a connection allowed at setup is
// closed once policy denies it.
func TestPolicyChangeClosesLiveConnection(t *testing.T) {
	h := newHarness(t)
	a := h.pod(t, "sleep", "127.0.0.2", "sleep")
	b := h.pod(t, "httpbin", "127.0.0.3", "httpbin")
	h.routes.set(hboneTo(b))
	c := connectOutbound(t, a, b.app)
	if err := roundTrip(c, "before"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(idleDelay)
	h.policy.setRule(func(Conn) bool { return false })
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("connection not closed by the policy change: %v", err)
	}
	if d := time.Since(start); d > 700*time.Millisecond {
		t.Errorf("closing the denied connection took %v", d)
	}
	if err := roundTrip(c, "after"); err == nil {
		t.Fatal("connection still carries data after being denied")
	}
}

func TestPassthroughAndDirect(t *testing.T) {
	h := newHarness(t)
	a := h.pod(t, "sleep", "127.0.0.2", "sleep")
	outside := echoServer(t, "127.0.0.5")
	for _, kind := range []RouteKind{RoutePassthrough, RouteDirect} {
		h.routes.set(Route{Kind: kind, Authority: outside})
		if err := roundTrip(connectOutbound(t, a, outside), "outside "+kind.String()); err != nil {
			t.Fatalf("%v: %v", kind, err)
		}
	}
}

// idleDelay lets a connection's relays go idle: hbone keeps a direction
// that moved data waiting for more for up to about half a second, then
// rests it without a goroutine.
const idleDelay = 700 * time.Millisecond

// TestStopClosesConnections stops either end's pod while a connection is
// idle (its relays rest without goroutines): Stop must end the relays
// through their handles at once, not leave them to hbone's sweep.
func TestStopClosesConnections(t *testing.T) {
	for _, stopped := range []string{"destination", "source"} {
		t.Run(stopped, func(t *testing.T) {
			h := newHarness(t)
			a := h.pod(t, "sleep", "127.0.0.2", "sleep")
			b := h.pod(t, "httpbin", "127.0.0.3", "httpbin")
			h.routes.set(hboneTo(b))
			c := connectOutbound(t, a, b.app)
			if err := roundTrip(c, "x"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(idleDelay)
			pod := b
			if stopped == "source" {
				pod = a
			}
			done := make(chan struct{})
			start := time.Now()
			go func() { pod.proxy.Stop(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Stop did not return with a live connection")
			}
			if d := time.Since(start); d > 700*time.Millisecond {
				t.Errorf("Stop took %v with an idle connection", d)
			}
			if err := roundTrip(c, "y"); err == nil {
				t.Fatalf("connection survived the %s pod's removal", stopped)
			}
			if _, err := net.DialTimeout("tcp", pod.sockets.port(InboundHBONEPort).String(), time.Second); err == nil {
				t.Fatal("inbound listener still open")
			}
		})
	}
}

func waitCounter(t *testing.T, h *harness, series string, want float64) {
	t.Helper()
	name := series[:strings.Index(series, "{")]
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got float64
		mfs, _ := h.registry.Gather()
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if formatSeries(name, m.GetLabel()) == series {
					got = m.GetCounter().GetValue()
				}
			}
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v\nall: %s", series, got, want, dump(h))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dump(h *harness) string {
	var b strings.Builder
	mfs, _ := h.registry.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			b.WriteString("\n  " + formatSeries(mf.GetName(), m.GetLabel()))
		}
	}
	return b.String()
}

// TestHandshakeFailuresCounted: a client that is not HBONE (here, not even
// TLS) on a pod's 15008 is refused in the handshake and counted.
func TestHandshakeFailuresCounted(t *testing.T) {
	h := newHarness(t)
	b := h.pod(t, "httpbin", "127.0.0.3", "httpbin")
	c, err := net.Dial("tcp", b.sockets.port(InboundHBONEPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, h, "zmesh_hbone_handshake_failures_total{}", 1)
}
