"""DPoP (RFC 9449 profile, PROTOCOL §2.1): ephemeral P-256 keys and proofs.

A :class:`DPoPKey` is generated per session and never leaves the process.
:meth:`DPoPKey.proof` makes one fresh proof per request, binding the method,
the URL (``htu``), the lease (``ath``) and the raw body (``bh``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = [
    "DPoPKey",
    "b64url",
    "b64url_decode",
    "body_hash",
    "jwk_thumbprint",
    "normalize_htu",
]


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s: str) -> bytes:
    """Strict base64url-without-padding decoding (raises ``ValueError``)."""
    if "=" in s or any(c not in _B64URL for c in s) or len(s) % 4 == 1:
        raise ValueError("not base64url without padding")
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if b64url(raw) != s:  # non-canonical trailing bits
        raise ValueError("non-canonical base64url")
    return raw


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def body_hash(body: bytes) -> str:
    """The ``bh`` claim: base64url-no-pad(SHA-256(raw body)); empty body hashes ``b""``."""
    return b64url(hashlib.sha256(body).digest())


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of an EC P-256 or OKP Ed25519 JWK."""
    kty = jwk.get("kty")
    if kty == "EC":
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    elif kty == "OKP":
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    else:
        raise ValueError(f"unsupported JWK kty {kty!r}")
    canon = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url(hashlib.sha256(canon.encode("utf-8")).digest())


def normalize_htu(url: str) -> str:
    """Normalise an ``htu`` as in PROTOCOL §1.1.

    Drop ``#…`` then ``?…``; lowercase scheme and authority; keep the path as
    is; an empty path becomes ``/``; drop the default port (80 for http, 443
    for https).
    """
    url = url.split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    scheme = scheme.lower()
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    authority = authority.lower()
    colon = authority.rfind(":")
    if colon >= 0 and "]" not in authority[colon:]:
        port = authority[colon + 1 :]
        if (scheme == "http" and port == "80") or (scheme == "https" and port == "443"):
            authority = authority[:colon]
    return f"{scheme}://{authority}{path or '/'}"


class DPoPKey:
    """An ephemeral P-256 key pair used to sign DPoP proofs."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        if private_key is None:
            private_key = ec.generate_private_key(ec.SECP256R1())
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("DPoP keys must be P-256")
        self._key = private_key
        self._now = now
        nums = private_key.public_key().public_numbers()
        self._jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(nums.x.to_bytes(32, "big")),
            "y": b64url(nums.y.to_bytes(32, "big")),
        }
        self._thumbprint = jwk_thumbprint(self._jwk)
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self._jwk}
        self._header_b64 = b64url(json.dumps(header, separators=(",", ":")).encode("ascii"))

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public JWK ``{"kty","crv","x","y"}`` (a copy)."""
        return dict(self._jwk)

    @property
    def thumbprint(self) -> str:
        """RFC 7638 thumbprint of :attr:`public_jwk` (the lease's ``cnf.jkt``)."""
        return self._thumbprint

    def proof(
        self,
        method: str,
        htu: str,
        *,
        lease_jwt: str | None = None,
        body: bytes = b"",
        iat: int | None = None,
        jti: str | None = None,
    ) -> str:
        """Make one fresh compact-JWS proof for a request.

        ``htu`` is the full request URL (query and fragment are dropped). The
        ``ath`` claim is included when ``lease_jwt`` is given; ``bh`` always.
        """
        claims: dict[str, object] = {
            "jti": jti if jti is not None else secrets.token_urlsafe(24),
            "htm": method.upper(),
            "htu": normalize_htu(htu),
            "iat": int(self._now()) if iat is None else iat,
        }
        if lease_jwt is not None:
            claims["ath"] = b64url(hashlib.sha256(lease_jwt.encode("ascii")).digest())
        claims["bh"] = body_hash(body)
        payload_b64 = b64url(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        signing_input = f"{self._header_b64}.{payload_b64}".encode("ascii")
        der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{self._header_b64}.{payload_b64}.{b64url(sig)}"
