package actions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/latchgate/latchgate/egress"
)

// httpSpec is the parsed executor section of an http manifest.
type httpSpec struct {
	method  string
	url     urlTemplate
	headers []headerTmpl // sorted by canonical name
	body    *bodyNode    // nil: no JSON body
	form    []formField  // nil: no form body; sorted by key
	// secretHeaders are the canonical names of headers whose template uses
	// a secret; they are stripped on a cross-origin redirect.
	secretHeaders []string
	bodySecret    bool // the body or form uses a secret
	usesSecrets   bool // any part of the request uses a secret
}

type headerTmpl struct {
	name string // canonical
	t    template
}

type formField struct {
	key string
	t   template
}

// urlCtx says where in a URL a placeholder sits, which decides its encoding.
type urlCtx uint8

const (
	ctxPath  urlCtx = iota // url.PathEscape
	ctxQuery               // url.QueryEscape
	ctxHost                // must be one DNS label; never a secret
)

type urlTemplate struct {
	t     template
	ctx   []urlCtx // per part of t
	whole bool     // the URL is exactly one argument placeholder
}

// hostLabelRE is what an argument placed in a URL's host must look like.
var hostLabelRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

func parseHTTPSpec(a *Action, spec *httpSpec, urlNode, headersNode, bodyNode, formNode *yaml.Node) error {
	if a.Egress.Profile != ProfileProxyAllowlist {
		return ferr("egress.profile", "must be proxy_allowlist for executor kind http")
	}
	if urlNode == nil {
		return ferr("executor.url", "is required for executor kind http")
	}
	raw, err := yamlString(urlNode, "executor.url")
	if err != nil {
		return err
	}
	if spec.url, err = parseURLTemplate(raw); err != nil {
		return ferr("executor.url", "%v", err)
	}
	if err := checkSecretNames(a, "executor.url", spec.url.t); err != nil {
		return err
	}
	if headersNode != nil {
		entries, err := mappingEntries(headersNode, "executor.headers")
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, e := range entries {
			f := "executor.headers." + e.key
			if !headerNameRE.MatchString(e.key) {
				return ferr(f, "is not a valid header name")
			}
			name := http.CanonicalHeaderKey(e.key)
			if slices.Contains(reservedHeaders[:], strings.ToLower(name)) {
				return ferr(f, "is set by the transport and may not be templated")
			}
			if seen[name] {
				return ferr(f, "duplicate header (names are case-insensitive)")
			}
			seen[name] = true
			s, err := yamlScalarString(e.val, f)
			if err != nil {
				return err
			}
			t, err := parseTemplate(s)
			if err != nil {
				return ferr(f, "%v", err)
			}
			if err := checkSecretNames(a, f, t); err != nil {
				return err
			}
			spec.headers = append(spec.headers, headerTmpl{name: name, t: t})
			if t.hasSecret() {
				spec.secretHeaders = append(spec.secretHeaders, name)
			}
		}
		slices.SortFunc(spec.headers, func(x, y headerTmpl) int { return strings.Compare(x.name, y.name) })
	}
	if bodyNode != nil && formNode != nil {
		return ferr("executor.form", "cannot be combined with executor.body")
	}
	if (bodyNode != nil || formNode != nil) && (spec.method == "GET" || spec.method == "HEAD") {
		return ferr("executor.method", "%s cannot carry executor.body or executor.form", spec.method)
	}
	if bodyNode != nil {
		if spec.body, err = parseBody(a, bodyNode, "executor.body", 0); err != nil {
			return err
		}
		spec.bodySecret = spec.body.hasSecret()
	}
	if formNode != nil {
		entries, err := mappingEntries(formNode, "executor.form")
		if err != nil {
			return err
		}
		spec.form = []formField{}
		for _, e := range entries {
			f := "executor.form." + e.key
			s, err := yamlScalarString(e.val, f)
			if err != nil {
				return err
			}
			t, err := parseTemplate(s)
			if err != nil {
				return ferr(f, "%v", err)
			}
			if err := checkSecretNames(a, f, t); err != nil {
				return err
			}
			spec.bodySecret = spec.bodySecret || t.hasSecret()
			spec.form = append(spec.form, formField{key: e.key, t: t})
		}
		slices.SortFunc(spec.form, func(x, y formField) int { return strings.Compare(x.key, y.key) })
	}
	spec.usesSecrets = spec.url.t.hasSecret() || len(spec.secretHeaders) > 0 || spec.bodySecret

	// Probe the URL with placeholder values to check its static parts now.
	if spec.url.whole {
		return nil
	}
	probe, err := spec.url.render(map[string]any{}, func(string) (string, error) { return "probe", nil }, true)
	if err != nil {
		return ferr("executor.url", "%v", err)
	}
	h, port, scheme, err := egress.HostFromURL(probe)
	if err != nil {
		return ferr("executor.url", "%v", err)
	}
	if scheme == "http" && spec.usesSecrets && !a.AllowInsecureHTTP {
		return ferr("executor.url", "a request carrying a secret must use https (or set executor.allow_insecure_http)")
	}
	if !spec.url.hostTemplated() && !a.allow.Allows(h, port) {
		return ferr("executor.url", "host %s port %d is not in egress.allowed_domains/allowed_ports", h, port)
	}
	return nil
}

