package actions

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"
)

const testSecret = `s3cr3t/"val+ue&=?` // needs JSON, URL and base64 escaping

const secretManifest = `action_id: sec
version: 1.0.0
secrets: [TOKEN]
executor:
  kind: http
  method: POST
  url: https://api.example.com/echo?q={{q?}}
  headers:
    Authorization: "Bearer {{secret.TOKEN}}"
    X-Api-Key: "{{secret.TOKEN}}"
    X-Plain: "plain {{q?}}"
  body: {q: "{{q?}}", note: "{{note?}}"}
  max_response_bytes: 2048
  expect_status: [200]
egress:
  profile: proxy_allowlist
  allowed_domains: [api.example.com, other.example.com]
`

func prepareOK(t *testing.T, a *Action, args string, learned ...string) *Plan {
	t.Helper()
	p, err := a.Prepare(json.RawMessage(args), learned)
	if err != nil {
		t.Fatalf("Prepare(%s) = %v", args, err)
	}
	return p
}

func TestSecretNeverInOutput(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, map[string]string{"TOKEN": testSecret})
	a := loadOne(t, secretManifest)
	b := []byte(testSecret)
	forms := map[string]string{
		"raw":       testSecret,
		"json":      strings.Trim(mustJSON(t, testSecret), `"`),
		"b64std":    base64.StdEncoding.EncodeToString(b),
		"b64raw":    base64.RawStdEncoding.EncodeToString(b),
		"b64url":    base64.URLEncoding.EncodeToString(b),
		"b64rawurl": base64.RawURLEncoding.EncodeToString(b),
		"query":     url.QueryEscape(testSecret),
		"path":      url.PathEscape(testSecret),
	}
	for name, form := range forms {
		t.Run(name, func(t *testing.T) {
			s.setHandler(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Location", "https://api.example.com/?t="+url.QueryEscape(testSecret))
				w.Header().Set("X-Request-Id", form)
				fmt.Fprintf(w, `{"echo":%s,"auth":%s,%s:1,"text":"prefix %s suffix"}`,
					mustJSON(t, form), mustJSON(t, r.Header.Get("Authorization")), mustJSON(t, form), strings.ReplaceAll(form, `"`, `\"`))
			})
			res := r.Execute(context.Background(), prepareOK(t, a, `{"q":"x"}`), GrantInfo{ID: "g"})
			if res.Kind != KindSuccess || res.Verification != Verified {
				t.Fatalf("Execute = %s %s %q, want success verified", res.Kind, res.Verification, res.Summary)
			}
			for fname, f := range forms {
				if f != "" && strings.Contains(string(res.Output), f) {
					t.Errorf("Output %s contains the %s form of the secret", res.Output, fname)
				}
				if f != "" && strings.Contains(res.Summary, f) {
					t.Errorf("Summary %q contains the %s form of the secret", res.Summary, fname)
				}
			}
			if !strings.Contains(string(res.Output), Redacted) {
				t.Errorf("Output %s has no %s marker", res.Output, Redacted)
			}
		})
	}
}

