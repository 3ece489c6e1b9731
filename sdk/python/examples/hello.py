"""Hello: lease → execute → receipt → offline verification.

    LATCHGATE_SOCKET=/tmp/lg/gate.sock python examples/hello.py

Without LATCHGATE_SOCKET the client uses LATCHGATE_URL or the default sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os

from latchgate import LatchGateClient


async def main() -> None:
    socket = os.environ.get("LATCHGATE_SOCKET") or None
    async with LatchGateClient(agent_id="hello-agent", socket=socket) as client:
        # agent_id is set, so the first execute() opens the lease (lazy connect).
        result = await client.execute("echo", {"message": "hello, gate"})
        print("output:    ", result.output)
        print("receipt_id:", result.receipt_id)
        print("trace_id:  ", result.trace_id)

        receipt = await client.get_receipt(result.receipt_id)
        print("fully successful:", receipt.is_fully_successful)
        print("signature verified offline:", await client.verify_receipt(receipt))


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LATCHGATE_LOG", "WARNING"))
    asyncio.run(main())
