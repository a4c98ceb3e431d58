// Package route compiles an Envoy RouteConfiguration (one virtual host) into
// an immutable Table and matches requests against it: path, header, query
// and method matching, first match wins. Routes carry their action: a
// forward to one or more weighted clusters (with rewrites, timeout, retries,
// mirroring and hash policy), a redirect or a direct response, plus header
// manipulation and an optional per-route fault.
package route

import (
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/zmesh/zmesh/waypoint/filter/fault"
	"github.com/zmesh/zmesh/waypoint/matcher"
)

// Table is a compiled virtual host. It is immutable and safe for concurrent use.
type Table struct {
	Name   string
	Routes []*Route
	// Headers are the virtual host's header operations, applied after the
	// weighted cluster's and the route's, as Envoy does by default (so the
	// virtual host's win for "set").
	Headers HeaderOps
}

// Route is one compiled route.
type Route struct {
	Name string

	pathKind      pathKind
	path          string
	pathRE        *regexp.Regexp
	caseSensitive bool
	headers       []matcher.Header
	query         []queryMatcher

	// Exactly one of Forward, Redirect and Direct is set.
	Forward  *Forward
	Redirect *Redirect
	Direct   *Direct

	Headers HeaderOps
	// Fault is the route's typed_per_filter_config fault, nil when none.
	Fault *fault.Fault
}

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

type queryMatcher struct {
	name    string
	present bool
	value   matcher.String
}

// Forward sends the request upstream.
type Forward struct {
	Clusters    []WeightedCluster
	totalWeight uint32
	// Timeout bounds the whole request including retries; 0 disables it.
	Timeout time.Duration
	Retry   *RetryPolicy
	Mirrors []Mirror
	// PrefixRewrite replaces the matched prefix (or exact path).
	PrefixRewrite    string
	hasPrefixRewrite bool
	regexRewrite     *regexp.Regexp
	regexSubst       string
	// HostRewrite replaces the Host header when not empty.
	HostRewrite string
	Hash        []HashPolicy
}

// WeightedCluster is a backend with its weight.
type WeightedCluster struct {
	Name   string
	Weight uint32
	// Headers are per-backend header operations.
	Headers HeaderOps
}

// RetryPolicy is a compiled Envoy RetryPolicy.
type RetryPolicy struct {
	NumRetries    int
	PerTryTimeout time.Duration
	// On are the retry_on conditions: "5xx", "gateway-error",
	// "connect-failure", "reset", "refused-stream", "retriable-4xx",
	// "retriable-status-codes".
	On    map[string]bool
	Codes map[int]bool
}

// Mirror copies requests to another cluster, fire and forget.
type Mirror struct {
	Cluster string
	PPM     uint32 // parts per million of requests mirrored
}

// HashKind selects what a hash policy hashes.
type HashKind uint8

// Hash policy kinds.
const (
	HashHeader HashKind = iota
	HashCookie
	HashSourceIP
)

// HashPolicy is one consistent-hash input.
type HashPolicy struct {
	Kind HashKind
	Name string        // header or cookie name
	TTL  time.Duration // cookie: the generated cookie's Max-Age (0: a session cookie)
	// Generate says a cookie policy sets a cookie on requests without one
	// (Envoy: the ttl field is present, even when zero).
	Generate bool
	Path     string // cookie path
	Terminal bool
}

// Redirect answers with a redirect.
type Redirect struct {
	Scheme, Host  string
	Port          uint32
	Path          string
	PrefixRewrite string
	hasPrefix     bool
	Code          int
	StripQuery    bool
}

// Direct answers with a fixed status and body.
type Direct struct {
	Status int
	Body   string
}

// Match returns the first route matching r, or nil.
func (t *Table) Match(r *http.Request) *Route {
	if t == nil {
		return nil
	}
	for _, rt := range t.Routes {
		if rt.matches(r) {
			return rt
		}
	}
	return nil
}

func (rt *Route) matches(r *http.Request) bool {
	if !rt.matchPath(r.URL.EscapedPath()) {
		return false
	}
	for _, h := range rt.headers {
		if !h.Match(r) {
			return false
		}
	}
	if len(rt.query) > 0 {
		q := r.URL.Query()
		for _, qm := range rt.query {
			vs, ok := q[qm.name]
			switch {
			case !ok:
				return false
			case qm.present:
			case !qm.value.Match(vs[0]):
				return false
			}
		}
	}
	return true
}

