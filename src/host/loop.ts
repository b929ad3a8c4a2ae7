/**
 * `HostLoop`: how a host handles a node's ready batches — the one code path the server
 * (src/net/server.ts, over FileStorage and the peer transport) and the simulator (src/sim, over a
 * simulated disk and network) share. Per batch, in the order Raft requires:
 *
 * 1. a leader's batch (`persistFirst` false) is sent at once: its messages acknowledge nothing;
 * 2. persist: the snapshot, then hard state and entries. A batch that needs no fsync (the core's
 *    `mustSync` false: only commitIndex moved) is not written; its hard state rides along with the
 *    next write. A leader's entries are written without waiting for the disk and synced in the
 *    background; the node counts itself towards a commit only when `stableTo` says the sync is
 *    done (§10.2.1). Any other batch is saved durably before anything else happens (rule 2);
 * 3. a follower's or candidate's messages are sent;
 * 4. apply: restore an installed snapshot, then the committed entries in order;
 * 5. reads whose index is known.
 *
 * No clock, no timers and no I/O of its own: the disk and the transport are interfaces
 * ({@linkcode HostDisk}, {@linkcode HostTransport}), and a finished background sync is reported
 * through {@linkcode HostLoopHooks.wake}, on which the host schedules the next drain.
 *
 * @module
 */

import type { RaftNode } from "../raft/node.ts";
import type {
  FaultPoint,
  HardState,
  Message,
  RaftLogEntry,
  ReadState,
  Ready,
  Snapshot,
} from "../raft/types.ts";

/** A node's disk as the host loop sees it: FileStorage in a server, a simulated disk in the simulator. */
export interface HostDisk {
  /** Makes `snapshot` durable (and everything written before it) before it returns. */
  saveSnapshot(snapshot: Snapshot): void;
  /**
   * Makes `hardState` (when given) and `entries` durable before it returns, and with them every
   * earlier {@linkcode write}. `entries` replace anything stored at or after their first index.
   */
  save(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void;
  /** Writes like {@linkcode save} without waiting: durable once a later `sync` or `save` completes. */
  write(hardState: HardState | undefined, entries: readonly RaftLogEntry[]): void;
  /**
   * Makes every earlier `write` durable, then calls `done` (with the error when the disk failed).
   * `done` may run before `sync` returns (a disk without threads) or any time later.
   */
  sync(done: (error?: Error) => void): void;
}

/** Where a node's messages go: the peer transport, or the simulated network. */
export interface HostTransport {
  /** Hands one message to the network (no delivery promise: Raft tolerates loss). */
  send(message: Message): void;
}

/** What the loop calls out to. */
export interface HostLoopHooks {
  /** The node's disk. */
  readonly disk: HostDisk;
  /** The node's network. */
  readonly transport: HostTransport;
  /** Replaces the state machine with the one in `snapshot`, installed from the leader (§7). */
  restore(snapshot: Snapshot): void;
  /** Applies one committed entry: called in log order, once per entry. */
  apply(entry: RaftLogEntry): void;
  /** A read whose index is now known (or that was refused). */
  readState(read: ReadState): void;
  /** A background sync finished: the node may have output again (`stableTo`); drain it soon. */
  wake(): void;
  /** The disk failed in a background sync: the host must stop. */
  fail(error: Error): void;
  /** Whether the host stopped (crashed or closed) during the batch: then nothing more is done. */
  halted(): boolean;
}

/** Handles one node's ready batches for its host (see the module documentation). */
export class HostLoop {
  readonly #node: RaftNode;
  readonly #hooks: HostLoopHooks;
  /** A hard state that moved only its commitIndex, not yet written (the core said: no fsync). */
  #hardStateDeferred: HardState | undefined;
  /** The last entry written without a sync (a leader's own write), if any. */
  #unsynced: { index: number; term: number } | undefined;
  #syncing = false;
  #stopped = false;
  readonly #sendFirst: boolean;

  /** Drives `node`'s output through `hooks`; `faultPoints` switch on bugs (tests only). */
  constructor(
    node: RaftNode,
    hooks: HostLoopHooks,
    options: { faultPoints?: ReadonlySet<FaultPoint> } = {},
  ) {
    this.#node = node;
    this.#hooks = hooks;
    this.#sendFirst = options.faultPoints?.has("send-before-persist") ?? false;
  }

  /** A hard state not yet written because only its commitIndex moved (save it at a clean stop). */
  get hardStateDeferred(): HardState | undefined {
    return this.#hardStateDeferred;
  }

  /** Whether a background sync is under way. */
  get syncing(): boolean {
    return this.#syncing;
  }

  /** Ignores background syncs that finish from now on (the host closed or crashed). */
  stop(): void {
    this.#stopped = true;
  }

  /** Handles ready batches while the node has any, at most `batchesMax`; returns how many. */
  drain(batchesMax = Infinity): number {
    let batches = 0;
    while (
      batches < batchesMax && !this.#stopped && !this.#hooks.halted() && this.#node.hasReady()
    ) {
      this.handle(this.#node.takeReady());
      batches++;
    }
    return batches;
  }

  /** Handles one ready batch: persist, send, apply, serve reads (see the module documentation). */
  handle(ready: Ready): void {
    const hooks = this.#hooks;
    const node = this.#node;
    const sendFirst = !ready.persistFirst || this.#sendFirst;
    if (sendFirst) this.#send(ready.messages);
    // The snapshot first: the entries of the same batch continue it.
    if (ready.snapshot !== undefined) hooks.disk.saveSnapshot(ready.snapshot);
    if (!ready.mustSync) {
      // Only commitIndex moved: Raft needs no fsync for it (a node that loses it relearns it from
      // the leader; etcd skips this sync too). It rides along with the next write.
      if (ready.hardState !== undefined) this.#hardStateDeferred = ready.hardState;
    } else {
      const save = ready.hardState ?? this.#hardStateDeferred;
      this.#hardStateDeferred = undefined;
      const last = ready.entries[ready.entries.length - 1];
      if (!ready.persistFirst) {
        hooks.disk.write(save, ready.entries);
        if (last !== undefined) this.#unsynced = { index: last.index, term: last.term };
        this.#sync();
      } else {
        hooks.disk.save(save, ready.entries); // also makes earlier writes durable
        if (last !== undefined) node.stableTo(last.index, last.term);
      }
    }
    if (hooks.halted()) return; // crashed while persisting: nothing of the batch leaves
    if (!sendFirst) this.#send(ready.messages);
    if (ready.snapshot !== undefined) hooks.restore(ready.snapshot);
    for (const e of ready.committedEntries) hooks.apply(e);
    for (const r of ready.readStates) hooks.readState(r);
  }

  #send(messages: readonly Message[]): void {
    for (const m of messages) this.#hooks.transport.send(m);
  }

  /**
   * Makes the leader's written entries durable in the background, then tells the node, which may
   * now count itself towards a commit. One sync at a time: writes made during it ride on the next.
   */
  #sync(): void {
    if (this.#syncing || this.#stopped) return;
    const upTo = this.#unsynced;
    this.#unsynced = undefined;
    this.#syncing = true;
    this.#hooks.disk.sync((error) => {
      this.#syncing = false;
      if (this.#stopped) return;
      if (error !== undefined) {
        this.#hooks.fail(error);
        return;
      }
      if (upTo !== undefined) this.#node.stableTo(upTo.index, upTo.term);
      if (this.#unsynced !== undefined) this.#sync();
      this.#hooks.wake();
    });
  }
}
