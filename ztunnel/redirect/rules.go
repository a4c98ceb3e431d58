package redirect

import (
	"fmt"
	"net/netip"
	"strconv"
)

// rule is one iptables rule in one of our chains.
type rule struct {
	table string
	chain string
	spec  []string
}

// hook is a jump from a built-in chain to one of ours.
type hook struct {
	table   string
	builtin string
	target  string
}

// ruleSet is everything Install puts into one address family's tables.
type ruleSet struct {
	hooks []hook
	rules []rule
}

func hex(v int) string { return fmt.Sprintf("%#x", v) }

// buildRules returns the in-pod rules for one family. probe is the probe SNAT
// address and loopback the family's loopback host prefix.
func buildRules(dns bool, probe netip.Addr, loopback netip.Prefix) ruleSet {
	mark := hex(ZtunnelMark) + "/" + hex(ZtunnelMask)
	connMark := hex(ConnMark) + "/" + hex(ConnMarkMask)
	probeHost := netip.PrefixFrom(probe, probe.BitLen()).String()
	lo := loopback.String()
	port := strconv.Itoa

	rs := ruleSet{
		hooks: []hook{
			{"mangle", "PREROUTING", ChainPrerouting},
			{"mangle", "OUTPUT", ChainOutput},
			{"nat", "PREROUTING", ChainPrerouting},
			{"nat", "OUTPUT", ChainOutput},
		},
	}
	add := func(table, chain string, spec ...string) {
		rs.rules = append(rs.rules, rule{table: table, chain: chain, spec: spec})
	}

	// mangle: remember connections ztunnel opened inside the pod (its inbound
	// proxy dialing the application, possibly from a spoofed source) and
	// put the mark back on the application's replies so policy routing
	// returns them to ztunnel.
	add("mangle", ChainPrerouting, "-m", "mark", "--mark", mark,
		"-j", "CONNMARK", "--set-xmark", connMark)
	add("mangle", ChainOutput, "-m", "connmark", "--mark", connMark,
		"-j", "CONNMARK", "--restore-mark", "--nfmask", "0xffffffff", "--ctmask", "0xffffffff")

	// nat PREROUTING: inbound capture.
	add("nat", ChainPrerouting, "-s", probeHost, "-p", "tcp", "-j", "RETURN")
	add("nat", ChainPrerouting, "!", "-d", lo, "-p", "tcp", "!", "--dport", port(InboundHBONEPort),
		"-m", "mark", "!", "--mark", mark,
		"-j", "REDIRECT", "--to-ports", port(InboundPlaintextPort))

	// nat OUTPUT: outbound capture.
	add("nat", ChainOutput, "-d", probeHost, "-p", "tcp", "-j", "RETURN")
	if dns {
		add("nat", ChainOutput, "!", "-o", "lo", "-p", "udp", "--dport", "53",
			"-m", "mark", "!", "--mark", mark,
			"-j", "REDIRECT", "--to-ports", port(DNSPort))
		add("nat", ChainOutput, "!", "-d", lo, "-p", "tcp", "--dport", "53",
			"-m", "mark", "!", "--mark", mark,
			"-j", "REDIRECT", "--to-ports", port(DNSPort))
	}
	// The pod talking to itself (any address routed through lo) is not
	// captured.
	add("nat", ChainOutput, "-o", "lo", "-j", "RETURN")
	add("nat", ChainOutput, "!", "-d", lo, "-p", "tcp",
		"-m", "mark", "!", "--mark", mark,
		"-j", "REDIRECT", "--to-ports", port(OutboundPort))
	return rs
}
