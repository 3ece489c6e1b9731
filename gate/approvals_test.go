package gate_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchgate/latchgate/actions"
	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/definitions"
	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
	"github.com/rs/zerolog"
)

var jsonCT = http.Header{"Content-Type": {"application/json"}}

// holdEcho executes echo_held and returns the approval id of the 202.
func holdEcho(t *testing.T, a *gatetest.Agent, args map[string]any) string {
	t.Helper()
	r := a.Execute("echo_held", args, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("execute echo_held = %d %s, want 202", r.Status, r.Body)
	}
	id, _ := r.JSON()["approval_id"].(string)
	return id
}

func admin(t *testing.T, s *gatetest.Server, method, path, body string) *gatetest.Response {
	t.Helper()
	var b []byte
	var h http.Header
	if body != "" {
		b, h = []byte(body), jsonCT
	}
	return gatetest.Do(t, s.AdminClient(), method, path, b, h)
}

func approve(t *testing.T, s *gatetest.Server, id string) *gatetest.Response {
	t.Helper()
	return admin(t, s, "POST", "/v1/approvals/"+id+"/approve", `{}`)
}

func poll(t *testing.T, a *gatetest.Agent, id string) map[string]any {
	t.Helper()
	r := a.Call("GET", "/v1/approvals/"+id+"/poll", nil)
	if r.Status != 200 {
		t.Fatalf("poll = %d %s", r.Status, r.Body)
	}
	return r.JSON()
}

func receiptCount(s *gatetest.Server) int { return s.Ledger.Verify().Receipts }

func TestApproveRunsOnceAndAgentSeesOutput(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests))
	a := newAgent(t, s, nil)
	id := holdEcho(t, a, map[string]any{"msg": "hi"})
	if again := holdEcho(t, a, map[string]any{"msg": "hi"}); again != id {
		t.Fatalf("identical pending request got approval %s, want the shared %s", again, id)
	}
	if p := poll(t, a, id); p["status"] != "pending" {
		t.Fatalf("poll = %v, want pending", p)
	}
	r := approve(t, s, id)
	if r.Status != 200 || r.JSON()["decision"] != "executed" {
		t.Fatalf("approve = %d %s, want 200 executed", r.Status, r.Body)
	}
	p := poll(t, a, id)
	rid, _ := p["receipt_id"].(string)
	if p["status"] != "approved" || rid == "" || p["output"] == nil {
		t.Fatalf("poll = %v, want approved with receipt_id and output", p)
	}
	rc := admin(t, s, "GET", "/v1/receipts/"+rid, "").JSON()
	appr, _ := rc["approval"].(map[string]any)
	if appr["approval_id"] != id || appr["kind"] != "operator" {
		t.Fatalf("receipt approval = %v, want operator approval %s", appr, id)
	}
	n := receiptCount(s)
	for _, c := range []struct{ name, path, want string }{
		{"approve_again", "/approve", "already_approved"},
		{"deny_after_approve", "/deny", "already_approved"},
	} {
		r := admin(t, s, "POST", "/v1/approvals/"+id+c.path, `{}`)
		if r.Status != 200 || r.JSON()["decision"] != c.want {
			t.Fatalf("%s = %d %s, want %s", c.name, r.Status, r.Body, c.want)
		}
	}
	if got := receiptCount(s); got != n {
		t.Fatalf("receipts after re-approve = %d, want %d (nothing ran)", got, n)
	}
}

