// Package jwt implements the waypoint's JWT authentication filter with
// Istio RequestAuthentication semantics on top of Envoy's jwt_authn
// configuration: a request without a token passes, a request with a token
// that no provider validates is refused with 401, and a valid token's
// payload is published as metadata (under the provider's
// payload_in_metadata key) for authorization. Keys come from inline JWKS or
// from a JWKS URL fetched and cached by a shared Fetcher.
package jwt

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
)

// FilterName is the filter's name; it is also the metadata namespace the
// payloads are published under.
const FilterName = "envoy.filters.http.jwt_authn"

// Errors returned by Authenticate; their text is the 401 body, as Envoy's.
//
//nolint:staticcheck // the capitalised texts are Envoy's response bodies
var (
	ErrVerification = errors.New("Jwt verification fails")
	ErrExpired      = errors.New("Jwt is expired")
	ErrNotYetValid  = errors.New("Jwt not yet valid")
	ErrIssuer       = errors.New("Jwt issuer is not configured")
	ErrAudience     = errors.New("Audiences in Jwt are not allowed")
	ErrJWKSFetch    = errors.New("Jwks remote fetch is failed")
	ErrNoKey        = errors.New("Jwks doesn't have key to match kid or alg from Jwt")
)

var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// Authenticator is a compiled JwtAuthentication; immutable.
type Authenticator struct {
	providers []*provider
}

type provider struct {
	name      string
	issuer    string
	audiences []string
	keys      keySource
	headers   []location
	params    []string
	forward   bool
	metaKey   string
	skew      time.Duration
}

type location struct{ name, prefix string }

// Compile validates cfg. Remote JWKS are fetched through f.
func Compile(cfg *jwtv3.JwtAuthentication, f *Fetcher) (*Authenticator, error) {
	a := &Authenticator{}
	names := make([]string, 0, len(cfg.GetProviders()))
	for n := range cfg.GetProviders() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p, err := compileProvider(n, cfg.GetProviders()[n], f)
		if err != nil {
			return nil, fmt.Errorf("jwt_authn provider %q: %w", n, err)
		}
		a.providers = append(a.providers, p)
	}
	return a, nil
}

func compileProvider(name string, p *jwtv3.JwtProvider, f *Fetcher) (*provider, error) {
	out := &provider{name: name, issuer: p.GetIssuer(), audiences: p.GetAudiences(), forward: p.GetForward(),
		metaKey: p.GetPayloadInMetadata(), skew: 60 * time.Second}
	if p.GetClockSkewSeconds() != 0 {
		out.skew = time.Duration(p.GetClockSkewSeconds()) * time.Second
	}
	if out.metaKey == "" {
		out.metaKey = out.issuer
	}
	switch s := p.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		raw := s.LocalJwks.GetInlineString()
		if raw == "" {
			raw = string(s.LocalJwks.GetInlineBytes())
		}
		set, err := ParseJWKS([]byte(raw))
		if err != nil {
			return nil, err
		}
		out.keys = staticKeys{set}
	case *jwtv3.JwtProvider_RemoteJwks:
		u := s.RemoteJwks.GetHttpUri().GetUri()
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("remote_jwks uri %q is not http(s)", u)
		}
		if f == nil {
			return nil, errors.New("remote_jwks needs a fetcher")
		}
		ttl := 5 * time.Minute
		if d := s.RemoteJwks.GetCacheDuration(); d != nil && d.AsDuration() > 0 {
			ttl = d.AsDuration()
		}
		out.keys = &remoteKeys{f: f, uri: u, ttl: ttl}
	default:
		return nil, errors.New("a provider needs local_jwks or remote_jwks")
	}
	for _, h := range p.GetFromHeaders() {
		if h.GetName() == "" {
			return nil, errors.New("from_headers entry without a name")
		}
		out.headers = append(out.headers, location{name: h.GetName(), prefix: h.GetValuePrefix()})
	}
	out.params = p.GetFromParams()
	if len(out.headers) == 0 && len(out.params) == 0 && len(p.GetFromCookies()) == 0 {
		out.headers = []location{{name: "Authorization", prefix: "Bearer "}}
		out.params = []string{"access_token"}
	}
	return out, nil
}

