package proxy

import (
	"context"
	"net"
	"net/http"

	"github.com/zmesh/zmesh/pkg/hbone"
)

// serveHBONE handles one CONNECT arriving at the pod's 15008: the target
// must be this pod, policy must allow the peer, and the app must accept the
// connection before the tunnel is answered with 200. The handler then
// starts the relay (startRelay) and returns.
func (pp *PodProxy) serveHBONE(ctx context.Context, req *hbone.Request, rw *hbone.ResponseWriter) {
	src, _ := addrPort(req.RemoteAddr)
	if !pp.ownsIP(req.Authority.Addr()) {
		pp.log.Info("inbound tunnel for an address that is not this pod's", "src", src, "peer", req.PeerID, "authority", req.Authority)
		_ = rw.Reject(http.StatusBadRequest)
		return
	}
	conn := Conn{SrcIdentity: req.PeerID, Src: src, Dst: req.Authority}
	peer := pp.p.cfg.Resolver.PeerByIP(src.Addr())
	peer.Principal = req.PeerID.String()
	labels := connLabels{reporter: reporterDestination, src: peer, dst: pp.info.Peer, security: "mutual_tls"}
	app, status := pp.admit(ctx, conn, labels)
	if app == nil {
		_ = rw.Reject(status)
		return
	}
	stream, err := rw.Accept()
	if err != nil {
		_ = app.Close()
		pp.p.cfg.Metrics.close(labels, flagNone, 0, 0)
		return
	}
	pp.relay(nil, conn, stream, app, labels)
}

// handlePlaintext handles a connection captured on 15006: no identity, so
// only policy that admits plaintext peers lets it through (STRICT does not).
// It reports whether it started the relay (false when the connection is
// refused).
func (pp *PodProxy) handlePlaintext(c net.Conn) bool {
	src, _ := addrPort(c.RemoteAddr())
	dst, err := pp.sockets.OriginalDst(c)
	if err != nil {
		pp.log.Warn("inbound connection without original destination", "src", src, "err", err)
		return false
	}
	if !pp.ownsIP(dst.Addr()) {
		pp.log.Info("plaintext connection for an address that is not this pod's", "src", src, "dst", dst)
		return false
	}
	conn := Conn{Src: src, Dst: dst}
	labels := connLabels{reporter: reporterDestination, src: pp.p.cfg.Resolver.PeerByIP(src.Addr()), dst: pp.info.Peer, security: "none"}
	app, _ := pp.admit(pp.ctx, conn, labels)
	if app == nil {
		return false
	}
	return pp.relay(c, conn, c.(hbone.HalfCloser), app, labels)
}

// admit counts the connection, applies policy and dials the app. Without an
// app connection it returns the HTTP status to refuse with: 401 when policy
// denies, 503 when the destination is unknown or the app unreachable; the
// connection has then been counted as closed.
func (pp *PodProxy) admit(ctx context.Context, c Conn, labels connLabels) (hbone.HalfCloser, int) {
	m := pp.p.cfg.Metrics
	m.open(labels)
	if v := pp.p.cfg.Authorizer.Authorize(&pp.info, c); !v.Allow {
		pp.log.Info("inbound connection denied", "src", c.Src, "peer", c.SrcIdentity, "dst", c.Dst, "policy", v.Policy, "reason", v.Reason)
		if v.UnknownDestination {
			m.close(labels, flagNoRoute, 0, 0)
			return nil, http.StatusServiceUnavailable
		}
		m.close(labels, flagUnauthorized, 0, 0)
		return nil, http.StatusUnauthorized
	}
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	// The app sees the original client's address, as without the mesh.
	app, err := pp.dialPlain(dctx, c.Dst, c.Src.Addr())
	if err != nil {
		pp.log.Info("inbound connection: app unreachable", "src", c.Src, "dst", c.Dst, "err", err)
		m.close(labels, flagUpstreamFailure, 0, 0)
		return nil, http.StatusServiceUnavailable
	}
	return app, http.StatusOK
}

// relay starts copying between the downstream and the app until both
// sides end, or until a policy change closes the connection; tracked is the
// accepted downstream connection, nil for HBONE. It reports whether the
// relay started (false once Stop has begun).
func (pp *PodProxy) relay(tracked net.Conn, c Conn, down, app hbone.HalfCloser, labels connLabels) bool {
	return pp.startRelay(tracked, down, app, &c, func(res hbone.SpliceResult) {
		pp.p.cfg.Metrics.close(labels, flagNone, res.AToB, res.BToA)
	})
}
