package sdk_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchgate/latchgate/sdk"
)

var sdkNormalizeHTU = sdk.NormalizeHTUForTest

// recorder records the delays the client asked to sleep for, without sleeping.
type recorder struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *recorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.delays = append(r.delays, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *recorder) got() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.delays)
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newClient returns a client on s's socket with the stub's clock and a
// recording sleeper.
func newClient(t *testing.T, s *stub, rec *recorder, opts ...sdk.Option) *sdk.Client {
	t.Helper()
	if rec == nil {
		rec = &recorder{}
	}
	base := []sdk.Option{
		sdk.WithSocket(s.sock), sdk.WithClock(s.clock), sdk.WithLogger(quietLogger()),
		sdk.WithSleepForTest(rec.sleep), sdk.WithGetenvForTest(func(string) string { return "" }),
		sdk.WithHTTPTimeout(10 * time.Second),
	}
	c, err := sdk.New(append(base, opts...)...)
	if err != nil {
		t.Fatalf("sdk.New() error = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func connect(t *testing.T, c *sdk.Client) {
	t.Helper()
	if _, err := c.Connect(context.Background(), sdk.ConnectOptions{AgentID: "t"}); err != nil {
		t.Fatalf("Connect() error = %v", err)
	}
}

func errBody(code string, extra map[string]any) string {
	m := map[string]any{"error": code, "message": "scripted"}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name     string
		answer   scripted
		want     error
		alsoAuth bool
		check    func(t *testing.T, e *sdk.Error)
	}{
		{name: "202_approval", answer: scripted{status: 202, body: `{"decision":"pending_approval","approval_id":"a-1","request_hash":"sha256:00","trace_id":"tr","expires_at":"2026-01-15T11:00:00Z"}`},
			want: sdk.ErrApprovalRequired, check: func(t *testing.T, e *sdk.Error) {
				if e.ApprovalID != "a-1" || e.ActionID != "echo" {
					t.Errorf("ApprovalID, ActionID = %q, %q, want a-1, echo", e.ApprovalID, e.ActionID)
				}
			}},
		{name: "401_lease_expired", answer: scripted{status: 401, body: errBody("lease_expired", nil)}, want: sdk.ErrLeaseExpired, alsoAuth: true},
		{name: "401_replay", answer: scripted{status: 401, body: errBody("replay_detected", nil)}, want: sdk.ErrReplayDetected, alsoAuth: true},
		{name: "401_invalid_dpop", answer: scripted{status: 401, body: errBody("invalid_dpop", map[string]any{"deny_reason": "bad_htu"})}, want: sdk.ErrAuth,
			check: func(t *testing.T, e *sdk.Error) {
				if e.DenyReason != "bad_htu" {
					t.Errorf("DenyReason = %q, want bad_htu", e.DenyReason)
				}
			}},
		{name: "401_revoked", answer: scripted{status: 401, body: errBody("lease_revoked", nil)}, want: sdk.ErrAuth},
		{name: "403_budget", answer: scripted{status: 403, body: errBody("budget_exhausted", nil)}, want: sdk.ErrBudgetExhausted},
		{name: "403_policy", answer: scripted{status: 403, body: errBody("policy_denied", map[string]any{"deny_reason": "no_rule_allowed", "action_id": "echo"})}, want: sdk.ErrDenied,
			check: func(t *testing.T, e *sdk.Error) {
				if e.Code != "policy_denied" || e.DenyReason != "no_rule_allowed" || e.Status != 403 {
					t.Errorf("Status, Code, DenyReason = %d, %q, %q", e.Status, e.Code, e.DenyReason)
				}
			}},
		{name: "400_invalid_json", answer: scripted{status: 400, body: errBody("invalid_json", nil)}, want: sdk.ErrDenied},
		{name: "404_action", answer: scripted{status: 404, body: errBody("action_not_found", nil)}, want: sdk.ErrDenied},
		{name: "405", answer: scripted{status: 405, body: errBody("method_not_allowed", nil)}, want: sdk.ErrDenied},
		{name: "409_conflict", answer: scripted{status: 409, body: errBody("idempotency_conflict", nil)}, want: sdk.ErrDenied},
		{name: "409_in_progress", answer: scripted{status: 409, body: errBody("idempotency_in_progress", nil)}, want: sdk.ErrUnavailable},
		{name: "413", answer: scripted{status: 413, body: errBody("payload_too_large", nil)}, want: sdk.ErrDenied},
		{name: "415", answer: scripted{status: 415, body: errBody("unsupported_media_type", nil)}, want: sdk.ErrDenied},
		{name: "422", answer: scripted{status: 422, body: errBody("schema_violation", map[string]any{"deny_reason": "/url"})}, want: sdk.ErrDenied},
		{name: "429", answer: scripted{status: 429, header: map[string]string{"Retry-After": "7"}, body: errBody("rate_limited", nil)}, want: sdk.ErrUnavailable,
			check: func(t *testing.T, e *sdk.Error) {
				if e.RetryAfter != 7*time.Second {
					t.Errorf("RetryAfter = %v, want 7s", e.RetryAfter)
				}
			}},
		{name: "503_body_retry_after", answer: scripted{status: 503, body: errBody("store_unavailable", map[string]any{"retry_after_seconds": 2})}, want: sdk.ErrUnavailable,
			check: func(t *testing.T, e *sdk.Error) {
				if e.RetryAfter != 2*time.Second {
					t.Errorf("RetryAfter = %v, want 2s", e.RetryAfter)
				}
			}},
		{name: "502_failed", answer: scripted{status: 502, body: errBody("action_execution_failed", map[string]any{"receipt_id": "r-9", "trace_id": "tr-9"})}, want: sdk.ErrActionFailed,
			check: func(t *testing.T, e *sdk.Error) {
				if e.ReceiptID != "r-9" || e.TraceID != "tr-9" {
					t.Errorf("ReceiptID, TraceID = %q, %q, want r-9, tr-9", e.ReceiptID, e.TraceID)
				}
			}},
		{name: "502_egress", answer: scripted{status: 502, body: errBody("egress_denied", map[string]any{"receipt_id": "r-8"})}, want: sdk.ErrActionFailed},
		{name: "500", answer: scripted{status: 500, body: errBody("internal_error", nil)}, want: sdk.ErrServer},
		{name: "500_not_json", answer: scripted{status: 500, body: "oops"}, want: sdk.ErrServer},
		// 4xx outside PROTOCOL §4's denial list are not denials (README: "500, anything else").
		{name: "408_unlisted", answer: scripted{status: 408, body: "request timeout"}, want: sdk.ErrServer},
		{name: "431_unlisted", answer: scripted{status: 431, body: "header fields too large"}, want: sdk.ErrServer},
	}
	kinds := []error{sdk.ErrDenied, sdk.ErrApprovalRequired, sdk.ErrBudgetExhausted, sdk.ErrAuth, sdk.ErrLeaseExpired,
		sdk.ErrReplayDetected, sdk.ErrUnavailable, sdk.ErrTransport, sdk.ErrNotConnected, sdk.ErrActionFailed, sdk.ErrServer}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStub(t, "")
			c := newClient(t, s, nil, sdk.WithRetry(sdk.RetryPolicy{MaxAttempts: 1}))
			connect(t, c)
			s.script("POST /v1/actions/echo/execute", tt.answer)
			_, err := c.Execute(context.Background(), "echo", map[string]any{"m": 1})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Execute() error = %v, want %v", err, tt.want)
			}
			for _, k := range kinds {
				want := k == tt.want || (k == sdk.ErrAuth && tt.alsoAuth)
				if got := errors.Is(err, k); got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", k, got, want)
				}
			}
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("errors.As(%v, *sdk.Error) = false", err)
			}
			if e.Status != tt.answer.status {
				t.Errorf("Status = %d, want %d", e.Status, tt.answer.status)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestTransportError(t *testing.T) {
	rec := &recorder{}
	c, err := sdk.New(sdk.WithSocket(filepath.Join(t.TempDir(), "none.sock")), sdk.WithLogger(quietLogger()),
		sdk.WithSleepForTest(rec.sleep), sdk.WithGetenvForTest(func(string) string { return "" }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ListActions(context.Background())
	if !errors.Is(err, sdk.ErrTransport) {
		t.Fatalf("ListActions() error = %v, want ErrTransport", err)
	}
	if got := len(rec.got()); got != sdk.DefaultMaxAttempts-1 {
		t.Errorf("backoff sleeps = %d, want %d (a safe call is retried)", got, sdk.DefaultMaxAttempts-1)
	}
	for _, d := range rec.got() {
		if d < 0 || d > sdk.DefaultMaxDelay {
			t.Errorf("backoff delay = %v, want within [0, %v]", d, sdk.DefaultMaxDelay)
		}
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	s := newStub(t, "")
	rec := &recorder{}
	c := newClient(t, s, rec)
	s.script("GET /v1/actions", scripted{status: 503, header: map[string]string{"Retry-After": "3"}, body: errBody("store_unavailable", nil)})
	acts, err := c.ListActions(context.Background())
	if err != nil {
		t.Fatalf("ListActions() error = %v", err)
	}
	if len(acts) != 2 || acts[0].ActionID != "echo" {
		t.Errorf("ListActions() = %+v, want echo and http_fetch", acts)
	}
	if got := s.count("GET /v1/actions"); got != 2 {
		t.Errorf("requests = %d, want 2", got)
	}
	if got := rec.got(); !slices.Equal(got, []time.Duration{3 * time.Second}) {
		t.Errorf("sleeps = %v, want [3s]", got)
	}
}

func TestRetryAfterAboveCapIsNotWaited(t *testing.T) {
	s := newStub(t, "")
	rec := &recorder{}
	c := newClient(t, s, rec, sdk.WithRetry(sdk.RetryPolicy{MaxRetryAfter: 10 * time.Second}))
	s.script("GET /v1/actions", scripted{status: 429, header: map[string]string{"Retry-After": "60"}, body: errBody("rate_limited", nil)})
	_, err := c.ListActions(context.Background())
	var e *sdk.Error
	if !errors.As(err, &e) || !errors.Is(err, sdk.ErrUnavailable) || e.RetryAfter != time.Minute {
		t.Fatalf("ListActions() error = %v, want ErrUnavailable with RetryAfter 1m", err)
	}
	if n := s.count("GET /v1/actions"); n != 1 || len(rec.got()) != 0 {
		t.Errorf("requests, sleeps = %d, %v, want 1, []", n, rec.got())
	}
}

func TestExecuteRetry(t *testing.T) {
	unavailable := scripted{status: 503, body: errBody("policy_unavailable", nil)}
	tests := []struct {
		name         string
		opts         []sdk.ExecOption
		answers      []scripted
		wantErr      error
		wantRequests int
		wantKey      string // "" none, "*" any (generated), else exact
	}{
		{name: "generated_key_retried", answers: []scripted{unavailable}, wantRequests: 2, wantKey: "*"},
		{name: "in_progress_retried", answers: []scripted{{status: 409, body: errBody("idempotency_in_progress", nil)}}, wantRequests: 2, wantKey: "*"},
		{name: "caller_key_retried", opts: []sdk.ExecOption{sdk.WithIdempotencyKey("my-key-1")}, answers: []scripted{unavailable}, wantRequests: 2, wantKey: "my-key-1"},
		{name: "no_key_not_retried", opts: []sdk.ExecOption{sdk.WithoutIdempotencyKey()}, answers: []scripted{unavailable}, wantErr: sdk.ErrUnavailable, wantRequests: 1},
		{name: "502_never_retried", answers: []scripted{{status: 502, body: errBody("action_execution_failed", map[string]any{"receipt_id": "r-1"})}}, wantErr: sdk.ErrActionFailed, wantRequests: 1, wantKey: "*"},
		{name: "500_not_retried", answers: []scripted{{status: 500, body: errBody("internal_error", nil)}}, wantErr: sdk.ErrServer, wantRequests: 1, wantKey: "*"},
		{name: "denied_not_retried", answers: []scripted{{status: 403, body: errBody("policy_denied", nil)}}, wantErr: sdk.ErrDenied, wantRequests: 1, wantKey: "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStub(t, "")
			c := newClient(t, s, nil)
			connect(t, c)
			s.script("POST /v1/actions/echo/execute", tt.answers...)
			res, err := c.Execute(context.Background(), "echo", map[string]any{"message": "hi"}, tt.opts...)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Execute() error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && string(res.Output) != `{"message":"hi"}` {
				t.Errorf("Execute().Output = %s, want the echo", res.Output)
			}
			reqs := s.requests("POST /v1/actions/echo/execute")
			if len(reqs) != tt.wantRequests {
				t.Fatalf("execute requests = %d, want %d", len(reqs), tt.wantRequests)
			}
			keys := map[string]bool{}
			for _, r := range reqs {
				keys[r.Header.Get("Idempotency-Key")] = true
			}
			if len(keys) != 1 {
				t.Errorf("Idempotency-Keys = %v, want one key for the logical call", keys)
			}
			for k := range keys {
				switch {
				case tt.wantKey == "" && k != "":
					t.Errorf("Idempotency-Key = %q, want none", k)
				case tt.wantKey == "*" && (k == "" || len(k) > 128):
					t.Errorf("Idempotency-Key = %q, want a generated key", k)
				case tt.wantKey != "" && tt.wantKey != "*" && k != tt.wantKey:
					t.Errorf("Idempotency-Key = %q, want %q", k, tt.wantKey)
				}
			}
		})
	}
}

func TestGeneratedIdempotencyKeyDiffersPerCall(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil)
	connect(t, c)
	for range 2 {
		if _, err := c.Execute(context.Background(), "echo", nil); err != nil {
			t.Fatal(err)
		}
	}
	reqs := s.requests("POST /v1/actions/echo/execute")
	if k0, k1 := reqs[0].Header.Get("Idempotency-Key"), reqs[1].Header.Get("Idempotency-Key"); k0 == k1 {
		t.Errorf("two logical calls share Idempotency-Key %q", k0)
	}
}

func TestRenewalCoalesced(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil)
	connect(t, c)
	before, _ := c.Lease()
	s.clock.Advance(250 * time.Second) // ttl 300s, renew 60s before expiry
	const n = 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := c.Execute(context.Background(), "echo", map[string]any{"x": 1})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Execute() error = %v", err)
		}
	}
	if got := s.count("POST /v1/leases/renew"); got != 1 {
		t.Errorf("renew requests = %d, want exactly 1", got)
	}
	if got := s.count("POST /v1/leases"); got != 1 {
		t.Errorf("lease requests = %d, want 1 (renewal keeps the session)", got)
	}
	after, _ := c.Lease()
	if after.SessionID != before.SessionID || after.LeaseJTI == before.LeaseJTI || !after.ExpiresAt.After(before.ExpiresAt) {
		t.Errorf("lease after renewal = %+v, want same session, new jti, later expiry than %+v", after, before)
	}
	// The renewed lease is used: the old one expires and calls still work.
	s.clock.Advance(100 * time.Second)
	if _, err := c.Execute(context.Background(), "echo", nil); err != nil {
		t.Errorf("Execute() after old expiry error = %v", err)
	}
	if got := s.count("POST /v1/leases/renew"); got != 1 {
		t.Errorf("renew requests = %d, want still 1", got)
	}
}

