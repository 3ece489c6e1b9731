package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/sdk"
	"github.com/latchgate/latchgate/webhooks"
)

const smokeManifests = "../../testdata/smoke-manifests"

func agent(t *testing.T, p *proc, id string) *sdk.Client {
	t.Helper()
	c, err := sdk.New(sdk.WithSocket(p.socket), sdk.WithAgentID(id), sdk.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// held executes echo_held and returns the approval id.
func held(t *testing.T, c *sdk.Client, args map[string]any) string {
	t.Helper()
	_, err := c.Execute(context.Background(), "echo_held", args, sdk.WithoutIdempotencyKey())
	var e *sdk.Error
	if !errors.As(err, &e) || !errors.Is(e.Kind, sdk.ErrApprovalRequired) || e.ApprovalID == "" {
		t.Fatalf("execute echo_held = %v, want approval required", err)
	}
	return e.ApprovalID
}

func adminCLI(t *testing.T, p *proc, args ...string) (string, int) {
	t.Helper()
	return cli(t, append(args, "--admin-socket", p.admin)...)
}

func receiptsCount(t *testing.T, p *proc) int {
	t.Helper()
	out, code := adminCLI(t, p, "receipts", "verify", "--json")
	var r struct{ Receipts int }
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("receipts verify = %d %s", code, out)
	}
	return r.Receipts
}

// The operator flow of the issue, through the real binary.
func TestCLIApproveDenyWatch(t *testing.T) {
	p := startGate(t, t.TempDir(), "--manifests-dir", smokeManifests)
	p.waitReady(t)
	c := agent(t, p, "cli-agent")
	ctx := context.Background()

	id := held(t, c, map[string]any{"msg": "pay bob", "note": "evil\u202etxt.exe"})
	out, code := adminCLI(t, p, "approvals", "list", "--json")
	if code != 0 || !strings.Contains(out, id) {
		t.Fatalf("approvals list --json = %d, missing %s:\n%s", code, id, out)
	}
	out, code = adminCLI(t, p, "approvals", "show", id)
	if code != 0 || !strings.Contains(out, "pay bob") || !strings.Contains(out, `\u202e`) || strings.ContainsRune(out, '\u202e') {
		t.Fatalf("approvals show = %d, want the arguments with bidi escaped:\n%s", code, out)
	}
	if out, code = adminCLI(t, p, "approvals", "approve", id); code != 2 {
		t.Fatalf("approve without a terminal or --yes = exit %d (%s), want 2", code, out)
	}
	if out, code = adminCLI(t, p, "approvals", "approve", id, "--yes"); code != 0 {
		t.Fatalf("approve --yes = exit %d:\n%s", code, out)
	}
	st, err := c.GetApprovalStatus(ctx, id)
	if err != nil || st.Status != sdk.ApprovalApproved || st.ReceiptID == "" || len(st.Output) == 0 {
		t.Fatalf("poll = %+v, %v; want approved with receipt_id and output", st, err)
	}
	out, _ = adminCLI(t, p, "receipts", "show", st.ReceiptID)
	var rc struct {
		Approval struct {
			ApprovalID string `json:"approval_id"`
			Kind       string `json:"kind"`
		} `json:"approval"`
	}
	if json.Unmarshal([]byte(out), &rc) != nil || rc.Approval.ApprovalID != id || rc.Approval.Kind != "operator" {
		t.Fatalf("receipt approval = %+v, want operator %s:\n%s", rc.Approval, id, out)
	}
	n := receiptsCount(t, p)
	out, _ = adminCLI(t, p, "approvals", "approve", id, "--yes", "--json")
	if !strings.Contains(out, "already_approved") || receiptsCount(t, p) != n {
		t.Fatalf("second approve = %s; receipts %d → %d, want already_approved and nothing run", out, n, receiptsCount(t, p))
	}

	denied := held(t, c, map[string]any{"msg": "second"})
	if out, code = adminCLI(t, p, "approvals", "deny", denied, "--reason", "not now"); code != 0 {
		t.Fatalf("deny = %d %s", code, out)
	}
	if st, err := c.GetApprovalStatus(ctx, denied); err != nil || st.Status != sdk.ApprovalDenied || st.Reason != "not now" {
		t.Fatalf("poll(denied) = %+v, %v", st, err)
	}

	// watch replays the journal: requested → receipt → approved → requested → denied.
	out, code = adminCLI(t, p, "approvals", "watch", "--json", "--from-start", "--count", "5")
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct{ ID, Type string }
		if json.Unmarshal([]byte(line), &ev) == nil {
			types = append(types, ev.Type)
		}
	}
	if want := "approval.requested receipt.created approval.approved approval.requested approval.denied"; code != 0 || strings.Join(types, " ") != want {
		t.Fatalf("watch = %d %v, want %s\n%s", code, types, want, out)
	}
	// Resuming after event 3 misses nothing.
	out, _ = adminCLI(t, p, "approvals", "watch", "--json", "--last-event-id", "3", "--count", "2")
	if !strings.Contains(out, `"id":"4"`) || !strings.Contains(out, `"id":"5"`) {
		t.Fatalf("watch --last-event-id 3 = %s, want events 4 and 5", out)
	}

	// Audit formats.
	out, code = adminCLI(t, p, "audit", "--format", "csv")
	if code != 0 || !strings.HasPrefix(out, "time,decision,principal,action_id,approval_id") || !strings.Contains(out, ",denied,") {
		t.Fatalf("audit --format csv = %d:\n%s", code, out)
	}
	out, _ = adminCLI(t, p, "audit", "--format", "ndjson", "--decision", "approved")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["decision"] != "approved" {
			t.Fatalf("audit ndjson line %q is not an approved record", line)
		}
	}
	if _, code = adminCLI(t, p, "audit", "--format", "xml"); code != 2 {
		t.Fatalf("audit --format xml = exit %d, want 2", code)
	}
}

