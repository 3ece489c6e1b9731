// The exception mapping table of PROTOCOL.md §4 and the class hierarchy.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  LatchGateActionFailed,
  LatchGateApprovalRequired,
  LatchGateAuthError,
  LatchGateBudgetExhausted,
  LatchGateDenied,
  LatchGateError,
  LatchGateLeaseExpired,
  LatchGateNotConnected,
  LatchGateReplayDetected,
  LatchGateTransportError,
  LatchGateUnavailable,
  errorFromResponse,
  parseRetryAfter,
} from "../src/index.js";

type Ctor = abstract new (...args: never[]) => LatchGateError;

test("errorFromResponse maps every row of the table", async (t) => {
  const rows: { status: number; code: string; want: Ctor; notAlso?: Ctor[] }[] = [
    { status: 401, code: "lease_expired", want: LatchGateLeaseExpired },
    { status: 401, code: "replay_detected", want: LatchGateReplayDetected },
    { status: 401, code: "invalid_dpop", want: LatchGateAuthError, notAlso: [LatchGateLeaseExpired, LatchGateReplayDetected] },
    { status: 401, code: "invalid_lease", want: LatchGateAuthError, notAlso: [LatchGateLeaseExpired, LatchGateReplayDetected] },
    { status: 401, code: "lease_revoked", want: LatchGateAuthError, notAlso: [LatchGateLeaseExpired] },
    { status: 401, code: "missing_auth_header", want: LatchGateAuthError },
    { status: 403, code: "budget_exhausted", want: LatchGateBudgetExhausted, notAlso: [LatchGateDenied] },
    { status: 403, code: "policy_denied", want: LatchGateDenied },
    { status: 403, code: "scope_not_permitted", want: LatchGateDenied },
    { status: 403, code: "egress_target_forbidden", want: LatchGateDenied },
    { status: 403, code: "forbidden", want: LatchGateDenied },
    { status: 400, code: "invalid_json", want: LatchGateDenied },
    { status: 404, code: "action_not_found", want: LatchGateDenied },
    { status: 405, code: "method_not_allowed", want: LatchGateDenied },
    { status: 409, code: "idempotency_conflict", want: LatchGateDenied },
    { status: 409, code: "idempotency_in_progress", want: LatchGateUnavailable, notAlso: [LatchGateDenied] },
    { status: 413, code: "payload_too_large", want: LatchGateDenied },
    { status: 415, code: "unsupported_media_type", want: LatchGateDenied },
    { status: 422, code: "schema_violation", want: LatchGateDenied },
    { status: 429, code: "rate_limited", want: LatchGateUnavailable },
    { status: 503, code: "store_unavailable", want: LatchGateUnavailable },
    { status: 503, code: "policy_unavailable", want: LatchGateUnavailable },
    { status: 502, code: "action_execution_failed", want: LatchGateActionFailed },
    { status: 502, code: "egress_denied", want: LatchGateActionFailed },
    { status: 500, code: "internal_error", want: LatchGateError, notAlso: [LatchGateUnavailable, LatchGateDenied, LatchGateActionFailed] },
  ];
  for (const r of rows) {
    await t.test(`${r.status} ${r.code}`, () => {
      const e = errorFromResponse(r.status, { error: r.code, message: "m", action_id: "echo", deny_reason: "why", receipt_id: "rid" }, undefined, 0);
      assert.ok(e instanceof r.want, `errorFromResponse(${r.status}, ${r.code}) = ${e.name}, want ${r.want.name}`);
      assert.ok(e instanceof LatchGateError);
      assert.ok(e instanceof Error);
      for (const n of r.notAlso ?? []) assert.ok(!(e instanceof n), `${e.name} is also ${n.name}`);
      assert.equal(e.code, r.code);
      assert.equal(e.status, r.status);
      assert.equal(e.name, r.want.name);
    });
  }
});

test("error fields", async (t) => {
  await t.test("denied carries actionId, code, reason", () => {
    const e = errorFromResponse(403, { error: "policy_denied", message: "no", action_id: "http_fetch", deny_reason: "no_rule_allowed" }, undefined, 0);
    assert.ok(e instanceof LatchGateDenied);
    assert.equal(e.actionId, "http_fetch");
    assert.equal(e.code, "policy_denied");
    assert.equal(e.reason, "no_rule_allowed");
  });
  await t.test("denied reason falls back to message", () => {
    const e = errorFromResponse(404, { error: "action_not_found", message: "unknown action" }, undefined, 0);
    assert.ok(e instanceof LatchGateDenied);
    assert.equal(e.reason, "unknown action");
  });
  await t.test("action failed carries receiptId and reason", () => {
    const e = errorFromResponse(502, { error: "action_execution_failed", message: "timeout", receipt_id: "r1", trace_id: "t1" }, undefined, 0);
    assert.ok(e instanceof LatchGateActionFailed);
    assert.equal(e.receiptId, "r1");
    assert.equal(e.reason, "timeout");
    assert.equal(e.traceId, "t1");
  });
  await t.test("unavailable retryAfter from header", () => {
    const e = errorFromResponse(429, { error: "rate_limited", message: "slow down" }, "7", 0);
    assert.ok(e instanceof LatchGateUnavailable);
    assert.equal(e.retryAfter, 7);
  });
  await t.test("unavailable retryAfter from body", () => {
    const e = errorFromResponse(503, { error: "draining", message: "m", retry_after_seconds: 2 }, undefined, 0);
    assert.ok(e instanceof LatchGateUnavailable);
    assert.equal(e.retryAfter, 2);
  });
  await t.test("non-JSON 503 body still maps", () => {
    const e = errorFromResponse(503, undefined, undefined, 0);
    assert.ok(e instanceof LatchGateUnavailable);
    assert.equal(e.retryAfter, undefined);
  });
  await t.test("approval required", () => {
    const e = new LatchGateApprovalRequired("a1", "sha256:x", "2026-01-01T00:00:00Z");
    assert.ok(e instanceof LatchGateError);
    assert.equal(e.approvalId, "a1");
    assert.equal(e.status, 202);
    assert.equal(e.name, "LatchGateApprovalRequired");
  });
  await t.test("subclass hierarchy", () => {
    assert.ok(new LatchGateLeaseExpired("x") instanceof LatchGateAuthError);
    assert.ok(new LatchGateReplayDetected("x") instanceof LatchGateAuthError);
    assert.ok(new LatchGateNotConnected() instanceof LatchGateError);
    assert.ok(new LatchGateTransportError("x", true) instanceof LatchGateError);
    assert.ok(!(new LatchGateAuthError("x") instanceof LatchGateLeaseExpired));
  });
});

test("parseRetryAfter", async (t) => {
  const cases: [string | undefined, number | undefined][] = [
    [undefined, undefined],
    ["3", 3],
    [" 0 ", 0],
    ["Thu, 01 Jan 1970 00:00:10 GMT", 10],
    ["soon", undefined],
  ];
  for (const [h, want] of cases) {
    await t.test(String(h), () => assert.equal(parseRetryAfter(h, 0), want));
  }
});
