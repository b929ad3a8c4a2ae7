/**
 * The replicated log (the seed's `RaftLog`): 1-based, with a sentinel at index 0 of term 0.
 * The prefix up to `snapshotIndex` may be folded into a snapshot (§7). The log then holds entries
 * from `firstIndex`, which may lie below `snapshotIndex + 1`: a trailing window of entries the
 * snapshot already covers is kept so a follower that lags a little still gets entries, not a
 * whole snapshot. The entry just before `firstIndex` is the log's base: its term is remembered.
 *
 * @module
 */

import type { RaftLogEntry } from "./types.ts";

/** Stops the process close to the cause when a rule of the log is broken. */
export function invariant(condition: boolean, message: () => string): asserts condition {
  if (!condition) throw new Error(`Invariant violated: ${message()}`);
}

/** Where a compacted log starts: the snapshot it continues from (§7). */
export interface LogStart {
  /** Last index the snapshot covers. */
  readonly snapshotIndex: number;
  /** Term of the entry at `snapshotIndex`. */
  readonly snapshotTerm: number;
  /** Most entries to keep below `snapshotIndex` (the trailing window). Default: all given. */
  readonly trailingEntries?: number;
  /** Most command bytes in the trailing window. Default: no bound. */
  readonly trailingBytesMax?: number;
}

/** An in-memory Raft log. Entries are immutable once created; the log shares them, never copies. */
export class RaftLog {
  #entries: RaftLogEntry[] = [];
  /** Index just before the first held entry, and its term (0 and 0 for a log never compacted). */
  #baseIndex = 0;
  #baseTerm = 0;
  #snapshotIndex = 0;
  #snapshotTerm = 0;

  /**
   * A log holding `entries`, contiguous. Without `start` they begin at index 1. With `start` (a
   * restart from a snapshot) they begin at or before `start.snapshotIndex + 1`; entries at or
   * below the snapshot index are kept as the trailing window when they agree with it, and dropped
   * when they do not (then the log continues right after the snapshot).
   */
  constructor(entries: readonly RaftLogEntry[] = [], start?: LogStart) {
    if (start === undefined || start.snapshotIndex === 0) {
      this.append(entries);
      return;
    }
    const { snapshotIndex: s, snapshotTerm: t } = start;
    invariant(s > 0 && t > 0, () => `snapshot index ${s} and term ${t} must be positive`);
    const first = entries.length > 0 ? entries[0].index : s + 1;
    invariant(first <= s + 1, () => `log starts at ${first}, leaving a gap after snapshot ${s}`);
    const atSnapshot = entries[s - first];
    this.#snapshotIndex = s;
    this.#snapshotTerm = t;
    if (first <= s && atSnapshot?.term === t) {
      // The entry before the first held one has no term on record, so it becomes the base.
      // Keep at most the trailing window; the entry before the first held one becomes the base.
      let base = Math.max(first, s - (start.trailingEntries ?? s));
      base = trailingBase(base, s, start.trailingBytesMax, (i) => entries[i - first]);
      this.#baseIndex = base;
      this.#baseTerm = entries[base - first].term;
      this.append(entries.slice(base - first + 1));
    } else {
      this.#baseIndex = s;
      this.#baseTerm = t;
      // Entries after the snapshot continue it only if the log agrees at the snapshot index.
      if (first === s + 1) this.append(entries);
    }
  }

  /** Index of the last entry folded into the latest snapshot (0 when none). */
  get snapshotIndex(): number {
    return this.#snapshotIndex;
  }

  /** Term of the entry at `snapshotIndex` (0 when none). */
  get snapshotTerm(): number {
    return this.#snapshotTerm;
  }

  /** Index just before `firstIndex`: the oldest index whose term the log still knows. */
  get baseIndex(): number {
    return this.#baseIndex;
  }

  /** Index of the last entry, or of the base when the log holds none. */
  get lastIndex(): number {
    return this.#baseIndex + this.#entries.length;
  }

  /** Term of the last entry (0 for an empty log). */
  get lastTerm(): number {
    return this.term(this.lastIndex)!;
  }

  /** First index still held as an entry. */
  get firstIndex(): number {
    return this.#baseIndex + 1;
  }

