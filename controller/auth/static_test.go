package auth_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/zmesh/zmesh/controller/auth"
)

func TestParseStaticTokens(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "ok", in: "# comment\n\n  tok1 spiffe://cluster.local/ns/a/sa/b\ntok2\tspiffe://cluster.local/ns/istio-system/sa/ztunnel\tnode-1\n"},
		{name: "empty file", in: ""},
		{name: "one field", in: "tok1\n", wantErr: "line 1"},
		{name: "four fields", in: "# c\ntok1 spiffe://cluster.local/ns/a/sa/b n extra\n", wantErr: "line 2"},
		{name: "bad identity", in: "tok1 cluster.local/ns/a/sa/b\n", wantErr: "line 1: identity"},
		{name: "duplicate", in: "tok1 spiffe://cluster.local/ns/a/sa/b\ntok1 spiffe://cluster.local/ns/a/sa/c\n", wantErr: "duplicate token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.ParseStaticTokens(strings.NewReader(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStaticTokensAuthenticate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	content := "# tokens\ntok1 spiffe://cluster.local/ns/a/sa/b\nztunnel-tok spiffe://cluster.local/ns/istio-system/sa/ztunnel node-1\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := auth.LoadStaticTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.LoadStaticTokens(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file loaded")
	}
	md := func(kv ...string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
	}
	tests := []struct {
		name    string
		ctx     context.Context
		want    auth.Caller
		wantErr string
	}{
		{name: "token", ctx: md("authorization", "Bearer tok1"), want: auth.Caller{Identity: "spiffe://cluster.local/ns/a/sa/b"}},
		{name: "token with node", ctx: md("authorization", "Bearer ztunnel-tok"), want: auth.Caller{Identity: "spiffe://cluster.local/ns/istio-system/sa/ztunnel", Node: "node-1"}},
		{name: "scheme case", ctx: md("authorization", "bearer tok1"), want: auth.Caller{Identity: "spiffe://cluster.local/ns/a/sa/b"}},
		{name: "no metadata", ctx: context.Background(), wantErr: "no request metadata"},
		{name: "no header", ctx: md("other", "x"), wantErr: "no authorization header"},
		{name: "basic", ctx: md("authorization", "Basic dG9rMQ=="), wantErr: "not a bearer token"},
		{name: "empty token", ctx: md("authorization", "Bearer  "), wantErr: "not a bearer token"},
		{name: "wrong token", ctx: md("authorization", "Bearer tok2"), wantErr: "unknown bearer token"},
		{name: "prefix of a token", ctx: md("authorization", "Bearer tok"), wantErr: "unknown bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Authenticate(tt.ctx)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				if got != (auth.Caller{}) {
					t.Fatalf("caller %+v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v want %+v", got, tt.want)
			}
		})
	}
}

func TestNewStaticTokensValidation(t *testing.T) {
	tests := []auth.TokenEntry{
		{Token: "", Caller: auth.Caller{Identity: "spiffe://cluster.local/ns/a/sa/b"}},
		{Token: "has space", Caller: auth.Caller{Identity: "spiffe://cluster.local/ns/a/sa/b"}},
		{Token: "t", Caller: auth.Caller{Identity: ""}},
	}
	for _, e := range tests {
		if _, err := auth.NewStaticTokens([]auth.TokenEntry{e}); err == nil {
			t.Errorf("entry %+v accepted", e)
		}
	}
}
