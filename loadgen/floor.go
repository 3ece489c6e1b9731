package loadgen

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/definitions"
	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
)

// Floor is the measured in-process cost of the work no execute can avoid.
type Floor struct {
	VerifyProofUS float64 `json:"verify_proof_us"` // lease.Authority.VerifyProof (ES256 + claims)
	SignReceiptUS float64 `json:"sign_receipt_us"` // receipts.SignHash (Ed25519)
	PolicyUS      float64 `json:"policy_us"`       // policy.Engine.Decide, embedded policy, a full evaluation (decision cache off)
	TotalUS       float64 `json:"floor_us"`
}

// MeasureFloor times each floor piece over iterations runs on one
// goroutine, with the gate's own lease, receipts and policy packages.
func MeasureFloor(ctx context.Context, iterations int) (*Floor, error) {
	if iterations < 1 {
		iterations = 1
	}
	dir, err := os.MkdirTemp("", "latchgate-floor-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	clk := clock.Real{}
	keys, err := lease.LoadKeys(dir, clk)
	if err != nil {
		return nil, err
	}
	auth, err := lease.New(lease.Config{RequireBodyHash: true}, keys, lease.Deps{Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	a, err := newAgent("/nonexistent", time.Second)
	if err != nil {
		return nil, err
	}
	jwkJSON, err := json.Marshal(a.jwk())
	if err != nil {
		return nil, err
	}
	jwk, err := lease.ParseAgentJWK(jwkJSON)
	if err != nil {
		return nil, err
	}
	jkt := lease.Thumbprint(jwk)
	token, err := auth.Issue(lease.Claims{Subject: "agent:bench", SessionID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", JKT: jkt, Scopes: []string{"tools:call"}})
	if err != nil {
		return nil, err
	}
	a.setLease(token)
	proof, err := a.proof(time.Now())
	if err != nil {
		return nil, err
	}
	req := lease.ProofRequest{Proof: proof, Method: "POST", HTU: a.execHTU, LeaseToken: token, Body: a.body, JKT: jkt}
	f := &Floor{}
	f.VerifyProofUS, err = timeIt(iterations, func() error { _, err := auth.VerifyProof(req); return err })
	if err != nil {
		return nil, fmt.Errorf("floor: verify proof: %w", err)
	}

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	hash, err := receipts.HashJSON([]byte(`{"receipt_id":"bench"}`))
	if err != nil {
		return nil, err
	}
	f.SignReceiptUS, _ = timeIt(iterations, func() error { _ = receipts.SignHash(priv, hash); return nil })

	eng, err := policy.New(policy.Config{FS: definitions.Policies, AllowAllActions: true, DecisionCacheSize: -1}, policy.Deps{Logger: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	in := EchoPolicyInput(now)
	f.PolicyUS, err = timeIt(iterations, func() error {
		d, err := eng.Decide(ctx, in, now)
		if err == nil && !d.Allow {
			err = fmt.Errorf("policy denied the bench input: %v", d.DenyReasons)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("floor: policy: %w", err)
	}
	f.TotalUS = f.VerifyProofUS + f.SignReceiptUS + f.PolicyUS
	return f, nil
}

// MeanFloor is the piecewise mean of two measurements of the floor.
func MeanFloor(a, b *Floor) *Floor {
	return &Floor{
		VerifyProofUS: (a.VerifyProofUS + b.VerifyProofUS) / 2,
		SignReceiptUS: (a.SignReceiptUS + b.SignReceiptUS) / 2,
		PolicyUS:      (a.PolicyUS + b.PolicyUS) / 2,
		TotalUS:       (a.TotalUS + b.TotalUS) / 2,
	}
}

// EchoPolicyInput is the policy input the gate builds for a bench execute.
func EchoPolicyInput(now time.Time) *policy.Input {
	calls := int64(1000)
	return &policy.Input{
		Principal: "agent:bench-0", SessionID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", AgentID: "bench-0",
		Peer: policy.Peer{UID: 1000, GID: 1000, PID: 4242},
		Action: policy.Action{
			ID: "echo", Version: "1.0.0", RiskLevel: "low", RequiredScopes: []string{"tools:call"}, SideEffects: []string{},
			Egress: policy.Egress{Profile: "none", AllowedDomains: []string{}, LearnedDomains: []string{}},
		},
		Request: policy.Request{
			Args: json.RawMessage(`{"message":"bench"}`), Hash: "sha256:00", SizeBytes: 19,
			TargetHosts: []string{}, UnresolvedDomains: []string{},
		},
		Lease:            policy.Lease{Scopes: []string{"tools:call"}, ExpiresAt: now.Add(time.Hour).UTC().Format(time.RFC3339)},
		Budget:           policy.Budget{CallsRemaining: &calls},
		Time:             policy.NewTime(now),
		StandingApproval: json.RawMessage("null"),
	}
}

// timeIt returns the mean CPU time of fn in microseconds, measured as the
// calling thread's CPU time (so other processes on a shared machine do not
// inflate it), after a short warm-up. It runs at least n iterations and at
// least minFloorCPU of CPU time, so the clock's resolution does not matter.
func timeIt(n int, fn func() error) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range min(n/10+1, 50) {
		if err := fn(); err != nil {
			return 0, err
		}
	}
	c0, err := threadCPU()
	if err != nil {
		return 0, err
	}
	var done int
	var used time.Duration
	for done < n || used < minFloorCPU {
		for range max(n, 1) {
			if err := fn(); err != nil {
				return 0, err
			}
		}
		done += max(n, 1)
		c1, err := threadCPU()
		if err != nil {
			return 0, err
		}
		used = c1 - c0
	}
	return float64(used.Nanoseconds()) / float64(done) / 1000, nil
}

// minFloorCPU is the least CPU time each floor piece is measured over.
const minFloorCPU = 50 * time.Millisecond

// threadCPU is the calling OS thread's user+system CPU time.
func threadCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// rusageThread is RUSAGE_THREAD (Linux).
const rusageThread = 1