func (rt *Route) matchPath(p string) bool {
	want := rt.path
	if !rt.caseSensitive && rt.pathKind != pathRegex {
		p = strings.ToLower(p)
	}
	switch rt.pathKind {
	case pathPrefix:
		return strings.HasPrefix(p, want)
	case pathExact:
		return p == want
	case pathSeparatedPrefix:
		return p == want || strings.HasPrefix(p, want+"/")
	case pathRegex:
		return rt.pathRE.MatchString(p)
	}
	return false
}

// RewritePath returns the upstream path for a request that matched rt with
// the given escaped path; ok is false when no rewrite applies.
func (rt *Route) RewritePath(p string) (string, bool) {
	f := rt.Forward
	if f == nil {
		return p, false
	}
	if f.hasPrefixRewrite {
		return rt.replacePrefix(p, f.PrefixRewrite), true
	}
	if f.regexRewrite != nil {
		return f.regexRewrite.ReplaceAllString(p, f.regexSubst), true
	}
	return p, false
}

// replacePrefix swaps the matched path prefix for repl.
func (rt *Route) replacePrefix(p, repl string) string {
	switch rt.pathKind {
	case pathPrefix, pathSeparatedPrefix, pathExact:
		if len(rt.path) <= len(p) {
			rest := p[len(rt.path):]
			out := repl + rest
			if strings.HasSuffix(repl, "/") && strings.HasPrefix(rest, "/") {
				out = repl + rest[1:]
			}
			if out == "" {
				out = "/"
			}
			return out
		}
	}
	return p
}

// Pick chooses a backend by weight; rnd is uniform in [0, 1).
func (f *Forward) Pick(rnd float64) *WeightedCluster {
	if len(f.Clusters) == 1 || f.totalWeight == 0 {
		return &f.Clusters[0]
	}
	n := uint32(rnd * float64(f.totalWeight))
	for i := range f.Clusters {
		if n < f.Clusters[i].Weight {
			return &f.Clusters[i]
		}
		n -= f.Clusters[i].Weight
	}
	return &f.Clusters[len(f.Clusters)-1]
}

// Location builds the redirect target for r.
func (rd *Redirect) Location(r *http.Request, rt *Route) string {
	scheme := rd.Scheme
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	host := r.Host
	if rd.Host != "" || rd.Port != 0 {
		h, port := splitHostPort(host)
		if rd.Host != "" {
			// As Envoy: the host is swapped whole, so the original port goes.
			h, port = rd.Host, ""
		}
		if rd.Port != 0 {
			port = itoa(rd.Port)
		}
		host = h
		defaultPort := (scheme == "http" && port == "80") || (scheme == "https" && port == "443")
		if port != "" && !defaultPort {
			host = h + ":" + port
		}
	}
	path := r.URL.EscapedPath()
	switch {
	case rd.Path != "":
		path = rd.Path
	case rd.hasPrefix:
		path = rt.replacePrefix(path, rd.PrefixRewrite)
	}
	loc := scheme + "://" + host + path
	if !rd.StripQuery && r.URL.RawQuery != "" && !strings.Contains(path, "?") {
		loc += "?" + r.URL.RawQuery
	}
	return loc
}

func splitHostPort(h string) (host, port string) {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		return h[:i], h[i+1:]
	}
	return h, ""
}

func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// DefaultCluster is the cluster name of the default table's single
// route: it stands for "the target service (or workload) itself".
const DefaultCluster = ""

// DefaultTable is the table used for a service without a Listener: every
// request goes to the target itself, no timeout, no retries.
func DefaultTable() (*Table, error) {
	return &Table{Name: "default", Routes: []*Route{{
		Name: "default", pathKind: pathPrefix, path: "/", caseSensitive: true,
		Forward: &Forward{Clusters: []WeightedCluster{{Name: DefaultCluster, Weight: 1}}, totalWeight: 1},
	}}}, nil
}

// DirectRoute is a catch-all route answering status with body.
func DirectRoute(name string, status int, body string) *Route {
	return &Route{Name: name, pathKind: pathPrefix, path: "/", caseSensitive: true, Direct: &Direct{Status: status, Body: body}}
}
