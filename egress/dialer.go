package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/rs/zerolog"
)

// ErrDenied is matched (errors.Is) by every *DeniedError: a policy refusal,
// as opposed to a network failure.
var ErrDenied = errors.New("egress: denied")

// MaxRedirects is how many redirects a client built here follows.
const MaxRedirects = 5

// DeniedError is a policy refusal of an egress target. Its text is stable.
type DeniedError struct {
	Host   string // normalised host, or the raw input when it did not parse
	Port   int    // target port, 0 if unknown
	Reason string // a Reason* constant
	Detail string // specifics for logs (address and range); not for clients
}

func (e *DeniedError) Error() string {
	s := "egress: denied " + e.Host + ": " + e.Reason
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Resolver looks up the addresses of a name; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures a Dialer. The zero Config is valid.
type Config struct {
	// AllowCIDRs lifts the deny list for addresses inside these prefixes.
	// Test-only escape hatch (`--egress-allow-cidr`); the allowlist still
	// applies. Prefixes must be masked and at least /8 (IPv4) or /16 (IPv6).
	// Default: none, every special-purpose address is denied.
	AllowCIDRs []netip.Prefix
	// DialTimeout bounds resolving plus connecting to all checked
	// addresses. Default 10s.
	DialTimeout time.Duration
	// TLSHandshakeTimeout for transports. Default 10s.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout for transports: time to wait for response
	// headers after the request was written. Default 30s.
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout for pooled connections of transports. Default 90s.
	IdleConnTimeout time.Duration
	// TLSConfig is cloned into every transport (set RootCAs here). Default
	// nil: Go's defaults and the system roots.
	TLSConfig *tls.Config
	// Resolver resolves names, once per dial. Default &net.Resolver{}.
	Resolver Resolver
	// DialAddr connects to one checked "ip:port"; it is never given a name.
	// Default: a net.Dialer whose Control refuses denied addresses again.
	DialAddr func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Deps are the Dialer's collaborators; all optional.
type Deps struct {
	Logger  zerolog.Logger // default: discard
	Metrics Metrics        // default: no-op
	Clock   clock.Clock    // default: clock.Real{}; only for durations in logs
}

func (c Config) withDefaults() Config {
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.TLSHandshakeTimeout == 0 {
		c.TLSHandshakeTimeout = 10 * time.Second
	}
	if c.ResponseHeaderTimeout == 0 {
		c.ResponseHeaderTimeout = 30 * time.Second
	}
	if c.IdleConnTimeout == 0 {
		c.IdleConnTimeout = 90 * time.Second
	}
	if c.Resolver == nil {
		c.Resolver = &net.Resolver{}
	}
	return c
}

// Validate checks c without changing it.
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.AllowCIDRs {
		switch {
		case !p.IsValid() || p.Masked() != p:
			errs = append(errs, fmt.Errorf("egress: AllowCIDRs: %q must be a masked prefix such as 127.0.0.1/32", p))
		case p.Addr().Is4() && p.Bits() < 8, p.Addr().Is6() && p.Bits() < 16:
			errs = append(errs, fmt.Errorf("egress: AllowCIDRs: %s is too broad; use /8 or longer (IPv4), /16 or longer (IPv6)", p))
		}
	}
	for name, d := range map[string]time.Duration{
		"DialTimeout": c.DialTimeout, "TLSHandshakeTimeout": c.TLSHandshakeTimeout,
		"ResponseHeaderTimeout": c.ResponseHeaderTimeout, "IdleConnTimeout": c.IdleConnTimeout,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("egress: %s must be a positive duration such as \"10s\", got %s", name, d))
		}
	}
	return errors.Join(errs...)
}

// Dialer is the SSRF-safe dialer. It is safe for concurrent use.
type Dialer struct {
	cfg     Config
	log     zerolog.Logger
	metrics Metrics
	clock   clock.Clock
}

// NewDialer validates cfg and returns a Dialer.
func NewDialer(cfg Config, deps Deps) (*Dialer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.AllowCIDRs = append([]netip.Prefix(nil), cfg.AllowCIDRs...)
	d := &Dialer{cfg: cfg, log: deps.Logger, metrics: deps.Metrics, clock: deps.Clock}
	if d.metrics == nil {
		d.metrics = noopMetrics{}
	}
	if d.clock == nil {
		d.clock = clock.Real{}
	}
	if d.cfg.DialAddr == nil {
		nd := &net.Dialer{Control: d.controlCheck}
		d.cfg.DialAddr = nd.DialContext
	}
	return d, nil
}

