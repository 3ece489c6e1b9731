package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// RedisConfig configures the Redis backend.
type RedisConfig struct {
	// URL is redis://[user:pass@]host:port[/db] or rediss://… Required.
	URL string
	// Prefix starts every key. Default "latchgate:".
	Prefix string
	// Timeout bounds every operation (dial, read, write and the whole
	// call). Default 2s.
	Timeout time.Duration
	// MACKey authenticates sessions, approvals and idempotency outcomes
	// stored in Redis. Required, at least 32 bytes, from the keys
	// directory (never from Redis).
	MACKey []byte
	// ReceiptTTL is how long the copies of receipts (PutReceipts) are
	// kept. Default 30 days (DefaultReceiptTTL).
	ReceiptTTL time.Duration
}

func (c RedisConfig) withDefaults() RedisConfig {
	if c.ReceiptTTL == 0 {
		c.ReceiptTTL = DefaultReceiptTTL
	}
	if c.Prefix == "" {
		c.Prefix = "latchgate:"
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	return c
}

// ValidRedisURLScheme reports whether url names a Redis server the way the
// Redis backend accepts: redis:// (TCP), rediss:// (TLS) or unix:// (a
// Unix socket, for a Redis on the gate's own host).
func ValidRedisURLScheme(url string) bool {
	for _, p := range []string{"redis://", "rediss://", "unix://"} {
		if strings.HasPrefix(url, p) {
			return true
		}
	}
	return false
}

// Validate reports the first invalid field.
func (c RedisConfig) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("store: redis url is required (redis://host:port)")
	case !ValidRedisURLScheme(c.URL):
		return errors.New("store: redis url must start with redis://, rediss:// or unix://")
	case c.Timeout <= 0:
		return errors.New("store: redis timeout must be a positive duration such as \"2s\"")
	case len(c.MACKey) < 32:
		return errors.New("store: redis mac key must be at least 32 bytes")
	case c.ReceiptTTL < 0:
		return errors.New("store: redis receipt_ttl must not be negative")
	}
	return nil
}

// Redis is the shared backend: every check-and-set is one Lua script, and
// records that decide what runs carry an HMAC verified in Go.
//
// Design of the MACs: a record's authority-bearing part (session: id,
// principal, jkt, scopes, ceilings, lifetimes, epochs; approvals and
// idempotency records: the whole record) is a JSON string in the "rec"
// field of a hash with its HMAC in "mac". Changes to such a record are made
// in Go (verify, compute, re-MAC) and written by a compare-and-set script
// that succeeds only if "rec" is still the value that was verified. A
// session's mutable counters ("calls", "cost") and its "revoked" flag are
// plain hash fields changed by scripts: they carry no authority beyond
// budgets and revocation. Someone who can write to Redis can therefore
// delete records, reset counters or roll records back, but can never make
// a gate accept a session, plan or outcome that a gate did not write.
type Redis struct {
	cfg     RedisConfig
	clock   clock.Clock
	log     zerolog.Logger
	client  *redis.Client
	scripts *redisScripts

	sessions verifiedSessions
	copies   *receiptCopier
	batcher  *scriptBatcher
	// evicting is the last CheckEviction's finding that the server may
	// evict keys (nil: not found so): scripts refuse while it is set.
	evicting atomic.Pointer[error]
	// pendingIndexed: backfillPendingIndex found the index complete.
	pendingIndexed atomic.Bool
}

// NewRedis returns a Redis store. It does not connect: a gate starts while
// Redis is down and Ping reports when it answers. Ping also checks that
// the server does not evict keys (CheckEviction).
func NewRedis(cfg RedisConfig, deps Deps) (*Redis, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := deps.validate(); err != nil {
		return nil, err
	}
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("store: redis url: %w", err)
	}
	opt.DialTimeout = cfg.Timeout
	opt.ReadTimeout = cfg.Timeout
	opt.WriteTimeout = cfg.Timeout
	opt.PoolTimeout = cfg.Timeout
	opt.ContextTimeoutEnabled = true
	// No automatic retries: a script whose reply was lost may have run,
	// and running Authenticate or Grant twice would refuse a legitimate
	// request or charge twice. Callers see ErrUnavailable instead.
	opt.MaxRetries = -1
	opt.DisableIdentity = true
	// RESP2: the store never subscribes, and with RESP3 go-redis checks
	// for push notifications before every reply (≈ 2% of gate CPU in a
	// Redis-mode profile). The scripts reply with arrays of strings and
	// integers, the same in both protocols.
	opt.Protocol = 2
	r := &Redis{
		cfg:     cfg,
		clock:   deps.Clock,
		log:     deps.Logger.With().Str("component", "store").Logger(),
		client:  redis.NewClient(opt),
		scripts: newRedisScripts(),
	}
	r.copies = newReceiptCopier(r)
	r.batcher = newScriptBatcher(r.client, cfg.Timeout)
	return r, nil
}

