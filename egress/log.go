package egress

import (
	"context"
	"strings"

	"github.com/rs/zerolog"
)

// Canonical decision log line: one per decision, message logMessage, at Info
// for allow, Warn for deny and Error for failures. Field names are part of the
// operator interface.
const (
	logMessage = "egress_decision"

	LogFieldDecision   = "decision"    // DecisionAllow, DecisionDeny or DecisionError
	LogFieldReason     = "reason"      // one of the Reason* codes
	LogFieldDetail     = "detail"      // human-readable specifics (address, range)
	LogFieldHost       = "host"        // normalised host, or the raw input if it did not parse
	LogFieldPort       = "port"        // target port
	LogFieldNetwork    = "network"     // tcp, tcp4, tcp6
	LogFieldAddrs      = "resolved"    // every address the name resolved to
	LogFieldDialed     = "dialed"      // the checked address the connection went to
	LogFieldAllowCIDR  = "allow_cidr"  // test-only allow range that lifted a deny
	LogFieldClient     = "client"      // proxy client address, when the dial came through Proxy
	LogFieldProxyVerb  = "proxy_verb"  // CONNECT or the forwarded HTTP method
	LogFieldDurationMS = "duration_ms" // time the decision took, from the injected clock
	LogFieldError      = "error"       // cause of a failure
)

// Decisions, the values of LogFieldDecision and the metric's decision label.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
	DecisionError = "error"
)

// Reasons, the values of LogFieldReason, DeniedError.Reason and the metric's
// reason label. The set is closed so the metric stays low-cardinality.
const (
	ReasonAllowed          = "allowed"
	ReasonInvalidHost      = "invalid_host"
	ReasonNonCanonicalHost = "non_canonical_host"
	ReasonNotAllowlisted   = "not_allowlisted"
	ReasonPortNotAllowed   = "port_not_allowed"
	ReasonDeniedAddress    = "denied_address"
	ReasonBadNetwork       = "unsupported_network"
	ReasonBadRequest       = "bad_request"
	ReasonTooManyRedirects = "too_many_redirects"
	ReasonHTTPSDowngrade   = "https_downgrade"
	ReasonLookupFailed     = "lookup_failed"
	ReasonDialFailed       = "dial_failed"
)

// decisionEvent carries the fields of one canonical line.
type decisionEvent struct {
	decision  string
	reason    string
	detail    string
	host      string
	port      int
	network   string
	resolved  []string
	dialed    string
	allowCIDR string
	err       error
}

type clientKey struct{}

// clientInfo is what the proxy attaches to a dial's context.
type clientInfo struct {
	addr string
	verb string
}

func withClient(ctx context.Context, ci clientInfo) context.Context {
	return context.WithValue(ctx, clientKey{}, ci)
}

// stripCRLF keeps client-supplied strings on one log line.
func stripCRLF(s string) string {
	return strings.NewReplacer("\r", "", "\n", "").Replace(s)
}

func logDecision(ctx context.Context, log zerolog.Logger, durationMS float64, ev decisionEvent) {
	var e *zerolog.Event
	switch ev.decision {
	case DecisionAllow:
		e = log.Info()
	case DecisionDeny:
		e = log.Warn()
	default:
		e = log.Error()
	}
	e = e.Str(LogFieldDecision, ev.decision).
		Str(LogFieldReason, ev.reason).
		Str(LogFieldHost, stripCRLF(ev.host))
	if ev.port != 0 {
		e = e.Int(LogFieldPort, ev.port)
	}
	if ev.network != "" {
		e = e.Str(LogFieldNetwork, stripCRLF(ev.network))
	}
	if ev.detail != "" {
		e = e.Str(LogFieldDetail, stripCRLF(ev.detail))
	}
	if len(ev.resolved) > 0 {
		e = e.Strs(LogFieldAddrs, ev.resolved)
	}
	if ev.dialed != "" {
		e = e.Str(LogFieldDialed, ev.dialed)
	}
	if ev.allowCIDR != "" {
		e = e.Str(LogFieldAllowCIDR, ev.allowCIDR)
	}
	if ci, ok := ctx.Value(clientKey{}).(clientInfo); ok {
		e = e.Str(LogFieldClient, ci.addr).Str(LogFieldProxyVerb, stripCRLF(ci.verb))
	}
	if ev.err != nil {
		e = e.Str(LogFieldError, stripCRLF(ev.err.Error()))
	}
	e.Float64(LogFieldDurationMS, durationMS).Msg(logMessage)
}
