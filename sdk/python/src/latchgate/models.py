"""Result types returned by :class:`latchgate.LatchGateClient`.

Every type keeps the gate's JSON object in ``raw`` so members this SDK version
does not know about are still reachable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .dpop import b64url_decode, jwk_thumbprint
from .errors import LatchGateReceiptInvalid
from .jcs import JCSError, canonicalize, sha256_tagged

__all__ = [
    "ActionEgress",
    "ActionInfo",
    "ApprovalStatus",
    "ExecuteResult",
    "LeaseInfo",
    "Receipt",
    "ReceiptKeys",
    "ReceiptKeysLike",
]

_SUCCESS_STATUSES = frozenset({"verified", "unverifiable_declared"})
_RECEIPT_UNHASHED = ("hash", "signature", "key_id", "signature_status")


def _s(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    return v if isinstance(v, str) else None


def parse_time(value: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp (``Z`` or offset) into an aware datetime."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


@dataclass(frozen=True)
class LeaseInfo:
    """The current lease (PROTOCOL §3.1). ``lease_jwt`` is a bearer-bound secret."""

    lease_jwt: str = field(repr=False)
    session_id: str
    lease_jti: str
    expires_at: datetime
    principal: str
    scopes: tuple[str, ...]
    budgets: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LeaseInfo:
        lease_jwt = _s(d, "lease_jwt")
        session_id = _s(d, "session_id")
        expires = parse_time(_s(d, "expires_at"))
        if not lease_jwt or not session_id or expires is None:
            raise ValueError("lease answer lacks lease_jwt, session_id or expires_at")
        scopes = d.get("scopes")
        budgets = d.get("budgets")
        return cls(
            lease_jwt=lease_jwt,
            session_id=session_id,
            lease_jti=_s(d, "lease_jti") or "",
            expires_at=expires,
            principal=_s(d, "principal") or "",
            scopes=tuple(x for x in scopes if isinstance(x, str))
            if isinstance(scopes, list)
            else (),
            budgets=dict(budgets) if isinstance(budgets, dict) else {},
            raw=dict(d),
        )


@dataclass(frozen=True)
class ExecuteResult:
    """A 200 answer of ``POST /v1/actions/{id}/execute``."""

    output: Any
    receipt_id: str
    trace_id: str
    action_id: str
    grant_id: str
    verification_outcome: str
    is_fully_successful: bool
    runtime: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExecuteResult:
        outcome = _s(d, "verification_outcome") or ""
        verification = d.get("verification")
        ok: bool
        if isinstance(verification, dict) and isinstance(
            verification.get("is_fully_successful"), bool
        ):
            ok = verification["is_fully_successful"]
        else:
            ok = outcome in _SUCCESS_STATUSES
        runtime = d.get("runtime")
        return cls(
            output=d.get("output"),
            receipt_id=_s(d, "receipt_id") or "",
            trace_id=_s(d, "trace_id") or "",
            action_id=_s(d, "action_id") or "",
            grant_id=_s(d, "grant_id") or "",
            verification_outcome=outcome,
            is_fully_successful=ok,
            runtime=dict(runtime) if isinstance(runtime, dict) else {},
            raw=dict(d),
        )


@dataclass(frozen=True)
class ApprovalStatus:
    """An answer of ``GET /v1/approvals/{id}/poll`` (PROTOCOL §3.5).

    ``status`` is ``pending``, ``approved``, ``denied``, ``expired`` or ``failed``.
    """

    approval_id: str
    status: str
    retry_after_seconds: float | None = None
    expires_at: str | None = None
    receipt_id: str | None = None
    output: Any = None
    reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_pending(self) -> bool:
        return self.status == "pending"

    @property
    def is_approved(self) -> bool:
        return self.status == "approved"

    @property
    def is_terminal(self) -> bool:
        """True once the approval will not change any more."""
        return self.status != "pending"

    @classmethod
    def from_json(cls, approval_id: str, d: Mapping[str, Any]) -> ApprovalStatus:
        ra = d.get("retry_after_seconds")
        return cls(
            approval_id=approval_id,
            status=_s(d, "status") or "unknown",
            retry_after_seconds=float(ra)
            if isinstance(ra, (int, float)) and not isinstance(ra, bool)
            else None,
            expires_at=_s(d, "expires_at"),
            receipt_id=_s(d, "receipt_id"),
            output=d.get("output"),
            reason=_s(d, "reason"),
            raw=dict(d),
        )


@dataclass(frozen=True)
class ActionInfo:
    """One entry of ``GET /v1/actions``."""

    action_id: str
    version: str
    description: str
    risk_level: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ActionInfo:
        version = d.get("version")
        return cls(
            action_id=_s(d, "action_id") or "",
            version=str(version) if version is not None else "",
            description=_s(d, "description") or "",
            risk_level=_s(d, "risk_level") or "",
            raw=dict(d),
        )


@dataclass(frozen=True)
class ActionEgress:
    """An action's egress profile: ``"none"`` or ``"proxy_allowlist"``."""

    action_id: str
    profile: str
    allowed_domains: list[str]

    @property
    def has_egress(self) -> bool:
        """True if the action may reach the network (``profile != "none"``)."""
        return self.profile != "none"

    @classmethod
    def from_action_json(cls, d: Mapping[str, Any]) -> ActionEgress:
        action_id = _s(d, "action_id") or ""
        egress = d.get("egress", "none")
        if egress is None or egress == "none":
            return cls(action_id, "none", [])
        if isinstance(egress, dict):
            allow = egress.get("proxy_allowlist")
            if isinstance(allow, dict):
                domains = allow.get("allowed_domains")
                return cls(
                    action_id,
                    "proxy_allowlist",
                    [x for x in domains if isinstance(x, str)] if isinstance(domains, list) else [],
                )
            if len(egress) == 1:
                return cls(action_id, next(iter(egress)), [])
        if isinstance(egress, str):
            return cls(action_id, egress, [])
        raise ValueError("unrecognised egress profile")


