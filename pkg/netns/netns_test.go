package netns_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/netns/netnstest"
)

func hostNS(t *testing.T) *os.File {
	t.Helper()
	f, err := netns.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestDoEntersAndRestores(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "do")
	host := hostNS(t)

	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := netns.Do(pod.File, func() error {
				cur, err := os.Open("/proc/thread-self/ns/net")
				if err != nil {
					return err
				}
				defer cur.Close()
				same, err := netns.Same(cur, pod.File)
				if err != nil {
					return err
				}
				if !same {
					return errors.New("fn did not run in the target namespace")
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	// Every thread of the process must be back in the host namespace.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		f, err := os.Open("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // thread exited
		}
		same, err := netns.Same(f, host)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !same {
			t.Errorf("thread %s left in another namespace", task.Name())
		}
	}
}

func TestDoPropagatesErrorAndPanic(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "dop")
	want := errors.New("boom")
	if err := netns.DoPath(pod.Path, func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	defer func() {
		if p := recover(); p != "panic value" {
			t.Fatalf("recovered %v", p)
		}
	}()
	_ = netns.Do(pod.File, func() error { panic("panic value") })
}

func TestVerifyRejectsOtherFiles(t *testing.T) {
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := netns.Verify(f); !errors.Is(err, netns.ErrNotNetns) {
		t.Fatalf("Verify(/dev/null) = %v", err)
	}
	if err := netns.Do(f, func() error { t.Error("ran"); return nil }); err == nil {
		t.Fatal("Do with /dev/null succeeded")
	}
	uts, err := os.Open("/proc/self/ns/uts")
	if err != nil {
		t.Fatal(err)
	}
	defer uts.Close()
	if err := netns.Verify(uts); !errors.Is(err, netns.ErrNotNetns) {
		t.Fatalf("Verify(uts ns) = %v", err)
	}
	if _, err := netns.Open("/proc/self/ns/uts"); !errors.Is(err, netns.ErrNotNetns) {
		t.Fatalf("Open(uts ns) = %v", err)
	}
}

func TestListenAndDialStayInNamespace(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "sock")
	node := netnstest.New(t, "sockn")
	netnstest.Veth(t, pod, "eth0", netip.MustParsePrefix("10.244.7.2/24"),
		node, "vpod", netip.MustParsePrefix("10.244.7.1/24"))
	ctx := context.Background()

	// 10.244.7.2 exists only in the pod namespace: binding it proves where
	// the socket was created.
	ln, err := netns.Listen(ctx, pod.File, "tcp4", "10.244.7.2:8080", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()

	mark := uint32(netns.ZtunnelMark)
	c, err := netns.Dial(ctx, node.File, "tcp4", "10.244.7.2:8080", &net.Dialer{
		Timeout: 5 * time.Second,
		Control: netns.Control(mark, false),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.(*net.TCPConn).SyscallConn()
	var got int
	_ = rc.Control(func(fd uintptr) { got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if got != netns.ZtunnelMark {
		t.Errorf("SO_MARK = %#x", got)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q %v", buf, err)
	}

	pc, err := netns.ListenPacket(ctx, pod.File, "udp4", "10.244.7.2:5300", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = pc.Close()

	// The host namespace does not have the address.
	if l, err := net.Listen("tcp4", "10.244.7.2:8080"); err == nil {
		l.Close()
		t.Fatal("address unexpectedly bindable in the host namespace")
	}
	if _, err := netns.Listen(ctx, pod.File, "tcp", "example.com:80", nil); err == nil || !strings.Contains(err.Error(), "literal IP") {
		t.Fatalf("hostname accepted: %v", err)
	}
}

func TestOriginalDst(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "odst")
	node := netnstest.New(t, "odstn")
	netnstest.Veth(t, pod, "eth0", netip.MustParsePrefix("10.244.8.2/24"),
		node, "vpod", netip.MustParsePrefix("10.244.8.1/24"))
	netnstest.Run(t, "ip", "-n", pod.Name, "addr", "add", "fd00:10:244:8::2/64", "dev", "eth0", "nodad")
	netnstest.Run(t, "ip", "-n", node.Name, "addr", "add", "fd00:10:244:8::1/64", "dev", "vpod", "nodad")
	pod.Exec(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9000", "-j", "REDIRECT", "--to-ports", "15001")
	pod.Exec(t, "ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9000", "-j", "REDIRECT", "--to-ports", "15001")
	ctx := context.Background()

	for _, tc := range []struct{ network, listen, dial string }{
		{"tcp4", "0.0.0.0:15001", "10.244.8.1:9000"},
		{"tcp6", "[::]:15001", "[fd00:10:244:8::1]:9000"},
		{"tcp", "[::]:15001", "10.244.8.1:9000"}, // dual-stack socket, v4-mapped peer
	} {
		t.Run(tc.network, func(t *testing.T) {
			ln, err := netns.Listen(ctx, pod.File, tc.network, tc.listen, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := netns.Dial(ctx, pod.File, "tcp", tc.dial, &net.Dialer{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ac, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer ac.Close()
			got, err := netns.OriginalDst(ac)
			if err != nil {
				t.Fatal(err)
			}
			if want := netip.MustParseAddrPort(tc.dial); got != want {
				t.Fatalf("original dst %v, want %v", got, want)
			}
		})
	}

	// A connection that was not redirected has no original destination.
	ln, err := netns.Listen(ctx, pod.File, "tcp4", "10.244.8.2:7000", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := netns.Dial(ctx, node.File, "tcp4", "10.244.8.2:7000", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if got, err := netns.OriginalDst(ac); err == nil && got != netip.MustParseAddrPort("10.244.8.2:7000") {
		t.Fatalf("unredirected conn: %v", got)
	}
}

func TestDupAndSame(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "dup")
	d, err := netns.Dup(pod.File)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if same, err := netns.Same(d, pod.File); err != nil || !same {
		t.Fatalf("Same = %v %v", same, err)
	}
	if same, _ := netns.Same(d, hostNS(t)); same {
		t.Fatal("pod namespace equals host namespace")
	}
}
