// Package lease owns LatchGate's agent authentication primitives: issuing and
// verifying lease JWTs (ES256, go-jose), verifying DPoP proofs bound to a
// lease (PROTOCOL §2.1, every check in its order), JWK thumbprints, htu
// normalisation, and the signing-key and secret files in the keys directory.
//
// It never touches the state store: session records, revocation and the
// replay insert of a proof's jti are the caller's (gate's) job, and a proof
// or lease this package accepts is not yet authorised until those pass. It
// never reads key material from anywhere but the keys directory, never logs
// tokens, proofs or keys, and reads time only from the injected clock.
// The API is internal to this module and may change.
package lease

import (
	"container/list"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"github.com/latchgate/latchgate/clock"
	"github.com/rs/zerolog"
)

// Lease verification errors. VerifyLease wraps one of them with the reason.
var (
	// ErrLeaseExpired: the lease's exp (plus leeway) has passed, or a
	// renewal is past the session's maximum lifetime. Answer 401 lease_expired.
	ErrLeaseExpired = errors.New("lease: expired")
	// ErrLeaseInvalid: anything else wrong with a lease. Answer 401
	// invalid_lease.
	ErrLeaseInvalid = errors.New("lease: invalid")
)

// maxLeaseLen bounds a lease token (the Authorization header is ≤ 8 KiB).
const maxLeaseLen = 8 << 10

// unknownKIDReloadEvery rate-limits re-reading the keys directory when a lease
// names a kid this process does not know (a key another gate rotated in).
const unknownKIDReloadEvery = 10 * time.Second

// Config configures an Authority. Zero values take the documented defaults.
type Config struct {
	// Issuer is the lease iss and aud. Default "latchgate".
	Issuer string
	// DefaultTTL is the lease lifetime when none is requested. Default 300s.
	DefaultTTL time.Duration
	// MaxTTL caps a requested lifetime (longer requests are clamped).
	// Default 3600s.
	MaxTTL time.Duration
	// SessionLifetime is a session's maximum lifetime; renewals clamp exp to
	// session start + SessionLifetime. Default 24h.
	SessionLifetime time.Duration
	// ProofMaxAge is how old a proof's iat may be (iat ≥ now-ProofMaxAge).
	// Default 60s.
	ProofMaxAge time.Duration
	// ProofFutureSkew is how far in the future a proof's iat may be
	// (iat ≤ now+ProofFutureSkew); it is also the leeway on lease iat, nbf
	// and exp. Default 5s.
	ProofFutureSkew time.Duration
	// RequireBodyHash makes the proof's bh claim mandatory. Default false.
	RequireBodyHash bool
	// CacheSize is the number of verified leases cached (keyed by the
	// token's SHA-256, kept until exp). Default 10000.
	CacheSize int
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Issuer == "" {
		c.Issuer = "latchgate"
	}
	if c.DefaultTTL == 0 {
		c.DefaultTTL = 300 * time.Second
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = 3600 * time.Second
	}
	if c.SessionLifetime == 0 {
		c.SessionLifetime = 24 * time.Hour
	}
	if c.ProofMaxAge == 0 {
		c.ProofMaxAge = 60 * time.Second
	}
	if c.ProofFutureSkew == 0 {
		c.ProofFutureSkew = 5 * time.Second
	}
	if c.CacheSize == 0 {
		c.CacheSize = 10000
	}
	return c
}

// Check reports what New would refuse: Validate of c with its defaults
// filled in.
func (c Config) Check() error { return c.withDefaults().Validate() }

// Validate reports the first invalid field. It does not modify c.
func (c Config) Validate() error {
	switch {
	case c.Issuer == "":
		return errors.New("lease: issuer must not be empty (e.g. \"latchgate\")")
	case c.DefaultTTL < time.Second:
		return fmt.Errorf("lease: default_ttl %v must be at least 1s", c.DefaultTTL)
	case c.MaxTTL < c.DefaultTTL:
		return fmt.Errorf("lease: max_ttl %v must be at least default_ttl %v", c.MaxTTL, c.DefaultTTL)
	case c.SessionLifetime < c.MaxTTL:
		return fmt.Errorf("lease: session_lifetime %v must be at least max_ttl %v", c.SessionLifetime, c.MaxTTL)
	case c.ProofMaxAge < time.Second:
		return fmt.Errorf("lease: proof_max_age %v must be at least 1s", c.ProofMaxAge)
	case c.ProofFutureSkew < 0:
		return fmt.Errorf("lease: proof_future_skew %v must not be negative", c.ProofFutureSkew)
	case c.CacheSize < 1:
		return fmt.Errorf("lease: cache_size %d must be at least 1", c.CacheSize)
	}
	return nil
}

// Deps are an Authority's dependencies. Clock is required; the zero Logger
// discards.
type Deps struct {
	Clock  clock.Clock
	Logger zerolog.Logger
}

