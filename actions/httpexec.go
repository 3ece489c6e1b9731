package actions

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/egress"
)

// outputHeaders are the upstream response headers copied into the output.
var outputHeaders = [...]string{
	"Content-Type", "Content-Length", "Etag", "Last-Modified", "Location",
	"Retry-After", "X-Request-Id", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset",
}

// userAgent is sent unless the manifest sets one.
const userAgent = "latchgate"

// httpExecutor runs http manifests through the egress Dialer.
type httpExecutor struct {
	cfg     RunnerConfig
	dialer  Dialer
	secrets SecretSource
	log     zerolog.Logger
}

func newHTTPExecutor(cfg RunnerConfig, deps RunnerDeps, log zerolog.Logger) *httpExecutor {
	return &httpExecutor{cfg: cfg, dialer: deps.Dialer, secrets: deps.Secrets, log: log}
}

// hostLog collects the hosts a request contacts (initial + redirects).
type hostLog struct {
	mu    sync.Mutex // guards hosts
	hosts []string
}

func (h *hostLog) add(u *url.URL) {
	host, _, _, err := egress.HostFromURL(u.String())
	name := u.Hostname()
	if err == nil {
		name = host.String()
	}
	h.mu.Lock()
	if !slices.Contains(h.hosts, name) {
		h.hosts = append(h.hosts, name)
	}
	h.mu.Unlock()
}

func (h *hostLog) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.hosts)
}

func (h *httpExecutor) execute(ctx context.Context, p *Plan, g GrantInfo) *Result {
	a := p.Action
	spec := a.http
	if h.dialer == nil {
		return &Result{Kind: KindInternalError, Summary: "egress is not configured; http actions cannot run"}
	}
	var used []string
	secretFn := func(name string) (string, error) {
		v, ok := h.secrets.Secret(name)
		if !ok {
			return "", &secretError{name: name, reason: "is not configured"}
		}
		if len(v) < MinSecretLen {
			return "", &secretError{name: name, reason: "is shorter than 8 bytes"}
		}
		if !slices.Contains(used, v) {
			used = append(used, v)
		}
		return v, nil
	}
	rr, err := spec.render(a, p.Args, secretFn)
	red := newRedactor(used)
	if err != nil {
		var se *secretError
		if errors.As(err, &se) {
			return &Result{Kind: KindInternalError, Summary: red.str(se.Error())}
		}
		return &Result{Kind: KindInternalError, Summary: red.str("the request could not be built: " + err.Error())}
	}
	hosts := &hostLog{}
	// Defence in depth: Prepare already put such targets in Forbidden.
	if spec.usesSecrets && !a.allow.Allows(rr.host, rr.port) {
		return &Result{Kind: KindEgressDenied, Summary: fmt.Sprintf("refused to send a secret to %s, which the manifest does not list", rr.host)}
	}

	al := a.allow.With(learnedAllowlist(g.Learned).Rules()...)
	tr := h.dialer.Transport(al)
	if h.cfg.RootCAs != nil {
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.RootCAs = h.cfg.RootCAs
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: h.redirectPolicy(spec, al, red, hosts),
		Timeout:       a.Timeout,
	}

	// The whole exchange, body included, is bounded by the manifest timeout
	// through ctx as well as client.Timeout: an upstream that ends its body
	// cleanly only because the client gave up (a Go server does, on the
	// client's close_notify) must not turn a truncated body into success.
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	var body io.Reader
	if rr.hasBody {
		body = bytes.NewReader(rr.body)
	}
	req, err := http.NewRequestWithContext(ctx, rr.method, rr.url, body)
	if err != nil {
		return &Result{Kind: KindInternalError, Summary: "the request could not be built"}
	}
	for k, v := range rr.header {
		req.Header[k] = v
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
	hosts.add(req.URL)

	resp, err := client.Do(req)
	if err != nil {
		res := classifyTransportError(ctx, err, a)
		res.Summary = red.str(res.Summary)
		res.Hosts = hosts.list()
		h.log.Debug().Str("action_id", a.ID).Str("grant_id", g.ID).Str("kind", res.Kind).Str("error", red.str(err.Error())).Msg("http action failed")
		return res
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, a.MaxResponseBytes+1))
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // the deadline passed while the body was read
	}
	if err != nil {
		res := classifyTransportError(ctx, err, a)
		res.StatusCode = resp.StatusCode
		res.Summary = red.str(res.Summary)
		res.Hosts = hosts.list()
		return res
	}
	if int64(len(data)) > a.MaxResponseBytes {
		return &Result{
			Kind:       KindProviderFailure,
			Summary:    fmt.Sprintf("response exceeds %d bytes", a.MaxResponseBytes),
			StatusCode: resp.StatusCode,
			Hosts:      hosts.list(),
		}
	}

	out := buildOutput(resp, data)
	full, err := encodeJSON(out)
	if err != nil {
		return &Result{Kind: KindInternalError, Summary: "the output could not be encoded", StatusCode: resp.StatusCode, Hosts: hosts.list()}
	}
	hash, err := jcsHash(full)
	if err != nil {
		return &Result{Kind: KindInternalError, Summary: "the output could not be hashed", StatusCode: resp.StatusCode, Hosts: hosts.list()}
	}
	redacted, err := encodeJSON(red.value(out))
	if err != nil {
		return &Result{Kind: KindInternalError, Summary: "the output could not be encoded", StatusCode: resp.StatusCode, Hosts: hosts.list()}
	}
	verification := UnverifiableDeclared
	if len(a.ExpectStatus) > 0 {
		verification = VerificationFailed
		if slices.Contains(a.ExpectStatus, resp.StatusCode) {
			verification = Verified
		}
	}
	return &Result{
		Output:       redacted,
		ResponseHash: hash,
		Kind:         KindSuccess,
		Summary:      fmt.Sprintf("the upstream answered HTTP %d", resp.StatusCode),
		StatusCode:   resp.StatusCode,
		Verification: verification,
		Hosts:        hosts.list(),
	}
}

