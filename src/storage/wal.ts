/**
 * The write-ahead log: framed records in segment files
 * `wal-<seq, 16 hex digits>-<first index, 16 hex digits>.log` in the data directory
 * (docs/wal-format.md has the bytes).
 *
 * Replay rules, in the order records were written:
 * - An entry record at index `i` truncates every entry at or after `i` and appends itself
 *   (a Raft follower's suffix replacement is simply appended; the later record wins). An `i`
 *   beyond the last index + 1 is a gap, which is corruption.
 * - A hard state record replaces the hard state.
 * - A snapshot marker `(index, term)` keeps the log when it holds `index` with `term` or starts
 *   after `index` (Raft §7: retain the entries following a matching entry); otherwise it drops
 *   every entry, and the log continues at `index + 1`.
 * - Every segment starts with a header, then the hard state and the last snapshot marker as of
 *   its creation, so the oldest segments can be deleted after a snapshot.
 * - A torn record at the very end of the last segment (short header, short payload, or a bad
 *   checksum on the final record) is cut off and kept in a side file `<segment>.torn-<offset>`.
 *   So is everything from a record header of zeros on in the last segment: a crash that kept a
 *   later unsynced write but lost an earlier one (the tip check still refuses synced bytes lost).
 *   Damage anywhere else, and a length above the maximum anywhere, throws a WalCorruptionError.
 *
 * @module
 */

import type { HardState, RaftLogEntry } from "../raft/types.ts";
import { invariant } from "../raft/log.ts";
import { crc32c } from "./crc32c.ts";
import { WalCorruptionError } from "./errors.ts";
import { type Fs, type FsFile, joinPath } from "./fs.ts";
import {
  ByteReader,
  ByteWriter,
  decodeEntryAt,
  type FrameResult,
  readFrame,
  readHardState,
  readSegmentHeader,
  readSnapshotMarker,
  RECORD_HEADER_BYTES,
  RECORD_PAYLOAD_BYTES_MAX,
  RecordType,
  writeEntry,
  writeHardState,
  writeSegmentHeader,
  writeSnapshotMarker,
} from "./record.ts";

/** Default size past which the WAL starts a new segment (64 MiB). */
export const SEGMENT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/** Most bytes one `append` may write (a segment may exceed its limit by at most this much). */
export const BATCH_BYTES_MAX = 256 * 1024 * 1024;
/** Most side files for torn tails of one segment at one offset (`.torn-<offset>`, `-1`, ...). */
const SIDE_FILE_ATTEMPTS_MAX = 100;

const SEGMENT_NAME = /^wal-([0-9a-f]{16})-([0-9a-f]{16})\.log$/;

/**
 * The WAL tip file: after every fdatasync of a segment the WAL appends (segment seq, synced bytes)
 * here, unsynced. It lets replay tell a torn write (bytes past the last sync) from a segment cut
 * shorter or deleted after its records were synced, and so acknowledged.
 */
export const TIP_FILE = "wal.tip";
/** Bytes of one tip record: seq u64, synced bytes u64, CRC-32C u32 of the 16 before. */
const TIP_RECORD_BYTES = 20;
/** The tip file starts over once it holds this many bytes. */
const TIP_FILE_BYTES_MAX = 4096;

/** The last synced size of a segment, as the tip file recorded it. */
export interface WalTip {
  /** Sequence number of the segment. */
  readonly seq: number;
  /** Bytes of it that were synced. */
  readonly bytes: number;
}

/** The last whole, valid record of a tip file, if any (a torn or stale tip only weakens checks). */
export function readTip(fs: Fs, dir: string): WalTip | undefined {
  const path = joinPath(dir, TIP_FILE);
  if (!fs.exists(path)) return undefined;
  const buf = fs.readFile(path);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let tip: WalTip | undefined;
  for (let at = 0; at + TIP_RECORD_BYTES <= buf.length; at += TIP_RECORD_BYTES) {
    if (crc32c(buf.subarray(at, at + 16)) !== view.getUint32(at + 16, true)) continue;
    const seq = view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
    const bytes = view.getUint32(at + 8, true) + view.getUint32(at + 12, true) * 2 ** 32;
    tip = { seq, bytes };
  }
  return tip;
}

