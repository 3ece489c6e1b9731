"""A small protocol stub of the gate on a real Unix socket, for the SDK tests.

It checks every DPoP proof independently of the SDK (signature as raw r||s,
thumbprint binding, htm, htu, ath, bh, jti replay), issues leases with
session ids that survive renewal, enforces max_calls, runs an ``echo`` action,
holds ``needs_approval`` for a human, and signs receipts with Ed25519.
Tests can queue forced answers per route to produce 429/503/502 on demand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socketserver
import tempfile
import threading
import uuid
from collections import defaultdict, deque
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def thumbprint(jwk: dict[str, str]) -> str:
    canon = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
    )
    return b64u(hashlib.sha256(canon.encode()).digest())


def _gate_int(s: str) -> int | float:
    i = int(s)
    return i if abs(i) < 2**53 else float(i)


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{dt.microsecond // 1000:03d}Z"
    )


class ProofError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class StubGate:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="lgstub")
        os.chmod(self.dir, 0o700)
        self.socket_path = os.path.join(self.dir, "gate.sock")
        self.lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.leases: dict[str, str] = {}  # lease token -> session id
        self.jtis: set[tuple[str, str]] = set()
        self.requests: list[dict[str, Any]] = []
        self.forced: dict[tuple[str, str], deque[tuple[int, Any, dict[str, str]]]] = defaultdict(
            deque
        )
        self.receipts: dict[str, dict[str, Any]] = {}
        self.prev_hash: str | None = None
        self.seq = 0
        self.idem: dict[str, dict[str, Any]] = {}
        self.approvals: dict[str, dict[str, Any]] = {}
        self.pending_polls = 2
        self.poll_retry_after = 1
        self.lease_ttl = 300
        self.receipt_key = Ed25519PrivateKey.generate()
        raw = self.receipt_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.receipt_x = b64u(raw)
        canon = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": self.receipt_x}, separators=(",", ":")
        )
        self.receipt_kid = b64u(hashlib.sha256(canon.encode()).digest())
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                stub._handle(self, "GET")

            def do_POST(self) -> None:
                stub._handle(self, "POST")

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True

        self.server = Server(self.socket_path, Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---------------------------------------------------------------- scripting

    def force(
        self,
        method: str,
        path: str,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        for _ in range(times):
            self.forced[(method, path)].append((status, body, headers or {}))

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r["method"] == method and r["path"] == path)

    # ---------------------------------------------------------------- handling

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path = h.path
        with self.lock:
            self.requests.append(
                {"method": method, "path": path, "headers": dict(h.headers), "body": body}
            )
            forced = self.forced.get((method, path))
            if forced:
                status, obj, headers = forced.popleft()
                # A forced answer still consumes nothing else; proofs are not checked.
                self._send(h, status, obj, headers)
                return
            try:
                status, obj, headers = self._route(method, path, dict(h.headers), body)
            except ProofError as e:
                status, obj, headers = (
                    401,
                    {"error": e.code, "message": e.reason, "deny_reason": e.reason},
                    {},
                )
        self._send(h, status, obj, headers)

    def _send(
        self, h: BaseHTTPRequestHandler, status: int, obj: Any, headers: dict[str, str]
    ) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _auth(self, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        authz = headers.get("Authorization")
        proof = headers.get("DPoP")
        if not authz or not proof:
            raise ProofError("missing_auth_header", "missing header")
        if not authz.startswith("DPoP "):
            raise ProofError("invalid_lease", "scheme")
        token = authz[5:]
        sid = self.leases.get(token)
        if sid is None:
            raise ProofError("invalid_lease", "unknown lease")
        sess = self.sessions[sid]
        parts = proof.split(".")
        if len(parts) != 3:
            raise ProofError("invalid_dpop", "parts")
        header = json.loads(b64u_dec(parts[0]))
        claims = json.loads(b64u_dec(parts[1]))
        if (
            set(header) != {"typ", "alg", "jwk"}
            or header["typ"] != "dpop+jwt"
            or header["alg"] != "ES256"
        ):
            raise ProofError("invalid_dpop", "header")
        jwk = header["jwk"]
        if set(jwk) != {"kty", "crv", "x", "y"} or len(jwk["x"]) != 43 or len(jwk["y"]) != 43:
            raise ProofError("invalid_dpop", "jwk")
        if thumbprint(jwk) != sess["jkt"]:
            raise ProofError("invalid_dpop", "jkt")
        pub = ec.EllipticCurvePublicNumbers(
            int.from_bytes(b64u_dec(jwk["x"]), "big"),
            int.from_bytes(b64u_dec(jwk["y"]), "big"),
            ec.SECP256R1(),
        ).public_key()
        sig = b64u_dec(parts[2])
        if len(sig) != 64:
            raise ProofError("invalid_dpop", "signature length")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            pub.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except Exception as exc:
            raise ProofError("invalid_dpop", "signature") from exc
        if not isinstance(claims.get("jti"), str) or not 8 <= len(claims["jti"]) <= 128:
            raise ProofError("invalid_dpop", "jti")
        if claims.get("htm") != method:
            raise ProofError("invalid_dpop", "htm")
        if claims.get("htu") != "http://localhost" + path.split("?")[0]:
            raise ProofError("invalid_dpop", "htu")
        if not isinstance(claims.get("iat"), int):
            raise ProofError("invalid_dpop", "iat")
        if claims.get("ath") != b64u(hashlib.sha256(token.encode()).digest()):
            raise ProofError("invalid_dpop", "ath")
        if claims.get("bh") != b64u(hashlib.sha256(body).digest()):
            raise ProofError("invalid_dpop", "bh")
        if (sess["jkt"], claims["jti"]) in self.jtis:
            raise ProofError("replay_detected", "jti reused")
        self.jtis.add((sess["jkt"], claims["jti"]))
        return sess

    def _lease_answer(self, sess: dict[str, Any]) -> dict[str, Any]:
        token = "lease-" + uuid.uuid4().hex
        self.leases[token] = sess["session_id"]
        exp = datetime.now(timezone.utc) + timedelta(seconds=sess["ttl"])
        return {
            "lease_jwt": token,
            "session_id": sess["session_id"],
            "lease_jti": str(uuid.uuid4()),
            "expires_at": rfc3339(exp),
            "principal": sess["principal"],
            "scopes": sess["scopes"],
            "budgets": sess["budgets"],
        }

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if method == "POST" and path == "/v1/leases":
            req = json.loads(body or b"{}")
            jwk = req.get("dpop_jwk")
            if not isinstance(jwk, dict) or set(jwk) != {"kty", "crv", "x", "y"}:
                return 400, {"error": "invalid_request", "message": "bad jwk"}, {}
            sid = str(uuid.uuid4())
            sess = {
                "session_id": sid,
                "jkt": thumbprint(jwk),
                "principal": "agent:" + req.get("agent_id", "anon"),
                "agent_id": req.get("agent_id"),
                "scopes": req.get("scopes", ["tools:call"]),
                "budgets": req.get("budgets", {}),
                "calls": 0,
                "ttl": req.get("ttl_seconds", self.lease_ttl),
            }
            self.sessions[sid] = sess
            return 200, self._lease_answer(sess), {}
        if method == "POST" and path == "/v1/leases/renew":
            sess = self._auth(method, path, headers, body)
            return 200, self._lease_answer(sess), {}
        if method == "GET" and path == "/v1/receipt-keys":
            return (
                200,
                {
                    "keys": [
                        {
                            "kty": "OKP",
                            "crv": "Ed25519",
                            "x": self.receipt_x,
                            "kid": self.receipt_kid,
                            "use": "sig",
                            "alg": "EdDSA",
                        }
                    ]
                },
                {},
            )
        if method == "GET" and path == "/v1/actions":
            return (
                200,
                {
                    "actions": [
                        {
                            "action_id": "echo",
                            "version": "1.0.0",
                            "description": "echo",
                            "risk_level": "low",
                        },
                        {
                            "action_id": "http_fetch",
                            "version": "1.0.0",
                            "description": "fetch",
                            "risk_level": "medium",
                        },
                    ]
                },
                {},
            )
        if method == "GET" and path.startswith("/v1/actions/"):
            aid = path.rsplit("/", 1)[1]
            if aid == "echo":
                return 200, {"action_id": "echo", "egress": "none"}, {}
            if aid == "http_fetch":
                return (
                    200,
                    {
                        "action_id": "http_fetch",
                        "egress": {
                            "proxy_allowlist": {
                                "allowed_domains": ["httpbin.org", "api.github.com"]
                            }
                        },
                    },
                    {},
                )
            return (
                404,
                {"error": "action_not_found", "message": "no such action", "action_id": aid},
                {},
            )
        if method == "POST" and path.startswith("/v1/actions/") and path.endswith("/execute"):
            aid = path.split("/")[3]
            if aid not in ("echo", "needs_approval"):
                return (
                    404,
                    {"error": "action_not_found", "message": "no such action", "action_id": aid},
                    {},
                )
            sess = self._auth(method, path, headers, body)
            args = json.loads(body or b"{}", parse_int=_gate_int)
            key = headers.get("Idempotency-Key")
            if key and key in self.idem:
                return 200, self.idem[key], {}
            if aid == "needs_approval":
                apid = str(uuid.uuid4())
                self.approvals[apid] = {"polls": 0, "session": sess["session_id"], "args": args}
                return (
                    202,
                    {
                        "decision": "pending_approval",
                        "approval_id": apid,
                        "request_hash": "sha256:" + "0" * 64,
                        "trace_id": "t",
                        "expires_at": rfc3339(datetime.now(timezone.utc)),
                    },
                    {},
                )
            mc = sess["budgets"].get("max_calls")
            if mc is not None and sess["calls"] >= mc:
                return 403, {"error": "budget_exhausted", "message": "budget exhausted"}, {}
            sess["calls"] += 1
            receipt = self._receipt(sess, aid, args)
            answer = {
                "decision": "executed",
                "trace_id": receipt["trace_id"],
                "action_id": aid,
                "grant_id": receipt["grant_id"],
                "receipt_id": receipt["receipt_id"],
                "output": args,
                "verification_outcome": "unverifiable_declared",
                "verification": {"outcome": "unverifiable_declared", "is_fully_successful": True},
                "runtime": {"duration_ms": 1},
            }
            if key:
                self.idem[key] = answer
            return 200, answer, {}
        if method == "GET" and path.startswith("/v1/approvals/") and path.endswith("/poll"):
            sess = self._auth(method, path, headers, body)
            apid = path.split("/")[3]
            ap = self.approvals.get(apid)
            if ap is None or ap["session"] != sess["session_id"]:
                return 404, {"error": "approval_not_found", "message": "no such approval"}, {}
            ap["polls"] += 1
            if ap["polls"] <= self.pending_polls:
                return (
                    200,
                    {
                        "status": "pending",
                        "retry_after_seconds": self.poll_retry_after,
                        "expires_at": rfc3339(datetime.now(timezone.utc)),
                    },
                    {},
                )
            if "receipt" not in ap:
                ap["receipt"] = self._receipt(sess, "needs_approval", ap["args"])["receipt_id"]
            return (
                200,
                {"status": "approved", "receipt_id": ap["receipt"], "output": ap["args"]},
                {},
            )
        if method == "GET" and path.startswith("/v1/receipts/"):
            sess = self._auth(method, path, headers, body)
            rid = path.rsplit("/", 1)[1]
            r = self.receipts.get(rid)
            if r is None:
                return 404, {"error": "receipt_not_found", "message": "no such receipt"}, {}
            return 200, {**r, "signature_status": "valid"}, {}
        return 404, {"error": "not_found", "message": "no such route"}, {}

    def _receipt(self, sess: dict[str, Any], aid: str, args: Any) -> dict[str, Any]:
        self.seq += 1
        now = rfc3339(datetime.now(timezone.utc))
        r: dict[str, Any] = {
            "receipt_id": str(uuid.uuid4()),
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "gate_id": "stub",
            "trace_id": uuid.uuid4().hex,
            "grant_id": str(uuid.uuid4()),
            "action_id": aid,
            "action_version": "1.0.0",
            "action_digest": "sha256:" + "a" * 64,
            "provider_module_digest": "sha256:" + "a" * 64,
            "principal": sess["principal"],
            "session_id": sess["session_id"],
            "request_hash": "sha256:" + hashlib.sha256(rfc8785.dumps(args)).hexdigest(),
            "response_hash": None,
            "output": args,
            "output_truncated": False,
            "normalized_result": {"kind": "success", "summary": "ok"},
            "verification_outcome": {"status": "unverifiable_declared"},
            "egress": {"hosts": []},
            "approval": None,
            "policy_version": "p1",
            "started_at": now,
            "finished_at": now,
        }
        h = "sha256:" + hashlib.sha256(rfc8785.dumps(r)).hexdigest()
        r["hash"] = h
        r["signature"] = b64u(self.receipt_key.sign(h.encode()))
        r["key_id"] = self.receipt_kid
        self.prev_hash = h
        self.receipts[r["receipt_id"]] = r
        return r
