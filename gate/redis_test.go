package gate_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
	"github.com/latchgate/latchgate/store/storetest"
	"github.com/redis/go-redis/v9"
)

// twoGates starts two gates on one real Redis sharing one keys directory.
func twoGates(t *testing.T) (a, b *gatetest.Server, url string, stop func(), restart func(bool)) {
	t.Helper()
	url, stop, restart = storetest.StartRedis(t)
	keys := t.TempDir()
	a = gatetest.NewServer(t, gatetest.WithRedis(url), gatetest.WithKeysDir(keys), gatetest.WithManifestsDir(heldManifests))
	b = gatetest.NewServer(t, gatetest.WithRedis(url), gatetest.WithKeysDir(keys), gatetest.WithManifestsDir(heldManifests))
	return a, b, url, stop, restart
}

func TestTwoGatesShareRedis(t *testing.T) {
	ga, gb, _, _, _ := twoGates(t)
	a := newAgent(t, ga, map[string]any{"budgets": map[string]any{"max_calls": 3}})
	b := on(t, gb, a)

	// A lease from gate A works on gate B.
	wantStatus(t, b.Execute("echo", map[string]any{"on": "b"}, nil), 200, "")
	// A proof used on A is a replay on B.
	body := []byte(`{}`)
	proof := a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body)
	wantStatus(t, a.CallWithProof("POST", echoPath, body, proof, nil), 200, "")
	wantStatus(t, b.CallWithProof("POST", echoPath, body, proof, nil), 401, "replay_detected")
	// The budget is shared: 2 used, one left across both gates.
	wantStatus(t, b.Execute("echo", map[string]any{}, nil), 200, "")
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 403, "budget_exhausted")
	// A revocation on A's admin socket holds on B.
	c := newAgent(t, ga, nil)
	cb := on(t, gb, c)
	wantStatus(t, cb.Execute("echo", map[string]any{}, nil), 200, "")
	rv := gatetest.Do(t, ga.AdminClient(), "POST", "/v1/leases/revoke", []byte(`{"principal":"agent:tester"}`), http.Header{"Content-Type": {"application/json"}})
	wantStatus(t, rv, 200, "")
	wantStatus(t, cb.Execute("echo", map[string]any{}, nil), 401, "lease_revoked")
}

