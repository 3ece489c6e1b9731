"""The shared cross-language vectors in definitions/test_vectors (read-only)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from latchgate import Receipt, ReceiptKeys
from latchgate.dpop import DPoPKey, jwk_thumbprint, normalize_htu
from latchgate.jcs import JCSError, canonicalize_text, sha256_tagged

from .conftest import VECTORS


def load(rel: str) -> dict[str, Any]:
    path = VECTORS / rel
    if not path.exists():
        pytest.skip(f"vector file {rel} not present")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def cases(rel: str, member: str) -> list[Any]:
    path = VECTORS / rel
    if not path.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{rel} not present"))]
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        pytest.param(c, id=c.get("name") or c.get("input") or str(i))
        for i, c in enumerate(data[member])
    ]


@pytest.mark.parametrize("case", cases("jcs/golden.json", "cases"))
def test_jcs_golden(case: dict[str, str]) -> None:
    got = canonicalize_text(case["input"])
    assert got.decode("utf-8") == case["canonical"], f"JCS({case['input']!r}) = {got!r}"
    assert sha256_tagged(got) == case["sha256"]


@pytest.mark.parametrize("case", cases("jcs/golden.json", "invalid"))
def test_jcs_invalid(case: dict[str, str]) -> None:
    with pytest.raises(JCSError):
        canonicalize_text(case["input"])


@pytest.mark.parametrize("case", cases("dpop/thumbprints.json", "cases"))
def test_thumbprints(case: dict[str, Any]) -> None:
    assert jwk_thumbprint(case["jwk"]) == case["thumbprint"]


@pytest.mark.parametrize("case", cases("dpop/htu.json", "cases"))
def test_htu(case: dict[str, str]) -> None:
    assert normalize_htu(case["input"]) == case["normalized"]


def _dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def verify_proof(
    proof: str,
    *,
    htm: str,
    htu: str,
    body: bytes,
    lease: str,
    jkt: str,
    now: int,
    max_age: int,
    skew: int,
) -> bool:
    """An independent verifier of PROTOCOL §2.1 (used to check the SDK's proofs)."""
    try:
        h64, p64, s64 = proof.split(".")
        header = json.loads(_dec(h64))
        claims = json.loads(_dec(p64))
        if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256":
            return False
        if set(header) != {"typ", "alg", "jwk"}:
            return False
        jwk = header["jwk"]
        if set(jwk) != {"kty", "crv", "x", "y"} or jwk_thumbprint(jwk) != jkt:
            return False
        pub = ec.EllipticCurvePublicNumbers(
            int.from_bytes(_dec(jwk["x"]), "big"),
            int.from_bytes(_dec(jwk["y"]), "big"),
            ec.SECP256R1(),
        ).public_key()
        sig = _dec(s64)
        if len(sig) != 64:
            return False
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        pub.verify(der, f"{h64}.{p64}".encode(), ec.ECDSA(hashes.SHA256()))
        return (
            isinstance(claims["jti"], str)
            and 8 <= len(claims["jti"]) <= 128
            and claims["htm"] == htm
            and normalize_htu(claims["htu"]) == normalize_htu(htu)
            and isinstance(claims["iat"], int)
            and now - max_age <= claims["iat"] <= now + skew
            and claims["ath"] == _b64(hashlib.sha256(lease.encode()).digest())
            and claims.get("bh", _b64(hashlib.sha256(body).digest()))
            == _b64(hashlib.sha256(body).digest())
        )
    except Exception:
        return False


def _proof_env(d: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    return {
        "htm": p["htm"],
        "htu": p["htu"],
        "body": _dec(p["body_b64url"]) if p.get("body_b64url") else b"",
        "lease": d["lease_token"],
        "jkt": d["jkt"],
        "now": d["now"],
        "max_age": d["max_age_seconds"],
        "skew": d["skew_seconds"],
    }


def test_proof_vectors_and_sdk_proofs() -> None:
    d = load("dpop/proofs.json")
    # The verifier agrees with every vector…
    for p in d["proofs"]:
        got = verify_proof(p["proof"], **_proof_env(d, p))
        assert got == p["expect_valid"], f"verify({p['name']}) = {got}, want {p['expect_valid']}"
    # …and accepts the SDK's own proofs for the valid vectors' requests.
    k = d["key"]
    priv = ec.EllipticCurvePrivateNumbers(
        int.from_bytes(_dec(k["d"]), "big"),
        ec.EllipticCurvePublicNumbers(
            int.from_bytes(_dec(k["x"]), "big"), int.from_bytes(_dec(k["y"]), "big"), ec.SECP256R1()
        ),
    ).private_key()
    key = DPoPKey(priv, now=lambda: float(d["now"]))
    assert key.thumbprint == d["jkt"]
    for p in d["proofs"]:
        if not p["expect_valid"]:
            continue
        env = _proof_env(d, p)
        mine = key.proof(p["htm"], p["htu"], lease_jwt=d["lease_token"], body=env["body"])
        assert verify_proof(mine, **env), f"SDK proof for {p['name']} rejected"


def test_receipt_vectors() -> None:
    d = load("receipts/receipts.json")
    pub = {k: v for k, v in d["key"].items() if k != "d"}
    keys = ReceiptKeys.from_jwks({"keys": [pub]})
    assert d["key"]["kid"] in keys
    for i, item in enumerate(d["receipts"]):
        r = Receipt(item["receipt"])
        got = r.verify(keys)
        assert got == item["valid"], (
            f"verify(receipt {i}: {item['note']}) = {got}, want {item['valid']}"
        )
        if item["valid"]:
            assert r.compute_hash() == r.hash


def test_receipt_vectors_parsed_strictly() -> None:
    """Receipts read through the SDK's strict parser verify the same."""
    from latchgate.jcs import loads

    d = load("receipts/receipts.json")
    pub = {k: v for k, v in d["key"].items() if k != "d"}
    raw = (Path(VECTORS) / "receipts/receipts.json").read_text(encoding="utf-8")
    parsed = loads(raw)
    for item, strict in zip(d["receipts"], parsed["receipts"], strict=True):
        assert Receipt(strict["receipt"]).verify({"keys": [pub]}) == item["valid"]


def test_jcs_error_is_value_error() -> None:
    assert issubclass(JCSError, ValueError)
