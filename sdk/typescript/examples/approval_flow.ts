// Approval flow: a held action → wait for a human → outcome.
//   npm run build && node dist/examples/approval_flow.js   (or: npx tsx examples/approval_flow.ts)
// Env: LATCHGATE_SOCKET (or LATCHGATE_URL), LATCHGATE_APPROVAL_ACTION (default:
// the first high/critical-risk action the gate lists), LATCHGATE_APPROVAL_ARGS
// (JSON, default {}), LATCHGATE_APPROVAL_TIMEOUT_MS (default 120000).
// While it waits, an operator approves with:
//   latchgate approvals approve <approval-id> --yes

import { LatchGateApprovalRequired, LatchGateClient } from "latchgate";

const client = new LatchGateClient({ agentId: "approval-example", socket: process.env["LATCHGATE_SOCKET"] });
try {
  let action = process.env["LATCHGATE_APPROVAL_ACTION"];
  if (action === undefined) {
    const risky = (await client.listActions()).find((a) => a.riskLevel === "high" || a.riskLevel === "critical");
    if (risky === undefined) {
      console.log("the gate lists no high-risk action; set LATCHGATE_APPROVAL_ACTION");
      process.exit(0);
    }
    action = risky.actionId;
  }
  const args: unknown = JSON.parse(process.env["LATCHGATE_APPROVAL_ARGS"] ?? "{}");

  try {
    const result = await client.execute(action, args);
    console.log(`policy allowed ${action} without a human; receipt ${result.receiptId}`);
  } catch (err) {
    if (!(err instanceof LatchGateApprovalRequired)) throw err;
    console.log(`approval required: ${err.approvalId}`);
    console.log(`  approve with: latchgate approvals approve ${err.approvalId} --yes`);
    const status = await client.waitForApproval(err.approvalId, {
      timeoutMs: Number(process.env["LATCHGATE_APPROVAL_TIMEOUT_MS"] ?? 120_000),
    });
    switch (status.status) {
      case "approved":
        console.log("approved; output:", JSON.stringify(status.output));
        break;
      case "pending":
        console.log("still pending: gave up waiting");
        break;
      default:
        console.log(`${status.status}${status.reason !== undefined ? `: ${status.reason}` : ""}`);
    }
    // An approved request ran once (a failed one may have too): its receipt records the approval.
    if (status.receiptId !== undefined) {
      const receipt = await client.getReceipt(status.receiptId);
      console.log(`receipt ${receipt.receiptId} (${receipt.resultKind ?? "?"}) verifies:`, await client.verifyReceipt(receipt));
    }
  }
} finally {
  await client.close();
}
