/**
 * gRPC over raftmeta's own HTTP/2 server (src/net/h2.ts): the server side of gRPC's wire protocol
 * for unary, server-streaming and bidirectional methods, with messages (de)serialized by the
 * method definitions of `@grpc/proto-loader` (path, requestStream, responseStream,
 * requestDeserialize, responseSerialize).
 *
 * Handlers see call objects with the part of grpc-js's server call API that src/net/grpc.ts uses,
 * so the same handlers run on either server: `request`, `metadata.get`, `getPeer`, and for
 * streams `write` (false when the queue is long; `drain` follows), `end`, and the events `data`,
 * `end`, `cancelled`, `drain`. Emitting `error` with `{code, details}` ends the call with that
 * status, as in grpc-js.
 *
 * Protocol: a message is a 5-byte prefix (compressed flag, 32-bit length) and the protobuf bytes.
 * Compressed messages are refused (UNIMPLEMENTED; the answer's `grpc-accept-encoding: identity`
 * tells clients not to compress). `grpc-timeout` sets a deadline: past it the call ends with
 * DEADLINE_EXCEEDED and the handler hears `cancelled`. The status goes in trailers (`grpc-status`,
 * `grpc-message` percent-encoded), or in the only header block when nothing was sent.
 *
 * Limits: a received message at most `receiveBytesMax` (RESOURCE_EXHAUSTED beyond, as grpc-js);
 * the messages being received on one connection at most `connectionHeldBytesMax` bytes together
 * (RESOURCE_EXHAUSTED for the stream that passes it); a stream whose reader lets more than the
 * HTTP/2 server's `streamQueuedBytesMax` pile up is ended with RESOURCE_EXHAUSTED.
 *
 * @module
 */

import { EventEmitter } from "node:events";
import { Buffer } from "node:buffer";
import { H2Error, type H2Limits, H2Server, type H2Stream, type H2StreamHandler } from "./h2.ts";
import { encodeHeaders } from "./hpack.ts";
import type { ConnListener } from "./tls.ts";

/** gRPC status codes. */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** A call's outcome: a gRPC status code and its message. */
export interface StatusObject {
  code: number;
  details: string;
}

/** What this layer needs of a proto-loader method definition. */
export interface MethodDefinition {
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  requestDeserialize(bytes: Buffer): unknown;
  responseSerialize(value: unknown): Buffer;
}

/** The call's request metadata. */
export interface CallMetadata {
  /** The values of header `key` (lower case), in order. */
  get(key: string): string[];
}

/** A unary handler's answer: an error status, or null and the response. */
export type UnaryCallback = (error: StatusObject | null, value?: unknown) => void;

/** A method's handler: unary ones answer through the callback, streaming ones through the call. */
export type MethodHandler =
  | ((call: GrpcCall, callback: UnaryCallback) => void)
  | ((call: GrpcCall) => void);

/** One method served: its definition and handler. */
export interface ServedMethod {
  readonly definition: MethodDefinition;
  readonly handler: MethodHandler;
}

/** Options of {@linkcode GrpcH2Server}. */
export interface GrpcH2Options {
  /** Address to listen on when no listener is given. */
  readonly hostname?: string;
  /** Port to listen on when no listener is given (0 picks one). */
  readonly port?: number;
  /** A TLS listener (ALPN "h2"), src/net/tls.ts. */
  readonly listener?: ConnListener;
  /** The methods, by definition path (`/etcdserverpb.KV/Put`). */
  readonly methods: readonly ServedMethod[];
  /** Largest message received (bytes after the prefix). */
  readonly receiveBytesMax: number;
  /** Bytes of messages being received on one connection at once. Default 64 MiB. */
  readonly connectionHeldBytesMax?: number;
  /** The HTTP/2 server's limits. */
  readonly limits?: Partial<H2Limits>;
  /** Hears of connections closed for a protocol error. */
  readonly onConnectionError?: (remote: string, code: number, reason: string) => void;
}

/** Default of {@linkcode GrpcH2Options.connectionHeldBytesMax}. */
export const CONNECTION_HELD_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;

