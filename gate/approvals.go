package gate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/latchgate/latchgate/events"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
)

func approvalNotFound() error {
	return newError(http.StatusNotFound, CodeApprovalNotFound, "No approval with that id.", nil)
}

// effectiveState reports a pending, unclaimed approval past its expiry as
// expired; a claimed one may be running and stays pending.
func effectiveState(a *store.Approval, now time.Time) store.ApprovalState {
	if a.State == store.ApprovalPending && a.Claim == nil && !now.Before(a.ExpiresAt) {
		return store.ApprovalExpired
	}
	return a.State
}

func (g *Gate) getApproval(ctx context.Context, id string) (*store.Approval, error) {
	if !uuidRE.MatchString(id) {
		return nil, approvalNotFound()
	}
	sctx, cancel := g.storeCtx(ctx)
	defer cancel()
	a, err := g.st.GetApproval(sctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, approvalNotFound()
	case err != nil:
		return nil, errStoreUnavailable(err)
	}
	return a, nil
}

// handleApprovalPoll is GET /v1/approvals/{id}/poll (PROTOCOL §3.5).
func (g *Gate) handleApprovalPoll(w http.ResponseWriter, r *http.Request) error {
	c, err := g.authenticate(r, nil)
	if err != nil {
		return err
	}
	a, err := g.getApproval(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if a.SessionID != c.session.ID {
		return approvalNotFound()
	}
	now := g.clk.Now()
	body := map[string]any{}
	switch st := effectiveState(a, now); st {
	case store.ApprovalPending:
		body["status"] = "pending"
		body["retry_after_seconds"] = 2
		body["expires_at"] = a.ExpiresAt.UTC().Format(time.RFC3339)
	case store.ApprovalApproved:
		body["status"] = "approved"
		body["receipt_id"] = a.ReceiptID
		out := a.Output
		if len(out) == 0 {
			out = json.RawMessage("null")
		}
		body["output"] = out
	case store.ApprovalDenied:
		body["status"] = "denied"
		body["reason"] = a.Reason
	case store.ApprovalExpired:
		body["status"] = "expired"
	default:
		body["status"] = "failed"
		body["reason"] = a.Reason
		if a.ReceiptID != "" {
			body["receipt_id"] = a.ReceiptID
		}
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// approvalView is the operator's full review (PROTOCOL §6).
type approvalView struct {
	ApprovalID        string          `json:"approval_id"`
	State             string          `json:"state"`
	ActionID          string          `json:"action_id"`
	ActionVersion     string          `json:"action_version"`
	ActionDigest      string          `json:"action_digest"`
	RiskLevel         string          `json:"risk_level"`
	Principal         string          `json:"principal"`
	SessionID         string          `json:"session_id"`
	AgentID           string          `json:"agent_id,omitempty"`
	Arguments         json.RawMessage `json:"arguments"`
	RequestHash       string          `json:"request_hash"`
	TargetHosts       []string        `json:"target_hosts"`
	UnresolvedDomains []string        `json:"unresolved_domains"`
	CreatedAt         string          `json:"created_at"`
	ExpiresAt         string          `json:"expires_at"`
	DecidedBy         string          `json:"decided_by,omitempty"`
	DecidedAt         string          `json:"decided_at,omitempty"`
	Reason            string          `json:"reason,omitempty"`
	ReceiptID         string          `json:"receipt_id,omitempty"`
	TraceID           string          `json:"trace_id"`
}

func viewOf(a *store.Approval, now time.Time) approvalView {
	v := approvalView{
		ApprovalID: a.ID, State: string(effectiveState(a, now)), ActionID: a.ActionID, ActionVersion: a.ActionVersion,
		ActionDigest: a.ActionDigest, RiskLevel: a.RiskLevel, Principal: a.Principal, SessionID: a.SessionID,
		AgentID: a.AgentID, Arguments: a.Args, RequestHash: a.RequestHash, TargetHosts: nonNil(a.TargetHosts),
		UnresolvedDomains: nonNil(a.UnresolvedDomains), CreatedAt: a.CreatedAt.UTC().Format(time.RFC3339),
		ExpiresAt: a.ExpiresAt.UTC().Format(time.RFC3339), DecidedBy: a.DecidedBy, Reason: a.Reason,
		ReceiptID: a.ReceiptID, TraceID: a.TraceID,
	}
	if !a.DecidedAt.IsZero() {
		v.DecidedAt = a.DecidedAt.UTC().Format(time.RFC3339)
	}
	return v
}

func (g *Gate) handleApprovalsList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	state := store.ApprovalState(q.Get("status"))
	switch state {
	case "":
		state = store.ApprovalPending
	case "all":
		state = ""
	case store.ApprovalPending, store.ApprovalApproved, store.ApprovalDenied, store.ApprovalExpired, store.ApprovalFailed:
	default:
		return errInvalidRequest("status must be pending, approved, denied, expired, failed or all.")
	}
	limit := 50
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 500 {
			return errInvalidRequest("limit must be an integer from 1 to 500.")
		}
		limit = n
	}
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	list, err := g.st.ListApprovals(ctx, state, limit)
	if err != nil {
		return errStoreUnavailable(err)
	}
	now := g.clk.Now()
	out := make([]approvalView, 0, len(list))
	for _, a := range list {
		out = append(out, viewOf(a, now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": out})
	return nil
}

func (g *Gate) handleApprovalShow(w http.ResponseWriter, r *http.Request) error {
	a, err := g.getApproval(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewOf(a, g.clk.Now()))
	return nil
}

func alreadyBody(st store.ApprovalState) []byte {
	return mustJSON(map[string]string{"decision": "already_" + string(st)})
}

type denyRequest struct {
	Reason string `json:"reason"`
}

func (g *Gate) handleDeny(w http.ResponseWriter, r *http.Request) error {
	var req denyRequest
	if err := g.readJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Reason) > 1024 {
		return errInvalidRequest("reason must be at most 1024 characters.")
	}
	id := r.PathValue("id")
	if !uuidRE.MatchString(id) {
		return approvalNotFound()
	}
	by := g.operatorName(peerFrom(r.Context()))
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	now := g.clk.Now()
	a, err := g.st.DecideApproval(ctx, id, store.ApprovalDenied, by, req.Reason, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return approvalNotFound()
	case errors.Is(err, store.ErrConflict):
		return newError(http.StatusConflict, CodeApprovalConflict, "Another operator is acting on this approval right now.", err)
	case err != nil:
		return errStoreUnavailable(err)
	}
	// The store returns a decided approval unchanged: this call made the
	// decision only if it carries this call's time (an operator repeating
	// a deny must not record and announce it twice).
	if a.State != store.ApprovalDenied || !a.DecidedAt.Equal(now) {
		writeRawJSON(w, http.StatusOK, alreadyBody(a.State))
		return nil
	}
	// The decision record's group commit also syncs the store, which makes
	// the deny durable. When the record cannot be written, sync the store
	// here: a power loss must not bring the approval back as pending (a
	// failed sync is 503, as for a revocation). The deny is in effect.
	if err := g.audit(r.Context(), &receipts.AuditRecord{TraceID: a.TraceID, Principal: a.Principal, SessionID: a.SessionID, ActionID: a.ActionID, RequestHash: a.RequestHash, Decision: receipts.DecisionDenied, ApprovalID: a.ID, DecidedBy: by, Reason: req.Reason}); err != nil {
		g.log.Error().Err(err).Str(fApprovalID, a.ID).Msg("deny decision record not written")
		if err := g.durable(); err != nil {
			return err
		}
	}
	g.emitApproval(events.ApprovalDenied, a)
	writeJSON(w, http.StatusOK, map[string]string{"decision": "denied", "approval_id": a.ID, "reason": req.Reason})
	return nil
}

type approveRequest struct {
	Note        string `json:"note"`
	LearnDomain bool   `json:"learn_domain"`
}

// handleApprove claims the approval, re-checks the frozen plan, and runs it
// exactly once through the normal dispatch path (PROTOCOL §6).
func (g *Gate) handleApprove(w http.ResponseWriter, r *http.Request) error {
	var req approveRequest
	if err := g.readJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Note) > 1024 {
		return errInvalidRequest("note must be at most 1024 characters.")
	}
	id := r.PathValue("id")
	if !uuidRE.MatchString(id) {
		return approvalNotFound()
	}
	by := g.operatorName(peerFrom(r.Context()))
	now := g.clk.Now()
	snap := g.snap.Load()
	deadline := now.Add(2 * time.Minute)
	if cur, err := g.getApproval(r.Context(), id); err == nil {
		if act, ok := snap.Actions.Get(cur.ActionID); ok {
			deadline = now.Add(act.Timeout + time.Minute)
		}
	}
	ctx, cancel := g.storeCtx(r.Context())
	a, err := g.st.ClaimApproval(ctx, id, store.Claim{GateID: g.cfg.GateID, By: by, Deadline: deadline, ReceiptID: newID()}, now)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		return approvalNotFound()
	case errors.Is(err, store.ErrConflict):
		return newError(http.StatusConflict, CodeApprovalConflict, "Another operator is acting on this approval right now.", err)
	case err != nil:
		return errStoreUnavailable(err)
	}
	if a.State != store.ApprovalPending {
		writeRawJSON(w, http.StatusOK, alreadyBody(a.State))
		return nil
	}
	// A previous claimant's deadline passed (its gate crashed): resolve from
	// the ledger, never run again.
	if a.Claim != nil && a.Claim.Token > 1 {
		return g.resolveStaleClaim(w, r.Context(), a, by)
	}
	fail := func(reason, receiptID string) error {
		g.finishApproval(a, store.ApprovalFailed, by, reason, receiptID, nil)
		writeJSON(w, http.StatusOK, map[string]string{"decision": "failed", "reason": reason})
		return nil
	}
	act, ok := snap.Actions.Get(a.ActionID)
	if !ok || act.Digest != a.ActionDigest {
		return fail("plan_changed", "")
	}
	learned, err := g.learnedHosts(r.Context(), a.Principal, act)
	if err != nil {
		g.releaseClaimAsFailed(a, by)
		return err
	}
	plan, err := act.Prepare(a.Args, learned)
	if err != nil || plan.RequestHash != a.RequestHash {
		return fail("plan_changed", "")
	}
	if len(plan.Forbidden) > 0 {
		return fail("egress_target_forbidden", "")
	}
	sctx, scancel := g.storeCtx(r.Context())
	sess, err := g.st.GetSession(sctx, a.SessionID)
	scancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fail("session_revoked", "")
	case err != nil:
		g.releaseClaimAsFailed(a, by)
		return errStoreUnavailable(err)
	case sess.Revoked:
		return fail("session_revoked", "")
	case !now.Before(sess.LeaseExpiresAt) || !now.Before(sess.MaxExpiresAt):
		// Live means an unexpired lease: an agent that stopped renewing
		// it no longer holds the authority the request was made under.
		return fail("session_expired", "")
	}
	in := policyInput(sess, policy.Peer{UID: a.PeerUID, PID: a.PeerPID}, sess.Scopes, sess.LeaseExpiresAt, act, plan, learned, now)
	in.Approval = &policy.Approval{ApprovalID: a.ID, ApprovedBy: by}
	d, err := snap.Policy.Decide(r.Context(), in, now)
	if err != nil {
		return fail("policy_unavailable", "")
	}
	if !d.Allow || len(d.DenyReasons) > 0 {
		return fail("policy_changed", "")
	}
	appr := &receipts.Approval{Kind: receipts.ApprovalOperator, ApprovalID: a.ID, ApprovedBy: by, ApprovedAt: receipts.FormatTime(now)}
	// The operator approved this exact request, unresolved hosts included:
	// this one grant may reach them; learn_domain keeps them for later.
	if req.LearnDomain && len(plan.Unresolved) > 0 {
		g.learnDomains(r.Context(), a, by)
	}
	out, err := g.dispatch(r.Context(), dispatchRequest{
		traceID: a.TraceID, action: act, plan: plan, principal: a.Principal, sessionID: a.SessionID,
		agentID: a.AgentID, peer: Peer{UID: a.PeerUID, PID: a.PeerPID, HasCreds: a.PeerUID >= 0},
		approval: appr, policyVersion: snap.Policy.Version(), learned: append(learned, plan.Unresolved...),
		receiptID: a.Claim.ReceiptID,
	})
	if err != nil {
		e := asError(err)
		switch e.Code {
		case CodeBudgetExhausted:
			return fail("budget_exhausted", "")
		case CodeLeaseRevoked, CodeInvalidLease:
			return fail("session_revoked", "")
		case CodeEvidenceFailed:
			g.finishApproval(a, store.ApprovalFailed, by, "evidence_persistence_failed", "", nil)
			return err
		default:
			g.finishApproval(a, store.ApprovalFailed, by, e.Code, "", nil)
			return err
		}
	}
	if out.status == http.StatusOK {
		g.finishApproval(a, store.ApprovalApproved, by, req.Note, out.receiptID, out.output)
	} else {
		g.finishApproval(a, store.ApprovalFailed, by, out.kind, out.receiptID, nil)
	}
	writeRawJSON(w, out.status, out.body)
	return nil
}

