package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"time"
	"unicode/utf8"
)

// Result is a 200 answer of execute (PROTOCOL.md §3.4): the action ran.
type Result struct {
	Decision            string          `json:"decision"` // "executed"
	TraceID             string          `json:"trace_id"`
	ActionID            string          `json:"action_id"`
	GrantID             string          `json:"grant_id"`
	ReceiptID           string          `json:"receipt_id"`
	Output              json.RawMessage `json:"output"`
	VerificationOutcome string          `json:"verification_outcome"` // verified, verification_failed, unverifiable_declared
	Verification        struct {
		Outcome           string `json:"outcome"`
		IsFullySuccessful bool   `json:"is_fully_successful"`
	} `json:"verification"`
	Runtime struct {
		DurationMS int64 `json:"duration_ms"`
		StatusCode int   `json:"status_code,omitempty"`
	} `json:"runtime"`
}

// IsFullySuccessful reports the gate's verdict: the action succeeded and its
// declared verification passed (or there was nothing to verify).
func (r *Result) IsFullySuccessful() bool { return r.Verification.IsFullySuccessful }

// ExecOption configures one Execute call.
type ExecOption func(*execOptions)

type execOptions struct {
	idemKey   string
	noIdemKey bool
}

// WithIdempotencyKey sets the Idempotency-Key (1–128 chars) instead of the
// one the SDK generates for every Execute. Reuse a key only to repeat the
// same logical call: the gate returns the stored outcome.
func WithIdempotencyKey(key string) ExecOption {
	return func(o *execOptions) { o.idemKey = key }
}

// WithoutIdempotencyKey sends no Idempotency-Key. The call is then never
// retried automatically, since a retry could run the action twice.
func WithoutIdempotencyKey() ExecOption {
	return func(o *execOptions) { o.noIdemKey = true }
}

