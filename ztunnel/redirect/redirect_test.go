package redirect_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/netns/netnstest"
	"github.com/zmesh/zmesh/ztunnel/redirect"
)

// Addresses used only inside the namespaces the tests create.
const (
	podIP    = "10.244.1.2"
	podGW    = "10.244.1.1"
	nodeIP   = "172.30.0.10"
	probeIP  = "169.254.7.127"
	podIP6   = "fd00:10:244:1::2"
	nodeIP6  = "fd00:10:244:1::1"
	deadline = 5 * time.Second
)

type topo struct {
	pod, node *netnstest.NS
}

// newTopo builds a pod namespace with a veth to a node namespace. The node
// owns 172.30.0.10 and the probe SNAT address on its loopback; the pod routes
// everything through the node.
func newTopo(t *testing.T, ipv6 bool) *topo {
	t.Helper()
	netnstest.RequireRoot(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("skipping: iptables not installed")
	}
	tp := &topo{pod: netnstest.New(t, "pod"), node: netnstest.New(t, "node")}
	netnstest.Veth(t, tp.pod, "eth0", netip.MustParsePrefix(podIP+"/24"),
		tp.node, "vpod", netip.MustParsePrefix(podGW+"/24"))
	tp.pod.Exec(t, "ip", "route", "add", "default", "via", podGW)
	tp.node.Exec(t, "ip", "addr", "add", nodeIP+"/32", "dev", "lo")
	tp.node.Exec(t, "ip", "addr", "add", probeIP+"/32", "dev", "lo")
	if ipv6 {
		tp.pod.Exec(t, "ip", "addr", "add", podIP6+"/64", "dev", "eth0", "nodad")
		tp.node.Exec(t, "ip", "addr", "add", nodeIP6+"/64", "dev", "vpod", "nodad")
	}
	return tp
}

// listen opens a TCP listener in ns that hands accepted connections to the
// returned channel, each with its original destination.
type accepted struct {
	conn net.Conn
	orig netip.AddrPort
	err  error
}

func listen(t *testing.T, ns *netnstest.NS, network, addr string) <-chan accepted {
	t.Helper()
	ln, err := netns.Listen(context.Background(), ns.File, network, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan accepted, 4)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			orig, err := netns.OriginalDst(c)
			ch <- accepted{conn: c, orig: orig, err: err}
		}
	}()
	return ch
}