func (r *Redis) key(parts ...string) string { return r.cfg.Prefix + strings.Join(parts, ":") }

func (r *Redis) sessionKey(id string) string       { return r.key("s", id) }
func (r *Redis) globalEpochKey() string            { return r.key("ep", "g") }
func (r *Redis) principalEpochKey(p string) string { return r.key("ep", "p", p) }
func (r *Redis) livePKey(p string) string          { return r.key("live", "p", p) }
func (r *Redis) liveAllKey() string                { return r.key("live", "all") }
func (r *Redis) principalsKey() string             { return r.key("principals") }
func (r *Redis) replayKey(jkt, jti string) string  { return r.key("rp", hashKey(jkt, jti)) }
func (r *Redis) grantKey(id string) string         { return r.key("gr", id) }
func (r *Redis) hourKey(p string, t time.Time) string {
	return r.key("bh", hourBucket(t), p)
}
func (r *Redis) dayKey(p string, t time.Time) string { return r.key("bd", dayBucket(t), p) }
func (r *Redis) idemKey(p, k string) string          { return r.key("i", hashKey(p, k)) }
func (r *Redis) approvalKey(id string) string        { return r.key("a", id) }
func (r *Redis) pendingKey(session string) string    { return r.key("ap", session) }
func (r *Redis) approvalIndexKey() string            { return r.key("aidx") }
func (r *Redis) pendingIndexKey() string             { return r.key("apend") }
func (r *Redis) dedupeKey(a *Approval) string {
	return r.key("ad", hashKey(a.SessionID, a.ActionID, a.RequestHash))
}

func (r *Redis) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.Timeout)
}

func unavailable(err error) error {
	return fmt.Errorf("%w: redis: %v", ErrUnavailable, err)
}

// script runs a script through the batcher under the store timeout; while
// the server may evict keys (CheckEviction) nothing is sent.
func (r *Redis) script(ctx context.Context, s *redis.Script, keys []string, args []any) (any, error) {
	if err := r.evicting.Load(); err != nil {
		return nil, *err
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	v, err := r.batcher.run(ctx, s, keys, args)
	if err != nil {
		return nil, unavailable(err)
	}
	return v, nil
}

// run runs a script and returns its reply as strings.
func (r *Redis) run(ctx context.Context, s *redis.Script, keys []string, args ...any) ([]string, error) {
	v, err := r.script(ctx, s, keys, args)
	if err != nil {
		return nil, err
	}
	return replyStrings(v)
}

func replyStrings(v any) ([]string, error) {
	items, ok := v.([]any)
	if !ok || len(items) == 0 {
		return nil, fmt.Errorf("%w: redis: unexpected script reply %T", ErrUnavailable, v)
	}
	out := make([]string, len(items))
	for i, it := range items {
		switch x := it.(type) {
		case string:
			out[i] = x
		case int64:
			out[i] = strconv.FormatInt(x, 10)
		default:
			return nil, fmt.Errorf("%w: redis: unexpected script reply item %T", ErrUnavailable, it)
		}
	}
	return out, nil
}

func (r *Redis) runInt(ctx context.Context, s *redis.Script, keys []string, args ...any) (int64, error) {
	v, err := r.script(ctx, s, keys, args)
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("%w: redis: unexpected script reply %T", ErrUnavailable, v)
	}
	return n, nil
}

func (r *Redis) tampered(kind, id string) error {
	r.log.Error().Str("kind", kind).Str("id", id).Err(ErrTampered).Msg("store: record failed integrity check; treated as absent")
	return ErrNotFound
}