func TestRenewalNotBeforeDue(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil)
	connect(t, c)
	s.clock.Advance(200 * time.Second)
	if _, err := c.Execute(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	if got := s.count("POST /v1/leases/renew"); got != 0 {
		t.Errorf("renew requests = %d, want 0 before the renewal window", got)
	}
}

func TestExplicitRenewAndExpiredRenewal(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil)
	connect(t, c)
	before, _ := c.Lease()
	info, err := c.Renew(context.Background())
	if err != nil || info.SessionID != before.SessionID {
		t.Fatalf("Renew() = %+v, %v, want same session", info, err)
	}
	// Renewal refused past the session's lifetime: the error surfaces, the
	// SDK never opens a new session (and fresh budget) by itself.
	s.clock.Advance(290 * time.Second)
	s.script("POST /v1/leases/renew", scripted{status: 401, body: errBody("lease_expired", nil)})
	_, err = c.Execute(context.Background(), "echo", nil)
	if !errors.Is(err, sdk.ErrLeaseExpired) || !errors.Is(err, sdk.ErrAuth) {
		t.Fatalf("Execute() error = %v, want ErrLeaseExpired", err)
	}
	if got := s.count("POST /v1/leases"); got != 1 {
		t.Errorf("lease requests = %d, want 1", got)
	}
}