// 100 parallel calls on max_calls 20 across two gates: exactly 20 run.
func TestBudgetRaceAcrossGates(t *testing.T) {
	ga, gb, _, _, _ := twoGates(t)
	a := newAgent(t, ga, map[string]any{"budgets": map[string]any{"max_calls": 20}})
	b := on(t, gb, a)
	var ok, exhausted atomic.Int32
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ag := a
			if i%2 == 1 {
				ag = b
			}
			r := ag.Execute("echo", map[string]any{"i": i}, nil)
			switch {
			case r.Status == 200:
				ok.Add(1)
			case r.Code() == "budget_exhausted":
				exhausted.Add(1)
			default:
				t.Errorf("call %d: %d %s", i, r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 20 || exhausted.Load() != 80 {
		t.Fatalf("ran %d, exhausted %d; want 20 and 80", ok.Load(), exhausted.Load())
	}
}

func TestRedisOutageFailsClosedAndRecovers(t *testing.T) {
	ga, _, _, stop, restart := twoGates(t)
	a := newAgent(t, ga, nil)
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 200, "")
	before, _ := ga.Ledger.Stats()

	stop()
	r := a.Execute("echo", map[string]any{}, nil)
	wantStatus(t, r, 503, "store_unavailable")
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	x := ga.NewAgent(t)
	wantStatus(t, x.TakeLease(map[string]any{"agent_id": "x"}), 503, "store_unavailable")
	rz := gatetest.Do(t, ga.Client(), "GET", "/readyz", nil, nil)
	if rz.Status != 503 || rz.JSON()["store"] != false {
		t.Fatalf("readyz during outage = %d %s", rz.Status, rz.Body)
	}
	if after, _ := ga.Ledger.Stats(); after != before {
		t.Fatalf("receipts grew during the outage: %d → %d", before, after)
	}

	// Redis back, empty: new leases work without restarting the gate; the
	// old lease is refused, not revived.
	restart(true)
	deadline := time.Now().Add(10 * time.Second)
	var got *gatetest.Response
	for time.Now().Before(deadline) {
		y := ga.NewAgent(t)
		if got = y.TakeLease(map[string]any{"agent_id": "y"}); got.Status == 200 {
			wantStatus(t, y.Execute("echo", map[string]any{}, nil), 200, "")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got == nil || got.Status != 200 {
		t.Fatalf("no lease after Redis came back: %+v", got)
	}
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 401, "invalid_lease")
}

func TestRedisTamperedRecordsRefused(t *testing.T) {
	ga, _, url, _, _ := twoGates(t)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()

	// A session whose record was edited (scopes widened) is refused.
	a := newAgent(t, ga, nil)
	key := "latchgate:s:" + a.Sess
	rec, err := rdb.HGet(ctx, key, "rec").Result()
	if err != nil {
		t.Fatalf("read session record: %v", err)
	}
	edited := strings.Replace(rec, `"tools:call"`, `"tools:call","admin:all"`, 1)
	if edited == rec {
		t.Fatalf("could not edit session record %s", rec)
	}
	if err := rdb.HSet(ctx, key, "rec", edited).Err(); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, a.Execute("echo", map[string]any{}, nil), 401, "invalid_lease")

	// A frozen plan whose arguments were edited is refused at approval.
	b := newAgent(t, ga, map[string]any{"agent_id": "planner"})
	r := b.Execute("echo_held", map[string]any{"amount": 1}, nil)
	wantStatus(t, r, 202, "")
	id := r.JSON()["approval_id"].(string)
	akey := "latchgate:a:" + id
	rec, err = rdb.HGet(ctx, akey, "rec").Result()
	if err != nil {
		t.Fatalf("read approval record: %v", err)
	}
	edited = strings.Replace(rec, `"amount":1`, `"amount":1000000`, 1)
	if edited == rec {
		t.Fatalf("could not edit approval record %s", rec)
	}
	if err := rdb.HSet(ctx, akey, "rec", edited).Err(); err != nil {
		t.Fatal(err)
	}
	before, _ := ga.Ledger.Stats()
	ar := gatetest.Do(t, ga.AdminClient(), "POST", "/v1/approvals/"+id+"/approve", []byte(`{}`), http.Header{"Content-Type": {"application/json"}})
	wantStatus(t, ar, 404, "approval_not_found")
	if after, _ := ga.Ledger.Stats(); after != before {
		t.Fatalf("a tampered plan ran: receipts %d → %d", before, after)
	}
}

// 12 concurrent approves (and a mix with denies) spread over two gates on
// one Redis run the plan exactly once.
func TestRedisConcurrentApprovesRunOnce(t *testing.T) {
	ga, gb, _, _, _ := twoGates(t)
	a := newAgent(t, ga, nil)
	for _, c := range []struct {
		name string
		mix  bool
	}{{"approves", false}, {"approves_and_denies", true}} {
		t.Run(c.name, func(t *testing.T) {
			id := holdEcho(t, a, map[string]any{"case": c.name})
			before := receiptCount(ga) + receiptCount(gb)
			executed, others := raceApprovals(t, []*gatetest.Server{ga, gb}, id, 12, c.mix)
			ran := receiptCount(ga) + receiptCount(gb) - before
			if ran > 1 || executed != ran || executed+len(others) != 12 || (!c.mix && ran != 1) {
				t.Fatalf("12 concurrent over 2 gates: executed %d, receipts %d, others %v", executed, ran, others)
			}
		})
	}
}

// A pending approval survives a restart of the gate and of Redis.
func TestRedisPendingApprovalSurvivesRestart(t *testing.T) {
	url, stop, restart := storetest.StartRedis(t)
	keys, state := t.TempDir(), t.TempDir()
	opts := []gatetest.Option{gatetest.WithRedis(url), gatetest.WithKeysDir(keys), gatetest.WithStateDir(state), gatetest.WithManifestsDir(heldManifests)}
	s := gatetest.NewServer(t, opts...)
	a := newAgent(t, s, nil)
	id := holdEcho(t, a, map[string]any{"n": 1})
	s.Close()
	stop()
	restart(false)
	s = gatetest.NewServer(t, opts...)
	if r := approve(t, s, id); r.JSON()["decision"] != "executed" {
		t.Fatalf("approve after restart = %d %s, want executed", r.Status, r.Body)
	}
}

// TestReceiptServedByEveryGate: in Redis mode every receipt is also stored
// in Redis (PROTOCOL §5), so a gate serves receipts another gate wrote,
// exactly as stored, to the same principal only; a copy edited in Redis is
// not served.
func TestReceiptServedByEveryGate(t *testing.T) {
	ga, gb, url, _, _ := twoGates(t)
	a := newAgent(t, ga, nil)
	b := on(t, gb, a)
	r := a.Execute("echo", map[string]any{"on": "a"}, nil)
	wantStatus(t, r, 200, "")
	id, _ := r.JSON()["receipt_id"].(string)
	stored, err := ga.Ledger.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	// Copies are made in the background, after the answer.
	var got *gatetest.Response
	for deadline := time.Now().Add(10 * time.Second); ; {
		got = b.Call("GET", "/v1/receipts/"+id, nil)
		if got.Status != 404 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantStatus(t, got, 200, "")
	var served map[string]any
	if err := json.Unmarshal(got.Body, &served); err != nil {
		t.Fatal(err)
	}
	status, _ := served["signature_status"].(string)
	delete(served, "signature_status")
	var want map[string]any
	if err := json.Unmarshal(stored, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(served, want) {
		t.Errorf("gate B served %s, want gate A's stored receipt %s", got.Body, stored)
	}
	// Gate A published its receipt keys: B checks A's receipt and lists
	// A's key in its JWKS, so a client of B verifies it too.
	if status != "valid" {
		t.Errorf("signature_status on gate B = %q, want valid", status)
	}
	jwks := b.Call("GET", "/v1/receipt-keys", nil)
	if !strings.Contains(string(jwks.Body), `"kid":"`+ga.Ledger.KeyID()+`"`) || !strings.Contains(string(jwks.Body), `"kid":"`+gb.Ledger.KeyID()+`"`) {
		t.Errorf("gate B's receipt keys %s lack gate A's %s or its own %s", jwks.Body, ga.Ledger.KeyID(), gb.Ledger.KeyID())
	}
	if adm := gatetest.Do(t, gb.AdminClient(), "GET", "/v1/receipts/"+id, nil, nil); adm.Status != 200 {
		t.Errorf("admin GET on gate B = %d %s, want 200", adm.Status, adm.Body)
	}
	// Another principal does not see it.
	other := newAgent(t, gb, map[string]any{"agent_id": "someone-else"})
	wantStatus(t, other.Call("GET", "/v1/receipts/"+id, nil), 404, "receipt_not_found")
	// An edited copy is refused.
	rc := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(url, "redis://")})
	defer rc.Close()
	ctx := context.Background()
	keys, err := rc.Keys(ctx, "*rc:"+id).Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("receipt copy keys = %v, %v; want one", keys, err)
	}
	v := rc.Get(ctx, keys[0]).Val()
	if err := rc.Set(ctx, keys[0], strings.Replace(v, `"on":"a"`, `"on":"x"`, 1), 0).Err(); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, b.Call("GET", "/v1/receipts/"+id, nil), 404, "receipt_not_found")
	// Gate A still serves its own from the ledger.
	wantStatus(t, a.Call("GET", "/v1/receipts/"+id, nil), 200, "")
}

