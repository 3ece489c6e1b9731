// Error classes of the LatchGate SDK and the mapping from gate answers to them
// (PROTOCOL.md §4). Every class extends LatchGateError; LatchGateLeaseExpired
// and LatchGateReplayDetected extend LatchGateAuthError. `instanceof` works on
// the compiled output because each constructor sets the prototype and name.

/** Details common to every error the gate answered with. */
export interface GateErrorDetails {
  /** HTTP status of the gate's answer, when there was an answer. */
  status?: number;
  /** The gate's `error` code, e.g. "policy_denied". */
  code?: string;
  /** The gate's `trace_id`, when it sent one. */
  traceId?: string;
  /** The parsed JSON body of the gate's answer, when there was one. */
  body?: Readonly<Record<string, unknown>>;
}

/** Base class of every error raised by the SDK. */
export class LatchGateError extends Error {
  readonly status: number | undefined;
  readonly code: string | undefined;
  readonly traceId: string | undefined;
  readonly body: Readonly<Record<string, unknown>> | undefined;

  constructor(message: string, details: GateErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
    this.status = details.status;
    this.code = details.code;
    this.traceId = details.traceId;
    this.body = details.body;
  }
}

/** The gate refused the request (policy, validation, unknown action, conflict…). Do not retry as-is. */
export class LatchGateDenied extends LatchGateError {
  /** The action the refusal concerns, when known. */
  readonly actionId: string | undefined;
  /** Why: the gate's `deny_reason`, else its message. */
  readonly reason: string;

  constructor(message: string, actionId: string | undefined, reason: string, details: GateErrorDetails = {}) {
    super(message, details);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
    this.actionId = actionId;
    this.reason = reason;
  }
}

/** Policy held the action for a human: poll `approvalId` (getApprovalStatus / waitForApproval). */
export class LatchGateApprovalRequired extends LatchGateError {
  readonly approvalId: string;
  readonly requestHash: string | undefined;
  readonly expiresAt: string | undefined;

  constructor(approvalId: string, requestHash?: string, expiresAt?: string, details: GateErrorDetails = {}) {
    super(`approval required: ${approvalId}`, { status: 202, ...details });
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
    this.approvalId = approvalId;
    this.requestHash = requestHash;
    this.expiresAt = expiresAt;
  }
}

/** The lease's budget is used up: connect() again for a fresh lease. */
export class LatchGateBudgetExhausted extends LatchGateError {
  constructor(message: string, details: GateErrorDetails = {}) {
    super(message, details);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
  }
}

/** The lease or the proof was refused (401): reconnect. */
export class LatchGateAuthError extends LatchGateError {
  constructor(message: string, details: GateErrorDetails = {}) {
    super(message, details);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
  }
}

/** The lease (or its session) has expired: connect() again. */
export class LatchGateLeaseExpired extends LatchGateAuthError {
  constructor(message: string, details: GateErrorDetails = {}) {
    super(message, details);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
  }
}

/** The gate saw a DPoP proof id twice: a possible replay. Never retried; surface it. */
export class LatchGateReplayDetected extends LatchGateAuthError {
  constructor(message: string, details: GateErrorDetails = {}) {
    super(message, details);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
  }
}

/** The gate (or one of its dependencies) is temporarily unavailable: retry with backoff. */
export class LatchGateUnavailable extends LatchGateError {
  /** Seconds the gate asked to wait (Retry-After / retry_after_seconds), when given. */
  readonly retryAfter: number | undefined;

  constructor(message: string, retryAfter: number | undefined, details: GateErrorDetails = {}) {
    super(message, details);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
    this.retryAfter = retryAfter;
  }
}

/** The socket or connection failed, or the request timed out. */
export class LatchGateTransportError extends LatchGateError {
  /** True when the request was certainly not sent (the connection was never made). */
  readonly notSent: boolean;

  constructor(message: string, notSent: boolean, options?: { cause?: unknown }) {
    super(message, {}, options);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
    this.notSent = notSent;
  }
}

/** A call needs a lease, but connect() was not called and no agentId was configured. */
export class LatchGateNotConnected extends LatchGateError {
  constructor(message = "not connected: call connect() first or set agentId") {
    super(message);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
  }
}

/**
 * The action was dispatched but failed before an answer (502). The side effect
 * may have happened; the SDK never retries this automatically.
 */
export class LatchGateActionFailed extends LatchGateError {
  readonly receiptId: string | undefined;
  /** Why it failed: the gate's message (its code is in `code`). */
  readonly reason: string;

  constructor(message: string, receiptId: string | undefined, reason: string, details: GateErrorDetails = {}) {
    super(message, details);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
    this.receiptId = receiptId;
    this.reason = reason;
  }
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** Parses a Retry-After header (delta-seconds or HTTP-date) into seconds. */
export function parseRetryAfter(header: string | undefined, nowMs: number): number | undefined {
  if (header === undefined) return undefined;
  const h = header.trim();
  if (/^\d+$/.test(h)) return Number(h);
  const t = Date.parse(h);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, Math.ceil((t - nowMs) / 1000));
}

/**
 * Maps a non-2xx gate answer to an error (PROTOCOL.md §4). `body` is the parsed
 * JSON body (or undefined when the body was not a JSON object); `actionId` is
 * the action the call concerned, used when the body names none.
 */
export function errorFromResponse(
  status: number,
  body: Record<string, unknown> | undefined,
  retryAfterHeader: string | undefined,
  nowMs: number,
  actionId?: string,
): LatchGateError {
  const code = str(body?.["error"]);
  const message = str(body?.["message"]) ?? `gate answered HTTP ${status}${code ? ` (${code})` : ""}`;
  const details: GateErrorDetails = { status };
  if (code !== undefined) details.code = code;
  const traceId = str(body?.["trace_id"]);
  if (traceId !== undefined) details.traceId = traceId;
  if (body !== undefined) details.body = body;
  const text = code ? `${code}: ${message}` : message;

  if (status === 401) {
    if (code === "lease_expired") return new LatchGateLeaseExpired(text, details);
    if (code === "replay_detected") return new LatchGateReplayDetected(text, details);
    return new LatchGateAuthError(text, details);
  }
  if (status === 403 && code === "budget_exhausted") return new LatchGateBudgetExhausted(text, details);
  if (status === 429 || status === 503 || (status === 409 && code === "idempotency_in_progress")) {
    const fromBody = body?.["retry_after_seconds"];
    const retryAfter =
      parseRetryAfter(retryAfterHeader, nowMs) ??
      (typeof fromBody === "number" && Number.isFinite(fromBody) && fromBody >= 0 ? fromBody : undefined);
    return new LatchGateUnavailable(text, retryAfter, details);
  }
  if (status === 502) {
    return new LatchGateActionFailed(text, str(body?.["receipt_id"]), message, details);
  }
  if ([400, 403, 404, 405, 409, 413, 415, 422].includes(status)) {
    const reason = str(body?.["deny_reason"]) ?? message;
    return new LatchGateDenied(text, str(body?.["action_id"]) ?? actionId, reason, details);
  }
  return new LatchGateError(text, details);
}
