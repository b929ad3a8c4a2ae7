/**
 * Record framing and payload codecs shared by WAL segments and snapshot files
 * (docs/wal-format.md has the byte layout). A frame is
 * `length u32 | crc32c u32 | type u8 | payload`, little-endian, where `length` counts the payload
 * and the CRC-32C covers the type byte and the payload.
 *
 * @module
 */

import { crc32c, crc32cUpdate } from "./crc32c.ts";
import type { HardState, RaftLogEntry } from "../raft/types.ts";
import type { SnapshotMeta } from "../raft/storage.ts";

/** Bytes before the payload: length (4), CRC (4), type (1). */
export const RECORD_HEADER_BYTES = 9;
/** Largest payload of a WAL record (16 MiB); a longer length field is impossible. */
export const RECORD_PAYLOAD_BYTES_MAX = 16 * 1024 * 1024;
/** Largest snapshot payload (1 GiB). */
export const SNAPSHOT_PAYLOAD_BYTES_MAX = 1024 * 1024 * 1024;
/** Longest node id, in UTF-8 bytes, a hard state or snapshot may carry. */
export const NODE_ID_BYTES_MAX = 1024;
/** Most voters a snapshot may list. */
export const VOTERS_MAX = 4096;
/** Magic number opening a segment header payload ("RMWL"). */
export const SEGMENT_MAGIC = 0x4c574d52;
/** Magic number opening a snapshot payload ("RMSN"). */
export const SNAPSHOT_MAGIC = 0x4e534d52;
/** Version of the WAL and snapshot formats described in docs/wal-format.md. */
export const FORMAT_VERSION = 1;
/** Version of a snapshot file whose metadata lists learners after the voters. */
export const SNAPSHOT_LEARNERS_VERSION = 2;
/** Version of a snapshot file whose metadata also holds the host's context text (after learners). */
export const SNAPSHOT_CONTEXT_VERSION = 3;
/** Longest context text (UTF-8 bytes) a snapshot's metadata may hold. */
export const SNAPSHOT_CONTEXT_BYTES_MAX = 1024 * 1024;

/** Record type bytes. */
export const RecordType = {
  /** First record of every segment: magic, version, sequence number, first index. */
  segmentHeader: 1,
  /** One log entry. */
  entry: 2,
  /** Term, vote and commit index. */
  hardState: 3,
  /** A snapshot was saved at (index, term); earlier entries may be dropped (see wal.ts). */
  snapshotMarker: 4,
  /** A snapshot file's only record. */
  snapshot: 5,
} as const;

/** One of the {@linkcode RecordType} values. */
export type RecordTypeCode = typeof RecordType[keyof typeof RecordType];

const TWO_POW_32 = 4294967296;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A growable little-endian byte buffer that frames records in place. */
export class ByteWriter {
  #buf: Uint8Array;
  #view: DataView;
  #length = 0;
  #frameStart = -1;

  /** An empty writer with `capacity` bytes reserved. */
  constructor(capacity = 4096) {
    this.#buf = new Uint8Array(capacity);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#length;
  }

  /** The bytes written so far (a view, valid until the next write or `reset`). */
  bytes(): Uint8Array {
    return this.#buf.subarray(0, this.#length);
  }

  /** Forgets everything written, keeping the buffer. */
  reset(): void {
    this.#length = 0;
    this.#frameStart = -1;
  }

  #ensure(n: number): void {
    if (this.#length + n <= this.#buf.length) return;
    let capacity = this.#buf.length * 2;
    while (capacity < this.#length + n) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.bytes());
    this.#buf = grown;
    this.#view = new DataView(grown.buffer);
  }

  /** Appends an unsigned byte. */
  u8(v: number): void {
    this.#ensure(1);
    this.#buf[this.#length++] = v;
  }

  /** Appends an unsigned 16-bit integer. */
  u16(v: number): void {
    this.#ensure(2);
    this.#view.setUint16(this.#length, v, true);
    this.#length += 2;
  }

  /** Appends an unsigned 32-bit integer. */
  u32(v: number): void {
    this.#ensure(4);
    this.#view.setUint32(this.#length, v, true);
    this.#length += 4;
  }

  /** Appends a non-negative safe integer as an unsigned 64-bit integer. */
  u64(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(`Value must be a non-negative safe integer: ${v}`);
    }
    this.#ensure(8);
    this.#view.setUint32(this.#length, v >>> 0, true);
    this.#view.setUint32(this.#length + 4, Math.floor(v / TWO_POW_32), true);
    this.#length += 8;
  }

