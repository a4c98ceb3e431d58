package proxy

import (
	"net/http"
	"time"

	"github.com/zmesh/zmesh/waypoint/config"
	"github.com/zmesh/zmesh/waypoint/filter/fault"
	"github.com/zmesh/zmesh/waypoint/filter/jwt"
	"github.com/zmesh/zmesh/waypoint/filter/rbac"
	"github.com/zmesh/zmesh/waypoint/route"
)

// runFilters runs the chain's HTTP filters in order. It answers the
// request itself and returns ok=false when a filter refuses it; otherwise
// it returns the fault to inject (nil when the fault filter is absent).
func (p *Proxy) runFilters(w *responseWriter, r *http.Request, st *state, chain *config.HTTPChain, rt *route.Route) (*fault.Fault, bool) {
	var attrs *rbac.Attributes
	var faultCfg *fault.Fault
	var metadata map[string]map[string]any // allocated when a filter publishes some
	for _, f := range chain.Filters {
		switch {
		case f.JWT != nil:
			res, err := f.JWT.Authenticate(r, time.Now())
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+requestURL(r)+`", error="invalid_token"`)
				p.respondError(w, st, http.StatusUnauthorized, err.Error())
				return nil, false
			}
			if len(res.Payloads) > 0 {
				if metadata == nil {
					metadata = map[string]map[string]any{}
					if attrs != nil {
						attrs.Metadata = metadata
					}
				}
				metadata[jwt.FilterName] = res.Payloads
				metadata["istio_authn"] = istioAuthn(res.Payloads)
			}
		case f.RBAC != nil:
			if attrs == nil {
				attrs = p.attributes(r, st, metadata)
			}
			if !f.RBAC.Allowed(attrs) {
				st.flag("RBAC")
				p.respondError(w, st, http.StatusForbidden, "RBAC: access denied")
				return nil, false
			}
		case f.Fault != nil:
			faultCfg = f.Fault.Default
			if rt.Fault != nil {
				faultCfg = rt.Fault
			}
		}
	}
	return faultCfg, true
}

// istioAuthn publishes the first payload the way Istio's authn filter
// does, for RBAC rules written against "istio_authn".
func istioAuthn(payloads map[string]any) map[string]any {
	for _, pl := range payloads {
		m, _ := pl.(map[string]any)
		out := map[string]any{"request.auth.claims": m, "request.auth.principal": jwt.RequestPrincipal(pl)}
		if aud, ok := m["aud"]; ok {
			out["request.auth.audiences"] = aud
		}
		if azp, ok := m["azp"]; ok {
			out["request.auth.presenter"] = azp
		}
		return out
	}
	return nil
}

func (p *Proxy) attributes(r *http.Request, st *state, md map[string]map[string]any) *rbac.Attributes {
	a := &rbac.Attributes{Request: r, SourceIP: st.down.Source.Addr(), DirectRemoteIP: st.down.DirectRemote,
		DestinationIP: st.down.Authority.Addr(), DestinationPort: uint32(st.down.Authority.Port()), Metadata: md}
	if !st.down.PeerID.IsZero() {
		a.Principal = st.down.PeerID.String()
	}
	return a
}

func requestURL(r *http.Request) string {
	return "http://" + r.Host + r.URL.EscapedPath()
}
