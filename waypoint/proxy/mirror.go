package proxy

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/zmesh/zmesh/waypoint/filter/fault"
	"github.com/zmesh/zmesh/waypoint/route"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// mirrorTimeout bounds a mirrored request.
const mirrorTimeout = 10 * time.Second

// mirror sends a copy of out to m's cluster in the background, with the
// Host suffixed "-shadow" as Envoy does; its answer is discarded. When too
// many mirrors are in flight the copy is dropped.
func (p *Proxy) mirror(st *state, out *http.Request, m route.Mirror) {
	if !fault.Hit(m.PPM) {
		return
	}
	b, ok := p.resolve(st, m.Cluster)
	if !ok {
		return
	}
	select {
	case p.mirrors <- struct{}{}:
	default:
		return
	}
	// A fresh Attempt: the mirror's dial must not mark the main request's.
	ctx, cancel := context.WithTimeout(upstream.WithAttempt(context.WithoutCancel(out.Context()), &upstream.Attempt{}), mirrorTimeout)
	req := out.Clone(ctx) // its own header and URL: the main request goes on changing out's
	if out.GetBody != nil {
		req.Body, _ = out.GetBody()
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if h, port := splitHost(host); port != "" {
		req.Host = h + "-shadow:" + port
	} else {
		req.Host = host + "-shadow"
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() { <-p.mirrors }()
		defer cancel()
		h, err := b.cluster.Pick(b.targets, 0, false, nil)
		if err != nil {
			return
		}
		req.URL.Host = h.Addr
		end := h.Begin()
		defer end()
		resp, err := b.cluster.Transport(h, b.http2).RoundTrip(req)
		if err != nil {
			p.log.Debug("mirror failed", "cluster", m.Cluster, "err", err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}()
}

func splitHost(h string) (string, string) {
	for i := len(h) - 1; i >= 0; i-- {
		switch h[i] {
		case ':':
			return h[:i], h[i+1:]
		case ']':
			return h, ""
		}
	}
	return h, ""
}
