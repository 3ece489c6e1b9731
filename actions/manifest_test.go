package actions

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/definitions"
)

// memFS builds an embedded-style FS from manifest texts.
func memFS(files map[string]string) fstest.MapFS {
	m := fstest.MapFS{}
	for name, text := range files {
		m["manifests/"+name] = &fstest.MapFile{Data: []byte(text)}
	}
	return m
}

func loadOne(t *testing.T, text string) *Action {
	t.Helper()
	reg, err := Load(LoadConfig{FS: memFS(map[string]string{"a.yaml": text})}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Load = %v, want nil", err)
	}
	if reg.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", reg.Len())
	}
	return reg.List()[0]
}

func TestLoadEmbeddedCatalogue(t *testing.T) {
	reg, err := Load(LoadConfig{FS: definitions.Manifests}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Load(embedded) = %v, want nil", err)
	}
	a, ok := reg.Get("echo")
	if !ok {
		t.Fatalf("Get(echo) missing")
	}
	if a.ExecutorKind != KindEcho || a.Egress.Profile != ProfileNone {
		t.Errorf("echo = kind %q profile %q, want echo none", a.ExecutorKind, a.Egress.Profile)
	}
	list := reg.List()
	for i := 1; i < len(list); i++ {
		if list[i-1].ID >= list[i].ID {
			t.Errorf("List() not sorted at %d: %s >= %s", i, list[i-1].ID, list[i].ID)
		}
	}
}

