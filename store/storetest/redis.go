// Package storetest starts real redis-server processes for tests of the
// store and of the packages built on it. It never runs outside tests and
// never talks to a Redis it did not start. The API is internal to this
// module and may change.
package storetest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireEnv names the environment variable that turns a missing
// redis-server from a skip into a failure (CI sets it to 1).
const RequireEnv = "LATCHGATE_REQUIRE_REDIS"

// Redis is one redis-server process on a loopback port.
type Redis struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	sock string // a Unix socket too, when set

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd
}

// StartRedis starts redis-server (found in PATH) on a free loopback port
// with persistence off and a data dir under tb.TempDir, waits until it
// answers PING and stops it on cleanup. Without redis-server the test is
// skipped, unless LATCHGATE_REQUIRE_REDIS is set, then it fails.
//
// stop kills the server (the URL stays valid and refuses connections);
// restart(empty) starts it again on the same port, with its data when
// empty is false (saved just before the stop) or with nothing.
func StartRedis(tb testing.TB) (url string, stop func(), restart func(empty bool)) {
	tb.Helper()
	bin := serverBinary(tb)
	r := &Redis{tb: tb, bin: bin, dir: tb.TempDir(), port: freePort(tb)}
	r.start()
	tb.Cleanup(r.kill)
	return "redis://" + r.addr(), r.stop, r.restart
}

// StartRedisUnix is StartRedis for a server that also listens on a Unix
// socket (mode 0700, in a short temp dir: socket paths are limited to
// about 100 bytes); it returns that socket's unix:// URL.
func StartRedisUnix(tb testing.TB) string {
	tb.Helper()
	bin := serverBinary(tb)
	sockDir, err := os.MkdirTemp("", "lg-redis-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	r := &Redis{tb: tb, bin: bin, dir: tb.TempDir(), port: freePort(tb), sock: filepath.Join(sockDir, "redis.sock")}
	r.start()
	tb.Cleanup(r.kill)
	return "unix://" + r.sock
}

// serverBinary finds redis-server in PATH, or skips tb (fails it when
// RequireEnv is set).
func serverBinary(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			tb.Fatalf("redis-server not found in PATH and %s is set: %v", RequireEnv, err)
		}
		tb.Skipf("redis-server not found in PATH (set %s=1 to fail instead)", RequireEnv)
	}
	return bin
}

func (r *Redis) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (r *Redis) start() {
	r.tb.Helper()
	args := []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--dbfilename", "dump.rdb",
		"--protected-mode", "no", "--logfile", filepath.Join(r.dir, "redis.log")}
	if r.sock != "" {
		args = append(args, "--unixsocket", r.sock, "--unixsocketperm", "700")
	}
	cmd := exec.Command(r.bin, args...)
	if err := cmd.Start(); err != nil {
		r.tb.Fatalf("start redis-server: %v", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := r.command("PING"); err == nil && resp == "+PONG" {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.kill()
			r.tb.Fatalf("redis-server on %s did not answer PING; log:\n%s", r.addr(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// command sends one inline command and returns the first reply line.
func (r *Redis) command(cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", r.addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func (r *Redis) kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func (r *Redis) stop() {
	r.tb.Helper()
	r.mu.Lock()
	running := r.cmd != nil
	r.mu.Unlock()
	if running {
		if resp, err := r.command("SAVE"); err != nil || resp != "+OK" {
			r.tb.Fatalf("redis SAVE = %q, %v, want +OK", resp, err)
		}
	}
	r.kill()
}

func (r *Redis) restart(empty bool) {
	r.tb.Helper()
	r.stop()
	if empty {
		if err := os.Remove(filepath.Join(r.dir, "dump.rdb")); err != nil && !os.IsNotExist(err) {
			r.tb.Fatalf("remove dump: %v", err)
		}
	}
	r.start()
}
