package store

import (
	"encoding/json"
	"slices"
	"time"
)

// The approval and idempotency transitions below are pure functions shared
// by both backends, so that their semantics cannot drift apart. Each
// returns the next record (nil when nothing changes) or an error.

// claimNext computes ClaimApproval. A pending, unclaimed approval past its
// expiry is left alone and reported as expired (the view does that); the
// gate's expiry sweep is the one writer of the expired state, so that each
// expiry is recorded and announced exactly once. A claimed one is never expired by time: its
// claimant may have dispatched, so only a new claim (after the deadline)
// resolves it against the receipts.
func claimNext(a *Approval, c Claim, now time.Time) (*Approval, error) {
	if a.State != ApprovalPending {
		return nil, nil
	}
	if a.Claim == nil && !now.Before(a.ExpiresAt) {
		return nil, nil // reported as expired; the gate's sweep records it
	}
	if a.Claim != nil && !a.Claim.Deadline.Before(now) {
		return nil, ErrConflict
	}
	n := cloneApproval(a)
	c.Token = 1
	if a.Claim != nil {
		c.Token = a.Claim.Token + 1
		if a.Claim.ReceiptID != "" {
			c.ReceiptID = a.Claim.ReceiptID
		}
	}
	n.Claim = &c
	return n, nil
}

func expiredNext(a *Approval, now time.Time) *Approval {
	n := cloneApproval(a)
	n.State = ApprovalExpired
	n.DecidedAt = now
	n.Reason = "expired"
	return n
}

// decideNext computes DecideApproval (state is denied or expired).
func decideNext(a *Approval, state ApprovalState, by, reason string, now time.Time) (*Approval, error) {
	if a.State != ApprovalPending {
		return nil, nil
	}
	if a.Claim != nil {
		return nil, ErrConflict
	}
	if !now.Before(a.ExpiresAt) {
		if state != ApprovalExpired {
			return nil, nil // reported as expired; only the sweep records it
		}
		return expiredNext(a, now), nil
	}
	if state == ApprovalExpired {
		return nil, nil // not yet due
	}
	n := cloneApproval(a)
	n.State = state
	n.DecidedBy = by
	n.DecidedAt = now
	n.Reason = reason
	return n, nil
}

// finishNext computes FinishApproval; the claim is kept for audit.
func finishNext(a *Approval, f ApprovalFinish) (*Approval, error) {
	if a.State != ApprovalPending || a.Claim == nil || a.Claim.Token != f.Token {
		return nil, ErrConflict
	}
	n := cloneApproval(a)
	n.State = f.State
	n.DecidedBy = f.DecidedBy
	n.DecidedAt = f.DecidedAt
	n.Reason = f.Reason
	n.ReceiptID = f.ReceiptID
	n.Output = slices.Clone(f.Output)
	return n, nil
}

// idemGrantNext records the grant id on a running record.
func idemGrantNext(r *IdemRecord, grantID, receiptID string) (*IdemRecord, error) {
	if r.State != IdemRunning {
		return nil, ErrConflict
	}
	n := cloneIdem(r)
	n.GrantID, n.ReceiptID = grantID, receiptID
	return n, nil
}

// idemFinishNext stores the outcome of a running record.
func idemFinishNext(r *IdemRecord, status int, body json.RawMessage) (*IdemRecord, error) {
	if r.State != IdemRunning {
		return nil, ErrConflict
	}
	n := cloneIdem(r)
	n.State = IdemDone
	n.Status = status
	n.Body = slices.Clone(body)
	return n, nil
}

func checkDecideState(s ApprovalState) error {
	if s != ApprovalDenied && s != ApprovalExpired {
		return errBadDecide
	}
	return nil
}