func TestManifestDefaults(t *testing.T) {
	a := loadOne(t, "action_id: x\nversion: 1.0\nexecutor: {kind: echo}\n")
	checks := []struct {
		name      string
		got, want any
	}{
		{"version", a.Version, "1.0"},
		{"description", a.Description, ""},
		{"risk_level", a.RiskLevel, "low"},
		{"required_scopes", strings.Join(a.RequiredScopes, ","), "tools:call"},
		{"side_effects", len(a.SideEffects), 0},
		{"cost", a.CostCents, int64(0)},
		{"input_schema", string(a.InputSchema), `{"type":"object"}`},
		{"secrets", len(a.Secrets), 0},
		{"profile", a.Egress.Profile, "none"},
		{"ports", a.Egress.AllowedPorts[0], 443},
		{"timeout", a.Timeout, 30 * time.Second},
		{"max_request_bytes", a.MaxRequestBytes, int64(64 << 10)},
		{"max_response_bytes", a.MaxResponseBytes, int64(1 << 20)},
		{"expect_status", len(a.ExpectStatus), 0},
		{"allow_insecure_http", a.AllowInsecureHTTP, false},
		{"digest prefix", strings.HasPrefix(a.Digest, "sha256:") && len(a.Digest) == 71, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

const goodHTTP = `action_id: gh
version: 1.0.0
secrets: [GITHUB_TOKEN]
executor:
  kind: http
  method: POST
  url: https://api.github.com/repos/{{owner}}/{{repo}}/issues
  headers: {Authorization: "Bearer {{secret.GITHUB_TOKEN}}"}
  body: {title: "{{title}}"}
egress:
  profile: proxy_allowlist
  allowed_domains: [api.github.com]
`

func TestBadManifests(t *testing.T) {
	base := "action_id: x\nversion: 1.0.0\nexecutor: {kind: echo}\n"
	tests := []struct {
		name, text, field string
	}{
		{"not yaml", "action_id: [", ""},
		{"not a mapping", "- a\n- b\n", ""},
		{"two documents", base + "---\n" + base, ""},
		{"unknown field", base + "colour: red\n", "colour"},
		{"duplicate key", base + "version: 2.0.0\n", "version"},
		{"missing action_id", "version: 1.0.0\nexecutor: {kind: echo}\n", "action_id"},
		{"bad action_id", "action_id: Bad-Id\nversion: 1.0.0\nexecutor: {kind: echo}\n", "action_id"},
		{"long action_id", "action_id: " + strings.Repeat("a", 65) + "\nversion: 1\nexecutor: {kind: echo}\n", "action_id"},
		{"missing version", "action_id: x\nexecutor: {kind: echo}\n", "version"},
		{"missing executor", "action_id: x\nversion: 1.0.0\n", "executor"},
		{"missing kind", "action_id: x\nversion: 1.0.0\nexecutor: {}\n", "executor.kind"},
		{"bad kind", "action_id: x\nversion: 1.0.0\nexecutor: {kind: shell}\n", "executor.kind"},
		{"bad risk", base + "risk_level: extreme\n", "risk_level"},
		{"bad scope", base + "required_scopes: [Tools]\n", "required_scopes[0]"},
		{"scope not list", base + "required_scopes: tools:call\n", "required_scopes"},
		{"bad side effect", base + "side_effects: [\"Write It\"]\n", "side_effects[0]"},
		{"negative cost", base + "cost_usd_cents: -1\n", "cost_usd_cents"},
		{"cost not int", base + "cost_usd_cents: 1.5\n", "cost_usd_cents"},
		{"schema not object", base + "input_schema: [1]\n", "input_schema"},
		{"schema invalid", base + "input_schema: {type: 12}\n", "input_schema"},
		{"schema remote ref", base + "input_schema: {$ref: \"https://example.com/s.json\"}\n", "input_schema"},
		{"schema file ref", base + "input_schema: {$ref: \"file:///etc/passwd\"}\n", "input_schema"},
		{"bad secret name", base + "secrets: [lower]\n", "secrets[0]"},
		{"request cap", base + "max_request_bytes: 2097152\n", "max_request_bytes"},
		{"timeout zero", "action_id: x\nversion: 1\nexecutor: {kind: echo, timeout_seconds: 0}\n", "executor.timeout_seconds"},
		{"echo with url", "action_id: x\nversion: 1\nexecutor: {kind: echo, url: \"https://a.example\"}\n", "executor.url"},
		{"bad profile", base + "egress: {profile: open}\n", "egress.profile"},
		{"domains with none", base + "egress: {allowed_domains: [a.example.com]}\n", "egress.allowed_domains"},
		{"bad domain", base + "egress: {profile: proxy_allowlist, allowed_domains: [\"*\"]}\n", "egress.allowed_domains[0]"},
		{"unnormalised domain", base + "egress: {profile: proxy_allowlist, allowed_domains: [API.github.com]}\n", "egress.allowed_domains[0]"},
		{"bad port", base + "egress: {profile: proxy_allowlist, allowed_ports: [0]}\n", "egress.allowed_ports[0]"},
		{"yaml alias", "x: &a 1\naction_id: x\nversion: 1\nexecutor: {kind: echo}\ny: *a\n", "y"},
		{"http without egress", goodHTTP[:strings.Index(goodHTTP, "egress:")], "egress.profile"},
		{"http no url", strings.Replace(goodHTTP, "  url: https://api.github.com/repos/{{owner}}/{{repo}}/issues\n", "", 1), "executor.url"},
		{"http host not listed", strings.Replace(goodHTTP, "api.github.com/repos", "evil.example.com/repos", 1), "executor.url"},
		{"http port not listed", strings.Replace(goodHTTP, "api.github.com/repos", "api.github.com:8443/repos", 1), "executor.url"},
		{"secret not listed", strings.Replace(goodHTTP, "secrets: [GITHUB_TOKEN]\n", "", 1), "executor.headers.Authorization"},
		{"secret over http", strings.Replace(goodHTTP, "https://api.github.com/", "http://api.github.com/", 1), "executor.url"},
		{"secret in host", strings.Replace(goodHTTP, "https://api.github.com/", "https://{{secret.GITHUB_TOKEN}}.github.com/", 1), "executor.url"},
		{"placeholder in scheme", strings.Replace(goodHTTP, "url: https://api.github.com/repos/{{owner}}/{{repo}}/issues", `url: "{{s}}://api.github.com/"`, 1), "executor.url"},
		{"unclosed placeholder", strings.Replace(goodHTTP, "{{title}}", "{{title", 1), "executor.body/title"},
		{"bad placeholder", strings.Replace(goodHTTP, "{{title}}", "{{ti tle}}", 1), "executor.body/title"},
		{"reserved secret word", strings.Replace(goodHTTP, "{{title}}", "{{secret}}", 1), "executor.body/title"},
		{"bad method", strings.Replace(goodHTTP, "method: POST", "method: post", 1), "executor.method"},
		{"GET with body", strings.Replace(goodHTTP, "method: POST", "method: GET", 1), "executor.method"},
		{"reserved header", strings.Replace(goodHTTP, "headers: {", "headers: {Host: x, ", 1), "executor.headers.Host"},
		{"bad header name", strings.Replace(goodHTTP, "headers: {", "headers: {\"a b\": x, ", 1), "executor.headers.a b"},
		{"expect_status range", strings.Replace(goodHTTP, "  kind: http\n", "  kind: http\n  expect_status: [99]\n", 1), "executor.expect_status[0]"},
		{"max_response_bytes", strings.Replace(goodHTTP, "  kind: http\n", "  kind: http\n  max_response_bytes: 0\n", 1), "executor.max_response_bytes"},
		{"insecure not bool", strings.Replace(goodHTTP, "  kind: http\n", "  kind: http\n  allow_insecure_http: yes\n", 1), "executor.allow_insecure_http"},
		{"body and form", strings.Replace(goodHTTP, "  kind: http\n", "  kind: http\n  form: {a: b}\n", 1), "executor.form"},
		{"fragment", strings.Replace(goodHTTP, "/issues", "/issues#{{x}}", 1), "executor.url"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(LoadConfig{FS: memFS(map[string]string{"bad.yaml": tc.text})}, zerolog.Nop())
			var me *ManifestError
			if !errors.As(err, &me) {
				t.Fatalf("Load(%s) = %v, want *ManifestError", tc.name, err)
			}
			if me.File != "manifests/bad.yaml" || me.Field != tc.field {
				t.Errorf("Load(%s) = file %q field %q (%v), want file manifests/bad.yaml field %q", tc.name, me.File, me.Field, me, tc.field)
			}
			if !strings.Contains(me.Error(), "manifests/bad.yaml") {
				t.Errorf("Error() = %q, want it to name the file", me.Error())
			}
		})
	}
}

func TestLoadGoodHTTP(t *testing.T) {
	a := loadOne(t, goodHTTP)
	if a.http == nil || a.http.method != "POST" || len(a.http.secretHeaders) != 1 || !a.http.usesSecrets {
		t.Fatalf("http spec = %+v, want POST with one secret header", a.http)
	}
}

func TestDigest(t *testing.T) {
	a1 := loadOne(t, goodHTTP)
	a2 := loadOne(t, "# a comment\n"+strings.ReplaceAll(goodHTTP, "version: 1.0.0", "version: \"1.0.0\""))
	if a1.Digest != a2.Digest {
		t.Errorf("digest changed with formatting only: %s vs %s", a1.Digest, a2.Digest)
	}
	a3 := loadOne(t, strings.Replace(goodHTTP, "{{title}}", "{{title}}!", 1))
	if a3.Digest == a1.Digest {
		t.Errorf("digest unchanged after the body template changed")
	}
	a4 := loadOne(t, goodHTTP+"cost_usd_cents: 0\nrisk_level: low\n")
	if a4.Digest != a1.Digest {
		t.Errorf("digest changed when defaults were written out: %s vs %s", a4.Digest, a1.Digest)
	}
	a5 := loadOne(t, goodHTTP+"risk_level: high\n")
	if a5.Digest == a1.Digest {
		t.Errorf("digest unchanged after risk_level changed")
	}
}

func TestOverrideDirAndDev(t *testing.T) {
	dir := t.TempDir()
	embedded := memFS(map[string]string{"echo.yaml": "action_id: echo\nversion: 1.0.0\nexecutor: {kind: echo}\n"})
	if err := os.WriteFile(filepath.Join(dir, "echo.yaml"), []byte("action_id: echo\nversion: 2.0.0\nexecutor: {kind: echo}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg, err := Load(LoadConfig{FS: embedded, Dir: dir}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if a, _ := reg.Get("echo"); a.Version != "2.0.0" {
		t.Errorf("override: version = %s, want 2.0.0", a.Version)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("action_id: bad\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(LoadConfig{FS: embedded, Dir: dir}, zerolog.Nop()); err == nil {
		t.Errorf("Load with a bad manifest = nil error, want failure")
	}
	reg, err = Load(LoadConfig{FS: embedded, Dir: dir, Dev: true}, zerolog.Nop())
	if err != nil || reg.Len() != 1 {
		t.Fatalf("Load(dev) = %v, len %d; want nil, 1", err, reg.Len())
	}
	if err := os.WriteFile(filepath.Join(dir, "echo2.yaml"), []byte("action_id: echo\nversion: 3.0.0\nexecutor: {kind: echo}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(LoadConfig{FS: embedded, Dir: dir, Dev: true}, zerolog.Nop()); err == nil {
		t.Errorf("Load with two files for one action_id = nil error, want failure")
	}
}

func TestDescribe(t *testing.T) {
	a := loadOne(t, goodHTTP)
	b, err := json.Marshal(a.Describe())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	eg, _ := json.Marshal(got["egress"])
	if string(eg) != `{"proxy_allowlist":{"allowed_domains":["api.github.com"]}}` {
		t.Errorf("egress = %s, want proxy_allowlist form", eg)
	}
	for _, k := range []string{"action_id", "version", "description", "risk_level", "required_scopes", "side_effects", "cost_usd_cents", "digest", "input_schema"} {
		if _, ok := got[k]; !ok {
			t.Errorf("Describe() lacks %q", k)
		}
	}
	e := loadOne(t, "action_id: e\nversion: 1\nexecutor: {kind: echo}\n")
	b, _ = json.Marshal(e.Describe().Egress)
	if string(b) != `"none"` {
		t.Errorf("echo egress = %s, want \"none\"", b)
	}
}

// TestUnreadableOverrideFailsLoad: a *.yaml entry of the manifests
// directory that cannot be read (a dangling symlink) fails the load like
// any bad manifest; skipping it would silently serve the embedded
// manifest it was meant to replace.
func TestUnreadableOverrideFailsLoad(t *testing.T) {
	dir := t.TempDir()
	embedded := memFS(map[string]string{"echo.yaml": "action_id: echo\nversion: 1.0.0\nexecutor: {kind: echo}\n"})
	if err := os.Symlink(filepath.Join(dir, "missing", "echo.yaml"), filepath.Join(dir, "echo.yaml")); err != nil {
		t.Fatal(err)
	}
	reg, err := Load(LoadConfig{FS: embedded, Dir: dir}, zerolog.Nop())
	var me *ManifestError
	if !errors.As(err, &me) || !strings.Contains(me.File, "echo.yaml") {
		v := ""
		if reg != nil {
			if a, ok := reg.Get("echo"); ok {
				v = a.Version
			}
		}
		t.Fatalf("Load(dir with a dangling echo.yaml symlink) = %v (echo version %q), want a *ManifestError naming echo.yaml", err, v)
	}
}
