package receipts

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/rs/zerolog"
)

// On-disk indexes. The ledger file stays the only truth: the files under
// index/ are a cache derived from it, deleted and rebuilt by every Open
// from the scan Open does anyway (it decodes every line to check the
// chains), and never fsynced. So an index file that is missing, short,
// corrupt or behind cannot be trusted by mistake: it is never read. Each
// lookup still checks that the record at a run entry's offset holds the id
// it was looked up by, so a damaged run can only hide a record (ErrNotFound),
// never return another one.
//
// Memory: an id index keeps its newest Config.indexWindow entries in maps
// (idIndex); when the window is full the writer sorts it into an immutable
// run file of 24-byte entries (16-byte key, 8-byte offset) and keeps only
// one 16-byte fence key per runBlock entries (0.125 B per record). A
// background merger combines runs of similar size, so there are O(log n)
// runs and a lookup reads one block (3 KiB) per run. The audit index keeps
// its newest window of 24-byte entries in memory and appends older ones to
// a spill file read backwards by QueryAudit.

const (
	indexDirName     = "index"
	defaultWindow    = 1 << 16
	runEntrySize     = 24
	runBlock         = 128 // entries per fence
	auditEntrySize   = 24
	auditReadEntries = 1024 // entries per backward read of the audit spill
	mergeCheckEvery  = 1 << 16
)

var errMergeStopped = errors.New("receipts: index merge stopped")

// indexKey is the 16-byte key of an id in a run: the UUID itself for a
// canonical UUID, else a hash of the id (lookups verify the record).
func indexKey(id string) uuidKey {
	if k, ok := parseUUID(id); ok {
		return k
	}
	h := sha256.Sum256([]byte("latchgate receipts index key\x00" + id))
	var k uuidKey
	copy(k[:], h[:16])
	return k
}

type runEntry struct {
	key uuidKey
	off int64
}

func compareEntries(a, b runEntry) int {
	if c := bytes.Compare(a.key[:], b.key[:]); c != 0 {
		return c
	}
	switch {
	case a.off < b.off:
		return -1
	case a.off > b.off:
		return 1
	}
	return 0
}

// idRun is an immutable sorted run file.
type idRun struct {
	f      File
	path   string
	n      int
	fences []uuidKey // key of entry i*runBlock
	last   uuidKey   // key of the last entry (the first is fences[0])
}

// find returns the offsets stored for k in the run, ascending. A key
// outside the run's range reads nothing: receipt ids are UUIDv7, so the
// duplicate check of every new receipt is newer than every run. Without
// this, that check read one 3 KiB block per run: ≈ 2% of the gate's CPU
// after 8 minutes at 800/s in a soak, growing with the number of runs.
func (r *idRun) find(k uuidKey) ([]int64, error) {
	if r.n == 0 || bytes.Compare(k[:], r.fences[0][:]) < 0 || bytes.Compare(k[:], r.last[:]) > 0 {
		return nil, nil
	}
	b := sort.Search(len(r.fences), func(i int) bool { return bytes.Compare(r.fences[i][:], k[:]) >= 0 })
	if b > 0 {
		b-- // equal keys may start in the block before the first fence >= k
	}
	var out []int64
	buf := make([]byte, runBlock*runEntrySize)
	for ; b < len(r.fences); b++ {
		lo, hi := b*runBlock, min((b+1)*runBlock, r.n)
		p := buf[:(hi-lo)*runEntrySize]
		if _, err := r.f.ReadAt(p, int64(lo)*runEntrySize); err != nil {
			return nil, fmt.Errorf("%w: read index run: %w", ErrUnavailable, err)
		}
		for ; len(p) > 0; p = p[runEntrySize:] {
			switch c := bytes.Compare(p[:16], k[:]); {
			case c < 0:
				continue
			case c > 0:
				return out, nil
			}
			out = append(out, int64(binary.BigEndian.Uint64(p[16:24])))
		}
	}
	return out, nil
}

// runWriter streams sorted entries into a new run file.
type runWriter struct {
	r   *idRun
	w   *bufio.Writer
	buf [runEntrySize]byte
}

func (w *runWriter) add(e runEntry) error {
	if w.r.n%runBlock == 0 {
		w.r.fences = append(w.r.fences, e.key)
	}
	w.r.last = e.key
	copy(w.buf[:16], e.key[:])
	binary.BigEndian.PutUint64(w.buf[16:], uint64(e.off))
	w.r.n++
	_, err := w.w.Write(w.buf[:])
	return err
}

