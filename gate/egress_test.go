package gate_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchgate/latchgate/actions/actionstest"
	"github.com/latchgate/latchgate/gate/gatetest"
	"github.com/rs/zerolog"
)

const testSecret = "s3cr3t-T0KEN-value-0123456789"

// mapResolver answers every name with loopback.
type mapResolver struct{}

func (mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// upstream is a TLS stub for api.example.com that records what it saw.
type upstream struct {
	srv  *httptest.Server
	port int
	mu   sync.Mutex
	seen []string // Authorization header + body per request
}

func newUpstream(t *testing.T) (*upstream, *x509.CertPool) {
	t.Helper()
	pool, cert := actionstest.TLSCert(t, "api.example.com")
	u := &upstream{}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth := r.Header.Get("Authorization")
		u.mu.Lock()
		u.seen = append(u.seen, auth+"\n"+string(body))
		u.mu.Unlock()
		switch r.URL.Path {
		case "/echo":
			// Echo the credential back in every encoding.
			tok := strings.TrimPrefix(auth, "Bearer ")
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{
				"raw": auth, "b64": base64.StdEncoding.EncodeToString([]byte(tok)),
				"url": url.QueryEscape(tok), "got": json.RawMessage(body),
			})
		case "/big":
			_, _ = w.Write(bytes.Repeat([]byte("x"), 64<<10))
		case "/slow":
			time.Sleep(3 * time.Second)
		}
	}))
	u.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	u.srv.StartTLS()
	t.Cleanup(u.srv.Close)
	u.port = u.srv.Listener.Addr().(*net.TCPAddr).Port
	return u, pool
}

// egressGate starts a gate with three manifests pointing at the stub.
func egressGate(t *testing.T) (*gatetest.Server, *upstream, *syncBuf) {
	t.Helper()
	u, pool := newUpstream(t)
	dir := t.TempDir()
	for name, spec := range map[string]string{
		"secret_echo": `method: POST
  url: https://api.example.com:%d/echo
  headers: {Authorization: "Bearer {{secret.TEST_TOKEN}}"}
  body: {msg: "{{msg}}"}
  expect_status: [200]`,
		"big_fetch": `method: GET
  url: https://api.example.com:%d/big
  max_response_bytes: 4096`,
		"slow_fetch": `method: GET
  url: https://api.example.com:%d/slow
  timeout_seconds: 1`,
	} {
		schema := `{type: object}`
		secrets := "[]"
		if name == "secret_echo" {
			schema = `{type: object, properties: {msg: {type: string}}, required: [msg], additionalProperties: false}`
			secrets = "[TEST_TOKEN]"
		}
		m := fmt.Sprintf("action_id: %s\nversion: 1.0.0\nrisk_level: low\ninput_schema: %s\nsecrets: %s\nexecutor:\n  kind: http\n  %s\negress:\n  profile: proxy_allowlist\n  allowed_domains: [api.example.com]\n  allowed_ports: [%d]\n",
			name, schema, secrets, fmt.Sprintf(spec, u.port), u.port)
		if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(m), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncBuf{}
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(dir),
		gatetest.WithEgress([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, pool, mapResolver{}),
		gatetest.WithSecrets(map[string]string{"TEST_TOKEN": testSecret}),
		gatetest.WithLogger(zerolog.New(logs).Level(zerolog.DebugLevel)))
	return s, u, logs
}

// secretForms are the encodings a leaked secret could take.
func secretForms() []string {
	return []string{testSecret, base64.StdEncoding.EncodeToString([]byte(testSecret)),
		base64.RawURLEncoding.EncodeToString([]byte(testSecret)), url.QueryEscape(testSecret)}
}

func assertNoSecret(t *testing.T, where string, b []byte) {
	t.Helper()
	for _, f := range secretForms() {
		if bytes.Contains(b, []byte(f)) {
			t.Errorf("%s contains the secret (form %q): %s", where, f, b)
		}
	}
}

func TestSecretInjectedNeverLeaked(t *testing.T) {
	s, u, logs := egressGate(t)
	a := newAgent(t, s, nil)
	r := a.Execute("secret_echo", map[string]any{"msg": "hi"}, nil)
	wantStatus(t, r, 200, "")
	u.mu.Lock()
	seen := strings.Join(u.seen, "\n")
	u.mu.Unlock()
	if !strings.Contains(seen, "Bearer "+testSecret) {
		t.Fatalf("upstream did not receive the injected secret: %q", seen)
	}
	assertNoSecret(t, "response", r.Body)
	if r.JSON()["verification_outcome"] != "verified" {
		t.Errorf("verification_outcome = %v, want verified", r.JSON()["verification_outcome"])
	}
	rc := a.Call("GET", "/v1/receipts/"+r.JSON()["receipt_id"].(string), nil)
	wantStatus(t, rc, 200, "")
	assertNoSecret(t, "receipt", rc.Body)
	assertNoSecret(t, "gate log", []byte(logs.String()))

	// An argument that looks like a secret placeholder is sent literally.
	r = a.Execute("secret_echo", map[string]any{"msg": "{{secret.TEST_TOKEN}}"}, nil)
	wantStatus(t, r, 200, "")
	u.mu.Lock()
	last := u.seen[len(u.seen)-1]
	u.mu.Unlock()
	if !strings.Contains(last, `{{secret.TEST_TOKEN}}`) || strings.Count(last, testSecret) != 1 {
		t.Fatalf("argument placeholder was expanded: %q", last)
	}
}

func TestPostDispatchFailuresHaveReceipts(t *testing.T) {
	s, _, _ := egressGate(t)
	a := newAgent(t, s, nil)
	for _, tt := range []struct{ action, kind string }{
		{"big_fetch", "provider_failure"},
		{"slow_fetch", "timeout"},
	} {
		t.Run(tt.action, func(t *testing.T) {
			r := a.Execute(tt.action, map[string]any{}, nil)
			wantStatus(t, r, 502, "action_execution_failed")
			id, _ := r.JSON()["receipt_id"].(string)
			if id == "" || r.JSON()["trace_id"] == nil {
				t.Fatalf("502 without receipt_id/trace_id: %s", r.Body)
			}
			rc := a.Call("GET", "/v1/receipts/"+id, nil).JSON()
			nr, _ := rc["normalized_result"].(map[string]any)
			if nr["kind"] != tt.kind {
				t.Fatalf("receipt kind = %v, want %s", nr["kind"], tt.kind)
			}
		})
	}
}

func TestSchemaViolationNamesPointer(t *testing.T) {
	s, _, _ := egressGate(t)
	a := newAgent(t, s, nil)
	for _, tt := range []struct {
		name string
		args any
		want string
	}{
		{"wrong-type", map[string]any{"msg": 5}, "/msg"},
		{"extra-property", map[string]any{"msg": "x", "evil": 1}, "evil"},
		{"missing", map[string]any{}, "msg"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := a.Execute("secret_echo", tt.args, nil)
			wantStatus(t, r, 422, "schema_violation")
			if d, _ := r.JSON()["deny_reason"].(string); !strings.Contains(d, tt.want) {
				t.Fatalf("deny_reason = %q, want it to name %q", d, tt.want)
			}
		})
	}
}

