package gate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Error codes of PROTOCOL.md §4. They are part of the wire contract.
const (
	CodeBadRequest            = "bad_request"
	CodeInvalidRequest        = "invalid_request"
	CodeInvalidJSON           = "invalid_json"
	CodeMissingAuthHeader     = "missing_auth_header"
	CodeInvalidLease          = "invalid_lease"
	CodeLeaseExpired          = "lease_expired"
	CodeLeaseRevoked          = "lease_revoked"
	CodeInvalidDPoP           = "invalid_dpop"
	CodeReplayDetected        = "replay_detected"
	CodePolicyDenied          = "policy_denied"
	CodeBudgetExhausted       = "budget_exhausted"
	CodeScopeNotPermitted     = "scope_not_permitted"
	CodeEgressTargetForbidden = "egress_target_forbidden"
	CodeForbidden             = "forbidden"
	CodeActionNotFound        = "action_not_found"
	CodeApprovalNotFound      = "approval_not_found"
	CodeReceiptNotFound       = "receipt_not_found"
	CodeNotFound              = "not_found"
	CodeMethodNotAllowed      = "method_not_allowed"
	CodeIdempotencyConflict   = "idempotency_conflict"
	CodeIdempotencyInProgress = "idempotency_in_progress"
	CodeApprovalConflict      = "approval_conflict"
	CodeGrantConsumed         = "grant_consumed"
	CodePayloadTooLarge       = "payload_too_large"
	CodeUnsupportedMediaType  = "unsupported_media_type"
	CodeSchemaViolation       = "schema_violation"
	CodeRateLimited           = "rate_limited"
	CodeActionFailed          = "action_execution_failed"
	CodeEgressDenied          = "egress_denied"
	CodeStoreUnavailable      = "store_unavailable"
	CodePolicyUnavailable     = "policy_unavailable"
	CodeLedgerUnavailable     = "ledger_unavailable"
	CodeDraining              = "draining"
	CodeNotReady              = "not_ready"
	CodeInternal              = "internal_error"
	CodeEvidenceFailed        = "evidence_persistence_failed"
)

// Error is the only error type a client ever sees. Status, Code and Message
// (plus the optional members) are rendered; Err is the internal cause and
// goes to the log only. Message never holds a secret, an argument value or
// OS error text.
type Error struct {
	Status  int
	Code    string
	Message string
	Err     error

	DenyReason  string
	ActionID    string
	Principal   string
	Remediation string
	RetryAfter  int // seconds; also sent as the Retry-After header
	ReceiptID   string
	TraceID     string
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s (%d): %s: %v", e.Code, e.Status, e.Message, e.Err)
	}
	return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// errorBody is the JSON shape of PROTOCOL §4.
type errorBody struct {
	Error       string `json:"error"`
	Message     string `json:"message"`
	DenyReason  string `json:"deny_reason,omitempty"`
	ActionID    string `json:"action_id,omitempty"`
	Principal   string `json:"principal,omitempty"`
	Remediation string `json:"remediation,omitempty"`
	RetryAfter  int    `json:"retry_after_seconds,omitempty"`
	ReceiptID   string `json:"receipt_id,omitempty"`
	TraceID     string `json:"trace_id,omitempty"`
}

func (e *Error) body() errorBody {
	return errorBody{
		Error: e.Code, Message: e.Message, DenyReason: e.DenyReason, ActionID: e.ActionID,
		Principal: e.Principal, Remediation: e.Remediation, RetryAfter: e.RetryAfter,
		ReceiptID: e.ReceiptID, TraceID: e.TraceID,
	}
}

// newError builds an Error.
func newError(status int, code, msg string, cause error) *Error {
	return &Error{Status: status, Code: code, Message: msg, Err: cause}
}

// asError turns any error into the *Error to render: an *Error in the chain
// is used as is; anything else is 500 internal_error.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return newError(http.StatusInternalServerError, CodeInternal, "The gate failed to handle the request; see its log.", err)
}

// writeError renders err as the JSON error body. It is the single place
// error responses are written.
func writeError(w http.ResponseWriter, err error) *Error {
	e := asError(err)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	b, _ := json.Marshal(e.body())
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(b, '\n'))
	return e
}

// writeJSON writes a 2xx JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, fmt.Errorf("encode response: %w", err))
		return
	}
	writeRawJSON(w, status, b)
}

func writeRawJSON(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	// An explicit length: a body past net/http's 2 KiB chunking buffer
	// (an execute answer with its receipt) would otherwise go out chunked.
	h["Content-Length"] = []string{strconv.Itoa(len(b) + 1)}
	w.WriteHeader(status)
	_, _ = w.Write(b)
	_, _ = w.Write([]byte{'\n'})
}

// Header values shared by every JSON answer (net/http only reads them).
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
)

// Common errors.
func errStoreUnavailable(cause error) *Error {
	e := newError(http.StatusServiceUnavailable, CodeStoreUnavailable, "The state store is unavailable; nothing was run. Retry later.", cause)
	e.RetryAfter = 1
	return e
}

func errPolicyUnavailable(cause error) *Error {
	e := newError(http.StatusServiceUnavailable, CodePolicyUnavailable, "The policy engine could not decide; nothing was run. Retry later.", cause)
	e.RetryAfter = 1
	return e
}

func errLedgerUnavailable(cause error) *Error {
	e := newError(http.StatusServiceUnavailable, CodeLedgerUnavailable, "The receipts ledger is unavailable; nothing was run. Retry later.", cause)
	e.RetryAfter = 1
	return e
}

func errBadJSON(msg string, cause error) *Error {
	return newError(http.StatusBadRequest, CodeInvalidJSON, msg, cause)
}

func errInvalidRequest(msg string) *Error {
	return newError(http.StatusBadRequest, CodeInvalidRequest, msg, nil)
}

func errRateLimited(msg string, retryAfter int) *Error {
	e := newError(http.StatusTooManyRequests, CodeRateLimited, msg, nil)
	e.RetryAfter = max(retryAfter, 1)
	return e
}
