package actions

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gowebpki/jcs"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/latchgate/latchgate/egress"
)

// Manifest defaults and limits (ARCHITECTURE.md "Action manifests").
const (
	DefaultRiskLevel        = "low"
	DefaultTimeout          = 30 * time.Second
	MaxTimeout              = 300 * time.Second
	DefaultMaxRequestBytes  = 64 << 10
	DefaultMaxResponseBytes = 1 << 20
	MaxResponseBytesLimit   = 64 << 20
	maxManifestBytes        = 1 << 20
)

// Executor kinds.
const (
	KindHTTP = "http"
	KindEcho = "echo"
)

// Egress profiles.
const (
	ProfileNone           = "none"
	ProfileProxyAllowlist = "proxy_allowlist"
)

var (
	actionIDRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_]{0,63}$`)
	versionRE    = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)
	scopeRE      = regexp.MustCompile(`^[a-z][a-z0-9:_-]{3,63}$`)
	sideEffectRE = regexp.MustCompile(`^[a-z][a-z0-9_.:-]{0,63}$`)
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
	methodRE     = regexp.MustCompile(`^[A-Z]{1,16}$`)
)

// riskLevels in increasing order.
var riskLevels = [...]string{"low", "medium", "high", "critical"}

// headers a manifest may not set: the transport owns them.
var reservedHeaders = [...]string{"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive", "proxy-authorization", "proxy-connection"}

// Action is one validated manifest. Its exported fields are read-only after
// Load; the compiled schema, allowlist and templates are private.
type Action struct {
	ID             string
	Version        string
	Description    string
	RiskLevel      string   // low | medium | high | critical
	RequiredScopes []string // default [tools:call]
	SideEffects    []string // free labels, default []
	Secrets        []string // names {{secret.*}} may use, default []
	CostCents      int64    // budget cost per call, default 0
	// Digest is "sha256:<hex>" of JCS(the effective manifest): every field
	// after defaults, so a change in what runs changes the digest.
	Digest            string
	InputSchema       json.RawMessage // the schema as JSON (compact)
	Egress            EgressSpec
	MaxRequestBytes   int64         // request body cap, default 64 KiB, ≤ the gate's cap
	MaxResponseBytes  int64         // upstream body cap, default 1 MiB
	Timeout           time.Duration // default 30 s
	ExpectStatus      []int         // empty: unverifiable_declared
	ExecutorKind      string        // http | echo
	AllowInsecureHTTP bool          // executor.allow_insecure_http
	File              string        // where the manifest was read from

	schema *jsonschema.Schema
	allow  *egress.Allowlist // manifest allowed_domains × allowed_ports
	http   *httpSpec         // nil unless ExecutorKind == http
}

// EgressSpec is the manifest's egress section.
type EgressSpec struct {
	Profile        string   // none | proxy_allowlist
	AllowedDomains []string // normalised entries ("api.github.com", "*.example.com")
	AllowedPorts   []int    // default [443]
}

// Allowlist returns the manifest's own allowlist (allowed_domains ×
// allowed_ports); callers add learned entries with With.
func (a *Action) Allowlist() *egress.Allowlist { return a.allow }

// parseManifest validates one manifest file. maxRequestCap is the gate's cap.
func parseManifest(file string, data []byte, maxRequestCap int64) (*Action, error) {
	merr := func(field, reason string, err error) *ManifestError {
		return &ManifestError{File: file, Field: field, Reason: reason, Err: err}
	}
	fromField := func(err error) *ManifestError {
		if fe, ok := asFieldError(err); ok {
			return merr(fe.field, fe.reason, err)
		}
		return merr("", err.Error(), err)
	}
	if len(data) > maxManifestBytes {
		return nil, merr("", "file larger than 1 MiB", nil)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, merr("", "invalid YAML: "+err.Error(), err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, merr("", "more than one YAML document", nil)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, merr("", "must hold one YAML mapping", nil)
	}
	entries, err := mappingEntries(doc.Content[0], "")
	if err != nil {
		return nil, fromField(err)
	}

	a := &Action{
		RiskLevel:        DefaultRiskLevel,
		RequiredScopes:   []string{"tools:call"},
		SideEffects:      []string{},
		Secrets:          []string{},
		Egress:           EgressSpec{Profile: ProfileNone, AllowedDomains: []string{}, AllowedPorts: []int{egress.DefaultPort}},
		MaxRequestBytes:  DefaultMaxRequestBytes,
		MaxResponseBytes: DefaultMaxResponseBytes,
		Timeout:          DefaultTimeout,
		ExpectStatus:     []int{},
		File:             file,
	}
	var schemaDoc any = map[string]any{"type": "object"}
	var execNode, egressNode *yaml.Node
	for _, e := range entries {
		f := e.key
		switch f {
		case "action_id":
			a.ID, err = yamlString(e.val, f)
			if err == nil && !actionIDRE.MatchString(a.ID) {
				err = ferr(f, "must match %s", actionIDRE)
			}
		case "version":
			a.Version, err = yamlScalarString(e.val, f)
			if err == nil && !versionRE.MatchString(a.Version) {
				err = ferr(f, "must match %s", versionRE)
			}
		case "description":
			a.Description, err = yamlString(e.val, f)
			if err == nil && len(a.Description) > 1024 {
				err = ferr(f, "must be at most 1024 bytes")
			}
		case "risk_level":
			a.RiskLevel, err = yamlString(e.val, f)
			if err == nil && !slices.Contains(riskLevels[:], a.RiskLevel) {
				err = ferr(f, "must be one of low, medium, high, critical")
			}
		case "required_scopes":
			a.RequiredScopes, err = yamlStrings(e.val, f)
			for i, s := range a.RequiredScopes {
				if err == nil && !validScope(s) {
					err = ferr(fmt.Sprintf("%s[%d]", f, i), "must be tools:call, audit:read or namespace:name (4-64 chars of [a-z0-9:_-], not ending in ':')")
				}
			}
			a.RequiredScopes = dedupe(a.RequiredScopes)
		case "side_effects":
			a.SideEffects, err = yamlStrings(e.val, f)
			for i, s := range a.SideEffects {
				if err == nil && !sideEffectRE.MatchString(s) {
					err = ferr(fmt.Sprintf("%s[%d]", f, i), "must match %s", sideEffectRE)
				}
			}
			a.SideEffects = dedupe(a.SideEffects)
		case "cost_usd_cents":
			a.CostCents, err = yamlInt(e.val, f)
			if err == nil && a.CostCents < 0 {
				err = ferr(f, "must be ≥ 0")
			}
		case "input_schema":
			schemaDoc, err = yamlToJSON(e.val, f, 0)
			if _, isObj := schemaDoc.(map[string]any); err == nil && !isObj {
				err = ferr(f, "must be a JSON Schema object")
			}
		case "secrets":
			a.Secrets, err = yamlStrings(e.val, f)
			for i, s := range a.Secrets {
				if err == nil && !secretNameRE.MatchString(s) {
					err = ferr(fmt.Sprintf("%s[%d]", f, i), "must match %s", secretNameRE)
				}
			}
			a.Secrets = dedupe(a.Secrets)
		case "max_request_bytes":
			a.MaxRequestBytes, err = yamlInt(e.val, f)
			if err == nil && (a.MaxRequestBytes < 1 || a.MaxRequestBytes > maxRequestCap) {
				err = ferr(f, "must be 1..%d (the gate's request cap)", maxRequestCap)
			}
		case "executor":
			execNode = e.val
		case "egress":
			egressNode = e.val
		default:
			err = ferr(f, "unknown field")
		}
		if err != nil {
			return nil, fromField(err)
		}
	}
	if a.ID == "" {
		return nil, merr("action_id", "is required", nil)
	}
	if a.Version == "" {
		return nil, merr("version", "is required", nil)
	}
	if execNode == nil {
		return nil, merr("executor", "is required (executor.kind)", nil)
	}
	if err := parseEgress(a, egressNode); err != nil {
		return nil, fromField(err)
	}
	if err := parseExecutor(a, execNode); err != nil {
		return nil, fromField(err)
	}

	// Schema: compile once, offline (no $ref to files or the network).
	schemaJSON, err := json.Marshal(schemaDoc)
	if err != nil {
		return nil, merr("input_schema", "cannot be encoded as JSON", err)
	}
	a.InputSchema = schemaJSON
	if a.schema, err = compileSchema(a.ID, schemaJSON); err != nil {
		return nil, merr("input_schema", "invalid JSON Schema: "+err.Error(), err)
	}

	if err := a.computeDigest(schemaDoc); err != nil {
		return nil, merr("", "cannot compute digest: "+err.Error(), err)
	}
	return a, nil
}

func validScope(s string) bool {
	if s == "tools:call" || s == "audit:read" {
		return true
	}
	return scopeRE.MatchString(s) && strings.Contains(s, ":") && !strings.HasSuffix(s, ":")
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func parseEgress(a *Action, n *yaml.Node) error {
	var entries []yamlEntry
	if n != nil {
		var err error
		if entries, err = mappingEntries(n, "egress"); err != nil {
			return err
		}
	}
	var err error
	for _, e := range entries {
		f := "egress." + e.key
		switch e.key {
		case "profile":
			a.Egress.Profile, err = yamlString(e.val, f)
			if err == nil && a.Egress.Profile != ProfileNone && a.Egress.Profile != ProfileProxyAllowlist {
				err = ferr(f, "must be none or proxy_allowlist")
			}
		case "allowed_domains":
			a.Egress.AllowedDomains, err = yamlStrings(e.val, f)
			for i, d := range a.Egress.AllowedDomains {
				if err != nil {
					break
				}
				if _, rerr := egress.NewRule(d, nil); rerr != nil {
					err = ferr(fmt.Sprintf("%s[%d]", f, i), "%v", rerr)
				}
			}
			a.Egress.AllowedDomains = dedupe(a.Egress.AllowedDomains)
		case "allowed_ports":
			var ports []int64
			ports, err = yamlInts(e.val, f)
			a.Egress.AllowedPorts = a.Egress.AllowedPorts[:0]
			for i, p := range ports {
				if err == nil && (p < 1 || p > 65535) {
					err = ferr(fmt.Sprintf("%s[%d]", f, i), "must be 1..65535")
				}
				a.Egress.AllowedPorts = append(a.Egress.AllowedPorts, int(p))
			}
			if err == nil && len(ports) == 0 {
				err = ferr(f, "must not be empty (omit it for [443])")
			}
			slices.Sort(a.Egress.AllowedPorts)
			a.Egress.AllowedPorts = slices.Compact(a.Egress.AllowedPorts)
		default:
			err = ferr(f, "unknown field")
		}
		if err != nil {
			return err
		}
	}
	if a.Egress.Profile == ProfileNone && len(a.Egress.AllowedDomains) > 0 {
		return ferr("egress.allowed_domains", "must be empty when egress.profile is none")
	}
	al, err := egress.NewAllowlist(a.Egress.AllowedDomains, a.Egress.AllowedPorts)
	if err != nil {
		return ferr("egress.allowed_domains", "%v", err)
	}
	a.allow = al
	return nil
}

// parseExecutor reads the executor section; fields other than kind depend
// on the kind.
func parseExecutor(a *Action, n *yaml.Node) error {
	entries, err := mappingEntries(n, "executor")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.key == "kind" {
			if a.ExecutorKind, err = yamlString(e.val, "executor.kind"); err != nil {
				return err
			}
		}
	}
	switch a.ExecutorKind {
	case "":
		return ferr("executor.kind", "is required")
	case KindEcho, KindHTTP:
	default:
		return ferr("executor.kind", "must be http or echo")
	}
	var spec *httpSpec
	if a.ExecutorKind == KindHTTP {
		spec = &httpSpec{method: "GET"}
	}
	var urlNode, bodyNode, formNode, headersNode *yaml.Node
	for _, e := range entries {
		f := "executor." + e.key
		switch e.key {
		case "kind":
		case "timeout_seconds":
			var s int64
			if s, err = yamlInt(e.val, f); err == nil && (s < 1 || s > int64(MaxTimeout/time.Second)) {
				err = ferr(f, "must be 1..%d", int64(MaxTimeout/time.Second))
			}
			a.Timeout = time.Duration(s) * time.Second
		case "max_response_bytes", "expect_status", "allow_insecure_http", "method", "url", "headers", "body", "form":
			if spec == nil {
				return ferr(f, "is not valid for executor kind %s", a.ExecutorKind)
			}
			switch e.key {
			case "max_response_bytes":
				a.MaxResponseBytes, err = yamlInt(e.val, f)
				if err == nil && (a.MaxResponseBytes < 1 || a.MaxResponseBytes > MaxResponseBytesLimit) {
					err = ferr(f, "must be 1..%d", MaxResponseBytesLimit)
				}
			case "expect_status":
				var st []int64
				st, err = yamlInts(e.val, f)
				for i, s := range st {
					if err == nil && (s < 100 || s > 599) {
						err = ferr(fmt.Sprintf("%s[%d]", f, i), "must be an HTTP status 100..599")
					}
					a.ExpectStatus = append(a.ExpectStatus, int(s))
				}
				slices.Sort(a.ExpectStatus)
				a.ExpectStatus = slices.Compact(a.ExpectStatus)
			case "allow_insecure_http":
				a.AllowInsecureHTTP, err = yamlBool(e.val, f)
			case "method":
				spec.method, err = yamlString(e.val, f)
				if err == nil && !methodRE.MatchString(spec.method) {
					err = ferr(f, "must be an uppercase HTTP method such as GET or POST")
				}
			case "url":
				urlNode = e.val
			case "headers":
				headersNode = e.val
			case "body":
				bodyNode = e.val
			case "form":
				formNode = e.val
			}
		default:
			err = ferr(f, "unknown field")
		}
		if err != nil {
			return err
		}
	}
	if spec == nil {
		return nil
	}
	a.http = spec
	return parseHTTPSpec(a, spec, urlNode, headersNode, bodyNode, formNode)
}

// compileSchema compiles a draft 2020-12 schema with remote and file
// references disabled and format assertions on.
func compileSchema(id string, schemaJSON []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})
	loc := "urn:latchgate:action:" + id + ":input"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, err
	}
	return c.Compile(loc)
}

// noLoader refuses every external schema reference.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, errors.New("external schema references are not allowed")
}

var _ jsonschema.URLLoader = noLoader{}

// effectiveManifest is what the digest covers: every field after defaults.
type effectiveManifest struct {
	ActionID          string             `json:"action_id"`
	Version           string             `json:"version"`
	Description       string             `json:"description"`
	RiskLevel         string             `json:"risk_level"`
	RequiredScopes    []string           `json:"required_scopes"`
	SideEffects       []string           `json:"side_effects"`
	CostUSDCents      int64              `json:"cost_usd_cents"`
	InputSchema       any                `json:"input_schema"`
	Secrets           []string           `json:"secrets"`
	MaxRequestBytes   int64              `json:"max_request_bytes"`
	Executor          effectiveExecutor  `json:"executor"`
	Egress            effectiveEgressDoc `json:"egress"`
	ManifestFormatRev int                `json:"manifest_format"`
}

type effectiveExecutor struct {
	Kind              string            `json:"kind"`
	TimeoutSeconds    int64             `json:"timeout_seconds"`
	MaxResponseBytes  int64             `json:"max_response_bytes,omitempty"`
	ExpectStatus      []int             `json:"expect_status,omitempty"`
	AllowInsecureHTTP bool              `json:"allow_insecure_http"`
	Method            string            `json:"method,omitempty"`
	URL               string            `json:"url,omitempty"`
	Headers           map[string]string `json:"headers,omitempty"`
	Body              any               `json:"body,omitempty"`
	Form              map[string]string `json:"form,omitempty"`
}

type effectiveEgressDoc struct {
	Profile        string   `json:"profile"`
	AllowedDomains []string `json:"allowed_domains"`
	AllowedPorts   []int    `json:"allowed_ports"`
}

func (a *Action) computeDigest(schemaDoc any) error {
	m := effectiveManifest{
		ActionID:        a.ID,
		Version:         a.Version,
		Description:     a.Description,
		RiskLevel:       a.RiskLevel,
		RequiredScopes:  a.RequiredScopes,
		SideEffects:     a.SideEffects,
		CostUSDCents:    a.CostCents,
		InputSchema:     schemaDoc,
		Secrets:         a.Secrets,
		MaxRequestBytes: a.MaxRequestBytes,
		Executor: effectiveExecutor{
			Kind:              a.ExecutorKind,
			TimeoutSeconds:    int64(a.Timeout / time.Second),
			AllowInsecureHTTP: a.AllowInsecureHTTP,
		},
		Egress:            effectiveEgressDoc{Profile: a.Egress.Profile, AllowedDomains: a.Egress.AllowedDomains, AllowedPorts: a.Egress.AllowedPorts},
		ManifestFormatRev: 1,
	}
	if s := a.http; s != nil {
		m.Executor.MaxResponseBytes = a.MaxResponseBytes
		m.Executor.ExpectStatus = a.ExpectStatus
		m.Executor.Method = s.method
		m.Executor.URL = s.url.t.source()
		m.Executor.Headers = map[string]string{}
		for _, h := range s.headers {
			m.Executor.Headers[h.name] = h.t.source()
		}
		if s.body != nil {
			m.Executor.Body = s.body.source()
		}
		if s.form != nil {
			m.Executor.Form = map[string]string{}
			for _, f := range s.form {
				m.Executor.Form[f.key] = f.t.source()
			}
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(canon)
	a.Digest = "sha256:" + hex.EncodeToString(sum[:])
	return nil
}
