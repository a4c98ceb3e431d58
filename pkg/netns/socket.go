package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
)

// Listen opens a stream listener ("tcp", "tcp4", "tcp6") on address inside
// the namespace ns. lc may be nil; its Control hook (for example Control with
// SetMark or SetTransparent) runs inside ns before bind. The listener stays in
// ns for its whole life; the caller closes it. ns is not closed.
//
// address must be a literal IP (or empty host) and port: name resolution is
// refused so that no lookup runs on the switched thread.
func Listen(ctx context.Context, ns *os.File, network, address string, lc *net.ListenConfig) (net.Listener, error) {
	if err := literalAddress(address); err != nil {
		return nil, err
	}
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	var ln net.Listener
	err := Do(ns, func() error {
		var err error
		ln, err = lc.Listen(ctx, network, address)
		return err
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("netns: listen %s %s: %w", network, address, err)
	}
	return ln, nil
}

// ListenPacket opens a packet socket ("udp", "udp4", "udp6") on address
// inside ns, like Listen.
func ListenPacket(ctx context.Context, ns *os.File, network, address string, lc *net.ListenConfig) (net.PacketConn, error) {
	if err := literalAddress(address); err != nil {
		return nil, err
	}
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	var pc net.PacketConn
	err := Do(ns, func() error {
		var err error
		pc, err = lc.ListenPacket(ctx, network, address)
		return err
	})
	if err != nil {
		if pc != nil {
			_ = pc.Close()
		}
		return nil, fmt.Errorf("netns: listen %s %s: %w", network, address, err)
	}
	return pc, nil
}

// Dial connects to address (a literal IP and port) from a socket created
// inside ns. d may be nil; set d.LocalAddr and d.Control to bind a source
// address or set socket options (SO_MARK, IP_TRANSPARENT) before connect.
// The caller closes the connection. ns is not closed.
func Dial(ctx context.Context, ns *os.File, network, address string, d *net.Dialer) (net.Conn, error) {
	if err := literalAddress(address); err != nil {
		return nil, err
	}
	if d == nil {
		d = &net.Dialer{}
	}
	var c net.Conn
	err := Do(ns, func() error {
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("netns: dial %s %s: %w", network, address, err)
	}
	return c, nil
}

func literalAddress(address string) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("netns: address %q: %w", address, err)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("netns: address %q must be a literal IP: %w", address, err)
	}
	return nil
}
