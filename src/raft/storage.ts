/**
 * Stable storage as the core sees it: hard state and log entries that must survive a crash.
 * `MemoryStorage` keeps them in memory and records every save, for tests and the simulator;
 * the file-backed write-ahead log implements the same interface.
 *
 * @module
 */

import { invariant } from "./log.ts";
import type { HardState, RaftLogEntry, Snapshot } from "./types.ts";

export type { Snapshot, SnapshotMeta } from "./types.ts";

/** What a node restarts from. */
export interface PersistedState {
  /** Term, vote and commit index. */
  readonly hardState: HardState;
  /** The newest snapshot, if one was saved. */
  readonly snapshot?: Snapshot;
  /**
   * The log entries kept: contiguous, starting at 1 when there is no snapshot, and otherwise at
   * or before `snapshot.meta.index + 1` (a trailing window may be kept), ending at the last entry.
   */
  readonly entries: readonly RaftLogEntry[];
}

/** Durable storage for one node. `save` returns only once the data would survive a crash. */
export interface Storage {
  /** Reads back everything saved so far. */
  load(): PersistedState;
  /**
   * Makes `hardState` (when given) and `entries` durable. `entries` start at `entries[0].index`
   * and replace anything stored at or after it.
   */
  save(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void;
  /**
   * Makes `snapshot` durable as the newest snapshot (§7). The stored log is kept when it holds
   * the snapshot's index with its term (entries below it may then be dropped, beyond a trailing
   * window); otherwise it is dropped and continues at `snapshot.meta.index + 1`. The same snapshot
   * again does nothing; an older one is refused.
   */
  saveSnapshot(snapshot: Snapshot): void;
}

/** One call of {@linkcode MemoryStorage.save}, as recorded. */
export interface SaveRecord {
  /** The hard state saved, if any. */
  readonly hardState: HardState | undefined;
  /** First index of the entries saved (0 when none). */
  readonly entriesFrom: number;
  /** Number of entries saved. */
  readonly entryCount: number;
}

/** Options of {@linkcode MemoryStorage}. */
export interface MemoryStorageOptions {
  /** How many save records to keep. Default 1000. */
  readonly recordsMax?: number;
  /** Entries kept below a snapshot's index (the trailing window). Default 0. */
  readonly retainEntries?: number;
}

/** Storage in memory that remembers what was persisted and when (for tests and the simulator). */
export class MemoryStorage implements Storage {
  #hardState: HardState = { term: 0, votedFor: undefined, commitIndex: 0 };
  /** Entries held, the first at index `#first`. */
  #entries: RaftLogEntry[] = [];
  #first = 1;
  #snapshot: Snapshot | undefined;
  readonly #retainEntries: number;
  /** The most recent saves, oldest first (at most `recordsMax`). */
  readonly records: SaveRecord[] = [];
  /** Number of `save` calls so far. */
  saveCount = 0;
  /** How many save records to keep. */
  readonly recordsMax: number;

  /**
   * Creates empty storage keeping the last `recordsMax` save records (default 1000); pass an
   * options object to also set the trailing window kept below a snapshot.
   */
  constructor(options: number | MemoryStorageOptions = {}) {
    const o = typeof options === "number" ? { recordsMax: options } : options;
    this.recordsMax = o.recordsMax ?? 1000;
    this.#retainEntries = o.retainEntries ?? 0;
    invariant(
      Number.isSafeInteger(this.#retainEntries) && this.#retainEntries >= 0,
      () => `retainEntries must be a non-negative integer: ${this.#retainEntries}`,
    );
  }

  /** The hard state as persisted. */
  get hardState(): HardState {
    return this.#hardState;
  }

  /** Index of the last persisted entry (the snapshot's index when none follows it; 0 when empty). */
  get lastIndex(): number {
    return this.#first + this.#entries.length - 1;
  }

  /** Index of the newest persisted snapshot (0 when none). */
  get snapshotIndex(): number {
    return this.#snapshot?.meta.index ?? 0;
  }

  /** The newest persisted snapshot, if any. */
  get snapshot(): Snapshot | undefined {
    return this.#snapshot;
  }

  /** The persisted entry at `index`, if any. */
  entry(index: number): RaftLogEntry | undefined {
    return index >= this.#first ? this.#entries[index - this.#first] : undefined;
  }

  /** Reads back everything saved so far. */
  load(): PersistedState {
    const entries = [...this.#entries];
    return this.#snapshot === undefined
      ? { hardState: this.#hardState, entries }
      : { hardState: this.#hardState, snapshot: this.#snapshot, entries };
  }

  /** Saves hard state and entries (replacing any stored at or after the first new index). */
  save(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void {
    if (entries.length > 0) {
      const from = entries[0].index;
      invariant(
        from > this.snapshotIndex && from >= this.#first && from <= this.lastIndex + 1,
        () =>
          `saved entries start at ${from}; storage holds ${this.#first}..${this.lastIndex} ` +
          `after snapshot ${this.snapshotIndex}`,
      );
      this.#entries.length = from - this.#first;
      for (const e of entries) this.#entries.push(e);
    }
    if (hardState !== undefined) this.#hardState = hardState;
    this.saveCount++;
    this.records.push({
      hardState,
      entriesFrom: entries.length > 0 ? entries[0].index : 0,
      entryCount: entries.length,
    });
    if (this.records.length > this.recordsMax) this.records.shift();
  }

  /** Saves a snapshot and drops the entries it covers, but a trailing window (see {@linkcode Storage}). */
  saveSnapshot(snapshot: Snapshot): void {
    const { index, term } = snapshot.meta;
    const current = this.#snapshot?.meta;
    if (current !== undefined && index <= current.index) {
      invariant(
        index === current.index && term === current.term,
        () =>
          `snapshot ${index}:${term} does not follow the stored ${current.index}:${current.term}`,
      );
      return;
    }
    if (this.entry(index)?.term === term) {
      const keepFrom = Math.max(this.#first, index - this.#retainEntries + 1);
      this.#entries = this.#entries.slice(keepFrom - this.#first);
      this.#first = keepFrom;
    } else {
      this.#entries = [];
      this.#first = index + 1;
    }
    this.#snapshot = snapshot;
  }
}
