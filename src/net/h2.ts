/**
 * A small HTTP/2 server (RFC 9113) for the gRPC port, on the same {@linkcode ConnListener} as the
 * HTTP/1.1 server (a TCP listener, or src/net/tls.ts's TLS listener with ALPN "h2"). It does what
 * gRPC needs and no more: no server push, no priorities (PRIORITY frames are read and ignored), no
 * HTTP/1.1 upgrade (a connection starts with the client preface).
 *
 * What it handles: the preface and SETTINGS (acknowledged both ways), PING, GOAWAY, HEADERS with
 * CONTINUATION (HPACK in src/net/hpack.ts), DATA, RST_STREAM, WINDOW_UPDATE. Flow control both
 * ways: DATA we send waits for the peer's connection and stream windows; what we receive is
 * acknowledged with WINDOW_UPDATE as it is taken. Malformed input ends the connection with GOAWAY
 * and the RFC's error code (or the stream, with RST_STREAM, where the RFC allows).
 *
 * Writes: every frame is appended to one output buffer per connection, written once per
 * event-loop turn (setImmediate), or as soon as the previous write finished; so all the answers
 * produced in one turn go out in one socket write.
 *
 * Limits, all explicit ({@linkcode H2Limits}): streams open at once per connection, header block
 * and header list sizes, the receive windows (which bound what a peer may send ahead), bytes a
 * stream may have queued for a slow reader, bytes queued for the socket before reading stops,
 * connections at once, and the time a new connection has to send its preface.
 *
 * @module
 */

import type { ByteConn, ConnListener } from "./tls.ts";
import { acceptNext } from "./accept.ts";
import { type HeaderField, HpackDecoder, HpackError } from "./hpack.ts";

// Frame types (RFC 9113, 6).
const DATA = 0x0;
const HEADERS = 0x1;
const PRIORITY = 0x2;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PUSH_PROMISE = 0x5;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;

// Flags.
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;

/** HTTP/2 error codes (RFC 9113, 7). */
export const H2Error = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** The client connection preface (RFC 9113, 3.4). */
export const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Bytes of a frame's head (length, type, flags, stream id). */
const FRAME_HEAD_BYTES = 9;
/** Largest window (2^31 - 1). */
const WINDOW_MAX = 0x7fffffff;
/** The default frame size, which we keep as our SETTINGS_MAX_FRAME_SIZE. */
const FRAME_BYTES_DEFAULT = 16_384;
/** The window both sides start with before SETTINGS change it. */
const WINDOW_DEFAULT = 65_535;

/** The limits of an {@linkcode H2Server}; each has a default below. */
export interface H2Limits {
  /** Streams open at once on one connection (our SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly streamsMax: number;
  /** Bytes of a decoded header list (our SETTINGS_MAX_HEADER_LIST_SIZE). */
  readonly headerListBytesMax: number;
  /** Bytes of one header block as sent, HEADERS and CONTINUATION frames together. */
  readonly headerBlockBytesMax: number;
  /** Our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE). */
  readonly streamWindowBytes: number;
  /** Our receive window per connection. */
  readonly connectionWindowBytes: number;
  /** Bytes a stream may have queued (waiting for the peer's window) before it is ended. */
  readonly streamQueuedBytesMax: number;
  /**
   * Bytes waiting for the socket above which the connection stops reading frames and sends no
   * more DATA (answers wait in their streams' queues until the socket drains).
   */
  readonly outputBytesHighWater: number;
  /**
   * Answer bytes queued on all of a connection's streams together (for a client that does not
   * read, or keeps its windows shut); the stream whose write passes it is reset
   * (RST_STREAM ENHANCE_YOUR_CALM, which gRPC clients read as ResourceExhausted).
   */
  readonly connectionQueuedBytesMax: number;
  /** Connections open at once; more are closed at once. */
  readonly connectionsMax: number;
  /** Time a new connection has to send the preface and its SETTINGS. */
  readonly prefaceTimeoutMs: number;
  /**
   * Streams a connection may see reset (by the client, or by this server because of what the
   * client sent) in one burst; past it and {@linkcode resetsPerSecond}, GOAWAY ENHANCE_YOUR_CALM
   * (each reset stream may have started work: Rapid Reset, CVE-2023-44487, and its variant
   * through server-sent resets, CVE-2025-8671).
   */
  readonly resetsBurst: number;
  /** Resets per second a connection may keep up after its burst. */
  readonly resetsPerSecond: number;
  /**
   * A connection with no stream open for this long gets GOAWAY (NO_ERROR) and closes; gRPC clients
   * reconnect on their next call. Idle sockets cannot hold {@linkcode connectionsMax} for ever.
   */
  readonly idleTimeoutMs: number;
}

/** Defaults of {@linkcode H2Limits}. */
export const H2_LIMITS_DEFAULT: H2Limits = {
  streamsMax: 256,
  headerListBytesMax: 16 * 1024,
  headerBlockBytesMax: 64 * 1024,
  streamWindowBytes: 1024 * 1024,
  connectionWindowBytes: 4 * 1024 * 1024,
  streamQueuedBytesMax: 8 * 1024 * 1024,
  outputBytesHighWater: 1024 * 1024,
  connectionQueuedBytesMax: 16 * 1024 * 1024,
  connectionsMax: 1024,
  prefaceTimeoutMs: 10_000,
  resetsBurst: 200,
  resetsPerSecond: 100,
  idleTimeoutMs: 60_000,
};

/** Options of an {@linkcode H2Server}. */
export interface H2Options {
  /** Address to listen on when no `listener` is given (port 0 picks a free port). */
  readonly hostname?: string;
  /** Port to listen on when no `listener` is given. */
  readonly port?: number;
  /** Serve this listener's connections (a TLS port) instead of a TCP listener. */
  readonly listener?: ConnListener;
  /** Limits; each missing one takes its default. */
  readonly limits?: Partial<H2Limits>;
  /** Hears of each new stream, once its request headers arrived. */
  readonly onStream: (stream: H2Stream) => void;
  /** Hears of a connection closed for a protocol error (for logs and tests). */
  readonly onConnectionError?: (remote: string, code: number, reason: string) => void;
}

