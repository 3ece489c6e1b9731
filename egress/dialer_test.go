package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ssrfCase is one denied target form from the SSRF matrix.
type ssrfCase struct {
	name  string
	host  string // as written in a URL or CONNECT authority
	entry string // allowlist entry naming it, "" when no entry can (non-canonical)
	ip    string // the address a name may resolve to, "" for non-canonical forms
}

func ssrfMatrix() []ssrfCase {
	return []ssrfCase{
		{"ipv4 loopback", "127.0.0.1", "127.0.0.1", "127.0.0.1"},
		{"ipv6 loopback", "[::1]", "[::1]", "::1"},
		{"unspecified", "0.0.0.0", "0.0.0.0", "0.0.0.0"},
		{"10/8", "10.0.0.1", "10.0.0.1", "10.0.0.1"},
		{"172.16/12", "172.16.0.1", "172.16.0.1", "172.16.0.1"},
		{"192.168/16", "192.168.1.1", "192.168.1.1", "192.168.1.1"},
		{"100.64/10", "100.64.0.1", "100.64.0.1", "100.64.0.1"},
		{"cloud metadata", "169.254.169.254", "169.254.169.254", "169.254.169.254"},
		{"mapped dotted", "[::ffff:127.0.0.1]", "[::ffff:127.0.0.1]", "::ffff:127.0.0.1"},
		{"mapped hex", "[::ffff:7f00:1]", "[::ffff:127.0.0.1]", "::ffff:7f00:1"},
		{"decimal", "2130706433", "", ""},
		{"octal", "0177.0.0.1", "", ""},
		{"hex dotted", "0x7f.0.0.1", "", ""},
		{"hex whole", "0x7f000001", "", ""},
		{"short form", "127.1", "", ""},
		{"nat64", "[64:ff9b::a00:1]", "[64:ff9b::a00:1]", "64:ff9b::a00:1"},
		{"6to4", "[2002:a00:1::]", "[2002:a00:1::]", "2002:a00:1::"},
		{"teredo", "[2001::a00:1]", "[2001::a00:1]", "2001::a00:1"},
		{"unique local", "[fc00::1]", "[fc00::1]", "fc00::1"},
		{"link local v6", "[fe80::1]", "[fe80::1]", "fe80::1"},
	}
}

const publicIP = "93.184.216.34"

// ssrfEnv is a Dialer whose every dial attempt reaches one loopback upstream:
// only the egress checks stand between a request and that upstream.
type ssrfEnv struct {
	up  *upstream
	rec *dialRecorder
	res *fakeResolver
	d   *Dialer
	al  *Allowlist
}

func newSSRFEnv(t *testing.T) *ssrfEnv {
	t.Helper()
	e := &ssrfEnv{up: newUpstream(t, false, nil)}
	e.rec = newDialRecorder(e.up)
	names := map[string][]string{"public.test": {publicIP}}
	entries := []string{"public.test", publicIP}
	for _, c := range ssrfMatrix() {
		if c.entry != "" {
			entries = append(entries, c.entry)
		}
		if c.ip != "" {
			names[caseName(c)] = []string{c.ip}
			entries = append(entries, caseName(c))
		}
	}
	e.res = newFakeResolver(names)
	e.d = newTestDialer(t, Config{Resolver: e.res, DialAddr: e.rec.dial}, nil, nil)
	e.al = mustAllowlist(t, []int{e.up.port}, entries...)
	return e
}

func caseName(c ssrfCase) string {
	return strings.ReplaceAll(strings.ReplaceAll(c.name, " ", "-"), "/", "-") + ".test"
}

func (e *ssrfEnv) get(t *testing.T, host string) error {
	t.Helper()
	c := e.d.Client(e.al, 5*time.Second)
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + host + ":" + strconv.Itoa(e.up.port) + "/")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return err
}

func TestDialerSSRFMatrix(t *testing.T) {
	e := newSSRFEnv(t)

	// Positive controls: the harness does reach the upstream when allowed.
	for _, host := range []string{"public.test", publicIP} {
		if err := e.get(t, host); err != nil {
			t.Fatalf("GET via %s = %v, want success (harness broken)", host, err)
		}
	}
	if got := e.up.hits.Load(); got != 2 {
		t.Fatalf("upstream hits after positive controls = %d, want 2", got)
	}
	e.up.hits.Store(0)
	before := len(e.rec.attempted())

	for _, c := range ssrfMatrix() {
		t.Run("literal/"+c.name, func(t *testing.T) {
			err := e.get(t, c.host)
			if !errors.Is(err, ErrDenied) {
				t.Fatalf("GET http://%s/ = %v, want ErrDenied", c.host, err)
			}
		})
		if c.ip == "" {
			continue
		}
		t.Run("resolved/"+c.name, func(t *testing.T) {
			err := e.get(t, caseName(c))
			var de *DeniedError
			if !errors.As(err, &de) || de.Reason != ReasonDeniedAddress {
				t.Fatalf("GET http://%s/ (resolves to %s) = %v, want DeniedError %s", caseName(c), c.ip, err, ReasonDeniedAddress)
			}
		})
	}
	if got := e.up.hits.Load(); got != 0 {
		t.Fatalf("upstream saw %d requests from denied targets, want 0", got)
	}
	if got := e.rec.attempted()[before:]; len(got) != 0 {
		t.Fatalf("dial attempts for denied targets = %v, want none", got)
	}
}

