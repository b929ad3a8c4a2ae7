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

/** Bytes a version counts for in the quota: its key (UTF-16 units) and its value. */
export function versionBytes(v: Version): number {
  return v.key.length + v.value.length;
}

/**
 * Every version written after the compact revision, in the order they were written (so in
 * revision order). Append-only but for {@linkcode dropThrough}, which replaces the array instead
 * of changing it, so a slice handed out by {@linkcode slice} stays valid.
 */
export class VersionLog {
  #versions: Version[] = [];
  #start = 0;

  /** Number of versions held. */
  get size(): number {
    return this.#versions.length - this.#start;
  }

  /** Appends `v`, whose revision must not be below the last one's. */
  push(v: Version): void {
    const n = this.#versions.length;
    if (n > this.#start && this.#versions[n - 1].modRevision > v.modRevision) {
      throw new Error(
        `Invariant violated: version of revision ${v.modRevision} after ${
          this.#versions[n - 1].modRevision
        }`,
      );
    }
    this.#versions.push(v);
  }

  /** Index (in {@linkcode at}'s terms) of the first version of revision `revision` or later. */
  indexOf(revision: number): number {
    let lo = this.#start;
    let hi = this.#versions.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#versions[mid].modRevision < revision) lo = mid + 1;
      else hi = mid;
    }
    return lo - this.#start;
  }

  /** The `i`th version held (0: the oldest). */
  at(i: number): Version {
    return this.#versions[this.#start + i];
  }

  /** The versions from index `from` to the end: a frozen copy of the pointers' range. */
  slice(
    from = 0,
  ): { readonly versions: readonly Version[]; readonly start: number; readonly end: number } {
    return { versions: this.#versions, start: this.#start + from, end: this.#versions.length };
  }

  /**
   * Drops at most `versionsMax` of the oldest versions of revisions up to `revision`, calling
   * `visit` on each first; returns whether none of those revisions is left.
   */
  dropThrough(revision: number, versionsMax: number, visit: (v: Version) => void): boolean {
    const through = this.#start + this.indexOf(revision + 1);
    const end = Math.min(through, this.#start + versionsMax);
    for (let i = this.#start; i < end; i++) visit(this.#versions[i]);
    this.#start = end;
    // A new array, so a slice handed out earlier keeps its versions.
    if (this.#start === this.#versions.length) {
      this.#versions = [];
      this.#start = 0;
    } else if (this.#start > 1024 && this.#start * 2 > this.#versions.length) {
      this.#versions = this.#versions.slice(this.#start);
      this.#start = 0;
    }
    return end === through;
  }
}
