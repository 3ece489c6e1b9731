// Command latchgate is the LatchGate daemon and operator CLI.
//
// `latchgate serve` runs the gate; the other commands talk to a running gate
// over its admin socket or work offline on a state directory. This package
// alone reads flags, the environment, config files and signals.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a specific exit code (2: usage or confirmation needed).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "latchgate",
		Short: "LatchGate: a gate between AI agents and side effects",
		Long: `LatchGate runs actions for AI agents so agents never hold credentials or
network access. Agents take a short DPoP-bound lease and ask the gate over
its Unix socket; the gate checks policy and budgets, runs the action itself
and writes a signed, hash-chained receipt. Operators use this same binary to
approve held actions and inspect the ledger.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServeCmd(),
		newEgressProxyCmd(),
		newReceiptsCmd(),
		newPolicyCmd(),
		newStatusCmd(),
		newLeasesCmd(),
		newApprovalsCmd(),
		newActionsCmd(),
		newAuditCmd(),
		newWebhooksCmd(),
		newKeysCmd(),
		newDoctorCmd(),
		newBenchCmd(),
	)
	root.Example = `  latchgate serve --dev
  latchgate approvals list
  latchgate approvals approve 0190c6e2-… --yes
  latchgate completion bash > /etc/bash_completion.d/latchgate`
	return root
}

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "latchgate:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(1)
}
