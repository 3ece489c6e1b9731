package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/latchgate/latchgate/actions"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// clientHandler is the client socket's routes (PROTOCOL §3).
func (g *Gate) clientHandler() http.Handler {
	mux := http.NewServeMux()
	g.route(mux, "GET /healthz", g.handleHealthz)
	g.route(mux, "GET /readyz", g.handleReadyz)
	g.route(mux, "GET /.well-known/jwks.json", g.handleJWKS)
	g.route(mux, "GET /v1/receipt-keys", g.handleReceiptKeys)
	g.route(mux, "POST /v1/leases", g.handleLeaseIssue)
	g.route(mux, "POST /v1/leases/renew", g.handleLeaseRenew)
	g.route(mux, "GET /v1/actions", g.handleActionsList)
	g.route(mux, "GET /v1/actions/{id}", g.handleActionGet)
	g.route(mux, "GET /v1/actions/{id}/schema/request", g.handleActionSchema)
	g.route(mux, "POST /v1/actions/{id}/execute", g.handleExecute)
	g.route(mux, "GET /v1/approvals/{id}/poll", g.handleApprovalPoll)
	g.route(mux, "GET /v1/receipts/{id}", g.handleReceiptClient)
	return g.frontDoor(mux)
}

// adminHandler is the admin socket's routes (PROTOCOL §6); every request is
// authorised by peer uid first.
func (g *Gate) adminHandler() http.Handler {
	mux := http.NewServeMux()
	g.route(mux, "GET /healthz", g.handleHealthz)
	g.route(mux, "GET /readyz", g.handleReadyz)
	g.route(mux, "POST /v1/leases/revoke", g.operator(g.handleRevoke))
	g.route(mux, "GET /v1/receipts/{id}", g.operator(g.handleReceiptAdmin))
	g.route(mux, "GET /v1/audit/verify", g.operator(g.handleAuditVerify))
	g.route(mux, "GET /v1/audit", g.operator(g.handleAuditQuery))
	g.route(mux, "GET /v1/admin/status", g.operator(g.handleStatus))
	g.route(mux, "POST /v1/admin/reload", g.operator(g.handleReload))
	g.route(mux, "GET /v1/actions", g.operator(g.handleActionsList))
	g.route(mux, "GET /v1/actions/{id}", g.operator(g.handleActionGet))
	g.route(mux, "GET /v1/approvals", g.operator(g.handleApprovalsList))
	g.route(mux, "GET /v1/approvals/{id}", g.operator(g.handleApprovalShow))
	g.route(mux, "POST /v1/approvals/{id}/approve", g.operator(g.handleApprove))
	g.route(mux, "POST /v1/approvals/{id}/deny", g.operator(g.handleDeny))
	g.route(mux, "GET /v1/standing-approvals", g.operator(g.handleStandingList))
	g.route(mux, "POST /v1/standing-approvals", g.operator(g.handleStandingCreate))
	g.route(mux, "DELETE /v1/standing-approvals/{id}", g.operator(g.handleStandingDelete))
	g.route(mux, "GET /v1/learned-domains", g.operator(g.handleLearnedList))
	g.route(mux, "DELETE /v1/learned-domains/{id}", g.operator(g.handleLearnedDelete))
	g.route(mux, "GET /v1/webhooks/deliveries", g.operator(g.handleWebhookDeliveries))
	g.route(mux, "POST /v1/webhooks/test", g.operator(g.handleWebhookTest))
	g.route(mux, "GET /v1/events", g.operator(g.handleEvents))
	g.route(mux, "POST /v1/admin/keys/rotate", g.operator(g.handleKeysRotate))
	metrics := promhttp.HandlerFor(g.gath, promhttp.HandlerOpts{})
	g.route(mux, "GET /metrics", g.operator(func(w http.ResponseWriter, r *http.Request) error {
		metrics.ServeHTTP(w, r)
		return nil
	}))
	return g.frontDoor(mux)
}

