package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ZtunnelMark is the SO_MARK ztunnel puts on its own sockets inside a pod's
// namespace (1337); the in-pod redirection rules leave such traffic alone.
const ZtunnelMark = 0x539

// soOriginalDst is SO_ORIGINAL_DST (SOL_IP) and IP6T_SO_ORIGINAL_DST
// (SOL_IPV6); both are 80.
const soOriginalDst = 80

// SetMark sets SO_MARK on the socket behind c.
func SetMark(c syscall.RawConn, mark uint32) error {
	return control(c, func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			return fmt.Errorf("netns: SO_MARK: %w", err)
		}
		return nil
	})
}

// SetTransparent sets IP_TRANSPARENT (and IPV6_TRANSPARENT on an IPv6
// socket) on the socket behind c, so it may bind a non-local address or
// accept connections addressed elsewhere. Needs CAP_NET_ADMIN.
func SetTransparent(c syscall.RawConn) error {
	return control(c, func(fd int) error {
		domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			return fmt.Errorf("netns: SO_DOMAIN: %w", err)
		}
		if domain == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1); err != nil {
				return fmt.Errorf("netns: IPV6_TRANSPARENT: %w", err)
			}
			// A dual-stack socket also needs the IPv4 flag for v4-mapped peers;
			// a v6-only socket may refuse it, which is harmless.
			_ = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			return nil
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1); err != nil {
			return fmt.Errorf("netns: IP_TRANSPARENT: %w", err)
		}
		return nil
	})
}

// Control returns a function for net.ListenConfig.Control or
// net.Dialer.Control that sets SO_MARK to mark (when non-zero) and
// IP_TRANSPARENT (when transparent) before bind.
func Control(mark uint32, transparent bool) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		if mark != 0 {
			if err := SetMark(c, mark); err != nil {
				return err
			}
		}
		if transparent {
			return SetTransparent(c)
		}
		return nil
	}
}

// OriginalDst returns the destination a connection was addressed to before
// an iptables/nftables REDIRECT or DNAT changed it (SO_ORIGINAL_DST), for
// IPv4 and IPv6 connections. c must be an accepted *net.TCPConn (or expose
// SyscallConn). The result carries no zone and IPv4 addresses are unmapped.
// It fails (ENOENT) when the namespace has no conntrack entry for the
// connection, which means it was not redirected.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("netns: original destination: %T has no raw connection", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var out netip.AddrPort
	err = control(rc, func(fd int) error {
		var err error
		out, err = originalDst(fd)
		return err
	})
	return out, err
}

func originalDst(fd int) (netip.AddrPort, error) {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netns: SO_DOMAIN: %w", err)
	}
	if domain == unix.AF_INET6 {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("netns: getsockname: %w", err)
		}
		// A v4-mapped connection on a dual-stack socket was tracked (and
		// redirected) by the IPv4 conntrack table.
		if s6, ok := sa.(*unix.SockaddrInet6); ok && netip.AddrFrom16(s6.Addr).Is4In6() {
			return originalDst4(fd)
		}
		return originalDst6(fd)
	}
	return originalDst4(fd)
}

func originalDst4(fd int) (netip.AddrPort, error) {
	var raw unix.RawSockaddrInet4
	if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&raw), unsafe.Sizeof(raw)); err != nil {
		return netip.AddrPort{}, fmt.Errorf("netns: SO_ORIGINAL_DST: %w", err)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(raw.Addr), netPort(&raw.Port)), nil
}

func originalDst6(fd int) (netip.AddrPort, error) {
	var raw unix.RawSockaddrInet6
	if err := getsockopt(fd, unix.SOL_IPV6, soOriginalDst, unsafe.Pointer(&raw), unsafe.Sizeof(raw)); err != nil {
		return netip.AddrPort{}, fmt.Errorf("netns: IP6T_SO_ORIGINAL_DST: %w", err)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(raw.Addr).Unmap(), netPort(&raw.Port)), nil
}

// netPort reads a port stored in network byte order.
func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// getsockopt reads a fixed-size option value into p; x/sys/unix has no
// helper for sockaddr-shaped values.
func getsockopt(fd, level, name int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	if uintptr(l) < size {
		return fmt.Errorf("short option value (%d of %d bytes): %w", l, size, unix.EINVAL)
	}
	return nil
}

func control(c syscall.RawConn, fn func(fd int) error) error {
	if c == nil {
		return errors.New("netns: nil raw connection")
	}
	var ferr error
	if err := c.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
