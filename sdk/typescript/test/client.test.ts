// LatchGateClient against the protocol stub on a real Unix socket: lazy
// connect, NotConnected, renewal (same session and budget, coalesced), retries
// (Retry-After, idempotency key, never a 502), receipts, approvals, discovery,
// URL resolution and the default-socket safety check.

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { inspect } from "node:util";
import { join } from "node:path";
import {
  LatchGateActionFailed,
  LatchGateApprovalRequired,
  LatchGateAuthError,
  LatchGateBudgetExhausted,
  LatchGateClient,
  LatchGateDenied,
  LatchGateError,
  LatchGateLeaseExpired,
  LatchGateNotConnected,
  LatchGateReplayDetected,
  LatchGateTransportError,
  LatchGateUnavailable,
  resolveTarget,
  unsafeSocketReason,
  type LatchGateClientOptions,
} from "../src/index.js";
import { Transport } from "../src/transport.js";
import { StubGate } from "./helpers/stubgate.js";

interface Env {
  gate: StubGate;
  client: LatchGateClient;
  clock: { ms: number };
  sleeps: number[];
}

async function setup(t: TestContext, opts: LatchGateClientOptions = {}): Promise<Env> {
  const clock = { ms: Date.UTC(2026, 0, 15, 10, 0, 0) };
  const gate = new StubGate(() => clock.ms);
  await gate.start();
  const sleeps: number[] = [];
  const client = new LatchGateClient({
    socket: gate.socketPath,
    env: {},
    now: () => clock.ms,
    sleep: (ms) => {
      sleeps.push(ms);
      clock.ms += ms;
      return Promise.resolve();
    },
    ...opts,
  });
  t.after(async () => {
    await client.close();
    await gate.close();
  });
  return { gate, client, clock, sleeps };
}

test("lazy connect on first execute when agentId is set", async (t) => {
  const { gate, client } = await setup(t, { agentId: "my-agent" });
  assert.equal(client.isConnected, false);
  const r = await client.execute("echo", { msg: "hi" });
  assert.deepEqual(r.output, { msg: "hi" });
  assert.ok(r.receiptId !== "");
  assert.ok(r.traceId !== "");
  assert.equal(r.actionId, "echo");
  assert.ok(r.grantId !== "");
  assert.equal(r.verificationOutcome, "unverifiable_declared");
  assert.equal(r.isFullySuccessful, true);
  assert.equal(gate.count("POST /v1/leases"), 1);
  assert.equal(client.lease?.principal, "agent:my-agent");
  await client.execute("echo", { n: 2 });
  assert.equal(gate.count("POST /v1/leases"), 1, "second call reuses the lease");
});

test("concurrent first calls share one lazy connect", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  await Promise.all([client.execute("echo", { i: 1 }), client.execute("echo", { i: 2 }), client.execute("echo", { i: 3 })]);
  assert.equal(gate.count("POST /v1/leases"), 1);
});

test("NotConnected without agentId and before connect()", async (t) => {
  const { gate, client } = await setup(t);
  await assert.rejects(client.execute("echo", {}), LatchGateNotConnected);
  await assert.rejects(client.getReceipt("00000000-0000-0000-0000-000000000000"), LatchGateNotConnected);
  await assert.rejects(client.getApprovalStatus("00000000-0000-0000-0000-000000000000"), LatchGateNotConnected);
  await assert.rejects(client.renew(), LatchGateNotConnected);
  assert.equal(gate.count("POST /v1/leases"), 0);
  const info = await client.connect({ agentId: "later", maxCalls: 5, scopes: ["tools:call"], ttl: 120 });
  assert.equal(info.budgets.maxCalls, 5);
  const r = await client.execute("echo", { ok: true });
  assert.deepEqual(r.output, { ok: true });
});

test("connect sends the lease request the protocol defines", async (t) => {
  const { gate, client } = await setup(t);
  await client.connect({ agentId: "x", scopes: ["tools:call"], maxCalls: 3, maxCostUsdCents: 10, ttl: 60 });
  const req = gate.requests.find((r) => r.path === "/v1/leases");
  assert.ok(req);
  const body = JSON.parse(req.body.toString()) as Record<string, unknown>;
  assert.deepEqual(Object.keys(body.dpop_jwk as object).sort(), ["crv", "kty", "x", "y"]);
  assert.deepEqual(body["scopes"], ["tools:call"]);
  assert.deepEqual(body["budgets"], { max_calls: 3, max_cost_usd_cents: 10 });
  assert.equal(body["agent_id"], "x");
  assert.equal(body["ttl_seconds"], 60);
  assert.equal(req.headers["content-type"], "application/json");
});

