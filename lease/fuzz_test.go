package lease_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/latchgate/latchgate/lease"
)

// FuzzVerifyProof feeds arbitrary compact strings to the proof verifier:
// it must never panic, and it may accept only a proof that is well formed.
func FuzzVerifyProof(f *testing.F) {
	e := newEnv(f, lease.Config{})
	body := []byte(`{}`)
	f.Add(e.agent.Proof("POST", testHTU, e.token, body))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("eyJ9.eyJ9.AA")
	f.Add(strings.Repeat("A", 5000))
	f.Add("e30.e30.e30")
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := e.auth.VerifyProof(lease.ProofRequest{Proof: proof, Method: "POST", HTU: testHTU, LeaseToken: e.token, Body: body, JKT: e.agent.Thumbprint()})
		if err == nil && (p == nil || len(p.JTI) < 8 || len(p.JTI) > 128 || len(proof) > lease.MaxProofLen) {
			t.Fatalf("VerifyProof(%q) accepted a malformed proof: %+v", proof, p)
		}
	})
}

// FuzzProofSegments signs arbitrary header and payload JSON with the
// agent's key, so the fuzzer reaches the header and claim checks past the
// signature. An accepted proof must have the exact protected header of
// PROTOCOL §2.1 and claims bound to this request.
func FuzzProofSegments(f *testing.F) {
	e := newEnv(f, lease.Config{})
	body := []byte(`{}`)
	jwk := string(e.agent.JWK())
	hdr := `{"typ":"dpop+jwt","alg":"ES256","jwk":` + jwk + `}`
	f.Add(hdr, `{"jti":"abcdefgh","htm":"POST","htu":"`+testHTU+`","iat":1777636800}`)
	f.Add(`{"typ":"dpop+jwt","alg":"none","jwk":`+jwk+`}`, `{}`)
	f.Add(`{"typ":"dpop+jwt","typ":"dpop+jwt","alg":"ES256","jwk":`+jwk+`}`, `{}`)
	f.Add(hdr, `{"jti":"abcdefgh","jti":"ijklmnop","htm":"POST","htu":"`+testHTU+`","iat":1777636800}`)
	f.Add(hdr, `{"iat":1e400}`)
	f.Add(hdr, "\xef\xbb\xbf{}")
	f.Add(hdr, `[`+strings.Repeat("[", 10000))
	f.Fuzz(func(t *testing.T, header, payload string) {
		proof := e.agent.SignRaw([]byte(header), []byte(payload))
		_, err := e.auth.VerifyProof(lease.ProofRequest{Proof: proof, Method: "POST", HTU: testHTU, LeaseToken: e.token, Body: body, JKT: e.agent.Thumbprint()})
		if err != nil {
			return
		}
		var h map[string]json.RawMessage
		if json.Unmarshal([]byte(header), &h) != nil {
			t.Fatalf("accepted a header that is not a JSON object: %q", header)
		}
		if string(h["typ"]) != `"dpop+jwt"` || string(h["alg"]) != `"ES256"` {
			t.Fatalf("accepted header %q", header)
		}
		for _, k := range []string{"kid", "jku", "x5c", "x5u", "crit"} {
			if _, ok := h[k]; ok {
				t.Fatalf("accepted header with %s: %q", k, header)
			}
		}
		var c map[string]any
		if json.Unmarshal([]byte(payload), &c) != nil {
			t.Fatalf("accepted a payload that is not a JSON object: %q", payload)
		}
		if c["htm"] != "POST" || lease.NormalizeHTU(c["htu"].(string)) != testHTU {
			t.Fatalf("accepted claims not bound to the request: %q", payload)
		}
		if strings.Count(header, `"typ"`) > 1 || strings.Count(payload, `"jti"`) > 1 {
			t.Fatalf("accepted duplicate members: %q %q", header, payload)
		}
	})
}

// FuzzNormalizeHTU checks the normaliser's invariants: idempotent, no
// query or fragment survives, and the path is kept byte for byte.
func FuzzNormalizeHTU(f *testing.F) {
	for _, s := range []string{
		"http://localhost/v1/x", "HTTP://LocalHost:80/v1/x?q=1#f", "https://[::1]:443/a", "https://[::1]:8443",
		"http://h:80", "no-scheme?x", "://", "http://a/%2F?#", "http://user@Host:80/P%41th",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		n := lease.NormalizeHTU(u)
		if again := lease.NormalizeHTU(n); again != n {
			t.Fatalf("NormalizeHTU(NormalizeHTU(%q)) = %q, want %q", u, again, n)
		}
		if strings.ContainsAny(n, "?#") {
			t.Fatalf("NormalizeHTU(%q) = %q keeps a query or fragment", u, n)
		}
		cut := u
		if i := strings.IndexAny(cut, "#"); i >= 0 {
			cut = cut[:i]
		}
		if i := strings.IndexAny(cut, "?"); i >= 0 {
			cut = cut[:i]
		}
		if i := strings.Index(cut, "://"); i >= 0 {
			rest := cut[i+3:]
			if j := strings.IndexByte(rest, '/'); j >= 0 && !strings.HasSuffix(n, rest[j:]) {
				t.Fatalf("NormalizeHTU(%q) = %q changed the path %q", u, n, rest[j:])
			}
		}
	})
}
