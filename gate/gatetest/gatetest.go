// Package gatetest runs a real in-process gate for tests: real Unix
// sockets in a temp dir, the embedded store (or a real Redis), real OPA,
// the real ledger and manifests. Only the clock may be faked.
//
// It is test support: it calls tb.Helper and registers cleanups, and its
// API may change with the tests that use it.
package gatetest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latchgate/latchgate/actions"
	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/definitions"
	"github.com/latchgate/latchgate/egress"
	"github.com/latchgate/latchgate/events"
	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/lease/leasetest"
	"github.com/latchgate/latchgate/policy"
	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/store"
	"github.com/rs/zerolog"
)

// testPolicyTimeout bounds policy evaluation in test gates. Production's
// 250 ms can pass on a loaded CI machine under -race; tests prove outcomes,
// and the fail-closed timeout itself is tested in package policy.
const testPolicyTimeout = 10 * time.Second

// Options configure a test gate.
type Options struct {
	// Config is the gate configuration; GateID defaults to "test-gate".
	Config gate.Config
	// Lease overrides the lease configuration.
	Lease lease.Config
	// Clock defaults to clock.Real{}.
	Clock clock.Clock
	// StateDir reuses a state directory (restart tests). Default: a temp dir.
	StateDir string
	// KeysDir defaults to <StateDir>/keys.
	KeysDir string
	// RedisURL selects the Redis store.
	RedisURL string
	// ManifestsDir adds manifests.
	ManifestsDir string
	// PolicyDir replaces the embedded policy.
	PolicyDir string
	// AllowAllActions is the --dev ACL (default true in tests unless
	// PolicyDir is set).
	RestrictACL bool
	// Logger defaults to a no-op logger.
	Logger *zerolog.Logger
	// EgressAllowCIDRs enables the real egress dialer with this test-only
	// escape hatch (e.g. 127.0.0.1/32 for httptest upstreams). Nil: http
	// actions have no dialer and end with internal_error.
	EgressAllowCIDRs []netip.Prefix
	// RootCAs are the upstream TLS roots (test CAs).
	RootCAs *x509.CertPool
	// Resolver replaces DNS for egress (tests map names to loopback).
	Resolver egress.Resolver
	// Secrets feed {{secret.NAME}}.
	Secrets map[string]string
	// LedgerFS replaces the ledger's file system (fault injection).
	LedgerFS receipts.FS
	// WrapStore, when set, wraps the store the gate (and the ledger, as
	// its Syncer) uses: tests observe or fail store calls with it.
	WrapStore func(store.Store) store.Store
	// WrapReload, when set, wraps the snapshot builder the gate reloads
	// with: tests order or observe reloads with it.
	WrapReload func(load func() (*gate.Snapshot, error)) func() (*gate.Snapshot, error)
}

// Option changes Options.
type Option func(*Options)

// WithConfig sets the gate config (replacing the default Dev and
// TrustAgentID settings).
func WithConfig(c gate.Config) Option { return func(o *Options) { o.Config = c } }

// WithClock sets the clock.
func WithClock(c clock.Clock) Option { return func(o *Options) { o.Clock = c } }

// WithStateDir reuses a state directory.
func WithStateDir(d string) Option { return func(o *Options) { o.StateDir = d } }

// WithKeysDir sets the keys directory (gates sharing a Redis share it).
func WithKeysDir(d string) Option { return func(o *Options) { o.KeysDir = d } }

// WithRedis selects the Redis store.
func WithRedis(url string) Option { return func(o *Options) { o.RedisURL = url } }

// WithManifestsDir adds a manifests directory.
func WithManifestsDir(d string) Option { return func(o *Options) { o.ManifestsDir = d } }

// WithPolicyDir replaces the policy.
func WithPolicyDir(d string) Option { return func(o *Options) { o.PolicyDir = d } }