test("every request carries a fresh proof with bh (the stub refuses reuse and bad proofs)", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  for (let i = 0; i < 5; i++) await client.execute("echo", { i });
  const auths = gate.requests.filter((r) => r.path.endsWith("/execute"));
  const proofs = new Set(auths.map((r) => r.headers["dpop"]));
  assert.equal(proofs.size, 5);
  for (const r of auths) assert.match(String(r.headers["authorization"]), /^DPoP /);
});

test("renewal keeps the session and the budget", async (t) => {
  const { gate, client, clock } = await setup(t, { agentId: "a", maxCalls: 3 });
  await client.execute("echo", { i: 1 });
  const first = client.lease;
  assert.ok(first);
  clock.ms += 250_000; // inside the renewal window (ttl 300 s, renew 60 s before)
  await client.execute("echo", { i: 2 });
  assert.equal(gate.count("POST /v1/leases/renew"), 1);
  assert.equal(gate.count("POST /v1/leases"), 1);
  assert.equal(client.lease?.sessionId, first.sessionId);
  assert.notEqual(client.lease?.leaseJti, first.leaseJti);
  await client.execute("echo", { i: 3 });
  await assert.rejects(client.execute("echo", { i: 4 }), LatchGateBudgetExhausted, "budget counters carry across renewal");
  const forced = await client.renew();
  assert.equal(forced.sessionId, first.sessionId);
});

test("concurrent callers share one renewal", async (t) => {
  const { gate, client, clock } = await setup(t, { agentId: "a" });
  await client.connect();
  let release: () => void = () => undefined;
  gate.renewGate = new Promise((r) => {
    release = r;
  });
  clock.ms += 280_000;
  const calls = Promise.all([1, 2, 3, 4].map((i) => client.execute("echo", { i })));
  const forced = client.renew();
  await new Promise((r) => setTimeout(r, 20));
  release();
  await calls;
  await forced;
  assert.equal(gate.count("POST /v1/leases/renew"), 1);
});

test("renewal refused past the session's life raises LeaseExpired", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  await client.connect();
  gate.expireAll();
  await assert.rejects(client.renew(), LatchGateLeaseExpired);
});

test("retry honours Retry-After on a safe call", async (t) => {
  const { gate, client, sleeps } = await setup(t, { agentId: "a" });
  gate.queue("GET /v1/actions", { status: 429, body: { error: "rate_limited", message: "slow" }, headers: { "Retry-After": "2" } });
  const list = await client.listActions();
  assert.equal(list.length, 2);
  assert.equal(gate.count("GET /v1/actions"), 2);
  assert.equal(sleeps.length, 1);
  assert.ok((sleeps[0] ?? 0) >= 2000, `slept ${sleeps[0]} ms, want ≥ 2000`);
});

test("503 on a safe call is retried with backoff, then raised after maxRetries", async (t) => {
  const { gate, client, sleeps } = await setup(t, { maxRetries: 2, retryBaseDelayMs: 100, retryMaxDelayMs: 1000 });
  const e503 = { status: 503, body: { error: "store_unavailable", message: "down" } };
  gate.queue("GET /v1/actions", e503, e503, e503);
  await assert.rejects(client.listActions(), LatchGateUnavailable);
  assert.equal(gate.count("GET /v1/actions"), 3);
  assert.equal(sleeps.length, 2);
  assert.ok(sleeps.every((d) => d >= 0 && d <= 1000));
});

test("a Retry-After above maxRetryAfterMs is raised, not waited for", async (t) => {
  const { gate, client, sleeps } = await setup(t, { maxRetryAfterMs: 5000 });
  gate.queue("GET /v1/actions", { status: 503, body: { error: "draining", message: "m" }, headers: { "Retry-After": "3600" } });
  const err = await client.listActions().then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof LatchGateUnavailable);
  assert.equal(err.retryAfter, 3600);
  assert.equal(sleeps.length, 0);
});

test("execute is retried with the same generated Idempotency-Key", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  await client.connect();
  gate.queue("POST /v1/actions/echo/execute", { status: 503, body: { error: "ledger_unavailable", message: "m" } }, { status: 0, hangUp: true });
  const r = await client.execute("echo", { x: 1 });
  assert.deepEqual(r.output, { x: 1 });
  const execs = gate.requests.filter((q) => q.path === "/v1/actions/echo/execute");
  assert.equal(execs.length, 3);
  const keys = new Set(execs.map((q) => q.headers["idempotency-key"]));
  assert.equal(keys.size, 1, "one key per logical call");
  assert.ok([...keys][0]);
  await client.execute("echo", { x: 2 });
  const later = gate.requests.filter((q) => q.path === "/v1/actions/echo/execute").at(-1);
  assert.notEqual(later?.headers["idempotency-key"], [...keys][0], "a new logical call gets a new key");
});