class ReceiptKeys:
    """Ed25519 receipt-signing public keys by ``kid`` (from ``GET /v1/receipt-keys``).

    A key is only accepted if its ``kid`` is the RFC 7638 thumbprint of the
    key itself, so a receipt's ``key_id`` always names the exact key.
    """

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> ReceiptKeys:
        """Build from a JWK set ``{"keys":[…]}`` or a list of JWKs.

        Keys that are not Ed25519 or whose ``kid`` is not their thumbprint are
        skipped; private members are ignored.
        """
        items: Iterable[Any]
        if isinstance(jwks, Mapping):
            raw = jwks.get("keys", [])
            items = raw if isinstance(raw, list) else []
        else:
            items = jwks
        out: dict[str, Ed25519PublicKey] = {}
        for jwk in items:
            if not isinstance(jwk, Mapping):
                continue
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                continue
            x = jwk.get("x")
            if not isinstance(x, str):
                continue
            try:
                raw_x = b64url_decode(x)
                key = Ed25519PublicKey.from_public_bytes(raw_x)
            except ValueError:
                continue
            kid = jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": x})
            declared = jwk.get("kid")
            if declared is not None and declared != kid:
                continue
            out[kid] = key
        return cls(out)


ReceiptKeysLike = ReceiptKeys | Mapping[str, Any] | Iterable[Mapping[str, Any]]


def _as_keys(keys: ReceiptKeysLike) -> ReceiptKeys:
    if isinstance(keys, ReceiptKeys):
        return keys
    if isinstance(keys, Mapping) and "keys" not in keys:
        # {kid: Ed25519PublicKey}
        direct = {k: v for k, v in keys.items() if isinstance(v, Ed25519PublicKey)}
        if len(direct) == len(keys):
            return ReceiptKeys(direct)
    return ReceiptKeys.from_jwks(keys)


