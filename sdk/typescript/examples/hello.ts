// Hello: lease → execute → receipt. Run against a gate with the `echo` action:
//   npm run build && node dist/examples/hello.js        (or: npx tsx examples/hello.ts)
// The gate is found through LATCHGATE_URL, LATCHGATE_SOCKET or the default socket paths.

import { LatchGateClient } from "latchgate";

const client = new LatchGateClient({ agentId: "hello-agent", socket: process.env["LATCHGATE_SOCKET"] });
try {
  // agentId is set, so the first execute() opens the lease (lazy connect).
  const result = await client.execute("echo", { message: "hello, gate" });
  console.log("output:", JSON.stringify(result.output));
  console.log("receipt:", result.receiptId);

  const receipt = await client.getReceipt(result.receiptId);
  console.log("fully successful:", receipt.isFullySuccessful);
  console.log("signature verifies offline:", await client.verifyReceipt(receipt));
} finally {
  await client.close();
}
