package store

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/latchgate/latchgate/atomicfile"
	"github.com/latchgate/latchgate/clock"
)

// EmbeddedConfig configures the embedded backend.
type EmbeddedConfig struct {
	// Dir holds the journal ("store.journal") and its lock file. Required;
	// created with mode 0700 if missing.
	Dir string
	// SyncInterval is how often the journal is fsynced in the background
	// (Sync and Close also fsync). Default 50ms.
	SyncInterval time.Duration
	// SweepInterval is how often expired replay entries, grant markers,
	// buckets, idempotency records, sessions and approvals are dropped
	// from memory. Default 1m.
	SweepInterval time.Duration
	// CompactBytes: once the journal grows past this many bytes, and past
	// twice the size of the last snapshot, it is rewritten as a snapshot
	// of live records. Default 64 MiB.
	CompactBytes int64
}

func (c EmbeddedConfig) withDefaults() EmbeddedConfig {
	if c.SyncInterval == 0 {
		c.SyncInterval = 50 * time.Millisecond
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Minute
	}
	if c.CompactBytes == 0 {
		c.CompactBytes = 64 << 20
	}
	return c
}

// Validate reports the first invalid field.
func (c EmbeddedConfig) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("store: embedded dir is required (a directory path)")
	case c.SyncInterval <= 0:
		return errors.New("store: embedded sync_interval must be a positive duration such as \"50ms\"")
	case c.SweepInterval <= 0:
		return errors.New("store: embedded sweep_interval must be a positive duration such as \"1m\"")
	case c.CompactBytes < 4096:
		return errors.New("store: embedded compact_bytes must be at least 4096")
	}
	return nil
}

const (
	journalName = "store.journal"
	lockName    = "store.lock"
)

// jop is one journal entry; a journal line is a JSON array of jops that
// apply together (a torn line applies none of them). Every entry carries
// absolute values, so applying a line twice is harmless.
type jop struct {
	T string         `json:"t"` // see apply
	K string         `json:"k,omitempty"`
	N int64          `json:"n,omitempty"`
	C int64          `json:"c,omitempty"`
	E time.Time      `json:"e,omitzero"`
	S *Session       `json:"s,omitempty"`
	I *IdemRecord    `json:"i,omitempty"`
	A *Approval      `json:"a,omitempty"`
	P *Standing      `json:"p,omitempty"`
	L *LearnedDomain `json:"l,omitempty"`
}

const (
	opSession   = "s"  // S: put session
	opUse       = "u"  // K: session id, N: calls used, C: cost used (cents)
	opReplay    = "r"  // K: replay key, E: expiry
	opGlobal    = "ge" // N: global epoch
	opPrincipal = "pe" // K: principal, N: epoch
	opGrant     = "g"  // K: grant id, E: expiry
	opBucket    = "b"  // K: bucket, N: value, E: expiry
	opIdem      = "i"  // K: key, I: record, E: expiry
	opIdemDel   = "id" // K: key
	opApproval  = "a"  // A: approval
	opStanding  = "p"  // P: standing approval
	opStandDel  = "pd" // K: standing approval id
	opLearned   = "l"  // L: learned domain
	opLearnDel  = "ld" // K: learned domain id
)

type expiring struct {
	n   int64
	exp time.Time
}

type idemEntry struct {
	rec *IdemRecord
	exp time.Time
}

// flushBytes is how many buffered journal bytes make a commit write them
// at once rather than wait for the next Sync.
const flushBytes = 64 << 10

// Embedded is the single-process backend: state in memory, every mutation
// appended to a journal before it becomes visible, fsynced by Sync, every
// SyncInterval and on Close.
//
// Durability invariant. The journal's content is the file f followed by
// buf: every committed line, in commit order. A line is applied to memory
// once it is in buf; buf is written to f in one write(2) by Sync (just
// before its fsync, and so by the background sync every SyncInterval), by
// a compaction (whose new journal holds every line), on Close, when it
// reaches flushBytes, and by every write-through commit. Therefore:
//
//   - When Sync returns nil, every line committed before it was called is
//     fsynced. The ledger calls Sync beside each group commit whose records
//     rest on store lines (receipts.Syncer), so nothing it acknowledges
//     rests on a line a crash can lose. A plain execute's intent is not
//     such a commit: the only line it rests on is its proof's replay entry,
//     which the gate restores from the intent at start (RestoreReplay).
//   - A write-through commit (commitLocked) has reached the kernel, with
//     every line committed before it, when it returns: a kill -9 loses
//     none of them (a power loss may lose what was not yet fsynced).
//   - A buffered commit (commitBufferedLocked) can be lost by a kill -9
//     until the next flush (at most SyncInterval later). Only per-execute
//     mutations whose caller Syncs, or commits write-through, before
//     anything that depends on them runs are buffered: BeginIdempotent,
//     SetIdempotentGrant and UseStanding (see each). Everything else,
//     Authenticate (replay entries) and Grant included, writes through.
//   - A failed write sets broken: the line being committed is refused and
//     not applied, every later mutation is refused, and Sync, Ping and
//     Close fail. Lines buffered before the failure stay applied in memory
//     but are never reported durable.
type Embedded struct {
	cfg          EmbeddedConfig
	clock        clock.Clock
	log          zerolog.Logger
	observeFsync func(time.Duration) // optional: Deps.ObserveFsync
	path         string
	lockf        *os.File
	stop         chan struct{}
	wg           sync.WaitGroup

	// syncMu serializes fsync and compaction. Lock order: syncMu, then mu.
	syncMu sync.Mutex

	// mu guards every field below. No fsync happens while it is held.
	mu         sync.Mutex
	f          *os.File // journal, opened O_APPEND
	buf        []byte   // committed lines not yet written to f, oldest first
	size       int64    // bytes in the journal, buf included
	compactAt  int64    // compact when size exceeds this: max(CompactBytes, 2 × last snapshot)
	dirty      bool     // committed since the last fsync
	broken     error    // a journal write failed: refuse further mutations
	closed     bool
	compacting bool   // a compaction is copying a snapshot
	tail       []byte // lines committed while compacting, written to the new journal

	beforeInstall func()                 // test hook: runs after the snapshot is written, before the install
	duringCatchUp func()                 // test hook: runs in each catch-up round, after it took the tail
	syncDir       func(dir string) error // atomicfile.SyncDir; a test may make it fail

	sessions        map[string]*Session
	byPrincipal     map[string]map[string]struct{} // principal → session ids
	replay          *expirySet                     // hashKey(jkt, jti) → expiry
	globalEpoch     int64
	principalEpochs map[string]int64
	grants          *expirySet // consumed grant id → expiry
	buckets         map[string]expiring
	idem            map[string]idemEntry
	approvals       map[string]*Approval
	// pending holds the approvals whose stored state is pending, by
	// session id then approval id. A hold, the expiry sweep and the
	// pending list read these only, not the 7 days of decided approvals
	// kept beside them: with 100k kept, a scan of them all under mu cost
	// every hold 8 ms and the sweep 50 ms (BenchmarkEmbedded*Approval*).
	pending  map[string]map[string]*Approval
	standing map[string]*Standing
	learned  map[string]*LearnedDomain
}

