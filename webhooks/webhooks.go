// Package webhooks owns outbound webhook delivery (PROTOCOL §7): it turns
// events from the gate's journal into deliveries kept in a durable outbox,
// signs each attempt afresh, and retries with exponential backoff and
// jitter until the receiver answers 2xx or the attempts run out.
//
// Deliveries are at least once: a receiver de-duplicates on the
// Latchgate-Webhook-Id header, which is derived from (endpoint, event id)
// and so stays the same across retries and across a crash that re-enqueues
// an event. The outbox (outbox.json: a cursor into the event journal plus
// every delivery) is rewritten to a temp file and renamed into place, mode
// 0600, after every change; on start the journal is re-read from the
// cursor, so an event that reached the journal file before a crash is still
// delivered. The journal writes events to its file before any reader (this
// loop included) sees them, and at least every sync interval; a crash can
// lose only events appended since then that nobody had read.
//
// webhooks never dials an address the egress package has not checked:
// every request goes through an egress.Dialer restricted to the endpoint's
// own host and port, and redirects are not followed. The API is internal
// to this module and may change.
package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latchgate/latchgate/atomicfile"
	"github.com/latchgate/latchgate/clock"
	"github.com/latchgate/latchgate/egress"
	"github.com/latchgate/latchgate/events"
	"github.com/rs/zerolog"
)

// Header names (PROTOCOL §7).
const (
	HeaderID        = "Latchgate-Webhook-Id"
	HeaderSignature = "Latchgate-Signature"
)

// Delivery states.
const (
	StatePending   = "pending"
	StateDelivered = "delivered"
	StateFailed    = "failed"
)

// ErrUnknownEndpoint: Test was given a URL that is not configured.
var ErrUnknownEndpoint = errors.New("webhooks: no such endpoint configured")

// Endpoint is one configured receiver (config `webhooks: [{url, secret, events}]`).
type Endpoint struct {
	// URL is the http(s) URL deliveries are POSTed to. Required.
	URL string `yaml:"url" json:"url"`
	// Secret keys the HMAC-SHA256 signature. Required, at least 16 bytes.
	Secret string `yaml:"secret" json:"-"`
	// Events filters the event types sent; empty means all.
	Events []string `yaml:"events" json:"events"`
}

// Config configures a Service.
type Config struct {
	// Endpoints are the receivers. None: the service only records nothing.
	Endpoints []Endpoint
	// Dir holds outbox.json. Required.
	Dir string
	// Timeout bounds one attempt. Default: 10s.
	Timeout time.Duration
	// MaxAttempts is the number of attempts before a delivery fails.
	// Default: 12.
	MaxAttempts int
	// BaseBackoff is the wait before the second attempt; it doubles per
	// attempt up to MaxBackoff, and each wait is drawn uniformly from its
	// upper half (jitter). Default: 2s.
	BaseBackoff time.Duration
	// MaxBackoff caps the wait between attempts. Default: 1h.
	MaxBackoff time.Duration
	// Retention is how long finished deliveries stay queryable. Default: 168h.
	Retention time.Duration
	// MaxFinished is the most finished deliveries kept (the newest), so
	// the outbox, rewritten on every save, stays bounded at any event
	// rate. Default: 10,000.
	MaxFinished int
}

func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 12
	}
	if c.BaseBackoff == 0 {
		c.BaseBackoff = 2 * time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Hour
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.MaxFinished == 0 {
		c.MaxFinished = 10_000
	}
	return c
}

// Validate checks the configuration without changing it.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("webhooks: an outbox directory is required")
	}
	if c.Timeout < 0 || c.BaseBackoff < 0 || c.MaxBackoff < 0 || c.Retention < 0 || c.MaxAttempts < 0 {
		return errors.New("webhooks: durations and max_attempts must be positive, like \"2s\"")
	}
	if c.MaxFinished < 0 {
		return errors.New("webhooks: max_finished must be positive")
	}
	seen := map[string]bool{}
	for i, e := range c.Endpoints {
		if _, err := parseEndpointURL(e.URL); err != nil {
			return fmt.Errorf("webhooks[%d].url: %w (want an http(s) URL of a public host)", i, err)
		}
		if len(e.Secret) < 16 {
			return fmt.Errorf("webhooks[%d].secret must be at least 16 characters", i)
		}
		if seen[e.URL] {
			return fmt.Errorf("webhooks[%d].url is listed twice", i)
		}
		seen[e.URL] = true
		for _, t := range e.Events {
			if !slices.Contains(eventTypes(), t) {
				return fmt.Errorf("webhooks[%d].events: unknown event %q (want one of %v)", i, t, eventTypes())
			}
		}
	}
	return nil
}

