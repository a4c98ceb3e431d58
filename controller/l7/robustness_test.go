package l7

import (
	"os"
	"path/filepath"
	"testing"

	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	typeapi "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

func meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "demo"}
}

// robustBase is a waypoint and a bound service the odd objects attach to.
func robustBase() *index.Inputs {
	return &index.Inputs{
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{index.LabelUseWaypoint: "waypoint"}}}},
		Gateways: []*gatewayv1.Gateway{{
			ObjectMeta: meta("waypoint"),
			Spec: gatewayv1.GatewaySpec{GatewayClassName: index.WaypointGatewayClass, Listeners: []gatewayv1.Listener{
				{Name: "mesh", Port: 15008, Protocol: index.ListenerProtocolHBONE},
			}},
			Status: gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{Value: "10.96.0.1"}}},
		}},
		Services: []*corev1.Service{{
			ObjectMeta: meta("svc"),
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "a"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "tcp", Port: 81}}},
		}},
	}
}

// robustCases add odd objects to robustBase.
var robustCases = func() []robustCase {
	svcRef := gatewayv1.ParentReference{Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "svc"}
	return []robustCase{
		{"nil objects", func(in *index.Inputs) {
			in.HTTPRoutes = append(in.HTTPRoutes, nil)
			in.VirtualServices = append(in.VirtualServices, nil)
			in.DestinationRules = append(in.DestinationRules, nil)
			in.AuthorizationPolicies = append(in.AuthorizationPolicies, nil)
			in.RequestAuthentications = append(in.RequestAuthentications, nil)
			in.Telemetries = append(in.Telemetries, nil)
			in.Pods = append(in.Pods, nil)
			in.Services = append(in.Services, nil)
			in.Gateways = append(in.Gateways, nil)
			in.ServiceEntries = append(in.ServiceEntries, nil)
			in.TCPRoutes = append(in.TCPRoutes, nil)
			in.GRPCRoutes = append(in.GRPCRoutes, nil)
		}},
		{"nameless objects", func(in *index.Inputs) {
			in.HTTPRoutes = append(in.HTTPRoutes, &gatewayv1.HTTPRoute{})
			in.VirtualServices = append(in.VirtualServices, &networkingv1.VirtualService{})
		}},
		{"virtual service nil parts", func(in *index.Inputs) {
			in.VirtualServices = append(in.VirtualServices, &networkingv1.VirtualService{
				ObjectMeta: meta("vs"),
				Spec: networkingapi.VirtualService{
					Hosts: []string{"svc"},
					Http: []*networkingapi.HTTPRoute{nil, {Match: []*networkingapi.HTTPMatchRequest{nil, {Uri: &networkingapi.StringMatch{}, Headers: map[string]*networkingapi.StringMatch{"x": nil, "": nil}, WithoutHeaders: map[string]*networkingapi.StringMatch{"": {}}, QueryParams: map[string]*networkingapi.StringMatch{"q": nil, "": nil}}},
						Route:   []*networkingapi.HTTPRouteDestination{nil, {Destination: nil}, {Destination: &networkingapi.Destination{Host: "svc", Port: &networkingapi.PortSelector{}}}},
						Fault:   &networkingapi.HTTPFaultInjection{Delay: &networkingapi.HTTPFaultInjection_Delay{}, Abort: &networkingapi.HTTPFaultInjection_Abort{}},
						Retries: &networkingapi.HTTPRetry{Attempts: -1}, Mirrors: []*networkingapi.HTTPMirrorPolicy{nil, {}},
						Headers: &networkingapi.Headers{}, Rewrite: &networkingapi.HTTPRewrite{UriRegexRewrite: &networkingapi.RegexRewrite{}}},
						{Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "svc"}}}, Mirror: &networkingapi.Destination{}, MirrorPercent: nil,
							DirectResponse: &networkingapi.HTTPDirectResponse{Status: 200, Body: &networkingapi.HTTPBody{}}}},
					Tcp: []*networkingapi.TCPRoute{nil, {Match: []*networkingapi.L4MatchAttributes{nil}, Route: []*networkingapi.RouteDestination{nil, {}}}},
				},
			})
		}},
		{"destination rule nil parts", func(in *index.Inputs) {
			in.DestinationRules = append(in.DestinationRules, &networkingv1.DestinationRule{
				ObjectMeta: meta("dr"),
				Spec: networkingapi.DestinationRule{Host: "svc", TrafficPolicy: &networkingapi.TrafficPolicy{
					LoadBalancer:      &networkingapi.LoadBalancerSettings{LbPolicy: &networkingapi.LoadBalancerSettings_ConsistentHash{}},
					ConnectionPool:    &networkingapi.ConnectionPoolSettings{},
					OutlierDetection:  &networkingapi.OutlierDetection{},
					PortLevelSettings: []*networkingapi.TrafficPolicy_PortTrafficPolicy{nil, {}},
				}, Subsets: []*networkingapi.Subset{nil}},
			})
			in.DestinationRules = append(in.DestinationRules, &networkingv1.DestinationRule{
				ObjectMeta: meta("dr2"),
				Spec: networkingapi.DestinationRule{Host: "svc", TrafficPolicy: &networkingapi.TrafficPolicy{
					LoadBalancer:     &networkingapi.LoadBalancerSettings{},
					ConnectionPool:   &networkingapi.ConnectionPoolSettings{Tcp: &networkingapi.ConnectionPoolSettings_TCPSettings{}, Http: &networkingapi.ConnectionPoolSettings_HTTPSettings{}},
					OutlierDetection: &networkingapi.OutlierDetection{Interval: nil},
				}, Subsets: []*networkingapi.Subset{{Name: "s"}}},
			})
		}},
		{"gateway routes nil parts", func(in *index.Inputs) {
			in.HTTPRoutes = append(in.HTTPRoutes, &gatewayv1.HTTPRoute{
				ObjectMeta: meta("r"),
				Spec: gatewayv1.HTTPRouteSpec{
					CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{svcRef, {Kind: ptr(gatewayv1.Kind("Service"))}}},
					Rules: []gatewayv1.HTTPRouteRule{{
						Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{}}, {Headers: []gatewayv1.HTTPHeaderMatch{{}}}},
						Filters:     []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier}}}},
						BackendRefs: []gatewayv1.HTTPBackendRef{{}, {BackendRef: gatewayv1.BackendRef{Weight: ptr(int32(-1))}}},
						Timeouts:    &gatewayv1.HTTPRouteTimeouts{},
						Retry:       &gatewayv1.HTTPRouteRetry{Attempts: ptr(-1)},
					}, {
						Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.FullPathHTTPPathModifier}}}},
					}},
				},
			})
			in.GRPCRoutes = append(in.GRPCRoutes, &gatewayv1.GRPCRoute{
				ObjectMeta: meta("g"),
				Spec: gatewayv1.GRPCRouteSpec{
					CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{svcRef}},
					Rules:           []gatewayv1.GRPCRouteRule{{Matches: []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{}}}}, {BackendRefs: []gatewayv1.GRPCBackendRef{{}}}},
				},
			})
			in.TCPRoutes = append(in.TCPRoutes, &gatewayv1.TCPRoute{
				ObjectMeta: meta("t"),
				Spec: gatewayv1.TCPRouteSpec{
					CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{svcRef}},
					Rules:           []gatewayv1.TCPRouteRule{{BackendRefs: []gatewayv1.BackendRef{{}}}},
				},
			})
		}},
		{"policies nil parts", func(in *index.Inputs) {
			in.AuthorizationPolicies = append(in.AuthorizationPolicies, &securityv1.AuthorizationPolicy{
				ObjectMeta: meta("ap"),
				Spec: securityapi.AuthorizationPolicy{
					TargetRefs: []*typeapi.PolicyTargetReference{nil, {Kind: "Service", Name: "svc"}},
					Rules:      []*securityapi.Rule{nil, {From: []*securityapi.Rule_From{nil, {}}, To: []*securityapi.Rule_To{nil, {}}, When: []*securityapi.Condition{nil, {}, {Key: "request.auth.claims[]"}, {Key: "source.ip", Values: []string{"bogus"}, NotValues: []string{"bogus"}}}}},
				},
			})
			in.AuthorizationPolicies = append(in.AuthorizationPolicies, &securityv1.AuthorizationPolicy{
				ObjectMeta: meta("ap-deny"),
				Spec: securityapi.AuthorizationPolicy{
					Action:     securityapi.AuthorizationPolicy_DENY,
					TargetRefs: []*typeapi.PolicyTargetReference{{Kind: "Service", Name: "svc"}},
					Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{Source: &securityapi.Source{NotIpBlocks: []string{"x"}, RequestPrincipals: []string{"noslash"}}}},
						To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{NotPorts: []string{"x"}, Paths: []string{"/a/{*}"}}}}}},
				},
			})
			in.RequestAuthentications = append(in.RequestAuthentications, &securityv1.RequestAuthentication{
				ObjectMeta: meta("ra"),
				Spec: securityapi.RequestAuthentication{
					TargetRefs: []*typeapi.PolicyTargetReference{{Kind: "Service", Name: "svc"}},
					JwtRules:   []*securityapi.JWTRule{nil, {Issuer: "i", Jwks: "{", FromHeaders: []*securityapi.JWTHeader{nil}}},
				},
			})
			in.Telemetries = append(in.Telemetries, &telemetryv1.Telemetry{
				ObjectMeta: meta("tm"),
				Spec: telemetryapi.Telemetry{
					TargetRefs:    []*typeapi.PolicyTargetReference{nil, {Kind: "Service", Name: "svc"}, {Kind: "Pod", Name: "x"}},
					AccessLogging: []*telemetryapi.AccessLogging{nil, {Providers: []*telemetryapi.ProviderRef{nil}}, {Filter: &telemetryapi.AccessLogging_Filter{}}},
				},
			})
		}},
	}
}()

