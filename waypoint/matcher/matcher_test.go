package matcher

import (
	"net/http/httptest"
	"testing"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		m    *matcherv3.StringMatcher
		in   string
		want bool
	}{
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Abc"}}, "Abc", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Abc"}}, "abc", false},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Abc"}, IgnoreCase: true}, "aBC", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/a"}}, "/ab", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".com"}}, "x.org", false},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a+"}}}, "aaa", true},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a+"}}}, "aab", false}, // anchored
	} {
		s, err := CompileString(tc.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Match(tc.in); got != tc.want {
			t.Errorf("%v on %q = %v", tc.m, tc.in, got)
		}
	}
	if _, err := CompileString(nil); err == nil {
		t.Error("nil matcher compiled")
	}
	var zero String
	if zero.Match("") {
		t.Error("the zero matcher must match nothing")
	}
}

func TestHeaderValue(t *testing.T) {
	r := httptest.NewRequest("PATCH", "http://h:1/p?q=1", nil)
	r.Header.Add("X-A", "1")
	r.Header.Add("X-A", "2")
	for name, want := range map[string]string{":method": "PATCH", ":path": "/p?q=1", ":authority": "h:1", "x-a": "1,2"} {
		if got, ok := HeaderValue(r, name); !ok || got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if _, ok := HeaderValue(r, "x-missing"); ok {
		t.Error("missing header found")
	}
	if h := NewHeader("x-missing", Exact(""), false, true); !h.Match(r) {
		t.Error("inverted match on a missing header must match")
	}
}