// OpenEmbedded opens (or creates) the store in cfg.Dir, replays and compacts
// its journal and starts the background sync and sweep loops. Only one
// process may hold a directory open.
func OpenEmbedded(cfg EmbeddedConfig, deps Deps) (*Embedded, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := deps.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: state dir: %w", err)
	}
	lockf, err := os.OpenFile(filepath.Join(cfg.Dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock file: %w", err)
	}
	if err := unix.Flock(int(lockf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lockf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: state dir %s is in use by another latchgate process", cfg.Dir)
		}
		return nil, fmt.Errorf("store: lock %s: %w", cfg.Dir, err)
	}
	e := &Embedded{
		cfg:             cfg,
		clock:           deps.Clock,
		log:             deps.Logger.With().Str("component", "store").Logger(),
		observeFsync:    deps.ObserveFsync,
		syncDir:         atomicfile.SyncDir,
		path:            filepath.Join(cfg.Dir, journalName),
		lockf:           lockf,
		stop:            make(chan struct{}),
		sessions:        map[string]*Session{},
		byPrincipal:     map[string]map[string]struct{}{},
		replay:          newExpirySet(formHex),
		principalEpochs: map[string]int64{},
		grants:          newExpirySet(formUUID),
		buckets:         map[string]expiring{},
		idem:            map[string]idemEntry{},
		approvals:       map[string]*Approval{},
		pending:         map[string]map[string]*Approval{},
		standing:        map[string]*Standing{},
		learned:         map[string]*LearnedDomain{},
	}
	if err := e.load(); err != nil {
		lockf.Close()
		return nil, err
	}
	e.mu.Lock()
	e.sweepLocked(e.clock.Now())
	snap := e.snapshotLocked()
	e.mu.Unlock()
	f, err := e.writeSnapshot(snap, nil)
	if err != nil {
		lockf.Close()
		return nil, err
	}
	e.f = f
	e.size = int64(len(snap))
	e.wg.Add(1)
	go e.loop()
	return e, nil
}

// load replays the journal into memory. A torn or corrupt last line is
// ignored; corruption before the last line fails the open.
func (e *Embedded) load() error {
	f, err := os.Open(e.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: open journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	var lineNo int
	var pendingErr error
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			lineNo++
			if pendingErr != nil {
				return pendingErr
			}
			var ops []jop
			if !bytes.HasSuffix(line, []byte{'\n'}) {
				e.log.Warn().Int("line", lineNo).Msg("store: ignoring torn last journal line")
			} else if jerr := json.Unmarshal(line, &ops); jerr != nil {
				pendingErr = fmt.Errorf("store: journal %s line %d is corrupt: %v", e.path, lineNo, jerr)
			} else if cerr := checkOps(ops); errors.Is(cerr, errUnknownOp) {
				return fmt.Errorf("store: journal %s line %d: %w", e.path, lineNo, cerr)
			} else if cerr != nil {
				pendingErr = fmt.Errorf("store: journal %s line %d is corrupt: %v", e.path, lineNo, cerr)
			} else {
				for i := range ops {
					e.apply(&ops[i])
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("store: read journal: %w", err)
		}
	}
	if pendingErr != nil {
		e.log.Warn().Err(pendingErr).Msg("store: ignoring corrupt last journal line")
	}
	return nil
}

// errUnknownOp is a journal op this version does not know: the journal
// was written by a newer latchgate. Replaying around it could give back
// budget or lose state, so the store does not open.
var errUnknownOp = errors.New("unknown op (is the state dir from a newer latchgate?)")

// checkOps reports the first op of a journal line that apply cannot take:
// one of an unknown kind (errUnknownOp) or one without the record its
// kind carries.
func checkOps(ops []jop) error {
	for i := range ops {
		o := &ops[i]
		missing := false
		switch o.T {
		case opSession:
			missing = o.S == nil
		case opIdem:
			missing = o.I == nil
		case opApproval:
			missing = o.A == nil
		case opStanding:
			missing = o.P == nil
		case opLearned:
			missing = o.L == nil
		case opUse, opReplay, opGlobal, opPrincipal, opGrant, opBucket, opIdemDel, opStandDel, opLearnDel:
		default:
			return fmt.Errorf("%w: %q", errUnknownOp, o.T)
		}
		if missing {
			return fmt.Errorf("op %q without its record", o.T)
		}
	}
	return nil
}

// apply changes memory; callers hold mu (or own e exclusively).
func (e *Embedded) apply(o *jop) {
	switch o.T {
	case opSession:
		e.sessions[o.S.ID] = o.S
		ids := e.byPrincipal[o.S.Principal]
		if ids == nil {
			ids = map[string]struct{}{}
			e.byPrincipal[o.S.Principal] = ids
		}
		ids[o.S.ID] = struct{}{}
	case opUse:
		// The counters as they are after a grant, not a delta: replaying
		// a line twice, or after a snapshot that already holds it, is
		// harmless. A session that is gone (expired, swept) stays gone.
		if s, ok := e.sessions[o.K]; ok {
			n := cloneSession(s)
			n.CallsUsed, n.CostUsedCents = o.N, o.C
			e.sessions[o.K] = n
		}
	case opReplay:
		e.replay.put(o.K, o.E)
	case opGlobal:
		e.globalEpoch = max(e.globalEpoch, o.N)
	case opPrincipal:
		e.principalEpochs[o.K] = max(e.principalEpochs[o.K], o.N)
	case opGrant:
		e.grants.put(o.K, o.E)
	case opBucket:
		e.buckets[o.K] = expiring{n: o.N, exp: o.E}
	case opIdem:
		e.idem[o.K] = idemEntry{rec: o.I, exp: o.E}
	case opIdemDel:
		delete(e.idem, o.K)
	case opApproval:
		if old := e.approvals[o.A.ID]; old != nil {
			e.unindexPending(old)
		}
		e.approvals[o.A.ID] = o.A
		if o.A.State == ApprovalPending {
			ids := e.pending[o.A.SessionID]
			if ids == nil {
				ids = map[string]*Approval{}
				e.pending[o.A.SessionID] = ids
			}
			ids[o.A.ID] = o.A
		}
	case opStanding:
		e.standing[o.P.ID] = o.P
	case opStandDel:
		delete(e.standing, o.K)
	case opLearned:
		e.learned[o.L.ID] = o.L
	case opLearnDel:
		delete(e.learned, o.K)
	default:
		e.log.Warn().Str("op", o.T).Msg("store: unknown journal op ignored")
	}
}

// commitLocked appends ops to the journal as one line and writes it, with
// every line buffered before it, to the file before applying them: when it
// returns nil the mutation survives a kill -9. Nothing becomes visible
// unless the write succeeded. Use it for every mutation a caller may
// answer or act on without calling Sync first.
func (e *Embedded) commitLocked(ops ...jop) error {
	return e.appendLocked(true, ops)
}

// commitBufferedLocked appends ops to the journal as one line that waits in buf
// for the next flush, and applies them. A kill -9 before that flush loses
// the mutation, so use it only where the caller Syncs, or commits
// write-through, before it answers or runs anything that relies on it.
func (e *Embedded) commitBufferedLocked(ops ...jop) error {
	return e.appendLocked(false, ops)
}

func (e *Embedded) appendLocked(writeThrough bool, ops []jop) error {
	if e.closed {
		return fmt.Errorf("%w: store closed", ErrUnavailable)
	}
	if e.broken != nil {
		return fmt.Errorf("%w: journal: %v", ErrUnavailable, e.broken)
	}
	start := len(e.buf)
	buf, err := appendLine(e.buf, ops)
	if err != nil {
		e.buf = buf[:start]
		return fmt.Errorf("store: encode journal line: %w", err)
	}
	e.buf = buf
	line := buf[start:] // stays valid until the next append to e.buf
	if writeThrough || len(e.buf) >= flushBytes {
		if err := e.flushLocked(); err != nil {
			return fmt.Errorf("%w: journal write: %v", ErrUnavailable, err)
		}
	}
	e.size += int64(len(line))
	e.dirty = true
	if e.compacting {
		e.tail = append(e.tail, line...)
	}
	for i := range ops {
		e.apply(&ops[i])
	}
	return nil
}

// flushLocked writes buf to the journal file. A failed write breaks the
// store (see Embedded); buf is dropped either way. e.mu must be held.
func (e *Embedded) flushLocked() error {
	if e.broken != nil {
		return e.broken
	}
	if len(e.buf) == 0 {
		return nil
	}
	_, err := e.f.Write(e.buf)
	if cap(e.buf) > 4*flushBytes {
		e.buf = nil // one huge line (a large approval) need not stay allocated
	} else {
		e.buf = e.buf[:0]
	}
	if err != nil {
		e.broken = err
		e.log.Error().Err(err).Msg("store: journal write failed; refusing further mutations")
		return err
	}
	return nil
}

// begin locks mu after checking ctx; callers defer e.mu.Unlock().
func (e *Embedded) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("%w: store closed", ErrUnavailable)
	}
	return nil
}

