package gate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/latchgate/latchgate/actions"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
	"github.com/latchgate/latchgate/webhooks"
)

// Webhooks is what the admin API needs from webhook delivery.
type Webhooks interface {
	// Deliveries returns the newest deliveries first.
	Deliveries(limit int) ([]webhooks.Delivery, error)
	// Test sends a webhook.test event to the configured endpoint url now
	// (webhooks.ErrUnknownEndpoint if url is not configured).
	Test(ctx context.Context, url string) (*webhooks.Delivery, error)
}

// noWebhooks is the Webhooks of a gate without webhook endpoints.
type noWebhooks struct{}

func (noWebhooks) Deliveries(int) ([]webhooks.Delivery, error) { return []webhooks.Delivery{}, nil }
func (noWebhooks) Test(context.Context, string) (*webhooks.Delivery, error) {
	return nil, webhooks.ErrUnknownEndpoint
}

var _ Webhooks = noWebhooks{}

// standingView is a standing approval on the admin API.
type standingView struct {
	ID        string `json:"id"`
	Principal string `json:"principal"`
	ActionID  string `json:"action_id"`
	CreatedBy string `json:"created_by"`
	CreatedAt string `json:"created_at"`
	ExpiresAt string `json:"expires_at,omitempty"`
	Uses      *int64 `json:"uses"`
	Used      int64  `json:"used"`
}

func standingViewOf(s *store.Standing) standingView {
	v := standingView{ID: s.ID, Principal: s.Principal, ActionID: s.ActionID, CreatedBy: s.CreatedBy,
		CreatedAt: s.CreatedAt.UTC().Format(time.RFC3339), Used: s.Used}
	if !s.ExpiresAt.IsZero() {
		v.ExpiresAt = s.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if s.Uses > 0 {
		n := s.Uses
		v.Uses = &n
	}
	return v
}

type standingRequest struct {
	Principal string  `json:"principal"`
	ActionID  string  `json:"action_id"`
	ExpiresAt *string `json:"expires_at"`
	Uses      *int64  `json:"uses"`
}

func (g *Gate) handleStandingCreate(w http.ResponseWriter, r *http.Request) error {
	var req standingRequest
	if err := g.readJSON(w, r, &req); err != nil {
		return err
	}
	now := g.clk.Now()
	s := &store.Standing{ID: newID(), Principal: req.Principal, ActionID: req.ActionID,
		CreatedBy: g.operatorName(peerFrom(r.Context())), CreatedAt: now}
	switch {
	case req.Principal == "" || len(req.Principal) > 256 || strings.ContainsAny(req.Principal, "\r\n"):
		return errInvalidRequest("principal is required (at most 256 characters, one line).")
	case !actionIDRE.MatchString(req.ActionID):
		return errInvalidRequest("action_id must be a registered action id.")
	case req.ExpiresAt == nil && req.Uses == nil:
		return errInvalidRequest("A standing approval needs expires_at and/or uses.")
	}
	if _, ok := g.snap.Load().Actions.Get(req.ActionID); !ok {
		e := newError(http.StatusNotFound, CodeActionNotFound, "No action with that id is registered.", nil)
		e.ActionID = req.ActionID
		return e
	}
	if req.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339, *req.ExpiresAt)
		if err != nil || !t.After(now) {
			return errInvalidRequest("expires_at must be an RFC 3339 time in the future.")
		}
		s.ExpiresAt = t
	}
	if req.Uses != nil {
		if *req.Uses < 1 || *req.Uses > 1_000_000 {
			return errInvalidRequest("uses must be an integer from 1 to 1000000.")
		}
		s.Uses = *req.Uses
	}
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	if err := g.st.CreateStanding(ctx, s); err != nil {
		return errStoreUnavailable(err)
	}
	_ = g.audit(r.Context(), &receipts.AuditRecord{Principal: s.Principal, ActionID: s.ActionID, Decision: receipts.DecisionApproved, ApprovalID: s.ID, DecidedBy: s.CreatedBy, Reason: "standing approval created"})
	g.log.Info().Str(fApprovalID, s.ID).Str(fPrincipal, s.Principal).Str(fAction, s.ActionID).Str("by", s.CreatedBy).Msg("standing approval created")
	writeJSON(w, http.StatusCreated, standingViewOf(s))
	return nil
}

