// Package events owns the gate's durable event journal: approval and
// receipt events with ids that increase per gate and survive restarts, and
// the fan-out to live readers (the admin SSE stream, webhook delivery).
//
// The journal is an append-only file of JSON lines in the state directory.
// An event is written with write(2) before Append returns, so a crash of
// the process loses nothing appended; the file is fsynced every
// SyncInterval and on Close. On open the last intact line gives the next
// id; a torn last line is ignored. Readers ask for the events after an id
// (Since): recent ones come from memory, older ones from the file, so a
// reader resuming with Last-Event-ID misses nothing still in the journal.
// The journal is trimmed to MaxAge when it grows past CompactBytes.
//
// The package never decides anything; it records what the gate did. The
// API is internal to this module and may change.
package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/latchgate/latchgate/clock"
	"github.com/rs/zerolog"
)

// Event types (PROTOCOL §6 GET /v1/events).
const (
	ApprovalRequested = "approval.requested"
	ApprovalApproved  = "approval.approved"
	ApprovalDenied    = "approval.denied"
	ApprovalExpired   = "approval.expired"
	ApprovalFailed    = "approval.failed"
	ReceiptCreated    = "receipt.created"
	WebhookTest       = "webhook.test"
)

// Event is one journal entry.
type Event struct {
	ID   int64           `json:"id"`
	Type string          `json:"type"`
	At   time.Time       `json:"at"`
	Data json.RawMessage `json:"data"`
}

// Config configures a Journal.
type Config struct {
	// Path is the journal file. Empty: memory only (tests, no durability).
	Path string
	// SyncInterval is how often the file is fsynced. Default: 200ms.
	SyncInterval time.Duration
	// Recent is how many events are kept in memory. Default: 4096.
	Recent int
	// MaxAge is how long events are kept when the file is trimmed.
	// Default: 7 days.
	MaxAge time.Duration
	// CompactBytes is the file size that triggers a trim. Default: 64 MiB.
	CompactBytes int64
}

func (c Config) withDefaults() Config {
	if c.SyncInterval == 0 {
		c.SyncInterval = 200 * time.Millisecond
	}
	if c.Recent == 0 {
		c.Recent = 4096
	}
	if c.MaxAge == 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.CompactBytes == 0 {
		c.CompactBytes = 64 << 20
	}
	return c
}

// Validate checks the configuration without changing it.
func (c Config) Validate() error {
	switch {
	case c.SyncInterval <= 0:
		return errors.New("events: sync_interval must be a positive duration such as \"200ms\"")
	case c.Recent < 1:
		return errors.New("events: recent must be at least 1")
	case c.MaxAge <= 0:
		return errors.New("events: max_age must be a positive duration such as \"168h\"")
	case c.CompactBytes < 4096:
		return errors.New("events: compact_bytes must be at least 4096")
	}
	return nil
}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("events: journal closed")

// Journal is the durable, ordered event log of one gate.
type Journal struct {
	cfg  Config
	clk  clock.Clock
	log  zerolog.Logger
	stop chan struct{}
	wg   sync.WaitGroup

	// syncMu serializes fsync and trimming. Lock order: syncMu, then mu.
	syncMu sync.Mutex

	// mu guards the fields below. No fsync happens while it is held.
	mu     sync.Mutex
	f      *os.File
	size   int64
	trimAt int64 // trim when size exceeds this: max(CompactBytes, 2 × size after the last trim)
	dirty  bool
	closed bool
	last   int64   // id of the newest event
	recent []Event // the newest Recent to 2·Recent events, oldest first
	wake   chan struct{}
}

// Open opens (or creates) the journal and starts its sync loop.
func Open(cfg Config, clk clock.Clock, log zerolog.Logger) (*Journal, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clk == nil {
		return nil, errors.New("events: a clock is required")
	}
	j := &Journal{cfg: cfg, clk: clk, log: log.With().Str("component", "events").Logger(), stop: make(chan struct{}), wake: make(chan struct{})}
	if cfg.Path != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
			return nil, fmt.Errorf("events: %w", err)
		}
		if err := j.load(); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("events: open journal: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("events: %w", err)
		}
		j.f, j.size = f, st.Size()
		j.wg.Add(1)
		go j.loop()
	}
	return j, nil
}

// load reads the journal into recent and sets last, and cuts a torn last
// line off so that the next append starts on a line of its own.
func (j *Journal) load() error {
	if err := scan(j.cfg.Path, func(e Event) bool {
		j.remember(e)
		return true
	}); err != nil {
		return err
	}
	b, err := os.ReadFile(j.cfg.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("events: read journal: %w", err)
	}
	if n := len(b); n > 0 && b[n-1] != '\n' {
		keep := bytes.LastIndexByte(b, '\n') + 1
		j.log.Warn().Int("bytes", n-keep).Msg("events: cutting torn last journal line")
		if err := os.Truncate(j.cfg.Path, int64(keep)); err != nil {
			return fmt.Errorf("events: truncate torn line: %w", err)
		}
	}
	return nil
}

