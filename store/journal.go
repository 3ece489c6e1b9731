package store

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendLine appends ops to dst as one journal line: the JSON array that
// json.Marshal(ops) produces, then '\n'. The per-execute ops (replay
// entries, grant markers, buckets, session counters) are written field by field
// without reflection; idempotency records, approvals, standing approvals
// and learned domains are rare and go through json.Marshal.
//
// The output is byte-identical to json.Marshal: journals written before
// this encoder existed, and lines written by it, read alike.
// TestJournalLineMatchesMarshal and FuzzJournalString hold it to that, and
// fail when a field is added to Session without being added here.
func appendLine(dst []byte, ops []jop) ([]byte, error) {
	dst = append(dst, '[')
	for i := range ops {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendOp(dst, &ops[i]); err != nil {
			return dst, err
		}
	}
	return append(dst, ']', '\n'), nil
}

// appendOp writes o's fields in jop's declaration order, leaving out the
// ones its tags omit.
func appendOp(dst []byte, o *jop) ([]byte, error) {
	var err error
	dst = append(dst, `{"t":`...)
	dst = appendString(dst, o.T)
	if o.K != "" {
		dst = append(dst, `,"k":`...)
		dst = appendString(dst, o.K)
	}
	if o.N != 0 {
		dst = append(dst, `,"n":`...)
		dst = strconv.AppendInt(dst, o.N, 10)
	}
	if o.C != 0 {
		dst = append(dst, `,"c":`...)
		dst = strconv.AppendInt(dst, o.C, 10)
	}
	if !o.E.IsZero() {
		dst = append(dst, `,"e":`...)
		if dst, err = appendTime(dst, o.E); err != nil {
			return dst, err
		}
	}
	if o.S != nil {
		dst = append(dst, `,"s":`...)
		if dst, err = appendSession(dst, o.S); err != nil {
			return dst, err
		}
	}
	if o.I != nil {
		if dst, err = appendMarshal(dst, `,"i":`, o.I); err != nil {
			return dst, err
		}
	}
	if o.A != nil {
		if dst, err = appendMarshal(dst, `,"a":`, o.A); err != nil {
			return dst, err
		}
	}
	if o.P != nil {
		if dst, err = appendMarshal(dst, `,"p":`, o.P); err != nil {
			return dst, err
		}
	}
	if o.L != nil {
		if dst, err = appendMarshal(dst, `,"l":`, o.L); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendSession writes s as json.Marshal does, fields in Session's
// declaration order.
func appendSession(dst []byte, s *Session) ([]byte, error) {
	var err error
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, s.ID)
	dst = append(dst, `,"principal":`...)
	dst = appendString(dst, s.Principal)
	dst = append(dst, `,"jkt":`...)
	dst = appendString(dst, s.JKT)
	if s.AgentID != "" {
		dst = append(dst, `,"agent_id":`...)
		dst = appendString(dst, s.AgentID)
	}
	dst = append(dst, `,"scopes":`...)
	if s.Scopes == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i, sc := range s.Scopes {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, sc)
		}
		dst = append(dst, ']')
	}
	if s.MaxCalls != nil {
		dst = append(dst, `,"max_calls":`...)
		dst = strconv.AppendInt(dst, *s.MaxCalls, 10)
	}
	if s.MaxCostCents != nil {
		dst = append(dst, `,"max_cost_usd_cents":`...)
		dst = strconv.AppendInt(dst, *s.MaxCostCents, 10)
	}
	for _, f := range [...]struct {
		name string
		t    time.Time
	}{{`,"created_at":`, s.CreatedAt}, {`,"max_expires_at":`, s.MaxExpiresAt}, {`,"lease_expires_at":`, s.LeaseExpiresAt}} {
		dst = append(dst, f.name...)
		if dst, err = appendTime(dst, f.t); err != nil {
			return dst, err
		}
	}
	dst = append(dst, `,"principal_epoch":`...)
	dst = strconv.AppendInt(dst, s.PrincipalEpoch, 10)
	dst = append(dst, `,"global_epoch":`...)
	dst = strconv.AppendInt(dst, s.GlobalEpoch, 10)
	dst = append(dst, `,"revoked":`...)
	dst = strconv.AppendBool(dst, s.Revoked)
	dst = append(dst, `,"calls_used":`...)
	dst = strconv.AppendInt(dst, s.CallsUsed, 10)
	dst = append(dst, `,"cost_used_usd_cents":`...)
	dst = strconv.AppendInt(dst, s.CostUsedCents, 10)
	return append(dst, '}'), nil
}

// appendMarshal writes name and then v through json.Marshal.
func appendMarshal(dst []byte, name string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(append(dst, name...), b...), nil
}

// appendTime writes t as time.Time.MarshalJSON does (RFC 3339 with
// nanoseconds, quoted); like it, it fails for years outside [0,9999].
func appendTime(dst []byte, t time.Time) ([]byte, error) {
	dst = append(dst, '"')
	dst, err := t.AppendText(dst)
	if err != nil {
		return dst, err
	}
	return append(dst, '"'), nil
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string exactly as encoding/json does
// with HTML escaping on (its default): '<', '>' and '&', control
// characters, U+2028 and U+2029 are escaped, and invalid UTF-8 becomes
// U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
