package main

// The soak test runs only when LATCHGATE_SOAK_DURATION is set (make soak):
// a steady load against the real binary, reporting RSS, goroutines,
// threads, open files and latency per interval, read from /proc and the
// gate's /metrics.

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchgate/latchgate/sdk"
)

type soakSample struct {
	rssKiB, goroutines, threads, fds int
	calls, errors                    int
	p50, p99                         time.Duration
}

func procStatus(pid int, key string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return -1
}

func openFiles(pid int) int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(es)
}

// goroutines reads go_goroutines from the admin socket's /metrics.
func goroutines(admin string) int {
	resp, err := unixHTTP(admin).Get("http://localhost/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int(f)
		}
	}
	return -1
}

func TestSoak(t *testing.T) {
	ds := os.Getenv("LATCHGATE_SOAK_DURATION")
	if ds == "" {
		t.Skip("set LATCHGATE_SOAK_DURATION (make soak) to run the soak test")
	}
	dur, err := time.ParseDuration(ds)
	if err != nil {
		t.Fatalf("LATCHGATE_SOAK_DURATION=%q: %v", ds, err)
	}
	interval := dur / 10
	if v := os.Getenv("LATCHGATE_SOAK_INTERVAL"); v != "" {
		if interval, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	workers := 4
	if v := os.Getenv("LATCHGATE_SOAK_WORKERS"); v != "" {
		workers, _ = strconv.Atoi(v)
	}
	p := startGate(t, t.TempDir())
	p.waitReady(t)
	pid := p.cmd.Process.Pid

	var mu sync.Mutex // guards lat, errs
	var lat []time.Duration
	errs := 0
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// A new session now and then, so session records churn too.
				c, err := sdk.New(sdk.WithSocket(p.socket), sdk.WithAgentID(fmt.Sprintf("soak%d", w)), sdk.WithLogger(slog.New(slog.DiscardHandler)))
				if err != nil {
					t.Error(err)
					return
				}
				for i := 0; i < 500 && ctx.Err() == nil; i++ {
					t0 := time.Now()
					_, err := c.Execute(ctx, "echo", map[string]any{"w": w, "i": i}, sdk.WithoutIdempotencyKey())
					d := time.Since(t0)
					mu.Lock()
					if err != nil && ctx.Err() == nil {
						errs++
					} else if err == nil {
						lat = append(lat, d)
					}
					mu.Unlock()
				}
				c.Close()
			}
		}()
	}
	var samples []soakSample
	tick := time.NewTicker(interval)
	defer tick.Stop()
	t.Logf("%8s %9s %6s %7s %5s %7s %6s %9s %9s", "t", "rss_kib", "gorout", "threads", "fds", "calls", "errors", "p50", "p99")
	for start := time.Now(); ; {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		mu.Lock()
		l, e := lat, errs
		lat, errs = nil, 0
		mu.Unlock()
		slices.Sort(l)
		s := soakSample{rssKiB: procStatus(pid, "VmRSS"), goroutines: goroutines(p.admin), threads: procStatus(pid, "Threads"),
			fds: openFiles(pid), calls: len(l), errors: e}
		if len(l) > 0 {
			s.p50, s.p99 = l[len(l)/2], l[len(l)*99/100]
		}
		samples = append(samples, s)
		t.Logf("%8s %9d %6d %7d %5d %7d %6d %9s %9s", time.Since(start).Round(time.Second), s.rssKiB, s.goroutines, s.threads, s.fds, s.calls, s.errors, s.p50.Round(time.Microsecond), s.p99.Round(time.Microsecond))
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	if len(samples) < 3 {
		return
	}
	// Flat: compare the last sample with the second (after warm-up).
	first, last := samples[1], samples[len(samples)-1]
	if last.rssKiB > 2*first.rssKiB+64<<10 || last.goroutines > first.goroutines+100 || last.fds > first.fds+50 {
		t.Fatalf("resources grew during the soak: first %+v, last %+v", first, last)
	}
	for _, s := range samples {
		if s.errors > 0 {
			t.Errorf("errors during the soak: %+v", s)
		}
	}
}
