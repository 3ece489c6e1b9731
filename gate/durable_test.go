package gate_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/store"
)

// syncLog is a store that records the order of revocations and syncs, and
// can fail Sync.
type syncLog struct {
	store.Store
	mu     sync.Mutex
	calls  []string
	failed bool
}

func (s *syncLog) log(c string) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
}

func (s *syncLog) Sync() error {
	s.mu.Lock()
	fail := s.failed
	s.mu.Unlock()
	s.log("sync")
	if fail {
		return errors.New("injected sync failure")
	}
	return s.Store.Sync()
}

func (s *syncLog) Revoke(ctx context.Context, req store.RevokeRequest, now time.Time) (int, error) {
	n, err := s.Store.Revoke(ctx, req, now)
	s.log("revoke")
	return n, err
}

func (s *syncLog) DecideApproval(ctx context.Context, id string, state store.ApprovalState, by, reason string, now time.Time) (*store.Approval, error) {
	a, err := s.Store.DecideApproval(ctx, id, state, by, reason, now)
	s.log("decide")
	return a, err
}

func (s *syncLog) DeleteStanding(ctx context.Context, id string) error {
	err := s.Store.DeleteStanding(ctx, id)
	s.log("delete")
	return err
}

func (s *syncLog) DeleteLearned(ctx context.Context, id string) error {
	err := s.Store.DeleteLearned(ctx, id)
	s.log("delete")
	return err
}

// syncedAfter reports whether a sync was logged after the last op.
func (s *syncLog) syncedAfter(op string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := -1
	for i, c := range s.calls {
		if c == op {
			last = i
		}
	}
	for _, c := range s.calls[last+1:] {
		if c == "sync" {
			return last >= 0
		}
	}
	return false
}

// TestRevocationsDurableBeforeAnswer: an operator is told a permission is
// gone only after the store synced it (a power loss must not bring a
// revoked lease, standing approval or learned domain back), and a failed
// sync is 503, not 200.
func TestRevocationsDurableBeforeAnswer(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		op   string
		call func(t *testing.T, s *gatetest.Server, a *gatetest.Agent) *gatetest.Response
	}{
		{"revoke session", "revoke", func(t *testing.T, s *gatetest.Server, a *gatetest.Agent) *gatetest.Response {
			return admin(t, s, "POST", "/v1/leases/revoke", `{"session_id":"`+a.Sess+`"}`)
		}},
		{"revoke all", "revoke", func(t *testing.T, s *gatetest.Server, _ *gatetest.Agent) *gatetest.Response {
			return admin(t, s, "POST", "/v1/leases/revoke", `{"all":true}`)
		}},
		{"delete standing approval", "delete", func(t *testing.T, s *gatetest.Server, _ *gatetest.Agent) *gatetest.Response {
			sa := &store.Standing{ID: uuid.NewString(), Principal: "agent:tester", ActionID: "echo", CreatedBy: "uid:0", CreatedAt: time.Now(), Uses: 3}
			if err := s.Store.CreateStanding(ctx, sa); err != nil {
				t.Fatal(err)
			}
			return admin(t, s, "DELETE", "/v1/standing-approvals/"+sa.ID, "")
		}},
		{"delete learned domain", "delete", func(t *testing.T, s *gatetest.Server, _ *gatetest.Agent) *gatetest.Response {
			d := &store.LearnedDomain{ID: uuid.NewString(), Principal: "agent:tester", ActionID: "fetch", Host: "api.example.com:443",
				CreatedBy: "uid:0", CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
			if _, err := s.Store.PutLearned(ctx, d); err != nil {
				t.Fatal(err)
			}
			return admin(t, s, "DELETE", "/v1/learned-domains/"+d.ID, "")
		}},
	}
	for _, tt := range tests {
		for _, fail := range []bool{false, true} {
			name := tt.name
			if fail {
				name += "/sync fails"
			}
			t.Run(name, func(t *testing.T) {
				var sl *syncLog
				s := gatetest.NewServer(t, gatetest.WithStoreWrapper(func(st store.Store) store.Store {
					sl = &syncLog{Store: st}
					return sl
				}))
				a := newAgent(t, s, nil)
				sl.mu.Lock()
				sl.failed = fail
				sl.mu.Unlock()
				r := tt.call(t, s, a)
				if fail {
					if r.Status != 503 || r.JSON()["error"] != "store_unavailable" {
						t.Fatalf("answer with a failing sync = %d %s, want 503 store_unavailable", r.Status, r.Body)
					}
					return
				}
				if r.Status != 200 {
					t.Fatalf("answer = %d %s, want 200", r.Status, r.Body)
				}
				if !sl.syncedAfter(tt.op) {
					t.Errorf("store calls %v: no sync after the %s before the answer", sl.calls, tt.op)
				}
			})
		}
	}
}

// syncsDuring counts the syncs the ledger asked of the store during f.
func (s *syncLog) syncsDuring(f func()) int {
	count := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for _, c := range s.calls {
			if c == "sync" {
				n++
			}
		}
		return n
	}
	before := count()
	f()
	return count() - before
}

