package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultReceiptTTL is RedisConfig.ReceiptTTL's default: receipts copied
// to Redis are kept 30 days (PROTOCOL §5).
const DefaultReceiptTTL = 30 * 24 * time.Hour

// ReceiptCopy is one receipt as its gate's ledger stored it.
type ReceiptCopy struct {
	ID  string
	Raw []byte
}

func (r *Redis) receiptKey(id string) string { return r.key("rc", id) }

// PutReceipts stores copies of receipts, each MAC'd and kept ReceiptTTL,
// in one pipelined round trip. The gate's ledger stays the durable
// record; the copies let any gate sharing this Redis serve them.
func (r *Redis) PutReceipts(ctx context.Context, recs []ReceiptCopy) error {
	if len(recs) == 0 {
		return nil
	}
	rctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.client.Pipelined(rctx, func(p redis.Pipeliner) error {
		for _, c := range recs {
			mac := recordMAC(r.cfg.MACKey, "receipt", c.ID, c.Raw)
			p.Set(rctx, r.receiptKey(c.ID), mac+" "+string(c.Raw), r.cfg.ReceiptTTL)
		}
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// GetReceipt returns the copy of a receipt stored by any gate. A missing
// copy, or one whose MAC does not verify, is ErrNotFound.
func (r *Redis) GetReceipt(ctx context.Context, id string) ([]byte, error) {
	rctx, cancel := r.ctx(ctx)
	defer cancel()
	v, err := r.client.Get(rctx, r.receiptKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, unavailable(err)
	}
	mac, raw, ok := strings.Cut(v, " ")
	if !ok || !verifyMAC(r.cfg.MACKey, "receipt", id, []byte(raw), mac) {
		return nil, r.tampered("receipt", id)
	}
	return []byte(raw), nil
}

// PutReceiptKeys publishes a gate's receipt public key set (a JWKS), MAC'd,
// so every gate sharing this Redis can check the receipts it copied. Sets
// are kept by content: a rotated gate adds its new set and the old one
// stays, as old receipts still need the old keys.
func (r *Redis) PutReceiptKeys(ctx context.Context, jwks []byte) error {
	sum := sha256.Sum256(jwks)
	field := hex.EncodeToString(sum[:8])
	rctx, cancel := r.ctx(ctx)
	defer cancel()
	mac := recordMAC(r.cfg.MACKey, "receipt-keys", field, jwks)
	if err := r.client.HSet(rctx, r.key("rk"), field, mac+" "+string(jwks)).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

// ReceiptKeys returns every receipt key set the gates published. A set
// whose MAC does not verify is left out (and logged).
func (r *Redis) ReceiptKeys(ctx context.Context) ([][]byte, error) {
	rctx, cancel := r.ctx(ctx)
	defer cancel()
	all, err := r.client.HGetAll(rctx, r.key("rk")).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([][]byte, 0, len(all))
	for field, v := range all {
		mac, jwks, ok := strings.Cut(v, " ")
		if !ok || !verifyMAC(r.cfg.MACKey, "receipt-keys", field, []byte(jwks), mac) {
			_ = r.tampered("receipt-keys", field)
			continue
		}
		out = append(out, []byte(jwks))
	}
	return out, nil
}

// CopyReceipt queues a copy of a durable receipt for PutReceipts; the
// ledger calls it (receipts.Deps.OnReceipt). It never blocks: copies are
// made in the background, in pipelined batches, so an execute never waits
// for Redis. A copy that cannot be made (queue full, Redis down) is logged
// and counted, never retried: the ledger holds the receipt, and the gate
// that wrote it serves it. raw must not change afterwards.
func (r *Redis) CopyReceipt(id string, raw []byte) { r.copies.enqueue(ReceiptCopy{ID: id, Raw: raw}) }

// ReceiptCopiesDropped is how many receipt copies were not made.
func (r *Redis) ReceiptCopiesDropped() int64 { return r.copies.droppedN() }

// receiptCopier is the background writer behind CopyReceipt.
type receiptCopier struct {
	r       *Redis
	ch      chan ReceiptCopy
	done    chan struct{}
	mu      sync.RWMutex // closed and sends on ch
	closed  bool
	dropped atomic.Int64
}

const (
	receiptQueue     = 8192                  // copies waiting for Redis, at most
	receiptBatch     = 256                   // copies per pipelined round trip, at most
	receiptBatchWait = 20 * time.Millisecond // how long a batch collects
)

func newReceiptCopier(r *Redis) *receiptCopier {
	c := &receiptCopier{r: r, ch: make(chan ReceiptCopy, receiptQueue), done: make(chan struct{})}
	go c.loop()
	return c
}

func (c *receiptCopier) enqueue(rc ReceiptCopy) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		c.drop(1, errors.New("store closed"))
		return
	}
	select {
	case c.ch <- rc:
	default:
		c.drop(1, errors.New("copy queue full"))
	}
}

// drop counts copies not made, logging at 1, 2, 4, 8, … drops.
func (c *receiptCopier) drop(n int, why error) {
	total := c.dropped.Add(int64(n))
	if bits.OnesCount64(uint64(total)) == 1 || n > 1 {
		c.r.log.Warn().Err(why).Int64("dropped_total", total).Msg("store: receipt copies to redis dropped (the ledger keeps every receipt)")
	}
}

func (c *receiptCopier) droppedN() int64 { return c.dropped.Load() }

func (c *receiptCopier) loop() {
	defer close(c.done)
	batch := make([]ReceiptCopy, 0, receiptBatch)
	for first := range c.ch {
		// Collect for a moment: one pipelined round trip per receipt
		// cost the gate ≈ 130 µs per execute in a profile; a copy a few
		// ms late costs nothing (the writing gate serves it meanwhile).
		batch = append(batch[:0], first)
		t := time.NewTimer(receiptBatchWait)
	collect:
		for len(batch) < cap(batch) {
			select {
			case rc, ok := <-c.ch:
				if !ok {
					break collect
				}
				batch = append(batch, rc)
			case <-t.C:
				break collect
			}
		}
		t.Stop()
		if err := c.r.PutReceipts(context.Background(), batch); err != nil {
			c.drop(len(batch), err)
		}
		clear(batch)
	}
}

// close copies what is queued, then stops.
func (c *receiptCopier) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.ch)
	}
	c.mu.Unlock()
	<-c.done
}