// Execute runs action with args (any JSON-encodable value; a json.RawMessage
// is sent as-is; nil sends {}). It returns the Result on 200, and a *Error
// otherwise: ErrApprovalRequired (with ApprovalID) on 202, ErrActionFailed
// (with ReceiptID) on 502, and the §4 kinds for the rest. Every call carries
// an Idempotency-Key the SDK generates, so ErrUnavailable and ErrTransport are
// retried without running the action twice; a 502 is never retried.
func (c *Client) Execute(ctx context.Context, action string, args any, opts ...ExecOption) (*Result, error) {
	var eo execOptions
	for _, o := range opts {
		o(&eo)
	}
	body, err := encodeArgs(args)
	if err != nil {
		return nil, &Error{Kind: ErrDenied, Code: "invalid_json", ActionID: action, Message: "arguments are not JSON-encodable", Err: err}
	}
	cl := call{method: http.MethodPost, path: "/v1/actions/" + url.PathEscape(action) + "/execute", body: body, auth: true}
	switch {
	case eo.noIdemKey:
	case eo.idemKey != "":
		if len(eo.idemKey) > 128 {
			return nil, &Error{Kind: ErrDenied, Code: "invalid_request", ActionID: action, Message: "idempotency key longer than 128 characters"}
		}
		cl.idemKey, cl.retry = eo.idemKey, true
	default:
		k, err := newIdempotencyKey()
		if err != nil {
			return nil, err
		}
		cl.idemKey, cl.retry = k, true
	}
	res, err := c.do(ctx, cl)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.ActionID == "" && e.Status != 0 {
			e.ActionID = action
		}
		return nil, err
	}
	if res.status == http.StatusAccepted {
		var p struct {
			ApprovalID  string `json:"approval_id"`
			TraceID     string `json:"trace_id"`
			RequestHash string `json:"request_hash"`
		}
		if err := decode(res.body, &p); err != nil {
			return nil, err
		}
		return nil, &Error{
			Kind: ErrApprovalRequired, Status: http.StatusAccepted, Code: "pending_approval",
			Message: "the action needs a human approval", ActionID: action,
			ApprovalID: p.ApprovalID, TraceID: p.TraceID,
		}
	}
	var r Result
	if err := decode(res.body, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// encodeArgs returns the request body for args.
func encodeArgs(args any) ([]byte, error) {
	switch a := args.(type) {
	case nil:
		return []byte("{}"), nil
	case json.RawMessage:
		if !json.Valid(a) {
			return nil, fmt.Errorf("invalid json.RawMessage")
		}
		return a, nil
	}
	// encoding/json replaces invalid UTF-8 with U+FFFD: the action would
	// run, and its receipt vouch for, text the caller never sent.
	if err := checkUTF8(reflect.ValueOf(args), 0); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(args); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// checkUTF8 returns an error for the first string in v (map keys and
// exported struct fields included, at any depth) that is not valid UTF-8.
// Byte slices are sent as base64 and need no check; values with their own
// MarshalJSON are left to it. depth stops a cyclic value, which the
// encoder then refuses.
func checkUTF8(v reflect.Value, depth int) error {
	if depth > 1000 || !v.IsValid() {
		return nil
	}
	if v.Type().Implements(marshalerType) {
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return fmt.Errorf("string %.40q is not valid UTF-8", v.String())
		}
	case reflect.Interface, reflect.Pointer:
		return checkUTF8(v.Elem(), depth+1)
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if err := checkUTF8(it.Key(), depth+1); err != nil {
				return err
			}
			if err := checkUTF8(it.Value(), depth+1); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return nil
		}
		for i := range v.Len() {
			if err := checkUTF8(v.Index(i), depth+1); err != nil {
				return err
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				if err := checkUTF8(v.Field(i), depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

var marshalerType = reflect.TypeFor[json.Marshaler]()

// ---------------------------------------------------------------- approvals

// Approval states (PROTOCOL.md §3.5).
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalDenied   = "denied"
	ApprovalExpired  = "expired"
	ApprovalFailed   = "failed"
)

// ApprovalStatus is the answer of GET /v1/approvals/{id}/poll.
type ApprovalStatus struct {
	Status            string          `json:"status"`
	RetryAfterSeconds int             `json:"retry_after_seconds,omitempty"` // pending
	ExpiresAt         string          `json:"expires_at,omitempty"`          // pending
	ReceiptID         string          `json:"receipt_id,omitempty"`          // approved; failed after dispatch
	Output            json.RawMessage `json:"output,omitempty"`              // approved
	Reason            string          `json:"reason,omitempty"`              // denied, failed
}

// Done reports whether the approval reached a final state.
func (s *ApprovalStatus) Done() bool { return s.Status != ApprovalPending }

// GetApprovalStatus polls one approval of this session.
func (c *Client) GetApprovalStatus(ctx context.Context, approvalID string) (*ApprovalStatus, error) {
	var s ApprovalStatus
	if err := c.getJSON(ctx, "/v1/approvals/"+url.PathEscape(approvalID)+"/poll", true, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// WaitForApproval polls until the approval is no longer pending, sleeping
// retry_after_seconds between polls (2s if the gate gives none, at most 60s).
// Bound it with a context deadline. It returns the final status (approved,
// denied, expired or failed); a denial is a status, not an error. When ctx
// ends first it returns the last status seen and an error wrapping ctx.Err().
func (c *Client) WaitForApproval(ctx context.Context, approvalID string) (*ApprovalStatus, error) {
	for {
		s, err := c.GetApprovalStatus(ctx, approvalID)
		if err != nil {
			return nil, err
		}
		if s.Done() {
			return s, nil
		}
		d := time.Duration(s.RetryAfterSeconds) * time.Second
		if d <= 0 {
			d = defaultPollInterval
		}
		d = min(d, maxPollInterval)
		if err := c.opts.sleep(ctx, d); err != nil {
			return s, fmt.Errorf("latchgate: waiting for approval %s: %w", approvalID, err)
		}
	}
}

// ---------------------------------------------------------------- discovery

// ActionSummary is one entry of GET /v1/actions.
type ActionSummary struct {
	ActionID    string `json:"action_id"`
	Version     string `json:"version"`
	Description string `json:"description"`
	RiskLevel   string `json:"risk_level"`
}

// ListActions returns the gate's actions, sorted by id.
func (c *Client) ListActions(ctx context.Context) ([]ActionSummary, error) {
	var out struct {
		Actions []ActionSummary `json:"actions"`
	}
	if err := c.getJSON(ctx, "/v1/actions", false, &out); err != nil {
		return nil, err
	}
	return out.Actions, nil
}

// Egress profiles.
const (
	EgressNone           = "none"
	EgressProxyAllowlist = "proxy_allowlist"
)

// ActionEgress is the egress profile of one action.
type ActionEgress struct {
	ActionID       string
	Profile        string   // EgressNone or EgressProxyAllowlist
	AllowedDomains []string // for EgressProxyAllowlist
}

// HasEgress reports whether the action may contact any external host.
func (e *ActionEgress) HasEgress() bool { return e.Profile != EgressNone }

// GetActionEgress returns the egress profile of an action (from
// GET /v1/actions/{id}).
func (c *Client) GetActionEgress(ctx context.Context, actionID string) (*ActionEgress, error) {
	var d struct {
		ActionID string          `json:"action_id"`
		Egress   json.RawMessage `json:"egress"`
	}
	if err := c.getJSON(ctx, "/v1/actions/"+url.PathEscape(actionID), false, &d); err != nil {
		return nil, err
	}
	e := &ActionEgress{ActionID: d.ActionID}
	var s string
	if err := json.Unmarshal(d.Egress, &s); err == nil {
		if s != EgressNone {
			return nil, &Error{Kind: ErrServer, Message: fmt.Sprintf("unknown egress profile %q", s)}
		}
		e.Profile = EgressNone
		return e, nil
	}
	var p struct {
		ProxyAllowlist *struct {
			AllowedDomains []string `json:"allowed_domains"`
		} `json:"proxy_allowlist"`
	}
	if err := json.Unmarshal(d.Egress, &p); err != nil || p.ProxyAllowlist == nil {
		return nil, &Error{Kind: ErrServer, Message: "unknown egress profile", Err: err}
	}
	e.Profile = EgressProxyAllowlist
	e.AllowedDomains = p.ProxyAllowlist.AllowedDomains
	return e, nil
}