func TestDenyAndExpiry(t *testing.T) {
	clk := clock.NewFake(time.Now())
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithClock(clk),
		gatetest.WithConfig(gate.Config{Dev: true, TrustAgentID: true, PendingTTL: 2 * time.Minute}))
	a := newAgent(t, s, nil)
	denied := holdEcho(t, a, map[string]any{"n": 1})
	r := admin(t, s, "POST", "/v1/approvals/"+denied+"/deny", `{"reason":"not today"}`)
	if r.Status != 200 || r.JSON()["decision"] != "denied" {
		t.Fatalf("deny = %d %s", r.Status, r.Body)
	}
	if p := poll(t, a, denied); p["status"] != "denied" || p["reason"] != "not today" {
		t.Fatalf("poll(denied) = %v, want denied with the reason", p)
	}
	expiring := holdEcho(t, a, map[string]any{"n": 2})
	clk.Advance(3 * time.Minute)
	n, err := s.Gate.SweepExpired(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("SweepExpired = %d, %v, want 1", n, err)
	}
	if p := poll(t, a, expiring); p["status"] != "expired" {
		t.Fatalf("poll(expired) = %v, want expired", p)
	}
	before := receiptCount(s)
	if r := approve(t, s, expiring); r.JSON()["decision"] != "already_expired" {
		t.Fatalf("approve(expired) = %s, want already_expired", r.Body)
	}
	if receiptCount(s) != before {
		t.Fatalf("approving an expired approval ran something")
	}
	if n, _ := s.Gate.SweepExpired(context.Background()); n != 0 {
		t.Fatalf("second sweep moved %d, want 0", n)
	}
	// The sweep's event is in the journal.
	evs, _, _ := s.Events.Since(0, 100)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	want := "approval.requested approval.denied approval.requested approval.expired"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("events = %s, want %s", got, want)
	}
}

// raceApprovals runs n concurrent approve (and, with mix, deny) calls.
func raceApprovals(t *testing.T, servers []*gatetest.Server, id string, n int, mix bool) (executed int, others []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s := servers[i%len(servers)]
			path := "/approve"
			if mix && i%2 == 1 {
				path = "/deny"
			}
			req, _ := http.NewRequest("POST", "http://localhost/v1/approvals/"+id+path, strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := s.AdminClient().Do(req)
			if err != nil {
				t.Errorf("approve: %v", err)
				return
			}
			defer resp.Body.Close()
			var m map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&m)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case resp.StatusCode == 200 && m["decision"] == "executed":
				executed++
			case resp.StatusCode == 409 && m["error"] == "approval_conflict":
				others = append(others, "409")
			case resp.StatusCode == 200 && strings.HasPrefix(fmt.Sprint(m["decision"]), "already_"), resp.StatusCode == 200 && m["decision"] == "denied":
				others = append(others, fmt.Sprint(m["decision"]))
			default:
				t.Errorf("concurrent %s answered %d %v", path, resp.StatusCode, m)
			}
		})
	}
	wg.Wait()
	return executed, others
}

func TestConcurrentApprovesRunOnce(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests))
	a := newAgent(t, s, nil)
	for _, c := range []struct {
		name string
		mix  bool
	}{{"approves", false}, {"approves_and_denies", true}} {
		t.Run(c.name, func(t *testing.T) {
			id := holdEcho(t, a, map[string]any{"case": c.name})
			before := receiptCount(s)
			executed, others := raceApprovals(t, []*gatetest.Server{s}, id, 12, c.mix)
			ran := receiptCount(s) - before
			if ran > 1 || executed != ran || executed+len(others) != 12 {
				t.Fatalf("12 concurrent: executed %d, receipts %d, others %v; want at most one execution", executed, ran, others)
			}
			if !c.mix && ran != 1 {
				t.Fatalf("12 concurrent approves ran %d times, want exactly 1", ran)
			}
		})
	}
}

