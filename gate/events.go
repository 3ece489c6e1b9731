package gate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/latchgate/latchgate/events"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
)

// emit records an event; a journal failure is logged, never answered: the
// decision it reports is already durable in the store and the ledger.
func (g *Gate) emit(typ string, data any) {
	if _, err := g.events.Append(typ, data); err != nil {
		g.log.Error().Err(err).Str("event", typ).Msg("event not recorded")
	}
}

// approvalEvent is the data of approval.* events.
type approvalEvent struct {
	ApprovalID  string `json:"approval_id"`
	State       string `json:"state"`
	ActionID    string `json:"action_id"`
	RiskLevel   string `json:"risk_level"`
	Principal   string `json:"principal"`
	SessionID   string `json:"session_id"`
	RequestHash string `json:"request_hash"`
	ExpiresAt   string `json:"expires_at"`
	DecidedBy   string `json:"decided_by,omitempty"`
	Reason      string `json:"reason,omitempty"`
	ReceiptID   string `json:"receipt_id,omitempty"`
}

func (g *Gate) emitApproval(typ string, a *store.Approval) {
	g.emit(typ, approvalEvent{
		ApprovalID: a.ID, State: string(a.State), ActionID: a.ActionID, RiskLevel: a.RiskLevel,
		Principal: a.Principal, SessionID: a.SessionID, RequestHash: a.RequestHash,
		ExpiresAt: a.ExpiresAt.UTC().Format(time.RFC3339), DecidedBy: a.DecidedBy, Reason: a.Reason, ReceiptID: a.ReceiptID,
	})
}

// receiptEvent is the data of receipt.created: the receipt's identity and
// the signed ledger head that covers it.
type receiptEvent struct {
	ReceiptID  string        `json:"receipt_id"`
	ActionID   string        `json:"action_id"`
	Principal  string        `json:"principal"`
	Kind       string        `json:"kind"`
	ApprovalID string        `json:"approval_id,omitempty"`
	Head       receipts.Head `json:"ledger_head"`
}

// SweepExpired moves pending, unclaimed approvals past their expiry to
// expired, with an audit record and an approval.expired event each, and
// returns how many it moved. RunSweeper calls it periodically.
func (g *Gate) SweepExpired(ctx context.Context) (int, error) {
	sctx, cancel := g.storeCtx(ctx)
	list, err := g.st.ListApprovals(sctx, store.ApprovalExpired, 0)
	cancel()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range list {
		if !v.DecidedAt.IsZero() || v.Claim != nil {
			continue // already stored as expired, or claimed (resolved by its claimant)
		}
		sctx, cancel := g.storeCtx(ctx)
		now := g.clk.Now()
		a, err := g.st.DecideApproval(sctx, v.ID, store.ApprovalExpired, "gate", "expired", now)
		cancel()
		if err != nil {
			if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
				continue
			}
			return n, err
		}
		if a.State != store.ApprovalExpired || !a.DecidedAt.Equal(now) {
			continue // not due, or expired by another sweep (another gate) meanwhile
		}
		n++
		_ = g.audit(ctx, &receipts.AuditRecord{TraceID: a.TraceID, Principal: a.Principal, SessionID: a.SessionID, ActionID: a.ActionID, RequestHash: a.RequestHash, Decision: receipts.DecisionExpired, ApprovalID: a.ID, Reason: "expired"})
		g.emitApproval(events.ApprovalExpired, a)
		g.log.Info().Str(fApprovalID, a.ID).Msg("approval expired")
	}
	return n, nil
}

// RunSweeper expires approvals every ApprovalSweep until ctx ends, and
// keeps this gate's receipt keys published in a shared store.
func (g *Gate) RunSweeper(ctx context.Context) error {
	g.ShareReceiptKeys(ctx)
	t := time.NewTicker(g.cfg.ApprovalSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := g.SweepExpired(ctx); err != nil {
				g.log.Warn().Err(err).Msg("approval expiry sweep failed; retrying next tick")
			}
			g.ShareReceiptKeys(ctx)
		}
	}
}

// handleEvents is GET /v1/events: Server-Sent Events from the journal,
// resuming after Last-Event-ID (header, or last_event_id query for tools
// that cannot set headers).
func (g *Gate) handleEvents(w http.ResponseWriter, r *http.Request) error {
	var after int64
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("last_event_id")
	}
	if last != "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return errInvalidRequest("Last-Event-ID must be a non-negative integer event id.")
		}
		after = n
	} else if r.URL.Query().Get("from") != "start" {
		after = g.events.Last()
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": latchgate events\n\n"); err != nil {
		return nil
	}
	_ = rc.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		evs, wake, err := g.events.Since(after, 256)
		if err != nil {
			g.log.Error().Err(err).Msg("event stream: journal read failed")
			return nil
		}
		for _, e := range evs {
			b := mustJSON(e)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.ID, e.Type, b); err != nil {
				return nil
			}
			after = e.ID
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-wake:
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return nil
			}
		}
	}
}
