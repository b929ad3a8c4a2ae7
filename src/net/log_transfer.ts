/**
 * The log transfer that rebuilds a node whose data directory was lost (`--join`): the leader's
 * newest snapshot and every entry after it, streamed on the peer port after the peer handshake
 * (so only a node that proves the cluster secret gets it) in bounded frames — snapshot chunks and
 * entry batches of the sizes normal replication uses — and never built as one message. The
 * leader produces one frame per step of a generator; the transport writes each before it asks
 * for the next, so the event loop serves everything else between frames.
 *
 * Stream: InstallSnapshot chunks in order (if the leader has a snapshot), then AppendEntries
 * batches continuing it, then a `logEnd` frame; or a `refused` frame with the reason.
 *
 * @module
 */

import type { RaftNode } from "../raft/node.ts";
import { type Membership, membership } from "../raft/membership.ts";
import type { Message, NodeId, RaftLogEntry, Snapshot, SnapshotMeta } from "../raft/types.ts";
import {
  decodeJsonFrame,
  decodeMessages,
  encodeJsonFrame,
  encodeMessagesFrame,
  FrameError,
  FrameKind,
} from "./codec.ts";

/** What a joining node copied from the leader before it starts. */
export interface LogTransfer {
  /** The node that sent it (the leader). */
  readonly from: NodeId;
  /** The leader's term when it sent it. */
  readonly term: number;
  /** The leader's commitIndex at the end of the transfer. */
  readonly leaderCommit: number;
  /** The leader's newest snapshot, if it had one. */
  readonly snapshot: Snapshot | undefined;
  /** Every entry after the snapshot, up to the leader's last index when the transfer began. */
  readonly entries: readonly RaftLogEntry[];
  /** The leader's configuration at index 0 (the base of a log without a snapshot). */
  readonly bootstrap?: Membership;
  /** The leader's member table (ids and URLs, src/net/members.ts), as JSON. */
  readonly members?: unknown;
}

/**
 * The frames of `node`'s log for the rebuilding peer `to`, one per step. Throws (at the step where
 * it happens) when `node` is not the leader or stops leading, or when the log is compacted past
 * the next entry to send (the joining node then asks again).
 */
export function* logTransferFrames(
  node: RaftNode,
  to: NodeId,
  members?: () => unknown,
): Generator<Uint8Array> {
  const term = node.term;
  const stillLeading = () => {
    if (node.role !== "Leader" || node.term !== term) {
      const leader = node.leaderId === undefined ? "no leader is known" : `ask "${node.leaderId}"`;
      throw new Error(`Node "${node.id}" is not the leader in term ${node.term} (${leader})`);
    }
  };
  stillLeading();
  const { snapshotChunkBytesMax, entriesPerMessageMax, bytesPerMessageMax } = node.config;
  const snapshot = node.snapshot;
  const lastIndex = node.log.lastIndex;
  if (snapshot !== undefined) {
    const total = snapshot.data.byteLength;
    for (let offset = 0; offset === 0 || offset < total; offset += snapshotChunkBytesMax) {
      stillLeading();
      const end = Math.min(total, offset + snapshotChunkBytesMax);
      yield encodeMessagesFrame([{
        type: "InstallSnapshot",
        from: node.id,
        to,
        term,
        meta: snapshot.meta,
        totalBytes: total,
        offset,
        data: snapshot.data.subarray(offset, end),
        done: end === total,
      }]);
    }
  }
  let next = (snapshot?.meta.index ?? 0) + 1;
  do {
    stillLeading();
    const prevLogTerm = node.log.term(next - 1);
    if (prevLogTerm === undefined) {
      throw new Error(`The log was compacted past index ${next - 1} during the transfer; retry`);
    }
    const entries = next > lastIndex
      ? []
      : node.log.sliceBounded(next, entriesPerMessageMax, bytesPerMessageMax)
        .filter((e) => e.index <= lastIndex);
    yield encodeMessagesFrame([{
      type: "AppendEntries",
      from: node.id,
      to,
      term,
      prevLogIndex: next - 1,
      prevLogTerm,
      entries,
      leaderCommit: node.commitIndex,
      readRound: 0,
    }]);
    next += entries.length;
  } while (next <= lastIndex);
  stillLeading();
  // Entries may have committed past `lastIndex` meanwhile; the joiner holds only up to it.
  const leaderCommit = Math.min(node.commitIndex, lastIndex);
  const end: Record<string, unknown> = { term, leaderCommit, lastIndex };
  if (snapshot === undefined) {
    const m = node.membershipAt(0);
    end.bootstrap = { voters: m.voters, learners: m.learners };
  }
  if (members !== undefined) end.members = members();
  yield encodeJsonFrame(FrameKind.logEnd, end);
}