func TestResponseHashCoversUnredactedOutput(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, map[string]string{"TOKEN": testSecret})
	a := loadOne(t, secretManifest)
	s.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":%s}`, mustJSON(t, testSecret))
	})
	res := r.Execute(context.Background(), prepareOK(t, a, `{}`), GrantInfo{ID: "g"})
	full := fmt.Sprintf(`{"status":200,"headers":{"content-type":"application/json","content-length":"%d"},"body":{"token":%s}}`, len(`{"token":`)+len(mustJSON(t, testSecret))+1, mustJSON(t, testSecret))
	want, err := jcsHash([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if res.ResponseHash != want {
		t.Errorf("ResponseHash = %s, want %s (hash of the unredacted output %s)", res.ResponseHash, want, full)
	}
	redactedHash, _ := jcsHash(res.Output)
	if res.ResponseHash == redactedHash {
		t.Errorf("ResponseHash equals the hash of the redacted output")
	}
}

func TestArgumentSecretPlaceholderStaysLiteral(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, map[string]string{"TOKEN": testSecret})
	a := loadOne(t, secretManifest)
	res := r.Execute(context.Background(), prepareOK(t, a, `{"q":"{{secret.TOKEN}}","note":"{{secret.TOKEN}}"}`), GrantInfo{ID: "g"})
	if res.Kind != KindSuccess {
		t.Fatalf("Execute = %s %q", res.Kind, res.Summary)
	}
	got := s.requests()[0]
	if q := got.Header.Get("X-Plain"); q != "plain {{secret.TOKEN}}" {
		t.Errorf("X-Plain = %q, want the literal placeholder", q)
	}
	if want := "/echo?q=" + url.QueryEscape("{{secret.TOKEN}}"); got.RequestURI != want {
		t.Errorf("RequestURI = %q, want %q", got.RequestURI, want)
	}
	if want := `{"note":"{{secret.TOKEN}}","q":"{{secret.TOKEN}}"}`; canonJSON(t, got.Body) != want {
		t.Errorf("body = %s, want %s", got.Body, want)
	}
	if strings.Contains(string(got.Body), testSecret) {
		t.Errorf("body %s carries the secret", got.Body)
	}
}

func TestRedirectSecrets(t *testing.T) {
	tests := []struct {
		name       string
		target     string
		code       int
		wantSecret bool // the second request carries the secret headers
		wantFollow bool
	}{
		{"same origin keeps", "https://api.example.com/landing", http.StatusFound, true, true},
		{"cross origin strips", "https://other.example.com/landing", http.StatusFound, false, true},
		{"cross origin 307 with secret body stops", "https://other.example.com/landing", http.StatusTemporaryRedirect, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStub(t)
			r := s.runner(t, map[string]string{"TOKEN": testSecret})
			m := secretManifest
			if tc.code == http.StatusTemporaryRedirect {
				m = strings.Replace(m, `note: "{{note?}}"`, `note: "{{secret.TOKEN}}"`, 1)
			}
			a := loadOne(t, m)
			s.setHandler(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/echo" {
					http.Redirect(w, r, tc.target, tc.code)
					return
				}
				_, _ = w.Write([]byte(`{"landed":true}`))
			})
			res := r.Execute(context.Background(), prepareOK(t, a, `{}`), GrantInfo{ID: "g"})
			if res.Kind != KindSuccess {
				t.Fatalf("Execute = %s %q, want success", res.Kind, res.Summary)
			}
			reqs := s.requests()
			if !tc.wantFollow {
				if len(reqs) != 1 || res.StatusCode != tc.code {
					t.Fatalf("requests = %d, status %d; want 1 and the redirect answer %d", len(reqs), res.StatusCode, tc.code)
				}
				return
			}
			if len(reqs) != 2 {
				t.Fatalf("requests = %d, want 2", len(reqs))
			}
			second := reqs[1]
			for _, h := range []string{"Authorization", "X-Api-Key"} {
				has := second.Header.Get(h) != ""
				if has != tc.wantSecret {
					t.Errorf("redirected request header %s present = %v, want %v", h, has, tc.wantSecret)
				}
			}
			if strings.Contains(fmt.Sprint(second.Header), testSecret) != tc.wantSecret {
				t.Errorf("redirected request headers %v: secret present, want %v", second.Header, tc.wantSecret)
			}
			if second.Header.Get("Referer") != "" {
				t.Errorf("redirected request has Referer %q, want none", second.Header.Get("Referer"))
			}
		})
	}
}

