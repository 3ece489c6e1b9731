package sdk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Defaults of the client options.
const (
	DefaultHTTPTimeout   = 60 * time.Second // per attempt, including reading the answer
	DefaultDialTimeout   = 5 * time.Second
	DefaultRenewBefore   = 60 * time.Second // renew this long before expiry (at most half the lifetime)
	DefaultMaxAttempts   = 4
	DefaultBaseDelay     = 200 * time.Millisecond
	DefaultMaxDelay      = 5 * time.Second
	DefaultMaxRetryAfter = 30 * time.Second
	defaultPollInterval  = 2 * time.Second
	maxPollInterval      = 60 * time.Second
	maxResponseBytes     = 64 << 20
	unixBaseURL          = "http://localhost"
)

// Clock tells the current time. The zero option uses the wall clock; tests
// may pass a fake (any type with Now, e.g. clock.Fake).
type Clock interface {
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// RetryPolicy controls automatic retries of ErrUnavailable and ErrTransport
// failures on safe calls (and on Execute when it carries an Idempotency-Key).
// Zero fields take the defaults.
type RetryPolicy struct {
	MaxAttempts   int           // total attempts including the first; default 4; 1 disables retries
	BaseDelay     time.Duration // first backoff step; default 200ms; doubled each attempt, full jitter
	MaxDelay      time.Duration // cap of one backoff step; default 5s
	MaxRetryAfter time.Duration // a Retry-After above this is not waited for; the error is returned; default 30s
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.BaseDelay == 0 {
		p.BaseDelay = DefaultBaseDelay
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = DefaultMaxDelay
	}
	if p.MaxRetryAfter == 0 {
		p.MaxRetryAfter = DefaultMaxRetryAfter
	}
	return p
}

// Budgets are the per-session budgets asked for at lease time (the gate caps
// them by the principal's ceilings). A nil field is not requested.
type Budgets struct {
	MaxCalls        *int // ≥ 1
	MaxCostUSDCents *int // ≥ 0
}

// options are what the Option functions set.
type options struct {
	agentID     string
	socket      string
	baseURL     string
	scopes      []string
	budgets     Budgets
	ttl         time.Duration
	logger      *slog.Logger
	httpTimeout time.Duration
	renewBefore time.Duration
	retry       RetryPolicy
	clock       Clock
	// test hooks (export_test.go)
	getenv      func(string) string
	socketPaths []string
	sleep       func(context.Context, time.Duration) error
}

// Option configures a Client.
type Option func(*options)

// WithAgentID sets the agent label sent at lease time and turns on lazy
// connect: the first authenticated call opens a lease by itself.
func WithAgentID(id string) Option { return func(o *options) { o.agentID = id } }

// WithSocket sets the gate's client socket (used when no base URL is given
// and LATCHGATE_URL is unset). An explicit socket is not safety-checked.
func WithSocket(path string) Option { return func(o *options) { o.socket = path } }

// WithBaseURL talks to the gate over TCP at u (e.g. "http://localhost:3000").
// It wins over LATCHGATE_URL and any socket.
func WithBaseURL(u string) Option { return func(o *options) { o.baseURL = u } }

// WithScopes sets the scopes asked for at lease time (gate default ["tools:call"]).
func WithScopes(scopes ...string) Option {
	return func(o *options) { o.scopes = append([]string(nil), scopes...) }
}

// WithBudgets sets the budgets asked for at lease time.
func WithBudgets(b Budgets) Option { return func(o *options) { o.budgets = b } }

// WithTTL sets the lease ttl asked for (gate default 300s, maximum 3600s).
// Zero leaves it to the gate.
func WithTTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

// WithLogger sets the logger (default slog.Default()). The client never logs
// leases, proofs or arguments.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithHTTPTimeout sets the timeout of one attempt (default 60s).
func WithHTTPTimeout(d time.Duration) Option { return func(o *options) { o.httpTimeout = d } }

// WithRenewBefore sets how long before expiry a lease is renewed (default
// 60s, and never earlier than half the lease's lifetime).
func WithRenewBefore(d time.Duration) Option { return func(o *options) { o.renewBefore = d } }

// WithRetry sets the retry policy.
func WithRetry(p RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithClock sets the clock used for proof iat and lease renewal (default the
// wall clock).
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

func (o *options) withDefaults() {
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.httpTimeout == 0 {
		o.httpTimeout = DefaultHTTPTimeout
	}
	if o.renewBefore == 0 {
		o.renewBefore = DefaultRenewBefore
	}
	o.retry = o.retry.withDefaults()
	if o.clock == nil {
		o.clock = wallClock{}
	}
	if o.getenv == nil {
		o.getenv = os.Getenv
	}
	if o.sleep == nil {
		o.sleep = sleepCtx
	}
}

func (o *options) validate() error {
	switch {
	case o.httpTimeout < 0:
		return errors.New("latchgate: http timeout must be > 0, e.g. 30s")
	case o.ttl < 0:
		return errors.New("latchgate: ttl must be ≥ 0 (0 = gate default), e.g. 5m")
	case o.renewBefore < 0:
		return errors.New("latchgate: renew-before must be > 0, e.g. 60s")
	case o.retry.MaxAttempts < 1 || o.retry.BaseDelay < 0 || o.retry.MaxDelay < 0 || o.retry.MaxRetryAfter < 0:
		return errors.New("latchgate: retry policy: MaxAttempts must be ≥ 1 and delays ≥ 0")
	case len(o.agentID) > 128:
		return errors.New("latchgate: agent id must be at most 128 characters")
	case o.budgets.MaxCalls != nil && *o.budgets.MaxCalls < 1:
		return errors.New("latchgate: budgets.MaxCalls must be ≥ 1")
	case o.budgets.MaxCostUSDCents != nil && *o.budgets.MaxCostUSDCents < 0:
		return errors.New("latchgate: budgets.MaxCostUSDCents must be ≥ 0")
	}
	for _, s := range o.scopes {
		if s == "" {
			return errors.New("latchgate: scopes must not be empty strings")
		}
	}
	return nil
}

// Client talks to one gate. It is safe for concurrent use. Create it with New
// and release it with Close.
type Client struct {
	opts    options
	base    string // URL base without trailing slash; "http://localhost" over a socket
	htuBase string // normalised base for htu
	http    *http.Client
	tr      *http.Transport
	log     *slog.Logger

	bgCtx    context.Context // cancelled by Close; parent of lease flights
	bgCancel context.CancelFunc

	// mu guards lease, flight and closed. No network I/O happens while it is held.
	mu     sync.Mutex
	lease  *leaseState
	flight *leaseFlight // non-nil while a lazy connect or renewal runs
	closed bool

	// keysMu guards keys (the cached receipt key set).
	keysMu sync.Mutex
	keys   *KeySet
}

// New returns a Client. The gate URL is resolved in this order: WithBaseURL,
// $LATCHGATE_URL, WithSocket, then the default sockets
// /run/latchgate/gate.sock, $XDG_RUNTIME_DIR/latchgate/gate.sock,
// /tmp/latchgate-<uid>/gate.sock (the first that exists, refused if its
// directory is a symlink or writable by others). New does not contact the gate.
func New(opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: DefaultDialTimeout}
	tr := &http.Transport{
		MaxIdleConns:          16,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
	c := &Client{opts: o, tr: tr, log: o.logger.With("component", "latchgate-sdk")}

	base := o.baseURL
	if base == "" {
		base = strings.TrimSpace(o.getenv("LATCHGATE_URL"))
	}
	switch {
	case base != "":
		u, err := url.Parse(base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("latchgate: base URL %q must be http(s)://host[:port][/prefix]", base)
		}
		c.base = strings.TrimRight(base, "/")
		tr.Proxy = nil // the gate is never reached through an HTTP proxy
		tr.DialContext = dialer.DialContext
	case o.socket != "":
		c.base = unixBaseURL
		sock := o.socket
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
	default:
		c.base = unixBaseURL
		paths := o.socketPaths
		if paths == nil {
			paths = defaultSocketPaths(o.getenv, os.Getuid())
		}
		uid := os.Getuid()
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			// Checked on every dial, not once: the gate may start after
			// the client, and the directory may change under us.
			sock, err := pickDefaultSocket(paths, uid)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, "unix", sock)
		}
	}
	c.htuBase = strings.TrimSuffix(normalizeHTU(c.base), "/")
	c.http = &http.Client{
		Transport: tr,
		Timeout:   o.httpTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // the gate never redirects; never follow one
		},
	}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	return c, nil
}

