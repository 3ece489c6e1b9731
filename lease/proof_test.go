package lease_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/lease/leasetest"
)

func TestVerifyProof(t *testing.T) {
	body := []byte(`{"msg":"hi"}`)
	type tc struct {
		name  string
		cfg   lease.Config
		opts  func(e *env) []leasetest.ProofOption
		proof func(e *env) string                 // overrides the made proof
		req   func(e *env, r *lease.ProofRequest) // changes the request
		want  string                              // deny reason; "" = accepted
	}
	opts := func(o ...leasetest.ProofOption) func(*env) []leasetest.ProofOption {
		return func(*env) []leasetest.ProofOption { return o }
	}
	agentJWK := func(e *env) string { return string(e.agent.JWK()) }
	rawHeader := func(f func(jwk string) string) func(*env) []leasetest.ProofOption {
		return func(e *env) []leasetest.ProofOption {
			return []leasetest.ProofOption{leasetest.WithRawHeader(f(agentJWK(e)))}
		}
	}
	jwkWith := func(name string, value any) func(*env) []leasetest.ProofOption {
		return func(e *env) []leasetest.ProofOption {
			var m map[string]any
			if err := json.Unmarshal(e.agent.JWK(), &m); err != nil {
				t.Fatal(err)
			}
			if value == nil {
				delete(m, name)
			} else {
				m[name] = value
			}
			return []leasetest.ProofOption{leasetest.WithHeader("jwk", m)}
		}
	}
	now := t0().Unix()
	cases := []tc{
		{name: "ok/valid"},
		{name: "ok/no_bh_when_optional", opts: opts(leasetest.WithoutBH())},
		{name: "ok/htu_normalised", opts: opts(leasetest.WithClaim("htu", "HTTP://LocalHost:80/v1/actions/echo/execute?x=1#f"))},
		{name: "ok/iat_oldest", opts: opts(leasetest.WithIAT(now - 60))},
		{name: "ok/iat_newest", opts: opts(leasetest.WithIAT(now + 5))},
		{name: "ok/jti_8", opts: opts(leasetest.WithJTI("abcdefgh"))},
		{name: "ok/jti_128", opts: opts(leasetest.WithJTI(strings.Repeat("j", 128)))},
		{name: "ok/extra_public_jwk_member", opts: jwkWith("use", "sig")},
		{name: "ok/unknown_claim_ignored", opts: opts(leasetest.WithClaim("nonce", "x"))},
		{name: "ok/bh_required_and_sent", cfg: lease.Config{RequireBodyHash: true}},

		{name: "fail/too_large", opts: opts(leasetest.WithHeader("pad", strings.Repeat("a", lease.MaxProofLen))), want: "too_large"},
		{name: "fail/empty", proof: func(*env) string { return "" }, want: "malformed"},
		{name: "fail/two_parts", proof: func(e *env) string { return cut(e.agent.Proof("POST", testHTU, e.token, body), 2) }, want: "malformed"},
		{name: "fail/four_parts", proof: func(e *env) string { return e.agent.Proof("POST", testHTU, e.token, body) + ".x" }, want: "malformed"},
		{name: "fail/empty_signature", proof: func(e *env) string { return cut(e.agent.Proof("POST", testHTU, e.token, body), 2) + "." }, want: "malformed"},
		{name: "fail/bad_base64_header", proof: func(e *env) string {
			p := e.agent.Proof("POST", testHTU, e.token, body)
			return "!!" + p[2:]
		}, want: "malformed"},
		{name: "fail/padded_base64_header", proof: func(e *env) string {
			return base64.URLEncoding.EncodeToString([]byte(`{"typ":"dpop+jwt","ab":1}`)) + ".e30.AAAA"
		}, want: "malformed"},
		{name: "fail/header_not_object", opts: opts(leasetest.WithRawHeader(`["typ","dpop+jwt"]`)), want: "malformed"},
		{name: "fail/header_not_json", opts: opts(leasetest.WithRawHeader(`{"typ":`)), want: "malformed"},
		{name: "fail/header_trailing_data", opts: rawHeader(func(j string) string {
			return `{"typ":"dpop+jwt","alg":"ES256","jwk":` + j + `}{}`
		}), want: "malformed"},
		{name: "fail/header_invalid_utf8", opts: opts(leasetest.WithRawHeader("{\"typ\":\"dpop+jwt\",\"x\":\"\xff\"}")), want: "malformed"},
		{name: "fail/duplicate_in_header", opts: rawHeader(func(j string) string {
			return `{"typ":"dpop+jwt","alg":"ES256","alg":"ES256","jwk":` + j + `}`
		}), want: "duplicate_member"},
		{name: "fail/duplicate_escaped_in_header", opts: rawHeader(func(j string) string {
			return `{"typ":"dpop+jwt","alg":"ES256","\u0061lg":"none","jwk":` + j + `}`
		}), want: "duplicate_member"},
		{name: "fail/duplicate_in_jwk", opts: rawHeader(func(j string) string {
			return `{"typ":"dpop+jwt","alg":"ES256","jwk":` + strings.Replace(j, `{`, `{"kty":"EC",`, 1) + `}`
		}), want: "duplicate_member"},
		{name: "fail/bad_typ", opts: opts(leasetest.WithTyp("jwt")), want: "bad_typ"},
		{name: "fail/typ_case", opts: opts(leasetest.WithTyp("DPoP+jwt")), want: "bad_typ"},
		{name: "fail/missing_typ", opts: opts(leasetest.WithoutHeader("typ")), want: "bad_typ"},
		{name: "fail/alg_none", opts: opts(leasetest.WithAlg("none")), want: "bad_alg"},
		{name: "fail/alg_HS256", opts: opts(leasetest.WithAlg("HS256")), want: "bad_alg"},
		{name: "fail/alg_RS256", opts: opts(leasetest.WithAlg("RS256")), want: "bad_alg"},
		{name: "fail/alg_ES384", opts: opts(leasetest.WithAlg("ES384")), want: "bad_alg"},
		{name: "fail/missing_alg", opts: opts(leasetest.WithoutHeader("alg")), want: "bad_alg"},
		{name: "fail/header_kid", opts: opts(leasetest.WithHeader("kid", "k1")), want: "forbidden_header"},
		{name: "fail/header_jku", opts: opts(leasetest.WithHeader("jku", "https://example.com/jwks")), want: "forbidden_header"},
		{name: "fail/header_x5c", opts: opts(leasetest.WithHeader("x5c", []string{"MIIB"})), want: "forbidden_header"},
		{name: "fail/header_x5u", opts: opts(leasetest.WithHeader("x5u", "https://example.com/c.pem")), want: "forbidden_header"},
		{name: "fail/header_crit", opts: opts(leasetest.WithHeader("crit", []string{"exp"})), want: "forbidden_header"},
		{name: "fail/missing_jwk", opts: opts(leasetest.WithoutHeader("jwk")), want: "bad_jwk"},
		{name: "fail/jwk_with_d", opts: jwkWith("d", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), want: "bad_jwk"},
		{name: "fail/jwk_crv", opts: jwkWith("crv", "P-384"), want: "bad_jwk"},
		{name: "fail/jwk_kty", opts: jwkWith("kty", "RSA"), want: "bad_jwk"},
		{name: "fail/jwk_x_short", opts: func(e *env) []leasetest.ProofOption {
			return jwkWith("x", e.agent.ECJWK().X[:42])(e)
		}, want: "bad_jwk"},
		{name: "fail/jwk_x_long", opts: func(e *env) []leasetest.ProofOption {
			return jwkWith("x", e.agent.ECJWK().X+"A")(e)
		}, want: "bad_jwk"},
		{name: "fail/jwk_not_on_curve", opts: jwkWith("y", strings.Repeat("A", 43)), want: "bad_jwk"},
		{name: "fail/jwk_missing_y", opts: jwkWith("y", nil), want: "bad_jwk"},
		{name: "fail/jkt_mismatch", proof: func(e *env) string {
			other := leasetest.NewAgentKey()
			other.Clock = e.clk
			return other.Proof("POST", testHTU, e.token, body)
		}, want: "jkt_mismatch"},
		{name: "fail/signed_by_other_key", opts: opts(leasetest.SignedBy(leasetest.NewAgentKey())), want: "bad_signature"},
		{name: "fail/signature_zero", opts: opts(leasetest.WithSignature(base64.RawURLEncoding.EncodeToString(make([]byte, 64)))), want: "bad_signature"},
		{name: "fail/signature_short", opts: opts(leasetest.WithSignature(base64.RawURLEncoding.EncodeToString(make([]byte, 63)))), want: "bad_signature"},
		{name: "fail/signature_der", opts: opts(leasetest.WithSignature(base64.RawURLEncoding.EncodeToString(make([]byte, 70)))), want: "bad_signature"},
		{name: "fail/payload_tampered", proof: func(e *env) string {
			p := strings.Split(e.agent.Proof("POST", testHTU, e.token, body), ".")
			other := strings.Split(e.agent.Proof("GET", testHTU, e.token, body), ".")
			return p[0] + "." + other[1] + "." + p[2]
		}, want: "bad_signature"},
		{name: "fail/payload_not_object", opts: opts(leasetest.WithRawPayload(`"jti"`)), want: "malformed"},
		{name: "fail/duplicate_in_payload", opts: func(e *env) []leasetest.ProofOption {
			return []leasetest.ProofOption{leasetest.WithRawPayload(payloadJSON(e, body, `,"jti":"abcdefghij"`))}
		}, want: "duplicate_member"},
		{name: "fail/missing_jti", opts: opts(leasetest.WithoutClaim("jti")), want: "missing_jti"},
		{name: "fail/jti_too_short", opts: opts(leasetest.WithJTI("abcdefg")), want: "bad_jti"},
		{name: "fail/jti_too_long", opts: opts(leasetest.WithJTI(strings.Repeat("j", 129))), want: "bad_jti"},
		{name: "fail/jti_not_string", opts: opts(leasetest.WithClaim("jti", 123456789)), want: "bad_jti"},
		{name: "fail/jti_control_char", opts: opts(leasetest.WithJTI("abcd\nefgh")), want: "bad_jti"},
		{name: "fail/htm_wrong", opts: opts(leasetest.WithClaim("htm", "GET")), want: "bad_htm"},
		{name: "fail/htm_missing", opts: opts(leasetest.WithoutClaim("htm")), want: "bad_htm"},
		{name: "fail/htm_lowercase", opts: opts(leasetest.WithClaim("htm", "post")),
			req: func(_ *env, r *lease.ProofRequest) { r.Method = "post" }, want: "bad_htm"},
		{name: "fail/htu_wrong_path", opts: opts(leasetest.WithClaim("htu", "http://localhost/v1/actions/other/execute")), want: "bad_htu"},
		{name: "fail/htu_path_case", opts: opts(leasetest.WithClaim("htu", "http://localhost/V1/actions/echo/execute")), want: "bad_htu"},
		{name: "fail/htu_host", opts: opts(leasetest.WithClaim("htu", "http://evil.example/v1/actions/echo/execute")), want: "bad_htu"},
		{name: "fail/htu_scheme", opts: opts(leasetest.WithClaim("htu", "https://localhost/v1/actions/echo/execute")), want: "bad_htu"},
		{name: "fail/htu_missing", opts: opts(leasetest.WithoutClaim("htu")), want: "bad_htu"},
		{name: "fail/missing_iat", opts: opts(leasetest.WithoutClaim("iat")), want: "missing_iat"},
		{name: "fail/iat_string", opts: opts(leasetest.WithClaim("iat", "1777636800")), want: "bad_iat"},
		{name: "fail/iat_float", opts: opts(leasetest.WithClaim("iat", json.Number("1777636800.0"))), want: "bad_iat"},
		{name: "fail/iat_exponent", opts: opts(leasetest.WithClaim("iat", json.Number("1.7776368e9"))), want: "bad_iat"},
		{name: "fail/iat_too_old", opts: opts(leasetest.WithIAT(now - 61)), want: "iat_too_old"},
		{name: "fail/iat_in_future", opts: opts(leasetest.WithIAT(now + 6)), want: "iat_in_future"},
		{name: "fail/missing_ath", opts: opts(leasetest.WithoutATH()), want: "missing_ath"},
		{name: "fail/ath_other_token", req: func(_ *env, r *lease.ProofRequest) { r.LeaseToken += "x" }, want: "bad_ath"},
		{name: "fail/ath_not_string", opts: opts(leasetest.WithClaim("ath", 1)), want: "bad_ath"},
		{name: "fail/bh_wrong", opts: opts(leasetest.WithBH(lease.BodyHash([]byte("other")))), want: "bad_bh"},
		{name: "fail/bh_other_body", req: func(_ *env, r *lease.ProofRequest) { r.Body = []byte(`{"msg":"bye"}`) }, want: "bad_bh"},
		{name: "fail/missing_bh_required", cfg: lease.Config{RequireBodyHash: true}, opts: opts(leasetest.WithoutBH()), want: "missing_bh"},

		// Order (PROTOCOL §2.1): header before thumbprint before signature before claims.
		{name: "order/typ_before_jkt", proof: func(e *env) string {
			return leasetest.NewAgentKey().Proof("POST", testHTU, e.token, body, leasetest.WithTyp("jwt"))
		}, want: "bad_typ"},
		{name: "order/jkt_before_signature", proof: func(e *env) string {
			return leasetest.NewAgentKey().Proof("POST", testHTU, e.token, body, leasetest.SignedBy(e.agent))
		}, want: "jkt_mismatch"},
		{name: "order/signature_before_claims", opts: opts(leasetest.SignedBy(leasetest.NewAgentKey()), leasetest.WithoutClaim("jti")), want: "bad_signature"},
		{name: "order/jti_before_htu", opts: opts(leasetest.WithoutClaim("jti"), leasetest.WithoutClaim("htu")), want: "missing_jti"},
		{name: "order/htu_before_iat", opts: opts(leasetest.WithoutClaim("htu"), leasetest.WithIAT(now-600)), want: "bad_htu"},
		{name: "order/iat_before_ath", opts: opts(leasetest.WithIAT(now-600), leasetest.WithoutATH()), want: "iat_too_old"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.cfg)
			var o []leasetest.ProofOption
			if c.opts != nil {
				o = c.opts(e)
			}
			proof := e.agent.Proof("POST", testHTU, e.token, body, o...)
			if c.proof != nil {
				proof = c.proof(e)
			}
			req := lease.ProofRequest{Proof: proof, Method: "POST", HTU: testHTU, LeaseToken: e.token, Body: body, JKT: e.agent.Thumbprint()}
			if c.req != nil {
				c.req(e, &req)
			}
			// Cold, then again with the agent's own header cached (by a
			// good proof) and this proof's header cached if it was: the
			// proof header cache must not change any outcome.
			for _, round := range []string{"cold", "warm"} {
				if round == "warm" {
					good := e.agent.Proof("POST", testHTU, e.token, body)
					if _, err := e.auth.VerifyProof(lease.ProofRequest{Proof: good, Method: "POST", HTU: testHTU, LeaseToken: e.token, Body: body, JKT: e.agent.Thumbprint()}); err != nil {
						t.Fatalf("warm-up VerifyProof = %v", err)
					}
				}
				t.Run(round, func(t *testing.T) { checkProof(t, e, c.want, req) })
			}
		})
	}
}