/**
 * Assembles a transfer from the frames of {@linkcode logTransferFrames}, checking that they
 * continue each other. Throws {@linkcode FrameError} naming what does not fit.
 */
export class LogTransferReceiver {
  readonly #from: NodeId;
  readonly #to: NodeId;
  #meta: SnapshotMeta | undefined;
  #data: Uint8Array | undefined;
  #snapshotBytes = 0;
  #entries: RaftLogEntry[] = [];
  #base = 0;
  #appends = 0;
  #result: LogTransfer | undefined;

  /** A receiver for `to`'s transfer from `from`. */
  constructor(from: NodeId, to: NodeId) {
    this.#from = from;
    this.#to = to;
  }

  /** Takes one frame's payload; returns true when the transfer is complete. */
  push(payload: Uint8Array): boolean {
    if (this.#result !== undefined) throw new FrameError("Frame after the end of the log transfer");
    if (payload[0] === FrameKind.logEnd) return this.#end(payload);
    for (const m of decodeMessages(payload)) {
      if (m.from !== this.#from || m.to !== this.#to) {
        throw new FrameError(`Log transfer message from "${m.from}" to "${m.to}"`);
      }
      if (m.type === "InstallSnapshot") this.#chunk(m);
      else if (m.type === "AppendEntries") this.#append(m);
      else throw new FrameError(`Unexpected ${m.type} in a log transfer`);
    }
    return false;
  }

  /** The transfer, once {@linkcode LogTransferReceiver.push} returned true. */
  get result(): LogTransfer | undefined {
    return this.#result;
  }

  #chunk(m: Extract<Message, { type: "InstallSnapshot" }>): void {
    if (this.#appends > 0) throw new FrameError("Snapshot chunk after the entries");
    if (m.offset === 0 && this.#data === undefined) {
      this.#meta = m.meta;
      this.#data = new Uint8Array(m.totalBytes);
    }
    const data = this.#data;
    if (
      data === undefined || m.meta.index !== this.#meta!.index || m.totalBytes !== data.length ||
      m.offset !== this.#snapshotBytes || m.offset + m.data.length > data.length ||
      m.done !== (m.offset + m.data.length === data.length)
    ) {
      throw new FrameError(
        `Snapshot chunk at offset ${m.offset} of ${m.totalBytes} bytes does not continue the ` +
          `${this.#snapshotBytes} bytes received`,
      );
    }
    data.set(m.data, m.offset);
    this.#snapshotBytes += m.data.length;
    if (m.done) this.#base = m.meta.index;
  }

  #append(m: Extract<Message, { type: "AppendEntries" }>): void {
    if (this.#data !== undefined && this.#snapshotBytes !== this.#data.length) {
      throw new FrameError("Entries before the snapshot is complete");
    }
    const expected = this.#base + this.#entries.length;
    if (m.prevLogIndex !== expected) {
      throw new FrameError(`Entries after index ${m.prevLogIndex}, expected after ${expected}`);
    }
    if (this.#appends === 0 && this.#meta !== undefined && m.prevLogTerm !== this.#meta.term) {
      throw new FrameError(
        `Entries after term ${m.prevLogTerm}, the snapshot's is ${this.#meta.term}`,
      );
    }
    for (const [i, e] of m.entries.entries()) {
      if (e.index !== expected + 1 + i) throw new FrameError(`Entry ${e.index} is out of order`);
    }
    this.#appends++;
    this.#entries.push(...m.entries);
  }

  #end(payload: Uint8Array): boolean {
    const { term, leaderCommit, lastIndex, bootstrap, members } =
      decodeJsonFrame(payload, [FrameKind.logEnd]).body;
    const last = this.#base + this.#entries.length;
    if (
      !isCount(term) || !isCount(leaderCommit) || lastIndex !== last || leaderCommit > last ||
      this.#appends === 0
    ) {
      throw new FrameError(
        `Log transfer ended at index ${last} but the leader says ${JSON.stringify(lastIndex)} ` +
          `(commit index ${JSON.stringify(leaderCommit)}, ${this.#appends} entry batches)`,
      );
    }
    this.#result = {
      from: this.#from,
      term,
      leaderCommit,
      snapshot: this.#meta === undefined ? undefined : { meta: this.#meta, data: this.#data! },
      entries: this.#entries,
      bootstrap: bootstrapOf(bootstrap),
      members,
    };
    return true;
  }
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function bootstrapOf(v: unknown): Membership | undefined {
  const o = v as { voters?: unknown; learners?: unknown } | undefined;
  const ids = (x: unknown) => Array.isArray(x) && x.every((i) => typeof i === "string");
  if (o === undefined || !ids(o.voters) || !ids(o.learners)) return undefined;
  try {
    return membership(o.voters as string[], o.learners as string[]);
  } catch (e) {
    throw new FrameError(`Log transfer's bootstrap configuration: ${(e as Error).message}`);
  }
}