func TestRenewalTransientFailureUsesCurrentLease(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil, sdk.WithRetry(sdk.RetryPolicy{MaxAttempts: 1}))
	connect(t, c)
	s.clock.Advance(250 * time.Second)
	s.script("POST /v1/leases/renew", scripted{status: 503, body: errBody("store_unavailable", nil)})
	if _, err := c.Execute(context.Background(), "echo", nil); err != nil {
		t.Fatalf("Execute() error = %v, want success on the still-valid lease", err)
	}
}

func TestLazyConnect(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil, sdk.WithAgentID("lazy-agent"), sdk.WithScopes("tools:call"), sdk.WithBudgets(sdk.Budgets{MaxCalls: new(5)}), sdk.WithTTL(90*time.Second))
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := c.Execute(context.Background(), "echo", map[string]any{"a": "b"}); err != nil {
				t.Errorf("Execute() error = %v", err)
			}
		})
	}
	wg.Wait()
	if got := s.count("POST /v1/leases"); got != 1 {
		t.Fatalf("lease requests = %d, want 1 (lazy connect coalesced)", got)
	}
	s.mu.Lock()
	var leaseBody map[string]any
	for i, r := range s.reqs {
		if r.URL.Path == "/v1/leases" {
			_ = json.Unmarshal(s.bodies[i], &leaseBody)
		}
	}
	s.mu.Unlock()
	if leaseBody["agent_id"] != "lazy-agent" || leaseBody["ttl_seconds"] != float64(90) {
		t.Errorf("lease request = %v, want agent_id lazy-agent, ttl_seconds 90", leaseBody)
	}
	if b, _ := leaseBody["budgets"].(map[string]any); b["max_calls"] != float64(5) {
		t.Errorf("lease request budgets = %v, want max_calls 5", leaseBody["budgets"])
	}
	if jwk, _ := leaseBody["dpop_jwk"].(map[string]any); jwk["d"] != nil || jwk["kty"] != "EC" {
		t.Errorf("dpop_jwk = %v, want a public EC key", jwk)
	}
}

