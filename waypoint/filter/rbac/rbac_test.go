package rbac

import (
	"net/http/httptest"
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

var (
	anyPerm = &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
	anyID   = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
)

func method(m string) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m)}}}}
}

func authn(id string) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: exact(id)}}}
}

func claim(path []string, v string) *rbacconfigv3.Principal {
	var segs []*matcherv3.MetadataMatcher_PathSegment
	for _, p := range path {
		segs = append(segs, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: p}})
	}
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{ //nolint:staticcheck // contract form
		Filter: "envoy.filters.http.jwt_authn", Path: segs, Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(v)}}}}}
}

func TestEvaluate(t *testing.T) {
	engine := func(action rbacconfigv3.RBAC_Action, p *rbacconfigv3.Policy) *Engine {
		e, err := Compile(&rbacconfigv3.RBAC{Action: action, Policies: map[string]*rbacconfigv3.Policy{"p": p}})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	get := httptest.NewRequest("GET", "/x", nil)
	post := httptest.NewRequest("POST", "/admin/x", nil)
	alice := "spiffe://cluster.local/ns/a/sa/alice"
	src := netip.MustParseAddr("10.1.2.3")
	md := map[string]map[string]any{"envoy.filters.http.jwt_authn": {"https://iss": map[string]any{"groups": []any{"eng", "ops"}, "sub": "bob"}}}
	cidr := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: "10.1.0.0", PrefixLen: wrapperspb.UInt32(16)}}}
	not := &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_NotRule{NotRule: method("GET")}}
	port := &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_DestinationPort{DestinationPort: 9080}}
	for _, tc := range []struct {
		name  string
		e     *Engine
		attrs Attributes
		want  bool
	}{
		{"nil engine allows", nil, Attributes{}, true},
		{"allow principal", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{anyPerm}, Principals: []*rbacconfigv3.Principal{authn(alice)}}), Attributes{Request: get, Principal: alice}, true},
		{"allow other principal", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{anyPerm}, Principals: []*rbacconfigv3.Principal{authn(alice)}}), Attributes{Request: get, Principal: "spiffe://cluster.local/ns/a/sa/eve"}, false},
		{"unauthenticated never matches a principal", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{anyPerm}, Principals: []*rbacconfigv3.Principal{authn("")}}), Attributes{Request: get}, false},
		{"deny method", engine(rbacconfigv3.RBAC_DENY, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{method("POST")}, Principals: []*rbacconfigv3.Principal{anyID}}), Attributes{Request: post}, false},
		{"deny other method", engine(rbacconfigv3.RBAC_DENY, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{method("POST")}, Principals: []*rbacconfigv3.Principal{anyID}}), Attributes{Request: get}, true},
		{"header rule on TCP never matches", engine(rbacconfigv3.RBAC_DENY, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{method("POST")}, Principals: []*rbacconfigv3.Principal{anyID}}), Attributes{}, true},
		{"not rule", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{not}, Principals: []*rbacconfigv3.Principal{anyID}}), Attributes{Request: post}, true},
		{"source cidr", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{port}, Principals: []*rbacconfigv3.Principal{cidr}}), Attributes{SourceIP: src, DestinationPort: 9080}, true},
		{"source cidr miss", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{port}, Principals: []*rbacconfigv3.Principal{cidr}}), Attributes{SourceIP: netip.MustParseAddr("10.2.0.1"), DestinationPort: 9080}, false},
		{"claim in list", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{anyPerm}, Principals: []*rbacconfigv3.Principal{claim([]string{"https://iss", "groups"}, "ops")}}), Attributes{Metadata: md}, true},
		{"claim scalar", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{anyPerm}, Principals: []*rbacconfigv3.Principal{claim([]string{"https://iss", "sub"}, "bob")}}), Attributes{Metadata: md}, true},
		{"claim missing", engine(rbacconfigv3.RBAC_ALLOW, &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{anyPerm}, Principals: []*rbacconfigv3.Principal{claim([]string{"https://iss", "groups"}, "ops")}}), Attributes{}, false},
	} {
		if got := tc.e.Allowed(&tc.attrs); got != tc.want {
			t.Errorf("%s: allowed=%v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCompileRejects(t *testing.T) {
	for name, rules := range map[string]*rbacconfigv3.RBAC{
		"no principals": {Policies: map[string]*rbacconfigv3.Policy{"p": {Permissions: []*rbacconfigv3.Permission{anyPerm}}}},
		"empty and":     {Policies: map[string]*rbacconfigv3.Policy{"p": {Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_AndRules{AndRules: &rbacconfigv3.Permission_Set{}}}}, Principals: []*rbacconfigv3.Principal{anyID}}}},
		"log action":    {Action: rbacconfigv3.RBAC_LOG},
		"bad cidr":      {Policies: map[string]*rbacconfigv3.Policy{"p": {Permissions: []*rbacconfigv3.Permission{anyPerm}, Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "nope"}}}}}}},
	} {
		if _, err := Compile(rules); err == nil {
			t.Errorf("%s: compiled, want an error", name)
		}
	}
}