// redirectPolicy wraps the egress redirect check: after it passes, a
// cross-origin hop loses every header whose template used a secret,
// Authorization, Cookie and Referer; a body or URL carrying a secret is never
// sent cross-origin (the redirect is not followed and its response becomes
// the result).
func (h *httpExecutor) redirectPolicy(spec *httpSpec, al *egress.Allowlist, red *redactor, hosts *hostLog) func(*http.Request, []*http.Request) error {
	base := h.dialer.CheckRedirect(al)
	return func(req *http.Request, via []*http.Request) error {
		if err := base(req, via); err != nil {
			return err
		}
		req.Header.Del("Referer")
		if spec.usesSecrets && !sameOrigin(req.URL, via[0].URL) {
			for _, n := range spec.secretHeaders {
				req.Header.Del(n)
			}
			req.Header.Del("Authorization")
			req.Header.Del("Cookie")
			if spec.bodySecret && req.Body != nil && req.Body != http.NoBody {
				return http.ErrUseLastResponse
			}
			if red.contains(req.URL.String()) {
				return http.ErrUseLastResponse
			}
		}
		hosts.add(req.URL)
		return nil
	}
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && effectivePort(a) == effectivePort(b)
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "http") {
		return "80"
	}
	return "443"
}

// classifyTransportError maps a failed round trip to a Result kind
// (PROTOCOL §3.4). Summaries name no addresses or OS error text.
func classifyTransportError(ctx context.Context, err error, a *Action) *Result {
	var de *egress.DeniedError
	switch {
	case errors.As(err, &de):
		return &Result{Kind: KindEgressDenied, Summary: fmt.Sprintf("egress refused %s: %s", de.Host, de.Reason)}
	case errors.Is(err, egress.ErrDenied):
		return &Result{Kind: KindEgressDenied, Summary: "egress refused the connection"}
	case isTimeout(ctx, err):
		return &Result{Kind: KindTimeout, Summary: fmt.Sprintf("the upstream did not answer within %s", a.Timeout)}
	case errors.Is(err, context.Canceled):
		return &Result{Kind: KindProviderFailure, Summary: "the request was cancelled"}
	}
	var ne *net.OpError
	switch {
	case errors.As(err, &ne) && ne.Op == "dial":
		return &Result{Kind: KindProviderFailure, Summary: "the upstream refused or dropped the connection"}
	case strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:"):
		return &Result{Kind: KindProviderFailure, Summary: "the TLS handshake with the upstream failed"}
	}
	return &Result{Kind: KindProviderFailure, Summary: "the connection to the upstream failed"}
}

func isTimeout(ctx context.Context, err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// buildOutput is {"status","headers",("body"|"body_text")}: body when the
// upstream sent I-JSON (with a JSON or no content type), otherwise the text
// with invalid UTF-8 replaced.
func buildOutput(resp *http.Response, data []byte) map[string]any {
	headers := map[string]any{}
	for _, name := range outputHeaders {
		if vs := resp.Header.Values(name); len(vs) > 0 {
			headers[strings.ToLower(name)] = strings.ToValidUTF8(strings.Join(vs, ", "), "\uFFFD")
		}
	}
	out := map[string]any{"status": json.Number(strconv.Itoa(resp.StatusCode)), "headers": headers}
	if len(data) > 0 && jsonContentType(resp.Header.Get("Content-Type")) {
		if v, err := parseIJSON(data); err == nil {
			out["body"] = v
			return out
		}
	}
	out["body_text"] = strings.ToValidUTF8(string(data), "\uFFFD")
	return out
}

func jsonContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "text/json"
}

// encodeJSON encodes compactly without HTML escaping.
func encodeJSON(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

var _ executor = (*httpExecutor)(nil)
