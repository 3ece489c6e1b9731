package actions

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rs/zerolog"
)

// DefaultMaxRequestCap is the gate's request body cap (1 MiB).
const DefaultMaxRequestCap = 1 << 20

// LoadConfig says where manifests come from.
type LoadConfig struct {
	// FS holds the embedded defaults, files under "manifests/"
	// (definitions.Manifests). Nil: no embedded manifests.
	FS fs.FS
	// Dir is --manifests-dir: *.yaml files there override embedded ones by
	// action_id. Empty: none.
	Dir string
	// Dev skips a bad manifest with a warning instead of failing the load.
	Dev bool
	// MaxRequestCap is the gate's request body cap in bytes; a manifest's
	// max_request_bytes may not exceed it. Zero: DefaultMaxRequestCap.
	MaxRequestCap int64
}

func (c LoadConfig) withDefaults() LoadConfig {
	if c.MaxRequestCap == 0 {
		c.MaxRequestCap = DefaultMaxRequestCap
	}
	return c
}

// Validate checks the config without changing it.
func (c LoadConfig) Validate() error {
	if c.MaxRequestCap < 1 {
		return errors.New("actions: LoadConfig.MaxRequestCap must be > 0 bytes (default 1048576)")
	}
	if c.FS == nil && c.Dir == "" {
		return errors.New("actions: LoadConfig needs FS (embedded manifests) or Dir")
	}
	return nil
}

// Registry is an immutable set of loaded actions. Reload builds a new one.
type Registry struct {
	byID   map[string]*Action
	sorted []*Action
}

// Load reads, validates and compiles every manifest: the embedded ones,
// then Dir's, which replace embedded ones with the same action_id. A bad
// manifest fails the load with a *ManifestError naming file, field and
// reason; with Dev it is skipped with a warning (an embedded manifest it
// would have replaced stays). Two files with one action_id in the same source
// are an error even with Dev.
func Load(cfg LoadConfig, logger zerolog.Logger) (*Registry, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := logger.With().Str("component", "actions").Logger()
	r := &Registry{byID: map[string]*Action{}}
	load := func(files []manifestFile) error {
		seen := map[string]string{}
		for _, f := range files {
			a, err := parseManifest(f.name, f.data, cfg.MaxRequestCap)
			if err == nil {
				if prev, dup := seen[a.ID]; dup {
					return &ManifestError{File: f.name, Field: "action_id", Reason: fmt.Sprintf("%q is also defined in %s", a.ID, prev)}
				}
			}
			if err != nil {
				if cfg.Dev {
					log.Warn().Err(err).Str("file", f.name).Msg("skipping bad manifest (--dev)")
					continue
				}
				return err
			}
			seen[a.ID] = f.name
			if old, ok := r.byID[a.ID]; ok {
				log.Info().Str("action_id", a.ID).Str("file", f.name).Str("replaces", old.File).Msg("manifest override")
			}
			r.byID[a.ID] = a
		}
		return nil
	}
	if cfg.FS != nil {
		files, err := readFS(cfg.FS)
		if err != nil {
			return nil, err
		}
		if err := load(files); err != nil {
			return nil, err
		}
	}
	if cfg.Dir != "" {
		files, err := readDir(cfg.Dir)
		if err != nil {
			return nil, err
		}
		if err := load(files); err != nil {
			return nil, err
		}
	}
	for _, a := range r.byID {
		r.sorted = append(r.sorted, a)
	}
	sort.Slice(r.sorted, func(i, j int) bool { return r.sorted[i].ID < r.sorted[j].ID })
	log.Info().Int("actions", len(r.sorted)).Msg("manifests loaded")
	return r, nil
}

type manifestFile struct {
	name string
	data []byte
}

