package l7

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
)

// JWKSClusterName is the cluster remote JWKS are fetched through; the
// waypoint resolves it itself (the contract's literal "jwks").
const JWKSClusterName = "jwks"

// defaultJWKSTimeout bounds a remote JWKS fetch when the rule sets none.
const defaultJWKSTimeout = 5 * time.Second

// attachRequestAuthentications attaches RequestAuthentications with
// targetRefs to the services they cover. Selector-scoped ones configure
// sidecars and gateways, not waypoints.
func (b *builder) attachRequestAuthentications() {
	for _, ra := range b.reqAuthn {
		refs := allTargetRefs(ra.Spec.TargetRef, ra.Spec.TargetRefs)
		if len(refs) == 0 {
			continue
		}
		if len(ra.Spec.GetSelector().GetMatchLabels()) > 0 {
			b.problem(kindRequestAuthentication, ra.Namespace, ra.Name, "selector and targetRefs are exclusive; ignored")
			continue
		}
		if reasons := validateJWTRules(ra); len(reasons) > 0 {
			// The valid rules still apply, and an invalid rule's issuer
			// still gets its tokens refused (jwtFilter): dropping the
			// policy would let forged tokens through to the app.
			b.problem(kindRequestAuthentication, ra.Namespace, ra.Name,
				"invalid: "+joinReasons(reasons)+"; tokens of an invalid rule's issuer are refused until it is fixed")
		}
		for _, ref := range refs {
			for _, s := range b.policyTarget(kindRequestAuthentication, ra.Namespace, ra.Name, ref) {
				if !slices.Contains(s.att.reqAuthn, ra) {
					s.att.reqAuthn = append(s.att.reqAuthn, ra)
				}
			}
		}
	}
}

func joinReasons(r []string) string {
	s := ""
	for i, x := range r {
		if i > 0 {
			s += "; "
		}
		s += x
	}
	return s
}

func validateJWTRules(ra *securityv1.RequestAuthentication) []string {
	var r []string
	for i, rule := range ra.Spec.JwtRules {
		r = append(r, validateJWTRule(i, rule)...)
	}
	return r
}

// validateJWTRule checks jwtRules[i].
func validateJWTRule(i int, rule *securityapi.JWTRule) []string {
	var r []string
	if rule == nil {
		return []string{fmt.Sprintf("jwtRules[%d] is empty", i)}
	}
	if rule.Issuer == "" {
		r = append(r, fmt.Sprintf("jwtRules[%d] has no issuer", i))
	}
	switch {
	case rule.Jwks != "" && rule.JwksUri != "":
		r = append(r, fmt.Sprintf("jwtRules[%d]: jwks and jwksUri are exclusive", i))
	case rule.Jwks != "":
		if err := checkJWKS(rule.Jwks); err != nil {
			r = append(r, fmt.Sprintf("jwtRules[%d]: jwks %v", i, err))
		}
	case rule.JwksUri != "":
		u, err := url.Parse(rule.JwksUri)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			r = append(r, fmt.Sprintf("jwtRules[%d]: jwksUri %q is not an http(s) URL", i, rule.JwksUri))
		}
	default:
		// Istio would discover the keys from the issuer's OpenID
		// configuration; the waypoint configuration does not.
		r = append(r, fmt.Sprintf("jwtRules[%d]: needs jwks or jwksUri (OpenID discovery is not supported)", i))
	}
	for _, h := range rule.FromHeaders {
		if h == nil || !validHeaderName(h.Name) {
			r = append(r, fmt.Sprintf("jwtRules[%d]: fromHeaders needs valid header names", i))
			break
		}
	}
	if rule.OutputPayloadToHeader != "" && !validHeaderName(rule.OutputPayloadToHeader) {
		r = append(r, fmt.Sprintf("jwtRules[%d]: outputPayloadToHeader is not a header name", i))
	}
	for _, c := range rule.OutputClaimToHeaders {
		if c == nil || !validHeaderName(c.Header) || c.Claim == "" {
			r = append(r, fmt.Sprintf("jwtRules[%d]: outputClaimToHeaders needs a header and a claim", i))
			break
		}
	}
	if rule.Timeout != nil && !positive(rule.Timeout) {
		r = append(r, fmt.Sprintf("jwtRules[%d]: timeout must be positive", i))
	}
	return r
}

