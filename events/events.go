// Package events owns the gate's durable event journal: approval and
// receipt events with ids that increase per gate and survive restarts, and
// the fan-out to live readers (the admin SSE stream, webhook delivery).
//
// The journal is an append-only file of JSON lines in the state directory.
// Append encodes an event into a buffer in memory; the buffer is written
// to the file (one write(2)) every SyncInterval just before the fsync,
// once it holds 64 KiB, before a reader is given an event (Since), before
// a trim and on Close. Events are notifications, not evidence (receipts
// and audit records are in the ledger): a crash of the process loses at
// most the events appended since the last write that no reader has seen,
// as a power loss already lost the unsynced tail. An event a reader has
// seen has reached the kernel, so its id is never reissued after a crash
// of the process and a reader resuming with Last-Event-ID misses nothing.
// On open the last intact line gives the next id; a torn last line is
// ignored. Readers ask for the events after an id (Since): recent ones
// come from memory, older ones from the file. The journal is trimmed to
// MaxAge, and to at most MaxBytes, when it grows past CompactBytes: a
// reader further behind than that misses the events trimmed.
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
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

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
	// MaxBytes is the most a trim keeps: when the events within MaxAge
	// take more, the oldest of them go too, so the file stays under
	// 2 × MaxBytes at any event rate (a receipt.created per execute is
	// ≈ 100 GB a week at 1,000 executes/s). Default: 512 MiB.
	MaxBytes int64
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
	if c.MaxBytes == 0 {
		c.MaxBytes = 512 << 20
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
	case c.MaxBytes < c.CompactBytes:
		return errors.New("events: max_bytes must be at least compact_bytes")
	}
	return nil
}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("events: journal closed")

// flushBytes is how many buffered bytes make Append write them at once.
const flushBytes = 64 << 10

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
	mu      sync.Mutex
	f       *os.File
	buf     []byte // encoded events not yet written to f, oldest first
	size    int64  // bytes in the journal, buf included
	trimAt  int64  // trim when size exceeds this: max(CompactBytes, 2 × size after the last trim)
	dirty   bool   // written to f since the last fsync
	closed  bool
	werr    error   // the last write failed: Append writes through until one succeeds
	last    int64   // id of the newest event
	flushed int64   // id of the newest event written to f; Since returns none newer
	recent  []Event // the newest Recent to 2·Recent events, oldest first
	wake    chan struct{}

	afterScan func() // test hook: runs between trim's scan and its swap
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
		j.flushed = j.last
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
	size, keep, err := tornTail(j.cfg.Path)
	if err != nil {
		return fmt.Errorf("events: read journal: %w", err)
	}
	if keep < size {
		j.log.Warn().Int64("bytes", size-keep).Msg("events: cutting torn last journal line")
		if err := os.Truncate(j.cfg.Path, keep); err != nil {
			return fmt.Errorf("events: truncate torn line: %w", err)
		}
	}
	return nil
}

// tornTail returns the size of the file at path and how much of it ends
// with its last newline, reading backwards from the end in chunks rather
// than the whole file (up to 2 × MaxBytes). A missing file is empty.
func tornTail(path string) (size, keep int64, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size = st.Size()
	buf := make([]byte, 64<<10)
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil {
			return 0, 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return size, start + int64(i) + 1, nil
		}
		end = start
	}
	return size, 0, nil
}

// scan calls fn for each intact line of the file in order until fn
// returns false. A missing file is empty; a torn or corrupt line is skipped.
func scan(path string, fn func(Event) bool) error {
	return scanAt(path, func(e Event, _ int64) bool { return fn(e) })
}