// checkProof verifies req and checks the outcome: accepted when want is "",
// else refused with deny reason want.
func checkProof(t *testing.T, e *env, want string, req lease.ProofRequest) {
	t.Helper()
	p, err := e.auth.VerifyProof(req)
	if want == "" {
		if err != nil {
			t.Fatalf("VerifyProof = %v, want accepted", err)
		}
		if p.JKT != e.agent.Thumbprint() || p.JTI == "" {
			t.Errorf("VerifyProof = %+v, want jkt %s and a jti", p, e.agent.Thumbprint())
		}
		if w := p.IssuedAt.Add(70 * time.Second); !p.ReplayExpiresAt.Equal(w) {
			t.Errorf("ReplayExpiresAt = %v, want iat+70s = %v", p.ReplayExpiresAt, w)
		}
		return
	}
	var pe *lease.ProofError
	if !errors.As(err, &pe) {
		t.Fatalf("VerifyProof = %v, %v; want *ProofError %s", p, err, want)
	}
	if pe.Reason != want {
		t.Errorf("VerifyProof reason = %s (%v), want %s", pe.Reason, err, want)
	}
	if !errors.Is(err, lease.ErrProofInvalid) {
		t.Errorf("errors.Is(%v, ErrProofInvalid) = false, want true", err)
	}
}

