package policy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latchgate/latchgate/definitions"
	"github.com/rs/zerolog"
)

func newEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	if cfg.FS == nil && cfg.Dir == "" {
		cfg.FS = definitions.Policies
	}
	e, err := New(cfg, Deps{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func baseInput() *Input {
	return &Input{
		Principal: "agent:a",
		Action:    Action{ID: "echo", RiskLevel: "low", RequiredScopes: []string{"tools:call"}},
		Request:   Request{Args: json.RawMessage(`{}`), UnresolvedDomains: []string{}, TargetHosts: []string{}},
		Lease:     Lease{Scopes: []string{"tools:call"}},
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		allowAll    bool
		mutate      func(*Input)
		wantAllow   bool
		wantPending bool
		wantReasons []string
	}{
		{name: "ok/echo-default-acl", wantAllow: true},
		{name: "fail/not-in-acl", mutate: func(in *Input) { in.Action.ID = "http_post" }, wantReasons: []string{"principal_not_allowed"}},
		{name: "ok/dev-allow-all", allowAll: true, mutate: func(in *Input) { in.Action.ID = "http_post" }, wantAllow: true},
		{name: "fail/missing-scope", allowAll: true, mutate: func(in *Input) { in.Lease.Scopes = []string{"audit:read"} }, wantReasons: []string{"missing_scope:tools:call"}},
		{name: "pending/high-risk", allowAll: true, mutate: func(in *Input) { in.Action.RiskLevel = "high" }, wantPending: true},
		{name: "pending/unresolved", allowAll: true, mutate: func(in *Input) { in.Request.UnresolvedDomains = []string{"example.org"} }, wantPending: true},
		{name: "ok/approved", allowAll: true, mutate: func(in *Input) {
			in.Action.RiskLevel = "critical"
			in.Approval = &Approval{ApprovalID: "x", ApprovedBy: "uid:0"}
		}, wantAllow: true},
		{name: "ok/standing", allowAll: true, mutate: func(in *Input) {
			in.Action.RiskLevel = "high"
			in.StandingApproval = json.RawMessage(`{"id":"s1"}`)
		}, wantAllow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, Config{AllowAllActions: tt.allowAll})
			in := baseInput()
			if tt.mutate != nil {
				tt.mutate(in)
			}
			d, err := e.Decide(context.Background(), in, now)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Allow != tt.wantAllow || d.PendingApproval != tt.wantPending {
				t.Errorf("Decide() = allow %v pending %v, want allow %v pending %v", d.Allow, d.PendingApproval, tt.wantAllow, tt.wantPending)
			}
			want := tt.wantReasons
			if want == nil {
				want = []string{}
			}
			if len(d.DenyReasons) != len(want) || (len(want) > 0 && d.DenyReasons[0] != want[0]) {
				t.Errorf("Decide().DenyReasons = %v, want %v", d.DenyReasons, want)
			}
		})
	}
}

// writePolicy writes a policy dir with one module and its data.
func writePolicy(t *testing.T, module, data string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(module), 0o600); err != nil {
		t.Fatal(err)
	}
	if data != "" {
		if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Every way a policy can fail to produce a decision must fail closed.
func TestDecideFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		module string
	}{
		{"undefined", "package latchgate\n"},
		{"not-object", "package latchgate\ndecision := true\n"},
		{"missing-members", "package latchgate\ndecision := {\"allow\": true}\n"},
		{"wrong-types", "package latchgate\ndecision := {\"allow\": \"yes\", \"pending_approval\": false, \"deny_reasons\": []}\n"},
		{"reason-not-string", "package latchgate\ndecision := {\"allow\": true, \"pending_approval\": false, \"deny_reasons\": [1]}\n"},
		{"builtin-error", "package latchgate\ndecision := {\"allow\": to_number(\"x\") > 0, \"pending_approval\": false, \"deny_reasons\": []}\n"},
		{"timeout", "package latchgate\ndecision := {\"allow\": count([x | some x in numbers.range(1, 100000000)]) > 0, \"pending_approval\": false, \"deny_reasons\": []}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, Config{Dir: writePolicy(t, tt.module, ""), Timeout: 50 * time.Millisecond})
			d, err := e.Decide(context.Background(), baseInput(), time.Unix(0, 0))
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Decide() error = %v, want ErrUnavailable", err)
			}
			if d.Allow {
				t.Errorf("Decide() allowed on failure")
			}
		})
	}
}

func TestNoNetworkBuiltins(t *testing.T) {
	for _, mod := range []string{
		"package latchgate\ndecision := {\"allow\": http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"}).status_code == 200, \"pending_approval\": false, \"deny_reasons\": []}\n",
		"package latchgate\ndecision := {\"allow\": count(net.lookup_ip_addr(\"localhost\")) > 0, \"pending_approval\": false, \"deny_reasons\": []}\n",
	} {
		if _, err := New(Config{Dir: writePolicy(t, mod, "")}, Deps{Logger: zerolog.Nop()}); err == nil {
			t.Errorf("New(policy using a network built-in) = nil error, want a compile error")
		}
	}
}