func TestDialerDirect(t *testing.T) {
	up := newUpstream(t, false, nil)
	rec := newDialRecorder(up)
	p := up.port
	res := newFakeResolver(map[string][]string{
		"public.test":      {publicIP},
		"mixed.test":       {publicIP + " 10.0.0.1"},
		"mixed-first.test": {"10.0.0.1 " + publicIP},
		"mapped.test":      {"::ffff:192.168.0.1"},
		"two.test":         {publicIP + " 93.184.216.35"},
		"empty.test":       {""},
	})
	d := newTestDialer(t, Config{Resolver: res, DialAddr: rec.dial}, nil, nil)
	al := mustAllowlist(t, []int{p}, "public.test", "mixed.test", "mixed-first.test", "mapped.test", "two.test", "empty.test", "api.test")
	tests := []struct {
		name       string
		network    string
		addr       string
		reason     string // "" = allowed
		wantErr    bool   // a non-policy error
		wantDialed []string
	}{
		{"public name", "tcp", "public.test:" + strconv.Itoa(p), "", false, []string{publicIP + ":" + strconv.Itoa(p)}},
		{"upper trailing dot", "tcp", "PUBLIC.test.:" + strconv.Itoa(p), "", false, []string{publicIP + ":" + strconv.Itoa(p)}},
		{"one private one public", "tcp", "mixed.test:" + strconv.Itoa(p), ReasonDeniedAddress, false, nil},
		{"private first", "tcp", "mixed-first.test:" + strconv.Itoa(p), ReasonDeniedAddress, false, nil},
		{"resolver answers mapped private", "tcp", "mapped.test:" + strconv.Itoa(p), ReasonDeniedAddress, false, nil},
		{"port not allowed", "tcp", "public.test:443", ReasonPortNotAllowed, false, nil},
		{"port not allowed never resolves", "tcp", "api.test:1", ReasonPortNotAllowed, false, nil},
		{"unlisted", "tcp", "other.test:" + strconv.Itoa(p), ReasonNotAllowlisted, false, nil},
		{"non canonical", "tcp", "2130706433:" + strconv.Itoa(p), ReasonNonCanonicalHost, false, nil},
		{"udp", "udp", "public.test:" + strconv.Itoa(p), ReasonBadNetwork, false, nil},
		{"no port", "tcp", "public.test", ReasonInvalidHost, false, nil},
		{"bad port", "tcp", "public.test:0x50", ReasonInvalidHost, false, nil},
		{"no addresses", "tcp", "empty.test:" + strconv.Itoa(p), "", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(rec.attempted())
			conn, err := d.DialContext(context.Background(), tt.network, tt.addr, al)
			if conn != nil {
				conn.Close()
			}
			var de *DeniedError
			switch {
			case tt.wantErr:
				if err == nil || errors.Is(err, ErrDenied) {
					t.Fatalf("DialContext(%q) = %v, want a non-policy error", tt.addr, err)
				}
			case tt.reason != "":
				if !errors.As(err, &de) || de.Reason != tt.reason || !errors.Is(err, ErrDenied) {
					t.Fatalf("DialContext(%q) = %v, want DeniedError %s", tt.addr, err, tt.reason)
				}
			default:
				if err != nil {
					t.Fatalf("DialContext(%q) = %v, want success", tt.addr, err)
				}
			}
			if got := rec.attempted()[before:]; !slices.Equal(got, tt.wantDialed) {
				t.Fatalf("DialContext(%q) attempted %v, want %v", tt.addr, got, tt.wantDialed)
			}
		})
	}
	if n := res.lookups("api.test"); n != 0 {
		t.Fatalf("lookups of api.test (port refused) = %d, want 0: refuse before any lookup", n)
	}
}

