package actions

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
)

// A template is manifest-authored text parsed once at load into literal
// parts and placeholders. Argument values are inserted at render time as
// opaque data and never re-scanned, so an argument containing "{{secret.X}}"
// stays literal text.
type template struct {
	parts []tmplPart
}

// tmplPart is a literal (when both arg and secret are empty) or one
// placeholder: {{name}}, {{name?}} (optional) or {{secret.NAME}}.
type tmplPart struct {
	lit      string
	arg      []string // argument path, "a.b" → ["a","b"]
	optional bool
	secret   string
}

func (p tmplPart) isLiteral() bool { return p.arg == nil && p.secret == "" }

var (
	argNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,63}$`)
	secretNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)
)

// maxTemplateLen bounds one template's source text.
const maxTemplateLen = 16 << 10

// parseTemplate parses s. Every "{{" must open a well-formed placeholder.
func parseTemplate(s string) (template, error) {
	if len(s) > maxTemplateLen {
		return template{}, errors.New("template longer than 16 KiB")
	}
	var t template
	rest := s
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			if rest != "" {
				t.parts = append(t.parts, tmplPart{lit: rest})
			}
			return t, nil
		}
		if i > 0 {
			t.parts = append(t.parts, tmplPart{lit: rest[:i]})
		}
		rest = rest[i+2:]
		j := strings.Index(rest, "}}")
		if j < 0 {
			return template{}, errors.New(`unclosed "{{"`)
		}
		part, err := parsePlaceholder(strings.TrimSpace(rest[:j]))
		if err != nil {
			return template{}, err
		}
		t.parts = append(t.parts, part)
		rest = rest[j+2:]
	}
}

func parsePlaceholder(name string) (tmplPart, error) {
	if sec, ok := strings.CutPrefix(name, "secret."); ok {
		if !secretNameRE.MatchString(sec) {
			return tmplPart{}, errors.New("secret name must match " + secretNameRE.String())
		}
		return tmplPart{secret: sec}, nil
	}
	optional := false
	if n, ok := strings.CutSuffix(name, "?"); ok {
		name, optional = n, true
	}
	if name == "" {
		return tmplPart{}, errors.New("empty placeholder")
	}
	path := strings.Split(name, ".")
	if path[0] == "secret" {
		return tmplPart{}, errors.New(`"secret" is reserved: use {{secret.NAME}}`)
	}
	for _, seg := range path {
		if !argNameRE.MatchString(seg) {
			return tmplPart{}, errors.New("placeholder name must be argument names joined by '.' (letters, digits, '_' and '-')")
		}
	}
	return tmplPart{arg: path, optional: optional}, nil
}

// single reports whether the template is exactly one placeholder.
func (t template) single() (tmplPart, bool) {
	if len(t.parts) == 1 && !t.parts[0].isLiteral() {
		return t.parts[0], true
	}
	return tmplPart{}, false
}

// secrets returns the secret names the template uses.
func (t template) secrets() []string {
	var out []string
	for _, p := range t.parts {
		if p.secret != "" {
			out = append(out, p.secret)
		}
	}
	return out
}

func (t template) hasSecret() bool { return len(t.secrets()) > 0 }

// source reassembles the template text (used for digests and errors).
func (t template) source() string {
	var sb strings.Builder
	for _, p := range t.parts {
		switch {
		case p.secret != "":
			sb.WriteString("{{secret." + p.secret + "}}")
		case p.arg != nil:
			sb.WriteString("{{" + strings.Join(p.arg, "."))
			if p.optional {
				sb.WriteString("?")
			}
			sb.WriteString("}}")
		default:
			sb.WriteString(p.lit)
		}
	}
	return sb.String()
}

// lookupArg finds an argument by path in decoded arguments.
func lookupArg(args any, path []string) (any, bool) {
	cur := args
	for _, seg := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// errArgAbsent marks a missing required argument.
var errArgAbsent = errors.New("argument is absent")

// scalarText renders a scalar the way URLs and headers see it: strings as
// themselves, numbers and booleans as their JSON text. Objects, arrays and
// null are refused (allowJSON renders them as compact JSON instead).
func scalarText(v any, allowJSON bool) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return string(x), nil
	case bool:
		if x {
			return "true", nil
		}
		return "false", nil
	}
	if allowJSON {
		b, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	if v == nil {
		return "", errors.New("argument is null, want a string, number or boolean")
	}
	return "", errors.New("argument is an object or array, want a string, number or boolean")
}

// secretFunc resolves a secret name at render time.
type secretFunc func(name string) (string, error)

// renderText renders t with each placeholder's text passed through enc
// (nil = as is). Secrets pass through enc as well.
func (t template) renderText(args any, secret secretFunc, enc func(string) string, allowJSON bool) (string, error) {
	var sb strings.Builder
	for _, p := range t.parts {
		var s string
		switch {
		case p.isLiteral():
			sb.WriteString(p.lit)
			continue
		case p.secret != "":
			v, err := secret(p.secret)
			if err != nil {
				return "", err
			}
			s = v
		default:
			v, ok := lookupArg(args, p.arg)
			if !ok {
				if p.optional {
					continue
				}
				return "", errArgAbsent
			}
			var err error
			if s, err = scalarText(v, allowJSON); err != nil {
				return "", err
			}
		}
		if enc != nil {
			s = enc(s)
		}
		sb.WriteString(s)
	}
	return sb.String(), nil
}
