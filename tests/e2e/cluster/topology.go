package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// bridgeName is the fabric bridge's name (inside the fabric namespace).
const bridgeName = "br0"

// setupFabric creates the bridge in the fabric namespace and turns off
// bridge netfilter there, so frames crossing the bridge never traverse
// iptables (with it on, TPROXY silently drops bridged traffic).
func setupFabric(fabric Netns) error {
	h, err := fabric.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("fabric: add bridge: %w", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("fabric: bridge up: %w", err)
	}
	for _, k := range []string{
		"net.bridge.bridge-nf-call-iptables",
		"net.bridge.bridge-nf-call-ip6tables",
		"net.bridge.bridge-nf-call-arptables",
	} {
		if err := fabric.setSysctlIfPresent(k, "0"); err != nil {
			return fmt.Errorf("fabric: %w", err)
		}
	}
	return nil
}

// attachToFabric connects ns to the fabric bridge with a veth pair: port
// (in the fabric, enslaved to the bridge) and eth0 in ns with ip/24.
func attachToFabric(fabric, ns Netns, port string, ip netip.Addr) error {
	fh, err := fabric.handle()
	if err != nil {
		return err
	}
	defer fh.Close()
	nsFD, err := ns.fd()
	if err != nil {
		return err
	}
	defer closeFD(nsFD)
	br, err := fh.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("fabric bridge: %w", err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(nsFD),
	}
	if err := fh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", port, err)
	}
	if err := fh.LinkSetUp(veth); err != nil {
		return fmt.Errorf("veth %s up: %w", port, err)
	}
	h, err := ns.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("eth0 in %s: %w", ns, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(NodeNetwork.Bits(), 32)}}
	if err := h.AddrAdd(eth0, addr); err != nil {
		return fmt.Errorf("address %s on eth0 in %s: %w", ip, ns, err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("eth0 up in %s: %w", ns, err)
	}
	return nil
}

// setupNodeSysctls turns on forwarding, turns off reverse-path filtering
// (the mesh forwards with spoofed sources) and bridge netfilter in a node.
func setupNodeSysctls(ns Netns) error {
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
	} {
		if err := ns.SetSysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	for _, k := range []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"} {
		if err := ns.setSysctlIfPresent(k, "0"); err != nil {
			return err
		}
	}
	return nil
}

// podRoute is a route to cidr via a gateway on the node network.
type podRoute struct {
	cidr netip.Prefix
	via  netip.Addr
}

// addRoutes installs routes in ns.
func addRoutes(ns Netns, routes []podRoute) error {
	if len(routes) == 0 {
		return nil
	}
	h, err := ns.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	for _, r := range routes {
		rt := &netlink.Route{Dst: prefixNet(r.cidr), Gw: r.via.AsSlice()}
		if err := h.RouteAdd(rt); err != nil {
			return fmt.Errorf("route %s via %s in %s: %w", r.cidr, r.via, ns, err)
		}
	}
	return nil
}

// wirePod connects a pod namespace to its node: hostVeth in the node with
// the gateway address and a /32 route to the pod, eth0 in the pod with the
// pod's /32, an on-link route to the gateway and a default route via it.
func wirePod(node *Node, pod Netns, hostVeth string, ip netip.Addr) error {
	nh, err := node.Netns.handle()
	if err != nil {
		return err
	}
	defer nh.Close()
	podFD, err := pod.fd()
	if err != nil {
		return err
	}
	defer closeFD(podFD)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostVeth},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(podFD),
	}
	if err := nh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", hostVeth, err)
	}
	host, err := nh.LinkByName(hostVeth)
	if err != nil {
		return fmt.Errorf("veth %s: %w", hostVeth, err)
	}
	gw := &netlink.Addr{IPNet: hostNet(node.Gateway)}
	if err := nh.AddrAdd(host, gw); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("gateway address on %s: %w", hostVeth, err)
	}
	if err := nh.LinkSetUp(host); err != nil {
		return fmt.Errorf("veth %s up: %w", hostVeth, err)
	}
	toPod := &netlink.Route{
		Dst:       hostNet(ip),
		LinkIndex: host.Attrs().Index,
		Scope:     netlink.SCOPE_LINK,
		Src:       node.Gateway.AsSlice(),
	}
	if err := nh.RouteAdd(toPod); err != nil {
		return fmt.Errorf("route to pod %s: %w", ip, err)
	}

	ph, err := pod.handle()
	if err != nil {
		return err
	}
	defer ph.Close()
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("pod eth0: %w", err)
	}
	if err := ph.AddrAdd(eth0, &netlink.Addr{IPNet: hostNet(ip)}); err != nil {
		return fmt.Errorf("pod address %s: %w", ip, err)
	}
	if err := ph.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("pod eth0 up: %w", err)
	}
	onLink := &netlink.Route{Dst: hostNet(node.Gateway), LinkIndex: eth0.Attrs().Index, Scope: netlink.SCOPE_LINK}
	if err := ph.RouteAdd(onLink); err != nil {
		return fmt.Errorf("pod route to gateway: %w", err)
	}
	def := &netlink.Route{Gw: node.Gateway.AsSlice(), LinkIndex: eth0.Attrs().Index, Src: ip.AsSlice()}
	if err := ph.RouteAdd(def); err != nil {
		return fmt.Errorf("pod default route: %w", err)
	}
	return nil
}

// deleteLink removes a link from ns; a missing link is not an error.
func deleteLink(ns Netns, name string) error {
	h, err := ns.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("link %s in %s: %w", name, ns, err)
	}
	// The kernel may remove it meanwhile (a dying peer namespace takes
	// its veth pair along).
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s in %s: %w", name, ns, err)
	}
	return nil
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
