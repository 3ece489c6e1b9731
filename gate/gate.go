// Package gate owns LatchGate's HTTP surface: the client and admin servers
// on their Unix sockets, routing, authentication of every request, the
// execute pipeline, error rendering and the admin API.
//
// The gate fails closed: when the store, the policy or the ledger cannot
// answer, it refuses with 503 and runs nothing. Every client-visible error
// is a *Error rendered by writeError. The gate never reads flags, the
// environment or signals (cmd/latchgate does) and never holds a lock across
// network I/O, policy evaluation or fsync.
//
// The API is internal to this module and may change.
package gate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/latchgate/latchgate/actions"
	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/events"
	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Version is the gate's version string.
const Version = "0.1.0"

// Principal holds one principal's limits (config `principals.<name>`).
type Principal struct {
	// AllowedScopes are the scopes a lease may carry. Default: [tools:call].
	AllowedScopes []string `yaml:"allowed_scopes" json:"allowed_scopes"`
	// MaxCallsPerSession caps a session's max_calls. Default: nil (no cap).
	MaxCallsPerSession *int64 `yaml:"max_calls_per_session" json:"max_calls_per_session"`
	// MaxCostPerSession caps a session's max_cost_usd_cents. Default: nil.
	MaxCostPerSession *int64 `yaml:"max_cost_usd_cents_per_session" json:"max_cost_usd_cents_per_session"`
	// MaxCallsPerHour limits calls across all sessions per UTC hour. 0: none.
	MaxCallsPerHour int64 `yaml:"max_calls_per_hour" json:"max_calls_per_hour"`
	// MaxCostPerDay limits cost across all sessions per UTC day. 0: none.
	MaxCostPerDay int64 `yaml:"max_cost_usd_cents_per_day" json:"max_cost_usd_cents_per_day"`
	// MaxLiveSessions caps concurrent live sessions. 0 means the default
	// (100; 1000 in --dev).
	MaxLiveSessions int64 `yaml:"max_live_sessions" json:"max_live_sessions"`
}

// Config configures a Gate. Zero values take the documented defaults.
type Config struct {
	// GateID names this gate in receipts and claims. Required.
	GateID string
	// Dev relaxes defaults for local use (see ARCHITECTURE "Configuration");
	// cmd/latchgate applies the dev defaults, the gate only reports it.
	Dev bool
	// StoreMode is "embedded" or "redis", for status output.
	StoreMode string
	// PublicBaseURL, when set, is the htu base for every proof.
	PublicBaseURL string
	// MaxBodyBytes caps request bodies. Default: 1 MiB.
	MaxBodyBytes int64
	// StoreTimeout bounds every call to a networked store (Redis); the
	// embedded store never waits on a network (see storeCtx). Default: 2s.
	StoreTimeout time.Duration
	// Operators maps operator uids to their names ("uid:<n>" if unnamed).
	Operators map[uint32]string
	// AllowOperatorAgents lets operator uids take leases (default false).
	AllowOperatorAgents bool
	// TrustAgentID makes the principal "agent:<agent_id>" when given.
	TrustAgentID bool
	// Identities maps peer uids to principal names; unmapped: "uid:<n>".
	Identities map[uint32]string
	// Principals holds limits by principal name; "*" is the fallback.
	Principals map[string]Principal
	// LeaseRate is lease issuances per second per peer uid. 0: unlimited.
	LeaseRate float64
	// ExecRate is executes per second per session. 0: unlimited.
	ExecRate float64
	// PendingTTL is how long an approval waits. Default: 15m.
	PendingTTL time.Duration
	// ApprovalSweep is how often RunSweeper moves approvals past their
	// expiry to expired. Default: 10s.
	ApprovalSweep time.Duration
	// LearnTTL is how long a domain learned at approval stays allowed.
	// Default: 720h (30 days).
	LearnTTL time.Duration
	// MaxPendingPerSession caps pending approvals per session. Default: 20.
	MaxPendingPerSession int
	// IdempotencyTTL is how long idempotency records live. Default: 24h.
	IdempotencyTTL time.Duration
	// MaxConns caps concurrent connections per listener. Default: 1024.
	MaxConns int
	// ShutdownGrace bounds draining on shutdown. Default: 10s.
	ShutdownGrace time.Duration
	// ReadHeaderTimeout guards against slow clients. Default: 5s.
	ReadHeaderTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 2 * time.Second
	}
	if c.PendingTTL == 0 {
		c.PendingTTL = 15 * time.Minute
	}
	if c.ApprovalSweep == 0 {
		c.ApprovalSweep = 10 * time.Second
	}
	if c.LearnTTL == 0 {
		c.LearnTTL = 720 * time.Hour
	}
	if c.MaxPendingPerSession == 0 {
		c.MaxPendingPerSession = 20
	}
	if c.IdempotencyTTL == 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
	if c.MaxConns == 0 {
		c.MaxConns = 1024
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 5 * time.Second
	}
	if c.StoreMode == "" {
		c.StoreMode = "embedded"
	}
	return c
}