// finishApproval records the final state and the operator's decision.
func (g *Gate) finishApproval(a *store.Approval, st store.ApprovalState, by, reason, receiptID string, output json.RawMessage) {
	ctx, cancel := g.storeCtx(context.Background())
	defer cancel()
	now := g.clk.Now()
	fin, err := g.st.FinishApproval(ctx, store.ApprovalFinish{
		ID: a.ID, Token: a.Claim.Token, State: st, DecidedBy: by, DecidedAt: now,
		Reason: reason, ReceiptID: receiptID, Output: output,
	})
	if err != nil {
		g.log.Error().Err(err).Str(fApprovalID, a.ID).Msg("approval outcome not stored")
		fin = cloneFinished(a, st, by, reason, receiptID)
	}
	if st == store.ApprovalApproved {
		g.emitApproval(events.ApprovalApproved, fin)
	} else {
		g.emitApproval(events.ApprovalFailed, fin)
	}
	decision := receipts.DecisionApproved
	if st == store.ApprovalFailed {
		decision = receipts.DecisionFailed
	}
	_ = g.audit(ctx, &receipts.AuditRecord{TraceID: a.TraceID, Principal: a.Principal, SessionID: a.SessionID, ActionID: a.ActionID, RequestHash: a.RequestHash, Decision: decision, ApprovalID: a.ID, ReceiptID: receiptID, DecidedBy: by, Reason: reason})
	g.log.Info().Str(fApprovalID, a.ID).Str(fDecision, string(st)).Str("by", by).Str(fReceiptID, receiptID).Msg("approval decided")
}

