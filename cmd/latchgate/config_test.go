package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Precedence: flags > LATCHGATE_* environment > config file > defaults.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "latchgate.yaml")
	if err := os.WriteFile(file, []byte("redis_url: redis://file:6379/0\npolicy:\n  timeout: 1s\nlog_level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		env       map[string]string
		args      []string
		wantRedis string
		wantPol   time.Duration
		wantLevel string
	}{
		{name: "file", wantRedis: "redis://file:6379/0", wantPol: time.Second, wantLevel: "warn"},
		{name: "env-over-file", env: map[string]string{"LATCHGATE_REDIS_URL": "redis://env:6379/0", "LATCHGATE_POLICY_TIMEOUT": "2s"},
			wantRedis: "redis://env:6379/0", wantPol: 2 * time.Second, wantLevel: "warn"},
		{name: "flag-over-env", env: map[string]string{"LATCHGATE_REDIS_URL": "redis://env:6379/0", "LATCHGATE_LOG_LEVEL": "error"},
			args: []string{"--redis-url", "redis://flag:6379/0", "--policy-timeout", "3s"}, wantRedis: "redis://flag:6379/0", wantPol: 3 * time.Second, wantLevel: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newServeCmd()
			if err := cmd.Flags().Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadFileConfig(file)
			if err != nil {
				t.Fatal(err)
			}
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			if err := cfg.overlay(cmd.Flags(), lookup); err != nil {
				t.Fatal(err)
			}
			if cfg.RedisURL != tt.wantRedis || cfg.Policy.Timeout != tt.wantPol || cfg.LogLevel != tt.wantLevel {
				t.Errorf("overlay = redis %q policy %v log %q; want %q %v %q", cfg.RedisURL, cfg.Policy.Timeout, cfg.LogLevel, tt.wantRedis, tt.wantPol, tt.wantLevel)
			}
		})
	}
	// The ledger section reaches the file config.
	led := filepath.Join(t.TempDir(), "ledger.yaml")
	_ = os.WriteFile(led, []byte("ledger: {busy_commit_window: 500us, busy_commit_ops: 4}\n"), 0o600)
	if c, err := loadFileConfig(led); err != nil || c.Ledger.BusyCommitWindow != 500*time.Microsecond || c.Ledger.BusyCommitOps != 4 {
		t.Fatalf("loadFileConfig(ledger section) = %+v, %v", c.Ledger, err)
	}
	// Unknown keys in the file are refused, naming the problem.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("redis_ulr: x\n"), 0o600)
	if _, err := loadFileConfig(bad); err == nil {
		t.Fatal("loadFileConfig(unknown key) = nil error, want a refusal")
	}
	// A bad duration in the environment is refused.
	cfg, _ := loadFileConfig("")
	if err := cfg.overlay(newServeCmd().Flags(), func(k string) (string, bool) {
		return "soon", k == "LATCHGATE_POLICY_TIMEOUT"
	}); err == nil {
		t.Fatal("overlay(LATCHGATE_POLICY_TIMEOUT=soon) = nil error")
	}
}

// The serve config accepts the Redis URLs the Redis backend accepts,
// including unix:// for a Redis on the gate's host, and names the schemes
// when it refuses one.
func TestConfigRedisURL(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"", true},
		{"redis://127.0.0.1:6379/0", true},
		{"rediss://redis.internal:6380/0", true},
		{"unix:///run/redis/redis.sock", true},
		{"http://127.0.0.1:6379", false},
		{"127.0.0.1:6379", false},
	} {
		cfg, err := loadFileConfig("")
		if err != nil {
			t.Fatal(err)
		}
		cfg.RedisURL = tt.url
		err = cfg.validate()
		if (err == nil) != tt.ok {
			t.Errorf("validate(redis_url %q) = %v, want ok=%v", tt.url, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "unix://") {
			t.Errorf("validate(redis_url %q) = %q, want the accepted schemes named", tt.url, err)
		}
	}
}
