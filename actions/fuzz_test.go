package actions

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzTemplateParse(f *testing.F) {
	for _, s := range []string{"", "plain", "{{a}}", "x{{ a.b }}y", "{{secret.TOKEN}}", "{{a?}}", "{{", "}}", "{{}}", "{{secret}}", "{{{a}}}", "a{{b}}c{{secret.X_1}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := parseTemplate(s)
		if err != nil {
			return
		}
		again, err := parseTemplate(tm.source())
		if err != nil {
			t.Fatalf("parseTemplate(source(%q)) = %v", s, err)
		}
		if !reflect.DeepEqual(mergeLiterals(again.parts), mergeLiterals(tm.parts)) {
			t.Fatalf("round trip of %q: %+v != %+v", s, again.parts, tm.parts)
		}
		args := map[string]any{"a": "{{secret.TOKEN}}", "b": json.Number("1")}
		out, err := tm.renderText(args, func(string) (string, error) { return "SECRETVALUE", nil }, nil, true)
		if err == nil && !tm.hasSecret() && !strings.Contains(s, "SECRETVALUE") && strings.Contains(out, "SECRETVALUE") {
			t.Fatalf("template %q without a secret placeholder rendered a secret", s)
		}
	})
}

// mergeLiterals joins adjacent literal parts (source() may merge them).
func mergeLiterals(parts []tmplPart) []tmplPart {
	var out []tmplPart
	for _, p := range parts {
		if n := len(out); n > 0 && p.isLiteral() && out[n-1].isLiteral() {
			out[n-1].lit += p.lit
			continue
		}
		out = append(out, p)
	}
	return out
}

func FuzzManifestParse(f *testing.F) {
	f.Add([]byte("action_id: e\nversion: 1\nexecutor: {kind: echo}\n"))
	f.Add([]byte(goodHTTP))
	f.Add([]byte(fetchManifest))
	f.Add([]byte(secretManifest))
	f.Add([]byte(schemaManifest))
	f.Add([]byte("x: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := parseManifest("fuzz.yaml", data, DefaultMaxRequestCap)
		if err != nil {
			if _, ok := err.(*ManifestError); !ok {
				t.Fatalf("parseManifest error %T, want *ManifestError", err)
			}
			return
		}
		b, err := parseManifest("fuzz.yaml", data, DefaultMaxRequestCap)
		if err != nil || a.Digest != b.Digest {
			t.Fatalf("parseManifest not deterministic: %v %s %s", err, a.Digest, b.Digest)
		}
		_, _ = a.Prepare(json.RawMessage(`{"url":"https://api.example.com/"}`), nil)
	})
}

func FuzzPrepareArgs(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"title":"a"}`, `{"title":"a","n":9007199254740993}`, `{"a":1,"a":2}`, `{"title":"\ud800"}`, `[1e400]`, `{"title":"x","tags":["a"],"nested":{"a":true}}`, "{\"title\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	reg, err := parseManifest("s.yaml", []byte(schemaManifest), DefaultMaxRequestCap)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := reg.Prepare(data, nil)
		_, ijErr := parseIJSON(data)
		if len(data) > 0 && ijErr == nil && !json.Valid(data) {
			t.Fatalf("parseIJSON accepted %q that encoding/json rejects", data)
		}
		if ijErr == nil && !utf8.Valid(data) {
			t.Fatalf("parseIJSON accepted invalid UTF-8 %q", data)
		}
		if err == nil && (p.RequestHash == "" || p.Action != reg) {
			t.Fatalf("Prepare(%q) = incomplete plan", data)
		}
	})
}
