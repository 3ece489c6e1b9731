package policy

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// inputValue converts the input to an AST value. It builds the value
// directly, member for member as the JSON form has them (a profile showed
// json.Marshal + ast.ValueFromReader at two thirds of a decision's cost);
// an input with a string that is not valid UTF-8 goes through the JSON
// form, so the policy always sees exactly what json.Marshal would give.
func inputValue(in *Input) (ast.Value, error) {
	if !in.validUTF8() {
		return inputValueJSON(in)
	}
	t, err := inputSchema.build(in)
	if err != nil {
		return nil, err
	}
	return t.Value, nil
}

// A member is one member of the input document: an object of members, or
// a leaf whose term is built from the Input. inputSchema is the one
// description of the document's shape: inputValue builds all of it, and
// the decision cache's key (appendInputKey) builds only the members on its
// paths, so the two cannot disagree.
type member struct {
	name    string
	members []member                           // an object; nil for a leaf
	leaf    func(in *Input) (*ast.Term, error) // a leaf's value
	omit    func(in *Input) bool               // when set and true, the member is absent
}

func (m *member) build(in *Input) (*ast.Term, error) {
	if m.leaf != nil {
		return m.leaf(in)
	}
	items := make([][2]*ast.Term, 0, len(m.members))
	for i := range m.members {
		c := &m.members[i]
		if c.omit != nil && c.omit(in) {
			continue
		}
		t, err := c.build(in)
		if err != nil {
			return nil, err
		}
		items = append(items, item(c.name, t))
	}
	return ast.ObjectTerm(items...), nil
}

// find builds the value at path, or reports it absent. It descends the
// schema while the path names members and builds the subtree where the
// path leaves it (a leaf, or the path's end).
func (m *member) find(in *Input, path ast.Ref) (ast.Value, bool, error) {
	for len(path) > 0 && m.leaf == nil {
		key, ok := path[0].Value.(ast.String)
		if !ok {
			return nil, false, nil // objects have only string keys
		}
		var next *member
		for i := range m.members {
			if m.members[i].name == string(key) {
				next = &m.members[i]
				break
			}
		}
		if next == nil || (next.omit != nil && next.omit(in)) {
			return nil, false, nil
		}
		m, path = next, path[1:]
	}
	t, err := m.build(in)
	if err != nil {
		return nil, false, err
	}
	if len(path) == 0 {
		return t.Value, true, nil
	}
	v, err := t.Value.Find(path)
	if err != nil {
		return nil, false, nil
	}
	return v, true, nil
}

func str(f func(in *Input) string) func(*Input) (*ast.Term, error) {
	return func(in *Input) (*ast.Term, error) { return ast.StringTerm(f(in)), nil }
}

func num(f func(in *Input) int64) func(*Input) (*ast.Term, error) {
	return func(in *Input) (*ast.Term, error) { return ast.IntNumberTerm(int(f(in))), nil }
}

func strs(f func(in *Input) []string) func(*Input) (*ast.Term, error) {
	return func(in *Input) (*ast.Term, error) { return strArray(f(in)), nil }
}

func raw(f func(in *Input) json.RawMessage) func(*Input) (*ast.Term, error) {
	return func(in *Input) (*ast.Term, error) {
		v, err := rawValue(f(in))
		if err != nil {
			return nil, err
		}
		return ast.NewTerm(v), nil
	}
}

func optNum(f func(in *Input) *int64) func(*Input) (*ast.Term, error) {
	return func(in *Input) (*ast.Term, error) { return optInt(f(in)), nil }
}

