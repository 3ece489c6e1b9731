// Package receipts owns LatchGate's evidence: RFC 8785 (JCS) hashing,
// Ed25519 signing of receipts and decision records, and the durable ledger
// (intent journal, receipts chain, audit chain, signed head) with lookup,
// audit queries and verification (PROTOCOL §5, §6).
//
// The ledger is one append-only file of lines written by a single writer
// goroutine: concurrent appenders share one fsync per group commit, and no
// call returns before its record is durable. The package never answers a
// write as done before the fsync returned, never rewrites or drops a record
// that was acknowledged (a torn, never-acknowledged tail is moved aside to a
// torn-<time> file), never reads the wall clock (time comes from the
// injected clock) and never decides policy. The API is internal to this
// module and may change.
package receipts

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/latchgate/latchgate/clock"
)

// Errors. Check them with errors.Is.
var (
	// ErrNotFound: no such receipt.
	ErrNotFound = errors.New("receipts: not found")
	// ErrClosed: the ledger was closed.
	ErrClosed = errors.New("receipts: ledger closed")
	// ErrUnavailable: the record could not be made durable (write, store
	// sync or fsync failed). Nothing was acknowledged.
	ErrUnavailable = errors.New("receipts: ledger unavailable")
	// ErrInvalidRecord: a record misses a required field or holds a value
	// outside its enum or format.
	ErrInvalidRecord = errors.New("receipts: invalid record")
	// ErrDuplicate: a receipt with this receipt_id already exists.
	ErrDuplicate = errors.New("receipts: duplicate receipt_id")
	// ErrHeadMismatch: the ledger on disk ends before (or disagrees with)
	// its signed head, so acknowledged records are missing or altered.
	// Open refuses to write over such a ledger.
	ErrHeadMismatch = errors.New("receipts: ledger does not match its signed head")
	// ErrInUse: another Ledger (another gate, or an offline command next
	// to a running gate) has the directory open. A ledger has one writer.
	ErrInUse = errors.New("receipts: ledger directory is in use by another latchgate process")
)

// errNotRecord: the bytes at an offset are not one ledger line's record
// (a bad index entry).
var errNotRecord = errors.New("not a ledger line")

// Defaults.
const (
	DefaultOutputCap  = 256 << 10
	DefaultAuditLimit = 50
	MaxAuditLimit     = 500
	maxBatch          = 1024
	// DefaultHeadInterval is Config.HeadInterval's default.
	DefaultHeadInterval = 100 * time.Millisecond
	// DefaultBusyCommitWindow and DefaultBusyCommitOps are the defaults
	// of Config.BusyCommitWindow and Config.BusyCommitOps.
	DefaultBusyCommitWindow = time.Millisecond
	DefaultBusyCommitOps    = 8
	opsQueue                = 1024
	readChunk               = 4 << 10 // first read of a record; longer ones take more reads
	tornTimeLayout          = "20060102T150405.000Z"
	defaultTornAttempt      = 100
)

// Config configures a Ledger.
type Config struct {
	// Dir is the ledger directory (required). Created with mode 0700; it
	// holds ledger.jsonl, head.json, ledger.lock, keys/ and torn-* files.
	Dir string
	// GateID is copied into every receipt and audit record (required).
	GateID string
	// OutputCap is the most bytes of output kept in a receipt. Over it the
	// output is null and output_truncated true. Default (0): 256 KiB.
	OutputCap int
	// GroupCommitWindow is the longest a group commit waits for more
	// writers to join it. Default (0): commit as soon as the previous
	// fsync returns (natural batching).
	GroupCommitWindow time.Duration
	// BusyCommitWindow is the longest a group commit waits for more
	// writers when the ledger is busy: when the previous group held at
	// least BusyCommitOps records, the next one waits until it holds twice
	// as many or the window has passed. Under load a bigger group costs
	// fewer fsyncs and head signatures per record; `latchgate bench` at
	// full speed measured 6–24 % less gate CPU per execute with 1ms
	// (BENCHMARKS.md). A lightly loaded ledger (1,000 executes/s: groups
	// of one to three) never waits. Default (0): 1ms; -1: never wait.
	BusyCommitWindow time.Duration
	// BusyCommitOps is how many records make a group "busy" (see
	// BusyCommitWindow). Default (0): 8.
	BusyCommitOps int
	// HeadInterval is the shortest time between two writes of head.json
	// (temp file, fsync, rename, directory fsync). The head may lag the
	// durable records by this much; Close always writes the newest head.
	// Default (0): 100ms.
	HeadInterval time.Duration
	// AuditInternCap is the most distinct values per audit field
	// (principal, action_id, decision) that the in-memory audit index
	// keeps as 2-byte ids. Records with a value first seen past the cap
	// are still indexed (offset and time); a query filtering on such a
	// value reads the candidate records from the file. Default (0): 4096;
	// at most 65535.
	AuditInternCap int

	// indexWindow is how many recent entries each index keeps in memory
	// before older ones go to index files. Default (0): 65536. Tests set
	// it small.
	indexWindow int
}

func (c Config) withDefaults() Config {
	if c.OutputCap == 0 {
		c.OutputCap = DefaultOutputCap
	}
	if c.HeadInterval == 0 {
		c.HeadInterval = DefaultHeadInterval
	}
	if c.BusyCommitWindow == 0 {
		c.BusyCommitWindow = DefaultBusyCommitWindow
	}
	if c.BusyCommitOps == 0 {
		c.BusyCommitOps = DefaultBusyCommitOps
	}
	if c.AuditInternCap == 0 {
		c.AuditInternCap = DefaultInternCap
	}
	if c.indexWindow <= 0 {
		c.indexWindow = defaultWindow
	}
	return c
}

