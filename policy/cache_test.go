package policy

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// cachePolicy is a policy directory with one module whose decision rule
// body is rule (allow when it holds) and no tests.
func cachePolicy(t *testing.T, rules string) string {
	t.Helper()
	return writePolicy(t, "package latchgate\n\ndefault allow := false\n\n"+rules+`

decision := {"allow": allow, "pending_approval": false, "deny_reasons": []}
`, "{}")
}

func TestDecisionCachePlan(t *testing.T) {
	tests := []struct {
		name   string
		rules  string
		paths  []string // nil: the cache must be off
		reason string   // substring of the reason when off
	}{
		{"constant paths", `allow if { input.action.id == "echo"; "x" in input.lease.scopes }`,
			[]string{"input.action.id", "input.lease.scopes"}, ""},
		{"variable after a constant prefix", `allow if { some k; input.request.args[k] == "yes" }`,
			[]string{"input.request.args"}, ""},
		{"nested reference", `allow if data.m[input.principal] == input.action.id`,
			[]string{"input.action.id", "input.principal"}, ""},
		{"array index", `allow if input.lease.scopes[0] == "tools:call"`,
			[]string{`input.lease.scopes[0]`}, ""},
		{"function argument", "f(x) := x == \"echo\"\n\nallow if f(input.action.id)",
			[]string{"input.action.id"}, ""},
		{"with replacing input", `allow if { x := input.action.id; y := x with input as {} ; y == "echo" }`,
			[]string{"input.action.id"}, ""},
		{"pure time built-ins", `allow if time.weekday(input.time.unix * 1000000000) == "Monday"`,
			[]string{"input.time.unix"}, ""},
		{"input as a whole", `allow if count(input) > 3`, nil, "reads input as a whole"},
		{"object.get on input", `allow if object.get(input, ["request", "args", "x"], 0) == 1`, nil, "reads input as a whole"},
		{"variable first key", `allow if { some k; input[k] == "echo" }`, nil, "only input.<constant path>"},
		{"function of input", "f(x) := x.action.id == \"echo\"\n\nallow if f(input)", nil, "reads input as a whole"},
		{"time.now_ns", `allow if time.now_ns() > 0`, nil, "time.now_ns"},
		{"rand.intn", `allow if rand.intn("x", 10) > 5`, nil, "rand.intn"},
		{"uuid.rfc4122", `allow if uuid.rfc4122("x") != ""`, nil, "uuid.rfc4122"},
		{"io.jwt.decode_verify", `allow if { [ok, _, _] := io.jwt.decode_verify(input.request.hash, {"secret": "s"}); ok }`, nil, "io.jwt.decode_verify"},
		{"x509 verification", `allow if { [ok, _] := crypto.x509.parse_and_verify_certificates(input.request.hash); ok }`, nil, "crypto.x509.parse_and_verify_certificates"},
		{"impure call in a helper", "now := time.now_ns()\n\nallow if now > 0", nil, "time.now_ns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, Config{Dir: cachePolicy(t, tt.rules)})
			on, paths, why := e.DecisionCache()
			if tt.paths == nil {
				if on || !strings.Contains(why, tt.reason) {
					t.Fatalf("cache on=%v paths=%v reason=%q; want off because %q", on, paths, why, tt.reason)
				}
				return
			}
			if !on || !slices.Equal(paths, tt.paths) {
				t.Fatalf("cache on=%v paths=%v reason=%q; want on with %v", on, paths, why, tt.paths)
			}
		})
	}
}

func TestDecisionCacheDefaultPolicy(t *testing.T) {
	e := newEngine(t, Config{})
	on, paths, why := e.DecisionCache()
	if !on {
		t.Fatalf("the default policy's decisions are not cached: %s", why)
	}
	for _, p := range []string{"input.principal", "input.action.id", "input.lease.scopes", "input.approval", "input.standing_approval"} {
		if !slices.Contains(paths, p) {
			t.Errorf("key paths %v lack %s", paths, p)
		}
	}
	off := newEngine(t, Config{DecisionCacheSize: -1})
	if on, _, why := off.DecisionCache(); on || !strings.Contains(why, "configuration") {
		t.Errorf("DecisionCacheSize -1: on=%v reason=%q", on, why)
	}
}

