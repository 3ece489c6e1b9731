// An independent DPoP proof verifier (the gate's checks of PROTOCOL.md §2.1),
// used by the stub gate and checked itself against dpop/proofs.json.

import { createHash, createPublicKey, verify } from "node:crypto";
import { ecThumbprint, normalizeHtu, type EcPublicJwk } from "../../src/index.js";

export interface ProofCheck {
  jkt: string;
  leaseToken: string;
  htm: string;
  htu: string;
  body: Buffer;
  nowSeconds: number;
  maxAge?: number;
  skew?: number;
}

export interface ProofClaims {
  jti: string;
  htm: string;
  htu: string;
  iat: number;
  ath: string;
  bh?: string;
}

function b64json(part: string): Record<string, unknown> {
  const v: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
  return v as Record<string, unknown>;
}

/** Returns the claims, or throws an Error whose message names the failed check. */
export function verifyProof(proof: string, c: ProofCheck): ProofClaims {
  const parts = proof.split(".");
  if (parts.length !== 3) throw new Error("malformed");
  const [h, p, s] = parts as [string, string, string];
  const header = b64json(h);
  const keys = Object.keys(header).sort().join(",");
  if (keys !== "alg,jwk,typ") throw new Error(`header members ${keys}`);
  if (header["typ"] !== "dpop+jwt" || header["alg"] !== "ES256") throw new Error("bad typ/alg");
  const jwk = header["jwk"] as Record<string, unknown>;
  if (Object.keys(jwk).sort().join(",") !== "crv,kty,x,y") throw new Error("bad jwk members");
  if (jwk["kty"] !== "EC" || jwk["crv"] !== "P-256") throw new Error("bad jwk");
  const pub = jwk as unknown as EcPublicJwk;
  if (pub.x.length !== 43 || pub.y.length !== 43) throw new Error("bad jwk coordinates");
  if (ecThumbprint(pub) !== c.jkt) throw new Error("jkt_mismatch");
  const key = createPublicKey({ key: { kty: "EC", crv: "P-256", x: pub.x, y: pub.y }, format: "jwk" });
  const sig = Buffer.from(s, "base64url");
  if (sig.length !== 64) throw new Error("bad_signature");
  if (!verify("sha256", Buffer.from(`${h}.${p}`, "ascii"), { key, dsaEncoding: "ieee-p1363" }, sig)) throw new Error("bad_signature");
  const cl = b64json(p);
  const jti = cl["jti"];
  if (typeof jti !== "string" || jti.length < 8 || jti.length > 128) throw new Error("bad_jti");
  if (cl["htm"] !== c.htm) throw new Error("htm_mismatch");
  if (typeof cl["htu"] !== "string" || normalizeHtu(cl["htu"]) !== normalizeHtu(c.htu)) throw new Error("htu_mismatch");
  const iat = cl["iat"];
  if (typeof iat !== "number" || !Number.isInteger(iat)) throw new Error("bad_iat");
  if (iat < c.nowSeconds - (c.maxAge ?? 60) || iat > c.nowSeconds + (c.skew ?? 5)) throw new Error("iat_out_of_window");
  const ath = createHash("sha256").update(c.leaseToken).digest("base64url");
  if (cl["ath"] !== ath) throw new Error("ath_mismatch");
  const bh = cl["bh"];
  if (bh !== undefined && bh !== createHash("sha256").update(c.body).digest("base64url")) throw new Error("bh_mismatch");
  const out: ProofClaims = { jti, htm: c.htm, htu: cl["htu"] as string, iat, ath };
  if (typeof bh === "string") out.bh = bh;
  return out;
}