// Check reports what New would refuse: Validate of c with its defaults
// filled in.
func (c Config) Check() error { return c.withDefaults().Validate() }

// Validate checks the configuration without changing it.
func (c Config) Validate() error {
	switch {
	case c.GateID == "":
		return errors.New("gate: gate_id cannot be empty")
	case c.MaxBodyBytes < 1024:
		return errors.New("gate: limits.max_body_bytes must be at least 1024")
	case c.StoreTimeout < 0 || c.PendingTTL < 0 || c.IdempotencyTTL < 0 || c.ApprovalSweep < 0 || c.LearnTTL < 0:
		return errors.New("gate: durations must be positive, like \"2s\"")
	case c.ShutdownGrace < 0 || c.ReadHeaderTimeout < 0:
		return errors.New("gate: shutdown_grace and read_header_timeout must be positive durations, like \"10s\"")
	case c.LeaseRate < 0 || c.ExecRate < 0:
		return errors.New("gate: rate limits must be ≥ 0 (0 disables)")
	case c.MaxConns < 0:
		return errors.New("gate: limits.max_conns must be ≥ 0 (0 means 1024)")
	case c.MaxPendingPerSession < 0:
		return errors.New("gate: approvals.max_pending_per_session must be ≥ 0 (0 means 20)")
	}
	for name, p := range c.Principals {
		if err := p.validate(); err != nil {
			return fmt.Errorf("gate: principals.%s.%w", name, err)
		}
	}
	return nil
}

// validate refuses negative limits: the store reads any limit ≤ 0 as
// "none", so a negative one would turn the limit off.
func (p Principal) validate() error {
	switch {
	case p.MaxCallsPerSession != nil && *p.MaxCallsPerSession < 0:
		return errors.New("max_calls_per_session must be ≥ 0")
	case p.MaxCostPerSession != nil && *p.MaxCostPerSession < 0:
		return errors.New("max_cost_usd_cents_per_session must be ≥ 0")
	case p.MaxCallsPerHour < 0:
		return errors.New("max_calls_per_hour must be ≥ 0 (0: no limit)")
	case p.MaxCostPerDay < 0:
		return errors.New("max_cost_usd_cents_per_day must be ≥ 0 (0: no limit)")
	case p.MaxLiveSessions < 0:
		return errors.New("max_live_sessions must be ≥ 0 (0 means 100)")
	}
	return nil
}

// Snapshot is the reloadable part of the gate: manifests and policy.
type Snapshot struct {
	Actions *actions.Registry
	Policy  *policy.Engine
}

// Deps are the Gate's collaborators. All but Metrics are required.
type Deps struct {
	Store    store.Store
	Leases   *lease.Authority
	LeaseKey *lease.Keys
	Ledger   *receipts.Ledger
	Runner   *actions.Runner
	Initial  *Snapshot
	// Reload builds a fresh Snapshot (manifests + policy, tested). Optional;
	// without it POST /v1/admin/reload answers 404.
	Reload func() (*Snapshot, error)
	// Events is the durable event journal (GET /v1/events, webhooks).
	// Optional: without it events live in memory only.
	Events *events.Journal
	// Webhooks serves the webhook admin endpoints. Optional: without it
	// they report no endpoints configured.
	Webhooks Webhooks
	Clock    clock.Clock
	Logger   zerolog.Logger
	Metrics  prometheus.Registerer
	// Gatherer serves GET /metrics; defaults to a registry of our own.
	Gatherer prometheus.Gatherer
}

