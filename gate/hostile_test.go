package gate_test

// Hostile input: a corpus of bad requests, each answered with its
// documented JSON error, while the gate keeps serving; slow clients and
// connection floods are bounded.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/gate/gatetest"
)

// hostileCase is one bad request and its documented answer.
type hostileCase struct {
	name   string
	admin  bool // send on the admin socket
	method string
	path   string
	body   []byte
	header func(a *gatetest.Agent, body []byte) http.Header
	status int
	code   string
}

// signedProof signs raw header and claims JSON with a's key.
func signedProof(a *gatetest.Agent, header, claims string) string {
	return a.Key.SignRaw([]byte(header), []byte(claims))
}

// claimsFor returns valid claims JSON for an echo call with body, with
// extra appended verbatim inside the object.
func claimsFor(a *gatetest.Agent, body []byte, extra string) string {
	ath := sha256.Sum256([]byte(a.Lease))
	bh := sha256.Sum256(body)
	return fmt.Sprintf(`{"jti":"%s","htm":"POST","htu":"http://localhost%s","iat":%d,"ath":"%s","bh":"%s"%s}`,
		fmt.Sprint(time.Now().UnixNano()), echoPath, time.Now().Unix(),
		base64.RawURLEncoding.EncodeToString(ath[:]), base64.RawURLEncoding.EncodeToString(bh[:]), extra)
}