// Validate checks a config after defaults.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("receipts: Dir is required (the ledger directory)")
	case c.GateID == "":
		return errors.New("receipts: GateID is required (a non-empty gate id)")
	case c.OutputCap < 0:
		return errors.New("receipts: OutputCap must be >= 0 bytes (0 = 256 KiB)")
	case c.GroupCommitWindow < 0:
		return errors.New(`receipts: GroupCommitWindow must be >= 0 (e.g. "200us"; 0 = none)`)
	case c.BusyCommitWindow < -1:
		return errors.New(`receipts: BusyCommitWindow must be >= 0 (e.g. "1ms"; 0 = 1ms) or -1 (never wait)`)
	case c.BusyCommitOps < 0:
		return errors.New("receipts: BusyCommitOps must be >= 0 records (0 = 8)")
	case c.HeadInterval < 0:
		return errors.New(`receipts: HeadInterval must be >= 0 (e.g. "100ms"; 0 = 100ms)`)
	case c.AuditInternCap < 0 || c.AuditInternCap > noName:
		return errors.New("receipts: AuditInternCap must be between 0 and 65535 values (0 = 4096)")
	}
	return nil
}

// Syncer makes the state store durable. The ledger calls it alongside the
// fsync of every group commit that holds an abort, a decision record, or
// an intent that asks for it (Intent.StoreState, or an intent without its
// Proof), so the state store writes a dispatch or an answer depends on
// are durable before anything runs or anyone is answered. An intent that
// names its Proof and nothing else does not need it: a proof's replay
// entry that a power loss took from the store is restored from the intent
// at the next start (RecentProofs), so a proof still never runs twice. A
// group of receipts only does not call it either: see persist.
type Syncer interface{ Sync() error }

type noopSyncer struct{}

func (noopSyncer) Sync() error { return nil }

// Deps are the ledger's injected parts.
type Deps struct {
	Clock  clock.Clock    // required
	Logger zerolog.Logger // the ledger logs with component=receipts
	Syncer Syncer         // optional; no-op when nil
	FS     FS             // optional; the real OS when nil
	// OnReceipt, when set, is called by the writer with every receipt
	// once it is durable, as stored (the bytes must not be changed). It
	// must not block: the Redis store queues a copy for other gates.
	OnReceipt func(id string, raw []byte)
	// ObserveCommit, when set, is given the duration of every group
	// commit's write and fsync (with the store's sync beside it). It must
	// not block.
	ObserveCommit func(time.Duration)
}

// loc is where a record's bytes are in the ledger file.
type loc struct {
	off int64
	n   int
}

// opKind is what an op writes.
type opKind int

const (
	opIntent opKind = iota
	opAbort
	opReceipt
	opAudit
)

// op is one write request handed to the writer goroutine.
type op struct {
	kind      opKind
	syncStore bool   // opIntent: the commit syncs the state store (Intent.StoreState)
	line      []byte // intent/abort: the record JSON
	receipt   *Receipt
	audit     *AuditRecord // opAudit; for opIntent, an optional decision record staged just before it
	done      chan error   // buffered(1)
}

// Ledger is the durable evidence store. Safe for concurrent use.
type Ledger struct {
	cfg    Config
	clock  clock.Clock
	log    zerolog.Logger
	syncer Syncer
	fs     FS

	onReceipt     func(id string, raw []byte)
	observeCommit func(time.Duration)
	rnd           func([]byte) error
	file          File     // O_APPEND; written only by the writer, read with ReadAt under mu.RLock
	lockf         *os.File // holds the flock on Dir/ledger.lock until Close

	signer atomic.Pointer[signer]
	keys   atomic.Pointer[map[string]ed25519.PublicKey]
	keyMu  sync.Mutex // serialises Rotate

	ops        chan *op
	quit       chan struct{}
	writerDone chan struct{}
	senders    sync.WaitGroup

	// Owned by the writer goroutine (and by Open before it starts).
	size         int64 // file size including uncommitted bytes
	rtip, atip   chainTip
	failed       error       // sticky: the file state is unknown
	broken       atomic.Bool // mirrors failed != nil for readers outside the writer
	pendingIDs   map[string]struct{}
	proofs       []UsedProof // RecentProofs: collected by recover, read once
	batchBuf     bytes.Buffer
	stagedBuf    []staged // commit's per-op state, reused
	headWriterCh chan struct{}
	headDone     chan struct{}
	headStop     chan struct{}
	lastHead     atomic.Pointer[Head] // newest head (signed when read or written), not yet necessarily on disk

	// headMu serialises writes of head.json (the head writer goroutine and
	// Open). It only ever guards that file. Lock order: headMu, then mu
	// (flushHead signs the head and caches the signature under mu).
	headMu      sync.Mutex
	headWritten *Head // guarded by headMu

	mu         sync.RWMutex // guards the fields below
	closed     bool
	byID       *diskIDIndex // receipt_id → offset of the receipt (has its own lock, taken after mu)
	byApproval *diskIDIndex // approval_id → offset of its receipt (has its own lock, taken after mu)
	audit      auditIndex   // decision records, in seq order: the newest window (older ones in spill)
	spill      *auditSpill  // audit entries older than the window
	head       Head
	committed  int64 // file size covered by head
}

