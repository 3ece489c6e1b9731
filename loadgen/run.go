package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config is one load run.
type Config struct {
	// Socket is the gate's client socket. Required.
	Socket string
	// Agents is the number of agents (each its own key, lease and
	// connection). Default 32; zero means the default.
	Agents int
	// Duration is the measured run, after leases are open. Default 10s.
	Duration time.Duration
	// Rate is the total executes per second, spread evenly over the agents;
	// latency counts from each request's scheduled time, so a stalled gate
	// is not hidden (no coordinated omission). Zero means full speed
	// (each agent sends its next request as soon as the last is answered).
	Rate float64
	// GatePID is the gate's process id, for its CPU time from /proc; zero
	// means the gate's CPU is not measured.
	GatePID int
	// RequestTimeout bounds one execute. Default 10s.
	RequestTimeout time.Duration
	// AdminSocket is the gate's admin socket; when set, the run reads the
	// gate's /metrics before and after and reports Result.Gate. The
	// caller must be one of the gate's operators.
	AdminSocket string
}

func (c Config) withDefaults() Config {
	if c.Agents == 0 {
		c.Agents = 32
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Socket == "":
		return errors.New("socket: required (the gate's client socket path)")
	case c.Agents < 1 || c.Agents > 10000:
		return fmt.Errorf("agents %d: want 1–10000", c.Agents)
	case c.Duration <= 0:
		return fmt.Errorf("duration %s: want a positive duration such as \"10s\"", c.Duration)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("rate %v: want 0 (full speed) or a positive number of requests per second", c.Rate)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("request timeout %s: want a positive duration", c.RequestTimeout)
	}
	return nil
}

// Result is what a run measured.
type Result struct {
	Agents          int            `json:"agents"`
	DurationS       float64        `json:"duration_s"`
	Requests        int64          `json:"requests"`
	OK              int64          `json:"ok"`
	Errors          int64          `json:"errors"`
	ErrorsByCode    map[string]int `json:"errors_by_code"`
	ThroughputPerS  float64        `json:"throughput_per_s"`
	P50MS           float64        `json:"p50_ms"`
	P95MS           float64        `json:"p95_ms"`
	P99MS           float64        `json:"p99_ms"`
	MaxMS           float64        `json:"max_ms"`
	GateCPUUSPerExe float64        `json:"gate_cpu_us_per_exec"` // 0 when not measured
	GateCPUS        float64        `json:"gate_cpu_s"`
	// GateSysUSPerExe is the part of GateCPUUSPerExe spent in the kernel
	// on the gate's behalf: syscalls, fsyncs, socket reads and writes.
	GateSysUSPerExe float64 `json:"gate_sys_us_per_exec"`
	// Gate is where the gate says the time went (nil without AdminSocket).
	Gate *GateTimes `json:"gate,omitempty"`
}

// agentStats is one agent's tally (owned by its goroutine until the end).
type agentStats struct {
	lat  []time.Duration
	errs map[string]int
}

