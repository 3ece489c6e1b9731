// LatchGateClient: leases (lazy connect, coalesced renewal), DPoP proofs on
// every authenticated request, execute, approvals, receipts, discovery,
// retries with exponential backoff and jitter.

import { randomUUID } from "node:crypto";
import { DpopKey } from "./dpop.js";
import {
  LatchGateApprovalRequired,
  LatchGateError,
  LatchGateNotConnected,
  LatchGateTransportError,
  LatchGateUnavailable,
  errorFromResponse,
} from "./errors.js";
import { parseStrictJson, type JsonValue } from "./jcs.js";
import { Receipt, type ReceiptJwk } from "./receipt.js";
import { Transport, resolveTarget, type RawResponse } from "./transport.js";

/** Where log lines go. `console` fits; the default drops everything. */
export interface Logger {
  debug?(message: string, ...meta: unknown[]): void;
  info?(message: string, ...meta: unknown[]): void;
  warn?(message: string, ...meta: unknown[]): void;
  error?(message: string, ...meta: unknown[]): void;
}

/** What to ask for when opening a lease. */
export interface ConnectOptions {
  /** A label for the agent (not an identity); defaults to the client's agentId. */
  agentId?: string;
  /** Requested scopes; the gate's default is ["tools:call"]. */
  scopes?: readonly string[];
  /** Budget: at most this many executions in the session. */
  maxCalls?: number;
  /** Budget: at most this many US cents of declared action cost in the session. */
  maxCostUsdCents?: number;
  /** Requested lease lifetime in seconds (the gate clamps it; default 300). */
  ttl?: number;
}

/** Client configuration. Every member is optional. */
export interface LatchGateClientOptions extends ConnectOptions {
  /** Gate socket path (used when neither baseUrl nor LATCHGATE_URL is set). */
  socket?: string;
  /** Gate base URL over TCP, e.g. "http://localhost:3000" (takes precedence over everything). */
  baseUrl?: string;
  /** Per-request timeout in milliseconds. Default 30000. */
  timeoutMs?: number;
  /** Automatic retries of retryable failures. Default 3 (so at most 4 attempts). */
  maxRetries?: number;
  /** First backoff delay in milliseconds (doubled each retry, full jitter). Default 200. */
  retryBaseDelayMs?: number;
  /** Largest backoff delay in milliseconds. Default 5000. */
  retryMaxDelayMs?: number;
  /** A Retry-After longer than this (ms) is not waited for: the error is raised. Default 30000. */
  maxRetryAfterMs?: number;
  /**
   * Generate an Idempotency-Key for each execute() call that has none, which
   * makes automatic retries of execute safe. Default true. With false (and no
   * key given), execute is never retried automatically.
   */
  autoIdempotencyKey?: boolean;
  /** Renew the lease this many seconds before it expires (at most a quarter of its lifetime). Default 60. */
  renewBeforeSeconds?: number;
  /** Logger; default: none. */
  logger?: Logger;
  /** Environment used for URL resolution; default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Clock in milliseconds since the epoch (tests); default Date.now. */
  now?: () => number;
  /** Sleep used between retries and approval polls (tests); default setTimeout. */
  sleep?: (ms: number) => Promise<void>;
}

/** The granted budgets of a lease. */
export interface Budgets {
  maxCalls?: number;
  maxCostUsdCents?: number;
}

/** The current lease, as the gate granted it. */
export interface LeaseInfo {
  sessionId: string;
  leaseJti: string;
  /** RFC 3339 UTC. */
  expiresAt: string;
  principal: string;
  scopes: string[];
  budgets: Budgets;
}

/** Per-call options of execute(). */
export interface ExecuteOptions {
  /** Idempotency-Key to send (1–128 chars). Default: one generated per call (see autoIdempotencyKey). */
  idempotencyKey?: string;
}

/** The gate ran the action (HTTP 200). */
export interface ExecuteResult {
  output: JsonValue;
  receiptId: string;
  traceId: string;
  actionId: string;
  grantId: string;
  /** "verified", "verification_failed" or "unverifiable_declared". */
  verificationOutcome: string;
  isFullySuccessful: boolean;
  /** runtime.duration_ms / runtime.status_code. */
  runtime: { durationMs?: number; statusCode?: number };
  /** The answer as received. */
  raw: Readonly<Record<string, JsonValue>>;
}

