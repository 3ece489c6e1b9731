package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/latchgate/latchgate/gate"
	"github.com/latchgate/latchgate/store"
	"github.com/latchgate/latchgate/webhooks"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// fileConfig is the YAML configuration file (latchgate.yaml). Every field's
// default is given in its comment; flags and LATCHGATE_* environment
// variables override the file.
type fileConfig struct {
	Socket         string `yaml:"socket"`          // default: see PROTOCOL §1
	AdminSocket    string `yaml:"admin_socket"`    // default: see PROTOCOL §1
	SocketGroup    string `yaml:"socket_group"`    // client socket group (mode 0660); default none
	StateDir       string `yaml:"state_dir"`       // default $XDG_STATE_HOME/latchgate or /var/lib/latchgate
	KeysDir        string `yaml:"keys_dir"`        // default <state_dir>/keys
	RedisURL       string `yaml:"redis_url"`       // default "" (embedded store)
	PolicyDir      string `yaml:"policy_dir"`      // default "" (embedded policy)
	ManifestsDir   string `yaml:"manifests_dir"`   // default "" (embedded only)
	SecretsFile    string `yaml:"secrets_file"`    // YAML map NAME: value, mode 0600; default none
	Dev            bool   `yaml:"dev"`             // default false
	GateID         string `yaml:"gate_id"`         // default: persisted in <state_dir>/gate-id
	PublicBaseURL  string `yaml:"public_base_url"` // htu base; default none
	HTTP           string `yaml:"http"`            // TCP listen address; refused without unsafe_expose_http
	UnsafeExposeHT bool   `yaml:"unsafe_expose_http"`
	LogLevel       string `yaml:"log_level"` // debug|info|warn|error; default info

	Identity struct {
		TrustAgentID        *bool             `yaml:"trust_agent_id"`        // default false (true in --dev)
		AllowOperatorAgents bool              `yaml:"allow_operator_agents"` // default false
		Principals          map[string]string `yaml:"principals"`            // uid → principal name
	} `yaml:"identity"`
	Admin struct {
		Operators   []string `yaml:"operators"`    // uids or user names
		SocketGroup string   `yaml:"socket_group"` // admin socket group (mode 0660)
	} `yaml:"admin"`
	Principals map[string]gate.Principal `yaml:"principals"`
	Limits     struct {
		MaxBodyBytes int64    `yaml:"max_body_bytes"`        // default 1048576
		LeaseRate    *float64 `yaml:"lease_rate_per_second"` // per peer; default 20 (off in --dev)
		ExecRate     *float64 `yaml:"exec_rate_per_second"`  // per session; default 0 (off)
		MaxConns     int      `yaml:"max_conns"`             // per listener; default 1024
	} `yaml:"limits"`
	Proof struct {
		MaxAge          time.Duration `yaml:"max_age"`           // default 60s
		FutureSkew      time.Duration `yaml:"future_skew"`       // default 5s
		RequireBodyHash bool          `yaml:"require_body_hash"` // default false
	} `yaml:"proof"`
	Lease struct {
		DefaultTTL      time.Duration `yaml:"default_ttl"`      // default 300s
		MaxTTL          time.Duration `yaml:"max_ttl"`          // default 1h
		SessionLifetime time.Duration `yaml:"session_lifetime"` // default 24h
	} `yaml:"lease"`
	Store struct {
		Timeout time.Duration `yaml:"timeout"` // default 2s
		Prefix  string        `yaml:"prefix"`  // Redis key prefix; default "latchgate:"
		// ReceiptTTL is how long Redis keeps the copies of receipts other
		// gates serve (≈ 3.5 KB each); default 720h (30 days).
		ReceiptTTL time.Duration `yaml:"receipt_ttl"`
	} `yaml:"store"`
	Approvals struct {
		PendingTTL           time.Duration `yaml:"pending_ttl"`             // default 15m
		MaxPendingPerSession int           `yaml:"max_pending_per_session"` // default 20
		Sweep                time.Duration `yaml:"sweep_interval"`          // expiry sweep; default 10s
		LearnTTL             time.Duration `yaml:"learn_ttl"`               // learned domains; default 720h
	} `yaml:"approvals"`
	// Webhooks are the receivers of PROTOCOL §7 deliveries; default none.
	Webhooks        []webhooks.Endpoint `yaml:"webhooks"`
	WebhookDelivery struct {
		Timeout     time.Duration `yaml:"timeout"`      // per attempt; default 10s
		MaxAttempts int           `yaml:"max_attempts"` // default 12
		BaseBackoff time.Duration `yaml:"base_backoff"` // default 2s, doubling, jittered
		MaxBackoff  time.Duration `yaml:"max_backoff"`  // default 1h
		MaxFinished int           `yaml:"max_finished"` // finished deliveries kept; default 10000
	} `yaml:"webhook_delivery"`
	Policy struct {
		Timeout time.Duration `yaml:"timeout"` // default 250ms
		// DecisionCacheSize bounds the exact decision cache; default 4096,
		// negative turns it off (see policy/cache.go).
		DecisionCacheSize int `yaml:"decision_cache_size"`
	} `yaml:"policy"`
	Egress struct {
		AllowCIDRs []string `yaml:"allow_cidrs"` // TEST ONLY: reach denied ranges
	} `yaml:"egress"`
	Ledger struct {
		// BusyCommitWindow is how long a group commit waits for more
		// records when the group before it held BusyCommitOps or more:
		// default 1ms, -1ns (or any negative) never waits. See
		// receipts.Config.BusyCommitWindow.
		BusyCommitWindow time.Duration `yaml:"busy_commit_window"`
		BusyCommitOps    int           `yaml:"busy_commit_ops"` // default 8
	} `yaml:"ledger"`
}

