package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// LeaseInfo describes the current lease (PROTOCOL.md §3.1). It never holds
// the lease token itself.
type LeaseInfo struct {
	SessionID string    // stays the same across renewals
	LeaseJTI  string    // changes on every renewal
	ExpiresAt time.Time // as the gate granted it (a requested ttl may be clamped)
	Principal string
	Scopes    []string
	MaxCalls  *int // granted budgets; nil if none
	MaxCost   *int // max_cost_usd_cents; nil if none
}

// ConnectOptions are the lease parameters of Connect. Zero fields fall back
// to the client's options (WithAgentID, WithScopes, WithBudgets, WithTTL).
type ConnectOptions struct {
	AgentID         string
	Scopes          []string
	MaxCalls        *int
	MaxCostUSDCents *int
	TTL             time.Duration
}

// leaseState is one lease and its key. Immutable once built.
type leaseState struct {
	key      *dpopKey
	jwt      string
	info     LeaseInfo
	obtained time.Time // client clock when received
}

// leaseFlight is one lazy connect or renewal that concurrent callers share.
type leaseFlight struct {
	done  chan struct{}
	lease *leaseState // set before done is closed: the lease to use
	err   error       // set before done is closed when no lease is usable
}

type leaseRequest struct {
	DPoPJWK    publicJWK   `json:"dpop_jwk"`
	Scopes     []string    `json:"scopes,omitempty"`
	Budgets    *budgetJSON `json:"budgets,omitempty"`
	AgentID    string      `json:"agent_id,omitempty"`
	TTLSeconds int64       `json:"ttl_seconds,omitempty"`
}

type budgetJSON struct {
	MaxCalls        *int `json:"max_calls,omitempty"`
	MaxCostUSDCents *int `json:"max_cost_usd_cents,omitempty"`
}

type leaseResponse struct {
	LeaseJWT  string     `json:"lease_jwt"`
	SessionID string     `json:"session_id"`
	LeaseJTI  string     `json:"lease_jti"`
	ExpiresAt time.Time  `json:"expires_at"`
	Principal string     `json:"principal"`
	Scopes    []string   `json:"scopes"`
	Budgets   budgetJSON `json:"budgets"`
}

// Connect opens a new lease (a new session with a fresh ephemeral key),
// replacing any current one. Use it without WithAgentID, or to get a fresh
// budget after ErrBudgetExhausted or ErrLeaseExpired.
func (c *Client) Connect(ctx context.Context, co ConnectOptions) (*LeaseInfo, error) {
	if c.isClosed() {
		return nil, &Error{Kind: ErrClosed, Message: "the client is closed"}
	}
	l, err := c.openLease(ctx, co)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, &Error{Kind: ErrClosed, Message: "the client is closed"}
	}
	c.lease = l
	c.mu.Unlock()
	info := l.info
	return &info, nil
}

// Lease returns the current lease, or false if there is none.
func (c *Client) Lease() (LeaseInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lease == nil {
		return LeaseInfo{}, false
	}
	return c.lease.info, true
}

// Renew renews the current lease now through POST /v1/leases/renew (same
// session and key; budget counters carry on). The client also does this by
// itself before expiry; Renew is for callers that want it explicitly.
func (c *Client) Renew(ctx context.Context) (*LeaseInfo, error) {
	c.mu.Lock()
	l := c.lease
	c.mu.Unlock()
	if l == nil {
		return nil, &Error{Kind: ErrNotConnected, Message: "no lease to renew; call Connect first"}
	}
	nl, err := c.renewLease(ctx, l)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.lease == l {
		c.lease = nl
	}
	c.mu.Unlock()
	info := nl.info
	return &info, nil
}

