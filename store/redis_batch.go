package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// scriptBatcher runs the store's Lua scripts. A script run while no other
// is in flight is sent at once by its caller. Scripts run while others are
// in flight queue, and one goroutine sends what has queued as one
// pipeline per round trip: the ledger's group commit, applied to Redis.
// Nothing waits for a batch to fill, so a lightly loaded store sends each
// script alone, as a plain client would.
//
// Batching changes no script's meaning. Redis runs every script of a
// pipeline atomically and alone, in the order sent, and answers each in
// order, so every caller gets its own reply; the pipeline only shares one
// write and one read between them. That saves system calls and event-loop
// turns on both ends: in `latchgate bench` Redis mode, ≈ 22 % of Redis's
// CPU and ≈ 4 % of the gate's per execute (BENCHMARKS.md).
//
// Failure modes are those of a single command. A pipeline that cannot be
// written or read fails every script in it (the callers see
// ErrUnavailable); as with a lost reply, a script whose reply was lost may
// have run. Nothing is retried, except a script Redis does not know
// (NOSCRIPT, after a restart or SCRIPT FLUSH): that reply means it did
// not run, and it is sent again with its source (EVAL). A caller whose
// context ends while its script is still queued is not sent at all.
type scriptBatcher struct {
	client  *redis.Client
	timeout time.Duration
	calls   chan *scriptCall
	done    chan struct{}
	mu      sync.RWMutex // held to set closed, read-held to send on calls
	closed  atomic.Bool
	// inflight counts the scripts sent or queued and not yet answered.
	inflight atomic.Int64

	// onBatch, when set (tests), is called with each batch before it is
	// sent, from the batcher's goroutine.
	onBatch func(n int)
}

// scriptCall is one queued script run and, once done is closed, its reply.
type scriptCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd // its command in the pipeline
	val    any
	err    error
	done   chan struct{}
}

const (
	scriptQueue = 1024 // scripts waiting for a round trip, at most
	scriptBatch = 64   // scripts per pipeline, at most
)

// errStoreClosed answers scripts run after Close.
var errStoreClosed = errors.New("store closed")

func newScriptBatcher(client *redis.Client, timeout time.Duration) *scriptBatcher {
	b := &scriptBatcher{
		client:  client,
		timeout: timeout,
		calls:   make(chan *scriptCall, scriptQueue),
		done:    make(chan struct{}),
	}
	go b.loop()
	return b
}

// run runs a script, at once or batched, and waits for its reply or for
// ctx to end. ctx should carry a deadline: a full queue blocks until there
// is room.
func (b *scriptBatcher) run(ctx context.Context, s *redis.Script, keys []string, args []any) (any, error) {
	if b.inflight.Add(1) == 1 {
		// Nothing is in flight: send it now, from this goroutine.
		defer b.inflight.Add(-1)
		if b.closed.Load() {
			return nil, errStoreClosed
		}
		return s.Run(ctx, b.client, keys, args...).Result()
	}
	c := &scriptCall{ctx: ctx, script: s, keys: keys, args: args, done: make(chan struct{})}
	if err := b.enqueue(c); err != nil {
		b.inflight.Add(-1)
		return nil, err
	}
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *scriptBatcher) enqueue(c *scriptCall) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return errStoreClosed
	}
	select {
	case b.calls <- c:
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

func (b *scriptBatcher) loop() {
	defer close(b.done)
	batch := make([]*scriptCall, 0, scriptBatch)
	for first := range b.calls {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < cap(batch) {
			select {
			case c, ok := <-b.calls:
				if !ok {
					break drain
				}
				batch = append(batch, c)
			default:
				break drain
			}
		}
		b.send(batch)
		clear(batch)
	}
}

// send runs one batch as a pipeline and answers each call.
func (b *scriptBatcher) send(batch []*scriptCall) {
	live := batch[:0] // filtered in place
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.err = err // its caller has gone: do not run it
			b.answer(c)
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	if b.onBatch != nil {
		b.onBatch(len(live))
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	_, _ = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range live {
			c.cmd = c.script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	// A failed pipeline stamps its error on every command; a command left
	// with neither error nor value fails the caller's reply check.
	for _, c := range live {
		c.val, c.err = c.cmd.Result()
		if redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			c.val, c.err = c.script.Eval(ctx, b.client, c.keys, c.args...).Result()
		}
		b.answer(c)
	}
}

func (b *scriptBatcher) answer(c *scriptCall) {
	b.inflight.Add(-1)
	close(c.done)
}

// close runs what is queued, then stops. Scripts run after it fail with
// errStoreClosed.
func (b *scriptBatcher) close() {
	b.mu.Lock()
	if !b.closed.Load() {
		b.closed.Store(true)
		close(b.calls)
	}
	b.mu.Unlock()
	<-b.done
}
