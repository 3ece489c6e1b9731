package lease_test

import (
	"testing"

	"github.com/latchgate/latchgate/lease"
)

func TestNormalizeHTU(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "http://localhost/v1/leases", "http://localhost/v1/leases"},
		{"drop_fragment", "http://localhost/a#frag", "http://localhost/a"},
		{"drop_query", "http://localhost/a?x=1&y=2", "http://localhost/a"},
		{"fragment_then_query", "http://localhost/a#f?x", "http://localhost/a"},
		{"query_with_hash_in_fragment", "http://localhost/a?q=1#f", "http://localhost/a"},
		{"lowercase_scheme_authority", "HTTP://LocalHost/A/B", "http://localhost/A/B"},
		{"keep_path_case", "http://localhost/V1/Actions", "http://localhost/V1/Actions"},
		{"keep_percent_encoding", "http://localhost/a%2Fb/%7e", "http://localhost/a%2Fb/%7e"},
		{"empty_path", "http://localhost", "http://localhost/"},
		{"empty_path_with_query", "http://localhost?x=1", "http://localhost/"},
		{"default_http_port", "http://localhost:80/a", "http://localhost/a"},
		{"default_https_port", "https://example.com:443/a", "https://example.com/a"},
		{"http_port_on_https_kept", "https://example.com:80/a", "https://example.com:80/a"},
		{"https_port_on_http_kept", "http://example.com:443/a", "http://example.com:443/a"},
		{"other_port_kept", "http://127.0.0.1:8080/a", "http://127.0.0.1:8080/a"},
		{"port_8080_not_80", "http://localhost:8080", "http://localhost:8080/"},
		{"ipv6_default_port", "http://[::1]:80/a", "http://[::1]/a"},
		{"ipv6_no_port", "http://[::1]/a", "http://[::1]/a"},
		{"ipv6_ending_80", "http://[2001:db8::80]/a", "http://[2001:db8::80]/a"},
		{"ipv6_upper", "http://[2001:DB8::1]:8443/a", "http://[2001:db8::1]:8443/a"},
		{"no_scheme", "/v1/leases?x#y", "/v1/leases"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := lease.NormalizeHTU(c.in); got != c.want {
				t.Errorf("NormalizeHTU(%q) = %q, want %q", c.in, got, c.want)
			}
			if got := lease.NormalizeHTU(c.want); got != c.want {
				t.Errorf("NormalizeHTU(%q) = %q, want it unchanged (idempotent)", c.want, got)
			}
		})
	}
}