// scan calls fn for each intact line of the file in order until fn
// returns false. A missing file is empty; a torn or corrupt line is skipped.
func scan(path string, fn func(Event) bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("events: open journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if bytes.HasSuffix(line, []byte{'\n'}) {
			var e Event
			if json.Unmarshal(line, &e) == nil && e.ID > 0 {
				if !fn(e) {
					return nil
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("events: read journal: %w", err)
		}
	}
}

// remember appends e to the in-memory window; callers hold mu (or own j).
func (j *Journal) remember(e Event) {
	if e.ID <= j.last {
		return
	}
	j.last = e.ID
	j.recent = append(j.recent, e)
	// Keep between Recent and 2·Recent events: trimming only when the
	// window doubles makes each append O(1) amortised (trimming to exactly
	// Recent on every append copied the whole window per event). Readers
	// copy under mu, so compacting in place is safe.
	if len(j.recent) >= 2*j.cfg.Recent {
		n := copy(j.recent, j.recent[len(j.recent)-j.cfg.Recent:])
		clear(j.recent[n:])
		j.recent = j.recent[:n]
	}
}

// Append records an event of type typ with data (marshalled to JSON) and
// returns it with its id.
func (j *Journal) Append(typ string, data any) (Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("events: encode %s: %w", typ, err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return Event{}, ErrClosed
	}
	e := Event{ID: j.last + 1, Type: typ, At: j.clk.Now().UTC(), Data: raw}
	if j.f != nil {
		line, err := json.Marshal(e)
		if err != nil {
			return Event{}, err
		}
		line = append(line, '\n')
		if _, err := j.f.Write(line); err != nil {
			return Event{}, fmt.Errorf("events: append: %w", err)
		}
		j.size += int64(len(line))
		j.dirty = true
	}
	j.remember(e)
	close(j.wake)
	j.wake = make(chan struct{})
	return e, nil
}

// Last returns the id of the newest event (0 if none).
func (j *Journal) Last() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last
}

// Since returns up to limit events with id > after, oldest first, and a
// channel closed at the next Append (to wait on when none were returned).
func (j *Journal) Since(after int64, limit int) ([]Event, <-chan struct{}, error) {
	j.mu.Lock()
	wake := j.wake
	if after >= j.last {
		j.mu.Unlock()
		return nil, wake, nil
	}
	if len(j.recent) > 0 && after+1 >= j.recent[0].ID {
		var out []Event
		for _, e := range j.recent {
			if e.ID > after {
				out = append(out, e)
				if len(out) == limit {
					break
				}
			}
		}
		j.mu.Unlock()
		return out, wake, nil
	}
	path := j.cfg.Path
	j.mu.Unlock()
	if path == "" {
		return nil, wake, nil
	}
	// Older than the memory window: read the file.
	var out []Event
	err := scan(path, func(e Event) bool {
		if e.ID > after {
			out = append(out, e)
		}
		return len(out) < limit
	})
	return out, wake, err
}

func (j *Journal) loop() {
	defer j.wg.Done()
	t := time.NewTicker(j.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-t.C:
			if err := j.Sync(); err != nil {
				j.log.Error().Err(err).Msg("events: sync")
			}
			j.mu.Lock()
			big := j.needsTrimLocked()
			j.mu.Unlock()
			if big {
				if err := j.trim(); err != nil {
					j.log.Error().Err(err).Msg("events: trim failed")
				}
			}
		}
	}
}

// Sync fsyncs the journal file if anything was appended since the last one.
func (j *Journal) Sync() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	f, dirty := j.f, j.dirty
	j.dirty = false
	j.mu.Unlock()
	if f == nil || !dirty {
		return nil
	}
	if err := f.Sync(); err != nil {
		j.mu.Lock()
		j.dirty = true
		j.mu.Unlock()
		return fmt.Errorf("events: fsync: %w", err)
	}
	return nil
}

// needsTrimLocked reports whether the journal is due for a trim: past
// CompactBytes and past twice its size after the last trim, so a journal
// whose events are all younger than MaxAge is not rewritten every
// SyncInterval. j.mu must be held.
func (j *Journal) needsTrimLocked() bool {
	return j.size > max(j.cfg.CompactBytes, j.trimAt)
}

// trim rewrites the journal without events older than MaxAge (the newest
// event is always kept, so ids never go back). The kept events stream to
// the new file; they are never all held in memory.
func (j *Journal) trim() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	cutoff := j.clk.Now().Add(-j.cfg.MaxAge)
	j.mu.Lock()
	last := j.last
	j.mu.Unlock()
	tmp := j.cfg.Path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("events: trim: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	var kept int64
	var werr error
	err = scan(j.cfg.Path, func(e Event) bool {
		if e.ID > last {
			return false
		}
		if e.At.After(cutoff) || e.ID == last {
			b, _ := json.Marshal(e)
			n, err := w.Write(append(b, '\n'))
			kept += int64(n)
			if err != nil {
				werr = err
				return false
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("events: trim: %w", err)
	}
	j.mu.Lock()
	// Events appended since the scan go to the new file too.
	var tail bytes.Buffer
	for _, e := range j.recent {
		if e.ID > last {
			b, _ := json.Marshal(e)
			tail.Write(append(b, '\n'))
		}
	}
	_, werr = f.Write(tail.Bytes())
	if werr == nil {
		werr = os.Rename(tmp, j.cfg.Path)
	}
	if werr != nil {
		j.mu.Unlock()
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("events: trim: %w", werr)
	}
	old := j.f
	j.f, j.size, j.dirty = f, kept+int64(tail.Len()), true
	j.trimAt = 2 * j.size
	j.mu.Unlock()
	old.Close()
	return nil
}

// Close stops the sync loop and fsyncs and closes the file. Idempotent.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	close(j.stop)
	j.wg.Wait()
	err := j.Sync()
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	return err
}
