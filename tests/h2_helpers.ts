// Helpers for the tests of raftmeta's HTTP/2 server (tests/net_h2_test.ts,
// tests/net_h2_attack_test.ts): frames built by hand, HPACK pieces, and a raw client connection
// that reads frames one at a time.

import * as assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import { encodeHeaders, HpackDecoder } from "../src/net/hpack.ts";
import { PREFACE } from "../src/net/h2.ts";
import type { MethodDefinition } from "../src/net/grpc_h2.ts";

export const DATA = 0x0;
export const HEADERS = 0x1;
export const RST_STREAM = 0x3;
export const SETTINGS = 0x4;
export const PING = 0x6;
export const GOAWAY = 0x7;
export const WINDOW_UPDATE = 0x8;
export const CONTINUATION = 0x9;
export const END_STREAM = 0x1;
export const END_HEADERS = 0x4;
export const PADDED = 0x8;

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Uint8Array;
}

export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Uint8Array = new Uint8Array(),
) {
  const out = new Uint8Array(9 + payload.length);
  out[0] = payload.length >>> 16;
  out[1] = (payload.length >>> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, stream);
  out.set(payload, 9);
  return out;
}

export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v);
  return b;
}

export function settings(pairs: [number, number][]): Uint8Array {
  const p = new Uint8Array(6 * pairs.length);
  const v = new DataView(p.buffer);
  pairs.forEach(([k, x], i) => {
    v.setUint16(6 * i, k);
    v.setUint32(6 * i + 2, x);
  });
  return frame(SETTINGS, 0, 0, p);
}

export function grpcMessage(body: Uint8Array, flag = 0, claimed = body.length): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = flag;
  new DataView(out.buffer).setUint32(1, claimed);
  out.set(body, 5);
  return out;
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function requestFields(path: string, extra: [string, string][] = []): [string, string][] {
  return [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "x"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ...extra,
  ];
}

export function requestHeaders(path: string, extra: [string, string][] = []): Uint8Array {
  return encodeHeaders(requestFields(path, extra));
}

/** HPACK's integer with an N-bit prefix (RFC 7541, 5.1), the first byte's high bits `first`. */
export function hpackInt(first: number, prefixBits: number, v: number): number[] {
  const mask = (1 << prefixBits) - 1;
  if (v < mask) return [first | v];
  const out = [first | mask];
  v -= mask;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** A literal string (no Huffman). */
export function hpackString(s: string): number[] {
  return [...hpackInt(0, 7, s.length), ...new TextEncoder().encode(s)];
}

export const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s/g, "").match(/../g)!.map((h) => parseInt(h, 16)));

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const code32 = (f: Frame, at = 0) => new DataView(f.payload.buffer).getUint32(at);

// ---- a raw client ---------------------------------------------------------------------------

export class Raw {
  readonly conn: Deno.TcpConn;
  #buf = new Uint8Array(0);
  #reading: Promise<Uint8Array | null> | undefined;
  readonly decoder = new HpackDecoder();
  eof = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  static async open(port: number, preface = true, clientSettings: [number, number][] = []) {
    const r = new Raw(await Deno.connect({ hostname: "127.0.0.1", port }));
    if (preface) {
      await r.send(PREFACE, settings(clientSettings));
      await r.until((f) => f.type === SETTINGS && (f.flags & 1) === 1);
    }
    return r;
  }

  async send(...parts: Uint8Array[]): Promise<void> {
    for (const p of parts) {
      let off = 0;
      while (off < p.length) off += await this.conn.write(p.subarray(off));
    }
  }

  /** The next frame, or null at end of stream (or after `ms`). */
  async next(ms = 5000): Promise<Frame | null> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.#buf.length >= 9) {
        const len = (this.#buf[0] << 16) | (this.#buf[1] << 8) | this.#buf[2];
        if (this.#buf.length >= 9 + len) {
          const f = {
            type: this.#buf[3],
            flags: this.#buf[4],
            stream: new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(5) & 0x7fffffff,
            payload: this.#buf.slice(9, 9 + len),
          };
          this.#buf = this.#buf.subarray(9 + len);
          return f;
        }
      }
      if (this.eof) return null;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      this.#reading ??= (async () => {
        const chunk = new Uint8Array(256 * 1024);
        const n = await this.conn.read(chunk).catch(() => null);
        return n === null ? null : chunk.subarray(0, n);
      })();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const got = await Promise.race([
        this.#reading,
        new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), left)),
      ]);
      clearTimeout(timer);
      if (got === "timeout") return null;
      this.#reading = undefined;
      if (got === null) {
        this.eof = true;
        continue;
      }
      const joined = new Uint8Array(this.#buf.length + got.length);
      joined.set(this.#buf);
      joined.set(got, this.#buf.length);
      this.#buf = joined;
    }
  }

  /** Frames until one matches (returned); fails at end of stream or after `ms` of silence. */
  async until(match: (f: Frame) => boolean, ms = 5000, seen: Frame[] = []): Promise<Frame> {
    for (;;) {
      const f = await this.next(ms);
      assert.ok(f !== null, "the connection ended or stalled before the expected frame");
      seen.push(f);
      if (match(f)) return f;
    }
  }

  /** Expects GOAWAY with one of `codes` (within `ms`), then the end of the connection. */
  async goaway(codes: number | number[], ms = 3000): Promise<number> {
    const want = Array.isArray(codes) ? codes : [codes];
    const g = await this.until((f) => f.type === GOAWAY, ms);
    const code = code32(g, 4);
    assert.ok(
      want.includes(code),
      `GOAWAY ${code} (${new TextDecoder().decode(g.payload.subarray(8))}), expected ${want}`,
    );
    while ((await this.next(ms)) !== null) { /* until the end */ }
    assert.ok(this.eof, "the connection closes after GOAWAY");
    return code;
  }

  /** Expects RST_STREAM on `stream` with `code`; the connection stays (a PING is answered). */
  async reset(stream: number, code: number): Promise<void> {
    const f = await this.until((f) =>
      (f.type === RST_STREAM && f.stream === stream) || f.type === GOAWAY
    );
    assert.equal(f.type, RST_STREAM, "a stream error, not a connection error");
    assert.equal(code32(f), code);
    await this.pingPong();
  }

  async pingPong(): Promise<void> {
    await this.send(frame(PING, 0, 0, hex("0102030405060708")));
    await this.until((f) => f.type === PING && (f.flags & 1) === 1);
  }

  /** Reads until the connection ends (or `ms`); true if it ended. */
  async ends(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.eof && Date.now() < deadline) await this.next(deadline - Date.now());
    return this.eof;
  }

  fields(f: Frame): Map<string, string> {
    return new Map(this.decoder.decode(f.payload).fields);
  }

  status(f: Frame): { code: number; message: string | undefined } {
    const fields = this.fields(f);
    return { code: Number(fields.get("grpc-status")), message: fields.get("grpc-message") };
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

export const bytesMethod = (
  path: string,
  requestStream: boolean,
  responseStream: boolean,
): MethodDefinition => ({
  path,
  requestStream,
  responseStream,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (v: unknown) => v as Buffer,
});
