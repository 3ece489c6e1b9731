// RFC 8785 JSON Canonicalization Scheme (JCS) and a strict I-JSON parser.
// Written by hand: numbers use the ECMAScript serialisation (JSON.stringify of
// a number), object keys are sorted by UTF-16 code units, strings with lone
// surrogates are refused, and the parser refuses duplicate member names and
// numbers that overflow an IEEE double.

import { createHash } from "node:crypto";

/** A JSON value as parsed by {@link parseStrictJson}. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Raised for text that is not I-JSON or a value that has no canonical form. */
export class JcsError extends Error {
  constructor(message: string) {
    super(message);
    Object.setPrototypeOf(this, new.target.prototype);
    this.name = new.target.name;
  }
}

const MAX_DEPTH = 1000;

/** Reports whether s holds a lone (unpaired) UTF-16 surrogate. */
export function hasLoneSurrogate(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const n = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (n >= 0xdc00 && n <= 0xdfff) {
        i++;
        continue;
      }
      return true;
    }
    if (c >= 0xdc00 && c <= 0xdfff) return true;
  }
  return false;
}

function serializeString(s: string): string {
  if (hasLoneSurrogate(s)) throw new JcsError("string contains a lone surrogate");
  // For well-formed strings JSON.stringify escapes exactly what RFC 8785
  // requires: '"', '\\', and U+0000..U+001F (short forms where they exist,
  // else lowercase \u00xx); everything else is written as is.
  return JSON.stringify(s);
}

function serializeNumber(n: number): string {
  if (!Number.isFinite(n)) throw new JcsError("number is not finite");
  return JSON.stringify(n); // ECMAScript Number::toString; -0 becomes "0"
}

function compareUtf16(a: string, b: string): number {
  // JavaScript string comparison is by UTF-16 code units, as RFC 8785 requires.
  return a < b ? -1 : a > b ? 1 : 0;
}

function write(v: unknown, out: string[], depth: number): void {
  if (depth > MAX_DEPTH) throw new JcsError("value nested too deeply");
  if (v === null) {
    out.push("null");
    return;
  }
  switch (typeof v) {
    case "boolean":
      out.push(v ? "true" : "false");
      return;
    case "number":
      out.push(serializeNumber(v));
      return;
    case "string":
      out.push(serializeString(v));
      return;
    case "object":
      break;
    default:
      throw new JcsError(`cannot canonicalise a value of type ${typeof v}`);
  }
  if (Array.isArray(v)) {
    out.push("[");
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out.push(",");
      write(v[i], out, depth + 1);
    }
    out.push("]");
    return;
  }
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) {
    throw new JcsError("cannot canonicalise a non-plain object");
  }
  const obj = v as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort(compareUtf16);
  out.push("{");
  keys.forEach((k, i) => {
    if (i > 0) out.push(",");
    out.push(serializeString(k), ":");
    write(obj[k], out, depth + 1);
  });
  out.push("}");
}

/**
 * Returns the RFC 8785 canonical JSON text of a value. Members whose value is
 * `undefined` are left out (as JSON.stringify does); other non-JSON values
 * (functions, bigint, NaN, Infinity, class instances) are refused.
 */
export function canonicalize(value: unknown): string {
  const out: string[] = [];
  write(value, out, 0);
  return out.join("");
}

/** Parses JSON text strictly (see {@link parseStrictJson}) and canonicalises it. */
export function canonicalizeText(text: string): string {
  return canonicalize(parseStrictJson(text));
}

/** "sha256:" + lowercase hex SHA-256 of the canonical form of value. */
export function sha256Canonical(value: unknown): string {
  return "sha256:" + createHash("sha256").update(canonicalize(value), "utf8").digest("hex");
}

/**
 * Parses exactly one JSON value (RFC 8259) with the I-JSON restrictions
 * (RFC 7493): no duplicate member names, no lone surrogates (escaped or raw),
 * no number that overflows a double. Numbers become IEEE doubles (so
 * 9007199254740993 reads as 9007199254740992). Throws JcsError.
 */
export function parseStrictJson(text: string): JsonValue {
  const p = new Parser(text);
  p.ws();
  const v = p.value(0);
  p.ws();
  if (p.pos !== text.length) p.fail("trailing data after the JSON value");
  return v;
}