// Ping reports whether the store accepts mutations.
func (e *Embedded) Ping(ctx context.Context) error {
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.mu.Unlock()
	if e.broken != nil {
		return fmt.Errorf("%w: journal: %v", ErrUnavailable, e.broken)
	}
	return nil
}

func (e *Embedded) liveCountLocked(principal string, now time.Time) int64 {
	var n int64
	for id := range e.byPrincipal[principal] {
		s := e.sessions[id]
		if s != nil && s.LeaseExpiresAt.After(now) && !e.revokedLocked(s) {
			n++
		}
	}
	return n
}

func (e *Embedded) revokedLocked(s *Session) bool {
	return sessionRevoked(s, e.principalEpochs[s.Principal], e.globalEpoch)
}

// CreateSession implements Store.
func (e *Embedded) CreateSession(ctx context.Context, s *Session, limits PrincipalLimits) (*Session, error) {
	if err := checkSession(s); err != nil {
		return nil, err
	}
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	if _, ok := e.sessions[s.ID]; ok {
		return nil, fmt.Errorf("%w: session id exists", ErrConflict)
	}
	if limits.MaxLiveSessions > 0 && e.liveCountLocked(s.Principal, e.clock.Now()) >= limits.MaxLiveSessions {
		return nil, ErrSessionLimit
	}
	n := cloneSession(s)
	n.PrincipalEpoch = e.principalEpochs[s.Principal]
	n.GlobalEpoch = e.globalEpoch
	n.Revoked, n.CallsUsed, n.CostUsedCents = false, 0, 0
	if err := e.commitLocked(jop{T: opSession, S: n}); err != nil {
		return nil, err
	}
	return cloneSession(n), nil
}

// GetSession implements Store.
func (e *Embedded) GetSession(ctx context.Context, id string) (*Session, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	s, ok := e.sessions[id]
	if !ok {
		return nil, ErrNotFound
	}
	c := cloneSession(s)
	c.Revoked = e.revokedLocked(s)
	return c, nil
}

// RenewSession implements Store.
func (e *Embedded) RenewSession(ctx context.Context, id string, scopes []string, leaseExpiresAt, now time.Time) (*Session, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	s, ok := e.sessions[id]
	if !ok {
		return nil, ErrNotFound
	}
	if e.revokedLocked(s) {
		return nil, ErrRevoked
	}
	n := cloneSession(s)
	n.Scopes = slices.Clone(scopes)
	n.LeaseExpiresAt = leaseExpiresAt
	if err := e.commitLocked(jop{T: opSession, S: n}); err != nil {
		return nil, err
	}
	return cloneSession(n), nil
}