/** Deadline units of `grpc-timeout`, in ms. */
const TIMEOUT_UNITS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000001,
};
/** Longest wait of the deadline timer (setTimeout's limit); it is set again when it fires early. */
const DEADLINE_MS_MAX = 2 ** 31 - 1;

const RESPONSE_HEADERS = encodeHeaders([
  [":status", "200"],
  ["content-type", "application/grpc"],
  ["grpc-accept-encoding", "identity"],
]);
const OK_TRAILERS = encodeHeaders([["grpc-status", "0"]]);

/** gRPC's percent-encoding of grpc-message: UTF-8, bytes outside 0x20–0x7e and "%" escaped. */
export function percentEncode(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let out = "";
  for (const b of bytes) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25
      ? String.fromCharCode(b)
      : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/** The status trailers (or, with `headers`, a trailers-only answer's one block). */
function statusBlock(status: StatusObject, headers: boolean): Uint8Array {
  if (status.code === Status.OK && !headers) return OK_TRAILERS;
  const fields: [string, string][] = headers
    ? [[":status", "200"], ["content-type", "application/grpc"]]
    : [];
  fields.push(["grpc-status", String(status.code)]);
  if (status.details !== "") fields.push(["grpc-message", percentEncode(status.details)]);
  return encodeHeaders(fields);
}

/** The deadline of a `grpc-timeout` value in ms from now; undefined if absent or invalid. */
export function timeoutMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return undefined;
  return Number(m[1]) * TIMEOUT_UNITS[m[2]];
}

function asStatus(e: unknown): StatusObject {
  const o = e as { code?: unknown; details?: unknown; message?: unknown } | null;
  if (o !== null && typeof o === "object" && typeof o.code === "number") {
    return {
      code: o.code,
      details: String(o.details ?? o.message ?? ""),
    };
  }
  return { code: Status.UNKNOWN, details: String(o?.message ?? e) };
}

/** One gRPC call on an HTTP/2 stream; see the module documentation. */
export class GrpcCall extends EventEmitter implements H2StreamHandler {
  /** The request message (unary and server-streaming methods). */
  request: unknown = undefined;
  readonly metadata: CallMetadata;
  /** Whether the call ended before the handler finished (client gone, deadline). */
  cancelled = false;
  readonly #stream: H2Stream;
  readonly #method: MethodDefinition;
  readonly #layer: GrpcH2Server;
  #done = false;
  /** When the deadline passes (ms since the epoch), or Infinity. */
  deadlineAt = Infinity;
  // Message assembly: the prefix so far, then the message body.
  #prefix: Uint8Array | undefined;
  #prefixLen = 0;
  #body: Uint8Array | undefined;
  #bodyLen = 0;
  /** Messages received before the request ended (unary and server streams take one). */
  #received: unknown[] = [];

  constructor(layer: GrpcH2Server, stream: H2Stream, method: MethodDefinition) {
    super();
    this.#layer = layer;
    this.#stream = stream;
    this.#method = method;
    this.metadata = {
      get: (key: string) => {
        const out: string[] = [];
        for (const [n, v] of stream.fields) if (n === key) out.push(v);
        return out;
      },
    };
  }