func TestDialerFallsBackInOrder(t *testing.T) {
	up := newUpstream(t, false, nil)
	var attempts []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		attempts = append(attempts, addr)
		if strings.HasPrefix(addr, publicIP) {
			return nil, errors.New("unreachable")
		}
		var nd net.Dialer
		return nd.DialContext(ctx, "tcp", up.Listener.Addr().String())
	}
	res := newFakeResolver(map[string][]string{"two.test": {publicIP + " 2606:4700::1111"}})
	d := newTestDialer(t, Config{Resolver: res, DialAddr: dial}, nil, nil)
	al := mustAllowlist(t, []int{80}, "two.test")
	conn, err := d.DialContext(context.Background(), "tcp", "two.test:80", al)
	if err != nil {
		t.Fatalf("DialContext = %v, want success on the second address", err)
	}
	conn.Close()
	want := []string{publicIP + ":80", "[2606:4700::1111]:80"}
	if !slices.Equal(attempts, want) {
		t.Fatalf("attempts = %v, want %v", attempts, want)
	}
	if n := res.lookups("two.test"); n != 1 {
		t.Fatalf("lookups = %d, want 1", n)
	}
}

// An address that never answers (a blackholed IPv6 path) gets its share of
// DialTimeout, not all of it: the next checked address is still tried.
func TestDialerFallsBackAfterHangingAddress(t *testing.T) {
	up := newUpstream(t, false, nil)
	var mu sync.Mutex
	var attempts []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		attempts = append(attempts, addr)
		mu.Unlock()
		if strings.HasPrefix(addr, "[2606:4700::1111]") {
			<-ctx.Done() // blackholed: no answer until the dial gives up
			return nil, ctx.Err()
		}
		var nd net.Dialer
		return nd.DialContext(ctx, "tcp", up.Listener.Addr().String())
	}
	res := newFakeResolver(map[string][]string{"two.test": {"2606:4700::1111 " + publicIP}})
	d := newTestDialer(t, Config{Resolver: res, DialAddr: dial, DialTimeout: 4 * time.Second}, nil, nil)
	al := mustAllowlist(t, []int{80}, "two.test")
	conn, err := d.DialContext(context.Background(), "tcp", "two.test:80", al)
	if err != nil {
		t.Fatalf("DialContext = %v, want success on the second address", err)
	}
	conn.Close()
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"[2606:4700::1111]:80", publicIP + ":80"}; !slices.Equal(attempts, want) {
		t.Fatalf("attempts = %v, want %v", attempts, want)
	}
}

func TestDialerDNSRebinding(t *testing.T) {
	up := newUpstream(t, false, nil)
	rec := newDialRecorder(up)
	// First answer public, every later answer loopback.
	res := newFakeResolver(map[string][]string{"rebind.test": {publicIP, "127.0.0.1"}})
	d := newTestDialer(t, Config{Resolver: res, DialAddr: rec.dial}, nil, nil)
	al := mustAllowlist(t, []int{up.port}, "rebind.test")
	tr := d.Transport(al)
	defer tr.CloseIdleConnections()
	url := "http://rebind.test:" + strconv.Itoa(up.port) + "/"

	// One request: exactly one lookup, dial to the public answer only.
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		t.Fatalf("first GET = %v, want success", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := res.lookups("rebind.test"); n != 1 {
		t.Fatalf("lookups for one connection = %d, want 1", n)
	}

	// A new connection re-resolves, sees the private answer, and is refused.
	tr.CloseIdleConnections()
	_, err = (&http.Client{Transport: tr}).Get(url)
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("second GET after rebinding = %v, want ErrDenied", err)
	}
	want := []string{publicIP + ":" + strconv.Itoa(up.port)}
	if got := rec.attempted(); !slices.Equal(got, want) {
		t.Fatalf("dial attempts = %v, want only %v (never 127.0.0.1)", got, want)
	}
	if got := up.hits.Load(); got != 1 {
		t.Fatalf("upstream hits = %d, want 1", got)
	}
}

func TestDialerAllowCIDRs(t *testing.T) {
	up := newUpstream(t, false, nil)
	al := mustAllowlist(t, []int{up.port}, "127.0.0.1")
	url := "http://127.0.0.1:" + strconv.Itoa(up.port) + "/"
	tests := []struct {
		name    string
		cidrs   []netip.Prefix
		allowed bool
	}{
		{"without allow cidr", nil, false},
		{"other cidr", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, false},
		{"with allow cidr", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up.hits.Store(0)
			// Real dialing: the default DialAddr.
			d := newTestDialer(t, Config{AllowCIDRs: tt.cidrs}, nil, nil)
			c := d.Client(al, 5*time.Second)
			defer c.CloseIdleConnections()
			resp, err := c.Get(url)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if tt.allowed != (err == nil) || (!tt.allowed && !errors.Is(err, ErrDenied)) {
				t.Fatalf("GET %s with AllowCIDRs %v = %v, want allowed %v", url, tt.cidrs, err, tt.allowed)
			}
			wantHits := int64(0)
			if tt.allowed {
				wantHits = 1
			}
			if got := up.hits.Load(); got != wantHits {
				t.Fatalf("upstream hits = %d, want %d", got, wantHits)
			}
		})
	}
}

