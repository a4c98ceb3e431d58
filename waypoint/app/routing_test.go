package app_test

import (
	"math"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/zmesh/zmesh/waypoint/config"
)

// subset is the Istio name of a reviews subset cluster.
func subset(s string) string { return "outbound|9080|" + s + "|" + reviewsHost }

// subsets publishes clusters v1 and v2, each with its pod as the only endpoint.
func subsets(m *mesh, lb clusterv3.Cluster_LbPolicy, extra ...*clusterv3.Cluster) {
	cs := append([]*clusterv3.Cluster{
		cluster(subset("v1"), lb, "10.244.1.1:8080"),
		cluster(subset("v2"), lb, "10.244.1.2:8080"),
		cluster("outbound|9080||"+reviewsHost, lb),
	}, extra...)
	msgs := make([]any, 0)
	_ = msgs
	for _, c := range cs {
		_ = c
	}
	m.push(config.ClusterTypeURL, toMsgs(cs)...)
}

func direct(status uint32, body string) *routev3.Route_DirectResponse {
	return &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status,
		Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}}}}
}

func TestRouteMatching(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	routes := []*routev3.Route{
		{Name: "exact", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}, Action: direct(200, "exact")},
		{Name: "regex", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/items/[0-9]+"}}}, Action: direct(200, "regex")},
		{Name: "sep", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}}, Action: direct(200, "sep")},
		{Name: "header", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			header("end-user", exact("jason"))}}, Action: toCluster(subset("v2"))},
		{Name: "header-regex", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			header("x-version", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "v[2-3]"}}})}}, Action: direct(200, "header-regex")},
		{Name: "present-inverted", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/inv"}, Headers: []*routev3.HeaderMatcher{
			{Name: "x-skip", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true}}}, Action: direct(200, "no-skip")},
		{Name: "query", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("1")}}}}, Action: direct(200, "query")},
		{Name: "method", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			header(":method", exact("DELETE"))}}, Action: direct(200, "method")},
		{Name: "ci", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/CASE"}, CaseSensitive: wrapBool(false)}, Action: direct(200, "case")},
		routeTo("default", prefix("/"), subset("v1")),
	}
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", routes))
	c := m.httpClient(reviewsVIP+":9080", false)
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		want         string // body of a direct response, or the pod
	}{
		{"GET", "/exact", nil, "exact"},
		{"GET", "/exact/more", nil, "reviews-v1"},
		{"GET", "/items/42", nil, "regex"},
		{"GET", "/items/4x", nil, "reviews-v1"},
		{"GET", "/api", nil, "sep"},
		{"GET", "/api/v1", nil, "sep"},
		{"GET", "/apiv1", nil, "reviews-v1"},
		{"GET", "/x", map[string]string{"end-user": "jason"}, "reviews-v2"},
		{"GET", "/x", map[string]string{"end-user": "jasonx"}, "reviews-v1"},
		{"GET", "/x", map[string]string{"x-version": "v3"}, "header-regex"},
		{"GET", "/x", map[string]string{"x-version": "v33"}, "reviews-v1"},
		{"GET", "/inv", nil, "no-skip"},
		{"GET", "/inv", map[string]string{"x-skip": "1"}, "reviews-v1"},
		{"GET", "/x?debug=1", nil, "query"},
		{"GET", "/x?debug=2", nil, "reviews-v1"},
		{"DELETE", "/x", nil, "method"},
		{"GET", "/case/x", nil, "case"},
	} {
		r := m.do(c, tc.method, "http://reviews:9080"+tc.path, tc.hdr, "")
		got := r.echo.Pod
		if got == "" {
			got = r.body
		}
		if r.code != 200 || got != tc.want {
			t.Errorf("%s %s %v: status %d, got %q, want %q", tc.method, tc.path, tc.hdr, r.code, got, tc.want)
		}
	}
	// No route matches: 404 with flag NR.
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", routes[:1]))
	if r := m.get(c, "http://reviews:9080/nothing", nil); r.code != 404 {
		t.Fatalf("unmatched request: status %d, want 404", r.code)
	}
	if l := accessLines(t, m.logBuf.String()); l[len(l)-1]["response_flags"] != "NR" {
		t.Fatalf("unmatched request logged with flags %v", l[len(l)-1]["response_flags"])
	}
}

func TestWeightedSplit(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{{Name: "canary", Match: prefix("/"),
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: subset("v1"), Weight: u32(80)}, {Name: subset("v2"), Weight: u32(20)}}}}}}}}))
	c := m.httpClient(reviewsVIP+":9080", true)
	const n = 400
	count := map[string]int{}
	for range n {
		count[m.get(c, "http://reviews:9080/", nil).echo.Pod]++
	}
	frac := float64(count["reviews-v2"]) / n
	// 20% ± 6 points: a binomial(400, 0.2) is outside this with p < 0.3%.
	if math.Abs(frac-0.2) > 0.06 || count["reviews-v1"]+count["reviews-v2"] != n {
		t.Fatalf("split %v, want about 80/20", count)
	}
}

