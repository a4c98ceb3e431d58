package app

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/netns/netnstest"
)

func sockInt(t *testing.T, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v
}

// TestDialInNetns checks the pod dialer: the socket is created in the
// given namespace (an address only reachable from there connects), marked,
// and usable; refusals and timeouts come back as errors; a transparent
// socket is bound to the requested source.
func TestDialInNetns(t *testing.T) {
	netnstest.RequireRoot(t)
	pod := netnstest.New(t, "dial")
	node := netnstest.New(t, "dialn")
	netnstest.Veth(t, pod, "eth0", netip.MustParsePrefix("10.244.9.2/24"),
		node, "vpod", netip.MustParsePrefix("10.244.9.1/24"))
	ln, err := netns.Listen(context.Background(), pod.File, "tcp4", "10.244.9.2:8080", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	server := netip.MustParseAddrPort("10.244.9.2:8080")

	for _, tc := range []struct {
		name    string
		from    *netnstest.NS
		addr    netip.AddrPort
		timeout time.Duration
		wantErr error
	}{
		{"inside the pod", pod, server, 5 * time.Second, nil},
		{"from the node over the veth", node, server, 5 * time.Second, nil},
		{"refused", pod, netip.MustParseAddrPort("10.244.9.2:8081"), 5 * time.Second, syscall.ECONNREFUSED},
		// No neighbour answers for .99: the connect hangs until ctx ends.
		{"timeout", node, netip.MustParseAddrPort("10.244.9.99:80"), 200 * time.Millisecond, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			c, err := dialInNetns(ctx, tc.from.File, tc.addr, netip.Addr{})
			if tc.wantErr != nil {
				if c != nil {
					_ = c.Close()
				}
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if time.Since(start) > tc.timeout+time.Second {
					t.Errorf("took %v with a %v timeout", time.Since(start), tc.timeout)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			tcp, ok := c.(*net.TCPConn)
			if !ok {
				t.Fatalf("got %T, want *net.TCPConn", c)
			}
			if got := sockInt(t, tcp, unix.SOL_SOCKET, unix.SO_MARK); got != SocketMark {
				t.Errorf("SO_MARK = %#x, want %#x", got, SocketMark)
			}
			if got := sockInt(t, tcp, unix.IPPROTO_TCP, unix.TCP_NODELAY); got == 0 {
				t.Error("TCP_NODELAY not set")
			}
			if got := sockInt(t, tcp, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got == 0 {
				t.Error("SO_KEEPALIVE not set")
			}
			if got := netip.MustParseAddrPort(c.RemoteAddr().String()); got != tc.addr {
				t.Errorf("remote address %s, want %s", got, tc.addr)
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo %q, %v", buf, err)
			}
		})
	}

	t.Run("transparent source", func(t *testing.T) {
		// 10.244.9.77 is nobody's: only IP_TRANSPARENT lets it be bound.
		src := netip.MustParseAddr("10.244.9.77")
		fd := -1
		err := netns.Do(pod.File, func() error {
			var err error
			fd, err = podSocket(server, src)
			return err
		})
		if fd >= 0 {
			defer func() { _ = unix.Close(fd) }()
		}
		if err != nil {
			t.Fatal(err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		in4, ok := sa.(*unix.SockaddrInet4)
		if !ok || netip.AddrFrom4(in4.Addr) != src {
			t.Errorf("bound to %+v, want %s", sa, src)
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT); err != nil || v == 0 {
			t.Errorf("IP_TRANSPARENT = %d, %v", v, err)
		}
	})

	t.Run("no locked thread per connect", func(t *testing.T) {
		// Many connects in flight at once must not each hold an OS
		// thread: count the threads while 50 connects wait on their
		// timeout.
		before := threads(t)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		for range 50 {
			go func() {
				defer func() { done <- struct{}{} }()
				if c, err := dialInNetns(ctx, node.File, netip.MustParseAddrPort("10.244.9.98:80"), netip.Addr{}); err == nil {
					_ = c.Close()
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		during := threads(t)
		for range 50 {
			<-done
		}
		if during-before > 10 {
			t.Errorf("threads went from %d to %d with 50 connects in flight", before, during)
		}
	})
}

// threads counts the process's OS threads.
func threads(t *testing.T) int {
	t.Helper()
	n, _ := runtime.ThreadCreateProfile(nil)
	return n
}