test("execute without an idempotency key is never retried automatically", async (t) => {
  const { gate, client, sleeps } = await setup(t, { agentId: "a", autoIdempotencyKey: false });
  await client.connect();
  gate.queue("POST /v1/actions/echo/execute", { status: 503, body: { error: "store_unavailable", message: "m" } });
  await assert.rejects(client.execute("echo", {}), LatchGateUnavailable);
  assert.equal(gate.count("POST /v1/actions/echo/execute"), 1);
  gate.queue("POST /v1/actions/echo/execute", { status: 0, hangUp: true });
  await assert.rejects(client.execute("echo", {}), LatchGateTransportError);
  assert.equal(gate.count("POST /v1/actions/echo/execute"), 2);
  assert.equal(sleeps.length, 0);
  const last = gate.requests.at(-1);
  assert.equal(last?.headers["idempotency-key"], undefined);
});

test("a caller-supplied Idempotency-Key is sent", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  const a = await client.execute("echo", { x: 1 }, { idempotencyKey: "k-123" });
  const b = await client.execute("echo", { x: 1 }, { idempotencyKey: "k-123" });
  assert.equal(gate.requests.at(-1)?.headers["idempotency-key"], "k-123");
  assert.equal(a.receiptId, b.receiptId, "the gate's stored outcome comes back");
});

test("a 502 is never retried, even with an idempotency key", async (t) => {
  const { gate, client, sleeps } = await setup(t, { agentId: "a" });
  await client.connect();
  gate.queue("POST /v1/actions/echo/execute", {
    status: 502,
    body: { error: "action_execution_failed", message: "upstream timed out", receipt_id: "r-1", trace_id: "t-1" },
  });
  const err = await client.execute("echo", {}, { idempotencyKey: "k" }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof LatchGateActionFailed);
  assert.equal(err.receiptId, "r-1");
  assert.equal(err.reason, "upstream timed out");
  assert.equal(gate.count("POST /v1/actions/echo/execute"), 1);
  assert.equal(sleeps.length, 0);
});

test("gate answers map to the exception classes end to end", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  await client.connect();
  const cases: { name: string; status: number; code: string; want: abstract new (...a: never[]) => LatchGateError }[] = [
    { name: "policy denied", status: 403, code: "policy_denied", want: LatchGateDenied },
    { name: "budget", status: 403, code: "budget_exhausted", want: LatchGateBudgetExhausted },
    { name: "lease expired", status: 401, code: "lease_expired", want: LatchGateLeaseExpired },
    { name: "replay", status: 401, code: "replay_detected", want: LatchGateReplayDetected },
    { name: "invalid dpop", status: 401, code: "invalid_dpop", want: LatchGateAuthError },
    { name: "schema", status: 422, code: "schema_violation", want: LatchGateDenied },
    { name: "internal", status: 500, code: "internal_error", want: LatchGateError },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      gate.queue("POST /v1/actions/echo/execute", { status: c.status, body: { error: c.code, message: "m", action_id: "echo" } });
      const before = gate.count("POST /v1/actions/echo/execute");
      const err = await client.execute("echo", {}).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof c.want, `execute after ${c.status} ${c.code} threw ${String(err)}, want ${c.want.name}`);
      assert.equal(gate.count("POST /v1/actions/echo/execute"), before + 1, "not retried");
    });
  }
  await t.test("unknown action", async () => {
    const err = await client.execute("no_such_action", {}).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof LatchGateDenied);
    assert.equal(err.code, "action_not_found");
    assert.equal(err.actionId, "no_such_action");
  });
});

test("transport failure maps to LatchGateTransportError", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "lg-none-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sleeps: number[] = [];
  const client = new LatchGateClient({ socket: join(dir, "missing.sock"), env: {}, sleep: (ms) => (sleeps.push(ms), Promise.resolve()) });
  await assert.rejects(client.listActions(), LatchGateTransportError);
  assert.equal(sleeps.length, 3, "safe calls are retried");
  await client.close();
});

