"""Against a real gate: set LATCHGATE_TEST_SOCKET to its client socket.

    /tmp/latchgate-bin serve --dev --socket $D/gate.sock --admin-socket $D/admin.sock \
        --state-dir $D/state &
    LATCHGATE_TEST_SOCKET=$D/gate.sock scripts/test.sh
"""

from __future__ import annotations

import os
import time

import pytest

from latchgate import LatchGateBudgetExhausted, LatchGateClient, LatchGateDenied

SOCKET = os.environ.get("LATCHGATE_TEST_SOCKET", "")

pytestmark = pytest.mark.skipif(not SOCKET, reason="LATCHGATE_TEST_SOCKET not set")


async def test_lease_execute_receipt_verify() -> None:
    async with LatchGateClient(agent_id="py-integration", socket=SOCKET) as client:
        result = await client.execute("echo", {"message": "hello", "n": 1.5, "u": "é😀"})
        assert result.receipt_id
        assert result.is_fully_successful
        receipt = await client.get_receipt(result.receipt_id)
        assert receipt.receipt_id == result.receipt_id
        assert receipt.signature_status == "valid"
        assert receipt.is_fully_successful
        assert await client.verify_receipt(receipt)


async def test_renewal_keeps_session() -> None:
    async with LatchGateClient(agent_id="py-renew", socket=SOCKET) as client:
        first = await client.connect()
        second = await client.renew()
        assert second.session_id == first.session_id
        assert second.lease_jti != first.lease_jti
        await client.execute("echo", {"after": "renew"})


async def test_budget_and_denial() -> None:
    async with LatchGateClient(agent_id="py-budget", socket=SOCKET) as client:
        await client.connect(max_calls=2)
        await client.execute("echo", {"i": 1})
        await client.execute("echo", {"i": 2})
        with pytest.raises(LatchGateBudgetExhausted):
            await client.execute("echo", {"i": 3})
        with pytest.raises(LatchGateDenied):
            await client.execute("no_such_action_xyz", {})


async def test_discovery() -> None:
    async with LatchGateClient(socket=SOCKET) as client:
        ids = [a.action_id for a in await client.list_actions()]
        assert "echo" in ids
        egress = await client.get_action_egress("echo")
        assert egress.profile == "none"
        assert not egress.has_egress


async def test_automatic_renewal_near_expiry() -> None:
    offset = 0.0
    client = LatchGateClient(
        agent_id="py-auto-renew", socket=SOCKET, clock=lambda: time.time() + offset
    )
    async with client:
        first = await client.connect()
        offset = (first.expires_at.timestamp() - time.time()) - 1  # 1 s before expiry
        await client.execute("echo", {"renew": "auto"})
        assert client.lease is not None
        assert client.lease.session_id == first.session_id
        assert client.lease.lease_jti != first.lease_jti


async def test_renewal_keeps_budget() -> None:
    async with LatchGateClient(agent_id="py-renew-budget", socket=SOCKET) as client:
        first = await client.connect(max_calls=2)
        await client.execute("echo", {"i": 1})
        await client.renew()
        await client.execute("echo", {"i": 2})
        assert client.session_id == first.session_id
        with pytest.raises(LatchGateBudgetExhausted):
            await client.execute("echo", {"i": 3})
