package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error kinds (PROTOCOL.md §4 "SDK exception mapping"). Every error the client
// returns for a gate answer or a transport failure is a *Error whose Kind is
// one of these; match them with errors.Is. errors.Is(err, ErrAuth) is also
// true for ErrLeaseExpired and ErrReplayDetected.
var (
	// ErrDenied: 400, 403, 404, 405, 409, 413, 415, 422 — do not retry as-is.
	ErrDenied = errors.New("latchgate: denied")
	// ErrApprovalRequired: 202 — a human must approve; Error.ApprovalID says which.
	ErrApprovalRequired = errors.New("latchgate: approval required")
	// ErrBudgetExhausted: 403 budget_exhausted — open a new session for a fresh budget.
	ErrBudgetExhausted = errors.New("latchgate: budget exhausted")
	// ErrAuth: any 401 — reconnect.
	ErrAuth = errors.New("latchgate: authentication failed")
	// ErrLeaseExpired: 401 lease_expired (also matches ErrAuth).
	ErrLeaseExpired = errors.New("latchgate: lease expired")
	// ErrReplayDetected: 401 replay_detected (also matches ErrAuth). Never retry the proof.
	ErrReplayDetected = errors.New("latchgate: replay detected")
	// ErrUnavailable: 429, 503 and 409 idempotency_in_progress — retryable; see Error.RetryAfter.
	ErrUnavailable = errors.New("latchgate: unavailable")
	// ErrTransport: the socket or connection failed, or a timeout — retryable.
	ErrTransport = errors.New("latchgate: transport error")
	// ErrNotConnected: an authenticated call before any lease, with no agent id for lazy connect.
	ErrNotConnected = errors.New("latchgate: not connected")
	// ErrActionFailed: 502 — the action was dispatched and failed; the side
	// effect may have happened. Never retried automatically. Error.ReceiptID
	// names the receipt.
	ErrActionFailed = errors.New("latchgate: action failed")
	// ErrServer: 500 and any other unexpected answer. Not retried.
	ErrServer = errors.New("latchgate: gate error")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("latchgate: client closed")
)

// Receipt verification failures, returned (wrapped) by Receipt.Verify.
var (
	ErrReceiptMalformed  = errors.New("latchgate: receipt malformed")
	ErrReceiptHash       = errors.New("latchgate: receipt hash mismatch")
	ErrReceiptUnknownKey = errors.New("latchgate: receipt key_id unknown")
	ErrReceiptSignature  = errors.New("latchgate: receipt signature invalid")
)

// ErrUnsafeSocket is returned (as the cause of an ErrTransport *Error) when a
// default socket's directory is a symlink, not a directory, writable by
// others, or owned by someone else, or the socket path is not a socket.
var ErrUnsafeSocket = errors.New("latchgate: unsafe default socket")

// Error is a failed call. Kind is one of the Err* kinds above; the other
// fields carry what the gate said (empty when it did not say it).
type Error struct {
	Kind       error         // ErrDenied, ErrAuth, …; never nil
	Status     int           // HTTP status; 0 for transport failures and client-side errors
	Code       string        // the gate's "error" code, e.g. "policy_denied"
	Message    string        // the gate's one-sentence message
	DenyReason string        // "deny_reason", when given
	ActionID   string        // the action, when known
	ApprovalID string        // for ErrApprovalRequired
	ReceiptID  string        // for ErrActionFailed (and when the gate names one)
	TraceID    string        // the gate's trace id, when given
	RetryAfter time.Duration // Retry-After / retry_after_seconds; 0 if not given
	Err        error         // underlying cause (transport failures); may be nil
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Status != 0 {
		fmt.Fprintf(&b, ": %d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.DenyReason != "" {
		b.WriteString(" (deny_reason " + e.DenyReason + ")")
	}
	if e.ApprovalID != "" {
		b.WriteString(" (approval_id " + e.ApprovalID + ")")
	}
	if e.ReceiptID != "" {
		b.WriteString(" (receipt_id " + e.ReceiptID + ")")
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Is reports whether target is e's kind; ErrAuth also matches
// ErrLeaseExpired and ErrReplayDetected.
func (e *Error) Is(target error) bool {
	if target == e.Kind {
		return true
	}
	return target == ErrAuth && (e.Kind == ErrLeaseExpired || e.Kind == ErrReplayDetected)
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// retryable reports whether an automatic retry may help.
func (e *Error) retryable() bool { return e.Kind == ErrUnavailable || e.Kind == ErrTransport }

// errorBody is PROTOCOL.md §4's error body.
type errorBody struct {
	Error             string   `json:"error"`
	Message           string   `json:"message"`
	DenyReason        string   `json:"deny_reason"`
	ActionID          string   `json:"action_id"`
	ApprovalID        string   `json:"approval_id"`
	ReceiptID         string   `json:"receipt_id"`
	TraceID           string   `json:"trace_id"`
	RetryAfterSeconds *float64 `json:"retry_after_seconds"`
}

// errorFromResponse maps a non-2xx answer to a *Error (PROTOCOL.md §4 table).
// now is used to read a Retry-After given as an HTTP date.
func errorFromResponse(status int, h http.Header, body []byte, now time.Time) *Error {
	var b errorBody
	_ = json.Unmarshal(body, &b) // a body that is not JSON leaves the fields empty
	e := &Error{
		Status: status, Code: b.Error, Message: b.Message, DenyReason: b.DenyReason,
		ActionID: b.ActionID, ApprovalID: b.ApprovalID, ReceiptID: b.ReceiptID, TraceID: b.TraceID,
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), now)
	if e.RetryAfter == 0 && b.RetryAfterSeconds != nil && *b.RetryAfterSeconds > 0 {
		e.RetryAfter = time.Duration(*b.RetryAfterSeconds * float64(time.Second))
	}
	switch {
	case status == http.StatusUnauthorized:
		switch b.Error {
		case "lease_expired":
			e.Kind = ErrLeaseExpired
		case "replay_detected":
			e.Kind = ErrReplayDetected
		default:
			e.Kind = ErrAuth
		}
	case status == http.StatusForbidden && b.Error == "budget_exhausted":
		e.Kind = ErrBudgetExhausted
	case status == http.StatusConflict && b.Error == "idempotency_in_progress":
		e.Kind = ErrUnavailable
	case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		e.Kind = ErrUnavailable
	case status == http.StatusBadGateway:
		e.Kind = ErrActionFailed
	case status == http.StatusBadRequest || status == http.StatusForbidden || status == http.StatusNotFound ||
		status == http.StatusMethodNotAllowed || status == http.StatusConflict || status == http.StatusRequestEntityTooLarge ||
		status == http.StatusUnsupportedMediaType || status == http.StatusUnprocessableEntity:
		e.Kind = ErrDenied
	default:
		e.Kind = ErrServer
	}
	return e
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// transportError wraps a connection failure.
func transportError(err error) *Error {
	return &Error{Kind: ErrTransport, Message: "the gate could not be reached", Err: err}
}