func TestNotConnected(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil)
	ctx := context.Background()
	calls := map[string]func() error{
		"Execute":           func() error { _, err := c.Execute(ctx, "echo", nil); return err },
		"GetReceipt":        func() error { _, err := c.GetReceipt(ctx, "x"); return err },
		"GetApprovalStatus": func() error { _, err := c.GetApprovalStatus(ctx, "x"); return err },
		"Renew":             func() error { _, err := c.Renew(ctx); return err },
	}
	for name, f := range calls {
		t.Run(name, func(t *testing.T) {
			if err := f(); !errors.Is(err, sdk.ErrNotConnected) {
				t.Errorf("%s() error = %v, want ErrNotConnected", name, err)
			}
		})
	}
	s.mu.Lock()
	n := len(s.reqs)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("requests sent = %d, want 0", n)
	}
	// Discovery needs no lease.
	if _, err := c.ListActions(ctx); err != nil {
		t.Errorf("ListActions() without lease error = %v", err)
	}
}

func TestProofPerRequest(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil)
	connect(t, c)
	ctx := context.Background()
	if _, err := c.Execute(ctx, "echo", map[string]any{"message": "<&>"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Execute(ctx, "echo", map[string]any{"message": "<&>"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetReceipt(ctx, "0194f3a0-0000-7000-8000-000000000001"); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	jtis := map[string]bool{}
	for i, r := range s.reqs {
		if r.URL.Path == "/v1/leases" {
			continue
		}
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "DPoP ")
		cl, reason := verifyProof(r.Header.Get("DPoP"), s.leases[token].jkt, r.Method, "http://localhost"+r.URL.EscapedPath(), token, s.bodies[i], s.clock.Now().Unix())
		if reason != "" {
			t.Errorf("proof for %s %s: %s", r.Method, r.URL.Path, reason)
		}
		if cl.IAT != s.clock.Now().Unix() {
			t.Errorf("proof iat = %d, want the injected clock %d", cl.IAT, s.clock.Now().Unix())
		}
		if jtis[cl.JTI] {
			t.Errorf("jti %q reused", cl.JTI)
		}
		jtis[cl.JTI] = true
		if r.Method == "GET" && (cl.BH == nil || *cl.BH != sha(nil)) {
			t.Errorf("GET proof bh = %v, want hash of the empty body", cl.BH)
		}
	}
	if len(jtis) != 3 {
		t.Errorf("proofs = %d, want 3", len(jtis))
	}
}

func TestReceiptFromGateVerified(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil)
	connect(t, c)
	ctx := context.Background()
	r, err := c.GetReceipt(ctx, "0194f3a0-0000-7000-8000-000000000001")
	if err != nil {
		t.Fatalf("GetReceipt() error = %v", err)
	}
	if r.SignatureStatus != "valid" || r.Seq != 1 || r.PrevHash != nil || !r.IsFullySuccessful() {
		t.Errorf("receipt = seq %d prev %v status %q fully %v", r.Seq, r.PrevHash, r.SignatureStatus, r.IsFullySuccessful())
	}
	if err := c.VerifyReceipt(ctx, r); err != nil {
		t.Errorf("VerifyReceipt() error = %v", err)
	}
	keys, err := c.ReceiptKeys(ctx)
	if err != nil || keys.Len() != 1 {
		t.Fatalf("ReceiptKeys() = %d keys, %v", keys.Len(), err)
	}
	tampered, err := c.GetReceipt(ctx, "tampered-3")
	if err != nil {
		t.Fatal(err)
	}
	// The gate says "valid"; the SDK does not trust it.
	if err := tampered.Verify(keys); !errors.Is(err, sdk.ErrReceiptHash) {
		t.Errorf("Verify(tampered) error = %v, want ErrReceiptHash", err)
	}
	// Changing a typed field does not change what is verified.
	r.Hash = "sha256:00"
	if err := r.Verify(keys); err != nil {
		t.Errorf("Verify() after editing the typed Hash error = %v, want nil (Raw is verified)", err)
	}
}

func TestWaitForApproval(t *testing.T) {
	s := newStub(t, "")
	rec := &recorder{}
	c := newClient(t, s, rec)
	connect(t, c)
	route := "GET /v1/approvals/ap-1/poll"
	s.script(route,
		scripted{status: 200, body: `{"status":"pending","retry_after_seconds":3,"expires_at":"2026-01-15T11:00:00Z"}`},
		scripted{status: 200, body: `{"status":"pending","expires_at":"2026-01-15T11:00:00Z"}`},
		scripted{status: 200, body: `{"status":"approved","receipt_id":"r-7","output":{"ok":true}}`},
	)
	st, err := c.WaitForApproval(context.Background(), "ap-1")
	if err != nil {
		t.Fatalf("WaitForApproval() error = %v", err)
	}
	if st.Status != sdk.ApprovalApproved || st.ReceiptID != "r-7" || string(st.Output) != `{"ok":true}` {
		t.Errorf("WaitForApproval() = %+v, want approved r-7", st)
	}
	if got := rec.got(); !slices.Equal(got, []time.Duration{3 * time.Second, 2 * time.Second}) {
		t.Errorf("poll sleeps = %v, want [3s 2s] (retry_after_seconds, then the default)", got)
	}
	// Context ends while pending: last status and the context error.
	s.script(route, scripted{status: 200, body: `{"status":"pending","retry_after_seconds":1}`})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st, err = c.WaitForApproval(ctx, "ap-1")
	if !errors.Is(err, context.Canceled) && !errors.Is(err, sdk.ErrTransport) {
		t.Errorf("WaitForApproval(cancelled) = %+v, %v, want a context error", st, err)
	}
}

func TestGetActionEgress(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil)
	tests := []struct {
		id      string
		profile string
		domains []string
	}{
		{"echo", sdk.EgressNone, nil},
		{"http_fetch", sdk.EgressProxyAllowlist, []string{"api.example.com", "httpbin.org"}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			e, err := c.GetActionEgress(context.Background(), tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if e.Profile != tt.profile || !slices.Equal(e.AllowedDomains, tt.domains) || e.HasEgress() != (tt.profile != sdk.EgressNone) {
				t.Errorf("GetActionEgress(%s) = %+v, want %s %v", tt.id, e, tt.profile, tt.domains)
			}
		})
	}
	if _, err := c.GetActionEgress(context.Background(), "nope"); !errors.Is(err, sdk.ErrDenied) {
		t.Errorf("GetActionEgress(nope) error = %v, want ErrDenied", err)
	}
}