// diskIDIndex maps ids to record offsets: a bounded in-memory window over
// immutable sorted runs. Only the ledger's writer (or Open) calls put and
// flush; any goroutine calls get.
//
// A full window is frozen (read-only) and written as a run by the merger
// goroutine, not by the writer: sorting and writing 65,536 entries took
// 24–30 ms, during which every commit waited (seen in a soak's log). Lookups
// read frozen windows until their run replaces them.
type diskIDIndex struct {
	fs     FS
	dir    string
	name   string
	window int
	log    zerolog.Logger

	seqMu sync.Mutex // guards seq (writer and merger name files)
	seq   int
	runMu sync.Mutex // serialises writeFrozen (merger, or writer under backlog)

	mu     sync.RWMutex // guards win, frozen, runs, total; lock order: Ledger.mu, then mu
	win    idIndex
	frozen []idIndex // full windows not yet written as runs, oldest first; never changed
	runs   []*idRun  // oldest first; all older than frozen
	total  int

	mergeCh chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func newDiskIDIndex(fs FS, dir, name string, window int, log zerolog.Logger) *diskIDIndex {
	x := &diskIDIndex{
		fs: fs, dir: dir, name: name, window: window, log: log,
		win:     newIDIndex(),
		mergeCh: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go x.merger()
	return x
}

func (x *diskIDIndex) put(id string, off int64) {
	x.mu.Lock()
	x.win.put(id, off)
	x.total++
	x.mu.Unlock()
}

func (x *diskIDIndex) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.total
}

// get returns the newest offset stored for id that match accepts (match
// reads the record and checks it holds id). Window entries are exact ids
// and accepted as they are.
func (x *diskIDIndex) get(id string, match func(off int64) (bool, error)) (int64, bool, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if off, ok := x.win.get(id); ok {
		return off, true, nil
	}
	for i := len(x.frozen) - 1; i >= 0; i-- {
		if off, ok := x.frozen[i].get(id); ok {
			return off, true, nil
		}
	}
	k := indexKey(id)
	for i := len(x.runs) - 1; i >= 0; i-- {
		offs, err := x.runs[i].find(k)
		if err != nil {
			return 0, false, err
		}
		for j := len(offs) - 1; j >= 0; j-- {
			ok, err := match(offs[j])
			if err != nil || ok {
				return offs[j], ok, err
			}
		}
	}
	return 0, false, nil
}

func (x *diskIDIndex) nextPath() string {
	x.seqMu.Lock()
	x.seq++
	n := x.seq
	x.seqMu.Unlock()
	return filepath.Join(x.dir, fmt.Sprintf("%s-%08d.run", x.name, n))
}

func (x *diskIDIndex) createRun() (*runWriter, error) {
	path := x.nextPath()
	f, err := x.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return &runWriter{r: &idRun{f: f, path: path}, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

func (x *diskIDIndex) discard(r *idRun) {
	r.f.Close()
	if err := x.fs.Remove(r.path); err != nil {
		x.log.Warn().Err(err).Str("file", filepath.Base(r.path)).Msg("remove index run")
	}
}

// maxFrozen bounds the full windows waiting for the merger. When it is
// behind (Open rebuilding a long ledger), the writer writes the run itself
// rather than hold ever more windows in memory.
const maxFrozen = 2

// flush freezes a full window for the merger to write as a run. Only the
// writer (or Open) calls it: it is the only goroutine that changes the
// window.
func (x *diskIDIndex) flush() {
	if x.win.len() < x.window {
		return
	}
	x.mu.Lock()
	x.frozen = append(x.frozen, x.win)
	x.win = newIDIndex()
	backlog := len(x.frozen) > maxFrozen
	x.mu.Unlock()
	if backlog {
		x.writeFrozen()
	}
	select {
	case x.mergeCh <- struct{}{}:
	default:
	}
}

// writeFrozen writes the frozen windows as runs, oldest first, each
// replacing its window once written. A failed write keeps the window
// (memory grows, lookups stay right) and is retried at the next flush.
// The merger and, under backlog, the writer call it; runMu makes them
// take turns so runs stay in order.
func (x *diskIDIndex) writeFrozen() {
	x.runMu.Lock()
	defer x.runMu.Unlock()
	for {
		x.mu.RLock()
		if len(x.frozen) == 0 {
			x.mu.RUnlock()
			return
		}
		w := x.frozen[0]
		x.mu.RUnlock()
		entries := make([]runEntry, 0, w.len())
		for k, off := range w.uu {
			entries = append(entries, runEntry{k, off})
		}
		for id, off := range w.other {
			entries = append(entries, runEntry{indexKey(id), off})
		}
		slices.SortFunc(entries, compareEntries)
		r, err := x.writeRun(entries)
		if err != nil {
			x.log.Error().Err(err).Str("index", x.name).Msg("write index run; keeping the window in memory")
			return
		}
		x.mu.Lock()
		x.runs = append(x.runs, r)
		x.frozen = slices.Delete(x.frozen, 0, 1)
		x.mu.Unlock()
	}
}

func (x *diskIDIndex) writeRun(entries []runEntry) (*idRun, error) {
	rw, err := x.createRun()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if err = rw.add(e); err != nil {
			break
		}
	}
	return x.finish(rw, err)
}

// finish flushes a run that was written without error (err == nil) and
// returns it; otherwise, or if the flush fails, it removes the file.
func (x *diskIDIndex) finish(rw *runWriter, err error) (*idRun, error) {
	if err == nil {
		err = rw.w.Flush()
	}
	if err != nil {
		x.discard(rw.r)
		return nil, err
	}
	return rw.r, nil
}

// merger writes frozen windows as runs, then combines adjacent runs while
// an older run is at most twice the size of the next one, so run sizes
// grow geometrically.
func (x *diskIDIndex) merger() {
	defer close(x.done)
	for {
		select {
		case <-x.mergeCh:
		case <-x.stop:
			return
		}
		x.writeFrozen()
		for {
			a, b := x.pickMerge()
			if a == nil {
				break
			}
			m, err := x.merge(a, b)
			if errors.Is(err, errMergeStopped) {
				return
			}
			if err != nil {
				x.log.Error().Err(err).Str("index", x.name).Msg("merge index runs")
				break
			}
			x.mu.Lock()
			i := slices.Index(x.runs, a)
			x.runs = slices.Replace(x.runs, i, i+2, m)
			x.mu.Unlock()
			x.discard(a)
			x.discard(b)
		}
	}
}

func (x *diskIDIndex) pickMerge() (*idRun, *idRun) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i := len(x.runs) - 2; i >= 0; i-- {
		if x.runs[i].n <= 2*x.runs[i+1].n {
			return x.runs[i], x.runs[i+1]
		}
	}
	return nil, nil
}

// runReader reads a run's entries in order.
type runReader struct {
	r   *bufio.Reader
	cur runEntry
	ok  bool
	err error
}

func newRunReader(r *idRun) *runReader {
	rr := &runReader{r: bufio.NewReaderSize(io.NewSectionReader(r.f, 0, int64(r.n)*runEntrySize), 64<<10)}
	rr.next()
	return rr
}

func (rr *runReader) next() {
	var b [runEntrySize]byte
	if _, err := io.ReadFull(rr.r, b[:]); err != nil {
		rr.ok = false
		if !errors.Is(err, io.EOF) {
			rr.err = err
		}
		return
	}
	copy(rr.cur.key[:], b[:16])
	rr.cur.off = int64(binary.BigEndian.Uint64(b[16:]))
	rr.ok = true
}

func (x *diskIDIndex) merge(a, b *idRun) (*idRun, error) {
	rw, err := x.createRun()
	if err != nil {
		return nil, err
	}
	ra, rb := newRunReader(a), newRunReader(b)
	for ra.ok || rb.ok {
		src := ra
		if !ra.ok || (rb.ok && compareEntries(rb.cur, ra.cur) < 0) {
			src = rb
		}
		if err = rw.add(src.cur); err != nil {
			break
		}
		src.next()
		if rw.r.n%mergeCheckEvery == 0 {
			select {
			case <-x.stop:
				err = errMergeStopped
			default:
			}
			if err != nil {
				break
			}
		}
	}
	if err == nil {
		err = errors.Join(ra.err, rb.err)
	}
	if err == nil && rw.r.n != a.n+b.n {
		err = fmt.Errorf("merged %d entries, want %d", rw.r.n, a.n+b.n)
	}
	return x.finish(rw, err)
}

// close stops the merger and closes the run files (they are deleted by the
// next Open).
func (x *diskIDIndex) close() {
	close(x.stop)
	<-x.done
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, r := range x.runs {
		r.f.Close()
	}
	x.runs = nil
}

// auditSpill holds the audit entries older than the in-memory window, in
// seq order, 24 bytes each. Written only by the writer (or Open); read
// with ReadAt under Ledger.mu.
type auditSpill struct {
	f       File
	n       int  // entries on disk; guarded by Ledger.mu
	broken  bool // a write failed: the file state is unknown, stop spilling
	flushAt int  // writer-owned
}

func encodeAuditEntry(b []byte, e *auditEntry) {
	binary.BigEndian.PutUint64(b[0:], uint64(e.off))
	binary.BigEndian.PutUint64(b[8:], uint64(e.ms))
	binary.BigEndian.PutUint16(b[16:], e.principal)
	binary.BigEndian.PutUint16(b[18:], e.actionID)
	binary.BigEndian.PutUint16(b[20:], e.decision)
	b[22], b[23] = 0, 0
}

func decodeAuditEntry(b []byte) auditEntry {
	return auditEntry{
		off:       int64(binary.BigEndian.Uint64(b[0:])),
		ms:        int64(binary.BigEndian.Uint64(b[8:])),
		principal: binary.BigEndian.Uint16(b[16:]),
		actionID:  binary.BigEndian.Uint16(b[18:]),
		decision:  binary.BigEndian.Uint16(b[20:]),
	}
}

// readBack calls fn for the spilled entries newest first until fn returns
// false. Ledger.mu must be held (read).
func (s *auditSpill) readBack(fn func(e *auditEntry) (bool, error)) error {
	if s == nil {
		return nil
	}
	buf := make([]byte, auditReadEntries*auditEntrySize)
	for end := s.n; end > 0; {
		lo := max(0, end-auditReadEntries)
		p := buf[:(end-lo)*auditEntrySize]
		if _, err := s.f.ReadAt(p, int64(lo)*auditEntrySize); err != nil {
			return fmt.Errorf("%w: read audit index: %w", ErrUnavailable, err)
		}
		for i := end - lo - 1; i >= 0; i-- {
			e := decodeAuditEntry(p[i*auditEntrySize:])
			more, err := fn(&e)
			if err != nil || !more {
				return err
			}
		}
		end = lo
	}
	return nil
}

// openIndexes deletes the index files of an earlier run and creates empty
// indexes; recover then fills them from the ledger.
func (l *Ledger) openIndexes() error {
	dir := filepath.Join(l.cfg.Dir, indexDirName)
	if err := l.fs.RemoveAll(dir); err != nil {
		return fmt.Errorf("receipts: remove old index files: %w", err)
	}
	if err := l.fs.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("receipts: create index dir: %w", err)
	}
	f, err := l.fs.OpenFile(filepath.Join(dir, "audit.idx"), os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("receipts: create audit index: %w", err)
	}
	w := l.cfg.indexWindow
	l.spill = &auditSpill{f: f, flushAt: w}
	l.byID = newDiskIDIndex(l.fs, dir, "receipt", w, l.log)
	l.byApproval = newDiskIDIndex(l.fs, dir, "approval", w, l.log)
	return nil
}

