package gate

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/store"
)

// leaseRequest is the body of POST /v1/leases (PROTOCOL §3.1).
type leaseRequest struct {
	DPoPJWK    json.RawMessage `json:"dpop_jwk"`
	Scopes     []string        `json:"scopes"`
	Budgets    *lease.Budgets  `json:"budgets"`
	AgentID    *string         `json:"agent_id"`
	TTLSeconds *int64          `json:"ttl_seconds"`
}

// leaseResponse is the 200 body of lease issue and renewal.
type leaseResponse struct {
	LeaseJWT  string        `json:"lease_jwt"`
	SessionID string        `json:"session_id"`
	LeaseJTI  string        `json:"lease_jti"`
	ExpiresAt string        `json:"expires_at"`
	Principal string        `json:"principal"`
	Scopes    []string      `json:"scopes"`
	Budgets   lease.Budgets `json:"budgets"`
}

var scopeRE = regexp.MustCompile(`^[a-z][a-z0-9:_-]*$`)

// validScope reports whether s is tools:call, audit:read or namespace:name.
func validScope(s string) bool {
	if s == "tools:call" || s == "audit:read" {
		return true
	}
	return len(s) >= 4 && len(s) <= 64 && scopeRE.MatchString(s) &&
		bytes.ContainsRune([]byte(s), ':') && s[len(s)-1] != ':'
}

func (r *leaseRequest) validate() error {
	if len(r.DPoPJWK) == 0 || string(r.DPoPJWK) == "null" {
		return errInvalidRequest("dpop_jwk is required: the agent's P-256 public key as a JWK.")
	}
	if r.Scopes == nil {
		r.Scopes = []string{"tools:call"}
	}
	if len(r.Scopes) == 0 || len(r.Scopes) > 64 {
		return errInvalidRequest("scopes must list between 1 and 64 scopes.")
	}
	for _, s := range r.Scopes {
		if !validScope(s) {
			return errInvalidRequest("Each scope must be tools:call, audit:read or namespace:name (4–64 chars of a-z, 0-9, :, _, -).")
		}
	}
	if b := r.Budgets; b != nil {
		if b.MaxCalls != nil && *b.MaxCalls < 1 {
			return errInvalidRequest("budgets.max_calls must be an integer ≥ 1.")
		}
		if b.MaxCostCents != nil && *b.MaxCostCents < 0 {
			return errInvalidRequest("budgets.max_cost_usd_cents must be an integer ≥ 0.")
		}
	}
	if r.AgentID != nil && (len(*r.AgentID) == 0 || len(*r.AgentID) > 128) {
		return errInvalidRequest("agent_id must be 1–128 characters.")
	}
	if r.TTLSeconds != nil && *r.TTLSeconds < 1 {
		return errInvalidRequest("ttl_seconds must be a positive integer.")
	}
	return nil
}

// decodeStrict decodes a JSON object body into v; unknown members are
// ignored. Malformed JSON, invalid UTF-8, duplicate member names (at any
// depth) or a body that is not one object are 400.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if !utf8.Valid(body) {
		return errBadJSON("The request body is not valid UTF-8.", nil)
	}
	if err := checkDuplicates(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			if ute.Field == "" {
				return errInvalidRequest("The request body must be a JSON object.")
			}
			return errInvalidRequest("A member has the wrong type: " + ute.Field + ".")
		}
		return errBadJSON("The request body is not valid JSON.", err)
	}
	if dec.More() {
		return errBadJSON("The request body holds more than one JSON value.", nil)
	}
	return nil
}

// checkDuplicates refuses JSON with duplicate member names at any depth,
// so every reader of the body sees the same values.
func checkDuplicates(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]struct{}
		key    bool // the next string token in an object is a key
	}
	var stack []*frame
	for {
		// Checked before every token: brackets that only open reach here
		// through the continues below.
		if len(stack) > 512 {
			return errInvalidRequest("The request body is nested too deeply.")
		}
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return errBadJSON("The request body is not valid JSON.", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &frame{object: true, keys: map[string]struct{}{}, key: true})
				continue
			case '[':
				stack = append(stack, &frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
			}
		case string:
			if top != nil && top.object && top.key {
				if _, dup := top.keys[t]; dup {
					return errBadJSON("The request body repeats a member name.", nil)
				}
				top.keys[t] = struct{}{}
				top.key = false
				continue
			}
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].key = true
		}
	}
}

// principalFor picks the principal for a lease request (PROTOCOL §3.1).
func (g *Gate) principalFor(p Peer, agentID *string) (string, error) {
	if p.Listener == ListenerTCP {
		if g.cfg.TrustAgentID && agentID != nil && p.Loopback {
			return "agent:" + *agentID, nil
		}
		return "tcp:anonymous", nil
	}
	if !p.HasCreds {
		return "", newError(http.StatusForbidden, CodeForbidden, "The gate could not read the caller's credentials.", nil)
	}
	if g.cfg.TrustAgentID && agentID != nil {
		return "agent:" + *agentID, nil
	}
	if name, ok := g.cfg.Identities[uint32(p.UID)]; ok {
		return name, nil
	}
	return "uid:" + strconv.FormatInt(p.UID, 10), nil
}

// isOperator reports whether the peer is an operator (PROTOCOL §1).
func (g *Gate) isOperator(p Peer) bool {
	if !p.HasCreds || p.Listener == ListenerTCP {
		return false
	}
	_, ok := g.cfg.Operators[uint32(p.UID)]
	return ok
}

