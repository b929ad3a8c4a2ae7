/**
 * The store's history: the events of the most recent revisions, so a watcher can start at a past
 * revision, a client that reconnects can resume where it stopped, and a range at a past revision
 * can undo the changes made since (each event carries the key-value before it). Bounded: at most
 * `revisionsMax` revisions and at most `bytesMax` bytes of keys and values (old values of large
 * overwrites add up fast: each revision holds the new value and the previous one), and an explicit
 * compaction drops older ones. Every revision in (compactRevision, current] is kept, without holes.
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

/** Bounded, gap-free history of the latest revisions. */
export class WatchHistory {
  /** Most revisions kept. */
  readonly revisionsMax: number;
  /** Most bytes of keys and values kept (the newest revision is kept whatever its size). */
  readonly bytesMax: number;
  #entries: RevisionEvents[] = [];
  #bytes = 0;
  #start = 0;
  #compactRevision: number;
  #lastRevision: number;

  /**
   * An empty history of a store at `revision`, whose revisions up to `compactRevision` are gone
   * (an empty store is at revision 1, which has no events, and nothing is gone).
   */
  constructor(revisionsMax: number, revision = 1, compactRevision = 0, bytesMax = Infinity) {
    if (!Number.isSafeInteger(revisionsMax) || revisionsMax < 1) {
      throw new RangeError(`historyRevisionsMax must be a positive integer: ${revisionsMax}`);
    }
    if (!(bytesMax === Infinity || (Number.isSafeInteger(bytesMax) && bytesMax >= 1))) {
      throw new RangeError(`historyBytesMax must be a positive integer: ${bytesMax}`);
    }
    this.revisionsMax = revisionsMax;
    this.bytesMax = bytesMax;
    this.#compactRevision = compactRevision;
    this.#lastRevision = revision;
  }

  /**
   * A history of a store at `revision` holding `revisions`, every revision in
   * (compactRevision, revision] (none of them empty), as a snapshot kept them. When they are more
   * than `revisionsMax`, the oldest are dropped. Throws a RangeError when they have a hole, do not
   * end at `revision`, or an empty one.
   */
  static restore(
    revisionsMax: number,
    revision: number,
    compactRevision: number,
    revisions: readonly RevisionEvents[],
    bytesMax = Infinity,
  ): WatchHistory {
    if (
      !Number.isSafeInteger(compactRevision) || compactRevision < 0 || compactRevision > revision
    ) {
      throw new RangeError(`compact revision ${compactRevision} at revision ${revision}`);
    }
    // Revision 1 is an empty store's and has no events: a store at 1 has nothing to hold.
    const first = Math.max(compactRevision, 1) + 1;
    if (
      revisions.length !== revision - first + 1 && !(revisions.length === 0 && revision < first)
    ) {
      throw new RangeError(
        `${revisions.length} revisions held for (${compactRevision}, ${revision}]`,
      );
    }
    const history = new WatchHistory(revisionsMax, revision, compactRevision, bytesMax);
    for (let i = 0; i < revisions.length; i++) {
      const r = revisions[i];
      if (r?.revision !== first + i || !Array.isArray(r.events) || r.events.length === 0) {
        throw new RangeError(`revision ${first + i} is missing or has no events`);
      }
    }
    const kept = revisions.length > revisionsMax
      ? revisions.slice(revisions.length - revisionsMax)
      : revisions.slice();
    history.#entries = kept;
    history.#bytes = kept.reduce((sum, r) => sum + revisionBytes(r.events), 0);
    if (kept.length < revisions.length) history.#compactRevision = kept[0].revision - 1;
    history.#dropOverBound();
    return history;
  }

  /** Highest revision no longer held (0 when nothing was dropped). */
  get compactRevision(): number {
    return this.#compactRevision;
  }

  /** The oldest revision a watch may start at. */
  get oldestRevision(): number {
    return this.#compactRevision + 1;
  }

  /** Bytes of keys and values held (what `bytesMax` bounds). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Number of revisions held. */
  get size(): number {
    return this.#entries.length - this.#start;
  }

  /** Appends revision `revision`, which must follow the last one; drops the oldest beyond the bound. */
  append(revision: number, events: readonly KvEvent[]): void {
    const last = this.#lastRevision;
    if (revision !== last + 1 || events.length === 0) {
      throw new Error(
        `Invariant violated: history revision ${revision} after ${last} with ${events.length} events`,
      );
    }
    this.#entries.push({ revision, events });
    this.#bytes += revisionBytes(events);
    this.#lastRevision = revision;
    this.#dropOverBound();
  }

  /** Drops the oldest revisions while over either bound, always keeping the newest. */
  #dropOverBound(): void {
    while (this.size > this.revisionsMax || (this.#bytes > this.bytesMax && this.size > 1)) {
      const dropped = this.#entries[this.#start];
      this.#bytes -= revisionBytes(dropped.events);
      this.#compactRevision = dropped.revision;
      this.#start++;
    }
    this.#tidy();
  }

  /** Drops every revision up to and including `revision`. */
  compact(revision: number): void {
    if (revision <= this.#compactRevision) return;
    while (this.#start < this.#entries.length && this.#entries[this.#start].revision <= revision) {
      this.#bytes -= revisionBytes(this.#entries[this.#start].events);
      this.#start++;
    }
    this.#compactRevision = revision;
    this.#tidy();
  }

  /**
   * The revisions from `revision` on, oldest first. Throws {@linkcode CompactedError} when
   * `revision` is at or below the compact revision.
   */
  from(revision: number): RevisionEvents[] {
    if (revision <= this.#compactRevision) {
      throw new CompactedError(revision, this.oldestRevision);
    }
    // Binary search for the first entry with revision >= `revision`.
    let lo = this.#start;
    let hi = this.#entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#entries[mid].revision < revision) lo = mid + 1;
      else hi = mid;
    }
    return this.#entries.slice(lo);
  }

  /** Every revision held, oldest first. */
  all(): readonly RevisionEvents[] {
    return this.#entries.slice(this.#start);
  }

  #tidy(): void {
    if (this.#start > 64 && this.#start * 2 > this.#entries.length) {
      this.#entries = this.#entries.slice(this.#start);
      this.#start = 0;
    }
  }
}

/** Bytes of keys and values one revision holds (UTF-16 units for keys: cheap and deterministic). */
export function revisionBytes(events: readonly KvEvent[]): number {
  let n = 0;
  for (const e of events) {
    n += e.kv.key.length + e.kv.value.length;
    if (e.prevKv !== undefined) n += e.prevKv.key.length + e.prevKv.value.length;
  }
  return n;
}