// Unlisted targets: never-approvable ones are 403, others ask a human.
func TestUnresolvedTargets(t *testing.T) {
	s := gatetest.NewServer(t)
	a := newAgent(t, s, nil)
	for _, tt := range []struct {
		url    string
		status int
		code   string
	}{
		{"http://169.254.169.254/latest/meta-data/", 403, "egress_target_forbidden"},
		{"https://2130706433/", 403, "egress_target_forbidden"},
		{"https://0177.0.0.1/", 403, "egress_target_forbidden"},
		{"http://[::1]/", 403, "egress_target_forbidden"},
		{"https://intranet/", 403, "egress_target_forbidden"},
		{"https://db.internal/", 403, "egress_target_forbidden"},
		{"https://unlisted.example.org/page", 202, ""},
	} {
		t.Run(tt.url, func(t *testing.T) {
			r := a.Execute("http_fetch", map[string]any{"url": tt.url}, nil)
			wantStatus(t, r, tt.status, tt.code)
		})
	}
}

// TestStandingApprovalCoversUnresolvedHost: the default policy holds a
// request with an unresolved domain unless a standing approval applies
// (ARCHITECTURE, policy contract). When one does, the grant may reach that
// host, as after an operator's approve, and nothing is learned. Before,
// the policy allowed the request and the dialler refused the host: a
// standing-approval use and the budget spent on a certain egress_denied.
func TestStandingApprovalCoversUnresolvedHost(t *testing.T) {
	const host = "unlisted.example.net"
	pool, cert := actionstest.TLSCert(t, host)
	var hits sync.Map
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.Host+r.URL.Path, true)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	m := fmt.Sprintf(`action_id: fetch_any
version: 1.0.0
risk_level: low
input_schema: {type: object, properties: {url: {type: string}}, required: [url]}
executor:
  kind: http
  method: GET
  url: "{{url}}"
egress:
  profile: proxy_allowlist
  allowed_domains: [api.example.com]
  allowed_ports: [%d]
`, port)
	if err := os.WriteFile(filepath.Join(dir, "fetch_any.yaml"), []byte(m), 0o600); err != nil {
		t.Fatal(err)
	}
	s := gatetest.NewServer(t, gatetest.WithManifestsDir(dir),
		gatetest.WithEgress([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, pool, mapResolver{}))
	a := newAgent(t, s, map[string]any{"agent_id": "std"})
	target := fmt.Sprintf("https://%s:%d/page", host, port)
	fetch := func() *gatetest.Response { return a.Execute("fetch_any", map[string]any{"url": target}, nil) }

	// Without a standing approval the unresolved host is held for a human.
	wantStatus(t, fetch(), 202, "")
	r := admin(t, s, "POST", "/v1/standing-approvals", `{"principal":"agent:std","action_id":"fetch_any","uses":1}`)
	if r.Status != 201 {
		t.Fatalf("create standing approval = %d %s", r.Status, r.Body)
	}
	r = fetch()
	wantStatus(t, r, 200, "")
	if appr, _ := r.JSON()["approval"].(map[string]any); appr["kind"] != "standing" {
		t.Errorf("approval = %v, want kind standing", r.JSON()["approval"])
	}
	if _, ok := hits.Load(fmt.Sprintf("%s:%d/page", host, port)); !ok {
		t.Errorf("the upstream never saw the request")
	}
	// The use is spent and nothing was learned: the next call is held.
	wantStatus(t, fetch(), 202, "")
	if list := admin(t, s, "GET", "/v1/learned-domains", "").JSON()["learned_domains"].([]any); len(list) != 0 {
		t.Errorf("learned domains = %v, want none", list)
	}
}