func TestApprovalRechecksRefuse(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests))
	changedDir := t.TempDir()
	orig, err := os.ReadFile(filepath.Join(heldManifests, "echo_held.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(changedDir, "echo_held.yaml"), []byte(strings.Replace(string(orig), "Echo that", "Changed echo that", 1)), 0o600)
	cases := []struct {
		name   string
		lease  map[string]any
		before func(t *testing.T, a *gatetest.Agent)
		reason string
	}{
		{"session_revoked", nil, func(t *testing.T, a *gatetest.Agent) {
			admin(t, s, "POST", "/v1/leases/revoke", `{"session_id":"`+a.Sess+`"}`)
		}, "session_revoked"},
		{"principal_revoked", map[string]any{"agent_id": "p-revoked"}, func(t *testing.T, a *gatetest.Agent) {
			admin(t, s, "POST", "/v1/leases/revoke", `{"principal":"agent:p-revoked"}`)
		}, "session_revoked"},
		{"budget_exhausted", map[string]any{"budgets": map[string]any{"max_calls": 1}}, func(t *testing.T, a *gatetest.Agent) {
			wantStatus(t, a.Execute("echo", map[string]any{}, nil), 200, "")
		}, "budget_exhausted"},
		{"manifest_changed", nil, func(t *testing.T, a *gatetest.Agent) {
			reg, err := actions.Load(actions.LoadConfig{FS: definitions.Manifests, Dir: changedDir}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			s.Gate.Swap(&gate.Snapshot{Actions: reg, Policy: s.Gate.Snapshot().Policy})
		}, "plan_changed"},
		{"policy_no_longer_allows", nil, func(t *testing.T, a *gatetest.Agent) {
			pol, err := policy.New(policy.Config{FS: definitions.Policies}, policy.Deps{Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			s.Gate.Swap(&gate.Snapshot{Actions: s.Gate.Snapshot().Actions, Policy: pol})
		}, "policy_changed"},
	}
	initial := s.Gate.Snapshot()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer s.Gate.Swap(initial)
			a := newAgent(t, s, c.lease)
			id := holdEcho(t, a, map[string]any{"case": c.name})
			c.before(t, a)
			before := receiptCount(s)
			r := approve(t, s, id)
			if r.Status != 200 || r.JSON()["decision"] != "failed" || r.JSON()["reason"] != c.reason {
				t.Fatalf("approve = %d %s, want failed %s", r.Status, r.Body, c.reason)
			}
			if receiptCount(s) != before {
				t.Fatalf("a refused approval ran something")
			}
			if v := admin(t, s, "GET", "/v1/approvals/"+id, "").JSON(); v["state"] != "failed" || v["reason"] != c.reason {
				t.Fatalf("approval = %v, want failed %s", v, c.reason)
			}
		})
	}
}

func TestStandingApprovalCoversHeldAction(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests))
	a := newAgent(t, s, map[string]any{"agent_id": "std"})
	for _, c := range []struct{ name, body string }{
		{"no_bound", `{"principal":"agent:std","action_id":"echo_held"}`},
		{"unknown_action", `{"principal":"agent:std","action_id":"nope","uses":1}`},
		{"past_expiry", `{"principal":"agent:std","action_id":"echo_held","expires_at":"2001-01-01T00:00:00Z"}`},
		{"zero_uses", `{"principal":"agent:std","action_id":"echo_held","uses":0}`},
	} {
		if r := admin(t, s, "POST", "/v1/standing-approvals", c.body); r.Status/100 != 4 {
			t.Fatalf("create(%s) = %d, want 4xx", c.name, r.Status)
		}
	}
	r := admin(t, s, "POST", "/v1/standing-approvals", `{"principal":"agent:std","action_id":"echo_held","uses":2}`)
	if r.Status != 201 {
		t.Fatalf("create = %d %s", r.Status, r.Body)
	}
	sid, _ := r.JSON()["id"].(string)
	for i := range 2 {
		r := a.Execute("echo_held", map[string]any{"i": i}, nil)
		appr, _ := r.JSON()["approval"].(map[string]any)
		if r.Status != 200 || appr["kind"] != "standing" || appr["approval_id"] != sid {
			t.Fatalf("execute #%d under standing = %d %s, want 200 with standing approval", i, r.Status, r.Body)
		}
		rc := admin(t, s, "GET", "/v1/receipts/"+r.JSON()["receipt_id"].(string), "").JSON()
		if ra, _ := rc["approval"].(map[string]any); ra["kind"] != "standing" {
			t.Fatalf("receipt approval = %v, want kind standing", rc["approval"])
		}
	}
	// Uses are consumed: the third call is held again.
	holdEcho(t, a, map[string]any{"i": 3})
	// Another principal was never covered.
	b := newAgent(t, s, map[string]any{"agent_id": "other"})
	holdEcho(t, b, map[string]any{"i": 1})
	// Listing and revoking.
	r = admin(t, s, "POST", "/v1/standing-approvals", `{"principal":"agent:other","action_id":"echo_held","expires_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`)
	oid, _ := r.JSON()["id"].(string)
	list := admin(t, s, "GET", "/v1/standing-approvals", "").JSON()["standing_approvals"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != oid {
		t.Fatalf("list = %v, want only the live one %s", list, oid)
	}
	if r := admin(t, s, "DELETE", "/v1/standing-approvals/"+oid, ""); r.Status != 200 {
		t.Fatalf("revoke = %d %s", r.Status, r.Body)
	}
	holdEcho(t, b, map[string]any{"i": 2})
	if r := admin(t, s, "DELETE", "/v1/standing-approvals/"+oid, ""); r.Status != 404 {
		t.Fatalf("revoke again = %d, want 404", r.Status)
	}
}