// Close releases idle connections and makes further calls fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.lease = nil
	c.mu.Unlock()
	c.bgCancel()
	c.tr.CloseIdleConnections()
	return nil
}

// ---------------------------------------------------------------- requests

// call is one logical request.
type call struct {
	method  string
	path    string // raw path, already escaped
	body    []byte // nil: no body
	auth    bool   // lease + DPoP
	retry   bool   // safe to retry on ErrUnavailable / ErrTransport
	idemKey string // Idempotency-Key header, if any
}

// response is a 2xx answer.
type response struct {
	status int
	body   []byte
}

// do runs c with retries. Non-2xx answers become *Error.
func (c *Client) do(ctx context.Context, cl call) (*response, error) {
	p := c.opts.retry
	for attempt := 1; ; attempt++ {
		resp, err := c.once(ctx, cl)
		if err == nil {
			return resp, nil
		}
		var fe finalError
		if errors.As(err, &fe) {
			return nil, fe.err
		}
		var e *Error
		if !errors.As(err, &e) || !cl.retry || !e.retryable() || attempt >= p.MaxAttempts || ctx.Err() != nil {
			return nil, err
		}
		delay := backoff(p, attempt)
		if e.RetryAfter > 0 {
			if e.RetryAfter > p.MaxRetryAfter {
				return nil, err
			}
			delay = e.RetryAfter
		}
		c.log.LogAttrs(ctx, slog.LevelInfo, "retrying",
			slog.String("method", cl.method), slog.String("path", cl.path),
			slog.Int("attempt", attempt), slog.Int("status", e.Status), slog.String("code", e.Code),
			slog.Duration("delay", delay))
		if err := c.opts.sleep(ctx, delay); err != nil {
			return nil, transportError(err)
		}
	}
}