func (g *Gate) handleStandingList(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	list, err := g.st.ListStanding(ctx, g.clk.Now())
	if err != nil {
		return errStoreUnavailable(err)
	}
	out := make([]standingView, 0, len(list))
	for _, s := range list {
		out = append(out, standingViewOf(s))
	}
	writeJSON(w, http.StatusOK, map[string]any{"standing_approvals": out})
	return nil
}

func (g *Gate) handleStandingDelete(w http.ResponseWriter, r *http.Request) error {
	return g.revokeByID(w, r, g.st.DeleteStanding, "No standing approval with that id.", fApprovalID,
		"standing approval revoked", "revoked")
}

// revokeByID is DELETE …/{id} of an operator permission (a standing
// approval, a learned domain): del removes it, the store makes that
// durable, and the answer is {"<done>":true,"id":…}; an unknown or
// malformed id is 404 with notFoundMsg.
func (g *Gate) revokeByID(w http.ResponseWriter, r *http.Request, del func(context.Context, string) error,
	notFoundMsg, logField, logMsg, done string) error {
	id := r.PathValue("id")
	notFound := newError(http.StatusNotFound, CodeNotFound, notFoundMsg, nil)
	if !uuidRE.MatchString(id) {
		return notFound
	}
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	switch err := del(ctx, id); {
	case errors.Is(err, store.ErrNotFound):
		return notFound
	case err != nil:
		return errStoreUnavailable(err)
	}
	if err := g.durable(); err != nil {
		return err
	}
	g.log.Info().Str(logField, id).Str("by", g.operatorName(peerFrom(r.Context()))).Msg(logMsg)
	writeJSON(w, http.StatusOK, map[string]any{done: true, "id": id})
	return nil
}

// learnedView is a learned domain on the admin API.
type learnedView struct {
	ID         string `json:"id"`
	Principal  string `json:"principal"`
	ActionID   string `json:"action_id"`
	Host       string `json:"host"`
	ApprovalID string `json:"approval_id"`
	CreatedBy  string `json:"created_by"`
	CreatedAt  string `json:"created_at"`
	ExpiresAt  string `json:"expires_at"`
}