func statusErr(st []string) error {
	switch st[0] {
	case "notfound", "tampered":
		return ErrNotFound
	case "revoked":
		return ErrRevoked
	case "replay":
		return ErrReplay
	case "consumed":
		return ErrGrantConsumed
	case "limit":
		return ErrSessionLimit
	case "toomany":
		return ErrTooManyPending
	case "budget":
		if len(st) > 1 {
			return fmt.Errorf("%w: %s", ErrBudgetExhausted, st[1])
		}
		return ErrBudgetExhausted
	}
	return fmt.Errorf("%w: redis: unexpected script status %q", ErrUnavailable, st[0])
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func ttlMS(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	if err := r.client.Ping(ctx).Err(); err != nil {
		return unavailable(err)
	}
	return r.CheckEviction(ctx)
}

// ErrEvicting: the Redis server may evict keys under memory pressure
// (its maxmemory-policy is not noeviction). Every key the store keeps is
// part of a security decision: an evicted replay entry lets a proof be
// replayed, an evicted revocation epoch un-revokes leases, an evicted
// budget bucket or grant marker gives back what was spent. The gate
// refuses to start on such a server.
var ErrEvicting = errors.New("store: redis may evict keys")

// CheckEviction reads the server's eviction policy (INFO memory) and
// returns an ErrEvicting error naming it when it is not noeviction; until
// a later check finds noeviction, every script refuses with that error
// (the gate answers 503 store_unavailable and runs nothing). The gate
// checks at start (and refuses to start) and on every readiness probe
// (Ping), so a policy changed at runtime is caught too. A server that
// cannot be asked (down, or INFO refused by its ACL) returns
// ErrUnavailable and leaves the last finding as it was.
func (r *Redis) CheckEviction(ctx context.Context) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	info, err := r.client.Info(ctx, "memory").Result()
	if err != nil {
		return unavailable(err)
	}
	policy, maxmem := "", ""
	for line := range strings.Lines(info) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch k {
		case "maxmemory_policy":
			policy = v
		case "maxmemory":
			maxmem = v
		}
	}
	switch policy {
	case "noeviction":
		if r.evicting.Swap(nil) != nil {
			r.log.Warn().Msg("store: redis maxmemory-policy is noeviction again; scripts run again")
		}
		return nil
	case "":
		return unavailable(errors.New("INFO memory has no maxmemory_policy"))
	}
	err = fmt.Errorf("%w: %w: maxmemory-policy is %s (maxmemory %s bytes); set maxmemory-policy noeviction on the server", ErrUnavailable, ErrEvicting, policy, maxmem)
	if r.evicting.Swap(&err) == nil {
		r.log.Error().Err(err).Msg("store: redis may evict keys (replay entries, revocations, budgets); refusing every script until it does not")
	}
	return err
}

// sessionRec is the MAC'd part of a session: counters and the revoked flag
// are zero in it and live in plain hash fields.
func sessionRec(s *Session) ([]byte, error) {
	c := cloneSession(s)
	c.CallsUsed, c.CostUsedCents, c.Revoked = 0, 0, false
	return json.Marshal(c)
}

// openSession verifies rec/mac and overlays the counters.
func (r *Redis) openSession(id, rec, mac, calls, cost string) (*Session, error) {
	s, ok := r.sessions.get(id, rec, mac)
	if !ok {
		if !verifyMAC(r.cfg.MACKey, "session", id, []byte(rec), mac) {
			return nil, r.tampered("session", id)
		}
		s = new(Session)
		if err := json.Unmarshal([]byte(rec), s); err != nil || s.ID != id {
			return nil, r.tampered("session", id)
		}
		r.sessions.put(id, rec, mac, s)
		s = cloneSession(s)
	}
	s.CallsUsed, _ = strconv.ParseInt(calls, 10, 64)
	s.CostUsedCents, _ = strconv.ParseInt(cost, 10, 64)
	return s, nil
}

// sessionCacheSize bounds verifiedSessions.
const sessionCacheSize = 4096

