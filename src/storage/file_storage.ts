/**
 * `FileStorage`: the core's {@linkcode Storage} on disk, built from the write-ahead log
 * (wal.ts) and snapshot files (snapshot_file.ts) over an {@linkcode Fs}, real or simulated.
 *
 * Directory layout: `meta.json` (cluster and node id), `wal-<seq>-<first index>.log` segments,
 * `snap-<index>.snap` snapshots, and `*.torn-<offset>` side files holding torn tails cut off at
 * recovery. See docs/wal-format.md.
 *
 * @example
 * ```ts
 * import { FileStorage } from "./file_storage.ts";
 * import { SimFs } from "./fs.ts";
 * const fs = new SimFs();
 * const storage = FileStorage.open("/data", { fs, clusterId: "c1", nodeId: "n1" });
 * storage.save({ term: 1, votedFor: "n1", commitIndex: 0 }, [
 *   { index: 1, term: 1, kind: "noop", command: new Uint8Array() },
 * ]);
 * storage.close();
 * fs.crash();
 * const again = FileStorage.open("/data", { fs, clusterId: "c1", nodeId: "n1" });
 * if (again.load().entries.length !== 1) throw new Error("Lost an acknowledged entry");
 * ```
 *
 * @module
 */

import type { HardState, NodeId, RaftLogEntry } from "../raft/types.ts";
import type { PersistedState, Snapshot, Storage } from "../raft/storage.ts";
import { invariant } from "../raft/log.ts";
import { DataDirError, SnapshotCorruptionError, WalCorruptionError } from "./errors.ts";
import { type Fs, joinPath, parentDir, RealFs } from "./fs.ts";
import {
  listSnapshots,
  readSnapshotFile,
  type SnapshotFileInfo,
  snapshotName,
  TEMP_SUFFIX,
  writeSnapshotFile,
  writeSnapshotFileAsync,
} from "./snapshot_file.ts";
import { snapshotFrameHead } from "./record.ts";
import { scanWal, type SnapshotMark, type TornTail, Wal, type WalScan } from "./wal.ts";

/** Name of the metadata file in the data directory. */
export const META_FILE = "meta.json";
/** Default number of entries kept in the WAL below a snapshot's index. */
export const RETAIN_ENTRIES_DEFAULT = 10_000;
/** Default number of snapshot files kept (the newest, and one before it). */
export const SNAPSHOTS_RETAINED_DEFAULT = 2;
/** Longest cluster id or node id accepted, in characters. */
export const ID_CHARS_MAX = 256;
/** Suffix given to a corrupt snapshot file set aside after a fallback to an older one. */
export const CORRUPT_SUFFIX = ".corrupt";

/** A corrupt newest snapshot passed over at open for an older valid one (the WAL covers the gap). */
export interface SnapshotFallback {
  /** Path of the corrupt snapshot file. */
  readonly corrupt: string;
  /** Where the corrupt file was moved (`<corrupt>.corrupt`), kept for inspection. */
  readonly movedTo: string;
  /** Path of the older snapshot file loaded instead. */
  readonly used: string;
  /** Why the newest file was refused, e.g. "checksum mismatch (...)" at its byte offset. */
  readonly reason: string;
}

/** Options of {@linkcode FileStorage.open}. */
export interface FileStorageOptions {
  /** The file system; the real disk by default. */
  readonly fs?: Fs;
  /** The cluster this data directory belongs to; another cluster's directory is refused. */
  readonly clusterId: string;
  /** The node this data directory belongs to; another node's directory is refused. */
  readonly nodeId: NodeId;
  /** Size past which the WAL starts a new segment. Default 64 MiB. */
  readonly segmentBytesMax?: number;
  /** Entries kept in the WAL below a snapshot's index (the trailing window). Default 10,000. */
  readonly retainEntries?: number;
  /** Snapshot files kept, newest first. Default 2. */
  readonly snapshotsRetained?: number;
  /**
   * Start despite damage at the end of the WAL (synced records or segments missing, a bad record
   * in the last segment): cut there and report it in `repaired`. Acknowledged entries may be
   * lost; the leader repairs the log. Default false: such damage is a WalCorruptionError.
   */
  readonly repairWal?: boolean;
}

