package sdk_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/definitions"
)

// stub is a small protocol stub of the gate's client API on a real Unix
// socket. It checks every DPoP proof the way the gate does (signature, jkt,
// htm, htu, ath, bh, unique jti) and serves scripted answers for what the
// real gate cannot be made to do on demand.
type stub struct {
	t     testing.TB
	sock  string
	base  string // htu base
	clock *clock.Fake
	ttl   time.Duration

	// mu guards everything below.
	mu       sync.Mutex
	counts   map[string]int // "METHOD /path" → requests seen
	scripts  map[string][]scripted
	leases   map[string]stubLease // lease token → lease
	jtis     map[string]bool
	nLease   int
	reqs     []*http.Request // every request, bodies drained
	bodies   [][]byte
	receipts map[string]json.RawMessage
	keysJWKS []byte
}

type stubLease struct {
	jkt, session string
	exp          time.Time
}

// scripted is one canned answer.
type scripted struct {
	status int
	header map[string]string
	body   string
}

// newStub starts a stub on a fresh socket under dir (a new temp dir if "").
func newStub(t testing.TB, dir string) *stub {
	t.Helper()
	if dir == "" {
		d, err := os.MkdirTemp("", "lgsdk")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	s := &stub{
		t: t, sock: filepath.Join(dir, "gate.sock"), base: "http://localhost",
		clock: clock.NewFake(time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)), ttl: 300 * time.Second,
		counts: map[string]int{}, scripts: map[string][]scripted{}, leases: map[string]stubLease{},
		jtis: map[string]bool{}, receipts: map[string]json.RawMessage{},
	}
	s.loadReceiptVectors()
	ln, err := net.Listen("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return s
}

// script queues answers for "METHOD /path", served before the default ones.
func (s *stub) script(route string, answers ...scripted) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[route] = append(s.scripts[route], answers...)
}

func (s *stub) count(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[route]
}