  /** Number of entries held. */
  get length(): number {
    return this.#entries.length;
  }

  /** Term of the entry at `index`, or `undefined` when the log does not hold it (compacted). */
  term(index: number): number | undefined {
    if (index === this.#baseIndex) return this.#baseTerm;
    if (index < this.#baseIndex || index > this.lastIndex) return undefined;
    return this.#entries[index - this.#baseIndex - 1].term;
  }

  /** The entry at `index`; throws when the log does not hold it. */
  entry(index: number): RaftLogEntry {
    invariant(
      index > this.#baseIndex && index <= this.lastIndex,
      () => `log holds no entry at index ${index} (holds ${this.firstIndex}..${this.lastIndex})`,
    );
    return this.#entries[index - this.#baseIndex - 1];
  }

  /** Entries in [from, to), `from` at least `firstIndex`. */
  slice(from: number, to: number): RaftLogEntry[] {
    invariant(from > this.#baseIndex, () => `slice from ${from} is before the log start`);
    const base = this.#baseIndex + 1;
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
    invariant(
      index > this.#snapshotIndex && index > this.#baseIndex,
      () => `cannot truncate into the snapshot at ${index} (snapshot ${this.#snapshotIndex})`,
    );
    if (index <= this.lastIndex) this.#entries.length = index - this.#baseIndex - 1;
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
    while (i - 1 > this.#baseIndex && this.term(i - 1) === term) i--;
    return i;
  }

  /** Last index holding `term`, or 0 if the log has no entry of that term. */
  lastIndexOfTerm(term: number): number {
    for (let i = this.lastIndex; i > this.#baseIndex; i--) {
      const t = this.term(i)!;
      if (t === term) return i;
      if (t < term) return 0;
    }
    return 0;
  }

  /**
   * Folds the prefix up to `index` (which the log holds, with `term`) into a snapshot the state
   * machine has taken (§7), dropping the entries before it but the last `trailingEntries`, and of
   * those only as many as fit in `trailingBytesMax` (large commands must not pin memory).
   */
  compact(index: number, term: number, trailingEntries = 0, trailingBytesMax = Infinity): void {
    invariant(
      index <= this.lastIndex && this.term(index) === term,
      () => `cannot compact to ${index}:${term}: the log holds term ${this.term(index)} there`,
    );
    invariant(trailingEntries >= 0, () => `trailing entries ${trailingEntries} is negative`);
    if (index <= this.#snapshotIndex) return;
    this.#snapshotIndex = index;
    this.#snapshotTerm = term;
    const base = trailingBase(
      Math.max(this.#baseIndex, index - trailingEntries),
      index,
      trailingBytesMax,
      (i) => this.entry(i),
    );
    if (base > this.#baseIndex) {
      this.#baseTerm = this.term(base)!;
      this.#entries = this.#entries.slice(base - this.#baseIndex);
      this.#baseIndex = base;
    }
  }

  /**
   * Installs a snapshot received from the leader (§7): the log after `index` is kept when the
   * entry at `index` has `term` (it continues the snapshot), otherwise the whole log is dropped
   * and continues right after the snapshot. Returns whether entries were kept.
   */
  installSnapshot(index: number, term: number): boolean {
    invariant(index > this.#snapshotIndex, () => `snapshot ${index} is not newer than the log's`);
    const keep = this.term(index) === term;
    this.#entries = keep ? this.#entries.slice(index - this.#baseIndex) : [];
    this.#baseIndex = index;
    this.#baseTerm = term;
    this.#snapshotIndex = index;
    this.#snapshotTerm = term;
    return keep;
  }
}

/**
 * The base index of a trailing window (entries base+1..index) that starts no earlier than `base`
 * and whose commands total at most `bytesMax`.
 */
function trailingBase(
  base: number,
  index: number,
  bytesMax: number | undefined,
  entryAt: (i: number) => RaftLogEntry,
): number {
  if (bytesMax === undefined || bytesMax === Infinity) return base;
  let bytes = 0;
  let i = index;
  while (i > base) {
    bytes += entryAt(i).command.byteLength;
    if (bytes > bytesMax) break;
    i--;
  }
  return i;
}