func TestClose(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil, sdk.WithAgentID("a"))
	if _, err := c.Execute(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Execute(context.Background(), "echo", nil); !errors.Is(err, sdk.ErrClosed) {
		t.Errorf("Execute() after Close error = %v, want ErrClosed", err)
	}
}

func TestURLResolution(t *testing.T) {
	s := newStub(t, "")
	tcpHits := 0
	var mu sync.Mutex
	tcp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tcpHits++
		mu.Unlock()
		writeJSON(w, 200, map[string]any{"actions": []any{}})
	}))
	defer tcp.Close()
	tests := []struct {
		name    string
		opts    []sdk.Option
		env     string
		wantTCP bool
	}{
		{name: "base_url_wins", opts: []sdk.Option{sdk.WithBaseURL(tcp.URL), sdk.WithSocket(s.sock)}, env: "http://127.0.0.1:1", wantTCP: true},
		{name: "env_over_socket", opts: []sdk.Option{sdk.WithSocket(s.sock)}, env: tcp.URL, wantTCP: true},
		{name: "socket", opts: []sdk.Option{sdk.WithSocket(s.sock)}, wantTCP: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			tcpHits = 0
			mu.Unlock()
			before := s.count("GET /v1/actions")
			opts := append([]sdk.Option{sdk.WithLogger(quietLogger()), sdk.WithGetenvForTest(func(k string) string {
				if k == "LATCHGATE_URL" {
					return tt.env
				}
				return ""
			})}, tt.opts...)
			c, err := sdk.New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.ListActions(context.Background()); err != nil {
				t.Fatalf("ListActions() error = %v", err)
			}
			mu.Lock()
			gotTCP := tcpHits == 1
			mu.Unlock()
			if gotTCP != tt.wantTCP || (s.count("GET /v1/actions") > before) == tt.wantTCP {
				t.Errorf("request went to TCP = %v, want %v", gotTCP, tt.wantTCP)
			}
		})
	}
	for _, bad := range []string{"ftp://x", "localhost:3000", "http://", "http://h/?q=1"} {
		if _, err := sdk.New(sdk.WithBaseURL(bad)); err == nil {
			t.Errorf("New(WithBaseURL(%q)) error = nil, want refusal", bad)
		}
	}
}