// loadFileConfig reads path (empty: no file).
func loadFileConfig(path string) (*fileConfig, error) {
	var c fileConfig
	if path == "" {
		return &c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// overlay applies environment variables then explicitly set flags
// (flags > env > file). Each flag's env twin is LATCHGATE_<NAME> with
// dashes as underscores.
func (c *fileConfig) overlay(fs *pflag.FlagSet, env func(string) (string, bool)) error {
	type binding struct {
		flag string
		set  func(string) error
	}
	str := func(dst *string) func(string) error { return func(v string) error { *dst = v; return nil } }
	boolean := func(dst *bool) func(string) error {
		return func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			*dst = b
			return nil
		}
	}
	dur := func(dst *time.Duration) func(string) error {
		return func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("want a positive duration such as 250ms, got %q", v)
			}
			*dst = d
			return nil
		}
	}
	list := func(dst *[]string) func(string) error {
		return func(v string) error { *dst = append(*dst, splitList(v)...); return nil }
	}
	bs := []binding{
		{"socket", str(&c.Socket)}, {"admin-socket", str(&c.AdminSocket)}, {"state-dir", str(&c.StateDir)},
		{"keys-dir", str(&c.KeysDir)}, {"redis-url", str(&c.RedisURL)}, {"policy-dir", str(&c.PolicyDir)},
		{"manifests-dir", str(&c.ManifestsDir)}, {"secrets-file", str(&c.SecretsFile)}, {"dev", boolean(&c.Dev)},
		{"http", str(&c.HTTP)}, {"unsafe-expose-http", boolean(&c.UnsafeExposeHT)}, {"log-level", str(&c.LogLevel)},
		{"gate-id", str(&c.GateID)}, {"policy-timeout", dur(&c.Policy.Timeout)}, {"egress-allow-cidr", list(&c.Egress.AllowCIDRs)},
	}
	for _, b := range bs {
		if v, ok := env("LATCHGATE_" + strings.ToUpper(strings.ReplaceAll(b.flag, "-", "_"))); ok && v != "" {
			if err := b.set(v); err != nil {
				return fmt.Errorf("LATCHGATE_%s: %w", strings.ToUpper(strings.ReplaceAll(b.flag, "-", "_")), err)
			}
		}
	}
	for _, b := range bs {
		f := fs.Lookup(b.flag)
		if f == nil || !f.Changed {
			continue
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				if err := b.set(v); err != nil {
					return fmt.Errorf("--%s: %w", b.flag, err)
				}
			}
			continue
		}
		if err := b.set(f.Value.String()); err != nil {
			return fmt.Errorf("--%s: %w", b.flag, err)
		}
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// fillPathDefaults fills the state, keys and socket paths left empty
// (serve and doctor resolve them the same way).
func (c *fileConfig) fillPathDefaults() {
	if c.StateDir == "" {
		c.StateDir = defaultStateDir(env)
	}
	if c.KeysDir == "" {
		c.KeysDir = filepath.Join(c.StateDir, "keys")
	}
	if c.Socket == "" {
		c.Socket = defaultSocket("latchgate", "gate.sock", env)
	}
	if c.AdminSocket == "" {
		c.AdminSocket = defaultSocket("latchgate-admin", "gate-admin.sock", env)
	}
}