func TestCLIStandingApproval(t *testing.T) {
	p := startGate(t, t.TempDir(), "--manifests-dir", smokeManifests)
	p.waitReady(t)
	c := agent(t, p, "standing-agent")
	if out, code := adminCLI(t, p, "approvals", "allow", "--principal", "agent:standing-agent", "--action", "echo_held"); code != 2 {
		t.Fatalf("allow without --for/--uses = %d %s, want 2", code, out)
	}
	out, code := adminCLI(t, p, "approvals", "allow", "--principal", "agent:standing-agent", "--action", "echo_held", "--for", "30m", "--uses", "1", "--json")
	var s struct{ ID string }
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || s.ID == "" {
		t.Fatalf("allow = %d %s", code, out)
	}
	res, err := c.Execute(context.Background(), "echo_held", map[string]any{"n": 1}, sdk.WithoutIdempotencyKey())
	if err != nil || res.ReceiptID == "" {
		t.Fatalf("execute under standing approval = %v", err)
	}
	held(t, c, map[string]any{"n": 2}) // the one use is spent
	out, _ = adminCLI(t, p, "approvals", "standing", "list", "--json")
	if strings.Contains(out, s.ID) {
		t.Fatalf("used-up standing approval still listed:\n%s", out)
	}
}

// A receiver that fails twice then succeeds gets each event once per id,
// every attempt signed afresh; webhook URLs pass the egress checks.
func TestCLIWebhooks(t *testing.T) {
	const secret = "cli-test-webhook-secret"
	var mu sync.Mutex
	attempts := map[string]int{}
	delivered := map[string]int{}
	var sigs []string
	fail := 2
	rv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id, sig := r.Header.Get(webhooks.HeaderID), r.Header.Get(webhooks.HeaderSignature)
		ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
		var unix int64
		fmt.Sscan(ts, &unix)
		mu.Lock()
		defer mu.Unlock()
		if webhooks.Sign(secret, time.Unix(unix, 0), body) != sig {
			t.Errorf("delivery %s: signature %q does not verify", id, sig)
		}
		sigs = append(sigs, sig)
		attempts[id]++
		if fail > 0 {
			fail--
			w.WriteHeader(500)
			return
		}
		delivered[id]++
		w.WriteHeader(204)
	}))
	defer rv.Close()
	cfg := filepath.Join(t.TempDir(), "latchgate.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`webhooks:
  - url: %s/hook
    secret: %s
    events: [approval.requested]
webhook_delivery:
  base_backoff: 20ms
  max_backoff: 100ms
egress:
  allow_cidrs: [127.0.0.1/32]
`, rv.URL, secret)), 0o600)
	p := startGate(t, t.TempDir(), "--manifests-dir", smokeManifests, "--config", cfg)
	p.waitReady(t)
	c := agent(t, p, "hook-agent")
	held(t, c, map[string]any{"n": 1})
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := len(delivered)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no delivery\n%s", p.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	for id, n := range attempts {
		if n != 3 || delivered[id] != 1 {
			t.Errorf("delivery %s: %d attempts, delivered %d times; want 3 and 1", id, n, delivered[id])
		}
	}
	mu.Unlock()
	out, code := adminCLI(t, p, "webhooks", "deliveries", "--json")
	if code != 0 || !strings.Contains(out, `"state": "delivered"`) {
		t.Fatalf("webhooks deliveries = %d:\n%s", code, out)
	}
	if out, code = adminCLI(t, p, "webhooks", "test", rv.URL+"/hook"); code != 0 || !strings.Contains(out, "delivered") {
		t.Fatalf("webhooks test = %d %s", code, out)
	}
	if _, code = adminCLI(t, p, "webhooks", "test", "https://not-configured.example/x"); code == 0 {
		t.Fatalf("webhooks test of an unconfigured URL succeeded")
	}

	// Without allow_cidrs the same loopback URL fails the egress check.
	cfg2 := filepath.Join(t.TempDir(), "latchgate.yaml")
	os.WriteFile(cfg2, []byte(fmt.Sprintf("webhooks:\n  - url: %s/hook\n    secret: %s\n", rv.URL, secret)), 0o600)
	p2 := startGate(t, t.TempDir(), "--config", cfg2)
	p2.waitReady(t)
	out, code = adminCLI(t, p2, "webhooks", "test", rv.URL+"/hook", "--json")
	if code == 0 || !strings.Contains(out, "egress denied") {
		t.Fatalf("webhooks test to loopback without allow_cidrs = %d %s, want egress denied", code, out)
	}
}

// A non-operator uid in the admin socket's group gets 403.
func TestAdminSocketGroupNonOperator(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	cfg := filepath.Join(t.TempDir(), "latchgate.yaml")
	os.WriteFile(cfg, []byte("admin:\n  socket_group: nogroup\n"), 0o600)
	p := startGate(t, t.TempDir(), "--config", cfg)
	p.waitReady(t)
	// Let uid 65534 reach the socket directory (the group dir is 0750).
	os.Chmod(filepath.Dir(filepath.Dir(p.admin)), 0o711)
	os.Chmod(binPath, 0o755)
	os.Chmod(filepath.Dir(binPath), 0o755)
	cmd := exec.Command(binPath, "status", "--admin-socket", p.admin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "forbidden (403)") {
		t.Fatalf("status as uid 65534 = %v %s, want 403 forbidden", err, out)
	}
	// The operator (this uid) is served.
	if out, code := adminCLI(t, p, "status", "--json"); code != 0 {
		t.Fatalf("status as operator = %d %s", code, out)
	}
	// Approval endpoints do not exist on the client socket.
	if st, body := p.get("/v1/approvals"); st != 404 || !strings.Contains(string(body), "not_found") {
		t.Fatalf("GET /v1/approvals on the client socket = %d %s, want 404", st, body)
	}
}

func TestDoctor(t *testing.T) {
	state := t.TempDir()
	os.Chmod(state, 0o755)
	cfg := filepath.Join(t.TempDir(), "latchgate.yaml")
	os.WriteFile(cfg, []byte("redis_url: redis://127.0.0.1:6379/0\n"), 0o600)
	out, code := cli(t, "doctor", "--config", cfg, "--state-dir", state, "--json")
	var r struct {
		Findings []struct{ Level, Check, Message, Fix string }
	}
	js, _, _ := strings.Cut(out, "\nlatchgate:")
	if code != 1 || json.Unmarshal([]byte(js), &r) != nil {
		t.Fatalf("doctor = %d %s, want exit 1 with findings", code, out)
	}
	want := map[string]string{"redis": "AUTH", "proof": "require_body_hash", "state_dir": "chmod 700"}
	for check, needle := range want {
		found := false
		for _, f := range r.Findings {
			if f.Check == check && f.Level != "ok" && strings.Contains(f.Message+f.Fix, needle) {
				found = true
			}
		}
		if !found {
			t.Errorf("doctor did not report %s (%s):\n%s", check, needle, out)
		}
	}
	os.Chmod(state, 0o700)
	os.WriteFile(cfg, []byte("redis_url: rediss://:pw@redis.example:6380/0\nproof:\n  require_body_hash: true\n"), 0o600)
	if out, code := cli(t, "doctor", "--config", cfg, "--state-dir", state); code != 0 {
		t.Fatalf("doctor on a sound config = %d:\n%s", code, out)
	}
}

// TestKeysRotateOffline: `keys rotate --receipts --state-dir` on a stopped
// gate changes the receipt keys and nothing else. It used to open the
// ledger, whose start-up recovery recorded the gate's dangling intents as
// interrupted receipts of a gate named "offline-rotate"; they are the
// gate's own to record, under its id, when it next starts.
func TestKeysRotateOffline(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, "ledger")
	open := func() *receipts.Ledger {
		t.Helper()
		led, err := receipts.Open(receipts.Config{Dir: dir, GateID: "gate-a"}, receipts.Deps{Clock: clock.Real{}, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return led
	}
	led := open()
	oldKID := led.KeyID()
	now := receipts.FormatTime(time.Now())
	in := &receipts.Intent{
		GrantID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a51", TraceID: "trace-1", ReceiptID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a52",
		ActionID: "echo", ActionVersion: "1.0.0", ActionDigest: "sha256:" + strings.Repeat("a", 64), Principal: "uid:1000",
		SessionID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a53", RequestHash: "sha256:" + strings.Repeat("b", 64), StartedAt: now,
	}
	if err := led.WriteIntent(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	led.Close() // as if the gate stopped before the outcome
	before, _ := os.ReadFile(filepath.Join(dir, "ledger.jsonl"))

	out, code := cli(t, "keys", "rotate", "--receipts", "--state-dir", state, "--json")
	var r struct {
		ReceiptKeyID string `json:"receipt_key_id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.ReceiptKeyID == "" || r.ReceiptKeyID == oldKID {
		t.Fatalf("keys rotate --receipts --state-dir = %d %s, want a new receipt_key_id", code, out)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ledger.jsonl")); string(after) != string(before) {
		t.Fatalf("offline rotation wrote to the ledger:\n%s", after[len(before):])
	}

	led = open()
	defer led.Close()
	rc, err := led.GetReceipt(in.ReceiptID)
	if err != nil || rc.GateID != "gate-a" || rc.KeyID != r.ReceiptKeyID || rc.NormalizedResult.Kind != receipts.KindInterrupted {
		t.Fatalf("interrupted receipt after restart = %+v, %v; want gate-a's, signed with %s", rc, err, r.ReceiptKeyID)
	}
	if v := led.Verify(); !v.Intact {
		t.Fatalf("Verify() after offline rotation = %+v", v.FirstBreak)
	}
}

