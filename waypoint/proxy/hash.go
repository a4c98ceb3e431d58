package proxy

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/zmesh/zmesh/waypoint/route"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// hashKey computes the consistent-hash input from the route's hash
// policies. When a cookie policy that generates cookies (Envoy: its ttl is
// set, 0 meaning a session cookie) finds none, it makes one and returns the
// Set-Cookie value for the response.
func hashKey(r *http.Request, st *state, fw *route.Forward) (key uint64, ok bool, setCookie string) {
	var parts []string
	for _, hp := range fw.Hash {
		var v string
		switch hp.Kind {
		case route.HashHeader:
			v = r.Header.Get(hp.Name)
		case route.HashSourceIP:
			if st.down.Source.IsValid() {
				v = st.down.Source.Addr().String()
			}
		case route.HashCookie:
			if c, err := r.Cookie(hp.Name); err == nil {
				v = c.Value
			} else if hp.Generate {
				v = newRequestID()
				c := &http.Cookie{Name: hp.Name, Value: v, Path: hp.Path, HttpOnly: true}
				if hp.TTL > 0 {
					c.MaxAge = int(hp.TTL.Seconds()) // else a session cookie, as Envoy makes for ttl 0
				}
				if c.Path == "" {
					c.Path = "/"
				}
				setCookie = c.String()
			}
		}
		if v == "" {
			continue
		}
		parts = append(parts, strconv.Itoa(int(hp.Kind))+"="+v)
		if hp.Terminal {
			break
		}
	}
	if len(parts) == 0 {
		return 0, false, setCookie
	}
	return upstream.HashString(strings.Join(parts, "\x00")), true, setCookie
}
