/**
 * Snapshots for the real server that do not stall the event loop (Raft §7 log compaction).
 *
 * Taking a snapshot at once blocks the loop for as long as encoding the whole store takes (about
 * 40 ms at 10,000 keys, seconds at 1,000,000), long enough for a follower to miss heartbeats and
 * start an election. Here a snapshot is taken in steps:
 *
 * 1. **freeze** the store at its applied index (O(1) for the keys: a copy-on-write view);
 * 2. **encode** the view in chunks, a slice of at most `sliceMs` per event-loop turn, extending
 *    the file's CRC-32C chunk by chunk; the store keeps applying entries between slices;
 * 3. **join** the chunks, again in slices;
 * 4. **write** the file off the loop (`FileStorage.writeSnapshotFile`: async write, fdatasync,
 *    rename, directory fsync);
 * 5. only then **adopt** it (`FileStorage.adoptSnapshot`: the WAL marker) and compact the node's
 *    log (`node.compact`).
 *
 * One snapshot per node is in flight at a time. It is abandoned, leaving storage and node as they
 * were, when the host closes or the node gets a snapshot at or past its index meanwhile (one
 * installed from the leader).
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { RaftNode } from "../raft/node.ts";
import type { Snapshot, SnapshotMeta } from "../raft/storage.ts";
import type { FrozenStore, MetadataStore } from "../kv/store.ts";
import type { FileStorage } from "../storage/file_storage.ts";
import { SnapshotFrame } from "../storage/snapshot_file.ts";
import { encodeStoreSnapshotChunks } from "../storage/store_snapshot.ts";

/** Default longest slice of snapshot work per event-loop turn, in milliseconds. */
export const SNAPSHOT_SLICE_MS_DEFAULT = 4;

/** What a snapshot needs from its host, read when it starts (and `closed` at every step). */
export interface SnapshotHost {
  /** The node whose log the snapshot compacts. */
  readonly node: RaftNode;
  /** Its storage. */
  readonly storage: FileStorage;
  /** The store as it is now (the host may replace it later; the snapshot keeps this one's view). */
  readonly store: MetadataStore;
  /**
   * The text the snapshot's metadata carries for the host (`SnapshotMeta.context`), read when the
   * snapshot starts, so as of the same applied index as the store. Default: none.
   */
  readonly context?: () => string | undefined;
  /** Take a snapshot once this many entries were applied since the last one. */
  readonly everyEntries: number;
  /** Whether the host has shut down (then the snapshot in flight is abandoned). */
  readonly closed: () => boolean;
  /** Logs an event (`snapshot-taken`, `snapshot-abandoned`). */
  readonly log: (event: string, fields: Record<string, unknown>) => void;
  /** Called with an error that must stop the node (a storage failure). */
  readonly fail: (error: Error) => void;
}

/**
 * The entries a node applies before its next snapshot: `every` less a random part of up to half
 * of it, drawn afresh after each snapshot, so the nodes of a cluster — which apply the same
 * entries at about the same time — do not all stop to snapshot at once (ZooKeeper draws its
 * `snapCount` the same way). The log never holds more than `every` entries past a snapshot.
 */
export function staggeredSnapshotEntries(every: number, random: () => number): number {
  const r = random();
  if (!(r >= 0 && r < 1)) throw new RangeError(`random() must lie in [0, 1): ${r}`);
  return Math.max(1, every - Math.floor(r * Math.floor(every / 2)));
}

/** Options of a {@linkcode Snapshotter}. */
export interface SnapshotterOptions {
  /** Longest slice of work per event-loop turn, in milliseconds. Default 4. */
  readonly sliceMs?: number;
  /** Size of the encoder's chunks (see `encodeStoreSnapshotChunks`). Default 64 KiB. */
  readonly chunkBytes?: number;
  /**
   * Lets other work run between slices; given the slice just ended, in milliseconds. Default: the
   * next turn (`setImmediate`). The server rests as long as the slice took (see
   * {@linkcode restAfterSlice}).
   */
  readonly yieldTurn?: (sliceMs: number) => Promise<void>;
  /** The clock slices are measured on, in milliseconds. Default `performance.now`. */
  readonly nowMs?: () => number;
}