func TestTCPProofHTU(t *testing.T) {
	// Over TCP the htu base is the base URL (normalised).
	var got string
	tcp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/leases":
			writeJSON(w, 200, map[string]any{"lease_jwt": "L", "session_id": "s", "lease_jti": "j", "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		default:
			parts := strings.Split(r.Header.Get("DPoP"), ".")
			cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var c stubClaims
			_ = json.Unmarshal(cb, &c)
			got = c.HTU
			writeJSON(w, 200, map[string]any{"status": "pending"})
		}
	}))
	defer tcp.Close()
	c, err := sdk.New(sdk.WithBaseURL(strings.Replace(tcp.URL, "http://", "HTTP://", 1)+"/"), sdk.WithAgentID("a"), sdk.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetApprovalStatus(context.Background(), "ap"); err != nil {
		t.Fatal(err)
	}
	if want := tcp.URL + "/v1/approvals/ap/poll"; got != want {
		t.Errorf("proof htu = %q, want %q", got, want)
	}
}

func TestDefaultSocketSafety(t *testing.T) {
	mk := func(t *testing.T, mode os.FileMode) string {
		d, err := os.MkdirTemp("", "lgsafe")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir := filepath.Join(d, "latchgate")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		newStub(t, dir)
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) []string // candidate socket paths
		ok    bool
	}{
		{name: "safe_dir", ok: true, setup: func(t *testing.T) []string {
			return []string{filepath.Join(mk(t, 0o700), "gate.sock")}
		}},
		{name: "group_readable_dir", ok: true, setup: func(t *testing.T) []string {
			return []string{filepath.Join(mk(t, 0o750), "gate.sock")}
		}},
		{name: "missing_first_falls_through", ok: true, setup: func(t *testing.T) []string {
			return []string{filepath.Join(t.TempDir(), "x", "gate.sock"), filepath.Join(mk(t, 0o700), "gate.sock")}
		}},
		{name: "world_writable_dir", ok: false, setup: func(t *testing.T) []string {
			return []string{filepath.Join(mk(t, 0o777), "gate.sock")}
		}},
		{name: "symlink_dir", ok: false, setup: func(t *testing.T) []string {
			real := mk(t, 0o700)
			link := filepath.Join(filepath.Dir(real), "link")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			return []string{filepath.Join(link, "gate.sock")}
		}},
		{name: "unsafe_first_not_skipped", ok: false, setup: func(t *testing.T) []string {
			return []string{filepath.Join(mk(t, 0o777), "gate.sock"), filepath.Join(mk(t, 0o700), "gate.sock")}
		}},
		{name: "not_a_socket", ok: false, setup: func(t *testing.T) []string {
			dir := t.TempDir()
			p := filepath.Join(dir, "gate.sock")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{p}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := tt.setup(t)
			c, err := sdk.New(sdk.WithSocketPathsForTest(paths...), sdk.WithLogger(quietLogger()),
				sdk.WithRetry(sdk.RetryPolicy{MaxAttempts: 1}), sdk.WithGetenvForTest(func(string) string { return "" }))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.ListActions(context.Background())
			if tt.ok && err != nil {
				t.Errorf("ListActions() via %v error = %v, want success", paths, err)
			}
			if !tt.ok && (!errors.Is(err, sdk.ErrUnsafeSocket) || !errors.Is(err, sdk.ErrTransport)) {
				t.Errorf("ListActions() via %v error = %v, want ErrUnsafeSocket (ErrTransport)", paths, err)
			}
		})
	}
}