func hostileCorpus() []hostileCase {
	auth := func(proof func(a *gatetest.Agent, body []byte) string) func(*gatetest.Agent, []byte) http.Header {
		return func(a *gatetest.Agent, body []byte) http.Header {
			return http.Header{"Authorization": {"DPoP " + a.Lease}, "DPoP": {proof(a, body)}, "Content-Type": {"application/json"}}
		}
	}
	good := func(a *gatetest.Agent, body []byte) string {
		return a.Key.Proof("POST", "http://localhost"+echoPath, a.Lease, body)
	}
	hdr := func(a *gatetest.Agent) string {
		return `{"typ":"dpop+jwt","alg":"ES256","jwk":` + string(a.Key.JWK()) + `}`
	}
	deep := []byte(strings.Repeat("[", 10000) + strings.Repeat("]", 10000))
	deepObj := []byte(strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000))
	jsonCT := func(*gatetest.Agent, []byte) http.Header { return http.Header{"Content-Type": {"application/json"}} }
	lease := func(body string) []byte { return []byte(body) }
	return []hostileCase{
		// Authorization and proof headers.
		{name: "bearer-scheme", method: "POST", path: echoPath, body: []byte(`{}`), header: func(a *gatetest.Agent, b []byte) http.Header {
			return http.Header{"Authorization": {"Bearer " + a.Lease}, "DPoP": {good(a, b)}}
		}, status: 401, code: "invalid_lease"},
		{name: "oversized-authorization", method: "POST", path: echoPath, body: []byte(`{}`), header: func(a *gatetest.Agent, b []byte) http.Header {
			return http.Header{"Authorization": {"DPoP " + a.Lease + strings.Repeat("A", 9<<10)}, "DPoP": {good(a, b)}}
		}, status: 401, code: "invalid_lease"},
		{name: "garbage-lease", method: "POST", path: echoPath, body: []byte(`{}`), header: func(a *gatetest.Agent, b []byte) http.Header {
			return http.Header{"Authorization": {"DPoP a.b.c"}, "DPoP": {good(a, b)}}
		}, status: 401, code: "invalid_lease"},
		{name: "oversized-proof", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			return good(a, b) + strings.Repeat("A", 5<<10)
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-two-parts", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(*gatetest.Agent, []byte) string { return "e30.e30" }), status: 401, code: "invalid_dpop"},
		{name: "proof-bad-base64", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(*gatetest.Agent, []byte) string { return "!!!.@@@.###" }), status: 401, code: "invalid_dpop"},
		{name: "proof-padded-base64", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			p := strings.SplitN(good(a, b), ".", 2)
			return p[0] + "==." + p[1]
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-header-not-json", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			return signedProof(a, "\xff\xfe", claimsFor(a, b, ""))
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-header-duplicate-typ", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			return signedProof(a, `{"typ":"dpop+jwt","typ":"dpop+jwt","alg":"ES256","jwk":`+string(a.Key.JWK())+`}`, claimsFor(a, b, ""))
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-header-bom", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			return signedProof(a, "\xef\xbb\xbf"+hdr(a), claimsFor(a, b, ""))
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-header-nested", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			return signedProof(a, `{"x":`+strings.Repeat("[", 2000)+strings.Repeat("]", 2000)+`}`, claimsFor(a, b, ""))
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-claims-duplicate-jti", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			return signedProof(a, hdr(a), claimsFor(a, b, `,"jti":"another-jti-value"`))
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-claims-duplicate-htu", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			return signedProof(a, hdr(a), claimsFor(a, b, `,"htu":"http://evil.example/x"`))
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-iat-huge", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			c := strings.Replace(claimsFor(a, b, ""), `"iat":`, `"iat":1e400,"x":`, 1)
			return signedProof(a, hdr(a), c)
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-iat-nan", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			c := strings.Replace(claimsFor(a, b, ""), `"iat":`, `"iat":NaN,"x":`, 1)
			return signedProof(a, hdr(a), c)
		}), status: 401, code: "invalid_dpop"},
		{name: "proof-non-utf8-jti", method: "POST", path: echoPath, body: []byte(`{}`), header: auth(func(a *gatetest.Agent, b []byte) string {
			c := claimsFor(a, b, "")
			c = `{"jti":"ab` + "\xff\xfe" + `cdefgh"` + c[strings.Index(c, `,"htm"`):]
			return signedProof(a, hdr(a), c)
		}), status: 401, code: "invalid_dpop"},
		// Arguments (authenticated, valid proof bound to the body).
		{name: "args-nested-10000", method: "POST", path: echoPath, body: deep, header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-object-nested-10000", method: "POST", path: echoPath, body: deepObj, header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-duplicate-keys", method: "POST", path: echoPath, body: []byte(`{"a":1,"a":2}`), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-nested-duplicate-keys", method: "POST", path: echoPath, body: []byte(`{"x":{"a":1,"a":1}}`), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-non-utf8", method: "POST", path: echoPath, body: []byte("{\"a\":\"\xff\xfe\"}"), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-lone-surrogate", method: "POST", path: echoPath, body: []byte(`{"a":"\ud800"}`), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-huge-number", method: "POST", path: echoPath, body: []byte(`{"a":1e400}`), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-inexact-integer", method: "POST", path: echoPath, body: []byte(`{"a":9007199254740993}`), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-long-number", method: "POST", path: echoPath, body: []byte(`{"a":` + strings.Repeat("9", 400) + `}`), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-nan", method: "POST", path: echoPath, body: []byte(`{"a":NaN}`), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-bom", method: "POST", path: echoPath, body: []byte("\xef\xbb\xbf{}"), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-trailing-garbage", method: "POST", path: echoPath, body: []byte(`{} {}`), header: auth(good), status: 400, code: "invalid_json"},
		{name: "args-too-large", method: "POST", path: echoPath, body: bytes.Repeat([]byte(" "), 2<<20), header: auth(good), status: 413, code: "payload_too_large"},
		// Lease requests.
		{name: "lease-nested-10000", method: "POST", path: "/v1/leases", body: deepObj, header: jsonCT, status: 400, code: "invalid_request"},
		{name: "lease-array-nested-10000", method: "POST", path: "/v1/leases", body: deep, header: jsonCT, status: 400, code: "invalid_request"},
		{name: "lease-bom", method: "POST", path: "/v1/leases", body: lease("\xef\xbb\xbf{}"), header: jsonCT, status: 400, code: "invalid_json"},
		{name: "lease-huge-ttl", method: "POST", path: "/v1/leases", body: lease(`{"ttl_seconds":1e400}`), header: jsonCT, status: 400, code: "invalid_request"},
		{name: "lease-nan", method: "POST", path: "/v1/leases", body: lease(`{"ttl_seconds":NaN}`), header: jsonCT, status: 400, code: "invalid_json"},
		// Many (but not too large) headers are just headers.
		{name: "many-headers", method: "POST", path: echoPath, body: []byte(`{}`), header: func(*gatetest.Agent, []byte) http.Header {
			h := http.Header{}
			for i := range 2000 {
				h.Set(fmt.Sprintf("X-Flood-%d", i), "v")
			}
			return h
		}, status: 401, code: "missing_auth_header"},
		// Wrong socket: each socket serves only its own routes.
		{name: "admin-route-on-client-socket", method: "POST", path: "/v1/leases/revoke", body: []byte(`{"all":true}`), header: jsonCT, status: 404, code: "not_found"},
		{name: "approve-on-client-socket", method: "POST", path: "/v1/approvals/0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/approve", body: []byte(`{}`), header: jsonCT, status: 404, code: "not_found"},
		{name: "lease-on-admin-socket", admin: true, method: "POST", path: "/v1/leases", body: []byte(`{}`), header: jsonCT, status: 404, code: "not_found"},
		{name: "execute-on-admin-socket", admin: true, method: "POST", path: echoPath, body: []byte(`{}`), header: jsonCT, status: 404, code: "not_found"},
	}
}