func checkSecretNames(a *Action, field string, t template) error {
	for _, s := range t.secrets() {
		if !slices.Contains(a.Secrets, s) {
			return ferr(field, "uses {{secret.%s}} but %s is not listed in secrets", s, s)
		}
	}
	return nil
}

func parseURLTemplate(raw string) (urlTemplate, error) {
	t, err := parseTemplate(raw)
	if err != nil {
		return urlTemplate{}, err
	}
	if p, ok := t.single(); ok {
		if p.secret != "" {
			return urlTemplate{}, errors.New("the whole URL cannot be a secret")
		}
		if p.optional {
			return urlTemplate{}, errors.New("the URL placeholder cannot be optional")
		}
		return urlTemplate{t: t, ctx: []urlCtx{ctxPath}, whole: true}, nil
	}
	const (
		stScheme = iota
		stHost
		stPath
		stQuery
		stFragment
	)
	state := stScheme
	ctx := make([]urlCtx, len(t.parts))
	for i, p := range t.parts {
		if !p.isLiteral() {
			switch state {
			case stScheme:
				return urlTemplate{}, errors.New("a placeholder cannot be part of the scheme; start the URL with https://")
			case stFragment:
				return urlTemplate{}, errors.New("a URL fragment is not sent and cannot hold a placeholder")
			case stHost:
				if p.secret != "" {
					return urlTemplate{}, errors.New("a secret cannot be part of the host")
				}
				if p.optional {
					return urlTemplate{}, errors.New("a host placeholder cannot be optional")
				}
				ctx[i] = ctxHost
			case stPath:
				ctx[i] = ctxPath
			case stQuery:
				ctx[i] = ctxQuery
			}
			continue
		}
		s := p.lit
		for s != "" {
			switch state {
			case stScheme:
				j := strings.Index(s, "://")
				if j < 0 {
					return urlTemplate{}, errors.New("must start with http:// or https://")
				}
				sch := strings.ToLower(s[:j])
				if sch != "http" && sch != "https" {
					return urlTemplate{}, errors.New("must start with http:// or https://")
				}
				state, s = stHost, s[j+3:]
			case stHost, stPath, stQuery:
				j := strings.IndexAny(s, "/?#")
				if j < 0 {
					s = ""
					continue
				}
				switch c := s[j]; {
				case c == '#':
					state = stFragment
				case c == '?' && state != stQuery:
					state = stQuery
				case c == '/' && state == stHost:
					state = stPath
				}
				s = s[j+1:]
			case stFragment:
				s = ""
			}
		}
	}
	if state == stScheme {
		return urlTemplate{}, errors.New("must start with http:// or https://")
	}
	if state == stFragment {
		return urlTemplate{}, errors.New("must not contain a fragment")
	}
	return urlTemplate{t: t, ctx: ctx}, nil
}