class Receipt:
    """A signed execution receipt (PROTOCOL §5), exactly as the gate served it."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw: dict[str, Any] = dict(raw)

    def __repr__(self) -> str:
        return (
            f"Receipt(receipt_id={self.receipt_id!r}, action_id={self.action_id!r}, "
            f"kind={self.result_kind!r}, status={self.verification_status!r})"
        )

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    @property
    def receipt_id(self) -> str:
        return _s(self.raw, "receipt_id") or ""

    @property
    def seq(self) -> int | None:
        v = self.raw.get("seq")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def prev_hash(self) -> str | None:
        return _s(self.raw, "prev_hash")

    @property
    def action_id(self) -> str:
        return _s(self.raw, "action_id") or ""

    @property
    def trace_id(self) -> str:
        return _s(self.raw, "trace_id") or ""

    @property
    def grant_id(self) -> str:
        return _s(self.raw, "grant_id") or ""

    @property
    def session_id(self) -> str:
        return _s(self.raw, "session_id") or ""

    @property
    def principal(self) -> str:
        return _s(self.raw, "principal") or ""

    @property
    def output(self) -> Any:
        return self.raw.get("output")

    @property
    def result_kind(self) -> str:
        nr = self.raw.get("normalized_result")
        return (_s(nr, "kind") or "") if isinstance(nr, dict) else ""

    @property
    def verification_status(self) -> str:
        vo = self.raw.get("verification_outcome")
        return (_s(vo, "status") or "") if isinstance(vo, dict) else ""

    @property
    def hash(self) -> str:
        return _s(self.raw, "hash") or ""

    @property
    def signature(self) -> str:
        return _s(self.raw, "signature") or ""

    @property
    def key_id(self) -> str:
        return _s(self.raw, "key_id") or ""

    @property
    def signature_status(self) -> str | None:
        """What the gate said about its own signature (informational only)."""
        return _s(self.raw, "signature_status")

    @property
    def is_fully_successful(self) -> bool:
        """Kind ``success`` and verification ``verified`` or ``unverifiable_declared``."""
        return self.result_kind == "success" and self.verification_status in _SUCCESS_STATUSES

    def compute_hash(self) -> str:
        """``sha256:<hex>`` over the JCS form of the receipt minus
        ``hash``, ``signature``, ``key_id`` and ``signature_status``."""
        body = {k: v for k, v in self.raw.items() if k not in _RECEIPT_UNHASHED}
        return sha256_tagged(canonicalize(body))

    def check(self, keys: ReceiptKeysLike) -> None:
        """Verify offline; raise :class:`LatchGateReceiptInvalid` saying why not.

        ``keys``: a :class:`ReceiptKeys`, a JWK set (``{"keys":[…]}``), a list
        of JWKs, or a mapping ``kid → Ed25519PublicKey``.
        """
        try:
            computed = self.compute_hash()
        except JCSError as exc:
            raise LatchGateReceiptInvalid(f"receipt is not canonicalisable: {exc}") from exc
        if not self.hash or computed != self.hash:
            raise LatchGateReceiptInvalid("receipt hash does not match its contents")
        key = _as_keys(keys).get(self.key_id)
        if key is None:
            raise LatchGateReceiptInvalid(f"unknown receipt key_id {self.key_id!r}")
        try:
            sig = b64url_decode(self.signature)
        except ValueError as exc:
            raise LatchGateReceiptInvalid("receipt signature is not base64url") from exc
        if len(sig) != 64:
            raise LatchGateReceiptInvalid("receipt signature has the wrong length")
        try:
            key.verify(sig, self.hash.encode("ascii"))
        except (InvalidSignature, UnicodeEncodeError) as exc:
            raise LatchGateReceiptInvalid("receipt signature is invalid") from exc

    def verify(self, keys: ReceiptKeysLike) -> bool:
        """True if the hash matches the contents and the Ed25519 signature over
        the hash verifies with the key named by ``key_id`` in ``keys``."""
        try:
            self.check(keys)
        except LatchGateReceiptInvalid:
            return False
        return True