// Run opens cfg.Agents leases, then drives echo executes for cfg.Duration.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	agents := make([]*agent, cfg.Agents)
	defer func() {
		for _, a := range agents {
			if a != nil {
				a.close()
			}
		}
	}()
	ttl := max(2*cfg.Duration+time.Minute, 5*time.Minute)
	ttl = min(ttl, time.Hour)
	for i := range agents {
		a, err := newAgent(cfg.Socket, cfg.RequestTimeout)
		if err != nil {
			return nil, err
		}
		agents[i] = a
		if err := a.openLease(ctx, "bench-"+strconv.Itoa(i), ttl); err != nil {
			return nil, fmt.Errorf("agent %d: %w", i, err)
		}
	}
	// Warm up every connection and lease cache with one execute each.
	for _, a := range agents {
		_ = a.execute(ctx)
	}

	stats := make([]agentStats, len(agents))
	var m0, m1 gateMetrics
	var mErr, mErr2 error
	if cfg.AdminSocket != "" {
		m0, mErr = scrapeGate(ctx, cfg.AdminSocket)
	}
	cpu0, cpuErr := processCPU(cfg.GatePID)
	start := time.Now()
	end := start.Add(cfg.Duration)
	rctx, cancel := context.WithDeadline(ctx, end.Add(cfg.RequestTimeout))
	defer cancel()
	var wg sync.WaitGroup
	for i, a := range agents {
		st := &stats[i]
		st.errs = map[string]int{}
		st.lat = make([]time.Duration, 0, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var interval time.Duration
			next := start
			if cfg.Rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(cfg.Agents) / cfg.Rate)
				// Spread the agents' phases over one interval.
				next = start.Add(interval * time.Duration(i) / time.Duration(cfg.Agents))
			}
			for {
				if cfg.Rate > 0 {
					if !next.Before(end) {
						return
					}
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
				}
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				code := a.execute(rctx)
				t1 := time.Now()
				from := t0
				if cfg.Rate > 0 {
					from = next
					next = next.Add(interval)
				}
				if code == "canceled" {
					return
				}
				st.lat = append(st.lat, t1.Sub(from))
				if code != "" {
					st.errs[code]++
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, cpuErr2 := processCPU(cfg.GatePID)
	if cfg.AdminSocket != "" && mErr == nil {
		m1, mErr2 = scrapeGate(ctx, cfg.AdminSocket)
	}

	res := &Result{Agents: cfg.Agents, DurationS: elapsed.Seconds(), ErrorsByCode: map[string]int{}}
	var all []time.Duration
	for _, st := range stats {
		all = append(all, st.lat...)
		for k, v := range st.errs {
			res.ErrorsByCode[k] += v
			res.Errors += int64(v)
		}
	}
	res.Requests = int64(len(all))
	res.OK = res.Requests - res.Errors
	res.ThroughputPerS = float64(res.OK) / elapsed.Seconds()
	slices.Sort(all)
	res.P50MS, res.P95MS, res.P99MS = ms(quantile(all, 0.50)), ms(quantile(all, 0.95)), ms(quantile(all, 0.99))
	if len(all) > 0 {
		res.MaxMS = ms(all[len(all)-1])
	}
	if cfg.GatePID != 0 && cpuErr == nil && cpuErr2 == nil && res.Requests > 0 {
		res.GateCPUS = (cpu1.total() - cpu0.total()).Seconds()
		res.GateCPUUSPerExe = float64((cpu1.total() - cpu0.total()).Microseconds()) / float64(res.Requests)
		res.GateSysUSPerExe = float64((cpu1.sys - cpu0.sys).Microseconds()) / float64(res.Requests)
	}
	if cfg.AdminSocket != "" && mErr == nil && mErr2 == nil {
		res.Gate = gateTimes(m0, m1, elapsed)
	}
	if cfg.GatePID != 0 && (cpuErr != nil || cpuErr2 != nil) {
		return res, fmt.Errorf("gate CPU time: %w", errors.Join(cpuErr, cpuErr2))
	}
	if mErr != nil || mErr2 != nil {
		return res, fmt.Errorf("gate metrics: %w", errors.Join(mErr, mErr2))
	}
	return res, nil
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

// quantile returns the q-quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuTimes is a process's CPU time in user space and in the kernel.
type cpuTimes struct{ user, sys time.Duration }

func (c cpuTimes) total() time.Duration { return c.user + c.sys }

// processCPU returns the user and system CPU time of pid (all its
// threads) from /proc/<pid>/stat; zero when pid is 0.
func processCPU(pid int) (cpuTimes, error) {
	if pid == 0 {
		return cpuTimes{}, nil
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	// The command name may contain spaces; fields resume after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stm, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return cpuTimes{user: time.Duration(ut) * time.Second / clockTicks, sys: time.Duration(stm) * time.Second / clockTicks}, nil
}

// ProcessRSS returns the resident set size of pid in bytes (from
// /proc/<pid>/status VmRSS).
func ProcessRSS(pid int) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, err
				}
				return kb << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// OpenIdle opens n leases on socket (each its own key and agent id
// "idle-<i>") and never uses them: the gate then holds n idle sessions.
func OpenIdle(ctx context.Context, socket string, n int) error {
	for i := range n {
		a, err := newAgent(socket, 10*time.Second)
		if err != nil {
			return err
		}
		err = a.openLease(ctx, "idle-"+strconv.Itoa(i), time.Hour)
		a.close()
		if err != nil {
			return fmt.Errorf("idle session %d: %w", i, err)
		}
	}
	return nil
}
