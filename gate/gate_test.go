package gate_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/lease/leasetest"
)

const echoPath = "/v1/actions/echo/execute"

// heldManifests holds echo_held, a high-risk echo that policy always holds.
const heldManifests = "../testdata/smoke-manifests"

func newAgent(t *testing.T, s *gatetest.Server, extra map[string]any) *gatetest.Agent {
	t.Helper()
	a := s.NewAgent(t)
	if extra == nil {
		extra = map[string]any{}
	}
	if _, ok := extra["agent_id"]; !ok {
		extra["agent_id"] = "tester"
	}
	a.MustLease(extra)
	return a
}

// on returns an agent of s that uses ag's key and lease.
func on(t *testing.T, s *gatetest.Server, ag *gatetest.Agent) *gatetest.Agent {
	t.Helper()
	x := s.NewAgent(t)
	x.Key, x.Lease, x.Sess = ag.Key, ag.Lease, ag.Sess
	return x
}

func wantStatus(t *testing.T, r *gatetest.Response, status int, code string) {
	t.Helper()
	if r.Status != status || r.Code() != code {
		t.Fatalf("answer = %d %q (%s), want %d %q", r.Status, r.Code(), r.Body, status, code)
	}
}

// receiptKeys fetches /v1/receipt-keys as kid → public key, using only
// the protocol.
func receiptKeys(t *testing.T, s *gatetest.Server) map[string]ed25519.PublicKey {
	t.Helper()
	r := gatetest.Do(t, s.Client(), "GET", "/v1/receipt-keys", nil, nil)
	var set struct {
		Keys []struct{ Kty, Crv, X, Kid, Use, Alg string }
	}
	if err := json.Unmarshal(r.Body, &set); err != nil || r.Status != 200 {
		t.Fatalf("receipt-keys: %d %s", r.Status, r.Body)
	}
	out := map[string]ed25519.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" {
			t.Fatalf("receipt key %+v is not an Ed25519 signing JWK", k)
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil {
			t.Fatal(err)
		}
		// kid is the RFC 7638 thumbprint.
		tp := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + k.X + `"}`))
		if got := base64.RawURLEncoding.EncodeToString(tp[:]); got != k.Kid {
			t.Fatalf("kid = %s, want thumbprint %s", k.Kid, got)
		}
		out[k.Kid] = x
	}
	return out
}

// verifyReceipt recomputes the receipt's hash with JCS and checks its
// signature, exactly as PROTOCOL §5 says a third party would.
func verifyReceipt(t *testing.T, raw []byte, keys map[string]ed25519.PublicKey) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	hash, _ := m["hash"].(string)
	sig, _ := m["signature"].(string)
	kid, _ := m["key_id"].(string)
	if m["signature_status"] != "valid" {
		t.Errorf("signature_status = %v, want valid", m["signature_status"])
	}
	for _, k := range []string{"hash", "signature", "key_id", "signature_status"} {
		delete(m, k)
	}
	b, _ := json.Marshal(m)
	canon, err := jcs.Transform(b)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canon)
	if want := "sha256:" + hex.EncodeToString(sum[:]); hash != want {
		t.Fatalf("receipt hash = %s, recomputed %s", hash, want)
	}
	s, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := keys[kid]
	if !ok || !ed25519.Verify(pub, []byte(hash), s) {
		t.Fatalf("receipt signature does not verify with key %s", kid)
	}
	m["hash"] = hash
	return m
}