// verifiedSessions remembers session records whose MAC verified and which
// decoded, keyed by session id, so the two scripts of every execute
// (Authenticate, Grant) do not verify and decode the same immutable record
// again (≈ 12 µs each in a profile). A hit needs the record and MAC to be
// byte-identical to the verified ones: a changed record (a renewal, or
// tampering) misses and is verified in full. Usage counters are separate
// hash fields, never part of the cached record.
type verifiedSessions struct {
	mu sync.Mutex
	m  map[string]verifiedSession
}

type verifiedSession struct {
	rec, mac string
	s        *Session // never handed out; get returns a clone
}

func (v *verifiedSessions) get(id, rec, mac string) (*Session, bool) {
	v.mu.Lock()
	e, ok := v.m[id]
	v.mu.Unlock()
	if !ok || e.rec != rec || e.mac != mac {
		return nil, false
	}
	return cloneSession(e.s), true
}

func (v *verifiedSessions) put(id, rec, mac string, s *Session) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= sessionCacheSize {
		v.m = make(map[string]verifiedSession, 64)
	}
	v.m[id] = verifiedSession{rec: rec, mac: mac, s: s}
}

// CreateSession implements Store.
func (r *Redis) CreateSession(ctx context.Context, s *Session, limits PrincipalLimits) (*Session, error) {
	if err := checkSession(s); err != nil {
		return nil, err
	}
	now := r.clock.Now()
	gk, pk := r.globalEpochKey(), r.principalEpochKey(s.Principal)
	var ge, pe int64
	rctx, cancel := r.ctx(ctx)
	vals, err := r.client.MGet(rctx, gk, pk).Result()
	cancel()
	if err != nil {
		return nil, unavailable(err)
	}
	ge, pe = parseEpoch(vals[0]), parseEpoch(vals[1])
	for range 8 {
		n := cloneSession(s)
		n.GlobalEpoch, n.PrincipalEpoch = ge, pe
		n.CallsUsed, n.CostUsedCents, n.Revoked = 0, 0, false
		rec, err := sessionRec(n)
		if err != nil {
			return nil, err
		}
		st, err := r.run(ctx, r.scripts.createSession,
			[]string{r.sessionKey(s.ID), gk, pk, r.livePKey(s.Principal), r.liveAllKey(), r.principalsKey()},
			s.Principal, ms(now), limits.MaxLiveSessions, ttlMS(s.MaxExpiresAt.Sub(now)),
			ms(s.LeaseExpiresAt), s.ID, ge, pe, rec, recordMAC(r.cfg.MACKey, "session", s.ID, rec))
		if err != nil {
			return nil, err
		}
		switch st[0] {
		case "ok":
			return n, nil
		case "exists":
			return nil, fmt.Errorf("%w: session id exists", ErrConflict)
		case "retry":
			ge, _ = strconv.ParseInt(st[1], 10, 64)
			pe, _ = strconv.ParseInt(st[2], 10, 64)
			continue
		}
		return nil, statusErr(st)
	}
	return nil, fmt.Errorf("%w: revocation epochs kept changing", ErrConflict)
}

