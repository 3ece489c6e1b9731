package store

import (
	"cmp"
	"slices"
	"time"
)

// Standing is an operator's bounded pre-approval of (principal, action):
// it covers a human-needed action until ExpiresAt and/or for Uses calls.
// At least one bound is required.
type Standing struct {
	ID        string    `json:"id"`
	Principal string    `json:"principal"`
	ActionID  string    `json:"action_id"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt ends the pre-approval; zero means no time bound.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Uses is the number of calls covered; 0 means no use bound.
	Uses int64 `json:"uses,omitempty"`
	// Used counts consumed uses (maintained by the store).
	Used int64 `json:"used"`
}

// Live reports whether the pre-approval still covers a call at now.
func (s *Standing) Live(now time.Time) bool {
	return (s.ExpiresAt.IsZero() || now.Before(s.ExpiresAt)) && (s.Uses == 0 || s.Used < s.Uses)
}

// LearnedDomain is an egress entry ("host:port") an operator allowed for
// one (principal, action) when approving an unresolved_domains hold.
type LearnedDomain struct {
	ID         string    `json:"id"`
	Principal  string    `json:"principal"`
	ActionID   string    `json:"action_id"`
	Host       string    `json:"host"`
	ApprovalID string    `json:"approval_id"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

func cloneStanding(s *Standing) *Standing { c := *s; return &c }
func cloneLearned(d *LearnedDomain) *LearnedDomain {
	c := *d
	return &c
}

// useStandingNext consumes one use of a live pre-approval.
func useStandingNext(s *Standing, now time.Time) (*Standing, error) {
	if !s.Live(now) {
		return nil, ErrNotFound
	}
	n := cloneStanding(s)
	n.Used++
	return n, nil
}

func sortStanding(ss []*Standing) {
	slices.SortFunc(ss, func(a, b *Standing) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
}

func sortLearned(ds []*LearnedDomain) {
	slices.SortFunc(ds, func(a, b *LearnedDomain) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
}

func checkStanding(s *Standing) error {
	if s == nil || s.ID == "" || s.Principal == "" || s.ActionID == "" || (s.ExpiresAt.IsZero() && s.Uses <= 0) || s.Uses < 0 {
		return errBadStanding
	}
	return nil
}

func checkLearned(d *LearnedDomain) error {
	if d == nil || d.ID == "" || d.Principal == "" || d.ActionID == "" || d.Host == "" || d.ExpiresAt.IsZero() {
		return errBadLearned
	}
	return nil
}
