// DPoP (RFC 9449 profile of PROTOCOL.md §2.1): the ephemeral P-256 key, its
// RFC 7638 thumbprint, htu normalisation and one fresh proof per request.

import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";

/** The public part of a P-256 key, exactly the members the gate accepts. */
export interface EcPublicJwk {
  kty: "EC";
  crv: "P-256";
  x: string;
  y: string;
}

/** base64url without padding. */
export function b64url(data: Buffer | Uint8Array | string): string {
  return Buffer.from(data).toString("base64url");
}

/** base64url-no-pad(SHA-256(data)). */
export function sha256B64url(data: Buffer | Uint8Array | string): string {
  return createHash("sha256").update(data).digest("base64url");
}

/** RFC 7638 thumbprint of a P-256 JWK: SHA-256 over {"crv","kty","x","y"} in that order. */
export function ecThumbprint(jwk: EcPublicJwk): string {
  const canon = `{"crv":${JSON.stringify(jwk.crv)},"kty":${JSON.stringify(jwk.kty)},"x":${JSON.stringify(jwk.x)},"y":${JSON.stringify(jwk.y)}}`;
  return sha256B64url(canon);
}

/**
 * Normalises an htu value as the gate does (PROTOCOL.md §1.1): drop the
 * fragment then the query; lowercase scheme and authority; keep the path as is;
 * an empty path becomes "/"; drop the default port (80 for http, 443 for https).
 */
export function normalizeHtu(input: string): string {
  let s = input;
  const hash = s.indexOf("#");
  if (hash >= 0) s = s.slice(0, hash);
  const q = s.indexOf("?");
  if (q >= 0) s = s.slice(0, q);
  const sep = s.indexOf("://");
  if (sep < 0) return s;
  const scheme = s.slice(0, sep).toLowerCase();
  const rest = s.slice(sep + 3);
  const slash = rest.indexOf("/");
  let authority = (slash >= 0 ? rest.slice(0, slash) : rest).toLowerCase();
  const path = slash >= 0 ? rest.slice(slash) : "/";
  const colon = authority.lastIndexOf(":");
  if (colon >= 0 && !authority.slice(colon).includes("]")) {
    const port = authority.slice(colon + 1);
    if ((scheme === "http" && port === "80") || (scheme === "https" && port === "443")) {
      authority = authority.slice(0, colon);
    }
  }
  return `${scheme}://${authority}${path}`;
}

/** An ephemeral P-256 key that signs DPoP proofs. The private key never leaves the process. */
export class DpopKey {
  readonly publicJwk: EcPublicJwk;
  readonly thumbprint: string;
  private readonly privateKey: KeyObject;

  private constructor(privateKey: KeyObject, publicJwk: EcPublicJwk) {
    this.privateKey = privateKey;
    this.publicJwk = publicJwk;
    this.thumbprint = ecThumbprint(publicJwk);
  }

  /** Generates a fresh key. */
  static generate(): DpopKey {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = publicKey.export({ format: "jwk" });
    if (typeof jwk.x !== "string" || typeof jwk.y !== "string") throw new Error("P-256 key export failed");
    return new DpopKey(privateKey, { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y });
  }

  /** Wraps an existing P-256 private key (tests, fixed vectors). */
  static fromPrivateKey(privateKey: KeyObject): DpopKey {
    const jwk = privateKey.export({ format: "jwk" });
    if (jwk.kty !== "EC" || jwk.crv !== "P-256" || typeof jwk.x !== "string" || typeof jwk.y !== "string") {
      throw new Error("not a P-256 private key");
    }
    return new DpopKey(privateKey, { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y });
  }

  /**
   * Makes one proof: header {typ,alg,jwk}, claims {jti,htm,htu,iat,ath,bh},
   * signature raw r||s (64 bytes), all base64url without padding.
   */
  proof(p: { method: string; htu: string; leaseJwt?: string; body: Buffer | Uint8Array | string; nowSeconds: number; jti?: string }): string {
    const header = { typ: "dpop+jwt", alg: "ES256", jwk: this.publicJwk };
    const claims: Record<string, string | number> = {
      jti: p.jti ?? randomBytes(18).toString("base64url"),
      htm: p.method.toUpperCase(),
      htu: p.htu,
      iat: Math.floor(p.nowSeconds),
    };
    if (p.leaseJwt !== undefined) claims["ath"] = sha256B64url(p.leaseJwt);
    claims["bh"] = sha256B64url(p.body);
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign("sha256", Buffer.from(input, "ascii"), { key: this.privateKey, dsaEncoding: "ieee-p1363" });
    return `${input}.${b64url(sig)}`;
  }
}
