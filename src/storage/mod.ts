/**
 * Durable storage for raftmeta: the write-ahead log, snapshot files and {@linkcode FileStorage},
 * over a real or a simulated file system.
 *
 * @example
 * ```ts
 * import { FileStorage, SimFs } from "./mod.ts";
 * const fs = new SimFs();
 * const storage = FileStorage.open("/data", { fs, clusterId: "c1", nodeId: "n1" });
 * storage.save({ term: 1, votedFor: undefined, commitIndex: 0 }, []);
 * ```
 *
 * @module
 */

export type { EntryKind, HardState, NodeId, RaftLogEntry } from "../raft/types.ts";
export type { PersistedState, Snapshot, SnapshotMeta, Storage } from "../raft/storage.ts";
export { crc32c, crc32cUpdate } from "./crc32c.ts";
export { DataDirError, SnapshotCorruptionError, WalCorruptionError } from "./errors.ts";
export {
  type CrashOptions,
  type Fs,
  type FsFile,
  joinPath,
  parentDir,
  randomTornTail,
  RealFs,
  SimFs,
  type SimFsOp,
  type TornTailChooser,
} from "./fs.ts";
export {
  FileStorage,
  type FileStorageCounters,
  type FileStorageOptions,
  ID_CHARS_MAX,
  META_FILE,
  RETAIN_ENTRIES_DEFAULT,
  type SnapshotFallback,
  SNAPSHOTS_RETAINED_DEFAULT,
} from "./file_storage.ts";
export { BATCH_BYTES_MAX, SEGMENT_BYTES_MAX_DEFAULT, segmentName, type TornTail } from "./wal.ts";
export { RECORD_PAYLOAD_BYTES_MAX, SNAPSHOT_PAYLOAD_BYTES_MAX } from "./record.ts";
export { snapshotName } from "./snapshot_file.ts";