func TestDefaultDialAddrRechecks(t *testing.T) {
	up := newUpstream(t, false, nil)
	d := newTestDialer(t, Config{}, nil, nil)
	// Bypass DialContext: the socket-level Control hook must still refuse.
	_, err := d.cfg.DialAddr(context.Background(), "tcp", up.Listener.Addr().String())
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("default DialAddr(%s) = %v, want ErrDenied from Control", up.Listener.Addr(), err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"host prefix", Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, true},
		{"everything v4", Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, false},
		{"everything v6", Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("::/0")}}, false},
		{"unmasked", Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}}, false},
		{"invalid", Config{AllowCIDRs: []netip.Prefix{{}}}, false},
		{"negative timeout", Config{DialTimeout: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewDialer(tt.cfg, Deps{})
			if (err == nil) != tt.ok {
				t.Fatalf("NewDialer(%+v) = %v, want ok %v", tt.cfg, err, tt.ok)
			}
		})
	}
}

// TestRedirects uses a plain and a TLS upstream, reachable only through the
// recorder, with names resolving as each case needs.
func TestRedirects(t *testing.T) {
	var plain, secure *upstream
	landing := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "landed") })
	mux := http.NewServeMux()
	mux.Handle("GET /landing", landing)
	mux.HandleFunc("GET /to-private", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://private.test:"+strconv.Itoa(plain.port)+"/landing", http.StatusFound)
	})
	mux.HandleFunc("GET /to-private-ip", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://10.0.0.1:"+strconv.Itoa(plain.port)+"/landing", http.StatusFound)
	})
	mux.HandleFunc("GET /to-decimal", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://2130706433:"+strconv.Itoa(plain.port)+"/landing", http.StatusFound)
	})
	mux.HandleFunc("GET /to-unlisted", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://unlisted.test:"+strconv.Itoa(plain.port)+"/landing", http.StatusFound)
	})
	mux.HandleFunc("GET /to-other-port", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://public.test:9/landing", http.StatusFound)
	})
	mux.HandleFunc("GET /chain/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			http.Redirect(w, r, "/landing", http.StatusFound)
			return
		}
		http.Redirect(w, r, "/chain/"+strconv.Itoa(n-1), http.StatusFound)
	})
	plain = newUpstream(t, false, mux)
	secureMux := http.NewServeMux()
	secureMux.HandleFunc("GET /downgrade", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://public.test:"+strconv.Itoa(plain.port)+"/landing", http.StatusFound)
	})
	secureMux.Handle("GET /landing", landing)
	secure = newUpstream(t, true, secureMux)

	rec := newDialRecorder(plain, secure)
	res := newFakeResolver(map[string][]string{
		"public.test":   {publicIP},
		"example.com":   {publicIP}, // the httptest certificate's name
		"private.test":  {"10.0.0.1"},
		"unlisted.test": {"93.184.216.35"},
	})
	roots := x509.NewCertPool()
	roots.AddCert(secure.Certificate())
	d := newTestDialer(t, Config{Resolver: res, DialAddr: rec.dial, TLSConfig: &tls.Config{RootCAs: roots}}, nil, nil)
	al := mustAllowlist(t, []int{plain.port, secure.port}, "public.test", "private.test", "example.com", "10.0.0.1")

	plainURL := "http://public.test:" + strconv.Itoa(plain.port)
	tests := []struct {
		name   string
		url    string
		reason string // "" = success
	}{
		{"to private name", plainURL + "/to-private", ReasonDeniedAddress},
		{"to private ip", plainURL + "/to-private-ip", ReasonDeniedAddress},
		{"to decimal ip", plainURL + "/to-decimal", ReasonNonCanonicalHost},
		{"to unlisted host", plainURL + "/to-unlisted", ReasonNotAllowlisted},
		{"to unlisted port", plainURL + "/to-other-port", ReasonPortNotAllowed},
		{"five redirects", plainURL + "/chain/4", ""},
		{"six redirects", plainURL + "/chain/5", ReasonTooManyRedirects},
		{"https to http", "https://example.com:" + strconv.Itoa(secure.port) + "/downgrade", ReasonHTTPSDowngrade},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plain.hits.Store(0)
			c := d.Client(al, 5*time.Second)
			defer c.CloseIdleConnections()
			resp, err := c.Get(tt.url)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("GET %s = %v, want success", tt.url, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "landed" {
					t.Fatalf("GET %s body = %q, want %q", tt.url, body, "landed")
				}
				return
			}
			if err == nil {
				resp.Body.Close()
			}
			var de *DeniedError
			if !errors.As(err, &de) || de.Reason != tt.reason {
				t.Fatalf("GET %s = %v, want DeniedError %s", tt.url, err, tt.reason)
			}
		})
	}
	for _, a := range rec.attempted() {
		if !strings.HasPrefix(a, publicIP+":") {
			t.Fatalf("a redirect dialled %s; only %s may be dialled", a, publicIP)
		}
	}
}

