package gate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/latchgate/latchgate/actions"
	"github.com/latchgate/latchgate/events"
	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
)

var actionIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_]{0,63}$`)

// executedBody is the 200 answer of PROTOCOL §3.4.
type executedBody struct {
	Decision            string          `json:"decision"`
	TraceID             string          `json:"trace_id"`
	ActionID            string          `json:"action_id"`
	GrantID             string          `json:"grant_id"`
	ReceiptID           string          `json:"receipt_id"`
	Output              json.RawMessage `json:"output"`
	VerificationOutcome string          `json:"verification_outcome"`
	Verification        verification    `json:"verification"`
	Runtime             runtimeInfo     `json:"runtime"`
	Approval            *approvalInfo   `json:"approval,omitempty"`
}

type verification struct {
	Outcome           string `json:"outcome"`
	IsFullySuccessful bool   `json:"is_fully_successful"`
}

type runtimeInfo struct {
	DurationMS int64 `json:"duration_ms"`
	StatusCode int   `json:"status_code,omitempty"`
}

type approvalInfo struct {
	Kind       string `json:"kind"`
	ApprovalID string `json:"approval_id"`
	ApprovedBy string `json:"approved_by"`
	ApprovedAt string `json:"approved_at"`
}

// failedBody is the 502 answer of PROTOCOL §3.4.
type failedBody struct {
	Error     string        `json:"error"`
	Message   string        `json:"message"`
	ReceiptID string        `json:"receipt_id"`
	TraceID   string        `json:"trace_id"`
	Approval  *approvalInfo `json:"approval,omitempty"`
}

// pendingBody is the 202 answer.
type pendingBody struct {
	Decision    string `json:"decision"`
	ApprovalID  string `json:"approval_id"`
	RequestHash string `json:"request_hash"`
	TraceID     string `json:"trace_id"`
	ExpiresAt   string `json:"expires_at"`
}

// dispatchRequest is everything needed to run a decided request once
// (pipeline steps 7–9); approvals reuse it.
type dispatchRequest struct {
	traceID string
	// receiptID, when set, is the receipt id to use (an approval's claim
	// names it beforehand); otherwise dispatch makes one.
	receiptID     string
	action        *actions.Action
	plan          *actions.Plan
	principal     string
	sessionID     string
	agentID       string
	peer          Peer
	approval      *receipts.Approval
	policyVersion string
	// learned are the egress entries the runner may reach besides the
	// manifest's allowlist (learned domains, approved unresolved hosts).
	learned []string
	// idemKey, when set, is the request's Idempotency-Key: the record is
	// bound to the grant and its receipt at the dispatch point.
	idemKey string
	// decision, when set, is the decision record written together with
	// the intent (same group commit, before it).
	decision *receipts.AuditRecord
	// proof, when set, is the agent's DPoP proof the request came with;
	// the intent names it (receipts.Intent.Proof).
	proof *lease.Proof
}

// outcome is a dispatched request's answer.
type outcome struct {
	status    int
	body      []byte
	receiptID string
	output    json.RawMessage
	kind      string
}

func (g *Gate) handleExecute(w http.ResponseWriter, r *http.Request) error {
	started := g.clk.Now()
	traceID := newID()
	id := r.PathValue("id")
	snap := g.snap.Load()
	// 1. route → manifest.
	act, ok := snap.Actions.Get(id)
	if !actionIDRE.MatchString(id) || !ok {
		e := newError(http.StatusNotFound, CodeActionNotFound, "No action with that id is registered.", nil)
		e.ActionID = clean(id)
		return e
	}
	// 2. body under the action's limit (no jti is used on 413).
	body, err := readBody(w, r, min(act.MaxRequestBytes, g.cfg.MaxBodyBytes))
	if err != nil {
		return err
	}
	// 3. authenticate (bh needs the whole body).
	c, err := g.authenticate(r, body)
	if err != nil {
		return err
	}
	if ok, wait := g.execLimiter.allow(c.session.ID); !ok {
		return errRateLimited("Too many executes for this session; slow down.", wait)
	}
	// 4. parse and validate (learned domains count as allowlisted).
	learned, err := g.learnedHosts(r.Context(), c.session.Principal, act)
	if err != nil {
		return err
	}
	plan, err := act.Prepare(body, learned)
	if err != nil {
		return prepareError(err, act.ID)
	}
	// 5. idempotency.
	idemKey := r.Header.Get("Idempotency-Key")
	if _, present := r.Header["Idempotency-Key"]; present {
		if len(idemKey) < 1 || len(idemKey) > 128 {
			return errInvalidRequest("Idempotency-Key must be 1–128 characters.")
		}
		done, err := g.beginIdempotent(r.Context(), w, c, idemKey, act.ID, plan.RequestHash)
		if done || err != nil {
			return err
		}
	}
	st, body2, err := g.decideAndRun(r.Context(), c, act, plan, learned, traceID, idemKey, snap)
	if idemKey != "" {
		g.finishIdempotent(c.session.Principal, idemKey, st, body2, err)
	}
	if err != nil {
		if e := asError(err); e.TraceID == "" {
			e.TraceID = traceID
		}
		return err
	}
	writeRawJSON(w, st, body2)
	g.log.Info().Str(fTraceID, traceID).Str(fPrincipal, c.session.Principal).Str(fAction, act.ID).
		Int(fStatus, st).Float64(fLatencyMS, float64(g.clk.Now().Sub(started).Microseconds())/1000).
		Msg("execute")
	return nil
}

// prepareError maps actions' typed errors to client errors.
func prepareError(err error, actionID string) error {
	var ij *actions.InvalidJSONError
	var se *actions.SchemaError
	var te *actions.TemplateError
	switch {
	case errors.As(err, &ij):
		return errBadJSON("The arguments are not I-JSON (RFC 7493).", err).withDeny(ij.Reason)
	case errors.As(err, &se):
		e := newError(http.StatusUnprocessableEntity, CodeSchemaViolation, "The arguments do not match the action's input schema.", err).withDeny(se.Pointer + ": " + se.Reason)
		e.ActionID = actionID
		return e
	case errors.As(err, &te):
		e := newError(http.StatusUnprocessableEntity, CodeSchemaViolation, "The arguments cannot fill the action's request template.", err).withDeny(te.Reason)
		e.ActionID = actionID
		return e
	}
	return err
}

// decideAndRun runs pipeline steps 4–9 and returns the status and body to
// answer (200, 202 or 502) or an error.
func (g *Gate) decideAndRun(ctx context.Context, c *caller, act *actions.Action, plan *actions.Plan, learned []string, traceID, idemKey string, snap *Snapshot) (int, []byte, error) {
	// 4. pre-check egress.
	if len(plan.Forbidden) > 0 {
		e := newError(http.StatusForbidden, CodeEgressTargetForbidden, "The request targets a host that can never be approved (special-purpose address or internal name).", nil)
		e.ActionID = act.ID
		e.DenyReason = "egress_target_forbidden"
		if err := g.audit(ctx, &receipts.AuditRecord{TraceID: traceID, Principal: c.session.Principal, SessionID: c.session.ID, AgentID: c.session.AgentID, ActionID: act.ID, RequestHash: plan.RequestHash, Decision: receipts.DecisionDeny, DenyReasons: []string{"egress_target_forbidden"}}); err != nil {
			return 0, nil, err
		}
		return 0, nil, e
	}
	// 5. decide.
	now := g.clk.Now()
	in := policyInput(c.session, policy.Peer{UID: c.peer.UID, GID: c.peer.GID, PID: c.peer.PID}, c.claims.Scopes, c.claims.ExpiresAt, act, plan, learned, now)
	t0 := time.Now()
	d, err := snap.Policy.Decide(ctx, in, now)
	g.mets.policy.Observe(time.Since(t0).Seconds())
	if err != nil {
		return 0, nil, errPolicyUnavailable(err)
	}
	if d.FromCache {
		g.mets.cacheHits.Inc()
	}
	// A human is needed: a standing approval of (principal, action) may
	// cover it. The policy decides again with input.standing_approval set.
	// pending_approval outranks allow (a decision with both asks a human).
	var standing *store.Standing
	if d.PendingApproval && len(d.DenyReasons) == 0 {
		sa, raw, err := g.standingFor(ctx, c.session.Principal, act.ID)
		if err != nil {
			return 0, nil, err
		}
		if sa != nil {
			in.StandingApproval = raw
			d2, err := snap.Policy.Decide(ctx, in, now)
			if err != nil {
				return 0, nil, errPolicyUnavailable(err)
			}
			if d2.Allow && !d2.PendingApproval && len(d2.DenyReasons) == 0 {
				d, standing = d2, sa
			}
		}
	}
	switch {
	case len(d.DenyReasons) > 0 || (!d.Allow && !d.PendingApproval):
		reasons := d.DenyReasons
		if len(reasons) == 0 {
			reasons = []string{"no_rule_allowed"}
		}
		g.mets.decisions.WithLabelValues("deny").Inc()
		if err := g.audit(ctx, &receipts.AuditRecord{TraceID: traceID, Principal: c.session.Principal, SessionID: c.session.ID, AgentID: c.session.AgentID, ActionID: act.ID, RequestHash: plan.RequestHash, Decision: receipts.DecisionDeny, DenyReasons: reasons}); err != nil {
			return 0, nil, err
		}
		e := newError(http.StatusForbidden, CodePolicyDenied, "Policy does not allow this action for this principal.", nil)
		e.DenyReason, e.ActionID, e.Principal = reasons[0], act.ID, c.session.Principal
		e.Remediation = "Ask an operator to grant this principal the action (policy ACL) or the required scope."
		return 0, nil, e
	case d.PendingApproval:
		g.mets.decisions.WithLabelValues("pending").Inc()
		return g.hold(ctx, c, act, plan, traceID, now)
	}
	var appr *receipts.Approval
	if standing != nil {
		// Consume one use atomically; if it went meanwhile, hold instead.
		sctx, cancel := g.storeCtx(ctx)
		used, err := g.st.UseStanding(sctx, standing.ID, now)
		cancel()
		switch {
		case errors.Is(err, store.ErrNotFound):
			g.mets.decisions.WithLabelValues("pending").Inc()
			return g.hold(ctx, c, act, plan, traceID, now)
		case err != nil:
			return 0, nil, errStoreUnavailable(err)
		}
		appr = &receipts.Approval{Kind: receipts.ApprovalStanding, ApprovalID: used.ID, ApprovedBy: used.CreatedBy, ApprovedAt: receipts.FormatTime(now)}
		// The policy allowed this request, unresolved hosts included,
		// because the standing approval applies: this one grant may reach
		// them, as after an operator's approve. Nothing is learned.
		if len(plan.Unresolved) > 0 {
			learned = append(slices.Clip(learned), plan.Unresolved...)
		}
	}
	g.mets.decisions.WithLabelValues("allow").Inc()
	// The allow record is written in the intent's group commit (one fsync
	// round instead of two); both are durable before anything runs.
	rec := &receipts.AuditRecord{ID: newID(), TraceID: traceID, Principal: c.session.Principal, SessionID: c.session.ID, AgentID: c.session.AgentID, ActionID: act.ID, RequestHash: plan.RequestHash, Decision: receipts.DecisionAllow}
	if appr != nil {
		rec.ApprovalID, rec.Reason = appr.ApprovalID, "standing approval"
	}
	out, err := g.dispatch(ctx, dispatchRequest{
		traceID: traceID, action: act, plan: plan, principal: c.session.Principal,
		sessionID: c.session.ID, agentID: c.session.AgentID, peer: c.peer,
		policyVersion: snap.Policy.Version(), approval: appr, learned: learned, idemKey: idemKey,
		decision: rec, proof: c.proof,
	})
	if err != nil {
		return 0, nil, err
	}
	return out.status, out.body, nil
}

// audit appends a decision record; a ledger failure is 503.
func (g *Gate) audit(ctx context.Context, a *receipts.AuditRecord) error {
	if a.ID == "" {
		a.ID = newID()
	}
	if err := g.led.AppendAudit(ctx, a); err != nil {
		return errLedgerUnavailable(err)
	}
	return nil
}

// policyInput builds the ARCHITECTURE "Policy contract" input document.
// The same builder serves execute and the re-evaluation at approval time.
func policyInput(sess *store.Session, peer policy.Peer, scopes []string, leaseExp time.Time, act *actions.Action, plan *actions.Plan, learned []string, now time.Time) *policy.Input {
	return &policy.Input{
		Principal: sess.Principal, SessionID: sess.ID, AgentID: sess.AgentID,
		Peer: peer,
		Action: policy.Action{
			ID: act.ID, Version: act.Version, RiskLevel: act.RiskLevel,
			RequiredScopes: nonNil(act.RequiredScopes), SideEffects: nonNil(act.SideEffects), CostCents: act.CostCents,
			Egress: policy.Egress{Profile: act.Egress.Profile, AllowedDomains: nonNil(act.Egress.AllowedDomains), LearnedDomains: nonNil(learned)},
		},
		Request: policy.Request{
			Args: plan.ArgsRaw, Hash: plan.RequestHash, SizeBytes: len(plan.ArgsRaw),
			TargetHosts: nonNil(plan.TargetHosts), UnresolvedDomains: nonNil(plan.Unresolved),
		},
		Lease:            policy.Lease{Scopes: nonNil(scopes), ExpiresAt: leaseExp.UTC().Format(time.RFC3339)},
		Budget:           policy.Budget{CallsRemaining: sess.CallsRemaining(), CostRemaining: sess.CostRemaining()},
		Time:             policy.NewTime(now),
		StandingApproval: json.RawMessage("null"),
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// hold stores the frozen plan and answers 202 (pipeline step 5).
func (g *Gate) hold(ctx context.Context, c *caller, act *actions.Action, plan *actions.Plan, traceID string, now time.Time) (int, []byte, error) {
	a := &store.Approval{
		ID: newID(), SessionID: c.session.ID, Principal: c.session.Principal, AgentID: c.session.AgentID,
		ActionID: act.ID, ActionVersion: act.Version, ActionDigest: act.Digest, RiskLevel: act.RiskLevel,
		RequestHash: plan.RequestHash, Args: plan.ArgsRaw, TargetHosts: nonNil(plan.TargetHosts),
		UnresolvedDomains: nonNil(plan.Unresolved), TraceID: traceID, PeerUID: c.peer.UID, PeerPID: c.peer.PID,
		State: store.ApprovalPending, CreatedAt: now, ExpiresAt: now.Add(g.cfg.PendingTTL),
	}
	sctx, cancel := g.storeCtx(ctx)
	defer cancel()
	stored, created, err := g.st.CreateApproval(sctx, a, g.cfg.MaxPendingPerSession)
	switch {
	case errors.Is(err, store.ErrTooManyPending):
		return 0, nil, errRateLimited("This session already has the maximum number of pending approvals.", 30)
	case err != nil:
		return 0, nil, errStoreUnavailable(err)
	}
	if created {
		if err := g.audit(ctx, &receipts.AuditRecord{TraceID: traceID, Principal: c.session.Principal, SessionID: c.session.ID, AgentID: c.session.AgentID, ActionID: act.ID, RequestHash: plan.RequestHash, Decision: receipts.DecisionPending, ApprovalID: stored.ID}); err != nil {
			return 0, nil, err
		}
		g.log.Info().Str(fTraceID, traceID).Str(fApprovalID, stored.ID).Str(fAction, act.ID).Str(fPrincipal, c.session.Principal).Msg("held for approval")
		g.emitApproval(events.ApprovalRequested, stored)
	}
	b, err := json.Marshal(pendingBody{
		Decision: "pending_approval", ApprovalID: stored.ID, RequestHash: stored.RequestHash,
		TraceID: stored.TraceID, ExpiresAt: stored.ExpiresAt.UTC().Format(time.RFC3339),
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, b, nil
}

// grantMarkerTTL is how long the store keeps a consumed-grant marker for
// an action with this timeout: the longest its dispatch may take, plus a
// minute. A timeout outside (0, actions.MaxTimeout] counts as MaxTimeout.
func grantMarkerTTL(timeout time.Duration) time.Duration {
	if timeout <= 0 || timeout > actions.MaxTimeout {
		timeout = actions.MaxTimeout
	}
	return timeout + time.Minute
}

// dispatch runs pipeline steps 6–9 for a decided request: durable intent,
// atomic reserve + one-shot grant, execution, durable receipt.
func (g *Gate) dispatch(ctx context.Context, dr dispatchRequest) (*outcome, error) {
	act, plan := dr.action, dr.plan
	grantID, receiptID := newID(), dr.receiptID
	if receiptID == "" {
		receiptID = newID()
	}
	started := g.clk.Now()
	var peer *receipts.Peer
	if dr.peer.HasCreds {
		peer = &receipts.Peer{UID: dr.peer.UID, PID: dr.peer.PID}
	}
	intent := &receipts.Intent{
		GrantID: grantID, TraceID: dr.traceID, ReceiptID: receiptID, ActionID: act.ID,
		ActionVersion: act.Version, ActionDigest: act.Digest, Principal: dr.principal,
		SessionID: dr.sessionID, AgentID: dr.agentID, Peer: peer, RequestHash: plan.RequestHash,
		Approval: dr.approval, PolicyVersion: dr.policyVersion,
		Egress: receipts.Egress{Hosts: nonNil(plan.TargetHosts)}, StartedAt: receipts.FormatTime(started),
		// What the dispatch relies on beyond the proof's replay entry must
		// be durable in the store first: the idempotency claim, the
		// claimed operator approval, the standing approval's use.
		StoreState: dr.idemKey != "" || dr.approval != nil,
	}
	if p := dr.proof; p != nil {
		intent.Proof = &receipts.ProofRef{JKT: p.JKT, JTI: p.JTI, ExpiresAt: receipts.FormatTime(p.ReplayExpiresAt)}
	}
	// 7a. durable intent (and decision record) before anything may run.
	if err := g.led.WriteDecisionAndIntent(ctx, dr.decision, intent); err != nil {
		return nil, errLedgerUnavailable(err)
	}
	// Bind the idempotency record to this grant's receipt: after a crash
	// a retry resolves to that receipt (interrupted or not), never a rerun.
	if dr.idemKey != "" {
		sctx, cancel := g.storeCtx(ctx)
		err := g.st.SetIdempotentGrant(sctx, dr.principal, dr.idemKey, grantID, receiptID)
		cancel()
		if err != nil {
			if aerr := g.led.WriteAbort(context.WithoutCancel(ctx), grantID, "idempotency_record_unavailable"); aerr != nil {
				g.log.Error().Err(aerr).Str("grant_id", grantID).Msg("abort record not written; the intent will show as interrupted")
			}
			e := errStoreUnavailable(err)
			e.TraceID = dr.traceID
			return nil, e
		}
	}
	// 6 + 7b. reserve budget and consume the grant atomically.
	//
	// TTL: the consumed-grant marker only refuses a second Grant of the same
	// id. grantID is a fresh UUIDv7 made above and handed to Grant once;
	// the id then lives only until its receipt, at most the action's
	// timeout of dispatch later. The marker outlives that window by a
	// minute (grantMarkerTTL). One marker per execute: with 6 minutes for
	// every action (actions.MaxTimeout + 1 min) a 30 s action left ≈ 290k
	// of them in the store at 800 executes/s, most of every snapshot.
	sctx, cancel := g.storeCtx(ctx)
	_, err := g.st.Grant(sctx, store.GrantRequest{
		GrantID: grantID, SessionID: dr.sessionID, Principal: dr.principal, Calls: 1,
		CostCents: act.CostCents, Limits: g.principalLimits(dr.principal), Now: started,
		TTL: grantMarkerTTL(act.Timeout),
	})
	cancel()
	if err != nil {
		reason := "grant_refused"
		var e *Error
		switch {
		case errors.Is(err, store.ErrBudgetExhausted):
			reason = "budget_exhausted"
			e = newError(http.StatusForbidden, CodeBudgetExhausted, "The session's or principal's budget is used up.", err)
			e.ActionID = act.ID
		case errors.Is(err, store.ErrRevoked):
			reason = "revoked"
			e = newError(http.StatusUnauthorized, CodeLeaseRevoked, "The lease's session was revoked.", err)
		case errors.Is(err, store.ErrNotFound):
			reason = "session_not_found"
			e = newError(http.StatusUnauthorized, CodeInvalidLease, "The lease's session is unknown to this gate.", err)
		case errors.Is(err, store.ErrGrantConsumed):
			reason = "grant_consumed"
			e = newError(http.StatusConflict, CodeGrantConsumed, "This grant was already used.", err)
		default:
			e = errStoreUnavailable(err)
		}
		// The intent must not become an interrupted receipt: nothing ran.
		if aerr := g.led.WriteAbort(context.WithoutCancel(ctx), grantID, reason); aerr != nil {
			g.log.Error().Err(aerr).Str("grant_id", grantID).Msg("abort record not written; the intent will show as interrupted")
		}
		e.TraceID = dr.traceID
		return nil, e
	}
	// 8. execute. From here on nothing is refunded and nothing re-runs.
	res := g.run.Execute(context.WithoutCancel(ctx), plan, actions.GrantInfo{ID: grantID, Learned: dr.learned})
	finished := g.clk.Now()
	rc := &receipts.Receipt{
		ReceiptID: receiptID, TraceID: dr.traceID, GrantID: grantID, ActionID: act.ID,
		ActionVersion: act.Version, ActionDigest: act.Digest, ProviderModuleDigest: act.Digest,
		Principal: dr.principal, SessionID: dr.sessionID, AgentID: dr.agentID, Peer: peer,
		RequestHash: plan.RequestHash, Output: res.Output,
		NormalizedResult:    receipts.NormalizedResult{Kind: res.Kind, Summary: res.Summary},
		VerificationOutcome: receipts.VerificationOutcome{Status: res.Verification},
		Egress:              receipts.Egress{Hosts: nonNil(res.Hosts)},
		Approval:            dr.approval, PolicyVersion: dr.policyVersion,
		StartedAt: receipts.FormatTime(started), FinishedAt: receipts.FormatTime(finished),
	}
	if res.ResponseHash != "" {
		h := res.ResponseHash
		rc.ResponseHash = &h
	}
	if rc.Output == nil {
		rc.Output = json.RawMessage("null")
	}
	// 9. evidence, durable before the answer.
	t0 := time.Now()
	if _, err := g.led.Append(context.WithoutCancel(ctx), rc); err != nil {
		e := newError(http.StatusInternalServerError, CodeEvidenceFailed, "The action ran but its receipt could not be written; the gate records it as interrupted on restart.", err)
		e.TraceID = dr.traceID
		return nil, e
	}
	g.mets.ledger.Observe(time.Since(t0).Seconds())
	ev := receiptEvent{ReceiptID: receiptID, ActionID: act.ID, Principal: dr.principal, Kind: res.Kind, Head: g.led.Head()}
	if dr.approval != nil {
		ev.ApprovalID = dr.approval.ApprovalID
	}
	g.emit(events.ReceiptCreated, ev)
	var appr *approvalInfo
	if dr.approval != nil {
		appr = &approvalInfo{Kind: dr.approval.Kind, ApprovalID: dr.approval.ApprovalID, ApprovedBy: dr.approval.ApprovedBy, ApprovedAt: dr.approval.ApprovedAt}
	}
	out := &outcome{receiptID: receiptID, output: rc.Output, kind: res.Kind}
	if res.Kind != receipts.KindSuccess {
		code := CodeActionFailed
		if res.Kind == receipts.KindEgressDenied {
			code = CodeEgressDenied
		}
		msg := res.Summary
		if msg == "" {
			msg = "The action was dispatched but failed before an answer."
		}
		b, err := json.Marshal(failedBody{Error: code, Message: msg, ReceiptID: receiptID, TraceID: dr.traceID, Approval: appr})
		if err != nil {
			return nil, err
		}
		out.status, out.body = http.StatusBadGateway, b
		return out, nil
	}
	b, err := json.Marshal(executedBody{
		Decision: "executed", TraceID: dr.traceID, ActionID: act.ID, GrantID: grantID, ReceiptID: receiptID,
		Output: rc.Output, VerificationOutcome: res.Verification,
		Verification: verification{Outcome: res.Verification, IsFullySuccessful: res.Verification != receipts.VerificationFailed},
		Runtime:      runtimeInfo{DurationMS: res.Duration.Milliseconds(), StatusCode: res.StatusCode},
		Approval:     appr,
	})
	if err != nil {
		return nil, err
	}
	out.status, out.body = http.StatusOK, b
	return out, nil
}