func parseEpoch(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// GetSession implements Store. Revoked reports epoch revocations too.
func (r *Redis) GetSession(ctx context.Context, id string) (*Session, error) {
	st, err := r.run(ctx, r.scripts.getSession, []string{r.sessionKey(id), r.globalEpochKey()},
		r.principalEpochKey(""))
	if err != nil {
		return nil, err
	}
	if st[0] != "ok" {
		return nil, statusErr(st)
	}
	s, err := r.openSession(id, st[1], st[2], st[3], st[4])
	if err != nil {
		return nil, err
	}
	s.Revoked = st[5] == "1"
	return s, nil
}

// RenewSession implements Store.
func (r *Redis) RenewSession(ctx context.Context, id string, scopes []string, leaseExpiresAt, now time.Time) (*Session, error) {
	for range 8 {
		rctx, cancel := r.ctx(ctx)
		vals, err := r.client.HMGet(rctx, r.sessionKey(id), "rec", "mac", "calls", "cost").Result()
		cancel()
		if err != nil {
			return nil, unavailable(err)
		}
		rec, _ := vals[0].(string)
		if rec == "" {
			return nil, ErrNotFound
		}
		mac, _ := vals[1].(string)
		s, err := r.openSession(id, rec, mac, "0", "0")
		if err != nil {
			return nil, err
		}
		s.Scopes = slices.Clone(scopes)
		s.LeaseExpiresAt = leaseExpiresAt
		nrec, err := sessionRec(s)
		if err != nil {
			return nil, err
		}
		st, err := r.run(ctx, r.scripts.renew,
			[]string{r.sessionKey(id), r.globalEpochKey(), r.principalEpochKey(s.Principal), r.livePKey(s.Principal), r.liveAllKey()},
			rec, nrec, recordMAC(r.cfg.MACKey, "session", id, nrec), ms(leaseExpiresAt), id)
		if err != nil {
			return nil, err
		}
		switch st[0] {
		case "ok":
			s.CallsUsed, _ = strconv.ParseInt(st[1], 10, 64)
			s.CostUsedCents, _ = strconv.ParseInt(st[2], 10, 64)
			return s, nil
		case "retry":
			continue
		}
		return nil, statusErr(st)
	}
	return nil, fmt.Errorf("%w: session kept changing", ErrConflict)
}

// Authenticate implements Store in one round trip.
func (r *Redis) Authenticate(ctx context.Context, req AuthRequest) (*Session, error) {
	st, err := r.run(ctx, r.scripts.auth,
		[]string{r.sessionKey(req.SessionID), r.globalEpochKey(), r.replayKey(req.JKT, req.JTI)},
		req.JKT, ttlMS(req.ReplayExpiresAt.Sub(req.Now)), r.principalEpochKey(""))
	if err != nil {
		return nil, err
	}
	if st[0] != "ok" {
		return nil, statusErr(st)
	}
	return r.openSession(req.SessionID, st[1], st[2], st[3], st[4])
}

// Revoke implements Store. Revoking an unknown session is ErrNotFound.
func (r *Redis) Revoke(ctx context.Context, req RevokeRequest, now time.Time) (int, error) {
	if err := checkRevoke(req); err != nil {
		return 0, err
	}
	var n int64
	var err error
	switch {
	case req.SessionID != "":
		n, err = r.runInt(ctx, r.scripts.revokeSession, []string{r.sessionKey(req.SessionID), r.liveAllKey()},
			ms(now), req.SessionID, r.livePKey(""))
		if err == nil && n < 0 {
			return 0, ErrNotFound
		}
	case req.Principal != "":
		n, err = r.runInt(ctx, r.scripts.revokePrincipal,
			[]string{r.principalEpochKey(req.Principal), r.livePKey(req.Principal), r.liveAllKey()}, ms(now))
	default:
		n, err = r.runInt(ctx, r.scripts.revokeAll,
			[]string{r.globalEpochKey(), r.liveAllKey(), r.principalsKey()}, ms(now), r.livePKey(""))
	}
	return int(n), err
}

// Grant implements Store in one round trip.
func (r *Redis) Grant(ctx context.Context, req GrantRequest) (*Grant, error) {
	if err := checkGrant(req); err != nil {
		return nil, err
	}
	st, err := r.run(ctx, r.scripts.grant,
		[]string{r.sessionKey(req.SessionID), r.globalEpochKey(), r.principalEpochKey(req.Principal),
			r.hourKey(req.Principal, req.Now), r.dayKey(req.Principal, req.Now), r.grantKey(req.GrantID)},
		req.Principal, req.Calls, req.CostCents, req.Limits.MaxCallsPerHour, req.Limits.MaxCostCentsPerDay,
		ttlMS(grantTTL(req.TTL)), ttlMS(hourBucketTTL), ttlMS(dayBucketTTL))
	if err != nil {
		return nil, err
	}
	if st[0] != "ok" {
		return nil, statusErr(st)
	}
	// The budget is reserved; a tampered session is still refused.
	if _, err := r.openSession(req.SessionID, st[1], st[2], st[3], st[4]); err != nil {
		return nil, err
	}
	return &Grant{GrantID: req.GrantID, SessionID: req.SessionID, Principal: req.Principal,
		Calls: req.Calls, CostCents: req.CostCents, At: req.Now}, nil
}

// Refund implements Store.
func (r *Redis) Refund(ctx context.Context, g *Grant) error {
	_, err := r.runInt(ctx, r.scripts.refund,
		[]string{r.sessionKey(g.SessionID), r.hourKey(g.Principal, g.At), r.dayKey(g.Principal, g.At)},
		g.Calls, g.CostCents)
	return err
}

// record is a MAC'd JSON record in a hash {rec, mac}.
type record struct {
	rec, mac string
}

func (r *Redis) getRecord(ctx context.Context, key string) (record, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	vals, err := r.client.HMGet(ctx, key, "rec", "mac").Result()
	if err != nil {
		return record{}, unavailable(err)
	}
	rec, _ := vals[0].(string)
	mac, _ := vals[1].(string)
	if rec == "" {
		return record{}, ErrNotFound
	}
	return record{rec, mac}, nil
}

// casRecord replaces old by v (re-MAC'd); false when old was replaced
// meanwhile. ttl 0 keeps the TTL; zrem names a member to drop from every
// zset in zsets.
func (r *Redis) casRecord(ctx context.Context, key, kind, id string, old string, v any, ttl time.Duration, zrem string, zsets ...string) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	var pexp int64
	if ttl > 0 {
		pexp = ttlMS(ttl)
	}
	n, err := r.runInt(ctx, r.scripts.cas, append([]string{key}, zsets...), old, b, recordMAC(r.cfg.MACKey, kind, id, b), pexp, zrem)
	return n == 1, err
}