func TestDefaultSocketOrder(t *testing.T) {
	got := sdk.DefaultSocketPathsForTest(func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return "/run/user/1000"
		}
		return ""
	}, 1000)
	want := []string{"/run/latchgate/gate.sock", "/run/user/1000/latchgate/gate.sock", "/tmp/latchgate-1000/gate.sock"}
	if !slices.Equal(got, want) {
		t.Errorf("defaultSocketPaths() = %v, want %v", got, want)
	}
	got = sdk.DefaultSocketPathsForTest(func(string) string { return "relative" }, 7)
	if want := []string{"/run/latchgate/gate.sock", "/tmp/latchgate-7/gate.sock"}; !slices.Equal(got, want) {
		t.Errorf("defaultSocketPaths(relative XDG) = %v, want %v", got, want)
	}
}

func TestLazyConnectFailureNotRetriedTwice(t *testing.T) {
	s := newStub(t, "")
	rec := &recorder{}
	c := newClient(t, s, rec, sdk.WithAgentID("a"), sdk.WithRetry(sdk.RetryPolicy{MaxAttempts: 2}))
	s.script("POST /v1/leases",
		scripted{status: 503, body: errBody("store_unavailable", nil)},
		scripted{status: 503, body: errBody("store_unavailable", nil)})
	_, err := c.Execute(context.Background(), "echo", nil)
	if !errors.Is(err, sdk.ErrUnavailable) {
		t.Fatalf("Execute() error = %v, want ErrUnavailable", err)
	}
	if got := s.count("POST /v1/leases"); got != 2 {
		t.Errorf("lease requests = %d, want 2 (MaxAttempts, not MaxAttempts²)", got)
	}
	if got := s.count("POST /v1/actions/echo/execute"); got != 0 {
		t.Errorf("execute requests = %d, want 0", got)
	}
}

