package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zmesh/zmesh/waypoint/config"
)

func rbacFilter(name string, action rbacconfigv3.RBAC_Action, policies map[string]*rbacconfigv3.Policy) *hcmHTTPFilter {
	return httpFilter(name, &rbachttpv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: action, Policies: policies}})
}

func anyPrincipal() []*rbacconfigv3.Principal {
	return []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}}
}

func anyPermission() []*rbacconfigv3.Permission {
	return []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}}
}

func principalName(id string) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: exact(id)}}}
}

func pathPerm(p string) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}}}}}}
}

func headerPerm(name, v string) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: header(name, exact(v))}}
}

func andPerms(ps ...*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_AndRules{AndRules: &rbacconfigv3.Permission_Set{Rules: ps}}}
}

func claimPrincipal(issuer, claim, value string) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Metadata{Metadata: //nolint:staticcheck // the contract carries claims this way
	&matcherv3.MetadataMatcher{
		Filter: "envoy.filters.http.jwt_authn",
		Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: issuer}}, {Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: claim}}},
		Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(value)}}}}}},
	}}}
}

func TestAuthorizationPolicy(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	m.push(config.ClusterTypeURL, cluster(allReviews, clusterv3.Cluster_ROUND_ROBIN))
	routes := []*routev3.Route{routeTo("r", prefix("/"), allReviews)}
	c := m.httpClient(reviewsVIP+":9080", false)

	// DENY: DELETE on /admin from anyone.
	deny := rbacFilter("envoy.filters.http.rbac/deny", rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{
		"ns[demo]-policy[no-admin-delete]-rule[0]": {Permissions: []*rbacconfigv3.Permission{andPerms(pathPerm("/admin"), headerPerm(":method", "DELETE"))}, Principals: anyPrincipal()},
	})
	// ALLOW: the client's identity may GET anything; other principals only /public.
	allow := rbacFilter("envoy.filters.http.rbac/allow", rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"ns[demo]-policy[client]-rule[0]": {Permissions: []*rbacconfigv3.Permission{headerPerm(":method", "GET"), headerPerm(":method", "DELETE")},
			Principals: []*rbacconfigv3.Principal{principalName(clientID.String())}},
		"ns[demo]-policy[public]-rule[0]": {Permissions: []*rbacconfigv3.Permission{pathPerm("/public")}, Principals: anyPrincipal()},
		"ns[demo]-policy[header]-rule[0]": {Permissions: []*rbacconfigv3.Permission{headerPerm("x-token", "open-sesame")}, Principals: anyPrincipal()},
	})
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", routes, deny, allow))
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		want         int
	}{
		{"GET", "/anything", nil, 200},                                  // principal allowed
		{"DELETE", "/items", nil, 200},                                  // principal allowed
		{"DELETE", "/admin/users", nil, 403},                            // deny wins
		{"POST", "/items", nil, 403},                                    // no allow matches
		{"POST", "/public/form", nil, 200},                              // path allowed for anyone
		{"PUT", "/x", map[string]string{"x-token": "open-sesame"}, 200}, // header allowed
		{"PUT", "/x", map[string]string{"x-token": "nope"}, 403},
	} {
		r := m.do(c, tc.method, "http://reviews:9080"+tc.path, tc.hdr, "")
		if r.code != tc.want {
			t.Errorf("%s %s %v: %d, want %d", tc.method, tc.path, tc.hdr, r.code, tc.want)
		}
		if r.code == 403 && r.body != "RBAC: access denied" {
			t.Errorf("403 body %q", r.body)
		}
	}
	// An ALLOW policy naming another principal denies this client.
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", routes, rbacFilter("envoy.filters.http.rbac/allow", rbacconfigv3.RBAC_ALLOW,
		map[string]*rbacconfigv3.Policy{"p": {Permissions: anyPermission(), Principals: []*rbacconfigv3.Principal{principalName("spiffe://cluster.local/ns/demo/sa/other")}}})))
	if r := m.get(c, "http://reviews:9080/", nil); r.code != 403 {
		t.Fatalf("other principal allowed only: %d", r.code)
	}
	if l := accessLines(t, m.logBuf.String()); l[len(l)-1]["response_flags"] != "RBAC" {
		t.Fatalf("denial flag %v", l[len(l)-1]["response_flags"])
	}
}