test("receipts: fetch, verify, reject a tampered one", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  const r = await client.execute("echo", { msg: "héllo ☃", n: 1.5 });
  const receipt = await client.getReceipt(r.receiptId);
  assert.equal(receipt.receiptId, r.receiptId);
  assert.equal(receipt.isFullySuccessful, true);
  assert.equal(receipt.signatureStatus, "valid");
  assert.equal(await client.verifyReceipt(receipt), true);
  const keys = await client.getReceiptKeys();
  assert.equal(receipt.verify(keys), true);
  assert.equal(receipt.verify({ keys }), true);

  gate.tamper(r.receiptId, (raw) => {
    raw["output"] = { msg: "changed" };
  });
  const tampered = await client.getReceipt(r.receiptId);
  assert.equal(tampered.signatureStatus, "valid", "the gate's own claim is not trusted");
  assert.equal(await client.verifyReceipt(tampered), false);
  assert.match(tampered.check(keys).reason ?? "", /hash/);

  gate.tamper(r.receiptId, (raw) => {
    raw["output"] = { msg: "héllo ☃", n: 1.5 };
    raw["signature"] = Buffer.alloc(64).toString("base64url");
  });
  const badSig = await client.getReceipt(r.receiptId);
  assert.equal(await client.verifyReceipt(badSig), false);
  assert.match(badSig.check(keys).reason ?? "", /signature/);
});

test("approval flow: 202 → ApprovalRequired → waitForApproval honours retry_after_seconds", async (t) => {
  const { gate, client, sleeps } = await setup(t, { agentId: "a" });
  gate.pendingPolls = 2;
  const err = await client.execute("held", { to: "x" }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof LatchGateApprovalRequired);
  assert.match(err.approvalId, /^[0-9a-f-]{36}$/);
  const first = await client.getApprovalStatus(err.approvalId);
  assert.equal(first.status, "pending");
  assert.equal(first.retryAfterSeconds, 3);
  const final = await client.waitForApproval(err.approvalId, { timeoutMs: 60_000 });
  assert.equal(final.status, "approved");
  assert.deepEqual(final.output, { to: "x" });
  assert.ok(final.receiptId);
  assert.deepEqual(sleeps, [3000], "waited what the gate asked");
  const receipt = await client.getReceipt(final.receiptId);
  assert.equal(await client.verifyReceipt(receipt), true);
});

test("waitForApproval returns the pending status on timeout", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  gate.pendingPolls = 1000;
  const err = await client.execute("held", {}).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof LatchGateApprovalRequired);
  const st = await client.waitForApproval(err.approvalId, { timeoutMs: 10_000 });
  assert.equal(st.status, "pending");
});

test("discovery: listActions and getActionEgress", async (t) => {
  const { client } = await setup(t);
  const list = await client.listActions();
  assert.deepEqual(
    list.map((a) => a.actionId),
    ["echo", "http_fetch"],
  );
  const none = await client.getActionEgress("echo");
  assert.deepEqual(none, { profile: "none", allowedDomains: [], hasEgress: false });
  const fetch = await client.getActionEgress("http_fetch");
  assert.deepEqual(fetch, { profile: "proxy_allowlist", allowedDomains: ["httpbin.org", "api.github.com"], hasEgress: true });
  await assert.rejects(client.getActionEgress("nope"), LatchGateDenied);
});

test("close: later calls fail", async (t) => {
  const { client } = await setup(t, { agentId: "a" });
  await client.execute("echo", {});
  await client.close();
  await assert.rejects(client.execute("echo", {}), LatchGateError);
});

test("logger receives debug lines; default logs nothing", async (t) => {
  const lines: string[] = [];
  const { client } = await setup(t, { agentId: "a", logger: { debug: (m) => lines.push(m) } });
  await client.execute("echo", {});
  assert.ok(lines.some((l) => l.includes("lease obtained")));
  assert.ok(lines.every((l) => !l.includes("lease.") || !l.includes(".stub")), "the lease token is never logged");
});

