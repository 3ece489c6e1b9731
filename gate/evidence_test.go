package gate_test

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/receipts"
)

// TestAllowDecisionRecorded: an allowed execute leaves a signed allow
// decision record with the request's trace id, written before the receipt,
// and the ledger verifies. (The record now shares the intent's group commit.)
func TestAllowDecisionRecorded(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	tests := []struct {
		name string
		args any
	}{
		{name: "ok/first", args: map[string]any{"message": "one"}},
		{name: "ok/second", args: map[string]any{"message": "two"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.Execute("echo", tt.args, nil)
			wantStatus(t, r, 200, "")
			trace, _ := r.JSON()["trace_id"].(string)
			raws, err := s.Ledger.QueryAudit(receipts.AuditQuery{Decision: receipts.DecisionAllow, Limit: 500})
			if err != nil {
				t.Fatal(err)
			}
			var found *receipts.AuditRecord
			for _, raw := range raws {
				var rec receipts.AuditRecord
				if err := json.Unmarshal(raw, &rec); err != nil {
					t.Fatal(err)
				}
				if rec.TraceID == trace {
					// Chained, not signed: the receipt below carries
					// the same facts under its signature.
					if got := receipts.VerifyAuditRecord(raw, s.Ledger.Keys()); got != receipts.StatusChained {
						t.Errorf("allow record %s: VerifyAuditRecord = %s, want %s", rec.ID, got, receipts.StatusChained)
					}
					found = &rec
				}
			}
			if found == nil {
				t.Fatalf("QueryAudit(allow) has no record with trace_id %q", trace)
			}
			if found.ActionID != "echo" || found.Principal == "" || found.RequestHash == "" {
				t.Errorf("allow record = %+v, want action echo, a principal and a request hash", found)
			}
			receiptID, _ := r.JSON()["receipt_id"].(string)
			rec, err := s.Ledger.GetReceipt(receiptID)
			if err != nil {
				t.Fatalf("GetReceipt(%q) = %v", receiptID, err)
			}
			raw, err := s.Ledger.Get(receiptID)
			if err != nil || receipts.VerifyReceipt(raw, s.Ledger.Keys()) != receipts.StatusValid {
				t.Errorf("receipt %s does not verify (%v)", receiptID, err)
			}
			if rec.Principal != found.Principal || rec.SessionID != found.SessionID || rec.ActionID != found.ActionID ||
				rec.RequestHash != found.RequestHash || rec.PolicyVersion != found.PolicyVersion || rec.TraceID != found.TraceID ||
				found.ReceiptID != receiptID {
				t.Errorf("signed receipt %+v does not carry the allow record's facts %+v", rec, found)
			}
			if res := s.Ledger.Verify(); !res.Intact {
				t.Errorf("Ledger.Verify = %+v, want intact", res)
			}
		})
	}
}

// TestAuditQueryLimit: GET /v1/audit answers at most receipts.MaxAuditLimit
// records and refuses a larger limit with 400 rather than silently
// returning fewer than asked for.
func TestAuditQueryLimit(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	for i := range 3 {
		wantStatus(t, a.Execute("echo", map[string]any{"message": strconv.Itoa(i)}, nil), 200, "")
	}
	tests := []struct {
		limit  string
		status int
		code   string
		n      int
	}{
		{limit: "", status: 200, n: 3},
		{limit: "2", status: 200, n: 2},
		{limit: strconv.Itoa(receipts.MaxAuditLimit), status: 200, n: 3},
		{limit: strconv.Itoa(receipts.MaxAuditLimit + 1), status: 400, code: "invalid_request"},
		{limit: "0", status: 400, code: "invalid_request"},
		{limit: "ten", status: 400, code: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run("limit="+tt.limit, func(t *testing.T) {
			path := "/v1/audit?decision=allow"
			if tt.limit != "" {
				path += "&limit=" + tt.limit
			}
			r := admin(t, s, "GET", path, "")
			wantStatus(t, r, tt.status, tt.code)
			if tt.status != 200 {
				return
			}
			var body struct{ Records []json.RawMessage }
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Fatalf("body %s: %v", r.Body, err)
			}
			if len(body.Records) != tt.n {
				t.Errorf("%d records, want %d", len(body.Records), tt.n)
			}
		})
	}
}
