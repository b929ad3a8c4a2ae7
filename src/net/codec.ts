/**
 * The peer wire format: length-prefixed frames carrying Raft messages in a compact binary form
 * (entries' command bytes travel as they are, no base64), and the JSON frames of the handshake.
 * Every decoded message is validated field by field; anything malformed throws
 * {@linkcode FrameError}, and the transport closes that connection.
 *
 * Frame: `u32 length (big-endian)` then `length` bytes of payload; payload byte 0 is the kind.
 *
 * @module
 */

import type { Message, RaftLogEntry } from "../raft/types.ts";
import { ByteWriter, strictText } from "../kv/bytes.ts";
import { SNAPSHOT_CONTEXT_BYTES_MAX } from "../storage/record.ts";

/** A frame or message that does not decode; the connection it came on is closed. */
export class FrameError extends Error {
  /** Makes an error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

/** Frame kinds. */
export const FrameKind = Object.freeze(
  {
    /** Acceptor → dialer: a nonce to prove the secret against (JSON). */
    challenge: 1,
    /** Dialer → acceptor: who it is and the proof (JSON). */
    hello: 2,
    /** Acceptor → dialer: accepted, with the acceptor's proof and state (JSON). */
    welcome: 3,
    /** Acceptor → dialer: refused, with the reason (JSON); the connection closes. */
    refused: 4,
    /** Dialer → acceptor: a batch of Raft messages (binary). */
    messages: 5,
    /** Dialer → acceptor, after the handshake: send me your log, I am rebuilding (JSON). */
    logRequest: 6,
    /** Acceptor → dialer: the log transfer is complete (JSON: term, leaderCommit, lastIndex). */
    logEnd: 7,
  } as const,
);

/** Largest frame payload accepted: a full AppendEntries (1 MiB of commands) and then some. */
export const FRAME_BYTES_MAX = 64 * 1024 * 1024;
/**
 * Largest frame payload accepted before the peer has proved the cluster secret: a handshake frame
 * (ids of up to 1 KiB each, nonces, a MAC). A stranger can make a node hold no more than this.
 */
export const HANDSHAKE_FRAME_BYTES_MAX = 8 * 1024;
/** Most messages in one batch frame. */
export const BATCH_MESSAGES_MAX = 4096;
/** Longest node id or read id on the wire, in UTF-8 bytes. */
const STRING_BYTES_MAX = 1024;
/** Most entries in one AppendEntries on the wire. */
const ENTRIES_MAX = 1_000_000;

const TYPE_TAGS = {
  RequestVote: 1,
  PreVote: 2,
  RequestVoteReply: 3,
  PreVoteReply: 4,
  AppendEntries: 5,
  AppendEntriesReply: 6,
  ReadIndex: 7,
  ReadIndexReply: 8,
  InstallSnapshot: 9,
  InstallSnapshotReply: 10,
  TimeoutNow: 11,
} as const satisfies Record<Message["type"], number>;

/** Entry kinds by their wire code. */
const WIRE_KINDS = ["noop", "command", "config"] as const;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

class Reader {
  readonly #buf: Uint8Array;
  readonly #view: DataView;
  #pos = 0;

  constructor(buf: Uint8Array) {
    this.#buf = buf;
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  #need(n: number, what: string): void {
    if (this.#pos + n > this.#buf.length) {
      throw new FrameError(`Frame ends inside ${what} at byte ${this.#pos}`);
    }
  }
  u8(what: string): number {
    this.#need(1, what);
    return this.#buf[this.#pos++];
  }
  u32(what: string): number {
    this.#need(4, what);
    const v = this.#view.getUint32(this.#pos);
    this.#pos += 4;
    return v;
  }
  num(what: string): number {
    this.#need(8, what);
    const v = this.#view.getFloat64(this.#pos);
    this.#pos += 8;
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new FrameError(`${what} must be a non-negative safe integer: ${v}`);
    }
    return v;
  }
  bool(what: string): boolean {
    const v = this.u8(what);
    if (v > 1) throw new FrameError(`${what} must be 0 or 1: ${v}`);
    return v === 1;
  }
  bytes(what: string, max: number): Uint8Array {
    // A copy, so an entry kept in the log does not pin the whole frame buffer.
    return this.#span(what, max).slice();
  }
  str(what: string, max = STRING_BYTES_MAX): string {
    // Decoded in place: a string keeps no reference to the frame buffer.
    const s = strictText(this.#span(what, max));
    if (s === undefined) throw new FrameError(`${what} is not valid UTF-8`);
    return s;
  }
  /** A length-prefixed field of at most `max` bytes, as a view into the frame. */
  #span(what: string, max: number): Uint8Array {
    const n = this.u32(`${what} length`);
    if (n > max) throw new FrameError(`${what} is too long: ${n} bytes (most ${max})`);
    this.#need(n, what);
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }
  end(): void {
    if (this.#pos !== this.#buf.length) {
      throw new FrameError(`Frame has ${this.#buf.length - this.#pos} bytes after its end`);
    }
  }
}

