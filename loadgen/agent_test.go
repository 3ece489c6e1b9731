package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/lease"
)

// refExecute is the net/http execute path the lean client replaced, kept as
// the reference its answers are compared with.
func refExecute(ctx context.Context, a *agent, c *http.Client) string {
	p, err := a.proof(time.Now())
	if err != nil {
		return "client_error"
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, execHTU, bytes.NewReader(a.body))
	if err != nil {
		return "client_error"
	}
	hr.Header = http.Header{
		"Content-Type":  {"application/json"},
		"Authorization": {a.auth},
		"Dpop":          {p},
	}
	res, err := c.Do(hr)
	if err != nil {
		if ctx.Err() != nil {
			return "canceled"
		}
		return "transport"
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return "transport"
	}
	if res.StatusCode == http.StatusOK {
		return ""
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		return "http_" + strconv.Itoa(res.StatusCode)
	}
	return e.Error
}

// refClient is the net/http client the agent used for executes.
func refClient(socket string, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second,
		DisableCompression: true,
	}}
}

// socketPath returns a Unix socket path in a fresh t.TempDir() (or, when
// that path is too long for a socket, in a shorter temporary directory).
func socketPath(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gate.sock")
	if len(p) < 100 {
		return p
	}
	dir, err := os.MkdirTemp("", "lg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "gate.sock")
}

// testServer is a server on a Unix socket that counts its connections.
type testServer struct {
	socket string
	conns  atomic.Int64
}

// serveHTTP serves h with net/http on a fresh Unix socket.
func serveHTTP(t testing.TB, h http.Handler, idle time.Duration) *testServer {
	t.Helper()
	s := &testServer{socket: socketPath(t)}
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, IdleTimeout: idle, ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.conns.Add(1)
			}
		}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// serveRaw serves a raw HTTP/1.1 server on a fresh Unix socket: for each
// request it reads (with net/http's parser), answer writes the answer
// bytes; the connection goes on while answer returns true. n counts the
// requests the server read, over all connections, from 0.
func serveRaw(t testing.TB, answer func(c net.Conn, n int64) bool) *testServer {
	t.Helper()
	s := &testServer{socket: socketPath(t)}
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		open  []net.Conn
		count atomic.Int64
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.Copy(io.Discard, req.Body); err != nil {
						return
					}
					if !answer(c, count.Add(1)-1) {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// raw is an answer that writes s and keeps the connection when keep is set.
func raw(s string, keep bool) func(net.Conn, int64) bool {
	return func(c net.Conn, _ int64) bool {
		_, err := io.WriteString(c, s)
		return keep && err == nil
	}
}

// stallRaw writes s, then waits until the client closes the connection.
func stallRaw(s string) func(net.Conn, int64) bool {
	return func(c net.Conn, _ int64) bool {
		_, _ = io.WriteString(c, s)
		_, _ = io.Copy(io.Discard, c)
		return false
	}
}

// testAgent is an agent for socket with a fixed (unverified) lease.
func testAgent(t testing.TB, socket string, timeout time.Duration) *agent {
	t.Helper()
	a, err := newAgent(socket, timeout)
	if err != nil {
		t.Fatal(err)
	}
	a.setLease("eyJhbGciOiJFUzI1NiJ9." + strings.Repeat("x", 600) + ".sig")
	t.Cleanup(a.close)
	return a
}

// noHang runs f and fails the test when it has not returned after a
// minute (a hang detector, not a timing assertion).
func noHang(t *testing.T, what string, f func() string) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() { ch <- f() }()
	select {
	case got := <-ch:
		return got
	case <-time.After(time.Minute):
		t.Fatalf("%s: still running after a minute", what)
		return ""
	}
}

const okBody = `{"decision":"allowed","result":{"message":"bench"}}`

// chunkedHandler answers status with body, flushed in pieces (so net/http
// sends it chunked).
func chunkedHandler(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		for i := 0; i < len(body); i += 7 {
			_, _ = io.WriteString(w, body[i:min(i+7, len(body))])
			w.(http.Flusher).Flush()
		}
	}
}