func TestLearnDomainOnlyWhenAsked(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, map[string]any{"agent_id": "learner"})
	fetch := func(host string) *gatetest.Response {
		return a.Execute("http_fetch", map[string]any{"url": "https://" + host + "/x"}, nil)
	}
	for _, c := range []struct {
		name  string
		host  string
		learn bool
	}{{"not_learned", "plain.example.net", false}, {"learned", "learn.example.net", true}} {
		t.Run(c.name, func(t *testing.T) {
			r := fetch(c.host)
			if r.Status != 202 {
				t.Fatalf("fetch(%s) = %d %s, want 202 (unresolved domain)", c.host, r.Status, r.Body)
			}
			id := r.JSON()["approval_id"].(string)
			admin(t, s, "POST", "/v1/approvals/"+id+"/approve", fmt.Sprintf(`{"learn_domain":%v}`, c.learn))
			again := fetch(c.host)
			if held := again.Status == 202; held == c.learn {
				t.Fatalf("after approve(learn_domain=%v), fetch = %d, want held=%v", c.learn, again.Status, !c.learn)
			}
		})
	}
	list := admin(t, s, "GET", "/v1/learned-domains", "").JSON()["learned_domains"].([]any)
	if len(list) != 1 {
		t.Fatalf("learned = %v, want one entry", list)
	}
	d := list[0].(map[string]any)
	if d["host"] != "learn.example.net:443" || d["principal"] != "agent:learner" || d["action_id"] != "http_fetch" || d["expires_at"] == "" {
		t.Fatalf("learned entry = %v", d)
	}
	if r := admin(t, s, "DELETE", "/v1/learned-domains/"+d["id"].(string), ""); r.Status != 200 {
		t.Fatalf("delete learned = %d %s", r.Status, r.Body)
	}
	if r := fetch("learn.example.net"); r.Status != 202 {
		t.Fatalf("after removal fetch = %d, want 202 again", r.Status)
	}
}

// sse reads events from /v1/events until n arrive.
func sse(t *testing.T, s *gatetest.Server, lastID string, n int) (ids []string, types []string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", s.AdminSocket)
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost/v1/events", nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events content type = %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && len(types) < n {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			ids = append(ids, v)
		}
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			types = append(types, v)
		}
	}
	return ids, types
}

func TestEventStreamResumes(t *testing.T) {
	state := t.TempDir()
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithStateDir(state))
	a := newAgent(t, s, nil)
	id1 := holdEcho(t, a, map[string]any{"n": 1})
	approve(t, s, id1)
	id2 := holdEcho(t, a, map[string]any{"n": 2})
	admin(t, s, "POST", "/v1/approvals/"+id2+"/deny", `{"reason":"no"}`)
	ids, types := sse(t, s, "0", 5)
	want := "approval.requested receipt.created approval.approved approval.requested approval.denied"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("events = %s, want %s", got, want)
	}
	// Resume after the 2nd event, across a restart: nothing is missed and
	// ids keep increasing.
	s.Close()
	s = gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithStateDir(state))
	a = newAgent(t, s, nil)
	holdEcho(t, a, map[string]any{"n": 3})
	rids, rtypes := sse(t, s, ids[1], 4)
	if got := strings.Join(rtypes, " "); got != "approval.approved approval.requested approval.denied approval.requested" {
		t.Fatalf("resumed events = %s", got)
	}
	if rids[0] != ids[2] || rids[3] != "6" {
		t.Fatalf("resumed ids = %v, want %s.. then 6", rids, ids[2])
	}
}