// Open opens (or creates) the ledger in cfg.Dir: it loads or creates the
// signing key, scans the file, moves a torn tail aside, refuses a ledger
// that ends before its signed head (ErrHeadMismatch), turns dangling
// intents into "interrupted" receipts and signs the head.
func Open(cfg Config, deps Deps) (*Ledger, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Clock == nil {
		return nil, errors.New("receipts: Deps.Clock is required")
	}
	if deps.Syncer == nil {
		deps.Syncer = noopSyncer{}
	}
	if deps.FS == nil {
		deps.FS = OSFS{}
	}
	l := &Ledger{
		cfg:           cfg,
		clock:         deps.Clock,
		log:           deps.Logger.With().Str("component", "receipts").Logger(),
		syncer:        deps.Syncer,
		onReceipt:     deps.OnReceipt,
		observeCommit: deps.ObserveCommit,
		fs:            deps.FS,
		rnd:           func(b []byte) error { _, err := rand.Read(b); return err },
		ops:           make(chan *op, opsQueue),
		quit:          make(chan struct{}),
		writerDone:    make(chan struct{}),
		headWriterCh:  make(chan struct{}, 1),
		headDone:      make(chan struct{}),
		headStop:      make(chan struct{}),
		pendingIDs:    map[string]struct{}{},
		audit:         newAuditIndex(cfg.AuditInternCap),
	}
	if err := l.fs.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("receipts: create dir: %w", err)
	}
	lockf, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	l.lockf = lockf
	opened := false
	defer func() {
		if !opened {
			lockf.Close() // releases the lock (a no-op after Close did)
		}
	}()
	s, keys, err := loadKeys(l.fs, cfg.Dir, l.rnd)
	if err != nil {
		return nil, err
	}
	l.signer.Store(s)
	l.keys.Store(&keys)

	head, err := readHead(l.fs, cfg.Dir)
	if err != nil {
		return nil, err
	}
	if head != nil {
		if err := head.verify(keys); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrHeadMismatch, err)
		}
	}
	f, err := l.fs.OpenFile(filepath.Join(cfg.Dir, ledgerFileName), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("receipts: open ledger: %w", err)
	}
	l.file = f
	if err := l.openIndexes(); err != nil {
		f.Close()
		return nil, err
	}
	dangling, err := l.recover(head)
	if err != nil {
		l.closeIndexes()
		f.Close()
		return nil, err
	}
	go l.writer()
	go l.headWriter()

	now := FormatTime(l.clock.Now())
	for _, in := range dangling {
		r, err := l.Append(context.Background(), in.interruptedReceipt(now))
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("receipts: record interrupted intent %s: %w", in.GrantID, err)
		}
		l.log.Warn().Str("grant_id", in.GrantID).Str("receipt_id", r.ReceiptID).Int64("seq", r.Seq).
			Msg("intent without outcome recorded as interrupted")
	}
	// Sign and persist the head now, so even an idle ledger has one.
	h, err := l.signHead()
	if err == nil {
		l.mu.Lock()
		l.head = h
		l.mu.Unlock()
		l.lastHead.Store(&h)
		err = l.flushHead()
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	opened = true
	return l, nil
}

// lockDir takes an exclusive lock on dir/ledger.lock, held until the
// returned file is closed: one writer per ledger. A second writer would
// take the first one's in-flight intents for dangling ones, move its
// half-written group aside as a torn tail, and fork both chains.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("receipts: lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, dir)
		}
		return nil, fmt.Errorf("receipts: lock %s: %w", dir, err)
	}
	return f, nil
}

// recover scans the file, builds the indexes, moves a torn tail aside and
// returns the intents that have neither a receipt nor an abort.
func (l *Ledger) recover(head *Head) ([]*Intent, error) {
	var hs, has int64
	if head != nil {
		hs, has = head.Seq, head.AuditSeq
	}
	keys := *l.keys.Load()
	now := l.clock.Now()
	intents := map[string]*Intent{}
	var intentOrder []string
	var rAtHead, aAtHead string
	var corrupt []int64 // offsets of bad lines that are not part of the tail

	// Tentative tips advance over every decodable record; committed tips
	// (l.rtip, l.atip) only when a valid line confirms everything before it.
	trtip, tatip := chainTip{}, chainTip{}
	var pending []func()
	var badPending []int64
	var keep int64

	err := readLines(io.NewSectionReader(l.file, 0, 1<<62), func(ln line) error {
		end := ln.off + int64(len(ln.data))
		var t lineType
		var rec []byte
		if ln.complete {
			t, rec = splitLine(ln.data)
		}
		valid := false
		var effect func()
		recOff := ln.off + int64(len(linePrefix(t)))
		switch t {
		case lineReceipt, lineAudit:
			var m recordMeta
			if json.Unmarshal(rec, &m) != nil {
				break
			}
			tip, headSeq := &trtip, hs
			if t == lineAudit {
				tip, headSeq = &tatip, has
			}
			valid = tip.follows(&m) == ""
			if valid && m.Seq > headSeq {
				// Not covered by the signed head: may be a torn write.
				valid = checkRecord(rec, &m, t == lineAudit, keys) == nil
			}
			*tip = chainTip{seq: m.Seq, hash: m.Hash}
			if t == lineReceipt {
				effect = func() {
					l.rtip = chainTip{seq: m.Seq, hash: m.Hash}
					if m.Seq == hs {
						rAtHead = m.Hash
					}
					l.indexReceiptLocked(recOff, &m)
					delete(intents, m.GrantID)
				}
			} else {
				effect = func() {
					l.atip = chainTip{seq: m.Seq, hash: m.Hash}
					if m.Seq == has {
						aAtHead = m.Hash
					}
					l.audit.add(recOff, &m)
				}
			}
		case lineIntent:
			var in Intent
			if json.Unmarshal(rec, &in) != nil {
				break
			}
			valid = true
			effect = func() {
				if _, seen := intents[in.GrantID]; !seen {
					intentOrder = append(intentOrder, in.GrantID)
				}
				intents[in.GrantID] = &in
				if p := in.Proof; p != nil {
					if exp, err := ParseTime(p.ExpiresAt); err == nil && exp.After(now) {
						l.proofs = append(l.proofs, UsedProof{JKT: p.JKT, JTI: p.JTI, ExpiresAt: exp})
					}
				}
			}
		case lineAbort:
			var a abortRecord
			if json.Unmarshal(rec, &a) != nil {
				break
			}
			valid = true
			effect = func() { delete(intents, a.GrantID) }
		}
		if effect != nil {
			pending = append(pending, effect)
		}
		if !valid {
			badPending = append(badPending, ln.off)
			return nil
		}
		for _, e := range pending {
			e()
		}
		l.flushIndexes()
		corrupt = append(corrupt, badPending...)
		pending, badPending = pending[:0], badPending[:0]
		keep = end
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("receipts: scan ledger: %w", err)
	}
	if head != nil {
		if why := head.covers(l.rtip.seq, rAtHead, l.atip.seq, aAtHead); why != "" {
			return nil, fmt.Errorf("%w: %s", ErrHeadMismatch, why)
		}
	}
	st, err := l.file.Stat()
	if err != nil {
		return nil, fmt.Errorf("receipts: stat ledger: %w", err)
	}
	if st.Size() > keep {
		if err := l.moveTorn(keep, st.Size()); err != nil {
			return nil, err
		}
	}
	if len(corrupt) > 0 {
		l.log.Error().Int("lines", len(corrupt)).Int64("first_offset", corrupt[0]).
			Msg("ledger holds corrupt lines before its end; verification will fail")
	}
	l.size, l.committed = keep, keep
	var dangling []*Intent
	for _, g := range intentOrder {
		if in, ok := intents[g]; ok {
			dangling = append(dangling, in)
		}
	}
	return dangling, nil
}

// indexReceiptLocked adds a receipt at offset off to the indexes. l.mu
// must be held (or Open must still own the ledger).
func (l *Ledger) indexReceiptLocked(off int64, m *recordMeta) {
	l.byID.put(m.ReceiptID, off)
	if m.Approval != nil && m.Approval.ApprovalID != "" {
		l.byApproval.put(m.Approval.ApprovalID, off)
	}
}

// moveTorn copies [from, to) of the ledger to a torn-<time> file, then
// truncates the ledger to from.
func (l *Ledger) moveTorn(from, to int64) error {
	data := make([]byte, to-from)
	if _, err := l.file.ReadAt(data, from); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("receipts: read torn tail: %w", err)
	}
	var tf File
	var name string
	var err error
	stamp := l.clock.Now().UTC().Format(tornTimeLayout)
	for i := range defaultTornAttempt {
		name = filepath.Join(l.cfg.Dir, "torn-"+stamp)
		if i > 0 {
			name += fmt.Sprintf("-%d", i)
		}
		tf, err = l.fs.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("receipts: create torn file: %w", err)
	}
	_, err = tf.Write(data)
	if err == nil {
		err = tf.Sync()
	}
	if cerr := tf.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.file.Truncate(from)
	}
	if err == nil {
		err = l.file.Sync()
	}
	if err == nil {
		err = syncDir(l.fs, l.cfg.Dir)
	}
	if err != nil {
		return fmt.Errorf("receipts: move torn tail: %w", err)
	}
	l.log.Warn().Str("file", filepath.Base(name)).Int64("offset", from).Int64("bytes", to-from).
		Msg("torn ledger tail (never acknowledged) moved aside")
	return nil
}