func (u urlTemplate) hostTemplated() bool {
	return slices.Contains(u.ctx, ctxHost) && !u.whole
}

// render builds the URL. probe fills absent arguments with a harmless label
// (used at load to check the static parts).
func (u urlTemplate) render(args any, secret secretFunc, probe bool) (string, error) {
	if u.whole {
		p := u.t.parts[0]
		v, ok := lookupArg(args, p.arg)
		if !ok {
			return "", fmt.Errorf("argument %q is absent", strings.Join(p.arg, "."))
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("argument %q must be a string URL", strings.Join(p.arg, "."))
		}
		s, _, _ = strings.Cut(s, "#")
		return s, nil
	}
	var sb strings.Builder
	for i, p := range u.t.parts {
		if p.isLiteral() {
			sb.WriteString(p.lit)
			continue
		}
		var text string
		if p.secret != "" {
			v, err := secret(p.secret)
			if err != nil {
				return "", err
			}
			text = v
		} else {
			name := strings.Join(p.arg, ".")
			v, ok := lookupArg(args, p.arg)
			switch {
			case !ok && probe:
				v = "x"
			case !ok && p.optional:
				continue
			case !ok:
				return "", fmt.Errorf("argument %q is absent", name)
			}
			s, err := scalarText(v, false)
			if err != nil {
				return "", fmt.Errorf("argument %q: %v", name, err)
			}
			text = s
			if u.ctx[i] == ctxHost && !hostLabelRE.MatchString(text) {
				return "", fmt.Errorf("argument %q must be one lowercase DNS label", name)
			}
		}
		switch u.ctx[i] {
		case ctxPath:
			text = url.PathEscape(text)
		case ctxQuery:
			text = url.QueryEscape(text)
		}
		sb.WriteString(text)
	}
	out := sb.String()
	if !probe {
		if err := checkDotSegments(out); err != nil {
			return "", err
		}
	}
	return out, nil
}

// checkDotSegments refuses a rendered URL whose path has "." or ".."
// segments (an argument such as ".." must not walk the upstream's path).
// Each segment is checked as servers that decode before resolving dot
// segments (nginx, IIS) see it: decoded once, with '/' and '\' as
// separators, so "..%2Fadmin" (the argument "../admin") is refused too.
func checkDotSegments(raw string) error {
	_, rest, _ := strings.Cut(raw, "://")
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return nil
	}
	path, _, _ := strings.Cut(rest[i:], "?")
	for _, seg := range strings.Split(path, "/") {
		if dec, err := url.PathUnescape(seg); err == nil {
			seg = dec
		}
		for _, part := range strings.FieldsFunc(seg, func(r rune) bool { return r == '/' || r == '\\' }) {
			if part == "." || part == ".." {
				return errors.New("an argument placed in the URL path makes a '.' or '..' segment")
			}
		}
	}
	return nil
}

// bodyNode is a JSON body template: objects, arrays, literal scalars and
// string templates. A string that is exactly one placeholder takes the
// argument's JSON value; {{name?}} there omits the member when absent.
type bodyNode struct {
	kind    byte // 'o' object, 'a' array, 's' string template, 'l' literal
	members []bodyMember
	items   []*bodyNode
	t       template
	lit     any
}

type bodyMember struct {
	key string
	val *bodyNode
}

