package lease

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latchgate/latchgate/clock"
)

// This file keeps VerifyProof as it was before the proof header cache, the
// strictWalker and the allocation work (on decodeStrictTokens, maps,
// big.Int and ecdsa.Verify), as the reference FuzzVerifyProofReference
// holds VerifyProof to.

// referenceVerifyProof is the former VerifyProof.
func referenceVerifyProof(a *Authority, r ProofRequest) (*Proof, error) {
	if len(r.Proof) > MaxProofLen {
		return nil, proofErr(ReasonTooLarge, nil)
	}
	parts := strings.Split(r.Proof, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return nil, proofErr(ReasonMalformed, errors.New("want three non-empty parts"))
	}
	hdr, err := referenceDecodeSegment(parts[0])
	if err != nil {
		return nil, segmentErr(err)
	}
	pub, jwk, err := checkProofHeader(hdr)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(Thumbprint(jwk)), []byte(r.JKT)) != 1 {
		return nil, proofErr(ReasonJKTMismatch, nil)
	}
	if err := referenceVerifyES256(pub, parts[0], parts[1], parts[2]); err != nil {
		return nil, err
	}
	payload, err := referenceDecodeSegment(parts[1])
	if err != nil {
		return nil, segmentErr(err)
	}
	return referenceCheckProofClaims(a, payload, r)
}

// referenceDecodeSegment is the former decodeSegment.
func referenceDecodeSegment(seg string) (map[string]any, error) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return nil, errors.New("not base64url")
	}
	v, err := decodeStrictTokens(raw)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not a JSON object")
	}
	return obj, nil
}

// referenceVerifyES256 is the former verifyES256.
func referenceVerifyES256(pub *ecdsa.PublicKey, hdr, payload, sig string) error {
	var raw [64]byte
	if err := decodeB64Into(raw[:], sig); err != nil {
		return proofErr(ReasonBadSignature, err)
	}
	h := sha256.New()
	h.Write([]byte(hdr))
	h.Write([]byte{'.'})
	h.Write([]byte(payload))
	rr := new(big.Int).SetBytes(raw[:32])
	ss := new(big.Int).SetBytes(raw[32:])
	if !ecdsa.Verify(pub, h.Sum(nil), rr, ss) {
		return proofErr(ReasonBadSignature, nil)
	}
	return nil
}

// referenceTokenHash is the former tokenHash.
func referenceTokenHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// referenceCheckProofClaims is the former checkProofClaims.
func referenceCheckProofClaims(a *Authority, c map[string]any, r ProofRequest) (*Proof, error) {
	jtiV, ok := c["jti"]
	if !ok {
		return nil, proofErr(ReasonMissingJTI, nil)
	}
	jti, ok := jtiV.(string)
	if !ok || !validJTI(jti) {
		return nil, proofErr(ReasonBadJTI, nil)
	}
	if htm, ok := c["htm"].(string); !ok || htm != r.Method || htm != strings.ToUpper(htm) {
		return nil, proofErr(ReasonBadHTM, nil)
	}
	if htu, ok := c["htu"].(string); !ok || NormalizeHTU(htu) != NormalizeHTU(r.HTU) {
		return nil, proofErr(ReasonBadHTU, nil)
	}
	iatV, ok := c["iat"]
	if !ok {
		return nil, proofErr(ReasonMissingIAT, nil)
	}
	iatN, ok := iatV.(json.Number)
	if !ok {
		return nil, proofErr(ReasonBadIAT, errors.New("not a number"))
	}
	secs, err := strconv.ParseInt(string(iatN), 10, 64)
	if err != nil || secs < 0 {
		return nil, proofErr(ReasonBadIAT, errors.New("not a non-negative integer"))
	}
	iat := time.Unix(secs, 0).UTC()
	now := a.clk.Now()
	if iat.Before(now.Add(-a.cfg.ProofMaxAge)) {
		return nil, proofErr(ReasonIATTooOld, nil)
	}
	if iat.After(now.Add(a.cfg.ProofFutureSkew)) {
		return nil, proofErr(ReasonIATInFuture, nil)
	}
	athV, ok := c["ath"]
	if !ok {
		return nil, proofErr(ReasonMissingATH, nil)
	}
	if ath, ok := athV.(string); !ok || subtle.ConstantTimeCompare([]byte(ath), []byte(referenceTokenHash(r.LeaseToken))) != 1 {
		return nil, proofErr(ReasonBadATH, nil)
	}
	bhV, ok := c["bh"]
	switch {
	case ok:
		if bh, ok := bhV.(string); !ok || subtle.ConstantTimeCompare([]byte(bh), []byte(BodyHash(r.Body))) != 1 {
			return nil, proofErr(ReasonBadBH, nil)
		}
	case a.cfg.RequireBodyHash:
		return nil, proofErr(ReasonMissingBH, nil)
	}
	return &Proof{
		JTI:             jti,
		IssuedAt:        iat,
		JKT:             r.JKT,
		ReplayExpiresAt: iat.Add(a.cfg.ProofMaxAge + 2*a.cfg.ProofFutureSkew),
	}, nil
}

