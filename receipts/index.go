package receipts

import (
	"encoding/hex"
	"math"
	"strings"
)

// The ledger file is the truth; these in-memory indexes are rebuilt from it
// by Open. They hold no record bytes and no per-record strings: one receipt
// and one decision record cost about 60 bytes here (TestIndexMemoryPerRecord
// measures it), where string-keyed maps and per-entry strings kept about
// 220. The ledger keeps only a bounded window of them in memory; older
// entries go to index files (diskindex.go), so past the window an execute
// costs well under a byte of heap (TestDiskIndexMemoryPerRecord).

// uuidKey is a receipt or approval id in its 16-byte form.
type uuidKey [16]byte

// parseUUID parses a canonical (lowercase, hyphenated) UUID. Only that form
// is accepted, so a key maps back to exactly one id string; any other id
// goes to the string-keyed fallback map.
func parseUUID(s string) (uuidKey, bool) {
	var k uuidKey
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return k, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := lowerHex(s[i])
		lo, ok2 := lowerHex(s[i+1])
		if !ok1 || !ok2 {
			return k, false
		}
		k[j] = hi<<4 | lo
		j++
		i += 2
	}
	return k, true
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// String formats k as a canonical UUID.
func (k uuidKey) String() string {
	h := hex.EncodeToString(k[:])
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]}, "-")
}

// idIndex maps an id to the file offset of its record's bytes (the record
// ends at the next "}\n"; see readRecordAt). Canonical UUIDs, which is what
// the gate generates, take 24 bytes of map slot; other ids a string-keyed
// map.
type idIndex struct {
	uu    map[uuidKey]int64
	other map[string]int64
}

func newIDIndex() idIndex {
	return idIndex{uu: map[uuidKey]int64{}, other: map[string]int64{}}
}

func (x *idIndex) get(id string) (int64, bool) {
	if k, ok := parseUUID(id); ok {
		v, ok := x.uu[k]
		return v, ok
	}
	v, ok := x.other[id]
	return v, ok
}

func (x *idIndex) put(id string, v int64) {
	if k, ok := parseUUID(id); ok {
		x.uu[k] = v
		return
	}
	x.other[strings.Clone(id)] = v
}

func (x *idIndex) len() int { return len(x.uu) + len(x.other) }

// noName marks an audit field whose value was not interned (the table was
// full when it was first seen): filters on it read the record from disk.
const noName = math.MaxUint16

// DefaultInternCap is Config.AuditInternCap's default. Deployments have a
// few hundred principals and actions; past the cap, new values are not
// interned and queries filtering on them read the candidate records from
// the file.
const DefaultInternCap = 4096

// internTable gives each distinct string a small id, up to a cap.
type internTable struct {
	ids   map[string]uint16
	names []string
	cap   int
}

func newInternTable(limit int) internTable {
	return internTable{ids: map[string]uint16{}, cap: min(limit, noName)}
}

// intern returns s's id, adding s while the table has room (noName when
// it is full).
func (t *internTable) intern(s string) uint16 {
	if id, ok := t.ids[s]; ok {
		return id
	}
	if len(t.names) >= t.cap {
		return noName
	}
	id := uint16(len(t.names))
	s = strings.Clone(s) // never pin a whole record's bytes
	t.ids[s] = id
	t.names = append(t.names, s)
	return id
}

// fieldFilter is one query filter resolved against an intern table.
type fieldFilter struct {
	on    bool   // the query filters on this field
	id    uint16 // the value's id, noName when the value is not interned
	value string
}

func (t *internTable) filter(v string) fieldFilter {
	if v == "" {
		return fieldFilter{}
	}
	id, ok := t.ids[v]
	if !ok {
		id = noName
	}
	return fieldFilter{on: true, id: id, value: v}
}

// match reports whether an entry's field id can match: yes/no when decided
// from the ids alone, or needRead when the record must be read. A value is
// interned the first time it is seen if there is room, and never later, so
// an entry without an id (noName) never holds an interned value.
func (f fieldFilter) match(id uint16) matchResult {
	switch {
	case !f.on:
		return matchYes
	case f.id != noName:
		return boolMatch(id == f.id)
	case id != noName:
		return matchNo
	}
	return matchRead
}

type matchResult uint8

const (
	matchNo matchResult = iota
	matchYes
	matchRead
)

func boolMatch(b bool) matchResult {
	if b {
		return matchYes
	}
	return matchNo
}

// auditEntry indexes one audit record for queries: 24 bytes.
type auditEntry struct {
	off       int64 // offset of the record bytes in the ledger file
	ms        int64 // record time, Unix milliseconds
	principal uint16
	actionID  uint16
	decision  uint16
}

// auditIndex is the audit chain's index, in seq order.
type auditIndex struct {
	entries    []auditEntry
	principals internTable
	actions    internTable
	decisions  internTable
}

func newAuditIndex(limit int) auditIndex {
	return auditIndex{principals: newInternTable(limit), actions: newInternTable(limit), decisions: newInternTable(limit)}
}

func (x *auditIndex) add(off int64, m *recordMeta) {
	var ms int64
	if t, err := ParseTime(m.Time); err == nil {
		ms = t.UnixMilli()
	}
	x.entries = append(x.entries, auditEntry{
		off: off, ms: ms,
		principal: x.principals.intern(m.Principal),
		actionID:  x.actions.intern(m.ActionID),
		decision:  x.decisions.intern(m.Decision),
	})
}

// auditFilter is an AuditQuery resolved against the index.
type auditFilter struct {
	principal, actionID, decision fieldFilter
	after, before                 int64
	hasAfter, hasBefore           bool
}

func (x *auditIndex) filter(q AuditQuery) auditFilter {
	f := auditFilter{
		principal: x.principals.filter(q.Principal),
		actionID:  x.actions.filter(q.ActionID),
		decision:  x.decisions.filter(q.Decision),
	}
	if !q.After.IsZero() {
		f.after, f.hasAfter = q.After.UnixMilli(), true
	}
	if !q.Before.IsZero() {
		f.before, f.hasBefore = q.Before.UnixMilli(), true
	}
	return f
}

// match decides e from the index alone (matchYes, matchNo) or asks for
// the record to be read (matchRead, then use matchRecord).
func (f *auditFilter) match(e *auditEntry) matchResult {
	if (f.hasAfter && e.ms <= f.after) || (f.hasBefore && e.ms >= f.before) {
		return matchNo
	}
	res := matchYes
	for _, r := range [3]matchResult{f.principal.match(e.principal), f.actionID.match(e.actionID), f.decision.match(e.decision)} {
		switch r {
		case matchNo:
			return matchNo
		case matchRead:
			res = matchRead
		}
	}
	return res
}

// matchRecord checks the string filters against a record read from disk.
func (f *auditFilter) matchRecord(m *recordMeta) bool {
	return (!f.principal.on || m.Principal == f.principal.value) &&
		(!f.actionID.on || m.ActionID == f.actionID.value) &&
		(!f.decision.on || m.Decision == f.decision.value)
}