/** What a {@linkcode FileStorage} has done since it was opened. */
export interface FileStorageCounters {
  /** All fsync-family calls: `dataSyncs + dirSyncs`. */
  fsyncs: number;
  /** fdatasync calls on files (WAL segments, snapshots, side files, meta.json). */
  dataSyncs: number;
  /** fsync calls on the data directory. */
  dirSyncs: number;
  /** Bytes written to WAL segments and snapshot files. */
  bytesWritten: number;
  /** WAL records written. */
  records: number;
  /** Calls of `save` that wrote something. */
  saves: number;
  /** Snapshots saved. */
  snapshotsSaved: number;
}

/** The contents of `meta.json`. */
interface MetaFile {
  readonly format: "raftmeta-data";
  readonly version: 1;
  readonly clusterId: string;
  readonly nodeId: string;
}

function checkId(what: string, id: unknown): string {
  if (typeof id !== "string" || id.length === 0 || id.length > ID_CHARS_MAX || /[\n\0]/.test(id)) {
    throw new RangeError(
      `${what} must be a non-empty string of at most ${ID_CHARS_MAX} characters without ` +
        `newlines: ${JSON.stringify(id)}`,
    );
  }
  return id;
}

function snapshotFrameHeadOf(snapshot: Snapshot): Uint8Array {
  return snapshotFrameHead(snapshot.meta, snapshot.data);
}

/** Writes `bytes` to `dir/name` atomically: temp file, fdatasync, rename, directory fsync. */
function writeFileAtomic(fs: Fs, dir: string, name: string, bytes: Uint8Array): void {
  const temp = joinPath(dir, name + TEMP_SUFFIX);
  if (fs.exists(temp)) fs.remove(temp);
  const f = fs.openAppend(temp);
  try {
    f.write(bytes);
    f.syncData();
  } finally {
    f.close();
  }
  fs.rename(temp, joinPath(dir, name));
  fs.syncDir(dir);
}

// Checks (or, for a new directory, writes) meta.json; returns whether it wrote it.
function claimDirectory(fs: Fs, dir: string, clusterId: string, nodeId: string): boolean {
  const path = joinPath(dir, META_FILE);
  if (fs.exists(path)) {
    let meta: Partial<MetaFile>;
    try {
      meta = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(fs.readFile(path)));
    } catch (e) {
      throw new DataDirError(dir, `"${path}" is not valid JSON: ${(e as Error).message}`);
    }
    if (meta?.format !== "raftmeta-data" || meta.version !== 1) {
      throw new DataDirError(dir, `"${path}" is not a raftmeta version 1 metadata file`);
    }
    if (meta.clusterId !== clusterId) {
      throw new DataDirError(
        dir,
        `it belongs to cluster "${meta.clusterId}", not to cluster "${clusterId}"`,
      );
    }
    if (meta.nodeId !== nodeId) {
      throw new DataDirError(dir, `it belongs to node "${meta.nodeId}", not to node "${nodeId}"`);
    }
    return false;
  }
  const stray = fs.list(dir).filter((n) => /^(wal-.*\.log|snap-.*\.snap)$/.test(n));
  if (stray.length > 0) {
    throw new DataDirError(dir, `it holds "${stray[0]}" but no ${META_FILE}`);
  }
  const meta: MetaFile = { format: "raftmeta-data", version: 1, clusterId, nodeId };
  writeFileAtomic(fs, dir, META_FILE, new TextEncoder().encode(JSON.stringify(meta) + "\n"));
  return true;
}

/**
 * Applies the newest snapshot to a WAL replay: the entries are kept when they hold the
 * snapshot's index with its term or start after it, else dropped (Raft §7). Checks that the
 * result is a log a node can start from.
 */