// TestDecisionCacheIsExact checks, for policies the cache is on for and
// for policies it must be off for, that the cached engine answers exactly
// as an uncached one over inputs that vary every field the policy may read.
// The "off" cases fail if the analysis misses the clock, a whole-input
// read or a variable key: their decisions change while the projected
// paths stay the same.
func TestDecisionCacheIsExact(t *testing.T) {
	policies := []struct {
		name  string
		rules string
		want  bool // cache on
	}{
		{"default-like", `allow if { input.action.id == "echo"; "tools:call" in input.lease.scopes; input.standing_approval == null }`, true},
		{"budget and args", `allow if { input.budget.calls_remaining > 2; input.request.args.n < 5 }`, true},
		{"hour of the input", `allow if input.time.hour_utc < 12`, true},
		{"hour of the clock", `allow if time.clock(time.now_ns())[0] < 12`, false},
		{"args via object.get", `allow if object.get(input, ["request", "args", "n"], 0) < 5`, false},
		{"any member", `allow if { some k; input[k] == "agent:b" }`, false},
	}
	base := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	var inputs []struct {
		in  *Input
		now time.Time
	}
	for i := range 48 {
		in := baseInput()
		in.Request.Args = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i%8))
		calls := int64(i % 5)
		in.Budget.CallsRemaining = &calls
		if i%3 == 0 {
			in.Principal = "agent:b"
		}
		if i%4 == 0 {
			in.Lease.Scopes = []string{"audit:read"}
		}
		if i%7 == 0 {
			in.StandingApproval = json.RawMessage(`{"approval_id":"a"}`)
		}
		now := base.Add(time.Duration(i%6) * time.Hour)
		in.Time = NewTime(now.Add(time.Duration(i%5) * time.Hour))
		inputs = append(inputs, struct {
			in  *Input
			now time.Time
		}{in, now})
	}
	ctx := context.Background()
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			dir := cachePolicy(t, p.rules)
			cached := newEngine(t, Config{Dir: dir})
			plain := newEngine(t, Config{Dir: dir, DecisionCacheSize: -1})
			if on, _, why := cached.DecisionCache(); on != p.want {
				t.Fatalf("cache on = %v (%s); want %v", on, why, p.want)
			}
			// Twice over, so the second pass is served from the cache.
			for pass := range 2 {
				for i, c := range inputs {
					got, err := cached.Decide(ctx, c.in, c.now)
					if err != nil {
						t.Fatal(err)
					}
					want, err := plain.Decide(ctx, c.in, c.now)
					if err != nil {
						t.Fatal(err)
					}
					if got.Allow != want.Allow || !slices.Equal(got.DenyReasons, want.DenyReasons) {
						t.Fatalf("pass %d input %d: cached %+v, evaluated %+v", pass, i, got, want)
					}
				}
			}
			if p.want && cached.cache.len() >= len(inputs) {
				t.Errorf("%d cache entries for %d inputs: nothing was shared", cached.cache.len(), len(inputs))
			}
		})
	}
}

func TestDecisionCacheBoundAndCopies(t *testing.T) {
	e := newEngine(t, Config{DecisionCacheSize: 4})
	ctx := context.Background()
	now := time.Now()
	in := baseInput()
	in.Lease.Scopes = nil
	first, err := e.Decide(ctx, in, now)
	if err != nil || len(first.DenyReasons) == 0 {
		t.Fatalf("Decide = %+v, %v; want a deny with reasons", first, err)
	}
	first.DenyReasons[0] = "edited"
	again, err := e.Decide(ctx, in, now)
	if err != nil || again.DenyReasons[0] == "edited" {
		t.Fatalf("a caller's edit reached the cache: %+v, %v", again, err)
	}
	if first.FromCache || !again.FromCache {
		t.Errorf("FromCache = %v then %v; want false then true", first.FromCache, again.FromCache)
	}
	for i := range 20 {
		in := baseInput()
		in.Principal = fmt.Sprintf("agent:%d", i)
		if _, err := e.Decide(ctx, in, now); err != nil {
			t.Fatal(err)
		}
		if n := e.cache.len(); n > 4 {
			t.Fatalf("%d entries in a cache of 4", n)
		}
	}
}

