package egress

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// Seeds live in testdata/fuzz/<FuzzName>/; `go test` runs them every time.

func FuzzParseHost(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHost(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidHost) && !errors.Is(err, ErrNonCanonicalHost) {
				t.Fatalf("ParseHost(%q) error %v is neither ErrInvalidHost nor ErrNonCanonicalHost", s, err)
			}
			return
		}
		out := h.String()
		if out == "" || h.IsZero() {
			t.Fatalf("ParseHost(%q) = zero host without error", s)
		}
		// Normalising is idempotent.
		again, err := ParseHost(out)
		if err != nil || again != h {
			t.Fatalf("ParseHost(ParseHost(%q).String() = %q) = %v, %v, want %v", s, out, again, err, h)
		}
		if h.IsIP() {
			if h.IP().Zone() != "" || h.IP().String() != out {
				t.Fatalf("ParseHost(%q) = IP %q, not canonical", s, out)
			}
			return
		}
		// Names: lowercase LDH ASCII, no numeric last label, DNS lengths.
		if len(out) > 253 || strings.HasSuffix(out, ".") {
			t.Fatalf("ParseHost(%q) = %q, bad length or trailing dot", s, out)
		}
		labels := strings.Split(out, ".")
		if isNumericLabel(labels[len(labels)-1]) {
			t.Fatalf("ParseHost(%q) = name %q ending in a numeric label", s, out)
		}
		if _, err := netip.ParseAddr(out); err == nil {
			t.Fatalf("ParseHost(%q) = name %q that parses as an IP", s, out)
		}
		for _, l := range labels {
			if l == "" || len(l) > 63 || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				t.Fatalf("ParseHost(%q) = %q, bad label %q", s, out, l)
			}
		}
	})
}

func FuzzIsDenied(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var a netip.Addr
		switch {
		case len(b) >= 16:
			a = netip.AddrFrom16([16]byte(b[:16]))
		case len(b) >= 4:
			a = netip.AddrFrom4([4]byte(b[:4]))
		default:
			return
		}
		denied, reason := IsDenied(a)
		if denied != (reason != "") {
			t.Fatalf("IsDenied(%s) = %v, %q: reason must be set exactly when denied", a, denied, reason)
		}
		if !a.Is4() {
			return
		}
		// Every IPv6 wrapping of an IPv4 address gets the same verdict.
		v4 := a.As4()
		mapped := netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: v4[0], 13: v4[1], 14: v4[2], 15: v4[3]})
		nat64 := netip.AddrFrom16([16]byte{0: 0x00, 1: 0x64, 2: 0xff, 3: 0x9b, 12: v4[0], 13: v4[1], 14: v4[2], 15: v4[3]})
		for _, w := range []netip.Addr{mapped, nat64} {
			if d, _ := IsDenied(w); d != denied {
				t.Fatalf("IsDenied(%s) = %v but IsDenied(%s) = %v", a, denied, w, d)
			}
		}
		// 6to4 and Teredo are denied whatever they carry.
		sixToFour := netip.AddrFrom16([16]byte{0: 0x20, 1: 0x02, 2: v4[0], 3: v4[1], 4: v4[2], 5: v4[3]})
		teredo := netip.AddrFrom16([16]byte{0: 0x20, 1: 0x01, 12: v4[0], 13: v4[1], 14: v4[2], 15: v4[3]})
		for _, w := range []netip.Addr{sixToFour, teredo} {
			if d, _ := IsDenied(w); !d {
				t.Fatalf("IsDenied(%s) = false, want denied", w)
			}
		}
		// Independent check of the best-known ranges.
		for _, p := range []string{"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/3"} {
			if netip.MustParsePrefix(p).Contains(a) && !denied {
				t.Fatalf("IsDenied(%s) = false, want denied (in %s)", a, p)
			}
		}
	})
}

func FuzzAllowlistMatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, entry, host string, port uint16) {
		al, err := NewAllowlist([]string{entry}, []int{int(port)})
		if err != nil {
			return
		}
		h, err := ParseHost(host)
		if err != nil {
			return
		}
		got := al.Allows(h, int(port))
		// Reference matcher on the normalised strings.
		hs := h.String()
		if h.IsIP() && h.IP().Is6() {
			hs = "[" + hs + "]"
		}
		want := hs == entry
		if suffix, ok := strings.CutPrefix(entry, "*."); ok {
			want = !h.IsIP() && strings.HasSuffix(hs, "."+suffix) && len(hs) > len(suffix)+1
		}
		if got != want {
			t.Fatalf("NewAllowlist([%q], [%d]).Allows(%q) = %v, want %v", entry, port, host, got, want)
		}
		if got && al.Allows(h, int(port)+1) && port != 65535 {
			t.Fatalf("Allows(%q, %d) = true for a port not in the rule", host, int(port)+1)
		}
		if got && strings.HasPrefix(entry, "*.") && hs == entry[2:] {
			t.Fatalf("wildcard %q matched its apex %q", entry, host)
		}
	})
}

func FuzzHostFromURL(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw string) {
		h, port, scheme, err := HostFromURL(raw)
		if err != nil {
			return
		}
		if scheme != "http" && scheme != "https" {
			t.Fatalf("HostFromURL(%q) scheme = %q", raw, scheme)
		}
		if port < 1 || port > 65535 {
			t.Fatalf("HostFromURL(%q) port = %d", raw, port)
		}
		// No parser differential: what net/http would connect to is what
		// was checked.
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("HostFromURL(%q) succeeded but url.Parse fails: %v", raw, err)
		}
		name := u.Hostname()
		if strings.Contains(name, ":") {
			name = "[" + name + "]"
		}
		viaStd, err := ParseHost(name)
		if err != nil || viaStd != h {
			t.Fatalf("HostFromURL(%q) host = %q, but url.Parse host %q normalises to %q, %v", raw, h, u.Hostname(), viaStd, err)
		}
		if u.User != nil {
			t.Fatalf("HostFromURL(%q) accepted userinfo", raw)
		}
	})
}
