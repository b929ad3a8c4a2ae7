/**
 * A small HTTP/1.1 server on `Deno.listen` for the client port. Deno.serve (2.9) has no timeout
 * for a request head and no connection cap, so a client trickling one header byte per second, or
 * many idle sockets, hold memory for ever (slowloris). This server calls the same handler with a
 * real `Request` and writes its `Response`, with these limits:
 *
 * - a request head must be complete within `headTimeoutMs` of its first byte (or of the
 *   connection's opening): else 408 and the connection closes;
 * - a connection with no request in flight closes after `idleTimeoutMs`; a request in flight
 *   (a watch stream that lasts hours) is never cut by a timer here;
 * - at most `connectionsMax` connections: the next gets a 503 with `Retry-After: 1` after reading
 *   at most {@linkcode REFUSE_READ_BYTES} bytes, and is closed;
 * - a request head holds at most `headBytesMax` bytes (431 beyond); a request body is read only
 *   as the handler reads it, so the handler's own limit bounds it.
 *
 * Responses whose body is at hand at once get a Content-Length and go out in one write; others
 * (watch streams) go out chunk by chunk, each chunk written as it comes. A client that goes away
 * cancels its response stream.
 *
 * An optional {@linkcode Http1FastHandler} takes the requests it accepts (small bodies that have
 * arrived whole with their head) without a `Request` or `Response` object: the head's fields and
 * the body bytes in, status, fields and body bytes out. For small etcd calls those objects, their
 * header and stream machinery cost more allocation than the call itself.
 *
 * @module
 */

import type { ByteConn, ConnListener } from "./tls.ts";
import { acceptNext } from "./accept.ts";
import { concatBytes } from "../kv/bytes.ts";

/** A request handler, as for Deno.serve. */
export type Http1Handler = (
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

/** A request for the fast path: its head's fields and its whole body, read already. */
export interface Http1FastRequest {
  /** The method, e.g. `POST`. */
  readonly method: string;
  /** The request target as sent (path and query), e.g. `/v3/kv/put`. */
  readonly target: string;
  /** Header fields as sent (names as the client wrote them). */
  readonly fields: readonly [string, string][];
  /** The value of header `name` (given in lower case), fields joined with ", "; null if absent. */
  header(name: string): string | null;
  /** The body. */
  readonly body: Uint8Array;
}

/** A fast-path answer: written with a Content-Length in one write. */
export interface Http1FastAnswer {
  /** Status code. */
  readonly status: number;
  /** Header fields (no Content-Length, Date or Connection: the server adds those). */
  readonly fields: readonly [string, string][];
  /** The whole body. */
  readonly body: Uint8Array;
}

/**
 * Serves some requests without `Request` and `Response` objects. The server offers it a request
 * whose body has a Content-Length, no `Expect`, and has arrived in full; `accepts` says whether it
 * takes it (else the general handler gets it as usual). `handle` may still answer with a
 * `Response` (a stream, a forwarded answer), written as the general handler's are.
 */
export interface Http1FastHandler {
  /** Whether to take a request with this method and target and a body of `bodyBytes` bytes. */
  accepts(method: string, target: string, bodyBytes: number): boolean;
  /** Answers a request it accepted. */
  handle(req: Http1FastRequest): Promise<Http1FastAnswer | Response>;
}

/** Limits and hooks of an {@linkcode Http1Server}. */
export interface Http1Options {
  /** Address to listen on (port 0 picks a free port). */
  readonly hostname: string;
  /** Port to listen on. */
  readonly port: number;
  /** Longest wait for a complete request head; then 408 and close. Default 10,000. */
  readonly headTimeoutMs?: number;
  /** Longest wait for the next request on a connection with none in flight. Default 60,000. */
  readonly idleTimeoutMs?: number;
  /** Most open connections; beyond, 503 and close. Default 1024. */
  readonly connectionsMax?: number;
  /** Largest request head (request line and headers); beyond, 431. Default 16 KiB. */
  readonly headBytesMax?: number;
  /** Called with a handler's exception (the client gets a 500). */
  readonly onError?: (error: unknown) => void;
  /**
   * Serve the connections of this listener (a TLS port, src/net/tls.ts) instead of opening a TCP
   * listener on `hostname:port`.
   */
  readonly listener?: ConnListener;
  /** Serves the requests it accepts without Request/Response objects (see the module doc). */
  readonly fast?: Http1FastHandler;
}

/** Default of {@linkcode Http1Options.headTimeoutMs}. */
export const HEAD_TIMEOUT_MS_DEFAULT = 10_000;
/** Default of {@linkcode Http1Options.idleTimeoutMs}. */
export const IDLE_TIMEOUT_MS_DEFAULT = 60_000;
/** Default of {@linkcode Http1Options.connectionsMax}. */
export const CONNECTIONS_MAX_DEFAULT = 1024;
/** Default of {@linkcode Http1Options.headBytesMax}. */
export const HEAD_BYTES_MAX_DEFAULT = 16 * 1024;
/** Most bytes read from a connection refused for being over the cap (so the 503 is not reset). */
export const REFUSE_READ_BYTES = 4096;
/** Longest a refused connection is kept to let its 503 reach the client. */
const REFUSE_LINGER_MS = 1000;
/** Most refused connections lingering at once; more are closed at once, unanswered. */
const REFUSING_MAX = 256;
/** Longest a connection closed with request bytes unread stays half-open, reading them away. */
const LINGER_MS = 1000;
/** Most bytes read away from such a connection. */
const LINGER_BYTES_MAX = 256 * 1024;
/** Longest chunk-size line of a chunked request body. */
const CHUNK_LINE_BYTES_MAX = 1024;
/** Bytes asked of the socket per read. */
const READ_BYTES = 16 * 1024;
/** Bodies up to this size are copied behind their head for one write; larger ones are not. */
const COPY_BYTES_MAX = 64 * 1024;
/** A response body read in full before its head is written, when it is all at hand. */
const BUFFERED_BODY_BYTES_MAX = 1024 * 1024;

const encoder = new TextEncoder();
const asciiDecoder = new TextDecoder();
const PENDING = Symbol("pending");
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\s]+) HTTP\/(\d)\.(\d)$/;
const HOST = /^(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::\d{0,5})?$/;
const CONTINUE = encoder.encode("HTTP/1.1 100 Continue\r\n\r\n");
const LAST_CHUNK = encoder.encode("0\r\n\r\n");
const CRLF = encoder.encode("\r\n");

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  307: "Temporary Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  412: "Precondition Failed",
  413: "Content Too Large",
  421: "Misdirected Request",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** Headers of a handler's response that this server writes itself. */
