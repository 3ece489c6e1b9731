// Package policy owns LatchGate's embedded OPA policy: loading the Rego
// modules and data, compiling them once into a prepared query, running the
// policy's own tests, and evaluating decisions.
//
// The policy must never reach the network: evaluation uses capabilities
// without http.send or net.lookup_ip_addr. It fails closed: an undefined,
// malformed, failed or timed-out evaluation is an error (the gate answers
// 503 policy_unavailable), never an allow. An Engine is immutable; reload
// builds a new one and the caller swaps it in atomically.
//
// The API is internal to this module and may change.
package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/rs/zerolog"
)

// ErrUnavailable wraps every evaluation failure: undefined result, a result
// of the wrong shape, an evaluation error or a timeout.
var ErrUnavailable = errors.New("policy: unavailable")

// decisionQuery is the query the gate evaluates.
const decisionQuery = "data.latchgate.decision"

// deniedBuiltins are removed from the capabilities so no policy can reach
// the network or the host. The JSON Schema built-ins load a "$ref" with the
// file scheme from the local file system whatever AllowNet says.
var deniedBuiltins = []string{"http.send", "net.lookup_ip_addr", "opa.runtime", "json.match_schema", "json.verify_schema"}

// Config configures an Engine.
type Config struct {
	// FS holds the default policy under "policies/" (*.rego, *_test.rego,
	// data.json). Required unless Dir is set.
	FS fs.FS
	// Dir, when set, replaces the embedded policy entirely: every *.rego
	// file and data.json in it are loaded. Default: "" (use FS).
	Dir string
	// Timeout bounds one evaluation. Default: 250ms. Zero means default.
	Timeout time.Duration
	// AllowAllActions overlays data.acl["*"].allowed_actions = ["*"]
	// (the --dev default: the "*" principal may run every action).
	// Default: false.
	AllowAllActions bool
	// DecisionCacheSize bounds the decision cache (cache.go): how many
	// distinct decisions are remembered. Zero means
	// DefaultDecisionCacheSize; negative turns the cache off. The cache is
	// only used when the policy provably cannot tell two inputs apart that
	// agree on the input paths it reads.
	DecisionCacheSize int
	// SkipTests makes New compile the policy without running its tests,
	// for a caller that runs them itself and reports each (latchgate
	// policy test). A gate never sets it. Default: false.
	SkipTests bool
}

func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = 250 * time.Millisecond
	}
	if c.DecisionCacheSize == 0 {
		c.DecisionCacheSize = DefaultDecisionCacheSize
	}
	return c
}

// Validate checks the configuration without changing it.
func (c Config) Validate() error {
	if c.FS == nil && c.Dir == "" {
		return errors.New("policy: one of FS or Dir (policy_dir) is required")
	}
	if c.Timeout < 0 {
		return errors.New("policy: timeout must be a positive duration such as \"250ms\"")
	}
	return nil
}

// Input is the policy input document (ARCHITECTURE "Policy contract").
type Input struct {
	Principal        string          `json:"principal"`
	SessionID        string          `json:"session_id"`
	AgentID          string          `json:"agent_id"`
	Peer             Peer            `json:"peer"`
	Action           Action          `json:"action"`
	Request          Request         `json:"request"`
	Lease            Lease           `json:"lease"`
	Budget           Budget          `json:"budget"`
	Time             Time            `json:"time"`
	StandingApproval json.RawMessage `json:"standing_approval"`
	Approval         *Approval       `json:"approval,omitempty"`
}

// Peer is the socket peer's identity.
type Peer struct {
	UID int64 `json:"uid"`
	GID int64 `json:"gid"`
	PID int64 `json:"pid"`
}

// Action describes the manifest being asked for.
type Action struct {
	ID             string   `json:"id"`
	Version        string   `json:"version"`
	RiskLevel      string   `json:"risk_level"`
	RequiredScopes []string `json:"required_scopes"`
	SideEffects    []string `json:"side_effects"`
	CostCents      int64    `json:"cost_usd_cents"`
	Egress         Egress   `json:"egress"`
}

