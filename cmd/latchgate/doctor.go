package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/latchgate/latchgate/gate"
)

// finding is one doctor check result.
type finding struct {
	Level   string `json:"level"` // ok, warn, fail
	Check   string `json:"check"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// doctor inspects a configuration and its environment. It never changes
// anything.
func doctor(cfg *fileConfig) []finding {
	var out []finding
	add := func(level, check, msg, fix string) { out = append(out, finding{level, check, msg, fix}) }
	// The checks serve makes before it starts, so a configuration doctor
	// calls valid is one serve accepts.
	err := cfg.validate()
	if err == nil {
		err = leaseConfig(cfg).Check()
	}
	if err == nil {
		var gcfg gate.Config
		if gcfg, err = gateConfig(cfg, "doctor", "embedded", maxBodyBytes(cfg)); err == nil {
			err = gcfg.Check()
		}
	}
	if err != nil {
		add("fail", "config", err.Error(), "fix the configuration file or flags")
	} else {
		add("ok", "config", "configuration is valid", "")
	}
	cfg.fillPathDefaults()
	if cfg.Dev {
		add("warn", "mode", "--dev relaxes defaults (operators may take leases, all actions allowed)", "run without --dev in production")
	}
	// Redis.
	if cfg.RedisURL != "" {
		u, err := url.Parse(cfg.RedisURL)
		switch {
		case err != nil:
			add("fail", "redis", "redis_url does not parse", "use redis[s]://[user:password@]host:port/db")
		default:
			if _, hasPass := u.User.Password(); !hasPass && !cfg.Dev {
				add("fail", "redis", "Redis is used without AUTH", "set a password (requirepass/ACL) and put it in redis_url")
			}
			if u.Scheme != "rediss" && !cfg.Dev {
				add("warn", "redis", "Redis traffic is not TLS-protected", "use rediss:// unless Redis is on a private link")
			}
			if _, hasPass := u.User.Password(); hasPass && u.Scheme == "rediss" {
				add("ok", "redis", "Redis with AUTH over TLS", "")
			}
		}
	} else {
		add("ok", "store", "embedded store under "+cfg.StateDir, "")
	}
	// Proofs.
	if !cfg.Proof.RequireBodyHash {
		add("warn", "proof", "proof.require_body_hash is off: a proof does not bind the request body", "set proof.require_body_hash: true once every SDK sends bh")
	}
	if cfg.HTTP != "" {
		add("warn", "tcp", "client routes are exposed over TCP without peer credentials", "remove http/unsafe_expose_http unless you need it")
	}
	if len(cfg.Egress.AllowCIDRs) > 0 && !cfg.Dev {
		add("fail", "egress", "egress.allow_cidrs lets actions reach denied ranges (test-only setting)", "remove egress.allow_cidrs")
	}
	for i, w := range cfg.Webhooks {
		if strings.HasPrefix(strings.ToLower(w.URL), "http://") {
			add("warn", "webhooks", fmt.Sprintf("webhooks[%d] is plain http: deliveries can be read in transit", i), "use an https URL")
		}
	}
	// Directories and keys.
	out = append(out, checkPrivateDir("state_dir", cfg.StateDir)...)
	out = append(out, checkPrivateDir("keys_dir", cfg.KeysDir)...)
	// The lease keys and store MAC key, and the receipt signing keys.
	for _, dir := range []string{cfg.KeysDir, filepath.Join(cfg.StateDir, "ledger", "keys")} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			if info.Mode().Perm()&0o077 != 0 {
				add("fail", "keys", fmt.Sprintf("key file %s is mode %04o", filepath.Join(dir, e.Name()), info.Mode().Perm()), "chmod 600 "+filepath.Join(dir, e.Name()))
			}
		}
	}
	// Sockets (when the gate runs).
	out = append(out, checkSocket("socket", cfg.Socket, false)...)
	out = append(out, checkSocket("admin_socket", cfg.AdminSocket, true)...)
	if cfg.Admin.SocketGroup == "" && len(cfg.Admin.Operators) == 0 && !cfg.Dev {
		add("warn", "operators", "no admin.operators configured: only root can use the admin socket", "list operator users in admin.operators")
	}
	return out
}

func checkPrivateDir(name, dir string) []finding {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return []finding{{"warn", name, dir + " does not exist yet", "it is created (mode 0700) at first start"}}
	case err != nil:
		return []finding{{"fail", name, "cannot stat " + dir, "check the path and permissions"}}
	case info.Mode().Perm()&0o077 != 0:
		return []finding{{"fail", name, fmt.Sprintf("%s is mode %04o: others can read state or keys", dir, info.Mode().Perm()), "chmod 700 " + dir}}
	}
	return []finding{{"ok", name, dir + " is private (0700)", ""}}
}

func checkSocket(name, path string, admin bool) []finding {
	info, err := os.Stat(path)
	if err != nil {
		return []finding{{"warn", name, path + " not found (gate not running?)", "start `latchgate serve`"}}
	}
	perm := info.Mode().Perm()
	if perm&0o006 != 0 {
		return []finding{{"fail", name, fmt.Sprintf("%s is mode %04o: any local user can connect", path, perm), "set a socket group (mode 0660) instead of world access"}}
	}
	if admin && perm&0o060 != 0 {
		return []finding{{"ok", name, fmt.Sprintf("%s is group-accessible (%04o); non-operators in the group get 403", path, perm), ""}}
	}
	return []finding{{"ok", name, fmt.Sprintf("%s mode %04o", path, perm), ""}}
}

func newDoctorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check a configuration and its environment, and say what to fix",
		Long: `Doctor reads the configuration like "latchgate serve" would (--config,
LATCHGATE_* variables and the same flags) and checks it and its
dependencies: Redis AUTH and TLS outside --dev, proof.require_body_hash,
test-only egress settings, state and keys directory permissions, key file
modes, socket modes, operators. It changes nothing. Exits 1 when a check
fails.`,
		Example: `  latchgate doctor --config /etc/latchgate/latchgate.yaml
  latchgate doctor --config ./latchgate.yaml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			if path == "" {
				path = os.Getenv("LATCHGATE_CONFIG")
			}
			cfg, err := loadFileConfig(path)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if err := cfg.overlay(cmd.Flags(), env); err != nil {
				return &exitError{code: 2, err: err}
			}
			fs := doctor(cfg)
			failed := 0
			for _, f := range fs {
				if f.Level == "fail" {
					failed++
				}
			}
			if jsonOut(cmd) {
				b, _ := json.Marshal(map[string]any{"findings": fs, "failed": failed})
				printJSON(cmd.OutOrStdout(), b)
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
				for _, f := range fs {
					line := fmt.Sprintf("%s\t%s\t%s", strings.ToUpper(f.Level), f.Check, safe(f.Message))
					if f.Fix != "" {
						line += "\t→ " + safe(f.Fix)
					}
					fmt.Fprintln(tw, line)
				}
				_ = tw.Flush()
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d check(s) failed", failed)}
			}
			return nil
		},
	}
	addServeFlags(cmd.Flags())
	cmd.Flags().Bool("json", false, "print JSON for machines")
	return cmd
}
