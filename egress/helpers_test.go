package egress

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
)

// fakeResolver answers names from a script: the i-th lookup of a name gets
// answers[name][min(i, len-1)]. It counts lookups per name.
type fakeResolver struct {
	mu      sync.Mutex // guards calls
	answers map[string][][]netip.Addr
	calls   map[string]int
}

func newFakeResolver(answers map[string][]string) *fakeResolver {
	r := &fakeResolver{answers: map[string][][]netip.Addr{}, calls: map[string]int{}}
	for name, seq := range answers {
		for _, s := range seq {
			var one []netip.Addr
			for _, a := range bytes.Fields([]byte(s)) {
				one = append(one, netip.MustParseAddr(string(a)))
			}
			r.answers[name] = append(r.answers[name], one)
		}
	}
	return r
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, ok := r.answers[host]
	i := r.calls[host]
	r.calls[host]++
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return seq[min(i, len(seq)-1)], nil
}

func (r *fakeResolver) lookups(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[host]
}

// upstream is a real loopback HTTP server that counts requests.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
	port int
}

func newUpstream(t *testing.T, tlsServer bool, h http.Handler) *upstream {
	t.Helper()
	u := &upstream{}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "upstream ok") })
	}
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		h.ServeHTTP(w, r)
	})
	if tlsServer {
		u.Server = httptest.NewTLSServer(counted)
	} else {
		u.Server = httptest.NewServer(counted)
	}
	t.Cleanup(u.Close)
	_, p, _ := net.SplitHostPort(u.Listener.Addr().String())
	u.port, _ = strconv.Atoi(p)
	return u
}

// dialRecorder is a Config.DialAddr hook: it records every address the
// Dialer attempts and connects all of them to the loopback upstream whose
// port matches, so a missing check would let the upstream see the request.
type dialRecorder struct {
	mu       sync.Mutex // guards attempts
	attempts []string
	byPort   map[int]string
}

func newDialRecorder(ups ...*upstream) *dialRecorder {
	d := &dialRecorder{byPort: map[int]string{}}
	for _, u := range ups {
		d.byPort[u.port] = u.Listener.Addr().String()
	}
	return d
}

func (d *dialRecorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.attempts = append(d.attempts, addr)
	d.mu.Unlock()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dialRecorder: given a non-IP address %q", addr)
	}
	target, ok := d.byPort[int(ap.Port())]
	if !ok {
		return nil, fmt.Errorf("dialRecorder: no upstream on port %d", ap.Port())
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", target)
}

func (d *dialRecorder) attempted() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.attempts...)
}

// logBuf collects JSON log lines safely.
type logBuf struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(l.buf.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func newTestDialer(t *testing.T, cfg Config, logs *logBuf, m Metrics) *Dialer {
	t.Helper()
	deps := Deps{Metrics: m}
	if logs != nil {
		deps.Logger = zerolog.New(logs)
	}
	d, err := NewDialer(cfg, deps)
	if err != nil {
		t.Fatalf("NewDialer = %v", err)
	}
	return d
}

func mustAllowlist(t *testing.T, ports []int, domains ...string) *Allowlist {
	t.Helper()
	al, err := NewAllowlist(domains, ports)
	if err != nil {
		t.Fatalf("NewAllowlist(%q) = %v", domains, err)
	}
	return al
}