func (r *Redis) openIdem(id string, rc record) (*IdemRecord, bool) {
	var rec IdemRecord
	if !verifyMAC(r.cfg.MACKey, "idem", id, []byte(rc.rec), rc.mac) || json.Unmarshal([]byte(rc.rec), &rec) != nil {
		return nil, false
	}
	return &rec, true
}

func idemID(principal, key string) string { return principal + "\x00" + key }

// BeginIdempotent implements Store. A tampered record is replaced.
func (r *Redis) BeginIdempotent(ctx context.Context, rec *IdemRecord, ttl time.Duration) (*IdemRecord, error) {
	n := cloneIdem(rec)
	n.State = IdemRunning
	if n.CreatedAt.IsZero() {
		n.CreatedAt = r.clock.Now()
	}
	b, err := json.Marshal(n)
	if err != nil {
		return nil, err
	}
	id, key := idemID(rec.Principal, rec.Key), r.idemKey(rec.Principal, rec.Key)
	for range 8 {
		st, err := r.run(ctx, r.scripts.idemBegin, []string{key}, b, recordMAC(r.cfg.MACKey, "idem", id, b), ttlMS(ttl))
		if err != nil {
			return nil, err
		}
		if st[0] == "ok" {
			return nil, nil
		}
		if cur, ok := r.openIdem(id, record{st[1], st[2]}); ok {
			return cur, nil
		}
		r.tampered("idem", rec.Key)
		ok, err := r.casRecord(ctx, key, "idem", id, st[1], n, ttl, "")
		if err != nil {
			return nil, err
		}
		if ok {
			return nil, nil
		}
	}
	return nil, ErrConflict
}

// updateIdem applies next to the record (ErrNotFound if absent or
// tampered).
func (r *Redis) updateIdem(ctx context.Context, principal, key string, ttl time.Duration, next func(*IdemRecord) (*IdemRecord, error)) error {
	id, k := idemID(principal, key), r.idemKey(principal, key)
	for range 8 {
		rc, err := r.getRecord(ctx, k)
		if err != nil {
			return err
		}
		cur, ok := r.openIdem(id, rc)
		if !ok {
			return r.tampered("idem", key)
		}
		n, err := next(cur)
		if err != nil {
			return err
		}
		done, err := r.casRecord(ctx, k, "idem", id, rc.rec, n, ttl, "")
		if err != nil || done {
			return err
		}
	}
	return ErrConflict
}

// SetIdempotentGrant implements Store.
func (r *Redis) SetIdempotentGrant(ctx context.Context, principal, key, grantID, receiptID string) error {
	return r.updateIdem(ctx, principal, key, 0, func(c *IdemRecord) (*IdemRecord, error) { return idemGrantNext(c, grantID, receiptID) })
}

// FinishIdempotent implements Store.
func (r *Redis) FinishIdempotent(ctx context.Context, principal, key string, status int, body json.RawMessage, ttl time.Duration) error {
	return r.updateIdem(ctx, principal, key, ttl, func(c *IdemRecord) (*IdemRecord, error) { return idemFinishNext(c, status, body) })
}

