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
	args, err := rawValue(in.Request.Args)
	if err != nil {
		return nil, err
	}
	standing, err := rawValue(in.StandingApproval)
	if err != nil {
		return nil, err
	}
	items := [][2]*ast.Term{
		item("principal", ast.StringTerm(in.Principal)),
		item("session_id", ast.StringTerm(in.SessionID)),
		item("agent_id", ast.StringTerm(in.AgentID)),
		item("peer", ast.ObjectTerm(
			item("uid", ast.IntNumberTerm(int(in.Peer.UID))),
			item("gid", ast.IntNumberTerm(int(in.Peer.GID))),
			item("pid", ast.IntNumberTerm(int(in.Peer.PID))),
		)),
		item("action", ast.ObjectTerm(
			item("id", ast.StringTerm(in.Action.ID)),
			item("version", ast.StringTerm(in.Action.Version)),
			item("risk_level", ast.StringTerm(in.Action.RiskLevel)),
			item("required_scopes", strArray(in.Action.RequiredScopes)),
			item("side_effects", strArray(in.Action.SideEffects)),
			item("cost_usd_cents", ast.IntNumberTerm(int(in.Action.CostCents))),
			item("egress", ast.ObjectTerm(
				item("profile", ast.StringTerm(in.Action.Egress.Profile)),
				item("allowed_domains", strArray(in.Action.Egress.AllowedDomains)),
				item("learned_domains", strArray(in.Action.Egress.LearnedDomains)),
			)),
		)),
		item("request", ast.ObjectTerm(
			item("args", ast.NewTerm(args)),
			item("hash", ast.StringTerm(in.Request.Hash)),
			item("size_bytes", ast.IntNumberTerm(in.Request.SizeBytes)),
			item("target_hosts", strArray(in.Request.TargetHosts)),
			item("unresolved_domains", strArray(in.Request.UnresolvedDomains)),
		)),
		item("lease", ast.ObjectTerm(
			item("scopes", strArray(in.Lease.Scopes)),
			item("expires_at", ast.StringTerm(in.Lease.ExpiresAt)),
		)),
		item("budget", ast.ObjectTerm(
			item("calls_remaining", optInt(in.Budget.CallsRemaining)),
			item("cost_remaining_usd_cents", optInt(in.Budget.CostRemaining)),
		)),
		item("time", ast.ObjectTerm(
			item("unix", ast.IntNumberTerm(int(in.Time.Unix))),
			item("rfc3339", ast.StringTerm(in.Time.RFC3339)),
			item("weekday", ast.StringTerm(in.Time.Weekday)),
			item("hour_utc", ast.IntNumberTerm(in.Time.HourUTC)),
		)),
		item("standing_approval", ast.NewTerm(standing)),
	}
	if a := in.Approval; a != nil {
		items = append(items, item("approval", ast.ObjectTerm(
			item("approval_id", ast.StringTerm(a.ApprovalID)),
			item("approved_by", ast.StringTerm(a.ApprovedBy)),
		)))
	}
	return ast.NewObject(items...), nil
}

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
