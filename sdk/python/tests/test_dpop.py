from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from latchgate.dpop import DPoPKey, b64url, b64url_decode, body_hash, normalize_htu


def dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_proof_format() -> None:
    key = DPoPKey(now=lambda: 1_700_000_000.7)
    proof = key.proof(
        "post", "http://localhost/v1/actions/echo/execute?x=1", lease_jwt="L.J.T", body=b'{"a":1}'
    )
    h64, p64, s64 = proof.split(".")
    header = json.loads(dec(h64))
    claims = json.loads(dec(p64))
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk}
    assert set(header["jwk"]) == {"kty", "crv", "x", "y"}
    assert len(header["jwk"]["x"]) == 43
    assert claims["htm"] == "POST"
    assert claims["htu"] == "http://localhost/v1/actions/echo/execute"
    assert claims["iat"] == 1_700_000_000
    assert claims["ath"] == b64url(hashlib.sha256(b"L.J.T").digest())
    assert claims["bh"] == b64url(hashlib.sha256(b'{"a":1}').digest())
    assert 8 <= len(claims["jti"]) <= 128
    sig = dec(s64)
    assert len(sig) == 64, "signature must be raw r||s, not DER"
    pub = ec.EllipticCurvePublicNumbers(
        int.from_bytes(dec(header["jwk"]["x"]), "big"),
        int.from_bytes(dec(header["jwk"]["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, f"{h64}.{p64}".encode(), ec.ECDSA(hashes.SHA256()))


def test_fresh_jti_per_proof() -> None:
    key = DPoPKey()
    jtis = {
        json.loads(dec(key.proof("GET", "http://localhost/x").split(".")[1]))["jti"]
        for _ in range(50)
    }
    assert len(jtis) == 50


def test_empty_body_hash() -> None:
    assert body_hash(b"") == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("http://localhost/v1/x", "http://localhost/v1/x"),
        ("HTTP://LocalHost:80/V1/X?q=1#f", "http://localhost/V1/X"),
        ("https://h.example:443", "https://h.example/"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
        ("http://[::1]/a", "http://[::1]/a"),
        ("http://h:8080/a%2Fb", "http://h:8080/a%2Fb"),
        ("http://h/a#x?y", "http://h/a"),
    ],
)
def test_normalize_htu(given: str, want: str) -> None:
    assert normalize_htu(given) == want


@pytest.mark.parametrize("bad", ["abc=", "ab+c", "a", "ab/c"])
def test_b64url_decode_strict(bad: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(bad)
