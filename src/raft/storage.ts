/**
 * Stable storage as the core sees it: hard state and log entries that must survive a crash.
 * `MemoryStorage` keeps them in memory and records every save, for tests and the simulator;
 * the file-backed write-ahead log implements the same interface.
 *
 * @module
 */

import { invariant } from "./log.ts";
import type { HardState, NodeId, RaftLogEntry } from "./types.ts";

/** What a snapshot covers: the log up to `index` (of `term`) folded into the state machine. */
export interface SnapshotMeta {
  /** Last log index the snapshot includes. */
  readonly index: number;
  /** Term of the entry at `index`. */
  readonly term: number;
  /** The cluster's voters as of `index`. */
  readonly voters: readonly NodeId[];
}

/** A state machine snapshot: its metadata and the serialized state. */
export interface Snapshot {
  /** What the snapshot covers. */
  readonly meta: SnapshotMeta;
  /** The serialized state machine. */
  readonly data: Uint8Array;
}

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

/** Storage in memory that remembers what was persisted and when (for tests and the simulator). */
export class MemoryStorage implements Storage {
  #hardState: HardState = { term: 0, votedFor: undefined, commitIndex: 0 };
  #entries: RaftLogEntry[] = [];
  /** The most recent saves, oldest first (at most `recordsMax`). */
  readonly records: SaveRecord[] = [];
  /** Number of `save` calls so far. */
  saveCount = 0;
  /** How many save records to keep. */
  readonly recordsMax: number;

  /** Creates empty storage keeping the last `recordsMax` save records (default 1000). */
  constructor(recordsMax = 1000) {
    this.recordsMax = recordsMax;
  }

  /** The hard state as persisted. */
  get hardState(): HardState {
    return this.#hardState;
  }

  /** Index of the last persisted entry (0 when none). */
  get lastIndex(): number {
    return this.#entries.length;
  }

  /** The persisted entry at `index`, if any. */
  entry(index: number): RaftLogEntry | undefined {
    return this.#entries[index - 1];
  }

  /** Reads back everything saved so far. */
  load(): PersistedState {
    return { hardState: this.#hardState, entries: [...this.#entries] };
  }

  /** Saves hard state and entries (replacing any stored at or after the first new index). */
  save(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void {
    if (entries.length > 0) {
      const from = entries[0].index;
      invariant(
        from >= 1 && from <= this.#entries.length + 1,
        () => `saved entries start at ${from}, leaving a gap after ${this.#entries.length}`,
      );
      this.#entries.length = from - 1;
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
}