func parseBody(a *Action, n *yaml.Node, field string, depth int) (*bodyNode, error) {
	if depth > maxJSONDepth {
		return nil, ferr(field, "nested deeper than %d", maxJSONDepth)
	}
	switch n.Kind {
	case yaml.MappingNode:
		entries, err := mappingEntries(n, field)
		if err != nil {
			return nil, err
		}
		b := &bodyNode{kind: 'o'}
		for _, e := range entries {
			v, err := parseBody(a, e.val, field+"/"+e.key, depth+1)
			if err != nil {
				return nil, err
			}
			b.members = append(b.members, bodyMember{key: e.key, val: v})
		}
		return b, nil
	case yaml.SequenceNode:
		b := &bodyNode{kind: 'a'}
		for i, c := range n.Content {
			v, err := parseBody(a, c, fmt.Sprintf("%s/%d", field, i), depth+1)
			if err != nil {
				return nil, err
			}
			b.items = append(b.items, v)
		}
		return b, nil
	case yaml.ScalarNode:
		if n.ShortTag() == "!!str" {
			t, err := parseTemplate(n.Value)
			if err != nil {
				return nil, ferr(field, "%v", err)
			}
			if err := checkSecretNames(a, field, t); err != nil {
				return nil, err
			}
			return &bodyNode{kind: 's', t: t}, nil
		}
		v, err := yamlToJSON(n, field, depth)
		if err != nil {
			return nil, err
		}
		return &bodyNode{kind: 'l', lit: v}, nil
	}
	return nil, ferr(field, "unsupported YAML node")
}

func (b *bodyNode) hasSecret() bool {
	switch b.kind {
	case 'o':
		for _, m := range b.members {
			if m.val.hasSecret() {
				return true
			}
		}
	case 'a':
		for _, it := range b.items {
			if it.hasSecret() {
				return true
			}
		}
	case 's':
		return b.t.hasSecret()
	}
	return false
}

// source is the template as JSON, for the digest.
func (b *bodyNode) source() any {
	switch b.kind {
	case 'o':
		m := make(map[string]any, len(b.members))
		for _, mem := range b.members {
			m[mem.key] = mem.val.source()
		}
		return m
	case 'a':
		a := make([]any, len(b.items))
		for i, it := range b.items {
			a[i] = it.source()
		}
		return a
	case 's':
		return b.t.source()
	}
	return b.lit
}

// render returns the JSON value and whether it is present (an optional
// placeholder whose argument is absent makes it absent).
func (b *bodyNode) render(args any, secret secretFunc, field string) (any, bool, error) {
	switch b.kind {
	case 'o':
		m := make(map[string]any, len(b.members))
		for _, mem := range b.members {
			v, ok, err := mem.val.render(args, secret, field+"/"+mem.key)
			if err != nil {
				return nil, false, err
			}
			if ok {
				m[mem.key] = v
			}
		}
		return m, true, nil
	case 'a':
		a := make([]any, 0, len(b.items))
		for i, it := range b.items {
			v, ok, err := it.render(args, secret, fmt.Sprintf("%s/%d", field, i))
			if err != nil {
				return nil, false, err
			}
			if ok {
				a = append(a, v)
			}
		}
		return a, true, nil
	case 's':
		if p, ok := b.t.single(); ok && p.secret == "" {
			v, found := lookupArg(args, p.arg)
			if !found {
				if p.optional {
					return nil, false, nil
				}
				return nil, false, &TemplateError{Field: field, Reason: fmt.Sprintf("argument %q is absent", strings.Join(p.arg, "."))}
			}
			return v, true, nil
		}
		s, err := b.t.renderText(args, secret, nil, true)
		if err != nil {
			return nil, false, templateErr(field, b.t, err)
		}
		return s, true, nil
	}
	return b.lit, true, nil
}

// templateErr turns a render failure into a TemplateError naming the field
// and the first placeholder involved (never a value).
func templateErr(field string, t template, err error) error {
	var te *TemplateError
	if errors.As(err, &te) {
		return err
	}
	var se *secretError
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, errArgAbsent) {
		for _, p := range t.parts {
			if p.arg != nil && !p.optional {
				return &TemplateError{Field: field, Reason: fmt.Sprintf("a required argument (%s) is absent", argNames(t))}
			}
		}
	}
	return &TemplateError{Field: field, Reason: err.Error()}
}

