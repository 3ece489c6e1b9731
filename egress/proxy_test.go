package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// startProxy runs a Proxy on a real loopback listener until the test ends.
func startProxy(t *testing.T, cfg ProxyConfig, d *Dialer) (addr string, stop func() error) {
	t.Helper()
	p, err := NewProxy(cfg, d, Deps{})
	if err != nil {
		t.Fatalf("NewProxy = %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	var result error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), stop
}

// rawProxyRequest writes head to the proxy and reads the response head.
func rawProxyRequest(t *testing.T, proxyAddr, head string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("reading proxy response to %q: %v", head, err)
	}
	return resp, conn, br
}

func connectHead(authority string) string {
	return "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"
}

func forwardHead(host string, port int) string {
	authority := host + ":" + strconv.Itoa(port)
	return "GET http://" + authority + "/ HTTP/1.1\r\nHost: " + authority + "\r\nConnection: close\r\n\r\n"
}

func TestProxySSRFMatrix(t *testing.T) {
	e := newSSRFEnv(t)
	proxyAddr, _ := startProxy(t, ProxyConfig{Allow: e.al}, e.d)
	port := e.up.port

	// Positive controls through both proxy modes.
	resp, conn, br := rawProxyRequest(t, proxyAddr, connectHead("public.test:"+strconv.Itoa(port)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT public.test = %d, want 200", resp.StatusCode)
	}
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n")
	inner, err := http.ReadResponse(br, nil)
	if err != nil || inner.StatusCode != http.StatusOK {
		t.Fatalf("GET through tunnel = %v, %v, want 200", inner, err)
	}
	resp, _, _ = rawProxyRequest(t, proxyAddr, forwardHead("public.test", port))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("forward GET public.test = %d, want 200", resp.StatusCode)
	}
	if got := e.up.hits.Load(); got != 2 {
		t.Fatalf("upstream hits after positive controls = %d, want 2", got)
	}
	e.up.hits.Store(0)
	before := len(e.rec.attempted())

	check := func(t *testing.T, head string) {
		t.Helper()
		resp, _, _ := rawProxyRequest(t, proxyAddr, head)
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get(HeaderDenied) == "" {
			t.Fatalf("proxy %q = %d %s=%q, want 403 with a reason", head, resp.StatusCode, HeaderDenied, resp.Header.Get(HeaderDenied))
		}
	}
	for _, c := range ssrfMatrix() {
		t.Run("connect/"+c.name, func(t *testing.T) { check(t, connectHead(c.host+":"+strconv.Itoa(port))) })
		t.Run("forward/"+c.name, func(t *testing.T) { check(t, forwardHead(c.host, port)) })
		if c.ip != "" {
			t.Run("connect-resolved/"+c.name, func(t *testing.T) { check(t, connectHead(caseName(c)+":"+strconv.Itoa(port))) })
			t.Run("forward-resolved/"+c.name, func(t *testing.T) { check(t, forwardHead(caseName(c), port)) })
		}
	}
	t.Run("connect/port not allowed", func(t *testing.T) { check(t, connectHead("public.test:443")) })
	t.Run("connect/unlisted", func(t *testing.T) { check(t, connectHead("unlisted.test:"+strconv.Itoa(port))) })

	if got := e.up.hits.Load(); got != 0 {
		t.Fatalf("upstream saw %d requests from denied targets, want 0", got)
	}
	if got := e.rec.attempted()[before:]; len(got) != 0 {
		t.Fatalf("dial attempts for denied targets = %v, want none", got)
	}
}

func TestProxyBadRequests(t *testing.T) {
	e := newSSRFEnv(t)
	proxyAddr, _ := startProxy(t, ProxyConfig{Allow: e.al}, e.d)
	tests := []struct {
		name string
		head string
		want int
	}{
		{"origin form", "GET / HTTP/1.1\r\nHost: public.test\r\n\r\n", http.StatusBadRequest},
		{"absolute https", "GET https://public.test/ HTTP/1.1\r\nHost: public.test\r\n\r\n", http.StatusBadRequest},
		{"connect without port", connectHead("public.test"), http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _, _ := rawProxyRequest(t, proxyAddr, tt.head)
			if resp.StatusCode != tt.want || resp.Header.Get(HeaderDenied) == "" {
				t.Fatalf("proxy %q = %d %q, want %d with %s", tt.head, resp.StatusCode, resp.Header.Get(HeaderDenied), tt.want, HeaderDenied)
			}
		})
	}
	if got := e.up.hits.Load(); got != 0 {
		t.Fatalf("upstream hits = %d, want 0", got)
	}
}