// finishFails is a store whose FinishIdempotent fails, as when the gate
// dies (or Redis blips) between the receipt and storing the outcome.
type finishFails struct{ store.Store }

func (finishFails) FinishIdempotent(context.Context, string, string, int, json.RawMessage, time.Duration) error {
	return errors.New("injected: outcome not stored")
}

// TestIdempotentOutcomeFromAnotherGatesReceipt: a key left running with
// its receipt bound resolves to that receipt on every gate sharing the
// Redis (PROTOCOL §3.4, §5: receipts are copied to Redis for every gate),
// never to a 409 that lasts as long as the record.
func TestIdempotentOutcomeFromAnotherGatesReceipt(t *testing.T) {
	url, _, _ := storetest.StartRedis(t)
	keys := t.TempDir()
	ga := gatetest.NewServer(t, gatetest.WithRedis(url), gatetest.WithKeysDir(keys),
		gatetest.WithStoreWrapper(func(st store.Store) store.Store { return finishFails{st} }))
	gb := gatetest.NewServer(t, gatetest.WithRedis(url), gatetest.WithKeysDir(keys))
	a := newAgent(t, ga, nil)
	b := on(t, gb, a)
	idem := http.Header{"Idempotency-Key": {"k-cross-gate"}}
	first := a.Execute("echo", map[string]any{"x": 1}, idem)
	wantStatus(t, first, 200, "")
	id, _ := first.JSON()["receipt_id"].(string)
	// Copies are made in the background, after the answer.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if gatetest.Do(t, gb.AdminClient(), "GET", "/v1/receipts/"+id, nil, nil).Status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("gate A's receipt never reached gate B")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []struct {
		name string
		ag   *gatetest.Agent
	}{{"own_gate", a}, {"other_gate", b}} {
		r := c.ag.Execute("echo", map[string]any{"x": 1}, idem)
		if r.Status != 200 || r.JSON()["receipt_id"] != id {
			t.Fatalf("%s: retry = %d %s, want 200 with receipt %s", c.name, r.Status, r.Body, id)
		}
	}
	if n := receiptCount(ga) + receiptCount(gb); n != 1 {
		t.Fatalf("receipts = %d, want 1 (nothing ran again)", n)
	}
}

