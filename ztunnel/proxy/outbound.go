package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/zmesh/zmesh/pkg/hbone"
)

// connectTimeout bounds reaching the next hop (TCP, TLS and CONNECT).
const connectTimeout = 10 * time.Second

// handleOutbound carries one connection the pod opened (captured on 15001)
// to its destination: it routes, dials and starts the relay, and reports
// whether it did (false when the connection was refused or failed).
func (pp *PodProxy) handleOutbound(c net.Conn) bool {
	src, _ := addrPort(c.RemoteAddr())
	dst, err := pp.sockets.OriginalDst(c)
	if err != nil {
		pp.log.Warn("outbound connection without original destination", "src", src, "err", err)
		return false
	}
	route := pp.p.cfg.Resolver.Outbound(&pp.info, dst)
	labels := connLabels{reporter: reporterSource, src: pp.info.Peer, dst: route.Destination, service: route.Service, security: "none"}
	if route.Kind == RouteHBONE {
		labels.security = "mutual_tls"
	}
	m := pp.p.cfg.Metrics
	m.open(labels)
	if route.Kind == RouteDeny {
		pp.log.Info("outbound connection refused", "src", src, "dst", dst, "reason", route.Reason)
		m.close(labels, flagNoRoute, 0, 0)
		return false
	}
	ctx, cancel := context.WithTimeout(pp.ctx, connectTimeout)
	up, err := pp.dialRoute(ctx, src, route)
	cancel()
	if err != nil {
		pp.log.Info("outbound connection failed", "src", src, "dst", dst, "route", route.Kind.String(),
			"authority", route.Authority, "nextHop", route.NextHop, "err", err)
		m.close(labels, flagUpstreamFailure, 0, 0)
		return false
	}
	return pp.startRelay(c, c.(hbone.HalfCloser), up, nil, func(res hbone.SpliceResult) {
		m.close(labels, flagNone, res.AToB, res.BToA)
		if pp.log.Enabled(pp.ctx, slog.LevelDebug) {
			pp.log.Debug("outbound connection closed", "src", src, "dst", dst, "route", route.Kind.String(),
				"sent", res.AToB, "received", res.BToA, "err", res.Err())
		}
	})
}

// dialRoute opens the upstream side of an outbound connection.
func (pp *PodProxy) dialRoute(ctx context.Context, src netip.AddrPort, r Route) (hbone.HalfCloser, error) {
	if r.Kind != RouteHBONE {
		return pp.dialPlain(ctx, r.Authority, netip.Addr{})
	}
	id := pp.info.Identity
	stream, err := pp.p.cfg.Pool.Dial(ctx, &hbone.DialRequest{
		NextHop:     r.NextHop,
		Authority:   r.Authority,
		SourceID:    id,
		Certificate: func() (*tls.Certificate, error) { return pp.p.cfg.Certificates(id) },
		ExpectedIDs: r.ExpectedIDs,
		SourceIP:    src.Addr(),
		Forwarded:   hbone.FormatForwarded(src, ""),
		Baggage:     pp.info.Baggage,
	})
	if err != nil {
		return nil, err
	}
	return stream, nil
}

// dialPlain dials addr from the pod's network namespace, from src when valid.
func (pp *PodProxy) dialPlain(ctx context.Context, addr netip.AddrPort, src netip.Addr) (hbone.HalfCloser, error) {
	c, err := pp.sockets.Dial(ctx, addr, src)
	if err != nil {
		return nil, err
	}
	hc, ok := c.(hbone.HalfCloser)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("dial %s: %T cannot half-close", addr, c)
	}
	return hc, nil
}