// jsonHandler answers status with body and a Content-Length, plus hdr.
func jsonHandler(status int, body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// TestExecuteAnswers runs each kind of answer through the lean client and
// the net/http reference: both must give the same code on every round, and
// the lean client keeps its connection exactly when HTTP/1.1 lets it.
func TestExecuteAnswers(t *testing.T) {
	big := `{"result":"` + strings.Repeat("a", 3000) + `"}`
	tests := []struct {
		name    string
		handler http.Handler               // net/http server, or
		raw     func(net.Conn, int64) bool // raw server
		timeout time.Duration              // default 10s
		want    string                     // every round
		reuse   bool                       // one connection for all rounds
		rounds  int                        // default 3
	}{
		{name: "ok", handler: jsonHandler(200, okBody), want: "", reuse: true},
		{name: "ok-3k", handler: jsonHandler(200, big), want: "", reuse: true},
		{name: "ok-empty", handler: jsonHandler(200, ""), want: "", reuse: true},
		{name: "ok-chunked", handler: chunkedHandler(200, big), want: "", reuse: true},
		{name: "ok-chunked-trailer", raw: raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: v\r\n\r\n", true), want: "", reuse: true},
		{name: "ok-conn-close", handler: jsonHandler(200, okBody, "Connection", "close"), want: ""},
		{name: "ok-conn-close-raw", raw: raw("HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\nContent-Length: 2\r\n\r\n{}", true), want: ""},
		{name: "ok-until-close", raw: raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"+okBody, false), want: ""},
		{name: "ok-http10", raw: raw("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", true), want: ""},
		{name: "ok-http10-keepalive", raw: raw("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}", true), want: "", reuse: true},
		{name: "ok-lf-only", raw: raw("HTTP/1.1 200 OK\nContent-Length: 2\n\n{}", true), want: "", reuse: true},
		{name: "ok-no-reason", raw: raw("HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n{}", true), want: "", reuse: true},
		{name: "ok-same-lengths", raw: raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length:  2 \r\n\r\n{}", true), want: "", reuse: true},
		{name: "ok-long-header", raw: raw("HTTP/1.1 200 OK\r\nX-Pad: "+strings.Repeat("p", 10000)+"\r\nContent-Length: 2\r\n\r\n{}", true), want: "", reuse: true},
		{name: "ok-long-reason", raw: raw("HTTP/1.1 200 "+strings.Repeat("K", 5000)+"\r\nContent-Length: 2\r\n\r\n{}", true), want: "", reuse: true},
		{name: "ok-early-hints", raw: raw("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", true), want: "", reuse: true},
		{name: "ok-chunked-and-length", raw: raw("HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", true), want: ""},
		{name: "err-json", handler: jsonHandler(403, `{"error":"scope_denied","message":"no"}`+"\n"), want: "scope_denied", reuse: true},
		{name: "err-json-chunked", handler: chunkedHandler(409, `{"error":"proof_replayed","message":"`+strings.Repeat("m", 3000)+`"}`), want: "proof_replayed", reuse: true},
		{name: "err-json-until-close", raw: raw("HTTP/1.1 503 Service Unavailable\r\n\r\n"+`{"error":"store_unavailable"}`, false), want: "store_unavailable"},
		{name: "err-json-conn-close", handler: jsonHandler(429, `{"error":"rate_limited"}`, "Connection", "close"), want: "rate_limited"},
		{name: "err-no-code", handler: jsonHandler(502, "bad gateway"), want: "http_502", reuse: true},
		{name: "err-json-without-error", handler: jsonHandler(400, `{"message":"x"}`), want: "http_400", reuse: true},
		{name: "err-no-content", raw: raw("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", true), want: "http_204", reuse: true},
		{name: "err-big-json", handler: jsonHandler(500, `{"error":"internal_error","pad":"`+strings.Repeat("z", 1<<20)+`"}`), want: "http_500", rounds: 1},
		{name: "mid-body-close", raw: raw("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ok\":", false), want: "transport"},
		{name: "mid-error-body-close", raw: raw("HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\n{\"error\":\"x\"}", false), want: "transport"},
		{name: "mid-chunk-close", raw: raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", false), want: "transport"},
		{name: "mid-trailer-close", raw: raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n", false), want: "transport"},
		{name: "mid-head-close", raw: raw("HTTP/1.1 200 OK\r\nContent-Len", false), want: "transport"},
		{name: "no-answer", raw: raw("", false), want: "transport"},
		{name: "garbage", raw: raw("hello\r\n\r\n", true), want: "transport"},
		{name: "bad-status", raw: raw("HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", true), want: "transport"},
		{name: "bad-version", raw: raw("HTTP/1.10 200 OK\r\nContent-Length: 0\r\n\r\n", true), want: "transport"},
		{name: "ok-http20-line", raw: raw("HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", true), want: "", reuse: true},
		{name: "ok-http09-line", raw: raw("HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n", true), want: ""},
		{name: "ok-two-spaces", raw: raw("HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n", true), want: "", reuse: true},
		{name: "short-status", raw: raw("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", true), want: "transport"},
		{name: "bad-length", raw: raw("HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}", true), want: "transport"},
		{name: "empty-length", raw: raw("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", true), want: "transport"},
		{name: "two-lengths", raw: raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", true), want: "transport"},
		// net/http reads "Content-Length " as another header: the body
		// then ends with the connection.
		{name: "space-before-colon", raw: raw("HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n{}", false), want: ""},
		{name: "tab-before-colon", raw: raw("HTTP/1.1 200 OK\r\nContent-Length\t: 2\r\n\r\n{}", false), want: "transport"},
		{name: "control-in-value", raw: raw("HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\n{}", true), want: "transport"},
		{name: "fold-first", raw: raw("HTTP/1.1 200 OK\r\n X-A: a\r\nContent-Length: 2\r\n\r\n{}", true), want: "transport"},
		{name: "fold-length", raw: raw("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n 3\r\n\r\n{}", true), want: "transport"},
		{name: "ok-fold-other", raw: raw("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\n{}", true), want: "", reuse: true},
		{name: "no-colon", raw: raw("HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\n{}", true), want: "transport"},
		{name: "gzip-coding", raw: raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", false), want: "transport"},
		{name: "two-codings", raw: raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", true), want: "transport"},
		{name: "bad-chunk", raw: raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", true), want: "transport"},
		{name: "switching-protocols", raw: raw("HTTP/1.1 101 Switching Protocols\r\n\r\n", true), want: "http_101", reuse: true},
		{name: "switching-protocols-upgrade", raw: raw("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n{}", false), want: "http_101"},
		{name: "ok-many-1xx", raw: raw(strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 8)+"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true), want: "", reuse: true},
		{name: "head-too-big", raw: raw("HTTP/1.1 200 OK\r\n"+strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 10600)+"Content-Length: 0\r\n\r\n", false), want: "transport", rounds: 1},
		{name: "stall-handler", handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }), timeout: 300 * time.Millisecond, want: "transport"},
		{name: "stall-after-head", raw: stallRaw("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"), timeout: 300 * time.Millisecond, want: "transport"},
		{name: "stall-in-head", raw: stallRaw("HTTP/1.1 200 OK\r\n"), timeout: 300 * time.Millisecond, want: "transport"},
		{name: "stall-no-length", raw: stallRaw("HTTP/1.1 200 OK\r\n\r\n{}"), timeout: 300 * time.Millisecond, want: "transport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rounds := tt.rounds
			if rounds == 0 {
				rounds = 3
			}
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			start := func() *testServer {
				if tt.handler != nil {
					return serveHTTP(t, tt.handler, 0)
				}
				return serveRaw(t, tt.raw)
			}
			ctx := context.Background()

			lean := start()
			a := testAgent(t, lean.socket, timeout)
			for i := range rounds {
				if got := noHang(t, "execute", func() string { return a.execute(ctx) }); got != tt.want {
					t.Errorf("round %d: execute() = %q, want %q", i, got, tt.want)
				}
			}
			wantConns := int64(rounds)
			if tt.reuse {
				wantConns = 1
			}
			if got := lean.conns.Load(); got != wantConns {
				t.Errorf("execute: %d connections for %d rounds, want %d", got, rounds, wantConns)
			}

			ref := start()
			c := refClient(ref.socket, timeout)
			defer c.CloseIdleConnections()
			for i := range rounds {
				if got := noHang(t, "refExecute", func() string { return refExecute(ctx, a, c) }); got != tt.want {
					t.Errorf("round %d: refExecute() = %q, want %q (net/http reference)", i, got, tt.want)
				}
			}
		})
	}
}

// TestExecuteRecovers checks that a failed answer drops the connection and
// the next execute succeeds on a new one.
func TestExecuteRecovers(t *testing.T) {
	okAnswer := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
	tests := []struct {
		name      string
		first     string // the first request's answer; the connection then ends
		wantFirst string
	}{
		{"mid-body-close", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ok\":", "transport"},
		{"conn-close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", ""},
		{"garbage", "nonsense\r\n\r\n", "transport"},
		{"trailing-bytes", okAnswer + "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", ""},
		{"no-answer", "", "transport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := serveRaw(t, func(c net.Conn, n int64) bool {
				if n == 0 {
					_, _ = io.WriteString(c, tt.first)
					if tt.name == "trailing-bytes" {
						// Hold the connection until the client drops it.
						_, _ = io.Copy(io.Discard, c)
					}
					return false
				}
				_, err := io.WriteString(c, okAnswer)
				return err == nil
			})
			a := testAgent(t, s.socket, 10*time.Second)
			ctx := context.Background()
			want := []string{tt.wantFirst, "", ""}
			for i, w := range want {
				if got := noHang(t, "execute", func() string { return a.execute(ctx) }); got != w {
					t.Errorf("request %d: execute() = %q, want %q", i, got, w)
				}
			}
			if got := s.conns.Load(); got != 2 {
				t.Errorf("connections = %d, want 2 (one reconnect)", got)
			}
		})
	}
}

// TestExecuteIdleClose checks that a keep-alive connection the server
// closed while idle is replaced without failing the execute (as net/http).
func TestExecuteIdleClose(t *testing.T) {
	s := serveHTTP(t, jsonHandler(200, okBody), 50*time.Millisecond)
	a := testAgent(t, s.socket, 10*time.Second)
	ctx := context.Background()
	for i := range 3 {
		if got := a.execute(ctx); got != "" {
			t.Errorf("request %d: execute() = %q, want \"\"", i, got)
		}
		time.Sleep(300 * time.Millisecond) // past the server's idle timeout
	}
	if got := s.conns.Load(); got != 3 {
		t.Errorf("connections = %d, want 3", got)
	}
}

// TestExecuteCanceled checks the "canceled" code: a done context ends a
// stalled request (even with a long request timeout), and the end of one
// context never disturbs a later request under another.
func TestExecuteCanceled(t *testing.T) {
	stall := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"already-canceled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}},
		{"canceled-while-waiting", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}},
		{"deadline-while-waiting", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := serveHTTP(t, stall, 0)
			a := testAgent(t, s.socket, time.Hour)
			ctx, cancel := tt.ctx()
			defer cancel()
			if got := noHang(t, "execute", func() string { return a.execute(ctx) }); got != "canceled" {
				t.Errorf("execute() = %q, want \"canceled\"", got)
			}
			c := refClient(s.socket, time.Hour)
			defer c.CloseIdleConnections()
			ctx, cancel = tt.ctx()
			defer cancel()
			if got := noHang(t, "refExecute", func() string { return refExecute(ctx, a, c) }); got != "canceled" {
				t.Errorf("refExecute() = %q, want \"canceled\" (net/http reference)", got)
			}
		})
	}

	t.Run("one-context-each", func(t *testing.T) {
		s := serveHTTP(t, jsonHandler(200, okBody), 0)
		a := testAgent(t, s.socket, 10*time.Second)
		for i := range 50 {
			ctx, cancel := context.WithCancel(context.Background())
			if got := a.execute(ctx); got != "" {
				t.Fatalf("request %d: execute() = %q, want \"\"", i, got)
			}
			cancel() // after the answer: must not touch the next request
		}
		if got := s.conns.Load(); got != 1 {
			t.Errorf("connections = %d, want 1", got)
		}
	})
}

// TestExecuteRequest checks the bytes the lean client writes: one valid
// HTTP/1.1 request each, with exactly the headers and body the gate reads,
// and a DPoP proof the gate's own lease package accepts.
func TestExecuteRequest(t *testing.T) {
	clk := clock.Real{}
	keys, err := lease.LoadKeys(t.TempDir(), clk)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := lease.New(lease.Config{RequireBodyHash: true}, keys, lease.Deps{Clock: clk, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}

	type seen struct {
		raw []byte
		req *http.Request
		err error
	}
	got := make(chan seen, 8)
	socket := socketPath(t)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var rec bytes.Buffer
		br := bufio.NewReader(io.TeeReader(c, &rec))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, err := io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(body))
			if err == nil && br.Buffered() != 0 {
				err = fmt.Errorf("%d bytes after the request", br.Buffered())
			}
			got <- seen{raw: bytes.Clone(rec.Bytes()), req: req, err: err}
			rec.Reset()
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
				return
			}
		}
	})

	a, err := newAgent(socket, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	jwkJSON, _ := json.Marshal(a.jwk())
	jwk, err := lease.ParseAgentJWK(jwkJSON)
	if err != nil {
		t.Fatal(err)
	}
	jkt := lease.Thumbprint(jwk)
	token, err := auth.Issue(lease.Claims{Subject: "agent:test", SessionID: "0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", JKT: jkt, Scopes: []string{"tools:call"}})
	if err != nil {
		t.Fatal(err)
	}
	a.setLease(token)

	jtis := map[string]bool{}
	for i := range 3 { // the same connection carries each request
		if code := a.execute(context.Background()); code != "" {
			t.Fatalf("request %d: execute() = %q, want \"\"", i, code)
		}
		s := <-got
		if s.err != nil {
			t.Fatalf("request %d: server read: %v", i, s.err)
		}
		r := s.req
		body, _ := io.ReadAll(r.Body)
		checks := []struct{ what, got, want string }{
			{"method", r.Method, "POST"},
			{"request-target", r.RequestURI, "/v1/actions/echo/execute"},
			{"protocol", r.Proto, "HTTP/1.1"},
			{"Host", r.Host, "localhost"},
			{"Content-Type", r.Header.Get("Content-Type"), "application/json"},
			{"Authorization", r.Header.Get("Authorization"), "DPoP " + token},
			{"Content-Length", r.Header.Get("Content-Length"), strconv.Itoa(len(body))},
			{"body", string(body), `{"message":"bench"}`},
			{"Transfer-Encoding", strings.Join(r.TransferEncoding, ","), ""},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("request %d: %s = %q, want %q", i, c.what, c.got, c.want)
			}
		}
		var names []string
		for k, v := range r.Header {
			if len(v) != 1 {
				t.Errorf("request %d: header %s sent %d times", i, k, len(v))
			}
			names = append(names, k)
		}
		if got, want := strings.Join(slices.Sorted(slices.Values(names)), " "), "Authorization Content-Length Content-Type Dpop"; got != want {
			t.Errorf("request %d: headers %s, want %s", i, got, want)
		}
		proof := r.Header.Get("DPoP")
		want := "POST /v1/actions/echo/execute HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
			"Authorization: DPoP " + token + "\r\nDPoP: " + proof + "\r\nContent-Length: 19\r\n\r\n" + `{"message":"bench"}`
		if string(s.raw) != want {
			t.Errorf("request %d: wire bytes\n%q\nwant\n%q", i, s.raw, want)
		}
		p, err := auth.VerifyProof(lease.ProofRequest{
			Proof: proof, Method: r.Method, HTU: "http://" + r.Host + r.RequestURI,
			LeaseToken: strings.TrimPrefix(r.Header.Get("Authorization"), "DPoP "), Body: body, JKT: jkt,
		})
		if err != nil {
			t.Fatalf("request %d: VerifyProof: %v", i, err)
		}
		if jtis[p.JTI] {
			t.Errorf("request %d: jti %s reused", i, p.JTI)
		}
		jtis[p.JTI] = true
	}
}