func TestHTTPFailureKinds(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, map[string]string{"TOKEN": testSecret})
	a := loadOne(t, secretManifest)
	fetch := loadOne(t, fetchManifest)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })

	tests := []struct {
		name     string
		a        *Action
		args     string
		learned  []string
		handler  http.HandlerFunc
		ctx      func() (context.Context, context.CancelFunc)
		kind     string
		summary  string
		verified string
	}{
		{name: "over the cap", a: a, args: `{}`, handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(strings.Repeat("x", 4096)))
		}, kind: KindProviderFailure, summary: "response exceeds 2048 bytes"},
		{name: "exactly the cap", a: a, args: `{}`, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(strings.Repeat("x", 2048)))
		}, kind: KindSuccess, verified: Verified},
		{name: "timeout", a: a, args: `{}`, handler: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}, ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, kind: KindTimeout},
		{name: "status mismatch", a: a, args: `{}`, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
		}, kind: KindSuccess, verified: VerificationFailed},
		{name: "redirect off allowlist", a: a, args: `{}`, handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://evil.example.net/", http.StatusFound)
		}, kind: KindEgressDenied},
		{name: "redirect to private literal", a: a, args: `{}`, handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://10.0.0.1/", http.StatusFound)
		}, kind: KindEgressDenied},
		{name: "unresolved host not learned", a: fetch, args: `{"url":"https://evil.example.net/"}`, kind: KindEgressDenied},
		{name: "learned host", a: fetch, args: `{"url":"https://evil.example.net/"}`, learned: []string{"evil.example.net"}, kind: KindSuccess, verified: UnverifiableDeclared},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.setHandler(tc.handler)
			ctx, cancel := context.Background(), func() {}
			if tc.ctx != nil {
				ctx, cancel = tc.ctx()
			}
			defer cancel()
			p := prepareOK(t, tc.a, tc.args, tc.learned...)
			res := r.Execute(ctx, p, GrantInfo{ID: "g", Learned: tc.learned})
			if res.Kind != tc.kind {
				t.Fatalf("Execute(%s).Kind = %s (%q), want %s", tc.name, res.Kind, res.Summary, tc.kind)
			}
			if tc.summary != "" && res.Summary != tc.summary {
				t.Errorf("Summary = %q, want %q", res.Summary, tc.summary)
			}
			if tc.verified != "" && res.Verification != tc.verified {
				t.Errorf("Verification = %s, want %s", res.Verification, tc.verified)
			}
			if strings.Contains(res.Summary, testSecret) || strings.Contains(string(res.Output), testSecret) {
				t.Errorf("secret leaked: %q %s", res.Summary, res.Output)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, nil)
	s.srv.Close() // nothing listens there any more
	a := loadOne(t, fetchManifest)
	res := r.Execute(context.Background(), prepareOK(t, a, `{"url":"https://api.example.com/"}`), GrantInfo{ID: "g"})
	if res.Kind != KindProviderFailure {
		t.Errorf("Execute = %s %q, want provider_failure", res.Kind, res.Summary)
	}
	if strings.Contains(res.Summary, "127.0.0.1") {
		t.Errorf("Summary %q names an internal address", res.Summary)
	}
}

func TestMissingSecret(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, nil)
	a := loadOne(t, secretManifest)
	res := r.Execute(context.Background(), prepareOK(t, a, `{}`), GrantInfo{ID: "g"})
	if res.Kind != KindInternalError || res.Summary != "secret TOKEN is not configured" {
		t.Errorf("Execute = %s %q, want internal_error naming the secret", res.Kind, res.Summary)
	}
	if len(s.requests()) != 0 {
		t.Errorf("a request was sent without its secret")
	}
}

