package policy

import (
	"fmt"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A decision cache remembers decisions by the part of the input the policy
// can read. It is exact, not approximate: it is only enabled when static
// analysis of the compiled modules proves that a decision is a function of
// a fixed set of input paths alone.
//
// The argument. An Engine's data is fixed, so evaluation can observe the
// request only through input and through built-ins. Caching is enabled
// only when
//
//   - every read of input is a reference whose first elements after
//     "input" are constants (input.action.id, input.lease.scopes[i]). The
//     longest constant prefix of each such reference is a projected path;
//     whatever the reference reads beyond that prefix is inside the
//     prefix's value. Any other read (input as a whole, input[x],
//     object.get(input, ...), f(input)) disables the cache;
//   - no module calls a built-in whose result depends on anything but its
//     arguments: the clock, randomness, the network or the host (see
//     impureBuiltins). A "with" that replaces input or a built-in only
//     narrows what evaluation reads, so it is allowed; its target is not
//     a read.
//
// Then two inputs with equal values at every projected path get the same
// decision, and the key is the canonical text of those values (ast's
// sorted-key, quoted-string form; an absent path has its own marker).
// Equal text means equal values; values that are equal but print
// differently (1 and 1.0) merely miss. Errors, timeouts and undefined
// results are never cached. The cache belongs to one immutable Engine, so
// a reload starts empty.

// DefaultDecisionCacheSize is Config.DecisionCacheSize's default.
const DefaultDecisionCacheSize = 4096

// impureBuiltins are the built-ins whose result may depend on something
// other than their arguments. Every built-in OPA marks nondeterministic is
// treated as impure too. TestBuiltinsReviewed pins the set of built-ins this
// OPA version has, so an upgrade that adds one fails until someone decides
// which side of this list it belongs on.
var impureBuiltins = map[string]bool{
	"time.now_ns":            true, // the clock
	"rand.intn":              true, // randomness
	"uuid.rfc4122":           true,
	"io.jwt.decode_verify":   true, // checks exp and nbf against the clock unless given a time
	"io.jwt.encode_sign":     true, // ECDSA signatures are randomised
	"io.jwt.encode_sign_raw": true,
	"crypto.x509.parse_and_verify_certificates":              true, // validity against the clock
	"crypto.x509.parse_and_verify_certificates_with_options": true,
	"http.send":          true, // the network (also denied)
	"net.lookup_ip_addr": true,
	"opa.runtime":        true, // the host (also denied)
	"json.verify_schema": true, // may fetch remote $refs
	"json.match_schema":  true,
	"trace":              true, // a side effect a cache would hide
	"print":              true,
}

// cachePlan is the outcome of the analysis: the projected input paths, or
// the reason the cache is off.
type cachePlan struct {
	paths  []ast.Ref // sorted, deduplicated, each starting with input
	reason string    // non-empty when the cache is off
}

// planCache analyses compiled modules.
func planCache(modules map[string]*ast.Module, builtins map[string]*ast.Builtin) cachePlan {
	a := &analysis{builtins: builtins, seen: map[string]bool{}}
	names := make([]string, 0, len(modules))
	for n := range modules {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		a.module = n
		for _, r := range modules[n].Rules {
			a.walk(r)
			if a.reason != "" {
				return cachePlan{reason: a.reason}
			}
		}
	}
	slices.SortFunc(a.paths, func(x, y ast.Ref) int { return x.Compare(y) })
	return cachePlan{paths: a.paths}
}

type analysis struct {
	builtins map[string]*ast.Builtin
	module   string
	paths    []ast.Ref
	seen     map[string]bool
	reason   string
}

func (a *analysis) fail(format string, args ...any) {
	if a.reason == "" {
		a.reason = a.module + ": " + fmt.Sprintf(format, args...)
	}
}

// walk visits x; it handles references and "with" itself so that a
// reference's head and a with's target are not taken for reads.
func (a *analysis) walk(x any) {
	ast.NewGenericVisitor(func(v any) bool {
		if a.reason != "" {
			return true
		}
		switch v := v.(type) {
		case *ast.With:
			a.walk(v.Value)
			return true
		case ast.Ref:
			a.ref(v)
			return true
		case ast.Var:
			if v.Equal(ast.InputRootDocument.Value) {
				a.fail("the policy reads input as a whole; only input.<constant path> reads can be cached")
			}
		}
		return false
	}).Walk(x)
}

// ref records an input reference's constant prefix, checks a built-in
// reference, and walks the reference's operand terms.
func (a *analysis) ref(r ast.Ref) {
	if r.HasPrefix(ast.InputRootRef) {
		n := 1
		for n < len(r) && isConstKey(r[n]) {
			n++
		}
		switch {
		case len(r) == 1:
			a.fail("the policy reads input as a whole; only input.<constant path> reads can be cached")
			return
		case n == 1:
			a.fail("the policy reads %v; only input.<constant path> reads can be cached", r)
			return
		}
		p := r[:n].Copy()
		if k := p.String(); !a.seen[k] {
			a.seen[k] = true
			a.paths = append(a.paths, p)
		}
	} else {
		a.builtinRef(r)
	}
	for _, t := range r[1:] {
		a.walk(t)
	}
}

// builtinRef fails the analysis when r names an impure built-in.
func (a *analysis) builtinRef(r ast.Ref) {
	name := r.String()
	b, ok := a.builtins[name]
	if !ok {
		return
	}
	if impureBuiltins[name] || b.Nondeterministic {
		a.fail("the policy calls %s, whose result is not a function of its arguments", name)
	}
}

func isConstKey(t *ast.Term) bool {
	switch t.Value.(type) {
	case ast.String, ast.Number, ast.Boolean, ast.Null:
		return true
	}
	return false
}

// decisionCache is a bounded map from projected input to decision. When
// full, it forgets an arbitrary half: the workloads that hit it have few
// distinct keys, and an adversary who fills it only costs evaluations.
type decisionCache struct {
	max int
	mu  sync.RWMutex
	m   map[string]Decision
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{max: max, m: make(map[string]Decision)}
}

func (c *decisionCache) get(k []byte) (Decision, bool) {
	c.mu.RLock()
	d, ok := c.m[string(k)]
	c.mu.RUnlock()
	return d, ok
}

func (c *decisionCache) put(k []byte, d Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		n := 0
		for key := range c.m {
			if n >= c.max/2 {
				break
			}
			delete(c.m, key)
			n++
		}
	}
	c.m[string(k)] = d
}

