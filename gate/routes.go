package gate

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// handlerFunc is a handler that returns its error; serve renders it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// route registers pattern on mux with the adapter.
func (g *Gate) route(mux *http.ServeMux, pattern string, h handlerFunc) {
	name := pattern
	mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.serve(w, r, name, h)
	}))
}

// statusWriter records the status for the request log line.
type statusWriter struct {
	http.ResponseWriter
	status int
	code   string
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (the event
// stream moves its write deadline forward this way).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// serve runs h and renders its error, then logs one line.
func (g *Gate) serve(w http.ResponseWriter, r *http.Request, route string, h handlerFunc) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	var err error
	if g.draining.Load() {
		err = newError(http.StatusServiceUnavailable, CodeDraining, "The gate is shutting down; retry against another gate or later.", nil)
	} else {
		err = h(sw, r)
	}
	if err != nil {
		e := writeError(sw, err)
		sw.code = e.Code
		g.logError(r, route, e)
	}
	code := sw.code
	if code == "" {
		code = "ok"
	}
	g.mets.requests.WithLabelValues(route, code).Inc()
	g.mets.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

// logError writes the canonical line for a failed request: error level at
// 5xx, warn below.
func (g *Gate) logError(r *http.Request, route string, e *Error) {
	var ev *zerolog.Event
	if e.Status >= 500 {
		ev = g.log.Error()
	} else {
		ev = g.log.Warn()
	}
	ev = ev.Str(fRoute, route).Str(fMethod, r.Method).Str(fPath, clean(r.URL.Path)).
		Int(fStatus, e.Status).Str(fCode, e.Code)
	if e.DenyReason != "" {
		ev = ev.Str(fDenyReason, clean(e.DenyReason))
	}
	if e.TraceID != "" {
		ev = ev.Str(fTraceID, e.TraceID)
	}
	if e.Err != nil {
		ev = ev.AnErr(fCause, e.Err)
	}
	p := peerFrom(r.Context())
	if p.HasCreds {
		ev = ev.Int64(fPeerUID, p.UID)
	}
	ev.Msg("request refused")
}

// Log field names, one place.
const (
	fRoute      = "route"
	fMethod     = "method"
	fPath       = "path"
	fStatus     = "status"
	fCode       = "code"
	fDenyReason = "deny_reason"
	fTraceID    = "trace_id"
	fCause      = "cause"
	fPeerUID    = "peer_uid"
	fPrincipal  = "principal"
	fAction     = "action_id"
	fDecision   = "decision"
	fLatencyMS  = "latency_ms"
	fReceiptID  = "receipt_id"
	fApprovalID = "approval_id"
	fSessionID  = "session_id"
)

// frontDoor wraps a mux: it refuses non-canonical paths with 404 (no
// redirects, no cleaning) and renders the mux's own 404/405 as JSON.
func (g *Gate) frontDoor(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if headerBytes(r.Header) > maxHeaderBytes {
			g.serve(w, r, "unknown", func(w http.ResponseWriter, _ *http.Request) error {
				w.Header().Set("Connection", "close")
				return newError(http.StatusRequestHeaderFieldsTooLarge, CodeBadRequest, "The request headers are too large.", nil)
			})
			return
		}
		if !canonicalPath(r.URL.Path) || r.URL.RawPath != "" && !canonicalPath(r.URL.RawPath) {
			g.serve(w, r, "unknown", func(http.ResponseWriter, *http.Request) error {
				return newError(http.StatusNotFound, CodeNotFound, "No such route.", nil)
			})
			return
		}
		if _, pattern := mux.Handler(r); pattern == "" {
			// Ask the mux what it would answer (404 or 405 + Allow), then
			// answer that as JSON.
			probe := &probeWriter{header: http.Header{}}
			h, _ := mux.Handler(r)
			h.ServeHTTP(probe, r)
			g.serve(w, r, "unknown", func(w http.ResponseWriter, _ *http.Request) error {
				if probe.status == http.StatusMethodNotAllowed {
					if allow := probe.header.Get("Allow"); allow != "" {
						w.Header().Set("Allow", allow)
					}
					return newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "This route does not accept that method.", nil)
				}
				return newError(http.StatusNotFound, CodeNotFound, "No such route.", nil)
			})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Header limits: the gate refuses more than maxHeaderBytes of headers with
// a JSON 431; net/http itself cuts off at hardHeaderBytes (answering its
// own plain 431 before any gate code runs).
const (
	maxHeaderBytes  = 64 << 10
	hardHeaderBytes = 256 << 10
)

func headerBytes(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// probeWriter captures a handler's status and headers, discarding the body.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header { return p.header }
func (p *probeWriter) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
func (p *probeWriter) WriteHeader(s int) {
	if p.status == 0 {
		p.status = s
	}
}

// canonicalPath reports whether p has no empty, "." or ".." segments.
func canonicalPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	if p == "/" {
		return true
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			// A trailing slash is an empty last segment: also refused.
			return false
		}
	}
	return true
}

// maxDrain is how much of an oversized body is read and discarded so the
// client sees the 413; beyond it the connection is closed.
const maxDrain = 8 << 20

// readBody reads the request body under limit. An oversized body is 413
// payload_too_large (after draining up to 8 MiB).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, maxDrain))
			if n >= maxDrain {
				w.Header().Set("Connection", "close")
			}
			return nil, newError(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "The request body is larger than this route accepts.", err)
		}
		return nil, newError(http.StatusBadRequest, CodeBadRequest, "The request body could not be read.", err)
	}
	return body, nil
}

// readJSON reads a JSON object body under the gate's cap into v:
// application/json when a body is present, strictly decoded.
func (g *Gate) readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := readBody(w, r, g.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	if err := requireJSON(r, body); err != nil {
		return err
	}
	return decodeStrict(body, v)
}

// requireJSON enforces Content-Type: application/json when a body is present.
func requireJSON(r *http.Request, body []byte) error {
	if len(body) == 0 {
		return nil
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Send the body as application/json.", nil)
	}
	return nil
}
