package loadgen

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

var b64 = base64.RawURLEncoding

// agent is one client: its own P-256 key, lease and keep-alive connection.
type agent struct {
	priv    *ecdsa.PrivateKey
	hdr     string // base64url proof header (typ, alg, jwk), fixed per key
	http    *http.Client
	lease   string
	auth    string // "DPoP " + lease
	ath     string // base64url SHA-256 of the lease
	execURL string
	execHTU string
	body    []byte
	bh      string
	buf     bytes.Buffer
}

// newAgent makes a key and an HTTP client bound to socket.
func newAgent(socket string, timeout time.Duration) (*agent, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := priv.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	hdr, err := json.Marshal(map[string]any{
		"typ": "dpop+jwt", "alg": "ES256",
		"jwk": map[string]string{"kty": "EC", "crv": "P-256", "x": b64.EncodeToString(pub[1:33]), "y": b64.EncodeToString(pub[33:])},
	})
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second,
		DisableCompression: true,
	}
	body := []byte(`{"message":"bench"}`)
	sum := sha256.Sum256(body)
	return &agent{
		priv: priv, hdr: b64.EncodeToString(hdr),
		http:    &http.Client{Transport: tr, Timeout: timeout},
		execURL: "http://localhost/v1/actions/echo/execute", execHTU: "http://localhost/v1/actions/echo/execute",
		body: body, bh: b64.EncodeToString(sum[:]),
	}, nil
}

// jwk returns the agent's public JWK (for the lease request).
func (a *agent) jwk() map[string]string {
	pub, _ := a.priv.PublicKey.Bytes()
	return map[string]string{"kty": "EC", "crv": "P-256", "x": b64.EncodeToString(pub[1:33]), "y": b64.EncodeToString(pub[33:])}
}

// openLease takes a lease for agentID (TTL ttl).
func (a *agent) openLease(ctx context.Context, agentID string, ttl time.Duration) error {
	req, err := json.Marshal(map[string]any{
		"dpop_jwk": a.jwk(), "agent_id": agentID, "scopes": []string{"tools:call"},
		"ttl_seconds": int64(ttl / time.Second),
	})
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/v1/leases", bytes.NewReader(req))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := a.http.Do(hr)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		return fmt.Errorf("lease: HTTP %d: %s", res.StatusCode, bytes.TrimSpace(data))
	}
	var lr struct {
		LeaseJWT string `json:"lease_jwt"`
	}
	if err := json.Unmarshal(data, &lr); err != nil || lr.LeaseJWT == "" {
		return fmt.Errorf("lease: answer without lease_jwt: %s", bytes.TrimSpace(data))
	}
	a.setLease(lr.LeaseJWT)
	return nil
}

// setLease makes token the agent's lease.
func (a *agent) setLease(token string) {
	a.lease, a.auth = token, "DPoP "+token
	sum := sha256.Sum256([]byte(token))
	a.ath = b64.EncodeToString(sum[:])
}

// proof signs a fresh DPoP proof for one execute.
func (a *agent) proof(now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	b := &a.buf
	b.Reset()
	b.WriteString(`{"jti":"`)
	b.WriteString(b64.EncodeToString(jti[:]))
	b.WriteString(`","htm":"POST","htu":"`)
	b.WriteString(a.execHTU)
	b.WriteString(`","iat":`)
	b.WriteString(strconv.FormatInt(now.Unix(), 10))
	b.WriteString(`,"ath":"`)
	b.WriteString(a.ath)
	b.WriteString(`","bh":"`)
	b.WriteString(a.bh)
	b.WriteString(`"}`)
	input := a.hdr + "." + b64.EncodeToString(b.Bytes())
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, a.priv, digest[:])
	if err != nil {
		return "", err
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig[:]), nil
}

// execute sends one echo execute and returns "" on 200, else an error code
// ("transport" for a failure without an answer).
func (a *agent) execute(ctx context.Context) string {
	p, err := a.proof(time.Now())
	if err != nil {
		return "client_error"
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, a.execURL, bytes.NewReader(a.body))
	if err != nil {
		return "client_error"
	}
	hr.Header = http.Header{
		"Content-Type":  {"application/json"},
		"Authorization": {a.auth},
		"Dpop":          {p},
	}
	res, err := a.http.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return "canceled"
		}
		return "transport"
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return "transport"
	}
	if res.StatusCode == http.StatusOK {
		return ""
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		return "http_" + strconv.Itoa(res.StatusCode)
	}
	return e.Error
}

func (a *agent) close() { a.http.CloseIdleConnections() }
