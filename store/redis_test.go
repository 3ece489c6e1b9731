package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/store/storetest"
)

func testMACKey() []byte { return []byte("0123456789abcdef0123456789abcdef") }

func newTestRedis(t testing.TB, url, prefix string, clk clock.Clock, timeout time.Duration) *Redis {
	t.Helper()
	r, err := NewRedis(RedisConfig{URL: url, Prefix: prefix, MACKey: testMACKey(), Timeout: timeout},
		Deps{Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("NewRedis = %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func rawClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedisContract(t *testing.T) {
	url, _, _ := storetest.StartRedis(t)
	runContract(t, func(t *testing.T, clk *clock.Fake) Store {
		return newTestRedis(t, url, "t"+uuid.NewString()[:8]+":", clk, 0)
	})
}

// TestRedisContractUnixSocket: a Redis on the gate's host can be reached
// over a Unix socket (unix://), with the same contract.
func TestRedisContractUnixSocket(t *testing.T) {
	url := storetest.StartRedisUnix(t)
	runContract(t, func(t *testing.T, clk *clock.Fake) Store {
		return newTestRedis(t, url, "t"+uuid.NewString()[:8]+":", clk, 0)
	})
}

func TestRedisGrantsAcrossGates(t *testing.T) {
	url, _, _ := storetest.StartRedis(t)
	clk := clock.NewFake(testStart())
	g1 := newTestRedis(t, url, "", clk, 0)
	g2 := newTestRedis(t, url, "", clk, 0)
	s := mustSession(t, g1, clk, "alice", withMaxCalls(20))
	if n := raceGrants(g1, clk, s, 100, g2); n != 20 {
		t.Fatalf("grants over two gates = %d, want 20", n)
	}
	// A revocation through one gate takes effect on the other.
	if _, err := g2.Revoke(context.Background(), RevokeRequest{Principal: "alice"}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Authenticate(other gate after revoke)", auth(g1, clk, s, s.JKT, "x"), ErrRevoked)
}

func TestRedisTampering(t *testing.T) {
	ctx := context.Background()
	url, _, _ := storetest.StartRedis(t)
	clk := clock.NewFake(testStart())
	st := newTestRedis(t, url, "tp:", clk, 0)
	raw := rawClient(t, url)

	edits := []struct {
		name string
		edit func(rec string) string
	}{
		{"principal", func(rec string) string { return strings.Replace(rec, `"alice"`, `"root"`, 1) }},
		{"scopes", func(rec string) string { return strings.Replace(rec, `["tools:call"]`, `["admin"]`, 1) }},
		{"jkt", func(rec string) string { return strings.Replace(rec, `"jkt-`, `"evil-`, 1) }},
		{"not_json", func(string) string { return "{" }},
	}
	for _, c := range edits {
		for _, used := range []bool{false, true} {
			name := "session_" + c.name
			if used {
				name += "_after_use"
			}
			t.Run(name, func(t *testing.T) {
				s := mustSession(t, st, clk, "alice")
				if used {
					// The verified record is now cached: an edit must still
					// be caught.
					wantErr(t, "Authenticate(before the edit)", auth(st, clk, s, s.JKT, "j0"), nil)
					if _, err := grant(st, clk, s, 1, 0, PrincipalLimits{}); err != nil {
						t.Fatalf("Grant(before the edit) = %v", err)
					}
				}
				key := "tp:s:" + s.ID
				rec := raw.HGet(ctx, key, "rec").Val()
				if err := raw.HSet(ctx, key, "rec", c.edit(rec)).Err(); err != nil {
					t.Fatal(err)
				}
				jkt := s.JKT
				if c.name == "jkt" {
					jkt = strings.Replace(jkt, "jkt-", "evil-", 1)
				}
				wantErr(t, "Authenticate(tampered)", auth(st, clk, s, jkt, "j"), ErrNotFound)
				_, err := st.GetSession(ctx, s.ID)
				wantErr(t, "GetSession(tampered)", err, ErrNotFound)
				_, err = st.Grant(ctx, GrantRequest{GrantID: uuid.NewString(), SessionID: s.ID,
					Principal: "root", Calls: 1, Now: clk.Now()})
				wantErr(t, "Grant(tampered as root)", err, ErrNotFound)
				_, err = grant(st, clk, s, 1, 0, PrincipalLimits{})
				wantErr(t, "Grant(tampered)", err, ErrNotFound)
				_, err = st.RenewSession(ctx, s.ID, nil, clk.Now().Add(time.Hour), clk.Now())
				wantErr(t, "RenewSession(tampered)", err, ErrNotFound)
			})
		}
	}

	t.Run("session_copied_to_other_id", func(t *testing.T) {
		a := mustSession(t, st, clk, "alice")
		b := mustSession(t, st, clk, "alice")
		v := raw.HGetAll(ctx, "tp:s:"+a.ID).Val()
		raw.HSet(ctx, "tp:s:"+b.ID, "rec", v["rec"], "mac", v["mac"])
		_, err := st.GetSession(ctx, b.ID)
		wantErr(t, "GetSession(record copied from another id)", err, ErrNotFound)
	})

	t.Run("standing_and_learned", func(t *testing.T) {
		now := clk.Now()
		sa := &Standing{ID: uuid.NewString(), Principal: "alice", ActionID: "send_mail", Uses: 1, CreatedAt: now}
		if err := st.CreateStanding(ctx, sa); err != nil {
			t.Fatal(err)
		}
		key := "tp:sa:" + sa.ID
		raw.HSet(ctx, key, "rec", strings.Replace(raw.HGet(ctx, key, "rec").Val(), `"uses":1`, `"uses":1000`, 1))
		_, err := st.UseStanding(ctx, sa.ID, now)
		wantErr(t, "UseStanding(tampered uses)", err, ErrNotFound)
		_, err = st.FindStanding(ctx, "alice", "send_mail", now)
		wantErr(t, "FindStanding(tampered)", err, ErrNotFound)
		ld := &LearnedDomain{ID: uuid.NewString(), Principal: "alice", ActionID: "fetch", Host: "ok.example.com:443", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if _, err := st.PutLearned(ctx, ld); err != nil {
			t.Fatal(err)
		}
		lkey := "tp:ld:" + ld.ID
		raw.HSet(ctx, lkey, "rec", strings.Replace(raw.HGet(ctx, lkey, "rec").Val(), "ok.example.com", "evil.example.com", 1))
		if l, err := st.LearnedFor(ctx, "alice", "fetch", now); err != nil || len(l) != 0 {
			t.Fatalf("LearnedFor(tampered) = %d, %v, want 0", len(l), err)
		}
	})

	t.Run("approval_args", func(t *testing.T) {
		a := newApproval(clk, "s1", "h1")
		if _, _, err := st.CreateApproval(ctx, a, 0); err != nil {
			t.Fatal(err)
		}
		key := "tp:a:" + a.ID
		rec := raw.HGet(ctx, key, "rec").Val()
		raw.HSet(ctx, key, "rec", strings.Replace(rec, "a@example.com", "evil@example.com", 1))
		_, err := st.GetApproval(ctx, a.ID)
		wantErr(t, "GetApproval(tampered args)", err, ErrNotFound)
		_, err = st.ClaimApproval(ctx, a.ID, Claim{GateID: "g", Deadline: clk.Now().Add(time.Minute)}, clk.Now())
		wantErr(t, "ClaimApproval(tampered args)", err, ErrNotFound)
		if l, _ := st.ListApprovals(ctx, "", 0); len(l) != 0 {
			t.Fatalf("ListApprovals = %d approvals, want tampered one left out", len(l))
		}
		_, _, err = st.CreateApproval(ctx, newApproval(clk, "s1", "h1"), 0)
		wantErr(t, "CreateApproval(dedupes onto tampered)", err, ErrNotFound)
	})

	t.Run("idempotency_outcome", func(t *testing.T) {
		rec := &IdemRecord{Principal: "alice", Key: "k", ActionID: "echo", RequestHash: "h"}
		if _, err := st.BeginIdempotent(ctx, rec, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := st.FinishIdempotent(ctx, "alice", "k", 200, []byte(`{"output":1}`), time.Hour); err != nil {
			t.Fatal(err)
		}
		key := "tp:i:" + hashKey("alice", "k")
		r := raw.HGet(ctx, key, "rec").Val()
		raw.HSet(ctx, key, "rec", strings.Replace(r, `{"output":1}`, `{"output":2}`, 1))
		got, err := st.BeginIdempotent(ctx, rec, time.Hour)
		if err != nil || got != nil {
			t.Fatalf("BeginIdempotent(tampered outcome) = %+v, %v, want nil, nil (record replaced)", got, err)
		}
	})
}

func TestRedisOutageAndRecovery(t *testing.T) {
	ctx := context.Background()
	url, stop, restart := storetest.StartRedis(t)
	clk := clock.NewFake(testStart())
	st := newTestRedis(t, url, "", clk, 500*time.Millisecond)
	s := mustSession(t, st, clk, "alice")
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("Ping = %v", err)
	}

	stop()
	checks := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return st.Ping(ctx) }},
		{"Authenticate", func() error { return auth(st, clk, s, s.JKT, "down") }},
		{"Grant", func() error { _, err := grant(st, clk, s, 1, 0, PrincipalLimits{}); return err }},
		{"CreateSession", func() error { _, err := newSession(t, st, clk, "alice", PrincipalLimits{}); return err }},
		{"GetApproval", func() error { _, err := st.GetApproval(ctx, "x"); return err }},
	}
	for _, c := range checks {
		if err := c.call(); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s(redis down) = %v, want ErrUnavailable", c.name, err)
		}
	}

	restart(false) // back with its data: the same client recovers
	wantErr(t, "Authenticate(after restart with data)", auth(st, clk, s, s.JKT, "up"), nil)

	restart(true) // back empty: old sessions are gone, not revived
	wantErr(t, "Authenticate(after empty restart)", auth(st, clk, s, s.JKT, "up2"), ErrNotFound)
	_, err := grant(st, clk, s, 1, 0, PrincipalLimits{})
	wantErr(t, "Grant(after empty restart)", err, ErrNotFound)
	n := mustSession(t, st, clk, "alice")
	wantErr(t, "Authenticate(new session after empty restart)", auth(st, clk, n, n.JKT, "up"), nil)
	if _, err := grant(st, clk, n, 1, 0, PrincipalLimits{}); err != nil {
		t.Fatalf("Grant(new session after empty restart) = %v", err)
	}
}

func TestRedisConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  RedisConfig
		ok   bool
	}{
		{"ok", RedisConfig{URL: "redis://127.0.0.1:6379", MACKey: testMACKey()}, true},
		{"no_url", RedisConfig{MACKey: testMACKey()}, false},
		{"tls", RedisConfig{URL: "rediss://127.0.0.1:6380", MACKey: testMACKey()}, true},
		{"unix_socket", RedisConfig{URL: "unix:///run/redis/redis.sock", MACKey: testMACKey()}, true},
		{"bad_scheme", RedisConfig{URL: "http://x", MACKey: testMACKey()}, false},
		{"no_scheme", RedisConfig{URL: "127.0.0.1:6379", MACKey: testMACKey()}, false},
		{"short_key", RedisConfig{URL: "redis://x:1", MACKey: []byte("short")}, false},
		{"no_key", RedisConfig{URL: "redis://x:1"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.cfg.withDefaults().Validate(); (err == nil) != c.ok {
				t.Fatalf("Validate(%s) = %v, want ok=%v", c.name, err, c.ok)
			}
		})
	}
}