// controlCheck is the last line of defence of the default DialAddr: the
// socket is about to connect to address, which must pass the address check.
func (d *Dialer) controlCheck(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &DeniedError{Host: address, Reason: ReasonInvalidHost, Detail: "socket address did not parse"}
	}
	if denied, why, _ := d.addrDenied(ap.Addr()); denied {
		return &DeniedError{Host: address, Reason: ReasonDeniedAddress, Detail: why}
	}
	return nil
}

// addrDenied applies the deny list, then the test-only allow CIDRs.
func (d *Dialer) addrDenied(a netip.Addr) (denied bool, reason, liftedBy string) {
	denied, reason = IsDenied(a)
	if !denied {
		return false, "", ""
	}
	for _, p := range d.cfg.AllowCIDRs {
		if p.Contains(a.WithZone("")) {
			return false, reason, p.String()
		}
	}
	return true, reason, ""
}

// DialContext connects to addr ("host:port") for a grant whose allowlist is
// al: it normalises the host, checks host and port against al, resolves a
// name once, refuses if any resolved address is denied, and dials the checked
// addresses in order. Policy refusals are *DeniedError (errors.Is ErrDenied);
// everything else is a network error. Each call logs one decision line.
func (d *Dialer) DialContext(ctx context.Context, network, addr string, al *Allowlist) (net.Conn, error) {
	start := d.clock.Now()
	ev, conn, err := d.dial(ctx, network, addr, al)
	ev.err = err
	d.record(ctx, start, ev)
	return conn, err
}

func (d *Dialer) record(ctx context.Context, start time.Time, ev decisionEvent) {
	ms := float64(d.clock.Now().Sub(start).Microseconds()) / 1000
	if ev.decision == DecisionDeny {
		ev.err = nil // the reason and detail say it all
	}
	logDecision(ctx, d.log, ms, ev)
	d.metrics.Decision(ev.decision, ev.reason)
}

