/**
 * Byte helpers for the metadata store: values are bytes, and these turn them into text and back,
 * quote them in error messages, and carry them through JSON as base64; keys are bytes held as
 * strings ({@linkcode keyFromBytes}, {@linkcode keyBytes}).
 *
 * @module
 */

const encoder = new TextEncoder();
const lossyDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * The UTF-8 bytes of `text`.
 *
 * @example
 * ```ts
 * import { utf8 } from "./bytes.ts";
 * if (utf8("hé").length !== 3) throw new Error("é is two bytes");
 * ```
 */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** `bytes` read as UTF-8; malformed sequences become U+FFFD (use for display). */
export function text(bytes: Uint8Array): string {
  return lossyDecoder.decode(bytes);
}

/** Longest input decoded by {@linkcode strictText}'s ASCII fast path. */
const ASCII_FAST_BYTES_MAX = 64;

/** `bytes` read as UTF-8, or `undefined` when they are not valid UTF-8. */
export function strictText(bytes: Uint8Array): string | undefined {
  // Keys, node ids and message fields are mostly short ASCII: building the string in JS is about
  // three times faster than a TextDecoder call for them (measured in Deno 2.9).
  if (bytes.length <= ASCII_FAST_BYTES_MAX) {
    let ascii = true;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
  // Checked in JS first: a fatal decoder throws for bytes outside UTF-8, and building that
  // exception cost more than the decoding (etcdctl check perf's random binary keys spent 7% of a
  // leader's samples in it).
  return utf8ValidFrom(bytes, 0) ? lossyDecoder.decode(bytes) : undefined;
}

/**
 * Whether `b[from..]` is valid UTF-8 as the Encoding Standard decodes it: no stray continuation
 * bytes, no overlong forms (C0, C1, E0 80..9F, F0 80..8F), no surrogates (ED A0..BF), nothing past
 * U+10FFFF (F4 90.., F5..FF), no sequence cut short.
 */
function utf8ValidFrom(b: Uint8Array, from: number): boolean {
  const n = b.length;
  let i = from;
  while (i < n) {
    const c = b[i];
    if (c < 0x80) {
      i++;
    } else if (c >= 0xc2 && c <= 0xdf) {
      if (i + 1 >= n || (b[i + 1] & 0xc0) !== 0x80) return false;
      i += 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      if (i + 2 >= n) return false;
      const c1 = b[i + 1];
      if ((c1 & 0xc0) !== 0x80 || (b[i + 2] & 0xc0) !== 0x80) return false;
      if ((c === 0xe0 && c1 < 0xa0) || (c === 0xed && c1 >= 0xa0)) return false;
      i += 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
      if (i + 3 >= n) return false;
      const c1 = b[i + 1];
      if (
        (c1 & 0xc0) !== 0x80 || (b[i + 2] & 0xc0) !== 0x80 || (b[i + 3] & 0xc0) !== 0x80
      ) return false;
      if ((c === 0xf0 && c1 < 0x90) || (c === 0xf4 && c1 >= 0x90)) return false;
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

/** Whether `bytes` are valid UTF-8 (checked in JS: no decoder call, no exception). */
export function isUtf8(bytes: Uint8Array): boolean {
  return utf8ValidFrom(bytes, 0);
}

/** Number of bytes `text` takes in UTF-8 (without encoding it). */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00) {
      // A surrogate pair is one code point of four bytes.
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

// ---- Keys: bytes, held as strings ----------------------------------------------------------------
//
// etcd's keys are any bytes; raftmeta's store holds a key as a JavaScript string. Bytes that are
// valid UTF-8 read as their text; a byte that is not part of a valid UTF-8 sequence reads as the
// lone surrogate U+DC00 + byte (U+DC80..U+DCFF, as Python's "surrogateescape"), which no valid
// UTF-8 can produce. So every byte string has exactly one key string and back. A string that is
// not one of these (a lone surrogate outside U+DC80..U+DCFF, or escapes that would spell valid
// UTF-8, such as U+DCC3 U+DCA9 for "é") is not a key: `isKeyString` says so.

/** The key string of `bytes`: their UTF-8 text, each byte outside valid UTF-8 escaped. */
export function keyFromBytes(bytes: Uint8Array): string {
  // ASCII (most keys) is its own text; anything else is decoded here, without a fatal decoder's
  // exception for bytes outside UTF-8 (an exception costs more than decoding a key by hand).
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] > 0x7f) {
      return bytes.length > 256 && isUtf8(bytes) ? text(bytes) : escapedText(bytes);
    }
  }
  return bytes.length <= ASCII_FAST_BYTES_MAX
    ? String.fromCharCode.apply(null, bytes as unknown as number[])
    : lossyDecoder.decode(bytes);
}

/** Decodes UTF-8 by hand: a valid sequence is its code point; any other byte is escaped alone. */
function escapedText(bytes: Uint8Array): string {
  const units: number[] = [];
  const n = bytes.length;
  for (let i = 0; i < n;) {
    const b = bytes[i];
    const cp = b < 0x80 ? b : sequenceAt(bytes, i);
    if (cp < 0) {
      units.push(0xdc00 + b);
      i++;
      continue;
    }
    if (cp >= 0x10000) {
      units.push(0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
    } else units.push(cp);
    i += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  let out = "";
  for (let i = 0; i < units.length; i += 0x2000) {
    out += String.fromCharCode(...units.slice(i, i + 0x2000));
  }
  return out;
}

/** The code point of the valid UTF-8 sequence that starts at `i` (lead byte >= 0x80), or -1. */
function sequenceAt(bytes: Uint8Array, i: number): number {
  const b = bytes[i];
  const cont = (k: number) => {
    const c = bytes[i + k];
    return c !== undefined && (c & 0xc0) === 0x80 ? c & 0x3f : -1;
  };
  if (b >= 0xc2 && b <= 0xdf) {
    const c1 = cont(1);
    return c1 < 0 ? -1 : ((b & 0x1f) << 6) | c1;
  }
  if (b >= 0xe0 && b <= 0xef) {
    const c1 = cont(1);
    const c2 = cont(2);
    if (c1 < 0 || c2 < 0) return -1;
    const cp = ((b & 0x0f) << 12) | (c1 << 6) | c2;
    // Overlong forms and surrogates are not valid UTF-8.
    return cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff) ? -1 : cp;
  }
  if (b >= 0xf0 && b <= 0xf4) {
    const c1 = cont(1);
    const c2 = cont(2);
    const c3 = cont(3);
    if (c1 < 0 || c2 < 0 || c3 < 0) return -1;
    const cp = ((b & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3;
    return cp < 0x10000 || cp > 0x10ffff ? -1 : cp;
  }
  return -1;
}

/** The bytes of the key string `key` (see {@linkcode keyFromBytes}). */
export function keyBytes(key: string): Uint8Array {
  if (key.isWellFormed()) return encoder.encode(key);
  const out = new Uint8Array(3 * key.length);
  let n = 0;
  for (let i = 0; i < key.length;) {
    const written = writeKeyChar(key, i, out, n);
    n += written;
    i += written === 4 ? 2 : 1; // only a surrogate pair takes four bytes
  }
  return out.subarray(0, n);
}

/**
 * Writes the bytes of the character of the key string `key` that starts at unit `i` into `out`
 * from `at`: its UTF-8, or the byte an escape stands for. Returns how many (1 to 4; 4 only for a
 * surrogate pair, which is two units).
 */
export function writeKeyChar(key: string, i: number, out: Uint8Array, at: number): number {
  const c = key.charCodeAt(i);
  if (c < 0x80) {
    out[at] = c;
    return 1;
  }
  if (c < 0x800) {
    out[at] = 0xc0 | (c >> 6);
    out[at + 1] = 0x80 | (c & 0x3f);
    return 2;
  }
  if (c >= 0xdc80 && c <= 0xdcff) {
    out[at] = c - 0xdc00;
    return 1;
  }
  if (c >= 0xd800 && c <= 0xdbff && isLowSurrogate(key.charCodeAt(i + 1))) {
    const cp = 0x10000 + ((c - 0xd800) << 10) + (key.charCodeAt(i + 1) - 0xdc00);
    out[at] = 0xf0 | (cp >> 18);
    out[at + 1] = 0x80 | ((cp >> 12) & 0x3f);
    out[at + 2] = 0x80 | ((cp >> 6) & 0x3f);
    out[at + 3] = 0x80 | (cp & 0x3f);
    return 4;
  }
  // A lone surrogate outside the escapes is not a key string; it reads as U+FFFD.
  const u = c >= 0xd800 && c <= 0xdfff ? 0xfffd : c;
  out[at] = 0xe0 | (u >> 12);
  out[at + 1] = 0x80 | ((u >> 6) & 0x3f);
  out[at + 2] = 0x80 | (u & 0x3f);
  return 3;
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

/** Number of bytes of the key string `key`. */
export function keyByteLength(key: string): number {
  if (key.isWellFormed()) return utf8Length(key);
  let n = 0;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 0x80 || (c >= 0xdc80 && c <= 0xdcff)) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && isLowSurrogate(key.charCodeAt(i + 1))) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/**
 * Whether `key` is a key string: well-formed Unicode, or the {@linkcode keyFromBytes} of some
 * bytes (its lone surrogates are escapes U+DC80..U+DCFF that do not spell valid UTF-8).
 */
export function isKeyString(key: string): boolean {
  return key.isWellFormed() || keyFromBytes(keyBytes(key)) === key;
}

/** Whether two byte strings hold the same bytes. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Orders byte strings lexicographically (as etcd compares values): negative, zero or positive. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * `text` quoted for an error message, JSON style (`"a\nb"`), cut after `charsMax` characters so a
 * huge value cannot flood a log line.
 */
export function quote(text: string, charsMax = 64): string {
  return text.length > charsMax
    ? `${JSON.stringify(text.slice(0, charsMax))}…(${text.length} chars)`
    : JSON.stringify(text);
}

/** The first bytes of `bytes` quoted as text for an error message. */
export function quoteBytes(bytes: Uint8Array, bytesMax = 64): string {
  const shown = text(bytes.subarray(0, bytesMax));
  return bytes.length > bytesMax
    ? `${JSON.stringify(shown)}…(${bytes.length} bytes)`
    : JSON.stringify(shown);
}

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_INDEX = new Int16Array(128).fill(-1);
for (let i = 0; i < BASE64.length; i++) BASE64_INDEX[BASE64.charCodeAt(i)] = i;

/** `bytes` in standard base64 with padding (RFC 4648 §4). */
export function toBase64(bytes: Uint8Array): string {
  // The built-in (V8 ≥ 13.9, Deno 2.5+) is about 14× faster than the loop below (bench/RESULTS.md).
  if (NATIVE_TO_BASE64) return (bytes as unknown as { toBase64(): string }).toBase64();
  const parts: string[] = [];
  let chunk = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    chunk += BASE64[n >> 18] + BASE64[(n >> 12) & 63] + BASE64[(n >> 6) & 63] + BASE64[n & 63];
    if (chunk.length >= 4096) {
      parts.push(chunk);
      chunk = "";
    }
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    chunk += BASE64[n >> 18] + BASE64[(n >> 12) & 63] + "==";
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    chunk += BASE64[n >> 18] + BASE64[(n >> 12) & 63] + BASE64[(n >> 6) & 63] + "=";
  }
  parts.push(chunk);
  return parts.join("");
}

const NATIVE_TO_BASE64 = typeof (Uint8Array.prototype as { toBase64?: unknown }).toBase64 ===
  "function";

/** Decodes standard padded base64; throws on any other input. */
export function fromBase64(encoded: string): Uint8Array {
  if (encoded.length % 4 !== 0) {
    throw new SyntaxError(`Base64 length must be a multiple of 4: ${quote(encoded)}`);
  }
  const pad = encoded.endsWith("==") ? 2 : encoded.endsWith("=") ? 1 : 0;
  const out = new Uint8Array((encoded.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < encoded.length; i += 4) {
    let n = 0;
    for (let j = 0; j < 4; j++) {
      const c = encoded.charCodeAt(i + j);
      const isPad = c === 0x3d && i + 4 === encoded.length && j >= 4 - pad;
      const v = isPad ? 0 : c < 128 ? BASE64_INDEX[c] : -1;
      if (v < 0) throw new SyntaxError(`Invalid base64: ${quote(encoded)}`);
      n = (n << 6) | v;
    }
    if (o < out.length) out[o++] = n >> 16;
    if (o < out.length) out[o++] = (n >> 8) & 255;
    if (o < out.length) out[o++] = n & 255;
  }
  return out;
}

/** `parts` one after the other in one new array (`total`: their summed length, when known). */
export function concatBytes(parts: readonly Uint8Array[], total?: number): Uint8Array {
  const out = new Uint8Array(total ?? parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * A growable big-endian byte writer for the binary formats (the command codec and the peer wire
 * format share it): fixed-width integers, and length-prefixed byte strings.
 */
export class ByteWriter {
  #buf: Uint8Array;
  #view: DataView;
  #pos = 0;

  /** Starts with room for `initialBytes` (it grows by doubling). */
  constructor(initialBytes = 64) {
    this.#buf = new Uint8Array(initialBytes);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#pos;
  }

  /** Bytes it can hold before it grows. */
  get capacity(): number {
    return this.#buf.length;
  }

  /**
   * Starts over, keeping the buffer (so a writer reused for a stream of frames allocates once).
   * Views taken before are overwritten by later writes.
   */
  reset(): void {
    this.#pos = 0;
  }

  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#pos));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  /** One byte. */
  u8(v: number): void {
    this.#room(1);
    this.#buf[this.#pos++] = v;
  }

  /** An unsigned 32-bit integer. */
  u32(v: number): void {
    this.#room(4);
    this.#view.setUint32(this.#pos, v);
    this.#pos += 4;
  }

  /** A non-negative safe integer in 8 bytes (high and low 32-bit halves). */
  u53(v: number): void {
    this.#room(8);
    this.#view.setUint32(this.#pos, Math.floor(v / 0x1_0000_0000));
    this.#view.setUint32(this.#pos + 4, v >>> 0);
    this.#pos += 8;
  }

  /** A float64 (exact for integers up to 2^53). */
  f64(v: number): void {
    this.#room(8);
    this.#view.setFloat64(this.#pos, v);
    this.#pos += 8;
  }

  /** A u32 length, then the bytes. */
  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.#room(b.length);
    this.#buf.set(b, this.#pos);
    this.#pos += b.length;
  }

  /** A string as length-prefixed UTF-8. */
  str(s: string): void {
    this.bytes(utf8(s));
  }

  /** A key string as its length-prefixed bytes ({@linkcode keyBytes}). */
  key(s: string): void {
    this.bytes(keyBytes(s));
  }

  /** Overwrites the u32 at `offset` (e.g. a length prefix reserved earlier). */
  setU32At(offset: number, v: number): void {
    this.#view.setUint32(offset, v);
  }

  /** A copy of the bytes written. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#pos);
  }

  /** The bytes written, without copying (valid until the next write). */
  view(): Uint8Array {
    return this.#buf.subarray(0, this.#pos);
  }
}