// TestRedisReceiptCopies: copies are MAC'd and kept ReceiptTTL; Close makes
// the queued ones before it returns; an edited copy or one under another
// id is not returned; a copy after Close is dropped, never a panic.
func TestRedisReceiptCopies(t *testing.T) {
	ctx := context.Background()
	url, _, _ := storetest.StartRedis(t)
	clk := clock.NewFake(testStart())
	st := newTestRedis(t, url, "rc:", clk, 0)
	raw := rawClient(t, url)
	id1, id2 := uuid.NewString(), uuid.NewString()
	st.CopyReceipt(id1, []byte(`{"receipt_id":"`+id1+`","n":1}`))
	st.CopyReceipt(id2, []byte(`{"receipt_id":"`+id2+`","n":2}`))
	st.copies.close() // flushes the queue
	got, err := st.GetReceipt(ctx, id1)
	if err != nil || string(got) != `{"receipt_id":"`+id1+`","n":1}` {
		t.Fatalf("GetReceipt(id1) = %s, %v", got, err)
	}
	if ttl := raw.PTTL(ctx, "rc:rc:"+id1).Val(); ttl <= 29*24*time.Hour || ttl > DefaultReceiptTTL {
		t.Errorf("copy TTL = %v, want ≈ %v", ttl, DefaultReceiptTTL)
	}
	_, err = st.GetReceipt(ctx, uuid.NewString())
	wantErr(t, "GetReceipt(unknown)", err, ErrNotFound)
	// Edited content, or a valid copy moved under another id: refused.
	v := raw.Get(ctx, "rc:rc:"+id2).Val()
	raw.Set(ctx, "rc:rc:"+id2, strings.Replace(v, `"n":2`, `"n":3`, 1), 0)
	_, err = st.GetReceipt(ctx, id2)
	wantErr(t, "GetReceipt(edited)", err, ErrNotFound)
	raw.Set(ctx, "rc:rc:"+id2, raw.Get(ctx, "rc:rc:"+id1).Val(), 0)
	_, err = st.GetReceipt(ctx, id2)
	wantErr(t, "GetReceipt(another id's copy)", err, ErrNotFound)
	// After close: dropped and counted.
	before := st.ReceiptCopiesDropped()
	st.CopyReceipt(uuid.NewString(), []byte(`{}`))
	if st.ReceiptCopiesDropped() != before+1 {
		t.Errorf("dropped = %d after a copy past close, want %d", st.ReceiptCopiesDropped(), before+1)
	}
}