// refuseAllJWKS is a key set no token verifies against: one P-256 public
// key whose private key was discarded when it was generated (only this
// public half was ever written down). An invalid rule's issuer gets it, so
// that its tokens are refused (401) rather than let through unverified.
// It is a constant so that the configuration is the same on every build.
const refuseAllJWKS = `{"keys":[{"use":"sig","kty":"EC","kid":"zmesh-refuse-all","crv":"P-256","alg":"ES256",` +
	`"x":"ckiDtke4ny1lPJKRh3stekEV0WPzW6MdZtyhBQbhPL0","y":"gVAKcmQKWaXJdLHTlc00biwIotsbwCfFYemhrH-YoVE"}]}`

// jwtFilter builds the jwt_authn configuration of a listener from the
// RequestAuthentications attached to it, and returns the issuers it
// verifies. One provider per issuer (the first rule for an issuer wins);
// a request without a token passes, one with an invalid token is refused
// with 401 (Istio's RequestAuthentication semantics).
func (b *builder) jwtFilter(ras []*securityv1.RequestAuthentication) (*jwtv3.JwtAuthentication, []string) {
	providers := map[string]*jwtv3.JwtProvider{}
	var issuers []string
	for _, ra := range ras {
		for i, rule := range ra.Spec.JwtRules {
			if len(validateJWTRule(i, rule)) > 0 {
				if rule == nil || rule.Issuer == "" {
					continue // no issuer to refuse tokens of
				}
				rule = &securityapi.JWTRule{Issuer: rule.Issuer, Jwks: refuseAllJWKS}
			}
			if _, dup := providers[rule.Issuer]; dup {
				b.problem(kindRequestAuthentication, ra.Namespace, ra.Name, fmt.Sprintf("issuer %q is already configured for this service; this rule is ignored there", rule.Issuer))
				continue
			}
			p := &jwtv3.JwtProvider{
				Issuer:               rule.Issuer,
				Audiences:            rule.Audiences,
				FromParams:           rule.FromParams,
				FromCookies:          rule.FromCookies,
				Forward:              rule.ForwardOriginalToken,
				ForwardPayloadHeader: rule.OutputPayloadToHeader,
				PayloadInMetadata:    rule.Issuer,
			}
			for _, h := range rule.FromHeaders {
				p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.Name, ValuePrefix: h.Prefix})
			}
			for _, c := range rule.OutputClaimToHeaders {
				p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: c.Header, ClaimName: c.Claim})
			}
			if rule.Jwks != "" {
				p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
					Specifier: &corev3.DataSource_InlineString{InlineString: rule.Jwks},
				}}
			} else {
				timeout := defaultJWKSTimeout
				if rule.Timeout != nil {
					timeout = rule.Timeout.AsDuration()
				}
				p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
					HttpUri: &corev3.HttpUri{
						Uri:              rule.JwksUri,
						HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: JWKSClusterName},
						Timeout:          durationpb.New(timeout),
					},
				}}
			}
			providers[rule.Issuer] = p
			issuers = append(issuers, rule.Issuer)
		}
	}
	if len(providers) == 0 {
		return nil, nil
	}
	slices.Sort(issuers)
	var reqs []*jwtv3.JwtRequirement
	for _, iss := range issuers {
		reqs = append(reqs, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: iss}})
	}
	reqs = append(reqs, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	return &jwtv3.JwtAuthentication{
		Providers: providers,
		Rules: []*jwtv3.RequirementRule{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
				RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: reqs}},
			}},
		}},
	}, issuers
}

// checkJWKS checks an inline key set the way the waypoint reads it: every
// key must parse, and at least one must be a valid public signing key. A
// listener whose key set the waypoint refuses would be NACKed as a whole,
// dropping its policy filters, so such a set is refused here instead.
func checkJWKS(v string) error {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(v), &raw); err != nil {
		return fmt.Errorf("is not a JSON key set: %w", err)
	}
	usable := 0
	for i, k := range raw.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(k); err != nil {
			return fmt.Errorf("key %d: %w", i, err)
		}
		if !key.IsPublic() {
			key = key.Public()
		}
		if key.Valid() && (key.Use == "" || key.Use == "sig") {
			usable++
		}
	}
	if usable == 0 {
		return fmt.Errorf("holds no usable signing key")
	}
	return nil
}
