package latchgate_test

import data.latchgate

base := {
	"principal": "agent:a",
	"action": {"id": "echo", "risk_level": "low", "required_scopes": ["tools:call"]},
	"request": {"unresolved_domains": []},
	"lease": {"scopes": ["tools:call"]},
}

acl_all := {"*": {"allowed_actions": ["*"]}}

test_low_risk_allowed if {
	d := latchgate.decision with input as base with data.acl as acl_all
	d.allow
	not d.pending_approval
	d.deny_reasons == []
}

test_default_acl_allows_echo_only if {
	d := latchgate.decision with input as base with data.acl as {"*": {"allowed_actions": ["echo"]}}
	d.allow
	other := json.patch(base, [{"op": "replace", "path": "/action/id", "value": "http_post"}])
	d2 := latchgate.decision with input as other with data.acl as {"*": {"allowed_actions": ["echo"]}}
	not d2.allow
	"principal_not_allowed" in d2.deny_reasons
}

test_principal_entry_beats_wildcard if {
	acl := {"*": {"allowed_actions": ["*"]}, "agent:a": {"allowed_actions": ["other"]}}
	d := latchgate.decision with input as base with data.acl as acl
	not d.allow
	d.deny_reasons == ["principal_not_allowed"]
}

test_missing_tools_call_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/lease/scopes", "value": ["audit:read"]}])
	d := latchgate.decision with input as inp with data.acl as acl_all
	not d.allow
	"missing_scope:tools:call" in d.deny_reasons
}

test_missing_required_scope_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/action/required_scopes", "value": ["tools:call", "github:write"]}])
	d := latchgate.decision with input as inp with data.acl as acl_all
	not d.allow
	d.deny_reasons == ["missing_scope:github:write"]
}

test_high_risk_pending if {
	inp := json.patch(base, [{"op": "replace", "path": "/action/risk_level", "value": "high"}])
	d := latchgate.decision with input as inp with data.acl as acl_all
	not d.allow
	d.pending_approval
}

test_critical_risk_pending if {
	inp := json.patch(base, [{"op": "replace", "path": "/action/risk_level", "value": "critical"}])
	d := latchgate.decision with input as inp with data.acl as acl_all
	d.pending_approval
}

test_unresolved_domain_pending if {
	inp := json.patch(base, [{"op": "replace", "path": "/request/unresolved_domains", "value": ["example.org"]}])
	d := latchgate.decision with input as inp with data.acl as acl_all
	d.pending_approval
	not d.allow
}

test_operator_approval_allows_high_risk if {
	inp := json.patch(base, [
		{"op": "replace", "path": "/action/risk_level", "value": "high"},
		{"op": "add", "path": "/approval", "value": {"approval_id": "x", "approved_by": "uid:0"}},
	])
	d := latchgate.decision with input as inp with data.acl as acl_all
	d.allow
	not d.pending_approval
}

test_standing_approval_allows_high_risk if {
	inp := json.patch(base, [
		{"op": "replace", "path": "/action/risk_level", "value": "high"},
		{"op": "add", "path": "/standing_approval", "value": {"id": "s1"}},
	])
	d := latchgate.decision with input as inp with data.acl as acl_all
	d.allow
}

test_null_approval_does_not_allow if {
	inp := json.patch(base, [
		{"op": "replace", "path": "/action/risk_level", "value": "high"},
		{"op": "add", "path": "/approval", "value": null},
		{"op": "add", "path": "/standing_approval", "value": null},
	])
	d := latchgate.decision with input as inp with data.acl as acl_all
	not d.allow
	d.pending_approval
}

test_denied_never_pending if {
	inp := json.patch(base, [
		{"op": "replace", "path": "/action/risk_level", "value": "high"},
		{"op": "replace", "path": "/lease/scopes", "value": []},
	])
	d := latchgate.decision with input as inp with data.acl as acl_all
	not d.allow
	not d.pending_approval
}