// TestProtocolOnlyClient: lease → execute echo → receipt → JCS hash →
// Ed25519 signature → prev_hash chain.
func TestProtocolOnlyClient(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	if p := a.Answer["principal"]; p != "agent:tester" {
		t.Errorf("principal = %v, want agent:tester", p)
	}
	keys := receiptKeys(t, s)
	var prevHash string
	for i := range 3 {
		args := map[string]any{"n": i, "msg": "héllo"}
		r := a.Execute("echo", args, nil)
		wantStatus(t, r, 200, "")
		body := r.JSON()
		if body["decision"] != "executed" || body["verification_outcome"] != "unverifiable_declared" {
			t.Fatalf("execute body = %s", r.Body)
		}
		out, _ := json.Marshal(body["output"])
		want, _ := json.Marshal(args)
		if !bytes.Equal(out, want) {
			t.Errorf("output = %s, want %s", out, want)
		}
		id := body["receipt_id"].(string)
		rr := a.Call("GET", "/v1/receipts/"+id, nil)
		wantStatus(t, rr, 200, "")
		rc := verifyReceipt(t, rr.Body, keys)
		if rc["seq"] != float64(i+1) {
			t.Errorf("seq = %v, want %d", rc["seq"], i+1)
		}
		if i == 0 && rc["prev_hash"] != nil {
			t.Errorf("first prev_hash = %v, want null", rc["prev_hash"])
		}
		if i > 0 && rc["prev_hash"] != prevHash {
			t.Errorf("prev_hash = %v, want %s", rc["prev_hash"], prevHash)
		}
		prevHash = rc["hash"].(string)
		// request_hash is the JCS hash of the arguments.
		canon, _ := jcs.Transform(want)
		sum := sha256.Sum256(canon)
		if rc["request_hash"] != "sha256:"+hex.EncodeToString(sum[:]) {
			t.Errorf("request_hash = %v", rc["request_hash"])
		}
	}
}

// TestDPoPRules: every proof rule refuses with its code, and a refused
// proof never consumes its jti.
func TestDPoPRules(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	other := leasetest.NewAgentKey()
	body := []byte(`{"x":1}`)
	now := time.Now().Unix()
	htu := "http://localhost" + echoPath
	tests := []struct {
		name   string
		proof  func() string
		header http.Header
		code   string
		deny   string
	}{
		{name: "wrong-htu", proof: func() string { return a.Key.Proof("POST", "http://localhost/v1/actions/other/execute", a.Lease, body) }, code: "invalid_dpop", deny: "bad_htu"},
		{name: "wrong-htm", proof: func() string { return a.Key.Proof("GET", htu, a.Lease, body) }, code: "invalid_dpop", deny: "bad_htm"},
		{name: "old-iat", proof: func() string { return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithIAT(now-120)) }, code: "invalid_dpop", deny: "iat_too_old"},
		{name: "future-iat", proof: func() string { return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithIAT(now+60)) }, code: "invalid_dpop", deny: "iat_in_future"},
		{name: "missing-ath", proof: func() string { return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithoutATH()) }, code: "invalid_dpop", deny: "missing_ath"},
		{name: "wrong-ath", proof: func() string { return a.Key.Proof("POST", htu, "other-token", body) }, code: "invalid_dpop", deny: "bad_ath"},
		{name: "wrong-bh", proof: func() string { return a.Key.Proof("POST", htu, a.Lease, []byte(`{"x":2}`)) }, code: "invalid_dpop", deny: "bad_bh"},
		{name: "wrong-typ", proof: func() string { return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithTyp("JWT")) }, code: "invalid_dpop", deny: "bad_typ"},
		{name: "alg-none", proof: func() string { return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithAlg("none")) }, code: "invalid_dpop", deny: "bad_alg"},
		{name: "other-key", proof: func() string { return other.Proof("POST", htu, a.Lease, body) }, code: "invalid_dpop", deny: "jkt_mismatch"},
		{name: "bearer-scheme", proof: func() string { return a.Key.Proof("POST", htu, a.Lease, body) }, header: http.Header{"Authorization": {"Bearer x"}}, code: "invalid_lease"},
		{name: "missing-dpop", proof: func() string { return "" }, code: "missing_auth_header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jti := fmt.Sprintf("jti-%s-%d", tt.name, time.Now().UnixNano())
			proof := tt.proof()
			if proof != "" && tt.name != "other-key" {
				// Re-sign with a known jti so we can check it stays unused.
				proof = rebuildWithJTI(t, a, tt.name, body, jti, now)
			}
			h := http.Header{"Authorization": {"DPoP " + a.Lease}, "Content-Type": {"application/json"}}
			if proof != "" {
				h.Set("DPoP", proof)
			}
			for k, v := range tt.header {
				h[k] = v
			}
			r := gatetest.Do(t, s.Client(), "POST", echoPath, body, h)
			wantStatus(t, r, 401, tt.code)
			if tt.deny != "" && r.JSON()["deny_reason"] != tt.deny {
				t.Errorf("deny_reason = %v, want %s", r.JSON()["deny_reason"], tt.deny)
			}
			// The refused proof's jti is still unused: a correct proof with it works.
			good := a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithJTI(jti))
			wantStatus(t, a.CallWithProof("POST", echoPath, body, good, nil), 200, "")
		})
	}
}

