"""Approval flow: a held action → wait for an operator → outcome.

    LATCHGATE_SOCKET=/tmp/lg/gate.sock python examples/approval_flow.py [action_id]

The default action is ``echo_held`` (testdata/smoke-manifests/echo_held.yaml
in the repository, risk_level high: start the gate with
``--manifests-dir testdata/smoke-manifests``). While this waits, an
operator approves on the admin socket:

    latchgate approvals approve <approval_id> --yes --admin-socket /tmp/lg/admin.sock
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from latchgate import LatchGateApprovalRequired, LatchGateClient


async def main(action: str) -> int:
    socket = os.environ.get("LATCHGATE_SOCKET") or None
    async with LatchGateClient(agent_id="approval-agent", socket=socket) as client:
        try:
            result = await client.execute(action, {"to": "ops@example.com", "subject": "report"})
        except LatchGateApprovalRequired as exc:
            print(f"approval required: {exc.approval_id}")
            print(f"  approve with: latchgate approvals approve {exc.approval_id} --yes")
            status = await client.wait_for_approval(exc.approval_id, timeout=600)
            print(f"approval {status.status}")
            if not status.is_approved:
                print(f"  reason: {status.reason}")
                return 1
            print("output:", status.output)
            receipt = await client.get_receipt(status.receipt_id or "")
            print("receipt verified offline:", await client.verify_receipt(receipt))
            return 0
        print("ran without approval:", result.output)
        return 0


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LATCHGATE_LOG", "WARNING"))
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "echo_held")))
