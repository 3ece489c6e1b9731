package main

// Process-level tests: they build the real binary once and run it as the
// operator would, on real sockets in temp dirs.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/latchgate/latchgate/receipts"
	"github.com/latchgate/latchgate/sdk"
	"github.com/latchgate/latchgate/store/storetest"
	"github.com/redis/go-redis/v9"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lgbin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "latchgate")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build latchgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `latchgate serve`.
type proc struct {
	cmd    *exec.Cmd
	socket string
	admin  string
	state  string
	log    *bytes.Buffer
	mu     *sync.Mutex
	done   chan error
}

type lockedBuf struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// startGate runs serve --dev with sockets in a short temp dir.
func startGate(t *testing.T, state string, args ...string) *proc {
	t.Helper()
	return startGateEnv(t, state, nil, args...)
}

// startGateEnv is startGate with extra environment variables.
func startGateEnv(t *testing.T, state string, env []string, args ...string) *proc {
	t.Helper()
	sock, err := os.MkdirTemp("", "lgs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sock) })
	p := &proc{socket: filepath.Join(sock, "c", "gate.sock"), admin: filepath.Join(sock, "a", "admin.sock"),
		state: state, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	full := append([]string{"serve", "--dev", "--socket", p.socket, "--admin-socket", p.admin, "--state-dir", state}, args...)
	p.cmd = exec.Command(binPath, full...)
	// Tests prove outcomes, not latency: a loaded CI machine must not turn a
	// slow policy evaluation into a (correct, fail-closed) 503.
	p.cmd.Env = append(append(os.Environ(), "LATCHGATE_POLICY_TIMEOUT=10s"), env...)
	p.cmd.Stdout = lockedBuf{p.mu, p.log}
	p.cmd.Stderr = lockedBuf{p.mu, p.log}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	})
	return p
}

// waitReady waits until GET /readyz answers 200 (or fails the test).
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if st, _ := p.get("/readyz"); st == 200 {
			return
		}
		select {
		case err := <-p.done:
			t.Fatalf("gate exited: %v\n%s", err, p.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("gate not ready\n%s", p.logs())
}

func (p *proc) get(path string) (int, []byte) {
	c := unixHTTP(p.socket)
	resp, err := c.Get("http://localhost" + path)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func unixHTTP(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// cli runs a latchgate subcommand and returns its output and exit code.
func cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestHTTPNeedsUnsafeFlag(t *testing.T) {
	out, code := cli(t, "serve", "--dev", "--state-dir", t.TempDir(), "--http", "127.0.0.1:0")
	if code == 0 || !strings.Contains(out, "--unsafe-expose-http") {
		t.Fatalf("serve --http without --unsafe-expose-http = exit %d %q, want a refusal naming the flag", code, out)
	}
}

func TestLiveSocketRefusedStaleReplaced(t *testing.T) {
	a := startGate(t, t.TempDir())
	a.waitReady(t)
	// A second gate on the same socket must refuse to start.
	b := exec.Command(binPath, "serve", "--dev", "--socket", a.socket, "--admin-socket", a.admin+"2", "--state-dir", t.TempDir())
	out, err := b.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another gate is already serving") {
		t.Fatalf("second gate on a live socket: err %v, out %q", err, out)
	}
	// A stale socket file (nobody listening) is replaced.
	dir, _ := os.MkdirTemp("", "lgst")
	defer os.RemoveAll(dir)
	stale := filepath.Join(dir, "c", "gate.sock")
	_ = os.MkdirAll(filepath.Dir(stale), 0o700)
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = ln.Close()
	if _, err := os.Lstat(stale); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	c := startGate(t, t.TempDir(), "--socket", stale)
	c.socket = stale
	c.waitReady(t)
}

func TestSocketDirectoryChecks(t *testing.T) {
	base, _ := os.MkdirTemp("", "lgdc")
	defer os.RemoveAll(base)
	open := filepath.Join(base, "open")
	_ = os.Mkdir(open, 0o777)
	_ = os.Chmod(open, 0o777)
	real := filepath.Join(base, "real")
	_ = os.Mkdir(real, 0o700)
	link := filepath.Join(base, "link")
	_ = os.Symlink(real, link)
	tests := []struct{ name, dir, want string }{
		{"world-writable", open, "writable by others"},
		{"symlink", link, "symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := cli(t, "serve", "--dev", "--state-dir", t.TempDir(),
				"--socket", filepath.Join(tt.dir, "gate.sock"), "--admin-socket", filepath.Join(base, "adm", tt.name, "a.sock"))
			if code == 0 || !strings.Contains(out, tt.want) {
				t.Fatalf("serve with socket dir %s = exit %d %q, want a refusal mentioning %q", tt.name, code, out, tt.want)
			}
		})
	}
}

