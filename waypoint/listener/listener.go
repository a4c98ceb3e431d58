// Package listener terminates the waypoint's HBONE tunnels: for each
// CONNECT it finds the target (a service VIP:port or a workload address),
// picks the protocol from the service's Listener or port app protocol, and
// serves the tunnel as HTTP/1.1 or HTTP/2 (gRPC included, prior knowledge)
// through the L7 proxy, or proxies it at L4.
package listener

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/waypoint/config"
	"github.com/zmesh/zmesh/waypoint/http1"
	"github.com/zmesh/zmesh/waypoint/proxy"
)

// Handler is the hbone.Handler of the waypoint.
type Handler struct {
	store *config.Store
	proxy *proxy.Proxy
	log   *slog.Logger
}

// New returns a Handler serving tunnels through px.
func New(store *config.Store, px *proxy.Proxy, log *slog.Logger) (*Handler, error) {
	if store == nil || px == nil {
		return nil, errors.New("listener: store and proxy are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{store: store, proxy: px, log: log}, nil
}

// ServeHBONE implements hbone.Handler. It returns when the tunnel ends.
func (h *Handler) ServeHBONE(ctx context.Context, req *hbone.Request, rw *hbone.ResponseWriter) {
	d := &proxy.Downstream{Authority: req.Authority, PeerID: req.PeerID}
	if ap := addrPort(req.RemoteAddr); ap.IsValid() {
		d.DirectRemote = ap.Addr()
		d.Source = ap
	}
	snap := h.store.Snapshot()
	if req.Forwarded != "" {
		if src, err := hbone.ParseForwardedFor(req.Forwarded); err == nil && vouches(snap, req.PeerID, src.Addr()) {
			d.Source = src
		}
	}
	if !proxy.Resolve(snap, d) {
		h.log.Debug("tunnel to an unknown destination", "authority", req.Authority.String(), "peer", req.PeerID.String())
		_ = rw.Reject(http.StatusBadRequest)
		return
	}
	d.SourceWorkload = snap.WorkloadByIP(d.Source.Addr())
	isHTTP := d.Port.Protocol != config.TCP
	if d.Service != nil {
		if l := snap.Listener(d.Service, d.Port.Port); l != nil {
			isHTTP = l.HTTP != nil
		} else if snap.Refused(d.Service, d.Port.Port) {
			// Its configuration was rejected: serving it without its
			// policies would fail open.
			h.log.Debug("tunnel to a service whose listener was rejected", "service", d.Service.Key)
			_ = rw.Reject(http.StatusServiceUnavailable)
			return
		}
	}
	st, err := rw.Accept()
	if err != nil {
		return
	}
	if !isHTTP {
		h.proxy.ServeTCP(ctx, st, d)
		return
	}
	h.serveHTTP(ctx, st, d)
}

// vouches reports whether a tunnel's peer may claim src as the source
// address (the Forwarded header): only when src is a workload with the
// peer's own identity, as when a ztunnel tunnels for one of its pods. Any
// mesh certificate can send the header, so another claim is ignored and
// the tunnel's own remote address stays the source that source-IP policy
// and telemetry see.
func vouches(snap *config.Snapshot, peer spiffeid.ID, src netip.Addr) bool {
	w := snap.WorkloadByIP(src)
	return w != nil && !peer.IsZero() && w.Identity == peer
}

// serveHTTP serves the one tunnel stream until either side ends it:
// HTTP/1.1 with package http1, and a stream that opens with the HTTP/2
// preface (prior knowledge, gRPC) with net/http's HTTP/2 server.
func (h *Handler) serveHTTP(ctx context.Context, conn net.Conn, d *proxy.Downstream) {
	ctx = proxy.WithDownstream(ctx, d)
	http1.Serve(ctx, conn, h.proxy, http1.Options{
		MaxHeaderBytes: maxHeaderBytes,
		Log:            h.log,
		HTTP2:          func(c net.Conn) { h.serveHTTP2(ctx, c) },
	})
	_ = endStream(conn)
}

// endStream closes a tunnel stream as a TCP socket's close would: what
// was written is delivered (END_STREAM first), and only then is the stream
// ended. A stream's own Close resets it, and a reset lets the client's
// side drop a response still in flight.
func endStream(conn net.Conn) error {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	return conn.Close()
}

// maxHeaderBytes bounds a request's head.
const maxHeaderBytes = 96 << 10

func addrPort(a net.Addr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	if t, ok := a.(*net.TCPAddr); ok {
		return netip.AddrPortFrom(func() netip.Addr { ip, _ := netip.AddrFromSlice(t.IP); return ip.Unmap() }(), uint16(t.Port))
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
