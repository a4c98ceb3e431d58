package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenKey is a token's SHA-256: caches never hold tokens themselves.
type tokenKey = [sha256.Size]byte

// tokenCache holds a value per token until the value's expiry, and at most
// size entries: when full, expired entries are dropped, and if none had
// expired, all of them (the next calls ask the API server again). It is
// safe for concurrent use.
type tokenCache[V any] struct {
	size int

	mu      sync.Mutex // guards entries
	entries map[tokenKey]tokenCacheEntry[V]
}

type tokenCacheEntry[V any] struct {
	v       V
	expires time.Time
}

func newTokenCache[V any](size int) *tokenCache[V] {
	return &tokenCache[V]{size: size, entries: map[tokenKey]tokenCacheEntry[V]{}}
}

// get returns key's value unless it is missing or expired at now.
func (c *tokenCache[V]) get(key tokenKey, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	if !now.Before(e.expires) {
		delete(c.entries, key)
		var zero V
		return zero, false
	}
	return e.v, true
}

// put stores v for key until expires (nothing when that is not after now).
func (c *tokenCache[V]) put(key tokenKey, v V, now, expires time.Time) {
	if !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.size {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.size {
			clear(c.entries)
		}
	}
	c.entries[key] = tokenCacheEntry[V]{v: v, expires: expires}
}
