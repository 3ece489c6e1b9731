// Package store owns LatchGate's shared mutable state: sessions, the DPoP
// replay cache, revocation epochs, budgets (per session and per principal),
// one-shot grants, idempotency records, frozen approval plans, standing
// approvals and learned egress domains.
//
// Two backends implement Store: the embedded one (default; one gate process,
// state persisted under the state directory, survives restarts) and Redis
// (several gates share state). Every check-and-set is atomic. A backend that
// cannot answer returns an error wrapping ErrUnavailable and never a pass:
// callers fail closed. Records that decide what runs carry an HMAC in Redis;
// a record whose MAC fails is treated as absent (ErrTampered is logged by the
// backend, callers see ErrNotFound).
//
// The package never decides policy and never reads key material from Redis.
// The API is internal to this module and may change.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Errors returned by every backend. Check them with errors.Is.
var (
	// ErrUnavailable: the backend could not answer (down, timeout, I/O
	// error). Callers answer 503 store_unavailable and run nothing.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrNotFound: no such record (or a record whose MAC failed).
	ErrNotFound = errors.New("store: not found")
	// ErrRevoked: the session, its principal, or everything was revoked.
	ErrRevoked = errors.New("store: revoked")
	// ErrReplay: the (jkt, jti) pair was seen before within its window.
	ErrReplay = errors.New("store: replay")
	// ErrBudgetExhausted: a session or principal budget would be exceeded.
	ErrBudgetExhausted = errors.New("store: budget exhausted")
	// ErrSessionLimit: the principal already has its maximum live sessions.
	ErrSessionLimit = errors.New("store: live session limit reached")
	// ErrGrantConsumed: the one-shot grant id was already used.
	ErrGrantConsumed = errors.New("store: grant consumed")
	// ErrConflict: a compare-and-set lost (e.g. an approval claimed by
	// another operator, or an idempotency key in use with other content).
	ErrConflict = errors.New("store: conflict")
	// ErrTooManyPending: the session already has the maximum number of
	// pending approvals.
	ErrTooManyPending = errors.New("store: too many pending approvals")
	// ErrTampered: a record's MAC did not verify. Backends log it and
	// return ErrNotFound to callers; it is exported for tests.
	ErrTampered = errors.New("store: record failed integrity check")
)