  /** Appends raw bytes. */
  raw(bytes: Uint8Array): void {
    this.#ensure(bytes.length);
    this.#buf.set(bytes, this.#length);
    this.#length += bytes.length;
  }

  /** Appends a string as a u16 byte length and its UTF-8 bytes (at most `bytesMax`). */
  str(s: string, bytesMax: number): void {
    const b = encoder.encode(s);
    if (b.length > bytesMax) {
      throw new RangeError(`String of ${b.length} bytes exceeds ${bytesMax}: "${s.slice(0, 40)}"`);
    }
    this.u16(b.length);
    this.raw(b);
  }

  /** Starts a frame of `type`: reserves the header; write the payload, then call `endFrame`. */
  beginFrame(type: RecordTypeCode): void {
    if (this.#frameStart >= 0) throw new Error("A frame is already open");
    this.#frameStart = this.#length;
    this.#ensure(RECORD_HEADER_BYTES);
    this.#length += RECORD_HEADER_BYTES;
    this.#buf[this.#frameStart + 8] = type;
  }

  /** Closes the open frame: fills in its length and CRC-32C, checking `payloadBytesMax`. */
  endFrame(payloadBytesMax = RECORD_PAYLOAD_BYTES_MAX): void {
    const start = this.#frameStart;
    if (start < 0) throw new Error("No frame is open");
    const payloadBytes = this.#length - start - RECORD_HEADER_BYTES;
    if (payloadBytes > payloadBytesMax) {
      throw new RangeError(`Record payload of ${payloadBytes} bytes exceeds ${payloadBytesMax}`);
    }
    this.#view.setUint32(start, payloadBytes, true);
    const crc = crc32c(this.#buf.subarray(start + 8, this.#length));
    this.#view.setUint32(start + 4, crc, true);
    this.#frameStart = -1;
  }
}

/** A little-endian reader over a payload; throws a RangeError when it runs past the end. */
export class ByteReader {
  #buf: Uint8Array;
  #view: DataView;
  #pos: number;
  #end: number;

  /** Reads `buf[start, end)`. */
  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    this.#buf = buf;
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.#pos = start;
    this.#end = end;
  }

  /** Bytes left. */
  get remaining(): number {
    return this.#end - this.#pos;
  }

  #take(n: number): number {
    if (this.#pos + n > this.#end) {
      throw new RangeError(`Payload ends ${this.#pos + n - this.#end} bytes early`);
    }
    const at = this.#pos;
    this.#pos += n;
    return at;
  }

  /** Reads an unsigned byte. */
  u8(): number {
    return this.#buf[this.#take(1)];
  }

  /** Reads an unsigned 16-bit integer. */
  u16(): number {
    return this.#view.getUint16(this.#take(2), true);
  }

  /** Reads an unsigned 32-bit integer. */
  u32(): number {
    return this.#view.getUint32(this.#take(4), true);
  }

  /** Reads an unsigned 64-bit integer that must be a safe integer. */
  u64(): number {
    const at = this.#take(8);
    const hi = this.#view.getUint32(at + 4, true);
    if (hi >= 0x200000) throw new RangeError(`64-bit value is not a safe integer`);
    return hi * TWO_POW_32 + this.#view.getUint32(at, true);
  }

  /** Reads a u16-length-prefixed UTF-8 string of at most `bytesMax` bytes. */
  str(bytesMax: number): string {
    const n = this.u16();
    if (n > bytesMax) throw new RangeError(`String of ${n} bytes exceeds ${bytesMax}`);
    return this.utf8(n);
  }

