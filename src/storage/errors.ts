/**
 * The errors of the storage layer. Each names the file and, where it applies, the byte offset,
 * so an operator can look at the damage with `xxd -s <offset>`.
 *
 * @module
 */

/**
 * A WAL segment is damaged somewhere other than the torn tail of the last segment: a bad checksum,
 * an impossible length, a record that does not decode, or a segment missing from the sequence.
 * Recovery stops here rather than drop acknowledged data silently.
 */
export class WalCorruptionError extends Error {
  /** Path of the damaged segment. */
  readonly file: string;
  /** Byte offset in `file` of the record that is damaged. */
  readonly offset: number;
  /** Creates the error; `detail` says what is wrong, in sentence case. */
  constructor(file: string, offset: number, detail: string) {
    super(`WAL corruption in "${file}" at byte ${offset}: ${detail}`);
    this.name = "WalCorruptionError";
    this.file = file;
    this.offset = offset;
  }
}

/** A snapshot file is damaged (snapshots are renamed into place only once synced, so never torn). */
export class SnapshotCorruptionError extends Error {
  /** Path of the damaged snapshot file. */
  readonly file: string;
  /** Byte offset in `file` where the damage was found. */
  readonly offset: number;
  /** What is wrong, without the file and offset. */
  readonly detail: string;
  /** Creates the error; `detail` says what is wrong, in sentence case. */
  constructor(file: string, offset: number, detail: string) {
    super(`Snapshot corruption in "${file}" at byte ${offset}: ${detail}`);
    this.name = "SnapshotCorruptionError";
    this.file = file;
    this.offset = offset;
    this.detail = detail;
  }
}

/** The data directory belongs to another cluster or node, or its metadata file is unreadable. */
export class DataDirError extends Error {
  /** Path of the data directory. */
  readonly dir: string;
  /** Creates the error; `detail` says what is wrong, in sentence case. */
  constructor(dir: string, detail: string) {
    super(`Data directory "${dir}" refused: ${detail}`);
    this.name = "DataDirError";
    this.dir = dir;
  }
}
