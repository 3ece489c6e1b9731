package actions

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// Redacted replaces secret values in outputs, summaries and errors.
const Redacted = "[REDACTED]"

// redactor replaces every known encoding of the secrets one request used:
// raw, JSON-escaped, base64 (standard and URL alphabets, padded and not),
// and URL-encoded (query and path escaping). It cannot find a secret that
// was transformed otherwise (hashed, split, base64 at a non-aligned offset).
type redactor struct {
	repl    *strings.Replacer
	needles []string
}

func newRedactor(secrets []string) *redactor {
	var needles []string
	add := func(s string) {
		if s != "" && !slices.Contains(needles, s) {
			needles = append(needles, s)
		}
	}
	for _, s := range secrets {
		add(s)
		if b, err := json.Marshal(s); err == nil {
			add(string(b[1 : len(b)-1]))
		}
		add(jsonEscapeNoHTML(s))
		b := []byte(s)
		add(base64.StdEncoding.EncodeToString(b))
		add(base64.RawStdEncoding.EncodeToString(b))
		add(base64.URLEncoding.EncodeToString(b))
		add(base64.RawURLEncoding.EncodeToString(b))
		add(url.QueryEscape(s))
		add(url.PathEscape(s))
	}
	// Longest first, so a longer encoding wins over a prefix of it.
	slices.SortStableFunc(needles, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(needles))
	for _, n := range needles {
		pairs = append(pairs, n, Redacted)
	}
	return &redactor{repl: strings.NewReplacer(pairs...), needles: needles}
}

func jsonEscapeNoHTML(s string) string {
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return ""
	}
	out := strings.TrimSuffix(sb.String(), "\n")
	return out[1 : len(out)-1]
}

// str redacts one string.
func (r *redactor) str(s string) string {
	if len(r.needles) == 0 {
		return s
	}
	return r.repl.Replace(s)
}

// contains reports whether s holds any secret encoding.
func (r *redactor) contains(s string) bool {
	for _, n := range r.needles {
		if strings.Contains(s, n) {
			return true
		}
	}
	return false
}

// value redacts a decoded JSON value: strings, member names and numbers (a
// number whose text holds a secret becomes the string "[REDACTED]").
func (r *redactor) value(v any) any {
	if len(r.needles) == 0 {
		return v
	}
	switch x := v.(type) {
	case string:
		return r.str(x)
	case json.Number:
		if r.contains(string(x)) {
			return Redacted
		}
		return x
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.value(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[r.str(k)] = r.value(e)
		}
		return out
	}
	return v
}