// WithLedgerFS makes the ledger use fs (fault-injection tests).
func WithLedgerFS(fs receipts.FS) Option { return func(o *Options) { o.LedgerFS = fs } }

// WithLease sets the lease config.
func WithLease(c lease.Config) Option { return func(o *Options) { o.Lease = c } }

// WithLogger sends the gate's logs to l.
func WithLogger(l zerolog.Logger) Option { return func(o *Options) { o.Logger = &l } }

// WithEgress enables the real egress dialer allowing the given test CIDRs,
// with optional TLS roots and resolver.
func WithEgress(cidrs []netip.Prefix, roots *x509.CertPool, r egress.Resolver) Option {
	return func(o *Options) { o.EgressAllowCIDRs, o.RootCAs, o.Resolver = cidrs, roots, r }
}

// WithSecrets sets the secret values.
func WithSecrets(m map[string]string) Option { return func(o *Options) { o.Secrets = m } }

// WithReloadWrapper wraps the reload builder (see Options.WrapReload).
func WithReloadWrapper(w func(load func() (*gate.Snapshot, error)) func() (*gate.Snapshot, error)) Option {
	return func(o *Options) { o.WrapReload = w }
}

// WithStoreWrapper wraps the store (see Options.WrapStore).
func WithStoreWrapper(w func(store.Store) store.Store) Option {
	return func(o *Options) { o.WrapStore = w }
}

// Server is a running test gate.
type Server struct {
	Gate         *gate.Gate
	Store        store.Store
	Ledger       *receipts.Ledger
	Events       *events.Journal
	ClientSocket string
	AdminSocket  string
	StateDir     string
	KeysDir      string
	Clock        clock.Clock
	cancel       context.CancelFunc
	done         chan struct{}
	closed       bool
}

