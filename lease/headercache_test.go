package lease_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/lease/leasetest"
)

// proofReason verifies proof for a POST of body with e's lease and jkt, and
// returns "" when it is accepted or the deny reason.
func proofReason(t *testing.T, e *env, proof, jkt string, body []byte) string {
	t.Helper()
	_, err := e.auth.VerifyProof(lease.ProofRequest{Proof: proof, Method: "POST", HTU: testHTU, LeaseToken: e.token, Body: body, JKT: jkt})
	if err == nil {
		return ""
	}
	var pe *lease.ProofError
	if !errors.As(err, &pe) {
		t.Fatalf("VerifyProof = %v, want a *ProofError", err)
	}
	return pe.Reason
}

// TestProofHeaderCacheJKT checks that a cached header still has its
// thumbprint compared with the lease's on every proof.
func TestProofHeaderCacheJKT(t *testing.T) {
	e := newEnv(t, lease.Config{})
	body := []byte(`{}`)
	other := leasetest.NewAgentKey()
	proof := func() string { return e.agent.Proof("POST", testHTU, e.token, body) }
	steps := []struct {
		name, jkt, want string
	}{
		{"other_lease_cold", other.Thumbprint(), "jkt_mismatch"},
		{"own_lease", e.agent.Thumbprint(), ""},
		{"other_lease_cached", other.Thumbprint(), "jkt_mismatch"},
		{"empty_jkt_cached", "", "jkt_mismatch"},
		{"prefix_jkt_cached", e.agent.Thumbprint()[:42], "jkt_mismatch"},
		{"own_lease_again", e.agent.Thumbprint(), ""},
	}
	for _, s := range steps {
		if got := proofReason(t, e, proof(), s.jkt, body); got != s.want {
			t.Errorf("%s: VerifyProof reason = %q, want %q", s.name, got, s.want)
		}
	}
	if n := e.auth.ProofHeaderCacheLen(); n != 1 {
		t.Errorf("ProofHeaderCacheLen = %d, want 1 (one agent header)", n)
	}
}

// TestProofHeaderCacheRefusals checks that a refused header is refused again,
// for the same reason, however often it comes and whatever is cached, and
// that only headers of fully verified signatures are cached. Every proof here
// is signed by the agent's key.
func TestProofHeaderCacheRefusals(t *testing.T) {
	body := []byte(`{}`)
	jwkWith := func(e *env, name string, value any) leasetest.ProofOption {
		var m map[string]any
		if err := json.Unmarshal(e.agent.JWK(), &m); err != nil {
			t.Fatal(err)
		}
		m[name] = value
		return leasetest.WithHeader("jwk", m)
	}
	cases := []struct {
		name string
		opt  func(e *env) leasetest.ProofOption
		want string
	}{
		{"bad_typ", func(*env) leasetest.ProofOption { return leasetest.WithTyp("jwt") }, "bad_typ"},
		{"alg_none", func(*env) leasetest.ProofOption { return leasetest.WithAlg("none") }, "bad_alg"},
		{"header_kid", func(*env) leasetest.ProofOption { return leasetest.WithHeader("kid", "k1") }, "forbidden_header"},
		{"header_jku", func(*env) leasetest.ProofOption { return leasetest.WithHeader("jku", "https://example.com") }, "forbidden_header"},
		{"jwk_d", func(e *env) leasetest.ProofOption {
			return jwkWith(e, "d", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
		}, "bad_jwk"},
		{"jwk_not_on_curve", func(e *env) leasetest.ProofOption { return jwkWith(e, "y", strings.Repeat("A", 43)) }, "bad_jwk"},
		{"jwk_crv", func(e *env) leasetest.ProofOption { return jwkWith(e, "crv", "P-384") }, "bad_jwk"},
		{"duplicate_member", func(e *env) leasetest.ProofOption {
			return leasetest.WithRawHeader(`{"typ":"dpop+jwt","alg":"ES256","\u0061lg":"ES256","jwk":` + string(e.agent.JWK()) + `}`)
		}, "duplicate_member"},
		{"trailing_data", func(e *env) leasetest.ProofOption {
			return leasetest.WithRawHeader(`{"typ":"dpop+jwt","alg":"ES256","jwk":` + string(e.agent.JWK()) + `}x`)
		}, "malformed"},
		{"good_header_bad_signature", func(*env) leasetest.ProofOption {
			return leasetest.SignedBy(leasetest.NewAgentKey())
		}, "bad_signature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, lease.Config{})
			bad := e.agent.Proof("POST", testHTU, e.token, body, c.opt(e))
			for round := range 3 {
				if got := proofReason(t, e, bad, e.agent.Thumbprint(), body); got != c.want {
					t.Fatalf("round %d: VerifyProof reason = %q, want %q", round, got, c.want)
				}
				if n := e.auth.ProofHeaderCacheLen(); n != min(round, 1) {
					t.Fatalf("round %d: ProofHeaderCacheLen = %d, want %d (refused headers are never cached)", round, n, min(round, 1))
				}
				// A good proof in between fills the cache with the agent's
				// own header; the bad one must not match it.
				if got := proofReason(t, e, e.agent.Proof("POST", testHTU, e.token, body), e.agent.Thumbprint(), body); got != "" {
					t.Fatalf("round %d: good proof refused: %s", round, got)
				}
			}
		})
	}
}