func TestPendingApprovalSurvivesRestart(t *testing.T) {
	state := t.TempDir()
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithStateDir(state))
	a := newAgent(t, s, nil)
	id := holdEcho(t, a, map[string]any{"n": 1})
	s.Close()
	s = gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithStateDir(state))
	if r := approve(t, s, id); r.JSON()["decision"] != "executed" {
		t.Fatalf("approve after restart = %s, want executed", r.Body)
	}
}

// An approval runs on its session only while that session is live (an
// unexpired lease, PROTOCOL §6): the lease is the agent's authority, and an
// agent that stopped renewing it is gone. Renewing keeps it live.
func TestApproveNeedsLiveLease(t *testing.T) {
	clk := clock.NewFake(time.Now())
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithClock(clk))
	for _, c := range []struct {
		name   string
		renew  bool
		want   string
		reason string
	}{
		{"lease_expired", false, "failed", "session_expired"},
		{"lease_renewed", true, "executed", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newAgent(t, s, map[string]any{"agent_id": "lease-" + c.name, "ttl_seconds": 60})
			id := holdEcho(t, a, map[string]any{"case": c.name})
			clk.Advance(50 * time.Second)
			if c.renew {
				r := a.Call("POST", "/v1/leases/renew", nil)
				wantStatus(t, r, 200, "")
				a.Lease = r.JSON()["lease_jwt"].(string)
			}
			clk.Advance(30 * time.Second) // the first lease has expired; the approval has not
			before := receiptCount(s)
			r := approve(t, s, id)
			if r.Status != 200 || r.JSON()["decision"] != c.want || c.reason != "" && r.JSON()["reason"] != c.reason {
				t.Fatalf("approve = %d %s, want %s %s", r.Status, r.Body, c.want, c.reason)
			}
			if ran := receiptCount(s) - before; (c.want == "executed") != (ran == 1) {
				t.Fatalf("approve %s ran %d actions", c.want, ran)
			}
		})
	}
}

// pausedLists is a store whose ListApprovals of expired approvals waits
// until n callers have listed (armed by the test), so that two expiry
// sweeps see the same approvals before either decides one.
type pausedLists struct {
	store.Store
	mu sync.Mutex
	wg *sync.WaitGroup
}

func (p *pausedLists) ListApprovals(ctx context.Context, st store.ApprovalState, limit int) ([]*store.Approval, error) {
	l, err := p.Store.ListApprovals(ctx, st, limit)
	p.mu.Lock()
	wg := p.wg
	p.mu.Unlock()
	if wg != nil && st == store.ApprovalExpired {
		wg.Done()
		wg.Wait()
	}
	return l, err
}

