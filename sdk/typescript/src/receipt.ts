// Receipts (PROTOCOL.md §5) and their offline verification: the hash is
// recomputed over the JCS form of the receipt without hash, signature, key_id
// and signature_status, and the Ed25519 signature over the hash string is
// checked against the gate's receipt keys (GET /v1/receipt-keys).

import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { canonicalize, type JsonValue } from "./jcs.js";
import { sha256B64url } from "./dpop.js";

/** An Ed25519 public key as the gate publishes it. */
export interface ReceiptJwk {
  kty: string;
  crv: string;
  x: string;
  kid?: string;
  use?: string;
  alg?: string;
}

/** A JWK set ({"keys":[…]}) or a plain list of keys. */
export type ReceiptKeys = { keys: readonly ReceiptJwk[] } | readonly ReceiptJwk[];

/** The result of {@link Receipt.check}. */
export interface ReceiptVerification {
  valid: boolean;
  /** Why verification failed; undefined when valid. */
  reason?: string;
}

/** Members outside the hashed body of a receipt. */
const UNHASHED = new Set(["hash", "signature", "key_id", "signature_status"]);

const HASH_RE = /^sha256:[0-9a-f]{64}$/;
const B64URL_RE = /^[A-Za-z0-9_-]*$/;

/** RFC 7638 thumbprint of an Ed25519 (OKP) JWK. */
export function okpThumbprint(jwk: { crv: string; kty: string; x: string }): string {
  return sha256B64url(`{"crv":${JSON.stringify(jwk.crv)},"kty":${JSON.stringify(jwk.kty)},"x":${JSON.stringify(jwk.x)}}`);
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

/** Computes a receipt's hash: "sha256:" + hex(SHA-256(JCS(receipt minus unhashed members))). */
export function computeReceiptHash(raw: Readonly<Record<string, unknown>>): string {
  const body: Record<string, unknown> = {};
  for (const k of Object.keys(raw)) {
    if (!UNHASHED.has(k)) Object.defineProperty(body, k, { value: raw[k], enumerable: true, writable: true, configurable: true });
  }
  return "sha256:" + createHash("sha256").update(canonicalize(body), "utf8").digest("hex");
}

/** A receipt as served by the gate, with typed accessors and offline verification. */
export class Receipt {
  /** The receipt exactly as served (including signature_status when present). */
  readonly raw: Readonly<Record<string, JsonValue>>;

  constructor(raw: Record<string, JsonValue>) {
    this.raw = raw;
  }

  get receiptId(): string {
    return str(this.raw["receipt_id"]) ?? "";
  }
  get seq(): number | undefined {
    const v = this.raw["seq"];
    return typeof v === "number" ? v : undefined;
  }
  get prevHash(): string | null {
    return str(this.raw["prev_hash"]) ?? null;
  }
  get gateId(): string | undefined {
    return str(this.raw["gate_id"]);
  }
  get traceId(): string | undefined {
    return str(this.raw["trace_id"]);
  }
  get grantId(): string | undefined {
    return str(this.raw["grant_id"]);
  }
  get actionId(): string | undefined {
    return str(this.raw["action_id"]);
  }
  get actionVersion(): string | undefined {
    return str(this.raw["action_version"]);
  }
  get actionDigest(): string | undefined {
    return str(this.raw["action_digest"]);
  }
  get principal(): string | undefined {
    return str(this.raw["principal"]);
  }
  get sessionId(): string | undefined {
    return str(this.raw["session_id"]);
  }
  get agentId(): string | undefined {
    return str(this.raw["agent_id"]);
  }
  get requestHash(): string | undefined {
    return str(this.raw["request_hash"]);
  }
  get responseHash(): string | null {
    return str(this.raw["response_hash"]) ?? null;
  }
  get output(): JsonValue | undefined {
    return this.raw["output"];
  }
  get outputTruncated(): boolean {
    return this.raw["output_truncated"] === true;
  }
  /** normalized_result.kind: "success", "provider_failure", "timeout", "egress_denied", "interrupted", "internal_error". */
  get resultKind(): string | undefined {
    return str(obj(this.raw["normalized_result"])?.["kind"]);
  }
  get resultSummary(): string | undefined {
    return str(obj(this.raw["normalized_result"])?.["summary"]);
  }
  /** verification_outcome.status: "verified", "verification_failed" or "unverifiable_declared". */
  get verificationStatus(): string | undefined {
    return str(obj(this.raw["verification_outcome"])?.["status"]);
  }
  get policyVersion(): string | undefined {
    return str(this.raw["policy_version"]);
  }
  get startedAt(): string | undefined {
    return str(this.raw["started_at"]);
  }
  get finishedAt(): string | undefined {
    return str(this.raw["finished_at"]);
  }
  get hash(): string | undefined {
    return str(this.raw["hash"]);
  }
  get signature(): string | undefined {
    return str(this.raw["signature"]);
  }
  get keyId(): string | undefined {
    return str(this.raw["key_id"]);
  }
  /** What the gate said about its own signature: "valid", "invalid" or "unknown_key_id". Not trusted by verify(). */
  get signatureStatus(): string | undefined {
    return str(this.raw["signature_status"]);
  }

  /** kind is "success" and verification status is "verified" or "unverifiable_declared". */
  get isFullySuccessful(): boolean {
    const s = this.verificationStatus;
    return this.resultKind === "success" && (s === "verified" || s === "unverifiable_declared");
  }

  /** The hash recomputed from the receipt's content. */
  computeHash(): string {
    return computeReceiptHash(this.raw);
  }

  /** Verifies offline; returns true only if the hash and the signature check out. */
  verify(keys: ReceiptKeys): boolean {
    return this.check(keys).valid;
  }

  /** Like verify(), with the reason for a failure. */
  check(keys: ReceiptKeys): ReceiptVerification {
    const hash = this.hash;
    const signature = this.signature;
    const keyId = this.keyId;
    if (hash === undefined || !HASH_RE.test(hash)) return { valid: false, reason: "missing or malformed hash" };
    if (signature === undefined || !B64URL_RE.test(signature)) return { valid: false, reason: "missing or malformed signature" };
    if (keyId === undefined) return { valid: false, reason: "missing key_id" };
    let computed: string;
    try {
      computed = this.computeHash();
    } catch (e) {
      return { valid: false, reason: `receipt cannot be canonicalised: ${(e as Error).message}` };
    }
    if (computed !== hash) return { valid: false, reason: "hash does not match the receipt's content" };
    const list = Array.isArray(keys) ? keys : (keys as { keys: readonly ReceiptJwk[] }).keys;
    const jwk = list.find((k) => k.kid === keyId) ?? list.find((k) => k.kid === undefined && safeThumb(k) === keyId);
    if (jwk === undefined) return { valid: false, reason: `unknown key_id ${keyId}` };
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") return { valid: false, reason: "key is not an Ed25519 public key" };
    if (safeThumb(jwk) !== keyId) return { valid: false, reason: "key_id is not the thumbprint of the key" };
    let key: KeyObject;
    try {
      key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: jwk.x }, format: "jwk" });
    } catch {
      return { valid: false, reason: "key cannot be imported" };
    }
    const sig = Buffer.from(signature, "base64url");
    if (sig.length !== 64) return { valid: false, reason: "signature is not 64 bytes" };
    let ok = false;
    try {
      ok = cryptoVerify(null, Buffer.from(hash, "ascii"), key, sig);
    } catch {
      ok = false;
    }
    return ok ? { valid: true } : { valid: false, reason: "signature does not verify" };
  }
}

function safeThumb(k: ReceiptJwk): string | undefined {
  try {
    return okpThumbprint(k);
  } catch {
    return undefined;
  }
}
