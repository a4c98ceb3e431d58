// Package proxy is the waypoint's L7 request path: for each HTTP request
// arriving on a terminated HBONE tunnel it matches a route, runs the HTTP
// filters (JWT authentication, RBAC, fault injection), then redirects,
// answers directly, or forwards to a backend cluster with load balancing,
// circuit breaking, outlier detection, timeouts, retries and mirroring,
// and records metrics, an access log line and trace context. It also
// proxies L4 (TCP) tunnels.
package proxy

import (
	"context"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/waypoint/config"
)

// Downstream is what is known about the tunnel a request arrived on.
type Downstream struct {
	// Authority is the CONNECT target (a service VIP:port or a pod IP:port).
	Authority netip.AddrPort
	// Service and Port are the target service, when Authority is a VIP.
	Service *config.Service
	Port    config.ServicePort
	// Workload is the target workload, when Authority is a pod address.
	Workload *config.Workload
	// PeerID is the HBONE client's verified identity: the source workload's.
	PeerID spiffeid.ID
	// Source is the original client (from Forwarded, else the peer address);
	// DirectRemote the previous hop.
	Source       netip.AddrPort
	DirectRemote netip.Addr
	// SourceWorkload is the source, looked up by address, if known.
	SourceWorkload *config.Workload
}

type downstreamKey struct{}

// WithDownstream attaches d to ctx.
func WithDownstream(ctx context.Context, d *Downstream) context.Context {
	return context.WithValue(ctx, downstreamKey{}, d)
}

// DownstreamFrom returns the Downstream attached to ctx, or nil.
func DownstreamFrom(ctx context.Context) *Downstream {
	d, _ := ctx.Value(downstreamKey{}).(*Downstream)
	return d
}
