// The compiled examples run against the protocol stub as child processes, so
// the published snippets stay runnable.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { StubGate } from "./helpers/stubgate.js";

const examples = fileURLToPath(new URL("../examples/", import.meta.url));

function run(script: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [examples + script], { env: { ...process.env, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

test("examples run against the stub", async (t) => {
  const gate = new StubGate();
  await gate.start();
  t.after(() => gate.close());
  const env = { LATCHGATE_SOCKET: gate.socketPath, LATCHGATE_URL: "", LATCHGATE_SMOKE_APPROVALS: "0" };

  await t.test("smoke_test", async () => {
    const r = await run("smoke_test.js", env);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.at(-1), "6 passed, 0 failed", r.stdout + r.stderr);
    assert.ok(lines.includes("SKIP approval: LATCHGATE_SMOKE_APPROVALS is not 1"), r.stdout);
    assert.equal(r.code, 0);
  });

  await t.test("smoke_test fails and exits non-zero when a check fails", async () => {
    gate.queue("POST /v1/leases", { status: 403, body: { error: "forbidden", message: "no" } });
    const r = await run("smoke_test.js", env);
    assert.match(r.stdout, /FAIL lease/);
    assert.match(r.stdout.trim().split("\n").at(-1) ?? "", /^\d+ passed, [1-9]\d* failed$/);
    assert.notEqual(r.code, 0);
  });

  await t.test("hello", async () => {
    const r = await run("hello.js", env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /receipt: [0-9a-f-]{36}/);
    assert.match(r.stdout, /signature verifies offline: true/);
  });

  await t.test("approval_flow", async () => {
    gate.pendingPolls = 0;
    const r = await run("approval_flow.js", { ...env, LATCHGATE_APPROVAL_ACTION: "held", LATCHGATE_APPROVAL_ARGS: '{"to":"ops"}' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /approval required: /);
    assert.match(r.stdout, /approved; output: \{"to":"ops"\}/);
    assert.match(r.stdout, /receipt [0-9a-f-]{36} \(success\) verifies: true/);
  });
});