// Gate is the LatchGate server.
type Gate struct {
	cfg Config
	st  store.Store
	// emb is st when st is the embedded store itself (nil for Redis and
	// for the wrappers tests use). It never waits on a network and reads
	// its context only on entry, so its calls get no deadline (storeCtx),
	// and it can restore replay entries (restoreReplay).
	emb   *store.Embedded
	auth  *lease.Authority
	keys  *lease.Keys
	led   *receipts.Ledger
	run   *actions.Runner
	clk   clock.Clock
	log   zerolog.Logger
	mets  *metrics
	gath  prometheus.Gatherer
	start time.Time

	sharedKeys atomic.Pointer[[]byte] // receipt key set last published to a shared store

	events *events.Journal
	hooks  Webhooks

	snap     atomic.Pointer[Snapshot]
	reloadFn func() (*Snapshot, error)
	// reloads numbers reload builds in the order they start (read the
	// files); builds run concurrently, outside any lock.
	reloads atomic.Uint64
	// reloadMu guards reloaded, the number of the newest build swapped
	// in, so an older build that finishes late never replaces it.
	reloadMu sync.Mutex
	reloaded uint64
	draining atomic.Bool

	leaseLimiter *limiter
	execLimiter  *limiter

	client http.Handler
	admin  http.Handler
}

// New builds a Gate.
func New(cfg Config, deps Deps) (*Gate, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case deps.Store == nil:
		return nil, errors.New("gate: a store is required")
	case deps.Leases == nil || deps.LeaseKey == nil:
		return nil, errors.New("gate: a lease authority and keys are required")
	case deps.Ledger == nil:
		return nil, errors.New("gate: a ledger is required")
	case deps.Runner == nil:
		return nil, errors.New("gate: an action runner is required")
	case deps.Initial == nil || deps.Initial.Actions == nil || deps.Initial.Policy == nil:
		return nil, errors.New("gate: initial actions and policy are required")
	case deps.Clock == nil:
		return nil, errors.New("gate: a clock is required")
	}
	reg := deps.Metrics
	gath := deps.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gath = r, r
	}
	if gath == nil {
		gath = prometheus.NewRegistry()
	}
	g := &Gate{
		cfg: cfg, st: deps.Store, auth: deps.Leases, keys: deps.LeaseKey, led: deps.Ledger,
		run: deps.Runner, clk: deps.Clock, log: deps.Logger, gath: gath,
		reloadFn: deps.Reload, mets: newMetrics(reg),
		leaseLimiter: newLimiter(cfg.LeaseRate, deps.Clock),
		execLimiter:  newLimiter(cfg.ExecRate, deps.Clock),
	}
	g.emb, _ = deps.Store.(*store.Embedded)
	g.events, g.hooks = deps.Events, deps.Webhooks
	if g.events == nil {
		ev, err := events.Open(events.Config{}, deps.Clock, deps.Logger)
		if err != nil {
			return nil, err
		}
		g.events = ev
	}
	if g.hooks == nil {
		g.hooks = noWebhooks{}
	}
	if err := g.restoreReplay(); err != nil {
		return nil, err
	}
	g.start = g.clk.Now()
	g.snap.Store(deps.Initial)
	g.client = g.clientHandler()
	g.admin = g.adminHandler()
	return g, nil
}

// restoreReplay puts the replay entries of the proofs named by the
// ledger's recent intents back into the embedded store before the gate
// serves. A plain execute's intent commit does not sync that store
// (receipts.Intent.StoreState), so a power loss can take a used proof's
// replay entry; its intent, durable before the action ran, still names
// the proof. Redis keeps its own durability and is left alone. Failing
// here keeps the gate from starting.
func (g *Gate) restoreReplay() error {
	if g.emb == nil || g.led == nil {
		return nil
	}
	used := g.led.RecentProofs()
	if len(used) == 0 {
		return nil
	}
	entries := make([]store.ReplayEntry, len(used))
	for i, p := range used {
		entries[i] = store.ReplayEntry{JKT: p.JKT, JTI: p.JTI, ExpiresAt: p.ExpiresAt}
	}
	n, err := g.emb.RestoreReplay(context.Background(), entries, g.clk.Now())
	if err != nil {
		return fmt.Errorf("gate: restore replay entries from the ledger: %w", err)
	}
	if n > 0 {
		g.log.Warn().Int("restored", n).Int("recent_proofs", len(entries)).
			Msg("replay entries missing from the state store were restored from the ledger's intents (the store lost writes, e.g. in a power loss)")
	}
	return nil
}