// A claim left by another gate sharing the store, which wrote its receipt
// and died before finishing the approval, is resolved from that receipt
// (found through the receipt id the claim named and the store's receipt
// copy), not failed as interrupted, and nothing runs again.
func TestStaleClaimResolvesFromAnotherGatesReceipt(t *testing.T) {
	ga, gb, _, _, _ := twoGates(t)
	a := newAgent(t, ga, nil)
	ctx := context.Background()
	r := a.Execute("echo_held", map[string]any{"n": 1}, nil)
	wantStatus(t, r, 202, "")
	id := r.JSON()["approval_id"].(string)
	// Gate A claims it, runs it (its receipt names the claim's receipt id)
	// and dies before finishing the approval.
	const rid = "01900000-0000-7000-8000-0000000000aa"
	if _, err := ga.Store.ClaimApproval(ctx, id, store.Claim{GateID: "gate-a", By: "uid:0",
		Deadline: time.Now().Add(300 * time.Millisecond), ReceiptID: rid}, time.Now()); err != nil {
		t.Fatalf("claim: %v", err)
	}
	now := receipts.FormatTime(time.Now())
	if _, err := ga.Ledger.Append(ctx, approvedReceipt(rid, a.Sess, id, now)); err != nil {
		t.Fatal(err)
	}
	// The copy reaches the store in the background; gate B can read it.
	deadline := time.Now().Add(10 * time.Second)
	for admin(t, gb, "GET", "/v1/receipts/"+rid, "").Status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("gate B never saw gate A's receipt copy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before, _ := gb.Ledger.Stats()
	for {
		r := admin(t, gb, "POST", "/v1/approvals/"+id+"/approve", `{}`)
		if r.Status != 409 {
			if d := r.JSON()["decision"]; r.Status != 200 || d != "already_approved" {
				t.Fatalf("approve on gate B = %d %s, want already_approved", r.Status, r.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("gate A's claim never went stale")
		}
		time.Sleep(50 * time.Millisecond) // until gate A's claim deadline
	}
	got := admin(t, gb, "GET", "/v1/approvals/"+id, "").JSON()
	if got["state"] != "approved" || got["receipt_id"] != rid {
		t.Fatalf("approval after gate B resolved the stale claim = %v, want approved with receipt %s", got, rid)
	}
	if after, _ := gb.Ledger.Stats(); after != before {
		t.Fatalf("resolving ran the action on gate B: receipts %d → %d", before, after)
	}
}