// Authenticate implements Store.
func (e *Embedded) Authenticate(ctx context.Context, req AuthRequest) (*Session, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	s, ok := e.sessions[req.SessionID]
	if !ok || s.JKT != req.JKT {
		return nil, ErrNotFound
	}
	if e.revokedLocked(s) {
		return nil, ErrRevoked
	}
	k := hashKey(req.JKT, req.JTI)
	if e.replay.live(k, req.Now) {
		return nil, ErrReplay
	}
	// Written through: a request answered without a ledger commit (a
	// read, an early refusal) must not become replayable after a kill -9.
	// One write(2) per request buys that. A power loss within
	// SyncInterval can still lose the entry: an execute's intent names
	// its proof, and the gate puts the entry back from the ledger at the
	// next start (RestoreReplay); any other request's proof may be
	// accepted once more, as for every unsynced mutation.
	if err := e.commitLocked(jop{T: opReplay, K: k, E: req.ReplayExpiresAt}); err != nil {
		return nil, err
	}
	return cloneSession(s), nil
}

// ReplayEntry names a proof whose replay entry RestoreReplay puts back.
type ReplayEntry struct {
	JKT, JTI  string
	ExpiresAt time.Time
}

// RestoreReplay puts back the replay entries of proofs that were used
// before the last start, from a record kept elsewhere (the gate passes
// the proofs its ledger's intents name), and syncs them. A plain execute
// does not sync the store before it runs: its intent carries its proof
// instead, and a power loss may take the replay entry, written through but
// not yet fsynced, from this journal. Entries that are present or expired
// are skipped. It returns how many it restored; the gate calls it once,
// before it serves.
func (e *Embedded) RestoreReplay(ctx context.Context, entries []ReplayEntry, now time.Time) (int, error) {
	if err := e.begin(ctx); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range entries {
		k := hashKey(r.JKT, r.JTI)
		if !r.ExpiresAt.After(now) || e.replay.live(k, now) {
			continue
		}
		if err := e.commitBufferedLocked(jop{T: opReplay, K: k, E: r.ExpiresAt}); err != nil {
			e.mu.Unlock()
			return n, err
		}
		n++
	}
	e.mu.Unlock()
	if n == 0 {
		return 0, nil
	}
	return n, e.Sync()
}

// Revoke implements Store. Revoking an unknown session is ErrNotFound.
func (e *Embedded) Revoke(ctx context.Context, req RevokeRequest, now time.Time) (int, error) {
	if err := checkRevoke(req); err != nil {
		return 0, err
	}
	if err := e.begin(ctx); err != nil {
		return 0, err
	}
	defer e.mu.Unlock()
	live := func(s *Session) bool { return s.LeaseExpiresAt.After(now) && !e.revokedLocked(s) }
	switch {
	case req.SessionID != "":
		s, ok := e.sessions[req.SessionID]
		if !ok {
			return 0, ErrNotFound
		}
		n := 0
		if live(s) {
			n = 1
		}
		c := cloneSession(s)
		c.Revoked = true
		return n, e.commitLocked(jop{T: opSession, S: c})
	case req.Principal != "":
		n := 0
		for id := range e.byPrincipal[req.Principal] {
			if live(e.sessions[id]) {
				n++
			}
		}
		return n, e.commitLocked(jop{T: opPrincipal, K: req.Principal, N: e.principalEpochs[req.Principal] + 1})
	default:
		n := 0
		for _, s := range e.sessions {
			if live(s) {
				n++
			}
		}
		return n, e.commitLocked(jop{T: opGlobal, N: e.globalEpoch + 1})
	}
}

func (e *Embedded) bucketLocked(k string, now time.Time) int64 {
	b, ok := e.buckets[k]
	if !ok || !b.exp.After(now) {
		return 0
	}
	return b.n
}

func hourKey(principal string, t time.Time) string {
	return "h\x00" + principal + "\x00" + hourBucket(t)
}

func dayKey(principal string, t time.Time) string {
	return "d\x00" + principal + "\x00" + dayBucket(t)
}

// Grant implements Store.
func (e *Embedded) Grant(ctx context.Context, req GrantRequest) (*Grant, error) {
	if err := checkGrant(req); err != nil {
		return nil, err
	}
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	s, ok := e.sessions[req.SessionID]
	if !ok || s.Principal != req.Principal {
		return nil, ErrNotFound
	}
	if e.revokedLocked(s) {
		return nil, ErrRevoked
	}
	if e.grants.live(req.GrantID, req.Now) {
		return nil, ErrGrantConsumed
	}
	if s.MaxCalls != nil && s.CallsUsed+req.Calls > *s.MaxCalls {
		return nil, fmt.Errorf("%w: session calls", ErrBudgetExhausted)
	}
	if s.MaxCostCents != nil && s.CostUsedCents+req.CostCents > *s.MaxCostCents {
		return nil, fmt.Errorf("%w: session cost", ErrBudgetExhausted)
	}
	hk, dk := hourKey(req.Principal, req.Now), dayKey(req.Principal, req.Now)
	h, d := e.bucketLocked(hk, req.Now), e.bucketLocked(dk, req.Now)
	if req.Limits.MaxCallsPerHour > 0 && h+req.Calls > req.Limits.MaxCallsPerHour {
		return nil, fmt.Errorf("%w: principal calls per hour", ErrBudgetExhausted)
	}
	if req.Limits.MaxCostCentsPerDay > 0 && d+req.CostCents > req.Limits.MaxCostCentsPerDay {
		return nil, fmt.Errorf("%w: principal cost per day", ErrBudgetExhausted)
	}
	// Write-through, not buffered: the gate runs the action right after
	// Grant returns and Syncs only with the receipt, after it ran. A
	// buffered line lost to a kill -9 during the action would give the
	// budget back for an action that ran. The session's new counters go
	// in an opUse (≈ 70 bytes) rather than the whole record (≈ 400): it
	// is a line per execute, and the journal's growth sets how often it
	// is compacted.
	err := e.commitLocked(
		jop{T: opUse, K: s.ID, N: s.CallsUsed + req.Calls, C: s.CostUsedCents + req.CostCents},
		jop{T: opBucket, K: hk, N: h + req.Calls, E: req.Now.Add(hourBucketTTL)},
		jop{T: opBucket, K: dk, N: d + req.CostCents, E: req.Now.Add(dayBucketTTL)},
		jop{T: opGrant, K: req.GrantID, E: req.Now.Add(grantTTL(req.TTL))},
	)
	if err != nil {
		return nil, err
	}
	return &Grant{GrantID: req.GrantID, SessionID: req.SessionID, Principal: req.Principal,
		Calls: req.Calls, CostCents: req.CostCents, At: req.Now}, nil
}