// TestExecuteBadLease checks that a lease that is not a valid header value
// is never sent (net/http refused it as a transport error).
func TestExecuteBadLease(t *testing.T) {
	s := serveHTTP(t, jsonHandler(200, okBody), 0)
	a := testAgent(t, s.socket, 10*time.Second)
	a.setLease("abc\r\nX-Injected: 1")
	c := refClient(s.socket, 10*time.Second)
	defer c.CloseIdleConnections()
	if got := a.execute(context.Background()); got != "transport" {
		t.Errorf("execute() = %q, want \"transport\"", got)
	}
	if got := refExecute(context.Background(), a, c); got != "transport" {
		t.Errorf("refExecute() = %q, want \"transport\" (net/http reference)", got)
	}
	if got := s.conns.Load(); got != 0 {
		t.Errorf("connections = %d, want 0", got)
	}
}

// benchServerEnv, set to a socket path, makes the test binary the answer
// server of BenchmarkAgentExecute (see TestMain).
const benchServerEnv = "LOADGEN_BENCH_SERVER"

// benchAnswer is the benchmark's execute answer: ~3 KB of JSON, like an
// execute answer with its receipt.
var benchAnswer = `{"decision":"allowed","result":{"message":"bench"},"receipt":{"pad":"` + strings.Repeat("r", 2900) + `"}}` + "\n"