// Session is the server-side record behind every lease (PROTOCOL §2.2).
// Budget limits are nil when unlimited.
type Session struct {
	ID           string    `json:"id"`
	Principal    string    `json:"principal"`
	JKT          string    `json:"jkt"`
	AgentID      string    `json:"agent_id,omitempty"`
	Scopes       []string  `json:"scopes"`
	MaxCalls     *int64    `json:"max_calls,omitempty"`
	MaxCostCents *int64    `json:"max_cost_usd_cents,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	// MaxExpiresAt is the end of the session's maximum lifetime; no lease
	// for it may expire later.
	MaxExpiresAt time.Time `json:"max_expires_at"`
	// LeaseExpiresAt is the expiry of the newest lease; the session counts
	// as live for the principal's session cap until then.
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	// PrincipalEpoch and GlobalEpoch are the revocation epochs current when
	// the session was created. A later revocation of the principal or of
	// everything raises the current epoch and so revokes this session.
	PrincipalEpoch int64 `json:"principal_epoch"`
	GlobalEpoch    int64 `json:"global_epoch"`
	Revoked        bool  `json:"revoked"`

	// Counters, maintained by the store (ignored on CreateSession).
	CallsUsed     int64 `json:"calls_used"`
	CostUsedCents int64 `json:"cost_used_usd_cents"`
}

// CallsRemaining returns the calls left, or nil when unlimited.
func (s *Session) CallsRemaining() *int64 {
	if s.MaxCalls == nil {
		return nil
	}
	n := max(*s.MaxCalls-s.CallsUsed, 0)
	return &n
}

// CostRemaining returns the cost budget left in cents, or nil when unlimited.
func (s *Session) CostRemaining() *int64 {
	if s.MaxCostCents == nil {
		return nil
	}
	n := max(*s.MaxCostCents-s.CostUsedCents, 0)
	return &n
}

// PrincipalLimits are the principal's limits across all its sessions.
// Zero means "no limit" for every field.
type PrincipalLimits struct {
	MaxLiveSessions    int64 // concurrent sessions with an unexpired lease
	MaxCallsPerHour    int64 // calls reserved in the current UTC hour
	MaxCostCentsPerDay int64 // cost reserved in the current UTC day
}

// AuthRequest is the per-request authentication check: the session must
// exist, match the key, not be revoked (directly or by epoch); only then is
// the replay entry inserted. A refused request never inserts its jti.
type AuthRequest struct {
	SessionID string
	JKT       string // the proof key's thumbprint (must equal the session's)
	JTI       string // the proof's jti
	// ReplayExpiresAt is the absolute time the replay entry may be dropped
	// (iat + max_age + 2·skew), on the gate's clock (the one Now is read
	// from), never on the store host's.
	ReplayExpiresAt time.Time
	Now             time.Time
}

// RevokeRequest names what to revoke; exactly one field is set.
type RevokeRequest struct {
	SessionID string
	Principal string
	All       bool
}

// GrantRequest reserves budget and consumes a one-shot grant in one atomic
// step (pipeline steps 6 and 7). The session must still be live and not
// revoked; the grant id must be unused.
type GrantRequest struct {
	GrantID   string
	SessionID string
	Principal string
	Calls     int64 // usually 1
	CostCents int64
	Limits    PrincipalLimits
	Now       time.Time
	// TTL bounds how long the consumed-grant marker is kept.
	TTL time.Duration
}

// Grant is a successful reservation. Refund undoes its budget effect (only
// before dispatch).
type Grant struct {
	GrantID   string    `json:"grant_id"`
	SessionID string    `json:"session_id"`
	Principal string    `json:"principal"`
	Calls     int64     `json:"calls"`
	CostCents int64     `json:"cost_usd_cents"`
	At        time.Time `json:"at"` // picks the hour/day buckets to refund
}

// IdemState is the state of an idempotency record.
type IdemState string

const (
	IdemRunning IdemState = "running"
	IdemDone    IdemState = "done"
)

// IdemRecord is keyed by (principal, key) and kept 24 h (PROTOCOL §3.4).
type IdemRecord struct {
	Principal   string    `json:"principal"`
	Key         string    `json:"key"`
	ActionID    string    `json:"action_id"`
	RequestHash string    `json:"request_hash"`
	State       IdemState `json:"state"`
	// GrantID is set once dispatch is decided, so a record left running by
	// a crash can be resolved to its interrupted receipt.
	GrantID string `json:"grant_id,omitempty"`
	// ReceiptID is the receipt the grant will write (pre-assigned in the
	// intent): after a crash it holds the outcome, interrupted or not.
	ReceiptID string `json:"receipt_id,omitempty"`
	// Status and Body are the stored outcome (Done only): the HTTP status
	// and the exact JSON body answered.
	Status    int             `json:"status,omitempty"`
	Body      json.RawMessage `json:"body,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
}

// ApprovalState is the state of an approval.
type ApprovalState string

const (
	ApprovalPending  ApprovalState = "pending"
	ApprovalApproved ApprovalState = "approved"
	ApprovalDenied   ApprovalState = "denied"
	ApprovalExpired  ApprovalState = "expired"
	ApprovalFailed   ApprovalState = "failed"
)

// Claim marks an approval being executed by one gate.
type Claim struct {
	GateID   string    `json:"gate_id"`
	Token    int64     `json:"token"` // fencing token, increases per claim
	By       string    `json:"by"`    // operator
	Deadline time.Time `json:"deadline"`
	// ReceiptID is the receipt the claimant writes if it runs the plan. A
	// claim that takes over a stale one keeps the stale one's (it runs
	// nothing; it looks for that receipt, which any gate sharing the
	// store can find).
	ReceiptID string `json:"receipt_id,omitempty"`
}