// AbortIdempotent implements Store. A missing record is not an error; a
// done record is never deleted (ErrConflict).
func (r *Redis) AbortIdempotent(ctx context.Context, principal, key string) error {
	id, k := idemID(principal, key), r.idemKey(principal, key)
	for range 8 {
		rc, err := r.getRecord(ctx, k)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		cur, ok := r.openIdem(id, rc)
		if ok && cur.State != IdemRunning {
			return ErrConflict
		}
		n, err := r.runInt(ctx, r.scripts.casDel, []string{k}, rc.rec)
		if err != nil || n == 1 {
			return err
		}
	}
	return ErrConflict
}

func (r *Redis) openApproval(id string, rc record) (*Approval, error) {
	return openRecord(r, "approval", id, rc, approvalID)
}

func approvalID(a *Approval) string { return a.ID }

// CreateApproval implements Store.
func (r *Redis) CreateApproval(ctx context.Context, a *Approval, maxPending int) (*Approval, bool, error) {
	if a == nil || a.ID == "" || a.SessionID == "" {
		return nil, false, errors.New("store: approval needs id and session id")
	}
	now := r.clock.Now()
	n := cloneApproval(a)
	n.State = ApprovalPending
	n.Claim = nil
	if n.CreatedAt.IsZero() {
		n.CreatedAt = now
	}
	b, err := json.Marshal(n)
	if err != nil {
		return nil, false, err
	}
	st, err := r.run(ctx, r.scripts.approval,
		[]string{r.approvalKey(a.ID), r.pendingKey(a.SessionID), r.dedupeKey(a), r.approvalIndexKey(), r.pendingIndexKey()},
		b, recordMAC(r.cfg.MACKey, "approval", a.ID, b), ms(now), ms(n.ExpiresAt), maxPending,
		ms(n.CreatedAt), ttlMS(n.ExpiresAt.Add(approvalRetention).Sub(now)), a.ID, r.approvalKey(""))
	if err != nil {
		return nil, false, err
	}
	switch st[0] {
	case "ok":
		return n, true, nil
	case "exists":
		return nil, false, fmt.Errorf("%w: approval id exists", ErrConflict)
	case "dup":
		ex, err := r.openApproval(st[3], record{st[1], st[2]})
		if err != nil {
			return nil, false, err
		}
		return approvalView(ex, now), false, nil
	}
	return nil, false, statusErr(st)
}

// GetApproval implements Store.
func (r *Redis) GetApproval(ctx context.Context, id string) (*Approval, error) {
	rc, err := r.getRecord(ctx, r.approvalKey(id))
	if err != nil {
		return nil, err
	}
	a, err := r.openApproval(id, rc)
	if err != nil {
		return nil, err
	}
	return approvalView(a, r.clock.Now()), nil
}