// TestProofHeaderCacheLaterChecks checks that a proof whose header is cached
// still has its signature and every claim checked.
func TestProofHeaderCacheLaterChecks(t *testing.T) {
	e := newEnv(t, lease.Config{})
	body := []byte(`{}`)
	if got := proofReason(t, e, e.agent.Proof("POST", testHTU, e.token, body), e.agent.Thumbprint(), body); got != "" {
		t.Fatalf("warm-up proof refused: %s", got)
	}
	tampered := func() string {
		p := strings.Split(e.agent.Proof("POST", testHTU, e.token, body), ".")
		other := strings.Split(e.agent.Proof("GET", testHTU, e.token, body), ".")
		return p[0] + "." + other[1] + "." + p[2]
	}
	cases := []struct {
		name, proof, want string
	}{
		{"signed_by_other_key", e.agent.Proof("POST", testHTU, e.token, body, leasetest.SignedBy(leasetest.NewAgentKey())), "bad_signature"},
		{"payload_tampered", tampered(), "bad_signature"},
		{"wrong_htm", e.agent.Proof("GET", testHTU, e.token, body), "bad_htm"},
		{"wrong_htu", e.agent.Proof("POST", "http://localhost/v1/other", e.token, body), "bad_htu"},
		{"old_iat", e.agent.Proof("POST", testHTU, e.token, body, leasetest.WithIAT(t0().Unix()-61)), "iat_too_old"},
		{"other_lease", e.agent.Proof("POST", testHTU, e.token+"x", body), "bad_ath"},
		{"other_body", e.agent.Proof("POST", testHTU, e.token, []byte(`{"x":1}`)), "bad_bh"},
		{"duplicate_claim", e.agent.Proof("POST", testHTU, e.token, body, leasetest.WithRawPayload(`{"jti":"abcdefgh","jti":"abcdefgh"}`)), "duplicate_member"},
	}
	for _, c := range cases {
		if !strings.HasPrefix(c.proof, strings.Split(e.agent.Proof("POST", testHTU, e.token, body), ".")[0]+".") {
			t.Fatalf("%s: proof does not carry the cached header", c.name)
		}
		for round := range 2 {
			if got := proofReason(t, e, c.proof, e.agent.Thumbprint(), body); got != c.want {
				t.Errorf("%s round %d: VerifyProof reason = %q, want %q", c.name, round, got, c.want)
			}
		}
	}
}

// TestProofHeaderCacheBounded checks that distinct headers, such as an
// attacker can make, never grow the cache past its size, that a long header
// is not cached, and that proofs verify the same either way.
func TestProofHeaderCacheBounded(t *testing.T) {
	const size = 8
	e := newEnv(t, lease.Config{})
	e.auth.SetProofHeaderCacheSize(size)
	body := []byte(`{}`)
	for i := range 3 * size {
		p := e.agent.Proof("POST", testHTU, e.token, body, leasetest.WithHeader("n", i))
		for round := range 2 {
			if got := proofReason(t, e, p, e.agent.Thumbprint(), body); got != "" {
				t.Fatalf("proof %d round %d refused: %s", i, round, got)
			}
		}
		if n := e.auth.ProofHeaderCacheLen(); n > size || n < min(i+1, size) {
			t.Fatalf("ProofHeaderCacheLen after %d headers = %d, want min(%d, %d)", i+1, n, i+1, size)
		}
	}
	e.auth.SetProofHeaderCacheSize(size)
	long := e.agent.Proof("POST", testHTU, e.token, body, leasetest.WithHeader("pad", strings.Repeat("p", 1024)))
	for round := range 2 {
		if got := proofReason(t, e, long, e.agent.Thumbprint(), body); got != "" {
			t.Fatalf("long-header proof round %d refused: %s", round, got)
		}
	}
	if n := e.auth.ProofHeaderCacheLen(); n != 0 {
		t.Errorf("ProofHeaderCacheLen after a long header = %d, want 0", n)
	}
	if lease.ProofHeaderCacheSize < 1000 || lease.ProofHeaderCacheSize > 100000 {
		t.Errorf("ProofHeaderCacheSize = %d, want a few thousand", lease.ProofHeaderCacheSize)
	}
}

// TestProofHeaderCacheConcurrent verifies good and bad proofs of several
// agents from several goroutines through a tiny cache (meaningful under
// -race): every outcome is the one a cold verifier gives.
func TestProofHeaderCacheConcurrent(t *testing.T) {
	e := newEnv(t, lease.Config{})
	e.auth.SetProofHeaderCacheSize(2)
	body := []byte(`{}`)
	type job struct{ proof, jkt, want string }
	var jobs []job
	for i := range 4 {
		a := leasetest.NewAgentKey()
		a.Clock = e.clk
		jobs = append(jobs,
			job{a.Proof("POST", testHTU, e.token, body), a.Thumbprint(), ""},
			job{a.Proof("POST", testHTU, e.token, body), e.agent.Thumbprint(), "jkt_mismatch"},
			job{a.Proof("POST", testHTU, e.token, body, leasetest.WithAlg("none")), a.Thumbprint(), "bad_alg"},
			job{a.Proof("POST", testHTU, e.token, body, leasetest.WithHeader("n", i)), a.Thumbprint(), ""},
		)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 3 * len(jobs) {
				j := jobs[(g+i)%len(jobs)]
				if got := proofReason(t, e, j.proof, j.jkt, body); got != j.want {
					t.Errorf("job %d: VerifyProof reason = %q, want %q", (g+i)%len(jobs), got, j.want)
				}
			}
		})
	}
	wg.Wait()
	if n := e.auth.ProofHeaderCacheLen(); n > 2 {
		t.Errorf("ProofHeaderCacheLen = %d, want ≤ 2", n)
	}
}
