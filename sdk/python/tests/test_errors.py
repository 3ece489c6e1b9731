from __future__ import annotations

from typing import Any

import pytest

from latchgate import (
    LatchGateActionFailed,
    LatchGateApprovalRequired,
    LatchGateAuthError,
    LatchGateBudgetExhausted,
    LatchGateDenied,
    LatchGateError,
    LatchGateLeaseExpired,
    LatchGateNotConnected,
    LatchGateReplayDetected,
    LatchGateTransportError,
    LatchGateUnavailable,
)
from latchgate.errors import error_from_response

# (name, status, code, expected class) — PROTOCOL §4 mapping table, every row.
MAPPING: list[tuple[str, int, str, type[LatchGateError]]] = [
    ("401 lease_expired", 401, "lease_expired", LatchGateLeaseExpired),
    ("401 replay_detected", 401, "replay_detected", LatchGateReplayDetected),
    ("401 invalid_lease", 401, "invalid_lease", LatchGateAuthError),
    ("401 invalid_dpop", 401, "invalid_dpop", LatchGateAuthError),
    ("401 lease_revoked", 401, "lease_revoked", LatchGateAuthError),
    ("401 missing_auth_header", 401, "missing_auth_header", LatchGateAuthError),
    ("403 budget_exhausted", 403, "budget_exhausted", LatchGateBudgetExhausted),
    ("400 invalid_json", 400, "invalid_json", LatchGateDenied),
    ("403 policy_denied", 403, "policy_denied", LatchGateDenied),
    ("403 scope_not_permitted", 403, "scope_not_permitted", LatchGateDenied),
    ("404 action_not_found", 404, "action_not_found", LatchGateDenied),
    ("405 method_not_allowed", 405, "method_not_allowed", LatchGateDenied),
    ("409 idempotency_conflict", 409, "idempotency_conflict", LatchGateDenied),
    ("409 idempotency_in_progress", 409, "idempotency_in_progress", LatchGateUnavailable),
    ("413 payload_too_large", 413, "payload_too_large", LatchGateDenied),
    ("415 unsupported_media_type", 415, "unsupported_media_type", LatchGateDenied),
    ("422 schema_violation", 422, "schema_violation", LatchGateDenied),
    ("429 rate_limited", 429, "rate_limited", LatchGateUnavailable),
    ("503 store_unavailable", 503, "store_unavailable", LatchGateUnavailable),
    ("503 policy_unavailable", 503, "policy_unavailable", LatchGateUnavailable),
    ("502 action_execution_failed", 502, "action_execution_failed", LatchGateActionFailed),
    ("502 egress_denied", 502, "egress_denied", LatchGateActionFailed),
    ("500 internal_error", 500, "internal_error", LatchGateError),
]


@pytest.mark.parametrize(("name", "status", "code", "cls"), MAPPING, ids=[m[0] for m in MAPPING])
def test_mapping(name: str, status: int, code: str, cls: type[LatchGateError]) -> None:
    err = error_from_response(status, {"error": code, "message": "m"})
    assert type(err) is cls, f"map({name}) = {type(err).__name__}, want {cls.__name__}"
    assert err.code == code
    assert err.status == status


def test_hierarchy() -> None:
    for cls in (
        LatchGateDenied,
        LatchGateApprovalRequired,
        LatchGateBudgetExhausted,
        LatchGateAuthError,
        LatchGateUnavailable,
        LatchGateTransportError,
        LatchGateNotConnected,
        LatchGateActionFailed,
    ):
        assert issubclass(cls, LatchGateError)
    assert issubclass(LatchGateLeaseExpired, LatchGateAuthError)
    assert issubclass(LatchGateReplayDetected, LatchGateAuthError)


def test_denied_fields() -> None:
    body: dict[str, Any] = {
        "error": "policy_denied",
        "message": "denied",
        "deny_reason": "no_rule_allowed",
        "action_id": "http_fetch",
        "remediation": "ask an operator",
    }
    err = error_from_response(403, body)
    assert isinstance(err, LatchGateDenied)
    assert (err.action_id, err.code, err.reason, err.remediation) == (
        "http_fetch",
        "policy_denied",
        "no_rule_allowed",
        "ask an operator",
    )


def test_denied_action_id_falls_back_to_call() -> None:
    err = error_from_response(404, {"error": "action_not_found", "message": "m"}, action_id="x")
    assert isinstance(err, LatchGateDenied)
    assert err.action_id == "x"


def test_approval_required_fields() -> None:
    err = error_from_response(
        202, {"decision": "pending_approval", "approval_id": "a1", "request_hash": "sha256:00"}
    )
    assert isinstance(err, LatchGateApprovalRequired)
    assert err.approval_id == "a1"
    assert err.request_hash == "sha256:00"


@pytest.mark.parametrize(
    ("header", "body", "want"),
    [
        ("3", {}, 3.0),
        (None, {"retry_after_seconds": 7}, 7.0),
        ("2", {"retry_after_seconds": 9}, 2.0),
        ("garbage", {}, None),
        (None, {}, None),
    ],
)
def test_unavailable_retry_after(
    header: str | None, body: dict[str, Any], want: float | None
) -> None:
    err = error_from_response(429, {"error": "rate_limited", **body}, retry_after_header=header)
    assert isinstance(err, LatchGateUnavailable)
    assert err.retry_after == want


def test_action_failed_fields() -> None:
    err = error_from_response(
        502, {"error": "egress_denied", "message": "egress refused", "receipt_id": "r1"}
    )
    assert isinstance(err, LatchGateActionFailed)
    assert (err.receipt_id, err.reason) == ("r1", "egress refused")
