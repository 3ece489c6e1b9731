package actions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

const schemaManifest = `action_id: s
version: 1.0.0
input_schema:
  type: object
  additionalProperties: false
  required: [title]
  properties:
    title: {type: string, maxLength: 10}
    n: {type: integer, minimum: 5}
    tags: {type: array, items: {type: string, pattern: "^[a-z]+$"}}
    nested: {type: object, properties: {a: {type: boolean}}}
executor: {kind: echo}
`

func TestPrepareIJSON(t *testing.T) {
	a := loadOne(t, "action_id: e\nversion: 1\nexecutor: {kind: echo}\n")
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"empty body", "", true},
		{"object", `{"a":1}`, true},
		{"decimal 0.1", `{"a":0.1}`, true},
		{"exponent", `{"a":1.5e3,"b":1E-7,"c":-0}`, true},
		{"2^53", `{"a":9007199254740992}`, true},
		{"surrogate pair", `{"a":"\ud83d\ude00"}`, true},
		{"nested ok", `{"a":{"b":[{"c":1},{"c":1}]}}`, true},
		{"2^53+1", `{"a":9007199254740993}`, false},
		{"overflow", `{"a":1e400}`, false},
		{"underflow", `{"a":1e-400}`, false},
		{"too precise", `{"a":0.30000000000000000001}`, false},
		{"duplicate", `{"a":1,"a":2}`, false},
		{"duplicate escaped", `{"a":1,"\u0061":2}`, false},
		{"duplicate nested", `{"x":[{"b":1,"b":1}]}`, false},
		{"lone high surrogate", `{"a":"\ud800"}`, false},
		{"lone low surrogate", `{"a":"\udc00x"}`, false},
		{"high then non-low", `{"a":"\ud800\u0041"}`, false},
		{"invalid utf8", "{\"a\":\"\xff\"}", false},
		{"invalid utf8 key", "{\"\xc3\":1}", false},
		{"trailing data", `{} {}`, false},
		{"trailing comma", `{"a":1,}`, false},
		{"leading zero", `{"a":01}`, false},
		{"control char", "{\"a\":\"\x01\"}", false},
		{"nan", `{"a":NaN}`, false},
		{"whitespace only", "  ", false},
		{"too deep", strings.Repeat("[", 200) + strings.Repeat("]", 200), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Prepare(json.RawMessage(tc.in), nil)
			var ije *InvalidJSONError
			switch {
			case tc.ok && err != nil:
				t.Errorf("Prepare(%q) = %v, want nil", tc.in, err)
			case !tc.ok && !errors.As(err, &ije):
				t.Errorf("Prepare(%q) = %v, want *InvalidJSONError", tc.in, err)
			}
		})
	}
}

func TestPrepareSchema(t *testing.T) {
	a := loadOne(t, schemaManifest)
	tests := []struct {
		name, in, ptr, reason string
	}{
		{"ok", `{"title":"hi"}`, "", ""},
		{"wrong type", `{"title":5}`, "/title", "expected string, got number"},
		{"missing", `{}`, "/title", "required property is missing"},
		{"extra", `{"title":"a","zz":1}`, "/zz", "property is not allowed"},
		{"too long", `{"title":"secretvalue-long"}`, "/title", "must be at most 10 characters"},
		{"minimum", `{"title":"a","n":3}`, "/n", "must be >= 5"},
		{"pattern", `{"title":"a","tags":["ok","NOPE"]}`, "/tags/1", `does not match pattern "^[a-z]+$"`},
		{"nested", `{"title":"a","nested":{"a":"x"}}`, "/nested/a", "expected boolean, got string"},
		{"not object", `[1]`, "", "expected object, got array"},
		{"empty body", ``, "/title", "required property is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Prepare(json.RawMessage(tc.in), nil)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Prepare(%s) = %v, want nil", tc.in, err)
				}
				return
			}
			var se *SchemaError
			if !errors.As(err, &se) {
				t.Fatalf("Prepare(%s) = %v, want *SchemaError", tc.in, err)
			}
			if se.Pointer != tc.ptr || se.Reason != tc.reason {
				t.Errorf("Prepare(%s) = %q %q, want %q %q", tc.in, se.Pointer, se.Reason, tc.ptr, tc.reason)
			}
			if strings.Contains(se.Error(), "secretvalue") || strings.Contains(se.Error(), "NOPE") {
				t.Errorf("SchemaError %q quotes an argument value", se.Error())
			}
		})
	}
}