// TestMain runs the tests, or (with benchServerEnv set) serves benchAnswer
// with net/http on that socket until stdin closes: the benchmark's server
// runs in its own process, so the benchmark's CPU time and allocations are
// the client's alone.
func TestMain(m *testing.M) {
	socket := os.Getenv(benchServerEnv)
	if socket == "" {
		os.Exit(m.Run())
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: jsonHandler(200, benchAnswer, "Cache-Control", "no-store"), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// startBenchServer starts the test binary as the benchmark's server and
// returns its socket.
func startBenchServer(b *testing.B) string {
	b.Helper()
	socket := socketPath(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+socket)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		b.Fatalf("bench server: %q, %v", line, err)
	}
	return socket
}

// BenchmarkAgentExecute is one execute against a net/http server on a Unix
// socket answering benchAnswer with a Content-Length, through the net/http
// reference client and the lean client. The server runs in another process:
// B/op, allocs/op and cpu-ns/op (this process's user+system CPU time per
// execute) are the client's, proof signature included; ns/op is the round
// trip, server included.
func BenchmarkAgentExecute(b *testing.B) {
	socket := startBenchServer(b)
	ctx := context.Background()
	tests := []struct {
		name string
		exec func(a *agent) string
	}{
		{"nethttp", func() func(a *agent) string {
			c := refClient(socket, 10*time.Second)
			b.Cleanup(c.CloseIdleConnections)
			return func(a *agent) string { return refExecute(ctx, a, c) }
		}()},
		{"lean", func(a *agent) string { return a.execute(ctx) }},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			a := testAgent(b, socket, 10*time.Second)
			if code := tt.exec(a); code != "" { // connect outside the measure
				b.Fatalf("execute = %q", code)
			}
			b.ReportAllocs()
			cpu0 := processCPUTime(b)
			for b.Loop() {
				if code := tt.exec(a); code != "" {
					b.Fatalf("execute = %q", code)
				}
			}
			b.ReportMetric(float64(processCPUTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPUTime is this process's user+system CPU time.
func processCPUTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