// NewServer starts a gate and stops it at cleanup.
func NewServer(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	o := Options{Config: gate.Config{Dev: true, TrustAgentID: true}}
	for _, f := range opts {
		f(&o)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.StateDir == "" {
		o.StateDir = tb.TempDir()
	}
	if o.KeysDir == "" {
		o.KeysDir = filepath.Join(o.StateDir, "keys")
	}
	if o.Config.GateID == "" {
		o.Config.GateID = "test-gate"
	}
	if o.Config.Operators == nil {
		o.Config.Operators = map[uint32]string{uint32(os.Geteuid()): "uid:" + fmt.Sprint(os.Geteuid())}
	}
	if o.Config.Principals == nil {
		o.Config.Principals = map[string]gate.Principal{"*": {AllowedScopes: []string{"*"}}}
	}
	log := zerolog.Nop()
	if o.Logger != nil {
		log = *o.Logger
	}
	keys, err := lease.LoadKeys(o.KeysDir, o.Clock)
	if err != nil {
		tb.Fatalf("gatetest: keys: %v", err)
	}
	auth, err := lease.New(o.Lease, keys, lease.Deps{Clock: o.Clock, Logger: log})
	if err != nil {
		tb.Fatalf("gatetest: lease: %v", err)
	}
	var st store.Store
	sdeps := store.Deps{Clock: o.Clock, Logger: log}
	if o.RedisURL != "" {
		mac, err := lease.LoadSecret(o.KeysDir, "store-mac.key", 32)
		if err != nil {
			tb.Fatalf("gatetest: mac key: %v", err)
		}
		// Generous: tests assert outcomes, not latency. Fault tests shorten
		// the per-request deadline with gate.Config.StoreTimeout.
		st, err = store.NewRedis(store.RedisConfig{URL: o.RedisURL, MACKey: mac, Timeout: 2 * time.Second}, sdeps)
		if err != nil {
			tb.Fatalf("gatetest: redis: %v", err)
		}
		o.Config.StoreMode = "redis"
	} else {
		st, err = store.OpenEmbedded(store.EmbeddedConfig{Dir: filepath.Join(o.StateDir, "store")}, sdeps)
		if err != nil {
			tb.Fatalf("gatetest: store: %v", err)
		}
	}
	// A wrapped Redis store still copies receipts, as the gate it stands
	// for would.
	rs, _ := st.(*store.Redis)
	if o.WrapStore != nil {
		st = o.WrapStore(st)
	}
	ldeps := receipts.Deps{Clock: o.Clock, Logger: log, Syncer: st, FS: o.LedgerFS}
	if rs != nil {
		ldeps.OnReceipt = rs.CopyReceipt
	}
	led, err := receipts.Open(receipts.Config{Dir: filepath.Join(o.StateDir, "ledger"), GateID: o.Config.GateID}, ldeps)
	if err != nil {
		tb.Fatalf("gatetest: ledger: %v", err)
	}
	rdeps := actions.RunnerDeps{Clock: o.Clock, Logger: log}
	if o.EgressAllowCIDRs != nil {
		d, err := egress.NewDialer(egress.Config{AllowCIDRs: o.EgressAllowCIDRs, Resolver: o.Resolver}, egress.Deps{Logger: log, Clock: o.Clock})
		if err != nil {
			tb.Fatalf("gatetest: egress: %v", err)
		}
		rdeps.Dialer = d
	}
	if o.Secrets != nil {
		env := map[string]string{}
		for k, v := range o.Secrets {
			env[actions.SecretEnvPrefix+k] = v
		}
		src, err := actions.NewSecretSource(env, "")
		if err != nil {
			tb.Fatalf("gatetest: secrets: %v", err)
		}
		rdeps.Secrets = src
	}
	runner, err := actions.NewRunner(actions.RunnerConfig{RootCAs: o.RootCAs}, rdeps)
	if err != nil {
		tb.Fatalf("gatetest: runner: %v", err)
	}
	load := func() (*gate.Snapshot, error) {
		reg, err := actions.Load(actions.LoadConfig{FS: definitions.Manifests, Dir: o.ManifestsDir}, log)
		if err != nil {
			return nil, err
		}
		pol, err := policy.New(policy.Config{Timeout: testPolicyTimeout, FS: definitions.Policies, Dir: o.PolicyDir, AllowAllActions: o.PolicyDir == "" && !o.RestrictACL}, policy.Deps{Logger: log})
		if err != nil {
			return nil, err
		}
		return &gate.Snapshot{Actions: reg, Policy: pol}, nil
	}
	snap, err := load()
	if err != nil {
		tb.Fatalf("gatetest: snapshot: %v", err)
	}
	reload := load
	if o.WrapReload != nil {
		reload = o.WrapReload(load)
	}
	evj, err := events.Open(events.Config{Path: filepath.Join(o.StateDir, "events", "events.log")}, o.Clock, log)
	if err != nil {
		tb.Fatalf("gatetest: events: %v", err)
	}
	g, err := gate.New(o.Config, gate.Deps{
		Store: st, Leases: auth, LeaseKey: keys, Ledger: led, Runner: runner,
		Initial: snap, Reload: reload, Clock: o.Clock, Logger: log, Events: evj,
	})
	if err != nil {
		tb.Fatalf("gatetest: gate: %v", err)
	}
	g.ShareReceiptKeys(context.Background()) // what RunSweeper does at start
	sockDir, err := os.MkdirTemp("", "lgt")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{
		Gate: g, Store: st, Ledger: led, Events: evj, StateDir: o.StateDir, KeysDir: o.KeysDir, Clock: o.Clock,
		ClientSocket: filepath.Join(sockDir, "gate.sock"), AdminSocket: filepath.Join(sockDir, "admin.sock"),
		done: make(chan struct{}),
	}
	cln, err := net.Listen("unix", s.ClientSocket)
	if err != nil {
		tb.Fatal(err)
	}
	aln, err := net.Listen("unix", s.AdminSocket)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		errc := make(chan error, 2)
		go func() { errc <- g.Run(ctx, cln, gate.ListenerClient) }()
		go func() { errc <- g.Run(ctx, aln, gate.ListenerAdmin) }()
		<-errc
		<-errc
	}()
	tb.Cleanup(func() {
		s.Close()
		_ = os.RemoveAll(sockDir)
	})
	return s
}