func TestSocketModes(t *testing.T) {
	p := startGate(t, t.TempDir())
	p.waitReady(t)
	for _, path := range []string{p.socket, p.admin} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", path, fi.Mode().Perm())
		}
		di, _ := os.Stat(filepath.Dir(path))
		if di.Mode().Perm() != 0o700 {
			t.Errorf("%s dir mode = %v, want 0700", path, di.Mode().Perm())
		}
	}
}

// SIGHUP with a broken policy keeps the old one; a good one is swapped in.
func TestSIGHUPReload(t *testing.T) {
	pol := t.TempDir()
	good := "package latchgate\n\ndecision := {\"allow\": true, \"pending_approval\": false, \"deny_reasons\": []}\n"
	if err := os.WriteFile(filepath.Join(pol, "p.rego"), []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startGate(t, t.TempDir(), "--policy-dir", pol)
	p.waitReady(t)
	version := func() string {
		out, code := cli(t, "status", "--json", "--admin-socket", p.admin)
		if code != 0 {
			t.Fatalf("status: %s", out)
		}
		var s struct {
			PolicyVersion string `json:"policy_version"`
		}
		_ = json.Unmarshal([]byte(out), &s)
		return s.PolicyVersion
	}
	v1 := version()
	if err := os.WriteFile(filepath.Join(pol, "p.rego"), []byte("package latchgate\n\ndecision := {"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "reload rejected")
	if v := version(); v != v1 {
		t.Fatalf("policy version after a broken reload = %s, want the old %s", v, v1)
	}
	if st, _ := p.get("/readyz"); st != 200 {
		t.Fatalf("gate not ready after a rejected reload")
	}
	denyAll := "package latchgate\n\ndecision := {\"allow\": false, \"pending_approval\": false, \"deny_reasons\": [\"frozen\"]}\n"
	_ = os.WriteFile(filepath.Join(pol, "p.rego"), []byte(denyAll), 0o600)
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "reloaded policy and manifests")
	if v := version(); v == v1 {
		t.Fatalf("policy version unchanged after a good reload")
	}
}

func waitLog(t *testing.T, p *proc, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(p.logs(), s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("log never said %q:\n%s", s, p.logs())
}

func TestSIGTERMDrainsAndCleansUp(t *testing.T) {
	p := startGate(t, t.TempDir())
	p.waitReady(t)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("gate did not exit after SIGTERM")
	}
	for _, s := range []string{p.socket, p.admin} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind after SIGTERM", s)
		}
	}
	if out, code := cli(t, "receipts", "verify", "--state-dir", p.state); code != 0 {
		t.Fatalf("ledger after SIGTERM: %s", out)
	}
	// Every log line is one JSON object that names each member once (a
	// package naming its component beside serve naming it again gave
	// "component" twice, which log pipelines read differently). The
	// --dev banner is plain text on stdout.
	n := 0
	for _, l := range strings.Split(p.logs(), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		n++
		if dup := repeatedMembers(t, l); len(dup) > 0 {
			t.Errorf("log line names %v more than once: %s", dup, l)
		}
	}
	if n < 3 {
		t.Fatalf("gate logged %d JSON lines from start to exit, want several:\n%s", n, p.logs())
	}
}

// repeatedMembers returns the member names that a JSON object line
// holds more than once, at its top level.
func repeatedMembers(t *testing.T, line string) []string {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(line))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line is not a JSON object: %q", line)
	}
	seen := map[string]bool{}
	var dup []string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		k := tok.(string)
		if seen[k] {
			dup = append(dup, k)
		}
		seen[k] = true
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
	}
	return dup
}

