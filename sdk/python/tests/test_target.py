from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from latchgate import LatchGateClient, LatchGateTransportError
from latchgate._target import check_socket_dir, default_socket_candidates, resolve_target


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lgt"))
    os.chmod(d, 0o700)
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    d.rmdir()


def _bind(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


@pytest.mark.parametrize(
    ("name", "base_url", "env", "sock", "want_base", "want_uds"),
    [
        (
            "base_url wins",
            "http://h:1/",
            {"LATCHGATE_URL": "http://e:2"},
            "/s.sock",
            "http://h:1",
            None,
        ),
        ("env before socket", None, {"LATCHGATE_URL": "http://e:2"}, "/s.sock", "http://e:2", None),
        ("socket argument", None, {}, "/s.sock", "http://localhost", "/s.sock"),
        (
            "empty env ignored",
            None,
            {"LATCHGATE_URL": ""},
            "/s.sock",
            "http://localhost",
            "/s.sock",
        ),
    ],
)
def test_resolution_order(
    name: str,
    base_url: str | None,
    env: dict[str, str],
    sock: str,
    want_base: str,
    want_uds: str | None,
) -> None:
    t = resolve_target(base_url, sock, env, 1000)
    assert (t.base, t.uds) == (want_base, want_uds), name


def test_default_candidates_order() -> None:
    assert default_socket_candidates({"XDG_RUNTIME_DIR": "/run/user/7"}, 7) == [
        "/run/latchgate/gate.sock",
        "/run/user/7/latchgate/gate.sock",
        "/tmp/latchgate-7/gate.sock",
    ]
    assert default_socket_candidates({}, 7) == [
        "/run/latchgate/gate.sock",
        "/tmp/latchgate-7/gate.sock",
    ]


def test_default_xdg_socket_used(short_dir: Path) -> None:
    if os.path.lexists("/run/latchgate/gate.sock"):
        pytest.skip("a system gate socket exists")
    (short_dir / "latchgate").mkdir(mode=0o700)
    s = _bind(short_dir / "latchgate" / "gate.sock")
    try:
        t = resolve_target(None, None, {"XDG_RUNTIME_DIR": str(short_dir)}, os.getuid())
        assert t.uds == str(short_dir / "latchgate" / "gate.sock")
        assert t.checked
    finally:
        s.close()


def test_default_socket_in_world_writable_dir_refused(short_dir: Path) -> None:
    if os.path.lexists("/run/latchgate/gate.sock"):
        pytest.skip("a system gate socket exists")
    d = short_dir / "latchgate"
    d.mkdir()
    os.chmod(d, 0o777)
    s = _bind(d / "gate.sock")
    try:
        with pytest.raises(LatchGateTransportError, match="writable by others"):
            resolve_target(None, None, {"XDG_RUNTIME_DIR": str(short_dir)}, os.getuid())
    finally:
        s.close()


def test_default_socket_in_symlinked_dir_refused(short_dir: Path) -> None:
    if os.path.lexists("/run/latchgate/gate.sock"):
        pytest.skip("a system gate socket exists")
    real = short_dir / "real"
    real.mkdir(mode=0o700)
    s = _bind(real / "gate.sock")
    (short_dir / "latchgate").symlink_to(real)
    try:
        with pytest.raises(LatchGateTransportError, match="symlink"):
            resolve_target(None, None, {"XDG_RUNTIME_DIR": str(short_dir)}, os.getuid())
    finally:
        s.close()


def test_check_socket_dir_ok(short_dir: Path) -> None:
    check_socket_dir(str(short_dir / "gate.sock"))


def _system_gate_exists() -> bool:
    return os.path.lexists("/run/latchgate/gate.sock") or os.path.lexists(
        f"/tmp/latchgate-{os.getuid()}/gate.sock"
    )


def test_no_gate_found_is_transport_error() -> None:
    if _system_gate_exists():
        pytest.skip("a gate socket exists on this machine")
    with pytest.raises(LatchGateTransportError, match="no LatchGate socket"):
        resolve_target(None, None, {"XDG_RUNTIME_DIR": "/nonexistent"}, os.getuid())


async def test_client_resolves_defaults_lazily() -> None:
    # Construction never fails for want of a gate; the first call does.
    if _system_gate_exists():
        pytest.skip("a gate socket exists on this machine")
    async with LatchGateClient(
        agent_id="a", env={"XDG_RUNTIME_DIR": "/nonexistent"}, max_retries=0
    ) as c:
        assert c.base_url is None
        with pytest.raises(LatchGateTransportError):
            await c.list_actions()


def test_client_env_url() -> None:
    c = LatchGateClient(env={"LATCHGATE_URL": "http://localhost:3000"}, socket="/x.sock")
    assert (c.base_url, c.socket_path) == ("http://localhost:3000", None)


def test_default_socket_in_dir_owned_by_another_user_refused(short_dir: Path) -> None:
    # /tmp/latchgate-<uid> and $XDG_RUNTIME_DIR/latchgate can be created by
    # anyone first: a directory owned by someone else (not root) may hold a
    # fake gate, even when it is not writable by others.
    if os.path.lexists("/run/latchgate/gate.sock"):
        pytest.skip("a system gate socket exists")
    d = short_dir / "latchgate"
    d.mkdir(mode=0o755)
    s = _bind(d / "gate.sock")
    uid = os.getuid() + 1
    if os.getuid() == 0:
        os.chown(d, 4242, 4242)
        uid = 0
    env = {"XDG_RUNTIME_DIR": str(short_dir)}
    try:
        with pytest.raises(LatchGateTransportError, match="owned by uid"):
            resolve_target(None, None, env, uid)
        if os.getuid() == 0:
            os.chown(d, 0, 0)  # root's directory is fine
            assert resolve_target(None, None, env, uid).uds == str(d / "gate.sock")
    finally:
        s.close()
