package l7

import (
	"fmt"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
)

// Helpers that build Envoy matchers and header mutations.

func exactString(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func prefixString(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v}}
}

func suffixString(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v}}
}

func regexString(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regexMatcher(v)}}
}

func regexMatcher(v string) *matcherv3.RegexMatcher {
	return &matcherv3.RegexMatcher{Regex: v}
}

// checkRegex validates an RE2 expression (Go's regexp is RE2).
func checkRegex(v string) error {
	if v == "" {
		return fmt.Errorf("empty regular expression")
	}
	if _, err := regexp.Compile(v); err != nil {
		return fmt.Errorf("regular expression %q: %w", v, err)
	}
	return nil
}

func headerMatch(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: strings.ToLower(name), HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func methodMatch(m string) *routev3.HeaderMatcher {
	return headerMatch(":method", exactString(m))
}

// headerValue makes a header to add: set overwrites, add appends.
func headerValue(name, value string, set bool) *corev3.HeaderValueOption {
	action := corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	if set {
		action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	}
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: strings.ToLower(name), Value: value},
		AppendAction: action,
	}
}

// validHeaderName accepts an HTTP token (RFC 7230), lower- or upper-case.
func validHeaderName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// validHeaderValue refuses control characters other than tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// percent makes a FractionalPercent of a percentage with up to four
// decimals (per million).
func percent(p float64) *typev3.FractionalPercent {
	if p >= 100 {
		return &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}
	}
	if p <= 0 {
		return &typev3.FractionalPercent{Numerator: 0, Denominator: typev3.FractionalPercent_HUNDRED}
	}
	if p == float64(int(p)) {
		return &typev3.FractionalPercent{Numerator: uint32(p), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return &typev3.FractionalPercent{Numerator: uint32(p*10000 + 0.5), Denominator: typev3.FractionalPercent_MILLION}
}

func runtimeFraction(p float64) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{DefaultValue: percent(p)}
}

// appendUniqueHash appends hash policies not already in list.
func appendUniqueHash(list []*routev3.RouteAction_HashPolicy, add ...*routev3.RouteAction_HashPolicy) []*routev3.RouteAction_HashPolicy {
next:
	for _, h := range add {
		for _, x := range list {
			if proto.Equal(x, h) {
				continue next
			}
		}
		list = append(list, h)
	}
	return list
}

func regexpQuote(s string) string { return regexp.QuoteMeta(s) }