func TestKeysRotate(t *testing.T) {
	state := t.TempDir()
	p := startGate(t, state)
	p.waitReady(t)
	out, code := adminCLI(t, p, "keys", "rotate", "--json")
	var r struct {
		ReceiptKeyID string `json:"receipt_key_id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.ReceiptKeyID == "" {
		t.Fatalf("keys rotate = %d %s", code, out)
	}
	if out, code := adminCLI(t, p, "receipts", "verify"); code != 0 {
		t.Fatalf("verify after rotation = %d %s", code, out)
	}
}

// Doctor checks every private key file the gate keeps, the receipt
// signing key in <state-dir>/ledger/keys included, not only keys_dir.
func TestDoctorReceiptKeyMode(t *testing.T) {
	state := t.TempDir()
	os.Chmod(state, 0o700)
	kdir := filepath.Join(state, "ledger", "keys")
	if err := os.MkdirAll(kdir, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(kdir, "signing.json")
	if err := os.WriteFile(key, []byte(`{"kid":"k","seed":"s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(key, 0o644)
	out, code := cli(t, "doctor", "--state-dir", state, "--json")
	var r struct {
		Findings []struct{ Level, Check, Message, Fix string }
	}
	js, _, _ := strings.Cut(out, "\nlatchgate:")
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("doctor = %d %s", code, out)
	}
	found := false
	for _, f := range r.Findings {
		if f.Check == "keys" && f.Level == "fail" && strings.Contains(f.Message, key) && strings.Contains(f.Fix, "chmod 600") {
			found = true
		}
	}
	if code != 1 || !found {
		t.Fatalf("doctor with a 0644 receipt signing key = exit %d, want a keys failure naming %s:\n%s", code, key, out)
	}
}

// doctor fails a configuration that serve would refuse at start: the
// lease's and the gate's own checks (with their defaults), not only the
// command line's.
func TestDoctorChecksWhatServeChecks(t *testing.T) {
	state := t.TempDir()
	os.Chmod(state, 0o700)
	for _, tt := range []struct{ name, yaml, needle string }{
		{"default_ttl above max_ttl", "lease:\n  default_ttl: 2h\n  max_ttl: 1h\n", "max_ttl"},
		{"negative max_conns", "limits:\n  max_conns: -1\n", "max_conns"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "latchgate.yaml")
			if err := os.WriteFile(cfg, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			out, code := cli(t, "doctor", "--config", cfg, "--state-dir", state, "--json")
			var r struct {
				Findings []struct{ Level, Check, Message string }
			}
			js, _, _ := strings.Cut(out, "\nlatchgate:")
			if code != 1 || json.Unmarshal([]byte(js), &r) != nil {
				t.Fatalf("doctor = %d %s, want exit 1 with findings", code, out)
			}
			found := false
			for _, f := range r.Findings {
				found = found || (f.Check == "config" && f.Level == "fail" && strings.Contains(f.Message, tt.needle))
			}
			if !found {
				t.Errorf("doctor did not fail the config on %s:\n%s", tt.needle, out)
			}
		})
	}
}

// latchgate policy test reports every test of a policy directory, failing
// ones included, and exits 1 when one fails (loading the policy for a
// gate stops at the first failure instead).
func TestPolicyTestReportsEveryTest(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"p.rego": "package latchgate\ndecision := {\"allow\": true, \"pending_approval\": false, \"deny_reasons\": []}\n",
		"p_test.rego": "package latchgate\n" +
			"test_a_fails if { not decision.allow }\n" +
			"test_b_passes if { decision.allow }\n" +
			"test_c_fails if { decision.pending_approval }\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, code := cli(t, "policy", "test", "--policy-dir", dir)
	if code != 1 {
		t.Fatalf("policy test = exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{"FAIL data.latchgate.test_a_fails", "PASS data.latchgate.test_b_passes", "FAIL data.latchgate.test_c_fails", "1 passed, 2 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy test output lacks %q:\n%s", want, out)
		}
	}
	// A gate still refuses to load it.
	if _, err := policy.New(policy.Config{Dir: dir}, policy.Deps{Logger: zerolog.Nop()}); err == nil {
		t.Error("policy.New loaded a policy whose tests fail")
	}
}
