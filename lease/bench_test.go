package lease_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/lease/leasetest"
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

// BenchmarkVerifyProofParallel is BenchmarkVerifyProof on every core, as
// the gate runs it.
func BenchmarkVerifyProofParallel(b *testing.B) {
	e := newEnv(b, lease.Config{})
	body := []byte(`{"msg":"hi"}`)
	req := lease.ProofRequest{
		Proof: e.agent.Proof("POST", testHTU, e.token, body), Method: "POST", HTU: testHTU,
		LeaseToken: e.token, Body: body, JKT: e.agent.Thumbprint(),
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.auth.VerifyProof(req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkVerifyProofDistinctHeaders verifies proofs whose header segments
// all differ (an extra header member), more of them than any header cache
// holds: the cost of a proof whose header was not seen before.
func BenchmarkVerifyProofDistinctHeaders(b *testing.B) {
	e := newEnv(b, lease.Config{})
	body := []byte(`{"msg":"hi"}`)
	reqs := make([]lease.ProofRequest, 1<<13)
	for i := range reqs {
		reqs[i] = lease.ProofRequest{
			Proof:  e.agent.Proof("POST", testHTU, e.token, body, leasetest.WithHeader("n", i)),
			Method: "POST", HTU: testHTU, LeaseToken: e.token, Body: body, JKT: e.agent.Thumbprint(),
		}
	}
	i := 0
	for b.Loop() {
		if _, err := e.auth.VerifyProof(reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkES256Verify is the floor under BenchmarkVerifyProof: one
// crypto/ecdsa.Verify of a P-256 signature over a SHA-256 digest.
func BenchmarkES256Verify(b *testing.B) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256([]byte("header.payload"))
	r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !ecdsa.Verify(&priv.PublicKey, sum[:], r, s) {
			b.Fatal("signature refused")
		}
	}
}