function assemble(dir: string, scan: WalScan, snapshot: Snapshot | undefined): PersistedState {
  let entries = scan.entries;
  let firstIndex = scan.firstIndex;
  const mark = scan.snapshotMark;
  const firstSegment = scan.segments.length > 0 ? joinPath(dir, scan.segments[0].name) : dir;
  if (mark !== undefined && (snapshot === undefined || mark.index > snapshot.meta.index)) {
    throw new DataDirError(
      dir,
      `the WAL records a snapshot at index ${mark.index} but the newest snapshot file ` +
        (snapshot === undefined ? "is missing" : `is at index ${snapshot.meta.index}`),
    );
  }
  if (snapshot !== undefined) {
    const s = snapshot.meta;
    if (mark?.index !== s.index || mark.term !== s.term) {
      // The snapshot file is durable but the crash came before its marker was: apply it now.
      const term = entries[s.index - firstIndex]?.term;
      if (term !== s.term && firstIndex <= s.index) {
        entries = [];
        firstIndex = s.index + 1;
      }
    }
    if (entries.length > 0 && firstIndex > s.index + 1) {
      throw new WalCorruptionError(
        firstSegment,
        0,
        `the log starts at index ${firstIndex}, leaving a gap after the snapshot at ${s.index}`,
      );
    }
  } else if (entries.length > 0 && firstIndex !== 1) {
    throw new WalCorruptionError(
      firstSegment,
      0,
      `the log starts at index ${firstIndex} but there is no snapshot`,
    );
  }
  return snapshot === undefined
    ? { hardState: scan.hardState, entries }
    : { hardState: scan.hardState, snapshot, entries };
}

function newestSnapshot(fs: Fs, dir: string): Snapshot | undefined {
  const snaps = listSnapshots(fs, dir);
  if (snaps.length === 0) return undefined;
  const newest = snaps[snaps.length - 1];
  return readSnapshotFile(fs, joinPath(dir, newest.name), newest.index);
}

/** The newest valid snapshot file older than the last of `snaps`, with why the others failed. */
function olderValidSnapshot(
  fs: Fs,
  dir: string,
  snaps: readonly SnapshotFileInfo[],
): { info: SnapshotFileInfo; snapshot: Snapshot } | { failures: string[] } {
  const failures: string[] = [];
  for (let k = snaps.length - 2; k >= 0; k--) {
    try {
      const snapshot = readSnapshotFile(fs, joinPath(dir, snaps[k].name), snaps[k].index);
      return { info: snaps[k], snapshot };
    } catch (e) {
      if (!(e instanceof SnapshotCorruptionError)) throw e;
      failures.push(`"${snaps[k].name}" is corrupt too (${e.detail})`);
    }
  }
  return { failures };
}

/**
 * Why the WAL cannot carry the node from the older snapshot `older` past the corrupt snapshot at
 * `corruptIndex`, or undefined when it can: it must hold every entry after `older` (and `older`'s
 * own entry with its term, when it holds that) up to at least `corruptIndex`.
 */
function fallbackGap(scan: WalScan, older: Snapshot, corruptIndex: number): string | undefined {
  const shape = scan.shape;
  const { index, term } = older.meta;
  if (shape.firstIndex > index + 1) {
    return `the WAL starts at index ${shape.firstIndex}, so the entries from ${index + 1} ` +
      `after the older snapshot are gone`;
  }
  const held = shape.termAt(index);
  if (held !== undefined && held !== term) {
    return `the WAL holds index ${index} with term ${held}, not the older snapshot's term ${term}`;
  }
  if (shape.lastIndex < corruptIndex) {
    return `the WAL ends at index ${shape.lastIndex}, below the corrupt snapshot's index ` +
      `${corruptIndex}`;
  }
  return undefined;
}

