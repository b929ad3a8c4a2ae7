/**
 * Snapshot files `snap-<index, 16 hex digits>.snap`: one framed record holding the metadata and
 * the state machine's bytes. Written to `<name>.tmp`, synced, renamed into place and the
 * directory synced, so a snapshot file under its final name is always whole.
 *
 * @module
 */

import type { Snapshot } from "../raft/storage.ts";
import { SnapshotCorruptionError } from "./errors.ts";
import { type Fs, joinPath } from "./fs.ts";
import {
  ByteReader,
  readFrame,
  readSnapshotPayload,
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

/** Writes `snapshot` durably to `dir` under its final name (temp file, sync, rename, dir sync). */
export function writeSnapshotFile(fs: Fs, dir: string, snapshot: Snapshot): SnapshotWriteResult {
  const name = snapshotName(snapshot.meta.index);
  const path = joinPath(dir, name);
  const temp = path + TEMP_SUFFIX;
  const head = snapshotFrameHead(snapshot.meta, snapshot.data);
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
