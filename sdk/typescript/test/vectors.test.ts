// The shared test vectors of definitions/test_vectors (JCS, DPoP thumbprints,
// htu normalisation, proofs, receipts). Set LATCHGATE_TEST_VECTORS to use
// another copy; by default they are found from this file's location.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import {
  DpopKey,
  JcsError,
  Receipt,
  canonicalize,
  canonicalizeText,
  ecThumbprint,
  normalizeHtu,
  okpThumbprint,
  parseStrictJson,
  sha256Canonical,
  type EcPublicJwk,
  type JsonValue,
} from "../src/index.js";
import { verifyProof } from "./helpers/dpopverify.js";

// dist/test/vectors.test.js → <repo>/definitions/test_vectors
const VECTORS =
  process.env["LATCHGATE_TEST_VECTORS"] ?? join(fileURLToPath(new URL(".", import.meta.url)), "..", "..", "..", "..", "definitions", "test_vectors");

function load<T>(rel: string): T {
  return JSON.parse(readFileSync(join(VECTORS, rel), "utf8")) as T;
}

interface Golden {
  cases: { name: string; input: string; canonical: string; sha256: string }[];
  invalid: { name: string; input: string }[];
}

test("jcs golden cases", async (t) => {
  const g = load<Golden>("jcs/golden.json");
  assert.ok(g.cases.length > 0);
  for (const c of g.cases) {
    await t.test(c.name, () => {
      const got = canonicalizeText(c.input);
      assert.equal(got, c.canonical, `canonicalizeText(${JSON.stringify(c.input)}) = ${got}, want ${c.canonical}`);
      const hash = "sha256:" + createHash("sha256").update(got, "utf8").digest("hex");
      assert.equal(hash, c.sha256);
      assert.equal(sha256Canonical(parseStrictJson(c.input)), c.sha256);
    });
  }
});

test("jcs golden invalid inputs are refused", async (t) => {
  const g = load<Golden>("jcs/golden.json");
  assert.ok(g.invalid.length > 0);
  for (const c of g.invalid) {
    await t.test(c.name, () => {
      assert.throws(() => canonicalizeText(c.input), JcsError, `canonicalizeText(${JSON.stringify(c.input)}) accepted, want JcsError`);
    });
  }
});

test("jcs refuses lone surrogates and non-JSON values given as JS values", async (t) => {
  const bad: [string, unknown][] = [
    ["lone high surrogate value", "\ud800"],
    ["lone low surrogate key", { "\udc00": 1 }],
    ["NaN", Number.NaN],
    ["Infinity", Number.POSITIVE_INFINITY],
    ["bigint", 1n],
    ["function", () => 1],
    ["Date instance", new Date(0)],
  ];
  for (const [name, v] of bad) {
    await t.test(name, () => assert.throws(() => canonicalize(v), JcsError));
  }
  await t.test("__proto__ member stays data", () => {
    const v = parseStrictJson('{"__proto__":{"a":1},"b":2}');
    assert.equal(canonicalize(v), '{"__proto__":{"a":1},"b":2}');
    assert.equal(Object.getPrototypeOf(v), Object.prototype);
  });
  await t.test("invalid UTF-8 decoded to U+FFFD is canonicalised as that character", () => {
    const text = Buffer.from([0x22, 0xff, 0x22]).toString("utf8");
    assert.equal(canonicalizeText(text), '"\ufffd"');
  });
});

test("dpop thumbprints", async (t) => {
  const v = load<{ cases: { name: string; jwk: EcPublicJwk; thumbprint: string }[] }>("dpop/thumbprints.json");
  assert.ok(v.cases.length > 0);
  for (const c of v.cases) {
    await t.test(c.name, () => assert.equal(ecThumbprint(c.jwk), c.thumbprint));
  }
});

test("htu normalisation", async (t) => {
  const v = load<{ cases: { input: string; normalized: string }[] }>("dpop/htu.json");
  assert.ok(v.cases.length > 0);
  for (const c of v.cases) {
    await t.test(c.input, () => assert.equal(normalizeHtu(c.input), c.normalized, `normalizeHtu(${c.input})`));
  }
});

interface Proofs {
  key: { kty: string; crv: string; x: string; y: string; d: string };
  jkt: string;
  lease_token: string;
  now: number;
  max_age_seconds: number;
  skew_seconds: number;
  proofs: { name: string; proof: string; htm: string; htu: string; body_b64url?: string; expect_valid: boolean; reason?: string }[];
}