test("URL resolution order", async (t) => {
  const cases: { name: string; opts: { baseUrl?: string; socket?: string }; env: Record<string, string>; want: string }[] = [
    { name: "baseUrl wins", opts: { baseUrl: "http://localhost:3000", socket: "/s.sock" }, env: { LATCHGATE_URL: "http://env:1" }, want: "tcp:http://localhost:3000" },
    { name: "LATCHGATE_URL next", opts: { socket: "/s.sock" }, env: { LATCHGATE_URL: "http://env:1" }, want: "tcp:http://env:1" },
    { name: "socket next", opts: { socket: "/s.sock" }, env: {}, want: "unix:/s.sock" },
    {
      name: "defaults",
      opts: {},
      env: { XDG_RUNTIME_DIR: "/run/user/1000" },
      want: "defaults:/run/latchgate/gate.sock,/run/user/1000/latchgate/gate.sock,/tmp/latchgate-1000/gate.sock",
    },
    { name: "defaults without XDG", opts: {}, env: {}, want: "defaults:/run/latchgate/gate.sock,/tmp/latchgate-1000/gate.sock" },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const r = resolveTarget(c.opts, c.env, 1000);
      const got = r.kind === "tcp" ? `tcp:${r.baseUrl}` : r.isDefault ? `defaults:${r.candidates.join(",")}` : `unix:${r.socketPath}`;
      assert.equal(got, c.want);
    });
  }
});

test("a TCP base URL binds proofs to that origin", async (t) => {
  const { client } = await setup(t);
  const c = new LatchGateClient({ baseUrl: "http://LocalHost:80/", env: {} });
  t.after(() => c.close());
  assert.equal(c.target, "http://localhost/");
  assert.ok(client.target.startsWith("unix:"));
});

test("default socket safety check", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "lg-sock-"));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const good = join(root, "good");
  mkdirSync(good, { mode: 0o700 });
  writeFileSync(join(good, "gate.sock"), "");
  const open = join(root, "open");
  mkdirSync(open);
  chmodSync(open, 0o777);
  writeFileSync(join(open, "gate.sock"), "");
  const link = join(root, "link");
  symlinkSync(good, link);
  const cases: { name: string; path: string; want: RegExp | undefined }[] = [
    { name: "private directory", path: join(good, "gate.sock"), want: undefined },
    { name: "world-writable directory", path: join(open, "gate.sock"), want: /writable by others/ },
    { name: "symlinked directory", path: join(link, "gate.sock"), want: /symlink/ },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const got = unsafeSocketReason(c.path);
      if (c.want === undefined) assert.equal(got, undefined);
      else assert.match(got ?? "", c.want);
    });
  }
  await t.test("transport refuses an unsafe default socket and accepts a safe one", () => {
    const cases: { name: string; candidates: string[]; want: RegExp | undefined }[] = [
      { name: "first existing is world-writable", candidates: [join(root, "missing", "gate.sock"), join(open, "gate.sock"), join(good, "gate.sock")], want: /refusing default gate socket.*writable by others/ },
      { name: "first existing is behind a symlink", candidates: [join(link, "gate.sock"), join(good, "gate.sock")], want: /refusing default gate socket.*symlink/ },
      { name: "none exists", candidates: [join(root, "missing", "gate.sock")], want: /no gate socket found/ },
      { name: "safe", candidates: [join(root, "missing", "gate.sock"), join(good, "gate.sock")], want: undefined },
    ];
    for (const c of cases) {
      const tr = new Transport({ kind: "unix", candidates: c.candidates, isDefault: true });
      try {
        if (c.want === undefined) {
          tr.ensureTarget();
          assert.equal(tr.describe(), `unix:${join(good, "gate.sock")}`, c.name);
        } else {
          assert.throws(() => tr.ensureTarget(), (e: unknown) => e instanceof LatchGateTransportError && c.want !== undefined && c.want.test(e.message), c.name);
        }
      } finally {
        tr.close();
      }
    }
  });
});

test("a default socket whose directory belongs to another user is refused", async (t) => {
  // $XDG_RUNTIME_DIR/latchgate and /tmp/latchgate-<uid> can be created by any
  // local user first; a fake gate there must not be trusted, even in a
  // directory that is not writable by others.
  const root = mkdtempSync(join(tmpdir(), "lg-own-"));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, "latchgate");
  mkdirSync(dir, { mode: 0o755 });
  writeFileSync(join(dir, "gate.sock"), "");
  const me = process.getuid?.() ?? 0;
  let uid = me + 1;
  if (me === 0) {
    chownSync(dir, 4242, 4242);
    uid = 0;
  }
  const target = resolveTarget({}, { XDG_RUNTIME_DIR: root }, uid);
  assert.ok(target.kind === "unix" && target.isDefault);
  const candidates = target.candidates.filter((p) => p.startsWith(root));
  const tr = new Transport({ ...target, candidates: ["/nonexistent/latchgate/gate.sock", ...candidates] });
  try {
    assert.throws(
      () => tr.ensureTarget(),
      (e: unknown) => e instanceof LatchGateTransportError && /owned by uid/.test(e.message),
    );
  } finally {
    tr.close();
  }
  if (me === 0) {
    chownSync(dir, 0, 0); // root's directory is fine
    const ok = new Transport({ ...target, candidates: ["/nonexistent/latchgate/gate.sock", ...candidates] });
    ok.ensureTarget();
    assert.equal(ok.describe(), `unix:${join(dir, "gate.sock")}`);
    ok.close();
  }
});