// Refund implements Store.
func (e *Embedded) Refund(ctx context.Context, g *Grant) error {
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.mu.Unlock()
	var ops []jop
	if s, ok := e.sessions[g.SessionID]; ok {
		n := cloneSession(s)
		n.CallsUsed = max(n.CallsUsed-g.Calls, 0)
		n.CostUsedCents = max(n.CostUsedCents-g.CostCents, 0)
		ops = append(ops, jop{T: opSession, S: n})
	}
	for _, b := range []struct {
		k string
		v int64
	}{{hourKey(g.Principal, g.At), g.Calls}, {dayKey(g.Principal, g.At), g.CostCents}} {
		if cur, ok := e.buckets[b.k]; ok {
			ops = append(ops, jop{T: opBucket, K: b.k, N: max(cur.n-b.v, 0), E: cur.exp})
		}
	}
	if len(ops) == 0 {
		return nil
	}
	return e.commitLocked(ops...)
}

func idemKey(principal, key string) string { return hashKey(principal, key) }

// BeginIdempotent implements Store.
func (e *Embedded) BeginIdempotent(ctx context.Context, rec *IdemRecord, ttl time.Duration) (*IdemRecord, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	now := e.clock.Now()
	k := idemKey(rec.Principal, rec.Key)
	if cur, ok := e.idem[k]; ok && cur.exp.After(now) {
		return cloneIdem(cur.rec), nil
	}
	n := cloneIdem(rec)
	n.State = IdemRunning
	if n.CreatedAt.IsZero() {
		n.CreatedAt = now
	}
	// Buffered: the dispatch's intent (ledger Sync) comes before anything
	// runs, and the record is then ended by FinishIdempotent or
	// AbortIdempotent, which write through. Lost before either, nothing ran
	// and a retry starts afresh.
	return nil, e.commitBufferedLocked(jop{T: opIdem, K: k, I: n, E: now.Add(ttl)})
}

func (e *Embedded) idemLocked(principal, key string) (string, idemEntry, error) {
	k := idemKey(principal, key)
	cur, ok := e.idem[k]
	if !ok || !cur.exp.After(e.clock.Now()) {
		return k, idemEntry{}, ErrNotFound
	}
	return k, cur, nil
}

// SetIdempotentGrant implements Store.
func (e *Embedded) SetIdempotentGrant(ctx context.Context, principal, key, grantID, receiptID string) error {
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.mu.Unlock()
	k, cur, err := e.idemLocked(principal, key)
	if err != nil {
		return err
	}
	n, err := idemGrantNext(cur.rec, grantID, receiptID)
	if err != nil {
		return err
	}
	// Buffered: the gate calls Grant next, which writes through (and so
	// writes this line first) before the action runs; when Grant refuses,
	// the abort record's ledger commit Syncs it.
	return e.commitBufferedLocked(jop{T: opIdem, K: k, I: n, E: cur.exp})
}

// FinishIdempotent implements Store.
func (e *Embedded) FinishIdempotent(ctx context.Context, principal, key string, status int, body json.RawMessage, ttl time.Duration) error {
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.mu.Unlock()
	k, cur, err := e.idemLocked(principal, key)
	if err != nil {
		return err
	}
	n, err := idemFinishNext(cur.rec, status, body)
	if err != nil {
		return err
	}
	return e.commitLocked(jop{T: opIdem, K: k, I: n, E: e.clock.Now().Add(ttl)})
}

// AbortIdempotent implements Store. A missing record is not an error; a
// done record is never deleted (ErrConflict).
func (e *Embedded) AbortIdempotent(ctx context.Context, principal, key string) error {
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.mu.Unlock()
	k, cur, err := e.idemLocked(principal, key)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if cur.rec.State != IdemRunning {
		return ErrConflict
	}
	return e.commitLocked(jop{T: opIdemDel, K: k})
}

// CreateApproval implements Store.
func (e *Embedded) CreateApproval(ctx context.Context, a *Approval, maxPending int) (*Approval, bool, error) {
	if a == nil || a.ID == "" || a.SessionID == "" {
		return nil, false, errors.New("store: approval needs id and session id")
	}
	if err := e.begin(ctx); err != nil {
		return nil, false, err
	}
	defer e.mu.Unlock()
	now := e.clock.Now()
	if _, ok := e.approvals[a.ID]; ok {
		return nil, false, fmt.Errorf("%w: approval id exists", ErrConflict)
	}
	pending := 0
	for _, p := range e.pending[a.SessionID] {
		if !now.Before(p.ExpiresAt) {
			continue
		}
		if p.ActionID == a.ActionID && p.RequestHash == a.RequestHash {
			return approvalView(p, now), false, nil
		}
		pending++
	}
	if maxPending > 0 && pending >= maxPending {
		return nil, false, ErrTooManyPending
	}
	n := cloneApproval(a)
	n.State = ApprovalPending
	n.Claim = nil
	if n.CreatedAt.IsZero() {
		n.CreatedAt = now
	}
	if err := e.commitLocked(jop{T: opApproval, A: n}); err != nil {
		return nil, false, err
	}
	return cloneApproval(n), true, nil
}

// GetApproval implements Store.
func (e *Embedded) GetApproval(ctx context.Context, id string) (*Approval, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	a, ok := e.approvals[id]
	if !ok {
		return nil, ErrNotFound
	}
	return approvalView(a, e.clock.Now()), nil
}

// unindexPending removes a from the pending index. e.mu must be held.
func (e *Embedded) unindexPending(a *Approval) {
	ids := e.pending[a.SessionID]
	delete(ids, a.ID)
	if ids != nil && len(ids) == 0 {
		delete(e.pending, a.SessionID)
	}
}