class ConnectionError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

class StreamError extends Error {
  readonly code: number;
  readonly streamId: number;
  constructor(streamId: number, code: number, message: string) {
    super(message);
    this.streamId = streamId;
    this.code = code;
  }
}

/** What hears of a stream's events (one object, not a closure per event). */
export interface H2StreamHandler {
  /** A chunk of the request body; valid only during the call (copy what is kept). */
  onData(chunk: Uint8Array): void;
  /** The peer ended its side (END_STREAM). */
  onEnd(): void;
  /** The stream closed without `end` from us: reset by the peer or the connection closed. */
  onAbort(code: number): void;
  /** The queue fell to half of the limit again after `write` said it was full. */
  onDrain(): void;
}

const NO_HANDLER: H2StreamHandler = {
  onData() {},
  onEnd() {},
  onAbort() {},
  onDrain() {},
};

/**
 * One request stream. The request's headers are at hand; its DATA arrives through its handler's
 * `onData`, its end through `onEnd`. The answer is a header block (`respond`), DATA (`write`) and a trailer
 * block (`end`); `reset` ends it with RST_STREAM.
 */
export class H2Stream {
  readonly id: number;
  /** The request's header fields, pseudo-headers included. */
  readonly fields: HeaderField[];
  /** The connection's remote address. */
  readonly remoteAddr: Deno.NetAddr;
  /** Hears of the stream's events; set it in the server's `onStream`. */
  handler: H2StreamHandler = NO_HANDLER;

  /** @internal */ readonly conn: H2Connection;
  /** @internal Bytes the peer may still send us on this stream. */
  recvWindow: number;
  /** @internal Bytes taken but not yet given back with WINDOW_UPDATE. */
  recvUnacked = 0;
  /** Whether the handler asked for no more DATA for now ({@linkcode H2Stream.pauseReceive}). */
  receivePaused = false;
  /** @internal Bytes we may still send. */
  sendWindow: number;
  /** @internal DATA waiting for a window. */
  readonly queue: Uint8Array[] = [];
  queueHead = 0;
  queuedBytes = 0;
  /** @internal Trailer block to send once the queue is empty. */
  trailers: Uint8Array | undefined;
  /** @internal Whether `write` reported a full queue (so a drain is due). */
  full = false;
  /** The peer ended its side. */
  remoteEnded = false;
  /** We sent (or queued) our end. */
  localEnded = false;
  /** Fully closed (both ends, or reset). */
  closed = false;
  /** Response headers sent. */
  headersSent = false;

  /** @internal */
  constructor(conn: H2Connection, id: number, fields: HeaderField[]) {
    this.conn = conn;
    this.id = id;
    this.fields = fields;
    this.remoteAddr = conn.conn.remoteAddr;
    this.recvWindow = conn.limits.streamWindowBytes;
    this.sendWindow = conn.peerInitialWindow;
  }

  /** The value of header `name` (lower case), the first if repeated; undefined if absent. */
  header(name: string): string | undefined {
    for (const [n, v] of this.fields) if (n === name) return v;
    return undefined;
  }

  /** Sends the response header block (HPACK-encoded, without END_STREAM). */
  respond(block: Uint8Array): void {
    if (this.closed || this.localEnded || this.headersSent) return;
    this.headersSent = true;
    this.conn.headersFrame(this.id, block, false);
  }

  /**
   * Queues `data` and `more` (kept by reference: do not change them) as DATA. False once the queue holds half
   * the limit or more (then `handler.onDrain` follows); past the limit the stream is ended with the
   * caller-given trailers of {@linkcode H2Stream.overflow}.
   */
  write(data: Uint8Array, more?: Uint8Array): boolean {
    if (this.closed || this.localEnded) return false;
    for (const part of more === undefined ? [data] : [data, more]) {
      if (part.length === 0) continue;
      this.queue.push(part);
      this.queuedBytes += part.length;
      this.conn.queuedBytes += part.length;
    }
    this.conn.sendData(this);
    if (this.conn.queuedBytes > this.conn.limits.connectionQueuedBytesMax) {
      this.conn.resetStream(this, H2Error.ENHANCE_YOUR_CALM, false);
      return false;
    }
    if (this.queuedBytes >= this.conn.limits.streamQueuedBytesMax / 2) {
      this.full = true;
      return false;
    }
    return true;
  }

  /** Whether the queue is past the limit (the caller should end the stream). */
  get overflowing(): boolean {
    return this.queuedBytes > this.conn.limits.streamQueuedBytesMax;
  }

  /** Drops the queued DATA (before ending a stream whose reader is too slow). */
  dropQueue(): void {
    this.conn.queuedBytes -= this.queuedBytes;
    this.queue.length = 0;
    this.queueHead = 0;
    this.queuedBytes = 0;
  }

  /**
   * Ends our side with a trailer block (END_STREAM), after the queued DATA; if the peer has not
   * ended its side, a RST_STREAM (NO_ERROR) follows, as gRPC servers do.
   */
  end(trailers: Uint8Array): void {
    if (this.closed || this.localEnded) return;
    this.localEnded = true;
    this.trailers = trailers;
    this.conn.sendData(this);
  }

  /**
   * Stops giving the peer's stream window back: it may send what the window still allows (at most
   * `streamWindowBytes`) and then waits, until {@linkcode resumeReceive}. For a handler that falls
   * behind the messages it is sent.
   */
  pauseReceive(): void {
    this.receivePaused = true;
  }

  /** Gives the stream window back again (see {@linkcode pauseReceive}). */
  resumeReceive(): void {
    if (!this.receivePaused) return;
    this.receivePaused = false;
    if (!this.closed && !this.remoteEnded) this.conn.giveBackWindow(this);
  }

  /** Resets the stream (RST_STREAM with `code`). */
  reset(code: number = H2Error.CANCEL): void {
    if (this.closed) return;
    this.conn.resetStream(this, code, false);
  }
}