func (d *Dialer) dial(ctx context.Context, network, addr string, al *Allowlist) (decisionEvent, net.Conn, error) {
	ev := decisionEvent{decision: DecisionDeny, host: addr, network: network}
	deny := func(reason, detail string) (decisionEvent, net.Conn, error) {
		ev.decision, ev.reason, ev.detail = DecisionDeny, reason, detail
		return ev, nil, &DeniedError{Host: ev.host, Port: ev.port, Reason: reason, Detail: detail}
	}
	var lookupNet string
	switch network {
	case "tcp":
		lookupNet = "ip"
	case "tcp4":
		lookupNet = "ip4"
	case "tcp6":
		lookupNet = "ip6"
	default:
		return deny(ReasonBadNetwork, "network must be tcp, tcp4 or tcp6")
	}
	rawHost, rawPort, err := net.SplitHostPort(addr)
	if err != nil {
		return deny(ReasonInvalidHost, "address must be host:port")
	}
	ev.host = rawHost
	port, err := parsePort(rawPort)
	if err != nil {
		return deny(ReasonInvalidHost, err.Error())
	}
	ev.port = port
	if strings.Contains(rawHost, ":") {
		rawHost = "[" + rawHost + "]"
	}
	h, err := ParseHost(rawHost)
	switch {
	case errors.Is(err, ErrNonCanonicalHost):
		return deny(ReasonNonCanonicalHost, "numeric host must be a canonical dotted-quad")
	case err != nil:
		return deny(ReasonInvalidHost, err.Error())
	}
	ev.host = h.String()
	if reason := al.check(h, port); reason != "" {
		return deny(reason, "")
	}

	ctx, cancel := context.WithTimeout(ctx, d.cfg.DialTimeout)
	defer cancel()

	var addrs []netip.Addr
	if h.IsIP() {
		addrs = []netip.Addr{h.ip}
	} else {
		// The one and only lookup for this dial.
		found, err := d.cfg.Resolver.LookupNetIP(ctx, lookupNet, h.name)
		if err != nil {
			ev.decision, ev.reason = DecisionError, ReasonLookupFailed
			return ev, nil, fmt.Errorf("egress: resolve %s: %w", h, err)
		}
		for _, a := range found {
			addrs = append(addrs, a.Unmap().WithZone(""))
		}
		if len(addrs) == 0 {
			ev.decision, ev.reason = DecisionError, ReasonLookupFailed
			return ev, nil, fmt.Errorf("egress: resolve %s: no addresses", h)
		}
	}
	var lifted []string
	for _, a := range addrs {
		ev.resolved = append(ev.resolved, a.String())
	}
	for _, a := range addrs {
		denied, why, by := d.addrDenied(a)
		if denied {
			return deny(ReasonDeniedAddress, a.String()+" is "+why)
		}
		if by != "" {
			lifted = append(lifted, by)
		}
	}
	ev.allowCIDR = strings.Join(lifted, ",")

	var errs []error
	for i, a := range addrs {
		target := netip.AddrPortFrom(a, uint16(port)).String()
		actx, acancel := context.WithDeadline(ctx, addrDeadline(ctx, len(addrs)-i))
		conn, err := d.cfg.DialAddr(actx, network, target)
		acancel()
		if err == nil {
			ev.decision, ev.reason, ev.dialed = DecisionAllow, ReasonAllowed, target
			return ev, conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	err = errors.Join(errs...)
	var de *DeniedError
	if errors.As(err, &de) {
		// The default DialAddr's Control refused: report as a denial.
		return deny(de.Reason, de.Detail)
	}
	ev.decision, ev.reason = DecisionError, ReasonDialFailed
	return ev, nil, fmt.Errorf("egress: dial %s: %w", net.JoinHostPort(h.String(), rawPort), err)
}

// addrDeadline splits what is left of ctx's deadline evenly over the
// remaining addresses (at least 2s each while that much is left), as
// net.Dialer does, so an address that never answers cannot use up the time
// of the checked addresses after it.
func addrDeadline(ctx context.Context, remaining int) time.Time {
	deadline, _ := ctx.Deadline()
	left := time.Until(deadline)
	share := left / time.Duration(remaining)
	if share < 2*time.Second {
		share = min(left, 2*time.Second)
	}
	return time.Now().Add(share)
}

// Transport returns a new http.Transport for one grant: its own connection
// pool, every connection dialled through d with allowlist al, proxy
// environment variables ignored, explicit timeouts, TLS from
// Config.TLSConfig. Callers should CloseIdleConnections when the grant ends.
func (d *Dialer) Transport(al *Allowlist) *http.Transport {
	var tlsCfg *tls.Config
	if d.cfg.TLSConfig != nil {
		tlsCfg = d.cfg.TLSConfig.Clone()
	}
	return &http.Transport{
		Proxy: nil, // HTTP_PROXY / HTTPS_PROXY / NO_PROXY are ignored on purpose.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr, al)
		},
		TLSClientConfig:        tlsCfg,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    d.cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout:  d.cfg.ResponseHeaderTimeout,
		IdleConnTimeout:        d.cfg.IdleConnTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           32,
		MaxIdleConnsPerHost:    8,
		MaxResponseHeaderBytes: 1 << 20,
	}
}

// Client returns an http.Client for one grant: Transport(al), the redirect
// rules of CheckRedirect (decisions logged), and the overall timeout.
func (d *Dialer) Client(al *Allowlist, timeout time.Duration) *http.Client {
	return &http.Client{Transport: d.Transport(al), CheckRedirect: d.CheckRedirect(al), Timeout: timeout}
}

// CheckRedirect is the package-level CheckRedirect that also logs and counts
// each refused redirect as a decision. Allowed redirects are logged by the
// dial that follows them.
func (d *Dialer) CheckRedirect(al *Allowlist) func(req *http.Request, via []*http.Request) error {
	check := CheckRedirect(al)
	return func(req *http.Request, via []*http.Request) error {
		start := d.clock.Now()
		err := check(req, via)
		var de *DeniedError
		if errors.As(err, &de) {
			d.record(req.Context(), start, decisionEvent{
				decision: DecisionDeny, reason: de.Reason, detail: de.Detail, host: de.Host, port: de.Port,
			})
		}
		return err
	}
}

// CheckRedirect returns an http.Client CheckRedirect for a grant with
// allowlist al: at most MaxRedirects redirects, never from https to http, and
// each target re-checked (ParseHost and al). Refusals are *DeniedError. The
// dial of an allowed target is checked again by the Dialer.
func CheckRedirect(al *Allowlist) func(req *http.Request, via []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		target := req.URL.Host
		if len(via) > MaxRedirects {
			return &DeniedError{Host: target, Reason: ReasonTooManyRedirects, Detail: fmt.Sprintf("more than %d redirects", MaxRedirects)}
		}
		h, port, scheme, err := hostFromURL(req.URL)
		switch {
		case errors.Is(err, ErrNonCanonicalHost):
			return &DeniedError{Host: target, Reason: ReasonNonCanonicalHost}
		case err != nil:
			return &DeniedError{Host: target, Reason: ReasonInvalidHost, Detail: err.Error()}
		}
		for _, prev := range via {
			if prev.URL.Scheme == "https" && scheme != "https" {
				return &DeniedError{Host: h.String(), Port: port, Reason: ReasonHTTPSDowngrade, Detail: "redirect from https to http"}
			}
		}
		if reason := al.check(h, port); reason != "" {
			return &DeniedError{Host: h.String(), Port: port, Reason: reason, Detail: "redirect target"}
		}
		return nil
	}
}
