package egress

import (
	"net/netip"
	"testing"
)

func TestIsDenied(t *testing.T) {
	tests := []struct {
		ip     string
		denied bool
		reason string
	}{
		{"0.0.0.0", true, "this_network"},
		{"0.1.2.3", true, "this_network"},
		{"10.0.0.1", true, "private"},
		{"100.64.0.1", true, "shared_address_space"},
		{"100.127.255.255", true, "shared_address_space"},
		{"127.0.0.1", true, "loopback"},
		{"127.255.255.254", true, "loopback"},
		{"169.254.169.254", true, "link_local"},
		{"172.16.0.1", true, "private"},
		{"172.31.255.255", true, "private"},
		{"192.0.0.8", true, "ietf_protocol_assignments"},
		{"192.0.2.1", true, "documentation"},
		{"192.31.196.1", true, "as112"},
		{"192.52.193.1", true, "amt"},
		{"192.88.99.1", true, "6to4_relay_anycast"},
		{"192.168.1.1", true, "private"},
		{"192.175.48.1", true, "as112_direct_delegation"},
		{"198.18.0.1", true, "benchmarking"},
		{"198.19.255.255", true, "benchmarking"},
		{"198.51.100.7", true, "documentation"},
		{"203.0.113.9", true, "documentation"},
		{"224.0.0.1", true, "multicast"},
		{"239.255.255.250", true, "multicast"},
		{"240.0.0.1", true, "reserved"},
		{"255.255.255.255", true, "limited_broadcast"},
		{"::", true, "unspecified"},
		{"::1", true, "loopback"},
		{"::ffff:127.0.0.1", true, "loopback"},
		{"::ffff:7f00:1", true, "loopback"},
		{"::ffff:169.254.169.254", true, "link_local"},
		{"::127.0.0.1", true, "loopback"},
		{"::10.0.0.1", true, "private"},
		{"64:ff9b::a00:1", true, "private"},
		{"64:ff9b::7f00:1", true, "loopback"},
		{"64:ff9b:1::808:808", true, "nat64_local_use"},
		{"100::1", true, "discard_only"},
		{"100:0:0:1::1", true, "dummy_prefix"},
		{"2001::1", true, "teredo"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", true, "teredo"},
		{"2001:2::1", true, "ietf_protocol_assignments"},
		{"2001:db8::1", true, "documentation"},
		{"2002:a00:1::", true, "6to4"},
		{"2002:808:808::1", true, "6to4"},
		{"2620:4f:8000::1", true, "as112_direct_delegation"},
		{"3fff::1", true, "documentation"},
		{"5f00::1", true, "srv6_sids"},
		{"fc00::1", true, "unique_local"},
		{"fd12:3456::1", true, "unique_local"},
		{"fe80::1", true, "link_local"},
		{"fe80::1%eth0", true, "link_local"},
		{"fec0::1", true, "site_local"},
		{"ff02::1", true, "multicast"},
		{"4000::1", true, "not_global_unicast"},
		{"1::1", true, "not_global_unicast"},

		{"93.184.216.34", false, ""},
		{"8.8.8.8", false, ""},
		{"1.1.1.1", false, ""},
		{"100.63.255.255", false, ""},
		{"172.32.0.1", false, ""},
		{"192.169.0.1", false, ""},
		{"223.255.255.255", false, ""},
		{"::ffff:8.8.8.8", false, ""},
		{"64:ff9b::808:808", false, ""},
		{"::8.8.8.8", false, ""},
		{"2606:4700:4700::1111", false, ""},
		{"2001:4860:4860::8888", false, ""},
		{"2001:200::1", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			denied, reason := IsDenied(ip)
			if denied != tt.denied || reason != tt.reason {
				t.Fatalf("IsDenied(%s) = %v, %q, want %v, %q", tt.ip, denied, reason, tt.denied, tt.reason)
			}
		})
	}
	if denied, _ := IsDenied(netip.Addr{}); !denied {
		t.Fatal("IsDenied(invalid) = false, want true")
	}
}