func TestOutputShapes(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, nil)
	a := loadOne(t, fetchManifest)
	tests := []struct {
		name, ct, body, want string
	}{
		{"json", "application/json", `{"b":1,"a":[true]}`, `{"body":{"a":[true],"b":1},"headers":{"content-length":"18","content-type":"application/json"},"status":200}`},
		{"not i-json", "application/json", `{"a":1,"a":2}`, `{"body_text":"{\"a\":1,\"a\":2}","headers":{"content-length":"13","content-type":"application/json"},"status":200}`},
		{"huge int", "application/json", `[9007199254740993]`, `{"body_text":"[9007199254740993]","headers":{"content-length":"18","content-type":"application/json"},"status":200}`},
		{"text", "text/plain", "hi", `{"body_text":"hi","headers":{"content-length":"2","content-type":"text/plain"},"status":200}`},
		{"invalid utf8", "text/plain", "a\xffb", `{"body_text":"a\ufffdb","headers":{"content-length":"3","content-type":"text/plain"},"status":200}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.setHandler(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tc.ct)
				w.Header().Set("Set-Cookie", "session=1")
				_, _ = w.Write([]byte(tc.body))
			})
			res := r.Execute(context.Background(), prepareOK(t, a, `{"url":"https://api.example.com/"}`), GrantInfo{ID: "g"})
			if res.Kind != KindSuccess {
				t.Fatalf("Execute = %s %q", res.Kind, res.Summary)
			}
			if got := canonJSON(t, res.Output); got != canonJSON(t, []byte(tc.want)) {
				t.Errorf("Output = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRedactor(t *testing.T) {
	red := newRedactor([]string{"abc+/def=123"})
	tests := []struct{ in, want string }{
		{"x abc+/def=123 y", "x [REDACTED] y"},
		{url.QueryEscape("abc+/def=123"), Redacted},
		{url.PathEscape("abc+/def=123"), Redacted},
		{base64.StdEncoding.EncodeToString([]byte("abc+/def=123")), Redacted},
		{base64.RawURLEncoding.EncodeToString([]byte("abc+/def=123")), Redacted},
		{"nothing here", "nothing here"},
	}
	for _, tc := range tests {
		if got := red.str(tc.in); got != tc.want {
			t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	num := newRedactor([]string{"12345678"})
	if got := num.value(json.Number("9912345678")); got != Redacted {
		t.Errorf("redact(number holding the secret) = %v, want %s", got, Redacted)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An argument in a URL path segment must not walk the upstream's path, also
// through an escaped separator: "../x" renders as "..%2Fx", which servers
// that decode before they resolve dot segments (nginx, IIS; here the stub
// normalises r.URL.Path the same way) route as "../x", out of the path the
// manifest names, with the injected credential.
func TestPathArgumentCannotWalkUpstreamPath(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, map[string]string{"GITHUB_TOKEN": testSecret})
	a := loadOne(t, goodHTTP)
	var mu sync.Mutex
	var routed []string
	s.setHandler(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		routed = append(routed, path.Clean(req.URL.Path))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	tests := []struct {
		name, owner string
		refused     bool
	}{
		{"plain", "octo", false},
		{"three dots", "...", false},
		{"dotted name", "a.b", false},
		{"escaped slash, no dot segment", "a/b", false},
		{"dot dot", "..", true},
		{"dot dot slash", "../../admin", true},
		{"inner dot dot", "a/../../admin", true},
		{"trailing dot dot", "a/..", true},
		{"dot slash", "./x", true},
		{"backslash", `..\..\admin`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			routed = nil
			mu.Unlock()
			args := mustJSON(t, map[string]string{"owner": tc.owner, "repo": "r", "title": "t"})
			p, err := a.Prepare(json.RawMessage(args), nil)
			var te *TemplateError
			if tc.refused {
				if !errors.As(err, &te) || te.Field != "executor.url" {
					if err == nil {
						r.Execute(context.Background(), p, GrantInfo{ID: "g"})
					}
					mu.Lock()
					defer mu.Unlock()
					t.Fatalf("Prepare(owner %q) = %v, want *TemplateError for executor.url (upstream routed %v with the credential)", tc.owner, err, routed)
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare(owner %q) = %v, want success", tc.owner, err)
			}
			if res := r.Execute(context.Background(), p, GrantInfo{ID: "g"}); res.Kind != KindSuccess {
				t.Fatalf("Execute(owner %q) = %s %q, want success", tc.owner, res.Kind, res.Summary)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(routed) != 1 || !strings.HasPrefix(routed[0], "/repos/") || !strings.HasSuffix(routed[0], "/r/issues") {
				t.Fatalf("upstream routed %v, want one request under /repos/…/r/issues", routed)
			}
		})
	}
}