func argNames(t template) string {
	var names []string
	for _, p := range t.parts {
		if p.arg != nil {
			names = append(names, strings.Join(p.arg, "."))
		}
	}
	return strings.Join(names, ", ")
}

// secretError reports a secret that cannot be resolved at dispatch.
type secretError struct {
	name   string
	reason string
}

func (e *secretError) Error() string { return "secret " + e.name + " " + e.reason }

// forbiddenHostError is a rendered URL whose host is a non-canonical
// numeric form; Prepare turns it into a Forbidden target.
type forbiddenHostError struct{ host string }

func (e *forbiddenHostError) Error() string { return "non-canonical numeric host" }

// renderedRequest is one request ready to send.
type renderedRequest struct {
	method      string
	url         string
	host        egress.Host
	port        int
	scheme      string
	header      http.Header
	body        []byte
	hasBody     bool
	contentType string
}

// render fills every template. secret resolves secrets (Prepare passes a
// stand-in; Execute the real source).
func (s *httpSpec) render(a *Action, args any, secret secretFunc) (*renderedRequest, error) {
	rawURL, err := s.url.render(args, secret, false)
	if err != nil {
		var se *secretError
		if errors.As(err, &se) {
			return nil, err
		}
		return nil, &TemplateError{Field: "executor.url", Reason: err.Error()}
	}
	h, port, scheme, err := egress.HostFromURL(rawURL)
	if errors.Is(err, egress.ErrNonCanonicalHost) {
		// A non-canonical numeric host (2130706433, 0177.0.0.1) can never
		// be approved: pipeline step 4 answers 403 egress_target_forbidden.
		host := rawURL
		if u, perr := url.Parse(rawURL); perr == nil {
			host = u.Hostname()
		}
		return nil, &forbiddenHostError{host: host}
	}
	if err != nil {
		return nil, &TemplateError{Field: "executor.url", Reason: "does not render to an absolute http(s) URL with a valid host"}
	}
	if scheme == "http" && s.usesSecrets && !a.AllowInsecureHTTP {
		return nil, &TemplateError{Field: "executor.url", Reason: "a request carrying a secret must use https"}
	}
	r := &renderedRequest{method: s.method, url: rawURL, host: h, port: port, scheme: scheme, header: http.Header{}}
	for _, ht := range s.headers {
		f := "executor.headers." + ht.name
		v, err := ht.t.renderText(args, secret, nil, false)
		if err != nil {
			return nil, templateErr(f, ht.t, err)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, &TemplateError{Field: f, Reason: "header value contains CR, LF or NUL"}
		}
		r.header[ht.name] = []string{v}
	}
	switch {
	case s.body != nil:
		v, ok, err := s.body.render(args, secret, "executor.body")
		if err != nil {
			return nil, err
		}
		if ok {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(v); err != nil {
				return nil, &TemplateError{Field: "executor.body", Reason: "cannot be encoded as JSON"}
			}
			r.body = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
			r.hasBody = true
			r.contentType = "application/json"
		}
	case s.form != nil:
		vals := url.Values{}
		for _, f := range s.form {
			field := "executor.form." + f.key
			if p, ok := f.t.single(); ok && p.optional {
				if _, found := lookupArg(args, p.arg); !found {
					continue
				}
			}
			v, err := f.t.renderText(args, secret, nil, false)
			if err != nil {
				return nil, templateErr(field, f.t, err)
			}
			vals.Set(f.key, v)
		}
		r.body = []byte(vals.Encode())
		r.hasBody = true
		r.contentType = "application/x-www-form-urlencoded"
	}
	if r.hasBody && r.header.Get("Content-Type") == "" {
		r.header.Set("Content-Type", r.contentType)
	}
	return r, nil
}