// TestProxyHTTPSThroughConnect drives a real TLS client through the proxy to
// a loopback TLS upstream, which only AllowCIDRs makes reachable.
func TestProxyHTTPSThroughConnect(t *testing.T) {
	up := newUpstream(t, true, nil)
	al := mustAllowlist(t, []int{up.port}, "127.0.0.1")
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	target := "https://127.0.0.1:" + strconv.Itoa(up.port) + "/"
	tests := []struct {
		name    string
		cidrs   []netip.Prefix
		allowed bool
	}{
		{"without allow cidr", nil, false},
		{"with allow cidr", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up.hits.Store(0)
			d := newTestDialer(t, Config{AllowCIDRs: tt.cidrs}, nil, nil)
			proxyAddr, _ := startProxy(t, ProxyConfig{Allow: al}, d)
			tr := &http.Transport{
				Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr}),
				TLSClientConfig: &tls.Config{RootCAs: roots},
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(target)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "upstream ok" {
					t.Fatalf("GET %s via proxy body = %q, want %q", target, body, "upstream ok")
				}
			}
			if (err == nil) != tt.allowed {
				t.Fatalf("GET %s via proxy = %v, want allowed %v", target, err, tt.allowed)
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

func TestProxyShutdownClosesTunnels(t *testing.T) {
	e := newSSRFEnv(t)
	proxyAddr, stop := startProxy(t, ProxyConfig{Allow: e.al}, e.d)
	resp, conn, br := rawProxyRequest(t, proxyAddr, connectHead("public.test:"+strconv.Itoa(e.up.port)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT = %d, want 200", resp.StatusCode)
	}
	// The tunnel is open and idle (keep-alive to the upstream).
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: public.test\r\n\r\n")
	inner, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, inner.Body)
	inner.Body.Close()

	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	// Run returned, so the tunnel must already be closed: the read ends
	// (the deadline set by rawProxyRequest only bounds a broken build).
	_, err = br.ReadByte()
	if err == nil {
		t.Fatal("tunnel still open after shutdown")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("tunnel read timed out after shutdown (%v), want closed", err)
	}
}

func TestNewProxyValidates(t *testing.T) {
	d := newTestDialer(t, Config{}, nil, nil)
	if _, err := NewProxy(ProxyConfig{}, d, Deps{}); err == nil {
		t.Fatal("NewProxy without Allow = nil error, want error")
	}
	if _, err := NewProxy(ProxyConfig{Allow: &Allowlist{}}, nil, Deps{}); err == nil {
		t.Fatal("NewProxy without Dialer = nil error, want error")
	}
	if _, err := NewProxy(ProxyConfig{Allow: &Allowlist{}, IdleTimeout: -1}, d, Deps{}); err == nil {
		t.Fatal("NewProxy with negative IdleTimeout = nil error, want error")
	}
}

// TunnelIdleTimeout closes a tunnel only when neither direction carried
// traffic for that long: a download the client sends nothing during (an
// HTTP/1.1 response streamed for longer than the timeout) stays open, and
// a tunnel silent both ways still closes.
func TestProxyTunnelIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				one := make([]byte, 1)
				if _, err := c.Read(one); err != nil {
					return
				}
				if one[0] == 'q' { // stay silent until the proxy closes
					_, _ = io.Copy(io.Discard, c)
					return
				}
				// Stream for about four idle periods, one byte per idle/6.
				for i := 0; i < 24; i++ {
					if _, err := c.Write([]byte{'x'}); err != nil {
						return
					}
					time.Sleep(idle / 6)
				}
			}()
		}
	}()
	upAddr := ln.Addr().String()
	_, upPort, _ := net.SplitHostPort(upAddr)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var nd net.Dialer
		return nd.DialContext(ctx, network, upAddr)
	}
	d := newTestDialer(t, Config{Resolver: newFakeResolver(map[string][]string{"public.test": {publicIP}}), DialAddr: dial}, nil, nil)
	port, _ := strconv.Atoi(upPort)
	proxyAddr, _ := startProxy(t, ProxyConfig{Allow: mustAllowlist(t, []int{port}, "public.test"), TunnelIdleTimeout: idle}, d)

	t.Run("one-way stream stays open", func(t *testing.T) {
		resp, conn, br := rawProxyRequest(t, proxyAddr, connectHead("public.test:"+upPort))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT = %d, want 200", resp.StatusCode)
		}
		if _, err := conn.Write([]byte{'s'}); err != nil { // the request; then the client only reads
			t.Fatal(err)
		}
		got, err := io.ReadAll(br)
		if len(got) != 24 {
			t.Fatalf("received %d of 24 streamed bytes (%v): the tunnel was closed while the upstream was sending", len(got), err)
		}
	})
	t.Run("silent tunnel closes", func(t *testing.T) {
		resp, conn, br := rawProxyRequest(t, proxyAddr, connectHead("public.test:"+upPort))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT = %d, want 200", resp.StatusCode)
		}
		if _, err := conn.Write([]byte{'q'}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := br.ReadByte()
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("silent tunnel read = %v, want closed by the proxy", err)
		}
		if waited := time.Since(start); waited > 10*idle {
			t.Fatalf("silent tunnel closed after %s, want about %s", waited, idle)
		}
	})
}
