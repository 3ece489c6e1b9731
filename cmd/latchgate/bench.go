package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/latchgate/latchgate/loadgen"
)

// benchSummary is the one line `latchgate bench --json` prints.
type benchSummary struct {
	Mode             string         `json:"mode"` // "embedded", "redis" or "external"
	Agents           int            `json:"agents"`
	RatePerS         float64        `json:"rate_per_s"` // 0: full speed
	DurationS        float64        `json:"duration_s"`
	Requests         int64          `json:"requests"`
	ThroughputPerS   float64        `json:"throughput_per_s"`
	P50MS            float64        `json:"p50_ms"`
	P95MS            float64        `json:"p95_ms"`
	P99MS            float64        `json:"p99_ms"`
	MaxMS            float64        `json:"max_ms"`
	Errors           int64          `json:"errors"`
	ErrorsByCode     map[string]int `json:"errors_by_code"`
	GateCPUUSPerExec float64        `json:"gate_cpu_us_per_exec"`
	// GateSysUSPerExec is the kernel's share of it (syscalls, fsyncs,
	// socket I/O), from the same /proc times.
	GateSysUSPerExec float64        `json:"gate_sys_us_per_exec"`
	GateRSSBytes     int64          `json:"gate_rss_bytes"`
	FloorUS          float64        `json:"floor_us"`
	Floor            *loadgen.Floor `json:"floor"`
	// The floor is measured before and after the run and averaged (this
	// VM's speed drifts); both totals are reported.
	FloorBeforeUS float64 `json:"floor_before_us"`
	FloorAfterUS  float64 `json:"floor_after_us"`
	RatioToFloor  float64 `json:"ratio_to_floor"`
	// RatioToCrypto is gate CPU per execute / (ES256 verification + Ed25519
	// signature), the floor without the policy.
	RatioToCrypto float64 `json:"ratio_to_crypto"`
	// With --idle-sessions: how many, and the RSS growth per session.
	// Gate is where the gate's own metrics say the time went (needs its
	// admin socket: always for a started gate, --admin-socket otherwise).
	Gate *loadgen.GateTimes `json:"gate,omitempty"`

	IdleSessions           int     `json:"idle_sessions,omitempty"`
	IdleRSSBytesPerSession float64 `json:"idle_rss_bytes_per_session,omitempty"`
}