function encodeTip(tip: WalTip): Uint8Array {
  const out = new Uint8Array(TIP_RECORD_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, tip.seq % 2 ** 32, true);
  view.setUint32(4, Math.floor(tip.seq / 2 ** 32), true);
  view.setUint32(8, tip.bytes % 2 ** 32, true);
  view.setUint32(12, Math.floor(tip.bytes / 2 ** 32), true);
  view.setUint32(16, crc32c(out.subarray(0, 16)), true);
  return out;
}

/** The name of the segment with sequence number `seq` whose first entry index is `firstIndex`. */
export function segmentName(seq: number, firstIndex: number): string {
  return `wal-${hex16(seq)}-${hex16(firstIndex)}.log`;
}

/** `n` as 16 lowercase hex digits. */
export function hex16(n: number): string {
  return n.toString(16).padStart(16, "0");
}

/** A snapshot marker: the log up to `index` (of `term`) is in a snapshot. */
export interface SnapshotMark {
  /** Last index the snapshot covers. */
  readonly index: number;
  /** Term of that entry. */
  readonly term: number;
}

/** A segment file of the WAL. */
export interface SegmentInfo {
  /** File name within the data directory. */
  readonly name: string;
  /** Sequence number, from 1 without gaps. */
  readonly seq: number;
  /** The log's last index + 1 when the segment was created. */
  readonly firstIndex: number;
}

/** A torn tail found (and, by {@linkcode Wal.open}, cut off) at the end of the last segment. */
export interface TornTail {
  /** Path of the segment. */
  readonly file: string;
  /** Byte offset where the torn record starts; the segment is cut here. */
  readonly offset: number;
  /** Number of bytes cut. */
  readonly bytes: number;
  /** Why the record is torn, e.g. "payload of 300 bytes runs past the end". */
  readonly reason: string;
  /** Path of the side file holding the cut bytes (set once cut). */
  readonly sideFile?: string;
}

/** Everything replaying the WAL yields. */
export interface WalScan {
  /** The segments, oldest first. */
  readonly segments: SegmentInfo[];
  /** The last hard state recorded. */
  readonly hardState: HardState;
  /** The last snapshot marker recorded, if any. */
  readonly snapshotMark: SnapshotMark | undefined;
  /** The log entries, contiguous, starting at `firstIndex`. */
  readonly entries: RaftLogEntry[];
  /** Index of `entries[0]`, or, when empty, the index the next entry would take. */
  readonly firstIndex: number;
  /** Size in bytes of the last segment, without any torn tail. */
  readonly lastSegmentBytes: number;
  /** A torn tail at the end of the last segment, if one was found. */
  readonly tornTail: TornTail | undefined;
  /** The index range and terms of `entries` (owned by whoever opens the WAL next). */
  readonly shape: LogShape;
  /**
   * With `repair`: damage that was accepted instead of refused (synced records missing), each as
   * "file at byte offset: what". The records past it are lost.
   */
  readonly repaired: readonly string[];
}

/** Options of {@linkcode scanWal}. */
export interface ScanOptions {
  /**
   * Accept damage at the end of the WAL instead of refusing to start: cut the last segment at a
   * bad record, and go on when synced records or whole segments at the end are missing. Entries
   * the node had acknowledged may be lost; the leader repairs its log. Default false.
   */
  readonly repair?: boolean;
}

const EMPTY_HARD_STATE: HardState = Object.freeze({
  term: 0,
  votedFor: undefined,
  commitIndex: 0,
});

/**
 * The shape of the log without its commands: the index range and the term of each entry, kept
 * as runs of equal terms (terms change rarely, so this stays small for millions of entries).
 */
export class LogShape {
  #first: number;
  #last: number;
  // Runs of one term: entries from runStarts[k] (to the next run or `last`) have runTerms[k].
  #runStarts: number[] = [];
  #runTerms: number[] = [];

  /** An empty log whose next entry takes index `firstIndex`. */
  constructor(firstIndex = 1) {
    invariant(Number.isSafeInteger(firstIndex) && firstIndex >= 1, () => `first ${firstIndex}`);
    this.#first = firstIndex;
    this.#last = firstIndex - 1;
  }

  /** Index of the first entry (or of the next entry, when empty). */
  get firstIndex(): number {
    return this.#first;
  }

  /** Index of the last entry (`firstIndex - 1` when empty). */
  get lastIndex(): number {
    return this.#last;
  }

