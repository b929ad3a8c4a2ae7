/**
 * Snapshot files `snap-<index, 16 hex digits>.snap`: one framed record holding the metadata and
 * the state machine's bytes. Written to `<name>.tmp`, synced, renamed into place and the
 * directory synced, so a snapshot file under its final name is always whole.
 *
 * @module
 */

import type { Snapshot, SnapshotMeta } from "../raft/storage.ts";
import { crc32cUpdate } from "./crc32c.ts";
import { SnapshotCorruptionError } from "./errors.ts";
import { FILE_MODE, type Fs, joinPath } from "./fs.ts";
import {
  ByteReader,
  readFrame,
  readSnapshotPayload,
  RECORD_HEADER_BYTES,
  RecordType,
  SNAPSHOT_PAYLOAD_BYTES_MAX,
  snapshotFrameHead,
} from "./record.ts";
import { hex16 } from "./wal.ts";

const SNAPSHOT_NAME = /^snap-([0-9a-f]{16})\.snap$/;

/** Suffix of files being written that are not yet in place (removed at open). */
export const TEMP_SUFFIX = ".tmp";

/** The file name of the snapshot covering the log up to `index`. */
export function snapshotName(index: number): string {
  return `snap-${hex16(index)}.snap`;
}

/** A snapshot file in the data directory. */
export interface SnapshotFileInfo {
  /** File name within the data directory. */
  readonly name: string;
  /** Last log index the snapshot covers, from the name. */
  readonly index: number;
}

/** The snapshot files of `dir`, oldest (lowest index) first. */
export function listSnapshots(fs: Fs, dir: string): SnapshotFileInfo[] {
  const found: SnapshotFileInfo[] = [];
  for (const name of fs.list(dir)) {
    const m = SNAPSHOT_NAME.exec(name);
    if (m !== null) found.push({ name, index: parseInt(m[1], 16) });
  }
  return found.sort((a, b) => a.index - b.index);
}

/** What writing a snapshot file cost. */
export interface SnapshotWriteResult {
  /** Path of the snapshot file. */
  readonly path: string;
  /** Size of the file in bytes. */
  readonly bytes: number;
  /** fdatasync calls made (1). */
  readonly dataSyncs: number;
  /** Directory fsync calls made (1). */
  readonly dirSyncs: number;
}

/**
 * The frame head of a snapshot file whose data is produced in chunks: the CRC-32C is extended by
 * each chunk as it comes ({@linkcode add}), so no pass over the whole data is needed at the end.
 *
 * @example
 * ```ts
 * import { SnapshotFrame } from "./snapshot_file.ts";
 * import { snapshotFrameHead } from "./record.ts";
 * const meta = { index: 7, term: 2, voters: ["n1"] };
 * const frame = new SnapshotFrame(meta);
 * frame.add(new Uint8Array([1, 2]));
 * frame.add(new Uint8Array([3]));
 * const whole = snapshotFrameHead(meta, new Uint8Array([1, 2, 3]));
 * if (frame.head().join() !== whole.join()) throw new Error("heads differ");
 * ```
 */
export class SnapshotFrame {
  /** The snapshot's metadata. */
  readonly meta: SnapshotMeta;
  readonly #empty: Uint8Array;
  #crc: number;
  #dataBytes = 0;

  /** Starts the frame of a snapshot described by `meta`, with no data yet. */
  constructor(meta: SnapshotMeta) {
    this.meta = meta;
    this.#empty = snapshotFrameHead(meta, new Uint8Array(0));
    // The CRC covers the record from its type byte on: the head's fields, then the data.
    this.#crc = crc32cUpdate(0, this.#empty.subarray(RECORD_HEADER_BYTES - 1));
  }

  /** Extends the frame by the next chunk of data. */
  add(chunk: Uint8Array): void {
    this.#crc = crc32cUpdate(this.#crc, chunk);
    this.#dataBytes += chunk.length;
  }

  /** Bytes of data added so far. */
  get dataBytes(): number {
    return this.#dataBytes;
  }

