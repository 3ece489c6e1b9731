package gate_test

// Concurrency: races on the replay cache, the budget, idempotency keys and
// revocation, on both stores.

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/store/storetest"
)

// stores runs f against a gate on each store.
func stores(t *testing.T, f func(t *testing.T, s *gatetest.Server)) {
	t.Run("embedded", func(t *testing.T) { f(t, gatetest.NewServer(t)) })
	t.Run("redis", func(t *testing.T) {
		url, _, _ := storetest.StartRedis(t)
		f(t, gatetest.NewServer(t, gatetest.WithRedis(url)))
	})
}

// parallel runs n calls at once (released together) and returns their answers.
func parallel(n int, call func(i int) *gatetest.Response) []*gatetest.Response {
	out := make([]*gatetest.Response, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = call(i)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

func tally(rs []*gatetest.Response) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		k := r.Code()
		if r.Status < 300 {
			k = fmt.Sprint(r.Status)
		}
		m[k]++
	}
	return m
}

// One proof sent 200 times at once: exactly one 200, 199 replays, one receipt.
func TestOneProofTwoHundredTimes(t *testing.T) {
	stores(t, func(t *testing.T, s *gatetest.Server) {
		a := newAgent(t, s, nil)
		body := []byte(`{}`)
		proof := a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body)
		got := tally(parallel(200, func(int) *gatetest.Response {
			return a.CallWithProof("POST", echoPath, body, proof, nil)
		}))
		if got["200"] != 1 || got["replay_detected"] != 199 {
			t.Fatalf("200 copies of one proof: %v, want 1×200 and 199×replay_detected", got)
		}
		if n, _ := s.Ledger.Stats(); n != 1 {
			t.Fatalf("receipts = %d, want 1", n)
		}
	})
}

// 100 parallel calls on max_calls 20: exactly 20 run and 20 receipts exist.
func TestBudgetRaceOneGate(t *testing.T) {
	stores(t, func(t *testing.T, s *gatetest.Server) {
		a := newAgent(t, s, map[string]any{"budgets": map[string]any{"max_calls": 20}})
		got := tally(parallel(100, func(i int) *gatetest.Response {
			return a.Execute("echo", map[string]any{"i": i}, nil)
		}))
		if got["200"] != 20 || got["budget_exhausted"] != 80 {
			t.Fatalf("100 calls on max_calls 20: %v, want 20×200 and 80×budget_exhausted", got)
		}
		if n, _ := s.Ledger.Stats(); n != 20 {
			t.Fatalf("receipts = %d, want 20", n)
		}
	})
}

// 16 parallel calls with one Idempotency-Key: one execution, one receipt;
// every 200 names that receipt, the others are 409 idempotency_in_progress.
func TestIdempotencyKeyRace(t *testing.T) {
	stores(t, func(t *testing.T, s *gatetest.Server) {
		a := newAgent(t, s, nil)
		h := http.Header{"Idempotency-Key": {"race-1"}}
		rs := parallel(16, func(int) *gatetest.Response {
			return a.Execute("echo", map[string]any{"same": true}, h)
		})
		ids := map[string]bool{}
		for _, r := range rs {
			switch {
			case r.Status == 200:
				ids[r.JSON()["receipt_id"].(string)] = true
			case r.Code() == "idempotency_in_progress":
			default:
				t.Fatalf("idempotent call: %d %s", r.Status, r.Body)
			}
		}
		if len(ids) != 1 {
			t.Fatalf("receipt ids answered = %v, want exactly one", ids)
		}
		if n, _ := s.Ledger.Stats(); n != 1 {
			t.Fatalf("receipts = %d, want 1 (one execution)", n)
		}
		// A later retry returns the stored outcome.
		r := a.Execute("echo", map[string]any{"same": true}, h)
		wantStatus(t, r, 200, "")
		if id := r.JSON()["receipt_id"].(string); !ids[id] {
			t.Fatalf("retry answered receipt %s, want the stored one %v", id, ids)
		}
	})
}

// Revocation racing with calls: once the revoke has returned, no call that
// starts afterwards is accepted.
func TestRevokeRacesCalls(t *testing.T) {
	stores(t, func(t *testing.T, s *gatetest.Server) {
		a := newAgent(t, s, nil)
		var revoked atomic.Bool
		var lateOK, before atomic.Int32
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					after := revoked.Load()
					r := a.Execute("echo", map[string]any{"w": w, "i": i}, nil)
					switch {
					case after && r.Status == 200:
						lateOK.Add(1)
					case !after && r.Status == 200:
						before.Add(1)
					case r.Code() == "lease_revoked":
					default:
						t.Errorf("call during revoke race: %d %s", r.Status, r.Body)
					}
				}
			}()
		}
		for before.Load() < 20 {
			time.Sleep(time.Millisecond)
		}
		rv := gatetest.Do(t, s.AdminClient(), "POST", "/v1/leases/revoke", []byte(`{"session_id":"`+a.Sess+`"}`), http.Header{"Content-Type": {"application/json"}})
		wantStatus(t, rv, 200, "")
		revoked.Store(true)
		for range 50 {
			if r := a.Execute("echo", map[string]any{}, nil); r.Code() != "lease_revoked" {
				t.Fatalf("call after revoke returned: %d %s", r.Status, r.Body)
			}
		}
		close(stop)
		wg.Wait()
		if lateOK.Load() != 0 {
			t.Fatalf("%d calls started after the revoke returned were accepted", lateOK.Load())
		}
	})
}