// rebuildWithJTI builds the named bad proof with a fixed jti.
func rebuildWithJTI(t *testing.T, a *gatetest.Agent, name string, body []byte, jti string, now int64) string {
	htu := "http://localhost" + echoPath
	j := leasetest.WithJTI(jti)
	switch name {
	case "wrong-htu":
		return a.Key.Proof("POST", "http://localhost/v1/actions/other/execute", a.Lease, body, j)
	case "wrong-htm":
		return a.Key.Proof("GET", htu, a.Lease, body, j)
	case "old-iat":
		return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithIAT(now-120), j)
	case "future-iat":
		return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithIAT(now+60), j)
	case "missing-ath":
		return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithoutATH(), j)
	case "wrong-ath":
		return a.Key.Proof("POST", htu, "other-token", body, j)
	case "wrong-bh":
		return a.Key.Proof("POST", htu, a.Lease, []byte(`{"x":2}`), j)
	case "wrong-typ":
		return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithTyp("JWT"), j)
	case "alg-none":
		return a.Key.Proof("POST", htu, a.Lease, body, leasetest.WithAlg("none"), j)
	case "bearer-scheme":
		return a.Key.Proof("POST", htu, a.Lease, body, j)
	}
	t.Fatalf("unknown case %s", name)
	return ""
}

func TestReplayDetected(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	body := []byte(`{}`)
	proof := a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body)
	wantStatus(t, a.CallWithProof("POST", echoPath, body, proof, nil), 200, "")
	wantStatus(t, a.CallWithProof("POST", echoPath, body, proof, nil), 401, "replay_detected")
}

// A proof refused for a wrong body (bh) still works with its right body.
func TestRefusedBodyProofStillUsable(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	right := []byte(`{"a":1}`)
	proof := a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, right)
	wantStatus(t, a.CallWithProof("POST", echoPath, []byte(`{"a":2}`), proof, nil), 401, "invalid_dpop")
	wantStatus(t, a.CallWithProof("POST", echoPath, right, proof, nil), 200, "")
}

// One proof sent 50 times in parallel runs exactly once.
func TestParallelReplay(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	body := []byte(`{}`)
	proof := a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body)
	var ok, replay atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a.CallWithProof("POST", echoPath, body, proof, nil)
			switch {
			case r.Status == 200:
				ok.Add(1)
			case r.Code() == "replay_detected":
				replay.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || replay.Load() != 49 {
		t.Fatalf("parallel replay: %d ok, %d replay; want 1 and 49", ok.Load(), replay.Load())
	}
	if n, _ := s.Ledger.Stats(); n != 1 {
		t.Fatalf("receipts = %d, want 1", n)
	}
}

func TestRenewBudgetRevoke(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, map[string]any{"budgets": map[string]any{"max_calls": 2}})
	sess := a.Sess
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 200, "")
	// Renew keeps the session and the running budget.
	r := a.Call("POST", "/v1/leases/renew", nil)
	wantStatus(t, r, 200, "")
	m := r.JSON()
	if m["session_id"] != sess {
		t.Fatalf("renewed session = %v, want %s", m["session_id"], sess)
	}
	a.Lease = m["lease_jwt"].(string)
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 200, "")
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 403, "budget_exhausted")

	b := newAgent(t, s, nil)
	wantStatus(t, b.Execute("echo", map[string]any{}, nil), 200, "")
	rv := gatetest.Do(t, s.AdminClient(), "POST", "/v1/leases/revoke", []byte(`{"session_id":"`+b.Sess+`"}`), http.Header{"Content-Type": {"application/json"}})
	wantStatus(t, rv, 200, "")
	wantStatus(t, b.Execute("echo", map[string]any{}, nil), 401, "lease_revoked")
}

// A principal's hourly ceiling holds across new sessions.
func TestPrincipalHourlyCeiling(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithConfig(gate.Config{
		GateID: "g", Dev: true, TrustAgentID: true,
		Principals: map[string]gate.Principal{"*": {AllowedScopes: []string{"tools:call"}, MaxCallsPerHour: 3}},
	}))
	ran := 0
	for range 3 {
		a := newAgent(t, s, map[string]any{"agent_id": "same"})
		for range 2 {
			r := a.Execute("echo", map[string]any{}, nil)
			if r.Status == 200 {
				ran++
			} else {
				wantStatus(t, r, 403, "budget_exhausted")
			}
		}
	}
	if ran != 3 {
		t.Fatalf("ran %d calls across sessions, want the hourly ceiling 3", ran)
	}
}