/**
 * Encodes a batch of messages into one frame (length prefix included). With `into`, the frame is
 * written into that writer (reset first) and the result is a view of its buffer, valid until the
 * writer's next use: a write loop that awaits each frame's write reuses one buffer.
 */
export function encodeMessagesFrame(
  messages: readonly Message[],
  into?: ByteWriter,
): Uint8Array {
  if (messages.length > BATCH_MESSAGES_MAX) {
    throw new RangeError(
      `A batch holds at most ${BATCH_MESSAGES_MAX} messages: ${messages.length}`,
    );
  }
  // Sized up front (entries and snapshot chunks dominate), so a batch is not grown by doubling.
  let estimate = 64;
  for (const m of messages) {
    estimate += 96;
    if (m.type === "AppendEntries") {
      for (const e of m.entries) estimate += 32 + e.command.length;
    } else if (m.type === "InstallSnapshot") {
      estimate += m.data.length + (m.meta.context?.length ?? 0) * 3;
    }
  }
  let w: ByteWriter;
  if (into === undefined) {
    w = new ByteWriter(estimate);
  } else {
    w = into;
    w.reset();
  }
  w.u32(0); // the frame length, written below
  w.u8(FrameKind.messages);
  w.u32(messages.length);
  for (const m of messages) encodeMessage(w, m);
  w.setU32At(0, w.length - 4);
  return w.view();
}

function encodeMessage(w: ByteWriter, m: Message): void {
  w.u8(TYPE_TAGS[m.type]);
  w.str(m.from);
  w.str(m.to);
  w.f64(m.term);
  switch (m.type) {
    case "RequestVote":
    case "PreVote":
      w.f64(m.lastLogIndex);
      w.f64(m.lastLogTerm);
      w.u8(m.transfer === true ? 1 : 0);
      return;
    case "TimeoutNow":
      return;
    case "RequestVoteReply":
    case "PreVoteReply":
      w.f64(m.requestTerm);
      w.u8(m.granted ? 1 : 0);
      return;
    case "AppendEntries":
      w.f64(m.prevLogIndex);
      w.f64(m.prevLogTerm);
      w.f64(m.leaderCommit);
      w.f64(m.readRound);
      w.u32(m.entries.length);
      for (const e of m.entries) {
        w.f64(e.index);
        w.f64(e.term);
        w.u8(e.kind === "noop" ? 0 : e.kind === "command" ? 1 : 2);
        w.bytes(e.command);
      }
      return;
    case "AppendEntriesReply":
      w.f64(m.requestTerm);
      w.u8(m.success ? 1 : 0);
      w.f64(m.matchIndex);
      w.f64(m.rejectedIndex);
      w.f64(m.conflictTerm);
      w.f64(m.conflictIndex);
      w.f64(m.readRound);
      return;
    case "InstallSnapshot":
      w.f64(m.meta.index);
      w.f64(m.meta.term);
      w.u32(m.meta.voters.length);
      for (const v of m.meta.voters) w.str(v);
      w.u32(m.meta.learners?.length ?? 0);
      for (const v of m.meta.learners ?? []) w.str(v);
      // The host's context (src/raft/types.ts SnapshotMeta): a presence byte, then the text.
      w.u8(m.meta.context === undefined ? 0 : 1);
      if (m.meta.context !== undefined) w.str(m.meta.context);
      w.f64(m.totalBytes);
      w.f64(m.offset);
      w.bytes(m.data);
      w.u8(m.done ? 1 : 0);
      return;
    case "InstallSnapshotReply":
      w.f64(m.requestTerm);
      w.f64(m.snapshotIndex);
      w.f64(m.offset);
      w.u8(m.done ? 1 : 0);
      w.f64(m.matchIndex);
      return;
    case "ReadIndex":
      w.str(m.readId);
      return;
    case "ReadIndexReply":
      w.str(m.readId);
      w.f64(m.readIndex);
      w.u8(m.ok ? 1 : 0);
      return;
    default: {
      const never: never = m;
      throw new Error(`Cannot encode message ${JSON.stringify(never)}`);
    }
  }
}

/**
 * Decodes the payload of a messages frame (after the kind byte was checked) and validates every
 * message. Throws {@linkcode FrameError}.
 */
export function decodeMessages(payload: Uint8Array): Message[] {
  const r = new Reader(payload);
  const kind = r.u8("frame kind");
  if (kind !== FrameKind.messages) throw new FrameError(`Not a messages frame: kind ${kind}`);
  const count = r.u32("message count");
  if (count > BATCH_MESSAGES_MAX) {
    throw new FrameError(`Batch has too many messages: ${count} (most ${BATCH_MESSAGES_MAX})`);
  }
  const out: Message[] = [];
  for (let i = 0; i < count; i++) out.push(decodeMessage(r));
  r.end();
  return out;
}