// Egress is the action's egress profile as the policy sees it.
type Egress struct {
	Profile        string   `json:"profile"`
	AllowedDomains []string `json:"allowed_domains"`
	LearnedDomains []string `json:"learned_domains"`
}

// Request describes the arguments and where they lead.
type Request struct {
	Args              json.RawMessage `json:"args"`
	Hash              string          `json:"hash"`
	SizeBytes         int             `json:"size_bytes"`
	TargetHosts       []string        `json:"target_hosts"`
	UnresolvedDomains []string        `json:"unresolved_domains"`
}

// Lease is what the caller's lease grants.
type Lease struct {
	Scopes    []string `json:"scopes"`
	ExpiresAt string   `json:"expires_at"`
}

// Budget is what remains; nil means unlimited.
type Budget struct {
	CallsRemaining *int64 `json:"calls_remaining"`
	CostRemaining  *int64 `json:"cost_remaining_usd_cents"`
}

// Time is the evaluation time in several forms.
type Time struct {
	Unix    int64  `json:"unix"`
	RFC3339 string `json:"rfc3339"`
	Weekday string `json:"weekday"`
	HourUTC int    `json:"hour_utc"`
}

// Approval is set when the gate re-evaluates at approval time.
type Approval struct {
	ApprovalID string `json:"approval_id"`
	ApprovedBy string `json:"approved_by"`
}

// NewTime fills Time from t.
func NewTime(t time.Time) Time {
	t = t.UTC()
	return Time{Unix: t.Unix(), RFC3339: t.Format(time.RFC3339), Weekday: t.Weekday().String(), HourUTC: t.Hour()}
}

// Decision is the policy's answer. The zero value denies.
type Decision struct {
	Allow           bool     `json:"allow"`
	PendingApproval bool     `json:"pending_approval"`
	DenyReasons     []string `json:"deny_reasons"`
	// FromCache is true when the decision came from the decision cache.
	FromCache bool `json:"-"`
}

// Engine is a compiled, tested, immutable policy.
type Engine struct {
	cfg      Config
	query    rego.PreparedEvalQuery
	version  string
	modules  map[string]string
	data     map[string]any
	compiler *ast.Compiler
	store    storage.Store
	log      zerolog.Logger
	plan     cachePlan
	cache    *decisionCache // nil when off
	keyPool  sync.Pool      // *[]byte
}

// Deps are the Engine's collaborators.
type Deps struct {
	Logger zerolog.Logger
}

