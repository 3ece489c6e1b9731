from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from latchgate import LatchGateClient

from .stubgate import StubGate

VECTORS = Path(__file__).resolve().parents[3] / "definitions" / "test_vectors"


class FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class SleepRecorder:
    """Replaces asyncio.sleep: records the delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def stub() -> Iterator[StubGate]:
    gate = StubGate()
    try:
        yield gate
    finally:
        gate.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
async def make_client(
    stub: StubGate, clock: FakeClock, sleeps: SleepRecorder
) -> AsyncIterator[Callable[..., LatchGateClient]]:
    made: list[LatchGateClient] = []

    def factory(**kw: Any) -> LatchGateClient:
        kw.setdefault("socket", stub.socket_path)
        kw.setdefault("clock", clock)
        kw.setdefault("sleep", sleeps)
        kw.setdefault("env", {})
        c = LatchGateClient(**kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        await c.close()
