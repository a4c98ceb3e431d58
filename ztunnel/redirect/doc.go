// Package redirect installs, checks and removes the in-pod traffic
// redirection that sends an enrolled pod's TCP traffic to ztunnel's sockets
// inside the pod's own network namespace (see compat.md, "In-pod redirection
// and ZDS"):
//
//   - outbound TCP without ztunnel's mark (0x539/0xfff) → REDIRECT to 15001,
//     except traffic that leaves through loopback (the pod talking to itself);
//   - inbound TCP to any port but 15008 → REDIRECT to 15006, except loopback
//     destinations and traffic already carrying ztunnel's mark;
//   - kubelet probes, which the node SNATs to 169.254.7.127, bypass capture
//     both ways;
//   - optionally (Config.DNSCapture) UDP and TCP DNS to port 53 → 15053.
//
// Source-IP preservation: ztunnel's inbound proxy may dial the application
// from inside the pod with IP_TRANSPARENT, spoofing the original client's
// address, and with mark 0x539. A mangle rule turns that mark into connmark
// 0x111 and restores it on the application's replies; an ip rule
// (fwmark 0x111/0xfff, priority 32764, table 100) and a route
// "local default dev lo table 100" then deliver those replies to ztunnel's
// socket instead of routing them out of the pod. The rule and route are
// installed together with the iptables rules.
//
// Implementation: iptables through github.com/coreos/go-iptables, which runs
// the iptables(8) binary (the nft backend on current distributions). It is
// the only packet-filter library in go.mod (there is no Go nftables library),
// it matches the rule shape operators know from Istio, and iptables-nft
// coexists with kube-proxy's and CNI plugins' iptables rules. The binary is
// executed from a thread that has joined the pod's namespace, so the rules
// land there. Policy routing uses github.com/vishvananda/netlink.
//
// Everything lives in our own chains (ZMESH_PRERT, ZMESH_OUTPUT in the nat
// and mangle tables) reached by one jump each from PREROUTING and OUTPUT, so
// Remove deletes exactly what Install added. Install is idempotent: when
// Check already passes it changes nothing; otherwise it flushes and refills
// our chains (a non-atomic step: a connection opened during the few
// milliseconds of the refill may escape capture) and leaves exactly one jump
// per hook.
package redirect