func (c *decisionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// appendKey appends the key of in: for every path of p, "!" when the path
// is absent and "=" and the canonical text of its value when present, each
// followed by a newline. Quoted strings cannot contain a raw newline, so
// the newline separates values unambiguously. Only the members on the
// paths are built (inputSchema.find); an input with a string that is not
// valid UTF-8 is keyed through its JSON form, as inputValue evaluates it.
func (p *cachePlan) appendKey(buf []byte, in *Input) ([]byte, error) {
	if !in.validUTF8() {
		val, err := inputValueJSON(in)
		if err != nil {
			return nil, err
		}
		return p.appendValueKey(buf, val)
	}
	for _, path := range p.paths {
		v, ok, err := inputSchema.find(in, path[1:])
		if err != nil {
			return nil, err
		}
		if buf, err = appendKeyValue(buf, v, ok); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// appendValueKey is appendKey over an input value already built.
func (p *cachePlan) appendValueKey(buf []byte, val ast.Value) ([]byte, error) {
	for _, path := range p.paths {
		v, err := val.Find(path[1:])
		if buf, err = appendKeyValue(buf, v, err == nil); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

func appendKeyValue(buf []byte, v ast.Value, ok bool) ([]byte, error) {
	if !ok {
		return append(buf, '!', '\n'), nil
	}
	buf = append(buf, '=')
	if at, ok := v.(textAppender); ok {
		var err error
		if buf, err = at.AppendText(buf); err != nil {
			return nil, err
		}
	} else {
		buf = append(buf, v.String()...)
	}
	return append(buf, '\n'), nil
}

type textAppender interface {
	AppendText([]byte) ([]byte, error)
}
