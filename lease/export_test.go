package lease

// CacheLen returns the number of cached leases (tests only).
func (a *Authority) CacheLen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cache)
}
