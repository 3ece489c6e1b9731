package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/latchgate/latchgate/store/storetest"
)

// TestBenchJSON runs `latchgate bench --json` for about a second in each
// mode and checks the summary's shape (never its timings). All but one
// case run at a low fixed rate so the test does not load a shared CI box.
func TestBenchJSON(t *testing.T) {
	tests := []struct {
		name     string
		args     func(t *testing.T) []string
		wantMode string
		// wantGate: the summary has the gate's own figures ("gate");
		// storeSyncs: the embedded store fsynced during the run.
		wantGate, storeSyncs bool
	}{
		{name: "ok/full-speed", wantMode: "embedded", wantGate: true, storeSyncs: true, args: func(*testing.T) []string { return []string{"--agents", "1"} }},
		{name: "ok/rate", wantMode: "embedded", wantGate: true, storeSyncs: true, args: func(*testing.T) []string { return []string{"--rate", "50"} }},
		{name: "ok/external", wantMode: "external", args: func(t *testing.T) []string {
			p := startGate(t, t.TempDir())
			p.waitReady(t)
			return []string{"--rate", "50", "--socket", p.socket, "--pid", strconv.Itoa(p.cmd.Process.Pid)}
		}},
		{name: "ok/external-admin", wantMode: "external", wantGate: true, storeSyncs: true, args: func(t *testing.T) []string {
			p := startGate(t, t.TempDir())
			p.waitReady(t)
			return []string{"--rate", "50", "--socket", p.socket, "--pid", strconv.Itoa(p.cmd.Process.Pid), "--admin-socket", p.admin}
		}},
		{name: "ok/redis", wantMode: "redis", wantGate: true, args: func(t *testing.T) []string {
			url, _, _ := storetest.StartRedis(t)
			return []string{"--rate", "50", "--redis-url", url}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"bench", "--json", "--duration", "1s", "--floor-iterations", "20"}, tt.args(t)...)
			cmd := exec.Command(binPath, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("latchgate %v = %v\nstderr: %s", args, err, stderr.String())
			}
			lines := bytes.Split(bytes.TrimRight(stdout.Bytes(), "\n"), []byte("\n"))
			if len(lines) != 1 {
				t.Fatalf("stdout has %d lines, want one JSON line:\n%s", len(lines), stdout.String())
			}
			var got map[string]any
			if err := json.Unmarshal(lines[0], &got); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, lines[0])
			}
			for _, k := range []string{"throughput_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "gate_cpu_us_per_exec", "gate_sys_us_per_exec", "floor_us", "floor_before_us", "floor_after_us", "ratio_to_floor", "requests"} {
				if _, ok := got[k].(float64); !ok {
					t.Errorf("summary[%q] = %#v, want a number", k, got[k])
				}
			}
			if f, b, a := got["floor_us"].(float64), got["floor_before_us"].(float64), got["floor_after_us"].(float64); math.Abs(f-(b+a)/2) > 0.01 {
				t.Errorf("floor_us = %v, want the mean of before %v and after %v", f, b, a)
			}
			if sys, all := got["gate_sys_us_per_exec"].(float64), got["gate_cpu_us_per_exec"].(float64); sys < 0 || sys > all {
				t.Errorf("gate_sys_us_per_exec = %v, want a part of gate_cpu_us_per_exec %v", sys, all)
			}
			if got["mode"] != tt.wantMode {
				t.Errorf("summary mode = %v, want %s", got["mode"], tt.wantMode)
			}
			if n, _ := got["requests"].(float64); n < 1 {
				t.Errorf("summary requests = %v, want at least 1", got["requests"])
			}
			if e, _ := got["errors"].(float64); e != 0 {
				t.Errorf("summary errors = %v (%v), want 0", e, got["errors_by_code"])
			}
			g, hasGate := got["gate"].(map[string]any)
			if hasGate != tt.wantGate {
				t.Fatalf("summary gate = %#v, want present=%v", got["gate"], tt.wantGate)
			}
			if !hasGate {
				return
			}
			num := func(k string) float64 {
				v, ok := g[k].(float64)
				if !ok {
					t.Errorf("gate[%q] = %#v, want a number", k, g[k])
				}
				return v
			}
			req, app := num("request_ms"), num("receipt_append_ms")
			if req <= 0 || app <= 0 || app > req {
				t.Errorf("gate request_ms %v, receipt_append_ms %v: want both > 0, the append a part of the request", req, app)
			}
			if c, ms := num("ledger_commits_per_s"), num("ledger_commit_ms"); c <= 0 || ms <= 0 {
				t.Errorf("gate ledger_commits_per_s %v, ledger_commit_ms %v: want both > 0", c, ms)
			}
			if f := num("store_fsyncs_per_s"); (f > 0) != tt.storeSyncs {
				t.Errorf("gate store_fsyncs_per_s = %v, want > 0: %v", f, tt.storeSyncs)
			}
			if n, m := num("slow_syncs"), num("syncs_over_10ms"); n < 0 || m < n {
				t.Errorf("gate slow_syncs = %v, syncs_over_10ms = %v: want 0 ≤ slow_syncs ≤ syncs_over_10ms", n, m)
			}
		})
	}
}

// Flags that describe a running gate need --socket, and --redis-url (which
// starts a gate) cannot have it: bench refuses the mix with exit 2 and
// says why, instead of silently ignoring a flag.
func TestBenchFlagConflicts(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--pid", "1"}, "--socket"},
		{[]string{"--admin-socket", "/run/latchgate-admin/gate-admin.sock"}, "--socket"},
		{[]string{"--socket", "/nonexistent/gate.sock", "--redis-url", "redis://127.0.0.1:1/0"}, "cannot be combined"},
	} {
		out, code := cli(t, append([]string{"bench", "--duration", "1s"}, tt.args...)...)
		if code != 2 || !strings.Contains(out, tt.want) {
			t.Errorf("bench %v = exit %d %q, want exit 2 naming %q", tt.args, code, out, tt.want)
		}
	}
}