// operator refuses peers that are not operators (403 forbidden).
func (g *Gate) operator(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !g.isOperator(peerFrom(r.Context())) {
			return newError(http.StatusForbidden, CodeForbidden, "Only operators may use the admin socket.", nil)
		}
		return h(w, r)
	}
}

// operatorName is how approvals and receipts record an operator.
func (g *Gate) operatorName(p Peer) string {
	if n := g.cfg.Operators[uint32(p.UID)]; n != "" {
		return n
	}
	return "uid:" + strconv.FormatInt(p.UID, 10)
}

func (g *Gate) handleHealthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readiness reports the gate's dependencies.
type readiness struct {
	Status            string `json:"status"`
	Store             bool   `json:"store"`
	Policy            bool   `json:"policy"`
	Ledger            bool   `json:"ledger"`
	EgressProxy       *bool  `json:"egress_proxy"`
	ActionsRegistered int    `json:"actions_registered"`
	Version           string `json:"version"`
}

func (g *Gate) readiness(ctx context.Context) readiness {
	ctx, cancel := g.storeCtx(ctx)
	defer cancel()
	snap := g.snap.Load()
	rd := readiness{
		Store: g.st.Ping(ctx) == nil, Policy: snap.Policy != nil, Ledger: g.led.Healthy(),
		ActionsRegistered: snap.Actions.Len(), Version: Version,
	}
	rd.Status = "ready"
	if !rd.Store || !rd.Policy || !rd.Ledger {
		rd.Status = "not_ready"
	}
	return rd
}

// Ready reports whether the gate can serve (store, policy, ledger).
func (g *Gate) Ready(ctx context.Context) bool { return g.readiness(ctx).Status == "ready" }

func (g *Gate) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	rd := g.readiness(r.Context())
	if rd.Status != "ready" {
		b, _ := json.Marshal(struct {
			Error   string `json:"error"`
			Message string `json:"message"`
			readiness
		}{CodeNotReady, "A dependency is unavailable.", rd})
		writeRawJSON(w, http.StatusServiceUnavailable, b)
		return nil
	}
	writeJSON(w, http.StatusOK, rd)
	return nil
}

func (g *Gate) handleJWKS(w http.ResponseWriter, _ *http.Request) error {
	writeRawJSON(w, http.StatusOK, g.keys.JWKS())
	return nil
}

func (g *Gate) handleReceiptKeys(w http.ResponseWriter, r *http.Request) error {
	if _, shared := g.st.(receiptKeyShare); shared {
		writeRawJSON(w, http.StatusOK, receipts.MarshalKeySet(g.receiptKeys(r.Context())))
		return nil
	}
	writeRawJSON(w, http.StatusOK, g.led.KeySet())
	return nil
}

// actionSummary is one entry of GET /v1/actions.
type actionSummary struct {
	ActionID    string `json:"action_id"`
	Version     string `json:"version"`
	Description string `json:"description"`
	RiskLevel   string `json:"risk_level"`
}

// actionDetail is GET /v1/actions/{id}.
type actionDetail struct {
	actionSummary
	RequiredScopes []string        `json:"required_scopes"`
	SideEffects    []string        `json:"side_effects"`
	CostCents      int64           `json:"cost_usd_cents"`
	Digest         string          `json:"digest"`
	InputSchema    json.RawMessage `json:"input_schema"`
	Egress         any             `json:"egress"`
}

func summaryOf(a *actions.Action) actionSummary {
	return actionSummary{ActionID: a.ID, Version: a.Version, Description: a.Description, RiskLevel: a.RiskLevel}
}