func (g *Gate) handleLearnedList(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	list, err := g.st.ListLearned(ctx, g.clk.Now())
	if err != nil {
		return errStoreUnavailable(err)
	}
	out := make([]learnedView, 0, len(list))
	for _, d := range list {
		out = append(out, learnedView{ID: d.ID, Principal: d.Principal, ActionID: d.ActionID, Host: d.Host,
			ApprovalID: d.ApprovalID, CreatedBy: d.CreatedBy, CreatedAt: d.CreatedAt.UTC().Format(time.RFC3339),
			ExpiresAt: d.ExpiresAt.UTC().Format(time.RFC3339)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"learned_domains": out})
	return nil
}

func (g *Gate) handleLearnedDelete(w http.ResponseWriter, r *http.Request) error {
	return g.revokeByID(w, r, g.st.DeleteLearned, "No learned domain with that id.", "learned_id",
		"learned domain removed", "removed")
}

// learnedHosts returns the learned egress entries of (principal, action)
// valid now; a store failure is 503 (fail closed: no entry is assumed).
// Only http actions reach hosts, so only they can have learned ones: other
// executors skip the store round trip.
func (g *Gate) learnedHosts(ctx context.Context, principal string, act *actions.Action) ([]string, error) {
	if act.ExecutorKind != actions.KindHTTP {
		return nil, nil
	}
	sctx, cancel := g.storeCtx(ctx)
	defer cancel()
	list, err := g.st.LearnedFor(sctx, principal, act.ID, g.clk.Now())
	if err != nil {
		return nil, errStoreUnavailable(err)
	}
	out := make([]string, 0, len(list))
	for _, d := range list {
		out = append(out, d.Host)
	}
	return out, nil
}

// learnDomains stores the unresolved hosts of an approved plan as learned
// for (principal, action).
func (g *Gate) learnDomains(ctx context.Context, a *store.Approval, by string) {
	now := g.clk.Now()
	for _, h := range a.UnresolvedDomains {
		host := h
		if !strings.Contains(host, ":") || strings.HasSuffix(host, "]") {
			host += ":443"
		}
		sctx, cancel := g.storeCtx(ctx)
		d, err := g.st.PutLearned(sctx, &store.LearnedDomain{ID: newID(), Principal: a.Principal, ActionID: a.ActionID,
			Host: host, ApprovalID: a.ID, CreatedBy: by, CreatedAt: now, ExpiresAt: now.Add(g.cfg.LearnTTL)})
		cancel()
		if err != nil {
			g.log.Error().Err(err).Str(fApprovalID, a.ID).Msg("learned domain not stored")
			continue
		}
		g.log.Info().Str(fApprovalID, a.ID).Str("host", clean(d.Host)).Str(fPrincipal, a.Principal).Str(fAction, a.ActionID).Msg("domain learned")
	}
}

// standingFor returns the live standing approval of (principal, action)
// as the policy input's standing_approval, or nil.
func (g *Gate) standingFor(ctx context.Context, principal, actionID string) (*store.Standing, json.RawMessage, error) {
	sctx, cancel := g.storeCtx(ctx)
	defer cancel()
	s, err := g.st.FindStanding(sctx, principal, actionID, g.clk.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil, nil
	case err != nil:
		return nil, nil, errStoreUnavailable(err)
	}
	return s, mustJSON(standingViewOf(s)), nil
}

func (g *Gate) handleWebhookDeliveries(w http.ResponseWriter, r *http.Request) error {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return errInvalidRequest("limit must be an integer from 1 to 1000.")
		}
		limit = n
	}
	list, err := g.hooks.Deliveries(limit)
	if err != nil {
		return newError(http.StatusServiceUnavailable, CodeStoreUnavailable, "The webhook outbox cannot be read.", err)
	}
	if list == nil {
		list = []webhooks.Delivery{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": list})
	return nil
}

type webhookTestRequest struct {
	URL string `json:"url"`
}

func (g *Gate) handleWebhookTest(w http.ResponseWriter, r *http.Request) error {
	var req webhookTestRequest
	if err := g.readJSON(w, r, &req); err != nil {
		return err
	}
	d, err := g.hooks.Test(r.Context(), req.URL)
	switch {
	case errors.Is(err, webhooks.ErrUnknownEndpoint):
		return newError(http.StatusNotFound, CodeNotFound, "No webhook endpoint with that url is configured.", err)
	case err != nil:
		return newError(http.StatusServiceUnavailable, CodeStoreUnavailable, "The webhook outbox cannot be written.", err)
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

type rotateRequest struct {
	Lease    *bool `json:"lease"`
	Receipts *bool `json:"receipts"`
}

// handleKeysRotate is POST /v1/admin/keys/rotate: new lease and/or receipt
// signing keys (default both); old public keys keep verifying.
func (g *Gate) handleKeysRotate(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, g.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	if err := requireJSON(r, body); err != nil {
		return err
	}
	var req rotateRequest
	if len(body) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return err
		}
	}
	doLease := req.Lease == nil || *req.Lease
	doReceipts := req.Receipts == nil || *req.Receipts
	out := map[string]any{}
	if doLease {
		if err := g.keys.Rotate(); err != nil {
			return newError(http.StatusInternalServerError, CodeInternal, "The lease signing key could not be rotated.", err)
		}
		out["lease_rotated"] = true
	}
	if doReceipts {
		if err := g.led.Rotate(); err != nil {
			return newError(http.StatusServiceUnavailable, CodeLedgerUnavailable, "The receipt signing key could not be rotated.", err)
		}
		out["receipt_key_id"] = g.led.KeyID()
		g.ShareReceiptKeys(r.Context())
	}
	g.log.Info().Bool("lease", doLease).Bool("receipts", doReceipts).Str("by", g.operatorName(peerFrom(r.Context()))).Msg("signing keys rotated")
	writeJSON(w, http.StatusOK, out)
	return nil
}