// ListApprovals implements Store (limit ≤ 0 means no limit).
func (e *Embedded) ListApprovals(ctx context.Context, state ApprovalState, limit int) ([]*Approval, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	now := e.clock.Now()
	var out []*Approval
	add := func(a *Approval) {
		if v := approvalView(a, now); state == "" || v.State == state {
			out = append(out, v)
		}
	}
	if state == ApprovalPending || state == ApprovalExpired {
		// Only a stored pending approval reads as either.
		for _, ids := range e.pending {
			for _, a := range ids {
				add(a)
			}
		}
	} else {
		for _, a := range e.approvals {
			add(a)
		}
	}
	e.mu.Unlock()
	sortApprovals(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func sortApprovals(as []*Approval) {
	slices.SortFunc(as, func(a, b *Approval) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
}

// updateApproval applies next to the stored approval under mu.
func (e *Embedded) updateApproval(ctx context.Context, id string, next func(a *Approval) (*Approval, error)) (*Approval, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	a, ok := e.approvals[id]
	if !ok {
		return nil, ErrNotFound
	}
	n, err := next(a)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return approvalView(a, e.clock.Now()), nil
	}
	if err := e.commitLocked(jop{T: opApproval, A: n}); err != nil {
		return nil, err
	}
	return cloneApproval(n), nil
}

// ClaimApproval implements Store.
func (e *Embedded) ClaimApproval(ctx context.Context, id string, claim Claim, now time.Time) (*Approval, error) {
	return e.updateApproval(ctx, id, func(a *Approval) (*Approval, error) { return claimNext(a, claim, now) })
}

// DecideApproval implements Store.
func (e *Embedded) DecideApproval(ctx context.Context, id string, state ApprovalState, by, reason string, now time.Time) (*Approval, error) {
	if err := checkDecideState(state); err != nil {
		return nil, err
	}
	return e.updateApproval(ctx, id, func(a *Approval) (*Approval, error) {
		return decideNext(a, state, by, reason, now)
	})
}

// FinishApproval implements Store.
func (e *Embedded) FinishApproval(ctx context.Context, f ApprovalFinish) (*Approval, error) {
	if err := checkFinishState(f.State); err != nil {
		return nil, err
	}
	return e.updateApproval(ctx, f.ID, func(a *Approval) (*Approval, error) { return finishNext(a, f) })
}

// CreateStanding implements Store.
func (e *Embedded) CreateStanding(ctx context.Context, s *Standing) error {
	if err := checkStanding(s); err != nil {
		return err
	}
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.mu.Unlock()
	if _, ok := e.standing[s.ID]; ok {
		return fmt.Errorf("%w: standing approval id exists", ErrConflict)
	}
	return e.commitLocked(jop{T: opStanding, P: cloneStanding(s)})
}

// ListStanding implements Store.
func (e *Embedded) ListStanding(ctx context.Context, now time.Time) ([]*Standing, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	var out []*Standing
	for _, p := range e.standing {
		if p.Live(now) {
			out = append(out, cloneStanding(p))
		}
	}
	e.mu.Unlock()
	sortStanding(out)
	return out, nil
}

// DeleteStanding implements Store.
func (e *Embedded) DeleteStanding(ctx context.Context, id string) error {
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.mu.Unlock()
	if _, ok := e.standing[id]; !ok {
		return ErrNotFound
	}
	return e.commitLocked(jop{T: opStandDel, K: id})
}

// FindStanding implements Store.
func (e *Embedded) FindStanding(ctx context.Context, principal, actionID string, now time.Time) (*Standing, error) {
	all, err := e.ListStanding(ctx, now)
	if err != nil {
		return nil, err
	}
	for _, p := range all {
		if p.Principal == principal && p.ActionID == actionID {
			return p, nil
		}
	}
	return nil, ErrNotFound
}

// UseStanding implements Store.
func (e *Embedded) UseStanding(ctx context.Context, id string, now time.Time) (*Standing, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	p, ok := e.standing[id]
	if !ok {
		return nil, ErrNotFound
	}
	n, err := useStandingNext(p, now)
	if err != nil {
		return nil, err
	}
	// Buffered: the dispatch's intent (ledger Sync) comes before the
	// action runs. Lost before that, nothing ran on this use.
	if err := e.commitBufferedLocked(jop{T: opStanding, P: n}); err != nil {
		return nil, err
	}
	return cloneStanding(n), nil
}

// PutLearned implements Store.
func (e *Embedded) PutLearned(ctx context.Context, d *LearnedDomain) (*LearnedDomain, error) {
	if err := checkLearned(d); err != nil {
		return nil, err
	}
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	n := cloneLearned(d)
	for _, l := range e.learned {
		if l.Principal == d.Principal && l.ActionID == d.ActionID && l.Host == d.Host {
			n.ID = l.ID
			break
		}
	}
	if err := e.commitLocked(jop{T: opLearned, L: n}); err != nil {
		return nil, err
	}
	return cloneLearned(n), nil
}

// ListLearned implements Store.
func (e *Embedded) ListLearned(ctx context.Context, now time.Time) ([]*LearnedDomain, error) {
	return e.learnedWhere(ctx, now, func(*LearnedDomain) bool { return true })
}

// LearnedFor implements Store.
func (e *Embedded) LearnedFor(ctx context.Context, principal, actionID string, now time.Time) ([]*LearnedDomain, error) {
	return e.learnedWhere(ctx, now, func(l *LearnedDomain) bool { return l.Principal == principal && l.ActionID == actionID })
}

func (e *Embedded) learnedWhere(ctx context.Context, now time.Time, keep func(*LearnedDomain) bool) ([]*LearnedDomain, error) {
	if err := e.begin(ctx); err != nil {
		return nil, err
	}
	var out []*LearnedDomain
	for _, l := range e.learned {
		if now.Before(l.ExpiresAt) && keep(l) {
			out = append(out, cloneLearned(l))
		}
	}
	e.mu.Unlock()
	sortLearned(out)
	return out, nil
}

// DeleteLearned implements Store.
func (e *Embedded) DeleteLearned(ctx context.Context, id string) error {
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.mu.Unlock()
	if _, ok := e.learned[id]; !ok {
		return ErrNotFound
	}
	return e.commitLocked(jop{T: opLearnDel, K: id})
}

// Sync writes the buffered journal lines and fsyncs the journal if anything
// was committed since the last fsync. When it returns nil, every mutation
// that returned before the call is durable; a failed write or fsync is
// reported here and by every later Sync.
func (e *Embedded) Sync() error {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	return e.syncHoldingSyncMu()
}

func (e *Embedded) syncHoldingSyncMu() error {
	e.mu.Lock()
	_ = e.flushLocked() // a failure sets e.broken, reported below
	f, dirty, broken := e.f, e.dirty, e.broken
	e.dirty = false
	e.mu.Unlock()
	if broken != nil {
		return fmt.Errorf("%w: journal: %v", ErrUnavailable, broken)
	}
	if !dirty || f == nil {
		return nil
	}
	t0 := time.Now()
	err := f.Sync()
	if e.observeFsync != nil {
		e.observeFsync(time.Since(t0))
	}
	if err != nil {
		e.mu.Lock()
		e.dirty = true
		if e.broken == nil {
			e.broken = err
		}
		e.mu.Unlock()
		e.log.Error().Err(err).Msg("store: journal fsync failed; refusing further mutations")
		return fmt.Errorf("%w: journal fsync: %v", ErrUnavailable, err)
	}
	return nil
}

// Close stops the background loops, fsyncs and closes the journal and
// releases the directory lock. It is idempotent.
func (e *Embedded) Close() error {
	e.syncMu.Lock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.syncMu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	close(e.stop)
	e.syncMu.Unlock()
	e.wg.Wait()

	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	err := e.syncHoldingSyncMu()
	if cerr := e.f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	e.lockf.Close()
	return err
}

func (e *Embedded) loop() {
	defer e.wg.Done()
	syncT := time.NewTicker(e.cfg.SyncInterval)
	defer syncT.Stop()
	sweepT := time.NewTicker(e.cfg.SweepInterval)
	defer sweepT.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-syncT.C:
			if err := e.Sync(); err != nil {
				e.log.Error().Err(err).Msg("store: background sync")
			}
			e.mu.Lock()
			big := e.needsCompactLocked()
			e.mu.Unlock()
			if big {
				if err := e.compact(); err != nil {
					e.log.Error().Err(err).Msg("store: compaction failed")
				}
			}
		case <-sweepT.C:
			e.mu.Lock()
			e.sweepLocked(e.clock.Now())
			e.mu.Unlock()
		}
	}
}