// Snapshot returns the manifests and policy in force.
func (g *Gate) Snapshot() *Snapshot { return g.snap.Load() }

// Swap installs a new snapshot atomically (SIGHUP and admin reload).
func (g *Gate) Swap(s *Snapshot) {
	if s == nil || s.Actions == nil || s.Policy == nil {
		return
	}
	g.snap.Store(s)
	g.log.Info().Int("actions", s.Actions.Len()).Str("policy_version", s.Policy.Version()).Msg("reloaded policy and manifests")
}

// Reload rebuilds and swaps the snapshot; on error the old one keeps serving.
func (g *Gate) Reload() error {
	if g.reloadFn == nil {
		return errors.New("gate: reload is not configured")
	}
	n := g.reloads.Add(1)
	s, err := g.reloadFn()
	if err != nil {
		g.log.Error().Err(err).Msg("reload rejected; the previous policy and manifests keep serving")
		return err
	}
	if s == nil || s.Actions == nil || s.Policy == nil {
		return errors.New("gate: reload built no actions or policy")
	}
	g.reloadMu.Lock()
	stale := n < g.reloaded
	if !stale {
		g.reloaded = n
		g.snap.Store(s)
	}
	g.reloadMu.Unlock()
	if stale {
		g.log.Info().Msg("reload superseded by a newer one while it was built; the newer policy and manifests keep serving")
		return nil
	}
	g.log.Info().Int("actions", s.Actions.Len()).Str("policy_version", s.Policy.Version()).Msg("reloaded policy and manifests")
	return nil
}

// SetDraining makes new requests answer 503 draining (used on shutdown).
func (g *Gate) SetDraining() { g.draining.Store(true) }

// Listener kinds.
const (
	ListenerClient = "client"
	ListenerAdmin  = "admin"
	ListenerTCP    = "tcp"
)

// Run serves the listener's routes until ctx ends, then shuts down
// gracefully within the grace period. kind is ListenerClient,
// ListenerAdmin or ListenerTCP (client routes, no peer credentials).
func (g *Gate) Run(ctx context.Context, ln net.Listener, kind string) error {
	var h http.Handler
	switch kind {
	case ListenerClient, ListenerTCP:
		h = g.client
	case ListenerAdmin:
		h = g.admin
	default:
		return fmt.Errorf("gate: unknown listener kind %q", kind)
	}
	ln = newPeerListener(ln, kind, g.cfg.MaxConns)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    hardHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext: func(c context.Context, conn net.Conn) context.Context {
			return withPeer(c, peerOfConn(conn, kind))
		},
		ErrorLog: newStdLogger(g.log),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	// New requests on connections still open answer 503 draining while
	// in-flight ones finish within the grace period.
	g.SetDraining()
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		_ = srv.Close()
		return fmt.Errorf("gate: shutdown: %w", err)
	}
	return nil
}

// newID returns a lowercase UUIDv7.
func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// storeCtx bounds a store call by the store timeout. The embedded store
// gets ctx unchanged: its calls do not wait on anything a deadline could
// cut short, and the timer of context.WithTimeout was ≈ 2 µs of every
// execute's two store calls in a profile.
func (g *Gate) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if g.emb != nil {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, g.cfg.StoreTimeout)
}

func noCancel() {}

// principalConfig returns the limits for a principal ("*" fallback).
func (g *Gate) principalConfig(p string) Principal {
	if pc, ok := g.cfg.Principals[p]; ok {
		return pc
	}
	if pc, ok := g.cfg.Principals["*"]; ok {
		return pc
	}
	return Principal{}
}

func (g *Gate) principalLimits(p string) store.PrincipalLimits {
	pc := g.principalConfig(p)
	live := pc.MaxLiveSessions
	if live == 0 {
		live = 100
		if g.cfg.Dev {
			live = 1000
		}
	}
	return store.PrincipalLimits{MaxLiveSessions: live, MaxCallsPerHour: pc.MaxCallsPerHour, MaxCostCentsPerDay: pc.MaxCostPerDay}
}
