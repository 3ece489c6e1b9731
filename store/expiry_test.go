package store

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestExpirySet(t *testing.T) {
	now := testStart()
	tests := []struct {
		name    string
		form    keyForm
		key     string
		compact bool
	}{
		{"uuid", formUUID, "0190d6a4-8c1e-7abc-8def-0123456789ab", true},
		{"uuid upper case", formUUID, "0190D6A4-8C1E-7ABC-8DEF-0123456789AB", false},
		{"uuid without hyphens", formUUID, "0190d6a48c1e7abc8def0123456789ab", false},
		{"uuid not hex", formUUID, "0190d6a4-8c1e-7abc-8def-0123456789ax", false},
		{"other grant id", formUUID, "grant-1", false},
		{"hex", formHex, "00112233445566778899aabbccddeeff", true},
		{"hex upper case", formHex, "00112233445566778899AABBCCDDEEFF", false},
		{"hex too long", formHex, "00112233445566778899aabbccddeeff00", false},
		{"hex with a uuid", formHex, "0190d6a4-8c1e-7abc-8def-0123456789ab", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newExpirySet(tt.form)
			s.put(tt.key, now.Add(time.Minute))
			if got := len(s.compact) == 1; got != tt.compact {
				t.Errorf("put(%q) compact = %v, want %v", tt.key, got, tt.compact)
			}
			var keys []string
			s.each(func(k string, exp time.Time) {
				keys = append(keys, k)
				if !exp.Equal(now.Add(time.Minute)) {
					t.Errorf("each(%q) expiry = %v, want %v", k, exp, now.Add(time.Minute))
				}
			})
			if fmt.Sprint(keys) != fmt.Sprint([]string{tt.key}) {
				t.Errorf("each keys = %v, want [%s]", keys, tt.key)
			}
			for _, c := range []struct {
				at   time.Duration
				want bool
			}{{0, true}, {time.Minute - time.Nanosecond, true}, {time.Minute, false}} {
				if got := s.live(tt.key, now.Add(c.at)); got != c.want {
					t.Errorf("live(%q, +%v) = %v, want %v", tt.key, c.at, got, c.want)
				}
			}
			s.sweep(now.Add(time.Minute - time.Nanosecond))
			if s.len() != 1 {
				t.Errorf("len after an early sweep = %d, want 1", s.len())
			}
			s.sweep(now.Add(time.Minute))
			if s.len() != 0 {
				t.Errorf("len after the expiry sweep = %d, want 0", s.len())
			}
		})
	}
	// Keys that differ only in case stay distinct.
	s := newExpirySet(formUUID)
	s.put("0190d6a4-8c1e-7abc-8def-0123456789ab", now.Add(time.Minute))
	if s.live("0190D6A4-8C1E-7ABC-8DEF-0123456789AB", now) {
		t.Error("live(upper-case spelling of a marked id) = true, want false")
	}
}

// TestExpirySetMemory reports the heap per grant marker, next to the
// map[string]time.Time it replaced, and fails only far above ≈ 40 B.
func TestExpirySetMemory(t *testing.T) {
	const n = 50_000
	now := testStart()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("0190d6a4-8c1e-7abc-8def-%012x", i)
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	old := map[string]time.Time{}
	for _, k := range keys {
		old[string([]byte(k))] = now // the journal decoder's copy of the key
	}
	oldPer := float64(heap()-before) / n
	runtime.KeepAlive(old)
	old = nil
	before = heap()
	s := newExpirySet(formUUID)
	for _, k := range keys {
		s.put(k, now)
	}
	newPer := float64(heap()-before) / n
	runtime.KeepAlive(s)
	runtime.KeepAlive(keys)
	t.Logf("heap per grant marker, %d markers: before %.0f B, now %.0f B", n, oldPer, newPer)
	if newPer > 80 {
		t.Errorf("heap per grant marker = %.0f B, want <= 80 B (expected ≈ 40)", newPer)
	}
}