func TestHeaderManipulation(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	add := func(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
	}
	rt := routeTo("r", prefix("/"), subset("v1"))
	rt.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		add("x-added", "a", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		add("x-set", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
	}
	rt.RequestHeadersToRemove = []string{"x-remove"}
	rt.ResponseHeadersToAdd = []*corev3.HeaderValueOption{add("x-resp", "yes", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	rt.ResponseHeadersToRemove = []string{"x-backend"}
	vh := &routev3.VirtualHost{Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{rt},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{add("x-vhost", "1", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}}
	m.push(config.ListenerTypeURL, httpListenerVH(reviews+":9080", vh))
	c := m.httpClient(reviewsVIP+":9080", false)
	r := m.get(c, "http://reviews:9080/", map[string]string{"x-added": "orig", "x-set": "old", "x-remove": "bye"})
	h := r.echo.Headers
	if h["x-added"] != "orig,a" || h["x-set"] != "new" || h["x-remove"] != "" {
		t.Fatalf("request headers upstream: %v", h)
	}
	if r.hdr.Get("x-resp") != "yes" || r.hdr.Get("x-backend") != "" || r.hdr.Get("x-vhost") != "1" {
		t.Fatalf("response headers: %v", r.hdr)
	}
}

func TestRedirectDirectResponseAndRewrite(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	rewrite := routeTo("rewrite", prefix("/v1/"), subset("v1"))
	rewrite.GetRoute().PrefixRewrite = "/api/"
	rewrite.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "internal.example"}
	rx := routeTo("regex-rewrite", prefix("/users/"), subset("v1"))
	rx.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/users/([0-9]+)/profile$"}, Substitution: "/profiles/\\1"}
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{
		{Name: "redirect", Match: prefix("/old"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			HostRedirect: "new.example", PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}, ResponseCode: routev3.RedirectAction_FOUND}}},
		{Name: "redirect-prefix", Match: prefix("/moved/"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/here/"}, SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}}},
		{Name: "direct", Match: prefix("/teapot"), Action: direct(418, "short and stout")},
		rewrite, rx,
	}))
	c := m.httpClient(reviewsVIP+":9080", false)
	r := m.get(c, "http://reviews:9080/old?q=1", nil)
	if r.code != 302 || r.hdr.Get("Location") != "http://new.example/new?q=1" {
		t.Fatalf("redirect: %d %q", r.code, r.hdr.Get("Location"))
	}
	r = m.get(c, "http://reviews:9080/moved/a/b", nil)
	if r.code != 301 || r.hdr.Get("Location") != "https://reviews:9080/here/a/b" {
		t.Fatalf("prefix redirect: %d %q", r.code, r.hdr.Get("Location"))
	}
	r = m.get(c, "http://reviews:9080/teapot", nil)
	if r.code != 418 || r.body != "short and stout" {
		t.Fatalf("direct response: %d %q", r.code, r.body)
	}
	r = m.get(c, "http://reviews:9080/v1/items?x=1", nil)
	if r.echo.Path != "/api/items?x=1" || r.echo.Host != "internal.example" {
		t.Fatalf("rewrite: backend saw %q host %q", r.echo.Path, r.echo.Host)
	}
	r = m.get(c, "http://reviews:9080/users/7/profile", nil)
	if r.echo.Path != "/profiles/7" {
		t.Fatalf("regex rewrite: backend saw %q", r.echo.Path)
	}
}

func TestRequestTimeout(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	subsets(m, clusterv3.Cluster_ROUND_ROBIN)
	rt := routeTo("r", prefix("/"), subset("v1"))
	rt.GetRoute().Timeout = dur(150 * time.Millisecond)
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{rt}))
	c := m.httpClient(reviewsVIP+":9080", false)
	start := time.Now()
	r := m.get(c, "http://reviews:9080/?delay=2s", nil)
	if r.code != 504 || r.body != "upstream request timeout" {
		t.Fatalf("slow backend: %d %q, want 504", r.code, r.body)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("timeout took %v", el)
	}
	if r := m.get(c, "http://reviews:9080/?delay=10ms", nil); r.code != 200 {
		t.Fatalf("fast request: %d", r.code)
	}
	l := accessLines(t, m.logBuf.String())
	if l[len(l)-2]["response_flags"] != "UT" {
		t.Fatalf("timeout logged with flags %v", l[len(l)-2]["response_flags"])
	}
}

func wrapBool(b bool) *wrapperspbBool { return newBool(b) }

func toMsgs[T interface{ ProtoReflect() protoreflectMessage }](xs []T) []protoMessage {
	out := make([]protoMessage, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

var _ = strings.Contains