// ListApprovals implements Store (limit ≤ 0 means no limit). Tampered
// records are left out; index entries of vanished records are pruned.
// Pending and expired approvals (the expiry sweep, the operators' list)
// are read from the pending index, not from the 7 days of decided ones.
func (r *Redis) ListApprovals(ctx context.Context, state ApprovalState, limit int) ([]*Approval, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	now := r.clock.Now()
	index := r.approvalIndexKey()
	if state == ApprovalPending || state == ApprovalExpired {
		// Only a stored pending approval reads as either.
		if err := r.backfillPendingIndex(ctx); err != nil {
			return nil, err
		}
		index = r.pendingIndexKey()
	}
	var out []*Approval
	err := r.approvalPages(ctx, index, true, func(list []*Approval) (bool, error) {
		for _, a := range list {
			if v := approvalView(a, now); state == "" || v.State == state {
				out = append(out, v)
			}
		}
		return limit <= 0 || len(out) < limit, nil
	})
	if err != nil {
		return nil, err
	}
	sortApprovals(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// approvalPages reads the approvals of the zset index a page at a time
// (newest first when rev) and calls fn with each page's verified records
// until it returns false. Tampered records are left out; entries of
// vanished records are pruned from index.
func (r *Redis) approvalPages(ctx context.Context, index string, rev bool, fn func([]*Approval) (bool, error)) error {
	const page = 200
	for start := int64(0); ; start += page {
		ids, err := r.client.ZRangeArgs(ctx, redis.ZRangeArgs{Key: index, Start: start, Stop: start + page - 1, Rev: rev}).Result()
		if err != nil {
			return unavailable(err)
		}
		if len(ids) == 0 {
			return nil
		}
		list, gone, err := readRecords(ctx, r, ids, index, r.approvalKey, "approval", approvalID)
		if err != nil {
			return err
		}
		// Pruned entries shift the later ones up by as many places.
		start -= int64(gone)
		if more, err := fn(list); err != nil || !more {
			return err
		}
	}
}

// backfillPendingIndex adds to the pending index the pending approvals of
// a store written before the index existed, once per store (a marker key)
// and process. The index need only hold every pending approval: an entry
// of one decided meanwhile is read and filtered out like any other, and
// pruned when its record expires.
func (r *Redis) backfillPendingIndex(ctx context.Context) error {
	if r.pendingIndexed.Load() {
		return nil
	}
	marker := r.key("apend", "v1")
	n, err := r.client.Exists(ctx, marker).Result()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		err := r.approvalPages(ctx, r.approvalIndexKey(), false, func(list []*Approval) (bool, error) {
			var zs []redis.Z
			for _, a := range list {
				if a.State == ApprovalPending {
					zs = append(zs, redis.Z{Score: float64(ms(a.CreatedAt)), Member: a.ID})
				}
			}
			if len(zs) > 0 {
				if err := r.client.ZAdd(ctx, r.pendingIndexKey(), zs...).Err(); err != nil {
					return false, unavailable(err)
				}
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		if err := r.client.Set(ctx, marker, "1", 0).Err(); err != nil {
			return unavailable(err)
		}
	}
	r.pendingIndexed.Store(true)
	return nil
}

// updateApproval verifies, computes next and writes it by compare-and-set.
func (r *Redis) updateApproval(ctx context.Context, id string, next func(*Approval) (*Approval, error)) (*Approval, error) {
	key := r.approvalKey(id)
	for range 16 {
		rc, err := r.getRecord(ctx, key)
		if err != nil {
			return nil, err
		}
		a, err := r.openApproval(id, rc)
		if err != nil {
			return nil, err
		}
		n, err := next(a)
		if err != nil {
			return nil, err
		}
		if n == nil {
			return approvalView(a, r.clock.Now()), nil
		}
		var zrem string
		var zsets []string
		if n.State != ApprovalPending {
			zrem, zsets = id, []string{r.pendingKey(a.SessionID), r.pendingIndexKey()}
		}
		ok, err := r.casRecord(ctx, key, "approval", id, rc.rec, n, 0, zrem, zsets...)
		if err != nil {
			return nil, err
		}
		if ok {
			return n, nil
		}
	}
	return nil, ErrConflict
}

// ClaimApproval implements Store.
func (r *Redis) ClaimApproval(ctx context.Context, id string, claim Claim, now time.Time) (*Approval, error) {
	return r.updateApproval(ctx, id, func(a *Approval) (*Approval, error) { return claimNext(a, claim, now) })
}

// DecideApproval implements Store.
func (r *Redis) DecideApproval(ctx context.Context, id string, state ApprovalState, by, reason string, now time.Time) (*Approval, error) {
	if err := checkDecideState(state); err != nil {
		return nil, err
	}
	return r.updateApproval(ctx, id, func(a *Approval) (*Approval, error) {
		return decideNext(a, state, by, reason, now)
	})
}

// FinishApproval implements Store.
func (r *Redis) FinishApproval(ctx context.Context, f ApprovalFinish) (*Approval, error) {
	if err := checkFinishState(f.State); err != nil {
		return nil, err
	}
	return r.updateApproval(ctx, f.ID, func(a *Approval) (*Approval, error) { return finishNext(a, f) })
}

// Sync is a no-op: Redis durability is the server's configuration.
func (r *Redis) Sync() error { return nil }

// Close closes the connection pool.
func (r *Redis) Close() error {
	r.batcher.close()
	r.copies.close()
	return r.client.Close()
}

var _ Store = (*Redis)(nil)