func TestDecisionCacheSkipsFailures(t *testing.T) {
	dir := writePolicy(t, `package latchgate

decision := {"allow": true, "pending_approval": false, "deny_reasons": []} if input.action.id == "echo"
decision := "not an object" if input.action.id == "odd"
`, "{}")
	e := newEngine(t, Config{Dir: dir})
	ctx := context.Background()
	for range 2 {
		for _, id := range []string{"odd", "missing"} {
			in := baseInput()
			in.Action.ID = id
			if _, err := e.Decide(ctx, in, time.Now()); err == nil {
				t.Fatalf("action %q: decided; want ErrUnavailable", id)
			}
		}
	}
	if n := e.cache.len(); n != 0 {
		t.Fatalf("%d failed evaluations cached", n)
	}
}

var updateBuiltins = flag.Bool("update-builtins", false, "rewrite testdata/builtins.txt after reviewing new built-ins")

// TestBuiltinsReviewed pins the built-ins this OPA version offers. When an
// upgrade adds one, decide whether its result depends only on its
// arguments; if not, add it to impureBuiltins. Then run
// go test ./policy -run TestBuiltinsReviewed -update-builtins.
func TestBuiltinsReviewed(t *testing.T) {
	var names []string
	for _, b := range capabilities().Builtins {
		names = append(names, b.Name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	got := strings.Join(names, "\n") + "\n"
	path := filepath.Join("testdata", "builtins.txt")
	if *updateBuiltins {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		old := strings.Split(strings.TrimSpace(string(want)), "\n")
		var added []string
		for _, n := range names {
			if !slices.Contains(old, n) {
				added = append(added, n)
			}
		}
		t.Fatalf("the built-ins changed (new: %v). Review each for purity (impureBuiltins in cache.go), then rerun with -update-builtins", added)
	}
}

// TestCacheKeyMatchesValue: the key built from the schema, member by
// member, is the key of the full input value, for every path the schema
// has and for paths into arrays, raw JSON, optional and unknown members.
func TestCacheKeyMatchesValue(t *testing.T) {
	var paths []ast.Ref
	var walk func(m *member, prefix ast.Ref)
	walk = func(m *member, prefix ast.Ref) {
		paths = append(paths, prefix)
		for i := range m.members {
			walk(&m.members[i], append(prefix.Copy(), ast.StringTerm(m.members[i].name)))
		}
	}
	walk(&inputSchema, ast.Ref{ast.InputRootDocument})
	for _, extra := range []string{
		"input.lease.scopes[0]", "input.lease.scopes[7]", `input.request.args.message`, `input.request.args.l[1]`,
		"input.standing_approval.id", "input.approval.approval_id", "input.nope", "input.action.nope",
		"input.principal.x", `input.budget.calls_remaining`, "input.time[0]",
	} {
		paths = append(paths, ast.MustParseRef(extra))
	}
	plan := cachePlan{paths: paths}
	n := int64(3)
	inputs := []*Input{
		{},
		baseInput(),
		{Principal: "agent:\"q\"\n", Action: Action{ID: "echo", RequiredScopes: []string{"a", "b"}},
			Request:          Request{Args: json.RawMessage(`{"message":"hé","l":[1,null,true],"o":{"b":1,"a":2}}`)},
			Budget:           Budget{CallsRemaining: &n},
			StandingApproval: json.RawMessage(`{"id":"s1"}`),
			Approval:         &Approval{ApprovalID: "ap", ApprovedBy: "uid:0"}},
		{Principal: "bad\xff", Lease: Lease{Scopes: []string{"\xc3", "ok"}}},
	}
	for i, in := range inputs {
		got, err := plan.appendKey(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		val, err := inputValue(in)
		if err != nil {
			t.Fatal(err)
		}
		want, err := plan.appendValueKey(nil, val)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("input %d: schema key\n%s\nvalue key\n%s", i, got, want)
		}
	}
}