// sweepLocked drops expired records from memory (the next compaction
// drops them from disk).
func (e *Embedded) sweepLocked(now time.Time) {
	e.replay.sweep(now)
	e.grants.sweep(now)
	for k, b := range e.buckets {
		if !b.exp.After(now) {
			delete(e.buckets, k)
		}
	}
	for k, it := range e.idem {
		if !it.exp.After(now) {
			delete(e.idem, k)
		}
	}
	for id, s := range e.sessions {
		if s.MaxExpiresAt.Add(sessionRetention).Before(now) {
			delete(e.sessions, id)
			if ids := e.byPrincipal[s.Principal]; ids != nil {
				delete(ids, id)
				if len(ids) == 0 {
					delete(e.byPrincipal, s.Principal)
				}
			}
		}
	}
	for id, a := range e.approvals {
		if a.ExpiresAt.Add(approvalRetention).Before(now) && (a.State != ApprovalPending || a.Claim == nil) {
			delete(e.approvals, id)
			e.unindexPending(a)
		}
	}
	for id, p := range e.standing {
		if !p.Live(now) {
			delete(e.standing, id)
		}
	}
	for id, l := range e.learned {
		if !now.Before(l.ExpiresAt) {
			delete(e.learned, id)
		}
	}
}

// snapshotLocked encodes every record in memory as journal lines.
func (e *Embedded) snapshotLocked() []byte { return e.imageLocked().encode() }

// storeImage is a copy of the store's records. Records are copy-on-write
// (every mutation commits a new value), so the maps' values are shared;
// only the maps are copied. Taking one under mu costs a few map copies;
// encoding it (≈ 200 ms with 360k grant markers and replay entries) runs
// without mu, so the store keeps serving while a compaction encodes.
type storeImage struct {
	globalEpoch     int64
	principalEpochs map[string]int64
	sessions        map[string]*Session
	replay, grants  *expirySet
	buckets         map[string]expiring
	idem            map[string]idemEntry
	approvals       map[string]*Approval
	standing        map[string]*Standing
	learned         map[string]*LearnedDomain
}

// imageLocked copies the records. e.mu must be held.
func (e *Embedded) imageLocked() *storeImage {
	return &storeImage{
		globalEpoch:     e.globalEpoch,
		principalEpochs: maps.Clone(e.principalEpochs),
		sessions:        maps.Clone(e.sessions),
		replay:          e.replay.clone(),
		grants:          e.grants.clone(),
		buckets:         maps.Clone(e.buckets),
		idem:            maps.Clone(e.idem),
		approvals:       maps.Clone(e.approvals),
		standing:        maps.Clone(e.standing),
		learned:         maps.Clone(e.learned),
	}
}

// encode returns the image as journal lines: replaying them rebuilds it.
func (im *storeImage) encode() []byte {
	var buf []byte
	im.each(func(ops ...jop) {
		n := len(buf)
		var err error
		if buf, err = appendLine(buf, ops); err != nil {
			buf = buf[:n] // every record was encoded once when committed
		}
	})
	return buf
}

// writeTo streams the lines encode returns to w, one record at a time (a
// compaction never holds the whole snapshot in memory: ≈ 60 MB at 360k
// markers, most of the gate's peak heap in a soak), and returns how many
// bytes it wrote.
func (im *storeImage) writeTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	var n int64
	var werr error
	im.each(func(ops ...jop) {
		if werr != nil {
			return
		}
		var err error
		if line, err = appendLine(line[:0], ops); err != nil {
			return // every record was encoded once when committed
		}
		k, err := bw.Write(line)
		n += int64(k)
		werr = err
	})
	if werr == nil {
		werr = bw.Flush()
	}
	return n, werr
}

// syncChunk is how much of a snapshot is written between two fsyncs.
const syncChunk = 4 << 20

// chunkSyncer writes to f and fsyncs it after every syncChunk bytes. A
// snapshot is tens of MB: left to one fsync at the end, its writeback
// holds up every ledger fsync on the same file system meanwhile (ext4
// commits the journal in order), which a soak showed as one p99 of
// 130–175 ms at each compaction. In chunks, a ledger fsync waits for at
// most one chunk.
type chunkSyncer struct {
	f       *os.File
	pending int
}

func (c *chunkSyncer) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	c.pending += n
	if err == nil && c.pending >= syncChunk {
		c.pending = 0
		err = c.f.Sync()
	}
	return n, err
}

