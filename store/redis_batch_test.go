package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/latchgate/latchgate/store/storetest"
)

// echoScript answers its argument and counts its runs in KEYS[1].
var echoScript = redis.NewScript(`redis.call('INCR', KEYS[1]) return ARGV[1]`)

// heldBatcher returns a batcher on a real Redis that queues every script
// (it counts one script in flight that never ends) and whose first batch
// waits until release is closed, so the test can queue scripts behind it;
// sizes receives every batch's size.
func heldBatcher(t *testing.T) (b *scriptBatcher, raw *redis.Client, sizes <-chan int, release chan struct{}) {
	t.Helper()
	url, _, _ := storetest.StartRedis(t)
	raw = rawClient(t, url)
	b = newScriptBatcher(raw, 5*time.Second)
	t.Cleanup(b.close)
	b.inflight.Add(1)
	t.Cleanup(func() {
		if n := b.inflight.Load(); n != 1 {
			t.Errorf("%d scripts still counted in flight, want 0", n-1)
		}
	})
	release = make(chan struct{})
	ch := make(chan int, 64)
	var once sync.Once
	b.onBatch = func(n int) {
		ch <- n
		once.Do(func() { <-release })
	}
	return b, raw, ch, release
}

// holdFirst runs a first script and waits until its batch, of that one
// script, is held; the channel reports its outcome once released.
func holdFirst(t *testing.T, b *scriptBatcher, sizes <-chan int) <-chan error {
	t.Helper()
	first := make(chan error, 1)
	go func() {
		got, err := echo(b, context.Background(), "n", "first")
		if err == nil && got != "first" {
			err = fmt.Errorf("first script's reply %q", got)
		}
		first <- err
	}()
	if n := <-sizes; n != 1 {
		t.Fatalf("first batch holds %d scripts, want 1", n)
	}
	return first
}

// waitQueued waits until n scripts wait in b's queue.
func waitQueued(t *testing.T, b *scriptBatcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(b.calls) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d scripts queued, want %d", len(b.calls), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// wantRuns checks that echoScript ran n times in all; want says why.
func wantRuns(t *testing.T, raw *redis.Client, n int, want string) {
	t.Helper()
	if got, err := raw.Get(context.Background(), "n").Int(); err != nil || got != n {
		t.Fatalf("scripts ran %d times (%v), want %s", got, err, want)
	}
}

func echo(b *scriptBatcher, ctx context.Context, key, arg string) (string, error) {
	v, err := b.run(ctx, echoScript, []string{key}, []any{arg})
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("reply %T", v)
	}
	return s, nil
}

// TestScriptBatcherDirectWhenIdle: with nothing in flight a script is
// sent at once from its caller's goroutine, not handed to the batcher (at
// 1,000 executes/s the hand-off cost latency and saved nothing), and the
// direct path also recovers from NOSCRIPT.
func TestScriptBatcherDirectWhenIdle(t *testing.T) {
	url, _, _ := storetest.StartRedis(t)
	raw := rawClient(t, url)
	b := newScriptBatcher(raw, 5*time.Second)
	t.Cleanup(b.close)
	b.onBatch = func(n int) { t.Errorf("a batch of %d with nothing in flight, want the direct path", n) }
	ctx := context.Background()
	for i := range 3 {
		if i == 2 {
			if err := raw.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		want := fmt.Sprint(i)
		if got, err := echo(b, ctx, "n", want); err != nil || got != want {
			t.Fatalf("script %d = %q, %v", i, got, err)
		}
	}
	if n := b.inflight.Load(); n != 0 {
		t.Fatalf("%d scripts counted in flight after the last reply, want 0", n)
	}
	b.close()
	if _, err := echo(b, ctx, "n", "late"); !errors.Is(err, errStoreClosed) {
		t.Fatalf("script after Close = %v, want errStoreClosed", err)
	}
	wantRuns(t, raw, 3, "each once")
}

// TestScriptBatcherBatches: scripts that arrive while a round trip is in
// flight go out together as one pipeline, and each caller gets its own
// reply.
func TestScriptBatcherBatches(t *testing.T) {
	b, raw, sizes, release := heldBatcher(t)
	ctx := context.Background()
	first := holdFirst(t, b, sizes)
	const queued = 20
	errs := make(chan error, queued)
	for i := range queued {
		go func() {
			want := fmt.Sprintf("call-%d", i)
			got, err := echo(b, ctx, "n", want)
			if err == nil && got != want {
				err = fmt.Errorf("caller %d got %q, want %q", i, got, want)
			}
			errs <- err
		}()
	}
	waitQueued(t, b, queued)
	close(release)
	if n := <-sizes; n != queued {
		t.Fatalf("second batch holds %d scripts, want all %d queued", n, queued)
	}
	for range queued {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wantRuns(t, raw, queued+1, "each once")
}

// TestScriptBatcherNoScript: after SCRIPT FLUSH (or a Redis restart) every
// script of a batch answers NOSCRIPT, did not run, and is sent again with
// its source, once.
func TestScriptBatcherNoScript(t *testing.T) {
	b, raw, sizes, release := heldBatcher(t)
	close(release)
	ctx := context.Background()
	if _, err := echo(b, ctx, "n", "load"); err != nil {
		t.Fatal(err)
	}
	<-sizes
	if err := raw.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			want := fmt.Sprint(i)
			got, err := echo(b, ctx, "n", want)
			if err == nil && got != want {
				err = fmt.Errorf("got %q, want %q", got, want)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("after SCRIPT FLUSH: %v", err)
		}
	}
	wantRuns(t, raw, 9, "each once")
}

// TestScriptBatcherDropsAbandoned: a script whose caller gave up while it
// was queued is never sent, so it cannot consume a jti or a budget behind
// an answer the caller never saw.
func TestScriptBatcherDropsAbandoned(t *testing.T) {
	b, raw, sizes, release := heldBatcher(t)
	ctx := context.Background()
	first := holdFirst(t, b, sizes)
	cctx, cancel := context.WithCancel(ctx)
	abandoned := make(chan error, 1)
	go func() { _, err := echo(b, cctx, "n", "abandoned"); abandoned <- err }()
	waitQueued(t, b, 1)
	cancel()
	if err := <-abandoned; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned script = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// A third script runs after the abandoned one was dropped.
	if got, err := echo(b, ctx, "n", "last"); err != nil || got != "last" {
		t.Fatalf("last script = %q, %v", got, err)
	}
	wantRuns(t, raw, 2, "2 (the abandoned one not at all)")
}

// TestScriptBatcherClose: Close runs what is queued; later scripts fail
// without reaching Redis, and nothing hangs.
func TestScriptBatcherClose(t *testing.T) {
	b, raw, sizes, release := heldBatcher(t)
	ctx := context.Background()
	first := holdFirst(t, b, sizes)
	errs := make(chan error, 4)
	for i := 1; i < 4; i++ {
		go func() { _, err := echo(b, ctx, "n", fmt.Sprint(i)); errs <- err }()
	}
	waitQueued(t, b, 3)
	closed := make(chan struct{})
	go func() { b.close(); close(closed) }()
	close(release)
	<-closed
	errs <- <-first
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("script queued before Close = %v, want it run", err)
		}
	}
	if _, err := echo(b, ctx, "n", "late"); !errors.Is(err, errStoreClosed) {
		t.Fatalf("script after Close = %v, want errStoreClosed", err)
	}
	wantRuns(t, raw, 4, "each queued one once")
}