// Arguments with a string that is not valid UTF-8 (at any depth, map keys
// included) are refused before anything is sent: encoding/json would have
// replaced the bad bytes with U+FFFD and the action run on other text.
func TestExecuteRefusesInvalidUTF8(t *testing.T) {
	s := newStub(t, "")
	c := newClient(t, s, nil, sdk.WithAgentID("a"))
	type inner struct{ Note string }
	for name, args := range map[string]any{
		"value":        map[string]any{"s": "ok\xffno"},
		"key":          map[string]string{"k\xfe": "v"},
		"nested slice": map[string]any{"l": []any{"fine", []string{"\xc3("}}},
		"struct field": struct{ In *inner }{&inner{Note: "\xed\xa0\x80"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.Execute(context.Background(), "echo", args)
			var e *sdk.Error
			if !errors.As(err, &e) || e.Code != "invalid_json" || !errors.Is(err, sdk.ErrDenied) {
				t.Fatalf("Execute() error = %v, want invalid_json (ErrDenied)", err)
			}
		})
	}
	if got := s.count("POST /v1/actions/echo/execute"); got != 0 {
		t.Errorf("execute requests = %d, want 0", got)
	}
	// Valid text, bytes (sent as base64) and a json.RawMessage still go.
	if _, err := c.Execute(context.Background(), "echo", map[string]any{"s": "héllo ✓", "b": []byte{0xff}, "r": json.RawMessage(`{"x":1}`)}); err != nil {
		t.Fatalf("Execute(valid) = %v", err)
	}
}
