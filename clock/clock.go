// Package clock owns the notion of "now" for LatchGate.
//
// Every decision that depends on time (lease expiry, proof windows, budgets,
// approvals, receipts) reads it from an injected Clock, never from time.Now
// directly, so tests can drive time with a Fake. The API is internal to this
// module and may change.
package clock

import (
	"sync"
	"time"
)

// Clock tells the current time.
type Clock interface {
	Now() time.Time
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Fake is a Clock for tests whose time only moves when told to.
// The zero value starts at the Unix epoch; use NewFake for a real start time.
type Fake struct {
	mu  sync.Mutex // guards now
	now time.Time
}

// NewFake returns a Fake clock set to t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the fake time forward by d.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// Set sets the fake time to t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

var (
	_ Clock = Real{}
	_ Clock = (*Fake)(nil)
)