// TestIntentStoreSync: an execute whose dispatch depends on store writes
// (an idempotency claim, a standing approval's use) syncs the store
// before it runs; a plain execute does not, because its intent names its
// proof (see TestReplayEntryRestoredAfterPowerLoss).
func TestIntentStoreSync(t *testing.T) {
	var sl *syncLog
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithStoreWrapper(func(st store.Store) store.Store {
		sl = &syncLog{Store: st}
		return sl
	}))
	a := newAgent(t, s, map[string]any{"agent_id": "std"})
	if r := admin(t, s, "POST", "/v1/standing-approvals", `{"principal":"agent:std","action_id":"echo_held","uses":1}`); r.Status != 201 {
		t.Fatalf("create standing approval = %d %s", r.Status, r.Body)
	}
	tests := []struct {
		name   string
		call   func() *gatetest.Response
		synced bool
	}{
		{"plain", func() *gatetest.Response { return a.Execute("echo", map[string]any{"n": 1}, nil) }, false},
		{"idempotency key", func() *gatetest.Response {
			return a.Execute("echo", map[string]any{"n": 2}, http.Header{"Idempotency-Key": {"k-1"}})
		}, true},
		{"standing approval", func() *gatetest.Response { return a.Execute("echo_held", map[string]any{"n": 3}, nil) }, true},
	}
	for _, tt := range tests {
		var r *gatetest.Response
		n := sl.syncsDuring(func() { r = tt.call() })
		if r.Status != 200 {
			t.Fatalf("%s: execute = %d %s", tt.name, r.Status, r.Body)
		}
		if (n > 0) != tt.synced {
			t.Errorf("%s: %d store syncs during the execute, want synced=%v", tt.name, n, tt.synced)
		}
	}
}

// TestReplayEntryRestoredAfterPowerLoss: a plain execute does not sync the
// store before it runs, so a power loss can take its proof's replay entry
// from the store journal. The intent, durable before the action ran,
// names the proof, and the restarted gate puts the entry back: the proof
// is refused as a replay. The power loss is simulated by cutting the store
// journal back to its length at the last sync before the execute.
func TestReplayEntryRestoredAfterPowerLoss(t *testing.T) {
	dir := t.TempDir()
	s1 := gatetest.NewServer(t, gatetest.WithStateDir(dir))
	a := newAgent(t, s1, nil)
	first := a.Execute("echo", map[string]any{"k": 0}, nil)
	wantStatus(t, first, 200, "")
	readPath := "/v1/receipts/" + first.JSON()["receipt_id"].(string)
	if err := s1.Store.Sync(); err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(dir, "store", "store.journal")
	fi, err := os.Stat(journal)
	if err != nil {
		t.Fatal(err)
	}
	synced := fi.Size()

	body := []byte(`{"k":1}`)
	proof := a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body)
	wantStatus(t, a.CallWithProof("POST", echoPath, body, proof, nil), 200, "")
	// Control: a read's proof is in the same journal tail and not in any
	// intent; the simulated loss makes it acceptable again.
	readProof := a.Key.Proof("GET", "http://localhost"+readPath, a.Lease, nil)
	wantStatus(t, a.CallWithProof("GET", readPath, nil, readProof, nil), 200, "")
	s1.Close()
	if err := os.Truncate(journal, synced); err != nil {
		t.Fatal(err)
	}

	s2 := gatetest.NewServer(t, gatetest.WithStateDir(dir))
	b := on(t, s2, a)
	wantStatus(t, b.CallWithProof("GET", readPath, nil, readProof, nil), 200, "")
	wantStatus(t, b.CallWithProof("POST", echoPath, body, proof, nil), 401, "replay_detected")
	wantStatus(t, b.Execute("echo", map[string]any{"k": 2}, nil), 200, "")
}

// TestDenyDurableWhenAuditFails: a deny is made durable by its decision
// record's group commit (the ledger syncs the store with it). When that
// record cannot be written, the gate syncs the store itself before it
// answers 200, so a power loss cannot bring the denied approval back as
// pending; a failed sync is 503.
func TestDenyDurableWhenAuditFails(t *testing.T) {
	for _, syncFails := range []bool{false, true} {
		t.Run(map[bool]string{false: "sync ok", true: "sync fails"}[syncFails], func(t *testing.T) {
			var sl *syncLog
			fs := &faultFS{}
			s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithLedgerFS(fs),
				gatetest.WithStoreWrapper(func(st store.Store) store.Store {
					sl = &syncLog{Store: st}
					return sl
				}))
			a := newAgent(t, s, nil)
			id := holdEcho(t, a, map[string]any{"n": 1})
			fs.arm(`{"type":"audit",`)
			sl.mu.Lock()
			sl.failed = syncFails
			sl.mu.Unlock()
			r := admin(t, s, "POST", "/v1/approvals/"+id+"/deny", `{"reason":"no"}`)
			if fs.fails.Load() == 0 {
				t.Fatal("the decision record's write never failed")
			}
			if syncFails {
				wantStatus(t, r, 503, "store_unavailable")
				return
			}
			wantStatus(t, r, 200, "")
			if !sl.syncedAfter("decide") {
				t.Errorf("store calls %v: no sync after the deny before the answer", sl.calls)
			}
		})
	}
}
