package actions

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/actions/actionstest"
	"github.com/latchgate/latchgate/definitions"
	"github.com/latchgate/latchgate/egress"
)

// stubNames are the host names the test certificate is valid for: every
// host the catalogue contacts plus test-only names.
var stubNames = []string{
	"api.github.com", "slack.com", "discord.com", "graph.microsoft.com", "api.telegram.org",
	"gitlab.com", "api.atlassian.com", "api.linear.app", "api.notion.com", "api.sendgrid.com",
	"events.pagerduty.com", "api.stripe.com", "en.wikipedia.org", "de.wikipedia.org",
	"hacker-news.firebaseio.com", "api.frankfurter.app", "httpbin.org", "postman-echo.com",
	"hooks.zapier.com", "example.com", "api.example.com", "other.example.com", "evil.example.net",
}

// recorded is one request the stub received.
type recorded struct {
	Method, Host, RequestURI string
	Header                   http.Header
	Body                     []byte
}

// stub is one TLS server answering for every name in stubNames (all names
// resolve to 127.0.0.1 and every dial goes to it). handler answers; every
// request is recorded first.
type stub struct {
	srv     *httptest.Server
	mu      sync.Mutex // guards reqs, handler
	reqs    []recorded
	handler http.HandlerFunc
	roots   *x509.CertPool
}

func newStub(t testing.TB) *stub {
	t.Helper()
	pool, cert := actionstest.TLSCert(t, stubNames...)
	s := &stub{roots: pool}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, recorded{Method: r.Method, Host: r.Host, RequestURI: r.RequestURI, Header: r.Header.Clone(), Body: body})
		h := s.handler
		s.mu.Unlock()
		if h == nil {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true}`)
			return
		}
		h(w, r)
	}))
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *stub) setHandler(h http.HandlerFunc) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

func (s *stub) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

// loopbackResolver answers 127.0.0.1 for every name.
type loopbackResolver struct{}

func (loopbackResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

// runner builds a Runner whose egress Dialer resolves every name to
// 127.0.0.1 (allowed by the AllowCIDRs test escape hatch) and connects every
// checked address to the stub; the allowlist and every other egress rule
// still apply.
func (s *stub) runner(t testing.TB, secrets map[string]string) *Runner {
	t.Helper()
	stubAddr := s.srv.Listener.Addr().String()
	d, err := egress.NewDialer(egress.Config{
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Resolver:   loopbackResolver{},
		DialAddr: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, stubAddr)
		},
		TLSConfig: &tls.Config{RootCAs: s.roots},
	}, egress.Deps{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewSecretSource(secretEnv(secrets), "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRunner(RunnerConfig{}, RunnerDeps{Dialer: d, Secrets: src, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func secretEnv(m map[string]string) map[string]string {
	env := map[string]string{}
	for k, v := range m {
		env[SecretEnvPrefix+k] = v
	}
	return env
}

// catalogue loads the embedded manifests once per test.
func catalogue(t testing.TB) *Registry {
	t.Helper()
	reg, err := Load(LoadConfig{FS: definitions.Manifests}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Load(embedded) = %v", err)
	}
	return reg
}
