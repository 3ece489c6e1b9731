package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/definitions"
	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// printTable prints rows (first row = header) or the raw JSON with --json.
func printTable(cmd *cobra.Command, raw []byte, rows [][]string) error {
	if jsonOut(cmd) {
		printJSON(cmd.OutOrStdout(), raw)
		return nil
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
	for _, r := range rows {
		for i := range r {
			r[i] = safe(r[i])
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// newApprovalsAllowCmd is `approvals allow`: a standing approval.
func newApprovalsAllowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "allow",
		Short: "Pre-approve (principal, action) for a duration and/or a number of uses",
		Long: `Allow creates a standing approval: calls of the action by the principal that
policy would hold for a human run at once, each use recorded in its receipt
(approval.kind "standing"), until the duration ends or the uses run out.
At least one of --for and --uses is required.`,
		Example: `  latchgate approvals allow --principal agent:deployer --action github_pr_merge --for 30m --uses 5
  latchgate approvals allow --principal agent:bot --action slack_post --for 8h --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, _ := cmd.Flags().GetString("principal")
			a, _ := cmd.Flags().GetString("action")
			dur, _ := cmd.Flags().GetDuration("for")
			uses, _ := cmd.Flags().GetInt64("uses")
			if p == "" || a == "" {
				return &exitError{code: 2, err: errors.New("--principal and --action are required")}
			}
			if dur <= 0 && uses <= 0 {
				return &exitError{code: 2, err: errors.New("give --for DURATION and/or --uses N")}
			}
			body := map[string]any{"principal": p, "action_id": a}
			if dur > 0 {
				body["expires_at"] = time.Now().Add(dur).UTC().Format(time.RFC3339)
			}
			if uses > 0 {
				body["uses"] = uses
			}
			raw, _, err := newAdminClient(cmd).do("POST", "/v1/standing-approvals", body)
			if err != nil {
				return err
			}
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
				return nil
			}
			var s struct{ ID, Principal, ExpiresAt string }
			_ = json.Unmarshal(raw, &s)
			fmt.Fprintf(cmd.OutOrStdout(), "standing approval %s created for %s on %s\n", s.ID, safe(p), safe(a))
			return nil
		},
	}
	cmd.Flags().String("principal", "", "principal to pre-approve, e.g. agent:deployer")
	cmd.Flags().String("action", "", "action id")
	cmd.Flags().Duration("for", 0, "how long it lasts, e.g. 30m")
	cmd.Flags().Int64("uses", 0, "how many calls it covers")
	return cmd
}

func newStandingCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "standing", Short: "List and revoke standing approvals",
		Example: "  latchgate approvals standing list\n  latchgate approvals standing revoke 0190c6e2-…"}
	list := &cobra.Command{
		Use: "list", Short: "List live standing approvals", Args: cobra.NoArgs,
		Example: "  latchgate approvals standing list --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/standing-approvals", nil)
			if err != nil {
				return err
			}
			var r struct {
				Standing []struct {
					ID        string `json:"id"`
					Principal string `json:"principal"`
					ActionID  string `json:"action_id"`
					ExpiresAt string `json:"expires_at"`
					Uses      *int64 `json:"uses"`
					Used      int64  `json:"used"`
					CreatedBy string `json:"created_by"`
				} `json:"standing_approvals"`
			}
			_ = json.Unmarshal(raw, &r)
			rows := [][]string{{"ID", "PRINCIPAL", "ACTION", "EXPIRES", "USED/USES", "BY"}}
			for _, s := range r.Standing {
				uses := "∞"
				if s.Uses != nil {
					uses = strconv.FormatInt(*s.Uses, 10)
				}
				exp := s.ExpiresAt
				if exp == "" {
					exp = "-"
				}
				rows = append(rows, []string{s.ID, s.Principal, s.ActionID, exp, fmt.Sprintf("%d/%s", s.Used, uses), s.CreatedBy})
			}
			return printTable(cmd, raw, rows)
		},
	}
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke a standing approval", Args: cobra.ExactArgs(1),
		Example: "  latchgate approvals standing revoke 0190c6e2-…",
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, _, err := newAdminClient(cmd).do("DELETE", "/v1/standing-approvals/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return err
			}
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "standing approval %s revoked\n", safe(args[0]))
			return nil
		},
	}
	cmd.AddCommand(list, revoke)
	return cmd
}

func newLearnedCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "learned", Short: "List and remove domains learned at approval",
		Example: "  latchgate approvals learned list\n  latchgate approvals learned remove 0190c6e2-…"}
	list := &cobra.Command{
		Use: "list", Short: "List learned egress domains", Args: cobra.NoArgs,
		Example: "  latchgate approvals learned list --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/learned-domains", nil)
			if err != nil {
				return err
			}
			var r struct {
				Learned []struct {
					ID        string `json:"id"`
					Principal string `json:"principal"`
					ActionID  string `json:"action_id"`
					Host      string `json:"host"`
					ExpiresAt string `json:"expires_at"`
					CreatedBy string `json:"created_by"`
				} `json:"learned_domains"`
			}
			_ = json.Unmarshal(raw, &r)
			rows := [][]string{{"ID", "PRINCIPAL", "ACTION", "HOST", "EXPIRES", "BY"}}
			for _, d := range r.Learned {
				rows = append(rows, []string{d.ID, d.Principal, d.ActionID, d.Host, d.ExpiresAt, d.CreatedBy})
			}
			return printTable(cmd, raw, rows)
		},
	}
	remove := &cobra.Command{
		Use: "remove ID", Short: "Remove a learned domain", Args: cobra.ExactArgs(1),
		Example: "  latchgate approvals learned remove 0190c6e2-…",
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, _, err := newAdminClient(cmd).do("DELETE", "/v1/learned-domains/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return err
			}
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "learned domain %s removed\n", safe(args[0]))
			return nil
		},
	}
	cmd.AddCommand(list, remove)
	return cmd
}

// sseEvent is one event read from /v1/events.
type sseEvent struct {
	ID   string
	Type string
	Data json.RawMessage
}

// follow reads /v1/events and calls fn for each event until ctx ends or
// fn returns an error. It reconnects with Last-Event-ID after a drop.
func (c *adminClient) follow(ctx context.Context, last string, fn func(sseEvent) error) error {
	for {
		err := c.followOnce(ctx, &last, fn)
		if ctx.Err() != nil {
			return nil
		}
		var ae *apiError
		if errors.As(err, &ae) || errors.Is(err, errStopWatch) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

var errStopWatch = errors.New("stop watching")

func (c *adminClient) followOnce(ctx context.Context, last *string, fn func(sseEvent) error) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://localhost/v1/events", nil)
	if err != nil {
		return err
	}
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		ae := &apiError{Status: resp.StatusCode}
		_ = json.Unmarshal(b, ae)
		return ae
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Type != "" {
				*last = ev.ID
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.Type = line[7:]
		case strings.HasPrefix(line, "data: "):
			var full struct {
				Data json.RawMessage `json:"data"`
			}
			_ = json.Unmarshal([]byte(line[6:]), &full)
			ev.Data = full.Data
		}
	}
	return sc.Err()
}

func newApprovalsWatchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Follow approval and receipt events as they happen",
		Long: `Watch follows the gate's event stream (GET /v1/events) and prints one line per
event. With --prompt (on a terminal) it shows the review of each new
approval and asks: [a]pprove, [d]eny or [s]kip. --from-start replays every
event still in the journal; --last-event-id N resumes after event N.
--count N exits after N events (for scripts).`,
		Example: `  latchgate approvals watch
  latchgate approvals watch --prompt
  latchgate approvals watch --json --count 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := newAdminClient(cmd)
			prompt, _ := cmd.Flags().GetBool("prompt")
			count, _ := cmd.Flags().GetInt("count")
			last, _ := cmd.Flags().GetString("last-event-id")
			if fs, _ := cmd.Flags().GetBool("from-start"); fs && last == "" {
				last = "0"
			}
			if prompt && !term.IsTerminal(int(os.Stdin.Fd())) {
				return &exitError{code: 2, err: errors.New("--prompt needs a terminal")}
			}
			in := bufio.NewReader(os.Stdin)
			seen := 0
			out := cmd.OutOrStdout()
			err := c.follow(cmd.Context(), last, func(ev sseEvent) error {
				var d map[string]any
				_ = json.Unmarshal(ev.Data, &d)
				str := func(k string) string { s, _ := d[k].(string); return safe(s) }
				if jsonOut(cmd) {
					b, _ := json.Marshal(map[string]any{"id": ev.ID, "type": ev.Type, "data": ev.Data})
					fmt.Fprintln(out, string(b))
				} else {
					fmt.Fprintf(out, "%s  %-19s approval=%s action=%s principal=%s receipt=%s reason=%s\n",
						ev.ID, ev.Type, str("approval_id"), str("action_id"), str("principal"), str("receipt_id"), str("reason"))
				}
				if prompt && ev.Type == "approval.requested" {
					id := str("approval_id")
					raw, _, err := c.do("GET", "/v1/approvals/"+url.PathEscape(id), nil)
					if err == nil {
						printReview(cmd.ErrOrStderr(), raw)
						fmt.Fprint(cmd.ErrOrStderr(), "[a]pprove, [d]eny, [s]kip? ")
						line, _ := in.ReadString('\n')
						switch strings.ToLower(strings.TrimSpace(line)) {
						case "a", "approve":
							r, _, _ := c.do("POST", "/v1/approvals/"+url.PathEscape(id)+"/approve", map[string]any{})
							printJSON(out, r)
						case "d", "deny":
							r, _, _ := c.do("POST", "/v1/approvals/"+url.PathEscape(id)+"/deny", map[string]any{"reason": "denied from approvals watch"})
							printJSON(out, r)
						}
					}
				}
				seen++
				if count > 0 && seen >= count {
					return errStopWatch
				}
				return nil
			})
			if errors.Is(err, errStopWatch) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().Bool("prompt", false, "prompt to approve or deny each new approval (terminal only)")
	cmd.Flags().Int("count", 0, "exit after this many events (0: follow forever)")
	cmd.Flags().String("last-event-id", "", "resume after this event id")
	cmd.Flags().Bool("from-start", false, "replay every event still in the journal")
	return cmd
}

// writeAudit prints audit records in the chosen format.
func writeAudit(w io.Writer, format string, raw []byte) error {
	var r struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("unexpected audit answer: %w", err)
	}
	cols := []string{"time", "decision", "principal", "action_id", "approval_id", "receipt_id", "decided_by", "reason", "deny_reasons", "trace_id"}
	cell := func(m map[string]any, k string) string {
		switch v := m[k].(type) {
		case nil:
			return ""
		case string:
			return v
		default:
			b, _ := json.Marshal(v)
			return string(b)
		}
	}
	switch format {
	case "json":
		printJSON(w, raw)
	case "ndjson":
		for _, rec := range r.Records {
			fmt.Fprintln(w, string(rec))
		}
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(cols)
		for _, rec := range r.Records {
			var m map[string]any
			_ = json.Unmarshal(rec, &m)
			row := make([]string, len(cols))
			for i, k := range cols {
				// Neutralise spreadsheet formulas in client-chosen strings.
				v := cell(m, k)
				if v != "" && strings.ContainsRune("=+-@", rune(v[0])) {
					v = "'" + v
				}
				row[i] = v
			}
			_ = cw.Write(row)
		}
		cw.Flush()
		return cw.Error()
	case "table", "":
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tDECISION\tPRINCIPAL\tACTION\tAPPROVAL\tRECEIPT\tREASON")
		for _, rec := range r.Records {
			var m map[string]any
			_ = json.Unmarshal(rec, &m)
			reason := cell(m, "reason")
			if dr := cell(m, "deny_reasons"); dr != "" {
				reason = dr
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", safe(cell(m, "time")), safe(cell(m, "decision")), safe(cell(m, "principal")),
				safe(cell(m, "action_id")), safe(cell(m, "approval_id")), safe(cell(m, "receipt_id")), safe(reason))
		}
		return tw.Flush()
	default:
		return &exitError{code: 2, err: fmt.Errorf("--format %q: want table, json, ndjson or csv", format)}
	}
	return nil
}

func newWebhooksCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "webhooks", Short: "Inspect and test webhook deliveries",
		Example: "  latchgate webhooks deliveries\n  latchgate webhooks test https://hooks.example.com/latchgate"}
	test := &cobra.Command{
		Use:   "test URL",
		Short: "Send a signed webhook.test event to a configured endpoint now",
		Long: `Test sends one webhook.test delivery to the configured endpoint URL and shows
the outcome. A failed test stays in the outbox and is retried like any other
delivery. Exits 1 if the receiver did not answer 2xx.`,
		Example: "  latchgate webhooks test https://hooks.example.com/latchgate",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, _, err := newAdminClient(cmd).do("POST", "/v1/webhooks/test", map[string]any{"url": args[0]})
			if err != nil {
				return err
			}
			var d struct {
				ID, State, LastError string
				LastStatus           int `json:"last_status"`
			}
			_ = json.Unmarshal(raw, &d)
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "delivery %s: %s (status %d) %s\n", d.ID, d.State, d.LastStatus, safe(d.LastError))
			}
			if d.State != "delivered" {
				return &exitError{code: 1, err: errors.New("the test delivery did not succeed")}
			}
			return nil
		},
	}
	deliveries := &cobra.Command{
		Use: "deliveries", Short: "List webhook deliveries (newest first)", Args: cobra.NoArgs,
		Example: "  latchgate webhooks deliveries --limit 20 --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			limit, _ := cmd.Flags().GetInt("limit")
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/webhooks/deliveries?limit="+strconv.Itoa(limit), nil)
			if err != nil {
				return err
			}
			var r struct {
				Deliveries []struct {
					ID         string `json:"id"`
					URL        string `json:"url"`
					EventID    int64  `json:"event_id"`
					EventType  string `json:"event_type"`
					State      string `json:"state"`
					Attempts   int    `json:"attempts"`
					LastStatus int    `json:"last_status"`
					LastError  string `json:"last_error"`
				} `json:"deliveries"`
			}
			_ = json.Unmarshal(raw, &r)
			rows := [][]string{{"ID", "EVENT", "TYPE", "STATE", "ATTEMPTS", "LAST", "URL"}}
			for _, d := range r.Deliveries {
				last := d.LastError
				if last == "" && d.LastStatus != 0 {
					last = strconv.Itoa(d.LastStatus)
				}
				rows = append(rows, []string{d.ID, strconv.FormatInt(d.EventID, 10), d.EventType, d.State, strconv.Itoa(d.Attempts), last, d.URL})
			}
			return printTable(cmd, raw, rows)
		},
	}
	deliveries.Flags().Int("limit", 100, "how many (1–1000)")
	cmd.AddCommand(test, deliveries)
	addAdminFlags(cmd)
	return cmd
}

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage signing keys",
		Example: "  latchgate keys rotate\n  latchgate keys rotate --lease --state-dir /var/lib/latchgate"}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate the lease and/or receipt signing keys",
		Long: `Rotate creates new signing keys; old public keys stay published so existing
leases and receipts keep verifying. By default both the lease key and the
receipt key rotate, through the running gate's admin socket. With
--state-dir it works offline on a stopped gate's state directory (the
running gates pick up a new lease key on reload).`,
		Example: `  latchgate keys rotate
  latchgate keys rotate --receipts
  latchgate keys rotate --lease --state-dir /var/lib/latchgate`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, _ := cmd.Flags().GetBool("lease")
			r, _ := cmd.Flags().GetBool("receipts")
			if !l && !r {
				l, r = true, true
			}
			dir, _ := cmd.Flags().GetString("state-dir")
			if dir == "" {
				raw, _, err := newAdminClient(cmd).do("POST", "/v1/admin/keys/rotate", map[string]any{"lease": l, "receipts": r})
				if err != nil {
					return err
				}
				if jsonOut(cmd) {
					printJSON(cmd.OutOrStdout(), raw)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "rotated: lease=%v receipts=%v\n", l, r)
				}
				return nil
			}
			keysDir, _ := cmd.Flags().GetString("keys-dir")
			if keysDir == "" {
				keysDir = filepath.Join(dir, "keys")
			}
			out := map[string]any{}
			if l {
				k, err := lease.LoadKeys(keysDir, clock.Real{})
				if err != nil {
					return err
				}
				if err := k.Rotate(); err != nil {
					return err
				}
				out["lease_rotated"] = true
			}
			if r {
				kid, err := receipts.RotateDir(filepath.Join(dir, "ledger"))
				if err != nil {
					return fmt.Errorf("rotate the receipt key (is the gate stopped?): %w", err)
				}
				out["receipt_key_id"] = kid
			}
			b, _ := json.Marshal(out)
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), b)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "rotated offline: lease=%v receipts=%v\n", l, r)
			}
			return nil
		},
	}
	rotate.Flags().Bool("lease", false, "rotate the lease signing key")
	rotate.Flags().Bool("receipts", false, "rotate the receipt signing key")
	rotate.Flags().String("state-dir", "", "rotate offline in this (stopped) gate's state directory")
	rotate.Flags().String("keys-dir", "", "lease keys directory for --state-dir (default <state-dir>/keys)")
	cmd.AddCommand(rotate)
	addAdminFlags(cmd)
	return cmd
}

func newPolicyCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Compile a policy directory and run its tests without a gate",
		Long: `Check compiles the policy (as the gate would at start or reload) and runs its
*_test.rego tests. Exits 1 if it does not compile or a test fails; use it
before "latchgate policy reload".

It also says whether the gate will cache this policy's decisions. It does
when the policy reads input only through constant paths
(input.action.id, input.lease.scopes[_]) and calls no built-in that reads
the clock, randomness or the network; the decision is then a function of
those paths, and the cache is exact.`,
		Example: "  latchgate policy check --policy-dir /etc/latchgate/policy",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("policy-dir")
			e, err := policy.New(policy.Config{FS: definitions.Policies, Dir: dir}, policy.Deps{Logger: zerolog.Nop()})
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("policy does not compile: %w", err)}
			}
			res, err := e.Test(cmd.Context())
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			fail := 0
			for _, r := range res {
				if !r.Pass {
					fail++
					fmt.Fprintf(cmd.OutOrStdout(), "FAIL %s.%s: %s\n", r.Package, r.Name, r.Detail)
				}
			}
			if fail > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d policy test(s) failed", fail)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy %s OK: compiles, %d tests pass\n", e.Version(), len(res))
			if on, paths, why := e.DecisionCache(); on {
				fmt.Fprintf(cmd.OutOrStdout(), "decisions cached by %s\n", strings.Join(paths, ", "))
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "decisions not cached: %s\n", why)
			}
			return nil
		},
	}
	cmd.Flags().String("policy-dir", "", "policy directory (default: the embedded policy)")
	return cmd
}