// eventCount counts the journal's events of one type.
func eventCount(t *testing.T, s *gatetest.Server, typ string) int {
	t.Helper()
	evs, _, err := s.Events.Since(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// A decision is recorded and announced once, by whoever made it: a
// repeated deny (the same operator, the same reason) and a second expiry
// sweep (another gate on the same Redis) find it already made.
func TestDecisionsRecordedOnce(t *testing.T) {
	pl := &pausedLists{}
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests),
		gatetest.WithConfig(gate.Config{Dev: true, TrustAgentID: true, PendingTTL: time.Second}),
		gatetest.WithStoreWrapper(func(st store.Store) store.Store { pl.Store = st; return pl }))
	a := newAgent(t, s, nil)
	audits := func(decision string) int {
		recs, err := s.Ledger.QueryAudit(receipts.AuditQuery{Decision: decision, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}

	t.Run("deny_twice", func(t *testing.T) {
		id := holdEcho(t, a, map[string]any{"n": 1})
		var got []any
		for range 2 {
			r := admin(t, s, "POST", "/v1/approvals/"+id+"/deny", `{"reason":"no"}`)
			wantStatus(t, r, 200, "")
			got = append(got, r.JSON()["decision"])
		}
		if got[0] != "denied" || got[1] != "already_denied" {
			t.Fatalf("deny, deny = %v, want [denied already_denied]", got)
		}
		if n, e := audits(receipts.DecisionDenied), eventCount(t, s, "approval.denied"); n != 1 || e != 1 {
			t.Fatalf("denied: %d audit records, %d events, want 1 and 1", n, e)
		}
	})

	t.Run("concurrent_sweeps", func(t *testing.T) {
		holdEcho(t, a, map[string]any{"n": 2})
		time.Sleep(1200 * time.Millisecond)
		var wg sync.WaitGroup
		wg.Add(2)
		pl.mu.Lock()
		pl.wg = &wg
		pl.mu.Unlock()
		var moved [2]int
		var done sync.WaitGroup
		for i := range 2 {
			done.Go(func() {
				n, err := s.Gate.SweepExpired(context.Background())
				if err != nil {
					t.Errorf("SweepExpired = %v", err)
				}
				moved[i] = n
			})
		}
		done.Wait()
		if moved[0]+moved[1] != 1 {
			t.Fatalf("two sweeps moved %v, want 1 in all", moved)
		}
		if n, e := audits(receipts.DecisionExpired), eventCount(t, s, "approval.expired"); n != 1 || e != 1 {
			t.Fatalf("expired: %d audit records, %d events, want 1 and 1", n, e)
		}
	})
}

// An operator's approve note is bounded like a deny reason: it is kept in
// the approval, the signed audit record, the event journal and every
// webhook delivery.
func TestApproveNoteBounded(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests))
	a := newAgent(t, s, nil)
	id := holdEcho(t, a, map[string]any{"n": 1})
	before := receiptCount(s)
	long := strings.Repeat("n", 1025)
	for _, c := range []struct{ path, body string }{
		{"/approve", `{"note":"` + long + `"}`},
		{"/deny", `{"reason":"` + long + `"}`},
	} {
		r := admin(t, s, "POST", "/v1/approvals/"+id+c.path, c.body)
		wantStatus(t, r, 400, "invalid_request")
	}
	if v := admin(t, s, "GET", "/v1/approvals/"+id, "").JSON(); v["state"] != "pending" || receiptCount(s) != before {
		t.Fatalf("after refused approve/deny: approval %v, receipts %d → %d; want pending, nothing run", v["state"], before, receiptCount(s))
	}
	r := admin(t, s, "POST", "/v1/approvals/"+id+"/approve", `{"note":"`+long[:1024]+`"}`)
	if r.Status != 200 || r.JSON()["decision"] != "executed" {
		t.Fatalf("approve with a 1024-byte note = %d %s, want executed", r.Status, r.Body)
	}
}

// An approval being executed when its expiry passes is not reported as
// expired: its claimant may have dispatched it (the store never expires a
// claimed approval by time), and an agent told "expired" stops waiting
// for an action that then runs.
func TestClaimedApprovalNotReportedExpired(t *testing.T) {
	clk := clock.NewFake(time.Now())
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(heldManifests), gatetest.WithClock(clk),
		gatetest.WithConfig(gate.Config{Dev: true, TrustAgentID: true, PendingTTL: 2 * time.Minute}))
	a := newAgent(t, s, nil)
	id := holdEcho(t, a, map[string]any{"n": 1})
	ctx := context.Background()
	// An operator's approve (here, or on another gate) claims it just
	// before it expires and is still running the action after.
	clk.Advance(110 * time.Second)
	c, err := s.Store.ClaimApproval(ctx, id, store.Claim{GateID: "other-gate", By: "uid:0", Deadline: clk.Now().Add(time.Minute)}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * time.Second)
	if p := poll(t, a, id); p["status"] != "pending" {
		t.Fatalf("poll while claimed past expiry = %v, want pending", p)
	}
	if v := admin(t, s, "GET", "/v1/approvals/"+id, "").JSON(); v["state"] != "pending" {
		t.Fatalf("review while claimed past expiry = %v, want pending", v["state"])
	}
	if n, _ := s.Gate.SweepExpired(ctx); n != 0 {
		t.Fatalf("SweepExpired moved %d claimed approvals, want 0", n)
	}
	if _, err := s.Store.FinishApproval(ctx, store.ApprovalFinish{ID: id, Token: c.Claim.Token, State: store.ApprovalApproved,
		DecidedBy: "uid:0", DecidedAt: clk.Now(), ReceiptID: "r1", Output: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	if p := poll(t, a, id); p["status"] != "approved" {
		t.Fatalf("poll after the run = %v, want approved", p)
	}
}
