package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// HeaderDenied names the response header carrying the Reason* code of a
// refused proxy request (status 403).
const HeaderDenied = "X-Latchgate-Egress-Denied"

// ProxyConfig configures a Proxy.
type ProxyConfig struct {
	// Allow is the allowlist every proxied connection is checked against.
	// Required; an empty allowlist refuses everything.
	Allow *Allowlist
	// ReadHeaderTimeout for client requests. Default 10s.
	ReadHeaderTimeout time.Duration
	// RequestTimeout bounds reading a forwarded request and writing its
	// response (http.Server ReadTimeout/WriteTimeout); cleared for CONNECT
	// tunnels. Default 5m.
	RequestTimeout time.Duration
	// IdleTimeout for keep-alive client connections. Default 60s.
	IdleTimeout time.Duration
	// TunnelIdleTimeout closes a CONNECT tunnel with no traffic in either
	// direction for this long. Default 5m.
	TunnelIdleTimeout time.Duration
	// ShutdownGrace is how long Run waits for in-flight forwarded requests
	// when ctx ends; tunnels are closed at once. Default 5s.
	ShutdownGrace time.Duration
	// MaxHeaderBytes for client requests. Default 64 KiB.
	MaxHeaderBytes int
}

func (c ProxyConfig) withDefaults() ProxyConfig {
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Minute
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.TunnelIdleTimeout == 0 {
		c.TunnelIdleTimeout = 5 * time.Minute
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 5 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	return c
}

// Validate checks c without changing it.
func (c ProxyConfig) Validate() error {
	var errs []error
	if c.Allow == nil {
		errs = append(errs, errors.New("egress: ProxyConfig.Allow is required (an allowlist of HOST[:PORT] entries)"))
	}
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": c.ReadHeaderTimeout, "RequestTimeout": c.RequestTimeout,
		"IdleTimeout": c.IdleTimeout, "TunnelIdleTimeout": c.TunnelIdleTimeout, "ShutdownGrace": c.ShutdownGrace,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("egress: ProxyConfig.%s must be a positive duration such as \"10s\", got %s", name, d))
		}
	}
	if c.MaxHeaderBytes < 0 {
		errs = append(errs, fmt.Errorf("egress: ProxyConfig.MaxHeaderBytes must be positive, got %d", c.MaxHeaderBytes))
	}
	return errors.Join(errs...)
}

// Proxy is the allowlist forward proxy: HTTP CONNECT tunnels and
// absolute-form http:// requests, every upstream connection made by the
// Dialer. It tracks hijacked tunnels and closes them on shutdown.
type Proxy struct {
	cfg       ProxyConfig
	dialer    *Dialer
	transport *http.Transport
	log       zerolog.Logger

	mu      sync.Mutex // guards tunnels and closing
	tunnels map[net.Conn]struct{}
	closing bool

	wg sync.WaitGroup // running tunnels
}

// NewProxy returns a Proxy that dials through d. deps.Logger and
// deps.Metrics are used for proxy-level refusals (malformed requests); dial
// decisions are logged by d.
func NewProxy(cfg ProxyConfig, d *Dialer, deps Deps) (*Proxy, error) {
	if d == nil {
		return nil, errors.New("egress: NewProxy needs a Dialer")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := d.Transport(cfg.Allow)
	t.ForceAttemptHTTP2 = false // forward only plain http/1.1 upstreams
	return &Proxy{
		cfg:       cfg,
		dialer:    d,
		transport: t,
		log:       deps.Logger,
		tunnels:   map[net.Conn]struct{}{},
	}, nil
}

// Run serves proxy requests on ln until ctx ends, then shuts down: stops
// accepting, closes every tunnel, and waits up to ShutdownGrace for
// forwarded requests. It returns nil on a clean shutdown.
func (p *Proxy) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.cfg.ReadHeaderTimeout,
		ReadTimeout:       p.cfg.RequestTimeout,
		WriteTimeout:      p.cfg.RequestTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          log.New(p.log.With().Str("component", "egress_proxy_http").Logger(), "", 0),
	}
	srv.RegisterOnShutdown(p.closeTunnels)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	var err error
	select {
	case err = <-errc:
		p.closeTunnels()
	case <-ctx.Done():
		grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownGrace)
		err = srv.Shutdown(grace)
		cancel()
		if err != nil {
			_ = srv.Close()
		}
		if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
			err = serveErr
		}
	}
	p.closeTunnels()
	p.wg.Wait()
	p.transport.CloseIdleConnections()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := withClient(r.Context(), clientInfo{addr: r.RemoteAddr, verb: r.Method})
	if r.Method == http.MethodConnect {
		p.serveConnect(ctx, w, r)
		return
	}
	p.serveForward(ctx, w, r)
}

