package app

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/ztunnel/proxy"
)

// SocketMark is set on every socket ztunnel opens in a pod, so the pod's
// redirection rules let it through (Istio's 0x539).
const SocketMark = 0x539

// podSockets opens sockets in one pod's network namespace.
type podSockets struct {
	ns *os.File // owned by the pod entry; closed after the proxy stops
}

var _ proxy.Sockets = (*podSockets)(nil)

func (s *podSockets) Listen(port uint16) (net.Listener, error) {
	lc := &net.ListenConfig{Control: netns.Control(SocketMark, false)}
	return netns.Listen(context.Background(), s.ns, "tcp", fmt.Sprintf(":%d", port), lc)
}

// Dial connects from the pod. With a valid src the socket is transparent
// and bound to src, so the app sees the original client; the pod's
// redirection routes the replies back to this socket. Only the socket's
// creation runs inside the pod's namespace (see dialInNetns).
func (s *podSockets) Dial(ctx context.Context, addr netip.AddrPort, src netip.Addr) (net.Conn, error) {
	c, err := dialInNetns(ctx, s.ns, addr, src)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	return c, nil
}

func (s *podSockets) OriginalDst(c net.Conn) (netip.AddrPort, error) {
	return netns.OriginalDst(c)
}

// podAddrs lists the global unicast addresses configured in the netns.
func podAddrs(ns *os.File) ([]netip.Addr, error) {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(int(ns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("netlink in pod netns: %w", err)
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list pod addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Unmap().IsGlobalUnicast() {
			out = append(out, ip.Unmap())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pod netns has no global unicast address")
	}
	return out, nil
}