func cloneFinished(a *store.Approval, st store.ApprovalState, by, reason, receiptID string) *store.Approval {
	c := *a
	c.State, c.DecidedBy, c.Reason, c.ReceiptID = st, by, reason, receiptID
	return &c
}

// releaseClaimAsFailed ends a claim that could not proceed for lack of a
// dependency; nothing ran.
func (g *Gate) releaseClaimAsFailed(a *store.Approval, by string) {
	g.finishApproval(a, store.ApprovalFailed, by, "store_unavailable", "", nil)
}

// resolveStaleClaim settles an approval whose earlier claimant died: the
// receipt carrying its id decides; without one it failed as interrupted.
// A ledger that cannot answer settles nothing (503): the claim lapses at
// its deadline and the next approve tries again.
func (g *Gate) resolveStaleClaim(w http.ResponseWriter, ctx context.Context, a *store.Approval, by string) error {
	rc, err := g.led.FindByApproval(a.ID)
	if err != nil && !errors.Is(err, receipts.ErrNotFound) {
		return errLedgerUnavailable(err)
	}
	// The claimant may have been another gate sharing the store: its
	// receipt is in its own ledger, and a copy of it in the store, under
	// the id its claim named.
	if err != nil && a.Claim.ReceiptID != "" {
		other, oerr := g.receiptByID(ctx, a.Claim.ReceiptID)
		switch {
		case oerr == nil && other.Approval != nil && other.Approval.ApprovalID == a.ID:
			rc, err = other, nil
		case oerr != nil && !errors.Is(oerr, receipts.ErrNotFound) && !errors.Is(oerr, store.ErrNotFound):
			return errStoreUnavailable(oerr)
		}
	}
	switch {
	case err == nil && rc.NormalizedResult.Kind == receipts.KindSuccess:
		g.finishApproval(a, store.ApprovalApproved, by, "recovered", rc.ReceiptID, rc.Output)
		writeRawJSON(w, http.StatusOK, alreadyBody(store.ApprovalApproved))
	case err == nil:
		g.finishApproval(a, store.ApprovalFailed, by, rc.NormalizedResult.Kind, rc.ReceiptID, nil)
		writeRawJSON(w, http.StatusOK, alreadyBody(store.ApprovalFailed))
	default:
		g.finishApproval(a, store.ApprovalFailed, by, "interrupted", "", nil)
		writeRawJSON(w, http.StatusOK, alreadyBody(store.ApprovalFailed))
	}
	return nil
}