/** An approval's state (GET /v1/approvals/{id}/poll). */
export interface ApprovalStatus {
  approvalId: string;
  /** "pending", "approved", "denied", "expired" or "failed". */
  status: string;
  retryAfterSeconds?: number;
  expiresAt?: string;
  receiptId?: string;
  output?: JsonValue;
  reason?: string;
  raw: Readonly<Record<string, JsonValue>>;
}

/** Options of waitForApproval(). */
export interface WaitOptions {
  /** Give up after this many milliseconds and return the last (pending) status. Default 300000. */
  timeoutMs?: number;
  /** Poll interval when the gate does not say (retry_after_seconds). Default 2000. */
  pollIntervalMs?: number;
}

/** An action as listed by GET /v1/actions. */
export interface ActionSummary {
  actionId: string;
  version: string;
  description: string;
  riskLevel: string;
}

/** An action's details (GET /v1/actions/{id}). */
export interface ActionInfo extends ActionSummary {
  requiredScopes: string[];
  sideEffects: JsonValue;
  costUsdCents: number | undefined;
  digest: string | undefined;
  inputSchema: JsonValue;
  egress: ActionEgress;
  raw: Readonly<Record<string, JsonValue>>;
}

/** Which external domains an action may contact. */
export interface ActionEgress {
  /** "none" or "proxy_allowlist". */
  profile: string;
  allowedDomains: string[];
  /** true if profile is not "none". */
  hasEgress: boolean;
}

interface LeaseState {
  jwt: string;
  key: DpopKey;
  info: LeaseInfo;
  issuedAtMs: number;
  expiresAtMs: number;
}

interface CallOptions {
  auth: boolean;
  body?: Buffer;
  headers?: Record<string, string>;
  /**
   * What is retried automatically: "all" = Unavailable answers and transport
   * failures; "unavailable" = Unavailable answers and connections never made;
   * "none" = nothing.
   */
  retry: "all" | "unavailable" | "none";
  /** Parse the body strictly (receipts). */
  strict?: boolean;
  /** The action the call concerns, for errors whose body names none. */
  actionId?: string;
}

const NO_LOGGER: Logger = {};
const EMPTY = Buffer.alloc(0);

function defaultSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function asObject(v: unknown): Record<string, JsonValue> | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, JsonValue>) : undefined;
}