// scanAt is scan, also passing the file offset just past each line.
func scanAt(path string, fn func(e Event, end int64) bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("events: open journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	var off int64
	for {
		line, err := r.ReadBytes('\n')
		off += int64(len(line))
		if bytes.HasSuffix(line, []byte{'\n'}) {
			var e Event
			if json.Unmarshal(line, &e) == nil && e.ID > 0 {
				if !fn(e, off) {
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

// firstEvent returns the oldest event in the journal file at path.
func firstEvent(path string) (Event, bool) {
	var first Event
	found := false
	_ = scan(path, func(e Event) bool { first, found = e, true; return false })
	return first, found
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
// returns it with its id. While the file's writes fail (seen by an earlier
// flush) Append writes through and returns the error, and the event is
// not recorded.
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
		start := len(j.buf)
		b, err := appendEvent(j.buf, e)
		if err != nil {
			j.buf = b[:start]
			return Event{}, fmt.Errorf("events: encode %s: %w", typ, err)
		}
		j.buf = b
		n := int64(len(b) - start)
		j.size += n
		if j.werr != nil || len(j.buf) >= flushBytes {
			if err := j.flushLocked(e.ID); err != nil {
				// The file was cut back to its length before the write:
				// drop this event as the unbuffered journal did. Earlier
				// events stay buffered for the next attempt.
				j.buf = j.buf[:start]
				j.size -= n
				return Event{}, err
			}
		}
	} else {
		j.flushed = e.ID
	}
	j.remember(e)
	close(j.wake)
	j.wake = make(chan struct{})
	return e, nil
}

// appendEvent appends e as one journal line: what json.Marshal(e) gives,
// then '\n'. e.Data is json.Marshal output (compact, HTML-escaped), which
// json.Marshal would copy unchanged.
func appendEvent(dst []byte, e Event) ([]byte, error) {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendInt(dst, e.ID, 10)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, e.Type)
	dst = append(dst, `,"at":"`...)
	dst, err := e.At.AppendText(dst)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `","data":`...)
	if e.Data == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, e.Data...)
	}
	return append(dst, '}', '\n'), nil
}

// appendString writes an event type as a JSON string. Types are the
// constants above; anything else goes through json.Marshal.
func appendString(dst []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// flushLocked writes buf to the file. newest is the id of the newest event
// in buf; once written, readers may see it. On failure the file is cut
// back to its length before the write (so no torn line stays between
// events), buf is kept for the next attempt and werr is set. j.mu must be
// held.
func (j *Journal) flushLocked(newest int64) error {
	if len(j.buf) == 0 {
		return nil
	}
	if n, err := j.f.Write(j.buf); err != nil {
		if n > 0 {
			if terr := j.f.Truncate(j.size - int64(len(j.buf))); terr != nil {
				j.log.Error().Err(terr).Msg("events: cutting a partial write failed; the journal may hold a torn line")
			}
		}
		j.werr = err
		return fmt.Errorf("events: append: %w", err)
	}
	if cap(j.buf) > 4*flushBytes {
		j.buf = nil
	} else {
		j.buf = j.buf[:0]
	}
	j.flushed = newest
	j.dirty = true
	if j.werr != nil {
		// Readers may be waiting for events a failed write held back.
		j.werr = nil
		close(j.wake)
		j.wake = make(chan struct{})
	}
	return nil
}

// Last returns the id of the newest event (0 if none).
func (j *Journal) Last() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last
}

// Since returns up to limit events with id > after, oldest first, and a
// channel closed at the next Append (to wait on when none were returned).
// It writes buffered events to the file first: an event is given to a
// reader only once it has reached the kernel. If that write fails, the
// events it held back are returned once a later write succeeds.
func (j *Journal) Since(after int64, limit int) ([]Event, <-chan struct{}, error) {
	j.mu.Lock()
	if after < j.last && j.flushed < j.last {
		if err := j.flushLocked(j.last); err != nil {
			j.log.Warn().Err(err).Msg("events: write before read failed; holding back unwritten events")
		}
	}
	wake := j.wake
	visible := j.flushed
	if after >= visible {
		j.mu.Unlock()
		return nil, wake, nil
	}
	if len(j.recent) > 0 && after+1 >= j.recent[0].ID {
		var out []Event
		for _, e := range j.recent {
			if e.ID > visible {
				break
			}
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

// Sync writes the buffered events and fsyncs the journal file if anything
// was appended since the last fsync. A failed write is reported here.
func (j *Journal) Sync() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	var werr error
	if j.f != nil {
		werr = j.flushLocked(j.last) // on failure, still fsync what was written
	}
	f, dirty := j.f, j.dirty
	j.dirty = false
	j.mu.Unlock()
	if f == nil || !dirty {
		return werr
	}
	if err := f.Sync(); err != nil {
		j.mu.Lock()
		j.dirty = true
		j.mu.Unlock()
		return fmt.Errorf("events: fsync: %w", err)
	}
	return werr
}

// needsTrimLocked reports whether the journal is due for a trim: past
// CompactBytes and past twice its size after the last trim, so a journal
// whose events are all younger than MaxAge is not rewritten every
// SyncInterval. j.mu must be held.
func (j *Journal) needsTrimLocked() bool {
	return j.size > max(j.cfg.CompactBytes, j.trimAt)
}

// trim rewrites the journal without events older than MaxAge, and without
// the oldest of the rest beyond MaxBytes (the newest event is always kept,
// so ids never go back). The kept events stream to the new file; they are
// never all held in memory.
func (j *Journal) trim() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	cutoff := j.clk.Now().Add(-j.cfg.MaxAge)
	j.mu.Lock()
	// The scan below reads the file: every event up to last must be in it.
	if err := j.flushLocked(j.last); err != nil {
		j.mu.Unlock()
		return fmt.Errorf("events: trim: %w", err)
	}
	last, scanned := j.last, j.size
	j.mu.Unlock()
	// Events are appended in time order: when the oldest one is within
	// MaxAge, nothing would be dropped. Rewriting the file anyway read and
	// decoded every event in it (seconds of CPU at a few hundred MB,
	// seen as latency spikes in a soak): only move the next trim on.
	if first, ok := firstEvent(j.cfg.Path); ok && first.At.After(cutoff) && scanned <= j.cfg.MaxBytes {
		j.mu.Lock()
		j.trimAt = 2 * j.size
		j.mu.Unlock()
		return nil
	}
	tmp := j.cfg.Path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("events: trim: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	var kept int64
	var werr error
	dropTo := scanned - j.cfg.MaxBytes // lines starting before this go
	var start int64                    // where the current line starts
	err = scanAt(j.cfg.Path, func(e Event, end int64) bool {
		if e.ID > last {
			return false
		}
		keep := (e.At.After(cutoff) && start >= dropTo) || e.ID == last
		start = end
		if keep {
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
	if j.afterScan != nil {
		j.afterScan()
	}
	j.mu.Lock()
	// Events appended since the scan go to the new file too, copied byte
	// for byte from the old file (the memory window may no longer hold
	// them all: more than Recent can arrive during a long scan).
	var tailN int64
	werr = j.flushLocked(j.last)
	if werr == nil {
		tailN, werr = copyRange(f, j.cfg.Path, scanned, j.size)
	}
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
	j.flushed = j.last
	j.f, j.size, j.dirty = f, kept+tailN, true
	j.trimAt = 2 * j.size
	j.mu.Unlock()
	old.Close()
	return nil
}

// copyRange appends bytes [from, to) of the file at path to dst.
func copyRange(dst *os.File, path string, from, to int64) (int64, error) {
	src, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	n, err := io.Copy(dst, io.NewSectionReader(src, from, to-from))
	if err == nil && n != to-from {
		err = fmt.Errorf("copied %d of %d bytes", n, to-from)
	}
	return n, err
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
