package webhooks

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/egress"
	"github.com/latchgate/latchgate/events"
	"github.com/rs/zerolog"
)

const secret = "0123456789abcdef-secret"

type hit struct {
	id, sig string
	body    []byte
}

// receiver fails the first failures requests, then answers 204.
type receiver struct {
	mu       sync.Mutex
	hits     []hit
	failures int
	clk      *clock.Fake
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rv.mu.Lock()
	defer rv.mu.Unlock()
	rv.hits = append(rv.hits, hit{r.Header.Get(HeaderID), r.Header.Get(HeaderSignature), b})
	if len(rv.hits) <= rv.failures {
		rv.clk.Advance(10 * time.Second) // the retry comes with a fresh t
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rv *receiver) snapshot() []hit {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]hit(nil), rv.hits...)
}

func newDialer(t *testing.T, allowLoopback bool) *egress.Dialer {
	var cidrs []netip.Prefix
	if allowLoopback {
		cidrs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}
	d, err := egress.NewDialer(egress.Config{AllowCIDRs: cidrs}, egress.Deps{Logger: zerolog.Nop(), Clock: clock.Real{}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func verify(t *testing.T, h hit) int64 {
	t.Helper()
	ts, _, ok := strings.Cut(strings.TrimPrefix(h.sig, "t="), ",")
	if !ok {
		t.Fatalf("signature %q has no t=", h.sig)
	}
	var unix int64
	for _, c := range ts {
		unix = unix*10 + int64(c-'0')
	}
	if want := Sign(secret, time.Unix(unix, 0), h.body); want != h.sig {
		t.Fatalf("signature %q does not verify (want %q)", h.sig, want)
	}
	return unix
}

// runUntilCleanup runs s until the test ends, and waits for Run to return
// (it saves the outbox as it stops) before the test's directories go.
func runUntilCleanup(t *testing.T, s *Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// openJournal opens an events journal in dir, closed when the test ends.
func openJournal(t *testing.T, dir string, clk clock.Clock) *events.Journal {
	t.Helper()
	j, err := events.Open(events.Config{Path: dir + "/events.log"}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func waitFor(t *testing.T, clk *clock.Fake, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
		clk.Advance(time.Second) // backoff runs on the fake clock
	}
}

func TestDeliveryRetriesResignsAndSurvivesRestart(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	rv := &receiver{failures: 2, clk: clk}
	srv := httptest.NewServer(rv)
	defer srv.Close()
	dir := t.TempDir()
	j := openJournal(t, dir, clk)
	cfg := Config{Endpoints: []Endpoint{{URL: srv.URL + "/hook", Secret: secret}}, Dir: dir, BaseBackoff: time.Second}
	deps := Deps{Source: j, Dialer: newDialer(t, true), Clock: clk, Logger: zerolog.Nop()}

	// An event recorded while no service runs is delivered after start
	// (the outbox cursor re-reads the journal).
	j.Append(events.ApprovalRequested, map[string]string{"approval_id": "a1"})
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	// Wait for the service to record the outcome, not just for the third
	// hit: cancelling in between would cut the successful attempt short.
	waitFor(t, clk, "3 attempts, delivered", func() bool {
		ds, _ := s.Deliveries(10)
		return len(rv.snapshot()) == 3 && len(ds) == 1 && ds[0].State == StateDelivered
	})
	cancel()
	<-done
	hits := rv.snapshot()
	var ts []int64
	for _, h := range hits {
		if h.id != hits[0].id || string(h.body) != string(hits[0].body) {
			t.Fatalf("retry changed id or body: %q %s vs %q %s", h.id, h.body, hits[0].id, hits[0].body)
		}
		ts = append(ts, verify(t, h))
	}
	if ts[0] == ts[1] || ts[1] == ts[2] {
		t.Fatalf("attempts signed with t = %v, want a fresh t per attempt", ts)
	}
	ds, _ := s.Deliveries(10)
	if len(ds) != 1 || ds[0].State != StateDelivered || ds[0].Attempts != 3 {
		t.Fatalf("deliveries = %+v, want one delivered after 3 attempts", ds)
	}

	// Restart: the delivered event is not sent again; a new one is.
	rv.mu.Lock()
	rv.failures = 0
	rv.hits = nil
	rv.mu.Unlock()
	j.Append(events.ApprovalDenied, map[string]string{"approval_id": "a1"})
	s2, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, s2)
	waitFor(t, clk, "the new event", func() bool { return len(rv.snapshot()) == 1 })
	time.Sleep(50 * time.Millisecond)
	if h := rv.snapshot(); len(h) != 1 || !strings.Contains(string(h[0].body), `"approval.denied"`) {
		t.Fatalf("after restart receiver got %d deliveries, want only the new approval.denied", len(h))
	}
}

func TestWebhookURLsPassEgressChecks(t *testing.T) {
	clk := clock.NewFake(time.Now())
	j, _ := events.Open(events.Config{}, clk, zerolog.Nop())
	for _, c := range []struct{ name, url string }{
		{"single_label", "https://intranet/hook"},
		{"dot_local", "https://printer.local/hook"},
		{"userinfo", "https://u:p@example.com/hook"},
		{"scheme", "ftp://example.com/hook"},
	} {
		_, err := New(Config{Endpoints: []Endpoint{{URL: c.url, Secret: secret}}, Dir: t.TempDir()}, Deps{Source: j, Dialer: newDialer(t, false), Clock: clk})
		if err == nil {
			t.Fatalf("New(%s) = nil error, want the URL refused", c.name)
		}
	}
	// A loopback receiver without allow_cidrs: the dialer refuses it.
	rv := &receiver{clk: clk}
	srv := httptest.NewServer(rv)
	defer srv.Close()
	s, err := New(Config{Endpoints: []Endpoint{{URL: srv.URL, Secret: secret}}, Dir: t.TempDir()}, Deps{Source: j, Dialer: newDialer(t, false), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Test(context.Background(), srv.URL)
	if err != nil || d.State != StatePending || !strings.HasPrefix(d.LastError, "egress denied") || len(rv.snapshot()) != 0 {
		t.Fatalf("Test(loopback) = %+v, %v; want egress denied and nothing received", d, err)
	}
	if _, err := s.Test(context.Background(), "https://example.com/other"); err != ErrUnknownEndpoint {
		t.Fatalf("Test(unconfigured) = %v, want ErrUnknownEndpoint", err)
	}
}

// A receiver that hangs holds up only its own deliveries: another
// endpoint keeps getting its events while an attempt to the slow one
// waits for its timeout.
func TestSlowReceiverDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	hung := make(chan struct{}, 16)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	clk := clock.Real{}
	fast := &receiver{clk: clock.NewFake(time.Now())}
	fsrv := httptest.NewServer(fast)
	defer fsrv.Close()
	dir := t.TempDir()
	j := openJournal(t, dir, clk)
	cfg := Config{Endpoints: []Endpoint{{URL: slow.URL + "/hook", Secret: secret}, {URL: fsrv.URL + "/hook", Secret: secret}},
		Dir: dir, Timeout: 10 * time.Second}
	s, err := New(cfg, Deps{Source: j, Dialer: newDialer(t, true), Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	j.Append(events.ApprovalRequested, map[string]string{"approval_id": "a1"})
	select {
	case <-hung: // an attempt to the slow receiver is now in flight
	case <-time.After(5 * time.Second):
		t.Fatal("the slow receiver was never called")
	}
	j.Append(events.ApprovalDenied, map[string]string{"approval_id": "a1"})
	deadline := time.Now().Add(3 * time.Second)
	for len(fast.snapshot()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("fast receiver got %d of 2 events while the slow one hung, want both", len(fast.snapshot()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A power loss can take the journal's unsynced tail (it is fsynced every
// SyncInterval) while the outbox, fsynced on every save, already moved its
// cursor past those events. The journal then gives their ids to new
// events: each new event must still be delivered, under a Webhook-Id of
// its own (receivers drop a repeated one as a duplicate).
func TestJournalTailLostInPowerLoss(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	rv := &receiver{clk: clk}
	srv := httptest.NewServer(rv)
	defer srv.Close()
	dir := t.TempDir()
	path := dir + "/events.log"
	cfg := Config{Endpoints: []Endpoint{{URL: srv.URL + "/hook", Secret: secret}}, Dir: dir}
	open := func(j *events.Journal) *Service {
		t.Helper()
		s, err := New(cfg, Deps{Source: j, Dialer: newDialer(t, true), Clock: clk, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	run := func(s *Service, want int) []hit {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		deadline := time.Now().Add(5 * time.Second)
		for len(rv.snapshot()) < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		cancel()
		<-done
		return rv.snapshot()
	}

	// As serve wires them: the journal opens, then the service, then the
	// gate appends events.
	j, err := events.Open(events.Config{Path: path}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s := open(j)
	j.Append(events.ApprovalRequested, map[string]string{"approval_id": "a1"})
	if err := j.Sync(); err != nil { // event 1 is on disk
		t.Fatal(err)
	}
	synced, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	j.Append(events.ApprovalRequested, map[string]string{"approval_id": "a2"})
	j.Append(events.ApprovalRequested, map[string]string{"approval_id": "a3"})
	if got := run(s, 3); len(got) != 3 {
		t.Fatalf("before the power loss the receiver got %d deliveries, want 3", len(got))
	}
	j.Close()
	// The power loss: events 2 and 3 never reached the disk.
	if err := os.Truncate(path, synced.Size()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	j, err = events.Open(events.Config{Path: path}, clk, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	s = open(j)
	e, _ := j.Append(events.ApprovalDenied, map[string]string{"approval_id": "a1"})
	hits := run(s, 4)
	if len(hits) != 4 || !strings.Contains(string(hits[3].body), `"approval.denied"`) {
		t.Fatalf("after the power loss the receiver got %d deliveries, want the new approval.denied (event %d) as the 4th", len(hits), e.ID)
	}
	for _, h := range hits[:3] {
		if h.id == hits[3].id {
			t.Fatalf("the new event was delivered under Webhook-Id %s, already used for %s", h.id, h.body)
		}
	}
}

// TestOutboxBounded: the outbox, rewritten whole on every save, is not
// saved after every attempt (Run saves at most once per saveInterval and
// when it stops), and keeps at most MaxFinished finished deliveries. With a receipt.created
// event per execute, a save per attempt cost O(outbox) per event and the
// outbox grew for the 7 days of retention.
func TestOutboxBounded(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	rv := &receiver{clk: clk}
	srv := httptest.NewServer(rv)
	defer srv.Close()
	dir := t.TempDir()
	j := openJournal(t, dir, clk)
	const n = 200
	for i := range n {
		j.Append(events.ReceiptCreated, map[string]int{"n": i})
	}
	s, err := New(Config{Endpoints: []Endpoint{{URL: srv.URL + "/hook", Secret: secret}}, Dir: dir, MaxFinished: 50},
		Deps{Source: j, Dialer: newDialer(t, true), Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	before := s.saves.Load()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	waitFor(t, clk, "every event delivered", func() bool { return len(rv.snapshot()) == n })
	cancel()
	<-done
	// A save or two while the fake clock moves, one as Run stops (the old
	// loop saved after each of the 200 attempts).
	if saves := s.saves.Load() - before; saves > 10 {
		t.Errorf("%d outbox saves for %d deliveries, want at most 10", saves, n)
	}
	ds, _ := s.Deliveries(0)
	if len(ds) != 50 {
		t.Errorf("%d deliveries kept, want MaxFinished = 50", len(ds))
	}
	b, err := os.ReadFile(dir + "/outbox.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), `"state":"delivered"`); got != 50 {
		t.Errorf("outbox file holds %d delivered deliveries, want 50", got)
	}
	// A restart re-sends nothing: every outcome was saved by the end.
	s2, err := New(Config{Endpoints: []Endpoint{{URL: srv.URL + "/hook", Secret: secret}}, Dir: dir, MaxFinished: 50},
		Deps{Source: j, Dialer: newDialer(t, true), Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, s2)
	time.Sleep(100 * time.Millisecond)
	if got := len(rv.snapshot()); got != n {
		t.Errorf("after a restart the receiver has %d deliveries, want still %d", got, n)
	}
}

// TestOutboxSavedPerIntervalNotPerEvent: events that arrive one at a time
// (a receipt.created per execute) do not each cost a rewrite of the
// outbox: Run saves at most once per saveInterval of its clock, and once
// when it stops, so a restart re-sends nothing.
func TestOutboxSavedPerIntervalNotPerEvent(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	rv := &receiver{clk: clk}
	srv := httptest.NewServer(rv)
	defer srv.Close()
	dir := t.TempDir()
	j := openJournal(t, dir, clk)
	cfg := Config{Endpoints: []Endpoint{{URL: srv.URL + "/hook", Secret: secret}}, Dir: dir}
	deps := Deps{Source: j, Dialer: newDialer(t, true), Clock: clk, Logger: zerolog.Nop()}
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	const n = 50
	for i := range n {
		j.Append(events.ReceiptCreated, map[string]int{"n": i})
		deadline := time.Now().Add(10 * time.Second)
		for len(rv.snapshot()) < i+1 { // one at a time: each event is its own batch
			if time.Now().After(deadline) {
				t.Fatalf("event %d never delivered", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	cancel()
	<-done
	// The clock never moved: one save when the first event came, one when
	// Run stopped (the old loop saved after every enqueue and attempt).
	if saves := s.saves.Load(); saves > 3 {
		t.Errorf("%d outbox saves for %d events delivered one at a time, want at most 3", saves, n)
	}
	s2, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, s2)
	time.Sleep(100 * time.Millisecond)
	if got := len(rv.snapshot()); got != n {
		t.Errorf("after a restart the receiver has %d deliveries, want still %d", got, n)
	}
}
