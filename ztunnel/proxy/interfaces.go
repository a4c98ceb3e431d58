package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Ports of the in-pod listeners (Istio's).
const (
	OutboundPort         = 15001
	InboundPlaintextPort = 15006
	InboundHBONEPort     = 15008
)

// PodInfo is an enrolled pod as the proxy sees it. It is fixed for the
// PodProxy's life: a pod whose identity or addresses change is re-added.
type PodInfo struct {
	// UID is the workload uid (e.g. "Kubernetes//Pod/<ns>/<name>").
	UID       string
	Name      string
	Namespace string
	// Identity is the pod's SPIFFE ID: its certificate's and its source
	// identity on outbound tunnels.
	Identity spiffeid.ID
	// IPs are the pod's addresses; inbound tunnels must target one of them.
	IPs []netip.Addr
	// Peer labels the pod in metrics.
	Peer Peer
	// Baggage is sent with the pod's outbound tunnels (W3C baggage:
	// k8s.cluster.name, k8s.namespace.name, k8s.<kind>.name, service.name,
	// service.version); empty sends none.
	Baggage string
}

// Peer labels one side of a connection in metrics. Empty fields are
// reported as "unknown".
type Peer struct {
	Workload, Namespace, Principal string
}

// RouteKind says how an outbound connection is carried.
type RouteKind int

const (
	// RouteDeny refuses the connection (closed without dialling).
	RouteDeny RouteKind = iota
	// RouteHBONE tunnels to NextHop:15008 with CONNECT Authority.
	RouteHBONE
	// RouteDirect dials Authority in plaintext: a mesh destination that does
	// not speak HBONE.
	RouteDirect
	// RoutePassthrough dials the original destination unchanged: it is
	// outside the mesh.
	RoutePassthrough
)

func (k RouteKind) String() string {
	switch k {
	case RouteHBONE:
		return "hbone"
	case RouteDirect:
		return "direct"
	case RoutePassthrough:
		return "passthrough"
	}
	return "deny"
}

// Route is the decision for one outbound connection.
type Route struct {
	Kind RouteKind
	// Authority is the final destination ip:port (the CONNECT target, or the
	// address dialled for Direct and Passthrough).
	Authority netip.AddrPort
	// NextHop is the HBONE peer (endpoint or waypoint) ip:15008.
	NextHop netip.AddrPort
	// ExpectedIDs are the identities NextHop may present.
	ExpectedIDs []spiffeid.ID
	// Destination and Service label metrics ("" service when addressed directly).
	Destination Peer
	Service     string
	// Reason explains a RouteDeny.
	Reason string
}

// Resolver routes outbound connections and names inbound peers.
type Resolver interface {
	// Outbound decides where src's connection to dst goes.
	Outbound(src *PodInfo, dst netip.AddrPort) Route
	// PeerByIP labels an inbound connection's source for metrics.
	PeerByIP(ip netip.Addr) Peer
}

// Conn is an inbound connection as L4 policy sees it.
type Conn struct {
	// SrcIdentity is the peer's SPIFFE ID; zero for plaintext.
	SrcIdentity spiffeid.ID
	Src, Dst    netip.AddrPort
}

// Verdict is an authorization decision.
type Verdict struct {
	Allow bool
	// UnknownDestination marks a refusal because the destination workload
	// is not known (answered 503, not 401).
	UnknownDestination bool
	// Policy is the deciding policy ("" when none), Reason a short text.
	Policy, Reason string
}

// Authorizer applies L4 policy to inbound connections.
type Authorizer interface {
	// Authorize decides whether c may reach pod.
	Authorize(pod *PodInfo, c Conn) Verdict
	// Track registers a live allowed connection so that a policy change
	// that now denies it can close it (by calling closeFn, possibly from
	// another goroutine). The returned func deregisters it.
	Track(pod *PodInfo, c Conn, closeFn func()) (untrack func())
}

// Sockets opens sockets inside one pod's network namespace.
type Sockets interface {
	// Listen opens a TCP listener on port (all of the pod's addresses).
	Listen(port uint16) (net.Listener, error)
	// Dial connects from the pod to addr with ztunnel's socket mark, so the
	// connection is not captured again. A valid src makes the connection
	// appear to come from src (the original client, for inbound traffic to
	// the app); otherwise the pod's own address is used.
	Dial(ctx context.Context, addr netip.AddrPort, src netip.Addr) (net.Conn, error)
	// OriginalDst returns the destination a redirected connection was
	// addressed to before capture.
	OriginalDst(c net.Conn) (netip.AddrPort, error)
}

// CertificateSource returns the current certificate for an identity; it
// fails (and connections fail closed) while none is valid.
type CertificateSource func(id spiffeid.ID) (*tls.Certificate, error)