func TestHTTPErrorsAreJSON(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	big := bytes.Repeat([]byte("a"), 2<<20)
	tests := []struct {
		name, method, path string
		body               []byte
		header             http.Header
		status             int
		code               string
	}{
		{"unknown-route", "GET", "/v1/nope", nil, nil, 404, "not_found"},
		{"dot-segment", "GET", "/v1/../healthz", nil, nil, 404, "not_found"},
		{"double-slash", "GET", "//healthz", nil, nil, 404, "not_found"},
		{"wrong-method", "DELETE", "/v1/leases", nil, nil, 405, "method_not_allowed"},
		{"unknown-action", "POST", "/v1/actions/nope/execute", []byte(`{}`), nil, 404, "action_not_found"},
		{"too-large-lease", "POST", "/v1/leases", big, http.Header{"Content-Type": {"application/json"}}, 413, "payload_too_large"},
		{"too-large-execute", "POST", echoPath, big, nil, 413, "payload_too_large"},
		{"bad-json-lease", "POST", "/v1/leases", []byte(`{"dpop_jwk":`), http.Header{"Content-Type": {"application/json"}}, 400, "invalid_json"},
		{"wrong-type", "POST", "/v1/leases", []byte(`{"x":1}`), http.Header{"Content-Type": {"text/plain"}}, 415, "unsupported_media_type"},
		{"missing-jwk", "POST", "/v1/leases", []byte(`{}`), http.Header{"Content-Type": {"application/json"}}, 400, "invalid_request"},
		{"bad-scope", "POST", "/v1/leases", []byte(`{"dpop_jwk":` + string(a.Key.JWK()) + `,"scopes":["Bad Scope"]}`), http.Header{"Content-Type": {"application/json"}}, 400, "invalid_request"},
		{"no-auth", "POST", echoPath, []byte(`{}`), nil, 401, "missing_auth_header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := gatetest.Do(t, s.Client(), tt.method, tt.path, tt.body, tt.header)
			wantStatus(t, r, tt.status, tt.code)
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if m := r.JSON(); m["message"] == "" || m["message"] == nil {
				t.Errorf("error body lacks a message: %s", r.Body)
			}
		})
	}
	// Malformed arguments (authenticated) → 400 invalid_json.
	body := []byte(`{"a":1,"a":2}`)
	r := a.CallWithProof("POST", echoPath, body, a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body), nil)
	wantStatus(t, r, 400, "invalid_json")
	body = []byte(`{"a":`)
	r = a.CallWithProof("POST", echoPath, body, a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body), nil)
	wantStatus(t, r, 400, "invalid_json")
}

// Restart on the same state dir: the old lease works, old receipts are
// readable and seq continues.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	s1 := gatetest.NewServer(t, gatetest.WithStateDir(dir))
	a := newAgent(t, s1, nil)
	r := a.Execute("echo", map[string]any{"k": 1}, nil)
	wantStatus(t, r, 200, "")
	first := r.JSON()["receipt_id"].(string)
	s1.Close()

	s2 := gatetest.NewServer(t, gatetest.WithStateDir(dir))
	b := on(t, s2, a)
	r = b.Execute("echo", map[string]any{"k": 2}, nil)
	wantStatus(t, r, 200, "")
	rr := b.Call("GET", "/v1/receipts/"+first, nil)
	wantStatus(t, rr, 200, "")
	second := b.Call("GET", "/v1/receipts/"+r.JSON()["receipt_id"].(string), nil).JSON()
	if second["seq"] != float64(2) || second["prev_hash"] != rr.JSON()["hash"] {
		t.Fatalf("after restart seq = %v prev_hash = %v; want 2 linking to %v", second["seq"], second["prev_hash"], rr.JSON()["hash"])
	}
}

