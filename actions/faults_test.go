package actions

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// faultManifest has a short executor timeout so a hanging upstream is cut
// off by the manifest's own bound, without any caller deadline.
const faultManifest = `action_id: flaky
version: 1.0.0
executor:
  kind: http
  method: GET
  url: https://api.example.com/flaky
  timeout_seconds: 1
  max_response_bytes: 4096
egress:
  profile: proxy_allowlist
  allowed_domains: [api.example.com]
`

// An upstream that hangs, resets the connection, or sends an endless body:
// each execution ends (bounded by the manifest timeout or the response
// cap) with a clean failure kind, and memory stays bounded.
func TestUpstreamFaults(t *testing.T) {
	s := newStub(t)
	r := s.runner(t, nil)
	a := loadOne(t, faultManifest)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	tests := []struct {
		name    string
		handler http.HandlerFunc
		kind    string
	}{
		{"hang-before-headers", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}, KindTimeout},
		{"hang-mid-body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			_, _ = w.Write([]byte(`{"partial":`))
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}, KindTimeout},
		{"reset", func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
				if tc, ok := nc.NetConn().(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // close with RST
				}
			}
			_ = conn.Close()
		}, KindProviderFailure},
		{"endless-body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			chunk := []byte(strings.Repeat("x", 32<<10))
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, KindProviderFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.setHandler(tc.handler)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			done := make(chan *Result, 1)
			go func() { done <- r.Execute(context.Background(), prepareOK(t, a, `{}`), GrantInfo{ID: "g"}) }()
			var res *Result
			select {
			case res = <-done:
			case <-time.After(30 * time.Second): // a bound, not a measurement
				t.Fatalf("Execute(%s) did not end", tc.name)
			}
			runtime.ReadMemStats(&after)
			if res.Kind != tc.kind {
				t.Fatalf("Execute(%s).Kind = %s (%q) output %s, want %s", tc.name, res.Kind, res.Summary, res.Output, tc.kind)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Fatalf("Execute(%s) allocated %d MiB", tc.name, grew>>20)
			}
			if strings.Contains(res.Summary, "127.0.0.1") {
				t.Errorf("summary leaks an internal address: %q", res.Summary)
			}
		})
	}
}