function decodeMessage(r: Reader): Message {
  const tag = r.u8("message type");
  const from = r.str("from");
  const to = r.str("to");
  if (from.length === 0 || to.length === 0) throw new FrameError(`Empty node id in a message`);
  const term = r.num("term");
  switch (tag) {
    case TYPE_TAGS.RequestVote:
    case TYPE_TAGS.PreVote: {
      const lastLogIndex = r.num("lastLogIndex");
      const lastLogTerm = r.num("lastLogTerm");
      const transfer = r.bool("transfer");
      return {
        type: tag === TYPE_TAGS.PreVote ? "PreVote" : "RequestVote",
        from,
        to,
        term,
        lastLogIndex,
        lastLogTerm,
        ...(transfer ? { transfer } : {}),
      };
    }
    case TYPE_TAGS.TimeoutNow:
      return { type: "TimeoutNow", from, to, term };
    case TYPE_TAGS.RequestVoteReply:
    case TYPE_TAGS.PreVoteReply:
      return {
        type: tag === TYPE_TAGS.PreVoteReply ? "PreVoteReply" : "RequestVoteReply",
        from,
        to,
        term,
        requestTerm: r.num("requestTerm"),
        granted: r.bool("granted"),
      };
    case TYPE_TAGS.AppendEntries: {
      const prevLogIndex = r.num("prevLogIndex");
      const prevLogTerm = r.num("prevLogTerm");
      const leaderCommit = r.num("leaderCommit");
      const readRound = r.num("readRound");
      const n = r.u32("entry count");
      if (n > ENTRIES_MAX) throw new FrameError(`Too many entries: ${n}`);
      if (prevLogTerm > term) {
        throw new FrameError(`prevLogTerm ${prevLogTerm} is above the message term ${term}`);
      }
      const entries: RaftLogEntry[] = [];
      let lastTerm = prevLogTerm;
      for (let i = 0; i < n; i++) {
        const index = r.num("entry index");
        const entryTerm = r.num("entry term");
        const kind = r.u8("entry kind");
        const command = r.bytes("entry command", FRAME_BYTES_MAX);
        // The core relies on these: contiguous indexes, terms that never fall and stay at most
        // the leader's term, no-ops without bytes.
        if (index !== prevLogIndex + 1 + i) {
          throw new FrameError(`Entry index ${index} should be ${prevLogIndex + 1 + i}`);
        }
        if (entryTerm < 1 || entryTerm < lastTerm || entryTerm > term) {
          throw new FrameError(`Entry ${index} has term ${entryTerm} out of order`);
        }
        if (kind > 2) throw new FrameError(`Entry ${index} has unknown kind ${kind}`);
        if (kind === 0 && command.length > 0) {
          throw new FrameError(`No-op entry ${index} carries ${command.length} bytes`);
        }
        lastTerm = entryTerm;
        entries.push({ index, term: entryTerm, kind: WIRE_KINDS[kind], command });
      }
      return {
        type: "AppendEntries",
        from,
        to,
        term,
        prevLogIndex,
        prevLogTerm,
        entries,
        leaderCommit,
        readRound,
      };
    }
    case TYPE_TAGS.AppendEntriesReply:
      return {
        type: "AppendEntriesReply",
        from,
        to,
        term,
        requestTerm: r.num("requestTerm"),
        success: r.bool("success"),
        matchIndex: r.num("matchIndex"),
        rejectedIndex: r.num("rejectedIndex"),
        conflictTerm: r.num("conflictTerm"),
        conflictIndex: r.num("conflictIndex"),
        readRound: r.num("readRound"),
      };
    case TYPE_TAGS.InstallSnapshot: {
      const index = r.num("snapshot index");
      const snapshotTerm = r.num("snapshot term");
      const voterCount = r.u32("voter count");
      if (voterCount < 1 || voterCount > 1000) {
        throw new FrameError(`Snapshot voter count out of range: ${voterCount}`);
      }
      const voters: string[] = [];
      for (let i = 0; i < voterCount; i++) voters.push(r.str("voter"));
      const learnerCount = r.u32("learner count");
      if (learnerCount > 1000) {
        throw new FrameError(`Snapshot learner count out of range: ${learnerCount}`);
      }
      const learners: string[] = [];
      for (let i = 0; i < learnerCount; i++) learners.push(r.str("learner"));
      const context = r.bool("snapshot context present")
        ? r.str("snapshot context", SNAPSHOT_CONTEXT_BYTES_MAX)
        : undefined;
      const totalBytes = r.num("totalBytes");
      const offset = r.num("offset");
      const data = r.bytes("snapshot chunk", FRAME_BYTES_MAX);
      const done = r.bool("done");
      if (index < 1 || snapshotTerm < 1 || snapshotTerm > term) {
        throw new FrameError(`Snapshot ${index}:${snapshotTerm} is out of range for term ${term}`);
      }
      if (offset + data.length > totalBytes || (done && offset + data.length !== totalBytes)) {
        throw new FrameError(
          `Snapshot chunk at ${offset} of ${data.length} bytes does not fit ${totalBytes} bytes`,
        );
      }
      return {
        type: "InstallSnapshot",
        from,
        to,
        term,
        meta: {
          index,
          term: snapshotTerm,
          voters,
          ...(learnerCount > 0 ? { learners } : {}),
          ...(context !== undefined ? { context } : {}),
        },
        totalBytes,
        offset,
        data,
        done,
      };
    }
    case TYPE_TAGS.InstallSnapshotReply:
      return {
        type: "InstallSnapshotReply",
        from,
        to,
        term,
        requestTerm: r.num("requestTerm"),
        snapshotIndex: r.num("snapshotIndex"),
        offset: r.num("offset"),
        done: r.bool("done"),
        matchIndex: r.num("matchIndex"),
      };
    case TYPE_TAGS.ReadIndex:
      return { type: "ReadIndex", from, to, term, readId: r.str("readId") };
    case TYPE_TAGS.ReadIndexReply:
      return {
        type: "ReadIndexReply",
        from,
        to,
        term,
        readId: r.str("readId"),
        readIndex: r.num("readIndex"),
        ok: r.bool("ok"),
      };
    default:
      throw new FrameError(`Unknown message type tag ${tag}`);
  }
}

