/**
 * The replicated log (the seed's `RaftLog`): 1-based, with a sentinel at index 0 of term 0.
 * Later the prefix up to `snapshotIndex` may be folded into a snapshot; the log then starts after it.
 *
 * @module
 */

import type { RaftLogEntry } from "./types.ts";

/** Stops the process close to the cause when a rule of the log is broken. */
export function invariant(condition: boolean, message: () => string): asserts condition {
  if (!condition) throw new Error(`Invariant violated: ${message()}`);
}

/** An in-memory Raft log. Entries are immutable once created; the log shares them, never copies. */
export class RaftLog {
  #entries: RaftLogEntry[] = [];
  #snapshotIndex = 0;
  #snapshotTerm = 0;

  /** A log holding `entries`, which must start at index 1 and be contiguous. */
  constructor(entries: readonly RaftLogEntry[] = []) {
    this.append(entries);
  }

  /** Index of the entry folded into the latest snapshot (0 when none); the sentinel when empty. */
  get snapshotIndex(): number {
    return this.#snapshotIndex;
  }

  /** Index of the last entry, or of the snapshot/sentinel when the log is empty. */
  get lastIndex(): number {
    return this.#snapshotIndex + this.#entries.length;
  }

  /** Term of the last entry (0 for an empty log). */
  get lastTerm(): number {
    return this.term(this.lastIndex)!;
  }

  /** First index still held as an entry. */
  get firstIndex(): number {
    return this.#snapshotIndex + 1;
  }

  /** Term of the entry at `index`, or `undefined` when the log does not hold it. */
  term(index: number): number | undefined {
    if (index === this.#snapshotIndex) return this.#snapshotTerm;
    if (index < this.#snapshotIndex || index > this.lastIndex) return undefined;
    return this.#entries[index - this.#snapshotIndex - 1].term;
  }

  /** The entry at `index`; throws when the log does not hold it. */
  entry(index: number): RaftLogEntry {
    invariant(
      index > this.#snapshotIndex && index <= this.lastIndex,
      () => `log holds no entry at index ${index} (holds ${this.firstIndex}..${this.lastIndex})`,
    );
    return this.#entries[index - this.#snapshotIndex - 1];
  }

  /** Entries in [from, to), `from` at least `firstIndex`. */
  slice(from: number, to: number): RaftLogEntry[] {
    invariant(from > this.#snapshotIndex, () => `slice from ${from} is before the log start`);
    const base = this.#snapshotIndex + 1;
    return this.#entries.slice(from - base, Math.min(to, this.lastIndex + 1) - base);
  }

  /**
   * Up to `countMax` entries from `from` whose commands total at most `bytesMax` (at least one
   * entry is returned when any exists, so a large command still moves).
   */
  sliceBounded(from: number, countMax: number, bytesMax: number): RaftLogEntry[] {
    const out: RaftLogEntry[] = [];
    let bytes = 0;
    for (let i = from; i <= this.lastIndex && out.length < countMax; i++) {
      const e = this.entry(i);
      bytes += e.command.byteLength;
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(e);
    }
    return out;
  }

  /** Appends entries that continue the log exactly at `lastIndex + 1`. */
  append(entries: readonly RaftLogEntry[]): void {
    for (const e of entries) {
      invariant(
        e.index === this.lastIndex + 1,
        () => `appended entry index ${e.index} does not follow last index ${this.lastIndex}`,
      );
      invariant(
        e.term >= this.lastTerm,
        () => `appended entry term ${e.term} is below last term ${this.lastTerm}`,
      );
      this.#entries.push(e);
    }
  }

  /** Removes the entries at `index` and after. The caller ensures none of them is committed. */
  truncateFrom(index: number): void {
    invariant(index > this.#snapshotIndex, () => `cannot truncate into the snapshot at ${index}`);
    if (index <= this.lastIndex) this.#entries.length = index - this.#snapshotIndex - 1;
  }

  /** Whether a log ending at (lastLogIndex, lastLogTerm) is at least as up to date as this one (§5.4.1). */
  isUpToDate(lastLogIndex: number, lastLogTerm: number): boolean {
    const myTerm = this.lastTerm;
    return lastLogTerm > myTerm || (lastLogTerm === myTerm && lastLogIndex >= this.lastIndex);
  }

  /** First index in this log holding `term`, searching back from `fromIndex` (conflict hint). */
  firstIndexOfTermAt(fromIndex: number): number {
    const term = this.term(fromIndex);
    let i = fromIndex;
    while (i - 1 > this.#snapshotIndex && this.term(i - 1) === term) i--;
    return i;
  }

  /** Last index holding `term`, or 0 if the log has no entry of that term. */
  lastIndexOfTerm(term: number): number {
    for (let i = this.lastIndex; i > this.#snapshotIndex; i--) {
      const t = this.term(i)!;
      if (t === term) return i;
      if (t < term) return 0;
    }
    return 0;
  }

  /** Folds the prefix up to `index` (of `term`) into a snapshot and drops those entries. */
  compact(index: number, term: number): void {
    if (index <= this.#snapshotIndex) return;
    if (index <= this.lastIndex && this.term(index) === term) {
      this.#entries = this.#entries.slice(index - this.#snapshotIndex);
    } else {
      this.#entries = [];
    }
    this.#snapshotIndex = index;
    this.#snapshotTerm = term;
  }
}
