package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

var (
	// ErrInvalidHost reports a host that is not a valid DNS name or IP literal.
	ErrInvalidHost = errors.New("egress: invalid host")
	// ErrNonCanonicalHost reports a numeric host that is not a canonical
	// dotted-quad IPv4 address (2130706433, 0177.0.0.1, 0x7f.1, 127.1, ...).
	// Such hosts are refused before any lookup.
	ErrNonCanonicalHost = errors.New("egress: non-canonical numeric host")
	// ErrInvalidURL reports a URL that is not an absolute http(s) URL with a
	// host, or that carries userinfo.
	ErrInvalidURL = errors.New("egress: invalid URL")
)

// maxHostInput bounds the input ParseHost looks at, before any IDNA work.
const maxHostInput = 1024

// Host is a normalised target host: a lowercase ASCII (punycode) DNS name
// without a trailing dot, or a canonical IP address. The zero Host is invalid.
// Hosts are comparable with ==.
type Host struct {
	name string     // set for DNS names
	ip   netip.Addr // set for IP literals
}

// ParseHost normalises s once: IP literals (IPv6 with or without brackets,
// no zone) become their canonical address; names are lowercased, lose one
// trailing dot, and are converted to punycode with the IDNA Lookup profile.
// A name whose last label is numeric (all digits, or 0x-hex) must be a
// canonical dotted-quad, otherwise ParseHost returns ErrNonCanonicalHost.
func ParseHost(s string) (Host, error) {
	if s == "" || len(s) > maxHostInput {
		return Host{}, fmt.Errorf("%w: empty or too long", ErrInvalidHost)
	}
	if s[0] == '[' {
		if !strings.HasSuffix(s, "]") {
			return Host{}, fmt.Errorf("%w: unterminated IPv6 literal", ErrInvalidHost)
		}
		return parseIPv6(s[1 : len(s)-1])
	}
	if strings.Contains(s, ":") {
		return parseIPv6(s)
	}
	if !utf8.ValidString(s) {
		return Host{}, fmt.Errorf("%w: not UTF-8", ErrInvalidHost)
	}
	name := strings.TrimSuffix(s, ".")
	if name == "" {
		return Host{}, fmt.Errorf("%w: empty name", ErrInvalidHost)
	}
	ascii, err := idna.Lookup.ToASCII(name)
	if err != nil {
		return Host{}, fmt.Errorf("%w: %v", ErrInvalidHost, err)
	}
	ascii = strings.ToLower(ascii)
	if ascii == "" || strings.HasSuffix(ascii, ".") {
		return Host{}, fmt.Errorf("%w: empty label", ErrInvalidHost)
	}
	// The result must be a fixed point, so one normalisation is final.
	if again, err := idna.Lookup.ToASCII(ascii); err != nil || again != ascii {
		return Host{}, fmt.Errorf("%w: name does not normalise stably", ErrInvalidHost)
	}
	labels := strings.Split(ascii, ".")
	if isNumericLabel(labels[len(labels)-1]) {
		a, err := netip.ParseAddr(ascii)
		if err != nil || !a.Is4() || a.String() != ascii {
			return Host{}, ErrNonCanonicalHost
		}
		return Host{ip: a}, nil
	}
	if len(ascii) > 253 {
		return Host{}, fmt.Errorf("%w: name longer than 253 bytes", ErrInvalidHost)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return Host{}, fmt.Errorf("%w: label length must be 1..63", ErrInvalidHost)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return Host{}, fmt.Errorf("%w: character %q", ErrInvalidHost, c)
			}
		}
	}
	return Host{name: ascii}, nil
}

func parseIPv6(s string) (Host, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return Host{}, fmt.Errorf("%w: not an IPv6 literal without zone", ErrInvalidHost)
	}
	return Host{ip: a}, nil
}

// isNumericLabel reports whether l would be read as a number by an IPv4
// parser (WHATWG URL "ends in a number"): all decimal digits, or 0x hex.
func isNumericLabel(l string) bool {
	if l == "" {
		return false
	}
	digits := l
	hex := false
	if strings.HasPrefix(l, "0x") {
		digits, hex = l[2:], true
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		switch {
		case c >= '0' && c <= '9':
		case hex && c >= 'a' && c <= 'f':
		default:
			return false
		}
	}
	return true
}

// String returns the normalised host: the punycode name, or the canonical
// IP text (IPv6 without brackets).
func (h Host) String() string {
	if h.ip.IsValid() {
		return h.ip.String()
	}
	return h.name
}

// IsIP reports whether h is an IP literal.
func (h Host) IsIP() bool { return h.ip.IsValid() }

// IP returns the address of an IP-literal host, or the zero Addr.
func (h Host) IP() netip.Addr { return h.ip }

// IsZero reports whether h is the zero (invalid) Host.
func (h Host) IsZero() bool { return h == Host{} }

// NeverApprovable reports whether h could never be approved as an egress
// target (PROTOCOL §4 egress_target_forbidden): a special-purpose IP literal,
// a single-label name, or a .localhost/.local/.internal name. Non-canonical
// numeric hosts already fail ParseHost. The zero Host is never approvable.
func (h Host) NeverApprovable() bool {
	if h.ip.IsValid() {
		denied, _ := IsDenied(h.ip)
		return denied
	}
	if h.name == "" || !strings.Contains(h.name, ".") {
		return true
	}
	for _, suffix := range [...]string{".localhost", ".local", ".internal"} {
		if strings.HasSuffix(h.name, suffix) {
			return true
		}
	}
	return false
}

// HostFromURL extracts the normalised target of an absolute http or https
// URL: its host, its port (default 80 or 443) and its lowercase scheme.
// URLs with userinfo, an opaque part, no host or another scheme are refused
// with ErrInvalidURL; bad hosts fail as ParseHost does.
func HostFromURL(raw string) (h Host, port int, scheme string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Host{}, 0, "", fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	return hostFromURL(u)
}

func hostFromURL(u *url.URL) (Host, int, string, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return Host{}, 0, "", fmt.Errorf("%w: scheme must be http or https", ErrInvalidURL)
	}
	if u.Opaque != "" || u.Host == "" {
		return Host{}, 0, "", fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	if u.User != nil {
		return Host{}, 0, "", fmt.Errorf("%w: userinfo is not allowed", ErrInvalidURL)
	}
	name := u.Hostname()
	if strings.HasPrefix(u.Host, "[") {
		name = "[" + name + "]"
	}
	h, err := ParseHost(name)
	if err != nil {
		return Host{}, 0, "", err
	}
	port := 443
	if scheme == "http" {
		port = 80
	}
	if p := u.Port(); p != "" {
		port, err = parsePort(p)
		if err != nil {
			return Host{}, 0, "", fmt.Errorf("%w: %v", ErrInvalidURL, err)
		}
	}
	return h, port, scheme, nil
}

// parsePort accepts decimal 1..65535 without sign or leading zeros.
func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return 0, fmt.Errorf("port %q must be 1..65535 without leading zeros", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("port %q must be decimal", s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q must be 1..65535", s)
	}
	return n, nil
}