type robustCase struct {
	name string
	add  func(in *index.Inputs)
}

// TestRobustness feeds objects with nil and empty fields in every place
// the API allows them (and some it does not): Build must not panic, every
// resource must validate, and the bound service must keep its listeners.
func TestRobustness(t *testing.T) {
	for _, tc := range robustCases {
		t.Run(tc.name, func(t *testing.T) {
			in := robustBase()
			tc.add(in)
			out := Build(Config{}, in)
			if err := validateOutput(out); err != nil {
				t.Fatalf("invalid resource: %v", err)
			}
			names := map[string]bool{}
			for _, l := range out.Listeners {
				names[l.Name] = true
			}
			for _, want := range []string{"demo/svc.demo.svc.cluster.local:80", "demo/svc.demo.svc.cluster.local:81"} {
				if !names[want] {
					t.Errorf("listener %s missing; problems: %v", want, out.Problems)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// FuzzBuild decodes mutated test manifests leniently and builds them:
// Build must not panic and every resource must pass validation.
func FuzzBuild(f *testing.F) {
	paths, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	s := manifesttest.Scheme()
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, in, err := decodeInputs(s, data, false)
		if err != nil {
			return
		}
		out := Build(cfg, in)
		if err := validateOutput(out); err != nil {
			t.Fatalf("invalid resource: %v", err)
		}
	})
}
