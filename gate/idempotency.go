package gate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
)

// beginIdempotent implements PROTOCOL §3.4 for a request carrying
// Idempotency-Key. It returns done=true when it has answered from a stored
// outcome; otherwise the caller proceeds and must call finishIdempotent.
func (g *Gate) beginIdempotent(ctx context.Context, w http.ResponseWriter, c *caller, key, actionID, reqHash string) (bool, error) {
	sctx, cancel := g.storeCtx(ctx)
	defer cancel()
	prev, err := g.st.BeginIdempotent(sctx, &store.IdemRecord{
		Principal: c.session.Principal, Key: key, ActionID: actionID, RequestHash: reqHash,
		State: store.IdemRunning, CreatedAt: g.clk.Now(),
	}, g.cfg.IdempotencyTTL)
	switch {
	case err != nil:
		return true, errStoreUnavailable(err)
	case prev == nil:
		return false, nil
	case prev.ActionID != actionID || prev.RequestHash != reqHash:
		return true, newError(http.StatusConflict, CodeIdempotencyConflict, "This Idempotency-Key was used with another action or request.", nil)
	case prev.State != store.IdemDone:
		// A record bound to a receipt that exists has an outcome: its gate
		// finished (or crashed and recorded it as interrupted) without
		// storing it. Answer from the receipt; never run again.
		if prev.ReceiptID != "" {
			if rc, err := g.receiptByID(ctx, prev.ReceiptID); err == nil {
				status, body := outcomeOf(rc)
				g.finishIdempotent(c.session.Principal, key, status, body, nil)
				writeRawJSON(w, status, body)
				return true, nil
			}
		}
		e := newError(http.StatusConflict, CodeIdempotencyInProgress, "A request with this Idempotency-Key is still running.", nil)
		e.RetryAfter = 1
		return true, e
	}
	writeRawJSON(w, prev.Status, prev.Body)
	return true, nil
}

// receiptByID returns a receipt from this gate's ledger or, in Redis mode,
// the copy another gate sharing the store wrote (PROTOCOL §5): a record
// bound to its receipt may have been left by any gate.
func (g *Gate) receiptByID(ctx context.Context, id string) (*receipts.Receipt, error) {
	raw, err := g.storedReceipt(ctx, id)
	if err != nil {
		return nil, err
	}
	rc := new(receipts.Receipt)
	if err := json.Unmarshal(raw, rc); err != nil {
		return nil, err
	}
	return rc, nil
}

// outcomeOf rebuilds the §3.4 answer a receipt stands for.
func outcomeOf(rc *receipts.Receipt) (int, []byte) {
	var appr *approvalInfo
	if a := rc.Approval; a != nil {
		appr = &approvalInfo{Kind: a.Kind, ApprovalID: a.ApprovalID, ApprovedBy: a.ApprovedBy, ApprovedAt: a.ApprovedAt}
	}
	if rc.NormalizedResult.Kind != receipts.KindSuccess {
		code := CodeActionFailed
		if rc.NormalizedResult.Kind == receipts.KindEgressDenied {
			code = CodeEgressDenied
		}
		msg := rc.NormalizedResult.Summary
		if msg == "" {
			msg = "The action was dispatched but failed before an answer."
		}
		return http.StatusBadGateway, mustJSON(failedBody{Error: code, Message: msg, ReceiptID: rc.ReceiptID, TraceID: rc.TraceID, Approval: appr})
	}
	var ms int64
	if s, err := receipts.ParseTime(rc.StartedAt); err == nil {
		if f, err := receipts.ParseTime(rc.FinishedAt); err == nil {
			ms = f.Sub(s).Milliseconds()
		}
	}
	v := rc.VerificationOutcome.Status
	return http.StatusOK, mustJSON(executedBody{
		Decision: "executed", TraceID: rc.TraceID, ActionID: rc.ActionID, GrantID: rc.GrantID, ReceiptID: rc.ReceiptID,
		Output: rc.Output, VerificationOutcome: v,
		Verification: verification{Outcome: v, IsFullySuccessful: v != receipts.VerificationFailed},
		Runtime:      runtimeInfo{DurationMS: ms}, Approval: appr,
	})
}

// finishIdempotent stores the outcome (200, 202 and post-dispatch failures)
// or drops the record (errors before dispatch, so a retry may succeed).
func (g *Gate) finishIdempotent(principal, key string, status int, body []byte, runErr error) {
	ctx, cancel := g.storeCtx(context.Background())
	defer cancel()
	if runErr != nil {
		var e *Error
		if errors.As(runErr, &e) && e.Code == CodeEvidenceFailed {
			status, body = e.Status, mustJSON(e.body())
		} else {
			if err := g.st.AbortIdempotent(ctx, principal, key); err != nil {
				g.log.Error().Err(err).Msg("idempotency record not released")
			}
			return
		}
	}
	if err := g.st.FinishIdempotent(ctx, principal, key, status, body, g.cfg.IdempotencyTTL); err != nil {
		g.log.Error().Err(err).Msg("idempotency outcome not stored")
	}
}
