package proxy

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/zmesh/zmesh/waypoint/route"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// hashKey computes the consistent-hash input from the route's hash
// policies. When a cookie policy with a TTL finds no cookie, it generates
// one and returns the Set-Cookie value for the response.
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
			} else if hp.TTL > 0 {
				v = newRequestID()
				c := &http.Cookie{Name: hp.Name, Value: v, Path: hp.Path, MaxAge: int(hp.TTL.Seconds()), HttpOnly: true}
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