// backoff is full-jitter exponential backoff for the given attempt (1-based).
func backoff(p RetryPolicy, attempt int) time.Duration {
	d := p.BaseDelay << min(attempt-1, 20)
	if d > p.MaxDelay || d <= 0 {
		d = p.MaxDelay
	}
	if d <= 0 {
		return 0
	}
	return time.Duration(mrand.Int64N(int64(d) + 1))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// once sends one attempt, with a fresh proof when cl.auth.
func (c *Client) once(ctx context.Context, cl call) (*response, error) {
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, c.base+cl.path, body)
	if err != nil {
		return nil, &Error{Kind: ErrDenied, Message: "invalid request: " + err.Error()}
	}
	req.Header.Set("Accept", "application/json")
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.idemKey != "" {
		req.Header.Set("Idempotency-Key", cl.idemKey)
	}
	if cl.auth {
		l, err := c.currentLease(ctx)
		if err != nil {
			// A lazy connect or renewal has already been retried.
			return nil, finalError{err}
		}
		proof, err := l.key.proof(cl.method, c.htuBase+cl.path, c.opts.clock.Now(), l.jwt, cl.body)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "DPoP "+l.jwt)
		req.Header.Set("DPoP", proof)
	}
	res, err := c.http.Do(req)
	if err != nil {
		if c.isClosed() {
			return nil, &Error{Kind: ErrClosed, Message: "the client is closed", Err: err}
		}
		return nil, transportError(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes+1))
	if err != nil {
		return nil, transportError(err)
	}
	if len(data) > maxResponseBytes {
		return nil, &Error{Kind: ErrServer, Status: res.StatusCode, Message: "answer larger than the SDK accepts"}
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		e := errorFromResponse(res.StatusCode, res.Header, data, c.opts.clock.Now())
		level := slog.LevelWarn
		if res.StatusCode >= 500 {
			level = slog.LevelError
		}
		c.log.LogAttrs(ctx, level, "gate refused request",
			slog.String("method", cl.method), slog.String("path", cl.path),
			slog.Int("status", e.Status), slog.String("code", e.Code), slog.String("trace_id", e.TraceID))
		return nil, e
	}
	return &response{status: res.StatusCode, body: data}, nil
}

// finalError marks an error that do must return without another attempt.
type finalError struct{ err error }

func (f finalError) Error() string { return f.err.Error() }

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// getJSON GETs path (retried) and decodes the answer into v.
func (c *Client) getJSON(ctx context.Context, path string, auth bool, v any) error {
	res, err := c.do(ctx, call{method: http.MethodGet, path: path, auth: auth, retry: true})
	if err != nil {
		return err
	}
	return decode(res.body, v)
}

func decode(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return &Error{Kind: ErrServer, Message: "the gate's answer is not the expected JSON", Err: err}
	}
	return nil
}

// newIdempotencyKey returns a random key for one logical execute.
func newIdempotencyKey() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "lg-" + b64(b), nil
}
