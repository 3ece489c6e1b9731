package actions

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/egress"
)

// Result kinds (PROTOCOL §3.4, §5 normalized_result.kind).
const (
	KindSuccess         = "success"
	KindTimeout         = "timeout"
	KindProviderFailure = "provider_failure"
	KindEgressDenied    = "egress_denied"
	KindInternalError   = "internal_error"
)

// Verification outcomes.
const (
	Verified             = "verified"
	VerificationFailed   = "verification_failed"
	UnverifiableDeclared = "unverifiable_declared"
)

// Result is what one execution produced. Output and Summary are redacted;
// ResponseHash covers the unredacted output. A zero Result is never
// returned: Kind is always set.
type Result struct {
	Output       json.RawMessage // redacted; nil when nothing came back
	ResponseHash string          // "sha256:<hex>" of JCS(unredacted Output); "" when Output is nil
	Kind         string          // success | timeout | provider_failure | egress_denied | internal_error
	Summary      string          // one safe sentence: no secrets, no argument values
	StatusCode   int             // upstream HTTP status, 0 if none
	Verification string          // verified | verification_failed | unverifiable_declared
	Hosts        []string        // hosts contacted (punycode), in order, unique
	Duration     time.Duration
}

// Succeeded reports the SDK's is_fully_successful: kind success and not
// verification_failed.
func (r *Result) Succeeded() bool {
	return r.Kind == KindSuccess && r.Verification != VerificationFailed
}

// GrantInfo is what the gate hands over at dispatch.
type GrantInfo struct {
	ID      string
	Learned []string // learned egress entries valid now ("host" or "host:port")
}

// Dialer is what the http executor needs from egress: a per-grant transport
// whose dialing is checked against al, and the redirect check for the same
// allowlist. *egress.Dialer implements it.
type Dialer interface {
	Transport(al *egress.Allowlist) *http.Transport
	CheckRedirect(al *egress.Allowlist) func(req *http.Request, via []*http.Request) error
}

var _ Dialer = (*egress.Dialer)(nil)

// RunnerConfig configures executors.
type RunnerConfig struct {
	// RootCAs replaces the roots for upstream TLS on every transport. Nil:
	// whatever the Dialer's transports use (egress Config.TLSConfig, else
	// the system roots). Tests pass a pool holding their stub CA.
	RootCAs *x509.CertPool
}

// RunnerDeps are the Runner's collaborators.
type RunnerDeps struct {
	// Dialer makes per-grant transports. Nil: http actions end with
	// internal_error ("egress is not configured").
	Dialer Dialer
	// Secrets resolves {{secret.*}}. Nil: no secrets (actions that need one
	// end with internal_error).
	Secrets SecretSource
	// Clock measures durations. Nil: clock.Real{}.
	Clock clock.Clock
	// Logger gets one sub-logger for the runner.
	Logger zerolog.Logger
}

// executor runs one kind of action. Implementations never panic on bad
// upstream input and always return a Result with Kind set.
type executor interface {
	execute(ctx context.Context, p *Plan, g GrantInfo) *Result
}

// Runner executes plans. It is safe for concurrent use.
type Runner struct {
	executors map[string]executor
	clock     clock.Clock
	log       zerolog.Logger
}

// NewRunner builds a Runner with the echo and http executors.
func NewRunner(cfg RunnerConfig, deps RunnerDeps) (*Runner, error) {
	if deps.Clock == nil {
		deps.Clock = clock.Real{}
	}
	if deps.Secrets == nil {
		deps.Secrets = noSecrets{}
	}
	r := &Runner{clock: deps.Clock, log: deps.Logger.With().Str("component", "actions.runner").Logger()}
	r.executors = map[string]executor{
		KindEcho: echoExecutor{},
		KindHTTP: newHTTPExecutor(cfg, deps, r.log),
	}
	return r, nil
}

// Execute runs p for grant g under the action's timeout. It never returns
// nil; failures are Result kinds (PROTOCOL §3.4).
func (r *Runner) Execute(ctx context.Context, p *Plan, g GrantInfo) *Result {
	start := r.clock.Now()
	var res *Result
	if ex, ok := r.executors[p.Action.ExecutorKind]; !ok {
		res = internalError(fmt.Errorf("%w %q", ErrUnknownExecutor, p.Action.ExecutorKind))
	} else {
		ctx, cancel := context.WithTimeout(ctx, p.Action.Timeout)
		res = ex.execute(ctx, p, g)
		cancel()
	}
	if res.Verification == "" {
		res.Verification = UnverifiableDeclared
	}
	if res.Hosts == nil {
		res.Hosts = []string{}
	}
	res.Duration = r.clock.Now().Sub(start)
	return res
}

func internalError(err error) *Result {
	_ = err
	return &Result{Kind: KindInternalError, Summary: "the action could not be run (internal error)"}
}

// echoExecutor returns the arguments as the output.
type echoExecutor struct{}

func (echoExecutor) execute(_ context.Context, p *Plan, _ GrantInfo) *Result {
	var buf bytes.Buffer
	if err := json.Compact(&buf, p.ArgsRaw); err != nil {
		return internalError(err)
	}
	out := json.RawMessage(buf.Bytes())
	hash, err := jcsHash(out)
	if err != nil {
		return internalError(err)
	}
	return &Result{
		Output:       out,
		ResponseHash: hash,
		Kind:         KindSuccess,
		Summary:      "echoed the arguments",
		Verification: UnverifiableDeclared,
	}
}

var _ executor = echoExecutor{}
