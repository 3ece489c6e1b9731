"""The async LatchGate client.

Owns: URL resolution, the ephemeral DPoP key, the lease (lazy connect and
coalesced renewal), one fresh DPoP proof per request, retries with backoff,
and the mapping of answers to exceptions. It never retries a 502 and never
retries ``execute`` without an ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import httpx

from ._target import Target, check_socket_dir, resolve_target
from .dpop import DPoPKey
from .errors import (
    LatchGateActionFailed,
    LatchGateAuthError,
    LatchGateError,
    LatchGateNotConnected,
    LatchGateTransportError,
    LatchGateUnavailable,
    error_from_response,
)
from .jcs import JCSError
from .jcs import loads as strict_loads
from .models import (
    ActionEgress,
    ActionInfo,
    ApprovalStatus,
    ExecuteResult,
    LeaseInfo,
    Receipt,
    ReceiptKeys,
)

__all__ = ["LatchGateClient"]

__version__ = "0.1.0"

_ACTION_ID = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
_OPAQUE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def _check_id(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"invalid {kind}: {value!r}")
    return value


def _ttl_seconds(ttl: float | timedelta | None) -> int | None:
    if ttl is None:
        return None
    secs = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if secs <= 0:
        raise ValueError("ttl must be positive")
    return int(secs)


class LatchGateClient:
    """Async client for a LatchGate gate.

    The gate is found in this order: ``base_url`` → ``$LATCHGATE_URL`` →
    ``socket`` → ``/run/latchgate/gate.sock`` →
    ``$XDG_RUNTIME_DIR/latchgate/gate.sock`` → ``/tmp/latchgate-<uid>/gate.sock``
    (a default socket whose directory is a symlink, writable by others or, for
    the last two, owned by anyone but us or root is refused).

    With ``agent_id`` set, the first authenticated call opens a lease (lazy
    connect); otherwise call :meth:`connect` first. ``scopes``, ``max_calls``,
    ``max_cost_usd_cents`` and ``ttl`` are the defaults used by every connect.

    Retries: 429/503 (:class:`LatchGateUnavailable`) and transport failures are
    retried up to ``max_retries`` times with exponential backoff and jitter,
    honouring ``Retry-After`` (a wait longer than ``max_retry_after`` is not
    waited for: the error is raised). ``execute`` is retried only with an
    ``Idempotency-Key``; with ``auto_idempotency`` (default) the SDK generates
    one per logical call. A 502 (:class:`LatchGateActionFailed`) is never retried.

    Other options: ``timeout`` (seconds per request) and ``execute_timeout``
    (per execute attempt); ``renew_margin`` (seconds before expiry at which the
    lease is renewed; default 20 % of its lifetime, 2 to 60 s); ``logger``
    (default ``logging.getLogger("latchgate")``). ``transport``, ``clock`` (time
    source for renewal decisions only; proofs always carry the real time),
    ``sleep`` and ``env`` exist for tests.
    """

    def __init__(
        self,
        agent_id: str | None = None,
        socket: str | None = None,
        base_url: str | None = None,
        *,
        scopes: Sequence[str] | None = None,
        max_calls: int | None = None,
        max_cost_usd_cents: int | None = None,
        ttl: float | timedelta | None = None,
        timeout: float = 30.0,
        execute_timeout: float = 120.0,
        max_retries: int = 3,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        renew_margin: float | None = None,
        auto_idempotency: bool = True,
        logger: logging.Logger | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._agent_id = agent_id
        self._defaults: dict[str, Any] = {
            "scopes": list(scopes) if scopes is not None else None,
            "max_calls": max_calls,
            "max_cost_usd_cents": max_cost_usd_cents,
            "ttl": ttl,
        }
        self._timeout = timeout
        self._execute_timeout = execute_timeout
        self._max_retries = max(0, max_retries)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._renew_margin = renew_margin
        self._auto_idempotency = auto_idempotency
        self._log = logger or logging.getLogger("latchgate")
        self._transport = transport
        self._clock: Clock = clock or time.time
        self._sleep: Sleep = sleep or asyncio.sleep
        self._env: Mapping[str, str] = env if env is not None else os.environ
        self._base_url = base_url
        self._socket = socket
        # Resolve explicit targets now; default sockets are looked up at first use.
        self._target: Target | None = None
        if base_url or self._env.get("LATCHGATE_URL") or socket:
            self._target = resolve_target(base_url, socket, self._env, os.getuid())
        self._http: httpx.AsyncClient | None = None
        self._key: DPoPKey | None = None
        self._lease: LeaseInfo | None = None
        self._lease_obtained_at = 0.0
        self._renew_not_before = 0.0
        self._lease_lock = asyncio.Lock()
        self._receipt_keys: ReceiptKeys | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LatchGateClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool and forget the lease. Idempotent."""
        self._closed = True
        self._lease = None
        self._key = None
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    @property
    def agent_id(self) -> str | None:
        return self._agent_id

    @property
    def lease(self) -> LeaseInfo | None:
        """The current lease, or ``None`` before connect."""
        return self._lease

    @property
    def session_id(self) -> str | None:
        """The current session id (unchanged across renewals)."""
        return self._lease.session_id if self._lease else None

    @property
    def is_connected(self) -> bool:
        return self._lease is not None

    @property
    def base_url(self) -> str | None:
        """The URL base in use (``http://localhost`` over a socket), once resolved."""
        return self._target.base if self._target else None

    @property
    def socket_path(self) -> str | None:
        return self._target.uds if self._target else None

    # ------------------------------------------------------------------ leases

    async def connect(
        self,
        agent_id: str | None = None,
        scopes: Sequence[str] | None = None,
        max_calls: int | None = None,
        max_cost_usd_cents: int | None = None,
        ttl: float | timedelta | None = None,
    ) -> LeaseInfo:
        """Open a new session: fresh P-256 key, ``POST /v1/leases``.

        Arguments left ``None`` fall back to the constructor's; the values
        given become the defaults for later (lazy) connects.
        """
        if agent_id is not None:
            self._agent_id = agent_id
        for name, value in (
            ("scopes", list(scopes) if scopes is not None else None),
            ("max_calls", max_calls),
            ("max_cost_usd_cents", max_cost_usd_cents),
            ("ttl", ttl),
        ):
            if value is not None:
                self._defaults[name] = value
        async with self._lease_lock:
            return await self._open_session()

    async def renew(self) -> LeaseInfo:
        """Renew the lease now (``POST /v1/leases/renew``): same session and budget."""
        lease = self._lease
        if lease is None:
            raise LatchGateNotConnected("renew() called before connect()")
        async with self._lease_lock:
            return await self._renew_locked()

    async def _open_session(self) -> LeaseInfo:
        key = DPoPKey()  # proofs carry the real time (iat), whatever clock is injected
        body: dict[str, Any] = {"dpop_jwk": key.public_jwk}
        d = self._defaults
        if d["scopes"] is not None:
            body["scopes"] = list(d["scopes"])
        budgets: dict[str, int] = {}
        if d["max_calls"] is not None:
            budgets["max_calls"] = int(d["max_calls"])
        if d["max_cost_usd_cents"] is not None:
            budgets["max_cost_usd_cents"] = int(d["max_cost_usd_cents"])
        if budgets:
            body["budgets"] = budgets
        if self._agent_id is not None:
            body["agent_id"] = self._agent_id
        ttl = _ttl_seconds(d["ttl"])
        if ttl is not None:
            body["ttl_seconds"] = ttl
        raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
        answer = await self._call("POST", "/v1/leases", body=raw, auth=None, retry=True)
        lease = LeaseInfo.from_json(self._expect_object(answer))
        self._key, self._lease, self._lease_obtained_at = key, lease, self._clock()
        self._log.info(
            "latchgate: session %s opened (principal %s, expires %s)",
            lease.session_id,
            lease.principal,
            lease.expires_at.isoformat(),
        )
        return lease

    async def _renew_locked(self) -> LeaseInfo:
        lease, key = self._lease, self._key
        if lease is None or key is None:
            raise LatchGateNotConnected("no lease to renew")
        answer = await self._call(
            "POST", "/v1/leases/renew", body=b"", auth=(lease, key), retry=True
        )
        new = LeaseInfo.from_json(self._expect_object(answer))
        if new.session_id != lease.session_id:
            raise LatchGateAuthError("the gate renewed the lease into another session")
        self._lease, self._lease_obtained_at = new, self._clock()
        self._log.info(
            "latchgate: lease renewed for session %s (expires %s)",
            new.session_id,
            new.expires_at.isoformat(),
        )
        return new

    def _needs_renewal(self, lease: LeaseInfo) -> bool:
        now = self._clock()
        expires = lease.expires_at.timestamp()
        margin = self._renew_margin
        if margin is None:
            lifetime = max(0.0, expires - self._lease_obtained_at)
            margin = max(2.0, min(60.0, lifetime * 0.2))
        return now >= expires - margin

    async def _current_lease(self) -> tuple[LeaseInfo, DPoPKey]:
        """The lease to use: lazy connect, and renewal shared by concurrent callers."""
        if self._closed:
            raise LatchGateError("the client is closed")
        lease = self._lease
        if lease is None:
            if self._agent_id is None:
                raise LatchGateNotConnected(
                    "not connected: call connect() first or pass agent_id to LatchGateClient"
                )
            async with self._lease_lock:
                if self._lease is None:
                    await self._open_session()
        elif self._needs_renewal(lease) and (
            self._clock() >= self._renew_not_before or self._clock() >= lease.expires_at.timestamp()
        ):
            async with self._lease_lock:
                current = self._lease
                # Whoever held the lock before us may already have renewed.
                if current is lease:
                    try:
                        await self._renew_locked()
                    except (LatchGateAuthError, LatchGateUnavailable, LatchGateTransportError):
                        now = self._clock()
                        remaining = current.expires_at.timestamp() - now
                        if remaining <= 0:
                            raise
                        # Try again later, not on every call, while the lease lasts.
                        self._renew_not_before = now + min(5.0, remaining / 2)
                        self._log.warning(
                            "latchgate: lease renewal failed; using the current lease "
                            "until it expires",
                            exc_info=True,
                        )
        lease2, key = self._lease, self._key
        if lease2 is None or key is None:
            raise LatchGateNotConnected("not connected")
        return lease2, key

    # ------------------------------------------------------------------ actions

    async def execute(
        self,
        action: str,
        args: Any = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> ExecuteResult:
        """Run ``action`` with ``args`` (any JSON value; ``None`` means ``{}``).

        Raises :class:`LatchGateApprovalRequired` when policy holds the request
        for a human, :class:`LatchGateActionFailed` on 502, and the other
        exceptions of the mapping table. ``timeout`` (seconds, default the
        client's ``execute_timeout``) bounds each attempt; keep it above the
        action's own timeout.
        """
        _check_id("action id", action, _ACTION_ID)
        body = _encode_args({} if args is None else args)
        key = idempotency_key
        if key is None and self._auto_idempotency:
            key = str(uuid.uuid4())
        if key is not None and not 1 <= len(key) <= 128:
            raise ValueError("idempotency_key must be 1-128 characters")
        headers = {"Idempotency-Key": key} if key is not None else None
        answer = await self._call(
            "POST",
            f"/v1/actions/{action}/execute",
            body=body,
            auth=True,
            retry=key is not None,
            headers=headers,
            action_id=action,
            ok=(200, 202),
            timeout=timeout if timeout is not None else self._execute_timeout,
        )
        obj = self._expect_object(answer)
        if answer[0] == 202:
            raise error_from_response(202, obj, action_id=action)
        return ExecuteResult.from_json(obj)

    async def list_actions(self) -> list[ActionInfo]:
        """``GET /v1/actions``: the registered actions, sorted by id."""
        obj = self._expect_object(await self._call("GET", "/v1/actions", auth=None, retry=True))
        items = obj.get("actions")
        if not isinstance(items, list):
            raise LatchGateError("malformed answer: no actions list")
        return [ActionInfo.from_json(a) for a in items if isinstance(a, dict)]

    async def get_action(self, action: str) -> dict[str, Any]:
        """``GET /v1/actions/{id}``: the action's description, schema and egress."""
        _check_id("action id", action, _ACTION_ID)
        return self._expect_object(
            await self._call(
                "GET", f"/v1/actions/{action}", auth=None, retry=True, action_id=action
            )
        )

    async def get_action_egress(self, action: str) -> ActionEgress:
        """The action's egress profile (``none`` or ``proxy_allowlist`` + domains)."""
        detail = await self.get_action(action)
        try:
            return ActionEgress.from_action_json(detail)
        except ValueError as exc:
            raise LatchGateError(f"malformed egress profile for {action}") from exc

    # ------------------------------------------------------------------ approvals

    async def get_approval_status(self, approval_id: str) -> ApprovalStatus:
        """``GET /v1/approvals/{id}/poll`` (same session only)."""
        _check_id("approval id", approval_id, _OPAQUE_ID)
        obj = self._expect_object(
            await self._call("GET", f"/v1/approvals/{approval_id}/poll", auth=True, retry=True)
        )
        return ApprovalStatus.from_json(approval_id, obj)

    async def wait_for_approval(
        self,
        approval_id: str,
        timeout: float = 300.0,
        *,
        poll_interval: float = 1.0,
    ) -> ApprovalStatus:
        """Poll until the approval leaves ``pending``; return the final status.

        Waits ``retry_after_seconds`` between polls when the gate says so
        (else ``poll_interval``), never past the deadline. Raises
        ``TimeoutError`` if still pending after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.get_approval_status(approval_id)
            if status.is_terminal:
                return status
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"approval {approval_id} still pending after {timeout}s")
            wait = status.retry_after_seconds
            if wait is None or wait <= 0:
                wait = poll_interval
            await self._sleep(min(max(wait, 0.05), remaining))

    # ------------------------------------------------------------------ receipts

    async def get_receipt(self, receipt_id: str) -> Receipt:
        """``GET /v1/receipts/{id}``: the receipt exactly as stored (+ signature_status)."""
        _check_id("receipt id", receipt_id, _OPAQUE_ID)
        obj = self._expect_object(
            await self._call("GET", f"/v1/receipts/{receipt_id}", auth=True, retry=True)
        )
        return Receipt(obj)

    async def get_receipt_keys(self, *, refresh: bool = False) -> ReceiptKeys:
        """The gate's Ed25519 receipt keys (``GET /v1/receipt-keys``), cached."""
        if self._receipt_keys is None or refresh:
            obj = self._expect_object(
                await self._call("GET", "/v1/receipt-keys", auth=None, retry=True)
            )
            self._receipt_keys = ReceiptKeys.from_jwks(obj)
        return self._receipt_keys

    async def verify_receipt(self, receipt: Receipt) -> bool:
        """Verify a receipt offline against the gate's published keys.

        The keys are fetched once and refetched when the receipt names an
        unknown ``key_id`` (after a key rotation).
        """
        keys = await self.get_receipt_keys()
        if receipt.key_id not in keys:
            keys = await self.get_receipt_keys(refresh=True)
        return receipt.verify(keys)

    # ------------------------------------------------------------------ transport

    def _expect_object(self, answer: tuple[int, Any]) -> dict[str, Any]:
        data = answer[1]
        if not isinstance(data, dict):
            raise LatchGateError("malformed answer: expected a JSON object")
        return data

    async def _http_client(self) -> tuple[httpx.AsyncClient, Target]:
        if self._closed:
            raise LatchGateError("the client is closed")
        if self._target is None:
            self._target = resolve_target(None, None, self._env, os.getuid())
        target = self._target
        if self._http is None:
            if target.checked and target.uds is not None:
                check_socket_dir(target.uds, target.owner)
            transport = self._transport
            if transport is None:
                transport = (
                    httpx.AsyncHTTPTransport(uds=target.uds)
                    if target.uds is not None
                    else httpx.AsyncHTTPTransport()
                )
            self._http = httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(self._timeout),
                headers={
                    "User-Agent": f"latchgate-python/{__version__}",
                    "Accept": "application/json",
                },
                follow_redirects=False,
                trust_env=False,
            )
        return self._http, target

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self._backoff_max, self._backoff_base * (2**attempt))
        delay = random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not security
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        auth: bool | tuple[LeaseInfo, DPoPKey] | None,
        retry: bool,
        headers: Mapping[str, str] | None = None,
        action_id: str | None = None,
        ok: tuple[int, ...] = (200,),
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """Send one logical request (with retries); return (status, parsed JSON)."""
        attempt = 0
        while True:
            # A lazy connect or renewal retries by itself: its failure is final here.
            lease = await self._current_lease() if auth is True else auth
            try:
                return await self._attempt(
                    method, path, body, lease, headers, action_id, ok, timeout
                )
            except (LatchGateUnavailable, LatchGateTransportError) as err:
                retry_after = err.retry_after if isinstance(err, LatchGateUnavailable) else None
                if not retry or attempt >= self._max_retries or self._closed:
                    raise
                if retry_after is not None and retry_after > self._max_retry_after:
                    raise
                delay = self._backoff(attempt, retry_after)
                attempt += 1
                self._log.warning(
                    "latchgate: %s %s failed (%s); retry %d/%d in %.2fs",
                    method,
                    path,
                    err,
                    attempt,
                    self._max_retries,
                    delay,
                )
                await self._sleep(delay)

    async def _attempt(
        self,
        method: str,
        path: str,
        body: bytes | None,
        auth: bool | tuple[LeaseInfo, DPoPKey] | None,
        extra: Mapping[str, str] | None,
        action_id: str | None,
        ok: tuple[int, ...],
        timeout: float | None,
    ) -> tuple[int, Any]:
        http, target = await self._http_client()
        headers: dict[str, str] = dict(extra or {})
        if body:
            headers["Content-Type"] = "application/json"
        if auth:
            lease, key = auth if isinstance(auth, tuple) else await self._current_lease()
            headers["Authorization"] = f"DPoP {lease.lease_jwt}"
            headers["DPoP"] = key.proof(
                method, target.base + path, lease_jwt=lease.lease_jwt, body=body or b""
            )
        try:
            resp = await http.request(
                method,
                target.base + path,
                content=body if body else None,
                headers=headers,
                timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise LatchGateTransportError(f"{method} {path}: timed out") from exc
        except httpx.HTTPError as exc:
            raise LatchGateTransportError(f"{method} {path}: {type(exc).__name__}") from exc
        except OSError as exc:
            raise LatchGateTransportError(f"{method} {path}: {exc.strerror or exc}") from exc
        self._log.debug("latchgate: %s %s -> %d", method, path, resp.status_code)
        if resp.status_code in ok:
            try:
                data = strict_loads(resp.content) if resp.content else {}
            except JCSError as exc:
                raise LatchGateError(f"{method} {path}: malformed JSON answer") from exc
            return resp.status_code, data
        try:
            err_body = json.loads(resp.content) if resp.content else {}
        except ValueError:
            err_body = {}
        if not isinstance(err_body, dict):
            err_body = {}
        err = error_from_response(
            resp.status_code,
            err_body,
            retry_after_header=resp.headers.get("Retry-After"),
            action_id=action_id,
        )
        if isinstance(err, LatchGateActionFailed):
            self._log.warning(
                "latchgate: action %s failed after dispatch (receipt %s): %s",
                action_id,
                err.receipt_id,
                err.reason,
            )
        raise err


def _encode_args(args: Any) -> bytes:
    try:
        text = json.dumps(args, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("arguments contain a lone surrogate (not I-JSON)") from exc
    except (TypeError, ValueError) as exc:
        raise ValueError(f"arguments are not JSON-serialisable: {exc}") from exc
