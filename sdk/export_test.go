package sdk

import (
	"context"
	"time"
)

// Test hooks; compiled only into this package's tests.

// WithGetenvForTest replaces os.Getenv.
func WithGetenvForTest(f func(string) string) Option { return func(o *options) { o.getenv = f } }

// WithSocketPathsForTest replaces the default socket candidates.
func WithSocketPathsForTest(paths ...string) Option {
	return func(o *options) { o.socketPaths = paths }
}

// WithSleepForTest replaces the backoff / poll sleep.
func WithSleepForTest(f func(context.Context, time.Duration) error) Option {
	return func(o *options) { o.sleep = f }
}

// Internals checked against the shared vectors.
var (
	NormalizeHTUForTest       = normalizeHTU
	DefaultSocketPathsForTest = defaultSocketPaths
)

// ThumbprintForTest is the RFC 7638 thumbprint of a P-256 JWK.
func ThumbprintForTest(x, y string) string {
	return ecThumbprint(publicJWK{Kty: "EC", Crv: "P-256", X: x, Y: y})
}