// Every corpus request gets its documented JSON error, nothing runs, and
// the gate serves a good request after each one.
func TestHostileCorpus(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	for _, tc := range hostileCorpus() {
		t.Run(tc.name, func(t *testing.T) {
			var h http.Header
			if tc.header != nil {
				h = tc.header(a, tc.body)
			}
			c := s.Client()
			if tc.admin {
				c = s.AdminClient()
			}
			r := gatetest.Do(t, c, tc.method, tc.path, tc.body, h)
			if r.Status != tc.status || r.Code() != tc.code {
				t.Fatalf("%s %s (%s) = %d %q %.200s, want %d %q", tc.method, tc.path, tc.name, r.Status, r.Code(), r.Body, tc.status, tc.code)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if m, _ := r.JSON()["message"].(string); m == "" || len(m) > 300 {
				t.Errorf("message %q: want one short sentence", m)
			}
			wantStatus(t, a.Execute("echo", map[string]any{"after": tc.name}, nil), 200, "")
		})
	}
	if n, _ := s.Ledger.Stats(); n != len(hostileCorpus()) {
		t.Fatalf("receipts = %d, want %d (one per good request, none for the corpus)", n, len(hostileCorpus()))
	}
}

// Headers over MaxHeaderBytes are refused by net/http itself with 431
// (its own plain-text body: the request never reaches the gate's handlers);
// the gate keeps serving.
func TestHeaderFloodRefused(t *testing.T) {
	s := gatetest.NewServer(t)
	conn, err := net.Dial("unix", s.ClientSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	b.WriteString("GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
	for i := range 4000 {
		fmt.Fprintf(&b, "X-Flood-%d: %s\r\n", i, strings.Repeat("v", 30))
	}
	b.WriteString("\r\n")
	go func() { _, _ = io.WriteString(conn, b.String()) }()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("header flood: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || resp.Header.Get("Content-Type") != "application/json" ||
		!strings.Contains(string(body), `"error":"bad_request"`) {
		t.Fatalf("header flood = %d %q %s, want a JSON 431", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if r := gatetest.Do(t, s.Client(), "GET", "/healthz", nil, nil); r.Status != 200 {
		t.Fatalf("healthz after flood = %d", r.Status)
	}
}

// A client that never finishes its headers is disconnected after
// ReadHeaderTimeout; others are served meanwhile.
func TestSlowClientDisconnected(t *testing.T) {
	s := gatetest.NewServer(t, gatetest.WithConfig(gate.Config{Dev: true, TrustAgentID: true, ReadHeaderTimeout: 200 * time.Millisecond}))
	conn, err := net.Dial("unix", s.ClientSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	if r := gatetest.Do(t, s.Client(), "GET", "/healthz", nil, nil); r.Status != 200 {
		t.Fatalf("healthz beside a slow client = %d", r.Status)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a bound, not a measurement
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the gate kept a slow client's connection open past its read-header timeout")
	}
	if bytes.Contains(b, []byte("200 OK")) {
		t.Fatalf("slow client was served: %q", b)
	}
}

// With MaxConns connections held open, a further connection waits in the
// backlog instead of being served; closing one lets it through.
func TestConnectionCap(t *testing.T) {
	const maxConns = 4
	s := gatetest.NewServer(t, gatetest.WithConfig(gate.Config{Dev: true, TrustAgentID: true, MaxConns: maxConns, ReadHeaderTimeout: time.Minute}))
	var hogs []net.Conn
	for range maxConns {
		c, err := net.Dial("unix", s.ClientSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Each hog is an accepted connection: a full request answered
		// on it proves the gate took it, then it idles (keep-alive).
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("hog request: %v %v", resp, err)
		}
		resp.Body.Close()
		hogs = append(hogs, c)
	}
	done := make(chan *gatetest.Response, 1)
	go func() {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: s.Client().Transport.(*http.Transport).DialContext}}
		done <- gatetest.Do(t, c, "GET", "/healthz", nil, nil)
	}()
	select {
	case r := <-done:
		t.Fatalf("a connection beyond MaxConns=%d was served: %d", maxConns, r.Status)
	case <-time.After(300 * time.Millisecond):
	}
	hogs[0].Close()
	select {
	case r := <-done:
		if r.Status != 200 {
			t.Fatalf("queued request = %d", r.Status)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the queued connection was never served after a slot freed")
	}
}
