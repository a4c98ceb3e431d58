package auth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"
)

// StaticTokens authenticates bearer tokens from a fixed table. Each entry
// maps a token to a SPIFFE ID and, optionally, a node name. It is safe for
// concurrent use and immutable after construction.
type StaticTokens struct {
	entries []tokenEntry
}

type tokenEntry struct {
	digest [sha256.Size]byte
	caller Caller
}

// TokenEntry is one row of a static token table.
type TokenEntry struct {
	Token  string
	Caller Caller
}

// NewStaticTokens validates the entries (non-empty token without
// whitespace, valid SPIFFE ID, no duplicate tokens) and returns an
// authenticator over them.
func NewStaticTokens(entries []TokenEntry) (*StaticTokens, error) {
	s := &StaticTokens{}
	seen := map[[sha256.Size]byte]bool{}
	for i, e := range entries {
		if e.Token == "" || strings.ContainsAny(e.Token, " \t\r\n") {
			return nil, fmt.Errorf("auth: static token %d: token is empty or contains whitespace", i+1)
		}
		if _, err := spiffeid.FromString(e.Caller.Identity); err != nil {
			return nil, fmt.Errorf("auth: static token %d: identity %q: %w", i+1, e.Caller.Identity, err)
		}
		d := sha256.Sum256([]byte(e.Token))
		if seen[d] {
			return nil, fmt.Errorf("auth: static token %d: duplicate token", i+1)
		}
		seen[d] = true
		s.entries = append(s.entries, tokenEntry{digest: d, caller: e.Caller})
	}
	return s, nil
}

// ParseStaticTokens reads a token table: one entry per line,
// "<token> <spiffe-id> [node]", fields separated by spaces or tabs; blank
// lines and lines starting with '#' are ignored. Errors name the line.
func ParseStaticTokens(r io.Reader) (*StaticTokens, error) {
	var entries []TokenEntry
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("auth: static tokens line %d: want \"<token> <spiffe-id> [node]\", got %d fields", n, len(f))
		}
		if _, err := spiffeid.FromString(f[1]); err != nil {
			return nil, fmt.Errorf("auth: static tokens line %d: identity %q: %w", n, f[1], err)
		}
		e := TokenEntry{Token: f[0], Caller: Caller{Identity: f[1]}}
		if len(f) == 3 {
			e.Caller.Node = f[2]
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth: read static tokens: %w", err)
	}
	return NewStaticTokens(entries)
}

// LoadStaticTokens reads a token table file (see ParseStaticTokens).
func LoadStaticTokens(path string) (*StaticTokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: open static tokens: %w", err)
	}
	defer func() { _ = f.Close() }()
	s, err := ParseStaticTokens(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Authenticate reads "authorization: Bearer <token>" from the incoming gRPC
// metadata and returns the matching entry's Caller. Tokens are compared as
// SHA-256 digests in constant time against every entry, so timing reveals
// neither the token nor which entry matched.
func (s *StaticTokens) Authenticate(ctx context.Context) (Caller, error) {
	token, err := BearerToken(ctx)
	if err != nil {
		return Caller{}, err
	}
	d := sha256.Sum256([]byte(token))
	match := -1
	for i := range s.entries {
		if subtle.ConstantTimeCompare(d[:], s.entries[i].digest[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Caller{}, errors.New("auth: unknown bearer token")
	}
	return s.entries[match].caller, nil
}

// BearerToken returns the token of the first "authorization: Bearer <token>"
// in the incoming gRPC metadata (the scheme is case-insensitive).
func BearerToken(ctx context.Context) (string, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", errors.New("auth: no request metadata")
	}
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", errors.New("auth: no authorization header")
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("auth: authorization header is not a bearer token")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", errors.New("auth: empty bearer token")
	}
	return token, nil
}