  /** Whether the log holds no entry. */
  get isEmpty(): boolean {
    return this.#last < this.#first;
  }

  /** The term of the entry at `index`, or undefined when the log does not hold it. */
  termAt(index: number): number | undefined {
    if (index < this.#first || index > this.#last) return undefined;
    let lo = 0;
    let hi = this.#runStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#runStarts[mid] <= index) lo = mid;
      else hi = mid - 1;
    }
    return this.#runTerms[lo];
  }

  /** Whether an entry at `index` may be written next (no gap after the last entry). */
  accepts(index: number): boolean {
    return index >= 1 && index <= this.#last + 1;
  }

  /** Puts an entry at `index`, dropping every entry at or after it. */
  put(index: number, term: number): void {
    invariant(this.accepts(index), () => `entry ${index} leaves a gap after ${this.#last}`);
    if (index < this.#first) {
      this.#first = index;
      this.#runStarts = [];
      this.#runTerms = [];
    } else {
      while (this.#runStarts.length > 0 && this.#runStarts[this.#runStarts.length - 1] >= index) {
        this.#runStarts.pop();
        this.#runTerms.pop();
      }
    }
    this.#last = index;
    if (this.#runTerms.length === 0 || this.#runTerms[this.#runTerms.length - 1] !== term) {
      this.#runStarts.push(index);
      this.#runTerms.push(term);
    }
  }