// Approval is a frozen plan waiting for (or decided by) a human.
type Approval struct {
	ID                string          `json:"id"`
	SessionID         string          `json:"session_id"`
	Principal         string          `json:"principal"`
	AgentID           string          `json:"agent_id,omitempty"`
	ActionID          string          `json:"action_id"`
	ActionVersion     string          `json:"action_version"`
	ActionDigest      string          `json:"action_digest"`
	RiskLevel         string          `json:"risk_level"`
	RequestHash       string          `json:"request_hash"`
	Args              json.RawMessage `json:"args"`
	TargetHosts       []string        `json:"target_hosts"`
	UnresolvedDomains []string        `json:"unresolved_domains"`
	TraceID           string          `json:"trace_id"`
	PeerUID           int64           `json:"peer_uid"`
	PeerPID           int64           `json:"peer_pid"`
	State             ApprovalState   `json:"state"`
	CreatedAt         time.Time       `json:"created_at"`
	ExpiresAt         time.Time       `json:"expires_at"`
	Claim             *Claim          `json:"claim,omitempty"`
	DecidedBy         string          `json:"decided_by,omitempty"`
	DecidedAt         time.Time       `json:"decided_at,omitzero"`
	Reason            string          `json:"reason,omitempty"`
	ReceiptID         string          `json:"receipt_id,omitempty"`
	// Output is the action output answered to the agent's poll once approved.
	Output json.RawMessage `json:"output,omitempty"`
}

// ApprovalFinish is the final transition of a claimed approval.
type ApprovalFinish struct {
	ID        string
	Token     int64 // must equal the current claim's token
	State     ApprovalState
	DecidedBy string
	DecidedAt time.Time
	Reason    string
	ReceiptID string
	Output    json.RawMessage
}