/** Reads big-endian 31-bit stream ids and 32-bit values. */
function u32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

/** Bytes asked of the socket per read. */
const READ_BYTES = 64 * 1024;
/** Longest a closing connection waits for its last frames (GOAWAY) to be written. */
const CLOSE_LINGER_MS = 1000;
/**
 * Recently reset (and recently closed) stream ids remembered, so that frames already in flight are
 * ignored: more than a connection's reset burst ({@linkcode H2Limits.resetsBurst}).
 */
const RESET_IDS_KEPT = 256;

/** One HTTP/2 connection. @internal */
export class H2Connection {
  readonly conn: ByteConn;
  readonly limits: H2Limits;
  readonly #server: H2Server;
  readonly streams = new Map<number, H2Stream>();
  readonly #decoder: HpackDecoder;
  /** Read buffer: unread bytes are `buf[start, end)`. */
  #buf = new Uint8Array(READ_BYTES + 9 + FRAME_BYTES_DEFAULT);
  #start = 0;
  #end = 0;
  /** Output: frames not yet handed to the socket, and a spare buffer to swap with. */
  #out = new Uint8Array(64 * 1024);
  #outLen = 0;
  #spare = new Uint8Array(64 * 1024);
  #writing = false;
  #flushScheduled = false;
  #drainWaiters: (() => void)[] = [];
  closed = false;
  #prefaceSeen = false;
  #settingsSeen = false;
  /** Highest stream id the peer opened. */
  #lastStreamId = 0;
  /** The stream whose header block continues in CONTINUATION frames, and the block so far. */
  /**
   * A header block still arriving: its fragments, their bytes, and the bytes of its frames with
   * their heads (what bounds it).
   */
  #continuing:
    | { id: number; flags: number; parts: Uint8Array[]; bytes: number; frameBytes: number }
    | undefined;
  readonly #resetIds: number[] = [];
  /** What is left of the reset budget ({@linkcode H2Limits.resetsBurst}), and when it was. */
  #resetTokens: number;
  #resetTokensAt = Date.now();
  /** Recently closed stream ids (a HEADERS on one is STREAM_CLOSED; on an id never opened, a
   * PROTOCOL_ERROR). */
  readonly #closedIds: number[] = [];
  /** Peer settings that matter to us. */
  peerInitialWindow = WINDOW_DEFAULT;
  #peerFrameMax = FRAME_BYTES_DEFAULT;
  /** Our connection-level send window. */
  #sendWindow = WINDOW_DEFAULT;
  /** Streams with DATA waiting for the connection's window. */
  readonly #blocked = new Set<H2Stream>();
  /** Answer bytes queued on all streams (bounded by {@linkcode H2Limits.connectionQueuedBytesMax}). */
  queuedBytes = 0;
  #recvWindow: number;
  #recvUnacked = 0;
  #goawayReceived = false;
  #goawaySent = false;
  /** Bytes the layer above holds for this connection (gRPC messages being assembled). */
  heldBytes = 0;

  constructor(server: H2Server, conn: ByteConn, limits: H2Limits) {
    this.#server = server;
    this.conn = conn;
    this.limits = limits;
    this.#decoder = new HpackDecoder(4096, limits.headerListBytesMax);
    this.#recvWindow = limits.connectionWindowBytes;
    this.#resetTokens = limits.resetsBurst;
  }