  /**
   * Applies a snapshot marker: keeps the log when it holds `index` with `term` or starts after
   * `index`; otherwise drops every entry and continues at `index + 1`. Returns whether it kept.
   */
  mark(index: number, term: number): boolean {
    if (this.termAt(index) === term || this.#first > index) return true;
    this.#first = index + 1;
    this.#last = index;
    this.#runStarts = [];
    this.#runTerms = [];
    return false;
  }
}

/** Options of {@linkcode Wal.open}. */
export interface WalOptions extends ScanOptions {
  /** Size past which a new segment is started. Default {@linkcode SEGMENT_BYTES_MAX_DEFAULT}. */
  readonly segmentBytesMax?: number;
}

/** What was written by the WAL since it was opened. */
export interface WalCounters {
  /** fdatasync calls on segment files. */
  dataSyncs: number;
  /** fsync calls on the directory. */
  dirSyncs: number;
  /** Bytes written to segment files. */
  bytesWritten: number;
  /** Records written. */
  records: number;
  /** Segments created. */
  segmentsCreated: number;
  /** Segments deleted by compaction. */
  segmentsDeleted: number;
}

function describeFrame(fr: Exclude<FrameResult, { status: "ok" }>, available: number): string {
  switch (fr.status) {
    case "shortHeader":
      return `record header needs ${RECORD_HEADER_BYTES} bytes but only ${available} remain`;
    case "badLength":
      return `record length ${fr.payloadBytes} exceeds the maximum ${RECORD_PAYLOAD_BYTES_MAX}`;
    case "shortPayload":
      return `record payload of ${fr.payloadBytes} bytes runs past the end of the file ` +
        `(${available - RECORD_HEADER_BYTES} bytes remain)`;
    case "badCrc":
      return `record checksum mismatch (stored 0x${fr.stored.toString(16).padStart(8, "0")}, ` +
        `computed 0x${fr.computed.toString(16).padStart(8, "0")})`;
  }
}

// A reader over a frame's payload, after checking that the segment opens with a header.
function payloadReader(
  buf: Uint8Array,
  fr: { type: number; payloadStart: number; payloadEnd: number },
  path: string,
  offset: number,
): ByteReader {
  if (fr.type !== RecordType.segmentHeader) {
    throw new WalCorruptionError(path, offset, `segment does not start with a header`);
  }
  return new ByteReader(buf, fr.payloadStart, fr.payloadEnd);
}

/** Lists the WAL segments of `dir`, oldest first, checking that no sequence number is missing. */
export function listSegments(fs: Fs, dir: string): SegmentInfo[] {
  const segments: SegmentInfo[] = [];
  for (const name of fs.list(dir)) {
    const m = SEGMENT_NAME.exec(name);
    if (m === null) continue;
    segments.push({ name, seq: parseInt(m[1], 16), firstIndex: parseInt(m[2], 16) });
  }
  segments.sort((a, b) => a.seq - b.seq);
  for (let k = 1; k < segments.length; k++) {
    if (segments[k].seq !== segments[k - 1].seq + 1) {
      throw new WalCorruptionError(
        joinPath(dir, segments[k].name),
        0,
        `segment ${segments[k].seq} follows segment ${segments[k - 1].seq}; ` +
          `the segments between are missing`,
      );
    }
  }
  return segments;
}

/**
 * Replays every segment of `dir` without changing anything on disk. A torn tail of the last
 * segment is reported in `tornTail`, not cut; any other damage throws a WalCorruptionError.
 */
export function scanWal(fs: Fs, dir: string, options: ScanOptions = {}): WalScan {
  const repair = options.repair ?? false;
  const repaired: string[] = [];
  const segments = listSegments(fs, dir);
  let hardState = EMPTY_HARD_STATE;
  let snapshotMark: SnapshotMark | undefined;
  let shape: LogShape | undefined;
  let entries: RaftLogEntry[] = [];
  let lastSegmentBytes = 0;
  let tornTail: TornTail | undefined;

  for (let k = 0; k < segments.length; k++) {
    const seg = segments[k];
    const path = joinPath(dir, seg.name);
    const isLast = k === segments.length - 1;
    const buf = fs.readFile(path);
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    let offset = 0;
    while (offset < buf.length) {
      const fr = readFrame(buf, offset, RECORD_PAYLOAD_BYTES_MAX);
      if (fr.status !== "ok") {
        const available = buf.length - offset;
        // A crash tears the last write: its header or payload falls short of the end of the file,
        // or its final record is whole in size but not in content. A length above the maximum
        // cannot come from tearing a valid write, so it is corruption wherever it is.
        const atEnd = fr.status === "shortHeader" || fr.status === "shortPayload" ||
          (fr.status === "badCrc" && fr.payloadEnd === buf.length);
        // A crash may also keep a later unsynced write and lose an earlier one, which then reads
        // as zeros: each write starts at a record, so the record header is all zeros. Whether
        // those bytes were synced is for the tip to say (checkTip below).
        const lost = zeroHeader(buf, offset);
        const reason = lost
          ? `record header is all zeros (a lost write), ${available} bytes from here cut`
          : describeFrame(fr, available);
        if (isLast && (atEnd || lost || repair)) {
          tornTail = { file: path, offset, bytes: available, reason };
          break;
        }
        throw new WalCorruptionError(path, offset, reason);
      }
      try {
        if (offset === 0) {
          const h = readSegmentHeader(payloadReader(buf, fr, path, offset));
          if (h.seq !== seg.seq || h.firstIndex !== seg.firstIndex) {
            throw new WalCorruptionError(
              path,
              offset,
              `segment header says seq ${h.seq} and first index ${h.firstIndex}, ` +
                `but the file name says seq ${seg.seq} and first index ${seg.firstIndex}`,
            );
          }
          if (shape === undefined) shape = new LogShape(h.firstIndex);
          else if (h.firstIndex !== shape.lastIndex + 1) {
            throw new WalCorruptionError(
              path,
              offset,
              `segment starts at index ${h.firstIndex} but the log before it ends at ` +
                `${shape.lastIndex}`,
            );
          }
        } else {
          invariant(shape !== undefined, () => "segment header read first");
          if (fr.type === RecordType.entry) {
            const e = decodeEntryAt(buf, view, fr.payloadStart, fr.payloadEnd);
            if (!shape.accepts(e.index)) {
              throw new WalCorruptionError(
                path,
                offset,
                `entry ${e.index} leaves a gap after index ${shape.lastIndex}`,
              );
            }
            if (e.index < shape.firstIndex) entries = [];
            else if (entries.length !== e.index - shape.firstIndex) {
              entries.length = e.index - shape.firstIndex;
            }
            shape.put(e.index, e.term);
            entries.push(e);
          } else if (fr.type === RecordType.hardState) {
            hardState = readHardState(new ByteReader(buf, fr.payloadStart, fr.payloadEnd));
          } else if (fr.type === RecordType.snapshotMarker) {
            const m = readSnapshotMarker(new ByteReader(buf, fr.payloadStart, fr.payloadEnd));
            if (!shape.mark(m.index, m.term)) entries = [];
            snapshotMark = m;
          } else if (fr.type === RecordType.segmentHeader) {
            throw new WalCorruptionError(path, offset, `segment header in the middle of a segment`);
          } else {
            throw new WalCorruptionError(path, offset, `unknown record type ${fr.type}`);
          }
        }
      } catch (e) {
        if (e instanceof RangeError) {
          throw new WalCorruptionError(
            path,
            offset,
            `record of type ${fr.type} does not decode: ${e.message}`,
          );
        }
        throw e;
      }
      offset = fr.payloadEnd;
    }
    if (buf.length === 0) {
      if (!isLast) throw new WalCorruptionError(path, 0, "segment is empty but is not the last");
      // A crash right after creating the file: nothing in it was ever acknowledged.
      tornTail = { file: path, offset: 0, bytes: 0, reason: "segment is empty" };
    }
    if (isLast) lastSegmentBytes = offset;
  }
  checkTip(readTip(fs, dir), dir, segments, tornTail?.offset ?? lastSegmentBytes, repair, repaired);
  return {
    segments,
    hardState,
    snapshotMark,
    entries,
    firstIndex: shape?.firstIndex ?? 1,
    lastSegmentBytes,
    tornTail,
    shape: shape ?? new LogShape(1),
    repaired,
  };
}

/** Whether the record header at `offset` is all zeros (a write lost at a crash). */
function zeroHeader(buf: Uint8Array, offset: number): boolean {
  if (buf.length - offset < RECORD_HEADER_BYTES) return false;
  for (let k = offset; k < offset + RECORD_HEADER_BYTES; k++) if (buf[k] !== 0) return false;
  return true;
}

// What the tip says was synced must still be there: a torn write loses only bytes past it. A
// segment cut shorter, or deleted, lost records that may have been acknowledged.
function checkTip(
  tip: WalTip | undefined,
  dir: string,
  segments: readonly SegmentInfo[],
  lastEnd: number,
  repair: boolean,
  repaired: string[],
): void {
  if (tip === undefined || tip.bytes === 0) return;
  const last = segments[segments.length - 1];
  let damage: { path: string; offset: number; reason: string } | undefined;
  if (last === undefined || last.seq < tip.seq) {
    const path = last === undefined ? joinPath(dir, "wal-*.log") : joinPath(dir, last.name);
    damage = {
      path,
      offset: last === undefined ? 0 : lastEnd,
      reason: `the WAL ends here, but segment ${tip.seq} had ${tip.bytes} bytes synced ` +
        `(${TIP_FILE}): synced segments are missing`,
    };
  } else if (last.seq === tip.seq && lastEnd < tip.bytes) {
    damage = {
      path: joinPath(dir, last.name),
      offset: lastEnd,
      reason: `the segment's whole records end here, but ${tip.bytes} bytes of it were synced ` +
        `(${TIP_FILE}): synced records are missing`,
    };
  }
  if (damage === undefined) return;
  if (!repair) throw new WalCorruptionError(damage.path, damage.offset, damage.reason);
  repaired.push(`"${damage.path}" at byte ${damage.offset}: ${damage.reason}`);
}

/**
 * The write-ahead log of one node, open for appending to its last segment. Not reentrant; after
 * any I/O error it refuses further writes (the page cache may have dropped the data, so only a
 * restart and replay can tell what is durable).
 */
export class Wal {
  readonly #fs: Fs;
  readonly #dir: string;
  readonly #segmentBytesMax: number;
  readonly #segments: SegmentInfo[];
  readonly #shape: LogShape;
  #hardState: HardState;
  #mark: SnapshotMark | undefined;
  #active: FsFile | undefined;
  #activeBytes: number;
  #failed: Error | undefined;
  #closed = false;
  /** Whether the active segment holds records written by `write` and not yet synced. */
  #unsynced = false;
  #tipFile: FsFile | undefined;
  #tipFileBytes = 0;
  #tip: WalTip = { seq: 0, bytes: 0 };
  readonly #writer = new ByteWriter(64 * 1024);
  /** What was written since open. */
  readonly counters: WalCounters = {
    dataSyncs: 0,
    dirSyncs: 0,
    bytesWritten: 0,
    records: 0,
    segmentsCreated: 0,
    segmentsDeleted: 0,
  };