func (s *stub) requests(route string) []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*http.Request
	for _, r := range s.reqs {
		if r.Method+" "+r.URL.EscapedPath() == route {
			out = append(out, r)
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func gateErr(w http.ResponseWriter, status int, code, reason string) {
	body := map[string]any{"error": code, "message": "stub refused the request"}
	if reason != "" {
		body["deny_reason"] = reason
	}
	writeJSON(w, status, body)
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	route := r.Method + " " + r.URL.EscapedPath()
	s.mu.Lock()
	s.counts[route]++
	s.reqs = append(s.reqs, r)
	s.bodies = append(s.bodies, body)
	s.mu.Unlock()

	authed := route != "POST /v1/leases" && !strings.HasPrefix(route, "GET /v1/actions") && route != "GET /v1/receipt-keys"
	var lease stubLease
	if authed {
		l, code, reason := s.checkAuth(r, body)
		if code != "" {
			gateErr(w, http.StatusUnauthorized, code, reason)
			return
		}
		lease = l
	}

	s.mu.Lock()
	if q := s.scripts[route]; len(q) > 0 {
		a := q[0]
		s.scripts[route] = q[1:]
		s.mu.Unlock()
		for k, v := range a.header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
		return
	}
	s.mu.Unlock()

	switch {
	case route == "POST /v1/leases":
		var req struct {
			JWK     map[string]string `json:"dpop_jwk"`
			AgentID string            `json:"agent_id"`
			Budgets *struct {
				MaxCalls *int `json:"max_calls"`
			} `json:"budgets"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.JWK["kty"] != "EC" || req.JWK["crv"] != "P-256" || req.JWK["d"] != "" {
			gateErr(w, 400, "invalid_request", "")
			return
		}
		jkt := thumb(req.JWK["x"], req.JWK["y"])
		s.issue(w, jkt, fmt.Sprintf("0194f39f-0000-7000-8000-%012d", s.nextLease()))
	case route == "POST /v1/leases/renew":
		if len(body) != 0 {
			gateErr(w, 400, "bad_request", "")
			return
		}
		s.issue(w, lease.jkt, lease.session)
	case strings.HasPrefix(route, "POST /v1/actions/") && strings.HasSuffix(route, "/execute"):
		id := strings.TrimSuffix(strings.TrimPrefix(route, "POST /v1/actions/"), "/execute")
		if id != "echo" {
			gateErr(w, 404, "action_not_found", "")
			return
		}
		writeJSON(w, 200, map[string]any{
			"decision": "executed", "trace_id": "trace-1", "action_id": id, "grant_id": "grant-1",
			"receipt_id": "0194f3a0-0000-7000-8000-000000000001", "output": json.RawMessage(body),
			"verification_outcome": "unverifiable_declared",
			"verification":         map[string]any{"outcome": "unverifiable_declared", "is_fully_successful": true},
			"runtime":              map[string]any{"duration_ms": 1},
		})
	case strings.HasPrefix(route, "GET /v1/receipts/"):
		s.mu.Lock()
		rc, ok := s.receipts[strings.TrimPrefix(route, "GET /v1/receipts/")]
		s.mu.Unlock()
		if !ok {
			gateErr(w, 404, "receipt_not_found", "")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(rc)
	case route == "GET /v1/receipt-keys":
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.keysJWKS)
	case route == "GET /v1/actions":
		writeJSON(w, 200, map[string]any{"actions": []map[string]any{
			{"action_id": "echo", "version": "1.0.0", "description": "Echo", "risk_level": "low"},
			{"action_id": "http_fetch", "version": "1.2.0", "description": "Fetch", "risk_level": "medium"},
		}})
	case route == "GET /v1/actions/echo":
		writeJSON(w, 200, map[string]any{"action_id": "echo", "egress": "none"})
	case route == "GET /v1/actions/http_fetch":
		writeJSON(w, 200, map[string]any{"action_id": "http_fetch",
			"egress": map[string]any{"proxy_allowlist": map[string]any{"allowed_domains": []string{"api.example.com", "httpbin.org"}}}})
	default:
		gateErr(w, 404, "not_found", "")
	}
}

func (s *stub) nextLease() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nLease++
	return s.nLease
}

func (s *stub) issue(w http.ResponseWriter, jkt, session string) {
	n := s.nextLease()
	token := fmt.Sprintf("stub-lease-%d", n)
	exp := s.clock.Now().Add(s.ttl)
	s.mu.Lock()
	s.leases[token] = stubLease{jkt: jkt, session: session, exp: exp}
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{
		"lease_jwt": token, "session_id": session, "lease_jti": fmt.Sprintf("jti-%d", n),
		"expires_at": exp.Format(time.RFC3339), "principal": "agent:test", "scopes": []string{"tools:call"},
		"budgets": map[string]any{},
	})
}

// checkAuth verifies Authorization + DPoP as PROTOCOL.md §2.1 says; it
// returns an error code and deny_reason, or the lease.
func (s *stub) checkAuth(r *http.Request, body []byte) (stubLease, string, string) {
	authz, proof := r.Header.Get("Authorization"), r.Header.Get("DPoP")
	if authz == "" || proof == "" {
		return stubLease{}, "missing_auth_header", ""
	}
	token, ok := strings.CutPrefix(authz, "DPoP ")
	if !ok {
		return stubLease{}, "invalid_lease", ""
	}
	s.mu.Lock()
	l, ok := s.leases[token]
	s.mu.Unlock()
	if !ok {
		return stubLease{}, "invalid_lease", ""
	}
	if !s.clock.Now().Before(l.exp) {
		return stubLease{}, "lease_expired", ""
	}
	c, reason := verifyProof(proof, l.jkt, r.Method, s.base+r.URL.EscapedPath(), token, body, s.clock.Now().Unix())
	if reason != "" {
		return stubLease{}, "invalid_dpop", reason
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jtis[c.JTI] {
		return stubLease{}, "replay_detected", ""
	}
	s.jtis[c.JTI] = true
	return l, "", ""
}

type stubClaims struct {
	JTI string `json:"jti"`
	HTM string `json:"htm"`
	HTU string `json:"htu"`
	IAT int64  `json:"iat"`
	ATH string `json:"ath"`
	BH  *string
}

func b64s(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return b64s(sum[:])
}

func thumb(x, y string) string {
	return sha([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
}

// verifyProof checks one proof; jkt "" skips the thumbprint check. It returns
// the claims and "" or a deny reason.
func verifyProof(proof, jkt, method, htu, leaseToken string, body []byte, now int64) (stubClaims, string) {
	var c stubClaims
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return c, "malformed"
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil || len(sig) != 64 {
		return c, "malformed"
	}
	var h struct {
		Typ string            `json:"typ"`
		Alg string            `json:"alg"`
		JWK map[string]string `json:"jwk"`
		Kid string            `json:"kid"`
	}
	if json.Unmarshal(hb, &h) != nil || h.Typ != "dpop+jwt" || h.Alg != "ES256" || h.Kid != "" {
		return c, "bad_header"
	}
	if h.JWK["kty"] != "EC" || h.JWK["crv"] != "P-256" || h.JWK["d"] != "" || len(h.JWK["x"]) != 43 || len(h.JWK["y"]) != 43 {
		return c, "bad_jwk"
	}
	if jkt != "" && thumb(h.JWK["x"], h.JWK["y"]) != jkt {
		return c, "jkt_mismatch"
	}
	x, _ := base64.RawURLEncoding.DecodeString(h.JWK["x"])
	y, _ := base64.RawURLEncoding.DecodeString(h.JWK["y"])
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return c, "bad_jwk"
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return c, "bad_signature"
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(cb, &c) != nil || json.Unmarshal(cb, &raw) != nil {
		return c, "malformed"
	}
	if bh, ok := raw["bh"]; ok {
		var v string
		_ = json.Unmarshal(bh, &v)
		c.BH = &v
	}
	switch {
	case len(c.JTI) < 8 || len(c.JTI) > 128:
		return c, "bad_jti"
	case c.HTM != method:
		return c, "htm_mismatch"
	case sdkNormalizeHTU(c.HTU) != sdkNormalizeHTU(htu):
		return c, "htu_mismatch"
	case c.IAT < now-60 || c.IAT > now+5:
		return c, "iat_out_of_window"
	case c.ATH != sha([]byte(leaseToken)):
		return c, "ath_mismatch"
	case c.BH == nil || *c.BH != sha(body):
		return c, "bh_mismatch"
	}
	return c, ""
}

// receiptVectorFile is definitions/test_vectors/receipts/receipts.json.
type receiptVectorFile struct {
	Key struct {
		X   string `json:"x"`
		D   string `json:"d"`
		Kid string `json:"kid"`
	} `json:"key"`
	Receipts []struct {
		Receipt json.RawMessage `json:"receipt"`
		Valid   bool            `json:"valid"`
		Note    string          `json:"note"`
	} `json:"receipts"`
}

func loadVectors(t testing.TB, name string, v any) {
	t.Helper()
	b, err := definitions.TestVectors.ReadFile("test_vectors/" + name)
	if err != nil {
		t.Fatalf("read vector %s: %v", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("parse vector %s: %v", name, err)
	}
}

// loadReceiptVectors serves the vector receipts: the valid ones by id with
// signature_status added, the tampered ones under "tampered-<n>".
func (s *stub) loadReceiptVectors() {
	var f receiptVectorFile
	loadVectors(s.t, "receipts/receipts.json", &f)
	for i, e := range f.Receipts {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(e.Receipt, &m); err != nil {
			s.t.Fatal(err)
		}
		m["signature_status"] = json.RawMessage(`"valid"`)
		b, _ := json.Marshal(m)
		var id string
		_ = json.Unmarshal(m["receipt_id"], &id)
		if !e.Valid {
			id = fmt.Sprintf("tampered-%d", i)
		}
		s.receipts[id] = b
	}
	x, _ := base64.RawURLEncoding.DecodeString(f.Key.X)
	s.keysJWKS, _ = json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "OKP", "crv": "Ed25519", "x": b64s(ed25519.PublicKey(x)), "kid": f.Key.Kid, "use": "sig", "alg": "EdDSA"},
	}})
}
