package lease

import "strings"

// NormalizeHTU normalises a DPoP htu as PROTOCOL §1.1 says: drop "#…" then
// "?…"; lowercase the scheme and the authority; keep the path's case and
// percent-encoding as they are; an empty path becomes "/"; remove the default
// port (":80" for http, ":443" for https), found at the last ":" so IPv6
// literals work. A value without "://" only loses its fragment and query.
func NormalizeHTU(u string) string {
	n := normalizeHTU(u)
	if !n.hier {
		return n.path
	}
	return n.scheme + "://" + n.auth + n.path
}

// normalHTU is a normalised htu in parts: NormalizeHTU joins them as
// scheme + "://" + auth + path when hier is set, and is path otherwise.
// Two htu values normalise to the same string exactly when their normalHTU
// values are equal (scheme holds no "://", auth no "/", and path starts with
// "/" when hier is set; it holds no "://" otherwise).
type normalHTU struct {
	scheme, auth, path string
	hier               bool
}

// normalizeHTU is NormalizeHTU without joining the parts.
func normalizeHTU(u string) normalHTU {
	if i := strings.IndexByte(u, '#'); i >= 0 {
		u = u[:i]
	}
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	sep := strings.Index(u, "://")
	if sep < 0 {
		return normalHTU{path: u}
	}
	scheme := strings.ToLower(u[:sep])
	rest := u[sep+3:]
	auth, path := rest, "/"
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		auth, path = rest[:i], rest[i:]
	}
	auth = strings.ToLower(auth)
	if i := strings.LastIndexByte(auth, ':'); i >= 0 && i > strings.LastIndexByte(auth, ']') {
		port := auth[i+1:]
		if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
			auth = auth[:i]
		}
	}
	return normalHTU{scheme: scheme, auth: auth, path: path, hier: true}
}

// sameHTU reports whether NormalizeHTU(a) == NormalizeHTU(b), without
// building either string.
func sameHTU(a, b string) bool { return normalizeHTU(a) == normalizeHTU(b) }
