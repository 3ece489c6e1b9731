package egress

import (
	"errors"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantIP  bool
		wantErr error
	}{
		{"lowercase", "API.Example.COM", "api.example.com", false, nil},
		{"trailing dot", "EXAMPLE.com.", "example.com", false, nil},
		{"two trailing dots", "example.com..", "", false, ErrInvalidHost},
		{"only dot", ".", "", false, ErrInvalidHost},
		{"empty", "", "", false, ErrInvalidHost},
		{"empty label", "a..example.com", "", false, ErrInvalidHost},
		{"idn", "bücher.example", "xn--bcher-kva.example", false, nil},
		{"idn upper", "BÜCHER.example", "xn--bcher-kva.example", false, nil},
		{"punycode upper", "XN--BCHER-KVA.example", "xn--bcher-kva.example", false, nil},
		{"fullwidth digits become ip", "１２７.０.０.１", "127.0.0.1", true, nil},
		{"ideographic dot", "example。com", "example.com", false, nil},
		{"ipv4", "127.0.0.1", "127.0.0.1", true, nil},
		{"ipv4 trailing dot", "8.8.8.8.", "8.8.8.8", true, nil},
		{"decimal ipv4", "2130706433", "", false, ErrNonCanonicalHost},
		{"octal ipv4", "0177.0.0.1", "", false, ErrNonCanonicalHost},
		{"hex ipv4", "0x7f.0.0.1", "", false, ErrNonCanonicalHost},
		{"hex short", "0x7f.1", "", false, ErrNonCanonicalHost},
		{"hex whole", "0x7f000001", "", false, ErrNonCanonicalHost},
		{"short ipv4", "127.1", "", false, ErrNonCanonicalHost},
		{"leading zero", "127.0.0.01", "", false, ErrNonCanonicalHost},
		{"five parts", "1.2.3.4.5", "", false, ErrNonCanonicalHost},
		{"numeric tld", "example.123", "", false, ErrNonCanonicalHost},
		{"bare 0x", "0x", "", false, ErrNonCanonicalHost},
		{"overflow", "256.0.0.1", "", false, ErrNonCanonicalHost},
		{"digit label not last", "0177.example.com", "0177.example.com", false, nil},
		{"ipv6 bracketed", "[::1]", "::1", true, nil},
		{"ipv6 bare", "::1", "::1", true, nil},
		{"ipv6 canonicalised", "[2001:DB8:0:0::1]", "2001:db8::1", true, nil},
		{"ipv4 mapped", "[::ffff:127.0.0.1]", "::ffff:127.0.0.1", true, nil},
		{"ipv4 mapped hex", "[::ffff:7f00:1]", "::ffff:127.0.0.1", true, nil},
		{"ipv6 zone", "[fe80::1%eth0]", "", false, ErrInvalidHost},
		{"ipv4 in brackets", "[127.0.0.1]", "", false, ErrInvalidHost},
		{"unterminated bracket", "[::1", "", false, ErrInvalidHost},
		{"underscore", "a_b.example.com", "", false, ErrInvalidHost},
		{"space", "a b.example.com", "", false, ErrInvalidHost},
		{"at sign", "evil.com@127.0.0.1", "", false, ErrInvalidHost},
		{"slash", "example.com/x", "", false, ErrInvalidHost},
		{"wildcard", "*.example.com", "", false, ErrInvalidHost},
		{"percent", "%31%32%37.0.0.1", "", false, ErrInvalidHost},
		{"label too long", "a123456789012345678901234567890123456789012345678901234567890123.com", "", false, ErrInvalidHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHost(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseHost(%q) = %v, %v, want error %v", tt.in, h, err, tt.wantErr)
				}
				return
			}
			if err != nil || h.String() != tt.want || h.IsIP() != tt.wantIP {
				t.Fatalf("ParseHost(%q) = %q (ip %v), %v, want %q (ip %v)", tt.in, h, h.IsIP(), err, tt.want, tt.wantIP)
			}
		})
	}
}

func TestNeverApprovable(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"api.example.com", false},
		{"8.8.8.8", false},
		{"[2606:4700::1111]", false},
		{"127.0.0.1", true},
		{"10.1.2.3", true},
		{"169.254.169.254", true},
		{"[::1]", true},
		{"[::ffff:10.0.0.1]", true},
		{"[64:ff9b::a00:1]", true},
		{"[2002:a00:1::]", true},
		{"localhost", true},
		{"localhost.", true},
		{"intranet", true},
		{"printer.local", true},
		{"db.internal", true},
		{"app.localhost", true},
		{"internal.example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			h, err := ParseHost(tt.in)
			if err != nil {
				t.Fatalf("ParseHost(%q) = %v", tt.in, err)
			}
			if got := h.NeverApprovable(); got != tt.want {
				t.Fatalf("ParseHost(%q).NeverApprovable() = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	if !(Host{}).NeverApprovable() {
		t.Fatal("Host{}.NeverApprovable() = false, want true")
	}
}

func TestHostFromURL(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		host       string
		port       int
		scheme     string
		wantErr    error
		wantAnyErr bool
	}{
		{"https default port", "https://API.example.com./v1?q=1", "api.example.com", 443, "https", nil, false},
		{"http default port", "http://example.com", "example.com", 80, "http", nil, false},
		{"explicit port", "HTTPS://example.com:8443/", "example.com", 8443, "https", nil, false},
		{"idn", "https://bücher.example/", "xn--bcher-kva.example", 443, "https", nil, false},
		{"ipv6", "http://[::1]:8080/", "::1", 8080, "http", nil, false},
		{"ipv4 mapped", "http://[::ffff:7f00:1]/", "::ffff:127.0.0.1", 80, "http", nil, false},
		{"decimal ip", "http://2130706433/", "", 0, "", ErrNonCanonicalHost, false},
		{"octal ip", "http://0177.0.0.1/", "", 0, "", ErrNonCanonicalHost, false},
		{"userinfo", "http://evil.com@127.0.0.1/", "", 0, "", ErrInvalidURL, false},
		{"ftp", "ftp://example.com/", "", 0, "", ErrInvalidURL, false},
		{"relative", "/v1/x", "", 0, "", ErrInvalidURL, false},
		{"opaque", "http:example.com", "", 0, "", ErrInvalidURL, false},
		{"no host", "http:///x", "", 0, "", ErrInvalidURL, false},
		{"port zero", "http://example.com:0/", "", 0, "", ErrInvalidURL, false},
		{"port leading zero", "http://example.com:0443/", "", 0, "", ErrInvalidURL, false},
		{"port too big", "http://example.com:65536/", "", 0, "", nil, true},
		{"zone", "http://[fe80::1%25eth0]/", "", 0, "", ErrInvalidHost, false},
		{"ipv4 in brackets", "http://[127.0.0.1]/", "", 0, "", nil, true},
		{"backslash", "http://example.com\\@127.0.0.1/", "", 0, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, port, scheme, err := HostFromURL(tt.in)
			switch {
			case tt.wantAnyErr:
				if err == nil {
					t.Fatalf("HostFromURL(%q) = %q, %d, %q, nil, want an error", tt.in, h, port, scheme)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("HostFromURL(%q) error = %v, want %v", tt.in, err, tt.wantErr)
				}
			default:
				if err != nil || h.String() != tt.host || port != tt.port || scheme != tt.scheme {
					t.Fatalf("HostFromURL(%q) = %q, %d, %q, %v, want %q, %d, %q", tt.in, h, port, scheme, err, tt.host, tt.port, tt.scheme)
				}
			}
		})
	}
}
