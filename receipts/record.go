package receipts

import (
	"encoding/json"
	"fmt"
	"time"
)

// TimeLayout is the one time format of receipts and audit records: RFC 3339,
// UTC, "Z" suffix, exactly millisecond precision (PROTOCOL §5).
const TimeLayout = "2006-01-02T15:04:05.000Z"

// FormatTime renders t in TimeLayout (converted to UTC, truncated to the
// millisecond).
func FormatTime(t time.Time) string {
	var b [len(TimeLayout)]byte
	return string(appendTime(b[:0], t))
}

// appendTime appends t in TimeLayout. It is t.UTC().AppendFormat(b,
// TimeLayout) written out: the layout walk was ≈ 1 µs of every execute's
// three times (TestTimeFormatMatchesLayout holds the two together).
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, TimeLayout)
	}
	hour, minute, sec := t.Clock()
	ms := t.Nanosecond() / int(time.Millisecond)
	b = append(b, byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-')
	b = append(b, byte('0'+int(month)/10), byte('0'+int(month)%10), '-', byte('0'+day/10), byte('0'+day%10), 'T')
	b = append(b, byte('0'+hour/10), byte('0'+hour%10), ':', byte('0'+minute/10), byte('0'+minute%10), ':')
	b = append(b, byte('0'+sec/10), byte('0'+sec%10), '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
	return b
}

// ParseTime parses a time written by FormatTime. Any other form (offsets,
// other precisions, missing Z) is refused so a time is hashed exactly as
// written once.
func ParseTime(s string) (time.Time, error) {
	if t, ok := parseTime(s); ok {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%w: time %q is not RFC 3339 UTC with milliseconds (e.g. 2026-01-02T15:04:05.000Z)", ErrInvalidRecord, s)
}

// parseTime reads the digits at TimeLayout's digit positions and accepts s
// only if formatting the result gives s back, which refuses out-of-range
// fields (month 13, February 30, hour 24) the way time.Parse does. It is
// what time.Parse followed by the round-trip check accepted
// (TestParseTimeMatchesTimeParse), without the layout walk.
func parseTime(s string) (time.Time, bool) {
	if len(s) != len(TimeLayout) {
		return time.Time{}, false
	}
	var n [7]int // year, month, day, hour, minute, second, millisecond
	field := 0
	for i := 0; i < len(s); i++ {
		c, l := s[i], TimeLayout[i]
		if l < '0' || l > '9' {
			if c != l {
				return time.Time{}, false
			}
			field++
			continue
		}
		if c < '0' || c > '9' {
			return time.Time{}, false
		}
		n[field] = n[field]*10 + int(c-'0')
	}
	t := time.Date(n[0], time.Month(n[1]), n[2], n[3], n[4], n[5], n[6]*int(time.Millisecond), time.UTC)
	var b [len(TimeLayout)]byte
	if string(appendTime(b[:0], t)) != s {
		return time.Time{}, false
	}
	return t, true
}

// Result kinds (normalized_result.kind).
const (
	KindSuccess         = "success"
	KindProviderFailure = "provider_failure"
	KindTimeout         = "timeout"
	KindEgressDenied    = "egress_denied"
	KindInterrupted     = "interrupted"
	KindInternalError   = "internal_error"
)

// Verification statuses (verification_outcome.status).
const (
	VerificationVerified     = "verified"
	VerificationFailed       = "verification_failed"
	VerificationUnverifiable = "unverifiable_declared"
)

// Approval kinds.
const (
	ApprovalOperator = "operator"
	ApprovalStanding = "standing"
)

// InterruptedSummary is the summary of receipts made from dangling intents.
const InterruptedSummary = "gate stopped before the outcome was recorded"

// Audit decisions. Policy decisions are allow/deny/pending; operator and
// workflow decisions on approvals are approved/denied/expired/failed.
const (
	DecisionAllow    = "allow"
	DecisionDeny     = "deny"
	DecisionPending  = "pending"
	DecisionApproved = "approved"
	DecisionDenied   = "denied"
	DecisionExpired  = "expired"
	DecisionFailed   = "failed"
)

// Peer is the Unix-socket peer of the request.
type Peer struct {
	UID int64 `json:"uid"`
	PID int64 `json:"pid"`
}

// NormalizedResult is the outcome class of an execution.
type NormalizedResult struct {
	Kind    string `json:"kind"`
	Summary string `json:"summary"`
}

// VerificationOutcome says whether the outcome was checked.
type VerificationOutcome struct {
	Status string `json:"status"`
}

// Egress lists the hosts the execution contacted. Hosts is never null.
type Egress struct {
	Hosts []string `json:"hosts"`
}

// Approval records the human or standing approval an execution ran under.
type Approval struct {
	Kind       string `json:"kind"`
	ApprovalID string `json:"approval_id"`
	ApprovedBy string `json:"approved_by"`
	ApprovedAt string `json:"approved_at"`
}

// Receipt is one dispatched execution (PROTOCOL §5). The gate fills every
// field except Seq, PrevHash, GateID, Hash, Signature and KeyID, which the
// ledger assigns. Field order is the stored order; Hash, Signature and KeyID
// must stay last (the ledger appends them to the hashed bytes).
type Receipt struct {
	ReceiptID            string              `json:"receipt_id"`
	Seq                  int64               `json:"seq"`
	PrevHash             *string             `json:"prev_hash"`
	GateID               string              `json:"gate_id"`
	TraceID              string              `json:"trace_id"`
	GrantID              string              `json:"grant_id"`
	ActionID             string              `json:"action_id"`
	ActionVersion        string              `json:"action_version"`
	ActionDigest         string              `json:"action_digest"`
	ProviderModuleDigest string              `json:"provider_module_digest"`
	Principal            string              `json:"principal"`
	SessionID            string              `json:"session_id"`
	AgentID              string              `json:"agent_id,omitempty"`
	Peer                 *Peer               `json:"peer,omitempty"`
	RequestHash          string              `json:"request_hash"`
	ResponseHash         *string             `json:"response_hash"`
	Output               json.RawMessage     `json:"output"`
	OutputTruncated      bool                `json:"output_truncated"`
	NormalizedResult     NormalizedResult    `json:"normalized_result"`
	VerificationOutcome  VerificationOutcome `json:"verification_outcome"`
	Egress               Egress              `json:"egress"`
	Approval             *Approval           `json:"approval"`
	PolicyVersion        string              `json:"policy_version"`
	StartedAt            string              `json:"started_at"`
	FinishedAt           string              `json:"finished_at"`
	Hash                 string              `json:"hash,omitempty"`
	Signature            string              `json:"signature,omitempty"`
	KeyID                string              `json:"key_id,omitempty"`

	// outputCanonical: Output is already in its JCS form (Ledger.Append
	// made it so to apply the cap), so the writer copies it as is.
	outputCanonical bool
}

// Intent is written durably before dispatch (pipeline step 7). It carries
// everything needed to write the "interrupted" receipt if the gate stops
// before the outcome is recorded.
type Intent struct {
	GrantID       string    `json:"grant_id"`
	TraceID       string    `json:"trace_id"`
	ReceiptID     string    `json:"receipt_id"`
	ActionID      string    `json:"action_id"`
	ActionVersion string    `json:"action_version"`
	ActionDigest  string    `json:"action_digest"`
	Principal     string    `json:"principal"`
	SessionID     string    `json:"session_id"`
	AgentID       string    `json:"agent_id,omitempty"`
	Peer          *Peer     `json:"peer,omitempty"`
	RequestHash   string    `json:"request_hash"`
	Approval      *Approval `json:"approval"`
	PolicyVersion string    `json:"policy_version"`
	Egress        Egress    `json:"egress"`
	StartedAt     string    `json:"started_at"`
	// Proof names the DPoP proof the request was authenticated with. The
	// ledger hands it back after a restart (RecentProofs) so the gate can
	// restore the proof's replay entry if a power loss took it from the
	// state store; see StoreState.
	Proof *ProofRef `json:"proof,omitempty"`
	// StoreState (not stored) says that the dispatch depends on state
	// store writes other than the replay entry of Proof: an idempotency
	// claim, a claimed operator approval, a standing approval's use. Then,
	// and whenever Proof is nil, the intent's group commit syncs the store
	// (Deps.Syncer) so those writes are durable before anything runs. A
	// plain execute carries its Proof and needs no store sync: that was
	// one fsync per group commit, ≈ 11 µs of gate CPU per execute at full
	// speed and ≈ 70 µs at 1,000/s.
	StoreState bool `json:"-"`
}

// ProofRef identifies a DPoP proof: the key thumbprint and jti that make
// its replay key, and when its replay entry may be dropped.
type ProofRef struct {
	JKT       string `json:"jkt"`
	JTI       string `json:"jti"`
	ExpiresAt string `json:"expires_at"`
}

// abortRecord follows an intent whose grant was refused after the intent
// was written; the intent then never becomes a receipt.
type abortRecord struct {
	GrantID string `json:"grant_id"`
	Reason  string `json:"reason"`
	At      string `json:"at"`
}

// AuditRecord is one decision in the audit chain. The ledger assigns Seq,
// PrevHash, Hash, Signature and KeyID, and ID and Time when empty.
type AuditRecord struct {
	ID            string   `json:"id"`
	Seq           int64    `json:"seq"`
	PrevHash      *string  `json:"prev_hash"`
	GateID        string   `json:"gate_id"`
	Time          string   `json:"time"`
	TraceID       string   `json:"trace_id,omitempty"`
	Principal     string   `json:"principal,omitempty"`
	SessionID     string   `json:"session_id,omitempty"`
	AgentID       string   `json:"agent_id,omitempty"`
	ActionID      string   `json:"action_id,omitempty"`
	RequestHash   string   `json:"request_hash,omitempty"`
	Decision      string   `json:"decision"`
	DenyReasons   []string `json:"deny_reasons,omitempty"`
	Reason        string   `json:"reason,omitempty"`
	ApprovalID    string   `json:"approval_id,omitempty"`
	ReceiptID     string   `json:"receipt_id,omitempty"`
	DecidedBy     string   `json:"decided_by,omitempty"`
	PolicyVersion string   `json:"policy_version,omitempty"`
	Hash          string   `json:"hash,omitempty"`
	Signature     string   `json:"signature,omitempty"`
	KeyID         string   `json:"key_id,omitempty"`
}

func invalid(field, want string) error {
	return fmt.Errorf("%w: %s %s", ErrInvalidRecord, field, want)
}

func requireFields(fields ...[2]string) error {
	for _, f := range fields {
		if f[1] == "" {
			return invalid(f[0], "is required")
		}
	}
	return nil
}

func validateApproval(a *Approval) error {
	if a == nil {
		return nil
	}
	if a.Kind != ApprovalOperator && a.Kind != ApprovalStanding {
		return invalid("approval.kind", `must be "operator" or "standing"`)
	}
	if a.ApprovalID == "" {
		return invalid("approval.approval_id", "is required")
	}
	if a.ApprovedAt != "" {
		if _, err := ParseTime(a.ApprovedAt); err != nil {
			return err
		}
	}
	return nil
}

// validate checks the gate-filled fields of a receipt.
func (r *Receipt) validate() error {
	if err := requireFields(
		[2]string{"receipt_id", r.ReceiptID}, [2]string{"trace_id", r.TraceID},
		[2]string{"grant_id", r.GrantID}, [2]string{"action_id", r.ActionID},
		[2]string{"action_digest", r.ActionDigest}, [2]string{"principal", r.Principal},
		[2]string{"session_id", r.SessionID}, [2]string{"request_hash", r.RequestHash},
	); err != nil {
		return err
	}
	switch r.NormalizedResult.Kind {
	case KindSuccess, KindProviderFailure, KindTimeout, KindEgressDenied, KindInterrupted, KindInternalError:
	default:
		return invalid("normalized_result.kind", fmt.Sprintf("%q is not a known kind", r.NormalizedResult.Kind))
	}
	switch r.VerificationOutcome.Status {
	case VerificationVerified, VerificationFailed, VerificationUnverifiable:
	default:
		return invalid("verification_outcome.status", fmt.Sprintf("%q is not a known status", r.VerificationOutcome.Status))
	}
	for _, s := range []string{r.StartedAt, r.FinishedAt} {
		if _, err := ParseTime(s); err != nil {
			return err
		}
	}
	if len(r.Output) > 0 && !json.Valid(r.Output) {
		return invalid("output", "is not valid JSON")
	}
	return validateApproval(r.Approval)
}

func (in *Intent) validate() error {
	if err := requireFields(
		[2]string{"grant_id", in.GrantID}, [2]string{"trace_id", in.TraceID},
		[2]string{"receipt_id", in.ReceiptID}, [2]string{"action_id", in.ActionID},
		[2]string{"action_digest", in.ActionDigest}, [2]string{"principal", in.Principal},
		[2]string{"session_id", in.SessionID}, [2]string{"request_hash", in.RequestHash},
	); err != nil {
		return err
	}
	if _, err := ParseTime(in.StartedAt); err != nil {
		return err
	}
	if p := in.Proof; p != nil {
		if err := requireFields([2]string{"proof.jkt", p.JKT}, [2]string{"proof.jti", p.JTI}); err != nil {
			return err
		}
		if _, err := ParseTime(p.ExpiresAt); err != nil {
			return err
		}
	}
	return validateApproval(in.Approval)
}

func (a *AuditRecord) validate() error {
	switch a.Decision {
	case DecisionAllow, DecisionDeny, DecisionPending, DecisionApproved, DecisionDenied, DecisionExpired, DecisionFailed:
	default:
		return invalid("decision", fmt.Sprintf("%q is not a known decision", a.Decision))
	}
	if a.Time != "" {
		if _, err := ParseTime(a.Time); err != nil {
			return err
		}
	}
	return nil
}

// interruptedReceipt builds the receipt for an intent with neither a
// receipt nor an abort.
func (in *Intent) interruptedReceipt(finishedAt string) *Receipt {
	hosts := in.Egress.Hosts
	if hosts == nil {
		hosts = []string{}
	}
	return &Receipt{
		ReceiptID:            in.ReceiptID,
		TraceID:              in.TraceID,
		GrantID:              in.GrantID,
		ActionID:             in.ActionID,
		ActionVersion:        in.ActionVersion,
		ActionDigest:         in.ActionDigest,
		ProviderModuleDigest: in.ActionDigest,
		Principal:            in.Principal,
		SessionID:            in.SessionID,
		AgentID:              in.AgentID,
		Peer:                 in.Peer,
		RequestHash:          in.RequestHash,
		NormalizedResult:     NormalizedResult{Kind: KindInterrupted, Summary: InterruptedSummary},
		VerificationOutcome:  VerificationOutcome{Status: VerificationFailed},
		Egress:               Egress{Hosts: hosts},
		Approval:             in.Approval,
		PolicyVersion:        in.PolicyVersion,
		StartedAt:            in.StartedAt,
		FinishedAt:           finishedAt,
	}
}