func TestProxyEnvIgnored(t *testing.T) {
	bogus := newUpstream(t, false, nil) // would count any request sent to the "proxy"
	t.Setenv("HTTP_PROXY", bogus.URL)
	t.Setenv("HTTPS_PROXY", bogus.URL)
	t.Setenv("http_proxy", bogus.URL)
	t.Setenv("NO_PROXY", "")
	up := newUpstream(t, false, nil)
	rec := newDialRecorder(up)
	res := newFakeResolver(map[string][]string{"public.test": {publicIP}})
	d := newTestDialer(t, Config{Resolver: res, DialAddr: rec.dial}, nil, nil)
	al := mustAllowlist(t, []int{up.port}, "public.test")
	tr := d.Transport(al)
	if tr.Proxy != nil {
		t.Fatal("Transport.Proxy != nil, want nil (proxy environment ignored)")
	}
	c := &http.Client{Transport: tr}
	resp, err := c.Get("http://public.test:" + strconv.Itoa(up.port) + "/")
	if err != nil {
		t.Fatalf("GET = %v, want success", err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	if bogus.hits.Load() != 0 || up.hits.Load() != 1 {
		t.Fatalf("hits: env proxy %d, upstream %d, want 0, 1", bogus.hits.Load(), up.hits.Load())
	}
}

func TestDecisionLogAndMetrics(t *testing.T) {
	up := newUpstream(t, false, nil)
	rec := newDialRecorder(up)
	res := newFakeResolver(map[string][]string{"public.test": {publicIP}, "private.test": {"10.0.0.1"}})
	logs := &logBuf{}
	reg := prometheus.NewRegistry()
	pm, err := NewPromMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDialer(t, Config{Resolver: res, DialAddr: rec.dial}, logs, pm)
	al := mustAllowlist(t, []int{up.port}, "public.test", "private.test")
	port := strconv.Itoa(up.port)

	conn, err := d.DialContext(context.Background(), "tcp", "public.test:"+port, al)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if _, err := d.DialContext(context.Background(), "tcp", "private.test:"+port, al); !errors.Is(err, ErrDenied) {
		t.Fatalf("dial private.test = %v, want ErrDenied", err)
	}
	if _, err := d.DialContext(context.Background(), "tcp", "missing.test\r\nx:"+port, al); !errors.Is(err, ErrDenied) {
		t.Fatalf("dial with CRLF = %v, want ErrDenied", err)
	}

	lines := logs.lines(t)
	if len(lines) != 3 {
		t.Fatalf("log lines = %d, want 3 (one per decision): %v", len(lines), lines)
	}
	checks := []struct {
		level, decision, reason, host string
	}{
		{"info", DecisionAllow, ReasonAllowed, "public.test"},
		{"warn", DecisionDeny, ReasonDeniedAddress, "private.test"},
		{"warn", DecisionDeny, ReasonInvalidHost, "missing.testx"},
	}
	for i, c := range checks {
		l := lines[i]
		if l["level"] != c.level || l[LogFieldDecision] != c.decision || l[LogFieldReason] != c.reason || l[LogFieldHost] != c.host || l["message"] != logMessage {
			t.Errorf("log line %d = %v, want level %s decision %s reason %s host %q", i, l, c.level, c.decision, c.reason, c.host)
		}
	}
	if got := lines[0][LogFieldDialed]; got != publicIP+":"+port {
		t.Errorf("allow line %s = %v, want %s", LogFieldDialed, got, publicIP+":"+port)
	}
	counts := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "latchgate_egress_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			counts[labels["decision"]+"/"+labels["reason"]] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"allow/allowed": 1, "deny/denied_address": 1, "deny/invalid_host": 1}
	if !maps.Equal(counts, want) {
		t.Errorf("latchgate_egress_decisions_total = %v, want %v", counts, want)
	}
}