// submit hands an op to the writer and waits for it to be durable. ctx
// bounds only the wait to enqueue: once queued, the op's outcome is
// awaited so a caller never reports failure for a record that was written.
func (l *Ledger) submit(ctx context.Context, o *op) error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	l.senders.Add(1)
	l.mu.RUnlock()
	defer l.senders.Done()
	o.done = make(chan error, 1)
	select {
	case l.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-o.done
}

// UsedProof is a DPoP proof an intent named (Intent.Proof), with its
// replay expiry parsed.
type UsedProof struct {
	JKT, JTI  string
	ExpiresAt time.Time
}

// RecentProofs returns the proofs named by intents that were in the
// ledger when it was opened and whose replay entries have not expired
// yet, oldest first. The gate restores their replay entries into the
// embedded store before it serves (see Syncer). The first call takes
// them; later calls return nil.
func (l *Ledger) RecentProofs() []UsedProof {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.proofs
	l.proofs = nil
	return p
}

// WriteIntent writes the durable intent before dispatch. An error means
// nothing may run (503 ledger_unavailable).
func (l *Ledger) WriteIntent(ctx context.Context, in *Intent) error {
	return l.WriteDecisionAndIntent(ctx, nil, in)
}

// WriteDecisionAndIntent appends the decision record a (when not nil, as
// AppendAudit would) followed by the intent in, in the same group commit:
// both are durable, in that order, when it returns nil, and neither is
// written when it fails. The execute path uses it to save one fsync round
// per allowed request.
func (l *Ledger) WriteDecisionAndIntent(ctx context.Context, a *AuditRecord, in *Intent) error {
	if err := in.validate(); err != nil {
		return err
	}
	var audit *AuditRecord
	if a != nil {
		c, err := l.prepareAudit(a)
		if err != nil {
			return err
		}
		// The decision names the receipt that will carry its facts under
		// a signature (an allow record is not signed itself).
		if c.ReceiptID == "" {
			c.ReceiptID = in.ReceiptID
		}
		if c.PolicyVersion == "" {
			c.PolicyVersion = in.PolicyVersion
		}
		audit = c
	}
	c := *in
	if c.Egress.Hosts == nil {
		c.Egress.Hosts = []string{}
	}
	b, err := appendIntent(getIntentBuf(), &c)
	if err != nil {
		return err
	}
	// A decision record alone would sync the store (opAudit); written with
	// an intent it is not what a sync protects, so the intent decides.
	sync := c.Proof == nil || c.StoreState
	if err := l.submit(ctx, &op{kind: opIntent, line: b, audit: audit, syncStore: sync}); err != nil {
		return err
	}
	if a != nil {
		*a = *audit
	}
	return nil
}

// intentBufs holds the buffers intents are encoded into by the callers of
// WriteDecisionAndIntent; the writer returns each one once its group holds
// a copy (≈ 1 KB less garbage per execute).
var intentBufs = sync.Pool{New: func() any { return new([]byte) }}

func getIntentBuf() []byte { return (*intentBufs.Get().(*[]byte))[:0] }

func putIntentBuf(b []byte) {
	if cap(b) > maxPooledBuf {
		return
	}
	b = b[:0]
	intentBufs.Put(&b)
}

// WriteAbort records that the grant of an intent was refused, so the intent
// never becomes an interrupted receipt.
func (l *Ledger) WriteAbort(ctx context.Context, grantID, reason string) error {
	if grantID == "" {
		return invalid("grant_id", "is required")
	}
	b, err := appendAbort(nil, &abortRecord{GrantID: grantID, Reason: reason, At: FormatTime(l.clock.Now())})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return l.submit(ctx, &op{kind: opAbort, line: b})
}

