package lease_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/latchgate/latchgate/lease"
	"github.com/rs/zerolog"
)

func TestIssueVerify(t *testing.T) {
	e := newEnv(t, lease.Config{})
	calls, cents := int64(10), int64(0)
	in := lease.Claims{
		Subject: "agent:bot", SessionID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", AgentID: "bot",
		JKT: e.agent.Thumbprint(), Scopes: []string{"tools:call", "audit:read"},
		Budgets: lease.Budgets{MaxCalls: &calls, MaxCostCents: &cents},
	}
	tok, issued, err := e.auth.IssueClaims(in)
	if err != nil {
		t.Fatalf("IssueClaims = %v", err)
	}
	if id, err := uuid.Parse(issued.JTI); err != nil || id.Version() != 7 {
		t.Errorf("IssueClaims jti = %q, want a UUIDv7", issued.JTI)
	}
	if !issued.IssuedAt.Equal(t0()) || !issued.ExpiresAt.Equal(t0().Add(300*time.Second)) {
		t.Errorf("IssueClaims times = %v..%v, want %v..+300s", issued.IssuedAt, issued.ExpiresAt, t0())
	}
	got, err := e.auth.VerifyLease(tok)
	if err != nil {
		t.Fatalf("VerifyLease = %v", err)
	}
	if gj, _ := json.Marshal(got); string(gj) != string(mustJSON(t, issued)) {
		t.Errorf("VerifyLease = %s, want %s", gj, mustJSON(t, issued))
	}

	// The wire claims match PROTOCOL §2.2.
	var hdr, payload map[string]any
	parts := strings.Split(tok, ".")
	decodePart(t, parts[0], &hdr)
	decodePart(t, parts[1], &payload)
	if hdr["alg"] != "ES256" || hdr["kid"] != e.keys.ActiveKID() || hdr["typ"] != "JWT" {
		t.Errorf("lease header = %v, want alg ES256, kid %s, typ JWT", hdr, e.keys.ActiveKID())
	}
	for k, want := range map[string]any{
		"iss": "latchgate", "aud": "latchgate", "sub": "agent:bot", "session_id": in.SessionID,
		"agent_id": "bot", "jti": issued.JTI, "iat": float64(t0().Unix()), "nbf": float64(t0().Unix()),
		"exp": float64(t0().Unix() + 300),
	} {
		if payload[k] != want {
			t.Errorf("lease claim %s = %v, want %v", k, payload[k], want)
		}
	}
	if cnf, _ := payload["cnf"].(map[string]any); cnf["jkt"] != e.agent.Thumbprint() {
		t.Errorf("lease cnf = %v, want jkt %s", payload["cnf"], e.agent.Thumbprint())
	}
	if b, _ := json.Marshal(payload["budgets"]); string(b) != `{"max_calls":10,"max_cost_usd_cents":0}` {
		t.Errorf("lease budgets = %s", b)
	}
	if b, _ := json.Marshal(payload["scope"]); string(b) != `["tools:call","audit:read"]` {
		t.Errorf("lease scope = %s", b)
	}

	// agent_id is omitted when empty; budgets is {}.
	in.AgentID, in.Budgets = "", lease.Budgets{}
	tok, err = e.auth.Issue(in)
	if err != nil {
		t.Fatal(err)
	}
	payload = nil
	decodePart(t, strings.Split(tok, ".")[1], &payload)
	if _, ok := payload["agent_id"]; ok {
		t.Errorf("lease payload %v has agent_id, want it omitted", payload)
	}
}

func TestIssueRefuses(t *testing.T) {
	e := newEnv(t, lease.Config{})
	ok := lease.Claims{Subject: "s", SessionID: "sid", JKT: e.agent.Thumbprint()}
	cases := []struct {
		name string
		mod  func(c *lease.Claims)
	}{
		{"no_subject", func(c *lease.Claims) { c.Subject = "" }},
		{"no_session", func(c *lease.Claims) { c.SessionID = "" }},
		{"no_jkt", func(c *lease.Claims) { c.JKT = "" }},
		{"bad_jkt", func(c *lease.Claims) { c.JKT = "not-a-thumbprint" }},
		{"exp_before_iat", func(c *lease.Claims) { c.IssuedAt = t0(); c.ExpiresAt = t0().Add(-time.Second) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := ok
			c.mod(&in)
			if tok, err := e.auth.Issue(in); err == nil {
				t.Errorf("Issue(%+v) = %q, nil; want an error", in, tok)
			}
		})
	}
}

