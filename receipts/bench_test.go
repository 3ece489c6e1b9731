package receipts

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkAppend measures durable appends from many goroutines sharing
// group commits (one fsync per group).
func BenchmarkAppend(b *testing.B) {
	l := openLedger(b, b.TempDir(), opts{})
	var n atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := sampleReceipt(0)
			r.ReceiptID = fmt.Sprintf("bench-%d", n.Add(1))
			if _, err := l.Append(context.Background(), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSignHash measures sealing one receipt: its JCS encoding,
// SHA-256, Ed25519.
func BenchmarkSignHash(b *testing.B) {
	s := newSigner(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	r := sampleReceipt(1)
	r.Seq = 1
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		rec, err := appendReceipt(buf[:0], r)
		if err == nil {
			rec, _, _, err = s.sealAppend(rec)
		}
		if err != nil {
			b.Fatal(err)
		}
		buf = rec
	}
}

// BenchmarkIndexGetNewID measures the duplicate check every receipt
// append makes: the lookup of an id that is not there yet, newer than
// every indexed one (receipt ids are UUIDv7), with the index spread over
// runs as in a gate that has run for a while.
func BenchmarkIndexGetNewID(b *testing.B) {
	x := newDiskIDIndex(OSFS{}, b.TempDir(), "bench", 1024, zerolog.Nop())
	b.Cleanup(x.close)
	t := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	v7 := func(i int) string {
		ms := t.Add(time.Duration(i) * time.Millisecond).UnixMilli()
		return fmt.Sprintf("%08x-%04x-7abc-8def-%012x", ms>>16, ms&0xffff, i)
	}
	const n = 40 * 1024
	for i := range n {
		x.put(v7(i), int64(i))
		x.flush()
	}
	waitIdle(b, x)
	x.mu.RLock()
	runs := len(x.runs)
	x.mu.RUnlock()
	none := func(int64) (bool, error) { return false, nil }
	b.ReportAllocs()
	i := n
	for b.Loop() {
		if _, ok, err := x.get(v7(i), none); ok || err != nil {
			b.Fatal(ok, err)
		}
		i++
	}
	b.ReportMetric(float64(runs), "runs")
}
