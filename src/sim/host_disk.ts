/**
 * `SimHostDisk`: a simulated node's disk as the shared host loop (src/host/loop.ts) sees it. A
 * `write` is held in the process's memory until a `sync` completes — at once, or when the
 * simulator's clock says the disk is done — or until a `save` or `saveSnapshot`, which make it
 * durable first, as a real WAL's later fdatasync does. A crash drops the held writes with this
 * object. Every write that becomes durable is reported, so the checks and the crash points see
 * exactly what the disk holds.
 *
 * @module
 */

import type { HostDisk } from "../host/loop.ts";
import type { PersistedState, Storage } from "../raft/storage.ts";
import type { HardState, RaftLogEntry, Snapshot } from "../raft/types.ts";

/** What a {@linkcode SimHostDisk} calls out to. */
export interface SimHostDiskHooks {
  /** The term of the node's log entry at `index` (for the checks on entries written). */
  termAt(index: number): number | undefined;
  /** Called after data became durable: `entries` (maybe none) with the terms before them. */
  onDurable(entries: readonly RaftLogEntry[], termAt: (i: number) => number | undefined): void;
  /** Runs `complete` when the disk has synced: at once, or later on the virtual clock. */
  scheduleSync(complete: () => void): void;
  /** Whether the node crashed (then a sync in progress never completes). */
  halted(): boolean;
}

/** Writes held in memory until synced, over a durable {@linkcode Storage}. */
export class SimHostDisk implements HostDisk, Storage {
  readonly #storage: Storage;
  readonly #hooks: SimHostDiskHooks;
  #written: {
    hardState: HardState | undefined;
    entries: readonly RaftLogEntry[];
    prevTerm: number | undefined;
  }[] = [];

  /** Holds writes for `storage` (whose `save` is durable when it returns). */
  constructor(storage: Storage, hooks: SimHostDiskHooks) {
    this.#storage = storage;
    this.#hooks = hooks;
  }

  /** Reads back what is durable (held writes are not). */
  load(): PersistedState {
    return this.#storage.load();
  }

  /** Saves `snapshot` durably, after the writes held before it. */
  saveSnapshot(snapshot: Snapshot): void {
    this.#flush();
    if (this.#hooks.halted()) return;
    this.#storage.saveSnapshot(snapshot);
    this.#hooks.onDurable([], () => undefined);
  }

  /** Saves durably, after the writes held before it. */
  save(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void {
    this.#flush();
    if (this.#hooks.halted()) return;
    this.#persist(hardState, entries, this.#prevTerm(entries));
  }

  /** Holds the write until a sync (lost if the node crashes first). */
  write(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void {
    this.#written.push({ hardState, entries, prevTerm: this.#prevTerm(entries) });
  }

  /** Makes the held writes durable when the simulated disk is done, then calls `done`. */
  sync(done: (error?: Error) => void): void {
    this.#hooks.scheduleSync(() => {
      this.#flush();
      if (!this.#hooks.halted()) done();
    });
  }

  #prevTerm(entries: readonly RaftLogEntry[]): number | undefined {
    return entries.length === 0 ? undefined : this.#hooks.termAt(entries[0].index - 1);
  }

  #flush(): void {
    while (this.#written.length > 0 && !this.#hooks.halted()) {
      const { hardState, entries, prevTerm } = this.#written.shift()!;
      this.#persist(hardState, entries, prevTerm);
    }
  }

  #persist(
    hardState: HardState | undefined,
    entries: readonly RaftLogEntry[],
    prevTerm: number | undefined,
  ): void {
    this.#storage.save(hardState, entries);
    const first = entries[0]?.index ?? 0;
    this.#hooks.onDurable(
      entries,
      (i) => i >= first ? entries[i - first]?.term : i === first - 1 ? prevTerm : undefined,
    );
  }
}
