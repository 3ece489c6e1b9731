package store

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// Deps are the dependencies shared by both backends.
type Deps struct {
	// Clock is required: sweeps, live-session counts and approval expiry
	// read it.
	Clock clock.Clock
	// Logger receives tampering and maintenance events. Optional (the zero
	// Logger discards).
	Logger zerolog.Logger
	// ObserveFsync, when set, is given the duration of every fsync of the
	// embedded store's journal (Redis does not fsync). It must not block.
	ObserveFsync func(time.Duration)
}

func (d Deps) validate() error {
	if d.Clock == nil {
		return errors.New("store: Deps.Clock is required")
	}
	return nil
}

const (
	// defaultGrantTTL is how long a consumed-grant marker is kept when
	// GrantRequest.TTL is zero.
	defaultGrantTTL = 24 * time.Hour
	// hourBucketTTL and dayBucketTTL bound the rolling-limit counters.
	hourBucketTTL = 2 * time.Hour
	dayBucketTTL  = 48 * time.Hour
	// approvalRetention is how long an approval is kept past its expiry.
	approvalRetention = 7 * 24 * time.Hour
	// sessionRetention is how long a session is kept past its maximum
	// lifetime (embedded; Redis drops it at MaxExpiresAt).
	sessionRetention = time.Hour
)

// hourBucket and dayBucket name the UTC hour and day t falls in.
func hourBucket(t time.Time) string {
	return strconv.FormatInt(t.UTC().Truncate(time.Hour).Unix(), 10)
}

func dayBucket(t time.Time) string {
	return t.UTC().Format("20060102")
}

// hashKey turns caller-chosen strings into a fixed-size key component, so
// that separators inside them cannot collide and keys stay short.
func hashKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(strconv.Itoa(len(p))))
		h.Write([]byte{':'})
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// recordMAC authenticates a stored record. kind and id bind the record to
// its key, so a valid record cannot be copied under another id.
func recordMAC(key []byte, kind, id string, rec []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("latchgate/store/v1\x00"))
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write(rec)
	return hex.EncodeToString(m.Sum(nil))
}

func verifyMAC(key []byte, kind, id string, rec []byte, mac string) bool {
	want := recordMAC(key, kind, id, rec)
	return hmac.Equal([]byte(want), []byte(mac))
}

func cloneSession(s *Session) *Session {
	c := *s
	c.Scopes = slices.Clone(s.Scopes)
	if s.MaxCalls != nil {
		n := *s.MaxCalls
		c.MaxCalls = &n
	}
	if s.MaxCostCents != nil {
		n := *s.MaxCostCents
		c.MaxCostCents = &n
	}
	return &c
}

func cloneApproval(a *Approval) *Approval {
	c := *a
	c.Args = slices.Clone(a.Args)
	c.TargetHosts = slices.Clone(a.TargetHosts)
	c.UnresolvedDomains = slices.Clone(a.UnresolvedDomains)
	c.Output = slices.Clone(a.Output)
	if a.Claim != nil {
		cl := *a.Claim
		c.Claim = &cl
	}
	return &c
}

func cloneIdem(r *IdemRecord) *IdemRecord {
	c := *r
	c.Body = slices.Clone(r.Body)
	return &c
}

// sessionRevoked reports whether s is revoked directly or by an epoch.
func sessionRevoked(s *Session, principalEpoch, globalEpoch int64) bool {
	return s.Revoked || s.PrincipalEpoch < principalEpoch || s.GlobalEpoch < globalEpoch
}

// approvalView returns a as callers see it at now: a pending, unclaimed
// approval past its expiry is reported as expired. A claimed one stays
// pending: its claimant may have dispatched it (see claimNext).
func approvalView(a *Approval, now time.Time) *Approval {
	c := cloneApproval(a)
	if c.State == ApprovalPending && c.Claim == nil && !now.Before(c.ExpiresAt) {
		c.State = ApprovalExpired
	}
	return c
}

// checks on arguments shared by both backends.

func checkSession(s *Session) error {
	if s == nil || s.ID == "" || s.Principal == "" || s.JKT == "" {
		return errors.New("store: session needs id, principal and jkt")
	}
	return nil
}

func checkRevoke(req RevokeRequest) error {
	n := 0
	if req.SessionID != "" {
		n++
	}
	if req.Principal != "" {
		n++
	}
	if req.All {
		n++
	}
	if n != 1 {
		return errors.New("store: revoke needs exactly one of session id, principal, all")
	}
	return nil
}

func checkGrant(req GrantRequest) error {
	if req.GrantID == "" || req.SessionID == "" || req.Principal == "" {
		return errors.New("store: grant needs grant id, session id and principal")
	}
	if req.Calls < 0 || req.CostCents < 0 {
		return errors.New("store: grant calls and cost must not be negative")
	}
	return nil
}

func checkFinishState(s ApprovalState) error {
	switch s {
	case ApprovalApproved, ApprovalDenied, ApprovalExpired, ApprovalFailed:
		return nil
	}
	return fmt.Errorf("store: %q is not a final approval state", s)
}

func grantTTL(d time.Duration) time.Duration {
	if d <= 0 {
		return defaultGrantTTL
	}
	return d
}

var errBadDecide = errors.New("store: DecideApproval accepts only denied or expired")

var (
	errBadStanding = errors.New("store: a standing approval needs id, principal, action_id and expires_at and/or uses > 0")
	errBadLearned  = errors.New("store: a learned domain needs id, principal, action_id, host and expires_at")
)