// TestVerifyProofFields checks what an accepted proof reports.
func TestVerifyProofFields(t *testing.T) {
	e := newEnv(t, lease.Config{})
	iat := t0().Unix() - 3
	proof := e.agent.Proof("GET", testHTU, e.token, nil, leasetest.WithJTI("jti-0001"), leasetest.WithIAT(iat))
	p, err := e.auth.VerifyProof(lease.ProofRequest{Proof: proof, Method: "GET", HTU: testHTU, LeaseToken: e.token, JKT: e.agent.Thumbprint()})
	if err != nil {
		t.Fatalf("VerifyProof = %v", err)
	}
	want := lease.Proof{JTI: "jti-0001", IssuedAt: time.Unix(iat, 0).UTC(), JKT: e.agent.Thumbprint(), ReplayExpiresAt: time.Unix(iat+70, 0).UTC()}
	if *p != want {
		t.Errorf("VerifyProof = %+v, want %+v", *p, want)
	}
}

// cut returns the first n dot-separated parts of s.
func cut(s string, n int) string {
	return strings.Join(strings.Split(s, ".")[:n], ".")
}

// payloadJSON returns a valid proof payload for e with extra appended inside
// the object.
func payloadJSON(e *env, body []byte, extra string) string {
	b, _ := json.Marshal(map[string]any{
		"jti": "jti-12345678", "htm": "POST", "htu": testHTU, "iat": e.clk.Now().Unix(),
		"ath": lease.BodyHash([]byte(e.token)), "bh": lease.BodyHash(body),
	})
	return strings.TrimSuffix(string(b), "}") + extra + "}"
}