func dial(t *testing.T, ns *netnstest.NS, addr string, d *net.Dialer) net.Conn {
	t.Helper()
	if d == nil {
		d = &net.Dialer{}
	}
	d.Timeout = deadline
	c, err := netns.Dial(context.Background(), ns.File, "tcp", addr, d)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expect waits for a connection on want and asserts none arrived on the
// others.
func expect(t *testing.T, what string, want <-chan accepted, origDst string, others ...<-chan accepted) net.Conn {
	t.Helper()
	select {
	case a := <-want:
		// The node namespace has no conntrack entries, so no original
		// destination there: pass "" and check the local address instead.
		if origDst == "" {
			return a.conn
		}
		if a.err != nil {
			t.Fatalf("%s: original destination: %v", what, a.err)
		}
		if a.orig != netip.MustParseAddrPort(origDst) {
			t.Fatalf("%s: original destination %v, want %s", what, a.orig, origDst)
		}
		for _, o := range others {
			select {
			case a := <-o:
				t.Fatalf("%s: unexpected connection with original destination %v", what, a.orig)
			default:
			}
		}
		return a.conn
	case <-time.After(deadline):
		t.Fatalf("%s: no connection", what)
	}
	return nil
}

// ruleset is the namespace's iptables rules and chains, without counters and
// comments, plus its ip rules and table-100 routes.
func ruleset(t *testing.T, ns *netnstest.NS, ipv6 bool) string {
	t.Helper()
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	var b strings.Builder
	saves := []string{"iptables-save"}
	if ipv6 {
		saves = append(saves, "ip6tables-save")
	}
	for _, save := range saves {
		for _, l := range strings.Split(ns.Exec(t, save), "\n") {
			if strings.HasPrefix(l, "-") || (strings.HasPrefix(l, ":") && !strings.Contains(l, "ACCEPT")) {
				b.WriteString(counters.ReplaceAllString(l, "") + "\n")
			}
		}
	}
	b.WriteString(ns.Exec(t, "ip", "rule", "list"))
	b.WriteString(table100(ns.Exec(t, "ip", "route", "show", "table", "all")))
	if ipv6 {
		b.WriteString(ns.Exec(t, "ip", "-6", "rule", "list"))
		b.WriteString(table100(ns.Exec(t, "ip", "-6", "route", "show", "table", "all")))
	}
	return b.String()
}

func table100(routes string) string {
	var b strings.Builder
	for _, l := range strings.Split(routes, "\n") {
		if strings.Contains(l, "table 100") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestRedirectIPv4(t *testing.T) {
	tp := newTopo(t, false)
	r, err := redirect.New(redirect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	before := ruleset(t, tp.pod, false)
	if err := r.Check(tp.pod.File); !errors.Is(err, redirect.ErrNotInstalled) {
		t.Fatalf("Check before install = %v", err)
	}
	if err := r.Install(tp.pod.File); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove(tp.pod.File) })
	if err := r.Check(tp.pod.File); err != nil {
		t.Fatalf("Check after install: %v", err)
	}

	outbound := listen(t, tp.pod, "tcp4", "0.0.0.0:15001")
	inbound := listen(t, tp.pod, "tcp4", "0.0.0.0:15006")
	hbone := listen(t, tp.pod, "tcp4", "0.0.0.0:15008")
	app := listen(t, tp.pod, "tcp4", "0.0.0.0:8080")
	nodeSrv := listen(t, tp.node, "tcp4", nodeIP+":80")

	t.Run("outbound to 15001", func(t *testing.T) {
		dial(t, tp.pod, nodeIP+":80", nil)
		expect(t, "outbound", outbound, nodeIP+":80", nodeSrv)
	})
	t.Run("inbound to 15006", func(t *testing.T) {
		dial(t, tp.node, podIP+":8080", nil)
		expect(t, "inbound", inbound, podIP+":8080", app)
	})
	t.Run("15008 not redirected", func(t *testing.T) {
		dial(t, tp.node, podIP+":15008", nil)
		expect(t, "hbone", hbone, podIP+":15008", inbound)
	})
	t.Run("marked socket not redirected", func(t *testing.T) {
		dial(t, tp.pod, nodeIP+":80", &net.Dialer{Control: netns.Control(netns.ZtunnelMark, false)})
		expect(t, "marked", nodeSrv, "", outbound)
	})
	t.Run("probe source bypasses capture", func(t *testing.T) {
		c := dial(t, tp.node, podIP+":8080", &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(probeIP)}})
		ac := expect(t, "probe", app, podIP+":8080", inbound)
		if got := ac.RemoteAddr().(*net.TCPAddr).IP.String(); got != probeIP {
			t.Fatalf("app sees %s", got)
		}
		roundTrip(t, c, ac)
	})
	t.Run("loopback and own address not captured", func(t *testing.T) {
		dial(t, tp.pod, "127.0.0.1:8080", nil)
		expect(t, "loopback", app, "127.0.0.1:8080", outbound, inbound)
		dial(t, tp.pod, podIP+":8080", nil)
		expect(t, "self", app, podIP+":8080", outbound, inbound)
	})
	t.Run("source IP preserved on transparent dial", func(t *testing.T) {
		// ztunnel's inbound proxy: from inside the pod, spoof the client's
		// address, marked so it is neither recaptured nor lost; the app's
		// replies must come back to this socket, not go to the node.
		c := dial(t, tp.pod, podIP+":8080", &net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(nodeIP)},
			Control:   netns.Control(netns.ZtunnelMark, true),
		})
		ac := expect(t, "transparent", app, podIP+":8080", inbound, outbound)
		if got := ac.RemoteAddr().(*net.TCPAddr).IP.String(); got != nodeIP {
			t.Fatalf("app sees client %s, want %s", got, nodeIP)
		}
		roundTrip(t, c, ac)

		// Without the policy route the replies leave the pod and the
		// handshake never completes; Install repairs the missing rule.
		tp.pod.Exec(t, "ip", "rule", "del", "fwmark", "0x111/0xfff", "table", "100")
		if err := r.Check(tp.pod.File); !errors.Is(err, redirect.ErrNotInstalled) {
			t.Fatalf("Check without ip rule = %v", err)
		}
		_, err := netns.Dial(context.Background(), tp.pod.File, "tcp", podIP+":8080", &net.Dialer{
			Timeout:   time.Second,
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(nodeIP)},
			Control:   netns.Control(netns.ZtunnelMark, true),
		})
		if err == nil {
			t.Fatal("transparent dial worked without the policy route")
		}
		if err := r.Install(tp.pod.File); err != nil {
			t.Fatal(err)
		}
		if err := r.Check(tp.pod.File); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("install twice is a no-op", func(t *testing.T) {
		once := ruleset(t, tp.pod, false)
		if err := r.Install(tp.pod.File); err != nil {
			t.Fatal(err)
		}
		if twice := ruleset(t, tp.pod, false); twice != once {
			t.Fatalf("rules changed:\n%s\n---\n%s", once, twice)
		}
		// Drift: a rule lost, a jump duplicated. Check notices, Install repairs.
		tp.pod.Exec(t, "iptables", "-t", "nat", "-D", "ZMESH_OUTPUT", "-o", "lo", "-j", "RETURN")
		tp.pod.Exec(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-j", "ZMESH_OUTPUT")
		if err := r.Check(tp.pod.File); !errors.Is(err, redirect.ErrNotInstalled) {
			t.Fatalf("Check after drift = %v", err)
		}
		if err := r.Install(tp.pod.File); err != nil {
			t.Fatal(err)
		}
		if again := ruleset(t, tp.pod, false); again != once {
			t.Fatalf("repair differs:\n%s\n---\n%s", once, again)
		}
	})

	t.Run("remove leaves no trace", func(t *testing.T) {
		// A rule that is not ours must survive.
		tp.pod.Exec(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "RETURN")
		if err := r.Remove(tp.pod.File); err != nil {
			t.Fatal(err)
		}
		tp.pod.Exec(t, "iptables", "-t", "nat", "-D", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "RETURN")
		if after := ruleset(t, tp.pod, false); after != before {
			t.Fatalf("after remove:\n%s\nbefore install:\n%s", after, before)
		}
		if err := r.Check(tp.pod.File); !errors.Is(err, redirect.ErrNotInstalled) {
			t.Fatalf("Check after remove = %v", err)
		}
		if err := r.Remove(tp.pod.File); err != nil {
			t.Fatalf("second Remove: %v", err)
		}
		dial(t, tp.pod, nodeIP+":80", nil)
		expect(t, "after remove", nodeSrv, "", outbound)
	})
}

