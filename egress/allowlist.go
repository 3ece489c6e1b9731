package egress

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalidRule reports an allowlist entry that is malformed, too broad, or
// not written in normalised form.
var ErrInvalidRule = errors.New("egress: invalid allowlist entry")

// DefaultPort is the port an allowlist entry allows when none is given.
const DefaultPort = 443

// Rule is one validated allowlist entry: an exact host, or a wildcard
// "*.example.com" matching one or more labels below example.com (never the
// apex), each with the ports it allows. The zero Rule matches nothing.
type Rule struct {
	host     Host  // exact host, or the suffix of a wildcard
	wildcard bool  // host is a suffix: match names strictly below it
	ports    []int // sorted, deduplicated, never empty for a valid rule
}

// NewRule validates entry ("api.example.com", "*.example.com", "203.0.113.9",
// "[2001:db8::1]") and the ports it allows (empty means [DefaultPort]).
// The entry must already be in normalised form; otherwise the error names the
// form to write (for example the punycode of an IDN).
func NewRule(entry string, ports []int) (Rule, error) {
	ps, err := normalisePorts(ports)
	if err != nil {
		return Rule{}, fmt.Errorf("%w %q: %v", ErrInvalidRule, entry, err)
	}
	host, wildcard, err := parsePattern(entry)
	if err != nil {
		return Rule{}, err
	}
	return Rule{host: host, wildcard: wildcard, ports: ps}, nil
}

// ParseRule parses "HOST[:PORT]" (HOST as in NewRule; IPv6 in brackets when a
// port follows) into a rule allowing that one port, DefaultPort if omitted.
func ParseRule(s string) (Rule, error) {
	host, port := s, DefaultPort
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := parsePort(p)
		if err != nil {
			return Rule{}, fmt.Errorf("%w %q: %v", ErrInvalidRule, s, err)
		}
		host, port = h, n
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	return NewRule(host, []int{port})
}

// ExactRule allows exactly host h on port, as learned entries do. An invalid
// host or port yields a rule that matches nothing.
func ExactRule(h Host, port int) Rule {
	if h.IsZero() || port < 1 || port > 65535 {
		return Rule{}
	}
	return Rule{host: h, ports: []int{port}}
}

func parsePattern(entry string) (Host, bool, error) {
	pattern, wildcard := entry, false
	if strings.HasPrefix(entry, "*.") {
		pattern, wildcard = entry[2:], true
	}
	if strings.Contains(pattern, "*") {
		return Host{}, false, fmt.Errorf("%w %q: a wildcard is allowed only as a leading \"*.\" label", ErrInvalidRule, entry)
	}
	h, err := ParseHost(pattern)
	if err != nil {
		return Host{}, false, fmt.Errorf("%w %q: %w", ErrInvalidRule, entry, err)
	}
	want := h.String()
	if h.IsIP() && h.ip.Is6() {
		want = "[" + want + "]"
	}
	if wildcard {
		want = "*." + want
	}
	if want != entry && !(h.IsIP() && h.ip.Is6() && h.String() == entry) {
		return Host{}, false, fmt.Errorf("%w %q: not normalised; write %q", ErrInvalidRule, entry, want)
	}
	if wildcard && (h.IsIP() || !strings.Contains(h.name, ".")) {
		return Host{}, false, fmt.Errorf("%w %q: a wildcard needs a name of at least two labels after \"*.\"", ErrInvalidRule, entry)
	}
	return h, wildcard, nil
}

func normalisePorts(ports []int) ([]int, error) {
	if len(ports) == 0 {
		return []int{DefaultPort}, nil
	}
	out := slices.Clone(ports)
	for _, p := range out {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("port %d must be 1..65535", p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// String returns the entry as written in configuration, with its ports.
func (r Rule) String() string {
	h := r.host.String()
	if r.host.IsIP() && r.host.ip.Is6() {
		h = "[" + h + "]"
	}
	if r.wildcard {
		h = "*." + h
	}
	ps := make([]string, len(r.ports))
	for i, p := range r.ports {
		ps[i] = strconv.Itoa(p)
	}
	return h + ":" + strings.Join(ps, ",")
}

// matchesHost reports whether r's host pattern matches h, ignoring ports.
func (r Rule) matchesHost(h Host) bool {
	if r.host.IsZero() || h.IsZero() {
		return false
	}
	if !r.wildcard {
		return r.host == h
	}
	return !h.IsIP() && strings.HasSuffix(h.name, "."+r.host.name)
}

// Allowlist is an immutable set of rules. A nil or empty Allowlist allows
// nothing.
type Allowlist struct {
	rules []Rule
}

// NewAllowlist builds the allowlist of a manifest: every entry of domains
// (exact or "*.suffix", normalised) allows every port in ports, which
// defaults to [DefaultPort].
func NewAllowlist(domains []string, ports []int) (*Allowlist, error) {
	al := &Allowlist{}
	var errs []error
	for _, d := range domains {
		r, err := NewRule(d, ports)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		al.rules = append(al.rules, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return al, nil
}

// With returns a copy of a with entries added (learned host:port entries,
// typically from ExactRule). a is not modified; a may be nil. Zero rules are
// dropped. Expiry of learned entries is the caller's job: build the grant's
// allowlist from the entries valid at grant time.
func (a *Allowlist) With(entries ...Rule) *Allowlist {
	out := &Allowlist{}
	if a != nil {
		out.rules = slices.Clone(a.rules)
	}
	for _, r := range entries {
		if !r.host.IsZero() && len(r.ports) > 0 {
			out.rules = append(out.rules, r)
		}
	}
	return out
}

// Allows reports whether some rule allows host h on port.
func (a *Allowlist) Allows(h Host, port int) bool {
	return a.check(h, port) == ""
}

// Rules returns a copy of the rules, in order.
func (a *Allowlist) Rules() []Rule {
	if a == nil {
		return nil
	}
	return slices.Clone(a.rules)
}

// check returns "" when allowed, else ReasonPortNotAllowed (the host matches
// but no matching rule has the port) or ReasonNotAllowlisted.
func (a *Allowlist) check(h Host, port int) string {
	if a == nil {
		return ReasonNotAllowlisted
	}
	hostMatched := false
	for _, r := range a.rules {
		if !r.matchesHost(h) {
			continue
		}
		hostMatched = true
		if _, ok := slices.BinarySearch(r.ports, port); ok {
			return ""
		}
	}
	if hostMatched {
		return ReasonPortNotAllowed
	}
	return ReasonNotAllowlisted
}
