package lease

import (
	"crypto/ecdsa"
	"strings"
	"sync"
)

// proofHeaderCacheSize is how many proof headers a headerCache holds. An
// agent sends the same header on every proof, so this is about the number
// of agent keys in use at once.
const proofHeaderCacheSize = 4096

// maxCachedHeaderLen is the longest header segment a headerCache keeps. The
// header of PROTOCOL §2.1 is about 200 characters; a longer one (extra
// members) is still accepted, just checked afresh every time.
const maxCachedHeaderLen = 1024

// proofKey is what a proof header yields once every header rule has passed:
// the agent's public key, its JWK and the JWK's RFC 7638 thumbprint. It is
// never modified once made.
type proofKey struct {
	pub *ecdsa.PublicKey
	jwk ECJWK
	jkt string
}

// headerCache maps proof header segments (the exact base64url text) to the
// proofKey they yield. Only headers that passed every header rule are added,
// so a refused header is checked again, and refused for the same reason,
// every time. It holds at most max entries of at most maxCachedHeaderLen
// bytes each; when full, an arbitrary entry makes room. Safe for concurrent
// use.
type headerCache struct {
	max int

	mu sync.RWMutex         // guards m
	m  map[string]*proofKey // header segment → its key
}

// newHeaderCache returns an empty headerCache holding at most max entries.
func newHeaderCache(max int) *headerCache {
	return &headerCache{max: max, m: make(map[string]*proofKey)}
}

// get returns the key header segment seg yields, or nil when seg is not
// cached.
func (c *headerCache) get(seg string) *proofKey {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[seg]
}

// add caches k, which seg yielded after passing every header rule. A seg
// longer than maxCachedHeaderLen is not cached.
func (c *headerCache) add(seg string, k *proofKey) {
	if len(seg) > maxCachedHeaderLen {
		return
	}
	seg = strings.Clone(seg) // seg is part of a whole proof; keep only the header
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[seg]; ok {
		return
	}
	for old := range c.m {
		if len(c.m) < c.max {
			break
		}
		delete(c.m, old)
	}
	c.m[seg] = k
}

// len returns the number of cached headers.
func (c *headerCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