// inputSchema mirrors Input's JSON form, member for member and in order.
// TestInputValueMatchesJSON holds the two together.
var inputSchema = member{members: []member{
	{name: "principal", leaf: str(func(in *Input) string { return in.Principal })},
	{name: "session_id", leaf: str(func(in *Input) string { return in.SessionID })},
	{name: "agent_id", leaf: str(func(in *Input) string { return in.AgentID })},
	{name: "peer", members: []member{
		{name: "uid", leaf: num(func(in *Input) int64 { return in.Peer.UID })},
		{name: "gid", leaf: num(func(in *Input) int64 { return in.Peer.GID })},
		{name: "pid", leaf: num(func(in *Input) int64 { return in.Peer.PID })},
	}},
	{name: "action", members: []member{
		{name: "id", leaf: str(func(in *Input) string { return in.Action.ID })},
		{name: "version", leaf: str(func(in *Input) string { return in.Action.Version })},
		{name: "risk_level", leaf: str(func(in *Input) string { return in.Action.RiskLevel })},
		{name: "required_scopes", leaf: strs(func(in *Input) []string { return in.Action.RequiredScopes })},
		{name: "side_effects", leaf: strs(func(in *Input) []string { return in.Action.SideEffects })},
		{name: "cost_usd_cents", leaf: num(func(in *Input) int64 { return in.Action.CostCents })},
		{name: "egress", members: []member{
			{name: "profile", leaf: str(func(in *Input) string { return in.Action.Egress.Profile })},
			{name: "allowed_domains", leaf: strs(func(in *Input) []string { return in.Action.Egress.AllowedDomains })},
			{name: "learned_domains", leaf: strs(func(in *Input) []string { return in.Action.Egress.LearnedDomains })},
		}},
	}},
	{name: "request", members: []member{
		{name: "args", leaf: raw(func(in *Input) json.RawMessage { return in.Request.Args })},
		{name: "hash", leaf: str(func(in *Input) string { return in.Request.Hash })},
		{name: "size_bytes", leaf: num(func(in *Input) int64 { return int64(in.Request.SizeBytes) })},
		{name: "target_hosts", leaf: strs(func(in *Input) []string { return in.Request.TargetHosts })},
		{name: "unresolved_domains", leaf: strs(func(in *Input) []string { return in.Request.UnresolvedDomains })},
	}},
	{name: "lease", members: []member{
		{name: "scopes", leaf: strs(func(in *Input) []string { return in.Lease.Scopes })},
		{name: "expires_at", leaf: str(func(in *Input) string { return in.Lease.ExpiresAt })},
	}},
	{name: "budget", members: []member{
		{name: "calls_remaining", leaf: optNum(func(in *Input) *int64 { return in.Budget.CallsRemaining })},
		{name: "cost_remaining_usd_cents", leaf: optNum(func(in *Input) *int64 { return in.Budget.CostRemaining })},
	}},
	{name: "time", members: []member{
		{name: "unix", leaf: num(func(in *Input) int64 { return in.Time.Unix })},
		{name: "rfc3339", leaf: str(func(in *Input) string { return in.Time.RFC3339 })},
		{name: "weekday", leaf: str(func(in *Input) string { return in.Time.Weekday })},
		{name: "hour_utc", leaf: num(func(in *Input) int64 { return int64(in.Time.HourUTC) })},
	}},
	{name: "standing_approval", leaf: raw(func(in *Input) json.RawMessage { return in.StandingApproval })},
	{name: "approval", omit: func(in *Input) bool { return in.Approval == nil }, members: []member{
		{name: "approval_id", leaf: str(func(in *Input) string { return in.Approval.ApprovalID })},
		{name: "approved_by", leaf: str(func(in *Input) string { return in.Approval.ApprovedBy })},
	}},
}}

// inputValueJSON converts the input through its JSON form.
func inputValueJSON(in *Input) (ast.Value, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return ast.ValueFromReader(bytes.NewReader(b))
}

func item(k string, v *ast.Term) [2]*ast.Term { return [2]*ast.Term{ast.InternedTerm(k), v} }

// strArray is a JSON array of strings; nil is null, as json.Marshal has it.
func strArray(ss []string) *ast.Term {
	if ss == nil {
		return ast.NullTerm()
	}
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}

func optInt(p *int64) *ast.Term {
	if p == nil {
		return ast.NullTerm()
	}
	return ast.IntNumberTerm(int(*p))
}

// rawValue parses raw JSON; empty is null, as json.Marshal has it.
func rawValue(raw json.RawMessage) (ast.Value, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return ast.Null{}, nil
	}
	return ast.ValueFromReader(bytes.NewReader(raw))
}

// validUTF8 reports whether every string of in is valid UTF-8.
func (in *Input) validUTF8() bool {
	ok := true
	check := func(ss ...string) {
		for _, s := range ss {
			if !utf8.ValidString(s) {
				ok = false
			}
		}
	}
	check(in.Principal, in.SessionID, in.AgentID, in.Action.ID, in.Action.Version, in.Action.RiskLevel,
		in.Action.Egress.Profile, in.Request.Hash, in.Lease.ExpiresAt, in.Time.RFC3339, in.Time.Weekday)
	check(in.Action.RequiredScopes...)
	check(in.Action.SideEffects...)
	check(in.Action.Egress.AllowedDomains...)
	check(in.Action.Egress.LearnedDomains...)
	check(in.Request.TargetHosts...)
	check(in.Request.UnresolvedDomains...)
	check(in.Lease.Scopes...)
	if in.Approval != nil {
		check(in.Approval.ApprovalID, in.Approval.ApprovedBy)
	}
	return ok
}