// Close stops the gate and closes its ledger and store (idempotent).
func (s *Server) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.cancel()
	<-s.done
	_ = s.Ledger.Close()
	_ = s.Events.Close()
	_ = s.Store.Close()
}

// Client returns an HTTP client bound to the client socket.
func (s *Server) Client() *http.Client { return unixClient(s.ClientSocket) }

// AdminClient returns an HTTP client bound to the admin socket.
func (s *Server) AdminClient() *http.Client { return unixClient(s.AdminSocket) }

func unixClient(path string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConnsPerHost: 64,
		},
	}
}

// Response is a decoded answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a map.
func (r *Response) JSON() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.Body, &m)
	return m
}

// Code is the error code of an error answer ("" otherwise).
func (r *Response) Code() string {
	s, _ := r.JSON()["error"].(string)
	return s
}

// Do sends a raw request to the client socket.
func Do(tb testing.TB, c *http.Client, method, path string, body []byte, header http.Header) *Response {
	tb.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if body == nil {
		req.Body = http.NoBody
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Agent is a test agent that follows PROTOCOL.md only.
type Agent struct {
	tb     testing.TB
	c      *http.Client
	Key    *leasetest.AgentKey
	Lease  string
	Sess   string
	Answer map[string]any
}

// NewAgent returns an agent with a fresh key on the client socket.
func (s *Server) NewAgent(tb testing.TB) *Agent {
	k := leasetest.NewAgentKey()
	k.Clock = s.Clock
	return &Agent{tb: tb, c: s.Client(), Key: k}
}

// TakeLease requests a lease; body members are merged into the request.
func (a *Agent) TakeLease(extra map[string]any) *Response {
	a.tb.Helper()
	req := map[string]any{"dpop_jwk": json.RawMessage(a.Key.JWK())}
	for k, v := range extra {
		req[k] = v
	}
	b, _ := json.Marshal(req)
	r := Do(a.tb, a.c, "POST", "/v1/leases", b, http.Header{"Content-Type": {"application/json"}})
	if r.Status == 200 {
		m := r.JSON()
		a.Lease, _ = m["lease_jwt"].(string)
		a.Sess, _ = m["session_id"].(string)
		a.Answer = m
	}
	return r
}

// MustLease takes a lease or fails the test.
func (a *Agent) MustLease(extra map[string]any) {
	a.tb.Helper()
	if r := a.TakeLease(extra); r.Status != 200 {
		a.tb.Fatalf("lease: %d %s", r.Status, r.Body)
	}
}

// Call sends an authenticated request with a fresh proof.
func (a *Agent) Call(method, path string, body []byte, opts ...leasetest.ProofOption) *Response {
	a.tb.Helper()
	proof := a.Key.Proof(method, "http://localhost"+path, a.Lease, body, opts...)
	return a.CallWithProof(method, path, body, proof, nil)
}

// CallWithProof sends a request with the given proof and extra headers.
func (a *Agent) CallWithProof(method, path string, body []byte, proof string, extra http.Header) *Response {
	a.tb.Helper()
	h := http.Header{"Authorization": {"DPoP " + a.Lease}, "DPoP": {proof}}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	for k, v := range extra {
		h[k] = v
	}
	return Do(a.tb, a.c, method, path, body, h)
}

// Execute runs an action with args (JSON-encoded).
func (a *Agent) Execute(action string, args any, extra http.Header) *Response {
	a.tb.Helper()
	b, _ := json.Marshal(args)
	path := "/v1/actions/" + action + "/execute"
	proof := a.Key.Proof("POST", "http://localhost"+path, a.Lease, b)
	return a.CallWithProof("POST", path, b, proof, extra)
}
