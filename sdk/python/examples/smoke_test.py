"""CI smoke test against a running gate (``make test-smoke``).

Environment:
  LATCHGATE_SOCKET            client socket (required)
  LATCHGATE_ADMIN_SOCKET      admin socket (approval step)
  LATCHGATE_BIN               gate binary (approval step: `approvals approve`)
  LATCHGATE_SMOKE_APPROVALS   "1" to run the approval step, else it is skipped
  LATCHGATE_SMOKE_HELD_ACTION  held action id (default echo_held, from
                               testdata/smoke-manifests)

Prints one line per check and a final line ``N passed, N failed``; exits
non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from latchgate import (
    LatchGateApprovalRequired,
    LatchGateBudgetExhausted,
    LatchGateClient,
    LatchGateDenied,
    Receipt,
)

SOCKET = os.environ.get("LATCHGATE_SOCKET", "")


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


async def lease() -> None:
    async with LatchGateClient(agent_id="smoke-py", socket=SOCKET) as c:
        info = await c.connect()
        check(bool(info.session_id) and bool(info.lease_jwt), "lease has no session")


async def execute_echo() -> None:
    async with LatchGateClient(agent_id="smoke-py", socket=SOCKET) as c:
        r = await c.execute("echo", {"message": "smoke", "n": 3})
        check(r.output == {"message": "smoke", "n": 3}, f"echo output {r.output!r}")
        check(r.is_fully_successful, "echo not fully successful")


async def receipt_verification() -> None:
    async with LatchGateClient(agent_id="smoke-py", socket=SOCKET) as c:
        r = await c.execute("echo", {"receipt": "check", "u": "é😀"})
        receipt = await c.get_receipt(r.receipt_id)
        check(receipt.receipt_id == r.receipt_id, "receipt id differs")
        check(await c.verify_receipt(receipt), "receipt did not verify")
        tampered = Receipt({**receipt.raw, "output": {"receipt": "forged"}})
        check(not await c.verify_receipt(tampered), "tampered receipt verified")


async def policy_denial() -> None:
    async with LatchGateClient(agent_id="smoke-py", socket=SOCKET) as c:
        try:
            await c.execute("smoke_no_such_action", {})
        except LatchGateDenied as exc:
            check(exc.code in ("action_not_found", "policy_denied"), f"code {exc.code}")
            return
        raise Failed("unknown action was not denied")


async def budget_exhaustion() -> None:
    async with LatchGateClient(agent_id="smoke-py-budget", socket=SOCKET) as c:
        await c.connect(max_calls=2)
        await c.execute("echo", {"i": 1})
        await c.execute("echo", {"i": 2})
        try:
            await c.execute("echo", {"i": 3})
        except LatchGateBudgetExhausted:
            return
        raise Failed("third call ran with max_calls=2")


async def lease_renewal() -> None:
    async with LatchGateClient(agent_id="smoke-py", socket=SOCKET) as c:
        first = await c.connect()
        second = await c.renew()
        check(second.session_id == first.session_id, "renewal changed the session")
        check(second.lease_jti != first.lease_jti, "renewal returned the same lease")
        r = await c.execute("echo", {"after": "renew"})
        check(r.output == {"after": "renew"}, "execute after renewal failed")


async def approval() -> None:
    if os.environ.get("LATCHGATE_SMOKE_APPROVALS") != "1":
        raise Skipped("LATCHGATE_SMOKE_APPROVALS is not 1")
    gate_bin = os.environ.get("LATCHGATE_BIN", "")
    admin = os.environ.get("LATCHGATE_ADMIN_SOCKET", "")
    check(bool(gate_bin) and bool(admin), "LATCHGATE_BIN and LATCHGATE_ADMIN_SOCKET required")
    action = os.environ.get("LATCHGATE_SMOKE_HELD_ACTION", "echo_held")
    async with LatchGateClient(agent_id="smoke-py-approval", socket=SOCKET) as c:
        try:
            await c.execute(action, {"approve": "me"})
        except LatchGateApprovalRequired as exc:
            approval_id = exc.approval_id
        else:
            raise Failed(f"{action} ran without approval")
        proc = await asyncio.create_subprocess_exec(
            gate_bin,
            "approvals",
            "approve",
            approval_id,
            "--yes",
            "--admin-socket",
            admin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        check(proc.returncode == 0, f"approve exited {proc.returncode}: {out.decode()[-200:]}")
        status = await c.wait_for_approval(approval_id, timeout=30)
        check(status.is_approved, f"approval ended {status.status}: {status.reason}")
        check(status.output == {"approve": "me"}, f"approved output {status.output!r}")
        receipt = await c.get_receipt(status.receipt_id or "")
        check(await c.verify_receipt(receipt), "approved receipt did not verify")


CHECKS: list[tuple[str, Callable[[], Awaitable[None]]]] = [
    ("lease", lease),
    ("execute echo", execute_echo),
    ("receipt verification", receipt_verification),
    ("policy denial", policy_denial),
    ("budget exhaustion", budget_exhaustion),
    ("lease renewal", lease_renewal),
    ("approval", approval),
]


async def main() -> int:
    passed = failed = 0
    if not SOCKET:
        print("FAIL setup: LATCHGATE_SOCKET is not set")
        print("0 passed, 1 failed")
        return 1
    for name, fn in CHECKS:
        try:
            await asyncio.wait_for(fn(), timeout=60)
        except Skipped as exc:
            print(f"SKIP {name}: {exc}")
            continue
        except Exception as exc:  # report every failure, keep going
            failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}")
            continue
        passed += 1
        print(f"PASS {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