/** Encodes a handshake frame: the kind byte and a JSON object. */
export function encodeJsonFrame(kind: number, body: Record<string, unknown>): Uint8Array {
  const json = encoder.encode(JSON.stringify(body));
  const out = new Uint8Array(5 + json.length);
  new DataView(out.buffer).setUint32(0, json.length + 1);
  out[4] = kind;
  out.set(json, 5);
  return out;
}

/** Decodes a handshake frame of kind `kind` into a JSON object. Throws {@linkcode FrameError}. */
export function decodeJsonFrame(payload: Uint8Array, kinds: readonly number[]): {
  kind: number;
  body: Record<string, unknown>;
} {
  if (payload.length < 1 || !kinds.includes(payload[0])) {
    throw new FrameError(`Unexpected frame kind ${payload[0]} (expected ${kinds.join(" or ")})`);
  }
  if (payload.length > 64 * 1024) throw new FrameError(`Handshake frame too large`);
  let body: unknown;
  try {
    body = JSON.parse(decoder.decode(payload.subarray(1)));
  } catch {
    throw new FrameError(`Handshake frame is not UTF-8 JSON`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new FrameError(`Handshake frame is not a JSON object`);
  }
  return { kind: payload[0], body: body as Record<string, unknown> };
}

/**
 * Splits frames out of a byte stream. Push chunks in; take complete payloads out. A length over
 * {@linkcode FRAME_BYTES_MAX} throws {@linkcode FrameError}.
 */
export class FrameReader {
  #chunks: Uint8Array[] = [];
  #size = 0;
  /** Longest frame payload accepted now (raised once a peer has authenticated). */
  frameBytesMax: number;

  /** A reader refusing frames longer than `frameBytesMax`. */
  constructor(frameBytesMax = FRAME_BYTES_MAX) {
    this.frameBytesMax = frameBytesMax;
  }

  /** Adds bytes read from the connection. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#size += chunk.length;
  }

  /** The next complete frame's payload, or undefined when more bytes are needed. */
  next(): Uint8Array | undefined {
    if (this.#size < 4) return undefined;
    const head = this.#peek(4);
    const length = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
    if (length === 0 || length > this.frameBytesMax) {
      throw new FrameError(`Frame length ${length} is out of range (1..${this.frameBytesMax})`);
    }
    if (this.#size < 4 + length) return undefined;
    const all = this.#take(4 + length);
    return all.subarray(4);
  }

  #peek(n: number): Uint8Array {
    if (this.#chunks[0].length >= n) return this.#chunks[0];
    this.#merge();
    return this.#chunks[0];
  }

  #merge(): void {
    const all = new Uint8Array(this.#size);
    let o = 0;
    for (const c of this.#chunks) {
      all.set(c, o);
      o += c.length;
    }
    this.#chunks = [all];
  }

  #take(n: number): Uint8Array {
    if (this.#chunks[0].length < n) this.#merge();
    const first = this.#chunks[0];
    const out = first.subarray(0, n);
    if (first.length === n) this.#chunks.shift();
    else this.#chunks[0] = first.subarray(n);
    this.#size -= n;
    return out;
  }
}
