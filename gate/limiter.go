package gate

import (
	"math"
	"sync"
	"time"

	"github.com/latchgate/latchgate/clock"
)

// limiter is a token bucket per key (burst = 2·rate, at least 1). A zero
// rate disables it.
type limiter struct {
	rate  float64
	burst float64
	clk   clock.Clock

	mu      sync.Mutex // guards buckets
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, clk clock.Clock) *limiter {
	return &limiter{rate: rate, burst: math.Max(1, 2*rate), clk: clk, buckets: map[string]*bucket{}}
}

// allow takes a token for key; when none is left it returns false and the
// number of seconds until one is.
func (l *limiter) allow(key string) (bool, int) {
	if l.rate <= 0 {
		return true, 0
	}
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) > 100_000 {
			l.sweepLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, int(math.Ceil((1 - b.tokens) / l.rate))
}

// sweepLocked drops full buckets. l.mu must be held.
func (l *limiter) sweepLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}
