/**
 * The HTTP/1.1 client a follower forwards writes to the leader with (plain `http:` client URLs).
 *
 * A write without a session must reach the leader at most once, and Deno's pooled `fetch` sends
 * a request again on a new connection when its pooled one closes under it, so forwards used to
 * open a connection each (`poolMaxIdlePerHost: 0`): a follower spent about 640 µs of CPU per
 * forwarded put and did 2,000 puts/s where the leader did 10,000 (h2load, 64 streams). This
 * client keeps connections open and reuses them, and never sends a request twice: a request that
 * failed after its first byte was written fails with {@linkcode ForwardUnknownError} (its outcome
 * is unknown), one that never got a connection with the connect error (`Deno.errors.
 * ConnectionRefused`, which the caller may send elsewhere).
 *
 * A connection is reused only while it is idle and open: each idle connection has a read
 * pending, so one the leader closed (its idle timeout, a restart) leaves the pool at once, and an
 * idle connection is closed after {@linkcode FORWARD_IDLE_MS_DEFAULT}, well before the server's
 * own idle timeout. One request per connection at a time (no pipelining).
 *
 * @module
 */

import { concatBytes } from "../kv/bytes.ts";

/** Idle connections are closed after this long (the client port's idle timeout is 60 s). */
export const FORWARD_IDLE_MS_DEFAULT = 10_000;
/** Most idle connections kept per leader address. */
export const FORWARD_IDLE_PER_HOST_MAX = 256;
/** Most bytes of a response head. */
const HEAD_BYTES_MAX = 64 * 1024;

/** A forwarded request failed after it was (maybe partly) sent: the leader may have handled it. */
export class ForwardUnknownError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ForwardUnknownError";
  }
}

interface Conn {
  readonly conn: Deno.Conn;
  /** Bytes read past the last response (a well-behaved server sends none). */
  buf: Uint8Array;
  idleTimer?: ReturnType<typeof setTimeout>;
  /** The read pending while idle: resolves when the peer closes or sends unasked bytes. */
  watch?: Promise<number | null>;
  watchBuf?: Uint8Array;
  /** Carrying a request (its idle watch, if any, is the response's first read). */
  inUse: boolean;
  closed: boolean;
}

const PENDING = Symbol("pending");

/** Persistent connections to leaders, one request at a time each, never resending. */
export class ForwardClient {
  readonly #idle = new Map<string, Conn[]>();
  readonly #idleMs: number;
  readonly #responseBytesMax: number;
  #closed = false;

  /** `responseBytesMax` bounds a response body (the leader's answers are bounded too). */
  constructor(options: { idleMs?: number; responseBytesMax: number }) {
    this.#idleMs = options.idleMs ?? FORWARD_IDLE_MS_DEFAULT;
    this.#responseBytesMax = options.responseBytesMax;
  }