func eventTypes() []string {
	return []string{events.ApprovalRequested, events.ApprovalApproved, events.ApprovalDenied,
		events.ApprovalExpired, events.ApprovalFailed, events.ReceiptCreated}
}

// target is an endpoint's checked host and port.
type target struct {
	host egress.Host
	port int
}

// parseEndpointURL checks a webhook URL like an action's target: a host
// that can never be approved (single-label, .local, ...) is refused here;
// IP literals are left to the dialer, which refuses special-purpose
// addresses unless egress allow_cidrs lifts them.
func parseEndpointURL(raw string) (target, error) {
	h, port, _, err := egress.HostFromURL(raw)
	if err != nil {
		return target{}, err
	}
	if !h.IsIP() && h.NeverApprovable() {
		return target{}, errors.New("the host is an internal or single-label name")
	}
	return target{h, port}, nil
}

// Source is the event journal.
type Source interface {
	Since(after int64, limit int) ([]events.Event, <-chan struct{}, error)
	// Last is the id of the newest event (0 if none).
	Last() int64
}

// Deps are the Service's collaborators; all are required but Logger.
type Deps struct {
	Source Source
	Dialer *egress.Dialer
	Clock  clock.Clock
	Logger zerolog.Logger
}

// Delivery is one event for one endpoint.
type Delivery struct {
	ID            string    `json:"id"`
	URL           string    `json:"url"`
	EventID       int64     `json:"event_id"`
	EventType     string    `json:"event_type"`
	State         string    `json:"state"`
	Attempts      int       `json:"attempts"`
	LastStatus    int       `json:"last_status,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
	// Body is the exact payload, identical on every attempt.
	Body json.RawMessage `json:"body"`
}

type outboxFile struct {
	Cursor     int64       `json:"cursor"`
	Deliveries []*Delivery `json:"deliveries"`
}

type endpoint struct {
	Endpoint
	client *http.Client
}

// Service delivers webhooks.
type Service struct {
	cfg  Config
	deps Deps
	log  zerolog.Logger
	eps  map[string]*endpoint
	path string
	kick chan struct{}

	// mu guards the fields below. No network I/O or fsync under it; saving
	// is serialised by saveMu (lock order: saveMu, then mu).
	saveMu   sync.Mutex
	mu       sync.Mutex
	cursor   int64
	byID     map[string]*Delivery
	inflight map[string]bool
	busy     map[string]bool // endpoint URLs a Run worker is delivering to

	dirty atomic.Bool  // the outbox changed since it was last saved
	saves atomic.Int64 // outbox writes so far
}

// New builds a Service and loads its outbox. Call it before the journal
// takes new events (as serve does): a journal that ends before the outbox
// cursor is read again from where it ends at this call.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Source == nil || deps.Dialer == nil || deps.Clock == nil {
		return nil, errors.New("webhooks: a source, a dialer and a clock are required")
	}
	s := &Service{cfg: cfg, deps: deps, log: deps.Logger.With().Str("component", "webhooks").Logger(),
		eps: map[string]*endpoint{}, path: filepath.Join(cfg.Dir, "outbox.json"), kick: make(chan struct{}, 1),
		byID: map[string]*Delivery{}, inflight: map[string]bool{}, busy: map[string]bool{}}
	for _, e := range cfg.Endpoints {
		t, _ := parseEndpointURL(e.URL)
		al := (&egress.Allowlist{}).With(egress.ExactRule(t.host, t.port))
		c := deps.Dialer.Client(al, cfg.Timeout)
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		s.eps[e.URL] = &endpoint{Endpoint: e, client: c}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("webhooks: read outbox: %w", err)
	default:
		var f outboxFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("webhooks: outbox %s is corrupt: %v", s.path, err)
		}
		s.cursor = f.Cursor
		for _, d := range f.Deliveries {
			s.byID[d.ID] = d
		}
	}
	// The journal is fsynced every sync interval, the outbox on every
	// save: after a power loss the journal can end before the cursor and
	// give the lost events' ids to new events. Read those from where the
	// journal ends (deliveryID tells them from the lost ones).
	if last := deps.Source.Last(); s.cursor > last {
		s.log.Warn().Int64("cursor", s.cursor).Int64("journal_last", last).
			Msg("the event journal ends before the webhook outbox cursor (events lost in a power loss?); re-reading from its end")
		s.cursor = last
	}
	return s, nil
}

// Sign returns the Latchgate-Signature value for body at time t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// deliveryID is stable for (endpoint, event). The event's time is part of
// it: an id the journal reissues after a power loss names another event.
func deliveryID(url string, e events.Event) string {
	h := sha256.Sum256([]byte(url + "\x00" + strconv.FormatInt(e.ID, 10) + "\x00" + strconv.FormatInt(e.At.UnixNano(), 10)))
	return "whd_" + hex.EncodeToString(h[:16])
}

type payload struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	EventID   int64           `json:"event_id"`
	CreatedAt string          `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

func (s *Service) newDelivery(url string, e events.Event, id string) *Delivery {
	body, _ := json.Marshal(payload{ID: id, Type: e.Type, EventID: e.ID, CreatedAt: e.At.UTC().Format(time.RFC3339), Data: e.Data})
	now := s.deps.Clock.Now()
	return &Delivery{ID: id, URL: url, EventID: e.ID, EventType: e.Type, State: StatePending, CreatedAt: now, NextAttemptAt: now, Body: body}
}

// enqueue turns journal events after the cursor into deliveries.
func (s *Service) enqueue() (<-chan struct{}, error) {
	for {
		s.mu.Lock()
		after := s.cursor
		s.mu.Unlock()
		evs, wake, err := s.deps.Source.Since(after, 256)
		if err != nil || len(evs) == 0 {
			return wake, err
		}
		s.mu.Lock()
		for _, e := range evs {
			for url, ep := range s.eps {
				if len(ep.Events) > 0 && !slices.Contains(ep.Events, e.Type) {
					continue
				}
				id := deliveryID(url, e)
				if _, ok := s.byID[id]; !ok {
					s.byID[id] = s.newDelivery(url, e, id)
				}
			}
			s.cursor = e.ID
		}
		s.dirty.Store(true)
		s.mu.Unlock()
	}
}

// save writes the outbox atomically (temp file, fsync, rename).
func (s *Service) save() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	s.dirty.Store(false) // changes from here on are for the next save
	now := s.deps.Clock.Now()
	f := outboxFile{Cursor: s.cursor}
	var finished []*Delivery
	for id, d := range s.byID {
		if d.State != StatePending {
			if now.Sub(d.FinishedAt) > s.cfg.Retention {
				delete(s.byID, id)
				continue
			}
			finished = append(finished, d)
		}
	}
	if over := len(finished) - s.cfg.MaxFinished; over > 0 {
		slices.SortFunc(finished, func(a, b *Delivery) int {
			if c := a.FinishedAt.Compare(b.FinishedAt); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		for _, d := range finished[:over] {
			delete(s.byID, d.ID)
		}
	}
	for _, d := range s.byID {
		c := *d
		f.Deliveries = append(f.Deliveries, &c)
	}
	s.mu.Unlock()
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.path, b, 0o600); err != nil {
		s.dirty.Store(true)
		return fmt.Errorf("webhooks: save outbox: %w", err)
	}
	s.saves.Add(1)
	return nil
}

// backoff is the wait after the n-th failed attempt: BaseBackoff·2^(n-1)
// capped at MaxBackoff, drawn uniformly from its upper half.
func (s *Service) backoff(n int) time.Duration {
	d := s.cfg.BaseBackoff
	for i := 1; i < n && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// attempt POSTs one delivery and records the outcome in memory; the
// caller saves the outbox.
func (s *Service) attempt(ctx context.Context, id string) {
	s.mu.Lock()
	d, ok := s.byID[id]
	if !ok || d.State != StatePending || s.inflight[id] {
		s.mu.Unlock()
		return
	}
	s.inflight[id] = true
	s.mu.Unlock()
	s.runAttempt(ctx, id)
}

// runAttempt makes one attempt of a delivery the caller marked in flight
// and records the outcome in memory; the caller saves the outbox.
func (s *Service) runAttempt(ctx context.Context, id string) {
	s.mu.Lock()
	d := s.byID[id]
	url, body := d.URL, d.Body
	ep := s.eps[url]
	s.mu.Unlock()

	status, errMsg := 0, ""
	if ep == nil {
		errMsg = "endpoint no longer configured"
	} else {
		status, errMsg = s.post(ctx, ep, id, body)
	}
	now := s.deps.Clock.Now()
	s.mu.Lock()
	delete(s.inflight, id)
	s.dirty.Store(true)
	d.Attempts++
	d.LastStatus, d.LastError = status, errMsg
	switch {
	case status >= 200 && status < 300:
		d.State, d.FinishedAt, d.NextAttemptAt = StateDelivered, now, time.Time{}
	case d.Attempts >= s.cfg.MaxAttempts || ep == nil:
		d.State, d.FinishedAt, d.NextAttemptAt = StateFailed, now, time.Time{}
	default:
		d.NextAttemptAt = now.Add(s.backoff(d.Attempts))
	}
	st, att := d.State, d.Attempts
	s.mu.Unlock()
	ev := s.log.Info()
	if st != StateDelivered {
		ev = s.log.Warn()
	}
	ev.Str("delivery_id", id).Str("state", st).Int("attempt", att).Int("status", status).Str("error", errMsg).Msg("webhook attempt")
}

// saveInterval is the shortest time between two outbox saves by Run. The
// outbox is rewritten whole on every save, so saving per event or per
// attempt cost O(outbox) per event. What a crash loses by waiting is
// harmless: new deliveries are made again from the event journal (their
// ids are stable) and an outcome not saved only means the delivery is
// attempted again (at least once; receivers de-duplicate on the id).
const saveInterval = time.Second

// saveOrLog saves the outbox and logs a failure.
func (s *Service) saveOrLog() {
	if err := s.save(); err != nil {
		s.log.Error().Err(err).Msg("webhook outbox not saved")
	}
}

// post sends one signed attempt; it answers the HTTP status or an error
// summary safe to show operators.
func (s *Service) post(ctx context.Context, ep *endpoint, id string, body []byte) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, "bad request"
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "latchgate-webhooks")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderSignature, Sign(ep.Secret, s.deps.Clock.Now(), body))
	resp, err := ep.client.Do(req)
	if err != nil {
		var de *egress.DeniedError
		if errors.As(err, &de) {
			return 0, "egress denied: " + de.Reason
		}
		return 0, "transport error"
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, "receiver answered " + strconv.Itoa(resp.StatusCode)
	}
	return resp.StatusCode, ""
}

