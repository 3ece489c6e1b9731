package egress

import (
	"errors"
	"strings"
	"testing"
)

func mustHost(t testing.TB, s string) Host {
	t.Helper()
	h, err := ParseHost(s)
	if err != nil {
		t.Fatalf("ParseHost(%q) = %v", s, err)
	}
	return h
}

func TestAllowlistAllows(t *testing.T) {
	al, err := NewAllowlist([]string{"api.example.com", "*.example.net", "xn--bcher-kva.example", "203.0.113.9", "[2001:db8::1]"}, []int{443, 8443})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		host string
		port int
		want bool
	}{
		{"exact", "api.example.com", 443, true},
		{"exact second port", "api.example.com", 8443, true},
		{"upper and trailing dot", "API.EXAMPLE.com.", 443, true},
		{"port not allowed", "api.example.com", 80, false},
		{"sibling", "www.example.com", 443, false},
		{"apex of exact", "example.com", 443, false},
		{"sub of exact", "x.api.example.com", 443, false},
		{"wildcard one label", "a.example.net", 443, true},
		{"wildcard two labels", "a.b.example.net", 443, true},
		{"wildcard apex", "example.net", 443, false},
		{"wildcard apex dot", "example.net.", 443, false},
		{"wildcard suffix trick", "evilexample.net", 443, false},
		{"wildcard port", "a.example.net", 80, false},
		{"idn unicode", "bücher.example", 443, true},
		{"idn upper", "BÜCHER.example.", 443, true},
		{"ip exact", "203.0.113.9", 443, true},
		{"ip other", "203.0.113.10", 443, false},
		{"ipv6 exact", "[2001:db8:0::1]", 443, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := al.Allows(mustHost(t, tt.host), tt.port); got != tt.want {
				t.Fatalf("Allows(%q, %d) = %v, want %v", tt.host, tt.port, got, tt.want)
			}
		})
	}
	t.Run("reason", func(t *testing.T) {
		if got := al.check(mustHost(t, "api.example.com"), 80); got != ReasonPortNotAllowed {
			t.Fatalf("check(api.example.com, 80) = %q, want %q", got, ReasonPortNotAllowed)
		}
		if got := al.check(mustHost(t, "other.example.com"), 443); got != ReasonNotAllowlisted {
			t.Fatalf("check(other.example.com, 443) = %q, want %q", got, ReasonNotAllowlisted)
		}
	})
}

func TestAllowlistDefaultsAndEmpty(t *testing.T) {
	al, err := NewAllowlist([]string{"example.com"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := mustHost(t, "example.com")
	if !al.Allows(h, 443) || al.Allows(h, 80) {
		t.Fatalf("default ports: Allows(443) = %v, Allows(80) = %v, want true, false", al.Allows(h, 443), al.Allows(h, 80))
	}
	var nilList *Allowlist
	if nilList.Allows(h, 443) {
		t.Fatal("nil Allowlist allows, want deny")
	}
	if (&Allowlist{}).Allows(h, 443) {
		t.Fatal("empty Allowlist allows, want deny")
	}
}

func TestAllowlistWith(t *testing.T) {
	base, err := NewAllowlist([]string{"api.example.com"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	learned := mustHost(t, "learned.example.org")
	more := base.With(ExactRule(learned, 8080), ExactRule(Host{}, 1), ExactRule(learned, 0))
	if !more.Allows(learned, 8080) {
		t.Fatal("With: learned entry not allowed")
	}
	if more.Allows(learned, 443) {
		t.Fatal("With: learned entry allowed on another port")
	}
	if base.Allows(learned, 8080) {
		t.Fatal("With mutated the original allowlist")
	}
	if got := len(more.Rules()); got != 2 {
		t.Fatalf("len(With(...).Rules()) = %d, want 2 (zero rules dropped)", got)
	}
	if !(*Allowlist)(nil).With(ExactRule(learned, 443)).Allows(learned, 443) {
		t.Fatal("nil.With did not allow the learned entry")
	}
}

func TestNewAllowlistRejects(t *testing.T) {
	tests := []struct {
		name    string
		entry   string
		ports   []int
		wantMsg string
	}{
		{"bare star", "*", nil, "wildcard"},
		{"star dot", "*.", nil, ""},
		{"star in middle", "api.*.example.com", nil, "wildcard"},
		{"star suffix", "api*.example.com", nil, "wildcard"},
		{"double wildcard", "*.*.example.com", nil, "wildcard"},
		{"wildcard tld", "*.com", nil, "two labels"},
		{"wildcard ip", "*.10.0.0.1", nil, ""},
		{"upper", "API.example.com", nil, `write "api.example.com"`},
		{"trailing dot", "example.com.", nil, `write "example.com"`},
		{"unicode", "bücher.example", nil, `write "xn--bcher-kva.example"`},
		{"wildcard unicode", "*.bücher.example", nil, `write "*.xn--bcher-kva.example"`},
		{"ipv6 uncanonical", "[2001:DB8::1]", nil, `write "[2001:db8::1]"`},
		{"non canonical ip", "0177.0.0.1", nil, "non-canonical"},
		{"decimal ip", "2130706433", nil, "non-canonical"},
		{"empty", "", nil, ""},
		{"port zero", "example.com", []int{0}, "port"},
		{"port big", "example.com", []int{70000}, "port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewAllowlist([]string{tt.entry}, tt.ports)
			if !errors.Is(err, ErrInvalidRule) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("NewAllowlist(%q, %v) = %v, want ErrInvalidRule mentioning %q", tt.entry, tt.ports, err, tt.wantMsg)
			}
		})
	}
}

func TestParseRule(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"api.openai.com", "api.openai.com:443", false},
		{"api.openai.com:8443", "api.openai.com:8443", false},
		{"*.example.com:443", "*.example.com:443", false},
		{"127.0.0.1:8080", "127.0.0.1:8080", false},
		{"[::1]:8080", "[::1]:8080", false},
		{"[2001:db8::1]", "[2001:db8::1]:443", false},
		{"example.com:0", "", true},
		{"example.com:x", "", true},
		{"Example.com:443", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRule(tt.in)
			if (err != nil) != tt.wantErr || (err == nil && r.String() != tt.want) {
				t.Fatalf("ParseRule(%q) = %q, %v, want %q (error %v)", tt.in, r, err, tt.want, tt.wantErr)
			}
		})
	}
}