  /** Idle connections now kept (for tests and metrics). */
  get idleConnections(): number {
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  /** Closes every idle connection; requests in flight finish on theirs. */
  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) for (const c of list) this.#drop(c);
    this.#idle.clear();
  }

  /**
   * Sends one request to `url` (http: only) and reads its answer, within `timeoutMs`. Throws the
   * connect error when no connection could be made (nothing was sent), and
   * {@linkcode ForwardUnknownError} for any failure after that.
   */
  async request(
    url: string,
    init: { method: string; headers: Headers; body?: Uint8Array },
    timeoutMs: number,
  ): Promise<Response> {
    const u = new URL(url);
    if (u.protocol !== "http:") throw new TypeError(`ForwardClient speaks http: only: ${url}`);
    const host = u.hostname.replace(/^\[|\]$/g, "");
    const port = Number(u.port || 80);
    const key = `${host}:${port}`;
    const deadline = Date.now() + timeoutMs;
    let c = await this.#takeIdle(key);
    if (c === undefined) {
      // A failure here sent nothing: the caller may send the request elsewhere.
      const conn = await withDeadline(
        Deno.connect({ hostname: host, port }),
        deadline,
        () => new Deno.errors.TimedOut(`connect to ${key} timed out`),
      );
      conn.setNoDelay(true);
      c = { conn, buf: new Uint8Array(0), inUse: true, closed: false };
    }
    const conn = c;
    try {
      const head = requestHead(init.method, u.pathname + u.search, key, init.headers, init.body);
      await withDeadline(writeAll(conn.conn, head, init.body), deadline, timedOut);
      const res = await withDeadline(this.#readResponse(conn), deadline, timedOut);
      if (res.keepAlive && !this.#closed) this.#putIdle(key, conn);
      else this.#drop(conn);
      return res.response;
    } catch (e) {
      this.#drop(conn);
      if (e instanceof ForwardUnknownError) throw e;
      throw new ForwardUnknownError(
        `forward to ${key} failed after the request was sent: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }

  /** An idle connection still open, or undefined. */
  async #takeIdle(key: string): Promise<Conn | undefined> {
    const list = this.#idle.get(key);
    while (list !== undefined && list.length > 0) {
      const c = list.pop()!;
      clearTimeout(c.idleTimer);
      if (c.closed) continue;
      c.inUse = true;
      // A watch that has settled already (the leader closed it, or sent something unasked): the
      // connection must not carry the request. Checked before a byte is written.
      const settled = c.watch === undefined
        ? PENDING
        : await Promise.race([c.watch, Promise.resolve(PENDING)]);
      if (settled !== PENDING) {
        this.#drop(c);
        continue;
      }
      return c;
    }
    return undefined;
  }

  #putIdle(key: string, c: Conn): void {
    let list = this.#idle.get(key);
    if (list === undefined) this.#idle.set(key, list = []);
    if (list.length >= FORWARD_IDLE_PER_HOST_MAX || c.buf.length > 0) {
      this.#drop(c);
      return;
    }
    c.inUse = false;
    list.push(c);
    c.idleTimer = setTimeout(() => {
      const i = list!.indexOf(c);
      if (i >= 0) list!.splice(i, 1);
      this.#drop(c);
    }, this.#idleMs);
    Deno.unrefTimer(c.idleTimer as unknown as number);
    // Watch the idle connection: any byte or the end of it means it must not carry a request.
    const buf = new Uint8Array(1);
    c.watchBuf = buf;
    const watch = c.conn.read(buf).catch(() => null);
    c.watch = watch;
    watch.then(() => {
      if (c.inUse || c.watch !== watch) return; // taken for a request meanwhile
      const i = list!.indexOf(c);
      if (i >= 0) list!.splice(i, 1);
      clearTimeout(c.idleTimer);
      this.#drop(c);
    });
  }

  #drop(c: Conn): void {
    if (c.closed) return;
    c.closed = true;
    clearTimeout(c.idleTimer);
    try {
      c.conn.close();
    } catch { /* closed */ }
  }

  async #readResponse(c: Conn): Promise<{ response: Response; keepAlive: boolean }> {
    const reader = new Reader(c);
    const headEnd = await reader.until(CRLFCRLF, HEAD_BYTES_MAX);
    const headText = new TextDecoder().decode(reader.take(headEnd));
    reader.take(4);
    const lines = headText.split("\r\n");
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (status === null) throw new Error(`malformed status line: ${lines[0].slice(0, 80)}`);
    const headers = new Headers();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      if (colon <= 0) throw new Error(`malformed header line: ${line.slice(0, 80)}`);
      headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    const code = Number(status[1]);
    let keepAlive = !/\bclose\b/i.test(headers.get("connection") ?? "");
    let body: Uint8Array;
    const length = headers.get("content-length");
    if (/\bchunked\b/i.test(headers.get("transfer-encoding") ?? "")) {
      body = await reader.chunked(this.#responseBytesMax);
    } else if (length !== null) {
      const n = Number(length);
      if (!Number.isSafeInteger(n) || n < 0 || n > this.#responseBytesMax) {
        throw new Error(`bad content-length: ${length}`);
      }
      body = await reader.exactly(n);
    } else if (code === 204 || code === 304) {
      body = new Uint8Array(0);
    } else {
      body = await reader.toEnd(this.#responseBytesMax);
      keepAlive = false;
    }
    c.buf = reader.rest();
    headers.delete("content-length");
    headers.delete("transfer-encoding");
    headers.delete("connection");
    return {
      response: new Response(
        code === 204 || code === 304 ? null : body as Uint8Array<ArrayBuffer>,
        {
          status: code,
          headers,
        },
      ),
      keepAlive,
    };
  }
}

const CRLFCRLF = new Uint8Array([13, 10, 13, 10]);
const encoder = new TextEncoder();

function timedOut(): Error {
  return new Deno.errors.TimedOut("no answer in time");
}

function requestHead(
  method: string,
  target: string,
  host: string,
  headers: Headers,
  body: Uint8Array | undefined,
): Uint8Array {
  let text = `${method} ${target} HTTP/1.1\r\nhost: ${host}\r\n`;
  for (const [name, value] of headers) {
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) {
      throw new TypeError(`header ${name} holds a line break`);
    }
    const lower = name.toLowerCase();
    if (lower === "host" || lower === "content-length" || lower === "connection") continue;
    text += `${name}: ${value}\r\n`;
  }
  text += `content-length: ${body?.length ?? 0}\r\n\r\n`;
  return encoder.encode(text);
}

async function writeAll(conn: Deno.Conn, head: Uint8Array, body?: Uint8Array): Promise<void> {
  // Head and body in one write when small (one segment on the wire).
  let bytes = head;
  if (body !== undefined && body.length > 0 && body.length <= 64 * 1024) {
    bytes = new Uint8Array(head.length + body.length);
    bytes.set(head);
    bytes.set(body, head.length);
    body = undefined;
  }
  for (const part of body === undefined ? [bytes] : [bytes, body]) {
    let off = 0;
    while (off < part.length) off += await conn.write(part.subarray(off));
  }
}

function withDeadline<T>(p: Promise<T>, deadline: number, error: () => Error): Promise<T> {
  const ms = deadline - Date.now();
  if (ms <= 0) {
    p.catch(() => {});
    return Promise.reject(error());
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => timer = setTimeout(() => reject(error()), ms)),
  ]).finally(() => clearTimeout(timer));
}

/** Reads a response off a connection, starting with what the connection had buffered. */
class Reader {
  readonly #c: Conn;
  #buf: Uint8Array;
  #start = 0;
  #end: number;

  constructor(c: Conn) {
    this.#c = c;
    // The idle watch may have read a byte: it starts the response.
    const pending = c.watch;
    c.watch = undefined;
    this.#pendingWatch = pending;
    this.#buf = new Uint8Array(Math.max(16 * 1024, c.buf.length));
    this.#buf.set(c.buf);
    this.#end = c.buf.length;
  }

  #pendingWatch: Promise<number | null> | undefined;

  async #fill(): Promise<void> {
    if (this.#pendingWatch !== undefined) {
      const watch = this.#pendingWatch;
      this.#pendingWatch = undefined;
      const n = await watch;
      if (n === null) throw new Error("connection closed before the answer");
      this.#append(this.#c.watchBuf!.subarray(0, n));
      return;
    }
    if (this.#end === this.#buf.length) {
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      } else {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf.subarray(0, this.#end));
        this.#buf = bigger;
      }
    }
    const n = await this.#c.conn.read(this.#buf.subarray(this.#end));
    if (n === null) throw new Error("connection closed before the answer ended");
    this.#end += n;
  }

  #append(bytes: Uint8Array): void {
    if (this.#end + bytes.length > this.#buf.length) {
      const bigger = new Uint8Array(Math.max(this.#buf.length * 2, this.#end + bytes.length));
      bigger.set(this.#buf.subarray(0, this.#end));
      this.#buf = bigger;
    }
    this.#buf.set(bytes, this.#end);
    this.#end += bytes.length;
  }

  /** Index (from the read position) where `pattern` starts, reading until it shows. */
  async until(pattern: Uint8Array, max: number): Promise<number> {
    let from = 0;
    while (true) {
      const i = indexOf(this.#buf.subarray(this.#start, this.#end), pattern, from);
      if (i >= 0) return i;
      from = Math.max(0, this.#end - this.#start - pattern.length + 1);
      if (this.#end - this.#start > max) throw new Error(`response head over ${max} bytes`);
      await this.#fill();
    }
  }

  take(n: number): Uint8Array {
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  async exactly(n: number): Promise<Uint8Array> {
    while (this.#end - this.#start < n) await this.#fill();
    return this.take(n);
  }

  async chunked(max: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let total = 0;
    while (true) {
      const lineEnd = await this.until(CRLF, 1024);
      const sizeText = new TextDecoder().decode(this.take(lineEnd)).split(";")[0].trim();
      this.take(2);
      if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) throw new Error(`bad chunk size: ${sizeText}`);
      const size = parseInt(sizeText, 16);
      if (size === 0) {
        // Trailers (none expected) end with an empty line.
        while (true) {
          const end = await this.until(CRLF, HEAD_BYTES_MAX);
          this.take(end + 2);
          if (end === 0) break;
        }
        break;
      }
      total += size;
      if (total > max) throw new Error(`response body over ${max} bytes`);
      parts.push(await this.exactly(size));
      await this.exactly(2);
    }
    return concatBytes(parts, total);
  }

  async toEnd(max: number): Promise<Uint8Array> {
    while (true) {
      if (this.#end - this.#start > max) throw new Error(`response body over ${max} bytes`);
      try {
        await this.#fill();
      } catch {
        break; // the end of the connection ends the body
      }
    }
    return this.take(this.#end - this.#start);
  }

  rest(): Uint8Array {
    return this.#buf.slice(this.#start, this.#end);
  }
}

const CRLF = new Uint8Array([13, 10]);

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