// signProof returns b64(header).b64(payload).b64(r||s) signed by priv.
func signProof(tb testing.TB, priv *ecdsa.PrivateKey, header, payload string) string {
	tb.Helper()
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
	if err != nil {
		tb.Fatal(err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig[:])
}

// FuzzVerifyProofReference checks VerifyProof against referenceVerifyProof
// on proofs signed over fuzzed header and payload JSON: the same accepted
// proof, or a refusal with the same reason. Each proof is verified twice,
// and the header cache is shared by all inputs, so cached headers are
// checked too. mode picks the signer (bit 0: another key), the lease's jkt
// (bit 1: another key's), and a mangled signature (bit 2).
func FuzzVerifyProofReference(f *testing.F) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(now)
	keys, err := LoadKeys(f.TempDir(), clk)
	if err != nil {
		f.Fatal(err)
	}
	a, err := New(Config{}, keys, Deps{Clock: clk})
	if err != nil {
		f.Fatal(err)
	}
	agent, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	agentJWK, _ := jwkOf(&agent.PublicKey)
	otherJWK, _ := jwkOf(&other.PublicKey)
	token, err := a.Issue(Claims{Subject: "s", SessionID: "sid", JKT: Thumbprint(agentJWK)})
	if err != nil {
		f.Fatal(err)
	}
	const htu = "http://localhost/v1/actions/echo/execute"
	body := []byte(`{"msg":"hi"}`)
	jwkJSON, _ := json.Marshal(agentJWK)
	hdr := `{"typ":"dpop+jwt","alg":"ES256","jwk":` + string(jwkJSON) + `}`
	claims := func(extra string) string {
		return `{"jti":"abcdefgh","htm":"POST","htu":"` + htu + `","iat":` + strconv.FormatInt(now.Unix(), 10) +
			`,"ath":"` + referenceTokenHash(token) + `","bh":"` + BodyHash(body) + `"` + extra + `}`
	}
	for _, c := range []struct {
		header, payload string
		mode            uint8
	}{
		{hdr, claims(""), 0},
		{hdr, claims(""), 1},
		{hdr, claims(""), 2},
		{hdr, claims(""), 4},
		{hdr, claims(`,"jti":"abcdefgh"`), 0},
		{hdr, claims(`,"x":{"y":1,"\u0079":2}`), 0},
		{hdr, claims(`,"x":[1,2,{"a":null}]`), 0},
		{hdr, `{"j\u0074i":"abcdefgh","htm":"POST","htu":"HTTP://LOCALHOST:80/v1/actions/echo/execute?q","iat":1777636800.0}`, 0},
		{hdr, `{"jti":"abcdefgh","htm":"POST","htu":"` + htu + `","iat":1777636800}`, 0},
		{hdr, `{"jti":null}`, 0},
		{hdr, `[{"jti":1}]`, 0},
		{hdr, `{"iat":1e400}`, 0},
		{hdr, "\xef\xbb\xbf{}", 0},
		{hdr, `{"a":1,"a":2,`, 0},
		{`{"typ":"dpop+jwt","alg":"ES256","jwk":` + string(jwkJSON) + `,"n":1}`, claims(""), 0},
		{`{"typ":"dpop+jwt","alg":"none","jwk":` + string(jwkJSON) + `}`, claims(""), 0},
		{`{"typ":"dpop+jwt","alg":"ES256","kid":"k","jwk":` + string(jwkJSON) + `}`, claims(""), 0},
		{`{"typ":"dpop+jwt","alg":"ES256","alg":"ES256","jwk":` + string(jwkJSON) + `}`, claims(""), 0},
		{`{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"` + agentJWK.X + `","y":"` + agentJWK.X + `"}}`, claims(""), 0},
		{`{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"` + agentJWK.X + `","y":"` + agentJWK.Y + `","d":"x"}}`, claims(""), 0},
		{`{"typ":"dpop+jwt","alg":"ES256","jwk":` + string(jwkJSON) + `}x`, claims(""), 0},
	} {
		f.Add(c.header, c.payload, c.mode)
	}
	good := ProofRequest{Proof: signProof(f, agent, hdr, claims("")), Method: "POST", HTU: htu, LeaseToken: token, Body: body, JKT: Thumbprint(agentJWK)}
	if _, err := a.VerifyProof(good); err != nil {
		f.Fatalf("VerifyProof(first seed) = %v, want accepted", err)
	}
	f.Fuzz(func(t *testing.T, header, payload string, mode uint8) {
		signer, jkt := agent, Thumbprint(agentJWK)
		if mode&1 != 0 {
			signer = other
		}
		if mode&2 != 0 {
			jkt = Thumbprint(otherJWK)
		}
		proof := signProof(t, signer, header, payload)
		if mode&4 != 0 {
			proof = proof[:len(proof)-2] + "AA"
		}
		r := ProofRequest{Proof: proof, Method: "POST", HTU: htu, LeaseToken: token, Body: body, JKT: jkt}
		want, wantErr := referenceVerifyProof(a, r)
		for round := range 2 {
			got, err := a.VerifyProof(r)
			if reason(err) != reason(wantErr) || (err == nil && *got != *want) {
				t.Fatalf("round %d: VerifyProof(%q, %q, %d) = %+v, %v; want %+v, %v", round, header, payload, mode, got, err, want, wantErr)
			}
		}
	})
}

// reason returns err's deny reason, "" for nil, or "not a ProofError".
func reason(err error) string {
	if err == nil {
		return ""
	}
	var pe *ProofError
	if !errors.As(err, &pe) {
		return "not a ProofError"
	}
	return pe.Reason
}
