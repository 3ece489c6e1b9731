// Command smoke_test is a CI pass/fail check against a running gate: lease,
// execute, receipt verification, budget exhaustion via max_calls, renewal.
// It prints one line per check and "N passed, N failed", and exits 1 if any
// check failed.
//
//	latchgate serve --dev --socket /tmp/lg/gate.sock ... &
//	go run ./sdk/examples/smoke_test -socket /tmp/lg/gate.sock
//
// `make test-smoke` sets LATCHGATE_SOCKET (the default for -socket) and, with
// LATCHGATE_SMOKE_APPROVALS=1, LATCHGATE_BIN and LATCHGATE_ADMIN_SOCKET so the
// approval check holds $LATCHGATE_SMOKE_HELD_ACTION (default echo_held, a
// high-risk echo in testdata/smoke-manifests) and approves it with
// `latchgate approvals approve --yes`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/latchgate/latchgate/sdk"
)

func main() {
	socket := flag.String("socket", os.Getenv("LATCHGATE_SOCKET"), "gate client socket (default: $LATCHGATE_SOCKET, LATCHGATE_URL or the default sockets)")
	flag.Parse()
	os.Exit(run(*socket))
}

type smoke struct{ passed, failed int }

func (s *smoke) check(name string, err error) bool {
	if err != nil {
		s.failed++
		fmt.Printf("FAIL %s: %v\n", name, err)
		return false
	}
	s.passed++
	fmt.Printf("ok   %s\n", name)
	return true
}

func run(socket string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := []sdk.Option{sdk.WithLogger(slog.New(slog.DiscardHandler)), sdk.WithAgentID("smoke-test")}
	if socket != "" {
		opts = append(opts, sdk.WithSocket(socket))
	}
	var s smoke
	client, err := sdk.New(opts...)
	if !s.check("client", err) {
		return report(s)
	}
	defer client.Close()

	// 1. Lease.
	const maxCalls = 2
	lease, err := client.Connect(ctx, sdk.ConnectOptions{MaxCalls: new(maxCalls), TTL: 120 * time.Second})
	if !s.check("lease", err) {
		return report(s)
	}

	// 2. Execute.
	var res *sdk.Result
	s.check("execute echo", func() error {
		var err error
		res, err = client.Execute(ctx, "echo", map[string]any{"message": "smoke"})
		switch {
		case err != nil:
			return err
		case res.ReceiptID == "":
			return errors.New("no receipt_id")
		case !res.IsFullySuccessful():
			return fmt.Errorf("not fully successful: %s", res.VerificationOutcome)
		}
		return nil
	}())

	// 3. Receipt verification (offline, against /v1/receipt-keys).
	s.check("receipt verification", func() error {
		if res == nil {
			return errors.New("no result to check")
		}
		r, err := client.GetReceipt(ctx, res.ReceiptID)
		if err != nil {
			return err
		}
		if err := client.VerifyReceipt(ctx, r); err != nil {
			return err
		}
		want, err := sdk.RequestHash(map[string]any{"message": "smoke"})
		if err != nil {
			return err
		}
		if r.RequestHash != want {
			return fmt.Errorf("request_hash %s, want %s", r.RequestHash, want)
		}
		return nil
	}())

	// 4. Renewal keeps the session (and its budget counters).
	s.check("renewal", func() error {
		info, err := client.Renew(ctx)
		if err != nil {
			return err
		}
		if info.SessionID != lease.SessionID || info.LeaseJTI == lease.LeaseJTI {
			return fmt.Errorf("renewed lease session %s jti %s, want session %s with a new jti", info.SessionID, info.LeaseJTI, lease.SessionID)
		}
		return nil
	}())

	// 5. Budget exhaustion: max_calls=2, one used; the second passes, the third is refused.
	s.check("budget exhaustion (max_calls)", func() error {
		if _, err := client.Execute(ctx, "echo", map[string]any{"n": 2}); err != nil {
			return fmt.Errorf("call 2 of %d: %w", maxCalls, err)
		}
		_, err := client.Execute(ctx, "echo", map[string]any{"n": 3})
		if !errors.Is(err, sdk.ErrBudgetExhausted) {
			return fmt.Errorf("call 3: error = %v, want ErrBudgetExhausted", err)
		}
		return nil
	}())

	// 6. Policy denial: a lease without tools:call may not run actions.
	s.check("policy denial", func() error {
		denied, err := sdk.New(append(opts, sdk.WithAgentID("smoke-reader"))...)
		if err != nil {
			return err
		}
		defer denied.Close()
		if _, err := denied.Connect(ctx, sdk.ConnectOptions{Scopes: []string{"audit:read"}}); err != nil {
			return err
		}
		_, err = denied.Execute(ctx, "echo", map[string]any{})
		var e *sdk.Error
		if !errors.Is(err, sdk.ErrDenied) || !errors.As(err, &e) || e.Code != "policy_denied" {
			return fmt.Errorf("error = %v, want ErrDenied with code policy_denied", err)
		}
		return nil
	}())

	// 7. Approval: a held action approved by an operator through the CLI.
	if os.Getenv("LATCHGATE_SMOKE_APPROVALS") != "1" {
		fmt.Println("skip approval (LATCHGATE_SMOKE_APPROVALS is not 1)")
		return report(s)
	}
	s.check("approval through the CLI", func() error {
		held, err := sdk.New(append(opts, sdk.WithAgentID("smoke-approver"))...)
		if err != nil {
			return err
		}
		defer held.Close()
		action := os.Getenv("LATCHGATE_SMOKE_HELD_ACTION")
		if action == "" {
			action = "echo_held" // testdata/smoke-manifests: a high-risk echo
		}
		_, err = held.Execute(ctx, action, map[string]any{"ship": "it"})
		var e *sdk.Error
		if !errors.Is(err, sdk.ErrApprovalRequired) || !errors.As(err, &e) || e.ApprovalID == "" {
			return fmt.Errorf("error = %v, want ErrApprovalRequired", err)
		}
		cmd := exec.CommandContext(ctx, os.Getenv("LATCHGATE_BIN"), "approvals", "approve", e.ApprovalID, "--yes",
			"--admin-socket", os.Getenv("LATCHGATE_ADMIN_SOCKET"))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("latchgate approvals approve: %v: %s", err, out)
		}
		st, err := held.WaitForApproval(ctx, e.ApprovalID)
		switch {
		case err != nil:
			return err
		case st.Status != "approved" || st.ReceiptID == "":
			return fmt.Errorf("approval ended %q (receipt %q), want approved with a receipt", st.Status, st.ReceiptID)
		}
		r, err := held.GetReceipt(ctx, st.ReceiptID)
		if err != nil {
			return err
		}
		return held.VerifyReceipt(ctx, r)
	}())
	return report(s)
}

func report(s smoke) int {
	fmt.Printf("%d passed, %d failed\n", s.passed, s.failed)
	if s.failed > 0 {
		return 1
	}
	return 0
}