  get #remote(): string {
    return `${this.conn.remoteAddr.hostname}:${this.conn.remoteAddr.port}`;
  }

  // ---- output ----------------------------------------------------------------------------------

  #reserve(n: number): void {
    if (this.#outLen + n <= this.#out.length) return;
    let size = this.#out.length * 2;
    while (size < this.#outLen + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.#out.subarray(0, this.#outLen));
    this.#out = bigger;
  }

  /** Appends a frame head and returns the offset of its payload. */
  #frameHead(length: number, type: number, flags: number, streamId: number): number {
    this.#reserve(9 + length);
    const o = this.#out;
    let i = this.#outLen;
    o[i++] = length >>> 16;
    o[i++] = (length >>> 8) & 0xff;
    o[i++] = length & 0xff;
    o[i++] = type;
    o[i++] = flags;
    o[i++] = (streamId >>> 24) & 0x7f;
    o[i++] = (streamId >>> 16) & 0xff;
    o[i++] = (streamId >>> 8) & 0xff;
    o[i++] = streamId & 0xff;
    this.#outLen = i + length;
    this.#scheduleFlush();
    return i;
  }

  #put32(at: number, v: number): void {
    const o = this.#out;
    o[at] = (v >>> 24) & 0xff;
    o[at + 1] = (v >>> 16) & 0xff;
    o[at + 2] = (v >>> 8) & 0xff;
    o[at + 3] = v & 0xff;
  }

  /** Sends a header block: HEADERS, and CONTINUATION frames if it is larger than a frame. */
  headersFrame(streamId: number, block: Uint8Array, endStream: boolean): void {
    if (this.closed) return;
    const max = this.#peerFrameMax;
    let off = 0;
    let first = true;
    do {
      const n = Math.min(max, block.length - off);
      const last = off + n === block.length;
      const flags = (last ? END_HEADERS : 0) | (first && endStream ? END_STREAM : 0);
      const at = this.#frameHead(n, first ? HEADERS : CONTINUATION, flags, streamId);
      this.#out.set(block.subarray(off, off + n), at);
      off += n;
      first = false;
    } while (off < block.length);
  }

  #rstFrame(streamId: number, code: number): void {
    if (this.closed) return;
    this.#put32(this.#frameHead(4, RST_STREAM, 0, streamId), code);
  }

  #windowUpdateFrame(streamId: number, increment: number): void {
    if (this.closed) return;
    this.#put32(this.#frameHead(4, WINDOW_UPDATE, 0, streamId), increment);
  }

  #goawayFrame(code: number, reason: string): void {
    if (this.#goawaySent) return;
    this.#goawaySent = true;
    const debug = new TextEncoder().encode(reason.slice(0, 256));
    const at = this.#frameHead(8 + debug.length, GOAWAY, 0, 0);
    this.#put32(at, this.#lastStreamId);
    this.#put32(at + 4, code);
    this.#out.set(debug, at + 8);
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#writing) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  /** Writes what is buffered, then what was buffered meanwhile, until nothing is left. */
  async #flush(): Promise<void> {
    if (this.#writing) return;
    this.#writing = true;
    try {
      while (this.#outLen > 0) {
        const bytes = this.#out.subarray(0, this.#outLen);
        // Frames appended while this write runs go to the other buffer.
        const next = this.#spare;
        this.#spare = this.#out;
        this.#out = next.length >= 64 * 1024 ? next : new Uint8Array(64 * 1024);
        this.#outLen = 0;
        let off = 0;
        while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
        // A buffer that grew for one burst is not kept.
        if (this.#spare.length > 1024 * 1024) this.#spare = new Uint8Array(64 * 1024);
        // Streams that waited for the socket go on (their DATA joins this loop's next write).
        this.#resumeBlocked();
      }
    } catch {
      this.#writing = false;
      this.#close();
      return;
    }
    this.#writing = false;
    for (const w of this.#drainWaiters.splice(0)) w();
  }

  /** @internal When the connection last had no stream open (ms since the epoch), or 0. */
  idleSince = Date.now();

  /** @internal Ends the connection if it has had no stream open for `idleTimeoutMs` by `now`. */
  closeIfIdle(now: number): void {
    if (this.closed || this.streams.size > 0 || this.idleSince === 0) return;
    if (now - this.idleSince < this.limits.idleTimeoutMs) return;
    this.#goawayFrame(H2Error.NO_ERROR, "idle");
    this.#finish();
  }

  /** Sends again for the streams that waited for the connection's window or its socket. */
  #resumeBlocked(): void {
    if (this.#blocked.size === 0 || this.closed) return;
    const blocked = [...this.#blocked];
    this.#blocked.clear();
    for (const s of blocked) this.sendData(s);
  }

  /** Bytes waiting for the socket. */
  get #pendingOutput(): number {
    return this.#outLen;
  }

  // ---- sending DATA ----------------------------------------------------------------------------

  /** Sends what `s` has queued, as far as the windows allow; then its trailers if due. */
  sendData(s: H2Stream): void {
    if (this.closed || s.closed) return;
    while (s.queuedBytes > 0) {
      // The socket counts as one more window: past the high water, DATA waits in the queue.
      const outRoom = this.limits.outputBytesHighWater - this.#outLen;
      const room = Math.min(s.sendWindow, this.#sendWindow, this.#peerFrameMax, outRoom);
      if (room <= 0) {
        if (this.#sendWindow <= 0 || outRoom <= 0) this.#blocked.add(s);
        if (outRoom <= 0) this.#scheduleFlush();
        break;
      }
      const n = Math.min(room, s.queuedBytes);
      const at = this.#frameHead(n, DATA, 0, s.id);
      let filled = 0;
      while (filled < n) {
        const chunk = s.queue[s.queueHead];
        const take = Math.min(chunk.length, n - filled);
        this.#out.set(take === chunk.length ? chunk : chunk.subarray(0, take), at + filled);
        filled += take;
        if (take === chunk.length) {
          s.queue[s.queueHead++] = undefined as unknown as Uint8Array;
          if (s.queueHead === s.queue.length) {
            s.queue.length = 0;
            s.queueHead = 0;
          }
        } else s.queue[s.queueHead] = chunk.subarray(take);
      }
      s.queuedBytes -= n;
      this.queuedBytes -= n;
      s.sendWindow -= n;
      this.#sendWindow -= n;
    }
    if (s.queuedBytes === 0 && s.trailers !== undefined) {
      const t = s.trailers;
      s.trailers = undefined;
      this.headersFrame(s.id, t, true);
      if (s.remoteEnded) this.#closeStream(s);
      else {
        // The answer is complete: the peer need not send the rest of its request.
        this.#rstFrame(s.id, H2Error.NO_ERROR);
        this.#rememberReset(s.id);
        this.#closeStream(s);
      }
      return;
    }
    if (s.full && s.queuedBytes < this.limits.streamQueuedBytesMax / 2) {
      s.full = false;
      s.handler.onDrain();
    }
  }

  // ---- streams ---------------------------------------------------------------------------------

  #rememberReset(id: number): void {
    this.#resetIds.push(id);
    if (this.#resetIds.length > RESET_IDS_KEPT) this.#resetIds.shift();
  }

  #closeStream(s: H2Stream): void {
    if (s.closed) return;
    s.closed = true;
    this.streams.delete(s.id);
    if (this.streams.size === 0) this.idleSince = Date.now();
    this.#closedIds.push(s.id);
    if (this.#closedIds.length > RESET_IDS_KEPT) this.#closedIds.shift();
    this.#blocked.delete(s);
    s.dropQueue();
    if (this.#goawayReceived && this.streams.size === 0) this.#finish();
  }

  /** Resets `s`: RST_STREAM with `code` (unless the peer reset it), and `handler.onAbort`. */
  resetStream(s: H2Stream, code: number, byPeer: boolean): void {
    if (s.closed) return;
    if (!byPeer) {
      this.#rstFrame(s.id, code);
      this.#rememberReset(s.id);
    }
    const aborted = !s.localEnded || s.trailers !== undefined;
    this.#closeStream(s);
    if (aborted) {
      try {
        s.handler.onAbort(code);
      } catch { /* the handler's problem */ }
    }
    if (!this.#spendReset()) {
      this.#fail(H2Error.ENHANCE_YOUR_CALM, "Too many streams reset");
    }
  }

  /** Takes one reset from the connection's budget (a token bucket); false when it is spent. */
  #spendReset(): boolean {
    const now = Date.now();
    const { resetsBurst, resetsPerSecond } = this.limits;
    this.#resetTokens = Math.min(
      resetsBurst,
      this.#resetTokens + (now - this.#resetTokensAt) * resetsPerSecond / 1000,
    );
    this.#resetTokensAt = now;
    this.#resetTokens -= 1;
    return this.#resetTokens >= 0;
  }

  // ---- reading ---------------------------------------------------------------------------------

  /** Serves the connection until it closes. */
  async serve(): Promise<void> {
    // Our SETTINGS first (the server preface), then the larger connection window.
    const settings: [number, number][] = [
      [0x3, this.limits.streamsMax],
      [0x4, this.limits.streamWindowBytes],
      [0x6, this.limits.headerListBytesMax],
    ];
    const at = this.#frameHead(6 * settings.length, SETTINGS, 0, 0);
    for (const [i, [id, v]] of settings.entries()) {
      this.#out[at + 6 * i] = 0;
      this.#out[at + 6 * i + 1] = id;
      this.#put32(at + 6 * i + 2, v);
    }
    if (this.limits.connectionWindowBytes > WINDOW_DEFAULT) {
      this.#windowUpdateFrame(0, this.limits.connectionWindowBytes - WINDOW_DEFAULT);
    }
    const prefaceTimer = setTimeout(() => {
      if (!this.#settingsSeen) this.#close();
    }, this.limits.prefaceTimeoutMs);
    try {
      for (;;) {
        if (this.#end === this.#buf.length) {
          this.#buf.copyWithin(0, this.#start, this.#end);
          this.#end -= this.#start;
          this.#start = 0;
        }
        let n: number | null;
        try {
          n = await this.conn.read(this.#buf.subarray(this.#end));
        } catch {
          n = null;
        }
        if (n === null || this.closed) break;
        this.#end += n;
        this.#parse();
        if (this.closed) break;
        if (this.#start === this.#end) this.#start = this.#end = 0;
        // A peer that sends faster than it reads (PING floods, say) waits for the socket.
        while (this.#pendingOutput > this.limits.outputBytesHighWater && !this.closed) {
          await new Promise<void>((r) => this.#drainWaiters.push(r));
        }
      }
    } catch (e) {
      if (e instanceof ConnectionError) this.#fail(e.code, e.message);
      else this.#fail(H2Error.INTERNAL_ERROR, `Internal error: ${(e as Error)?.message ?? e}`);
    } finally {
      clearTimeout(prefaceTimer);
    }
    this.#finish();
  }

  /** Parses and handles every complete frame in the buffer. */
  #parse(): void {
    const b = this.#buf;
    if (!this.#prefaceSeen) {
      const have = this.#end - this.#start;
      const n = Math.min(have, PREFACE.length);
      for (let i = 0; i < n; i++) {
        if (b[this.#start + i] !== PREFACE[i]) {
          throw new ConnectionError(H2Error.PROTOCOL_ERROR, "Bad connection preface");
        }
      }
      if (have < PREFACE.length) return;
      this.#start += PREFACE.length;
      this.#prefaceSeen = true;
    }
    while (this.#end - this.#start >= 9 && !this.closed) {
      const s = this.#start;
      const length = (b[s] << 16) | (b[s + 1] << 8) | b[s + 2];
      if (length > FRAME_BYTES_DEFAULT) {
        throw new ConnectionError(
          H2Error.FRAME_SIZE_ERROR,
          `Frame of ${length} bytes, over SETTINGS_MAX_FRAME_SIZE ${FRAME_BYTES_DEFAULT}`,
        );
      }
      if (this.#end - s < 9 + length) return;
      const type = b[s + 3];
      const flags = b[s + 4];
      const streamId = u32(b, s + 5) & 0x7fffffff;
      const payload = b.subarray(s + 9, s + 9 + length);
      this.#start = s + 9 + length;
      try {
        this.#frame(type, flags, streamId, payload);
      } catch (e) {
        if (!(e instanceof StreamError)) throw e;
        const st = this.streams.get(e.streamId);
        if (st !== undefined) this.resetStream(st, e.code, false);
        else {
          this.#rstFrame(e.streamId, e.code);
          this.#rememberReset(e.streamId);
        }
      }
    }
  }

  #frame(type: number, flags: number, id: number, p: Uint8Array): void {
    if (!this.#settingsSeen && type !== SETTINGS) {
      throw new ConnectionError(H2Error.PROTOCOL_ERROR, "The first frame must be SETTINGS");
    }
    if (this.#continuing !== undefined && (type !== CONTINUATION || id !== this.#continuing.id)) {
      throw new ConnectionError(H2Error.PROTOCOL_ERROR, "Header block interrupted");
    }
    switch (type) {
      case DATA:
        return this.#onData(flags, id, p);
      case HEADERS:
        return this.#onHeaders(flags, id, p);
      case PRIORITY:
        if (id === 0) throw new ConnectionError(H2Error.PROTOCOL_ERROR, "PRIORITY on stream 0");
        if (p.length !== 5) throw new StreamError(id, H2Error.FRAME_SIZE_ERROR, "PRIORITY size");
        return;
      case RST_STREAM:
        return this.#onReset(id, p);
      case SETTINGS:
        return this.#onSettings(flags, id, p);
      case PUSH_PROMISE:
        throw new ConnectionError(H2Error.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case PING:
        if (id !== 0) throw new ConnectionError(H2Error.PROTOCOL_ERROR, "PING on a stream");
        if (p.length !== 8) throw new ConnectionError(H2Error.FRAME_SIZE_ERROR, "PING size");
        if ((flags & ACK) === 0) {
          const at = this.#frameHead(8, PING, ACK, 0);
          this.#out.set(p, at);
        }
        return;
      case GOAWAY:
        if (id !== 0) throw new ConnectionError(H2Error.PROTOCOL_ERROR, "GOAWAY on a stream");
        if (p.length < 8) throw new ConnectionError(H2Error.FRAME_SIZE_ERROR, "GOAWAY size");
        this.#goawayReceived = true;
        if (this.streams.size === 0) this.#finish();
        return;
      case WINDOW_UPDATE:
        return this.#onWindowUpdate(id, p);
      case CONTINUATION:
        return this.#onContinuation(flags, id, p);
      default:
        return; // unknown frame types are ignored (RFC 9113, 4.1)
    }
  }

  #onSettings(flags: number, id: number, p: Uint8Array): void {
    if (id !== 0) throw new ConnectionError(H2Error.PROTOCOL_ERROR, "SETTINGS on a stream");
    if (flags & ACK) {
      if (p.length !== 0) throw new ConnectionError(H2Error.FRAME_SIZE_ERROR, "SETTINGS ack size");
      return;
    }
    if (p.length % 6 !== 0) throw new ConnectionError(H2Error.FRAME_SIZE_ERROR, "SETTINGS size");
    this.#settingsSeen = true;
    for (let i = 0; i < p.length; i += 6) {
      const key = (p[i] << 8) | p[i + 1];
      const v = u32(p, i + 2);
      if (key === 0x2 && v > 1) {
        throw new ConnectionError(H2Error.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1");
      } else if (key === 0x4) {
        if (v > WINDOW_MAX) {
          throw new ConnectionError(H2Error.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE");
        }
        const delta = v - this.peerInitialWindow;
        this.peerInitialWindow = v;
        for (const s of this.streams.values()) {
          s.sendWindow += delta;
          if (s.sendWindow > WINDOW_MAX) {
            throw new ConnectionError(H2Error.FLOW_CONTROL_ERROR, "A stream window overflowed");
          }
        }
      } else if (key === 0x5) {
        if (v < FRAME_BYTES_DEFAULT || v > 0xffffff) {
          throw new ConnectionError(H2Error.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range");
        }
        this.#peerFrameMax = v;
      }
      // HEADER_TABLE_SIZE: our encoder uses no dynamic table. Unknown settings are ignored.
    }
    this.#frameHead(0, SETTINGS, ACK, 0);
    for (const s of [...this.streams.values()]) this.sendData(s);
  }

  #onWindowUpdate(id: number, p: Uint8Array): void {
    if (p.length !== 4) throw new ConnectionError(H2Error.FRAME_SIZE_ERROR, "WINDOW_UPDATE size");
    const inc = u32(p, 0) & 0x7fffffff;
    if (id === 0) {
      if (inc === 0) throw new ConnectionError(H2Error.PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
      this.#sendWindow += inc;
      if (this.#sendWindow > WINDOW_MAX) {
        throw new ConnectionError(H2Error.FLOW_CONTROL_ERROR, "Connection window over 2^31-1");
      }
      this.#resumeBlocked();
      return;
    }
    if (id > this.#lastStreamId) {
      throw new ConnectionError(H2Error.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${id}`);
    }
    const s = this.streams.get(id);
    if (inc === 0) throw new StreamError(id, H2Error.PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
    if (s === undefined) return; // a closed stream: allowed
    s.sendWindow += inc;
    if (s.sendWindow > WINDOW_MAX) {
      throw new StreamError(id, H2Error.FLOW_CONTROL_ERROR, "Stream window over 2^31-1");
    }
    this.sendData(s);
  }

  /** @internal A WINDOW_UPDATE for what `s` took, once it is half a window (not while paused). */
  giveBackWindow(s: H2Stream): void {
    if (s.receivePaused || s.recvUnacked < this.limits.streamWindowBytes / 2 || this.closed) return;
    this.#windowUpdateFrame(s.id, s.recvUnacked);
    s.recvWindow += s.recvUnacked;
    s.recvUnacked = 0;
    this.#scheduleFlush();
  }

  #onReset(id: number, p: Uint8Array): void {
    if (id === 0) throw new ConnectionError(H2Error.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    if (p.length !== 4) throw new ConnectionError(H2Error.FRAME_SIZE_ERROR, "RST_STREAM size");
    if (id > this.#lastStreamId) {
      throw new ConnectionError(H2Error.PROTOCOL_ERROR, `RST_STREAM on idle stream ${id}`);
    }
    const s = this.streams.get(id);
    if (s !== undefined) this.resetStream(s, u32(p, 0), true);
  }

  /** Strips padding (and the priority fields of HEADERS) from a payload. */
  #unpad(flags: number, p: Uint8Array, priority: boolean): Uint8Array {
    let start = 0;
    let end = p.length;
    if (flags & PADDED) {
      if (p.length < 1) throw new ConnectionError(H2Error.FRAME_SIZE_ERROR, "Padded frame size");
      start = 1;
      end -= p[0];
    }
    if (priority) start += 5;
    if (end < start) {
      throw new ConnectionError(H2Error.PROTOCOL_ERROR, "Padding longer than the frame");
    }
    return p.subarray(start, end);
  }

  #onData(flags: number, id: number, p: Uint8Array): void {
    if (id === 0) throw new ConnectionError(H2Error.PROTOCOL_ERROR, "DATA on stream 0");
    // The whole frame counts against the connection window, whatever becomes of it.
    this.#recvWindow -= p.length;
    if (this.#recvWindow < 0) {
      throw new ConnectionError(H2Error.FLOW_CONTROL_ERROR, "DATA past the connection window");
    }
    this.#take(p.length);
    const data = this.#unpad(flags, p, false);
    const s = this.streams.get(id);
    if (s === undefined) {
      if (id > this.#lastStreamId) {
        throw new ConnectionError(H2Error.PROTOCOL_ERROR, `DATA on idle stream ${id}`);
      }
      if (this.#resetIds.includes(id)) return; // in flight when we reset it
      throw new StreamError(id, H2Error.STREAM_CLOSED, `DATA on closed stream ${id}`);
    }
    if (s.remoteEnded) {
      throw new StreamError(id, H2Error.STREAM_CLOSED, `DATA after END_STREAM on ${id}`);
    }
    s.recvWindow -= p.length;
    if (s.recvWindow < 0) {
      throw new StreamError(id, H2Error.FLOW_CONTROL_ERROR, "DATA past the stream window");
    }
    // Taken at once (the gRPC layer copies what it keeps): the window is given back, unless the
    // handler paused the stream.
    s.recvUnacked += p.length;
    if ((flags & END_STREAM) === 0) this.giveBackWindow(s);
    if (data.length > 0) {
      try {
        s.handler.onData(data);
      } catch (e) {
        throw new StreamError(
          id,
          H2Error.INTERNAL_ERROR,
          `Handler failed: ${(e as Error)?.message}`,
        );
      }
    }
    if (flags & END_STREAM) this.#remoteEnd(s);
  }

  /** Gives `n` received bytes back to the connection window, in batches. */
  #take(n: number): void {
    this.#recvUnacked += n;
    if (this.#recvUnacked >= this.limits.connectionWindowBytes / 2) {
      this.#windowUpdateFrame(0, this.#recvUnacked);
      this.#recvWindow += this.#recvUnacked;
      this.#recvUnacked = 0;
    }
  }

  #remoteEnd(s: H2Stream): void {
    if (s.closed) return;
    s.remoteEnded = true;
    try {
      s.handler.onEnd();
    } catch (e) {
      throw new StreamError(
        s.id,
        H2Error.INTERNAL_ERROR,
        `Handler failed: ${(e as Error)?.message}`,
      );
    } finally {
      if (s.localEnded && s.trailers === undefined && !s.closed) this.#closeStream(s);
    }
  }

  #onHeaders(flags: number, id: number, p: Uint8Array): void {
    if (id === 0) throw new ConnectionError(H2Error.PROTOCOL_ERROR, "HEADERS on stream 0");
    const fragment = this.#unpad(flags, p, (flags & PRIORITY_FLAG) !== 0);
    if ((flags & END_HEADERS) === 0) {
      this.#continuing = {
        id,
        flags,
        parts: [fragment.slice()],
        bytes: fragment.length,
        frameBytes: FRAME_HEAD_BYTES + fragment.length,
      };
      if (fragment.length > this.limits.headerBlockBytesMax) this.#blockTooLarge();
      return;
    }
    this.#headerBlock(id, flags, fragment);
  }

  #onContinuation(flags: number, id: number, p: Uint8Array): void {
    const c = this.#continuing;
    if (c === undefined || c.id !== id) {
      throw new ConnectionError(H2Error.PROTOCOL_ERROR, "CONTINUATION without HEADERS");
    }
    // Each frame counts its 9-byte head too, so empty CONTINUATION frames cannot go on forever.
    c.bytes += p.length;
    c.frameBytes += FRAME_HEAD_BYTES + p.length;
    if (c.frameBytes > this.limits.headerBlockBytesMax) this.#blockTooLarge();
    if (p.length > 0) c.parts.push(p.slice());
    if ((flags & END_HEADERS) === 0) return;
    this.#continuing = undefined;
    const block = new Uint8Array(c.bytes);
    let off = 0;
    for (const part of c.parts) {
      block.set(part, off);
      off += part.length;
    }
    this.#headerBlock(id, c.flags, block);
  }

  #blockTooLarge(): never {
    throw new ConnectionError(
      H2Error.ENHANCE_YOUR_CALM,
      `Header block over ${this.limits.headerBlockBytesMax} bytes`,
    );
  }

  /** A complete header block: a new stream's request headers, or trailers. */
  #headerBlock(id: number, flags: number, block: Uint8Array): void {
    let decoded;
    try {
      decoded = this.#decoder.decode(block);
    } catch (e) {
      if (e instanceof HpackError) {
        throw new ConnectionError(H2Error.COMPRESSION_ERROR, `HPACK: ${e.message}`);
      }
      throw e;
    }
    const existing = this.streams.get(id);
    if (existing !== undefined) {
      // Trailers: they must end the stream.
      if (existing.remoteEnded) {
        throw new StreamError(id, H2Error.STREAM_CLOSED, `HEADERS after END_STREAM on ${id}`);
      }
      if ((flags & END_STREAM) === 0) {
        throw new StreamError(id, H2Error.PROTOCOL_ERROR, "Trailers without END_STREAM");
      }
      this.#remoteEnd(existing);
      return;
    }
    if (id <= this.#lastStreamId) {
      if (this.#resetIds.includes(id)) return;
      if (this.#closedIds.includes(id)) {
        throw new ConnectionError(H2Error.STREAM_CLOSED, `HEADERS on closed stream ${id}`);
      }
      // An id below one already used that never opened a stream (RFC 9113, 5.1.1).
      throw new ConnectionError(H2Error.PROTOCOL_ERROR, `Stream id ${id} is not increasing`);
    }
    if (id % 2 === 0) {
      throw new ConnectionError(H2Error.PROTOCOL_ERROR, `Client stream id ${id} is even`);
    }
    this.#lastStreamId = id;
    if (this.#goawaySent || this.streams.size >= this.limits.streamsMax) {
      throw new StreamError(id, H2Error.REFUSED_STREAM, "Too many streams");
    }
    const s = new H2Stream(this, id, decoded.fields);
    this.streams.set(id, s);
    this.idleSince = 0;
    if (decoded.tooLarge) {
      s.remoteEnded = (flags & END_STREAM) !== 0;
      this.#server.headerListTooLarge(s);
      return;
    }
    if (!validRequestFields(decoded.fields)) {
      throw new StreamError(id, H2Error.PROTOCOL_ERROR, "Malformed request headers");
    }
    try {
      this.#server.onStream(s);
    } catch (e) {
      throw new StreamError(id, H2Error.INTERNAL_ERROR, `Handler failed: ${(e as Error)?.message}`);
    }
    if (flags & END_STREAM) this.#remoteEnd(s);
  }

  // ---- closing ---------------------------------------------------------------------------------

  /** Ends the connection after a connection error: GOAWAY with `code`, then close. */
  #fail(code: number, reason: string): void {
    if (this.closed) return;
    this.#server.connectionError(this.#remote, code, reason);
    this.#goawayFrame(code, reason);
    this.#finish();
  }

  /** Closes once what is buffered is written (or after {@linkcode CLOSE_LINGER_MS}). */
  #finish(): void {
    if (this.closed) return;
    if (this.#outLen === 0 && !this.#writing) {
      this.#close();
      return;
    }
    const timer = setTimeout(() => this.#close(), CLOSE_LINGER_MS);
    this.#drainWaiters.push(() => {
      clearTimeout(timer);
      this.#close();
    });
    this.#flush().catch(() => {});
  }

  /** Starts a graceful end: GOAWAY (NO_ERROR) and close when the streams are done. */
  goaway(): void {
    if (this.closed) return;
    this.#goawayFrame(H2Error.NO_ERROR, "");
    if (this.streams.size === 0) this.#finish();
  }

  #close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch { /* closed */ }
    for (const s of [...this.streams.values()]) {
      this.#closeStream(s);
      try {
        s.handler.onAbort(H2Error.CANCEL);
      } catch { /* the handler's problem */ }
    }
    for (const w of this.#drainWaiters.splice(0)) w();
  }

  /** Closes now. */
  destroy(): void {
    this.#close();
  }
}

/**
 * Whether the request's header fields are well-formed (RFC 9113, 8.3): pseudo-headers first,
 * known, not repeated; :method, :scheme and :path present (no CONNECT here); names in lower case;
 * no connection-specific fields.
 */
function validRequestFields(fields: HeaderField[]): boolean {
  let regular = false;
  // Bits: :method 1, :scheme 2, :path 4, :authority 8.
  let seen = 0;
  for (let i = 0; i < fields.length; i++) {
    const name = fields[i][0];
    if (name.length === 0 || !validFieldValue(fields[i][1])) return false;
    if (name.charCodeAt(0) === 0x3a) {
      const bit = name === ":method"
        ? 1
        : name === ":scheme"
        ? 2
        : name === ":path"
        ? 4
        : name === ":authority"
        ? 8
        : 0;
      if (regular || bit === 0 || (seen & bit) !== 0) return false;
      seen |= bit;
      continue;
    }
    regular = true;
    // No upper case, controls, space, DEL or bytes past ASCII in a name (RFC 9113, 8.2.1).
    for (let k = 0; k < name.length; k++) {
      const c = name.charCodeAt(k);
      if (c <= 0x20 || (c >= 0x41 && c <= 0x5a) || c >= 0x7f) return false;
    }
    if (
      name === "connection" || name === "keep-alive" || name === "proxy-connection" ||
      name === "transfer-encoding" || name === "upgrade"
    ) return false;
    if (name === "te" && fields[i][1] !== "trailers") return false;
  }
  return (seen & 7) === 7;
}

/**
 * Whether a field value is well formed (RFC 9113, 8.2.1): no NUL, CR or LF, and no space or tab at
 * either end (what could otherwise split a header or a log line further on).
 */
function validFieldValue(value: string): boolean {
  const n = value.length;
  if (n === 0) return true;
  const first = value.charCodeAt(0);
  const last = value.charCodeAt(n - 1);
  if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) return false;
  for (let k = 0; k < n; k++) {
    const c = value.charCodeAt(k);
    if (c === 0x00 || c === 0x0a || c === 0x0d) return false;
  }
  return true;
}

/** An HTTP/2 server; see the module documentation. */
export class H2Server {
  /** The address listened on. */
  readonly addr: Deno.NetAddr;
  readonly limits: H2Limits;
  readonly #listener: ConnListener;
  readonly #options: H2Options;
  readonly #connections = new Set<H2Connection>();
  readonly #accepting: Promise<void>;
  readonly #idleSweep: ReturnType<typeof setInterval>;
  #stopping = false;

  constructor(options: H2Options) {
    this.#options = options;
    this.limits = { ...H2_LIMITS_DEFAULT, ...options.limits };
    for (const [name, v] of Object.entries(this.limits)) {
      if (!Number.isSafeInteger(v) || v < 1) {
        throw new Error(`H2Server: ${name} must be a positive integer: ${v}`);
      }
    }
    if (this.limits.streamWindowBytes > WINDOW_MAX) {
      throw new Error(`H2Server: streamWindowBytes must be at most ${WINDOW_MAX}`);
    }
    if (
      this.limits.connectionWindowBytes > WINDOW_MAX ||
      this.limits.connectionWindowBytes < WINDOW_DEFAULT
    ) {
      throw new Error(
        `H2Server: connectionWindowBytes must be in [${WINDOW_DEFAULT}, ${WINDOW_MAX}]`,
      );
    }
    this.#listener = options.listener ??
      Deno.listen({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
    this.addr = this.#listener.addr;
    this.#accepting = this.#accept();
    // Idle connections are looked for a few times per idle timeout (at most once a second).
    this.#idleSweep = setInterval(() => {
      const now = Date.now();
      for (const c of this.#connections) c.closeIfIdle(now);
    }, Math.max(10, Math.min(1000, Math.floor(this.limits.idleTimeoutMs / 4))));
  }

  /** Open connections. */
  get connections(): number {
    return this.#connections.size;
  }

  /** @internal */
  onStream(s: H2Stream): void {
    this.#options.onStream(s);
  }

  /** @internal A stream whose header list is over the limit: handed on with no fields. */
  headerListTooLarge(s: H2Stream): void {
    s.fields.length = 0;
    this.#options.onStream(s);
  }

  /** @internal */
  connectionError(remote: string, code: number, reason: string): void {
    this.#options.onConnectionError?.(remote, code, reason);
  }

  async #accept(): Promise<void> {
    for (;;) {
      const conn = await acceptNext(this.#listener, () => this.#stopping);
      if (conn === undefined) return;
      if (this.#stopping || this.#connections.size >= this.limits.connectionsMax) {
        try {
          conn.close();
        } catch { /* closed */ }
        continue;
      }
      const c = new H2Connection(this, conn, this.limits);
      this.#connections.add(c);
      c.serve().catch(() => {}).finally(() => this.#connections.delete(c));
    }
  }

  /** Stops listening and closes every connection (open streams are cut). */
  async close(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#idleSweep);
    try {
      this.#listener.close();
    } catch { /* closed */ }
    for (const c of this.#connections) c.destroy();
    this.#connections.clear();
    await this.#accepting;
  }
}