func (g *Gate) handleActionsList(w http.ResponseWriter, _ *http.Request) error {
	list := g.snap.Load().Actions.List()
	out := make([]actionSummary, 0, len(list))
	for _, a := range list {
		out = append(out, summaryOf(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"actions": out})
	return nil
}

func (g *Gate) lookupAction(r *http.Request) (*actions.Action, error) {
	id := r.PathValue("id")
	a, ok := g.snap.Load().Actions.Get(id)
	if !actionIDRE.MatchString(id) || !ok {
		e := newError(http.StatusNotFound, CodeActionNotFound, "No action with that id is registered.", nil)
		e.ActionID = clean(id)
		return nil, e
	}
	return a, nil
}

func (g *Gate) handleActionGet(w http.ResponseWriter, r *http.Request) error {
	a, err := g.lookupAction(r)
	if err != nil {
		return err
	}
	var eg any = "none"
	if a.Egress.Profile == "proxy_allowlist" {
		eg = map[string]any{"proxy_allowlist": map[string]any{"allowed_domains": nonNil(a.Egress.AllowedDomains)}}
	}
	writeJSON(w, http.StatusOK, actionDetail{
		actionSummary: summaryOf(a), RequiredScopes: nonNil(a.RequiredScopes), SideEffects: nonNil(a.SideEffects),
		CostCents: a.CostCents, Digest: a.Digest, InputSchema: a.InputSchema, Egress: eg,
	})
	return nil
}

func (g *Gate) handleActionSchema(w http.ResponseWriter, r *http.Request) error {
	a, err := g.lookupAction(r)
	if err != nil {
		return err
	}
	writeRawJSON(w, http.StatusOK, a.InputSchema)
	return nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func receiptNotFound() error {
	return newError(http.StatusNotFound, CodeReceiptNotFound, "No receipt with that id.", nil)
}

// receiptCopies is a store that keeps copies of every gate's receipts
// (Redis: PROTOCOL §5), so a receipt written by another gate sharing it is
// served here too.
type receiptCopies interface {
	GetReceipt(ctx context.Context, id string) ([]byte, error)
}

// storedReceipt returns a receipt's stored bytes from this gate's ledger
// or, with a store that keeps copies, the copy another gate wrote. Not
// found is receipts.ErrNotFound or store.ErrNotFound; a store failure
// wraps store.ErrUnavailable, anything else is the ledger's.
func (g *Gate) storedReceipt(ctx context.Context, id string) ([]byte, error) {
	raw, err := g.led.Get(id)
	copies, ok := g.st.(receiptCopies)
	if !ok || !errors.Is(err, receipts.ErrNotFound) {
		return raw, err
	}
	sctx, cancel := g.storeCtx(ctx)
	defer cancel()
	return copies.GetReceipt(sctx, id)
}

// receiptWithStatus returns the stored receipt plus signature_status, and
// its principal.
func (g *Gate) receiptWithStatus(ctx context.Context, id string) ([]byte, string, error) {
	if !uuidRE.MatchString(id) {
		return nil, "", receiptNotFound()
	}
	raw, err := g.storedReceipt(ctx, id)
	switch {
	case errors.Is(err, receipts.ErrNotFound) || errors.Is(err, store.ErrNotFound):
		return nil, "", receiptNotFound()
	case errors.Is(err, store.ErrUnavailable):
		return nil, "", errStoreUnavailable(err)
	case err != nil:
		return nil, "", errLedgerUnavailable(err)
	}
	var head struct {
		Principal string `json:"principal"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, "", err
	}
	status := g.led.SignatureStatus(raw)
	if _, shared := g.st.(receiptKeyShare); shared && status == receipts.StatusUnknownKeyID {
		status = receipts.VerifyReceipt(raw, g.receiptKeys(ctx)) // written by another gate
	}
	out := receipts.WithSignatureStatus(raw, status)
	return out, head.Principal, nil
}

func (g *Gate) handleReceiptClient(w http.ResponseWriter, r *http.Request) error {
	c, err := g.authenticate(r, nil)
	if err != nil {
		return err
	}
	out, principal, err := g.receiptWithStatus(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if principal != c.session.Principal {
		return receiptNotFound()
	}
	writeRawJSON(w, http.StatusOK, out)
	return nil
}

func (g *Gate) handleReceiptAdmin(w http.ResponseWriter, r *http.Request) error {
	out, _, err := g.receiptWithStatus(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeRawJSON(w, http.StatusOK, out)
	return nil
}

func (g *Gate) handleAuditVerify(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, g.led.Verify())
	return nil
}

func (g *Gate) handleAuditQuery(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	aq := receipts.AuditQuery{Principal: q.Get("principal"), ActionID: q.Get("action_id"), Decision: q.Get("decision"), Limit: 100}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > receipts.MaxAuditLimit {
			return errInvalidRequest(fmt.Sprintf("limit must be an integer from 1 to %d.", receipts.MaxAuditLimit))
		}
		aq.Limit = n
	}
	for name, dst := range map[string]*time.Time{"after": &aq.After, "before": &aq.Before} {
		if s := q.Get(name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return errInvalidRequest(name + " must be an RFC 3339 time.")
			}
			*dst = t
		}
	}
	recs, err := g.led.QueryAudit(aq)
	if err != nil {
		return errLedgerUnavailable(err)
	}
	if q.Get("format") == "ndjson" {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		for _, rec := range recs {
			_, _ = w.Write(append(append([]byte(nil), rec...), '\n'))
		}
		return nil
	}
	if recs == nil {
		recs = []json.RawMessage{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"records": recs})
	return nil
}

// revokeRequest is POST /v1/leases/revoke.
type revokeRequest struct {
	SessionID string `json:"session_id"`
	Principal string `json:"principal"`
	All       bool   `json:"all"`
}

func (g *Gate) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	var req revokeRequest
	if err := g.readJSON(w, r, &req); err != nil {
		return err
	}
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
		return errInvalidRequest("Send exactly one of session_id, principal or all:true.")
	}
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	count, err := g.st.Revoke(ctx, store.RevokeRequest{SessionID: req.SessionID, Principal: req.Principal, All: req.All}, g.clk.Now())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return errStoreUnavailable(err)
	}
	if err := g.durable(); err != nil {
		return err
	}
	g.log.Warn().Str(fSessionID, clean(req.SessionID)).Str(fPrincipal, clean(req.Principal)).Bool("all", req.All).
		Int("revoked", count).Str("by", g.operatorName(peerFrom(r.Context()))).Msg("leases revoked")
	writeJSON(w, http.StatusOK, map[string]int{"revoked": count})
	return nil
}

// durable makes the store's state durable before an operator is told that
// a permission is gone (a revoked lease, standing approval or learned
// domain): the embedded store fsyncs only every SyncInterval, and a power
// loss must not bring a revoked permission back. The change itself is
// already in effect; a failed sync is 503 so the operator retries.
func (g *Gate) durable() error {
	if err := g.st.Sync(); err != nil {
		return errStoreUnavailable(err)
	}
	return nil
}

func (g *Gate) handleStatus(w http.ResponseWriter, r *http.Request) error {
	rd := g.readiness(r.Context())
	nr, na := g.led.Stats()
	pending := -1
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	if list, err := g.st.ListApprovals(ctx, store.ApprovalPending, 500); err == nil {
		pending = len(list)
	}
	snap := g.snap.Load()
	writeJSON(w, http.StatusOK, map[string]any{
		"version": Version, "gate_id": g.cfg.GateID, "mode": g.cfg.StoreMode, "dev": g.cfg.Dev,
		"uptime_seconds":    int64(g.clk.Now().Sub(g.start).Seconds()),
		"counts":            map[string]int{"receipts": nr, "audit_records": na, "actions": snap.Actions.Len()},
		"pending_approvals": pending, "policy_version": snap.Policy.Version(),
		"health":      map[string]bool{"store": rd.Store, "policy": rd.Policy, "ledger": rd.Ledger},
		"ledger_head": g.led.Head(),
	})
	return nil
}

func (g *Gate) handleReload(w http.ResponseWriter, _ *http.Request) error {
	if g.reloadFn == nil {
		return newError(http.StatusNotFound, CodeNotFound, "Reload is not configured on this gate.", nil)
	}
	if err := g.Reload(); err != nil {
		e := newError(http.StatusBadRequest, CodeInvalidRequest, "The new policy or manifests were rejected; the previous set keeps serving. See the gate log for the reason.", err)
		return e
	}
	snap := g.snap.Load()
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "actions": snap.Actions.Len(), "policy_version": snap.Policy.Version()})
	return nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
