from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from latchgate import (
    LatchGateActionFailed,
    LatchGateApprovalRequired,
    LatchGateAuthError,
    LatchGateBudgetExhausted,
    LatchGateClient,
    LatchGateDenied,
    LatchGateError,
    LatchGateLeaseExpired,
    LatchGateNotConnected,
    LatchGateReplayDetected,
    LatchGateTransportError,
    LatchGateUnavailable,
    Receipt,
)

from .conftest import FakeClock, SleepRecorder
from .stubgate import StubGate

MakeClient = Callable[..., LatchGateClient]


async def test_lazy_connect(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client(agent_id="lazy")
    assert not client.is_connected
    result = await client.execute("echo", {"message": "hi"})
    assert result.output == {"message": "hi"}
    assert result.is_fully_successful
    assert result.verification_outcome == "unverifiable_declared"
    assert [r["path"] for r in stub.requests] == ["/v1/leases", "/v1/actions/echo/execute"]
    lease_req = json.loads(stub.requests[0]["body"])
    assert lease_req["agent_id"] == "lazy"
    assert set(lease_req["dpop_jwk"]) == {"kty", "crv", "x", "y"}
    assert client.session_id is not None


async def test_not_connected_without_agent_id(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client()
    for call in (
        lambda: client.execute("echo", {}),
        lambda: client.get_receipt("r1"),
        lambda: client.get_approval_status("a1"),
        lambda: client.renew(),
    ):
        with pytest.raises(LatchGateNotConnected):
            await call()
    assert stub.requests == [], "nothing may be sent before a lease exists"
    # Discovery needs no lease.
    assert [a.action_id for a in await client.list_actions()] == ["echo", "http_fetch"]


async def test_explicit_connect(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client()
    lease = await client.connect(
        agent_id="explicit", scopes=["tools:call"], max_calls=5, max_cost_usd_cents=10, ttl=120
    )
    body = json.loads(stub.requests[0]["body"])
    assert body["budgets"] == {"max_calls": 5, "max_cost_usd_cents": 10}
    assert body["ttl_seconds"] == 120
    assert body["scopes"] == ["tools:call"]
    assert lease.principal == "agent:explicit"
    result = await client.execute("echo", [1, 2])
    assert result.output == [1, 2]


async def test_renewal_keeps_session_and_budget(
    stub: StubGate, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(agent_id="renew", max_calls=2)
    await client.execute("echo", {"n": 1})
    first = client.lease
    assert first is not None
    clock.offset = 290  # 10 s before expiry: inside the renewal margin
    await client.execute("echo", {"n": 2})
    clock.offset = 0
    assert stub.count("POST", "/v1/leases/renew") == 1
    assert stub.count("POST", "/v1/leases") == 1, "renewal must not open a new session"
    assert client.lease is not None
    assert client.lease.session_id == first.session_id
    assert client.lease.lease_jwt != first.lease_jwt
    with pytest.raises(LatchGateBudgetExhausted):
        await client.execute("echo", {"n": 3})


async def test_forced_renew_same_session(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client(agent_id="renew")
    first = await client.connect()
    second = await client.renew()
    assert second.session_id == first.session_id
    assert second.lease_jti != first.lease_jti
    assert (await client.execute("echo", {})).output == {}


async def test_concurrent_callers_share_one_renewal(
    stub: StubGate, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(agent_id="conc")
    await client.connect()
    clock.offset = 295
    results = await asyncio.gather(*(client.execute("echo", {"i": i}) for i in range(8)))
    clock.offset = 0
    assert [r.output["i"] for r in results] == list(range(8))
    assert stub.count("POST", "/v1/leases/renew") == 1


async def test_renewal_failure_keeps_valid_lease(
    stub: StubGate, make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(agent_id="x", max_retries=0)
    await client.connect()
    stub.force("POST", "/v1/leases/renew", 503, {"error": "store_unavailable", "message": "m"})
    clock.offset = 290
    result = await client.execute("echo", {"ok": True})
    assert result.output == {"ok": True}
    await client.execute("echo", {"again": True})
    assert stub.count("POST", "/v1/leases/renew") == 1, "a failed renewal is not retried per call"
    clock.offset = 296  # later on, renewal is tried again and succeeds
    await client.execute("echo", {"later": True})
    clock.offset = 0
    assert stub.count("POST", "/v1/leases/renew") == 2


# (name, status, body, headers, expected class, attributes)
EXEC_ERRORS: list[
    tuple[str, int, dict[str, Any], dict[str, str], type[LatchGateError], dict[str, Any]]
] = [
    (
        "202 approval",
        202,
        {
            "decision": "pending_approval",
            "approval_id": "ap1",
            "request_hash": "sha256:00",
            "trace_id": "t",
            "expires_at": "2030-01-01T00:00:00.000Z",
        },
        {},
        LatchGateApprovalRequired,
        {"approval_id": "ap1"},
    ),
    (
        "401 lease_expired",
        401,
        {"error": "lease_expired", "message": "m"},
        {},
        LatchGateLeaseExpired,
        {},
    ),
    (
        "401 replay",
        401,
        {"error": "replay_detected", "message": "m"},
        {},
        LatchGateReplayDetected,
        {},
    ),
    (
        "401 invalid_dpop",
        401,
        {"error": "invalid_dpop", "message": "m", "deny_reason": "htu"},
        {},
        LatchGateAuthError,
        {"code": "invalid_dpop"},
    ),
    (
        "403 budget",
        403,
        {"error": "budget_exhausted", "message": "m"},
        {},
        LatchGateBudgetExhausted,
        {},
    ),
    (
        "403 policy",
        403,
        {
            "error": "policy_denied",
            "message": "m",
            "deny_reason": "no_rule_allowed",
            "action_id": "echo",
        },
        {},
        LatchGateDenied,
        {"action_id": "echo", "code": "policy_denied", "reason": "no_rule_allowed"},
    ),
    (
        "400 invalid_json",
        400,
        {"error": "invalid_json", "message": "bad"},
        {},
        LatchGateDenied,
        {"code": "invalid_json", "action_id": "echo"},
    ),
    (
        "404 not found",
        404,
        {"error": "action_not_found", "message": "m"},
        {},
        LatchGateDenied,
        {"code": "action_not_found"},
    ),
    (
        "409 conflict",
        409,
        {"error": "idempotency_conflict", "message": "m"},
        {},
        LatchGateDenied,
        {},
    ),
    (
        "409 in progress",
        409,
        {"error": "idempotency_in_progress", "message": "m"},
        {},
        LatchGateUnavailable,
        {},
    ),
    ("413", 413, {"error": "payload_too_large", "message": "m"}, {}, LatchGateDenied, {}),
    ("415", 415, {"error": "unsupported_media_type", "message": "m"}, {}, LatchGateDenied, {}),
    (
        "422",
        422,
        {"error": "schema_violation", "message": "m", "deny_reason": "/url"},
        {},
        LatchGateDenied,
        {"reason": "/url"},
    ),
    (
        "429",
        429,
        {"error": "rate_limited", "message": "m"},
        {"Retry-After": "4"},
        LatchGateUnavailable,
        {"retry_after": 4.0},
    ),
    ("503", 503, {"error": "policy_unavailable", "message": "m"}, {}, LatchGateUnavailable, {}),
    (
        "502",
        502,
        {"error": "action_execution_failed", "message": "timeout", "receipt_id": "r9"},
        {},
        LatchGateActionFailed,
        {"receipt_id": "r9", "reason": "timeout"},
    ),
    (
        "500",
        500,
        {"error": "internal_error", "message": "m"},
        {},
        LatchGateError,
        {"code": "internal_error"},
    ),
]


@pytest.mark.parametrize(
    ("name", "status", "body", "headers", "cls", "attrs"),
    EXEC_ERRORS,
    ids=[e[0] for e in EXEC_ERRORS],
)
async def test_execute_exception_mapping(
    stub: StubGate,
    make_client: MakeClient,
    name: str,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    cls: type[LatchGateError],
    attrs: dict[str, Any],
) -> None:
    client = make_client(agent_id="map", max_retries=0)
    await client.connect()
    stub.force("POST", "/v1/actions/echo/execute", status, body, headers)
    with pytest.raises(LatchGateError) as info:
        await client.execute("echo", {})
    assert type(info.value) is cls, (
        f"execute with {name} raised {type(info.value).__name__}, want {cls.__name__}"
    )
    for k, v in attrs.items():
        assert getattr(info.value, k) == v, f"{name}: {k} = {getattr(info.value, k)!r}, want {v!r}"


async def test_real_denial_from_stub(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client(agent_id="deny")
    with pytest.raises(LatchGateDenied) as info:
        await client.execute("does_not_exist", {})
    assert (info.value.code, info.value.action_id) == ("action_not_found", "does_not_exist")


async def test_retry_honours_retry_after(
    stub: StubGate, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    client = make_client(max_retries=3)
    stub.force(
        "GET", "/v1/actions", 429, {"error": "rate_limited", "message": "m"}, {"Retry-After": "2"}
    )
    stub.force(
        "GET",
        "/v1/actions",
        503,
        {"error": "store_unavailable", "message": "m", "retry_after_seconds": 5},
    )
    actions = await client.list_actions()
    assert len(actions) == 2
    assert stub.count("GET", "/v1/actions") == 3
    assert len(sleeps.delays) == 2
    assert sleeps.delays[0] >= 2
    assert sleeps.delays[1] >= 5


async def test_retry_gives_up(
    stub: StubGate, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    client = make_client(max_retries=2)
    stub.force("GET", "/v1/actions", 503, {"error": "draining", "message": "m"}, times=5)
    with pytest.raises(LatchGateUnavailable):
        await client.list_actions()
    assert stub.count("GET", "/v1/actions") == 3
    # Exponential backoff: each cap doubles (jitter stays within [cap/2, cap]).
    assert 0.125 <= sleeps.delays[0] <= 0.25
    assert 0.25 <= sleeps.delays[1] <= 0.5


async def test_retry_after_too_long_is_not_waited(
    stub: StubGate, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    client = make_client(max_retry_after=10)
    stub.force(
        "GET",
        "/v1/actions",
        429,
        {"error": "rate_limited", "message": "m"},
        {"Retry-After": "3600"},
    )
    with pytest.raises(LatchGateUnavailable) as info:
        await client.list_actions()
    assert info.value.retry_after == 3600
    assert sleeps.delays == []


async def test_execute_not_retried_without_idempotency_key(
    stub: StubGate, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    client = make_client(agent_id="noidem", auto_idempotency=False)
    await client.connect()
    stub.force(
        "POST", "/v1/actions/echo/execute", 503, {"error": "store_unavailable", "message": "m"}
    )
    with pytest.raises(LatchGateUnavailable):
        await client.execute("echo", {})
    assert stub.count("POST", "/v1/actions/echo/execute") == 1
    assert "Idempotency-Key" not in stub.requests[-1]["headers"]
    assert sleeps.delays == []


async def test_execute_retried_with_generated_idempotency_key(
    stub: StubGate, make_client: MakeClient
) -> None:
    client = make_client(agent_id="idem")
    await client.connect()
    stub.force(
        "POST", "/v1/actions/echo/execute", 503, {"error": "store_unavailable", "message": "m"}
    )
    stub.force(
        "POST",
        "/v1/actions/echo/execute",
        409,
        {"error": "idempotency_in_progress", "message": "m"},
    )
    result = await client.execute("echo", {"a": 1})
    assert result.output == {"a": 1}
    execs = [r for r in stub.requests if r["path"] == "/v1/actions/echo/execute"]
    assert len(execs) == 3
    keys = {r["headers"]["Idempotency-Key"] for r in execs}
    assert len(keys) == 1, "every attempt of one logical call carries the same key"
    proofs = {r["headers"]["DPoP"] for r in execs}
    assert len(proofs) == 3, "every attempt carries a fresh proof"
    # A second logical call gets a new key.
    await client.execute("echo", {"a": 1})
    assert stub.requests[-1]["headers"]["Idempotency-Key"] not in keys


async def test_execute_caller_idempotency_key(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client(agent_id="idem", auto_idempotency=False)
    r1 = await client.execute("echo", {"a": 1}, idempotency_key="k-123")
    r2 = await client.execute("echo", {"a": 1}, idempotency_key="k-123")
    assert r1.receipt_id == r2.receipt_id
    assert stub.requests[-1]["headers"]["Idempotency-Key"] == "k-123"


async def test_502_never_retried(
    stub: StubGate, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    client = make_client(agent_id="f")
    await client.connect()
    stub.force(
        "POST",
        "/v1/actions/echo/execute",
        502,
        {"error": "egress_denied", "message": "refused", "receipt_id": "r1"},
    )
    with pytest.raises(LatchGateActionFailed) as info:
        await client.execute("echo", {}, idempotency_key="k1")
    assert info.value.receipt_id == "r1"
    assert stub.count("POST", "/v1/actions/echo/execute") == 1
    assert sleeps.delays == []


async def test_replay_not_retried(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client(agent_id="r")
    await client.connect()
    stub.force(
        "POST", "/v1/actions/echo/execute", 401, {"error": "replay_detected", "message": "m"}
    )
    with pytest.raises(LatchGateReplayDetected):
        await client.execute("echo", {})
    assert stub.count("POST", "/v1/actions/echo/execute") == 1


async def test_every_request_has_fresh_valid_proof(stub: StubGate, make_client: MakeClient) -> None:
    # The stub refuses reused jtis and any proof that does not bind htm/htu/ath/bh.
    client = make_client(agent_id="p")
    for i in range(5):
        await client.execute("echo", {"i": i, "s": "é😀"})
    r = await client.execute("echo", None)
    assert r.output == {}
    jtis = {
        json.loads(_b64d(r["headers"]["DPoP"].split(".")[1]))["jti"]
        for r in stub.requests
        if "DPoP" in r["headers"]
    }
    assert len(jtis) == 6


def _b64d(s: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


async def test_receipt_verification(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client(agent_id="rc")
    result = await client.execute("echo", {"message": "hello", "n": 1.5, "big": 2**60})
    receipt = await client.get_receipt(result.receipt_id)
    assert receipt.receipt_id == result.receipt_id
    assert receipt.is_fully_successful
    assert receipt.signature_status == "valid"
    assert await client.verify_receipt(receipt)
    keys = await client.get_receipt_keys()
    assert receipt.verify(keys)

    tampered = Receipt({**receipt.raw, "output": {"message": "hellO", "n": 1.5, "big": 2**60}})
    assert not tampered.verify(keys), "a receipt with changed output must not verify"
    resigned = Receipt({**receipt.raw, "hash": tampered.compute_hash()})
    assert not resigned.verify(keys), (
        "a recomputed hash without a matching signature must not verify"
    )
    wrong_kid = Receipt({**receipt.raw, "key_id": "someone-else"})
    assert not await client.verify_receipt(wrong_kid)


async def test_approval_flow(
    stub: StubGate, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    stub.pending_polls = 2
    stub.poll_retry_after = 3
    client = make_client(agent_id="ap")
    with pytest.raises(LatchGateApprovalRequired) as info:
        await client.execute("needs_approval", {"to": "x"})
    approval_id = info.value.approval_id
    status = await client.get_approval_status(approval_id)
    assert status.status == "pending"
    assert status.retry_after_seconds == 3
    final = await client.wait_for_approval(approval_id, timeout=60)
    assert final.is_approved
    assert final.output == {"to": "x"}
    assert sleeps.delays == [3]
    receipt = await client.get_receipt(final.receipt_id or "")
    assert await client.verify_receipt(receipt)


async def test_wait_for_approval_times_out(stub: StubGate, make_client: MakeClient) -> None:
    stub.pending_polls = 10**6
    stub.poll_retry_after = 0
    client = make_client(agent_id="ap", sleep=asyncio.sleep)
    with pytest.raises(LatchGateApprovalRequired) as info:
        await client.execute("needs_approval", {})
    with pytest.raises(TimeoutError):
        await client.wait_for_approval(info.value.approval_id, timeout=0.2, poll_interval=0.05)


async def test_egress(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client()
    fetch = await client.get_action_egress("http_fetch")
    assert (fetch.profile, fetch.allowed_domains, fetch.has_egress) == (
        "proxy_allowlist",
        ["httpbin.org", "api.github.com"],
        True,
    )
    echo = await client.get_action_egress("echo")
    assert (echo.profile, echo.allowed_domains, echo.has_egress) == ("none", [], False)
    with pytest.raises(LatchGateDenied):
        await client.get_action_egress("nope")


async def test_invalid_ids_rejected_locally(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client(agent_id="x")
    for bad in ("../leases", "Echo", "", "a/b"):
        with pytest.raises(ValueError):
            await client.execute(bad, {})
    with pytest.raises(ValueError):
        await client.get_receipt("../../v1/leases")
    assert stub.requests == []


async def test_unencodable_args(stub: StubGate, make_client: MakeClient) -> None:
    client = make_client(agent_id="x")
    for bad in ({"s": "\ud800"}, {"f": float("nan")}, {"o": object()}):
        with pytest.raises(ValueError):
            await client.execute("echo", bad)


async def test_transport_error_missing_socket(
    make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    client = make_client(socket="/nonexistent/lg/gate.sock", agent_id="t", max_retries=2)
    with pytest.raises(LatchGateTransportError):
        await client.list_actions()
    assert len(sleeps.delays) == 2, "transport errors on safe calls are retried"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A Unix socket that accepts connections and never answers."""
    d = tempfile.mkdtemp(prefix="lgsil")
    path = os.path.join(d, "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def loop() -> None:
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                conns.append(c)
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield path
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()
    shutil.rmtree(d, ignore_errors=True)


async def test_timeout_is_transport_error(silent_server: str, make_client: MakeClient) -> None:
    client = make_client(socket=silent_server, timeout=0.2, max_retries=0)
    with pytest.raises(LatchGateTransportError):
        await client.list_actions()


async def test_closed_client(stub: StubGate, make_client: MakeClient) -> None:
    async with make_client(agent_id="c") as client:
        await client.execute("echo", {})
    with pytest.raises(LatchGateError):
        await client.execute("echo", {})
    await client.close()  # idempotent


async def test_concurrent_lazy_connect_opens_one_session(
    stub: StubGate, make_client: MakeClient
) -> None:
    client = make_client(agent_id="lazy-many")
    results = await asyncio.gather(*(client.execute("echo", {"i": i}) for i in range(6)))
    assert len(results) == 6
    assert stub.count("POST", "/v1/leases") == 1


async def test_connect_again_opens_new_session_with_defaults(
    stub: StubGate, make_client: MakeClient
) -> None:
    client = make_client(agent_id="again", max_calls=1)
    first = await client.connect()
    await client.execute("echo", {})
    with pytest.raises(LatchGateBudgetExhausted):
        await client.execute("echo", {})
    second = await client.connect()  # fresh budget, same requested limits
    assert second.session_id != first.session_id
    assert json.loads(stub.requests[-1]["body"])["budgets"] == {"max_calls": 1}
    await client.execute("echo", {})


async def test_lazy_connect_failure_not_retried_twice(
    stub: StubGate, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    # The lease request is retried max_retries times; the execute that needed
    # it must not start that whole sequence again (max_retries² requests).
    client = make_client(agent_id="down", max_retries=2)
    stub.force("POST", "/v1/leases", 503, {"error": "store_unavailable", "message": "m"}, times=50)
    with pytest.raises(LatchGateUnavailable):
        await client.execute("echo", {})
    assert stub.count("POST", "/v1/leases") == 3
    assert len(sleeps.delays) == 2
    assert stub.count("POST", "/v1/actions/echo/execute") == 0


async def test_renewal_failure_after_expiry_not_retried_twice(
    stub: StubGate, make_client: MakeClient, clock: FakeClock, sleeps: SleepRecorder
) -> None:
    client = make_client(agent_id="late", max_retries=2)
    await client.connect()
    stub.force(
        "POST", "/v1/leases/renew", 503, {"error": "store_unavailable", "message": "m"}, times=50
    )
    clock.offset = 400  # past expiry: the renewal's failure is the call's failure
    with pytest.raises(LatchGateUnavailable):
        await client.get_receipt("r1")
    clock.offset = 0
    assert stub.count("POST", "/v1/leases/renew") == 3
    assert len(sleeps.delays) == 2