/** A free name for setting `path` aside: `<path>.corrupt`, then `-1`, `-2`, ... */
function corruptName(fs: Fs, path: string): string {
  for (let attempt = 0; attempt < 100; attempt++) {
    const candidate = `${path}${CORRUPT_SUFFIX}${attempt === 0 ? "" : `-${attempt}`}`;
    if (!fs.exists(candidate)) return candidate;
  }
  throw new Error(`Too many corrupt snapshot files set aside for "${path}"`);
}

/**
 * Durable storage for one node: a write-ahead log in segment files plus snapshot files.
 * `save` returns only after one fdatasync made everything it was given durable (plus a directory
 * fsync when it started a new segment). Not for concurrent use: one node, one instance.
 */
export class FileStorage implements Storage {
  readonly #fs: Fs;
  readonly #dir: string;
  readonly #wal: Wal;
  readonly #retainEntries: number;
  readonly #snapshotsRetained: number;
  #snapshotMark: SnapshotMark | undefined;
  #loaded: PersistedState | undefined;
  #closed = false;
  #writingSnapshot = false;
  readonly #extra = { dataSyncs: 0, dirSyncs: 0, bytesWritten: 0, saves: 0, snapshotsSaved: 0 };
  /** The torn tail cut off the last segment at open, if any (for the node's log). */
  readonly tornTail: TornTail | undefined;
  /** Damage accepted at open because of `repairWal`, each as "file at byte offset: what". */
  readonly repaired: readonly string[];
  /** The corrupt newest snapshot passed over at open for an older one, if any (for the log). */
  snapshotFallback: SnapshotFallback | undefined;

  private constructor(
    fs: Fs,
    dir: string,
    wal: Wal,
    loaded: PersistedState,
    tornTail: TornTail | undefined,
    retainEntries: number,
    snapshotsRetained: number,
    repaired: readonly string[],
  ) {
    this.#fs = fs;
    this.#dir = dir;
    this.#wal = wal;
    this.#loaded = loaded;
    this.tornTail = tornTail;
    this.repaired = repaired;
    this.#retainEntries = retainEntries;
    this.#snapshotsRetained = snapshotsRetained;
    this.#snapshotMark = loaded.snapshot === undefined
      ? undefined
      : { index: loaded.snapshot.meta.index, term: loaded.snapshot.meta.term };
  }