test("a denial names the executed action even when the gate's body does not", async (t) => {
  // The gate names the action only in some refusals (policy, schema, unknown
  // action); invalid_json, idempotency_conflict, payload_too_large do not.
  const { gate, client } = await setup(t, { agentId: "a" });
  await client.connect();
  for (const [status, code] of [
    [400, "invalid_json"],
    [409, "idempotency_conflict"],
    [413, "payload_too_large"],
  ] as const) {
    gate.queue("POST /v1/actions/echo/execute", { status, body: { error: code, message: "m" } });
    const err = await client.execute("echo", {}).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof LatchGateDenied, `${status} ${code}: ${String(err)}`);
    assert.equal(err.actionId, "echo", `${status} ${code}: actionId`);
    assert.equal(err.code, code);
  }
});

test("a transient renewal failure keeps using the lease while it is valid", async (t) => {
  const { gate, client, clock } = await setup(t, { agentId: "a", maxRetries: 1 });
  await client.connect();
  const e503 = { status: 503, body: { error: "store_unavailable", message: "down" } };
  gate.queue("POST /v1/leases/renew", e503, e503);
  clock.ms += 250_000; // in the renewal window, 50 s before expiry
  const r = await client.execute("echo", { still: "valid" });
  assert.deepEqual(r.output, { still: "valid" });
  assert.equal(gate.count("POST /v1/leases/renew"), 2);
  // Once the lease has expired, a failed renewal is the call's error.
  gate.queue("POST /v1/leases/renew", e503, e503);
  clock.ms += 60_000;
  await assert.rejects(client.execute("echo", {}), LatchGateUnavailable);
  // A renewal refused by the gate is never papered over.
  const fresh = await setup(t, { agentId: "b" });
  await fresh.client.connect();
  fresh.gate.queue("POST /v1/leases/renew", { status: 401, body: { error: "lease_revoked", message: "m" } });
  fresh.clock.ms += 250_000;
  await assert.rejects(fresh.client.execute("echo", {}), LatchGateAuthError);
});

test("the lease token never shows in util.inspect or JSON.stringify of the client", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  await client.execute("echo", {});
  const authz = String(gate.requests.find((r) => r.path === "/v1/actions/echo/execute")?.headers["authorization"]);
  const jwt = authz.replace(/^DPoP /, "");
  assert.match(jwt, /^lease\./);
  const shown = [inspect(client, { depth: Infinity, showHidden: true }), inspect(client), JSON.stringify(client)];
  for (const text of shown) assert.ok(!text.includes(jwt), "the lease token leaked");
});

test("connect() again reuses what the previous connect() asked for (agentId, budgets)", async (t) => {
  // The guide's handlers reconnect with a bare connect() after
  // LatchGateBudgetExhausted / LatchGateAuthError, for a client that may have
  // been connected with connect({ agentId }): same agent, same limits.
  const { gate, client } = await setup(t);
  const first = await client.connect({ agentId: "my-agent", maxCalls: 1, ttl: 120 });
  await client.execute("echo", {});
  await assert.rejects(client.execute("echo", {}), LatchGateBudgetExhausted);
  const second = await client.connect();
  assert.notEqual(second.sessionId, first.sessionId);
  assert.equal(second.principal, "agent:my-agent");
  const body = JSON.parse(gate.requests.filter((r) => r.path === "/v1/leases").at(-1)?.body.toString() ?? "{}") as Record<string, unknown>;
  assert.equal(body["agent_id"], "my-agent");
  assert.deepEqual(body["budgets"], { max_calls: 1 });
  assert.equal(body["ttl_seconds"], 120);
});

test("execute() refuses NaN and ±Infinity instead of sending them as null", async (t) => {
  const { gate, client } = await setup(t, { agentId: "a" });
  for (const bad of [{ amount: NaN }, { amount: Infinity }, [1, -Infinity]]) {
    await assert.rejects(client.execute("echo", bad), TypeError, `execute(${String(JSON.stringify(bad))})`);
  }
  assert.equal(gate.count("POST /v1/actions/echo/execute"), 0, "nothing was sent");
});