  private constructor(fs: Fs, dir: string, segmentBytesMax: number, scan: WalScan) {
    this.#fs = fs;
    this.#dir = dir;
    this.#segmentBytesMax = segmentBytesMax;
    this.#segments = [...scan.segments];
    this.#hardState = scan.hardState;
    this.#mark = scan.snapshotMark;
    this.#shape = scan.shape;
    this.#activeBytes = scan.lastSegmentBytes;
  }

  /**
   * Opens the WAL in `dir`: replays it, cuts a torn tail of the last segment off into a side
   * file, and opens the last segment for appending (creating the first segment when there is
   * none). Returns the WAL and what the replay found.
   */
  static open(fs: Fs, dir: string, options: WalOptions = {}): { wal: Wal; scan: WalScan } {
    const segmentBytesMax = options.segmentBytesMax ?? SEGMENT_BYTES_MAX_DEFAULT;
    if (!Number.isSafeInteger(segmentBytesMax) || segmentBytesMax < 1024) {
      throw new RangeError(
        `segmentBytesMax must be an integer of at least 1024: ${segmentBytesMax}`,
      );
    }
    let scan = scanWal(fs, dir, { repair: options.repair });
    const wal = new Wal(fs, dir, segmentBytesMax, scan);
    if (scan.tornTail !== undefined) {
      const tornTail = wal.#cutTornTail(scan.tornTail);
      scan = { ...scan, tornTail };
    }
    // The tip starts over from what replay found, made durable first so it never overstates.
    const tipPath = joinPath(dir, TIP_FILE);
    if (fs.exists(tipPath)) fs.truncate(tipPath, 0);
    wal.#tipFile = fs.openAppend(tipPath);
    if (wal.#segments.length === 0) {
      wal.#write([], undefined, true);
    } else {
      const last = wal.#segments[wal.#segments.length - 1];
      wal.#active = fs.openAppend(joinPath(dir, last.name));
      wal.#active.syncData();
      wal.counters.dataSyncs++;
      wal.#recordTip(last.seq, wal.#activeBytes);
    }
    return { wal, scan };
  }

