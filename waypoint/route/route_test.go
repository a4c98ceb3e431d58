package route

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

func rc(routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: routes}}}
}

func fwd(name string, m *routev3.RouteMatch) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c-" + name}}}}
}

func sm(kind, v string) *matcherv3.StringMatcher {
	switch kind {
	case "prefix":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v}}
	case "suffix":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v}}
	case "contains":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: v}}
	case "regex":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func TestMatch(t *testing.T) {
	hm := func(name string, m *matcherv3.StringMatcher) []*routev3.HeaderMatcher {
		return []*routev3.HeaderMatcher{{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}}
	}
	table, err := Compile(rc(
		fwd("exact", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}),
		fwd("suffix-hdr", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: hm("x-s", sm("suffix", ".com"))}),
		fwd("contains-hdr", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: hm("x-c", sm("contains", "mid"))}),
		fwd("prefix-hdr", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: hm("x-p", sm("prefix", "pre"))}),
		fwd("query-present", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/q"}, QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "flag", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}}}}),
		fwd("regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/r/[a-z]+"}}}),
		fwd("catchall", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}),
	))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		target string
		hdr    map[string]string
		want   string
	}{
		{"/a", nil, "exact"},
		{"/a?x=1", nil, "exact"},
		{"/ab", nil, "catchall"},
		{"/x", map[string]string{"x-s": "foo.com"}, "suffix-hdr"},
		{"/x", map[string]string{"x-s": "foo.org"}, "catchall"},
		{"/x", map[string]string{"x-c": "amidst"}, "contains-hdr"},
		{"/x", map[string]string{"x-p": "prefix"}, "prefix-hdr"},
		{"/q?flag", nil, "query-present"},
		{"/q?other=1", nil, "catchall"},
		{"/r/abc", nil, "regex"},
		{"/r/abc/d", nil, "catchall"},
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		for k, v := range tc.hdr {
			r.Header.Set(k, v)
		}
		got := table.Match(r)
		if got == nil || got.Name != tc.want {
			t.Errorf("%s %v: matched %v, want %s", tc.target, tc.hdr, got, tc.want)
		}
	}
}

func TestCompileRejects(t *testing.T) {
	withAction := func(a *routev3.RouteAction) *routev3.Route {
		return &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: &routev3.Route_Route{Route: a}}
	}
	cluster := &routev3.RouteAction_Cluster{Cluster: "c"}
	for name, tc := range map[string]struct {
		rc   *routev3.RouteConfiguration
		want string
	}{
		"two vhosts":     {&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{}, {}}}, "exactly one virtual host"},
		"bad regex":      {rc(fwd("r", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}})), "invalid regex"},
		"no match":       {rc(&routev3.Route{Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: cluster}}}), "missing match"},
		"cluster header": {rc(withAction(&routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_ClusterHeader{ClusterHeader: "x"}})), "unsupported cluster specifier"},
		"zero weights": {rc(withAction(&routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a"}}}}})), "sum to zero"},
		"retry_on": {rc(withAction(&routev3.RouteAction{ClusterSpecifier: cluster, RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx,bogus"}})), "unknown retry_on"},
		"pseudo header add": {rc(&routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action:              &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: cluster}},
			RequestHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: ":path", Value: "/x"}}}}), "cannot be modified"},
		"bad status": {rc(&routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 99}}}), "out of range"},
	} {
		_, err := Compile(tc.rc)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
}

func TestRewriteAndRedirect(t *testing.T) {
	rt := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}, PrefixRewrite: "/"}}}
	table, err := Compile(rc(rt))
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{"/api/v1": "/v1", "/api/": "/"} {
		if got, ok := table.Routes[0].RewritePath(in); !ok || got != want {
			t.Errorf("rewrite %s = %s, want %s", in, got, want)
		}
	}
	if got := envoySubstitution(`/x/\1/$y`); got != "/x/${1}/$$y" {
		t.Errorf("substitution %s", got)
	}
	red, err := Compile(rc(&routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PortRedirect: 8443, SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"},
			StripQuery: true, ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}}}))
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "http://svc:80/p?q=1", nil)
	rr := red.Routes[0]
	if loc := rr.Redirect.Location(r, rr); loc != "https://svc:8443/p" || rr.Redirect.Code != 308 {
		t.Errorf("redirect %s %d", loc, rr.Redirect.Code)
	}
}

func TestWeightedPick(t *testing.T) {
	f := &Forward{Clusters: []WeightedCluster{{Name: "a", Weight: 1}, {Name: "b", Weight: 3}}, totalWeight: 4}
	for rnd, want := range map[float64]string{0: "a", 0.24: "a", 0.25: "b", 0.99: "b"} {
		if got := f.Pick(rnd).Name; got != want {
			t.Errorf("pick(%v) = %s, want %s", rnd, got, want)
		}
	}
}

// TestCookieHashPolicy: a cookie hash policy generates a cookie when its
// ttl is present, even zero (a session cookie), never without one.
func TestCookieHashPolicy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ttl      *durationpb.Duration
		generate bool
		want     time.Duration
	}{
		{"no ttl", nil, false, 0},
		{"zero ttl", durationpb.New(0), true, 0},
		{"one hour", durationpb.New(time.Hour), true, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := fwd("r", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}})
			rt.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{
				Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session", Path: "/", Ttl: tc.ttl}}}}
			table, err := Compile(rc(rt))
			if err != nil {
				t.Fatal(err)
			}
			hp := table.Routes[0].Forward.Hash[0]
			if hp.Kind != HashCookie || hp.Name != "session" || hp.Path != "/" || hp.Generate != tc.generate || hp.TTL != tc.want {
				t.Errorf("hash policy %+v, want generate %v ttl %v", hp, tc.generate, tc.want)
			}
		})
	}
}
