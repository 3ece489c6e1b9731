// Package egress owns every outbound connection LatchGate makes on behalf of
// an action: host normalisation ([ParseHost], [HostFromURL]), per-grant
// allowlists ([Allowlist]), the special-purpose address deny list
// ([IsDenied]), the SSRF-safe [Dialer] with its per-grant HTTP transports and
// redirect checks, and the allowlist forward [Proxy] (HTTP CONNECT and
// absolute-form HTTP) that also runs standalone as `latchgate egress-proxy`.
//
// egress never dials an unchecked name: a host is normalised once, resolved
// once, every resolved address is checked against the deny list (deny wins
// over everything except the explicit test-only Config.AllowCIDRs), and only
// those checked addresses are dialled. It never reads proxy environment
// variables, flags or config files, never installs signal handlers, and never
// touches the global logger.
//
// The API is internal to this module and may change.
package egress