// Expired leases and leases signed by another gate's key are refused.
func TestLeaseValidity(t *testing.T) {
	clk := clock.NewFake(time.Now())
	s := gatetest.NewServer(t, gatetest.WithClock(clk))
	a := newAgent(t, s, map[string]any{"ttl_seconds": 60})
	clk.Advance(2 * time.Minute)
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 401, "lease_expired")

	other := gatetest.NewServer(t)
	b := newAgent(t, other, nil)
	c := s.NewAgent(t)
	c.Key, c.Lease = b.Key, b.Lease
	wantStatus(t, c.Execute("echo", map[string]any{}, nil), 401, "invalid_lease")
	// A lease whose payload was edited fails its signature.
	parts := strings.Split(b.Lease, ".")
	c.Lease = parts[0] + "." + parts[1] + "x." + parts[2]
	wantStatus(t, c.Execute("echo", map[string]any{}, nil), 401, "invalid_lease")
}

func TestAdminSocketOperatorsOnly(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithConfig(gate.Config{GateID: "g", Dev: true, Operators: map[uint32]string{4242424: "nobody"}}))
	r := gatetest.Do(t, s.AdminClient(), "GET", "/v1/admin/status", nil, nil)
	wantStatus(t, r, 403, "forbidden")
	// The admin routes do not exist on the client socket.
	r = gatetest.Do(t, s.Client(), "GET", "/v1/admin/status", nil, nil)
	wantStatus(t, r, 404, "not_found")
	r = gatetest.Do(t, s.Client(), "POST", "/v1/leases/revoke", []byte(`{"all":true}`), nil)
	wantStatus(t, r, 404, "not_found")
}

// Outside --dev an operator uid cannot take an agent lease.
func TestOperatorCannotTakeLeaseOutsideDev(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithConfig(gate.Config{GateID: "g", Dev: false}))
	a := s.NewAgent(t)
	wantStatus(t, a.TakeLease(nil), 403, "forbidden")
}

// TestPolicyCacheHitsCounted: the default policy's decisions are cached,
// and the hits show in latchgate_policy_cache_hits_total.
func TestPolicyCacheHitsCounted(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	for i := range 3 {
		wantStatus(t, a.Execute("echo", map[string]any{"n": i}, nil), 200, "")
	}
	r := gatetest.Do(t, s.AdminClient(), "GET", "/metrics", nil, nil)
	var hits float64 = -1
	for _, line := range strings.Split(string(r.Body), "\n") {
		if v, ok := strings.CutPrefix(line, "latchgate_policy_cache_hits_total "); ok {
			fmt.Sscan(v, &hits)
		}
	}
	if hits != 2 {
		t.Fatalf("latchgate_policy_cache_hits_total = %v after 3 executes by one agent; want 2", hits)
	}
}

// TestPolicyPendingWinsOverAllow: a decision that both allows and asks a
// human is held (ARCHITECTURE pipeline step 5: deny, then
// pending_approval, then allow), never run without the human.
func TestPolicyPendingWinsOverAllow(t *testing.T) {
	dir := t.TempDir()
	mod := "package latchgate\n\ndecision := {\"allow\": true, \"pending_approval\": true, \"deny_reasons\": []}\n"
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(mod), 0o600); err != nil {
		t.Fatal(err)
	}
	s := gatetest.NewServer(t, gatetest.WithPolicyDir(dir))
	a := newAgent(t, s, nil)
	r := a.Execute("echo", map[string]any{"n": 1}, nil)
	if r.Status != 202 || r.JSON()["decision"] != "pending_approval" {
		t.Fatalf("allow and pending_approval both true: answer = %d %s, want 202 pending_approval", r.Status, r.Body)
	}
}

// TestOverlappingReloadsKeepNewest: when two reloads overlap, the one that
// started (read the files) last stays in force; an older build that
// finishes late never replaces it.
func TestOverlappingReloadsKeepNewest(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	s := gatetest.NewServer(t, gatetest.WithReloadWrapper(func(load func() (*gate.Snapshot, error)) func() (*gate.Snapshot, error) {
		return func() (*gate.Snapshot, error) {
			snap, err := load()
			if calls.Add(1) == 1 {
				close(entered)
				<-release // the first build is slow
			}
			return snap, err
		}
	}))
	first := make(chan error, 1)
	go func() { first <- s.Gate.Reload() }()
	<-entered
	if err := s.Gate.Reload(); err != nil {
		t.Fatal(err)
	}
	newest := s.Gate.Snapshot()
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if s.Gate.Snapshot() != newest {
		t.Fatal("the older of two overlapping reloads replaced the newer one")
	}
}
