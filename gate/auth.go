package gate

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/latchgate/latchgate/lease"
	"github.com/latchgate/latchgate/store"
)

// maxAuthHeader caps the Authorization header (PROTOCOL §2.1).
const maxAuthHeader = 8 << 10

// caller is an authenticated request's identity.
type caller struct {
	claims  *lease.Claims
	session *store.Session
	token   string
	peer    Peer
	proof   *lease.Proof // the request's checked DPoP proof
}

// expectedHTUs returns the normalised htu values a proof for r may carry
// (PROTOCOL §1.1): never derived from Host or X-Forwarded-*.
func (g *Gate) expectedHTUs(r *http.Request) []string {
	path := r.URL.EscapedPath()
	if raw := r.RequestURI; raw != "" && raw[0] == '/' {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			raw = raw[:i]
		}
		path = raw
	}
	if g.cfg.PublicBaseURL != "" {
		return []string{lease.NormalizeHTU(strings.TrimRight(g.cfg.PublicBaseURL, "/") + path)}
	}
	p := peerFrom(r.Context())
	if p.Listener == ListenerTCP {
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if ta, ok := la.(*net.TCPAddr); ok {
				port := itoa(ta.Port)
				return []string{
					lease.NormalizeHTU("http://localhost:" + port + path),
					lease.NormalizeHTU("http://127.0.0.1:" + port + path),
				}
			}
		}
	}
	return []string{lease.NormalizeHTU("http://localhost" + path)}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// authenticate runs PROTOCOL §2.1's checks in order; the first failure wins.
// body is the whole raw request body (for bh).
func (g *Gate) authenticate(r *http.Request, body []byte) (*caller, error) {
	authz := r.Header.Get("Authorization")
	proof := r.Header.Get("DPoP")
	if authz == "" || proof == "" {
		return nil, newError(http.StatusUnauthorized, CodeMissingAuthHeader, "Send Authorization: DPoP <lease> and a DPoP proof header.", nil)
	}
	if len(authz) > maxAuthHeader {
		return nil, newError(http.StatusUnauthorized, CodeInvalidLease, "The Authorization header is too large.", nil)
	}
	token, ok := strings.CutPrefix(authz, "DPoP ")
	if !ok || token == "" {
		return nil, newError(http.StatusUnauthorized, CodeInvalidLease, "Use the DPoP authorization scheme with a lease; Bearer is refused.", nil)
	}
	if len(r.Header.Values("DPoP")) != 1 || len(r.Header.Values("Authorization")) != 1 {
		return nil, newError(http.StatusUnauthorized, CodeInvalidDPoP, "Send exactly one Authorization and one DPoP header.", nil).withDeny("multiple_headers")
	}
	claims, err := g.auth.VerifyLease(token)
	if err != nil {
		if errors.Is(err, lease.ErrLeaseExpired) {
			return nil, newError(http.StatusUnauthorized, CodeLeaseExpired, "The lease has expired; renew it or take a new one.", err)
		}
		return nil, newError(http.StatusUnauthorized, CodeInvalidLease, "The lease is not valid.", err)
	}
	var pr *lease.Proof
	for i, htu := range g.expectedHTUs(r) {
		pr, err = g.auth.VerifyProof(lease.ProofRequest{
			Proof: proof, Method: r.Method, HTU: htu, LeaseToken: token, Body: body, JKT: claims.JKT,
		})
		var pe *lease.ProofError
		if err == nil || !errors.As(err, &pe) || pe.Reason != lease.ReasonBadHTU || i > 0 {
			break
		}
	}
	if err != nil {
		reason := "malformed"
		var pe *lease.ProofError
		if errors.As(err, &pe) {
			reason = pe.Reason
		}
		return nil, newError(http.StatusUnauthorized, CodeInvalidDPoP, "The DPoP proof was refused.", err).withDeny(reason)
	}
	ctx, cancel := g.storeCtx(r.Context())
	defer cancel()
	t0 := time.Now()
	sess, err := g.st.Authenticate(ctx, store.AuthRequest{
		SessionID: claims.SessionID, JKT: pr.JKT, JTI: pr.JTI,
		ReplayExpiresAt: pr.ReplayExpiresAt, Now: g.clk.Now(),
	})
	g.mets.store.Observe(time.Since(t0).Seconds())
	switch {
	case err == nil:
	case errors.Is(err, store.ErrReplay):
		return nil, newError(http.StatusUnauthorized, CodeReplayDetected, "This DPoP proof was already used; sign a fresh one.", err)
	case errors.Is(err, store.ErrRevoked):
		return nil, newError(http.StatusUnauthorized, CodeLeaseRevoked, "The lease's session was revoked.", err)
	case errors.Is(err, store.ErrNotFound):
		return nil, newError(http.StatusUnauthorized, CodeInvalidLease, "The lease's session is unknown to this gate.", err)
	default:
		return nil, errStoreUnavailable(err)
	}
	if sess.Principal != claims.Subject {
		return nil, newError(http.StatusUnauthorized, CodeInvalidLease, "The lease does not match its session.", nil)
	}
	return &caller{claims: claims, session: sess, token: token, peer: peerFrom(r.Context()), proof: pr}, nil
}

func (e *Error) withDeny(reason string) *Error {
	e.DenyReason = reason
	return e
}
