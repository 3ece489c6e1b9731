package egress

import "net/netip"

// deniedRange is one special-purpose range and the reason it is denied.
type deniedRange struct {
	prefix netip.Prefix
	reason string
}

// deniedV4 returns the IANA IPv4 special-purpose registry (every entry, as
// of 2025) plus multicast and the limited broadcast address. More specific
// entries come first so the reason names the narrowest range.
func deniedV4() [19]deniedRange {
	p := func(a, b, c, d byte, bits int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{a, b, c, d}), bits)
	}
	return [...]deniedRange{
		{p(0, 0, 0, 0, 8), "this_network"},
		{p(10, 0, 0, 0, 8), "private"},
		{p(100, 64, 0, 0, 10), "shared_address_space"},
		{p(127, 0, 0, 0, 8), "loopback"},
		{p(169, 254, 0, 0, 16), "link_local"},
		{p(172, 16, 0, 0, 12), "private"},
		{p(192, 0, 0, 0, 24), "ietf_protocol_assignments"},
		{p(192, 0, 2, 0, 24), "documentation"},
		{p(192, 31, 196, 0, 24), "as112"},
		{p(192, 52, 193, 0, 24), "amt"},
		{p(192, 88, 99, 0, 24), "6to4_relay_anycast"},
		{p(192, 168, 0, 0, 16), "private"},
		{p(192, 175, 48, 0, 24), "as112_direct_delegation"},
		{p(198, 18, 0, 0, 15), "benchmarking"},
		{p(198, 51, 100, 0, 24), "documentation"},
		{p(203, 0, 113, 0, 24), "documentation"},
		{p(224, 0, 0, 0, 4), "multicast"},
		{p(255, 255, 255, 255, 32), "limited_broadcast"},
		{p(240, 0, 0, 0, 4), "reserved"},
	}
}

// deniedV6 returns the IANA IPv6 special-purpose registry entries that are
// denied outright, plus multicast and deprecated site-local. The embedding
// prefixes ::ffff:0:0/96, ::/96 and 64:ff9b::/96 are not here: IsDenied
// unwraps them and checks the IPv4 address.
func deniedV6() [17]deniedRange {
	p := netip.MustParsePrefix
	return [...]deniedRange{
		{p("::/128"), "unspecified"},
		{p("::1/128"), "loopback"},
		// Local-use NAT64 (RFC 8215): the operator picks where the IPv4
		// address sits, so it cannot be unwrapped soundly; never global.
		{p("64:ff9b:1::/48"), "nat64_local_use"},
		{p("100::/64"), "discard_only"},
		{p("100:0:0:1::/64"), "dummy_prefix"},
		{p("2001::/32"), "teredo"},
		{p("2001:db8::/32"), "documentation"},
		{p("2001::/23"), "ietf_protocol_assignments"},
		{p("2002::/16"), "6to4"},
		{p("2620:4f:8000::/48"), "as112_direct_delegation"},
		{p("3fff::/20"), "documentation"},
		{p("5f00::/16"), "srv6_sids"},
		{p("fc00::/7"), "unique_local"},
		{p("fe80::/10"), "link_local"},
		{p("fec0::/10"), "site_local"},
		{p("ff00::/8"), "multicast"},
		// Everything else outside global unicast is unallocated; embedded
		// IPv4 forms are unwrapped before this catch-all is consulted.
		{p("::/0"), "not_global_unicast"},
	}
}

// IsDenied reports whether ip lies in a denied special-purpose range and, if
// so, a short reason naming the range. IPv4 embedded in IPv6
// (::ffff:a.b.c.d, ::a.b.c.d, 64:ff9b::/96) is unwrapped and checked as
// IPv4; 6to4 (2002::/16) and Teredo (2001::/32) are denied outright, as is
// anything outside 2000::/3 that is not such an embedding. An invalid
// address is denied. Zones are ignored.
func IsDenied(ip netip.Addr) (denied bool, reason string) {
	if !ip.IsValid() {
		return true, "invalid_address"
	}
	ip = ip.WithZone("")
	if ip.Is4() {
		return isDeniedV4(ip)
	}
	if ip.Is4In6() {
		return isDeniedV4(ip.Unmap())
	}
	b := ip.As16()
	switch {
	case ip == netip.IPv6Unspecified():
		return true, "unspecified"
	case ip == netip.IPv6Loopback():
		return true, "loopback"
	case isZero(b[:12]):
		// IPv4-compatible ::a.b.c.d (deprecated).
		return isDeniedV4(netip.AddrFrom4([4]byte(b[12:])))
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && isZero(b[4:12]):
		// NAT64 well-known prefix 64:ff9b::/96.
		return isDeniedV4(netip.AddrFrom4([4]byte(b[12:])))
	}
	global := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20}), 3)
	for _, r := range deniedV6() {
		if r.prefix.Bits() == 0 {
			if !global.Contains(ip) {
				return true, r.reason
			}
			continue
		}
		if r.prefix.Contains(ip) {
			return true, r.reason
		}
	}
	return false, ""
}

func isDeniedV4(ip netip.Addr) (bool, string) {
	for _, r := range deniedV4() {
		if r.prefix.Contains(ip) {
			return true, r.reason
		}
	}
	return false, ""
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