// The gate starts (not ready) while Redis is down and becomes ready when
// it appears, without a restart.
func TestStartsBeforeRedis(t *testing.T) {
	url, stop, restart := storetest.StartRedis(t)
	stop()
	p := startGate(t, t.TempDir(), "--redis-url", url)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, body := p.get("/readyz")
		if st == 503 && strings.Contains(string(body), `"store":false`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz while Redis is down = %d %s\n%s", st, body, p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	restart(true)
	p.waitReady(t)
	c := agent(t, p, "late")
	if _, err := c.Execute(context.Background(), "echo", map[string]any{}); err != nil {
		t.Fatalf("execute once Redis is up: %v", err)
	}
}

// A Redis that may evict keys (here volatile-lru, a managed-Redis default)
// could drop replay entries, revocations and budgets: the gate refuses to
// start on it and says what to change.
func TestRefusesEvictingRedis(t *testing.T) {
	url, _, _ := storetest.StartRedis(t)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	if err := rc.ConfigSet(context.Background(), "maxmemory-policy", "volatile-lru").Err(); err != nil {
		t.Fatal(err)
	}
	p := startGate(t, t.TempDir(), "--redis-url", url)
	select {
	case err := <-p.done:
		if err == nil || !strings.Contains(p.logs(), "maxmemory-policy is volatile-lru") || !strings.Contains(p.logs(), "noeviction") {
			t.Fatalf("serve on an evicting Redis exited with %v, want an error naming the policy and noeviction\n%s", err, p.logs())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve started on an evicting Redis\n%s", p.logs())
	}
}

// kill -9 during a stream of executes: after restart the ledger verifies,
// every receipt answered with 200 is present, and an execution cut off
// after dispatch is an interrupted receipt.
func TestKill9DuringExecutes(t *testing.T) {
	// An upstream that holds requests open so one execution is in flight
	// (dispatched, no answer) at the moment of the kill.
	_, _, hit, args := slowUpstream(t)
	state := t.TempDir()
	p := startGate(t, state, args...)
	p.waitReady(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := sdk.New(sdk.WithSocket(p.socket), sdk.WithAgentID(fmt.Sprintf("w%d", w)), sdk.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				return
			}
			defer c.Close()
			for i := 0; ctx.Err() == nil; i++ {
				res, err := c.Execute(ctx, "echo", map[string]any{"w": w, "i": i}, sdk.WithoutIdempotencyKey())
				if err != nil {
					return
				}
				mu.Lock()
				acked = append(acked, res.ReceiptID)
				mu.Unlock()
			}
		}()
	}
	// One slow execution in flight.
	go func() {
		c, err := sdk.New(sdk.WithSocket(p.socket), sdk.WithAgentID("slow"), sdk.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Execute(ctx, "slow_fetch", map[string]any{}, sdk.WithoutIdempotencyKey())
	}()
	select {
	case <-hit:
	case <-time.After(20 * time.Second):
		t.Fatalf("slow action never reached the upstream\n%s", p.logs())
	}
	time.Sleep(300 * time.Millisecond) // let the echo stream run
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	cancel()
	wg.Wait()
	mu.Lock()
	got := append([]string(nil), acked...)
	mu.Unlock()
	if len(got) == 0 {
		t.Fatal("no execute was acknowledged before the kill")
	}

	q := startGate(t, state, args...)
	q.waitReady(t)
	if out, code := cli(t, "receipts", "verify", "--admin-socket", q.admin); code != 0 {
		t.Fatalf("ledger after kill -9: %s", out)
	}
	for _, id := range got {
		out, code := cli(t, "receipts", "show", id, "--admin-socket", q.admin)
		if code != 0 {
			t.Fatalf("acknowledged receipt %s missing after restart: %s", id, out)
		}
	}
	// The slow execution became an interrupted receipt.
	f, err := os.Open(filepath.Join(state, "ledger", "ledger.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, `"action_id":"slow_fetch"`) && strings.Contains(line, `"kind":"interrupted"`) && strings.Contains(line, `"receipt_id"`) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no interrupted receipt for the execution cut off by kill -9")
	}
	t.Logf("%d acknowledged receipts survived kill -9", len(got))
}

// Secrets given as LATCHGATE_SECRET_<NAME> reach the upstream through the
// gate, and never the agent.
func TestSecretFromEnvironment(t *testing.T) {
	const secret = "env-secret-value-123456"
	got := make(chan string, 1)
	up := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Get("Authorization"):
		default:
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = up.Serve(ln) }()
	defer up.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	mdir := t.TempDir()
	m := fmt.Sprintf("action_id: local_call\nversion: 1.0.0\nrisk_level: low\ninput_schema: {type: object}\nsecrets: [LOCAL_TOKEN]\nexecutor:\n  kind: http\n  method: GET\n  url: http://127.0.0.1:%d/x\n  headers: {Authorization: \"Bearer {{secret.LOCAL_TOKEN}}\"}\n  allow_insecure_http: true\negress:\n  profile: proxy_allowlist\n  allowed_domains: [\"127.0.0.1\"]\n  allowed_ports: [%d]\n", port, port)
	if err := os.WriteFile(filepath.Join(mdir, "local_call.yaml"), []byte(m), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startGateEnv(t, t.TempDir(), []string{"LATCHGATE_SECRET_LOCAL_TOKEN=" + secret},
		"--manifests-dir", mdir, "--egress-allow-cidr", "127.0.0.1/32")
	p.waitReady(t)
	c := agent(t, p, "env")
	res, err := c.Execute(context.Background(), "local_call", map[string]any{})
	if err != nil {
		t.Fatalf("execute: %v\n%s", err, p.logs())
	}
	if auth := <-got; auth != "Bearer "+secret {
		t.Fatalf("upstream saw Authorization %q, want the secret from the environment", auth)
	}
	out, _ := json.Marshal(res.Output)
	if strings.Contains(string(out), secret) || strings.Contains(p.logs(), secret) {
		t.Fatalf("secret leaked to the agent or the log")
	}
}

// The standalone egress proxy allows a listed target only with the test
// CIDR hatch, and refuses unlisted targets.
func TestEgressProxyProcess(t *testing.T) {
	up := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("upstream-ok"))
	})}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = up.Serve(uln) }()
	defer up.Close()
	target := uln.Addr().String()

	run := func(t *testing.T, extra ...string) (*http.Client, func()) {
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pl.Addr().String()
		_ = pl.Close()
		args := append([]string{"egress-proxy", "--listen", addr, "--allow", target}, extra...)
		cmd := exec.Command(binPath, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100; i++ {
			if c, err := net.Dial("tcp", addr); err == nil {
				_ = c.Close()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		proxyURL, _ := url.Parse("http://" + addr)
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		return c, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	}

	t.Run("denied-without-hatch", func(t *testing.T) {
		c, stop := run(t)
		defer stop()
		resp, err := c.Get("http://" + target + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("loopback target without --egress-allow-cidr = %d, want 403", resp.StatusCode)
		}
	})
	t.Run("allowed-with-hatch", func(t *testing.T) {
		c, stop := run(t, "--egress-allow-cidr", "127.0.0.1/32")
		defer stop()
		resp, err := c.Get("http://" + target + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "upstream-ok" {
			t.Fatalf("allowed target = %d %q", resp.StatusCode, b)
		}
		// An unlisted port on the same host is refused.
		resp, err = c.Get("http://127.0.0.1:1/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("unlisted port = %d, want 403", resp.StatusCode)
		}
	})
}

// --http serves client routes only; proofs bind to http://127.0.0.1:<port>.
func TestTCPListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	p := startGate(t, t.TempDir(), "--http", addr, "--unsafe-expose-http")
	p.waitReady(t)
	c, err := sdk.New(sdk.WithBaseURL("http://"+addr), sdk.WithAgentID("tcp-agent"), sdk.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Execute(context.Background(), "echo", map[string]any{"via": "tcp"}); err != nil {
		t.Fatalf("execute over TCP: %v\n%s", err, p.logs())
	}
	resp, err := http.Post("http://"+addr+"/v1/leases/revoke", "application/json", strings.NewReader(`{"all":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("admin route over TCP = %d, want 404", resp.StatusCode)
	}
}

// TestFsyncMetrics: a real gate exports how long its ledger commits and
// its store journal's fsyncs take, so a slow disk can be told from a slow
// gate.
func TestFsyncMetrics(t *testing.T) {
	p := startGate(t, t.TempDir())
	p.waitReady(t)
	c, err := sdk.New(sdk.WithSocket(p.socket), sdk.WithAgentID("fsync"), sdk.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Execute(context.Background(), "echo", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	count := func(name string) float64 {
		resp, err := unixHTTP(p.admin).Get("http://localhost/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+"_count "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		t.Fatalf("/metrics has no %s", name)
		return 0
	}
	// The intent and the receipt are two group commits; the intent's
	// commit fsyncs the store journal beside the ledger.
	if n := count("latchgate_ledger_commit_seconds"); n < 2 {
		t.Errorf("latchgate_ledger_commit_seconds_count = %v after one execute, want >= 2", n)
	}
	if n := count("latchgate_store_fsync_seconds"); n < 1 {
		t.Errorf("latchgate_store_fsync_seconds_count = %v after one execute, want >= 1", n)
	}
}

// receipts verify --state-dir --keys: an offline copy is checked against a
// key set kept elsewhere (here the gate's own GET /v1/receipt-keys); a set
// without the gate's key refuses the copy, and the trusted key ids are
// printed either way.
func TestVerifyOfflineWithKeys(t *testing.T) {
	p := startGate(t, t.TempDir())
	p.waitReady(t)
	if _, err := agent(t, p, "keys").Execute(context.Background(), "echo", map[string]any{"m": 1}); err != nil {
		t.Fatal(err)
	}
	st, published := p.get("/v1/receipt-keys")
	keys, err := receipts.ParseKeySet(published)
	if st != 200 || err != nil || len(keys) != 1 {
		t.Fatalf("GET /v1/receipt-keys = %d %s (%v)", st, published, err)
	}
	var kid string
	for k := range keys {
		kid = k
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	dir := t.TempDir()
	good, other := filepath.Join(dir, "published.json"), filepath.Join(dir, "other.json")
	pub, _, _ := ed25519.GenerateKey(nil)
	foreign := fmt.Sprintf(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":%q,"x":%q}]}`,
		receipts.Thumbprint(pub), base64.RawURLEncoding.EncodeToString(pub))
	for name, b := range map[string][]byte{good: published, other: []byte(foreign)} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--state-dir", p.state}, 0, "stored in the copy"},
		{[]string{"--state-dir", p.state, "--keys", good}, 0, "from " + good},
		{[]string{"--state-dir", p.state, "--keys", other}, 1, "unknown key_id"},
		{[]string{"--keys", good}, 1, "--keys needs --state-dir"},
	} {
		out, code := cli(t, append([]string{"receipts", "verify"}, tt.args...)...)
		if code != tt.code || !strings.Contains(out, tt.want) {
			t.Errorf("receipts verify %v = exit %d\n%s\nwant exit %d and %q", tt.args, code, out, tt.code, tt.want)
		}
		if code == 0 && !strings.Contains(out, kid) {
			t.Errorf("receipts verify %v does not name the trusted key %s:\n%s", tt.args, kid, out)
		}
	}
}

// The test-only egress escape hatch is logged loudly at start whatever
// the log level and wherever it was set (flag, environment, config file).
func TestEgressEscapeHatchAlwaysLogged(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "latchgate.yaml")
	if err := os.WriteFile(cfgFile, []byte("egress: {allow_cidrs: [127.0.0.1/32]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"--egress-allow-cidr", "127.0.0.1/32"}},
		{"flag_log_level_error", nil, []string{"--egress-allow-cidr", "127.0.0.1/32", "--log-level", "error"}},
		{"env_log_level_error", []string{"LATCHGATE_EGRESS_ALLOW_CIDR=127.0.0.1/32", "LATCHGATE_LOG_LEVEL=error"}, nil},
		{"config_log_level_error", nil, []string{"--config", cfgFile, "--log-level", "error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startGateEnv(t, t.TempDir(), tt.env, tt.args...)
			p.waitReady(t)
			if !strings.Contains(p.logs(), "EGRESS TEST ESCAPE HATCH") {
				t.Fatalf("serve %v (env %v) did not log the egress escape hatch:\n%s", tt.args, tt.env, p.logs())
			}
		})
	}
	t.Run("egress_proxy_log_level_error", func(t *testing.T) {
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pl.Addr().String()
		_ = pl.Close()
		cmd := exec.Command(binPath, "egress-proxy", "--listen", addr, "--allow", "example.com",
			"--egress-allow-cidr", "127.0.0.1/32", "--log-level", "error")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100; i++ { // it logs before it listens
			if c, err := net.Dial("tcp", addr); err == nil {
				_ = c.Close()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if !strings.Contains(out.String(), "EGRESS TEST ESCAPE HATCH") {
			t.Fatalf("egress-proxy --log-level error did not log the escape hatch:\n%s", out.String())
		}
	})
}