  /**
   * Opens (creating when missing) the data directory `dir` of node `nodeId` in cluster
   * `clusterId`, and recovers: replays the newest snapshot and the WAL after it, cutting off a
   * torn tail of the last segment. A corrupt newest snapshot is passed over for the newest valid
   * older one when the WAL holds every entry from it on (reported in `snapshotFallback`). Throws a DataDirError for another cluster's or node's
   * directory, and a WalCorruptionError or SnapshotCorruptionError for damage it cannot repair.
   */
  static open(dir: string, options: FileStorageOptions): FileStorage {
    const fs = options.fs ?? new RealFs();
    const clusterId = checkId("Cluster id", options.clusterId);
    const nodeId = checkId("Node id", options.nodeId);
    const retainEntries = options.retainEntries ?? RETAIN_ENTRIES_DEFAULT;
    if (!Number.isSafeInteger(retainEntries) || retainEntries < 0) {
      throw new RangeError(`retainEntries must be a non-negative integer: ${retainEntries}`);
    }
    const snapshotsRetained = options.snapshotsRetained ?? SNAPSHOTS_RETAINED_DEFAULT;
    if (!Number.isSafeInteger(snapshotsRetained) || snapshotsRetained < 1) {
      throw new RangeError(
        `snapshotsRetained must be an integer of at least 1: ${snapshotsRetained}`,
      );
    }
    let dirSyncs = 0;
    let dataSyncs = 0;
    if (!fs.exists(dir)) {
      fs.mkdir(dir);
      fs.syncDir(parentDir(dir));
      dirSyncs++;
    }
    if (claimDirectory(fs, dir, clusterId, nodeId)) {
      dataSyncs++;
      dirSyncs++;
    }
    // Files left half-written by a crash (snapshot or meta.json temp files) never counted.
    const temps = fs.list(dir).filter((n) => n.endsWith(TEMP_SUFFIX));
    for (const name of temps) fs.remove(joinPath(dir, name));
    if (temps.length > 0) {
      fs.syncDir(dir);
      dirSyncs++;
    }
    const snaps = listSnapshots(fs, dir);
    let snapshot: Snapshot | undefined;
    let corrupt: SnapshotCorruptionError | undefined;
    let older: ReturnType<typeof olderValidSnapshot> | undefined;
    try {
      snapshot = newestSnapshot(fs, dir);
    } catch (e) {
      if (!(e instanceof SnapshotCorruptionError)) throw e;
      corrupt = e;
      older = olderValidSnapshot(fs, dir, snaps);
      if ("failures" in older) {
        const why = older.failures.length === 0
          ? "there is no older snapshot file to fall back on"
          : older.failures.join("; ");
        throw new SnapshotCorruptionError(e.file, e.offset, `${e.detail}; ${why}`);
      }
      snapshot = older.snapshot;
    }
    const { wal, scan } = Wal.open(fs, dir, {
      segmentBytesMax: options.segmentBytesMax,
      repair: options.repairWal,
    });
    let loaded: PersistedState;
    let fallback: SnapshotFallback | undefined;
    if (corrupt !== undefined && snapshot !== undefined && older !== undefined && "info" in older) {
      // The newest snapshot is lost, but an older one plus the WAL rebuild the same state.
      const corruptIndex = snaps[snaps.length - 1].index;
      const gap = fallbackGap(scan, snapshot, corruptIndex);
      if (gap !== undefined) {
        wal.close();
        throw new SnapshotCorruptionError(
          corrupt.file,
          corrupt.offset,
          `${corrupt.detail}; the older snapshot "${older.info.name}" cannot stand in: ${gap}`,
        );
      }
      const { index, term } = snapshot.meta;
      loaded = assemble(dir, { ...scan, snapshotMark: { index, term } }, snapshot);
      // A marker past the older snapshot, kept by the log, proves its entries were committed.
      const mark = scan.snapshotMark;
      if (mark !== undefined && mark.index > loaded.hardState.commitIndex) {
        loaded = { ...loaded, hardState: { ...loaded.hardState, commitIndex: mark.index } };
      }
      fallback = {
        corrupt: corrupt.file,
        movedTo: corruptName(fs, corrupt.file),
        used: joinPath(dir, older.info.name),
        reason: `at byte ${corrupt.offset}: ${corrupt.detail}`,
      };
    } else {
      loaded = assemble(dir, scan, snapshot);
    }
    if (
      snapshot !== undefined &&
      (wal.snapshotMark?.index !== snapshot.meta.index ||
        wal.snapshotMark.term !== snapshot.meta.term)
    ) {
      wal.markSnapshot(snapshot.meta.index, snapshot.meta.term);
    }
    if (fallback !== undefined) {
      // Only once the WAL names the older snapshot: a crash before this falls back again.
      fs.rename(fallback.corrupt, fallback.movedTo);
      fs.syncDir(dir);
      dirSyncs++;
    }
    const storage = new FileStorage(
      fs,
      dir,
      wal,
      loaded,
      scan.tornTail,
      retainEntries,
      snapshotsRetained,
      scan.repaired,
    );
    storage.#extra.dirSyncs += dirSyncs;
    storage.#extra.dataSyncs += dataSyncs;
    storage.snapshotFallback = fallback;
    return storage;
  }

  /** The data directory. */
  get dir(): string {
    return this.#dir;
  }

  /** Index of the last entry stored (the snapshot's index when the log after it is empty). */
  get lastIndex(): number {
    return this.#wal.lastIndex;
  }

  /** Index of the first entry stored (the next index when none is). */
  get firstIndex(): number {
    return this.#wal.firstIndex;
  }

  /** The WAL's segment file names, oldest first. */
  get segmentNames(): string[] {
    return this.#wal.segments.map((s) => s.name);
  }

