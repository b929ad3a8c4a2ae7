/**
 * The host loop every runtime shares: drain a node's ready batches and handle each in the order
 * Raft requires — persist, then send, then apply, then serve reads (rule 2: nothing acknowledges a
 * vote or an append before it is durable).
 *
 * @module
 */

import type { LogApplier } from "./applier.ts";
import type { RaftNode } from "./node.ts";
import type { Storage } from "./storage.ts";
import type { Message, RaftLogEntry, ReadState, Ready } from "./types.ts";

/** What the host loop calls out to. */
export interface HostHooks<R> {
  /** Durable storage; `save` must not return before the data is durable. */
  readonly storage: Storage;
  /** Applies committed entries. */
  readonly applier: LogApplier<R>;
  /** Sends one message (after the batch it came in is persisted). */
  send(message: Message): void;
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
    if (ready.hardState !== undefined || ready.entries.length > 0) {
      hooks.storage.save(ready.hardState, ready.entries);
    }
    hooks.onPersisted?.(ready);
    if (hooks.halted?.()) return batches;
    for (const m of ready.messages) hooks.send(m);
    hooks.applier.apply(ready.committedEntries, hooks.onApplied);
    for (const r of ready.readStates) hooks.onReadState?.(r);
  }
  return batches;
}