func newBenchCmd() *cobra.Command {
	var (
		duration    time.Duration
		agents      int
		rate        float64
		redisURL    string
		socket      string
		adminSocket string
		pid         int
		jsonOut     bool
		cpuProfile  string
		heapProfile string
		floorIters  int
		idle        int
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a gate: echo executes per second, latency, gate CPU per execute, and the crypto+policy floor",
		Long: `bench drives echo executes through the client socket with N agents (each
its own P-256 key, lease and keep-alive connection, a fresh DPoP proof per
request), at full speed or at --rate requests per second.

Without --socket it starts "latchgate serve --dev" (this binary) in a
temporary state directory (--redis-url: on that Redis, under a fresh key
prefix) and measures that child's CPU time from /proc. With --socket it
targets a running gate; give --pid for its CPU time.

It also measures the floor in-process, before and after the run (the mean
is used): one ES256 proof verification, one Ed25519 receipt signature and
one full policy evaluation, with the gate's own packages.
ratio_to_floor = gate CPU per execute / floor; ratio_to_crypto = gate CPU
per execute / (ES256 verification + Ed25519 signature). gate_sys_us_per_exec
is the kernel's share of the gate's CPU (syscalls, fsyncs, socket I/O).

From the gate's own metrics (its admin socket; --admin-socket with --socket)
it reports where an execute waited: "gate" holds the mean time in the
gate's handler and in the receipt's group commit, the ledger's commits per
second and their mean write + fsync, the store's fsyncs, and how many
commits and fsyncs took over 10 ms (syncs_over_10ms) and over 100 ms
(slow_syncs): disk stalls, which hold every request waiting on them and
at a fixed rate decide the p99.`,
		Example: `  latchgate bench --duration 10s --agents 32
  latchgate bench --rate 1000 --json
  latchgate bench --redis-url redis://127.0.0.1:6379/0
  latchgate bench --socket /run/latchgate/gate.sock --pid "$(pidof latchgate)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
			mode := "external"
			if socket == "" && (pid != 0 || adminSocket != "") {
				return &exitError{code: 2, err: errors.New("--pid and --admin-socket describe a running gate: give its --socket too (without --socket, bench starts its own gate)")}
			}
			if socket == "" {
				mode = "embedded"
				if redisURL != "" {
					mode = "redis"
				}
				child, err := startBenchGate(ctx, redisURL, cpuProfile, heapProfile)
				if err != nil {
					return err
				}
				defer child.stop(errw)
				socket, pid, adminSocket = child.socket, child.pid, child.admin
				if !jsonOut {
					fmt.Fprintf(errw, "started gate pid %d (%s), state %s\n", pid, mode, child.dir)
				}
			} else if redisURL != "" {
				return &exitError{code: 2, err: errors.New("--redis-url starts a gate on that Redis; it cannot be combined with --socket")}
			}
			before, err := loadgen.MeasureFloor(ctx, floorIters)
			if err != nil {
				return err
			}
			res, runErr := loadgen.Run(ctx, loadgen.Config{Socket: socket, Agents: agents, Duration: duration, Rate: rate, GatePID: pid, AdminSocket: adminSocket})
			if res == nil {
				return runErr
			}
			after, err := loadgen.MeasureFloor(ctx, floorIters)
			if err != nil {
				return err
			}
			floor := loadgen.MeanFloor(before, after)
			s := benchSummary{
				Mode: mode, Agents: res.Agents, RatePerS: rate, DurationS: round3(res.DurationS), Requests: res.Requests,
				ThroughputPerS: round3(res.ThroughputPerS), P50MS: res.P50MS, P95MS: res.P95MS, P99MS: res.P99MS, MaxMS: res.MaxMS,
				Errors: res.Errors, ErrorsByCode: res.ErrorsByCode, GateCPUUSPerExec: round3(res.GateCPUUSPerExe),
				GateSysUSPerExec: round3(res.GateSysUSPerExe),
				FloorUS:          round3(floor.TotalUS), Floor: floor,
				FloorBeforeUS: round3(before.TotalUS), FloorAfterUS: round3(after.TotalUS),
				Gate: res.Gate,
			}
			if pid != 0 {
				s.GateRSSBytes, _ = loadgen.ProcessRSS(pid)
			}
			if idle > 0 {
				if err := loadgen.OpenIdle(ctx, socket, idle); err != nil {
					return err
				}
				s.IdleSessions = idle
				if pid != 0 {
					rss, _ := loadgen.ProcessRSS(pid)
					s.IdleRSSBytesPerSession = round3(float64(rss-s.GateRSSBytes) / float64(idle))
				}
			}
			if floor.TotalUS > 0 && res.GateCPUUSPerExe > 0 {
				s.RatioToFloor = round3(res.GateCPUUSPerExe / floor.TotalUS)
			}
			if crypto := floor.VerifyProofUS + floor.SignReceiptUS; crypto > 0 && res.GateCPUUSPerExe > 0 {
				s.RatioToCrypto = round3(res.GateCPUUSPerExe / crypto)
			}
			if jsonOut {
				b, err := json.Marshal(s)
				if err != nil {
					return err
				}
				fmt.Fprintln(out, string(b))
			} else {
				printBench(out, s)
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.DurationVar(&duration, "duration", 10*time.Second, "measured run length (after leases are open)")
	f.IntVar(&agents, "agents", 32, "agents, each its own key, lease and connection")
	f.Float64Var(&rate, "rate", 0, "total executes per second (0: full speed)")
	f.StringVar(&redisURL, "redis-url", "", "start the gate on this Redis instead of the embedded store")
	f.StringVar(&socket, "socket", "", "target a running gate's client socket instead of starting one")
	f.IntVar(&pid, "pid", 0, "with --socket: the gate's process id, for its CPU time")
	f.StringVar(&adminSocket, "admin-socket", "", "with --socket: the gate's admin socket, to report from its metrics where an execute waited (you must be one of its operators)")
	f.BoolVar(&jsonOut, "json", false, "print only one JSON summary line on stdout")
	f.StringVar(&cpuProfile, "cpu-profile", "", "write the started gate's CPU profile to this file")
	f.StringVar(&heapProfile, "heap-profile", "", "write the started gate's heap profile to this file at exit")
	f.IntVar(&floorIters, "floor-iterations", 2000, "iterations of each floor measurement")
	f.IntVar(&idle, "idle-sessions", 0, "after the run, open this many leases that are never used and report the gate's RSS growth (with --heap-profile: the heap they hold)")
	return cmd
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func printBench(w io.Writer, s benchSummary) {
	rate := "full speed"
	if s.RatePerS > 0 {
		rate = fmt.Sprintf("%.0f req/s", s.RatePerS)
	}
	fmt.Fprintf(w, "mode %s, %d agents, %s, %.1fs: %d requests\n", s.Mode, s.Agents, rate, s.DurationS, s.Requests)
	fmt.Fprintf(w, "throughput   %.0f executes/s\n", s.ThroughputPerS)
	fmt.Fprintf(w, "latency      p50 %.3f ms  p95 %.3f ms  p99 %.3f ms  max %.3f ms\n", s.P50MS, s.P95MS, s.P99MS, s.MaxMS)
	codes := make([]string, 0, len(s.ErrorsByCode))
	for c := range s.ErrorsByCode {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%s=%d", c, s.ErrorsByCode[c]))
	}
	fmt.Fprintf(w, "errors       %d %s\n", s.Errors, strings.Join(parts, " "))
	if s.GateCPUUSPerExec > 0 {
		fmt.Fprintf(w, "gate CPU     %.1f µs/execute, %.1f of it in the kernel (RSS %.1f MiB)\n", s.GateCPUUSPerExec, s.GateSysUSPerExec, float64(s.GateRSSBytes)/(1<<20))
	} else {
		fmt.Fprintf(w, "gate CPU     not measured (give --pid)\n")
	}
	fmt.Fprintf(w, "floor        %.1f µs = ES256 verify %.1f + Ed25519 sign %.1f + policy %.1f (before the run %.1f, after %.1f)\n",
		s.FloorUS, s.Floor.VerifyProofUS, s.Floor.SignReceiptUS, s.Floor.PolicyUS, s.FloorBeforeUS, s.FloorAfterUS)
	if s.RatioToFloor > 0 {
		fmt.Fprintf(w, "ratio        %.2f × floor, %.2f × (ES256 verify + Ed25519 sign)\n", s.RatioToFloor, s.RatioToCrypto)
	}
	if g := s.Gate; g != nil {
		fmt.Fprintf(w, "in the gate  %.3f ms per execute, %.3f ms of it waiting for the receipt's group commit\n", g.RequestMS, g.ReceiptAppendMS)
		fmt.Fprintf(w, "disk         %.0f ledger commits/s of %.3f ms, %.0f store fsyncs/s of %.3f ms; %d over 10 ms, %d over 100 ms\n",
			g.LedgerCommitsPerS, g.LedgerCommitMS, g.StoreFsyncsPerS, g.StoreFsyncMS, g.SyncsOver10ms, g.SlowSyncs)
	}
	if s.IdleSessions > 0 {
		fmt.Fprintf(w, "idle         %d sessions, RSS +%.0f bytes/session\n", s.IdleSessions, s.IdleRSSBytesPerSession)
	}
}

// benchGate is a gate started by bench.
type benchGate struct {
	cmd    *exec.Cmd
	dir    string
	socket string
	admin  string
	pid    int
	done   chan error
}

// startBenchGate starts `latchgate serve --dev` (this executable) in a
// temporary directory and waits until it answers /readyz.
func startBenchGate(ctx context.Context, redisURL, cpuProfile, heapProfile string) (*benchGate, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "latchgate-bench-")
	if err != nil {
		return nil, err
	}
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	// A fresh key prefix per run, and receipt copies that expire soon: a
	// bench against a shared Redis must not leave 30 days of them behind.
	cfgYAML := fmt.Sprintf("store: {prefix: \"latchgate-bench-%s:\", receipt_ttl: 10m}\n", hex.EncodeToString(rb[:]))
	if err := os.WriteFile(filepath.Join(dir, "latchgate.yaml"), []byte(cfgYAML), 0o600); err != nil {
		return nil, err
	}
	g := &benchGate{dir: dir, socket: filepath.Join(dir, "gate.sock"), admin: filepath.Join(dir, "admin.sock"), done: make(chan error, 1)}
	args := []string{"serve", "--dev", "--config", filepath.Join(dir, "latchgate.yaml"),
		"--state-dir", filepath.Join(dir, "state"), "--socket", g.socket,
		"--admin-socket", g.admin}
	if redisURL != "" {
		args = append(args, "--redis-url", redisURL)
	}
	for _, p := range [][2]string{{"--cpu-profile", cpuProfile}, {"--heap-profile", heapProfile}} {
		if p[1] != "" {
			abs, err := filepath.Abs(p[1])
			if err != nil {
				return nil, err
			}
			args = append(args, p[0], abs)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "gate.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	g.cmd = exec.Command(exe, args...)
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	g.cmd.Env = benchChildEnv()
	if err := g.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	g.pid = g.cmd.Process.Pid
	go func() { g.done <- g.cmd.Wait() }()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", g.socket)
		},
	}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if res, err := hc.Get("http://localhost/readyz"); err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return g, nil
			}
		}
		select {
		case err := <-g.done:
			g.done <- err
			log, _ := os.ReadFile(filepath.Join(dir, "gate.log"))
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("bench gate exited before it was ready (%v):\n%s", err, tail(log, 2000))
		case <-ctx.Done():
			g.stop(io.Discard)
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.stop(io.Discard)
			return nil, errors.New("bench gate not ready after 30s")
		}
	}
}

// benchChildEnv is the environment without LATCHGATE_* settings, so the
// child gate is exactly the one the flags describe.
func benchChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LATCHGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// stop ends the child with SIGTERM (SIGKILL after 15s) and removes its
// directory.
func (g *benchGate) stop(w io.Writer) {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-g.done:
		if err != nil {
			fmt.Fprintf(w, "bench gate exited: %v\n", err)
		}
	case <-time.After(15 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
	_ = os.RemoveAll(g.dir)
}