// TestRedisReceiptKeys: published key sets come back while their MAC
// verifies; an edited or injected set is left out.
func TestRedisReceiptKeys(t *testing.T) {
	ctx := context.Background()
	url, _, _ := storetest.StartRedis(t)
	st := newTestRedis(t, url, "rk:", clock.NewFake(testStart()), 0)
	raw := rawClient(t, url)
	set1, set2 := []byte(`{"keys":[{"kid":"a"}]}`), []byte(`{"keys":[{"kid":"b"}]}`)
	for _, s := range [][]byte{set1, set2, set1} {
		if err := st.PutReceiptKeys(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.ReceiptKeys(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("ReceiptKeys = %q, %v; want the two sets", got, err)
	}
	fields := raw.HKeys(ctx, "rk:rk").Val()
	v := raw.HGet(ctx, "rk:rk", fields[0]).Val()
	raw.HSet(ctx, "rk:rk", fields[0], strings.Replace(v, `"kid":"`, `"kid":"x`, 1))
	raw.HSet(ctx, "rk:rk", "injected", `bogus {"keys":[{"kid":"evil"}]}`)
	got, err = st.ReceiptKeys(ctx)
	if err != nil || len(got) != 1 || strings.Contains(string(got[0]), "evil") || strings.Contains(string(got[0]), `"xa"`) || strings.Contains(string(got[0]), `"xb"`) {
		t.Fatalf("ReceiptKeys after tampering = %q, %v; want only the untouched set", got, err)
	}
}

// A replay entry lasts until ReplayExpiresAt on the gate's clock, whatever
// the Redis host's clock says: a gate whose clock is behind Redis's (by more
// than 2·skew) must still refuse a reused jti, as the embedded store does.
func TestRedisReplayIndependentOfServerClock(t *testing.T) {
	url, _, _ := storetest.StartRedis(t)
	tests := []struct {
		name   string
		behind time.Duration // the gate's clock behind the Redis host's
		window time.Duration // ReplayExpiresAt - Now (≥ 2·skew for a fresh proof)
	}{
		{"same_clock", 0, 10 * time.Second},
		{"gate_15s_behind", 15 * time.Second, 10 * time.Second},
		{"gate_2m_behind", 2 * time.Minute, 70 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(time.Now().Add(-tt.behind))
			st := newTestRedis(t, url, "t"+uuid.NewString()[:8]+":", clk, 0)
			s := mustSession(t, st, clk, "alice")
			req := AuthRequest{SessionID: s.ID, JKT: s.JKT, JTI: "jti-12345678", ReplayExpiresAt: clk.Now().Add(tt.window), Now: clk.Now()}
			if _, err := st.Authenticate(context.Background(), req); err != nil {
				t.Fatalf("Authenticate(first use) = %v, want ok", err)
			}
			_, err := st.Authenticate(context.Background(), req)
			wantErr(t, "Authenticate(same jti again)", err, ErrReplay)
		})
	}
}

// TestRedisCheckEviction: a server that may evict keys is named as such
// (ErrEvicting, with its policy) by CheckEviction and Ping, and while it
// is, every script refuses (fail closed: an evicted replay entry would
// let a proof be replayed); a noeviction server passes and scripts run
// again; a server that cannot be reached is ErrUnavailable, not
// ErrEvicting.
func TestRedisCheckEviction(t *testing.T) {
	ctx := context.Background()
	url, stop, _ := storetest.StartRedis(t)
	clk := clock.NewFake(testStart())
	r := newTestRedis(t, url, "", clk, time.Second)
	raw := rawClient(t, url)
	s := mustSession(t, r, clk, "alice")
	for _, tt := range []struct {
		policy, maxmemory string
		want              error
	}{
		{"noeviction", "0", nil},
		{"noeviction", "100mb", nil},
		{"volatile-lru", "100mb", ErrEvicting}, // managed Redis defaults: replay entries and sessions have TTLs
		{"allkeys-lru", "100mb", ErrEvicting},
		{"allkeys-random", "0", ErrEvicting}, // a limit set later would start evicting
	} {
		t.Run(tt.policy+"/"+tt.maxmemory, func(t *testing.T) {
			if err := raw.ConfigSet(ctx, "maxmemory-policy", tt.policy).Err(); err != nil {
				t.Fatal(err)
			}
			if err := raw.ConfigSet(ctx, "maxmemory", tt.maxmemory).Err(); err != nil {
				t.Fatal(err)
			}
			err := r.CheckEviction(ctx)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("CheckEviction = %v, want %v", err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.policy) {
				t.Errorf("CheckEviction = %q, want the policy %q named", err, tt.policy)
			}
			if perr := r.Ping(ctx); !errors.Is(perr, tt.want) || (tt.want == nil) != (perr == nil) {
				t.Errorf("Ping = %v, want %v", perr, tt.want)
			}
			aerr := auth(r, clk, s, s.JKT, "jti-"+tt.policy+"-"+tt.maxmemory)
			if tt.want == nil && aerr != nil {
				t.Errorf("Authenticate on a noeviction server = %v, want nil", aerr)
			}
			if tt.want != nil && (!errors.Is(aerr, ErrUnavailable) || !errors.Is(aerr, ErrEvicting)) {
				t.Errorf("Authenticate on an evicting server = %v, want ErrUnavailable (ErrEvicting)", aerr)
			}
			// Scripts with an integer reply (Revoke, Refund, compare-and-set) too.
			if _, rerr := r.Revoke(ctx, RevokeRequest{SessionID: "no-such-session"}, clk.Now()); tt.want != nil && !errors.Is(rerr, ErrEvicting) {
				t.Errorf("Revoke on an evicting server = %v, want ErrEvicting", rerr)
			}
		})
	}
	// Back to noeviction: the last case above left the store refusing.
	if err := raw.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Ping(ctx); err != nil {
		t.Fatalf("Ping after noeviction = %v", err)
	}
	if err := auth(r, clk, s, s.JKT, "jti-after"); err != nil {
		t.Fatalf("Authenticate after noeviction = %v", err)
	}
	stop()
	if err := r.CheckEviction(ctx); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrEvicting) {
		t.Fatalf("CheckEviction(server down) = %v, want ErrUnavailable", err)
	}
}