func TestIssueClampsTTL(t *testing.T) {
	e := newEnv(t, lease.Config{})
	_, got, err := e.auth.IssueClaims(lease.Claims{Subject: "s", SessionID: "sid", JKT: e.agent.Thumbprint(), ExpiresAt: t0().Add(5 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if want := t0().Add(time.Hour); !got.ExpiresAt.Equal(want) {
		t.Errorf("IssueClaims(exp=+5h).ExpiresAt = %v, want %v", got.ExpiresAt, want)
	}
}

func TestExpiry(t *testing.T) {
	e := newEnv(t, lease.Config{})
	now := t0().Add(500 * time.Millisecond)
	cases := []struct {
		name      string
		requested time.Duration
		start     time.Time
		want      time.Time
		expired   bool
	}{
		{"default", 0, time.Time{}, t0().Add(300 * time.Second), false},
		{"requested", 10 * time.Minute, time.Time{}, t0().Add(10 * time.Minute), false},
		{"clamped_to_max", 2 * time.Hour, time.Time{}, t0().Add(time.Hour), false},
		{"clamped_to_session", time.Hour, t0().Add(-24*time.Hour + time.Minute), t0().Add(time.Minute), false},
		{"session_over", time.Hour, t0().Add(-24 * time.Hour), time.Time{}, true},
		{"session_ends_this_second", time.Hour, t0().Add(-24*time.Hour + 800*time.Millisecond), time.Time{}, true},
		{"session_ends_next_second", time.Hour, t0().Add(-24*time.Hour + 1200*time.Millisecond), t0().Add(time.Second), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := e.auth.Expiry(now, c.requested, c.start)
			if c.expired {
				if !errors.Is(err, lease.ErrLeaseExpired) {
					t.Errorf("Expiry(%v, %v) = %v, %v; want ErrLeaseExpired", c.requested, c.start, got, err)
				}
				return
			}
			if err != nil || !got.Equal(c.want) {
				t.Errorf("Expiry(%v, %v) = %v, %v; want %v", c.requested, c.start, got, err, c.want)
			}
		})
	}
}

func TestVerifyLease(t *testing.T) {
	e := newEnv(t, lease.Config{})
	otherEnv := newEnv(t, lease.Config{})
	otherIssuer, err := lease.New(lease.Config{Issuer: "other"}, e.keys, lease.Deps{Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	good := func() map[string]any {
		return map[string]any{
			"iss": "latchgate", "aud": "latchgate", "sub": "s", "jti": "j", "session_id": "sid",
			"iat": t0().Unix(), "nbf": t0().Unix(), "exp": t0().Unix() + 300,
			"scope": []string{"tools:call"}, "budgets": map[string]any{}, "cnf": map[string]any{"jkt": e.agent.Thumbprint()},
		}
	}
	without := func(k string) map[string]any { m := good(); delete(m, k); return m }
	with := func(kv ...any) map[string]any {
		m := good()
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	key := dirKey(t, e.dir)
	cases := []struct {
		name string
		tok  func() string
		want error
	}{
		{"ok/issued", func() string { return e.token }, nil},
		{"ok/hand_made", func() string { return signJWT(t, key, jose.ES256, good()) }, nil},
		{"fail/empty", func() string { return "" }, lease.ErrLeaseInvalid},
		{"fail/oversized", func() string { return e.token + strings.Repeat("A", 8<<10) }, lease.ErrLeaseInvalid},
		{"fail/garbage", func() string { return "a.b.c" }, lease.ErrLeaseInvalid},
		{"fail/tampered_signature", func() string { return flipLast(e.token) }, lease.ErrLeaseInvalid},
		{"fail/tampered_payload", func() string {
			p := strings.Split(e.token, ".")
			other := strings.Split(signJWT(t, key, jose.ES256, with("sub", "root")), ".")
			return p[0] + "." + other[1] + "." + p[2]
		}, lease.ErrLeaseInvalid},
		{"fail/other_keys_dir", func() string { return otherEnv.token }, lease.ErrLeaseInvalid},
		{"fail/our_kid_other_key", func() string {
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			return signJWT(t, jose.JSONWebKey{Key: other, KeyID: key.KeyID}, jose.ES256, good())
		}, lease.ErrLeaseInvalid},
		{"fail/alg_none", func() string { return unsignedJWT(t, key.KeyID, "none", good()) }, lease.ErrLeaseInvalid},
		{"fail/alg_HS256_public_key", func() string {
			pub, _ := key.Public().Key.(*ecdsa.PublicKey).Bytes()
			return signJWT(t, jose.JSONWebKey{Key: pub, KeyID: key.KeyID}, jose.HS256, good())
		}, lease.ErrLeaseInvalid},
		{"fail/alg_ES384", func() string {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			return signJWT(t, jose.JSONWebKey{Key: k, KeyID: key.KeyID}, jose.ES384, good())
		}, lease.ErrLeaseInvalid},
		{"fail/wrong_iss", func() string {
			tok, err := otherIssuer.Issue(lease.Claims{Subject: "s", SessionID: "sid", JKT: e.agent.Thumbprint()})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, lease.ErrLeaseInvalid},
		{"fail/wrong_aud", func() string { return signJWT(t, key, jose.ES256, with("aud", "other")) }, lease.ErrLeaseInvalid},
		{"fail/two_aud", func() string { return signJWT(t, key, jose.ES256, with("aud", []string{"latchgate", "x"})) }, lease.ErrLeaseInvalid},
		{"fail/missing_session_id", func() string { return signJWT(t, key, jose.ES256, without("session_id")) }, lease.ErrLeaseInvalid},
		{"fail/missing_cnf", func() string { return signJWT(t, key, jose.ES256, without("cnf")) }, lease.ErrLeaseInvalid},
		{"fail/missing_sub", func() string { return signJWT(t, key, jose.ES256, without("sub")) }, lease.ErrLeaseInvalid},
		{"fail/exp_not_after_iat", func() string { return signJWT(t, key, jose.ES256, with("exp", t0().Unix())) }, lease.ErrLeaseInvalid},
		{"fail/missing_exp", func() string { return signJWT(t, key, jose.ES256, without("exp")) }, lease.ErrLeaseInvalid},
		{"fail/not_yet_valid", func() string { return signJWT(t, key, jose.ES256, with("nbf", t0().Unix()+6)) }, lease.ErrLeaseInvalid},
		{"ok/nbf_within_leeway", func() string { return signJWT(t, key, jose.ES256, with("nbf", t0().Unix()+5)) }, nil},
		{"fail/iat_future", func() string { return signJWT(t, key, jose.ES256, with("iat", t0().Unix()+6)) }, lease.ErrLeaseInvalid},
		{"fail/expired", func() string { return signJWT(t, key, jose.ES256, with("iat", t0().Unix()-300, "exp", t0().Unix()-5)) }, lease.ErrLeaseExpired},
		{"ok/exp_within_leeway", func() string { return signJWT(t, key, jose.ES256, with("iat", t0().Unix()-300, "exp", t0().Unix()-4)) }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := c.tok()
			got, err := e.auth.VerifyLease(tok)
			if c.want == nil {
				if err != nil {
					t.Errorf("VerifyLease = %v, want ok", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Errorf("VerifyLease = %+v, %v; want %v", got, err, c.want)
			}
		})
	}
}

func TestVerifyLeaseExpiryAndCache(t *testing.T) {
	e := newEnv(t, lease.Config{})
	c, err := e.auth.VerifyLease(e.token) // cached now
	if err != nil {
		t.Fatalf("VerifyLease = %v", err)
	}
	c.Scopes[0] = "mutated"
	again, err := e.auth.VerifyLease(e.token)
	if err != nil || again.Scopes[0] != "tools:call" {
		t.Errorf("VerifyLease (cached) = %+v, %v; want unmutated scopes", again, err)
	}
	e.clk.Advance(300*time.Second + 4*time.Second) // exp + leeway - 1s
	if _, err := e.auth.VerifyLease(e.token); err != nil {
		t.Errorf("VerifyLease at exp+4s = %v, want ok (leeway 5s)", err)
	}
	e.clk.Advance(time.Second)
	if _, err := e.auth.VerifyLease(e.token); !errors.Is(err, lease.ErrLeaseExpired) {
		t.Errorf("VerifyLease (cached) at exp+5s = %v, want ErrLeaseExpired", err)
	}
	// A fresh Authority (no cache) agrees.
	fresh, err := lease.New(lease.Config{}, e.keys, lease.Deps{Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.VerifyLease(e.token); !errors.Is(err, lease.ErrLeaseExpired) {
		t.Errorf("VerifyLease (uncached) at exp+5s = %v, want ErrLeaseExpired", err)
	}
}

func TestLeaseCacheBounded(t *testing.T) {
	e := newEnv(t, lease.Config{CacheSize: 3})
	var toks []string
	for i := range 5 {
		tok, err := e.auth.Issue(lease.Claims{Subject: "s", SessionID: "sid", JKT: e.agent.Thumbprint(), ExpiresAt: t0().Add(time.Duration(60+i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
		if _, err := e.auth.VerifyLease(tok); err != nil {
			t.Fatalf("VerifyLease #%d = %v", i, err)
		}
		if n := e.auth.CacheLen(); n > 3 {
			t.Fatalf("CacheLen after %d = %d, want ≤ 3", i+1, n)
		}
	}
	// Expired entries are dropped on the next insert.
	e.clk.Advance(2 * time.Minute)
	tok, err := e.auth.Issue(lease.Claims{Subject: "s", SessionID: "sid", JKT: e.agent.Thumbprint()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.auth.VerifyLease(tok); err != nil {
		t.Fatal(err)
	}
	if n := e.auth.CacheLen(); n != 1 {
		t.Errorf("CacheLen after expiry = %d, want 1", n)
	}
	for _, old := range toks {
		if _, err := e.auth.VerifyLease(old); !errors.Is(err, lease.ErrLeaseExpired) {
			t.Errorf("VerifyLease(old) = %v, want ErrLeaseExpired", err)
		}
	}
}

func TestRotation(t *testing.T) {
	e := newEnv(t, lease.Config{})
	oldKID := e.keys.ActiveKID()
	// A second gate sharing the keys dir.
	keys2, err := lease.LoadKeys(e.dir, e.clk)
	if err != nil {
		t.Fatal(err)
	}
	gate2, err := lease.New(lease.Config{}, keys2, lease.Deps{Clock: e.clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Second)
	if err := e.keys.Rotate(); err != nil {
		t.Fatalf("Rotate = %v", err)
	}
	if e.keys.ActiveKID() == oldKID {
		t.Fatalf("ActiveKID after Rotate = %s, want a new kid", oldKID)
	}
	if _, err := e.auth.VerifyLease(e.token); err != nil {
		t.Errorf("VerifyLease(old-key lease) after Rotate = %v, want ok", err)
	}
	tok, err := e.auth.Issue(lease.Claims{Subject: "s", SessionID: "sid", JKT: e.agent.Thumbprint()})
	if err != nil {
		t.Fatal(err)
	}
	var hdr map[string]any
	decodePart(t, strings.Split(tok, ".")[0], &hdr)
	if hdr["kid"] != e.keys.ActiveKID() {
		t.Errorf("new lease kid = %v, want %s", hdr["kid"], e.keys.ActiveKID())
	}
	// gate2 has not seen the new key: it re-reads the dir for the unknown kid.
	if _, err := gate2.VerifyLease(tok); err != nil {
		t.Errorf("other gate VerifyLease(new-key lease) = %v, want ok after reload", err)
	}
	var set struct{ Keys []map[string]string }
	if err := json.Unmarshal(e.keys.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Keys[0]["kid"] != e.keys.ActiveKID() || set.Keys[1]["kid"] != oldKID {
		t.Errorf("JWKS after Rotate = %s, want new then old kid", e.keys.JWKS())
	}
}

// dirKey returns the (only) private signing key in dir as a go-jose JWK.
func dirKey(t *testing.T, dir string) jose.JSONWebKey {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "lease-*.jwk"))
	if len(files) != 1 {
		t.Fatalf("key files = %v, want 1", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	return k
}

// signJWT signs claims with key (kid from key.KeyID) and alg.
func signJWT(t *testing.T, key jose.JSONWebKey, alg jose.SignatureAlgorithm, claims map[string]any) string {
	t.Helper()
	var sk any = key
	if alg == jose.HS256 {
		sk = key.Key
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if alg == jose.HS256 {
		opts = opts.WithHeader("kid", key.KeyID)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: sk}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(mustJSON(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unsignedJWT builds header.payload. with the given alg.
func unsignedJWT(t *testing.T, kid, alg string, claims map[string]any) string {
	h := mustJSON(t, map[string]any{"alg": alg, "kid": kid, "typ": "JWT"})
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(mustJSON(t, claims)) + "."
}

func flipLast(tok string) string {
	i := len(tok) - 2 // not the last char: its low bits may be padding
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

func decodePart(t *testing.T, part string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConcurrentVerify exercises the cache and the proof path from several
// goroutines (meaningful under -race).
func TestConcurrentVerify(t *testing.T) {
	e := newEnv(t, lease.Config{CacheSize: 4})
	var toks []string
	for range 8 {
		tok, err := e.auth.Issue(lease.Claims{Subject: "s", SessionID: "sid", JKT: e.agent.Thumbprint()})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				tok := toks[(i+j)%len(toks)]
				if _, err := e.auth.VerifyLease(tok); err != nil {
					t.Errorf("VerifyLease = %v", err)
				}
				p := e.agent.Proof("GET", testHTU, tok, nil)
				if _, err := e.auth.VerifyProof(lease.ProofRequest{Proof: p, Method: "GET", HTU: testHTU, LeaseToken: tok, JKT: e.agent.Thumbprint()}); err != nil {
					t.Errorf("VerifyProof = %v", err)
				}
			}
		})
	}
	wg.Wait()
}
