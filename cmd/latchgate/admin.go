package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/latchgate/latchgate/definitions"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// adminClient talks HTTP to the admin socket.
type adminClient struct {
	socket string
	hc     *http.Client
}

func addAdminFlags(cmd *cobra.Command) {
	cmd.PersistentFlags().String("admin-socket", "", "admin socket path (LATCHGATE_ADMIN_SOCKET; default as `latchgate serve`)")
	cmd.PersistentFlags().Bool("json", false, "print JSON for machines")
}

func newAdminClient(cmd *cobra.Command) *adminClient {
	path, _ := cmd.Flags().GetString("admin-socket")
	if path == "" {
		path = os.Getenv("LATCHGATE_ADMIN_SOCKET")
	}
	if path == "" {
		path = defaultSocket("latchgate-admin", "gate-admin.sock", env)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &adminClient{socket: path, hc: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}
}

// apiError is a gate error answer.
type apiError struct {
	Status  int
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message) }

// do sends a request and returns the raw JSON answer of a 2xx.
func (c *adminClient) do(method, path string, body any) ([]byte, int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, rd)
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot reach the gate's admin socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(b, ae) != nil || ae.Code == "" {
			ae.Code, ae.Message = "http_error", strings.TrimSpace(string(b))
		}
		return b, resp.StatusCode, ae
	}
	return b, resp.StatusCode, nil
}

func jsonOut(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}

func printJSON(w io.Writer, raw []byte) {
	var buf bytes.Buffer
	if json.Indent(&buf, raw, "", "  ") != nil {
		_, _ = w.Write(raw)
		return
	}
	buf.WriteByte('\n')
	_, _ = buf.WriteTo(w)
}

// safe escapes control and bidi characters so a review cannot be spoofed.
func safe(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || (r >= 0x200b && r <= 0x200f) || r == 0xfeff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show the running gate's status",
		Example: "  latchgate status --admin-socket /run/latchgate-admin/gate-admin.sock",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/admin/status", nil)
			if err != nil {
				return err
			}
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
				return nil
			}
			var s map[string]any
			_ = json.Unmarshal(raw, &s)
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			keys := make([]string, 0, len(s))
			for k := range s {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				v, _ := json.Marshal(s[k])
				fmt.Fprintf(tw, "%s\t%s\n", k, strings.Trim(string(v), `"`))
			}
			return tw.Flush()
		},
	}
	addAdminFlags(cmd)
	return cmd
}

func newLeasesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "leases", Short: "Manage agent leases", Example: "  latchgate leases revoke --principal agent:crawler"}
	revoke := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke a session, every session of a principal, or everything",
		Example: `  latchgate leases revoke --session 0190c6e2-…
  latchgate leases revoke --principal agent:crawler
  latchgate leases revoke --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sid, _ := cmd.Flags().GetString("session")
			p, _ := cmd.Flags().GetString("principal")
			all, _ := cmd.Flags().GetBool("all")
			raw, _, err := newAdminClient(cmd).do("POST", "/v1/leases/revoke", map[string]any{"session_id": sid, "principal": p, "all": all})
			if err != nil {
				return err
			}
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
				return nil
			}
			var r struct{ Revoked int }
			_ = json.Unmarshal(raw, &r)
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %d live session(s)\n", r.Revoked)
			return nil
		},
	}
	revoke.Flags().String("session", "", "session id")
	revoke.Flags().String("principal", "", "principal")
	revoke.Flags().Bool("all", false, "every session")
	cmd.AddCommand(revoke)
	addAdminFlags(cmd)
	return cmd
}

func newActionsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "actions", Short: "List and show registered actions", Example: "  latchgate actions list\n  latchgate actions show echo"}
	list := &cobra.Command{
		Use: "list", Short: "List registered actions", Args: cobra.NoArgs,
		Example: "  latchgate actions list --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/actions", nil)
			if err != nil {
				return err
			}
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
				return nil
			}
			var r struct {
				Actions []struct{ ActionID, Version, Description, RiskLevel string }
			}
			_ = json.Unmarshal(raw, &r)
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "ACTION\tVERSION\tRISK\tDESCRIPTION")
			for _, a := range r.Actions {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.ActionID, a.Version, a.RiskLevel, safe(a.Description))
			}
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use: "show ACTION_ID", Short: "Show one action with its schema and egress", Args: cobra.ExactArgs(1),
		Example: "  latchgate actions show echo",
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/actions/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return err
			}
			printJSON(cmd.OutOrStdout(), raw)
			return nil
		},
	}
	cmd.AddCommand(list, show)
	addAdminFlags(cmd)
	return cmd
}

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Query the decision audit log (newest first)",
		Long: `Audit queries the decision records (allow, deny, pending, approved, denied,
expired, failed) of the gate's ledger, newest first. --format picks table
(default), json, ndjson or csv; --json equals --format json.`,
		Example: `  latchgate audit --principal agent:a --decision deny --limit 20
  latchgate audit --format csv > audit.csv
  latchgate audit --format ndjson --after 2026-01-01T00:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for _, k := range []string{"principal", "action-id", "decision", "after", "before", "limit"} {
				if v, _ := cmd.Flags().GetString(k); v != "" {
					q.Set(strings.ReplaceAll(k, "-", "_"), v)
				}
			}
			format, _ := cmd.Flags().GetString("format")
			if jsonOut(cmd) {
				format = "json"
			}
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/audit?"+q.Encode(), nil)
			if err != nil {
				return err
			}
			return writeAudit(cmd.OutOrStdout(), format, raw)
		},
	}
	cmd.Flags().String("format", "table", "table, json, ndjson or csv")
	for _, k := range []string{"principal", "action-id", "decision", "after", "before"} {
		cmd.Flags().String(k, "", "filter: "+k)
	}
	cmd.Flags().String("limit", "", "how many records, newest first (1–500; default 100)")
	addAdminFlags(cmd)
	return cmd
}

func newReceiptsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "receipts", Short: "Show and verify receipts", Example: "  latchgate receipts verify\n  latchgate receipts show 0190c6e2-…"}
	show := &cobra.Command{
		Use: "show RECEIPT_ID", Short: "Show a receipt with its signature status", Args: cobra.ExactArgs(1),
		Example: "  latchgate receipts show 0190c6e2-7a1b-7c3d-9e4f-a1b2c3d4e5f6",
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/receipts/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return err
			}
			printJSON(cmd.OutOrStdout(), raw)
			return nil
		},
	}
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the ledger: every hash, signature, link and the signed head",
		Long: `Verify the receipts and audit chains. With --state-dir it works offline on a
ledger copy; without, it asks the running gate over the admin socket. Exits 1
when the ledger is not intact.

Offline it trusts the receipt public keys stored in the copy unless --keys
names a key set kept elsewhere (the gate's GET /v1/receipt-keys, saved when
the gate was trusted): whoever can rewrite a copy can also replace its keys
and re-sign every record. It prints the key ids it trusted either way.`,
		Example: `  latchgate receipts verify --state-dir /var/lib/latchgate
  latchgate receipts verify --state-dir ./ledger-copy --keys receipt-keys.json
  latchgate receipts verify --admin-socket /run/latchgate-admin/gate-admin.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("state-dir")
			keysFile, _ := cmd.Flags().GetString("keys")
			if keysFile != "" && dir == "" {
				return errors.New("--keys needs --state-dir (the running gate verifies with its own keys)")
			}
			var res receipts.VerifyResult
			var kids []string
			if dir != "" {
				ldir := filepath.Join(dir, "ledger")
				var keys map[string]ed25519.PublicKey
				var err error
				if keysFile != "" {
					b, rerr := os.ReadFile(keysFile)
					if rerr != nil {
						return rerr
					}
					keys, err = receipts.ParseKeySet(b)
				} else {
					keys, err = receipts.PublicKeysDir(ldir)
				}
				if err != nil {
					return err
				}
				kids = slices.Sorted(maps.Keys(keys))
				if res, err = receipts.VerifyDirWithKeys(ldir, keys); err != nil {
					return err
				}
			} else {
				raw, _, err := newAdminClient(cmd).do("GET", "/v1/audit/verify", nil)
				if err != nil {
					return err
				}
				if err := json.Unmarshal(raw, &res); err != nil {
					return err
				}
			}
			raw, _ := json.Marshal(res)
			if kids != nil {
				raw, _ = json.Marshal(struct {
					receipts.VerifyResult
					KeyIDs []string `json:"key_ids"`
				}{res, kids})
			}
			switch {
			case jsonOut(cmd):
				printJSON(cmd.OutOrStdout(), raw)
			case res.Intact:
				fmt.Fprintf(cmd.OutOrStdout(), "ledger intact: %d receipts, %d audit records, head seq %d\n", res.Receipts, res.AuditRecords, res.Head.Seq)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "LEDGER NOT INTACT: %s\n", raw)
			}
			if kids != nil && !jsonOut(cmd) {
				from := "stored in the copy; pass --keys to trust a key set kept elsewhere"
				if keysFile != "" {
					from = "from " + keysFile
				}
				fmt.Fprintf(cmd.OutOrStdout(), "trusted receipt keys (%s): %s\n", from, strings.Join(kids, ", "))
			}
			if !res.Intact {
				return &exitError{code: 1, err: errors.New("ledger verification failed")}
			}
			return nil
		},
	}
	verify.Flags().String("state-dir", "", "verify the ledger under this state directory offline")
	verify.Flags().String("keys", "", "with --state-dir: trust this receipt key set (JWK set, as GET /v1/receipt-keys serves it) instead of the copy's")
	cmd.AddCommand(show, verify)
	addAdminFlags(cmd)
	return cmd
}

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Test, check and reload the policy", Example: "  latchgate policy check --policy-dir ./policy\n  latchgate policy reload"}
	test := &cobra.Command{
		Use:   "test",
		Short: "Run the policy's *_test.rego tests",
		Example: `  latchgate policy test                      # the embedded default policy
  latchgate policy test --policy-dir ./policy`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("policy-dir")
			// Compile only: New would stop at the first failing test, and
			// this command reports every test.
			e, err := policy.New(policy.Config{FS: definitions.Policies, Dir: dir, SkipTests: true}, policy.Deps{Logger: zerolog.Nop()})
			if err != nil {
				return err
			}
			res, err := e.Test(cmd.Context())
			if err != nil {
				return err
			}
			pass, fail := 0, 0
			for _, r := range res {
				if r.Pass {
					pass++
					fmt.Fprintf(cmd.OutOrStdout(), "PASS %s.%s\n", r.Package, r.Name)
				} else {
					fail++
					fmt.Fprintf(cmd.OutOrStdout(), "FAIL %s.%s: %s\n", r.Package, r.Name, r.Detail)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d passed, %d failed\n", pass, fail)
			if fail > 0 {
				return &exitError{code: 1, err: errors.New("policy tests failed")}
			}
			return nil
		},
	}
	test.Flags().String("policy-dir", "", "policy directory (default: the embedded policy)")
	reload := &cobra.Command{
		Use: "reload", Short: "Ask the running gate to reload policy and manifests", Args: cobra.NoArgs,
		Example: "  latchgate policy reload",
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, _, err := newAdminClient(cmd).do("POST", "/v1/admin/reload", map[string]any{})
			if err != nil {
				return err
			}
			printJSON(cmd.OutOrStdout(), raw)
			return nil
		},
	}
	cmd.AddCommand(test, newPolicyCheckCmd(), reload)
	addAdminFlags(cmd)
	return cmd
}

func newApprovalsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "approvals", Short: "Review, approve and deny held actions; standing approvals; learned domains",
		Example: "  latchgate approvals list\n  latchgate approvals watch --prompt\n  latchgate approvals allow --principal agent:a --action slack_post --for 30m --uses 5"}
	list := &cobra.Command{
		Use: "list", Short: "List approvals (default: pending)", Args: cobra.NoArgs,
		Example: "  latchgate approvals list --status all --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _ := cmd.Flags().GetString("status")
			raw, _, err := newAdminClient(cmd).do("GET", "/v1/approvals?status="+url.QueryEscape(st), nil)
			if err != nil {
				return err
			}
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
				return nil
			}
			var r struct {
				Approvals []struct {
					ApprovalID string `json:"approval_id"`
					State      string `json:"state"`
					ActionID   string `json:"action_id"`
					RiskLevel  string `json:"risk_level"`
					Principal  string `json:"principal"`
					ExpiresAt  string `json:"expires_at"`
				}
			}
			_ = json.Unmarshal(raw, &r)
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "APPROVAL\tSTATE\tACTION\tRISK\tPRINCIPAL\tEXPIRES")
			for _, a := range r.Approvals {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ApprovalID, a.State, a.ActionID, a.RiskLevel, safe(a.Principal), a.ExpiresAt)
			}
			return tw.Flush()
		},
	}
	list.Flags().String("status", "pending", "pending, approved, denied, expired, failed or all")
	show := &cobra.Command{
		Use: "show APPROVAL_ID", Short: "Show the full frozen request for review", Args: cobra.ExactArgs(1),
		Example: "  latchgate approvals show 0190c6e2-…",
		RunE: func(cmd *cobra.Command, args []string) error {
			c := newAdminClient(cmd)
			raw, _, err := c.do("GET", "/v1/approvals/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return err
			}
			if jsonOut(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
				return nil
			}
			printReview(cmd.OutOrStdout(), raw)
			return nil
		},
	}
	approve := &cobra.Command{
		Use:   "approve APPROVAL_ID",
		Short: "Approve a held action: the gate runs the frozen request once",
		Long: `Approve shows the plan review (action, risk, principal, full arguments, target
hosts, request hash, expiry) and asks to confirm on a terminal. Without a
terminal it needs --yes, or it exits 2.`,
		Example: "  latchgate approvals approve 0190c6e2-… --yes",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := newAdminClient(cmd)
			yes, _ := cmd.Flags().GetBool("yes")
			raw, _, err := c.do("GET", "/v1/approvals/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return err
			}
			if !jsonOut(cmd) {
				printReview(cmd.ErrOrStderr(), raw)
			}
			if !yes {
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					return &exitError{code: 2, err: errors.New("not a terminal: pass --yes to approve without a prompt")}
				}
				fmt.Fprint(cmd.ErrOrStderr(), "Run this request now? [y/N] ")
				line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					return &exitError{code: 1, err: errors.New("not approved")}
				}
			}
			note, _ := cmd.Flags().GetString("note")
			learn, _ := cmd.Flags().GetBool("learn-domain")
			out, status, err := c.do("POST", "/v1/approvals/"+url.PathEscape(args[0])+"/approve", map[string]any{"note": note, "learn_domain": learn})
			if err != nil && status != http.StatusBadGateway {
				return err
			}
			printJSON(cmd.OutOrStdout(), out)
			var d struct{ Decision string }
			_ = json.Unmarshal(out, &d)
			if status == http.StatusBadGateway || d.Decision == "failed" {
				return &exitError{code: 1, err: errors.New("the approved request did not succeed")}
			}
			return nil
		},
	}
	approve.Flags().Bool("yes", false, "approve without a prompt")
	approve.Flags().String("note", "", "a note recorded with the approval")
	approve.Flags().Bool("learn-domain", false, "add the unresolved host to the action's allowlist for this principal")
	deny := &cobra.Command{
		Use: "deny APPROVAL_ID", Short: "Deny a held action (never prompts)", Args: cobra.ExactArgs(1),
		Example: `  latchgate approvals deny 0190c6e2-… --reason "not during the freeze"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			reason, _ := cmd.Flags().GetString("reason")
			raw, _, err := newAdminClient(cmd).do("POST", "/v1/approvals/"+url.PathEscape(args[0])+"/deny", map[string]any{"reason": reason})
			if err != nil {
				return err
			}
			printJSON(cmd.OutOrStdout(), raw)
			return nil
		},
	}
	deny.Flags().String("reason", "", "reason told to the agent")
	cmd.AddCommand(list, show, approve, deny, newApprovalsAllowCmd(), newStandingCmd(), newLearnedCmd(), newApprovalsWatchCmd())
	addAdminFlags(cmd)
	return cmd
}

// printReview prints an approval for a human, control characters escaped.
func printReview(w io.Writer, raw []byte) {
	var a map[string]any
	if json.Unmarshal(raw, &a) != nil {
		_, _ = w.Write(raw)
		return
	}
	str := func(k string) string { s, _ := a[k].(string); return safe(s) }
	args, _ := json.MarshalIndent(a["arguments"], "  ", "  ")
	hosts, _ := json.Marshal(a["target_hosts"])
	unres, _ := json.Marshal(a["unresolved_domains"])
	fmt.Fprintf(w, "Approval     %s (%s)\nAction       %s %s (risk %s)\nPrincipal    %s  session %s  agent %s\nTarget hosts %s  unresolved %s\nRequest hash %s\nExpires      %s\nArguments\n  %s\n",
		str("approval_id"), str("state"), str("action_id"), str("action_version"), str("risk_level"),
		str("principal"), str("session_id"), str("agent_id"), safe(string(hosts)), safe(string(unres)),
		str("request_hash"), str("expires_at"), safe(string(args)))
}