// New loads, compiles and tests the policy. A policy whose own tests fail
// is refused, so a reload can never swap in a broken set.
func New(cfg Config, deps Deps) (*Engine, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	modules, rawData, err := readSources(cfg)
	if err != nil {
		return nil, err
	}
	var data map[string]any
	if len(rawData) > 0 {
		dec := json.NewDecoder(bytes.NewReader(rawData))
		dec.UseNumber()
		if err := dec.Decode(&data); err != nil {
			return nil, fmt.Errorf("policy: data.json: %w", err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, errors.New("policy: data.json: more than one JSON value")
		}
	}
	if data == nil {
		data = map[string]any{}
	}
	if cfg.AllowAllActions {
		acl, _ := data["acl"].(map[string]any)
		acl = cloneMap(acl)
		star, _ := acl["*"].(map[string]any)
		star = cloneMap(star)
		star["allowed_actions"] = []any{"*"}
		acl["*"] = star
		data["acl"] = acl
	}

	parsed := make(map[string]*ast.Module, len(modules))
	names := make([]string, 0, len(modules))
	for name := range modules {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		m, err := ast.ParseModuleWithOpts(name, modules[name], ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		parsed[name] = m
	}
	caps := capabilities()
	compiler := ast.NewCompiler().WithCapabilities(caps).WithEnablePrintStatements(false)
	compiler.Compile(parsed)
	if compiler.Failed() {
		return nil, fmt.Errorf("policy: compile: %w", compiler.Errors)
	}
	store := inmem.NewFromObject(data)

	ctx := context.Background()
	opts := []func(*rego.Rego){
		rego.Query(decisionQuery),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.Capabilities(caps),
		rego.StrictBuiltinErrors(true),
	}
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: prepare: %w", err)
	}
	e := &Engine{
		cfg: cfg, query: pq, modules: modules, data: data,
		compiler: compiler, store: store, log: deps.Logger,
		version: versionOf(modules, rawData, cfg.AllowAllActions),
	}
	e.plan = planCache(compiler.Modules, builtinsByName(caps))
	switch {
	case cfg.DecisionCacheSize < 0:
		e.plan.reason = "turned off by configuration"
	case e.plan.reason == "":
		e.cache = newDecisionCache(cfg.DecisionCacheSize)
	}
	if cfg.SkipTests {
		return e, nil
	}
	results, err := e.Test(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		if !r.Pass {
			return nil, fmt.Errorf("policy: test %s failed: %s", r.Name, r.Detail)
		}
	}
	return e, nil
}

// Version identifies the policy (modules and data) in receipts: "sha256:<hex>".
func (e *Engine) Version() string { return e.version }

// Decide evaluates the decision for in. Every failure wraps ErrUnavailable.
func (e *Engine) Decide(ctx context.Context, in *Input, now time.Time) (Decision, error) {
	if e.cache == nil {
		return e.eval(ctx, in, now)
	}
	bp, _ := e.keyPool.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer e.keyPool.Put(bp)
	key, err := e.plan.appendKey((*bp)[:0], in)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: input: %v", ErrUnavailable, err)
	}
	*bp = key
	if d, ok := e.cache.get(key); ok {
		d = d.clone()
		d.FromCache = true
		return d, nil
	}
	d, err := e.eval(ctx, in, now)
	if err != nil {
		return Decision{}, err
	}
	e.cache.put(key, d.clone())
	return d, nil
}

// eval runs the prepared query.
func (e *Engine) eval(ctx context.Context, in *Input, now time.Time) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	val, err := inputValue(in)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: input: %v", ErrUnavailable, err)
	}
	rs, err := e.query.Eval(ctx, rego.EvalParsedInput(val), rego.EvalTime(now))
	if err != nil {
		return Decision{}, fmt.Errorf("%w: eval: %v", ErrUnavailable, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return Decision{}, fmt.Errorf("%w: undefined decision", ErrUnavailable)
	}
	return parseDecision(rs[0].Expressions[0].Value)
}

// DecisionCache reports whether decisions are cached and, if so, which
// input paths the key is made of; if not, why not.
func (e *Engine) DecisionCache() (on bool, paths []string, reason string) {
	for _, p := range e.plan.paths {
		paths = append(paths, p.String())
	}
	return e.cache != nil, paths, e.plan.reason
}

func (d Decision) clone() Decision {
	d.DenyReasons = slices.Clone(d.DenyReasons)
	return d
}

// parseDecision turns the evaluated value into a Decision, refusing any
// other shape.
func parseDecision(v any) (Decision, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("%w: decision is not an object", ErrUnavailable)
	}
	var d Decision
	allow, ok1 := obj["allow"].(bool)
	pending, ok2 := obj["pending_approval"].(bool)
	reasonsRaw, ok3 := obj["deny_reasons"].([]any)
	if !ok1 || !ok2 || !ok3 {
		return Decision{}, fmt.Errorf("%w: decision lacks allow, pending_approval or deny_reasons", ErrUnavailable)
	}
	for _, r := range reasonsRaw {
		s, ok := r.(string)
		if !ok {
			return Decision{}, fmt.Errorf("%w: deny_reasons must be strings", ErrUnavailable)
		}
		d.DenyReasons = append(d.DenyReasons, s)
	}
	if d.DenyReasons == nil {
		d.DenyReasons = []string{}
	}
	d.Allow, d.PendingApproval = allow, pending
	return d, nil
}

