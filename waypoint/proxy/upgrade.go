package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// isWebSocketUpgrade reports whether r asks to switch an HTTP/1.1
// connection to WebSocket. Like Istio's waypoint (Envoy with the websocket
// upgrade enabled), the waypoint passes WebSocket upgrades through and
// drops other Upgrade requests' hop-by-hop headers, serving them as plain
// requests.
func isWebSocketUpgrade(r *http.Request) bool {
	return r.ProtoMajor == 1 &&
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
}

// switchProtocols relays an upstream 101 answer to an upgrade request: it
// takes the downstream connection over from net/http, writes the 101 with
// the response headers already in w.Header(), and then copies bytes both
// ways (with half-close) until both sides are done. resp.Body is the
// upstream connection (upstream.UpgradedConn, wrapped by try).
func (p *Proxy) switchProtocols(w *responseWriter, r *http.Request, st *state, resp *http.Response) {
	up, ok := upgradedConn(resp.Body)
	if !ok {
		st.flag("UPE")
		p.respondError(w, st, http.StatusBadGateway, "")
		return
	}
	down, brw, err := http.NewResponseController(w.w).Hijack()
	if err != nil {
		st.flag("UPE")
		p.respondError(w, st, http.StatusInternalServerError, "")
		return
	}
	w.code = http.StatusSwitchingProtocols
	h := w.Header()
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", resp.Header.Get("Upgrade"))
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = h.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		_ = down.Close()
		st.flag("DC")
		return
	}
	res := hbone.Splice(upstream.NewUpgradedConn(down, brw.Reader), up, p.cfg.BufferPool)
	w.bytes += res.BToA
	if cb, ok := r.Body.(*countingBody); ok {
		cb.n += res.AToB
	}
	if err := res.Err(); err != nil && !errors.Is(err, net.ErrClosed) {
		st.flag("UC")
	}
}

// upgradedConn digs the upstream connection out of a 101 response's body.
func upgradedConn(body io.ReadCloser) (hbone.HalfCloser, bool) {
	if eb, ok := body.(*endBody); ok {
		body = eb.ReadCloser
	}
	uc, ok := body.(*upstream.UpgradedConn)
	return uc, ok
}
