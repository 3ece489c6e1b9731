package lease_test

import (
	"testing"

	"github.com/latchgate/latchgate/lease"
)

func BenchmarkVerifyProof(b *testing.B) {
	e := newEnv(b, lease.Config{})
	body := []byte(`{"msg":"hi"}`)
	req := lease.ProofRequest{
		Proof: e.agent.Proof("POST", testHTU, e.token, body), Method: "POST", HTU: testHTU,
		LeaseToken: e.token, Body: body, JKT: e.agent.Thumbprint(),
	}
	for b.Loop() {
		if _, err := e.auth.VerifyProof(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyLeaseCached(b *testing.B) {
	e := newEnv(b, lease.Config{})
	for b.Loop() {
		if _, err := e.auth.VerifyLease(e.token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyLeaseUncached(b *testing.B) {
	e := newEnv(b, lease.Config{})
	for b.Loop() {
		a, err := lease.New(lease.Config{CacheSize: 1}, e.keys, lease.Deps{Clock: e.clk})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.VerifyLease(e.token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssue(b *testing.B) {
	e := newEnv(b, lease.Config{})
	c := lease.Claims{Subject: "uid:1000", SessionID: "sid", JKT: e.agent.Thumbprint(), Scopes: []string{"tools:call"}}
	for b.Loop() {
		if _, err := e.auth.Issue(c); err != nil {
			b.Fatal(err)
		}
	}
}