  // Keeps the torn bytes in a side file, then cuts the segment (or removes it when nothing is
  // left of it), making each step durable before the next.
  #cutTornTail(torn: TornTail): TornTail {
    const fs = this.#fs;
    const buf = fs.readFile(torn.file);
    let sideFile = "";
    for (
      let attempt = 0;
      attempt < SIDE_FILE_ATTEMPTS_MAX && sideFile === "" && torn.bytes > 0;
      attempt++
    ) {
      const candidate = `${torn.file}.torn-${torn.offset}${attempt === 0 ? "" : `-${attempt}`}`;
      if (!fs.exists(candidate)) sideFile = candidate;
    }
    if (torn.bytes > 0) {
      if (sideFile === "") {
        throw new Error(`Too many torn-tail side files for "${torn.file}" at byte ${torn.offset}`);
      }
      const side = fs.openAppend(sideFile);
      try {
        side.write(buf.subarray(torn.offset));
        side.syncData();
        this.counters.dataSyncs++;
      } finally {
        side.close();
      }
    }
    if (torn.offset === 0) {
      // Not even the header survived: the segment holds nothing, so it goes.
      fs.remove(torn.file);
      this.#segments.pop();
      this.#activeBytes = this.#segments.length === 0
        ? 0
        : fs.size(joinPath(this.#dir, this.#segments[this.#segments.length - 1].name));
    } else {
      fs.truncate(torn.file, torn.offset);
      const f = fs.openAppend(torn.file);
      try {
        f.syncData();
        this.counters.dataSyncs++;
      } finally {
        f.close();
      }
      this.#activeBytes = torn.offset;
    }
    fs.syncDir(this.#dir);
    this.counters.dirSyncs++;
    return sideFile === "" ? torn : { ...torn, sideFile };
  }

  /** Index of the first entry kept (or of the next entry, when the log is empty). */
  get firstIndex(): number {
    return this.#shape.firstIndex;
  }

  /** Index of the last entry (`firstIndex - 1` when the log is empty). */
  get lastIndex(): number {
    return this.#shape.lastIndex;
  }

  /** The term of the entry at `index`, if the log holds it. */
  termAt(index: number): number | undefined {
    return this.#shape.termAt(index);
  }

  /** The last hard state written. */
  get hardState(): HardState {
    return this.#hardState;
  }

  /** The last snapshot marker written, if any. */
  get snapshotMark(): SnapshotMark | undefined {
    return this.#mark;
  }

  /** The segments, oldest first. */
  get segments(): readonly SegmentInfo[] {
    return this.#segments;
  }

  #usable(): void {
    if (this.#closed) throw new Error(`WAL in "${this.#dir}" is closed`);
    if (this.#failed !== undefined) {
      throw new Error(
        `WAL in "${this.#dir}" is unusable after an I/O error (${this.#failed.message}); ` +
          `restart the node to recover from disk`,
      );
    }
  }

  /**
   * Appends `entries` and then `hardState` (when given) and makes them durable with one
   * fdatasync (group commit). `entries` must be contiguous and start at or before
   * `lastIndex + 1`; they replace every entry at or after their first index.
   */
  append(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void {
    this.#appendRecords(hardState, entries, true);
  }

  /**
   * Appends like {@linkcode append} but without the fdatasync: the records are written, not yet
   * durable. {@linkcode sync} (or any later `append`) makes them durable. For a leader, whose own
   * write may go on while it replicates (Raft dissertation §10.2.1).
   */
  write(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void {
    this.#appendRecords(hardState, entries, false);
  }

  /**
   * Makes every record written so far durable with one fdatasync that runs off the event loop;
   * the WAL may be written meanwhile (those later records need another sync). Resolves at once
   * when nothing is waiting.
   */
  async sync(): Promise<void> {
    this.#usable();
    if (!this.#unsynced) return;
    const file = this.#active;
    invariant(file !== undefined, () => "an active segment is open");
    this.#unsynced = false;
    const seq = this.#segments[this.#segments.length - 1].seq;
    const bytes = this.#activeBytes;
    try {
      await file.syncDataAsync();
      this.counters.dataSyncs++;
      if (!this.#closed) this.#recordTip(seq, bytes);
    } catch (e) {
      this.#failed = e instanceof Error ? e : new Error(String(e));
      throw e;
    }
  }

  #appendRecords(
    hardState: HardState | undefined,
    entries: readonly RaftLogEntry[],
    sync: boolean,
  ): void {
    this.#usable();
    if (entries.length > 0) {
      const from = entries[0].index;
      invariant(
        this.#shape.accepts(from),
        () => `saved entries start at ${from}, leaving a gap after ${this.#shape.lastIndex}`,
      );
      let prevTerm = this.#shape.termAt(from - 1) ?? 0;
      for (let k = 0; k < entries.length; k++) {
        const e = entries[k];
        invariant(e.index === from + k, () => `entry ${e.index} should be ${from + k}`);
        invariant(e.term >= prevTerm, () => `entry ${e.index} has term ${e.term} < ${prevTerm}`);
        prevTerm = e.term;
      }
    }
    if (hardState === undefined && entries.length === 0) return;
    this.#write(entries, hardState, this.#activeBytes >= this.#segmentBytesMax, undefined, sync);
  }

  /**
   * Records that a snapshot covering the log up to `index` (of `term`) is durable, with one
   * fdatasync. The log is kept when it holds `index` with `term`; otherwise it is dropped and
   * continues at `index + 1`.
   */
  markSnapshot(index: number, term: number): void {
    this.#usable();
    invariant(
      Number.isSafeInteger(index) && index >= 0 && Number.isSafeInteger(term) && term >= 0,
      () => `snapshot marker (${index}, ${term}) must be non-negative integers`,
    );
    this.#write([], undefined, this.#activeBytes >= this.#segmentBytesMax, { index, term });
  }

  // Frames the records (after a new segment's preamble when `roll`), writes them in one call,
  // syncs once (unless `sync` is false), and only then updates the in-memory state.
  #write(
    entries: readonly RaftLogEntry[],
    hardState: HardState | undefined,
    roll: boolean,
    mark?: SnapshotMark,
    sync = true,
  ): void {
    const w = this.#writer;
    w.reset();
    let records = 0;
    let next: SegmentInfo | undefined;
    if (roll) {
      const prev = this.#segments[this.#segments.length - 1];
      next = {
        seq: prev === undefined ? 1 : prev.seq + 1,
        firstIndex: this.#shape.lastIndex + 1,
        name: "",
      };
      next = { ...next, name: segmentName(next.seq, next.firstIndex) };
      writeSegmentHeader(w, next);
      writeHardState(w, this.#hardState);
      records += 2;
      if (this.#mark !== undefined) {
        writeSnapshotMarker(w, this.#mark.index, this.#mark.term);
        records++;
      }
    }
    for (const e of entries) writeEntry(w, e);
    records += entries.length;
    if (hardState !== undefined) {
      writeHardState(w, hardState);
      records++;
    }
    if (mark !== undefined) {
      writeSnapshotMarker(w, mark.index, mark.term);
      records++;
    }
    if (w.length > BATCH_BYTES_MAX) {
      throw new RangeError(`One save of ${w.length} bytes exceeds ${BATCH_BYTES_MAX}`);
    }
    try {
      let file = this.#active;
      if (next !== undefined) {
        // Records written but not synced must be durable before the next segment counts.
        if (this.#unsynced) {
          this.#active?.syncData();
          this.counters.dataSyncs++;
          this.#unsynced = false;
        }
        file = this.#fs.openAppend(joinPath(this.#dir, next.name));
      }
      invariant(file !== undefined, () => "an active segment is open");
      file.write(w.bytes());
      if (sync || next !== undefined) {
        // A new segment is always synced, with its directory entry.
        file.syncData();
        this.counters.dataSyncs++;
        this.#unsynced = false;
      } else {
        this.#unsynced = true;
      }
      if (next !== undefined) {
        // The new file's name must be durable too before anything in it counts as saved.
        this.#fs.syncDir(this.#dir);
        this.counters.dirSyncs++;
        this.#active?.close();
        this.#active = file;
        this.#activeBytes = 0;
        this.#segments.push(next);
        this.counters.segmentsCreated++;
      }
    } catch (e) {
      this.#failed = e instanceof Error ? e : new Error(String(e));
      throw e;
    }
    this.#activeBytes += w.length;
    this.counters.bytesWritten += w.length;
    this.counters.records += records;
    if (sync || next !== undefined) {
      this.#recordTip(this.#segments[this.#segments.length - 1].seq, this.#activeBytes);
    }
    for (const e of entries) this.#shape.put(e.index, e.term);
    if (hardState !== undefined) this.#hardState = hardState;
    if (mark !== undefined) {
      this.#shape.mark(mark.index, mark.term);
      this.#mark = mark;
    }
  }

  /**
   * Deletes the oldest segments whose entries all lie below `keepFromIndex` (never the active
   * segment), syncing the directory after each removal so a crash leaves a suffix of the
   * segments. Returns how many were deleted.
   */
  compact(keepFromIndex: number): number {
    this.#usable();
    let deleted = 0;
    try {
      // Entries still live in segment k are below the first index of segment k + 1.
      while (this.#segments.length > 1 && this.#segments[1].firstIndex <= keepFromIndex) {
        this.#fs.remove(joinPath(this.#dir, this.#segments[0].name));
        this.#fs.syncDir(this.#dir);
        this.counters.dirSyncs++;
        this.#segments.shift();
        deleted++;
      }
    } catch (e) {
      this.#failed = e instanceof Error ? e : new Error(String(e));
      throw e;
    }
    this.counters.segmentsDeleted += deleted;
    return deleted;
  }

  // Appends (seq, bytes) to the tip file, unsynced, after the segment's sync: the tip may lag the
  // disk after a power cut (weaker checks) but never runs ahead of it.
  #recordTip(seq: number, bytes: number): void {
    if (seq < this.#tip.seq || (seq === this.#tip.seq && bytes <= this.#tip.bytes)) return;
    const file = this.#tipFile;
    if (file === undefined) return;
    try {
      if (this.#tipFileBytes + TIP_RECORD_BYTES > TIP_FILE_BYTES_MAX) {
        this.#fs.truncate(file.path, 0);
        this.#tipFileBytes = 0;
      }
      file.write(encodeTip({ seq, bytes }));
    } catch (e) {
      this.#failed = e instanceof Error ? e : new Error(String(e));
      throw e;
    }
    this.#tipFileBytes += TIP_RECORD_BYTES;
    this.#tip = { seq, bytes };
  }

  /** Closes the active segment. Further calls throw. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const f of [this.#active, this.#tipFile]) {
      try {
        f?.close();
      } catch {
        // A handle invalidated by a simulated crash is already closed.
      }
    }
    this.#active = undefined;
    this.#tipFile = undefined;
  }
}