func isManifestName(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

func readFS(fsys fs.FS) ([]manifestFile, error) {
	entries, err := fs.ReadDir(fsys, "manifests")
	if err != nil {
		return nil, &ManifestError{File: "manifests/", Reason: "cannot list embedded manifests", Err: err}
	}
	var out []manifestFile
	for _, e := range entries {
		if e.IsDir() || !isManifestName(e.Name()) {
			continue
		}
		name := path.Join("manifests", e.Name())
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, &ManifestError{File: name, Reason: "cannot read", Err: err}
		}
		out = append(out, manifestFile{name: name, data: data})
	}
	return out, nil
}

func readDir(dir string) ([]manifestFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, &ManifestError{File: dir, Reason: "cannot list the manifests directory", Err: err}
	}
	var out []manifestFile
	for _, e := range entries {
		if !isManifestName(e.Name()) || !e.Type().IsRegular() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		name := filepath.Join(dir, e.Name())
		info, err := os.Stat(name)
		if err != nil {
			return nil, &ManifestError{File: name, Reason: "cannot read", Err: err}
		}
		if !info.Mode().IsRegular() {
			continue
		}
		if info.Size() > maxManifestBytes {
			return nil, &ManifestError{File: name, Reason: "file larger than 1 MiB"}
		}
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, &ManifestError{File: name, Reason: "cannot read", Err: err}
		}
		out = append(out, manifestFile{name: name, data: data})
	}
	return out, nil
}

// Get returns the action with id.
func (r *Registry) Get(id string) (*Action, bool) {
	a, ok := r.byID[id]
	return a, ok
}

// List returns the actions sorted by id. The slice is a copy.
func (r *Registry) List() []*Action {
	return append([]*Action(nil), r.sorted...)
}

// Len returns the number of actions.
func (r *Registry) Len() int { return len(r.sorted) }

// SecretNames returns every secret name some manifest uses, sorted, so the
// caller can warn about missing ones at start.
func (r *Registry) SecretNames() []string {
	set := map[string]bool{}
	for _, a := range r.sorted {
		for _, s := range a.Secrets {
			set[s] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Summary is one entry of GET /v1/actions.
type Summary struct {
	ActionID    string `json:"action_id"`
	Version     string `json:"version"`
	Description string `json:"description"`
	RiskLevel   string `json:"risk_level"`
}

// Summary returns the GET /v1/actions entry.
func (a *Action) Summary() Summary {
	return Summary{ActionID: a.ID, Version: a.Version, Description: a.Description, RiskLevel: a.RiskLevel}
}

// Description is the GET /v1/actions/{id} body (PROTOCOL §3.3).
type Description struct {
	ActionID       string          `json:"action_id"`
	Version        string          `json:"version"`
	Description    string          `json:"description"`
	RiskLevel      string          `json:"risk_level"`
	RequiredScopes []string        `json:"required_scopes"`
	SideEffects    []string        `json:"side_effects"`
	CostUSDCents   int64           `json:"cost_usd_cents"`
	Digest         string          `json:"digest"`
	InputSchema    json.RawMessage `json:"input_schema"`
	Egress         EgressView      `json:"egress"`
}

// EgressView marshals as "none" or {"proxy_allowlist":{"allowed_domains":[…]}}.
type EgressView struct {
	Profile        string
	AllowedDomains []string
}

// MarshalJSON implements json.Marshaler.
func (e EgressView) MarshalJSON() ([]byte, error) {
	if e.Profile != ProfileProxyAllowlist {
		return []byte(`"none"`), nil
	}
	d := e.AllowedDomains
	if d == nil {
		d = []string{}
	}
	return json.Marshal(map[string]any{"proxy_allowlist": map[string]any{"allowed_domains": d}})
}

// Describe returns the GET /v1/actions/{id} body.
func (a *Action) Describe() Description {
	return Description{
		ActionID:       a.ID,
		Version:        a.Version,
		Description:    a.Description,
		RiskLevel:      a.RiskLevel,
		RequiredScopes: a.RequiredScopes,
		SideEffects:    a.SideEffects,
		CostUSDCents:   a.CostCents,
		Digest:         a.Digest,
		InputSchema:    a.InputSchema,
		Egress:         EgressView{Profile: a.Egress.Profile, AllowedDomains: a.Egress.AllowedDomains},
	}
}
