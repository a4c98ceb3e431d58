package jwt

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

type keypair struct {
	key  *rsa.PrivateKey
	jwks string
}

func newKey(t testing.TB) keypair {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "a", Algorithm: "RS256", Use: "sig"}}})
	return keypair{key: k, jwks: string(b)}
}

func (k keypair) sign(t testing.TB, claims map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k.key}, (&jose.SignerOptions{}).WithHeader("kid", "a"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAuthenticate(t *testing.T) {
	k := newKey(t)
	a, err := Compile(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss", Audiences: []string{"aud"},
		FromHeaders: []*jwtv3.JwtHeader{{Name: "x-jwt"}}, FromParams: []string{"token"},
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: k.jwks}}}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	valid := map[string]any{"iss": "iss", "sub": "s", "aud": "aud", "exp": now.Add(time.Hour).Unix()}
	with := func(k2, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range valid {
			c[kk] = vv
		}
		c[k2.(string)] = v
		return c
	}
	for _, tc := range []struct {
		name   string
		header string
		query  string
		want   error
	}{
		{"no token", "", "", nil},
		{"valid header", k.sign(t, valid), "", nil},
		{"valid query", "", k.sign(t, valid), nil},
		{"expired", k.sign(t, with("exp", now.Add(-2*time.Minute).Unix())), "", ErrExpired},
		{"within skew", k.sign(t, with("exp", now.Add(-30*time.Second).Unix())), "", nil},
		{"not yet", k.sign(t, with("nbf", now.Add(5*time.Minute).Unix())), "", ErrNotYetValid},
		{"audience", k.sign(t, with("aud", "other")), "", ErrAudience},
		{"issuer", k.sign(t, with("iss", "other")), "", ErrIssuer},
		{"bad signature", newKey(t).sign(t, valid), "", ErrVerification},
		{"garbage", "a.b.c", "", ErrVerification},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.header != "" {
			r.Header.Set("x-jwt", tc.header)
		}
		if tc.query != "" {
			r.URL.RawQuery = "token=" + tc.query
		}
		res, err := a.Authenticate(r, now)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
		if err == nil && (tc.header != "" || tc.query != "") {
			if RequestPrincipal(res.Payloads["iss"]) != "iss/s" {
				t.Errorf("%s: payloads %v", tc.name, res.Payloads)
			}
			if r.Header.Get("x-jwt") != "" {
				t.Errorf("%s: token forwarded though forward=false", tc.name)
			}
		}
	}
}

func TestRemoteJWKSCachedAndLastGoodKept(t *testing.T) {
	k := newKey(t)
	var fail atomic.Bool
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		if fail.Load() {
			http.Error(w, "down", 500)
			return
		}
		_, _ = w.Write([]byte(k.jwks))
	}))
	defer srv.Close()
	f := &Fetcher{FailureBackoff: time.Millisecond}
	a, err := Compile(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss",
		JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{HttpUri: &corev3.HttpUri{Uri: srv.URL},
			CacheDuration: nil}}}}}, f)
	if err != nil {
		t.Fatal(err)
	}
	tok := k.sign(t, map[string]any{"iss": "iss", "sub": "s"})
	for range 3 {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		if _, err := a.Authenticate(r, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("%d fetches, want 1", hits.Load())
	}
	fail.Store(true)
	set, err := f.Get(t.Context(), srv.URL, 0) // expired: refetch fails, last good served
	if err != nil || len(set.Keys) != 1 {
		t.Fatalf("last good set not kept: %v", err)
	}
	if _, err := f.Get(t.Context(), srv.URL+"/other", time.Hour); err == nil {
		t.Fatal("a JWKS that never loaded must fail")
	}
}

func FuzzAuthenticate(f *testing.F) {
	k := newKey(f)
	a, err := Compile(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss",
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: k.jwks}}}}}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(k.sign(f, map[string]any{"iss": "iss"}))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		res, err := a.Authenticate(r, time.Now())
		if err == nil && len(res.Payloads) > 0 {
			// Only a token signed by k may pass; the fuzzer cannot forge one.
			if _, ok := res.Payloads["iss"]; !ok {
				t.Fatalf("payload under an unexpected key: %v", res.Payloads)
			}
		}
	})
}