  /** The frame head for the data added so far (what `snapshotFrameHead(meta, data)` returns). */
  head(): Uint8Array {
    const head = this.#empty.slice();
    const payloadBytes = head.length - RECORD_HEADER_BYTES + this.#dataBytes;
    if (payloadBytes > SNAPSHOT_PAYLOAD_BYTES_MAX) {
      throw new RangeError(
        `Snapshot payload of ${payloadBytes} bytes exceeds ${SNAPSHOT_PAYLOAD_BYTES_MAX}`,
      );
    }
    const view = new DataView(head.buffer);
    view.setUint32(0, payloadBytes, true);
    view.setUint32(4, this.#crc, true);
    return head;
  }
}

/**
 * Writes `snapshot` durably to `dir` under its final name (temp file, sync, rename, dir sync).
 * `head` is its frame head when the caller already has it (from a {@linkcode SnapshotFrame}).
 */
export function writeSnapshotFile(
  fs: Fs,
  dir: string,
  snapshot: Snapshot,
  head?: Uint8Array,
): SnapshotWriteResult {
  const name = snapshotName(snapshot.meta.index);
  const path = joinPath(dir, name);
  const temp = path + TEMP_SUFFIX;
  head ??= snapshotFrameHead(snapshot.meta, snapshot.data);
  if (fs.exists(temp)) fs.remove(temp);
  const f = fs.openAppend(temp);
  try {
    f.write(head);
    f.write(snapshot.data);
    f.syncData();
  } finally {
    f.close();
  }
  fs.rename(temp, path);
  fs.syncDir(dir);
  return { path, bytes: head.length + snapshot.data.length, dataSyncs: 1, dirSyncs: 1 };
}

/** Largest write handed to the operating system at once by {@linkcode writeSnapshotFileAsync}. */
const ASYNC_WRITE_BYTES_MAX = 8 * 1024 * 1024;

async function writeAllAsync(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const end = Math.min(bytes.length, done + ASYNC_WRITE_BYTES_MAX);
    done += await file.write(bytes.subarray(done, end));
  }
}

/**
 * {@linkcode writeSnapshotFile} on the real disk with Deno's asynchronous calls: the writes, the
 * fdatasync, the rename and the directory fsync run off the event loop, which serves requests
 * meanwhile. `head` is the frame head from a {@linkcode SnapshotFrame}. `snapshot.data` must not
 * change until the promise settles. Needs `--allow-read --allow-write`.
 */
export async function writeSnapshotFileAsync(
  dir: string,
  snapshot: Snapshot,
  head: Uint8Array,
): Promise<SnapshotWriteResult> {
  const path = joinPath(dir, snapshotName(snapshot.meta.index));
  const temp = path + TEMP_SUFFIX;
  const file = await Deno.open(temp, {
    write: true,
    create: true,
    truncate: true,
    mode: FILE_MODE,
  });
  try {
    await writeAllAsync(file, head);
    await writeAllAsync(file, snapshot.data);
    await file.syncData();
  } finally {
    file.close();
  }
  await Deno.rename(temp, path);
  let dirSyncs = 0;
  try {
    const handle = await Deno.open(dir, { read: true });
    try {
      await handle.sync();
      dirSyncs = 1;
    } finally {
      handle.close();
    }
  } catch (e) {
    // As RealFs.syncDir: Windows cannot open a directory, and has nothing to sync there.
    if (!(Deno.build.os === "windows" && e instanceof Deno.errors.PermissionDenied)) throw e;
  }
  return { path, bytes: head.length + snapshot.data.length, dataSyncs: 1, dirSyncs };
}

/** Reads and checks the snapshot file at `path`; throws a SnapshotCorruptionError on damage. */
export function readSnapshotFile(fs: Fs, path: string, expectedIndex?: number): Snapshot {
  const buf = fs.readFile(path);
  const fr = readFrame(buf, 0, SNAPSHOT_PAYLOAD_BYTES_MAX);
  if (fr.status !== "ok") {
    const detail = fr.status === "badCrc"
      ? `checksum mismatch (stored 0x${fr.stored.toString(16)}, computed 0x${
        fr.computed.toString(16)
      })`
      : fr.status === "badLength"
      ? `length ${fr.payloadBytes} exceeds the maximum ${SNAPSHOT_PAYLOAD_BYTES_MAX}`
      : `file of ${buf.length} bytes is shorter than its record`;
    throw new SnapshotCorruptionError(path, 0, detail);
  }
  if (fr.type !== RecordType.snapshot) {
    throw new SnapshotCorruptionError(path, 0, `record type ${fr.type} is not a snapshot`);
  }
  if (fr.payloadEnd !== buf.length) {
    throw new SnapshotCorruptionError(
      path,
      fr.payloadEnd,
      `${buf.length - fr.payloadEnd} bytes follow the snapshot record`,
    );
  }
  let snapshot: Snapshot;
  try {
    snapshot = readSnapshotPayload(new ByteReader(buf, fr.payloadStart, fr.payloadEnd));
  } catch (e) {
    if (e instanceof RangeError) throw new SnapshotCorruptionError(path, 0, e.message);
    throw e;
  }
  if (expectedIndex !== undefined && snapshot.meta.index !== expectedIndex) {
    throw new SnapshotCorruptionError(
      path,
      0,
      `snapshot covers index ${snapshot.meta.index} but its name says ${expectedIndex}`,
    );
  }
  return snapshot;
}