/** How a snapshot ended. */
export type SnapshotOutcome =
  | {
    readonly status: "taken";
    /** Last log index the snapshot covers. */
    readonly index: number;
    /** Term of that entry. */
    readonly term: number;
    /** Bytes of state-machine data. */
    readonly bytes: number;
    /** Milliseconds spent on the event loop, in all slices together. */
    readonly loopMs: number;
    /** The longest single slice on the event loop, in milliseconds. */
    readonly sliceMsMax: number;
    /** Milliseconds from start to end, the file write included. */
    readonly totalMs: number;
    /** Event-loop turns the work was spread over. */
    readonly slices: number;
  }
  | {
    readonly status: "abandoned";
    /** Index the snapshot would have covered. */
    readonly index: number;
    /** Why: the host closed, or a snapshot at or past its index arrived. */
    readonly reason: "closed" | "superseded";
  };

/** Thrown inside a snapshot's steps to abandon it; never escapes. */
class Abandoned extends Error {
  readonly reason: "closed" | "superseded";
  constructor(reason: "closed" | "superseded") {
    super(`Snapshot abandoned: ${reason}`);
    this.reason = reason;
  }
}

/**
 * How long the server's snapshot rests after a slice of `sliceMs`: as long again (at least 1 ms),
 * so a snapshot takes at most about half of the event loop. With only a turn between slices a
 * follower that shared two cores with its peers and a load generator spent 70% of its loop on a
 * 23 MB snapshot for half a second, read its peer socket too late, and started a pre-vote (its
 * leader's heartbeats sat unread behind the appends).
 */