function s(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function n(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** JSON.stringify replacer: JSON has no NaN or ±Infinity, which stringify would silently send as null. */
function finiteOnly(_key: string, value: unknown): unknown {
  if (typeof value === "number" && !Number.isFinite(value)) throw new TypeError(`arguments contain ${value}, which JSON cannot carry`);
  return value;
}

function seg(id: string): string {
  return encodeURIComponent(id);
}

function currentUid(): number | undefined {
  return typeof process.getuid === "function" ? process.getuid() : undefined;
}

/** Client of one LatchGate gate. */
export class LatchGateClient {
  private readonly transport: Transport;
  private readonly opts: LatchGateClientOptions;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  // An ES private field: the lease token must not show in util.inspect or JSON.stringify.
  #state: LeaseState | undefined;
  private connecting: Promise<LeaseInfo> | undefined;
  private renewing: Promise<LeaseInfo> | undefined;
  private receiptKeys: ReceiptJwk[] | undefined;
  private closed = false;

  constructor(options: LatchGateClientOptions = {}) {
    this.opts = { ...options };
    const env = options.env ?? process.env;
    this.transport = new Transport(resolveTarget(options, env, currentUid()));
    this.log = options.logger ?? NO_LOGGER;
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? defaultSleep;
  }

  /** Where this client sends requests ("unix:<path>" or a URL). */
  get target(): string {
    return this.transport.describe();
  }

  /** The current lease, or undefined before connect(). */
  get lease(): LeaseInfo | undefined {
    return this.#state?.info;
  }

  /** True once a lease is held. */
  get isConnected(): boolean {
    return this.#state !== undefined;
  }

  /**
   * Opens a lease with a fresh ephemeral P-256 key (replacing any current
   * lease). Options not given fall back to the constructor's, or to the last
   * connect()'s: the values given become the defaults of later connects.
   */
  async connect(options: ConnectOptions = {}): Promise<LeaseInfo> {
    this.assertOpen();
    const o = this.opts;
    const agentId = options.agentId ?? o.agentId;
    const scopes = options.scopes ?? o.scopes;
    const maxCalls = options.maxCalls ?? o.maxCalls;
    const maxCost = options.maxCostUsdCents ?? o.maxCostUsdCents;
    const ttl = options.ttl ?? o.ttl;
    const key = DpopKey.generate();
    const req: Record<string, unknown> = { dpop_jwk: key.publicJwk };
    if (scopes !== undefined) req["scopes"] = [...scopes];
    if (maxCalls !== undefined || maxCost !== undefined) {
      const b: Record<string, number> = {};
      if (maxCalls !== undefined) b["max_calls"] = maxCalls;
      if (maxCost !== undefined) b["max_cost_usd_cents"] = maxCost;
      req["budgets"] = b;
    }
    if (agentId !== undefined) req["agent_id"] = agentId;
    if (ttl !== undefined) req["ttl_seconds"] = ttl;
    const body = Buffer.from(JSON.stringify(req), "utf8");
    // Only 429/503 answers and connections never made are retried: the gate
    // created nothing, so no orphan session is left behind.
    const res = await this.call("POST", "/v1/leases", { auth: false, body, retry: "unavailable", headers: { "Content-Type": "application/json" } }, true);
    const state = this.leaseFromAnswer(res, key);
    this.#state = state;
    // Later connects (a bare connect() in an error handler, or a lazy one) ask
    // for the same: same agent, same limits, as in the Python SDK.
    Object.assign(o, { agentId, scopes, maxCalls, maxCostUsdCents: maxCost, ttl });
    this.log.debug?.(`latchgate: lease obtained (session ${state.info.sessionId}, expires ${state.info.expiresAt})`);
    return state.info;
  }

  /**
   * Renews the lease now through POST /v1/leases/renew: same key, same session,
   * budget counters carry on. Concurrent callers share one renewal.
   */
  renew(): Promise<LeaseInfo> {
    this.assertOpen();
    if (this.renewing !== undefined) return this.renewing;
    const current = this.#state;
    if (current === undefined) return Promise.reject(new LatchGateNotConnected());
    const p = (async () => {
      try {
        const res = await this.call("POST", "/v1/leases/renew", { auth: true, retry: "all" }, true, current);
        const next = this.leaseFromAnswer(res, current.key);
        if (this.#state === current) this.#state = next; // a concurrent connect() wins
        this.log.debug?.(`latchgate: lease renewed (session ${next.info.sessionId}, expires ${next.info.expiresAt})`);
        return next.info;
      } finally {
        this.renewing = undefined;
      }
    })();
    this.renewing = p;
    return p;
  }

  /**
   * Runs an action through the gate. Returns the result (HTTP 200); throws
   * LatchGateApprovalRequired on a hold (202) and the mapped error otherwise.
   */
  async execute(action: string, args: unknown = {}, options: ExecuteOptions = {}): Promise<ExecuteResult> {
    const body = Buffer.from(JSON.stringify(args ?? {}, finiteOnly), "utf8");
    let key = options.idempotencyKey;
    if (key === undefined && this.opts.autoIdempotencyKey !== false) key = randomUUID();
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (key !== undefined) headers["Idempotency-Key"] = key;
    // Retried only with an Idempotency-Key: the gate then answers a repeat with
    // the stored outcome instead of running it twice. A 502 is never retried.
    const retry = key !== undefined ? "all" : "none";
    const res = await this.call("POST", `/v1/actions/${seg(action)}/execute`, { auth: true, body, headers, retry, actionId: action }, true);
    const o = res.json;
    if (res.status === 202 || s(o["decision"]) === "pending_approval") {
      const details: { status: number; traceId?: string; body: Record<string, unknown> } = { status: res.status, body: o };
      const tid = s(o["trace_id"]);
      if (tid !== undefined) details.traceId = tid;
      throw new LatchGateApprovalRequired(s(o["approval_id"]) ?? "", s(o["request_hash"]), s(o["expires_at"]), details);
    }
    const verification = asObject(o["verification"]);
    const outcome = s(o["verification_outcome"]) ?? s(verification?.["outcome"]) ?? "";
    const fully = verification?.["is_fully_successful"];
    const runtime = asObject(o["runtime"]);
    const rt: { durationMs?: number; statusCode?: number } = {};
    const dur = n(runtime?.["duration_ms"]);
    if (dur !== undefined) rt.durationMs = dur;
    const sc = n(runtime?.["status_code"]);
    if (sc !== undefined) rt.statusCode = sc;
    return {
      output: o["output"] ?? null,
      receiptId: s(o["receipt_id"]) ?? "",
      traceId: s(o["trace_id"]) ?? "",
      actionId: s(o["action_id"]) ?? action,
      grantId: s(o["grant_id"]) ?? "",
      verificationOutcome: outcome,
      isFullySuccessful: typeof fully === "boolean" ? fully : outcome === "verified" || outcome === "unverifiable_declared",
      runtime: rt,
      raw: o,
    };
  }

  /** The state of a held action (same session only). */
  async getApprovalStatus(approvalId: string): Promise<ApprovalStatus> {
    const res = await this.call("GET", `/v1/approvals/${seg(approvalId)}/poll`, { auth: true, retry: "all" }, true);
    const o = res.json;
    const st: ApprovalStatus = { approvalId, status: s(o["status"]) ?? "", raw: o };
    const ra = n(o["retry_after_seconds"]);
    if (ra !== undefined) st.retryAfterSeconds = ra;
    const ex = s(o["expires_at"]);
    if (ex !== undefined) st.expiresAt = ex;
    const rid = s(o["receipt_id"]);
    if (rid !== undefined) st.receiptId = rid;
    if ("output" in o) st.output = o["output"] ?? null;
    const reason = s(o["reason"]);
    if (reason !== undefined) st.reason = reason;
    return st;
  }

  /**
   * Polls an approval until it leaves "pending" (honouring the gate's
   * retry_after_seconds) or the timeout passes; returns the last status seen,
   * which is "pending" on timeout.
   */
  async waitForApproval(approvalId: string, options: WaitOptions = {}): Promise<ApprovalStatus> {
    const timeoutMs = options.timeoutMs ?? 300_000;
    const interval = options.pollIntervalMs ?? 2000;
    const deadline = this.now() + timeoutMs;
    for (;;) {
      const st = await this.getApprovalStatus(approvalId);
      if (st.status !== "pending") return st;
      const left = deadline - this.now();
      if (left <= 0) return st;
      const wait = st.retryAfterSeconds !== undefined ? st.retryAfterSeconds * 1000 : interval;
      await this.sleep(Math.max(0, Math.min(wait, left)));
    }
  }

  /** Fetches a receipt of this principal. Verify it offline with verifyReceipt() or receipt.verify(keys). */
  async getReceipt(receiptId: string): Promise<Receipt> {
    const res = await this.call("GET", `/v1/receipts/${seg(receiptId)}`, { auth: true, retry: "all", strict: true }, true);
    return new Receipt(res.json);
  }

  /** The gate's receipt signing keys (GET /v1/receipt-keys). */
  async getReceiptKeys(): Promise<ReceiptJwk[]> {
    const res = await this.call("GET", "/v1/receipt-keys", { auth: false, retry: "all" }, false);
    const keys = res.json["keys"];
    if (!Array.isArray(keys)) throw new LatchGateError("malformed receipt key set", { status: res.status });
    const out: ReceiptJwk[] = [];
    for (const k of keys) {
      const o = asObject(k);
      if (o === undefined) continue;
      const jwk: ReceiptJwk = { kty: s(o["kty"]) ?? "", crv: s(o["crv"]) ?? "", x: s(o["x"]) ?? "" };
      const kid = s(o["kid"]);
      if (kid !== undefined) jwk.kid = kid;
      out.push(jwk);
    }
    this.receiptKeys = out;
    return out;
  }

  /**
   * Verifies a receipt offline against the gate's receipt keys (fetched once
   * and cached; fetched again when the receipt names an unknown key).
   */
  async verifyReceipt(receipt: Receipt): Promise<boolean> {
    let keys = this.receiptKeys ?? (await this.getReceiptKeys());
    if (!keys.some((k) => k.kid === receipt.keyId)) keys = await this.getReceiptKeys();
    const r = receipt.check(keys);
    if (!r.valid) this.log.warn?.(`latchgate: receipt ${receipt.receiptId} failed verification: ${r.reason ?? ""}`);
    return r.valid;
  }

  /** Lists the gate's actions (no lease needed). */
  async listActions(): Promise<ActionSummary[]> {
    const res = await this.call("GET", "/v1/actions", { auth: false, retry: "all" }, false);
    const list = res.json["actions"];
    if (!Array.isArray(list)) throw new LatchGateError("malformed action list", { status: res.status });
    return list.map((a) => {
      const o = asObject(a) ?? {};
      return { actionId: s(o["action_id"]) ?? "", version: s(o["version"]) ?? "", description: s(o["description"]) ?? "", riskLevel: s(o["risk_level"]) ?? "" };
    });
  }

  /** An action's details (no lease needed). */
  async getAction(actionId: string): Promise<ActionInfo> {
    const res = await this.call("GET", `/v1/actions/${seg(actionId)}`, { auth: false, retry: "all" }, false);
    const o = res.json;
    const req = o["required_scopes"];
    return {
      actionId: s(o["action_id"]) ?? actionId,
      version: s(o["version"]) ?? "",
      description: s(o["description"]) ?? "",
      riskLevel: s(o["risk_level"]) ?? "",
      requiredScopes: Array.isArray(req) ? req.filter((x): x is string => typeof x === "string") : [],
      sideEffects: o["side_effects"] ?? null,
      costUsdCents: n(o["cost_usd_cents"]),
      digest: s(o["digest"]),
      inputSchema: o["input_schema"] ?? null,
      egress: egressOf(o["egress"]),
      raw: o,
    };
  }

  /** Which external domains an action may contact. */
  async getActionEgress(actionId: string): Promise<ActionEgress> {
    return (await this.getAction(actionId)).egress;
  }

  /** Drops the lease and closes pooled connections. Later calls fail. */
  close(): Promise<void> {
    this.closed = true;
    this.#state = undefined;
    this.transport.close();
    return Promise.resolve();
  }

  // --- internals ---

  private assertOpen(): void {
    if (this.closed) throw new LatchGateError("client is closed");
  }

  /** Returns a lease that is not about to expire: lazily connecting or renewing as needed. */
  private async freshLease(): Promise<LeaseState> {
    this.assertOpen();
    if (this.#state === undefined) {
      if (this.connecting === undefined) {
        if (this.opts.agentId === undefined) throw new LatchGateNotConnected();
        this.log.debug?.("latchgate: connecting lazily");
        this.connecting = this.connect().finally(() => {
          this.connecting = undefined;
        });
      }
      await this.connecting;
    }
    const st = this.#state;
    if (st === undefined) throw new LatchGateNotConnected();
    const before = Math.min((this.opts.renewBeforeSeconds ?? 60) * 1000, (st.expiresAtMs - st.issuedAtMs) / 4);
    if (this.now() >= st.expiresAtMs - before) {
      try {
        await this.renew();
      } catch (e) {
        // A transient failure while the lease is still valid: keep using it
        // and try again on the next call. Refusals and expiry are the call's error.
        const transient = e instanceof LatchGateUnavailable || e instanceof LatchGateTransportError;
        if (!transient || this.now() >= st.expiresAtMs) throw e;
        this.log.warn?.(`latchgate: lease renewal failed (${e.message}); using the current lease until it expires`);
      }
      const next = this.#state;
      if (next === undefined) throw new LatchGateNotConnected();
      return next;
    }
    return st;
  }

  private leaseFromAnswer(res: { json: Record<string, JsonValue> }, key: DpopKey): LeaseState {
    const o = res.json;
    const jwt = s(o["lease_jwt"]);
    const sessionId = s(o["session_id"]);
    const expiresAt = s(o["expires_at"]);
    const expiresAtMs = expiresAt === undefined ? NaN : Date.parse(expiresAt);
    if (jwt === undefined || sessionId === undefined || expiresAt === undefined || Number.isNaN(expiresAtMs)) {
      throw new LatchGateError("malformed lease answer from the gate");
    }
    const b = asObject(o["budgets"]) ?? {};
    const budgets: Budgets = {};
    const mc = n(b["max_calls"]);
    if (mc !== undefined) budgets.maxCalls = mc;
    const mcost = n(b["max_cost_usd_cents"]);
    if (mcost !== undefined) budgets.maxCostUsdCents = mcost;
    const scopes = o["scopes"];
    return {
      jwt,
      key,
      issuedAtMs: this.now(),
      expiresAtMs,
      info: {
        sessionId,
        leaseJti: s(o["lease_jti"]) ?? "",
        expiresAt,
        principal: s(o["principal"]) ?? "",
        scopes: Array.isArray(scopes) ? scopes.filter((x): x is string => typeof x === "string") : [],
        budgets,
      },
    };
  }

  private backoff(attempt: number): number {
    const base = this.opts.retryBaseDelayMs ?? 200;
    const cap = this.opts.retryMaxDelayMs ?? 5000;
    const ceiling = Math.min(cap, base * 2 ** attempt);
    return Math.floor(Math.random() * ceiling); // full jitter
  }

  /**
   * One logical call with retries. `wantObject` requires a JSON object body on
   * 2xx. `lease` pins the lease used (renewal); otherwise a fresh one is taken
   * per attempt when `auth` is set.
   */
  private async call(
    method: string,
    path: string,
    co: CallOptions,
    wantObject: boolean,
    lease?: LeaseState,
  ): Promise<{ status: number; json: Record<string, JsonValue> }> {
    this.assertOpen();
    const body = co.body ?? EMPTY;
    const maxRetries = Math.max(0, this.opts.maxRetries ?? 3);
    const timeoutMs = this.opts.timeoutMs ?? 30_000;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { Accept: "application/json", "User-Agent": "latchgate-typescript/0.1.0", ...co.headers };
      if (co.auth) {
        const st = lease ?? (await this.freshLease());
        headers["Authorization"] = `DPoP ${st.jwt}`;
        headers["DPoP"] = st.key.proof({ method, htu: this.transport.htu(path), leaseJwt: st.jwt, body, nowSeconds: this.now() / 1000 });
      }
      let res: RawResponse;
      try {
        res = await this.transport.request(method, path, headers, body, timeoutMs);
      } catch (e) {
        const err = e instanceof LatchGateError ? e : new LatchGateTransportError(String(e), false, { cause: e });
        const retryable =
          err instanceof LatchGateTransportError && (co.retry === "all" || (co.retry === "unavailable" && err.notSent)) && !this.closed;
        if (retryable && attempt < maxRetries) {
          const d = this.backoff(attempt);
          this.log.debug?.(`latchgate: ${method} ${path}: ${err.message}; retry ${attempt + 1} in ${d} ms`);
          await this.sleep(d);
          continue;
        }
        throw err;
      }
      if (res.status >= 200 && res.status < 300) {
        return { status: res.status, json: this.parseBody(res, wantObject, co.strict === true) };
      }
      let errBody: Record<string, unknown> | undefined;
      try {
        errBody = asObject(JSON.parse(res.body.toString("utf8")));
      } catch {
        errBody = undefined;
      }
      const ra = res.headers["retry-after"];
      const err = errorFromResponse(res.status, errBody, Array.isArray(ra) ? ra[0] : ra, this.now(), co.actionId);
      if (err instanceof LatchGateUnavailable && co.retry !== "none" && attempt < maxRetries && !this.closed) {
        const wantMs = err.retryAfter !== undefined ? err.retryAfter * 1000 : undefined;
        if (wantMs !== undefined && wantMs > (this.opts.maxRetryAfterMs ?? 30_000)) throw err;
        const d = Math.max(wantMs ?? 0, this.backoff(attempt));
        this.log.debug?.(`latchgate: ${method} ${path}: ${err.message}; retry ${attempt + 1} in ${d} ms`);
        await this.sleep(d);
        continue;
      }
      throw err;
    }
  }

  private parseBody(res: RawResponse, wantObject: boolean, strict: boolean): Record<string, JsonValue> {
    const text = res.body.toString("utf8");
    if (text.trim() === "") {
      if (wantObject) throw new LatchGateError(`empty answer from the gate (HTTP ${res.status})`, { status: res.status });
      return {};
    }
    let v: unknown;
    try {
      v = strict ? parseStrictJson(text) : JSON.parse(text);
    } catch (e) {
      throw new LatchGateError(`malformed JSON answer from the gate (HTTP ${res.status}): ${(e as Error).message}`, { status: res.status });
    }
    const o = asObject(v);
    if (o === undefined) throw new LatchGateError(`unexpected answer from the gate (HTTP ${res.status})`, { status: res.status });
    return o;
  }
}

function egressOf(v: unknown): ActionEgress {
  if (v === "none" || v === undefined || v === null) return { profile: "none", allowedDomains: [], hasEgress: false };
  const o = asObject(v);
  if (o !== undefined) {
    const [profile] = Object.keys(o);
    if (profile !== undefined) {
      const inner = asObject(o[profile]);
      const doms = inner?.["allowed_domains"];
      return {
        profile,
        allowedDomains: Array.isArray(doms) ? doms.filter((x): x is string => typeof x === "string") : [],
        hasEgress: true,
      };
    }
  }
  if (typeof v === "string") return { profile: v, allowedDomains: [], hasEgress: v !== "none" };
  return { profile: "none", allowedDomains: [], hasEgress: false };
}