func (l *Ledger) closeIndexes() {
	l.byID.close()
	l.byApproval.close()
	l.spill.f.Close()
}

// flushIndexes moves full in-memory windows to the index files. Only the
// writer (or Open) calls it, without holding mu.
func (l *Ledger) flushIndexes() {
	l.byID.flush()
	l.byApproval.flush()
	s := l.spill
	n := len(l.audit.entries)
	if s.broken || n < s.flushAt {
		return
	}
	buf := make([]byte, n*auditEntrySize)
	for i := range l.audit.entries {
		encodeAuditEntry(buf[i*auditEntrySize:], &l.audit.entries[i])
	}
	if _, err := s.f.Write(buf); err != nil {
		// The file may hold part of the write: stop spilling until
		// reopened (the window keeps growing; queries stay right).
		s.broken = true
		l.log.Error().Err(err).Msg("write audit index; keeping audit entries in memory")
		return
	}
	l.mu.Lock()
	s.n += n
	l.audit.entries = l.audit.entries[:0]
	l.mu.Unlock()
}

// recordAtLocked reads and decodes the committed record at off for an
// index check. An offset outside the committed ledger, or bytes that are
// not a record, give a nil meta (no match); a read error is returned (a
// lookup fails closed).
// l.mu must be held (read).
func (l *Ledger) recordAtLocked(off int64) (json.RawMessage, *recordMeta, error) {
	if off < 0 || off >= l.committed {
		return nil, nil, nil
	}
	raw, err := l.readLocked(off)
	if errors.Is(err, errNotRecord) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var m recordMeta
	if json.Unmarshal(raw, &m) != nil {
		return nil, nil, nil
	}
	return raw, &m, nil
}
