"""LatchGate Python SDK: an async client for the LatchGate security gateway.

Quick start::

    import asyncio
    from latchgate import LatchGateClient

    async def main() -> None:
        async with LatchGateClient(agent_id="my-agent") as client:
            result = await client.execute("echo", {"hello": "world"})
            receipt = await client.get_receipt(result.receipt_id)
            print(result.output, await client.verify_receipt(receipt))

    asyncio.run(main())
"""

import logging

from .client import LatchGateClient, __version__
from .dpop import DPoPKey, jwk_thumbprint, normalize_htu
from .errors import (
    LatchGateActionFailed,
    LatchGateApprovalRequired,
    LatchGateAuthError,
    LatchGateBudgetExhausted,
    LatchGateDenied,
    LatchGateError,
    LatchGateLeaseExpired,
    LatchGateNotConnected,
    LatchGateReceiptInvalid,
    LatchGateReplayDetected,
    LatchGateTransportError,
    LatchGateUnavailable,
)
from .jcs import JCSError, canonicalize
from .models import (
    ActionEgress,
    ActionInfo,
    ApprovalStatus,
    ExecuteResult,
    LeaseInfo,
    Receipt,
    ReceiptKeys,
)

logging.getLogger("latchgate").addHandler(logging.NullHandler())

__all__ = [
    "ActionEgress",
    "ActionInfo",
    "ApprovalStatus",
    "DPoPKey",
    "ExecuteResult",
    "JCSError",
    "LatchGateActionFailed",
    "LatchGateApprovalRequired",
    "LatchGateAuthError",
    "LatchGateBudgetExhausted",
    "LatchGateClient",
    "LatchGateDenied",
    "LatchGateError",
    "LatchGateLeaseExpired",
    "LatchGateNotConnected",
    "LatchGateReceiptInvalid",
    "LatchGateReplayDetected",
    "LatchGateTransportError",
    "LatchGateUnavailable",
    "LeaseInfo",
    "Receipt",
    "ReceiptKeys",
    "__version__",
    "canonicalize",
    "jwk_thumbprint",
    "normalize_htu",
]