const HOP_HEADERS = new Set(["connection", "content-length", "keep-alive", "transfer-encoding"]);

/** A request this server refuses before the handler sees it. */
class HeadError extends Error {
  constructor(readonly status: number, message: string, readonly code: number) {
    super(message);
  }
}

/** etcd's gRPC code for a status this server answers itself. */
function codeOf(status: number): number {
  if (status === 408) return 4; // DeadlineExceeded
  if (status === 501 || status === 505) return 12; // Unimplemented
  if (status === 503) return 14; // Unavailable
  return 3; // InvalidArgument
}

/** A complete error response (JSON, `Connection: close`), as one buffer. */
function errorBytes(status: number, message: string, extra = ""): Uint8Array {
  const body = JSON.stringify({ error: message, code: codeOf(status), message });
  const bodyBytes = encoder.encode(body);
  const head = `HTTP/1.1 ${status} ${REASONS[status] ?? ""}\r\ndate: ${httpDate()}\r\n` +
    `content-type: application/json\r\ncontent-length: ${bodyBytes.length}\r\n${extra}` +
    "connection: close\r\n\r\n";
  return concat(encoder.encode(head), bodyBytes);
}

let dateSecond = -1;
let dateText = "";
/** The Date header's value, computed once a second. */
function httpDate(): string {
  const now = Date.now();
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** A promise that settles after a few microtask turns: what a body at hand takes to be read. */
function soon(): Promise<typeof PENDING> {
  return Promise.resolve().then(() => {}).then(() => {}).then(() => PENDING);
}

async function writeAll(conn: ByteConn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

type Phase = "head" | "idle" | "busy";

/** One client connection: its read buffer and where it stands. */
class Connection {
  readonly conn: ByteConn;
  buf: Uint8Array<ArrayBuffer>;
  /** Unread bytes are `buf[start, end)`. */
  start = 0;
  end = 0;
  phase: Phase = "head";
  /** When the current phase's timer runs out (ms since the epoch). */
  deadlineMs = 0;
  closed = false;
  eof = false;
  /** The head timer ran out (the 408 is on its way). */
  timedOut = false;
  #filling: Promise<boolean> | undefined;
  /** Settles once every queued write is done (never rejects). */
  #tail: Promise<void> = Promise.resolve();
  #writesPending = 0;
  /** The last queued write. */
  lastWrite: Promise<void> = Promise.resolve();

  constructor(conn: ByteConn, capacity: number) {
    this.conn = conn;
    this.buf = new Uint8Array(capacity);
  }

  get buffered(): number {
    return this.end - this.start;
  }

  /** Reads more bytes into the buffer; false at end of stream (or on a closed connection). */
  fill(): Promise<boolean> {
    if (this.#filling === undefined) {
      this.#filling = this.#fill().finally(() => this.#filling = undefined);
    }
    return this.#filling;
  }

  async #fill(): Promise<boolean> {
    if (this.eof || this.closed) return false;
    if (this.start === this.end) this.start = this.end = 0;
    if (this.end === this.buf.length) {
      if (this.start > 0) {
        this.buf.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      } else {
        return true; // full: the caller decides (431, or stop reading ahead)
      }
    }
    let n: number | null;
    try {
      n = await this.conn.read(this.buf.subarray(this.end));
    } catch {
      n = null;
    }
    if (n === null) {
      this.eof = true;
      return false;
    }
    this.end += n;
    return true;
  }

  /**
   * Queues `bytes` after the writes before them. A response is not awaited before the next
   * request is read, so reading and writing overlap; the caller keeps at most one in the queue.
   */
  write(bytes: Uint8Array): Promise<void> {
    this.#writesPending++;
    const p = this.#tail.then(() => writeAll(this.conn, bytes)).finally(() => {
      this.#writesPending--;
    });
    this.#tail = p.catch(() => {});
    this.lastWrite = p;
    return p;
  }

  /** Whether a write is queued or under way. */
  get writing(): boolean {
    return this.#writesPending > 0;
  }

  /** Settles when every queued write is done. */
  flushed(): Promise<void> {
    return this.#tail;
  }

  /** Takes up to `max` buffered bytes (a copy). */
  take(max: number): Uint8Array<ArrayBuffer> {
    const n = Math.min(max, this.buffered);
    const out = this.buf.slice(this.start, this.start + n);
    this.start += n;
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** A parsed request head. */
interface Head {
  method: string;
  target: string;
  minor: number;
  /** Header fields as sent, for the Request to validate once. */
  headers: [string, string][];
  /** The Host header, or null. */
  host: string | null;
  keepAlive: boolean;
  /** Body length, or -1 for a chunked body. */
  bodyLength: number;
  expectContinue: boolean;
}

/** Serves HTTP/1.1 on a TCP listener; see the module documentation. */
export class Http1Server {
  /** The address listened on. */
  readonly addr: Deno.NetAddr;
  readonly #listener: ConnListener;
  readonly #handler: Http1Handler;
  readonly #fast: Http1FastHandler | undefined;
  readonly #headTimeoutMs: number;
  readonly #idleTimeoutMs: number;
  readonly #connectionsMax: number;
  readonly #headBytesMax: number;
  readonly #onError: (error: unknown) => void;
  readonly #connections = new Set<Connection>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #refusing = new Set<ByteConn>();
  readonly #sweep: ReturnType<typeof setInterval>;
  readonly #accepting: Promise<void>;
  #stopping = false;
  #finished: Promise<void> | undefined;

  /** Listens on `options.hostname:port` and serves every request with `handler`. */
  constructor(options: Http1Options, handler: Http1Handler) {
    this.#handler = handler;
    this.#fast = options.fast;
    this.#headTimeoutMs = options.headTimeoutMs ?? HEAD_TIMEOUT_MS_DEFAULT;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS_DEFAULT;
    this.#connectionsMax = options.connectionsMax ?? CONNECTIONS_MAX_DEFAULT;
    this.#headBytesMax = options.headBytesMax ?? HEAD_BYTES_MAX_DEFAULT;
    this.#onError = options.onError ?? (() => {});
    for (
      const [name, v] of [
        ["headTimeoutMs", this.#headTimeoutMs],
        ["idleTimeoutMs", this.#idleTimeoutMs],
        ["connectionsMax", this.#connectionsMax],
        ["headBytesMax", this.#headBytesMax],
      ] as const
    ) {
      if (!Number.isSafeInteger(v) || v < 1) {
        throw new Error(`Http1Server: ${name} must be a positive integer: ${v}`);
      }
    }
    this.#listener = options.listener ??
      Deno.listen({ hostname: options.hostname, port: options.port });
    this.addr = this.#listener.addr;
    // One timer checks every connection's deadline, rather than a timer per request.
    const sweepMs = Math.max(
      10,
      Math.min(1000, Math.floor(Math.min(this.#headTimeoutMs, this.#idleTimeoutMs) / 8)),
    );
    this.#sweep = setInterval(() => this.#checkDeadlines(), sweepMs);
    this.#accepting = this.#accept();
  }

  /** Open connections (refused ones not counted). */
  get connections(): number {
    return this.#connections.size;
  }

  /**
   * Stops listening, closes idle connections at once and the others once their response is
   * written or `graceMs` has passed; settles when every connection is closed.
   */
  shutdown(graceMs = 500): Promise<void> {
    if (this.#finished !== undefined) return this.#finished;
    this.#stopping = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    for (const c of this.#connections) {
      if (c.phase !== "busy") c.flushed().then(() => c.close());
    }
    this.#finished = (async () => {
      await this.#accepting;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const all = Promise.all([...this.#tasks]);
      await Promise.race([all, new Promise((r) => timer = setTimeout(r, graceMs))]);
      clearTimeout(timer);
      for (const c of this.#connections) c.close();
      for (const conn of this.#refusing) closeQuietly(conn);
      await Promise.all([...this.#tasks]);
      clearInterval(this.#sweep);
    })();
    return this.#finished;
  }

  /** Closes everything now. */
  close(): Promise<void> {
    return this.shutdown(0);
  }

  async #accept(): Promise<void> {
    for (;;) {
      const conn = await acceptNext(this.#listener, () => this.#stopping, (e) => this.#onError(e));
      if (conn === undefined) return;
      if (this.#stopping) {
        closeQuietly(conn);
        return;
      }
      if (this.#connections.size >= this.#connectionsMax) {
        this.#refuse(conn);
        continue;
      }
      const c = new Connection(conn, Math.max(READ_BYTES, this.#headBytesMax + 1));
      c.deadlineMs = Date.now() + this.#headTimeoutMs;
      this.#connections.add(c);
      const task = this.#serve(c).finally(() => {
        c.close();
        this.#connections.delete(c);
        this.#tasks.delete(task);
      });
      this.#tasks.add(task);
    }
  }

  /** Answers a connection over the cap with a 503, reading at most a few bytes of it. */
  #refuse(conn: ByteConn): void {
    if (this.#refusing.size >= REFUSING_MAX) {
      closeQuietly(conn);
      return;
    }
    this.#refusing.add(conn);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const task = (async () => {
      const message = `Too many connections to this node: ${this.#connectionsMax} (retry later)`;
      await writeAll(conn, errorBytes(503, message, "retry-after: 1\r\n"));
      // Read what the client sent (a little of it) so that closing does not reset the 503 away.
      await conn.closeWrite();
      const scratch = new Uint8Array(REFUSE_READ_BYTES);
      timer = setTimeout(() => closeQuietly(conn), REFUSE_LINGER_MS);
      await conn.read(scratch);
    })().catch(() => {}).finally(() => {
      clearTimeout(timer);
      closeQuietly(conn);
      this.#refusing.delete(conn);
      this.#tasks.delete(task);
    });
    this.#tasks.add(task);
  }

  #checkDeadlines(): void {
    const now = Date.now();
    for (const c of this.#connections) {
      if (c.phase === "busy" || c.closed || now < c.deadlineMs) continue;
      if (c.phase === "idle") {
        c.close();
        continue;
      }
      c.phase = "busy"; // answered once
      c.timedOut = true;
      const message = `Request head did not arrive within ${this.#headTimeoutMs} ms`;
      c.write(errorBytes(408, message)).catch(() => {}).finally(() => c.close());
    }
  }

  async #serve(c: Connection): Promise<void> {
    try {
      await this.#serveRequests(c);
    } finally {
      await c.flushed();
    }
  }

  async #serveRequests(c: Connection): Promise<void> {
    while (!c.closed) {
      let head: Head | null;
      try {
        head = await this.#readHead(c);
      } catch (e) {
        if (!(e instanceof HeadError) || c.closed) return;
        c.phase = "busy";
        await c.write(errorBytes(e.status, e.message)).catch(() => {});
        await this.#linger(c);
        return;
      }
      if (head === null) return;
      if (!await this.#exchange(c, head)) return;
      if (this.#stopping) return;
    }
  }

  /** Reads and parses the next request head; null when the connection ended before one. */
  async #readHead(c: Connection): Promise<Head | null> {
    let scanned = 0;
    if (c.phase !== "head") {
      c.phase = c.buffered > 0 ? "head" : "idle";
      c.deadlineMs = Date.now() + (c.phase === "head" ? this.#headTimeoutMs : this.#idleTimeoutMs);
    }
    while (true) {
      // Blank lines before a request line are skipped (RFC 9112 §2.2).
      while (c.buffered > 0 && (c.buf[c.start] === 13 || c.buf[c.start] === 10)) c.start++;
      const end = headEnd(c.buf, c.start + scanned, c.end);
      if (end >= 0) {
        if (end - c.start > this.#headBytesMax) throw tooLarge(this.#headBytesMax);
        const head = parseHead(c.buf, c.start, end);
        c.start = end;
        c.phase = "busy";
        return head;
      }
      scanned = Math.max(0, c.buffered - 3);
      if (c.buffered > this.#headBytesMax) throw tooLarge(this.#headBytesMax);
      const before = c.buffered;
      if (!await c.fill()) return null;
      if (c.phase === "idle" && c.buffered > before) {
        c.phase = "head";
        c.deadlineMs = Date.now() + this.#headTimeoutMs;
      }
      if (c.closed || c.timedOut) return null;
    }
  }

  /** Serves one request; true when the connection may carry another. */
  async #exchange(c: Connection, head: Head): Promise<boolean> {
    const fast = this.#fast;
    if (
      fast !== undefined && head.bodyLength >= 0 && !head.expectContinue &&
      c.buffered >= head.bodyLength && fast.accepts(head.method, head.target, head.bodyLength)
    ) {
      return await this.#exchangeFast(c, head, fast);
    }
    const body = new BodyReader(c, head);
    let req: Request;
    try {
      req = new Request(urlOf(head, this.addr), {
        method: head.method,
        headers: head.headers,
        body: body.body(),
      });
    } catch (e) {
      const message = `Bad request: ${(e as Error).message}`;
      await c.write(errorBytes(400, message)).catch(() => {});
      return false;
    }
    let completed: () => void = () => {};
    let failed: (e: unknown) => void = () => {};
    const info: Deno.ServeHandlerInfo<Deno.NetAddr> = {
      remoteAddr: c.conn.remoteAddr,
      completed: new Promise<void>((resolve, reject) => {
        completed = resolve;
        failed = reject;
      }),
    };
    info.completed.catch(() => {});
    let res: Response;
    try {
      res = await this.#handler(req, info);
    } catch (e) {
      this.#onError(e);
      res = Response.json(
        { error: "Internal error", code: 13, message: "Internal error" },
        { status: 500, headers: { connection: "close" } },
      );
    }
    let keepAlive = head.keepAlive && !this.#stopping &&
      !/\bclose\b/i.test(res.headers.get("connection") ?? "");
    const fail = (e: unknown) =>
      failed(new Deno.errors.Interrupted(`Response not sent: ${(e as Error).message}`));
    try {
      keepAlive = await this.#respond(c, head, res, keepAlive, body);
      c.lastWrite.then(completed, fail);
    } catch (e) {
      fail(e);
      return false;
    }
    // A body the handler left unread is not drained: the connection goes instead.
    if (!body.done && !c.closed) await this.#linger(c);
    return keepAlive && body.done && !c.closed;
  }

  /** Serves one request the fast handler took; true when the connection may carry another. */
  async #exchangeFast(c: Connection, head: Head, fast: Http1FastHandler): Promise<boolean> {
    const bytes = c.take(head.bodyLength);
    const fields = head.headers;
    const req: Http1FastRequest = {
      method: head.method,
      target: head.target,
      fields,
      header: (name) => fieldValue(fields, name),
      body: bytes,
    };
    let answer: Http1FastAnswer | Response;
    try {
      answer = await fast.handle(req);
    } catch (e) {
      this.#onError(e);
      answer = {
        status: 500,
        fields: [["content-type", "application/json"], ["connection", "close"]],
        body: encoder.encode('{"error":"Internal error","code":13,"message":"Internal error"}'),
      };
    }
    const done = new BodyReader(c, { ...head, bodyLength: 0 });
    if (answer instanceof Response) {
      const keepAlive = head.keepAlive && !this.#stopping &&
        !/\bclose\b/i.test(answer.headers.get("connection") ?? "");
      try {
        return await this.#respond(c, head, answer, keepAlive, done) && !c.closed;
      } catch {
        return false;
      }
    }
    if (c.writing) await c.flushed(); // one response in the queue at most
    let keepAlive = head.keepAlive && !this.#stopping;
    let text = `HTTP/1.1 ${answer.status} ${REASONS[answer.status] ?? ""}\r\n`;
    for (const [name, value] of answer.fields) {
      const lower = name.toLowerCase();
      if (lower === "connection") {
        if (/\bclose\b/i.test(value)) keepAlive = false;
        continue;
      }
      if (HOP_HEADERS.has(lower) || lower === "date") continue;
      text += `${name}: ${value}\r\n`;
    }
    text += `date: ${httpDate()}\r\ncontent-length: ${answer.body.length}\r\n`;
    text += connectionHeader(head, keepAlive);
    const headBytes = encoder.encode(text);
    const total = headBytes.length + answer.body.length;
    const written = answer.body.length > COPY_BYTES_MAX
      ? (c.write(headBytes), c.write(answer.body))
      : c.write(concatBytes([headBytes, answer.body], total));
    written.catch(() => c.close());
    return keepAlive && !c.closed;
  }

  /**
   * Half-closes `c` and reads away a bounded part of what the client still sends, so that the
   * close does not reset the connection before the client has read our answer (RFC 9112 §9.6).
   */
  async #linger(c: Connection): Promise<void> {
    await c.flushed();
    try {
      await c.conn.closeWrite();
    } catch {
      return;
    }
    c.phase = "idle";
    c.deadlineMs = Date.now() + LINGER_MS;
    let drained = 0;
    while (drained < LINGER_BYTES_MAX && !c.closed) {
      c.start = c.end = 0;
      if (!await c.fill()) return;
      drained += c.buffered;
    }
  }

  /** Writes `res`; returns whether the connection may stay open. */
  async #respond(
    c: Connection,
    head: Head,
    res: Response,
    keepAliveAsked: boolean,
    body: BodyReader,
  ): Promise<boolean> {
    if (c.writing) await c.flushed(); // one response in the queue at most
    const status = res.status;
    const isHead = head.method === "HEAD";
    const bodyless = status === 204 || status === 304 || status < 200;
    let text = `HTTP/1.1 ${status} ${REASONS[status] ?? (res.statusText || "")}\r\n`;
    let hasDate = false;
    let declaredLength: string | null = null;
    for (const [name, value] of res.headers) {
      if (HOP_HEADERS.has(name)) {
        if (name === "content-length") declaredLength = value;
        continue;
      }
      if (name === "date") hasDate = true;
      text += `${name}: ${value}\r\n`;
    }
    if (!hasDate) text += `date: ${httpDate()}\r\n`;

    const reader = res.body?.getReader();
    // Collect what the body has at hand: a body read in full gets a Content-Length.
    const chunks: Uint8Array[] = [];
    let total = 0;
    let ended = reader === undefined;
    let pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
    while (!ended && total <= BUFFERED_BODY_BYTES_MAX) {
      const read = reader!.read();
      const r = await Promise.race([read, soon()]);
      if (r === PENDING) {
        pending = read;
        break;
      }
      if (r.done) ended = true;
      else if (r.value.length > 0) {
        chunks.push(r.value);
        total += r.value.length;
      }
    }
    // With a body still to come the request body must be done to know where the next request
    // starts; a body the handler did not read in full ends the connection.
    let keepAlive = keepAliveAsked && (body.done || !ended);
    if (ended || bodyless || isHead) {
      if (!bodyless) {
        const length = isHead && !ended ? declaredLength : String(total);
        if (length !== null) text += `content-length: ${length}\r\n`;
        else keepAlive = false; // a HEAD whose GET length is unknown
      }
      text += connectionHeader(head, keepAlive);
      if (!ended) reader!.cancel().catch(() => {});
      const headBytes = encoder.encode(text);
      // Not awaited: the next request is read while this goes out.
      // A large body is not copied behind its head: the writes go one after the other.
      const written = isHead || bodyless || total === 0
        ? c.write(headBytes)
        : total > COPY_BYTES_MAX
        ? [headBytes, ...chunks].map((b) => c.write(b)).at(-1)!
        : c.write(concatBytes([headBytes, ...chunks], headBytes.length + total));
      written.catch(() => c.close());
      return keepAlive;
    }

    // A stream: chunked for HTTP/1.1, else raw until the connection closes.
    const chunked = head.minor >= 1;
    if (!chunked) keepAlive = false;
    if (chunked) text += "transfer-encoding: chunked\r\n";
    text += connectionHeader(head, keepAlive);
    const headBytes = encoder.encode(text);
    if (chunked && total > COPY_BYTES_MAX) {
      c.write(headBytes);
      for (const chunk of chunks) c.write(frame([chunk], chunk.length));
      await c.flushed();
    } else await c.write(chunked ? concat(headBytes, frame(chunks, total)) : headBytes);
    if (!chunked) { for (const chunk of chunks) await c.write(chunk); }
    // While streaming, a read from the connection notices the client leaving (only once the
    // request body is done: before, reading it is the handler's).
    let gone = false;
    const watchClient = async () => {
      while (!c.closed && !gone) {
        if (!body.done) return;
        if (c.buffered >= this.#headBytesMax) return; // pipelined requests wait their turn
        if (!await c.fill()) {
          gone = true;
          reader!.cancel().catch(() => {});
          return;
        }
      }
    };
    let watching: Promise<void> | undefined;
    try {
      while (true) {
        if (watching === undefined && body.done) watching = watchClient();
        const r = await (pending ?? reader!.read());
        pending = undefined;
        if (r.done) break;
        if (gone) throw new Error("the client closed the connection");
        if (r.value.length === 0) continue;
        if (chunked && r.value.length > COPY_BYTES_MAX) {
          c.write(encoder.encode(r.value.length.toString(16) + "\r\n"));
          c.write(r.value);
          await c.write(CRLF);
        } else await c.write(chunked ? frame([r.value], r.value.length) : r.value);
      }
      if (gone) throw new Error("the client closed the connection");
      if (chunked) await c.write(LAST_CHUNK);
    } catch (e) {
      reader!.cancel().catch(() => {});
      c.close();
      throw e;
    } finally {
      gone = true;
    }
    return keepAlive && body.done;
  }
}

/** The value of header `name` in `fields` (any case), repeated fields joined; null if absent. */
function fieldValue(fields: readonly [string, string][], name: string): string | null {
  let out: string | null = null;
  for (const [n, v] of fields) {
    if (n.length !== name.length || n.toLowerCase() !== name) continue;
    out = out === null ? v : `${out}, ${v}`;
  }
  return out;
}

function closeQuietly(conn: ByteConn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

function tooLarge(max: number): HeadError {
  return new HeadError(431, `Request head is too large: over ${max} bytes`, 3);
}

function connectionHeader(head: Head, keepAlive: boolean): string {
  if (!keepAlive) return "connection: close\r\n\r\n";
  return head.minor === 0 ? "connection: keep-alive\r\n\r\n" : "\r\n";
}

/** One chunk of the chunked transfer coding holding `parts` (nothing when empty). */
function frame(parts: Uint8Array[], length: number): Uint8Array {
  if (length === 0) return new Uint8Array(0);
  const size = encoder.encode(length.toString(16) + "\r\n");
  return concatBytes([size, ...parts, CRLF], size.length + length + 2);
}

/** Index just past the blank line ending a head in `buf[from, to)`, or -1. */
function headEnd(buf: Uint8Array, from: number, to: number): number {
  const view = buf.subarray(from, to);
  let i = view.indexOf(10);
  while (i >= 0) {
    if (view[i + 1] === 10) return from + i + 2;
    if (view[i + 1] === 13 && view[i + 2] === 10) return from + i + 3;
    i = view.indexOf(10, i + 1);
  }
  return -1;
}

function decodeHead(bytes: Uint8Array): string {
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] >= 0x80) {
      // Bytes beyond ASCII are kept one char per byte, as Headers values are byte strings.
      let s = "";
      for (let j = 0; j < bytes.length; j += 4096) {
        s += String.fromCharCode(...bytes.subarray(j, j + 4096));
      }
      return s;
    }
  }
  return asciiDecoder.decode(bytes);
}

function parseHead(buf: Uint8Array, start: number, end: number): Head {
  const lines = decodeHead(buf.subarray(start, end)).split("\n");
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.endsWith("\r")) lines[i] = l.slice(0, -1);
  }
  const m = REQUEST_LINE.exec(lines[0]);
  if (m === null) {
    throw new HeadError(400, `Bad request line: ${JSON.stringify(lines[0].slice(0, 200))}`, 3);
  }
  if (m[3] !== "1" || (m[4] !== "0" && m[4] !== "1")) {
    throw new HeadError(505, `HTTP version not supported: HTTP/${m[3]}.${m[4]}`, 12);
  }
  const minor = Number(m[4]);
  const headers: [string, string][] = [];
  let te: string | null = null;
  let cl: string | null = null;
  let connection = "";
  let expect = "";
  let host: string | null = null;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") continue;
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!TOKEN.test(name)) {
      throw new HeadError(400, `Bad header line: ${JSON.stringify(line.slice(0, 200))}`, 3);
    }
    const value = line.slice(colon + 1).trim();
    headers.push([name, value]);
    // Repeated fields join with ", ", as Headers does.
    switch (name.toLowerCase()) {
      case "transfer-encoding":
        te = te === null ? value : `${te}, ${value}`;
        break;
      case "content-length":
        cl = cl === null ? value : `${cl}, ${value}`;
        break;
      case "connection":
        connection += `,${value.toLowerCase()}`;
        break;
      case "expect":
        expect = value.toLowerCase();
        break;
      case "host":
        host = host === null ? value : `${host}, ${value}`;
        break;
    }
  }
  let bodyLength = 0;
  if (te !== null) {
    if (cl !== null) {
      throw new HeadError(400, "Request has both Content-Length and Transfer-Encoding", 3);
    }
    if (te.trim().toLowerCase() !== "chunked") {
      throw new HeadError(501, `Transfer-Encoding not supported: ${JSON.stringify(te)}`, 12);
    }
    bodyLength = -1;
  } else if (cl !== null) {
    const values = cl.split(",").map((s) => s.trim());
    if (!values.every((v) => v === values[0]) || !/^\d{1,15}$/.test(values[0])) {
      throw new HeadError(400, `Invalid Content-Length: ${JSON.stringify(cl)}`, 3);
    }
    bodyLength = Number(values[0]);
  }
  const keepAlive = minor >= 1
    ? !/(^|,)\s*close\s*(,|$)/.test(connection)
    : /(^|,)\s*keep-alive\s*(,|$)/.test(connection);
  const expectContinue = minor >= 1 && expect === "100-continue";
  return {
    method: m[1],
    target: m[2],
    minor,
    headers,
    host,
    keepAlive,
    bodyLength,
    expectContinue,
  };
}

