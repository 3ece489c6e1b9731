// CI smoke test against a running gate (make test-smoke). Env:
//   LATCHGATE_SOCKET        the gate's client socket (else default resolution)
//   LATCHGATE_ADMIN_SOCKET  the admin socket (for the approval check)
//   LATCHGATE_BIN           the latchgate binary (for the approval check)
//   LATCHGATE_SMOKE_APPROVALS=1  run the approval check (skipped otherwise)
//   LATCHGATE_SMOKE_HELD_ACTION, LATCHGATE_SMOKE_HELD_ARGS  a request policy holds (default:
//     echo_held {} from testdata/smoke-manifests: a high-risk echo, so no network is needed)
// Prints one line per check and a final line "N passed, N failed"; exits 1 on any failure.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import {
  LatchGateApprovalRequired,
  LatchGateBudgetExhausted,
  LatchGateClient,
  LatchGateDenied,
  type LatchGateClientOptions,
} from "latchgate";

const socket = process.env["LATCHGATE_SOCKET"];
const base: LatchGateClientOptions = socket !== undefined && socket !== "" ? { socket } : {};
let passed = 0;
let failed = 0;
let skipped = 0;

class Skip extends Error {}

async function check(name: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
    passed++;
    console.log(`PASS ${name}`);
  } catch (e) {
    if (e instanceof Skip) {
      skipped++;
      console.log(`SKIP ${name}: ${e.message}`);
      return;
    }
    failed++;
    console.log(`FAIL ${name}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
}

function expect(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

const client = new LatchGateClient({ ...base, agentId: "ts-smoke" });
let receiptId = "";

await check("lease", async () => {
  const lease = await client.connect();
  expect(lease.sessionId !== "", "no session id");
});

await check("execute echo", async () => {
  const r = await client.execute("echo", { smoke: "typescript", n: 1 });
  expect(JSON.stringify(r.output).includes("typescript"), `echo output ${JSON.stringify(r.output)}`);
  expect(r.receiptId !== "", "no receipt id");
  receiptId = r.receiptId;
});

await check("receipt verification", async () => {
  expect(receiptId !== "", "no receipt from the execute check");
  const receipt = await client.getReceipt(receiptId);
  expect(receipt.isFullySuccessful, "receipt not fully successful");
  expect(await client.verifyReceipt(receipt), "receipt failed offline verification");
});

await check("policy denial", async () => {
  try {
    await client.execute("smoke_no_such_action", {});
  } catch (e) {
    if (e instanceof LatchGateDenied) {
      expect(e.code === "action_not_found" || e.code === "policy_denied", `unexpected code ${e.code ?? ""}`);
      return;
    }
    throw e;
  }
  throw new Error("a non-existent action was not denied");
});

await check("budget exhaustion", async () => {
  const b = new LatchGateClient({ ...base, agentId: "ts-smoke-budget" });
  try {
    await b.connect({ maxCalls: 2 });
    await b.execute("echo", { i: 1 });
    await b.execute("echo", { i: 2 });
    try {
      await b.execute("echo", { i: 3 });
    } catch (e) {
      if (e instanceof LatchGateBudgetExhausted) return;
      throw e;
    }
    throw new Error("third call within max_calls=2 succeeded");
  } finally {
    await b.close();
  }
});

await check("lease renewal", async () => {
  const before = client.lease?.sessionId;
  const renewed = await client.renew();
  expect(renewed.sessionId === before, `session changed: ${before ?? ""} → ${renewed.sessionId}`);
  const r = await client.execute("echo", { after: "renew" });
  expect(r.receiptId !== "", "execute after renewal failed");
});

await check("approval", async () => {
  if (process.env["LATCHGATE_SMOKE_APPROVALS"] !== "1") throw new Skip("LATCHGATE_SMOKE_APPROVALS is not 1");
  const bin = process.env["LATCHGATE_BIN"];
  const admin = process.env["LATCHGATE_ADMIN_SOCKET"];
  if (bin === undefined || admin === undefined) throw new Error("LATCHGATE_BIN and LATCHGATE_ADMIN_SOCKET are required");
  // The held request: LATCHGATE_SMOKE_HELD_ACTION / LATCHGATE_SMOKE_HELD_ARGS, else echo_held.
  const action = process.env["LATCHGATE_SMOKE_HELD_ACTION"] ?? "echo_held";
  const args: unknown = JSON.parse(process.env["LATCHGATE_SMOKE_HELD_ARGS"] ?? "{}");
  let approvalId: string;
  try {
    await client.execute(action, args);
    throw new Error(`${action} ran without approval`);
  } catch (e) {
    if (!(e instanceof LatchGateApprovalRequired)) throw e;
    approvalId = e.approvalId;
  }
  // The CLI exits non-zero when the approved request ran but did not succeed
  // (e.g. no network in CI); the approval's final state decides below.
  await promisify(execFile)(bin, ["approvals", "approve", approvalId, "--yes", "--admin-socket", admin]).catch(() => undefined);
  const st = await client.waitForApproval(approvalId, { timeoutMs: 30_000 });
  const ranOnce = st.status === "failed" && st.receiptId !== undefined && ["provider_failure", "timeout", "egress_denied"].includes(st.reason ?? "");
  expect(st.status === "approved" || ranOnce, `approval ended ${st.status} ${st.reason ?? ""}`);
  if (st.receiptId !== undefined) {
    const receipt = await client.getReceipt(st.receiptId);
    expect(await client.verifyReceipt(receipt), "the approved run's receipt failed verification");
    expect(receipt.raw["approval"] !== null && receipt.raw["approval"] !== undefined, "receipt does not record the approval");
  }
  if (ranOnce) console.log(`  note: ${action} ran once at approval and failed upstream (${st.reason ?? ""})`);
});

await client.close();
if (skipped > 0) console.log(`${skipped} skipped`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
