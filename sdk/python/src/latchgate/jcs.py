"""RFC 8785 (JCS) canonical JSON and a strict I-JSON (RFC 7493) parser.

The receipt hash is SHA-256 over the JCS form of the receipt, so every
verifier must read numbers and strings exactly like the gate does: numbers are
IEEE doubles (integers beyond 2**53 round to the nearest double), strings
are valid Unicode without lone surrogates, and objects have no duplicate
member names.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import rfc8785

__all__ = ["JCSError", "canonicalize", "canonicalize_text", "loads", "sha256_tagged"]

_SAFE_INT = 2**53


class JCSError(ValueError):
    """The value or the JSON text cannot be canonicalised (not I-JSON)."""


def _parse_int(s: str) -> int | float:
    # Like the gate (IEEE doubles): integers beyond 2**53 round to the nearest
    # double; only overflow is an error.
    i = int(s)
    if -_SAFE_INT < i < _SAFE_INT:
        return i
    try:
        return float(i)
    except OverflowError as exc:
        raise JCSError(f"number {s} overflows an IEEE double") from exc


def _parse_float(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):
        raise JCSError(f"number {s} overflows an IEEE double")
    return f


def _parse_constant(s: str) -> Any:
    raise JCSError(f"{s} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise JCSError(f"duplicate member name {k!r}")
        out[k] = v
    return out


def _check_strings(v: Any) -> None:
    # json.loads turns "\\ud800" escapes into lone surrogates; I-JSON forbids them.
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            _check_str(x)
        elif isinstance(x, dict):
            for k, item in x.items():
                _check_str(k)
                stack.append(item)
        elif isinstance(x, list):
            stack.extend(x)


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JCSError("string contains a lone surrogate") from exc


def loads(text: str | bytes) -> Any:
    """Parse JSON text strictly as I-JSON.

    Rejects invalid UTF-8, duplicate member names, lone surrogates, NaN and
    Infinity, and numbers that overflow a double. Integers within ±2**53 stay
    ``int``; other numbers become ``float`` (as the gate reads them).
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JCSError("JSON text is not valid UTF-8") from exc
    if text.startswith("\ufeff"):
        raise JCSError("JSON text starts with a byte order mark")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except JCSError:
        raise
    except (ValueError, RecursionError) as exc:
        raise JCSError(f"invalid JSON: {exc}") from exc
    _check_strings(value)
    return value


def _normalise(v: Any) -> Any:
    # rfc8785 refuses ints beyond 2**53; the gate reads them as doubles,
    # so pass them on as floats (rounded like the gate rounds them).
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        if -_SAFE_INT < v < _SAFE_INT:
            return v
        return _parse_int(str(v))
    if isinstance(v, float):
        if not math.isfinite(v):
            raise JCSError(f"{v} is not representable in JSON")
        return v
    if isinstance(v, str):
        _check_str(v)
        return v
    if isinstance(v, dict):
        out: dict[str, Any] = {}
        for k, item in v.items():
            if not isinstance(k, str):
                raise JCSError(f"object member name {k!r} is not a string")
            _check_str(k)
            out[k] = _normalise(item)
        return out
    if isinstance(v, (list, tuple)):
        return [_normalise(item) for item in v]
    raise JCSError(f"value of type {type(v).__name__} is not JSON")


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON-compatible value."""
    try:
        return rfc8785.dumps(_normalise(value))
    except JCSError:
        raise
    except Exception as exc:  # rfc8785's own errors
        raise JCSError(str(exc)) from exc


def canonicalize_text(text: str | bytes) -> bytes:
    """Parse JSON text strictly (:func:`loads`) and return its canonical bytes."""
    return canonicalize(loads(text))


def sha256_tagged(data: bytes) -> str:
    """``"sha256:" + lowercase hex(SHA-256(data))``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