// refuse answers a malformed proxy request and records it as a decision.
func (p *Proxy) refuse(ctx context.Context, w http.ResponseWriter, host, detail string) {
	p.dialer.record(ctx, p.dialer.clock.Now(), decisionEvent{
		decision: DecisionDeny, reason: ReasonBadRequest, detail: detail, host: host,
	})
	w.Header().Set(HeaderDenied, ReasonBadRequest)
	http.Error(w, "egress: bad proxy request: "+detail, http.StatusBadRequest)
}

// writeDialError maps a dial failure to a status: a refusal is 403 with
// HeaderDenied, a timeout 504, any other network failure 502.
func writeDialError(w http.ResponseWriter, err error) {
	var de *DeniedError
	var ne net.Error
	switch {
	case errors.As(err, &de):
		w.Header().Set(HeaderDenied, de.Reason)
		http.Error(w, "egress denied: "+de.Reason, http.StatusForbidden)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		http.Error(w, "egress: upstream timeout", http.StatusGatewayTimeout)
	default:
		http.Error(w, "egress: upstream unreachable", http.StatusBadGateway)
	}
}

func (p *Proxy) serveConnect(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	up, err := p.dialer.DialContext(ctx, "tcp", r.Host, p.cfg.Allow)
	if err != nil {
		writeDialError(w, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "egress: CONNECT needs HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return
	}
	client, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !p.track(client, up) {
		client.Close()
		up.Close()
		return
	}
	defer p.untrack(client, up)
	_ = client.SetDeadline(time.Time{})
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent after the CONNECT head sit in brw's buffer.
	var clientSrc io.Reader = client
	if n := brw.Reader.Buffered(); n > 0 {
		clientSrc = io.MultiReader(io.LimitReader(brw.Reader, int64(n)), client)
	}
	p.pipe(client, clientSrc, up)
}

// track registers a tunnel; it refuses once shutdown began.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	for _, c := range conns {
		p.tunnels[c] = struct{}{}
	}
	p.wg.Add(1)
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	for _, c := range conns {
		delete(p.tunnels, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Done()
}

// closeTunnels closes every tunnel connection and refuses new ones.
// Closing a net.Conn does no blocking network I/O, so it is done under mu.
func (p *Proxy) closeTunnels() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closing = true
	for c := range p.tunnels {
		c.Close()
	}
}

// pipe copies both ways until either side ends or the tunnel is idle for
// TunnelIdleTimeout, then closes both. Socket deadlines are absolute wall
// time, so they use time.Now, not the injected clock.
func (p *Proxy) pipe(client net.Conn, clientSrc io.Reader, up net.Conn) {
	done := make(chan struct{}, 2)
	idle := p.cfg.TunnelIdleTimeout
	// last is when either direction last carried data (UnixNano): a read
	// that times out while the other direction is busy waits again.
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	cp := func(dst net.Conn, src io.Reader, srcConn net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			_ = srcConn.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				_ = dst.SetWriteDeadline(time.Now().Add(idle))
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
				continue
			}
			if err != nil {
				return
			}
		}
	}
	go cp(up, clientSrc, client)
	go cp(client, up, up)
	<-done
	client.Close()
	up.Close()
	<-done
}

// hopHeaders are removed from forwarded requests and responses (RFC 9110 §7.6.1).
func hopHeaders() [9]string {
	return [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}
}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders() {
		h.Del(name)
	}
}

func (p *Proxy) serveForward(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if !r.URL.IsAbs() || r.URL.Host == "" {
		p.refuse(ctx, w, r.Host, "not a proxy request: use CONNECT or an absolute http:// URL")
		return
	}
	if !strings.EqualFold(r.URL.Scheme, "http") {
		p.refuse(ctx, w, r.URL.Host, "absolute-form requests must be http://; tunnel https with CONNECT")
		return
	}
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.Host = ""
	out.Header = r.Header.Clone()
	removeHopHeaders(out.Header)
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		writeDialError(w, err)
		return
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

var _ http.Handler = (*Proxy)(nil)
