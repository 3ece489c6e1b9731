package store

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchgate/latchgate/clock"
)

// weird holds every kind of byte encoding/json escapes.
const weird = "<script>&\"\\ \x00\x1f\b\f\n\r\t\x7f \u2028\u2029 \xff\xfe é€𝄞 \xe2\x82"

// filledSession sets every field of a Session to a non-zero value through
// reflection, so a field added to Session shows up in json.Marshal's
// output and TestJournalLineMatchesMarshal fails until appendSession
// writes it too.
func filledSession(t *testing.T) *Session {
	t.Helper()
	s := &Session{}
	v := reflect.ValueOf(s).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Interface().(type) {
		case string:
			f.SetString("v" + strconv.Itoa(i))
		case int64:
			f.SetInt(int64(i + 1))
		case *int64:
			n := int64(-i - 1)
			f.Set(reflect.ValueOf(&n))
		case bool:
			f.SetBool(true)
		case time.Time:
			f.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, i, 5, time.UTC)))
		case []string:
			f.Set(reflect.ValueOf([]string{"a", "b"}))
		default:
			t.Fatalf("Session.%s has type %s, which appendSession and this test do not know; add it to both", v.Type().Field(i).Name, f.Type())
		}
	}
	return s
}

func TestJournalLineMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("x", 5*3600+30*60))
	clk := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	plain := &Session{ID: "s1", Principal: "alice", JKT: "jkt", CreatedAt: clk, MaxExpiresAt: clk, LeaseExpiresAt: clk}
	empty := *plain
	empty.Scopes = []string{}
	odd := &Session{ID: weird, Principal: weird, JKT: weird, AgentID: weird, Scopes: []string{weird, ""}, MaxCalls: ptr(0),
		MaxCostCents: ptr(-5), CreatedAt: at, MaxExpiresAt: at.In(time.UTC), LeaseExpiresAt: time.Time{}}
	appr := &Approval{ID: "a1", SessionID: "s1", Principal: weird, Args: json.RawMessage(`{"x": [1, 2]}`), CreatedAt: at, ExpiresAt: at}
	cases := []struct {
		name string
		ops  []jop
	}{
		{"replay", []jop{{T: opReplay, K: hashKey("jkt", "jti"), E: at}}},
		{"grant", []jop{
			{T: opUse, K: "0192f1d2-7c3a-7b1e-9a4f-3c2d1e0f9a8b", N: 3, C: 1 << 40},
			{T: opBucket, K: hourKey("alice", clk), N: 3, E: clk.Add(hourBucketTTL)},
			{T: opBucket, K: dayKey(weird, clk), N: -1, E: clk},
			{T: opGrant, K: "0192f1d2-7c3a-7b1e-9a4f-3c2d1e0f9a8b", E: at},
		}},
		{"session", []jop{{T: opSession, S: filledSession(t)}}},
		{"use_zero_cost", []jop{{T: opUse, K: weird, N: -1}}},
		{"session_nil_scopes", []jop{{T: opSession, S: plain}}},
		{"session_empty_scopes", []jop{{T: opSession, S: &empty}}},
		{"session_weird", []jop{{T: opSession, S: odd}}},
		{"epochs", []jop{{T: opGlobal, N: 1 << 62}, {T: opPrincipal, K: weird, N: 2}}},
		{"zero_op", []jop{{}}},
		{"deletes", []jop{{T: opIdemDel, K: "k"}, {T: opStandDel, K: "p"}, {T: opLearnDel, K: "l"}}},
		{"records", []jop{
			{T: opIdem, K: "k", I: &IdemRecord{Principal: "alice", Key: weird, Status: 200, Body: json.RawMessage(`{"a":"<b>"}`)}, E: at},
			{T: opApproval, A: appr},
			{T: opStanding, P: &Standing{ID: "p1", Principal: "alice", ActionID: "echo", ExpiresAt: at}},
			{T: opLearned, L: &LearnedDomain{ID: "l1", Principal: "alice", Host: "example.com", ExpiresAt: at}},
		}},
		{"empty_line", []jop{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, err := json.Marshal(c.ops)
			if err != nil {
				t.Fatalf("json.Marshal = %v", err)
			}
			want = append(want, '\n')
			got, err := appendLine([]byte("prefix"), c.ops)
			if err != nil {
				t.Fatalf("appendLine = %v", err)
			}
			if !bytes.Equal(got[len("prefix"):], want) {
				t.Errorf("appendLine =\n%s\nwant (json.Marshal)\n%s", got[len("prefix"):], want)
			}
		})
	}
}

// TestJournalLineRefusesWhatMarshalRefuses: a time json.Marshal cannot
// encode (year past 9999) fails the line, so the commit fails instead of
// writing a line that would not read back.
func TestJournalLineRefusesWhatMarshalRefuses(t *testing.T) {
	late := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, ops := range [][]jop{
		{{T: opReplay, K: "k", E: late}},
		{{T: opSession, S: &Session{ID: "s", CreatedAt: late}}},
	} {
		if _, err := json.Marshal(ops); err == nil {
			t.Fatalf("json.Marshal(%+v) = nil error; the test's premise is wrong", ops)
		}
		if _, err := appendLine(nil, ops); err == nil {
			t.Errorf("appendLine(%+v) = nil error, want an error like json.Marshal's", ops)
		}
	}
}

func FuzzJournalString(f *testing.F) {
	for _, s := range []string{"", "plain", weird, "\u2028", "\xed\xa0\x80", "a\x00b", "h\x00alice\x001767225600"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}

// FuzzJournalLoad: whatever bytes the journal file holds, opening the
// store either succeeds or returns an error; it never panics.
func FuzzJournalLoad(f *testing.F) {
	for _, seed := range []string{
		`[{"t":"s"}]` + "\n",
		`[{"t":"u","k":"s1","n":3,"c":5}]` + "\n",
		`[{"t":"a"},{"t":"i"},{"t":"p"},{"t":"l"}]` + "\n[]\n",
		`[{"t":"s","s":{"id":"s1","principal":"alice"}},{"t":"u","k":"s1","n":1}]` + "\n",
		`[{"t":"r","k":"x","e":"2026-01-01T00:00:00Z"}]` + "\n" + `[{"t":"g"`,
		"garbage\n[]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, journal []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, journalName), journal, 0o600); err != nil {
			t.Fatal(err)
		}
		e, err := OpenEmbedded(EmbeddedConfig{Dir: dir}, Deps{Clock: clock.NewFake(testStart()), Logger: zerolog.Nop()})
		if err == nil {
			e.Close()
		}
	})
}