// TestNoHostFileBuiltins: a policy cannot read the gate host's files.
// JSON Schema built-ins load a "$ref" with the file scheme from the local
// file system whatever allow_net says, so they are not offered.
func TestNoHostFileBuiltins(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(secret, []byte(`{"type": "object", "required": ["d"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, call := range []string{
		`json.match_schema({"a": 1}, {"$ref": "file://` + secret + `"})[0]`,
		`json.verify_schema({"$ref": "file://` + secret + `"})[0]`,
	} {
		mod := "package latchgate\ndecision := {\"allow\": " + call + ", \"pending_approval\": false, \"deny_reasons\": []}\n"
		e, err := New(Config{Dir: writePolicy(t, mod, "")}, Deps{Logger: zerolog.Nop()})
		if err != nil {
			continue
		}
		d, err := e.Decide(context.Background(), baseInput(), time.Unix(0, 0))
		t.Errorf("New(policy calling %s) = nil error, want a compile error; Decide read the file: %+v, %v", call, d, err)
	}
}

// TestMalformedDataRefused: a data.json with anything after its object
// is malformed and refuses the whole policy, as OPA's own loader does;
// it must not load with only its first value.
func TestMalformedDataRefused(t *testing.T) {
	mod := "package latchgate\ndecision := {\"allow\": \"echo\" in data.acl[\"*\"].allowed_actions, \"pending_approval\": false, \"deny_reasons\": []}\n"
	for _, data := range []string{
		`{"acl": {"*": {"allowed_actions": ["echo"]}}}` + "\n" + `{"acl": {"*": {"allowed_actions": []}}}`,
		`{"acl": {"*": {"allowed_actions": ["echo"]}}}}`,
	} {
		if _, err := New(Config{Dir: writePolicy(t, mod, data)}, Deps{Logger: zerolog.Nop()}); err == nil {
			t.Errorf("New(data.json %q) = nil error, want refusal", data)
		}
	}
}

func TestFailingPolicyTestRefused(t *testing.T) {
	dir := writePolicy(t, "package latchgate\ndecision := {\"allow\": false, \"pending_approval\": false, \"deny_reasons\": []}\n", "")
	if err := os.WriteFile(filepath.Join(dir, "p_test.rego"), []byte("package latchgate_test\nimport data.latchgate\ntest_allows if latchgate.decision.allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Dir: dir}, Deps{Logger: zerolog.Nop()}); err == nil {
		t.Fatal("New(policy with a failing test) = nil error, want refusal")
	}
}

func TestEmbeddedPolicyTestsPass(t *testing.T) {
	e := newEngine(t, Config{})
	res, err := e.Test(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) < 5 {
		t.Fatalf("Test() ran %d tests, want the embedded suite", len(res))
	}
	for _, r := range res {
		if !r.Pass {
			t.Errorf("%s: %s", r.Name, r.Detail)
		}
	}
}

// BenchmarkDecide measures one decision: "cached" is a hit in the
// decision cache (the gate's steady state: the same agent asking for the
// same action), "uncached" a full OPA evaluation.
func BenchmarkDecide(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"cached", 0}, {"uncached", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			e, err := New(Config{FS: definitions.Policies, AllowAllActions: true, DecisionCacheSize: bc.size}, Deps{Logger: zerolog.Nop()})
			if err != nil {
				b.Fatal(err)
			}
			in := baseInput()
			now := time.Now()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Decide(ctx, in, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPolicySubdirectoryRefused: OPA loads a policy directory recursively,
// the gate reads only its top level. A subdirectory holding policy files
// would silently not apply (a stricter rule kept there, say), so the load
// fails naming it; a subdirectory without policy files is fine.
func TestPolicySubdirectoryRefused(t *testing.T) {
	module := "package latchgate\ndecision := {\"allow\": true, \"pending_approval\": false, \"deny_reasons\": []}\n"
	for _, tt := range []struct {
		name, file string
		refused    bool
	}{
		{"rego in a subdirectory", "extra/deny.rego", true},
		{"data.json deeper down", "extra/more/data.json", true},
		{"notes only", "extra/README.md", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := writePolicy(t, module, "")
			f := filepath.Join(dir, tt.file)
			if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte("package latchgate\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{Dir: dir}, Deps{Logger: zerolog.Nop()})
			if tt.refused && (err == nil || !strings.Contains(err.Error(), "subdirectories are not loaded")) {
				t.Fatalf("New = %v, want the subdirectory refused", err)
			}
			if !tt.refused && err != nil {
				t.Fatalf("New = %v, want the policy loaded", err)
			}
		})
	}
}
