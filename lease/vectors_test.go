package lease_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/lease"
)

// The gate's lease package must agree with the shared vectors that every
// SDK also tests against (definitions/test_vectors/dpop).
const vecDir = "../definitions/test_vectors/dpop/"

func readVec(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(vecDir + name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
}

func TestVectorThumbprints(t *testing.T) {
	var v struct {
		Cases []struct {
			Name       string
			JWK        json.RawMessage
			Thumbprint string
		}
	}
	readVec(t, "thumbprints.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("no thumbprint vectors")
	}
	for _, c := range v.Cases {
		k, err := lease.ParseAgentJWK(c.JWK)
		if err != nil {
			t.Fatalf("%s: ParseAgentJWK: %v", c.Name, err)
		}
		if got := lease.Thumbprint(k); got != c.Thumbprint {
			t.Errorf("Thumbprint(%s) = %s, want %s", c.Name, got, c.Thumbprint)
		}
	}
}

func TestVectorHTU(t *testing.T) {
	var v struct {
		Cases []struct{ Input, Normalized string }
	}
	readVec(t, "htu.json", &v)
	if len(v.Cases) == 0 {
		t.Fatal("no htu vectors")
	}
	for _, c := range v.Cases {
		if got := lease.NormalizeHTU(c.Input); got != c.Normalized {
			t.Errorf("NormalizeHTU(%q) = %q, want %q", c.Input, got, c.Normalized)
		}
	}
}

func TestVectorProofs(t *testing.T) {
	var v struct {
		JKT           string `json:"jkt"`
		LeaseToken    string `json:"lease_token"`
		Now           int64  `json:"now"`
		MaxAgeSeconds int64  `json:"max_age_seconds"`
		SkewSeconds   int64  `json:"skew_seconds"`
		Proofs        []struct {
			Name        string `json:"name"`
			Proof       string `json:"proof"`
			HTM         string `json:"htm"`
			HTU         string `json:"htu"`
			BodyB64     string `json:"body_b64url"`
			ExpectValid bool   `json:"expect_valid"`
		} `json:"proofs"`
	}
	readVec(t, "proofs.json", &v)
	clk := clock.NewFake(time.Unix(v.Now, 0))
	keys, err := lease.LoadKeys(t.TempDir(), clk)
	if err != nil {
		t.Fatal(err)
	}
	a, err := lease.New(lease.Config{
		ProofMaxAge: time.Duration(v.MaxAgeSeconds) * time.Second, ProofFutureSkew: time.Duration(v.SkewSeconds) * time.Second,
	}, keys, lease.Deps{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range v.Proofs {
		t.Run(p.Name, func(t *testing.T) {
			body, err := base64.RawURLEncoding.DecodeString(p.BodyB64)
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.VerifyProof(lease.ProofRequest{
				Proof: p.Proof, Method: p.HTM, HTU: lease.NormalizeHTU(p.HTU), LeaseToken: v.LeaseToken, Body: body, JKT: v.JKT,
			})
			if (err == nil) != p.ExpectValid {
				t.Fatalf("VerifyProof(%s) = %v, want valid %v", p.Name, err, p.ExpectValid)
			}
		})
	}
}
