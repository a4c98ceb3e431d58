package redirect

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

// Ports and marks of the in-pod redirection; they must match ztunnel.
const (
	// OutboundPort is ztunnel's outbound capture socket in the pod.
	OutboundPort = 15001
	// InboundPlaintextPort is ztunnel's inbound plaintext capture socket.
	InboundPlaintextPort = 15006
	// InboundHBONEPort is ztunnel's HBONE socket; traffic to it is not redirected.
	InboundHBONEPort = 15008
	// DNSPort is ztunnel's DNS proxy (UDP and TCP).
	DNSPort = 15053

	// ZtunnelMark is the SO_MARK on ztunnel's own sockets; ZtunnelMask is the
	// part of the mark that is compared.
	ZtunnelMark = 0x539
	ZtunnelMask = 0xfff
	// ConnMark is the connmark given to connections ztunnel opened (inbound
	// proxy → application), restored on replies to steer them back to
	// ztunnel's transparent socket; ConnMarkMask as above.
	ConnMark     = 0x111
	ConnMarkMask = 0xfff
	// RouteTable and RulePriority are the policy-routing table and ip rule
	// priority for the replies marked ConnMark.
	RouteTable   = 100
	RulePriority = 32764

	// ChainPrerouting and ChainOutput are our chains in the nat and mangle tables.
	ChainPrerouting = "ZMESH_PRERT"
	ChainOutput     = "ZMESH_OUTPUT"
)

// Default addresses kubelet probes are SNATed to on the node.
var (
	DefaultProbeSNATv4 = netip.MustParseAddr("169.254.7.127")
	DefaultProbeSNATv6 = netip.MustParseAddr("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
)

// ErrNotInstalled is wrapped by Check when the rules are missing or differ
// from what Install would create.
var ErrNotInstalled = errors.New("in-pod redirection not installed")

// Config selects what the redirection captures.
type Config struct {
	// DNSCapture also redirects DNS (UDP and TCP port 53) to DNSPort.
	DNSCapture bool
	// IPv6 installs the same rules with ip6tables, plus the IPv6 policy route.
	IPv6 bool
	// ProbeSNATv4 and ProbeSNATv6 are the addresses kubelet probes arrive
	// from; zero values mean DefaultProbeSNATv4 and DefaultProbeSNATv6.
	ProbeSNATv4 netip.Addr
	ProbeSNATv6 netip.Addr
	// IPTablesPath and IP6TablesPath name the binaries; empty means
	// "iptables" and "ip6tables" from PATH.
	IPTablesPath  string
	IP6TablesPath string
	// Logger receives install and removal events; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if !c.ProbeSNATv4.IsValid() {
		c.ProbeSNATv4 = DefaultProbeSNATv4
	}
	if !c.ProbeSNATv6.IsValid() {
		c.ProbeSNATv6 = DefaultProbeSNATv6
	}
	if !c.ProbeSNATv4.Is4() {
		return fmt.Errorf("redirect: ProbeSNATv4 %v is not an IPv4 address", c.ProbeSNATv4)
	}
	if !c.ProbeSNATv6.Is6() || c.ProbeSNATv6.Is4In6() {
		return fmt.Errorf("redirect: ProbeSNATv6 %v is not an IPv6 address", c.ProbeSNATv6)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