  /** As grpc-js: an "error" emitted on the call ends it with that status (listeners hear it too). */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === "error") {
      this.finish(asStatus(args[0]));
      if (this.listenerCount("error") === 0) return true;
    }
    return super.emit(event, ...args);
  }

  /** The client's address (host only), for the gateway's identity of the caller. */
  get peerAddress(): string {
    return this.#stream.remoteAddr.hostname;
  }

  /** `ipv4:HOST:PORT` or `ipv6:[HOST]:PORT`, as grpc-js. */
  getPeer(): string {
    const a = this.#stream.remoteAddr;
    return a.hostname.includes(":")
      ? `ipv6:[${a.hostname}]:${a.port}`
      : `ipv4:${a.hostname}:${a.port}`;
  }

  /** @internal The deadline passed: the call ends with DEADLINE_EXCEEDED. */
  expire(): void {
    if (this.#done) return;
    this.finish({ code: Status.DEADLINE_EXCEEDED, details: "Deadline exceeded" });
    this.#cancel();
  }

  #cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.emit("cancelled");
  }

  /** @internal */
  onData(chunk: Uint8Array): void {
    this.receive(chunk);
  }

  /** @internal */
  onEnd(): void {
    this.remoteEnd();
  }

  /** @internal */
  onAbort(): void {
    this.aborted();
  }

  /** @internal */
  onDrain(): void {
    this.emit("drain");
  }

  /** @internal The HTTP/2 stream closed under the call. */
  aborted(): void {
    this.#releaseBody();
    if (this.#done) return;
    this.#done = true;
    this.#layer.deadlines.delete(this);
    this.#cancel();
  }

  #releaseBody(): void {
    if (this.#body !== undefined) {
      this.#stream.conn.heldBytes -= this.#body.length;
      this.#body = undefined;
    }
  }

  /** @internal Takes a chunk of the request's DATA. */
  receive(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length && !this.#done) {
      if (this.#body === undefined) {
        let flag: number;
        let len: number;
        if (this.#prefixLen === 0 && chunk.length - i >= 5) {
          // The whole prefix is in this chunk (the usual case).
          flag = chunk[i];
          len =
            ((chunk[i + 1] << 24) | (chunk[i + 2] << 16) | (chunk[i + 3] << 8) | chunk[i + 4]) >>>
            0;
          i += 5;
        } else {
          this.#prefix ??= new Uint8Array(5);
          const take = Math.min(5 - this.#prefixLen, chunk.length - i);
          this.#prefix.set(chunk.subarray(i, i + take), this.#prefixLen);
          this.#prefixLen += take;
          i += take;
          if (this.#prefixLen < 5) return;
          const p = this.#prefix;
          flag = p[0];
          len = ((p[1] << 24) | (p[2] << 16) | (p[3] << 8) | p[4]) >>> 0;
          this.#prefixLen = 0;
        }
        if (!this.#checkPrefix(flag, len)) return;
        if (chunk.length - i >= len) {
          // The whole message is in this chunk: one copy, nothing held.
          const body = chunk.slice(i, i + len);
          i += len;
          this.#message(body);
          continue;
        }
        this.#stream.conn.heldBytes += len;
        this.#body = new Uint8Array(len);
        this.#bodyLen = 0;
      }
      const body = this.#body;
      const take = Math.min(body.length - this.#bodyLen, chunk.length - i);
      body.set(chunk.subarray(i, i + take), this.#bodyLen);
      this.#bodyLen += take;
      i += take;
      if (this.#bodyLen === body.length) {
        this.#releaseBody();
        this.#message(body);
      }
    }
  }

  /** Whether a message with this prefix may be received (else the call is ended). */
  #checkPrefix(flag: number, len: number): boolean {
    if (flag !== 0) {
      this.#fail(
        Status.UNIMPLEMENTED,
        flag === 1
          ? `Compressed messages are not supported (grpc-encoding ${
            this.metadata.get("grpc-encoding")[0] ?? "none"
          }): send them uncompressed`
          : `Invalid message flag ${flag}`,
      );
      return false;
    }
    if (len > this.#layer.receiveBytesMax) {
      this.#fail(
        Status.RESOURCE_EXHAUSTED,
        `Received message larger than max (${len} vs. ${this.#layer.receiveBytesMax})`,
      );
      return false;
    }
    if (this.#stream.conn.heldBytes + len > this.#layer.connectionHeldBytesMax) {
      this.#fail(
        Status.RESOURCE_EXHAUSTED,
        `Messages being received on this connection would pass ` +
          `${this.#layer.connectionHeldBytesMax} bytes`,
      );
      return false;
    }
    return true;
  }

  #message(body: Uint8Array): void {
    let message: unknown;
    try {
      message = this.#method.requestDeserialize(
        Buffer.from(body.buffer, body.byteOffset, body.length),
      );
    } catch (e) {
      this.#fail(Status.INTERNAL, `Error deserializing request: ${(e as Error).message}`);
      return;
    }
    if (this.#method.requestStream) {
      this.emit("data", message);
    } else if (this.#received.length > 0) {
      this.#fail(Status.UNIMPLEMENTED, "Received a second request message for a unary method");
    } else {
      this.#received.push(message);
    }
  }

  /** @internal The client ended its side. */
  remoteEnd(): void {
    if (this.#done) return;
    if (this.#prefixLen > 0 || this.#body !== undefined) {
      this.#fail(Status.INTERNAL, "The request ended inside a message");
      return;
    }
    if (this.#method.requestStream) {
      this.emit("end");
      return;
    }
    if (this.#received.length !== 1) {
      this.#fail(Status.UNIMPLEMENTED, "The request ended without a message");
      return;
    }
    this.request = this.#received[0];
    this.#received = [];
    this.#layer.invoke(this, this.#method);
  }

  #fail(code: number, details: string): void {
    this.finish({ code, details });
    this.#cancel();
  }

  /** Sends a response message; false when the stream's queue is long (`drain` follows). */
  /** Asks the client to send no more messages for now (its stream window is kept shut). */
  pause(): void {
    this.#stream.pauseReceive();
  }

  /** Lets the client send again (see {@linkcode pause}). */
  resume(): void {
    this.#stream.resumeReceive();
  }

  write(message: unknown): boolean {
    if (this.#done) return false;
    let bytes: Uint8Array;
    try {
      bytes = this.#method.responseSerialize(message);
    } catch (e) {
      this.#fail(Status.INTERNAL, `Error serializing response: ${(e as Error).message}`);
      return false;
    }
    const s = this.#stream;
    if (!s.headersSent) s.respond(RESPONSE_HEADERS);
    const prefix = new Uint8Array(5);
    const n = bytes.length;
    prefix[1] = n >>> 24;
    prefix[2] = (n >>> 16) & 0xff;
    prefix[3] = (n >>> 8) & 0xff;
    prefix[4] = n & 0xff;
    const ok = s.write(prefix, bytes);
    if (s.overflowing) {
      s.dropQueue();
      this.#fail(
        Status.RESOURCE_EXHAUSTED,
        `The client did not read its stream: over ${s.conn.limits.streamQueuedBytesMax} bytes queued`,
      );
      return false;
    }
    return ok;
  }

  /** Ends a streaming call with status OK. */
  end(): void {
    this.finish({ code: Status.OK, details: "" });
  }

  /** @internal Ends the call with `status` (once). */
  finish(status: StatusObject): void {
    if (this.#done) return;
    this.#done = true;
    this.#releaseBody();
    this.#layer.deadlines.delete(this);
    const s = this.#stream;
    s.end(statusBlock(status, !s.headersSent));
  }

  /** @internal A unary answer. */
  answer(error: StatusObject | null, value?: unknown): void {
    if (this.#done) return;
    if (error !== null) {
      this.finish(asStatus(error));
      return;
    }
    this.write(value);
    this.finish({ code: Status.OK, details: "" });
  }
}

/** gRPC methods served on an {@linkcode H2Server}. */
export class GrpcH2Server {
  readonly h2: H2Server;
  readonly receiveBytesMax: number;
  readonly connectionHeldBytesMax: number;
  readonly #methods = new Map<string, ServedMethod>();
  /**
   * Calls with a deadline that have not ended. One timer serves them all: it is set for the
   * earliest deadline, and calls that end only leave the set (no timer per call).
   */
  readonly deadlines = new Set<GrpcCall>();
  #deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  #deadlineTimerAt = Infinity;

  constructor(options: GrpcH2Options) {
    this.receiveBytesMax = options.receiveBytesMax;
    this.connectionHeldBytesMax = options.connectionHeldBytesMax ??
      CONNECTION_HELD_BYTES_MAX_DEFAULT;
    for (const m of options.methods) this.#methods.set(m.definition.path, m);
    this.h2 = new H2Server({
      hostname: options.hostname,
      port: options.port,
      listener: options.listener,
      limits: options.limits,
      onStream: (s) => this.#onStream(s),
      onConnectionError: options.onConnectionError,
    });
  }

  /** Replaces the methods served (streams that started keep theirs). */
  setMethods(methods: readonly ServedMethod[]): void {
    this.#methods.clear();
    for (const m of methods) this.#methods.set(m.definition.path, m);
  }

  /** The address listened on. */
  get addr(): Deno.NetAddr {
    return this.h2.addr;
  }

  #onStream(s: H2Stream): void {
    if (s.fields.length === 0) {
      s.end(statusBlock({
        code: Status.RESOURCE_EXHAUSTED,
        details: `Header list over ${s.conn.limits.headerListBytesMax} bytes`,
      }, true));
      return;
    }
    // One pass over the fields for what is needed here.
    let method: string | undefined;
    let type: string | undefined;
    let path: string | undefined;
    let timeout: string | undefined;
    for (const [n, v] of s.fields) {
      if (n === ":method") method = v;
      else if (n === ":path") path = v;
      else if (n === "content-type") type ??= v;
      else if (n === "grpc-timeout") timeout ??= v;
    }
    if (method !== "POST") {
      s.end(encodeHeaders([[":status", "405"], ["grpc-status", String(Status.UNIMPLEMENTED)]]));
      return;
    }
    if (
      type === undefined ||
      (type !== "application/grpc" && !/^application\/grpc(?:$|[+;])/.test(type))
    ) {
      s.end(encodeHeaders([[":status", "415"], ["grpc-status", String(Status.UNKNOWN)]]));
      return;
    }
    const served = this.#methods.get(path!);
    if (served === undefined) {
      s.end(statusBlock({
        code: Status.UNIMPLEMENTED,
        details: `The server does not implement the method ${path}`,
      }, true));
      return;
    }
    const ms = timeoutMs(timeout);
    if (timeout !== undefined && ms === undefined) {
      // As grpc-go and grpc-js answer a deadline they cannot read.
      s.end(statusBlock({
        code: Status.INTERNAL,
        details: `Invalid grpc-timeout value ${JSON.stringify(timeout.slice(0, 40))}`,
      }, true));
      return;
    }
    const call = new GrpcCall(this, s, served.definition);
    s.handler = call;
    if (ms !== undefined) this.#setDeadline(call, Date.now() + ms);
    if (served.definition.requestStream) this.invoke(call, served.definition);
  }

  #setDeadline(call: GrpcCall, at: number): void {
    call.deadlineAt = at;
    this.deadlines.add(call);
    if (at < this.#deadlineTimerAt) this.#armDeadlineTimer(at);
  }

  #armDeadlineTimer(at: number): void {
    if (this.#deadlineTimer !== undefined) clearTimeout(this.#deadlineTimer);
    this.#deadlineTimerAt = at;
    this.#deadlineTimer = setTimeout(
      () => this.#expireDeadlines(),
      Math.min(DEADLINE_MS_MAX, Math.max(0, at - Date.now())),
    );
  }

  #expireDeadlines(): void {
    this.#deadlineTimer = undefined;
    this.#deadlineTimerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const call of [...this.deadlines]) {
      if (call.deadlineAt <= now) {
        this.deadlines.delete(call);
        call.expire();
      } else if (call.deadlineAt < next) next = call.deadlineAt;
    }
    if (next < Infinity) this.#armDeadlineTimer(next);
  }

  /** @internal Runs the handler of `definition` for `call`. */
  invoke(call: GrpcCall, definition: MethodDefinition): void {
    const served = this.#methods.get(definition.path)!;
    try {
      if (!definition.requestStream && !definition.responseStream) {
        (served.handler as (c: GrpcCall, cb: UnaryCallback) => void)(
          call,
          (e, v) => call.answer(e, v),
        );
      } else {
        (served.handler as (c: GrpcCall) => void)(call);
      }
    } catch (e) {
      call.finish({
        code: Status.INTERNAL,
        details: `Internal error: ${(e as Error)?.message ?? e}`,
      });
    }
  }

  /** Stops listening and closes every connection. */
  close(): Promise<void> {
    if (this.#deadlineTimer !== undefined) clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    this.deadlines.clear();
    return this.h2.close();
  }
}

/** The HTTP/2 error codes, for callers that reset streams. */
export { H2Error };
