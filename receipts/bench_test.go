package receipts

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
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

// BenchmarkSignHash measures sealing one receipt: marshal, JCS, SHA-256,
// Ed25519.
func BenchmarkSignHash(b *testing.B) {
	s := newSigner(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	r := sampleReceipt(1)
	r.Seq = 1
	b.ReportAllocs()
	for b.Loop() {
		unsigned, err := json.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.seal(unsigned); err != nil {
			b.Fatal(err)
		}
	}
}