// Result is the outcome of a successful Authenticate.
type Result struct {
	// Payloads maps each validating provider's metadata key to the payload.
	Payloads map[string]any
}

// Authenticate checks every token the request carries in a location some
// provider reads. It returns a nil error and no payloads when there is no
// token, payloads when tokens validate, and an error (the 401 reason) when
// any token fails. Tokens of providers that do not forward are removed.
func (a *Authenticator) Authenticate(r *http.Request, now time.Time) (Result, error) {
	var res Result
	if a == nil {
		return res, nil
	}
	type found struct {
		token string
		loc   location
		param string
	}
	var tokens []found
	seen := map[string]bool{}
	for _, p := range a.providers {
		for _, l := range p.headers {
			v := r.Header.Get(l.name)
			if v == "" || (l.prefix != "" && !strings.HasPrefix(v, l.prefix)) {
				continue
			}
			t := strings.TrimSpace(strings.TrimPrefix(v, l.prefix))
			if t != "" && !seen[t] {
				seen[t] = true
				tokens = append(tokens, found{token: t, loc: l})
			}
		}
		for _, q := range p.params {
			if t := r.URL.Query().Get(q); t != "" && !seen[t] {
				seen[t] = true
				tokens = append(tokens, found{token: t, param: q})
			}
		}
	}
	for _, f := range tokens {
		payload, p, err := a.verify(r, f.token, f.loc, f.param, now)
		if err != nil {
			return Result{}, err
		}
		if res.Payloads == nil {
			res.Payloads = map[string]any{}
		}
		res.Payloads[p.metaKey] = payload
		if !p.forward && f.loc.name != "" {
			r.Header.Del(f.loc.name)
		}
	}
	return res, nil
}

// verify validates token against the providers that read it from where it
// was found and whose issuer it names.
func (a *Authenticator) verify(r *http.Request, token string, loc location, param string, now time.Time) (map[string]any, *provider, error) {
	tok, err := josejwt.ParseSigned(token, algorithms)
	if err != nil {
		return nil, nil, ErrVerification
	}
	var unverified josejwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, nil, ErrVerification
	}
	var p *provider
	for _, c := range a.providers {
		if c.issuer != "" && c.issuer != unverified.Issuer {
			continue
		}
		if (loc.name != "" && slices.Contains(c.headers, loc)) || (param != "" && slices.Contains(c.params, param)) {
			p = c
			break
		}
	}
	if p == nil {
		return nil, nil, ErrIssuer
	}
	set, err := p.keys.get(r.Context())
	if err != nil {
		return nil, p, ErrJWKSFetch
	}
	kid := ""
	if len(tok.Headers) > 0 {
		kid = tok.Headers[0].KeyID
	}
	var payload map[string]any
	verified, matched := false, false
	for _, k := range set.Keys {
		if kid != "" && k.KeyID != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && len(tok.Headers) > 0 && k.Algorithm != tok.Headers[0].Algorithm {
			continue
		}
		matched = true
		var claims josejwt.Claims
		payload = nil
		if err := tok.Claims(k.Key, &claims, &payload); err == nil {
			unverified = claims
			verified = true
			break
		}
	}
	switch {
	case !matched:
		return nil, p, ErrNoKey
	case !verified:
		return nil, p, ErrVerification
	}
	if unverified.Expiry != nil && now.After(unverified.Expiry.Time().Add(p.skew)) {
		return nil, p, ErrExpired
	}
	if unverified.NotBefore != nil && now.Add(p.skew).Before(unverified.NotBefore.Time()) {
		return nil, p, ErrNotYetValid
	}
	if len(p.audiences) > 0 && !slices.ContainsFunc(p.audiences, func(a string) bool { return slices.Contains(unverified.Audience, a) }) {
		return nil, p, ErrAudience
	}
	return payload, p, nil
}

// RequestPrincipal is Istio's request principal "iss/sub" of a payload.
func RequestPrincipal(payload any) string {
	m, _ := payload.(map[string]any)
	iss, _ := m["iss"].(string)
	sub, _ := m["sub"].(string)
	if iss == "" && sub == "" {
		return ""
	}
	return iss + "/" + sub
}