  /** What was written and synced since open. */
  get counters(): FileStorageCounters {
    const w = this.#wal.counters;
    const dataSyncs = w.dataSyncs + this.#extra.dataSyncs;
    const dirSyncs = w.dirSyncs + this.#extra.dirSyncs;
    return {
      fsyncs: dataSyncs + dirSyncs,
      dataSyncs,
      dirSyncs,
      bytesWritten: w.bytesWritten + this.#extra.bytesWritten,
      records: w.records,
      saves: this.#extra.saves,
      snapshotsSaved: this.#extra.snapshotsSaved,
    };
  }

  #usable(): void {
    if (this.#closed) throw new Error(`Storage in "${this.#dir}" is closed`);
  }

  /**
   * Reads back everything saved: the hard state, the newest snapshot, and the entries kept,
   * contiguous and ending at the last entry. They start at 1 without a snapshot; with one they
   * start at or before `snapshot.meta.index + 1` (the trailing window), or are empty.
   * The first call after open returns what recovery read; later calls read the disk again.
   */
  load(): PersistedState {
    this.#usable();
    const loaded = this.#loaded;
    if (loaded !== undefined) {
      this.#loaded = undefined;
      return loaded;
    }
    const scan = scanWal(this.#fs, this.#dir);
    invariant(scan.tornTail === undefined, () => `no torn tail while open: ${scan.tornTail?.file}`);
    return assemble(this.#dir, scan, newestSnapshot(this.#fs, this.#dir));
  }

  /**
   * Makes `entries` and then `hardState` (when given) durable with one fdatasync before it
   * returns. `entries` must be contiguous and start at or before `lastIndex + 1`; they replace
   * everything stored at or after their first index.
   */
  save(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void {
    this.#append(hardState, entries, true);
  }

  /**
   * Writes like {@linkcode save} without waiting for the disk: the data is durable only after
   * {@linkcode sync} resolves (or a later `save` returns). A leader's own log write, which may run
   * in parallel with replication (Raft dissertation §10.2.1); nothing acknowledges it meanwhile.
   */
  write(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void {
    this.#append(hardState, entries, false);
  }

  #append(
    hardState: HardState | undefined,
    entries: readonly RaftLogEntry[],
    sync: boolean,
  ): void {
    this.#usable();
    if (hardState === undefined && entries.length === 0) return;
    this.#loaded = undefined;
    if (sync) this.#wal.append(hardState, entries);
    else this.#wal.write(hardState, entries);
    this.#extra.saves++;
  }

  /**
   * Makes everything written so far durable with one fdatasync off the event loop. Later writes
   * made while it runs need another call.
   */
  sync(): Promise<void> {
    this.#usable();
    return this.#wal.sync();
  }

  /**
   * Saves `snapshot` durably (temp file, fdatasync, rename, directory fsync), records it in the
   * WAL, then deletes WAL segments whose entries all lie more than `retainEntries` below its
   * index and at or below the previous snapshot kept (the fallback should this file be found
   * corrupt), and snapshot files beyond the newest `snapshotsRetained`. The log is kept when it
   * holds the snapshot's index with its term; otherwise it is dropped and continues after it.
   * A snapshot older than the stored one is refused; the same one again does nothing.
   */
  saveSnapshot(snapshot: Snapshot): void {
    this.#usable();
    const { index, term } = snapshot.meta;
    invariant(
      Number.isSafeInteger(index) && index >= 1 && Number.isSafeInteger(term) && term >= 1,
      () => `snapshot index ${index} and term ${term} must be positive integers`,
    );
    const current = this.#snapshotMark;
    if (current !== undefined && index <= current.index) {
      if (index === current.index && term === current.term) return;
      throw new RangeError(
        `Snapshot at index ${index} (term ${term}) does not follow the stored snapshot at ` +
          `index ${current.index} (term ${current.term})`,
      );
    }
    this.#loaded = undefined;
    const written = writeSnapshotFile(this.#fs, this.#dir, snapshot);
    this.#extra.dataSyncs += written.dataSyncs;
    this.#extra.dirSyncs += written.dirSyncs;
    this.#extra.bytesWritten += written.bytes;
    this.#register(index, term);
  }

  /** Whether {@linkcode close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Index of the newest snapshot saved or recovered (0 when none). */
  get snapshotIndex(): number {
    return this.#snapshotMark?.index ?? 0;
  }

  /**
   * The first half of {@linkcode saveSnapshot}, for a large snapshot: writes its file durably
   * under its final name (temp file, fdatasync, rename, directory fsync) and registers nothing.
   * On the real disk the writes and syncs run off the event loop; on another {@linkcode Fs} they
   * run at once. `frameHead` is the file's frame head when the caller computed it (a
   * `SnapshotFrame`, so the CRC of the data is not taken here in one pass). Then call
   * {@linkcode adoptSnapshot}. One write at a time; `snapshot.data` must not change meanwhile.
   */
  async writeSnapshotFile(snapshot: Snapshot, frameHead?: Uint8Array): Promise<void> {
    this.#usable();
    if (this.#writingSnapshot) throw new Error(`A snapshot file is already being written`);
    this.#writingSnapshot = true;
    try {
      const written = this.#fs instanceof RealFs
        ? await writeSnapshotFileAsync(
          this.#dir,
          snapshot,
          frameHead ?? snapshotFrameHeadOf(snapshot),
        )
        : writeSnapshotFile(this.#fs, this.#dir, snapshot, frameHead);
      this.#extra.dataSyncs += written.dataSyncs;
      this.#extra.dirSyncs += written.dirSyncs;
      this.#extra.bytesWritten += written.bytes;
    } finally {
      this.#writingSnapshot = false;
    }
  }

  /**
   * The second half of {@linkcode saveSnapshot}: records the snapshot whose file
   * {@linkcode writeSnapshotFile} wrote in the WAL, then compacts as `saveSnapshot` does. Returns
   * false when the storage already holds a snapshot at or past its index (one installed from the
   * leader meanwhile): nothing is recorded and the file, when it is not that snapshot's, is
   * removed. Throws when the file is missing.
   */
  adoptSnapshot(snapshot: Snapshot): boolean {
    this.#usable();
    const { index, term } = snapshot.meta;
    const path = joinPath(this.#dir, snapshotName(index));
    const current = this.#snapshotMark;
    if (current !== undefined && index <= current.index) {
      if (index < current.index && this.#fs.exists(path)) this.#fs.remove(path);
      return false;
    }
    if (!this.#fs.exists(path)) {
      throw new Error(`Snapshot file "${path}" is missing: write it with writeSnapshotFile first`);
    }
    this.#loaded = undefined;
    this.#register(index, term);
    return true;
  }

  /** Records the snapshot at `index` (its file durable) in the WAL; drops what it covers. */
  #register(index: number, term: number): void {
    this.#wal.markSnapshot(index, term);
    this.#snapshotMark = { index, term };
    this.#extra.snapshotsSaved++;
    const snaps = listSnapshots(this.#fs, this.#dir);
    const old = snaps.slice(0, Math.max(0, snaps.length - this.#snapshotsRetained));
    // The WAL is kept from the previous snapshot on, so that it can stand in if this one's file
    // turns out corrupt at the next start.
    const previous = snaps.slice(old.length).filter((s) => s.index < index).at(-1);
    let keepFrom = index - this.#retainEntries + 1;
    if (previous !== undefined) keepFrom = Math.min(keepFrom, previous.index + 1);
    this.#wal.compact(Math.max(1, keepFrom));
    for (const s of old) this.#fs.remove(joinPath(this.#dir, s.name));
    if (old.length > 0) {
      this.#fs.syncDir(this.#dir);
      this.#extra.dirSyncs++;
    }
  }

  /** Closes the WAL. Further calls throw. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#loaded = undefined;
    this.#wal.close();
  }
}
