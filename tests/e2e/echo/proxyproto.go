package echo

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// PROXY protocol v2 TLV types ztunnel writes (custom types, outside the
// ranges the PROXY protocol spec assigns).
const (
	// TLVPeerIdentity carries the peer's identity as a SPIFFE URI string.
	TLVPeerIdentity proxyproto.PP2Type = 0xD0
	// TLVServiceHostname carries the destination service's hostname.
	TLVServiceHostname proxyproto.PP2Type = 0xD1
)

// proxyHeaderTimeout bounds how long a connection on a PROXY listener may
// take to send its header.
const proxyHeaderTimeout = 5 * time.Second

// HeaderInfo is what a PROXY v2 header says about a connection.
type HeaderInfo struct {
	Source, Destination netip.AddrPort
	Identity            string
	Service             string
}

// ParseHeaderInfo extracts addresses and ztunnel's TLVs from a header.
func ParseHeaderInfo(h *proxyproto.Header) (HeaderInfo, error) {
	var info HeaderInfo
	if h == nil {
		return info, nil
	}
	if src, dst, ok := h.TCPAddrs(); ok {
		info.Source = src.AddrPort()
		info.Destination = dst.AddrPort()
		info.Source = netip.AddrPortFrom(info.Source.Addr().Unmap(), info.Source.Port())
		info.Destination = netip.AddrPortFrom(info.Destination.Addr().Unmap(), info.Destination.Port())
	}
	tlvs, err := h.TLVs()
	if err != nil {
		return info, fmt.Errorf("echo: PROXY header TLVs: %w", err)
	}
	for _, t := range tlvs {
		switch t.Type {
		case TLVPeerIdentity:
			info.Identity = string(t.Value)
		case TLVServiceHostname:
			info.Service = string(t.Value)
		}
	}
	return info, nil
}

// EncodeProxyHeader returns a PROXY v2 header (command PROXY, TCP) from src
// to dst with the identity TLV when identity is not empty: what ztunnel
// sends to an app with application_tunnel PROXY.
func EncodeProxyHeader(src, dst netip.AddrPort, identity string) ([]byte, error) {
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	if identity != "" {
		if err := h.SetTLVs([]proxyproto.TLV{{Type: TLVPeerIdentity, Value: []byte(identity)}}); err != nil {
			return nil, fmt.Errorf("echo: PROXY header: %w", err)
		}
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("echo: PROXY header: %w", err)
	}
	return b, nil
}

// requireProxyHeader wraps l so every accepted connection must begin with
// a PROXY header (v1 or v2); connections without one fail on first read.
func requireProxyHeader(l net.Listener) net.Listener {
	return &proxyproto.Listener{
		Listener: l,
		ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			return proxyproto.REQUIRE, nil
		},
		ReadHeaderTimeout: proxyHeaderTimeout,
	}
}

// connInfo describes an accepted connection for a report.
type connInfo struct {
	peer, socketPeer, local string
	proxied                 bool
	header                  HeaderInfo
}

// describeConn reads what is known about c. For a PROXY connection this
// waits for the header (it has normally arrived with the first read).
func describeConn(c net.Conn) (connInfo, error) {
	pc, ok := c.(*proxyproto.Conn)
	if !ok {
		return connInfo{peer: c.RemoteAddr().String(), socketPeer: c.RemoteAddr().String(), local: c.LocalAddr().String()}, nil
	}
	raw := pc.Raw()
	info := connInfo{socketPeer: raw.RemoteAddr().String(), local: raw.LocalAddr().String()}
	h := pc.ProxyHeader()
	info.peer = pc.RemoteAddr().String()
	if h == nil {
		return info, nil
	}
	info.proxied = true
	hi, err := ParseHeaderInfo(h)
	info.header = hi
	return info, err
}