// TestSourceAddressClaims: a tunnel's Forwarded source address counts
// (for source-IP policy and the access log) only when it is a workload
// with the tunnel's own identity; any mesh certificate can send the
// header, so a claim to be another workload is ignored.
func TestSourceAddressClaims(t *testing.T) {
	m, v1, _ := reviewsMesh(t)
	m.push(config.ClusterTypeURL, cluster(allReviews, clusterv3.Cluster_ROUND_ROBIN))
	routes := []*routev3.Route{routeTo("r", prefix("/"), allReviews)}
	// ALLOW only from the client pod's address, or from reviews-v1's.
	allow := rbacFilter("envoy.filters.http.rbac/allow", rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"ns[demo]-policy[from-v1]-rule[0]": {Permissions: anyPermission(), Principals: []*rbacconfigv3.Principal{
			{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: v1.ip.String(), PrefixLen: wrapperspb.UInt32(32)}}}}},
		"ns[demo]-policy[from-client]-rule[0]": {Permissions: []*rbacconfigv3.Permission{pathPerm("/client")}, Principals: []*rbacconfigv3.Principal{
			{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: clientIP.String(), PrefixLen: wrapperspb.UInt32(32)}}}}},
	})
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", routes, allow))
	for _, tc := range []struct {
		name string
		src  netip.AddrPort
		path string
		want int
		addr string // the access log's downstream_remote_address, "" for the tunnel's own
	}{
		{"own address", netip.AddrPortFrom(clientIP, 40000), "/client", 200, "10.1.0.5:40000"},
		{"another workload's address", netip.AddrPortFrom(v1.ip, 40001), "/", 403, ""},
		{"an unknown address", netip.MustParseAddrPort("10.9.9.9:40002"), "/", 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := m.httpClientFrom(reviewsVIP+":9080", false, tc.src)
			if r := m.get(c, "http://reviews:9080"+tc.path, nil); r.code != tc.want {
				t.Fatalf("status %d, want %d", r.code, tc.want)
			}
			l := accessLines(t, m.logBuf.String())
			got, _ := l[len(l)-1]["downstream_remote_address"].(string)
			if tc.addr != "" && got != tc.addr || tc.addr == "" && !strings.HasPrefix(got, "127.0.0.1:") {
				t.Fatalf("downstream_remote_address %q", got)
			}
		})
	}
}

// issuer signs tokens with an EC key and serves its JWKS.
type issuer struct {
	name string
	key  *ecdsa.PrivateKey
	jwks string
}

func newIssuer(t *testing.T, name string) *issuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{name: name, key: key, jwks: string(b)}
}