// Append seals and durably appends a receipt and returns it as stored
// (the stored bytes are its JCS form with hash, signature and key_id
// appended; json.Marshal of the returned value is the same object with
// its members in struct order). The gate sets
// every field but Seq, PrevHash, GateID, Hash, Signature and KeyID. Output
// longer than Config.OutputCap is dropped (null, output_truncated true);
// response_hash stays the gate's hash of the full output. An error means
// the evidence is not written (500 evidence_persistence_failed).
func (l *Ledger) Append(ctx context.Context, r *Receipt) (*Receipt, error) {
	c := *r
	c.Seq, c.PrevHash, c.Hash, c.Signature, c.KeyID = 0, nil, "", "", ""
	c.GateID = l.cfg.GateID
	if c.ProviderModuleDigest == "" {
		c.ProviderModuleDigest = c.ActionDigest
	}
	c.Egress.Hosts = append([]string{}, r.Egress.Hosts...)
	// The cap bounds the output as stored, in its JCS form, which can be
	// longer than the output as sent (1e20 is stored as 21 digits). Output
	// that does not canonicalise is left for validate and the writer.
	if out, err := canonicalClone(c.Output); err == nil {
		c.Output, c.outputCanonical = out, true
	}
	if len(c.Output) > l.cfg.OutputCap {
		c.Output, c.OutputTruncated = nil, true
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := l.submit(ctx, &op{kind: opReceipt, receipt: &c}); err != nil {
		return nil, err
	}
	return &c, nil
}

// AppendAudit seals and durably appends a decision record. ID (a UUIDv7)
// and Time are set when empty.
func (l *Ledger) AppendAudit(ctx context.Context, a *AuditRecord) error {
	c, err := l.prepareAudit(a)
	if err != nil {
		return err
	}
	if err := l.submit(ctx, &op{kind: opAudit, audit: c}); err != nil {
		return err
	}
	*a = *c
	return nil
}

// prepareAudit returns a validated copy of a for the writer, with ID and
// Time set when empty.
func (l *Ledger) prepareAudit(a *AuditRecord) (*AuditRecord, error) {
	c := *a
	c.Seq, c.PrevHash, c.Hash, c.Signature, c.KeyID = 0, nil, "", "", ""
	c.GateID = l.cfg.GateID
	now := l.clock.Now()
	if c.Time == "" {
		c.Time = FormatTime(now)
	}
	if c.ID == "" {
		id, err := newUUIDv7(now, l.rnd)
		if err != nil {
			return nil, err
		}
		c.ID = id
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// writer is the single goroutine that writes and fsyncs the ledger.
func (l *Ledger) writer() {
	defer close(l.writerDone)
	batch := make([]*op, 0, maxBatch)
	prev := 0 // ops in the previous group
	for {
		select {
		case o := <-l.ops:
			batch = append(batch[:0], o)
		case <-l.quit:
			return
		}
		if w := l.cfg.BusyCommitWindow; w > 0 && prev >= l.cfg.BusyCommitOps {
			l.collect(&batch, min(2*prev, maxBatch), w)
		}
		if w := l.cfg.GroupCommitWindow; w > 0 {
			l.collect(&batch, maxBatch, w)
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case o := <-l.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		prev = len(batch)
		l.commit(batch)
		clear(batch)
	}
}

// collect adds ops to *batch until it holds n or w has passed.
func (l *Ledger) collect(batch *[]*op, n int, w time.Duration) {
	t := time.NewTimer(w)
	defer t.Stop()
	for len(*batch) < n {
		select {
		case o := <-l.ops:
			*batch = append(*batch, o)
		case <-t.C:
			return
		}
	}
}

// staged is an op's outcome within a batch.
type staged struct {
	o     *op
	err   error
	loc   loc
	meta  recordMeta
	isRec bool
	raw   []byte // a receipt's stored bytes
}

// commit writes one group: stage every op, one write, store sync, one
// fsync, then publish indexes and the signed head and answer the callers.
func (l *Ledger) commit(batch []*op) {
	if l.failed != nil {
		for _, o := range batch {
			o.done <- fmt.Errorf("%w: %w", ErrUnavailable, l.failed)
		}
		return
	}
	s := l.signer.Load()
	buf := &l.batchBuf
	buf.Reset()
	start := l.size
	rtip, atip := l.rtip, l.atip
	clear(l.pendingIDs)
	st := l.stagedBuf[:0]
	if cap(st) < len(batch) {
		st = make([]staged, 0, len(batch))
	}
	st = st[:len(batch)]
	defer func() {
		clear(st) // drop the references to ops and records
		l.stagedBuf = st[:0]
	}()
	syncStore := false
	for i, o := range batch {
		st[i].o = o
		syncStore = syncStore || o.kind == opAudit || o.kind == opAbort || o.syncStore
		switch o.kind {
		case opIntent:
			if o.audit != nil {
				if err := l.stageAudit(buf, start, s, o.audit, &atip, &st[i]); err != nil {
					st[i].err = err
					continue
				}
			}
			appendLine(buf, lineIntent, o.line)
			putIntentBuf(o.line)
		case opAbort:
			appendLine(buf, lineAbort, o.line)
		case opReceipt:
			r := o.receipt
			if dup, err := l.hasReceipt(r.ReceiptID); err != nil || dup {
				st[i].err = fmt.Errorf("%w: %s", ErrDuplicate, r.ReceiptID)
				if err != nil {
					st[i].err = err
				}
				continue
			}
			r.Seq = rtip.seq + 1
			r.PrevHash = prevHash(rtip)
			mark, off, room := beginLine(buf, lineReceipt)
			b, err := appendReceipt(room, r)
			var h, sig string
			if err == nil {
				b, h, sig, err = s.sealAppend(b)
			}
			if err != nil {
				buf.Truncate(mark)
				st[i].err = err
				r.Seq, r.PrevHash = 0, nil
				continue
			}
			endLine(buf, b)
			r.Hash, r.Signature, r.KeyID = h, sig, s.kid
			st[i].loc = loc{off: start + int64(off), n: len(b)}
			st[i].isRec = true
			st[i].raw = buf.Bytes()[off : off+len(b)]
			st[i].meta = recordMeta{Seq: r.Seq, ReceiptID: r.ReceiptID}
			if r.Approval != nil {
				st[i].meta.Approval = &struct {
					ApprovalID string `json:"approval_id"`
				}{r.Approval.ApprovalID}
			}
			l.pendingIDs[r.ReceiptID] = struct{}{}
			rtip = chainTip{seq: r.Seq, hash: h}
		case opAudit:
			st[i].err = l.stageAudit(buf, start, s, o.audit, &atip, &st[i])
		}
	}
	t0 := time.Now()
	err := l.persist(buf.Bytes(), start, syncStore)
	if l.observeCommit != nil && buf.Len() > 0 {
		l.observeCommit(time.Since(t0))
	}
	if err != nil {
		for i := range st {
			if st[i].err == nil {
				st[i].err = err
			}
		}
	} else {
		l.size = start + int64(buf.Len())
		l.rtip, l.atip = rtip, atip
		// The head is signed lazily (Head, Verify, the head writer): a
		// profile at 1,000 req/s showed one Ed25519 signature per group
		// commit in the writer, most of them never read.
		h := l.unsignedHead()
		l.mu.Lock()
		l.committed = l.size
		l.head = h
		for i := range st {
			if st[i].err != nil {
				continue
			}
			switch st[i].o.kind {
			case opIntent:
				if st[i].o.audit != nil {
					l.audit.add(st[i].loc.off, &st[i].meta)
				}
			case opReceipt:
				l.indexReceiptLocked(st[i].loc.off, &st[i].meta)
			case opAudit:
				l.audit.add(st[i].loc.off, &st[i].meta)
			}
		}
		l.mu.Unlock()
		l.flushIndexes()
		l.lastHead.Store(&h)
		select {
		case l.headWriterCh <- struct{}{}:
		default:
		}
		if l.onReceipt != nil {
			for i := range st {
				if st[i].err == nil && st[i].isRec {
					// raw is in the group's buffer, reused by the next group.
					l.onReceipt(st[i].meta.ReceiptID, bytes.Clone(st[i].raw))
				}
			}
		}
	}
	for i := range st {
		st[i].o.done <- st[i].err
	}
}

// stageAudit seals a (next in the audit chain after *atip) into buf, and
// records its location and index entry in stg. On error nothing was added
// to buf and *atip is unchanged.
func (l *Ledger) stageAudit(buf *bytes.Buffer, start int64, s *signer, a *AuditRecord, atip *chainTip, stg *staged) error {
	a.Seq = atip.seq + 1
	a.PrevHash = prevHash(*atip)
	mark, off, room := beginLine(buf, lineAudit)
	b, err := appendAudit(room, a)
	var h, sig string
	signed := !mayBeUnsigned(a.Decision)
	if err == nil {
		if signed {
			b, h, sig, err = s.sealAppend(b)
		} else {
			b, h, err = hashAppend(b)
		}
	}
	if err != nil {
		buf.Truncate(mark)
		a.Seq, a.PrevHash = 0, nil
		return err
	}
	endLine(buf, b)
	a.Hash = h
	if signed {
		a.Signature, a.KeyID = sig, s.kid
	}
	stg.loc = loc{off: start + int64(off), n: len(b)}
	stg.meta = recordMeta{Seq: a.Seq, Time: a.Time, Principal: a.Principal, ActionID: a.ActionID, Decision: a.Decision}
	*atip = chainTip{seq: a.Seq, hash: h}
	return nil
}

func prevHash(t chainTip) *string {
	if t.seq == 0 {
		return nil
	}
	h := t.hash
	return &h
}

// hasReceipt reports whether a receipt with this id is staged in the
// current group or committed. Only the writer calls it.
func (l *Ledger) hasReceipt(id string) (bool, error) {
	if _, ok := l.pendingIDs[id]; ok {
		return true, nil
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	_, ok, err := l.byID.get(id, func(off int64) (bool, error) {
		_, m, err := l.recordAtLocked(off)
		return m != nil && m.ReceiptID == id, err
	})
	return ok, err
}

// persist writes data at the end of the file and fsyncs it, and syncs the
// store when syncStore is set. On failure it truncates back to start so
// nothing unacknowledged stays; if that fails too the ledger stops
// accepting writes until reopened.
//
// The store's sync and the ledger's fsync run side by side: both finish
// before any caller is answered, and neither needs the other first. A
// crash between them leaves either an intent whose proof may be presented
// again (its interrupted receipt says "may have run"; it never did, since
// nothing runs before this commit returns), or the other way round state
// without evidence, as before. Serial, the two fsyncs were most of each
// commit's latency.
//
// A group of receipts only does not sync the store: what the store learnt
// since the intent's commit is the grant marker (ids are never reused, so
// losing it changes nothing) and the budget reservation, which the store
// itself writes through (a killed process loses nothing) and fsyncs within
// its SyncInterval, as it does every other mutation. A power loss in that
// window can forget the reservations of the executes it answered, never a
// receipt or a replay entry. At 1,000 executes/s this halves the fsyncs of
// the receipts' commits, which were the ledger writer's bottleneck.
func (l *Ledger) persist(data []byte, start int64, syncStore bool) error {
	if len(data) == 0 {
		return nil
	}
	var storeErr chan error
	if _, noop := l.syncer.(noopSyncer); !noop && syncStore {
		storeErr = make(chan error, 1)
		go func() { storeErr <- l.syncer.Sync() }()
	}
	_, err := l.file.Write(data)
	if err != nil {
		err = fmt.Errorf("write: %w", err)
	} else if err = l.file.Sync(); err != nil {
		err = fmt.Errorf("fsync: %w", err)
	}
	if storeErr != nil {
		if serr := <-storeErr; serr != nil && err == nil {
			err = fmt.Errorf("store sync: %w", serr)
		}
	}
	if err == nil {
		return nil
	}
	l.log.Error().Err(err).Msg("ledger group commit failed; rolling back")
	if terr := l.file.Truncate(start); terr != nil {
		l.failed = fmt.Errorf("%w (rollback truncate: %w)", err, terr)
		l.broken.Store(true)
	} else if serr := l.file.Sync(); serr != nil {
		l.failed = fmt.Errorf("%w (rollback fsync: %w)", err, serr)
		l.broken.Store(true)
	}
	if l.failed != nil {
		l.log.Error().Err(l.failed).Msg("ledger unusable until reopened")
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// signHead signs the current chain ends. Only the writer goroutine (or
// Open while no write is in flight) calls it: it reads the writer's tips.
func (l *Ledger) signHead() (Head, error) {
	return l.signer.Load().signHead(l.unsignedHead())
}

// unsignedHead is the head of the current chain ends, not yet signed. Only
// the writer goroutine (or Open) calls it.
func (l *Ledger) unsignedHead() Head {
	return Head{
		Seq: l.rtip.seq, Hash: l.rtip.hash,
		AuditSeq: l.atip.seq, AuditHash: l.atip.hash,
		GateID: l.cfg.GateID, SignedAt: FormatTime(l.clock.Now()),
	}
}

// signed returns h signed with the current key (h itself when it already
// is), and keeps the signature for Head when h is still the newest head.
func (l *Ledger) signed(h Head) (Head, error) {
	if h.Signature != "" {
		return h, nil
	}
	sh, err := l.signer.Load().signHead(h)
	if err != nil {
		return h, err
	}
	l.mu.Lock()
	if l.head == h {
		l.head = sh
	}
	l.mu.Unlock()
	return sh, nil
}

// headWriter persists the newest signed head after commits, coalescing.
// The head is written only after the records it names were fsynced, so it
// never claims more than is durable; it may lag by the last few groups.
func (l *Ledger) headWriter() {
	defer close(l.headDone)
	for {
		select {
		case <-l.headWriterCh:
		case <-l.headStop:
			if err := l.flushHead(); err != nil {
				l.log.Error().Err(err).Msg("persist ledger head")
			}
			return
		}
		if err := l.flushHead(); err != nil {
			l.log.Error().Err(err).Msg("persist ledger head")
		}
		// Coalesce the heads of the next HeadInterval into one write.
		t := time.NewTimer(l.cfg.HeadInterval)
		select {
		case <-t.C:
		case <-l.headStop:
			t.Stop()
			if err := l.flushHead(); err != nil {
				l.log.Error().Err(err).Msg("persist ledger head")
			}
			return
		}
	}
}

// flushHead writes the newest signed head unless it is already on disk.
// Heads are stored in lastHead in commit order, so the file only moves
// forward.
func (l *Ledger) flushHead() error {
	l.headMu.Lock()
	defer l.headMu.Unlock()
	h := l.lastHead.Load()
	if h == nil || h == l.headWritten {
		return nil
	}
	sh, err := l.signed(*h)
	if err != nil {
		return fmt.Errorf("sign ledger head: %w", err)
	}
	if err := l.writeHead(sh); err != nil {
		return err
	}
	l.headWritten = h
	return nil
}

func (l *Ledger) writeHead(h Head) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return writeFileAtomic(l.fs, filepath.Join(l.cfg.Dir, headFileName), b)
}

// Close stops accepting writes, waits for queued ones, persists the head
// and closes the file. It is idempotent.
func (l *Ledger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.senders.Wait()
	close(l.quit)
	<-l.writerDone
	close(l.headStop)
	<-l.headDone
	l.closeIndexes()
	err := l.file.Close()
	l.lockf.Close()
	return err
}

// readLocked reads the bytes of the committed record at off: they run up
// to the "}\n" that closes its line (records are compact JSON, without raw
// newlines). l.mu must be held (read).
func (l *Ledger) readLocked(off int64) (json.RawMessage, error) {
	if off < 0 || off >= l.committed {
		return nil, fmt.Errorf("%w: record offset %d outside the committed ledger", ErrUnavailable, off)
	}
	avail := l.committed - off
	b := make([]byte, min(readChunk, avail))
	read := 0
	for {
		if _, err := l.file.ReadAt(b[read:], off+int64(read)); err != nil {
			return nil, fmt.Errorf("%w: read: %w", ErrUnavailable, err)
		}
		if i := bytes.IndexByte(b[read:], '\n'); i >= 0 {
			end := read + i
			if end == 0 || b[end-1] != '}' {
				return nil, fmt.Errorf("%w: record at offset %d: %w", ErrUnavailable, off, errNotRecord)
			}
			return b[: end-1 : end-1], nil
		}
		read = len(b)
		more := min(int64(read), avail-int64(read))
		if more <= 0 {
			return nil, fmt.Errorf("%w: record at offset %d: %w", ErrUnavailable, off, errNotRecord)
		}
		b = append(b, make([]byte, more)...)
	}
}

// Get returns the receipt exactly as stored (ErrNotFound).
func (l *Ledger) Get(id string) (json.RawMessage, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	var raw json.RawMessage
	off, ok, err := l.byID.get(id, func(off int64) (bool, error) {
		b, m, err := l.recordAtLocked(off)
		if err != nil || m == nil || m.ReceiptID != id {
			return false, err
		}
		raw = b
		return true, nil
	})
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, ErrNotFound
	case raw != nil:
		return raw, nil
	}
	return l.readLocked(off)
}

// GetReceipt returns the receipt decoded (ErrNotFound).
func (l *Ledger) GetReceipt(id string) (*Receipt, error) {
	raw, err := l.Get(id)
	if err != nil {
		return nil, err
	}
	return decodeReceipt(raw, id)
}

func decodeReceipt(raw json.RawMessage, id string) (*Receipt, error) {
	var r Receipt
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: decode receipt %s: %w", ErrUnavailable, id, err)
	}
	return &r, nil
}

// FindByApproval returns the receipt written for an approval (ErrNotFound);
// used to resolve claims whose gate crashed.
func (l *Ledger) FindByApproval(approvalID string) (*Receipt, error) {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return nil, ErrClosed
	}
	var raw json.RawMessage
	off, ok, err := l.byApproval.get(approvalID, func(off int64) (bool, error) {
		b, m, err := l.recordAtLocked(off)
		if err != nil || m == nil || m.Approval == nil || m.Approval.ApprovalID != approvalID {
			return false, err
		}
		raw = b
		return true, nil
	})
	if err == nil && ok && raw == nil {
		raw, err = l.readLocked(off)
	}
	l.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNotFound
	}
	return decodeReceipt(raw, "for approval "+approvalID)
}

// AuditQuery filters audit records. Empty strings and zero times match
// everything; After and Before are exclusive bounds on the record time.
type AuditQuery struct {
	Principal string
	ActionID  string
	Decision  string
	After     time.Time
	Before    time.Time
	// Limit is the most records returned. Default (0): 50; at most 500.
	Limit int
}

// QueryAudit returns matching audit records as stored, newest first.
func (l *Ledger) QueryAudit(q AuditQuery) ([]json.RawMessage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	limit = min(limit, MaxAuditLimit)
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	f := l.audit.filter(q)
	out := []json.RawMessage{}
	visit := func(e *auditEntry) (bool, error) {
		res := f.match(e)
		if res == matchNo {
			return true, nil
		}
		raw, err := l.readLocked(e.off)
		if err != nil {
			return false, err
		}
		if res == matchRead {
			// A value past the intern cap: decide from the record.
			var m recordMeta
			if err := json.Unmarshal(raw, &m); err != nil {
				return false, fmt.Errorf("%w: decode audit record: %w", ErrUnavailable, err)
			}
			if !f.matchRecord(&m) {
				return true, nil
			}
		}
		out = append(out, raw)
		return len(out) < limit, nil
	}
	for i := len(l.audit.entries) - 1; i >= 0; i-- {
		more, err := visit(&l.audit.entries[i])
		if err != nil {
			return nil, err
		}
		if !more {
			return out, nil
		}
	}
	// Older entries, from the spill file (newest first).
	if err := l.spill.readBack(visit); err != nil {
		return nil, err
	}
	return out, nil
}

// Verify re-reads the committed ledger and checks every hash, signature
// and link of both chains and the chain ends against the signed head.
func (l *Ledger) Verify() VerifyResult {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return VerifyResult{FirstBreak: &Break{Chain: ChainFile, Reason: ErrClosed.Error()}}
	}
	size := l.committed
	head := l.head
	l.mu.RUnlock()
	head, err := l.signed(head)
	if err != nil {
		return VerifyResult{FirstBreak: &Break{Chain: ChainHead, Reason: err.Error()}, Head: head}
	}
	// A separate handle: a long scan must not hold mu against the writer
	// nor race with Close.
	f, err := l.fs.OpenFile(filepath.Join(l.cfg.Dir, ledgerFileName), os.O_RDONLY, 0)
	if err != nil {
		return VerifyResult{FirstBreak: &Break{Chain: ChainFile, Reason: err.Error()}, Head: head}
	}
	defer f.Close()
	res, err := verifyLedger(io.NewSectionReader(f, 0, size), *l.keys.Load(), &head)
	if err != nil {
		res.Intact = false
		res.FirstBreak = &Break{Chain: ChainFile, Reason: err.Error()}
	}
	return res
}

// KeySet returns the JWKS of every receipt signing key, old ones included.
func (l *Ledger) KeySet() []byte { return marshalKeySet(*l.keys.Load()) }

// Keys returns the public keys by key id.
func (l *Ledger) Keys() map[string]ed25519.PublicKey {
	m := *l.keys.Load()
	out := make(map[string]ed25519.PublicKey, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// KeyID returns the id of the current signing key.
func (l *Ledger) KeyID() string { return l.signer.Load().kid }

// Rotate creates a new signing key; old public keys stay in the key set so
// earlier receipts keep verifying.
func (l *Ledger) Rotate() error {
	l.keyMu.Lock()
	defer l.keyMu.Unlock()
	pubs := l.Keys()
	s, err := newKey(l.fs, filepath.Join(l.cfg.Dir, keysDirName), pubs, l.rnd)
	if err != nil {
		return err
	}
	l.keys.Store(&pubs)
	l.signer.Store(s)
	l.log.Info().Str("key_id", s.kid).Msg("receipt signing key rotated")
	return nil
}

// RotateDir creates a new signing key in the ledger directory dir while no
// Ledger has it open (a stopped gate's: `latchgate keys rotate --receipts
// --state-dir`; ErrInUse otherwise), keeping the old public keys. It
// writes the key files only: opening the ledger would also run its
// start-up recovery, recording dangling intents as interrupted receipts
// in the name of whoever rotates, not of the gate. It returns the new key
// id.
func RotateDir(dir string) (string, error) {
	fsys := OSFS{}
	if err := fsys.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("receipts: create dir: %w", err)
	}
	lockf, err := lockDir(dir)
	if err != nil {
		return "", err
	}
	defer lockf.Close()
	rnd := func(b []byte) error { _, err := rand.Read(b); return err }
	_, pubs, err := loadKeys(fsys, dir, rnd)
	if err != nil {
		return "", err
	}
	s, err := newKey(fsys, filepath.Join(dir, keysDirName), pubs, rnd)
	if err != nil {
		return "", err
	}
	return s.kid, nil
}

// SignatureStatus verifies a stored receipt with the ledger's keys.
func (l *Ledger) SignatureStatus(raw json.RawMessage) string {
	return VerifyReceipt(raw, *l.keys.Load())
}

// WithSignatureStatus returns raw (a stored receipt) with
// "signature_status" appended, for serving.
func WithSignatureStatus(raw json.RawMessage, status string) json.RawMessage {
	out := make([]byte, 0, len(raw)+40)
	// Remove exactly the object's closing brace (and trailing space).
	out = append(out, bytes.TrimSuffix(bytes.TrimRight(raw, " \t\r\n"), []byte("}"))...)
	out = append(out, `,"signature_status":"`...)
	out = append(out, status...)
	return append(out, `"}`...)
}

// Head returns the newest signed head. (A head that cannot be signed,
// which needs a broken key, is returned unsigned and logged.)
func (l *Ledger) Head() Head {
	l.mu.RLock()
	h := l.head
	l.mu.RUnlock()
	sh, err := l.signed(h)
	if err != nil {
		l.log.Error().Err(err).Msg("sign ledger head")
	}
	return sh
}

// Healthy reports whether the ledger accepts writes: it is open and no
// failed write left its file in an unknown state.
func (l *Ledger) Healthy() bool {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	return !closed && !l.broken.Load()
}

// Stats returns the number of receipts and audit records.
func (l *Ledger) Stats() (receipts, audit int) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	audit = len(l.audit.entries)
	if l.spill != nil {
		audit += l.spill.n
	}
	return l.byID.len(), audit
}

// newUUIDv7 builds a UUIDv7 from the injected clock's time.
func newUUIDv7(t time.Time, rnd func([]byte) error) (string, error) {
	var b [16]byte
	if err := rnd(b[6:]); err != nil {
		return "", fmt.Errorf("receipts: uuid: %w", err)
	}
	ms := uint64(t.UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = 0x70 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	h := hex.EncodeToString(b[:])
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]}, "-"), nil
}