const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

class Parser {
  pos = 0;
  constructor(private readonly s: string) {}

  fail(msg: string): never {
    throw new JcsError(`invalid JSON at offset ${this.pos}: ${msg}`);
  }

  ws(): void {
    const s = this.s;
    while (this.pos < s.length) {
      const c = s.charCodeAt(this.pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.pos++;
      else break;
    }
  }

  value(depth: number): JsonValue {
    if (depth > MAX_DEPTH) this.fail("nested too deeply");
    const c = this.s[this.pos];
    switch (c) {
      case "{":
        return this.object(depth);
      case "[":
        return this.array(depth);
      case '"':
        return this.string();
      case "t":
        return this.literal("true", true);
      case "f":
        return this.literal("false", false);
      case "n":
        return this.literal("null", null);
      default:
        if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return this.number();
        return this.fail(c === undefined ? "unexpected end of input" : `unexpected character ${JSON.stringify(c)}`);
    }
  }

  literal<T extends JsonValue>(word: string, v: T): T {
    if (!this.s.startsWith(word, this.pos)) this.fail(`expected ${word}`);
    this.pos += word.length;
    return v;
  }

  number(): number {
    NUMBER_RE.lastIndex = this.pos;
    const m = NUMBER_RE.exec(this.s);
    if (m === null) return this.fail("malformed number");
    const lit = m[0];
    this.pos += lit.length;
    const n = Number(lit);
    if (!Number.isFinite(n)) this.fail("number overflows a double");
    return n === 0 ? 0 : n; // -0 is the same JSON value as 0
  }

  string(): string {
    const s = this.s;
    this.pos++; // opening quote
    let out = "";
    let start = this.pos;
    for (;;) {
      if (this.pos >= s.length) this.fail("unterminated string");
      const c = s.charCodeAt(this.pos);
      if (c === 0x22) {
        out += s.slice(start, this.pos);
        this.pos++;
        break;
      }
      if (c < 0x20) this.fail("control character in string");
      if (c === 0x5c) {
        out += s.slice(start, this.pos);
        const e = s[this.pos + 1];
        this.pos += 2;
        switch (e) {
          case '"':
            out += '"';
            break;
          case "\\":
            out += "\\";
            break;
          case "/":
            out += "/";
            break;
          case "b":
            out += "\b";
            break;
          case "f":
            out += "\f";
            break;
          case "n":
            out += "\n";
            break;
          case "r":
            out += "\r";
            break;
          case "t":
            out += "\t";
            break;
          case "u": {
            const hex = s.slice(this.pos, this.pos + 4);
            if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail("bad \\u escape");
            out += String.fromCharCode(parseInt(hex, 16));
            this.pos += 4;
            break;
          }
          default:
            this.pos -= 2;
            this.fail("bad escape");
        }
        start = this.pos;
        continue;
      }
      this.pos++;
    }
    if (hasLoneSurrogate(out)) this.fail("lone surrogate in string");
    return out;
  }

  array(depth: number): JsonValue[] {
    this.pos++;
    const out: JsonValue[] = [];
    this.ws();
    if (this.s[this.pos] === "]") {
      this.pos++;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.pos];
      if (c === ",") {
        this.pos++;
        continue;
      }
      if (c === "]") {
        this.pos++;
        return out;
      }
      this.fail("expected , or ]");
    }
  }

  object(depth: number): { [key: string]: JsonValue } {
    this.pos++;
    const out: { [key: string]: JsonValue } = {};
    const seen = new Set<string>();
    this.ws();
    if (this.s[this.pos] === "}") {
      this.pos++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.pos] !== '"') this.fail("expected a member name");
      const key = this.string();
      if (seen.has(key)) this.fail(`duplicate member name ${JSON.stringify(key)}`);
      seen.add(key);
      this.ws();
      if (this.s[this.pos] !== ":") this.fail("expected :");
      this.pos++;
      this.ws();
      const v = this.value(depth + 1);
      // defineProperty, not assignment: a "__proto__" member stays data.
      Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
      this.ws();
      const c = this.s[this.pos];
      if (c === ",") {
        this.pos++;
        continue;
      }
      if (c === "}") {
        this.pos++;
        return out;
      }
      this.fail("expected , or }");
    }
  }
}