func (i *issuer) token(t *testing.T, claims map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: i.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	base := map[string]any{"iss": i.name, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "aud": []string{"reviews"}}
	for k, v := range claims {
		base[k] = v
	}
	tok, err := josejwt.Signed(s).Claims(base).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRequestAuthenticationJWT(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	m.push(config.ClusterTypeURL, cluster(allReviews, clusterv3.Cluster_ROUND_ROBIN))
	local := newIssuer(t, "https://local.example")
	remote := newIssuer(t, "https://remote.example")
	fetches := 0
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches++
		_, _ = w.Write([]byte(remote.jwks))
	}))
	defer jwksSrv.Close()
	authn := httpFilter("envoy.filters.http.jwt_authn", &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{
		"local": {Issuer: local.name, Audiences: []string{"reviews"}, PayloadInMetadata: local.name, Forward: true,
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: local.jwks}}}},
		"remote": {Issuer: remote.name, PayloadInMetadata: remote.name,
			JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{HttpUri: &corev3.HttpUri{Uri: jwksSrv.URL + "/jwks",
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "jwks"}, Timeout: dur(2 * time.Second)}}}},
	}})
	// Requests to /admin need the claim groups=admins (AuthorizationPolicy request.auth.claims).
	allow := rbacFilter("envoy.filters.http.rbac/allow", rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"admins": {Permissions: []*rbacconfigv3.Permission{pathPerm("/admin")}, Principals: []*rbacconfigv3.Principal{claimPrincipal(local.name, "groups", "admins")}},
		"others": {Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_NotRule{NotRule: pathPerm("/admin")}}}, Principals: anyPrincipal()},
	})
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{routeTo("r", prefix("/"), allReviews)}, authn, allow))
	c := m.httpClient(reviewsVIP+":9080", false)
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	if r := m.get(c, "http://reviews:9080/", nil); r.code != 200 {
		t.Fatalf("no token: %d, want 200 (RequestAuthentication alone does not require one)", r.code)
	}
	good := local.token(t, map[string]any{"groups": []string{"users"}})
	r := m.get(c, "http://reviews:9080/", bearer(good))
	if r.code != 200 || r.echo.Headers["authorization"] == "" {
		t.Fatalf("valid local token: %d, forwarded authorization %q", r.code, r.echo.Headers["authorization"])
	}
	for name, tok := range map[string]string{
		"garbage":       "not.a.jwt",
		"expired":       local.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}),
		"wrong aud":     local.token(t, map[string]any{"aud": []string{"other"}}),
		"unknown iss":   newIssuer(t, "https://evil.example").token(t, nil),
		"forged by kid": (&issuer{name: local.name, key: remote.key}).token(t, nil),
	} {
		r := m.get(c, "http://reviews:9080/", bearer(tok))
		if r.code != 401 || r.echo.Pod != "" {
			t.Errorf("%s token: %d body %q, want 401", name, r.code, r.body)
		}
	}
	// Remote JWKS: fetched once, token accepted, not forwarded.
	r = m.get(c, "http://reviews:9080/", bearer(remote.token(t, nil)))
	if r.code != 200 || r.echo.Headers["authorization"] != "" {
		t.Fatalf("remote token: %d, forwarded %q", r.code, r.echo.Headers["authorization"])
	}
	m.get(c, "http://reviews:9080/", bearer(remote.token(t, nil)))
	if fetches != 1 {
		t.Fatalf("JWKS fetched %d times, want 1 (cached)", fetches)
	}
	// Claims-based authorization.
	if r := m.get(c, "http://reviews:9080/admin", bearer(good)); r.code != 403 {
		t.Fatalf("users on /admin: %d, want 403", r.code)
	}
	if r := m.get(c, "http://reviews:9080/admin", bearer(local.token(t, map[string]any{"groups": []string{"users", "admins"}}))); r.code != 200 {
		t.Fatalf("admins on /admin: %d, want 200", r.code)
	}
	if r := m.get(c, "http://reviews:9080/admin", nil); r.code != 403 {
		t.Fatalf("anonymous on /admin: %d, want 403", r.code)
	}
}

func TestRejectedListenerFailsClosed(t *testing.T) {
	m, _, _ := reviewsMesh(t)
	c := m.httpClient(reviewsVIP+":9080", false)
	if r := m.get(c, "http://reviews:9080/", nil); r.code != 200 {
		t.Fatalf("default route: %d", r.code)
	}
	// A policy the waypoint cannot enforce (an unsupported permission) is
	// rejected; with no good version, the service is refused rather than
	// served without its policy.
	bad := rbacFilter("envoy.filters.http.rbac/allow", rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"p": {Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_UriTemplate{}}}, Principals: anyPrincipal()}})
	m.push(config.ListenerTypeURL, httpListener(reviews+":9080", []*routev3.Route{routeTo("r", prefix("/"), allReviews)}, bad))
	c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://reviews:9080/", nil)
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("service with a rejected policy served: %d", resp.StatusCode)
	}
	if d := m.wp.Store().Dump(); len(d.Rejected) != 1 {
		t.Fatalf("rejected: %v", d.Rejected)
	}
}
