// HTTP transport to the gate: a Unix socket (http.request with socketPath) or
// a TCP base URL, over one keep-alive agent; URL resolution; the safety check
// on default socket paths. Knows nothing about leases or proofs.

import * as http from "node:http";
import * as https from "node:https";
import { lstatSync } from "node:fs";
import { dirname } from "node:path";
import { LatchGateTransportError } from "./errors.js";

/** Where the gate is. */
export type GateTarget =
  | { kind: "unix"; socketPath: string; isDefault: false }
  | {
      kind: "unix";
      candidates: readonly string[];
      isDefault: true;
      /** Who must own the directory of every candidate but the first (root may too). */
      uid?: number | undefined;
    }
  | { kind: "tcp"; baseUrl: string };

/** A raw answer from the gate. */
export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** The default socket paths, in the order they are tried (PROTOCOL.md §1). */
export function defaultSocketCandidates(env: Readonly<Record<string, string | undefined>>, uid: number | undefined): string[] {
  const out = ["/run/latchgate/gate.sock"];
  const xdg = env["XDG_RUNTIME_DIR"];
  if (xdg !== undefined && xdg !== "") out.push(`${xdg.replace(/\/+$/, "")}/latchgate/gate.sock`);
  if (uid !== undefined) out.push(`/tmp/latchgate-${uid}/gate.sock`);
  return out;
}

/**
 * Resolves where the gate is: baseUrl → LATCHGATE_URL → socket → the default
 * socket paths (/run/latchgate/gate.sock, $XDG_RUNTIME_DIR/latchgate/gate.sock,
 * /tmp/latchgate-<uid>/gate.sock).
 */
export function resolveTarget(
  opts: { baseUrl?: string | undefined; socket?: string | undefined },
  env: Readonly<Record<string, string | undefined>>,
  uid: number | undefined,
): GateTarget {
  if (opts.baseUrl !== undefined && opts.baseUrl !== "") return { kind: "tcp", baseUrl: opts.baseUrl };
  const fromEnv = env["LATCHGATE_URL"];
  if (fromEnv !== undefined && fromEnv !== "") return { kind: "tcp", baseUrl: fromEnv };
  if (opts.socket !== undefined && opts.socket !== "") return { kind: "unix", socketPath: opts.socket, isDefault: false };
  return { kind: "unix", candidates: defaultSocketCandidates(env, uid), isDefault: true, uid };
}

/**
 * Refuses a default socket whose directory is a symlink or writable by others
 * (another user could plant a fake gate there), or — with `owner` — owned by
 * anyone but `owner` or root (anyone may create /tmp/latchgate-<uid> first),
 * or that is itself a symlink. Returns undefined when the path is acceptable,
 * else the reason.
 */
