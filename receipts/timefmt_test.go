package receipts

import (
	"math/rand/v2"
	"testing"
	"time"
)

// parseTimeReference is ParseTime as it was written first: time.Parse and
// a round trip through the layout.
func parseTimeReference(s string) (time.Time, bool) {
	t, err := time.Parse(TimeLayout, s)
	if err != nil || t.UTC().Format(TimeLayout) != s {
		return time.Time{}, false
	}
	return t, true
}

// TestTimeFormatMatchesLayout: FormatTime is the layout's Format, over
// years 0–9999 and beyond, every zone offset and sub-millisecond part.
func TestTimeFormatMatchesLayout(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	zones := []*time.Location{time.UTC, time.FixedZone("x", -7*3600-1800), time.FixedZone("y", 14*3600)}
	times := []time.Time{{}, time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}
	for range 20000 {
		sec := r.Int64N(400*365*86400) - 100*365*86400 + 946684800
		times = append(times, time.Unix(sec, r.Int64N(1e9)).In(zones[r.IntN(len(zones))]))
	}
	for _, tm := range times {
		if got, want := FormatTime(tm), tm.UTC().Format(TimeLayout); got != want {
			t.Fatalf("FormatTime(%v) = %s, want %s", tm, got, want)
		}
	}
}

// TestParseTimeMatchesTimeParse: ParseTime accepts exactly what the
// time.Parse reference accepts, and gives the same instant.
func TestParseTimeMatchesTimeParse(t *testing.T) {
	for _, s := range timeCases {
		checkParseTime(t, s)
	}
}

var timeCases = []string{
	"2026-01-02T15:04:05.000Z", "2026-11-23T05:22:19.123Z", "0000-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z",
	"2024-02-29T00:00:00.000Z", "2023-02-29T00:00:00.000Z", "2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00.000Z",
	"2026-00-01T00:00:00.000Z", "2026-01-00T00:00:00.000Z", "2026-01-32T00:00:00.000Z", "2026-04-31T00:00:00.000Z",
	"2026-01-02T24:00:00.000Z", "2026-01-02T23:60:00.000Z", "2026-01-02T23:59:60.000Z", "2026-01-02T15:04:05Z",
	"2026-01-02T15:04:05.00Z", "2026-01-02T15:04:05.0000Z", "2026-01-02T15:04:05.000+00:00", "2026-01-02 15:04:05.000Z",
	"2026-01-02t15:04:05.000z", "2026-01-02T15:04:05.000", "-026-01-02T15:04:05.000Z", "+026-01-02T15:04:05.000Z",
	"2026-1-02T15:04:05.000Z", "2026-01-02T15:04:05,000Z", "２０２６-01-02T15:04:05.000Z", "", "Z",
	"2026-01-02T15:04:05.-00Z", "2026-01-02T1a:04:05.000Z",
}

func checkParseTime(t *testing.T, s string) {
	t.Helper()
	want, wantOK := parseTimeReference(s)
	got, err := ParseTime(s)
	if (err == nil) != wantOK || !got.Equal(want) || got.Location() != want.Location() {
		t.Fatalf("ParseTime(%q) = %v, %v; reference %v, %v", s, got, err, want, wantOK)
	}
}

func FuzzParseTime(f *testing.F) {
	for _, s := range timeCases {
		f.Add(s)
	}
	f.Fuzz(checkParseTime)
}

// BenchmarkFormatTime and BenchmarkParseTime compare the written-out
// format and parse with the layout-driven ones they replaced.
func BenchmarkFormatTime(b *testing.B) {
	tm := time.Date(2026, 11, 23, 5, 22, 19, 123_456_789, time.UTC)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			_ = FormatTime(tm)
		}
	})
	b.Run("layout", func(b *testing.B) {
		for b.Loop() {
			_ = tm.UTC().Format(TimeLayout)
		}
	})
}

func BenchmarkParseTime(b *testing.B) {
	const s = "2026-11-23T05:22:19.123Z"
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseTime(s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("layout", func(b *testing.B) {
		for b.Loop() {
			if _, ok := parseTimeReference(s); !ok {
				b.Fatal(s)
			}
		}
	})
}