  /** Reads `n` bytes of UTF-8. */
  utf8(n: number): string {
    const at = this.#take(n);
    return decoder.decode(this.#buf.subarray(at, at + n));
  }

  /** The rest of the payload, as a view (no copy). */
  rest(): Uint8Array {
    const at = this.#take(this.remaining);
    return this.#buf.subarray(at, this.#end);
  }

  /** Throws unless the payload was read to its end. */
  done(): void {
    if (this.#pos !== this.#end) throw new RangeError(`${this.remaining} trailing payload bytes`);
  }
}

/** What {@linkcode readFrame} found at an offset. */
export type FrameResult =
  | {
    readonly status: "ok";
    readonly type: number;
    readonly payloadStart: number;
    readonly payloadEnd: number;
  }
  /** Fewer than {@linkcode RECORD_HEADER_BYTES} bytes remain. */
  | { readonly status: "shortHeader" }
  /** The length field exceeds the maximum. */
  | { readonly status: "badLength"; readonly payloadBytes: number }
  /** The payload runs past the end of the buffer. */
  | { readonly status: "shortPayload"; readonly payloadBytes: number }
  /** The CRC does not match. */
  | {
    readonly status: "badCrc";
    readonly stored: number;
    readonly computed: number;
    readonly payloadEnd: number;
  };

/** Reads and checks the frame at `offset` of `buf` (which must be below `buf.length`). */
export function readFrame(buf: Uint8Array, offset: number, payloadBytesMax: number): FrameResult {
  if (buf.length - offset < RECORD_HEADER_BYTES) return { status: "shortHeader" };
  const payloadBytes = (buf[offset] | (buf[offset + 1] << 8) | (buf[offset + 2] << 16) |
    (buf[offset + 3] << 24)) >>> 0;
  if (payloadBytes > payloadBytesMax) return { status: "badLength", payloadBytes };
  const payloadStart = offset + RECORD_HEADER_BYTES;
  const payloadEnd = payloadStart + payloadBytes;
  if (payloadEnd > buf.length) return { status: "shortPayload", payloadBytes };
  const stored = (buf[offset + 4] | (buf[offset + 5] << 8) | (buf[offset + 6] << 16) |
    (buf[offset + 7] << 24)) >>> 0;
  const computed = crc32cUpdate(0, buf.subarray(offset + 8, payloadEnd));
  if (stored !== computed) return { status: "badCrc", stored, computed, payloadEnd };
  return { status: "ok", type: buf[offset + 8], payloadStart, payloadEnd };
}

// ---------------------------------------------------------------------------------------------
// Payloads

/** The payload of a segment header record. */
export interface SegmentHeader {
  /** Position of the segment in the WAL, from 1, without gaps. */
  readonly seq: number;
  /** The log's last index + 1 when the segment was created. */
  readonly firstIndex: number;
}

/** Frames a segment header record. */
export function writeSegmentHeader(w: ByteWriter, h: SegmentHeader): void {
  w.beginFrame(RecordType.segmentHeader);
  w.u32(SEGMENT_MAGIC);
  w.u16(FORMAT_VERSION);
  w.u64(h.seq);
  w.u64(h.firstIndex);
  w.endFrame();
}

/** Decodes a segment header payload. */
export function readSegmentHeader(r: ByteReader): SegmentHeader {
  const magic = r.u32();
  if (magic !== SEGMENT_MAGIC) throw new RangeError(`Bad segment magic 0x${magic.toString(16)}`);
  const version = r.u16();
  if (version !== FORMAT_VERSION) throw new RangeError(`Unsupported WAL version ${version}`);
  const seq = r.u64();
  const firstIndex = r.u64();
  r.done();
  return { seq, firstIndex };
}

const KIND_CODES = { command: 0, noop: 1, config: 2 } as const;
const KINDS = ["command", "noop", "config"] as const;

/** Frames a log entry record. */
export function writeEntry(w: ByteWriter, e: RaftLogEntry): void {
  w.beginFrame(RecordType.entry);
  w.u64(e.index);
  w.u64(e.term);
  w.u8(KIND_CODES[e.kind]);
  w.raw(e.command);
  w.endFrame();
}

/** Decodes a log entry payload; the command is a view into the reader's buffer. */
export function readEntry(r: ByteReader): RaftLogEntry {
  const index = r.u64();
  const term = r.u64();
  const code = r.u8();
  if (code > 2) throw new RangeError(`Unknown entry kind ${code}`);
  const command = r.rest();
  return { index, term, kind: KINDS[code], command };
}

/**
 * Decodes the entry payload `buf[start, end)` through `view` (a DataView over all of `buf`)
 * without allocating a reader: the hot path of recovery. The command is a view into `buf`.
 */
export function decodeEntryAt(
  buf: Uint8Array,
  view: DataView,
  start: number,
  end: number,
): RaftLogEntry {
  if (end - start < 17) throw new RangeError(`Entry payload of ${end - start} bytes is too short`);
  const indexHi = view.getUint32(start + 4, true);
  const termHi = view.getUint32(start + 12, true);
  if (indexHi >= 0x200000 || termHi >= 0x200000) {
    throw new RangeError(`64-bit value is not a safe integer`);
  }
  const index = indexHi * TWO_POW_32 + view.getUint32(start, true);
  const term = termHi * TWO_POW_32 + view.getUint32(start + 8, true);
  const code = buf[start + 16];
  if (code > 2) throw new RangeError(`Unknown entry kind ${code}`);
  // A view made with the constructor: cheaper than subarray in V8 on the recovery path.
  const command = new Uint8Array(buf.buffer, buf.byteOffset + start + 17, end - start - 17);
  return { index, term, kind: KINDS[code], command };
}

/** `votedFor` length meaning "no vote". */
const NO_VOTE = 0xffff;

/** Frames a hard state record. */
export function writeHardState(w: ByteWriter, h: HardState): void {
  w.beginFrame(RecordType.hardState);
  w.u64(h.term);
  w.u64(h.commitIndex);
  if (h.votedFor === undefined) w.u16(NO_VOTE);
  else w.str(h.votedFor, NODE_ID_BYTES_MAX);
  w.endFrame();
}

/** Decodes a hard state payload. */
export function readHardState(r: ByteReader): HardState {
  const term = r.u64();
  const commitIndex = r.u64();
  const voteBytes = r.u16();
  let votedFor: string | undefined;
  if (voteBytes !== NO_VOTE) {
    if (voteBytes > NODE_ID_BYTES_MAX) {
      throw new RangeError(`Vote of ${voteBytes} bytes exceeds ${NODE_ID_BYTES_MAX}`);
    }
    votedFor = r.utf8(voteBytes);
  }
  r.done();
  return { term, votedFor, commitIndex };
}

/** Frames a snapshot marker record. */
export function writeSnapshotMarker(w: ByteWriter, index: number, term: number): void {
  w.beginFrame(RecordType.snapshotMarker);
  w.u64(index);
  w.u64(term);
  w.endFrame();
}

/** Decodes a snapshot marker payload. */
export function readSnapshotMarker(r: ByteReader): { index: number; term: number } {
  const index = r.u64();
  const term = r.u64();
  r.done();
  return { index, term };
}

/**
 * The head of a snapshot file: the frame header and the metadata, with the length and CRC-32C
 * already covering `data`, which the caller writes right after (so the data is never copied).
 */
export function snapshotFrameHead(meta: SnapshotMeta, data: Uint8Array): Uint8Array {
  const learners = meta.learners ?? [];
  if (meta.voters.length > VOTERS_MAX || learners.length > VOTERS_MAX) {
    throw new RangeError(
      `Snapshot lists ${meta.voters.length} voters and ${learners.length} learners, ` +
        `more than ${VOTERS_MAX} of either`,
    );
  }
  const context = meta.context === undefined ? undefined : encoder.encode(meta.context);
  if (context !== undefined && context.length > SNAPSHOT_CONTEXT_BYTES_MAX) {
    throw new RangeError(
      `Snapshot context of ${context.length} bytes exceeds ${SNAPSHOT_CONTEXT_BYTES_MAX}`,
    );
  }
  const w = new ByteWriter(256 + (context?.length ?? 0));
  w.u32(0); // length, filled in below
  w.u32(0); // CRC, filled in below
  w.u8(RecordType.snapshot);
  w.u32(SNAPSHOT_MAGIC);
  // Version 1 has no learners; a snapshot with learners is written as version 2, one with a
  // context as version 3 (learners always listed, then the context).
  w.u16(
    context !== undefined
      ? SNAPSHOT_CONTEXT_VERSION
      : learners.length > 0
      ? SNAPSHOT_LEARNERS_VERSION
      : FORMAT_VERSION,
  );
  w.u64(meta.index);
  w.u64(meta.term);
  w.u16(meta.voters.length);
  for (const v of meta.voters) w.str(v, NODE_ID_BYTES_MAX);
  if (learners.length > 0 || context !== undefined) {
    w.u16(learners.length);
    for (const v of learners) w.str(v, NODE_ID_BYTES_MAX);
  }
  if (context !== undefined) {
    w.u32(context.length);
    w.raw(context);
  }
  const head = w.bytes().slice();
  const payloadBytes = head.length - RECORD_HEADER_BYTES + data.length;
  if (payloadBytes > SNAPSHOT_PAYLOAD_BYTES_MAX) {
    throw new RangeError(
      `Snapshot payload of ${payloadBytes} bytes exceeds ${SNAPSHOT_PAYLOAD_BYTES_MAX}`,
    );
  }
  const crc = crc32cUpdate(crc32cUpdate(0, head.subarray(8)), data);
  const view = new DataView(head.buffer);
  view.setUint32(0, payloadBytes, true);
  view.setUint32(4, crc, true);
  return head;
}

/** Decodes a snapshot payload; the data is a view into the reader's buffer. */
export function readSnapshotPayload(r: ByteReader): { meta: SnapshotMeta; data: Uint8Array } {
  const magic = r.u32();
  if (magic !== SNAPSHOT_MAGIC) throw new RangeError(`Bad snapshot magic 0x${magic.toString(16)}`);
  const version = r.u16();
  if (
    version !== FORMAT_VERSION && version !== SNAPSHOT_LEARNERS_VERSION &&
    version !== SNAPSHOT_CONTEXT_VERSION
  ) {
    throw new RangeError(`Unsupported snapshot version ${version}`);
  }
  const index = r.u64();
  const term = r.u64();
  const voterCount = r.u16();
  if (voterCount > VOTERS_MAX) throw new RangeError(`${voterCount} voters exceed ${VOTERS_MAX}`);
  const voters: string[] = [];
  for (let i = 0; i < voterCount; i++) voters.push(r.str(NODE_ID_BYTES_MAX));
  if (version === FORMAT_VERSION) return { meta: { index, term, voters }, data: r.rest() };
  const learnerCount = r.u16();
  if (learnerCount > VOTERS_MAX) {
    throw new RangeError(`${learnerCount} learners exceed ${VOTERS_MAX}`);
  }
  const learners: string[] = [];
  for (let i = 0; i < learnerCount; i++) learners.push(r.str(NODE_ID_BYTES_MAX));
  if (version === SNAPSHOT_LEARNERS_VERSION) {
    return { meta: { index, term, voters, learners }, data: r.rest() };
  }
  const contextBytes = r.u32();
  if (contextBytes > SNAPSHOT_CONTEXT_BYTES_MAX) {
    throw new RangeError(`Context of ${contextBytes} bytes exceeds ${SNAPSHOT_CONTEXT_BYTES_MAX}`);
  }
  const context = r.utf8(contextBytes);
  const meta = { index, term, voters, ...(learnerCount > 0 ? { learners } : {}), context };
  return { meta, data: r.rest() };
}