// due claims the endpoints with pending deliveries whose time has come
// and no worker yet, and returns those deliveries by endpoint URL, and the
// next time one will be due.
func (s *Service) due(now time.Time) (map[string][]string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byURL := map[string][]string{}
	var next time.Time
	for id, d := range s.byID {
		if d.State != StatePending || s.inflight[id] || s.busy[d.URL] {
			continue
		}
		if !d.NextAttemptAt.After(now) {
			byURL[d.URL] = append(byURL[d.URL], id)
		} else if next.IsZero() || d.NextAttemptAt.Before(next) {
			next = d.NextAttemptAt
		}
	}
	for url, ids := range byURL {
		s.busy[url] = true
		slices.Sort(ids)
	}
	return byURL, next
}

// Run enqueues and delivers until ctx ends. Each endpoint's due
// deliveries are attempted by a worker of its own, one at a time, so a
// receiver that hangs until the timeout delays only its own deliveries.
func (s *Service) Run(ctx context.Context) error {
	if len(s.eps) == 0 {
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		if s.dirty.Load() {
			s.saveOrLog()
		}
	}()
	var lastSave time.Time
	for {
		wake, err := s.enqueue()
		if err != nil {
			s.log.Error().Err(err).Msg("webhook enqueue failed; retrying")
		}
		if now := s.deps.Clock.Now(); s.dirty.Load() && now.Sub(lastSave) >= saveInterval {
			s.saveOrLog()
			lastSave = now
		}
		byURL, next := s.due(s.deps.Clock.Now())
		for url, ids := range byURL {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, id := range ids {
					if ctx.Err() != nil {
						break
					}
					s.attempt(ctx, id)
				}
				s.mu.Lock()
				delete(s.busy, url)
				s.mu.Unlock()
				select {
				case s.kick <- struct{}{}:
				default:
				}
			}()
		}
		wait := 250 * time.Millisecond
		if !next.IsZero() {
			wait = min(max(next.Sub(s.deps.Clock.Now()), time.Millisecond), wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
		case <-s.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// Deliveries implements the admin listing, newest first.
func (s *Service) Deliveries(limit int) ([]Delivery, error) {
	s.mu.Lock()
	out := make([]Delivery, 0, len(s.byID))
	for _, d := range s.byID {
		out = append(out, *d)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Delivery) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		if a.EventID != b.EventID {
			return int(b.EventID - a.EventID)
		}
		return bytes.Compare([]byte(b.ID), []byte(a.ID))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Test sends a webhook.test event to url now (one attempt; retried by Run
// if it fails) and returns the delivery.
func (s *Service) Test(ctx context.Context, url string) (*Delivery, error) {
	if _, ok := s.eps[url]; !ok {
		return nil, ErrUnknownEndpoint
	}
	var rb [8]byte
	for i := range rb {
		rb[i] = byte(rand.UintN(256))
	}
	id := "whd_test_" + hex.EncodeToString(rb[:])
	e := events.Event{ID: 0, Type: events.WebhookTest, At: s.deps.Clock.Now(), Data: json.RawMessage(`{"test":true}`)}
	// Inserted already in flight, so the delivery loop cannot take the
	// first attempt from under this call.
	s.mu.Lock()
	s.byID[id] = s.newDelivery(url, e, id)
	s.inflight[id] = true
	s.mu.Unlock()
	if err := s.save(); err != nil {
		s.mu.Lock()
		delete(s.inflight, id)
		s.mu.Unlock()
		return nil, err
	}
	s.runAttempt(ctx, id)
	s.saveOrLog()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *s.byID[id]
	return &c, nil
}