func roundTrip(t *testing.T, c, ac net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(deadline))
	_ = ac.SetDeadline(time.Now().Add(deadline))
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(ac, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Write([]byte("yo")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "yo" {
		t.Fatalf("reply %q: %v", buf, err)
	}
}

func TestRedirectDNS(t *testing.T) {
	tp := newTopo(t, false)
	r, err := redirect.New(redirect.Config{DNSCapture: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Install(tp.pod.File); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove(tp.pod.File) })

	plain, _ := redirect.New(redirect.Config{})
	if err := plain.Check(tp.pod.File); !errors.Is(err, redirect.ErrNotInstalled) {
		t.Fatalf("Check with a different config = %v", err)
	}

	ctx := context.Background()
	pc, err := netns.ListenPacket(ctx, tp.pod.File, "udp4", "0.0.0.0:15053", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	c, err := netns.Dial(ctx, tp.pod.File, "udp4", nodeIP+":53", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(deadline))
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "query" {
		t.Fatalf("DNS proxy got %q: %v", buf[:n], err)
	}

	tcpDNS := listen(t, tp.pod, "tcp4", "0.0.0.0:15053")
	dial(t, tp.pod, nodeIP+":53", nil)
	expect(t, "tcp dns", tcpDNS, nodeIP+":53")
}

func TestRedirectIPv6(t *testing.T) {
	tp := newTopo(t, true)
	if _, err := exec.LookPath("ip6tables"); err != nil {
		t.Skip("skipping: ip6tables not installed")
	}
	r, err := redirect.New(redirect.Config{IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	before := ruleset(t, tp.pod, true)
	if err := r.Install(tp.pod.File); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove(tp.pod.File) })
	if err := r.Check(tp.pod.File); err != nil {
		t.Fatal(err)
	}
	outbound := listen(t, tp.pod, "tcp6", "[::]:15001")
	inbound := listen(t, tp.pod, "tcp6", "[::]:15006")
	dial(t, tp.pod, "["+nodeIP6+"]:80", nil)
	expect(t, "outbound v6", outbound, "["+nodeIP6+"]:80")
	dial(t, tp.node, "["+podIP6+"]:8080", nil)
	expect(t, "inbound v6", inbound, "["+podIP6+"]:8080")

	if err := r.Remove(tp.pod.File); err != nil {
		t.Fatal(err)
	}
	if after := ruleset(t, tp.pod, true); after != before {
		t.Fatalf("after remove:\n%s\nbefore:\n%s", after, before)
	}
}
