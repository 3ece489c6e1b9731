"""Where the gate is: URL resolution order and the default-socket safety check."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import LatchGateTransportError

__all__ = ["Target", "check_socket_dir", "default_socket_candidates", "resolve_target"]

UDS_BASE = "http://localhost"


@dataclass(frozen=True)
class Target:
    """``base`` is the URL base for requests and ``htu``; ``uds`` the socket path
    (``None`` over TCP); ``checked`` whether the socket's directory must pass
    :func:`check_socket_dir` (default paths only), and ``owner`` the uid that
    directory must belong to, or root (``None``: any owner)."""

    base: str
    uds: str | None
    checked: bool = False
    owner: int | None = None


def default_socket_candidates(env: Mapping[str, str], uid: int) -> list[str]:
    """The default socket paths in order (PROTOCOL §1)."""
    out = ["/run/latchgate/gate.sock"]
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        out.append(os.path.join(xdg, "latchgate", "gate.sock"))
    out.append(f"/tmp/latchgate-{uid}/gate.sock")  # noqa: S108 - the protocol's fallback
    return out


def check_socket_dir(path: str, owner: int | None = None) -> None:
    """Refuse a socket whose directory is a symlink or writable by others, or
    (with ``owner``) owned by anyone but ``owner`` or root."""
    directory = os.path.dirname(path) or "."
    try:
        st = os.lstat(directory)
    except OSError as exc:
        raise LatchGateTransportError(f"cannot inspect socket directory {directory}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise LatchGateTransportError(
            f"refusing socket {path}: its directory {directory} is a symlink"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise LatchGateTransportError(f"refusing socket {path}: {directory} is not a directory")
    if st.st_mode & stat.S_IWOTH:
        raise LatchGateTransportError(
            f"refusing socket {path}: its directory {directory} is writable by others"
        )
    if owner is not None and st.st_uid not in (owner, 0):
        raise LatchGateTransportError(
            f"refusing socket {path}: its directory {directory} is owned by uid {st.st_uid}"
        )


def resolve_target(
    base_url: str | None,
    socket: str | None,
    env: Mapping[str, str],
    uid: int,
) -> Target:
    """Resolve base_url → LATCHGATE_URL → socket → default sockets.

    For the defaults the first path that exists is used, after its directory
    passes :func:`check_socket_dir`; except for ``/run/latchgate`` (the gate's
    own user's) it must belong to ``uid`` or root, since anyone may create
    ``/tmp/latchgate-<uid>`` first. No gate found is a transport error.
    """
    if base_url:
        return Target(base=base_url.rstrip("/"), uds=None)
    env_url = env.get("LATCHGATE_URL")
    if env_url:
        return Target(base=env_url.rstrip("/"), uds=None)
    if socket:
        return Target(base=UDS_BASE, uds=socket)
    candidates = default_socket_candidates(env, uid)
    for i, path in enumerate(candidates):
        if os.path.lexists(path):
            owner = uid if i > 0 else None
            check_socket_dir(path, owner)
            return Target(base=UDS_BASE, uds=path, checked=True, owner=owner)
    raise LatchGateTransportError(
        "no LatchGate socket found (tried " + ", ".join(candidates) + "); "
        "pass socket= or base_url=, or set LATCHGATE_URL"
    )