test("dpop proof vectors: the test verifier agrees with every expectation", async (t) => {
  const v = load<Proofs>("dpop/proofs.json");
  for (const p of v.proofs) {
    await t.test(p.name, () => {
      const check = () =>
        verifyProof(p.proof, {
          jkt: v.jkt,
          leaseToken: v.lease_token,
          htm: p.htm,
          htu: p.htu,
          body: Buffer.from(p.body_b64url ?? "", "base64url"),
          nowSeconds: v.now,
          maxAge: v.max_age_seconds,
          skew: v.skew_seconds,
        });
      if (p.expect_valid) check();
      else assert.throws(check, (e: Error) => p.reason === undefined || e.message === p.reason);
    });
  }
});

test("dpop proofs made by the SDK with the vector key verify", async (t) => {
  const v = load<Proofs>("dpop/proofs.json");
  const key = DpopKey.fromPrivateKey(createPrivateKey({ key: v.key, format: "jwk" }));
  assert.equal(key.thumbprint, v.jkt);
  const cases = [
    { name: "post with body", htm: "POST", htu: "http://localhost/v1/actions/echo/execute", body: Buffer.from('{"msg":"hi"}') },
    { name: "get empty body", htm: "GET", htu: "http://localhost/v1/receipts/x", body: Buffer.alloc(0) },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const proof = key.proof({ method: c.htm, htu: c.htu, leaseJwt: v.lease_token, body: c.body, nowSeconds: v.now });
      const cl = verifyProof(proof, { jkt: v.jkt, leaseToken: v.lease_token, htm: c.htm, htu: c.htu, body: c.body, nowSeconds: v.now });
      assert.equal(cl.iat, v.now);
      assert.ok(cl.bh !== undefined, "bh always sent");
      const header = JSON.parse(Buffer.from(proof.split(".")[0] ?? "", "base64url").toString()) as Record<string, unknown>;
      assert.deepEqual(Object.keys(header).sort(), ["alg", "jwk", "typ"]);
      assert.deepEqual(Object.keys(header["jwk"] as object).sort(), ["crv", "kty", "x", "y"]);
    });
  }
  await t.test("every proof has a fresh jti", () => {
    const a = key.proof({ method: "GET", htu: "http://localhost/", leaseJwt: "t", body: "", nowSeconds: v.now });
    const b = key.proof({ method: "GET", htu: "http://localhost/", leaseJwt: "t", body: "", nowSeconds: v.now });
    const jti = (p: string) => (JSON.parse(Buffer.from(p.split(".")[1] ?? "", "base64url").toString()) as { jti: string }).jti;
    assert.notEqual(jti(a), jti(b));
  });
});

interface ReceiptVectors {
  key: { kty: string; crv: string; x: string; d: string; kid: string };
  receipts: { receipt: Record<string, JsonValue>; valid: boolean; note: string }[];
}

test("receipt vectors", async (t) => {
  const text = readFileSync(join(VECTORS, "receipts/receipts.json"), "utf8");
  const v = parseStrictJson(text) as unknown as ReceiptVectors;
  const jwks = { keys: [{ kty: v.key.kty, crv: v.key.crv, x: v.key.x, kid: v.key.kid }] };
  assert.equal(okpThumbprint(v.key), v.key.kid);
  assert.ok(v.receipts.length >= 5);
  for (const [i, c] of v.receipts.entries()) {
    await t.test(`#${i + 1} ${c.note}`, () => {
      const r = new Receipt(c.receipt);
      const res = r.check(jwks);
      assert.equal(res.valid, c.valid, `verify(receipt #${i + 1}) = ${res.valid} (${res.reason ?? ""}), want ${c.valid}`);
      // signature_status as served is not part of the hash
      const served = new Receipt({ ...c.receipt, signature_status: "valid" });
      assert.equal(served.verify(jwks), c.valid);
    });
  }
  await t.test("chain links", () => {
    const valid = v.receipts.filter((c) => c.valid).map((c) => new Receipt(c.receipt));
    for (let i = 1; i < valid.length; i++) assert.equal(valid[i]?.prevHash, valid[i - 1]?.hash);
    assert.equal(valid[0]?.prevHash, null);
  });
  await t.test("wrong key set rejects", () => {
    const c = v.receipts.find((x) => x.valid);
    if (c === undefined) throw new Error("no valid receipt vector");
    assert.equal(new Receipt(c.receipt).verify([]), false);
  });
  await t.test("isFullySuccessful", () => {
    const c = v.receipts[0];
    if (c === undefined) throw new Error("no receipt vector");
    assert.equal(new Receipt(c.receipt).isFullySuccessful, true);
  });
});