// TestResult is the outcome of one policy test.
type TestResult struct {
	Package string `json:"package"`
	Name    string `json:"name"`
	Pass    bool   `json:"pass"`
	Detail  string `json:"detail,omitempty"`
}

// Test runs the policy's own *_test.rego tests against its data.
func (e *Engine) Test(ctx context.Context) ([]TestResult, error) {
	ch, err := tester.NewRunner().
		SetCompiler(e.compiler).
		SetStore(e.store).
		SetTimeout(10*time.Second).
		RunTests(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("policy: tests: %w", err)
	}
	var out []TestResult
	for r := range ch {
		tr := TestResult{Package: r.Package, Name: r.Name, Pass: r.Pass()}
		if r.Error != nil {
			tr.Detail = r.Error.Error()
		} else if r.Fail {
			tr.Detail = "test evaluated to false or undefined"
		}
		out = append(out, tr)
	}
	return out, nil
}

// capabilities returns this OPA version's capabilities without the
// network and runtime built-ins.
func capabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(slices.Clone(caps.Builtins), func(b *ast.Builtin) bool {
		return slices.Contains(deniedBuiltins, b.Name)
	})
	caps.AllowNet = []string{}
	return caps
}

func builtinsByName(caps *ast.Capabilities) map[string]*ast.Builtin {
	m := make(map[string]*ast.Builtin, len(caps.Builtins))
	for _, b := range caps.Builtins {
		m[b.Name] = b
	}
	return m
}

// readSources returns the Rego modules (by file name) and data.json bytes.
func readSources(cfg Config) (map[string]string, []byte, error) {
	var fsys fs.FS
	dir := "policies"
	if cfg.Dir != "" {
		fsys, dir = os.DirFS(cfg.Dir), "."
	} else {
		fsys = cfg.FS
	}
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, nil, fmt.Errorf("policy: read %s: %w", displayDir(cfg), err)
	}
	modules := map[string]string{}
	var data []byte
	for _, ent := range entries {
		if ent.IsDir() {
			// OPA loads a directory recursively; this loader reads only
			// the top level. A rule kept in a subdirectory (a stricter
			// deny, say) would silently not apply: refuse instead.
			if f, ok := policyFileUnder(fsys, path.Join(dir, ent.Name())); ok {
				return nil, nil, fmt.Errorf("policy: %s holds %s, but subdirectories are not loaded: move it to the top level of %s", ent.Name(), f, displayDir(cfg))
			}
			continue
		}
		p := path.Join(dir, ent.Name())
		switch {
		case strings.HasSuffix(ent.Name(), ".rego"):
			b, err := fs.ReadFile(fsys, p)
			if err != nil {
				return nil, nil, fmt.Errorf("policy: read %s: %w", ent.Name(), err)
			}
			modules[ent.Name()] = string(b)
		case ent.Name() == "data.json":
			data, err = fs.ReadFile(fsys, p)
			if err != nil {
				return nil, nil, fmt.Errorf("policy: read data.json: %w", err)
			}
		}
	}
	if len(modules) == 0 {
		return nil, nil, fmt.Errorf("policy: no .rego files in %s", displayDir(cfg))
	}
	return modules, data, nil
}

// policyFileUnder returns the first *.rego or data.json file under dir.
func policyFileUnder(fsys fs.FS, dir string) (string, bool) {
	var found string
	_ = fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found != "" {
			return fs.SkipAll
		}
		if !d.IsDir() && (strings.HasSuffix(d.Name(), ".rego") || d.Name() == "data.json") {
			found = p
			return fs.SkipAll
		}
		return nil
	})
	return found, found != ""
}

func displayDir(cfg Config) string {
	if cfg.Dir != "" {
		return cfg.Dir
	}
	return "the embedded policies"
}

func versionOf(modules map[string]string, data []byte, allowAll bool) string {
	h := sha256.New()
	names := make([]string, 0, len(modules))
	for n := range modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00%s\x00", n, len(modules[n]), modules[n])
	}
	h.Write(data)
	if allowAll {
		h.Write([]byte("\x00allow-all"))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}
