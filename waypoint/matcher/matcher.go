// Package matcher compiles Envoy's string and header matchers into
// allocation-free predicates shared by routing and authorization.
package matcher

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// String is a compiled envoy.type.matcher.v3.StringMatcher. The zero value
// matches nothing.
type String struct {
	kind       stringKind
	value      string
	re         *regexp.Regexp
	ignoreCase bool
}

type stringKind uint8

const (
	kindNone stringKind = iota
	kindExact
	kindPrefix
	kindSuffix
	kindContains
	kindRegex
)

// CompileString compiles m; nil or an empty pattern is an error.
func CompileString(m *matcherv3.StringMatcher) (String, error) {
	if m == nil {
		return String{}, errors.New("missing string matcher")
	}
	s := String{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.kind, s.value = kindExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.kind, s.value = kindPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.kind, s.value = kindSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.kind, s.value = kindContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := CompileRegex(p.SafeRegex)
		if err != nil {
			return String{}, err
		}
		s.kind, s.re = kindRegex, re
	default:
		return String{}, fmt.Errorf("unsupported string matcher %T", p)
	}
	if s.ignoreCase {
		s.value = strings.ToLower(s.value)
	}
	return s, nil
}

// CompileRegex compiles an RE2 regex matcher anchored at both ends, as
// Envoy's safe_regex matches the whole value.
func CompileRegex(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m == nil {
		return nil, errors.New("missing regex")
	}
	re, err := regexp.Compile("^(?:" + m.GetRegex() + ")$")
	if err != nil {
		return nil, fmt.Errorf("invalid regex %q: %w", m.GetRegex(), err)
	}
	return re, nil
}

// Exact returns a matcher for exactly v.
func Exact(v string) String { return String{kind: kindExact, value: v} }

// Match reports whether v matches.
func (s String) Match(v string) bool {
	if s.ignoreCase && s.kind != kindRegex {
		v = strings.ToLower(v)
	}
	switch s.kind {
	case kindExact:
		return v == s.value
	case kindPrefix:
		return strings.HasPrefix(v, s.value)
	case kindSuffix:
		return strings.HasSuffix(v, s.value)
	case kindContains:
		return strings.Contains(v, s.value)
	case kindRegex:
		return s.re.MatchString(v)
	}
	return false
}

// Header is a compiled HeaderMatcher-like predicate over request headers.
// Pseudo-headers (":method", ":path", ":authority", ":scheme") are looked
// up through the request.
type Header struct {
	Name    string
	present bool // match on presence only
	value   String
	invert  bool
}

// NewHeader builds a header matcher; when present is true, v is ignored
// and the header's presence is what matches.
func NewHeader(name string, v String, present, invert bool) Header {
	return Header{Name: strings.ToLower(name), value: v, present: present, invert: invert}
}

// Match evaluates the matcher against r.
func (h Header) Match(r *http.Request) bool {
	v, ok := HeaderValue(r, h.Name)
	var m bool
	if h.present {
		m = ok
	} else {
		m = ok && h.value.Match(v)
	}
	return m != h.invert
}

// HeaderValue returns the value of name (lower case) on r, joining repeated
// headers with "," as Envoy does, and resolving pseudo-headers.
func HeaderValue(r *http.Request, name string) (string, bool) {
	switch name {
	case ":method":
		return r.Method, true
	case ":path":
		return r.URL.RequestURI(), true
	case ":authority", "host":
		return r.Host, true
	case ":scheme":
		if r.URL.Scheme != "" {
			return r.URL.Scheme, true
		}
		return "http", true
	}
	vs, ok := r.Header[http.CanonicalHeaderKey(name)]
	if !ok {
		return "", false
	}
	if len(vs) == 1 {
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}