// validate checks what the gate packages do not.
func (c *fileConfig) validate() error {
	if c.HTTP != "" && !c.UnsafeExposeHT {
		return errors.New("--http exposes the gate over TCP without peer credentials; add --unsafe-expose-http to confirm (client routes only)")
	}
	for _, s := range c.Egress.AllowCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("--egress-allow-cidr %q: want a CIDR such as 127.0.0.1/32", s)
		}
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.RedisURL != "" && !store.ValidRedisURLScheme(c.RedisURL) {
		return errors.New("redis_url must start with redis://, rediss:// or unix://")
	}
	return c.webhookConfig().Validate()
}

// defaultStateDir is $XDG_STATE_HOME/latchgate, else /var/lib/latchgate
// for root, else ~/.local/state/latchgate.
func defaultStateDir(env func(string) (string, bool)) string {
	if x, ok := env("XDG_STATE_HOME"); ok && x != "" {
		return filepath.Join(x, "latchgate")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/latchgate"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "latchgate")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("latchgate-state-%d", os.Geteuid()))
}

// defaultSocket picks PROTOCOL §1's default for name ("latchgate" or
// "latchgate-admin") and file.
func defaultSocket(name, file string, env func(string) (string, bool)) string {
	if canCreate("/run/" + name) {
		return filepath.Join("/run", name, file)
	}
	if x, ok := env("XDG_RUNTIME_DIR"); ok && x != "" {
		return filepath.Join(x, name, file)
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d", name, os.Geteuid()), file)
}

// canCreate reports whether dir exists and is ours, or could be created.
func canCreate(dir string) bool {
	if fi, err := os.Lstat(dir); err == nil {
		return fi.IsDir() && ownedByUs(fi)
	}
	parent := filepath.Dir(dir)
	return unixAccessW(parent)
}

// resolveOperators turns uids and user names into a uid → name map.
func resolveOperators(list []string) (map[uint32]string, error) {
	out := map[uint32]string{}
	for _, s := range list {
		if n, err := strconv.ParseUint(s, 10, 32); err == nil {
			out[uint32(n)] = "uid:" + s
			continue
		}
		u, err := user.Lookup(s)
		if err != nil {
			return nil, fmt.Errorf("admin.operators: unknown user %q", s)
		}
		n, _ := strconv.ParseUint(u.Uid, 10, 32)
		out[uint32(n)] = s
	}
	return out, nil
}

// webhookConfig maps the file config to webhooks.Config.
func (c *fileConfig) webhookConfig() webhooks.Config {
	d := c.WebhookDelivery
	return webhooks.Config{Endpoints: c.Webhooks, Dir: filepath.Join(c.StateDir, "webhooks"), Timeout: d.Timeout,
		MaxAttempts: d.MaxAttempts, BaseBackoff: d.BaseBackoff, MaxBackoff: d.MaxBackoff, MaxFinished: d.MaxFinished}
}