export function unsafeSocketReason(socketPath: string, owner?: number): string | undefined {
  const dir = dirname(socketPath);
  try {
    const st = lstatSync(dir);
    if (st.isSymbolicLink()) return `socket directory ${dir} is a symlink`;
    if (!st.isDirectory()) return `${dir} is not a directory`;
    if ((st.mode & 0o002) !== 0) return `socket directory ${dir} is writable by others`;
    if (owner !== undefined && st.uid !== owner && st.uid !== 0) return `socket directory ${dir} is owned by uid ${st.uid}`;
  } catch {
    return undefined; // missing: connecting will fail with ENOENT
  }
  try {
    if (lstatSync(socketPath).isSymbolicLink()) return `socket ${socketPath} is a symlink`;
  } catch {
    return undefined;
  }
  return undefined;
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Answers larger than this are refused (receipts carry at most 256 KiB of output by default). */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** Error codes meaning the connection was never made, so the request was not sent. */
const NOT_SENT_CODES = new Set(["ENOENT", "ECONNREFUSED", "EACCES", "ENOTFOUND", "EAI_AGAIN", "ENOTSOCK", "EADDRNOTAVAIL", "ENETUNREACH", "EHOSTUNREACH"]);

/** One connection pool to one gate. */
export class Transport {
  private readonly target: GateTarget;
  private readonly agent: http.Agent;
  private readonly tcpUrl: URL | undefined;
  private socketPath: string | undefined;
  private closed = false;

  constructor(target: GateTarget) {
    this.target = target;
    if (target.kind === "tcp") {
      let u: URL;
      try {
        u = new URL(target.baseUrl);
      } catch {
        throw new TypeError(`invalid gate base URL: ${target.baseUrl}`);
      }
      if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`unsupported gate URL scheme: ${u.protocol}`);
      this.tcpUrl = u;
      this.agent = u.protocol === "https:" ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    } else {
      this.agent = new http.Agent({ keepAlive: true });
      if (!target.isDefault) this.socketPath = target.socketPath;
    }
  }

  /** "unix:<path>" or the base URL; for messages. */
  describe(): string {
    if (this.tcpUrl !== undefined) return this.tcpUrl.href;
    if (this.socketPath !== undefined) return `unix:${this.socketPath}`;
    return this.target.kind === "unix" && this.target.isDefault ? `unix:${this.target.candidates.join("|")}` : "";
  }

  /** The htu a proof for this raw path must carry (PROTOCOL.md §1.1). */
  htu(path: string): string {
    if (this.tcpUrl === undefined) return "http://localhost" + path;
    const prefix = this.tcpUrl.pathname.replace(/\/+$/, "");
    // URL.origin is already lowercase and without the default port.
    return `${this.tcpUrl.origin}${prefix}${path}`;
  }

  /**
   * Picks the socket (the first default that exists, else the first default)
   * and checks a default one is safe. Throws LatchGateTransportError.
   */
  ensureTarget(): void {
    if (this.tcpUrl !== undefined || this.socketPath !== undefined) return;
    if (this.target.kind !== "unix" || !this.target.isDefault) return;
    const i = this.target.candidates.findIndex(exists);
    const chosen = this.target.candidates[i];
    if (chosen === undefined) {
      throw new LatchGateTransportError(`no gate socket found (tried ${this.target.candidates.join(", ")})`, true);
    }
    // The first default (/run/latchgate) belongs to the gate's own user.
    const why = unsafeSocketReason(chosen, i > 0 ? this.target.uid : undefined);
    if (why !== undefined) throw new LatchGateTransportError(`refusing default gate socket: ${why}`, true);
    this.socketPath = chosen;
  }

  /** Sends one request. Rejects with LatchGateTransportError on socket failures and timeouts. */
  request(method: string, path: string, headers: Record<string, string>, body: Buffer, timeoutMs: number): Promise<RawResponse> {
    if (this.closed) return Promise.reject(new LatchGateTransportError("client is closed", true));
    try {
      this.ensureTarget();
    } catch (e) {
      return Promise.reject(e);
    }
    const hdrs: Record<string, string> = { ...headers };
    if (body.length > 0) hdrs["Content-Length"] = String(body.length);
    return new Promise<RawResponse>((resolve, reject) => {
      let connected = false;
      let settled = false;
      const fail = (err: Error & { code?: string }, timedOut: boolean): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const notSent = !connected && !timedOut && err.code !== undefined && NOT_SENT_CODES.has(err.code);
        const what = timedOut ? `request timed out after ${timeoutMs} ms` : `${err.code ?? "error"}: ${err.message}`;
        reject(new LatchGateTransportError(`gate at ${this.describe()} unreachable: ${what}`, notSent, { cause: err }));
      };
      let req: http.ClientRequest;
      const onResponse = (res: http.IncomingMessage): void => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            const e: Error & { code?: string } = new Error(`answer larger than ${MAX_RESPONSE_BYTES} bytes`);
            e.code = "ERESPONSETOOLARGE";
            fail(e, false);
            req.destroy();
            return;
          }
          chunks.push(c);
        });
        res.on("error", (e: Error) => fail(e, false));
        res.on("end", () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        });
      };
      if (this.tcpUrl !== undefined) {
        const prefix = this.tcpUrl.pathname.replace(/\/+$/, "");
        const mod = this.tcpUrl.protocol === "https:" ? https : http;
        req = mod.request(
          {
            protocol: this.tcpUrl.protocol,
            hostname: this.tcpUrl.hostname.replace(/^\[|\]$/g, ""),
            port: this.tcpUrl.port === "" ? undefined : Number(this.tcpUrl.port),
            path: prefix + path,
            method,
            headers: hdrs,
            agent: this.agent,
          },
          onResponse,
        );
      } else {
        req = http.request({ socketPath: this.socketPath, path, method, headers: hdrs, agent: this.agent }, onResponse);
      }
      const timer = setTimeout(() => {
        const e: Error & { code?: string } = new Error("timeout");
        e.code = "ETIMEDOUT";
        fail(e, true);
        req.destroy();
      }, timeoutMs);
      req.on("socket", (s) => {
        if (req.reusedSocket) connected = true;
        s.once("connect", () => {
          connected = true;
        });
      });
      req.on("error", (e: Error & { code?: string }) => fail(e, false));
      req.end(body);
    });
  }

  /** Closes pooled connections; later requests fail. */
  close(): void {
    this.closed = true;
    this.agent.destroy();
  }
}
