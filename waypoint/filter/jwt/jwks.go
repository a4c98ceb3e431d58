package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// ParseJWKS parses a JSON Web Key Set, keeping only public signing keys.
func ParseJWKS(b []byte) (*jose.JSONWebKeySet, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	set := &jose.JSONWebKeySet{}
	for i, k := range raw.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(k); err != nil {
			return nil, fmt.Errorf("jwks key %d: %w", i, err)
		}
		if !key.IsPublic() {
			key = key.Public()
		}
		if !key.Valid() || (key.Use != "" && key.Use != "sig") {
			continue
		}
		set.Keys = append(set.Keys, key)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("jwks: no usable signing key")
	}
	return set, nil
}

type keySource interface {
	get(ctx context.Context) (*jose.JSONWebKeySet, error)
}

type staticKeys struct{ set *jose.JSONWebKeySet }

func (s staticKeys) get(context.Context) (*jose.JSONWebKeySet, error) { return s.set, nil }

type remoteKeys struct {
	f   *Fetcher
	uri string
	ttl time.Duration
}

func (r *remoteKeys) get(ctx context.Context) (*jose.JSONWebKeySet, error) {
	return r.f.Get(ctx, r.uri, r.ttl)
}

// Fetcher downloads and caches remote JWKS by URL. It is shared by every
// configuration snapshot so that a configuration change does not refetch.
// Failed fetches are retried at most once per FailureBackoff; the last good
// set keeps serving until it is replaced.
type Fetcher struct {
	// Client fetches; nil uses a client with a 5 s timeout.
	Client *http.Client
	// FailureBackoff spaces retries after a failure (default 1 s).
	FailureBackoff time.Duration

	mu      sync.Mutex // guards entries
	entries map[string]*fetchEntry
}

type fetchEntry struct {
	mu       sync.Mutex // serialises fetches of one URL; guards the fields
	set      *jose.JSONWebKeySet
	fetched  time.Time
	failedAt time.Time
	err      error
}

// Get returns the key set at uri, fetching it when absent or older than ttl.
func (f *Fetcher) Get(ctx context.Context, uri string, ttl time.Duration) (*jose.JSONWebKeySet, error) {
	f.mu.Lock()
	if f.entries == nil {
		f.entries = map[string]*fetchEntry{}
	}
	e := f.entries[uri]
	if e == nil {
		e = &fetchEntry{}
		f.entries[uri] = e
	}
	f.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if e.set != nil && now.Sub(e.fetched) < ttl {
		return e.set, nil
	}
	backoff := f.FailureBackoff
	if backoff == 0 {
		backoff = time.Second
	}
	if e.err != nil && now.Sub(e.failedAt) < backoff {
		if e.set != nil {
			return e.set, nil
		}
		return nil, e.err
	}
	set, err := f.fetch(ctx, uri)
	if err != nil {
		e.err, e.failedAt = err, now
		if e.set != nil {
			return e.set, nil
		}
		return nil, err
	}
	e.set, e.fetched, e.err = set, now, nil
	return set, nil
}

func (f *Fetcher) fetch(ctx context.Context, uri string) (*jose.JSONWebKeySet, error) {
	c := f.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", uri, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: status %d", uri, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", uri, err)
	}
	return ParseJWKS(b)
}
