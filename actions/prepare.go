package actions

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/latchgate/latchgate/egress"
	"github.com/latchgate/latchgate/receipts"
)

// Plan is a validated request: what will run, with which arguments, and
// which hosts it will contact. A Plan is immutable and may be frozen into an
// approval (store ArgsRaw and Action.Digest; re-Prepare at approval time).
type Plan struct {
	Action  *Action
	Args    any             // decoded arguments (map[string]any, []any, string, json.Number, bool, nil)
	ArgsRaw json.RawMessage // the arguments as received ("{}" for an empty body)
	// RequestHash is "sha256:<hex>" of JCS(arguments).
	RequestHash string
	// TargetHosts are the normalised (punycode) hosts the request will
	// contact, allowlisted or not, sorted and unique.
	TargetHosts []string
	// Unresolved are targets neither in the manifest allowlist nor learned,
	// that a human may approve: "host" for port 443, else "host:port"
	// (egress.ParseRule syntax, so the gate can learn them as they are).
	Unresolved []string
	// Forbidden are targets that can never be approved (PROTOCOL §4
	// egress_target_forbidden): special-purpose IP literals, single-label,
	// .localhost/.local/.internal names, or a secret-bearing request to a host
	// the manifest does not list.
	Forbidden []string

	targets []target
}

// target is one host:port a plan contacts.
type target struct {
	host   egress.Host
	port   int
	scheme string
}

// stand-in value for secrets while preparing (real values resolve at dispatch).
func prepareSecret(string) (string, error) { return "prepare-placeholder", nil }

// Prepare checks arguments and computes the plan (pipeline steps 2 and 4).
// An empty args means {}. Errors: *InvalidJSONError (400 invalid_json),
// *SchemaError and *TemplateError (422 schema_violation).
// learned are the learned egress entries ("host" or "host:port") valid now;
// malformed entries are ignored.
func (a *Action) Prepare(args json.RawMessage, learned []string) (*Plan, error) {
	raw := args
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	v, err := parseIJSON(raw)
	if err != nil {
		return nil, err
	}
	if err := a.schema.Validate(v); err != nil {
		return nil, schemaError(err)
	}
	hash, err := jcsHash(raw)
	if err != nil {
		return nil, &InvalidJSONError{Reason: "cannot be canonicalised"}
	}
	p := &Plan{
		Action:      a,
		Args:        v,
		ArgsRaw:     append(json.RawMessage(nil), raw...),
		RequestHash: hash,
		TargetHosts: []string{},
		Unresolved:  []string{},
		Forbidden:   []string{},
	}
	if a.http == nil {
		return p, nil
	}
	req, err := a.http.render(a, v, prepareSecret)
	var fh *forbiddenHostError
	if errors.As(err, &fh) {
		p.TargetHosts, p.Forbidden = []string{fh.host}, []string{fh.host}
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	p.targets = []target{{host: req.host, port: req.port, scheme: req.scheme}}
	a.classify(p, learned)
	return p, nil
}

// classify fills TargetHosts, Unresolved and Forbidden (pipeline step 4).
func (a *Action) classify(p *Plan, learned []string) {
	learnedAL := learnedAllowlist(learned)
	for _, t := range p.targets {
		hs := t.host.String()
		p.TargetHosts = appendUnique(p.TargetHosts, hs)
		switch {
		case a.allow.Allows(t.host, t.port):
			// listed by the manifest: checked at dial time like every host
		case a.http.usesSecrets:
			// a secret goes only to the manifest's own hosts
			p.Forbidden = appendUnique(p.Forbidden, hs)
		case learnedAL.Allows(t.host, t.port):
		case t.host.NeverApprovable():
			p.Forbidden = appendUnique(p.Forbidden, hs)
		default:
			p.Unresolved = appendUnique(p.Unresolved, hostPort(t.host, t.port))
		}
	}
	sort.Strings(p.TargetHosts)
	sort.Strings(p.Unresolved)
	sort.Strings(p.Forbidden)
}

// hostPort writes a target as egress.ParseRule reads it.
func hostPort(h egress.Host, port int) string {
	s := h.String()
	if h.IsIP() && h.IP().Is6() {
		s = "[" + s + "]"
	}
	if port == egress.DefaultPort {
		return s
	}
	if h.IsIP() && h.IP().Is6() {
		return s + ":" + strconv.Itoa(port)
	}
	return net.JoinHostPort(s, strconv.Itoa(port))
}

// learnedAllowlist builds exact rules from learned entries.
func learnedAllowlist(learned []string) *egress.Allowlist {
	var rules []egress.Rule
	for _, l := range learned {
		if r, err := egress.ParseRule(l); err == nil {
			rules = append(rules, r)
		}
	}
	return (*egress.Allowlist)(nil).With(rules...)
}

func appendUnique(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// jcsHash returns "sha256:<hex>" of the JCS form of JSON text.
func jcsHash(raw []byte) (string, error) {
	// The ledger's own JCS hash: one-pass canonicalisation for the common
	// shapes, jcs.Transform for the rest. It was jcs.Transform alone,
	// ≈ 4 µs and 2 KB per execute for the request and response hashes.
	return receipts.HashJSON(raw)
}

// schemaError turns a validation failure into one SchemaError: the first
// leaf cause by instance pointer, with a reason that never quotes the
// argument's value.
func schemaError(err error) error {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &SchemaError{Reason: "does not match the input schema"}
	}
	var leaves []*SchemaError
	collectLeaves(ve, &leaves)
	if len(leaves) == 0 {
		return &SchemaError{Reason: "does not match the input schema"}
	}
	slices.SortStableFunc(leaves, func(x, y *SchemaError) int {
		if c := strings.Compare(x.Pointer, y.Pointer); c != 0 {
			return c
		}
		return strings.Compare(x.Reason, y.Reason)
	})
	return leaves[0]
}

func collectLeaves(ve *jsonschema.ValidationError, out *[]*SchemaError) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collectLeaves(c, out)
		}
		return
	}
	ptr := jsonPointer(ve.InstanceLocation)
	reason := safeReason(ve.ErrorKind)
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			*out = append(*out, &SchemaError{Pointer: jsonPointer(append(slices.Clone(ve.InstanceLocation), m)), Reason: "required property is missing"})
		}
		return
	case *kind.AdditionalProperties:
		for _, m := range k.Properties {
			*out = append(*out, &SchemaError{Pointer: jsonPointer(append(slices.Clone(ve.InstanceLocation), m)), Reason: "property is not allowed"})
		}
		return
	}
	*out = append(*out, &SchemaError{Pointer: ptr, Reason: reason})
}

