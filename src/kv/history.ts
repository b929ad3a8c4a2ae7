/**
 * The store's history (MVCC): every version of every key since the compact revision, as etcd
 * keeps it until a compaction. Two views of the same version objects, never two copies:
 *
 * - the {@linkcode VersionLog}, every change in revision order (what a watch replays and a
 *   snapshot writes), and
 * - per key, a chain from its newest version to older ones through `prev` (what a range at an
 *   old revision reads); a deleted key's newest version is a tombstone (`version` 0).
 *
 * @module
 */

import type { KvEvent } from "./types.ts";

/** A watch asked for a revision the history no longer holds. */
export class CompactedError extends Error {
  /** The revision asked for. */
  readonly revision: number;
  /** The oldest revision a watch may still start at. */
  readonly oldestRevision: number;
  /** Makes the error for a watch from `revision` when history starts at `oldestRevision`. */
  constructor(revision: number, oldestRevision: number) {
    super(
      `Revision ${revision} has been compacted: the oldest revision still available is ${oldestRevision}`,
    );
    this.name = "CompactedError";
    this.revision = revision;
    this.oldestRevision = oldestRevision;
  }
}

/** The events of one revision, in the order the command made them. */
export interface RevisionEvents {
  /** The revision. */
  readonly revision: number;
  /** Its events (at least one: a revision is only made by a change). */
  readonly events: readonly KvEvent[];
}

/**
 * One version of a key as the store keeps it. Immutable but for `prev`, which a compaction cuts.
 * A tombstone (the key deleted at `modRevision`) has `version` 0, `createRevision` 0 and an
 * empty value.
 */
export interface Version {
  /** The key. */
  readonly key: string;
  /** The value; the store's own bytes, never written. */
  readonly value: Uint8Array;
  /** Revision of the write that created the key (0 for a tombstone). */
  readonly createRevision: number;
  /** Revision of this write. */
  readonly modRevision: number;
  /** Puts since creation (1 on create; 0 for a tombstone). */
  readonly version: number;
  /** Lease id, 0 for none. */
  readonly lease: number;
  /** The key's version before this one, or `undefined` when none is kept. */
  prev: Version | undefined;
}

/**
 * Heap bytes a kept version (current or older) costs beyond its key and value: the version object,
 * its place in the key's chain, the revision log and the index. Measured at about 260–300 bytes
 * (bench/kv_history_bench.ts: 297 bytes per version with 25-byte keys and 13-byte values); the
 * quota counts it so that `--quota-backend-bytes` bounds the heap, not only the payload.
 */
export const VERSION_OVERHEAD_BYTES = 256;

/** Bytes a version's payload counts for in the quota: its key (UTF-16 units) and its value. */
export function versionBytes(v: Version): number {
  return v.key.length + v.value.length;
}

/** Versions per chunk of a {@linkcode VersionLog}. */
const CHUNK_VERSIONS = 4096;

/** A stable view of a {@linkcode VersionLog}'s versions [start, end), from {@linkcode VersionLog.view}. */
export class VersionLogView {
  readonly #chunks: readonly (readonly Version[])[];
  readonly #offset: number;
  /** Number of versions in the view. */
  readonly size: number;
  /** Use {@linkcode VersionLog.view}. */
  constructor(chunks: readonly (readonly Version[])[], offset: number, size: number) {
    this.#chunks = chunks;
    this.#offset = offset;
    this.size = size;
  }
  /** The `i`th version of the view. */
  at(i: number): Version {
    const j = this.#offset + i;
    return this.#chunks[Math.floor(j / CHUNK_VERSIONS)][j % CHUNK_VERSIONS];
  }
}

/**
 * Every version written after the compact revision, in the order they were written (so in
 * revision order), in chunks of 4,096, so dropping the oldest never copies the rest. A
 * {@linkcode view} stays valid while versions are appended; dropping (a compaction) must wait
 * until no view is read any more (the store defers it while a frozen store is open).
 */
export class VersionLog {
  /** Every chunk full but the last; the first starts at `#start`. */
  #chunks: Version[][] = [];
  #start = 0;
  #size = 0;

  /** Number of versions held. */
  get size(): number {
    return this.#size;
  }

  /** Appends `v`, whose revision must not be below the last one's. */
  push(v: Version): void {
    if (this.#size > 0 && this.at(this.#size - 1).modRevision > v.modRevision) {
      throw new Error(
        `Invariant violated: version of revision ${v.modRevision} after ${
          this.at(this.#size - 1).modRevision
        }`,
      );
    }
    let last = this.#chunks.at(-1);
    if (last === undefined || last.length === CHUNK_VERSIONS) {
      last = [];
      this.#chunks.push(last);
    }
    last.push(v);
    this.#size++;
  }

  /** The `i`th version held (0: the oldest). */
  at(i: number): Version {
    const j = this.#start + i;
    return this.#chunks[Math.floor(j / CHUNK_VERSIONS)][j % CHUNK_VERSIONS];
  }

  /** Index (in {@linkcode at}'s terms) of the first version of revision `revision` or later. */
  indexOf(revision: number): number {
    let lo = 0;
    let hi = this.#size;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.at(mid).modRevision < revision) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The versions held now; later appends do not show in it. */
  view(): VersionLogView {
    return new VersionLogView(this.#chunks.slice(), this.#start, this.#size);
  }

  /**
   * Drops at most `versionsMax` of the oldest versions of revisions up to `revision`, calling
   * `visit` on each first; returns whether none of those revisions is left.
   */
  dropThrough(revision: number, versionsMax: number, visit: (v: Version) => void): boolean {
    const through = this.indexOf(revision + 1);
    const n = Math.min(through, versionsMax);
    for (let i = 0; i < n; i++) {
      visit(this.#chunks[0][this.#start]);
      // The slot lets go of the version, so the garbage collector may take it.
      this.#chunks[0][this.#start] = undefined as unknown as Version;
      this.#start++;
      this.#size--;
      if (this.#start === CHUNK_VERSIONS || this.#size === 0) {
        this.#chunks.shift();
        this.#start = 0;
      }
    }
    if (this.#size === 0) this.#chunks = [];
    return n === through;
  }
}