// grantScopes intersects requested scopes with what the principal may hold.
func (g *Gate) grantScopes(principal string, requested []string) []string {
	allowed := g.principalConfig(principal).AllowedScopes
	if allowed == nil {
		allowed = []string{"tools:call"}
	}
	var out []string
	for _, s := range requested {
		if (slices.Contains(allowed, s) || slices.Contains(allowed, "*")) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// capBudget applies a principal ceiling to a requested budget.
func capBudget(req, ceiling *int64) *int64 {
	switch {
	case ceiling == nil:
		return req
	case req == nil || *req > *ceiling:
		v := *ceiling
		return &v
	}
	return req
}

func (g *Gate) handleLeaseIssue(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, g.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	if err := requireJSON(r, body); err != nil {
		return err
	}
	p := peerFrom(r.Context())
	if g.isOperator(p) && !g.cfg.Dev && !g.cfg.AllowOperatorAgents {
		return newError(http.StatusForbidden, CodeForbidden, "Operators cannot take agent leases; run the agent as another user.", nil)
	}
	if ok, wait := g.leaseLimiter.allow("uid:" + strconv.FormatInt(p.UID, 10)); !ok {
		return errRateLimited("Too many lease requests; slow down.", wait)
	}
	var req leaseRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	jwk, err := lease.ParseAgentJWK(req.DPoPJWK)
	if err != nil {
		return errInvalidRequest("dpop_jwk must be a public P-256 key {kty:EC, crv:P-256, x, y}.")
	}
	principal, err := g.principalFor(p, req.AgentID)
	if err != nil {
		return err
	}
	scopes := g.grantScopes(principal, req.Scopes)
	if len(scopes) == 0 {
		e := newError(http.StatusForbidden, CodeScopeNotPermitted, "None of the requested scopes is permitted for this principal.", nil)
		e.Principal = principal
		return e
	}
	pc := g.principalConfig(principal)
	var budgets lease.Budgets
	if req.Budgets != nil {
		budgets = *req.Budgets
	}
	budgets.MaxCalls = capBudget(budgets.MaxCalls, pc.MaxCallsPerSession)
	budgets.MaxCostCents = capBudget(budgets.MaxCostCents, pc.MaxCostPerSession)

	now := g.clk.Now()
	var ttl time.Duration
	if req.TTLSeconds != nil {
		ttl = time.Duration(min(*req.TTLSeconds, 1<<31)) * time.Second
	}
	exp, err := g.auth.Expiry(now, ttl, now)
	if err != nil {
		return err
	}
	agentID := ""
	if req.AgentID != nil {
		agentID = *req.AgentID
	}
	sess := &store.Session{
		ID: newID(), Principal: principal, JKT: lease.Thumbprint(jwk), AgentID: agentID,
		Scopes: scopes, MaxCalls: budgets.MaxCalls, MaxCostCents: budgets.MaxCostCents,
		CreatedAt: now, MaxExpiresAt: now.Add(g.auth.Config().SessionLifetime), LeaseExpiresAt: exp,
	}
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	if _, err := g.st.CreateSession(ctx, sess, g.principalLimits(principal)); err != nil {
		if errors.Is(err, store.ErrSessionLimit) {
			return errRateLimited("This principal already has its maximum number of live sessions.", 30)
		}
		return errStoreUnavailable(err)
	}
	tok, claims, err := g.auth.IssueClaims(lease.Claims{
		Subject: principal, SessionID: sess.ID, AgentID: agentID, JKT: sess.JKT,
		Scopes: scopes, Budgets: budgets, IssuedAt: now, ExpiresAt: exp,
	})
	if err != nil {
		return err
	}
	g.log.Info().Str(fPrincipal, principal).Str(fSessionID, sess.ID).Str(fDecision, "lease_issued").Msg("lease issued")
	writeJSON(w, http.StatusOK, leaseResponseOf(tok, claims))
	return nil
}

func leaseResponseOf(tok string, c *lease.Claims) leaseResponse {
	return leaseResponse{
		LeaseJWT: tok, SessionID: c.SessionID, LeaseJTI: c.JTI,
		ExpiresAt: c.ExpiresAt.UTC().Format(time.RFC3339), Principal: c.Subject,
		Scopes: c.Scopes, Budgets: c.Budgets,
	}
}

func (g *Gate) handleLeaseRenew(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, g.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	c, err := g.authenticate(r, body)
	if err != nil {
		return err
	}
	now := g.clk.Now()
	ttl := c.claims.ExpiresAt.Sub(c.claims.IssuedAt)
	exp, err := g.auth.Expiry(now, ttl, c.session.CreatedAt)
	if err != nil {
		return newError(http.StatusUnauthorized, CodeLeaseExpired, "The session reached its maximum lifetime; take a new lease.", err)
	}
	scopes := g.grantScopes(c.session.Principal, c.session.Scopes)
	if len(scopes) == 0 {
		return newError(http.StatusForbidden, CodeScopeNotPermitted, "None of the session's scopes is permitted any more.", nil)
	}
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	sess, err := g.st.RenewSession(ctx, c.session.ID, scopes, exp, now)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrRevoked):
		return newError(http.StatusUnauthorized, CodeLeaseRevoked, "The lease's session was revoked.", err)
	case errors.Is(err, store.ErrNotFound):
		return newError(http.StatusUnauthorized, CodeInvalidLease, "The lease's session is unknown to this gate.", err)
	default:
		return errStoreUnavailable(err)
	}
	tok, claims, err := g.auth.IssueClaims(lease.Claims{
		Subject: sess.Principal, SessionID: sess.ID, AgentID: sess.AgentID, JKT: sess.JKT,
		Scopes: scopes, Budgets: lease.Budgets{MaxCalls: sess.MaxCalls, MaxCostCents: sess.MaxCostCents},
		IssuedAt: now, ExpiresAt: exp,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, leaseResponseOf(tok, claims))
	return nil
}
