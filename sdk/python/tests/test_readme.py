"""Every Python snippet in README.md compiles; with LATCHGATE_TEST_SOCKET set,
every snippet that does not wait for a human runs against the real gate,
finding it through the default socket resolution ($XDG_RUNTIME_DIR)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_snippet_compiles(code: str) -> None:
    compile(code, "README.md", "exec")


@pytest.mark.skipif(not os.environ.get("LATCHGATE_TEST_SOCKET"), reason="no real gate")
@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_snippet_runs_against_gate(code: str) -> None:
    if "wait_for_approval" in code or "asyncio.run" not in code:
        pytest.skip("needs an operator, or is not a program")
    if os.path.lexists("/run/latchgate/gate.sock"):
        pytest.skip("a system gate socket would take precedence")
    with tempfile.TemporaryDirectory(prefix="lgxdg") as xdg:
        os.mkdir(os.path.join(xdg, "latchgate"), 0o700)
        os.symlink(os.environ["LATCHGATE_TEST_SOCKET"], os.path.join(xdg, "latchgate", "gate.sock"))
        env = {k: v for k, v in os.environ.items() if k != "LATCHGATE_URL"}
        env["XDG_RUNTIME_DIR"] = xdg
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