// each calls w with every record as a journal op.
func (im *storeImage) each(w func(ops ...jop)) {
	w(jop{T: opGlobal, N: im.globalEpoch})
	for p, n := range im.principalEpochs {
		w(jop{T: opPrincipal, K: p, N: n})
	}
	for _, s := range im.sessions {
		w(jop{T: opSession, S: s})
	}
	im.replay.each(func(k string, exp time.Time) { w(jop{T: opReplay, K: k, E: exp}) })
	im.grants.each(func(k string, exp time.Time) { w(jop{T: opGrant, K: k, E: exp}) })
	for k, b := range im.buckets {
		w(jop{T: opBucket, K: k, N: b.n, E: b.exp})
	}
	for k, it := range im.idem {
		w(jop{T: opIdem, K: k, I: it.rec, E: it.exp})
	}
	for _, a := range im.approvals {
		w(jop{T: opApproval, A: a})
	}
	for _, p := range im.standing {
		w(jop{T: opStanding, P: p})
	}
	for _, l := range im.learned {
		w(jop{T: opLearned, L: l})
	}
}

// writeSnapshot writes snap to a temp file, fsyncs it and returns it
// opened for appending. When install is nil the temp file is renamed over
// the journal at once; otherwise install does the rename (under mu).
func (e *Embedded) writeSnapshot(snap []byte, install func(tmp string, f *os.File) error) (*os.File, error) {
	tmp := e.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: snapshot: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("store: snapshot: %w", err)
	}
	if _, err := f.Write(snap); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if install == nil {
		err = os.Rename(tmp, e.path)
	} else {
		err = install(tmp, f)
	}
	if err != nil {
		return fail(err)
	}
	// The rename happened; a failed directory fsync only weakens
	// durability of the rename across power loss.
	if err := atomicfile.SyncDir(filepath.Dir(e.path)); err != nil {
		e.log.Warn().Err(err).Msg("store: fsync of state dir failed")
	}
	return f, nil
}

// needsCompactLocked reports whether the journal is due for compaction:
// past CompactBytes and past twice the last snapshot. e.mu must be held.
func (e *Embedded) needsCompactLocked() bool {
	return e.size > max(e.cfg.CompactBytes, e.compactAt)
}

// Catch-up before a compaction's install (see compact): at most
// maxCatchUpRounds rounds, ending early once a round wrote at most
// catchUpDone bytes.
const (
	maxCatchUpRounds = 3
	catchUpDone      = 64 << 10
)

// compact rewrites the journal as a snapshot while the store keeps
// serving: lines committed meanwhile are collected in tail and written to
// the new journal before it replaces the old one, so the lines still in
// buf then need no write to the old file.
//
// The snapshot is written and fsynced without syncMu: Sync keeps making
// the old journal durable meanwhile (every ledger commit waits on it, so
// holding syncMu here stalled every execute for the whole write; a soak
// at 800/s saw p99 jump to 366 ms at each compaction). The tail committed
// meanwhile is then copied and fsynced without mu, in rounds. Only the
// install holds syncMu and mu: the last round's lines are written and
// fsynced, the new file renamed over the old and the directory fsynced
// before any Sync can report a line durable that the surviving journal
// would not hold.
func (e *Embedded) compact() error {
	e.mu.Lock()
	if e.closed || e.broken != nil || e.compacting {
		e.mu.Unlock()
		return nil
	}
	e.sweepLocked(e.clock.Now())
	im := e.imageLocked()
	e.compacting, e.tail = true, nil
	e.mu.Unlock()
	abort := func(f *os.File, tmp string, err error) error {
		e.mu.Lock()
		e.compacting, e.tail = false, nil
		e.mu.Unlock()
		if f != nil {
			f.Close()
			os.Remove(tmp)
		}
		return fmt.Errorf("store: snapshot: %w", err)
	}

	tmp := e.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return abort(nil, tmp, err)
	}
	snapLen, err := im.writeTo(&chunkSyncer{f: f})
	if err != nil {
		return abort(f, tmp, err)
	}
	if err := f.Sync(); err != nil {
		return abort(f, tmp, err)
	}
	if e.beforeInstall != nil {
		e.beforeInstall()
	}
	// Catch up without mu: the lines committed while the snapshot was
	// written (a few MB under load) are written to the new journal and
	// fsynced while the store keeps serving, so the install below holds
	// mu only for what came during the last round. With the whole tail
	// written and fsynced under mu, soaks at 800/s on a slow disk saw the
	// install hold the store for 36–54 ms, and every request with it.
	var caught int64 // tail bytes already in the new journal
	for range maxCatchUpRounds {
		e.mu.Lock()
		tail := e.tail
		e.tail = nil
		e.mu.Unlock()
		if e.duringCatchUp != nil {
			e.duringCatchUp()
		}
		if _, err := f.Write(tail); err != nil {
			return abort(f, tmp, err)
		}
		if err := f.Sync(); err != nil {
			return abort(f, tmp, err)
		}
		caught += int64(len(tail))
		if len(tail) <= catchUpDone {
			break
		}
	}

	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	e.mu.Lock()
	held := time.Now()
	_, err = f.Write(e.tail)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, e.path)
	}
	if err != nil {
		e.mu.Unlock()
		return abort(f, tmp, err)
	}
	old := e.f
	e.f = f
	// Every line in buf was committed before the snapshot (it is in snap)
	// or after it (it is in tail): the new journal holds it, fsynced.
	e.buf = e.buf[:0]
	e.size = snapLen + caught + int64(len(e.tail))
	// Live records alone may exceed CompactBytes (many sessions,
	// markers): wait for the journal to double again rather than rewrite
	// a snapshot of the same records every SyncInterval.
	e.compactAt = 2 * snapLen
	e.dirty = false
	e.compacting, e.tail = false, nil
	e.mu.Unlock()
	stalled := time.Since(held)
	// The rename is durable before syncMu is released: a Sync after it
	// fsyncs the new file, which a crash must not put back to the old.
	// When the directory fsync fails it may not be: a power loss could
	// bring the old journal back without every line committed since the
	// install, so the store breaks before any Sync reports one durable.
	if err := e.syncDir(filepath.Dir(e.path)); err != nil {
		e.mu.Lock()
		if e.broken == nil {
			e.broken = fmt.Errorf("fsync of state dir after compaction: %w", err)
		}
		e.mu.Unlock()
		old.Close()
		e.log.Error().Err(err).Msg("store: fsync of state dir failed after compaction; refusing further mutations")
		return fmt.Errorf("store: snapshot: fsync of state dir: %w", err)
	}
	old.Close()
	e.log.Info().Int64("bytes", snapLen).Dur("install_stall", stalled).Msg("store: journal compacted")
	return nil
}

var _ Store = (*Embedded)(nil)