// Store is implemented by the embedded and Redis backends. Every method
// honours ctx's deadline; a backend that cannot answer returns an error
// wrapping ErrUnavailable.
type Store interface {
	// Ping reports whether the backend answers.
	Ping(ctx context.Context) error

	// CreateSession stores a new session after checking the principal's
	// live-session cap (ErrSessionLimit). It sets the session's epochs to
	// the current ones.
	CreateSession(ctx context.Context, s *Session, limits PrincipalLimits) (*Session, error)
	// GetSession returns the session with its counters (ErrNotFound).
	GetSession(ctx context.Context, id string) (*Session, error)
	// RenewSession records a new lease expiry and scopes for a live session
	// (ErrNotFound, ErrRevoked).
	RenewSession(ctx context.Context, id string, scopes []string, leaseExpiresAt, now time.Time) (*Session, error)
	// Authenticate checks the session and inserts the replay entry in one
	// atomic step. Errors: ErrNotFound (no session, or jkt mismatch),
	// ErrRevoked, ErrReplay, ErrUnavailable.
	Authenticate(ctx context.Context, req AuthRequest) (*Session, error)
	// Revoke revokes and returns how many live sessions it affected.
	Revoke(ctx context.Context, req RevokeRequest, now time.Time) (int, error)

	// Grant reserves budget on the session and the principal's rolling
	// limits and consumes the one-shot grant, atomically. Errors:
	// ErrBudgetExhausted, ErrGrantConsumed, ErrNotFound, ErrRevoked.
	Grant(ctx context.Context, req GrantRequest) (*Grant, error)
	// Refund undoes a grant's budget effect (the grant id stays consumed).
	Refund(ctx context.Context, g *Grant) error

	// BeginIdempotent creates a running record for (principal, key) if none
	// exists and returns (nil, nil); otherwise it returns the existing
	// record untouched for the caller to compare.
	BeginIdempotent(ctx context.Context, rec *IdemRecord, ttl time.Duration) (*IdemRecord, error)
	// SetIdempotentGrant records the grant id and its pre-assigned receipt
	// id on a running record (at the dispatch point).
	SetIdempotentGrant(ctx context.Context, principal, key, grantID, receiptID string) error
	// FinishIdempotent stores the outcome and marks the record done.
	FinishIdempotent(ctx context.Context, principal, key string, status int, body json.RawMessage, ttl time.Duration) error
	// AbortIdempotent deletes a running record (errors before dispatch are
	// not stored, so a retry may succeed).
	AbortIdempotent(ctx context.Context, principal, key string) error

	// CreateApproval stores a pending approval. If a pending approval with
	// the same session, action and request hash exists it is returned
	// instead (created=false). ErrTooManyPending past maxPending per
	// session (0 = no limit).
	CreateApproval(ctx context.Context, a *Approval, maxPending int) (stored *Approval, created bool, err error)
	// GetApproval returns an approval (ErrNotFound).
	GetApproval(ctx context.Context, id string) (*Approval, error)
	// ListApprovals returns approvals in a state, newest first ("" = all).
	ListApprovals(ctx context.Context, state ApprovalState, limit int) ([]*Approval, error)
	// ClaimApproval atomically claims a pending approval (or one whose
	// claim deadline has passed) for execution and returns it with the new
	// claim. Errors: ErrConflict (claimed by someone else, deadline not
	// passed), ErrNotFound. An already decided approval is returned
	// unchanged with a nil error and its final State for the caller to
	// report.
	ClaimApproval(ctx context.Context, id string, claim Claim, now time.Time) (*Approval, error)
	// DecideApproval moves a pending, unclaimed approval to denied or
	// expired (ErrConflict if claimed; an already decided approval is
	// returned unchanged).
	DecideApproval(ctx context.Context, id string, state ApprovalState, by, reason string, now time.Time) (*Approval, error)
	// FinishApproval records the end of a claimed approval; the fencing
	// token must match (ErrConflict otherwise).
	FinishApproval(ctx context.Context, f ApprovalFinish) (*Approval, error)

	// CreateStanding stores an operator's pre-approval.
	CreateStanding(ctx context.Context, s *Standing) error
	// ListStanding returns the pre-approvals still live at now, newest first.
	ListStanding(ctx context.Context, now time.Time) ([]*Standing, error)
	// DeleteStanding revokes a pre-approval (ErrNotFound).
	DeleteStanding(ctx context.Context, id string) error
	// FindStanding returns a live pre-approval of (principal, action), the
	// newest if several (ErrNotFound).
	FindStanding(ctx context.Context, principal, actionID string, now time.Time) (*Standing, error)
	// UseStanding atomically consumes one use of the pre-approval and
	// returns it updated; ErrNotFound if it is gone, expired or used up.
	UseStanding(ctx context.Context, id string, now time.Time) (*Standing, error)

	// PutLearned stores a learned egress entry; an entry with the same
	// (principal, action, host) is replaced (keeping its id) and returned.
	PutLearned(ctx context.Context, d *LearnedDomain) (*LearnedDomain, error)
	// ListLearned returns the entries unexpired at now, newest first.
	ListLearned(ctx context.Context, now time.Time) ([]*LearnedDomain, error)
	// DeleteLearned removes an entry (ErrNotFound).
	DeleteLearned(ctx context.Context, id string) error
	// LearnedFor returns the unexpired entries of (principal, action).
	LearnedFor(ctx context.Context, principal, actionID string, now time.Time) ([]*LearnedDomain, error)

	// Sync makes every acknowledged mutation durable (embedded: write of
	// its buffered journal lines, then fsync; Redis: no-op). The ledger calls it before each group
	// commit so that evidence is never more durable than the state it
	// depends on.
	Sync() error
	// Close releases resources.
	Close() error
}