func TestRequestHash(t *testing.T) {
	a := loadOne(t, "action_id: e\nversion: 1\nexecutor: {kind: echo}\n")
	p1, err := a.Prepare(json.RawMessage(`{ "b": 1.50, "a": "x" }`), nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(`{"a":"x","b":1.5}`))
	want := "sha256:" + hex.EncodeToString(sum[:])
	if p1.RequestHash != want {
		t.Errorf("RequestHash = %s, want %s (JCS)", p1.RequestHash, want)
	}
	p2, _ := a.Prepare(nil, nil)
	sum = sha256.Sum256([]byte(`{}`))
	if p2.RequestHash != "sha256:"+hex.EncodeToString(sum[:]) || string(p2.ArgsRaw) != "{}" {
		t.Errorf("empty body: hash %s raw %s, want hash of {} and {}", p2.RequestHash, p2.ArgsRaw)
	}
}

const fetchManifest = `action_id: fetch
version: 1.0.0
input_schema: {type: object, properties: {url: {type: string}}, required: [url]}
executor:
  kind: http
  url: "{{url}}"
egress:
  profile: proxy_allowlist
  allowed_domains: [api.example.com, "*.docs.example.com"]
  allowed_ports: [443, 8443]
`

func TestPrepareTargets(t *testing.T) {
	a := loadOne(t, fetchManifest)
	gh := loadOne(t, goodHTTP)
	tests := []struct {
		name       string
		a          *Action
		args       string
		learned    []string
		hosts      []string
		unresolved []string
		forbidden  []string
	}{
		{"listed", a, `{"url":"https://api.example.com/x"}`, nil, []string{"api.example.com"}, nil, nil},
		{"listed wildcard", a, `{"url":"https://a.b.docs.example.com/x"}`, nil, []string{"a.b.docs.example.com"}, nil, nil},
		{"listed port", a, `{"url":"https://api.example.com:8443/x"}`, nil, []string{"api.example.com"}, nil, nil},
		{"unlisted port", a, `{"url":"https://api.example.com:9000/x"}`, nil, []string{"api.example.com"}, []string{"api.example.com:9000"}, nil},
		{"apex not wildcard", a, `{"url":"https://docs.example.com/"}`, nil, []string{"docs.example.com"}, []string{"docs.example.com"}, nil},
		{"unresolved", a, `{"url":"https://news.example.org/"}`, nil, []string{"news.example.org"}, []string{"news.example.org"}, nil},
		{"idn punycode", a, `{"url":"https://bücher.example/"}`, nil, []string{"xn--bcher-kva.example"}, []string{"xn--bcher-kva.example"}, nil},
		{"learned", a, `{"url":"https://news.example.org/"}`, []string{"news.example.org"}, []string{"news.example.org"}, nil, nil},
		{"learned other port", a, `{"url":"https://news.example.org:444/"}`, []string{"news.example.org"}, []string{"news.example.org"}, []string{"news.example.org:444"}, nil},
		{"metadata ip", a, `{"url":"http://169.254.169.254/latest"}`, nil, []string{"169.254.169.254"}, nil, []string{"169.254.169.254"}},
		{"loopback", a, `{"url":"https://127.0.0.1/"}`, nil, []string{"127.0.0.1"}, nil, []string{"127.0.0.1"}},
		{"single label", a, `{"url":"https://intranet/"}`, nil, []string{"intranet"}, nil, []string{"intranet"}},
		{"localhost", a, `{"url":"https://app.localhost/"}`, nil, []string{"app.localhost"}, nil, []string{"app.localhost"}},
		{"internal", a, `{"url":"https://db.internal/"}`, nil, []string{"db.internal"}, nil, []string{"db.internal"}},
		{"ipv6 loopback", a, `{"url":"https://[::1]/"}`, nil, []string{"::1"}, nil, []string{"::1"}},
		{"non-canonical numeric", a, `{"url":"https://2130706433/"}`, nil, []string{"2130706433"}, nil, []string{"2130706433"}},
		{"octal host", a, `{"url":"https://0177.0.0.1/"}`, nil, []string{"0177.0.0.1"}, nil, []string{"0177.0.0.1"}},
		{"public ip", a, `{"url":"https://93.184.216.34/"}`, nil, []string{"93.184.216.34"}, []string{"93.184.216.34"}, nil},
		{"static host", gh, `{"owner":"o","repo":"r","title":"t"}`, nil, []string{"api.github.com"}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.a.Prepare(json.RawMessage(tc.args), tc.learned)
			if err != nil {
				t.Fatalf("Prepare(%s) = %v", tc.args, err)
			}
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"TargetHosts", p.TargetHosts, tc.hosts}, {"Unresolved", p.Unresolved, tc.unresolved}, {"Forbidden", p.Forbidden, tc.forbidden}} {
				if c.want == nil {
					c.want = []string{}
				}
				if !slices.Equal(c.got, c.want) {
					t.Errorf("Prepare(%s).%s = %v, want %v", tc.args, c.what, c.got, c.want)
				}
			}
		})
	}
}

