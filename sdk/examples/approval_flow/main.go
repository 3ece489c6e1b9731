// Command approval_flow shows the human-in-the-loop pattern: execute an
// action the policy holds for approval, then wait for an operator to approve
// or deny it (`latchgate approvals approve <id>` on the admin socket).
//
//	go run ./sdk/examples/approval_flow -action http_post -args '{"url":"https://api.example.com/x"}'
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/latchgate/latchgate/sdk"
)

func main() {
	socket := flag.String("socket", "", "gate client socket (default: LATCHGATE_URL or the default sockets)")
	action := flag.String("action", "http_post", "action to execute")
	args := flag.String("args", `{"url":"https://api.example.com/reports","body":{"subject":"Weekly report"}}`, "arguments (JSON)")
	wait := flag.Duration("wait", 10*time.Minute, "how long to wait for a decision")
	flag.Parse()
	if err := run(*socket, *action, json.RawMessage(*args), *wait); err != nil {
		fmt.Fprintln(os.Stderr, "approval_flow:", err)
		os.Exit(1)
	}
}

func run(socket, action string, args json.RawMessage, wait time.Duration) error {
	opts := []sdk.Option{sdk.WithAgentID("approval-example")}
	if socket != "" {
		opts = append(opts, sdk.WithSocket(socket))
	}
	client, err := sdk.New(opts...)
	if err != nil {
		return err
	}
	defer client.Close()

	ctx := context.Background()
	res, err := client.Execute(ctx, action, args)
	if err == nil {
		fmt.Printf("ran without approval: receipt %s, output %s\n", res.ReceiptID, res.Output)
		return nil
	}
	var gerr *sdk.Error
	if !errors.Is(err, sdk.ErrApprovalRequired) || !errors.As(err, &gerr) {
		return err
	}
	fmt.Printf("approval required: %s (approve it with: latchgate approvals approve %s)\n", gerr.ApprovalID, gerr.ApprovalID)

	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	st, err := client.WaitForApproval(wctx, gerr.ApprovalID)
	if err != nil {
		return fmt.Errorf("no decision: %w", err)
	}
	switch st.Status {
	case sdk.ApprovalApproved:
		fmt.Printf("approved and run once by the gate: receipt %s, output %s\n", st.ReceiptID, st.Output)
		r, err := client.GetReceipt(ctx, st.ReceiptID)
		if err != nil {
			return err
		}
		if err := client.VerifyReceipt(ctx, r); err != nil {
			return err
		}
		if r.Approval != nil {
			fmt.Printf("receipt verified; approved by %s at %s\n", r.Approval.ApprovedBy, r.Approval.ApprovedAt)
		}
	case sdk.ApprovalDenied:
		fmt.Printf("denied: %s\n", st.Reason)
	default:
		fmt.Printf("%s: %s\n", st.Status, st.Reason)
	}
	return nil
}
