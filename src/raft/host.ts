/**
 * The host loop every runtime shares: drain a node's ready batches and handle each in the order
 * Raft requires — persist, then send, then apply, then serve reads (rule 2: nothing acknowledges a
 * vote or an append before it is durable). A leader's batch (`persistFirst` false) is sent first
 * and written after, or handed to a host that writes it later (`deferSave`); either way the node
 * hears of the durable write through `stableTo` and only then counts itself (§10.2.1). Also the automatic snapshot every host takes after a
 * number of applied entries (§7), so the log stays bounded.
 *
 * @module
 */

import type { LogApplier } from "./applier.ts";
import { invariant } from "./log.ts";
import type { RaftNode } from "./node.ts";
import type { Storage } from "./storage.ts";
import type { Message, RaftLogEntry, ReadState, Ready, Snapshot } from "./types.ts";

/** What the host loop calls out to. */
export interface HostHooks<R> {
  /** Durable storage; `save` and `saveSnapshot` must not return before the data is durable. */
  readonly storage: Storage;
  /** Applies committed entries. Read again after `restore`, which may replace it. */
  readonly applier: LogApplier<R>;
  /** Sends one message (after the batch it came in is persisted, when it must be). */
  send(message: Message): void;
  /**
   * When given, a batch that need not be durable before its messages go out (`persistFirst`
   * false) is handed here after its messages were sent, instead of being saved on the spot: the
   * host saves the deferred batches later, in order, then calls `node.stableTo` with the last
   * entry saved. Batches that must persist first are preceded by {@linkcode flushDeferred}.
   */
  deferSave?(ready: Ready): void;
  /** Saves every deferred batch now, in order (before a batch that must persist first). */
  flushDeferred?(): void;
  /**
   * Replaces the state machine with the one in `snapshot` (installed from the leader), so that
   * `applier.lastApplied` becomes `snapshot.meta.index`. Needed once snapshots are in use.
   */
  restore?(snapshot: Snapshot): void;
  /** Called after each entry is applied. */
  onApplied?(entry: RaftLogEntry, result: R | undefined): void;
  /** Called for each read whose index is known. */
  onReadState?(read: ReadState): void;
  /** Called after the batch is persisted and before its messages are sent. */
  onPersisted?(ready: Ready): void;
  /** Checked after persisting: when true the host stopped (crashed) and nothing more is done. */
  halted?(): boolean;
}

/** Handles every ready batch the node has; returns how many batches there were. */
export function drainReady<R>(node: RaftNode, hooks: HostHooks<R>): number {
  let batches = 0;
  while (node.hasReady()) {
    const ready = node.takeReady();
    batches++;
    // A leader's batch (`persistFirst` false) replicates while the write goes on (§10.2.1).
    if (!ready.persistFirst) { for (const m of ready.messages) hooks.send(m); }
    if (!ready.persistFirst && hooks.deferSave !== undefined) hooks.deferSave(ready);
    else {
      if (ready.persistFirst && hooks.flushDeferred !== undefined) {
        hooks.flushDeferred();
        if (hooks.halted?.()) return batches; // the host crashed while writing them
      }
      saveReady(node, hooks.storage, ready);
      hooks.onPersisted?.(ready);
      if (hooks.halted?.()) return batches;
      if (ready.persistFirst) { for (const m of ready.messages) hooks.send(m); }
    }
    if (ready.snapshot !== undefined) {
      invariant(
        hooks.restore !== undefined,
        () => "a snapshot arrived but the host cannot restore",
      );
      hooks.restore(ready.snapshot);
      invariant(
        hooks.applier.lastApplied === ready.snapshot.meta.index,
        () =>
          `after restoring snapshot ${
            ready.snapshot!.meta.index
          } lastApplied is ${hooks.applier.lastApplied}`,
      );
    }
    hooks.applier.apply(ready.committedEntries, hooks.onApplied);
    for (const r of ready.readStates) hooks.onReadState?.(r);
  }
  return batches;
}

/**
 * Saves a batch's snapshot, hard state and entries (the snapshot first: the entries continue it)
 * and tells the node what is now durable.
 */
export function saveReady(node: RaftNode, storage: Storage, ready: Ready): void {
  if (ready.snapshot !== undefined) storage.saveSnapshot(ready.snapshot);
  if (ready.hardState !== undefined || ready.entries.length > 0) {
    storage.save(ready.hardState, ready.entries);
  }
  const last = ready.entries[ready.entries.length - 1];
  if (last !== undefined) node.stableTo(last.index, last.term);
}

/**
 * Default of {@linkcode AutoSnapshotOptions.snapshotEntries}: 100,000, etcd's `--snapshot-count`
 * and ZooKeeper's `snapCount` default.
 */
export const SNAPSHOT_ENTRIES_DEFAULT = 100_000;

/** What {@linkcode maybeSnapshot} works on: the node's storage and applier, and the state machine. */
export interface SnapshotHost {
  /** Durable storage; the snapshot is saved here before the log is compacted. */
  readonly storage: Storage;
  /** The applier: the snapshot covers the log up to its `lastApplied`. */
  readonly applier: LogApplier<unknown>;
  /** Serializes the state machine as of `applier.lastApplied`. */
  capture(): Uint8Array;
}

/** Options of {@linkcode maybeSnapshot}. */
export interface AutoSnapshotOptions {
  /** Take a snapshot once this many entries were applied since the last one. Default 100,000. */
  readonly snapshotEntries?: number;
}

/**
 * Takes a snapshot when `snapshotEntries` entries were applied since the node's last one (§7):
 * `host.capture()` serializes the state machine as of `applier.lastApplied`, the snapshot is
 * saved durably through `storage.saveSnapshot`, and only then is the node's log compacted. Call
 * it between ready batches (after {@linkcode drainReady}). Returns the snapshot taken, if any.
 */
export function maybeSnapshot(
  node: RaftNode,
  host: SnapshotHost,
  options: AutoSnapshotOptions = {},
): Snapshot | undefined {
  const every = options.snapshotEntries ?? SNAPSHOT_ENTRIES_DEFAULT;
  invariant(
    Number.isSafeInteger(every) && every >= 1,
    () => `snapshotEntries must be a positive integer: ${every}`,
  );
  const index = host.applier.lastApplied;
  if (index - node.log.snapshotIndex < every) return undefined;
  const term = node.log.term(index);
  invariant(term !== undefined, () => `applied index ${index} is not in the log`);
  const { voters, learners } = node.membershipAt(index); // snapshots carry the configuration
  const snapshot: Snapshot = { meta: { index, term, voters, learners }, data: host.capture() };
  host.storage.saveSnapshot(snapshot);
  node.compact(snapshot);
  return snapshot;
}
