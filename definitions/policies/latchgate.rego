# LatchGate default policy.
#
# The gate evaluates data.latchgate.decision and expects
#   {"allow": bool, "pending_approval": bool, "deny_reasons": [string]}
# Rules, most restrictive first:
#   1. the principal must be in the ACL for the action (data.acl[principal],
#      with the "*" entry as fallback);
#   2. the lease must carry tools:call and every scope the action requires;
#   3. risk high/critical, or any unresolved domain, asks a human unless a
#      standing approval applies or an operator already approved;
#   4. otherwise allow.
# Budgets are not a policy rule: the gate enforces them atomically.
package latchgate

default allow := false

default pending_approval := false

decision := {
	"allow": allow,
	"pending_approval": pending_approval,
	"deny_reasons": sort(deny_reasons),
}

acl_entry := data.acl[input.principal]

acl_entry := data.acl["*"] if not data.acl[input.principal]

acl_allows if "*" in acl_entry.allowed_actions

acl_allows if input.action.id in acl_entry.allowed_actions

deny_reasons contains "principal_not_allowed" if not acl_allows

deny_reasons contains "missing_scope:tools:call" if not "tools:call" in input.lease.scopes

deny_reasons contains sprintf("missing_scope:%s", [s]) if {
	some s in input.action.required_scopes
	s != "tools:call"
	not s in input.lease.scopes
}

needs_human if input.action.risk_level in {"high", "critical"}

needs_human if count(input.request.unresolved_domains) > 0

human_decided if input.approval != null

human_decided if input.standing_approval != null

allow if {
	count(deny_reasons) == 0
	not needs_human
}

allow if {
	count(deny_reasons) == 0
	needs_human
	human_decided
}

pending_approval if {
	count(deny_reasons) == 0
	needs_human
	not human_decided
}