export function restAfterSlice(sliceMs: number): number {
  return Math.max(1, Math.ceil(sliceMs));
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Takes snapshots of one node's store in slices across event-loop turns (see the module doc),
 * one at a time.
 *
 * @example
 * ```ts ignore
 * // In the host, after each drain of the node's ready batches:
 * const snapshotter = new Snapshotter(); // one per node
 * snapshotter.maybeStart({ node, storage, store, everyEntries: 10_000, ... })?.catch(() => {});
 * ```
 */
export class Snapshotter {
  readonly #sliceMs: number;
  readonly #chunkBytes: number | undefined;
  readonly #yieldTurn: (sliceMs: number) => Promise<void>;
  readonly #nowMs: () => number;
  #inFlight: Promise<SnapshotOutcome> | undefined;

  /** A snapshotter with `options`; a host keeps one per node, so one snapshot is in flight. */
  constructor(options: SnapshotterOptions = {}) {
    this.#sliceMs = options.sliceMs ?? SNAPSHOT_SLICE_MS_DEFAULT;
    if (!(this.#sliceMs > 0)) throw new RangeError(`sliceMs must be positive: ${this.#sliceMs}`);
    this.#chunkBytes = options.chunkBytes;
    this.#yieldTurn = options.yieldTurn ?? nextTurn;
    this.#nowMs = options.nowMs ?? (() => performance.now());
  }

  /** The snapshot in flight, if any. */
  get inFlight(): Promise<SnapshotOutcome> | undefined {
    return this.#inFlight;
  }

  /**
   * Starts a snapshot when none is in flight and `host.everyEntries` entries were applied since
   * the node's last one; returns it, or `undefined` when none started. Never throws: a failure
   * goes to `host.fail`.
   */
  maybeStart(host: SnapshotHost): Promise<SnapshotOutcome> | undefined {
    if (this.#inFlight !== undefined || host.closed()) return undefined;
    const index = host.store.appliedIndex;
    if (index - host.node.log.snapshotIndex < host.everyEntries) return undefined;
    if (host.node.log.term(index) === undefined) return undefined;
    return this.start(host);
  }

  /**
   * Starts a snapshot of `host.store` at its applied index now (which must be in the node's log)
   * and settles when it is taken or abandoned. Throws when one is already in flight.
   */
  start(host: SnapshotHost): Promise<SnapshotOutcome> {
    if (this.#inFlight !== undefined) throw new Error("A snapshot is already in flight");
    const run = this.#run(host).finally(() => {
      this.#inFlight = undefined;
    });
    this.#inFlight = run;
    return run;
  }

  async #run(host: SnapshotHost): Promise<SnapshotOutcome> {
    const { node, storage } = host;
    const t0 = this.#nowMs();
    let loopMs = 0;
    let sliceMsMax = 0;
    let slices = 0;
    let sliceStart = t0;
    const endSlice = () => {
      const ms = this.#nowMs() - sliceStart;
      loopMs += ms;
      sliceMsMax = Math.max(sliceMsMax, ms);
      slices++;
      return ms;
    };
    const index = host.store.appliedIndex;
    const term = node.log.term(index);
    if (term === undefined) throw new Error(`Entry ${index} is not in the log`);
    const config = node.membershipAt(index); // snapshots carry the configuration
    const context = host.context?.();
    const meta: SnapshotMeta = {
      index,
      term,
      voters: [...config.voters],
      learners: [...config.learners],
      ...(context !== undefined ? { context } : {}),
    };
    const check = () => {
      if (host.closed() || storage.closed) throw new Abandoned("closed");
      if (node.log.snapshotIndex >= index || storage.snapshotIndex >= index) {
        throw new Abandoned("superseded");
      }
    };
    const turn = async () => {
      await this.#yieldTurn(endSlice());
      sliceStart = this.#nowMs();
      check();
    };
    let frozen: FrozenStore | undefined = host.store.freeze();
    try {
      const frame = new SnapshotFrame(meta);
      const chunks: Uint8Array[] = [];
      const encoder = encodeStoreSnapshotChunks(frozen, { chunkBytes: this.#chunkBytes });
      let deadline = sliceStart + this.#sliceMs;
      for (let step = encoder.next(); !step.done; step = encoder.next()) {
        frame.add(step.value);
        chunks.push(step.value);
        if (this.#nowMs() >= deadline) {
          await turn();
          deadline = sliceStart + this.#sliceMs;
        }
      }
      frozen.release();
      frozen = undefined;
      const data = new Uint8Array(frame.dataBytes);
      let at = 0;
      for (const chunk of chunks) {
        data.set(chunk, at);
        at += chunk.length;
        if (this.#nowMs() >= deadline) {
          await turn();
          deadline = sliceStart + this.#sliceMs;
        }
      }
      chunks.length = 0;
      const snapshot: Snapshot = { meta, data };
      const head = frame.head();
      endSlice();
      await storage.writeSnapshotFile(snapshot, head);
      sliceStart = this.#nowMs();
      // A file left by a close now is whole and durable; recovery adopts it like one left by a
      // crash before its WAL marker. One superseded meanwhile is removed by adoptSnapshot.
      if (host.closed() || storage.closed) throw new Abandoned("closed");
      if (!storage.adoptSnapshot(snapshot)) throw new Abandoned("superseded");
      node.compact(snapshot);
      endSlice();
      const outcome: SnapshotOutcome = {
        status: "taken",
        index,
        term,
        bytes: data.length,
        loopMs,
        sliceMsMax,
        totalMs: this.#nowMs() - t0,
        slices,
      };
      host.log("snapshot-taken", {
        index,
        term,
        bytes: data.length,
        ms: Math.round(outcome.totalMs),
        loopMs: Math.round(loopMs * 10) / 10,
        sliceMsMax: Math.round(sliceMsMax * 10) / 10,
        slices,
      });
      return outcome;
    } catch (e) {
      // A storage call that failed because the host closed meanwhile is an abandonment too.
      const reason = e instanceof Abandoned
        ? e.reason
        : host.closed() || storage.closed
        ? "closed"
        : undefined;
      if (reason === undefined) {
        host.fail(e as Error);
        throw e;
      }
      host.log("snapshot-abandoned", { index, reason });
      return { status: "abandoned", index, reason };
    } finally {
      frozen?.release();
    }
  }
}