// Budgets are the budgets granted to a session, as carried in the lease.
type Budgets struct {
	MaxCalls     *int64 `json:"max_calls,omitempty"`
	MaxCostCents *int64 `json:"max_cost_usd_cents,omitempty"`
}

// Claims are a lease's contents. Times have one-second resolution.
type Claims struct {
	Subject   string
	SessionID string
	JTI       string
	AgentID   string
	JKT       string // cnf.jkt: thumbprint of the agent's DPoP key
	Scopes    []string
	Budgets   Budgets
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// claimsCopy is a Claims copy with room for what it points to, so that
// clone usually makes one allocation.
type claimsCopy struct {
	c            Claims
	maxCalls     int64
	maxCostCents int64
	scopes       [4]string
}

// clone returns a deep copy of c. Scopes is nil when c has none.
func (c *Claims) clone() *Claims {
	cp := &claimsCopy{c: *c}
	out := &cp.c
	switch n := len(c.Scopes); {
	case n == 0:
		out.Scopes = nil
	case n <= len(cp.scopes):
		out.Scopes = cp.scopes[:n:n]
		copy(out.Scopes, c.Scopes)
	default:
		out.Scopes = append([]string(nil), c.Scopes...)
	}
	if c.Budgets.MaxCalls != nil {
		cp.maxCalls = *c.Budgets.MaxCalls
		out.Budgets.MaxCalls = &cp.maxCalls
	}
	if c.Budgets.MaxCostCents != nil {
		cp.maxCostCents = *c.Budgets.MaxCostCents
		out.Budgets.MaxCostCents = &cp.maxCostCents
	}
	return out
}

// wireClaims is the lease JWT payload (PROTOCOL §2.2).
type wireClaims struct {
	Issuer    string           `json:"iss"`
	Audience  jwt.Audience     `json:"aud"`
	Subject   string           `json:"sub"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	NotBefore *jwt.NumericDate `json:"nbf"`
	Expiry    *jwt.NumericDate `json:"exp"`
	JTI       string           `json:"jti"`
	SessionID string           `json:"session_id"`
	Scope     []string         `json:"scope"`
	Budgets   Budgets          `json:"budgets"`
	Cnf       struct {
		JKT string `json:"jkt"`
	} `json:"cnf"`
	AgentID string `json:"agent_id,omitempty"`
}

// Authority issues and verifies leases and verifies DPoP proofs.
type Authority struct {
	cfg     Config
	keys    *Keys
	clk     clock.Clock
	log     zerolog.Logger
	headers *headerCache // proof headers that passed; own lock, never held with mu

	mu         sync.Mutex                 // guards the fields below
	cache      map[[32]byte]*list.Element // token hash → element of order
	order      *list.List                 // *cacheEntry, oldest first
	lastReload time.Time                  // last keys reload for an unknown kid
}

// cacheEntry is one verified lease.
type cacheEntry struct {
	key    [32]byte
	claims *Claims
}

// New returns an Authority signing with keys.
func New(cfg Config, keys *Keys, deps Deps) (*Authority, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if keys == nil {
		return nil, errors.New("lease: New needs keys")
	}
	if deps.Clock == nil {
		return nil, errors.New("lease: New needs a clock")
	}
	return &Authority{
		cfg:     cfg,
		keys:    keys,
		clk:     deps.Clock,
		log:     deps.Logger.With().Str("component", "lease").Logger(),
		cache:   make(map[[32]byte]*list.Element),
		order:   list.New(),
		headers: newHeaderCache(proofHeaderCacheSize),
	}, nil
}

// Config returns the Authority's configuration with defaults applied.
func (a *Authority) Config() Config { return a.cfg }

// Expiry computes a lease's exp for one issued at now: now + requested (or
// DefaultTTL when requested ≤ 0), clamped to MaxTTL and, when sessionStart is
// not zero, to sessionStart + SessionLifetime. Past the session's lifetime, or
// in the same second as its end (no whole-second lease fits), it returns an
// error wrapping ErrLeaseExpired (PROTOCOL §3.2).
func (a *Authority) Expiry(now time.Time, requested time.Duration, sessionStart time.Time) (time.Time, error) {
	ttl := requested
	if ttl <= 0 {
		ttl = a.cfg.DefaultTTL
	}
	ttl = min(ttl, a.cfg.MaxTTL)
	exp := now.Add(ttl)
	if !sessionStart.IsZero() {
		end := sessionStart.Add(a.cfg.SessionLifetime)
		// Leases carry whole seconds: in the last second before end no
		// lease expiring after its (truncated) iat fits any more.
		if !now.Truncate(time.Second).Before(end.Truncate(time.Second)) {
			return time.Time{}, fmt.Errorf("%w: session lifetime ended", ErrLeaseExpired)
		}
		if exp.After(end) {
			exp = end
		}
	}
	return exp.Truncate(time.Second), nil
}

// Issue signs a lease for c. See IssueClaims.
func (a *Authority) Issue(c Claims) (string, error) {
	tok, _, err := a.IssueClaims(c)
	return tok, err
}

// IssueClaims signs a lease for c with the active key and returns it with the
// claims as issued. Subject, SessionID and JKT are required. Empty JTI gets a
// UUIDv7; zero IssuedAt is now; zero ExpiresAt is IssuedAt + DefaultTTL; a
// lifetime above MaxTTL is clamped. Times are truncated to seconds. iss and
// aud are the configured issuer, nbf equals iat, and the header carries the
// signing key's kid.
func (a *Authority) IssueClaims(c Claims) (string, *Claims, error) {
	switch {
	case c.Subject == "":
		return "", nil, errors.New("lease: issue: empty subject")
	case c.SessionID == "":
		return "", nil, errors.New("lease: issue: empty session id")
	case !isThumbprint(c.JKT):
		return "", nil, errors.New("lease: issue: jkt is not a thumbprint")
	}
	out := c.clone()
	if out.JTI == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return "", nil, fmt.Errorf("lease: issue: jti: %w", err)
		}
		out.JTI = id.String()
	}
	if out.IssuedAt.IsZero() {
		out.IssuedAt = a.clk.Now()
	}
	out.IssuedAt = out.IssuedAt.Truncate(time.Second).UTC()
	if out.ExpiresAt.IsZero() {
		out.ExpiresAt = out.IssuedAt.Add(a.cfg.DefaultTTL)
	}
	if out.ExpiresAt.Sub(out.IssuedAt) > a.cfg.MaxTTL {
		out.ExpiresAt = out.IssuedAt.Add(a.cfg.MaxTTL)
	}
	out.ExpiresAt = out.ExpiresAt.Truncate(time.Second).UTC()
	if !out.ExpiresAt.After(out.IssuedAt) {
		return "", nil, errors.New("lease: issue: expires_at is not after issued_at")
	}
	if out.Scopes == nil {
		out.Scopes = []string{}
	}
	w := wireClaims{
		Issuer:    a.cfg.Issuer,
		Audience:  jwt.Audience{a.cfg.Issuer},
		Subject:   out.Subject,
		IssuedAt:  jwt.NewNumericDate(out.IssuedAt),
		NotBefore: jwt.NewNumericDate(out.IssuedAt),
		Expiry:    jwt.NewNumericDate(out.ExpiresAt),
		JTI:       out.JTI,
		SessionID: out.SessionID,
		Scope:     out.Scopes,
		Budgets:   out.Budgets,
		AgentID:   out.AgentID,
	}
	w.Cnf.JKT = out.JKT
	key := a.keys.set.Load().active
	tok, err := jwt.Signed(key.signer).Claims(w).Serialize()
	if err != nil {
		return "", nil, fmt.Errorf("lease: issue: sign: %w", err)
	}
	return tok, out, nil
}

// VerifyLease checks a lease token: size, compact JWS with alg ES256 (nothing
// else, "none" included), a known kid, the signature, iss, aud, iat/nbf/exp
// with the proof skew as leeway, and the presence of sub, jti, session_id and
// cnf.jkt. Verified tokens are cached by SHA-256 until exp; a cache hit still
// checks exp against the clock. Errors wrap ErrLeaseExpired or ErrLeaseInvalid.
// The caller still checks the session record (PROTOCOL §2.2).
func (a *Authority) VerifyLease(token string) (*Claims, error) {
	if token == "" || len(token) > maxLeaseLen {
		return nil, fmt.Errorf("%w: empty or larger than %d bytes", ErrLeaseInvalid, maxLeaseLen)
	}
	now := a.clk.Now()
	key := sumString(token)
	if c := a.cached(key); c != nil {
		if !now.Before(c.ExpiresAt.Add(a.cfg.ProofFutureSkew)) {
			return nil, fmt.Errorf("%w: exp passed", ErrLeaseExpired)
		}
		return c.clone(), nil
	}
	c, err := a.verifyLease(token, now)
	if err != nil {
		return nil, err
	}
	a.store(key, c, now)
	return c.clone(), nil
}

// verifyLease does the uncached checks.
func (a *Authority) verifyLease(token string, now time.Time) (*Claims, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("%w: not an ES256 JWS: %w", ErrLeaseInvalid, err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].Algorithm != string(jose.ES256) {
		return nil, fmt.Errorf("%w: want one ES256 signature", ErrLeaseInvalid)
	}
	h := tok.Headers[0]
	if h.JSONWebKey != nil {
		return nil, fmt.Errorf("%w: embedded key in header", ErrLeaseInvalid)
	}
	if typ, ok := h.ExtraHeaders[jose.HeaderType]; ok && typ != "JWT" {
		return nil, fmt.Errorf("%w: typ is not JWT", ErrLeaseInvalid)
	}
	sk := a.signingKey(h.KeyID, now)
	if sk == nil {
		return nil, fmt.Errorf("%w: unknown kid", ErrLeaseInvalid)
	}
	var w wireClaims
	if err := tok.Claims(sk.pub, &w); err != nil {
		return nil, fmt.Errorf("%w: signature or payload: %w", ErrLeaseInvalid, err)
	}
	leeway := a.cfg.ProofFutureSkew
	switch {
	case w.Issuer != a.cfg.Issuer:
		return nil, fmt.Errorf("%w: wrong iss", ErrLeaseInvalid)
	case len(w.Audience) != 1 || w.Audience[0] != a.cfg.Issuer:
		return nil, fmt.Errorf("%w: wrong aud", ErrLeaseInvalid)
	case w.IssuedAt == nil || w.NotBefore == nil || w.Expiry == nil:
		return nil, fmt.Errorf("%w: missing iat, nbf or exp", ErrLeaseInvalid)
	case w.Subject == "" || w.JTI == "" || w.SessionID == "":
		return nil, fmt.Errorf("%w: missing sub, jti or session_id", ErrLeaseInvalid)
	case !isThumbprint(w.Cnf.JKT):
		return nil, fmt.Errorf("%w: missing or bad cnf.jkt", ErrLeaseInvalid)
	case w.IssuedAt.Time().After(now.Add(leeway)):
		return nil, fmt.Errorf("%w: iat in the future", ErrLeaseInvalid)
	case w.NotBefore.Time().After(now.Add(leeway)):
		return nil, fmt.Errorf("%w: not yet valid", ErrLeaseInvalid)
	case !w.Expiry.Time().After(w.IssuedAt.Time()):
		return nil, fmt.Errorf("%w: exp not after iat", ErrLeaseInvalid)
	case !now.Before(w.Expiry.Time().Add(leeway)):
		return nil, fmt.Errorf("%w: exp passed", ErrLeaseExpired)
	}
	return &Claims{
		Subject:   w.Subject,
		SessionID: w.SessionID,
		JTI:       w.JTI,
		AgentID:   w.AgentID,
		JKT:       w.Cnf.JKT,
		Scopes:    append([]string{}, w.Scope...),
		Budgets:   w.Budgets,
		IssuedAt:  w.IssuedAt.Time().UTC(),
		ExpiresAt: w.Expiry.Time().UTC(),
	}, nil
}

// signingKey returns the key named kid, re-reading the keys directory (at
// most every unknownKIDReloadEvery) when the kid is unknown.
func (a *Authority) signingKey(kid string, now time.Time) *signingKey {
	if sk := a.keys.set.Load().byKID[kid]; sk != nil || !isThumbprint(kid) {
		return sk
	}
	a.mu.Lock()
	due := a.lastReload.IsZero() || now.Sub(a.lastReload) >= unknownKIDReloadEvery
	if due {
		a.lastReload = now
	}
	a.mu.Unlock()
	if !due {
		return nil
	}
	if err := a.keys.Reload(); err != nil {
		a.log.Error().Err(err).Msg("reload lease keys for an unknown kid")
		return nil
	}
	return a.keys.set.Load().byKID[kid]
}

// cached returns the cached claims for key, or nil. They are shared: the
// caller must clone them before handing them out.
func (a *Authority) cached(key [32]byte) *Claims {
	a.mu.Lock()
	defer a.mu.Unlock()
	el, ok := a.cache[key]
	if !ok {
		return nil
	}
	return el.Value.(*cacheEntry).claims
}

// store caches c under key, evicting expired entries and then the oldest
// until there is room.
func (a *Authority) store(key [32]byte, c *Claims, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cache[key]; ok {
		return
	}
	a.evictLocked(now)
	a.cache[key] = a.order.PushBack(&cacheEntry{key: key, claims: c})
}

// evictLocked removes entries from the oldest end while they are expired or
// the cache is full. a.mu must be held.
func (a *Authority) evictLocked(now time.Time) {
	for el := a.order.Front(); el != nil; el = a.order.Front() {
		e := el.Value.(*cacheEntry)
		expired := !now.Before(e.claims.ExpiresAt.Add(a.cfg.ProofFutureSkew))
		if !expired && a.order.Len() < a.cfg.CacheSize {
			return
		}
		a.order.Remove(el)
		delete(a.cache, e.key)
	}
}

// isThumbprint reports whether s looks like a SHA-256 thumbprint
// (43 base64url characters).
func isThumbprint(s string) bool {
	if len(s) != coordLen {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) < 0
}