func TestPrepareTemplateErrors(t *testing.T) {
	a := loadOne(t, fetchManifest)
	gh := loadOne(t, goodHTTP)
	loose := loadOne(t, strings.Replace(fetchManifest, "input_schema: {type: object, properties: {url: {type: string}}, required: [url]}", "input_schema: {type: object}", 1))
	hdr := loadOne(t, strings.Replace(goodHTTP, "headers: {", `headers: {X-Note: "{{note}}", `, 1))
	tests := []struct {
		name, args, field string
		a                 *Action
	}{
		{"not http", `{"url":"ftp://api.example.com/"}`, "executor.url", a},
		{"userinfo", `{"url":"https://u:p@api.example.com/"}`, "executor.url", a},
		{"url not string", `{"url":5}`, "executor.url", loose},
		{"url absent", `{}`, "executor.url", loose},
		{"missing arg", `{"owner":"o","repo":"r"}`, "executor.body/title", gh},
		{"dot dot", `{"owner":"o","repo":"..","title":"t"}`, "executor.url", gh},
		{"object in path", `{"owner":{"a":1},"repo":"r","title":"t"}`, "executor.url", gh},
		{"crlf header", `{"owner":"o","repo":"r","title":"t","note":"a\r\nX-Evil: 1"}`, "executor.headers.X-Note", hdr},
		{"nul header", `{"owner":"o","repo":"r","title":"t","note":"a\u0000b"}`, "executor.headers.X-Note", hdr},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.a.Prepare(json.RawMessage(tc.args), nil)
			var te *TemplateError
			if !errors.As(err, &te) {
				t.Fatalf("Prepare(%s) = %v, want *TemplateError", tc.args, err)
			}
			if te.Field != tc.field {
				t.Errorf("Prepare(%s).Field = %q, want %q", tc.args, te.Field, tc.field)
			}
		})
	}
}

func TestPrepareSecretBearingForbidsUnlistedHost(t *testing.T) {
	a := loadOne(t, strings.Replace(strings.Replace(fetchManifest, "executor:\n", "secrets: [TOKEN]\nexecutor:\n", 1),
		"  url: \"{{url}}\"\n", "  url: \"{{url}}\"\n  headers: {Authorization: \"Bearer {{secret.TOKEN}}\"}\n", 1))
	p, err := a.Prepare(json.RawMessage(`{"url":"https://news.example.org/"}`), []string{"news.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Forbidden, []string{"news.example.org"}) || len(p.Unresolved) != 0 {
		t.Errorf("secret-bearing to learned host: Forbidden %v Unresolved %v, want forbidden", p.Forbidden, p.Unresolved)
	}
	if _, err := a.Prepare(json.RawMessage(`{"url":"http://api.example.com/"}`), nil); err == nil {
		t.Errorf("secret-bearing over http: Prepare = nil, want *TemplateError")
	}
}

func TestEchoRunner(t *testing.T) {
	a := loadOne(t, "action_id: e\nversion: 1\nexecutor: {kind: echo}\n")
	r, err := NewRunner(RunnerConfig{}, RunnerDeps{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Prepare(json.RawMessage(`{ "b": [1, 2], "a": "x" }`), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := r.Execute(context.Background(), p, GrantInfo{ID: "g"})
	if res.Kind != KindSuccess || res.Verification != UnverifiableDeclared || string(res.Output) != `{"b":[1,2],"a":"x"}` {
		t.Errorf("echo = %+v, want success unverifiable_declared compact output", res)
	}
	if res.ResponseHash != p.RequestHash {
		t.Errorf("echo ResponseHash = %s, want the request hash %s", res.ResponseHash, p.RequestHash)
	}
}

func TestSecretSource(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(file, []byte("TOKEN: from-file-123\nOTHER: other-secret-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := NewSecretSource(map[string]string{"LATCHGATE_SECRET_TOKEN": "from-env-1234", "PATH": "/bin"}, file)
	if err != nil {
		t.Fatalf("NewSecretSource = %v", err)
	}
	if v, _ := src.Secret("TOKEN"); v != "from-env-1234" {
		t.Errorf("Secret(TOKEN) = %q, want the environment's value", v)
	}
	if v, _ := src.Secret("OTHER"); v != "other-secret-1" {
		t.Errorf("Secret(OTHER) = %q, want the file's value", v)
	}
	if _, ok := src.Secret("PATH"); ok {
		t.Errorf("Secret(PATH) found, want only LATCHGATE_SECRET_ variables")
	}
	_, err = NewSecretSource(map[string]string{"LATCHGATE_SECRET_SHORT": "1234567"}, "")
	if !errors.Is(err, ErrSecretTooShort) || strings.Contains(err.Error(), "1234567") {
		t.Errorf("short secret: err = %v, want ErrSecretTooShort without the value", err)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSecretSource(nil, file); !errors.Is(err, ErrSecretsFileMode) {
		t.Errorf("0644 secrets file: err = %v, want ErrSecretsFileMode", err)
	}
}
