"""Exception classes and the mapping from gate answers to exceptions (PROTOCOL §4).

Every exception derives from :class:`LatchGateError`. The mapping table is
implemented in :func:`error_from_response`, used by the client for every non-2xx
answer (and 202 on execute).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "LatchGateActionFailed",
    "LatchGateApprovalRequired",
    "LatchGateAuthError",
    "LatchGateBudgetExhausted",
    "LatchGateDenied",
    "LatchGateError",
    "LatchGateLeaseExpired",
    "LatchGateNotConnected",
    "LatchGateReceiptInvalid",
    "LatchGateReplayDetected",
    "LatchGateTransportError",
    "LatchGateUnavailable",
    "error_from_response",
]


class LatchGateError(Exception):
    """Base class of every LatchGate SDK error.

    ``code`` is the gate's ``error`` code when the error came from an answer,
    ``status`` the HTTP status (``None`` for local errors) and ``body`` the
    parsed JSON error body (empty when there was none).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        body: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.body: dict[str, Any] = dict(body or {})
        self.trace_id = trace_id

    def __str__(self) -> str:
        if self.code:
            return f"{self.code}: {self.message}"
        return self.message


class LatchGateDenied(LatchGateError):
    """The gate refused the request (policy, validation, not found, conflict…).

    Do not retry as-is. ``action_id`` is the action concerned (when known),
    ``code`` the gate's error code and ``reason`` the ``deny_reason`` (or the
    message when the gate gave no ``deny_reason``).
    """

    def __init__(
        self,
        message: str,
        *,
        action_id: str | None = None,
        reason: str | None = None,
        code: str | None = None,
        status: int | None = None,
        body: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, body=body, trace_id=trace_id)
        self.action_id = action_id
        self.reason = reason if reason is not None else message
        self.remediation: str | None = _opt_str(self.body.get("remediation"))


class LatchGateApprovalRequired(LatchGateError):
    """Policy holds the action for a human. Poll ``approval_id``."""

    def __init__(
        self,
        approval_id: str,
        *,
        request_hash: str | None = None,
        expires_at: str | None = None,
        trace_id: str | None = None,
        action_id: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            f"approval required: {approval_id}",
            code="pending_approval",
            status=202,
            body=body,
            trace_id=trace_id,
        )
        self.approval_id = approval_id
        self.request_hash = request_hash
        self.expires_at = expires_at
        self.action_id = action_id


class LatchGateBudgetExhausted(LatchGateError):
    """The session's budget is used up; ``connect()`` again for a fresh one."""


class LatchGateAuthError(LatchGateError):
    """The lease or the DPoP proof was refused (401); reconnect."""


class LatchGateLeaseExpired(LatchGateAuthError):
    """The lease (or the session's maximum lifetime) has elapsed."""


class LatchGateReplayDetected(LatchGateAuthError):
    """The gate saw this proof's ``jti`` before: possible replay. Never retried."""


class LatchGateUnavailable(LatchGateError):
    """Transient refusal (429, 503, 409 idempotency_in_progress); retry later.

    ``retry_after`` is the delay in seconds the gate asked for, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        status: int | None = None,
        body: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, body=body, trace_id=trace_id)
        self.retry_after = retry_after


class LatchGateTransportError(LatchGateError):
    """The gate could not be reached, or the connection failed or timed out."""


class LatchGateNotConnected(LatchGateError):
    """An authenticated call was made before ``connect()`` and no ``agent_id`` is set."""


class LatchGateActionFailed(LatchGateError):
    """The action was dispatched but failed before an answer (502).

    The side effect may have happened: never retried automatically. The
    failure is recorded in receipt ``receipt_id``; ``reason`` says what failed.
    """

    def __init__(
        self,
        message: str,
        *,
        receipt_id: str | None = None,
        reason: str | None = None,
        code: str | None = None,
        status: int | None = None,
        body: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, body=body, trace_id=trace_id)
        self.receipt_id = receipt_id
        self.reason = reason if reason is not None else message


class LatchGateReceiptInvalid(LatchGateError):
    """A receipt failed offline verification (hash, key or signature)."""


def _opt_str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def parse_retry_after(header: str | None, body: Mapping[str, Any]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds) or the
    body's ``retry_after_seconds``; ``None`` when neither is usable."""
    if header is not None:
        try:
            v = float(header.strip())
        except ValueError:
            v = -1.0
        if v >= 0 and v == v and v != float("inf"):
            return v
    raw = body.get("retry_after_seconds")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw >= 0:
        return float(raw)
    return None


def error_from_response(
    status: int,
    body: Mapping[str, Any] | None,
    *,
    retry_after_header: str | None = None,
    action_id: str | None = None,
) -> LatchGateError:
    """Map a gate answer to the SDK exception (PROTOCOL §4 mapping table).

    ``action_id`` is the action the call concerned, used when the body names none.
    """
    b: Mapping[str, Any] = body if body is not None else {}
    code = _opt_str(b.get("error")) or f"http_{status}"
    message = _opt_str(b.get("message")) or f"the gate answered HTTP {status}"
    trace_id = _opt_str(b.get("trace_id"))
    deny_reason = _opt_str(b.get("deny_reason"))
    body_action = _opt_str(b.get("action_id")) or action_id
    common: dict[str, Any] = {"code": code, "status": status, "body": b, "trace_id": trace_id}

    if status == 202:
        approval_id = _opt_str(b.get("approval_id"))
        if approval_id is None:
            return LatchGateError("202 answer without approval_id", **common)
        return LatchGateApprovalRequired(
            approval_id,
            request_hash=_opt_str(b.get("request_hash")),
            expires_at=_opt_str(b.get("expires_at")),
            trace_id=trace_id,
            action_id=body_action,
            body=b,
        )
    if status == 401:
        if code == "lease_expired":
            return LatchGateLeaseExpired(message, **common)
        if code == "replay_detected":
            return LatchGateReplayDetected(message, **common)
        return LatchGateAuthError(message, **common)
    if status == 403 and code == "budget_exhausted":
        return LatchGateBudgetExhausted(message, **common)
    if status == 409 and code == "idempotency_in_progress":
        return LatchGateUnavailable(
            message, retry_after=parse_retry_after(retry_after_header, b), **common
        )
    if status in (400, 403, 404, 405, 409, 413, 415, 422):
        return LatchGateDenied(message, action_id=body_action, reason=deny_reason, **common)
    if status in (429, 503):
        return LatchGateUnavailable(
            message, retry_after=parse_retry_after(retry_after_header, b), **common
        )
    if status == 502:
        return LatchGateActionFailed(
            message,
            receipt_id=_opt_str(b.get("receipt_id")),
            reason=deny_reason or message,
            **common,
        )
    return LatchGateError(message, **common)
