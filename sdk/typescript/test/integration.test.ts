// Against a real gate: runs when LATCHGATE_TEST_SOCKET names its client
// socket (e.g. a `latchgate serve --dev` whose `echo` action returns its
// arguments); skipped otherwise.

import { test } from "node:test";
import assert from "node:assert/strict";
import { LatchGateBudgetExhausted, LatchGateClient, LatchGateDenied } from "../src/index.js";

const socket = process.env["LATCHGATE_TEST_SOCKET"];
const skip = socket === undefined || socket === "" ? "LATCHGATE_TEST_SOCKET not set" : false;

test("real gate: lease → execute echo → receipt → verify; renewal keeps the session", { skip }, async () => {
  const client = new LatchGateClient({ socket, agentId: "ts-integration", env: {} });
  try {
    const actions = await client.listActions();
    assert.ok(actions.some((a) => a.actionId === "echo"), "the dev gate registers echo");
    const args = { msg: "hello from typescript", n: 3, f: 1.5, s: "héllo ☃" };
    const r = await client.execute("echo", args);
    assert.ok(r.receiptId !== "");
    assert.ok(r.traceId !== "");
    assert.equal(r.actionId, "echo");
    assert.equal(r.isFullySuccessful, true);
    const receipt = await client.getReceipt(r.receiptId);
    assert.equal(receipt.receiptId, r.receiptId);
    assert.equal(receipt.isFullySuccessful, true);
    assert.equal(await client.verifyReceipt(receipt), true, "receipt verifies offline");
    const session = client.lease?.sessionId;
    assert.ok(session);
    const renewed = await client.renew();
    assert.equal(renewed.sessionId, session);
    const again = await client.execute("echo", { after: "renew" });
    assert.ok(again.receiptId !== r.receiptId);
    await assert.rejects(client.execute("no_such_action_xyz", {}), LatchGateDenied);
    const egress = await client.getActionEgress("echo");
    assert.equal(egress.hasEgress, egress.profile !== "none");
  } finally {
    await client.close();
  }
});

test("real gate: budget counters carry across renewal", { skip }, async () => {
  const client = new LatchGateClient({ socket, env: {} });
  try {
    const lease = await client.connect({ agentId: "ts-integration-budget", maxCalls: 2 });
    assert.equal(lease.budgets.maxCalls, 2);
    await client.execute("echo", { i: 1 });
    const renewed = await client.renew();
    assert.equal(renewed.sessionId, lease.sessionId);
    await client.execute("echo", { i: 2 });
    await assert.rejects(client.execute("echo", { i: 3 }), LatchGateBudgetExhausted);
  } finally {
    await client.close();
  }
});

test("real gate: a refusal without action_id in its body still names the action", { skip }, async () => {
  const client = new LatchGateClient({ socket, agentId: "ts-integration-denied", env: {} });
  try {
    // A lone surrogate is not I-JSON: the gate answers 400 invalid_json (no action_id member).
    const err = await client.execute("echo", { s: "\ud800" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof LatchGateDenied, String(err));
    assert.equal(err.code, "invalid_json");
    assert.equal(err.actionId, "echo");
  } finally {
    await client.close();
  }
});

test("real gate: a bare connect() after connect({ agentId }) stays the same agent", { skip }, async () => {
  const client = new LatchGateClient({ socket, env: {} });
  try {
    const first = await client.connect({ agentId: "ts-integration-reconnect" });
    const second = await client.connect(); // as in the guide's LatchGateAuthError handler
    assert.notEqual(second.sessionId, first.sessionId);
    assert.equal(second.principal, first.principal);
  } finally {
    await client.close();
  }
});
