package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zmesh/zmesh/pkg/netns"
)

// dialKeepAlive is the TCP keep-alive period of dialled connections,
// net.Dialer's default.
const dialKeepAlive = 15 * time.Second

// dialInNetns connects to addr from the network namespace ns, with
// SocketMark set and, when src is valid, bound transparently to src.
//
// A socket belongs to the namespace it was created in, so only creating
// and binding it needs a thread inside ns; the connect then completes in
// Go's netpoller like any other. (Dialling entirely inside netns.Do would
// park a locked OS thread for each connect in flight, and a burst of
// inbound connections would make the runtime start a thread for each.)
func dialInNetns(ctx context.Context, ns *os.File, addr netip.AddrPort, src netip.Addr) (net.Conn, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !addr.IsValid() {
		return nil, fmt.Errorf("dial %s: invalid address", addr)
	}
	src = src.Unmap()
	if src.IsValid() && src.Is4() != addr.Addr().Is4() {
		return nil, fmt.Errorf("dial %s from %s: address families differ", addr, src)
	}
	fd := -1
	err := netns.Do(ns, func() error {
		var err error
		fd, err = podSocket(addr, src)
		return err
	})
	if err != nil {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c, err := connectSocket(ctx, fd, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}

// podSocket creates a non-blocking TCP socket for addr's family, marked and
// (with a valid src) transparent and bound to src. It runs inside the pod's
// namespace.
func podSocket(addr netip.AddrPort, src netip.Addr) (int, error) {
	family := unix.AF_INET6
	if addr.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, SocketMark); err != nil {
		return fd, os.NewSyscallError("setsockopt SO_MARK", err)
	}
	if !src.IsValid() {
		return fd, nil
	}
	if family == unix.AF_INET6 {
		err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	}
	if err != nil {
		return fd, os.NewSyscallError("setsockopt transparent", err)
	}
	if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(src, 0))); err != nil {
		return fd, os.NewSyscallError("bind", err)
	}
	return fd, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// connectSocket connects fd (non-blocking, owned by the call) to addr,
// waiting in the netpoller until it completes, ctx ends or ctx's deadline
// passes, and returns it as a *net.TCPConn with net.Dialer's defaults
// (no delay, keep-alive).
func connectSocket(ctx context.Context, fd int, addr netip.AddrPort) (net.Conn, error) {
	err := unix.Connect(fd, sockaddr(addr))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		_ = unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	f := os.NewFile(uintptr(fd), "tcp") // non-blocking: joins the netpoller
	defer func() { _ = f.Close() }()
	if err != nil {
		if err := waitConnected(ctx, f); err != nil {
			return nil, err
		}
	}
	c, err := net.FileConn(f) // a duplicate; f's descriptor is closed above
	if err != nil {
		return nil, fmt.Errorf("connected socket: %w", err)
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("connected socket is a %T", c)
	}
	_ = tc.SetNoDelay(true)
	_ = tc.SetKeepAlive(true)
	_ = tc.SetKeepAlivePeriod(dialKeepAlive)
	return tc, nil
}

// waitConnected waits for the connect in progress on f to finish, as the
// net package does: writability, then SO_ERROR, then a peer address.
func waitConnected(ctx context.Context, f *os.File) error {
	// When ctx ends (its deadline included), a past deadline wakes the wait.
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		soerr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			cerr = os.NewSyscallError("getsockopt SO_ERROR", err)
			return true
		}
		switch e := unix.Errno(soerr); e {
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		case unix.EISCONN:
			return true
		case 0:
			if _, err := unix.Getpeername(int(fd)); err == nil {
				return true
			}
			return false // spurious wake-up: still connecting
		default:
			cerr = os.NewSyscallError("connect", e)
			return true
		}
	})
	if werr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("connect: %w", context.Cause(ctx))
		}
		return fmt.Errorf("connect: %w", werr)
	}
	return cerr
}