// TestRedisPendingIndex: pending and expired approvals (the expiry sweep,
// the operators' list) are read from a pending index that holds exactly
// the pending ones, not from the 7 days of decided approvals; a store
// written before the index existed is indexed on first use.
func TestRedisPendingIndex(t *testing.T) {
	ctx := context.Background()
	url, _, _ := storetest.StartRedis(t)
	clk := clock.NewFake(testStart())
	r := newTestRedis(t, url, "", clk, 0)
	raw := rawClient(t, url)
	hold := func(st *Redis, session, hash string) *Approval {
		t.Helper()
		a, _, err := st.CreateApproval(ctx, &Approval{ID: uuid.NewString(), SessionID: session, Principal: "p",
			ActionID: "a", RequestHash: hash, CreatedAt: clk.Now(), ExpiresAt: clk.Now().Add(15 * time.Minute)}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	ids := func(list []*Approval) map[string]bool {
		m := map[string]bool{}
		for _, a := range list {
			m[a.ID] = true
		}
		return m
	}
	a1, a2, b1 := hold(r, "s1", "h1"), hold(r, "s1", "h2"), hold(r, "s2", "h1")
	if _, err := r.DecideApproval(ctx, a1.ID, ApprovalDenied, "op", "no", clk.Now()); err != nil {
		t.Fatal(err)
	}
	if n := raw.ZCard(ctx, r.pendingIndexKey()).Val(); n != 2 {
		t.Errorf("pending index holds %d, want 2 (the denied one left it)", n)
	}
	pend, err := r.ListApprovals(ctx, ApprovalPending, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(pend); len(got) != 2 || !got[a2.ID] || !got[b1.ID] {
		t.Errorf("ListApprovals(pending) = %v, want %s and %s", got, a2.ID, b1.ID)
	}
	if all, err := r.ListApprovals(ctx, "", 0); err != nil || len(all) != 3 {
		t.Errorf("ListApprovals(all) = %d approvals (%v), want 3", len(all), err)
	}

	// A store from before the index: its pending approvals are indexed on
	// first use by a gate that starts on it.
	old := hold(r, "s3", "h1")
	raw.Del(ctx, r.pendingIndexKey(), r.key("apend", "v1"))
	r2 := newTestRedis(t, url, "", clk, 0)
	clk.Advance(16 * time.Minute)
	exp, err := r2.ListApprovals(ctx, ApprovalExpired, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(exp); len(got) != 3 || !got[a2.ID] || !got[b1.ID] || !got[old.ID] {
		t.Errorf("ListApprovals(expired) after the backfill = %v, want %s, %s and %s", got, a2.ID, b1.ID, old.ID)
	}
	if n := raw.ZCard(ctx, r.pendingIndexKey()).Val(); n != 3 {
		t.Errorf("pending index after the backfill holds %d, want 3", n)
	}
	for _, id := range []string{a2.ID, b1.ID, old.ID} {
		if _, err := r2.DecideApproval(ctx, id, ApprovalExpired, "", "", clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := raw.ZCard(ctx, r.pendingIndexKey()).Val(); n != 0 {
		t.Errorf("pending index after the sweep holds %d, want 0", n)
	}
}