function urlOf(head: Head, addr: Deno.NetAddr): string {
  if (head.target.startsWith("/")) {
    const host = head.host;
    if (host !== null && !HOST.test(host)) {
      throw new Error(`invalid Host header ${JSON.stringify(host.slice(0, 200))}`);
    }
    const fallback = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
    return `http://${host || `${fallback}:${addr.port}`}${head.target}`;
  }
  if (/^https?:\/\//i.test(head.target)) return head.target;
  throw new Error(`unsupported request target ${JSON.stringify(head.target.slice(0, 200))}`);
}

/** A request body, read from the connection only as the handler reads it. */
class BodyReader {
  readonly #c: Connection;
  readonly #head: Head;
  /** Bytes left of a Content-Length body, or of the current chunk. */
  #left: number;
  #state: "length" | "size" | "data" | "crlf" | "trailer" | "done";
  #continueSent = false;
  #trailerBytes = 0;

  constructor(c: Connection, head: Head) {
    this.#c = c;
    this.#head = head;
    this.#left = head.bodyLength;
    this.#state = head.bodyLength === 0 ? "done" : head.bodyLength > 0 ? "length" : "size";
  }

  /** Whether the whole body has been read off the connection. */
  get done(): boolean {
    return this.#state === "done";
  }

  /** The body for the Request: null, the bytes at hand, or a stream. */
  body(): BodyInit | null {
    if (this.#state === "done") return null;
    const c = this.#c;
    if (this.#state === "length" && !this.#head.expectContinue && c.buffered >= this.#left) {
      const bytes = c.take(this.#left);
      this.#left = 0;
      this.#state = "done";
      return bytes;
    }
    return new ReadableStream<Uint8Array>({
      pull: (controller) => this.#pull(controller),
    }, { highWaterMark: 0 });
  }

  async #pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    const c = this.#c;
    if (this.#head.expectContinue && !this.#continueSent) {
      this.#continueSent = true;
      await c.write(CONTINUE);
    }
    while (true) {
      if (this.#state === "done") {
        controller.close();
        return;
      }
      if (this.#state === "length" || this.#state === "data") {
        if (c.buffered > 0) {
          const bytes = c.take(this.#left);
          this.#left -= bytes.length;
          if (this.#left === 0) this.#state = this.#state === "length" ? "done" : "crlf";
          controller.enqueue(bytes);
          return;
        }
      } else {
        const lineEnd = c.buf.subarray(c.start, c.end).indexOf(10);
        if (lineEnd >= 0) {
          const line = asciiDecoder.decode(c.buf.subarray(c.start, c.start + lineEnd))
            .replace(/\r$/, "");
          c.start += lineEnd + 1;
          this.#line(line);
          continue;
        }
        if (c.buffered > CHUNK_LINE_BYTES_MAX) throw new Error("Chunked body: line too long");
      }
      if (!await c.fill()) {
        throw new Error("the connection closed before the request body ended");
      }
    }
  }

  #line(line: string): void {
    if (this.#state === "crlf") {
      if (line !== "") throw new Error("Chunked body: chunk not followed by CRLF");
      this.#state = "size";
    } else if (this.#state === "size") {
      const size = line.split(";")[0].trim();
      if (!/^[0-9A-Fa-f]{1,13}$/.test(size)) {
        throw new Error(`Chunked body: bad chunk size ${JSON.stringify(line.slice(0, 100))}`);
      }
      this.#left = parseInt(size, 16);
      this.#state = this.#left === 0 ? "trailer" : "data";
    } else if (this.#state === "trailer") {
      this.#trailerBytes += line.length + 2;
      if (this.#trailerBytes > CHUNK_LINE_BYTES_MAX * 16) {
        throw new Error("Chunked body: trailers too large");
      }
      if (line === "") this.#state = "done";
    }
  }
}