// openLease asks POST /v1/leases for a lease bound to a fresh key.
func (c *Client) openLease(ctx context.Context, co ConnectOptions) (*leaseState, error) {
	if co.AgentID == "" {
		co.AgentID = c.opts.agentID
	}
	if co.Scopes == nil {
		co.Scopes = c.opts.scopes
	}
	if co.MaxCalls == nil {
		co.MaxCalls = c.opts.budgets.MaxCalls
	}
	if co.MaxCostUSDCents == nil {
		co.MaxCostUSDCents = c.opts.budgets.MaxCostUSDCents
	}
	if co.TTL == 0 {
		co.TTL = c.opts.ttl
	}
	key, err := newDPoPKey()
	if err != nil {
		return nil, err
	}
	req := leaseRequest{DPoPJWK: key.jwk, Scopes: co.Scopes, AgentID: co.AgentID}
	if co.MaxCalls != nil || co.MaxCostUSDCents != nil {
		req.Budgets = &budgetJSON{MaxCalls: co.MaxCalls, MaxCostUSDCents: co.MaxCostUSDCents}
	}
	if co.TTL > 0 {
		req.TTLSeconds = int64((co.TTL + time.Second - 1) / time.Second)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	// Lease issuance is retried: a 503 means nothing was issued, and a lost
	// answer at worst leaves an unused session that expires by itself.
	res, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/leases", body: body, retry: true})
	if err != nil {
		return nil, err
	}
	l, err := c.leaseFrom(res.body, key)
	if err != nil {
		return nil, err
	}
	c.log.LogAttrs(ctx, slog.LevelInfo, "lease opened",
		slog.String("session_id", l.info.SessionID), slog.String("principal", l.info.Principal),
		slog.Time("expires_at", l.info.ExpiresAt))
	return l, nil
}

// renewLease asks POST /v1/leases/renew for a new lease on the same session.
func (c *Client) renewLease(ctx context.Context, old *leaseState) (*leaseState, error) {
	res, err := c.doWithLease(ctx, call{method: http.MethodPost, path: "/v1/leases/renew", retry: true}, old)
	if err != nil {
		return nil, err
	}
	l, err := c.leaseFrom(res.body, old.key)
	if err != nil {
		return nil, err
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "lease renewed",
		slog.String("session_id", l.info.SessionID), slog.Time("expires_at", l.info.ExpiresAt))
	return l, nil
}

// doWithLease is do() with a given lease instead of the current one (renewal
// must not recurse into currentLease).
func (c *Client) doWithLease(ctx context.Context, cl call, l *leaseState) (*response, error) {
	ctx = context.WithValue(ctx, leaseCtxKey{}, l)
	cl.auth = true
	return c.do(ctx, cl)
}

// leaseCtxKey carries a fixed lease for one request (renewal).
type leaseCtxKey struct{}

func (c *Client) leaseFrom(data []byte, key *dpopKey) (*leaseState, error) {
	var lr leaseResponse
	if err := decode(data, &lr); err != nil {
		return nil, err
	}
	if lr.LeaseJWT == "" || lr.ExpiresAt.IsZero() {
		return nil, &Error{Kind: ErrServer, Message: "the gate's lease answer lacks lease_jwt or expires_at"}
	}
	return &leaseState{
		key: key, jwt: lr.LeaseJWT, obtained: c.opts.clock.Now(),
		info: LeaseInfo{
			SessionID: lr.SessionID, LeaseJTI: lr.LeaseJTI, ExpiresAt: lr.ExpiresAt,
			Principal: lr.Principal, Scopes: lr.Scopes,
			MaxCalls: lr.Budgets.MaxCalls, MaxCost: lr.Budgets.MaxCostUSDCents,
		},
	}, nil
}

// renewAt is when l should be renewed: RenewBefore before expiry, but not
// earlier than half its lifetime.
func (c *Client) renewAt(l *leaseState) time.Time {
	before := c.opts.renewBefore
	if half := l.info.ExpiresAt.Sub(l.obtained) / 2; half < before {
		before = half
	}
	return l.info.ExpiresAt.Add(-before)
}

// currentLease returns the lease to sign the next request with: the current
// one, or — coalesced across all concurrent callers — a renewed one when it
// nears expiry, or a lazily opened one when there is none and an agent id is
// set.
func (c *Client) currentLease(ctx context.Context) (*leaseState, error) {
	if l, ok := ctx.Value(leaseCtxKey{}).(*leaseState); ok {
		return l, nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, &Error{Kind: ErrClosed, Message: "the client is closed"}
	}
	l := c.lease
	if l != nil && c.opts.clock.Now().Before(c.renewAt(l)) {
		c.mu.Unlock()
		return l, nil
	}
	if l == nil && c.opts.agentID == "" {
		c.mu.Unlock()
		return nil, &Error{Kind: ErrNotConnected, Message: "no lease: call Connect first or set an agent id for lazy connect"}
	}
	f := c.flight
	if f == nil {
		f = &leaseFlight{done: make(chan struct{})}
		c.flight = f
		go c.runFlight(f, l)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.lease, f.err
	case <-ctx.Done():
		return nil, transportError(ctx.Err())
	}
}

// runFlight connects (old == nil) or renews old, then publishes the outcome
// to everyone waiting on f. It runs detached from any one caller's context so
// that one caller giving up does not fail the others; Close cancels it.
func (c *Client) runFlight(f *leaseFlight, old *leaseState) {
	ctx, cancel := context.WithTimeout(c.bgCtx, c.opts.httpTimeout*time.Duration(c.opts.retry.MaxAttempts)+c.opts.retry.MaxRetryAfter)
	defer cancel()
	var (
		nl  *leaseState
		err error
	)
	if old == nil {
		nl, err = c.openLease(ctx, ConnectOptions{})
	} else {
		nl, err = c.renewLease(ctx, old)
	}
	c.mu.Lock()
	switch {
	case err == nil:
		if c.lease == old && !c.closed { // a concurrent Connect wins over this flight
			c.lease = nl
		}
		f.lease = c.lease
		if f.lease == nil {
			f.err = &Error{Kind: ErrClosed, Message: "the client is closed"}
		}
	case old != nil && c.opts.clock.Now().Before(old.info.ExpiresAt) && !isAuthErr(err):
		// A transient renewal failure: the old lease is still valid, use it
		// and try again on the next request.
		f.lease = old
		c.log.Warn("lease renewal failed; using the current lease until it expires", "error", err)
	default:
		f.err = err
	}
	c.flight = nil
	c.mu.Unlock()
	close(f.done)
}

func isAuthErr(err error) bool { return errors.Is(err, ErrAuth) }