// safeReason describes a failed keyword without the argument's value
// (library messages for pattern, format, minimum… quote the value).
func safeReason(k jsonschema.ErrorKind) string {
	p := message.NewPrinter(language.English)
	rat := func(r interface{ FloatString(int) string }) string {
		return strings.TrimRight(strings.TrimRight(r.FloatString(6), "0"), ".")
	}
	switch k := k.(type) {
	case *kind.Type:
		return "expected " + strings.Join(k.Want, " or ") + ", got " + k.Got
	case *kind.Pattern:
		return fmt.Sprintf("does not match pattern %q", k.Want)
	case *kind.Format:
		return "is not a valid " + k.Want
	case *kind.Minimum:
		return "must be >= " + rat(k.Want)
	case *kind.Maximum:
		return "must be <= " + rat(k.Want)
	case *kind.ExclusiveMinimum:
		return "must be > " + rat(k.Want)
	case *kind.ExclusiveMaximum:
		return "must be < " + rat(k.Want)
	case *kind.MultipleOf:
		return "must be a multiple of " + rat(k.Want)
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %d characters", k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters", k.Want)
	case *kind.Enum, *kind.Const, *kind.MinItems, *kind.MaxItems, *kind.MinProperties,
		*kind.MaxProperties, *kind.UniqueItems, *kind.FalseSchema, *kind.AdditionalItems:
		// these messages name schema values, counts and indexes only
		return k.LocalizedString(p)
	}
	return "fails the '" + strings.Join(k.KeywordPath(), "/") + "' keyword"
}

// jsonPointer renders an instance location as an RFC 6901 pointer.
func jsonPointer(loc []string) string {
	var sb strings.Builder
	for _, seg := range loc {
		sb.WriteByte('/')
		sb.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(seg))
	}
	return sb.String()
}
