package lease

// CacheLen returns the number of cached leases (tests only).
func (a *Authority) CacheLen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cache)
}

// ProofHeaderCacheSize is the most proof headers an Authority caches.
const ProofHeaderCacheSize = proofHeaderCacheSize

// ProofHeaderCacheLen returns the number of cached proof headers (tests only).
func (a *Authority) ProofHeaderCacheLen() int { return a.headers.len() }

// SetProofHeaderCacheSize gives a an empty proof header cache holding at most
// n headers (tests only; call before a is used).
func (a *Authority) SetProofHeaderCacheSize(n int) { a.headers = newHeaderCache(n) }
