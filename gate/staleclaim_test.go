package gate_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
)

// A claim left by a gate that died mid-approval is resolved from the
// ledger by the next claimant, never run again (PROTOCOL §6).
func TestStaleClaimResolvesFromLedger(t *testing.T) {
	clk := clock.NewFake(time.Now())
	s := gatetest.NewServer(t, gatetest.WithClock(clk), gatetest.WithManifestsDir(heldManifests))
	a := newAgent(t, s, nil)
	ctx := context.Background()
	ct := http.Header{"Content-Type": {"application/json"}}

	hold := func(n int) string {
		r := a.Execute("echo_held", map[string]any{"n": n}, nil)
		wantStatus(t, r, 202, "")
		id := r.JSON()["approval_id"].(string)
		// Another gate claims it and dies before finishing.
		if _, err := s.Store.ClaimApproval(ctx, id, store.Claim{GateID: "dead-gate", By: "uid:0", Deadline: clk.Now().Add(time.Minute)}, clk.Now()); err != nil {
			t.Fatalf("claim: %v", err)
		}
		return id
	}
	approve := func(id string) map[string]any {
		r := gatetest.Do(t, s.AdminClient(), "POST", "/v1/approvals/"+id+"/approve", []byte(`{}`), ct)
		wantStatus(t, r, 200, "")
		return r.JSON()
	}
	poll := func(id string) map[string]any {
		r := a.Call("GET", "/v1/approvals/"+id+"/poll", nil)
		wantStatus(t, r, 200, "")
		return r.JSON()
	}

	// While the dead gate's claim is within its deadline: 409.
	first := hold(1)
	r := gatetest.Do(t, s.AdminClient(), "POST", "/v1/approvals/"+first+"/approve", []byte(`{}`), ct)
	wantStatus(t, r, 409, "approval_conflict")

	// No receipt carries the approval: it failed as interrupted.
	clk.Advance(2 * time.Minute)
	before, _ := s.Ledger.Stats()
	if got := approve(first)["decision"]; got != "already_failed" {
		t.Fatalf("stale claim without receipt → %v, want already_failed", got)
	}
	if p := poll(first); p["status"] != "failed" || p["reason"] != "interrupted" {
		t.Fatalf("poll = %v, want failed/interrupted", p)
	}
	if after, _ := s.Ledger.Stats(); after != before {
		t.Fatalf("resolving a stale claim ran the action: receipts %d → %d", before, after)
	}

	// The dead gate wrote its receipt before dying: the approval is approved
	// with that receipt.
	second := hold(2)
	now := receipts.FormatTime(clk.Now())
	rc, err := s.Ledger.Append(ctx, approvedReceipt("01900000-0000-7000-8000-000000000001", a.Sess, second, now))
	if err != nil {
		t.Fatalf("append the dead gate's receipt: %v", err)
	}
	clk.Advance(2 * time.Minute)
	before, _ = s.Ledger.Stats()
	if got := approve(second)["decision"]; got != "already_approved" {
		t.Fatalf("stale claim with a success receipt → %v, want already_approved", got)
	}
	if p := poll(second); p["status"] != "approved" || p["receipt_id"] != rc.ReceiptID {
		t.Fatalf("poll = %v, want approved with receipt %s", p, rc.ReceiptID)
	}
	if after, _ := s.Ledger.Stats(); after != before {
		t.Fatalf("resolving a stale claim ran the action again: receipts %d → %d", before, after)
	}
}

// A stale claim is settled from the ledger only when the ledger answers:
// a receipt that cannot be read now is not proof that none exists, so the
// approval is not failed as interrupted (503, and it stays unresolved
// until the ledger reads again).
func TestStaleClaimWaitsForAReadableLedger(t *testing.T) {
	clk := clock.NewFake(time.Now())
	fs := &faultFS{}
	s := gatetest.NewServer(t, gatetest.WithClock(clk), gatetest.WithManifestsDir(heldManifests), gatetest.WithLedgerFS(fs))
	a := newAgent(t, s, nil)
	ctx := context.Background()
	r := a.Execute("echo_held", map[string]any{"n": 1}, nil)
	wantStatus(t, r, 202, "")
	id := r.JSON()["approval_id"].(string)
	if _, err := s.Store.ClaimApproval(ctx, id, store.Claim{GateID: "dead-gate", By: "uid:0", Deadline: clk.Now().Add(time.Minute)}, clk.Now()); err != nil {
		t.Fatalf("claim: %v", err)
	}
	// The dead gate wrote its receipt before dying.
	now := receipts.FormatTime(clk.Now())
	rc, err := s.Ledger.Append(ctx, approvedReceipt("01900000-0000-7000-8000-000000000002", a.Sess, id, now))
	if err != nil {
		t.Fatal(err)
	}
	ct := http.Header{"Content-Type": {"application/json"}}
	clk.Advance(2 * time.Minute)
	fs.readsFail.Store(true)
	r = gatetest.Do(t, s.AdminClient(), "POST", "/v1/approvals/"+id+"/approve", []byte(`{}`), ct)
	fs.readsFail.Store(false)
	wantStatus(t, r, 503, "ledger_unavailable")
	if v := admin(t, s, "GET", "/v1/approvals/"+id, "").JSON(); v["state"] != "pending" {
		t.Fatalf("approval after an unreadable ledger = %v, want still pending", v)
	}
	clk.Advance(2 * time.Minute) // the resolving claim's deadline passed too
	r = gatetest.Do(t, s.AdminClient(), "POST", "/v1/approvals/"+id+"/approve", []byte(`{}`), ct)
	if r.Status != 200 || r.JSON()["decision"] != "already_approved" {
		t.Fatalf("approve once the ledger reads = %d %s, want already_approved", r.Status, r.Body)
	}
	if p := a.Call("GET", "/v1/approvals/"+id+"/poll", nil).JSON(); p["status"] != "approved" || p["receipt_id"] != rc.ReceiptID {
		t.Fatalf("poll = %v, want approved with receipt %s", p, rc.ReceiptID)
	}
}

// approvedReceipt is the success receipt a gate writes for echo_held run
// under approval approvalID, at now (a receipts.FormatTime).
func approvedReceipt(receiptID, sessionID, approvalID, now string) *receipts.Receipt {
	return &receipts.Receipt{
		ReceiptID: receiptID, TraceID: "t", GrantID: "g", ActionID: "echo_held",
		ActionVersion: "1.0.0", ActionDigest: "sha256:00", Principal: "agent:tester", SessionID: sessionID,
		RequestHash: "sha256:00", Output: json.RawMessage(`{"n":2}`),
		NormalizedResult:    receipts.NormalizedResult{Kind: receipts.KindSuccess, Summary: "ok"},
		VerificationOutcome: receipts.VerificationOutcome{Status: receipts.VerificationUnverifiable},
		Egress:              receipts.Egress{Hosts: []string{}},
		Approval:            &receipts.Approval{Kind: receipts.ApprovalOperator, ApprovalID: approvalID, ApprovedBy: "uid:0", ApprovedAt: now},
		PolicyVersion:       "p", StartedAt: now, FinishedAt: now,
	}
}
