// A small protocol stub of the gate on a real Unix socket. It checks every
// DPoP proof like the gate (thumbprint, signature, htm, htu, ath, bh, jti
// reuse), keeps sessions with budgets, signs receipts with Ed25519, and lets a
// test queue canned answers (503, 429 + Retry-After, 502, …) per route.

import * as http from "node:http";
import { generateKeyPairSync, randomUUID, sign, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { computeReceiptHash, ecThumbprint, okpThumbprint, type JsonValue } from "../../src/index.js";
import { verifyProof } from "./dpopverify.js";

export interface Canned {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Destroy the connection without answering. */
  hangUp?: boolean;
}

interface Session {
  id: string;
  jkt: string;
  maxCalls: number | undefined;
  calls: number;
  agentId: string | undefined;
  principal: string;
}

interface Lease {
  session: Session;
  expiresAtMs: number;
}

export interface SeenRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export class StubGate {
  readonly dir: string;
  readonly socketPath: string;
  readonly requests: SeenRequest[] = [];
  /** Counts per "METHOD path". */
  readonly counts = new Map<string, number>();
  /** Canned answers per "METHOD path", consumed first. */
  readonly canned = new Map<string, Canned[]>();
  /** Polls before a held action is approved. */
  pendingPolls = 2;
  /** Delay the renew answer until this resolves (to test coalescing). */
  renewGate: Promise<void> | undefined;
  leaseTtlSeconds = 300;
  now: () => number;

  private readonly server: http.Server;
  private readonly leases = new Map<string, Lease>();
  private readonly jtis = new Set<string>();
  private readonly receipts = new Map<string, Record<string, JsonValue>>();
  private readonly approvals = new Map<string, { polls: number; output: JsonValue; sessionId: string }>();
  private readonly idem = new Map<string, { status: number; body: unknown }>();
  private readonly signKey: KeyObject;
  readonly receiptJwk: { kty: string; crv: string; x: string; kid: string; use: string; alg: string };
  private seq = 0;
  private prevHash: string | null = null;

  constructor(now: () => number = Date.now) {
    this.now = now;
    this.dir = mkdtempSync(join(tmpdir(), "lg-stub-"));
    this.socketPath = join(this.dir, "gate.sock");
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    this.signKey = privateKey;
    const x = publicKey.export({ format: "jwk" }).x ?? "";
    this.receiptJwk = { kty: "OKP", crv: "Ed25519", x, kid: okpThumbprint({ kty: "OKP", crv: "Ed25519", x }), use: "sig", alg: "EdDSA" };
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        void this.handle(req, Buffer.concat(chunks), res);
      });
    });
  }

  start(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.socketPath, resolve));
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => {
        rmSync(this.dir, { recursive: true, force: true });
        resolve();
      });
    });
  }

  count(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  queue(key: string, ...answers: Canned[]): void {
    this.canned.set(key, [...(this.canned.get(key) ?? []), ...answers]);
  }

  /** Makes every lease look expired to the gate (renewal past the session's life). */
  expireAll(): void {
    for (const l of this.leases.values()) l.expiresAtMs = 0;
  }

  sessionOf(leaseJwt: string): Session | undefined {
    return this.leases.get(leaseJwt)?.session;
  }

  private send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json", ...headers });
    res.end(text);
  }

  private err(res: http.ServerResponse, status: number, code: string, extra: Record<string, unknown> = {}): void {
    this.send(res, status, { error: code, message: `stub: ${code}`, ...extra });
  }

  private leaseAnswer(jwt: string, l: Lease): Record<string, unknown> {
    const b: Record<string, number> = {};
    if (l.session.maxCalls !== undefined) b["max_calls"] = l.session.maxCalls;
    return {
      lease_jwt: jwt,
      session_id: l.session.id,
      lease_jti: randomUUID(),
      expires_at: new Date(l.expiresAtMs).toISOString(),
      principal: l.session.principal,
      scopes: ["tools:call"],
      budgets: b,
    };
  }

  private newLease(session: Session, ttl: number): [string, Lease] {
    const jwt = `lease.${randomUUID()}.stub`;
    const lease = { session, expiresAtMs: Math.floor(this.now() / 1000) * 1000 + ttl * 1000 };
    this.leases.set(jwt, lease);
    return [jwt, lease];
  }

  /** Authenticates like the gate; answers and returns undefined on failure. */
  private auth(req: http.IncomingMessage, path: string, body: Buffer, res: http.ServerResponse): Lease | undefined {
    const a = req.headers["authorization"];
    const proof = req.headers["dpop"];
    if (typeof a !== "string" || typeof proof !== "string") {
      this.err(res, 401, "missing_auth_header");
      return undefined;
    }
    if (!a.startsWith("DPoP ")) {
      this.err(res, 401, "invalid_lease");
      return undefined;
    }
    const jwt = a.slice(5);
    const lease = this.leases.get(jwt);
    if (lease === undefined) {
      this.err(res, 401, "invalid_lease");
      return undefined;
    }
    if (this.now() >= lease.expiresAtMs) {
      this.err(res, 401, "lease_expired");
      return undefined;
    }
    let jti: string;
    try {
      const cl = verifyProof(proof, {
        jkt: lease.session.jkt,
        leaseToken: jwt,
        htm: req.method ?? "",
        htu: "http://localhost" + path,
        body,
        nowSeconds: Math.floor(this.now() / 1000),
      });
      if (cl.bh === undefined) throw new Error("bh missing");
      jti = cl.jti;
    } catch (e) {
      this.err(res, 401, "invalid_dpop", { deny_reason: (e as Error).message });
      return undefined;
    }
    if (this.jtis.has(jti)) {
      this.err(res, 401, "replay_detected");
      return undefined;
    }
    this.jtis.add(jti);
    return lease;
  }

  private makeReceipt(actionId: string, session: Session, output: JsonValue): Record<string, JsonValue> {
    this.seq++;
    const t = new Date(this.now()).toISOString();
    const r: Record<string, JsonValue> = {
      receipt_id: randomUUID(),
      seq: this.seq,
      prev_hash: this.prevHash,
      gate_id: "stub",
      trace_id: randomUUID(),
      grant_id: randomUUID(),
      action_id: actionId,
      action_version: "1.0.0",
      action_digest: "sha256:" + "0".repeat(64),
      provider_module_digest: "sha256:" + "0".repeat(64),
      principal: session.principal,
      session_id: session.id,
      request_hash: "sha256:" + "1".repeat(64),
      response_hash: "sha256:" + "2".repeat(64),
      output,
      output_truncated: false,
      normalized_result: { kind: "success", summary: "ok" },
      verification_outcome: { status: "unverifiable_declared" },
      egress: { hosts: [] },
      approval: null,
      policy_version: "stub",
      started_at: t,
      finished_at: t,
    };
    if (session.agentId !== undefined) r["agent_id"] = session.agentId;
    const hash = computeReceiptHash(r);
    r["hash"] = hash;
    r["signature"] = sign(null, Buffer.from(hash, "ascii"), this.signKey).toString("base64url");
    r["key_id"] = this.receiptJwk.kid;
    this.prevHash = hash;
    this.receipts.set(r["receipt_id"] as string, r);
    return r;
  }

  /** Tamper hook: edits a stored receipt after signing. */
  tamper(receiptId: string, edit: (r: Record<string, JsonValue>) => void): void {
    const r = this.receipts.get(receiptId);
    if (r !== undefined) edit(r);
  }

  private async handle(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? "";
    const path = (req.url ?? "").split("?")[0] ?? "";
    const key = `${method} ${path}`;
    this.requests.push({ method, path, headers: req.headers, body });
    this.counts.set(key, this.count(key) + 1);
    const q = this.canned.get(key);
    if (q !== undefined && q.length > 0) {
      const c = q.shift() as Canned;
      if (c.hangUp === true) {
        req.socket.destroy();
        return;
      }
      this.send(res, c.status, c.body ?? {}, c.headers ?? {});
      return;
    }
    let m: RegExpMatchArray | null;
    if (method === "POST" && path === "/v1/leases") {
      const o = JSON.parse(body.toString("utf8") || "{}") as {
        dpop_jwk: { kty: "EC"; crv: "P-256"; x: string; y: string };
        budgets?: { max_calls?: number };
        agent_id?: string;
        ttl_seconds?: number;
      };
      const session: Session = {
        id: randomUUID(),
        jkt: ecThumbprint(o.dpop_jwk),
        maxCalls: o.budgets?.max_calls,
        calls: 0,
        agentId: o.agent_id,
        principal: o.agent_id !== undefined ? `agent:${o.agent_id}` : "uid:1000",
      };
      const [jwt, lease] = this.newLease(session, o.ttl_seconds ?? this.leaseTtlSeconds);
      this.send(res, 200, this.leaseAnswer(jwt, lease));
      return;
    }
    if (method === "GET" && path === "/v1/receipt-keys") {
      this.send(res, 200, { keys: [this.receiptJwk] });
      return;
    }
    if (method === "GET" && path === "/v1/actions") {
      this.send(res, 200, {
        actions: [
          { action_id: "echo", version: "1.0.0", description: "returns its args", risk_level: "low" },
          { action_id: "http_fetch", version: "1.0.0", description: "fetch", risk_level: "medium" },
        ],
      });
      return;
    }
    if (method === "GET" && (m = path.match(/^\/v1\/actions\/([a-z0-9_]+)$/)) !== null) {
      const id = m[1] as string;
      if (id === "echo") {
        this.send(res, 200, { action_id: "echo", version: "1.0.0", description: "", risk_level: "low", required_scopes: ["tools:call"], egress: "none" });
      } else if (id === "http_fetch") {
        this.send(res, 200, {
          action_id: "http_fetch",
          version: "1.0.0",
          description: "",
          risk_level: "medium",
          required_scopes: ["tools:call"],
          egress: { proxy_allowlist: { allowed_domains: ["httpbin.org", "api.github.com"] } },
        });
      } else {
        this.err(res, 404, "action_not_found", { action_id: id });
      }
      return;
    }
    const lease = this.auth(req, path, body, res);
    if (lease === undefined) return;
    if (method === "POST" && path === "/v1/leases/renew") {
      if (this.renewGate !== undefined) await this.renewGate;
      const [jwt, l] = this.newLease(lease.session, this.leaseTtlSeconds);
      this.send(res, 200, this.leaseAnswer(jwt, l));
      return;
    }
    if (method === "POST" && (m = path.match(/^\/v1\/actions\/([a-z0-9_]+)\/execute$/)) !== null) {
      const id = m[1] as string;
      const ik = req.headers["idempotency-key"];
      if (typeof ik === "string" && this.idem.has(ik)) {
        const st = this.idem.get(ik) as { status: number; body: unknown };
        this.send(res, st.status, st.body);
        return;
      }
      const args = JSON.parse(body.length === 0 ? "{}" : body.toString("utf8")) as JsonValue;
      if (id !== "echo" && id !== "held") {
        this.err(res, 404, "action_not_found", { action_id: id });
        return;
      }
      const s = lease.session;
      if (s.maxCalls !== undefined && s.calls >= s.maxCalls) {
        this.err(res, 403, "budget_exhausted", { action_id: id });
        return;
      }
      s.calls++;
      if (id === "held") {
        const approvalId = randomUUID();
        this.approvals.set(approvalId, { polls: 0, output: args, sessionId: s.id });
        this.send(res, 202, { decision: "pending_approval", approval_id: approvalId, request_hash: "sha256:" + "1".repeat(64), trace_id: randomUUID(), expires_at: new Date(this.now() + 600_000).toISOString() });
        return;
      }
      const r = this.makeReceipt(id, s, args);
      const answer = {
        decision: "executed",
        trace_id: r["trace_id"],
        action_id: id,
        grant_id: r["grant_id"],
        receipt_id: r["receipt_id"],
        output: args,
        verification_outcome: "unverifiable_declared",
        verification: { outcome: "unverifiable_declared", is_fully_successful: true },
        runtime: { duration_ms: 1 },
      };
      if (typeof ik === "string") this.idem.set(ik, { status: 200, body: answer });
      this.send(res, 200, answer);
      return;
    }
    if (method === "GET" && (m = path.match(/^\/v1\/approvals\/([0-9a-f-]+)\/poll$/)) !== null) {
      const a = this.approvals.get(m[1] as string);
      if (a === undefined || a.sessionId !== lease.session.id) {
        this.err(res, 404, "approval_not_found");
        return;
      }
      a.polls++;
      if (a.polls <= this.pendingPolls) {
        this.send(res, 200, { status: "pending", retry_after_seconds: 3, expires_at: new Date(this.now() + 600_000).toISOString() });
        return;
      }
      const r = this.makeReceipt("held", lease.session, a.output);
      this.send(res, 200, { status: "approved", receipt_id: r["receipt_id"], output: a.output });
      return;
    }
    if (method === "GET" && (m = path.match(/^\/v1\/receipts\/([0-9a-f-]+)$/)) !== null) {
      const r = this.receipts.get(m[1] as string);
      if (r === undefined) {
        this.err(res, 404, "receipt_not_found");
        return;
      }
      this.send(res, 200, { ...r, signature_status: "valid" });
      return;
    }
    this.err(res, 404, "not_found");
  }
}
