/**
 * `Cluster`: n Raft nodes in one process on a virtual clock and a seeded network. Messages can be
 * delayed, lost, duplicated and reordered; links can be cut in any shape; nodes crash (keeping only
 * what their storage persisted), restart, pause and resume. Storage is in memory, or a simulated
 * disk per node ({@linkcode SimFs} under the real {@linkcode FileStorage}) that loses unsynced
 * writes and may tear the tail of a file at a crash. Hosts snapshot their store every
 * `snapshotEntries` applied entries and compact the log; lagging followers get InstallSnapshot.
 * Everything is synchronous and deterministic: one seed gives byte-identical runs.
 *
 * @module
 */

import { LogApplier } from "../raft/applier.ts";
import { maybeSnapshot, SNAPSHOT_ENTRIES_DEFAULT } from "../raft/host.ts";
import { HostLoop } from "../host/loop.ts";
import { SimHostDisk } from "./host_disk.ts";
import { invariant } from "../raft/log.ts";
import { RaftNode } from "../raft/node.ts";
import { SeededRng } from "../raft/rng.ts";
import { MemoryStorage, type PersistedState, type Storage } from "../raft/storage.ts";
import {
  type FaultPoint,
  type HardState,
  LeadershipTransferError,
  type Message,
  type NodeId,
  NotLeaderError,
  type RaftConfig,
  type RaftLogEntry,
  type RaftRole,
  type ReadState,
  type Snapshot,
} from "../raft/types.ts";
import { decodeCommand, encodeDelete, encodePut } from "../kv/command.ts";
import { MetadataStore } from "../kv/store.ts";
import { bytesEqual } from "../kv/bytes.ts";
import { type CheckedNode, SafetyChecker, SafetyViolation } from "./invariants.ts";
import { type ConfChange, decodeConfChange, type Membership } from "../raft/membership.ts";
import { EventHeap } from "../host/heap.ts";
import { FileStorage } from "../storage/file_storage.ts";
import { randomKeptWrites, randomTornTail, SimFs, type SimFsOp } from "../storage/fs.ts";
import { decodeStoreSnapshot, encodeStoreSnapshot } from "../storage/store_snapshot.ts";

/** How the simulated network behaves. Rates are probabilities per message. */
export interface NetworkOptions {
  /** Smallest one-way delay. Default 1. */
  readonly latencyMinMs: number;
  /** Largest one-way delay (inclusive). Default 5. */
  readonly latencyMaxMs: number;
  /** Chance a message is lost. Default 0. */
  readonly dropRate: number;
  /** Chance a message is delivered twice. Default 0. */
  readonly duplicateRate: number;
  /** Chance a message is held back so later ones overtake it. Default 0. */
  readonly reorderRate: number;
  /** Most extra delay a reordered message gets. Default 30. */
  readonly reorderDelayMaxMs: number;
  /**
   * Chance a message is held for seconds, across several election timeouts, so that it (or its
   * reply) arrives after leadership changed more than once. Default 0.
   */
  readonly longDelayRate: number;
  /** Shortest extra delay of a long-delayed message. Default 1,000. */
  readonly longDelayMinMs: number;
  /** Longest extra delay of a long-delayed message (inclusive). Default 4,000. */
  readonly longDelayMaxMs: number;
}

/** The default network: 1–5 ms one way, no faults. */
export const DEFAULT_NETWORK: NetworkOptions = Object.freeze({
  latencyMinMs: 1,
  latencyMaxMs: 5,
  dropRate: 0,
  duplicateRate: 0,
  reorderRate: 0,
  reorderDelayMaxMs: 30,
  longDelayRate: 0,
  longDelayMinMs: 1_000,
  longDelayMaxMs: 4_000,
});

/** How to build a simulated cluster. */
export interface ClusterOptions {
  /** Number of nodes, named n1…nN. Default 3. */
  readonly nodes?: number;
  /** Seed for every random choice (timeouts, latencies, faults). Default 1. */
  readonly seed?: number;
  /** Raft configuration for every node. */
  readonly config?: Partial<RaftConfig>;
  /** Network behaviour. */
  readonly network?: Partial<NetworkOptions>;
  /** Check safety properties after every event. Default true. */
  readonly checkSafety?: boolean;
  /** How many recent events to keep in `events`. Default 10,000. */
  readonly eventsMax?: number;
  /** Classic bugs to switch on, to prove the checks catch them (tests only). */
  readonly faultPoints?: readonly FaultPoint[];
  /**
   * Where nodes persist: `"memory"` (a {@linkcode MemoryStorage}, the default) or `"simdisk"`
   * (a {@linkcode FileStorage} over the node's own {@linkcode SimFs}, which loses unsynced writes
   * at a crash).
   */
  readonly storage?: "memory" | "simdisk";
  /** On the sim disk: whether a crash keeps a seeded prefix of unsynced appends (a torn tail). Default true. */
  readonly tornTail?: boolean;
  /**
   * On the sim disk: a crash keeps a seeded subset of unsynced appends (lost ones before a kept
   * one read as zeros) instead of a prefix. Default false.
   */
  readonly crashKeepsSubset?: boolean;
  /** A host snapshots its store and compacts the log after this many applied entries. Default 10,000. */
  readonly snapshotEntries?: number;
  /**
   * A leader sends each batch before it writes it (§10.2.1). With 0 (the default) it writes right
   * after sending; above 0 the write completes a seeded 0 to this many virtual ms later, so
   * followers' acknowledgements can arrive first and a crash in between loses the write — what a
   * real server's parallel write allows.
   */
  readonly leaderWriteDelayMaxMs?: number;
  /**
   * How long a write of log entries takes (an fsync). A node sends the messages that must follow a
   * write (Figure 2: persist before responding) this many virtual ms later; a leader's parallel
   * write (§10.2.1) delays nothing. Default 0.
   */
  readonly writeLatencyMs?: number;
  /** Likewise for a write of the hard state alone (term, vote). Default `writeLatencyMs`. */
  readonly hardStateWriteLatencyMs?: number;
  /**
   * Every node's disk is slow: each durable save (a follower's, a candidate's) and each of a
   * leader's background syncs takes a seeded 0 to `syncMsMax` virtual ms, and with `stallRate` a
   * stall of `stallMsMin`–`stallMsMax` instead. A save blocks its process as a real fdatasync on
   * the event loop does: the node handles nothing and its batch's messages wait until the disk
   * is done; a crash meanwhile loses the write. Default: off.
   */
  readonly diskLatency?: DiskLatency;
  /**
   * Applying an entry takes virtual time: with `rate`, an applied entry blocks its process for
   * `msMin`–`msMax` (a slow state machine), delaying the rest of the host loop. Default: off.
   */
  readonly applyLatency?: ApplyLatency;
  /**
   * Per-node clocks (by node order): node i reads `offsetMs + rate · t` at virtual time t, for its
   * timers and its lease manager. Default: every clock exact (offset 0, rate 1).
   */
  readonly clocks?: readonly NodeClock[];
}

/** A simulated disk's timing (see {@linkcode ClusterOptions.diskLatency}). */
export interface DiskLatency {
  /** Longest ordinary sync, ms. */
  readonly syncMsMax: number;
  /** Chance a sync stalls. */
  readonly stallRate: number;
  /** Shortest stall, ms. */
  readonly stallMsMin: number;
  /** Longest stall, ms (inclusive). */
  readonly stallMsMax: number;
}

/** How slow applies are (see {@linkcode ClusterOptions.applyLatency}). */
export interface ApplyLatency {
  /** Chance an applied entry is slow. */
  readonly rate: number;
  /** Shortest slow apply, ms. */
  readonly msMin: number;
  /** Longest slow apply, ms (inclusive). */
  readonly msMax: number;
}

/** A node's clock: it reads `offsetMs + rate · t` (floored) at virtual time t. */
export interface NodeClock {
  /** Skew: what the clock reads at virtual time 0 (non-negative). */
  readonly offsetMs: number;
  /** Drift: how fast it runs, e.g. 1.01 for 1% fast. */
  readonly rate: number;
}

/** Thrown by a sim disk's fault hook to crash its node at a chosen step of the persist path. */
class DiskCrash extends Error {
  constructor(readonly nodeId: NodeId, op: SimFsOp, path: string) {
    super(`Node "${nodeId}" crashed at ${op} of "${path}"`);
  }
}

/** Storage that records every save that returned in `acknowledged` (what the node may rely on). */
class RecordedStorage implements Storage {
  constructor(readonly inner: Storage, readonly acknowledged: MemoryStorage) {}
  load(): PersistedState {
    return this.inner.load();
  }
  save(hardState: Parameters<Storage["save"]>[0], entries: Parameters<Storage["save"]>[1]): void {
    this.inner.save(hardState, entries);
    this.acknowledged.save(hardState, entries);
  }
  saveSnapshot(snapshot: Snapshot): void {
    this.inner.saveSnapshot(snapshot);
    this.acknowledged.saveSnapshot(snapshot);
  }
}

/** A write that became durable: its entries (maybe none) and the hard state on disk after it. */
export interface DurableWrite {
  /** The hard state the node's storage holds after the write. */
  readonly hardState: HardState;
  /** The entries written. */
  readonly entries: readonly RaftLogEntry[];
}

/** Whether a simulated process runs. */
export type NodeState = "up" | "crashed" | "paused";

/** One simulated server: the Raft node, its storage and its metadata store. */
export class SimNode {
  /** Node id. */
  readonly id: NodeId;
  /** The consensus state machine (replaced on restart). */
  raft: RaftNode;
  /**
   * What the node has persisted: in memory mode the storage itself (it survives a crash); on the
   * sim disk, a record of every save that returned (what the disk must give back after a crash).
   */
  storage: MemoryStorage;
  /**
   * On the sim disk: the node's disk (it survives crashes, minus unsynced writes).
   * @internal Until mod.ts exports SimFs.
   */
  readonly fs: SimFs | undefined;
  /**
   * On the sim disk: the open file storage (undefined while crashed).
   * @internal Until mod.ts exports FileStorage.
   */
  disk: FileStorage | undefined;
  /** The replicated state machine (rebuilt from the log on restart). */
  store: MetadataStore;
  /** Applies committed entries to `store`. */
  applier: LogApplier;
  /** Running, crashed or paused. */
  state: NodeState = "up";
  /** Raised on every restart. */
  incarnation = 0;
  /** Messages that arrived while paused, delivered on resume. */
  readonly held: Message[] = [];
  /**
   * The host loop the server runs too (src/host/loop.ts), over this incarnation's disk, which
   * holds a leader's unsynced writes until they are synced (lost at a crash).
   * @internal Created by {@linkcode Cluster}.
   */
  loop!: HostLoop;
  /** @internal The loop's disk (the Storage a snapshot is saved through). */
  hostDisk!: SimHostDisk;
  /** A sync that completed while the node was paused: it takes effect on resume. */
  syncDue: (() => void) | undefined;
  /**
   * While the process is blocked (a slow disk save, a slow apply): the virtual time it is free
   * again. It handles no input, and what its host loop does next waits in `blockedWork`.
   */
  blockedUntilMs: number | undefined;
  /** @internal The rest of the host loop's batch, run in order once the block ends. */
  readonly blockedWork: (() => void)[] = [];
  /** The node's clock (see {@linkcode ClusterOptions.clocks}). */
  clock: NodeClock = { offsetMs: 0, rate: 1 };

  /** @internal Created by {@linkcode Cluster}. */
  constructor(
    id: NodeId,
    raft: RaftNode,
    storage: MemoryStorage,
    faultPoints: ReadonlySet<FaultPoint>,
    fs?: SimFs,
  ) {
    this.id = id;
    this.raft = raft;
    this.storage = storage;
    this.fs = fs;
    this.store = new MetadataStore({ faultPoints });
    this.applier = new LogApplier(this.store);
  }
}

/** Outcome of a client operation: `unknown` means it may or may not have taken effect. */
export type OperationStatus = "pending" | "ok" | "failed" | "unknown";

/** A client request to the simulated cluster, completed when its entry is applied (or fails). */
export interface Operation {
  /** Sequence number of the operation within the cluster. */
  readonly id: number;
  /** What was asked. */
  readonly kind: "put" | "delete" | "get" | "command";
  /** The key, for put, delete and get. */
  readonly key?: string;
  /** The value, for put. */
  readonly value?: string;
  /** The node the client talked to. */
  readonly via: NodeId;
  /** For get: whether a stale local read was allowed. */
  readonly serializable: boolean;
  /** Virtual time of the call. */
  readonly startedMs: number;
  /** Current outcome. */
  status: OperationStatus;
  /** Virtual time of the outcome. */
  endedMs?: number;
  /** For get: the value read (undefined when the key is absent). */
  result?: string;
  /** The state machine's result, for writes. */
  applyResult?: unknown;
  /** Why it failed or is unknown. */
  error?: string;
  /** Log position of a write. */
  index?: number;
  /** Term of a write's entry. */
  term?: number;
  /** The leader the contacted node named, when it refused because it is not the leader. */
  leaderHint?: NodeId;
  /** Called once when the operation leaves `pending`. */
  onDone?: (op: Operation) => void;
}

/** One thing that happened in the simulation. */
export type SimEvent =
  | {
    readonly atMs: number;
    readonly kind: "send";
    readonly message: Message;
    readonly fate: string;
  }
  | { readonly atMs: number; readonly kind: "deliver"; readonly message: Message }
  | {
    readonly atMs: number;
    readonly kind: "role";
    readonly node: NodeId;
    readonly role: RaftRole;
    readonly term: number;
  }
  | { readonly atMs: number; readonly kind: "fault"; readonly detail: string };

/** Message counters by type and fate. */
export interface NetworkStats {
  /** Messages handed to the network. */
  sent: number;
  /** Messages that reached a running node. */
  delivered: number;
  /** Lost to a cut link, random loss or a crashed receiver. */
  dropped: number;
  /** Extra copies delivered. */
  duplicated: number;
  /** Messages held for seconds (`longDelayRate`). */
  longDelayed: number;
  /** Messages sent, per message type. */
  readonly sentByType: Map<string, number>;
}

interface InFlight {
  readonly atMs: number;
  readonly seq: number;
  readonly message: Message;
}

/** A simulated cluster on a virtual clock. */
export class Cluster {
  #ids: NodeId[];
  /** The bootstrap voters: the nodes the cluster was built with (the configuration at index 0). */
  readonly bootstrapIds: readonly NodeId[];
  /** The seed that fixes this run. */
  readonly seed: number;
  /** Network behaviour (change it at any time, e.g. to add loss). */
  network: NetworkOptions;
  /** Safety checker (undefined when switched off). */
  readonly checker: SafetyChecker | undefined;
  /** Recent events, oldest first. */
  readonly events: SimEvent[] = [];
  /** Message counters. */
  readonly stats: NetworkStats = {
    sent: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    longDelayed: 0,
    sentByType: new Map(),
  };

  #nowMs = 0;
  #seq = 0;
  #opSeq = 0;
  #readSeq = 0;
  #rng: SeededRng;
  #netRng: SeededRng;
  #config: Partial<RaftConfig>;
  #faultPoints: ReadonlySet<FaultPoint>;
  #crashAfterPersist = new Set<NodeId>();
  #simDisk: boolean;
  #tornTail: boolean;
  #crashKeepsSubset: boolean;
  #diskRng: SeededRng | undefined;
  #snapshotEntries: number;
  #leaderWriteDelayMaxMs: number;
  #writeRng: SeededRng | undefined;
  /** Slow disks (change at any time; undefined: every save done at once). */
  diskLatency: DiskLatency | undefined;
  /** Slow applies (change at any time; undefined: applies take no time). */
  applyLatency: ApplyLatency | undefined;
  // Slow disks and applies draw from their own stream, so a seed without them keeps its run.
  #slowRng: SeededRng;
  /** How often a process was blocked by a slow disk save or a slow apply. */
  readonly blockStats = { saves: 0, applies: 0 };
  // Long delays draw from their own stream, so a seed without them keeps its exact run.
  #longDelayRng: SeededRng;
  /** How many snapshots hosts have taken, and how many followers installed from a leader. */
  readonly snapshotStats = { taken: 0, installed: 0 };
  #nodes = new Map<NodeId, SimNode>();
  #inFlight = new EventHeap<InFlight>();
  #callbacks = new EventHeap<{ atMs: number; seq: number; run: () => void }>();
  #cuts = new Set<string>();
  /** Extra delay of every message on a slow link, by `from>to`. */
  #slowLinks = new Map<string, number>();
  #eventsMax: number;
  #listeners: ((e: SimEvent) => void)[] = [];
  #appliedListeners: ((node: SimNode, entry: RaftLogEntry, result: unknown) => void)[] = [];
  #persistedListeners: ((node: SimNode, written: DurableWrite) => void)[] = [];
  #writes = new Map<NodeId, Map<number, Operation>>();
  #reads = new Map<NodeId, Map<string, Operation>>();
  #readsWaiting = new Map<NodeId, { op: Operation; readIndex: number }[]>();
  #lastRole = new Map<NodeId, { role: RaftRole; term: number }>();
  #writeLatencyMs = 0;
  #removed = new Map<NodeId, number>();
  #memberRng: SeededRng;
  #hardStateWriteLatencyMs = 0;
  /** Messages that waited for their batch's write, and how long that write took. */
  #afterWrite = new WeakMap<Message, number>();

  /** Builds a cluster of fresh nodes, all followers at term 0. */
  constructor(options: ClusterOptions = {}) {
    const n = options.nodes ?? 3;
    if (!Number.isInteger(n) || n < 1 || n > 99) {
      throw new RangeError(`Cluster size must be an integer from 1 to 99: ${n}`);
    }
    this.seed = options.seed ?? 1;
    this.#rng = new SeededRng(this.seed);
    this.#netRng = this.#rng.fork();
    this.#slowRng = new SeededRng(this.seed ^ 0x510e);
    this.diskLatency = options.diskLatency;
    this.applyLatency = options.applyLatency;
    const clocks = options.clocks ?? [];
    for (const c of clocks) {
      if (
        !(c.offsetMs >= 0 && Number.isFinite(c.offsetMs) && c.rate > 0 && Number.isFinite(c.rate))
      ) {
        throw new RangeError(
          `A node clock needs a finite offsetMs >= 0 and rate > 0: ${JSON.stringify(c)}`,
        );
      }
    }
    this.#longDelayRng = new SeededRng(this.seed ^ 0x10a9);
    // Nodes added later draw from a stream of their own, so runs without them keep their draws.
    this.#memberRng = new SeededRng(this.seed ^ 0x3e3b);
    this.network = { ...DEFAULT_NETWORK, ...options.network };
    this.#config = options.config ?? {};
    this.#faultPoints = new Set(options.faultPoints ?? []);
    this.#eventsMax = options.eventsMax ?? 10_000;
    this.checker = options.checkSafety === false ? undefined : new SafetyChecker();
    this.#ids = Array.from({ length: n }, (_, i) => `n${i + 1}`);
    this.bootstrapIds = [...this.#ids];
    this.#simDisk = options.storage === "simdisk";
    this.#tornTail = options.tornTail ?? true;
    this.#crashKeepsSubset = options.crashKeepsSubset ?? false;
    this.#snapshotEntries = options.snapshotEntries ?? SNAPSHOT_ENTRIES_DEFAULT;
    if (!Number.isSafeInteger(this.#snapshotEntries) || this.#snapshotEntries < 1) {
      throw new RangeError(
        `snapshotEntries must be a positive integer: ${options.snapshotEntries}`,
      );
    }
    for (const [i, id] of this.#ids.entries()) {
      this.#createNode(id, clocks[i] ?? { offsetMs: 0, rate: 1 }, this.#rng.fork());
    }
    // Forked only for the sim disk, so memory-mode runs keep their exact sequences.
    if (this.#simDisk) this.#diskRng = this.#rng.fork();
    this.#leaderWriteDelayMaxMs = options.leaderWriteDelayMaxMs ?? 0;
    if (!Number.isSafeInteger(this.#leaderWriteDelayMaxMs) || this.#leaderWriteDelayMaxMs < 0) {
      throw new RangeError(
        `leaderWriteDelayMaxMs must be a non-negative integer: ${options.leaderWriteDelayMaxMs}`,
      );
    }
    // Likewise forked only when used.
    if (this.#leaderWriteDelayMaxMs > 0) this.#writeRng = this.#rng.fork();
    this.#writeLatencyMs = options.writeLatencyMs ?? 0;
    this.#hardStateWriteLatencyMs = options.hardStateWriteLatencyMs ?? this.#writeLatencyMs;
    if (!Number.isSafeInteger(this.#writeLatencyMs) || this.#writeLatencyMs < 0) {
      throw new RangeError(
        `writeLatencyMs must be a non-negative integer: ${this.#writeLatencyMs}`,
      );
    }
    const hardStateMs = this.#hardStateWriteLatencyMs;
    if (!Number.isSafeInteger(hardStateMs) || hardStateMs < 0) {
      throw new RangeError(
        `hardStateWriteLatencyMs must be a non-negative integer: ${hardStateMs}`,
      );
    }
  }

  /** Every node ever created, in order: n1, n2, … (removed members stay, as processes). */
  get ids(): readonly NodeId[] {
    return this.#ids;
  }

  #createNode(id: NodeId, clock: NodeClock, rng: SeededRng): SimNode {
    const raft = new RaftNode({
      id,
      voters: this.bootstrapIds,
      rng,
      config: this.#config,
      nowMs: localMs(clock, this.#nowMs),
      faultPoints: this.#faultPoints,
    });
    const fs = this.#simDisk ? new SimFs() : undefined;
    const node = new SimNode(id, raft, new MemoryStorage(), this.#faultPoints, fs);
    node.clock = clock;
    if (fs !== undefined) node.disk = this.#openDisk(id, fs);
    this.#nodes.set(id, node);
    this.#startHost(node);
    this.#writes.set(id, new Map());
    this.#reads.set(id, new Map());
    this.#readsWaiting.set(id, []);
    return node;
  }

  // ---- Time --------------------------------------------------------------------------------------

  /** The virtual clock, in milliseconds since the cluster was built. */
  get nowMs(): number {
    return this.#nowMs;
  }

  /** What node `id`'s clock reads now (its timers and lease deadlines run on it). */
  clockMs(id: NodeId): number {
    return localMs(this.node(id).clock, this.#nowMs);
  }

  /** Runs the simulation for `ms` virtual milliseconds. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`Cannot advance by ${ms} ms`);
    this.#runTo(this.#nowMs + ms, undefined);
  }

  /**
   * Runs until `predicate` holds, checking after every event. Returns the virtual time it took;
   * throws when it does not hold within `timeoutMs` (default 10,000).
   */
  runUntil(
    predicate: () => boolean,
    options: { timeoutMs?: number; description?: string } = {},
  ): number {
    const start = this.#nowMs;
    const timeoutMs = options.timeoutMs ?? 10_000;
    if (!this.#runTo(start + timeoutMs, predicate)) {
      throw new Error(
        `Timed out after ${timeoutMs} ms waiting for ${options.description ?? "a condition"}`,
      );
    }
    return this.#nowMs - start;
  }

  /** Runs until exactly one running node leads the highest term; returns its id. */
  waitForLeader(options: { timeoutMs?: number } = {}): NodeId {
    this.runUntil(() => this.leader() !== undefined, { ...options, description: "a leader" });
    return this.leader()!;
  }

  // ---- Inspection --------------------------------------------------------------------------------

  /** The simulated node with this id. */
  node(id: NodeId): SimNode {
    const n = this.#nodes.get(id);
    if (n === undefined) throw new RangeError(`No node "${id}" (nodes: ${this.ids.join(", ")})`);
    return n;
  }

  /** All nodes, in id order. */
  nodes(): SimNode[] {
    return this.ids.map((id) => this.#nodes.get(id)!);
  }

  /**
   * The running leader of the highest term among running nodes, if one exists. A deposed leader
   * cut off in a minority may still think it leads; it is not returned once a newer term exists.
   * Nodes whose removal has committed are left out.
   */
  leader(): NodeId | undefined {
    let best: SimNode | undefined;
    let maxTerm = 0;
    for (const n of this.nodes()) {
      // A removed node may campaign in ever higher terms, alone: it has no say any more.
      if (n.state !== "up" || this.#removed.has(n.id)) continue;
      maxTerm = Math.max(maxTerm, n.raft.term);
      if (n.raft.role === "Leader" && (best === undefined || n.raft.term > best.raft.term)) {
        best = n;
      }
    }
    return best !== undefined && best.raft.term === maxTerm ? best.id : undefined;
  }

  /**
   * Whether the cluster has settled: a leader whose whole log is committed, and every running node
   * holding the same log end, applied up to it, with the same keys and values.
   */
  converged(): boolean {
    const leaderId = this.leader();
    if (leaderId === undefined) return false;
    const l = this.node(leaderId);
    if (l.raft.commitIndex !== l.raft.log.lastIndex) return false;
    const { voters, learners } = l.raft.membership;
    const members = new Set([...voters, ...learners]);
    return this.nodes().every((n) =>
      n.state !== "up" || !members.has(n.id) ||
      (n.raft.log.lastIndex === l.raft.log.lastIndex &&
        n.raft.log.lastTerm === l.raft.log.lastTerm &&
        n.applier.lastApplied === l.raft.commitIndex &&
        sameKeys(n.store, l.store))
    );
  }

  /** Every node that currently believes it is the leader (running or not). */
  leaders(): NodeId[] {
    return this.nodes().filter((n) => n.state !== "crashed" && n.raft.role === "Leader").map((n) =>
      n.id
    );
  }

  /**
   * The configuration in force: the leader's (or, without one, that of the running node with the
   * highest term, then the longest log). Removed nodes are in neither list.
   */
  membership(): Membership {
    const l = this.leader();
    if (l !== undefined) return this.node(l).raft.membership;
    let best: SimNode | undefined;
    for (const n of this.nodes()) {
      if (n.state === "crashed") continue;
      if (
        best === undefined || n.raft.term > best.raft.term ||
        (n.raft.term === best.raft.term && n.raft.log.lastIndex > best.raft.log.lastIndex)
      ) best = n;
    }
    return (best ?? this.node(this.#ids[0])).raft.membership;
  }

  /**
   * Nodes whose removal from the configuration has committed, with their term at that moment.
   * From then on nothing they send may take a member to a term no member had reached.
   */
  get removed(): ReadonlyMap<NodeId, number> {
    return this.#removed;
  }

  // ---- Membership --------------------------------------------------------------------------------

  /**
   * Starts a new node with the next free id and proposes adding it through the leader, as a
   * learner (the default) or straight as a voter. The new node starts empty and learns the log (or
   * a snapshot) from the leader. Throws the leader's refusal (see `RaftNode.proposeConfChange`);
   * then no node is created.
   */
  addNode(options: { as?: "learner" | "voter" } = {}): NodeId {
    const id = `n${this.#ids.length + 1}`;
    this.#changeMembership({
      type: options.as === "voter" ? "add-voter" : "add-learner",
      node: id,
    });
    this.#ids.push(id);
    const node = this.#createNode(id, { offsetMs: 0, rate: 1 }, this.#memberRng.fork());
    this.#fault(`add ${options.as ?? "learner"} ${id}`);
    this.#afterInput(node);
    return id;
  }

  /**
   * Proposes removing member `id` (a voter, the leader included, or a learner). Its process keeps
   * running, as a removed server's may: it must not disrupt the cluster.
   */
  removeNode(id: NodeId): void {
    this.node(id);
    this.#changeMembership({ type: "remove", node: id });
    this.#fault(`remove ${id}`);
  }

  /** Proposes promoting learner `id` to voter (refused while it is behind the leader). */
  promote(id: NodeId): void {
    this.node(id);
    this.#changeMembership({ type: "promote", node: id });
    this.#fault(`promote ${id}`);
  }

  /**
   * Asks the leader to hand leadership to voter `id` (§3.10). `from` names the leader to ask when
   * it is not the one `leader()` sees (e.g. the leader of one side of a partition, of a lower term).
   */
  transferLeader(id: NodeId, options: { from?: NodeId } = {}): void {
    this.node(id);
    const l = options.from ?? this.leader();
    if (l === undefined) throw new Error("No leader to transfer leadership from");
    const n = this.node(l);
    n.raft.tick(localMs(n.clock, this.#nowMs));
    n.raft.transferLeadership(id);
    this.#fault(`transfer leadership ${l} -> ${id}`);
    this.#afterInput(n);
  }

  #changeMembership(change: ConfChange): void {
    const l = this.leader();
    if (l === undefined) throw new Error(`No leader to propose "${change.type} ${change.node}"`);
    const n = this.node(l);
    n.raft.tick(localMs(n.clock, this.#nowMs));
    n.raft.proposeConfChange(change);
    this.#afterInput(n);
  }

  /** Whether messages from `from` currently reach `to`. */
  connected(from: NodeId, to: NodeId): boolean {
    return !this.#cuts.has(`${from}>${to}`);
  }

  /** Subscribes to every event as it happens (for verbose output). */
  onEvent(listener: (e: SimEvent) => void): void {
    this.#listeners.push(listener);
  }

  /**
   * Subscribes to every entry any node applies, with the store's result (watch hubs and lease
   * managers hang off it). Called inside the host loop: do not drive the cluster from it.
   */
  onApplied(listener: (node: SimNode, entry: RaftLogEntry, result: unknown) => void): void {
    this.#appliedListeners.push(listener);
  }

  /**
   * Subscribes to every write that becomes durable on a node's storage: the entries written and
   * the hard state on disk after it (for a batch that must persist first, before its messages
   * leave). Tutorials draw it.
   */
  onPersisted(listener: (node: SimNode, written: DurableWrite) => void): void {
    this.#persistedListeners.push(listener);
  }

  // ---- Faults ------------------------------------------------------------------------------------

  /** Stops a node. Its volatile state is lost; its storage is kept. In-flight replies are lost. */
  crash(id: NodeId): void {
    const n = this.node(id);
    if (n.state === "crashed") throw new Error(`Node "${id}" is already crashed`);
    this.#crashAfterPersist.delete(id);
    n.state = "crashed";
    if (n.fs !== undefined) {
      // Power loss: unsynced writes vanish, and a seeded prefix of unsynced appends may survive.
      n.fs.faultHook = undefined;
      const rng = this.#diskRng!;
      n.fs.crash(
        this.#crashKeepsSubset
          ? { keptWrites: randomKeptWrites(() => rng.next()) }
          : this.#tornTail
          ? { tornTail: randomTornTail(() => rng.next()) }
          : {},
      );
      n.disk = undefined;
    }
    n.held.length = 0;
    n.loop.stop(); // its unsynced writes are gone with the process
    n.syncDue = undefined;
    n.blockedUntilMs = undefined;
    n.blockedWork.length = 0;
    for (const op of this.#writes.get(id)!.values()) {
      this.#finish(op, "unknown", `node "${id}" crashed before the outcome was known`);
    }
    this.#writes.get(id)!.clear();
    for (const op of this.#reads.get(id)!.values()) {
      this.#finish(op, "failed", `node "${id}" crashed`);
    }
    this.#reads.get(id)!.clear();
    for (const w of this.#readsWaiting.get(id)!) {
      this.#finish(w.op, "failed", `node "${id}" crashed`);
    }
    this.#readsWaiting.set(id, []);
    this.#fault(`crash ${id}`);
  }

  /**
   * Arms a crash at the most delicate point of the host loop: the next time the node persists a
   * batch, it crashes after the write is durable and before any of the batch's messages leave.
   */
  crashAfterPersist(id: NodeId): void {
    if (this.node(id).state === "crashed") throw new Error(`Node "${id}" is already crashed`);
    this.#crashAfterPersist.add(id);
  }

  /**
   * On the sim disk: arms a crash at a step of the persist path — the node crashes just before its
   * disk performs the `skip + 1`-th `op` from now (`"write"`: before the write; `"syncData"`: after
   * the write, before the sync). What the step would have done is lost, as at a power cut.
   * @internal Until mod.ts exports SimFsOp.
   */
  crashAtDiskOp(id: NodeId, op: SimFsOp, options: { skip?: number } = {}): void {
    const n = this.node(id);
    if (n.fs === undefined) throw new Error(`Node "${id}" has no sim disk (storage: "simdisk")`);
    if (n.state === "crashed") throw new Error(`Node "${id}" is already crashed`);
    let skip = options.skip ?? 0;
    n.fs.faultHook = (o, path) => {
      if (o !== op || skip-- > 0) return;
      n.fs!.faultHook = undefined;
      throw new DiskCrash(id, o, path);
    };
  }

  /** Cancels every armed crash (after persist, or at a disk step) that has not fired. */
  disarmCrashes(): void {
    this.#crashAfterPersist.clear();
    for (const n of this.#nodes.values()) if (n.fs !== undefined) n.fs.faultHook = undefined;
  }

  /**
   * Restarts a crashed node from what its storage kept: the store is restored from the newest
   * snapshot, and the log after it is replayed as it commits. On the sim disk the data directory
   * is opened and recovered, and checked to hold everything acknowledged before the crash.
   */
  restart(id: NodeId): void {
    const n = this.node(id);
    if (n.state !== "crashed") throw new Error(`Node "${id}" is not crashed (it is ${n.state})`);
    let persisted: PersistedState;
    if (n.fs !== undefined) {
      n.disk = this.#openDisk(id, n.fs);
      persisted = n.disk.load();
      this.checker?.onRecovered(id, persisted, n.storage);
      // From now on the record starts from what the disk gave back.
      n.storage = new MemoryStorage();
      if (persisted.snapshot !== undefined) n.storage.saveSnapshot(persisted.snapshot);
      const after = persisted.entries.filter((e) => e.index > n.storage.snapshotIndex);
      n.storage.save(persisted.hardState, after);
    } else {
      persisted = n.storage.load();
    }
    n.raft = new RaftNode({
      id,
      voters: this.bootstrapIds, // the node recovers its configuration from snapshot and log
      rng: this.#rng.fork(),
      config: this.#config,
      nowMs: localMs(n.clock, this.#nowMs),
      hardState: persisted.hardState,
      entries: persisted.entries,
      snapshot: persisted.snapshot,
      faultPoints: this.#faultPoints,
    });
    this.#restoreStore(n, persisted.snapshot);
    n.state = "up";
    n.incarnation++;
    this.#startHost(n);
    this.#fault(`restart ${id}`);
    this.#afterInput(n);
  }

  /** Freezes a node: it handles nothing, and messages to it wait, until `resume`. */
  pause(id: NodeId): void {
    const n = this.node(id);
    if (n.state !== "up") throw new Error(`Node "${id}" cannot pause: it is ${n.state}`);
    n.state = "paused";
    this.#fault(`pause ${id}`);
  }

  /** Unfreezes a paused node: its overdue timers fire and held messages are delivered. */
  resume(id: NodeId): void {
    const n = this.node(id);
    if (n.state !== "paused") throw new Error(`Node "${id}" is not paused (it is ${n.state})`);
    n.state = "up";
    this.#fault(`resume ${id}`);
    if (n.blockedUntilMs !== undefined) return; // the block's end carries on (input stays held)
    const due = n.syncDue;
    n.syncDue = undefined;
    if (due !== undefined) this.#completeSync(n, due);
    if (n.state !== "up") return; // crashed while its disk synced
    n.raft.tick(localMs(n.clock, this.#nowMs));
    this.#afterInput(n);
    const held = n.held.splice(0);
    for (const m of held) this.#deliver(m);
  }

  /** Cuts the link from `from` to `to` (one way unless `bothWays`). */
  cut(from: NodeId, to: NodeId, options: { bothWays?: boolean } = {}): void {
    this.node(from);
    this.node(to);
    this.#cuts.add(`${from}>${to}`);
    if (options.bothWays) this.#cuts.add(`${to}>${from}`);
    this.#fault(`cut ${from}${options.bothWays ? "<>" : ">"}${to}`);
  }

  /**
   * Holds every message from `from` to `to` for `extraMs` more (a stalled connection: they keep
   * their order and all arrive late); 0 makes the link normal again.
   */
  slowLink(from: NodeId, to: NodeId, extraMs: number): void {
    this.node(from);
    this.node(to);
    if (!Number.isSafeInteger(extraMs) || extraMs < 0) {
      throw new RangeError(`A link's extra delay must be a non-negative integer: ${extraMs}`);
    }
    if (extraMs === 0) this.#slowLinks.delete(`${from}>${to}`);
    else this.#slowLinks.set(`${from}>${to}`, extraMs);
    this.#fault(`slow link ${from}>${to}: ${extraMs} ms`);
  }

  /** Cuts every link between a node and all others, both ways. */
  isolate(id: NodeId): void {
    this.node(id);
    for (const other of this.ids) {
      if (other === id) continue;
      this.#cuts.add(`${id}>${other}`);
      this.#cuts.add(`${other}>${id}`);
    }
    this.#fault(`isolate ${id}`);
  }

  /** Splits the cluster into groups that cannot reach each other; unlisted nodes form one group. */
  partition(...groups: NodeId[][]): void {
    const groupOf = new Map<NodeId, number>();
    groups.forEach((g, i) =>
      g.forEach((id) => {
        this.node(id);
        if (groupOf.has(id)) throw new Error(`Node "${id}" is in two partition groups`);
        groupOf.set(id, i);
      })
    );
    for (const a of this.ids) {
      for (const b of this.ids) {
        if (a !== b && (groupOf.get(a) ?? -1) !== (groupOf.get(b) ?? -1)) {
          this.#cuts.add(`${a}>${b}`);
        }
      }
    }
    this.#fault(`partition ${groups.map((g) => `[${g.join(",")}]`).join(" ")}`);
  }

  /** Restores every link. */
  heal(): void {
    this.#cuts.clear();
    this.#fault("heal");
  }

  // ---- Clients -----------------------------------------------------------------------------------

  /** Writes `key = value` through the log (the seed's `PUT\n<key>\n<value>`), via the leader. */
  put(key: string, value: string, options: { via?: NodeId } = {}): Operation {
    const command = encodePut(key, value); // refuses a bad key before anything reaches the log
    return this.#submit("put", command, { key, value }, options.via);
  }

  /** Deletes `key` through the log (the seed's `DEL\n<key>`), via the leader. */
  delete(key: string, options: { via?: NodeId } = {}): Operation {
    const command = encodeDelete(key);
    return this.#submit("delete", command, { key }, options.via);
  }

  /**
   * Proposes an already encoded command via the leader (or `via`). A command that does not decode
   * is refused here with a `CommandError` and never reaches the log.
   */
  propose(command: Uint8Array, options: { via?: NodeId } = {}): Operation {
    decodeCommand(command, { limits: this.node(this.ids[0]).store.limits });
    return this.#submit("command", command, {}, options.via);
  }

  /**
   * Reads `key`. Linearizable by default (ReadIndex through the leader); with `serializable` the
   * node answers from its own state at once, which may be stale.
   */
  get(key: string, options: { via?: NodeId; serializable?: boolean } = {}): Operation {
    const via = options.via ?? this.#leaderOrFirst();
    const n = this.node(via);
    const op = this.#newOp("get", via, { key, serializable: options.serializable === true });
    if (n.state !== "up") return this.#finish(op, "failed", `node "${via}" is ${n.state}`);
    if (op.serializable) {
      op.result = n.store.getString(key);
      return this.#finish(op, "ok");
    }
    const readId = `r${++this.#readSeq}`;
    this.#reads.get(via)!.set(readId, op);
    n.raft.readIndex(readId);
    this.#afterInput(n);
    return op;
  }

  /**
   * Runs until `op` completes; if it has not within `timeoutMs` (default 5,000), marks it unknown
   * (a write) or failed (a read) and returns it.
   */
  complete(op: Operation, options: { timeoutMs?: number } = {}): Operation {
    const timeoutMs = options.timeoutMs ?? 5_000;
    this.#runTo(this.#nowMs + timeoutMs, () => op.status !== "pending");
    if (op.status === "pending") {
      this.#forget(op);
      this.#finish(
        op,
        op.kind === "get" ? "failed" : "unknown",
        `no outcome within ${timeoutMs} ms`,
      );
    }
    return op;
  }

  /** Runs `callback` at virtual time `nowMs + delayMs` (simulated clients use it for timeouts). */
  schedule(delayMs: number, callback: () => void): void {
    if (!(delayMs >= 0)) throw new RangeError(`Cannot schedule ${delayMs} ms ahead`);
    this.#callbacks.push({ atMs: this.#nowMs + delayMs, seq: ++this.#seq, run: callback });
  }

  /**
   * Gives up waiting for a pending operation: it becomes `unknown` (a write that may still take
   * effect) or `failed` (a read). Its `onDone` is not called.
   */
  abandon(op: Operation, reason: string): void {
    if (op.status !== "pending") return;
    this.#forget(op);
    op.onDone = undefined;
    this.#finish(op, op.kind === "get" ? "failed" : "unknown", reason);
  }

  // ---- Internals ---------------------------------------------------------------------------------

  #openDisk(id: NodeId, fs: SimFs): FileStorage {
    return FileStorage.open(`/data/${id}`, { fs, clusterId: "sim", nodeId: id });
  }

  /** A fresh store, or one restored from `snapshot`, with an applier continuing after it. */
  #restoreStore(n: SimNode, snapshot: Snapshot | undefined): void {
    if (snapshot === undefined) {
      n.store = new MetadataStore({ faultPoints: this.#faultPoints });
      n.applier = new LogApplier(n.store);
      return;
    }
    n.store = decodeStoreSnapshot(snapshot.data, { faultPoints: this.#faultPoints });
    // The store counts commands only; no-ops after the last one advance the log index alone.
    invariant(
      n.store.appliedIndex <= snapshot.meta.index,
      () => `snapshot ${snapshot.meta.index} holds a store applied to ${n.store.appliedIndex}`,
    );
    n.applier = new LogApplier(n.store, snapshot.meta.index);
  }

  #leaderOrFirst(): NodeId {
    return this.leader() ?? this.ids.find((id) => this.node(id).state === "up") ?? this.ids[0];
  }

  #newOp(
    kind: Operation["kind"],
    via: NodeId,
    fields: { key?: string; value?: string; serializable?: boolean },
  ): Operation {
    return {
      id: ++this.#opSeq,
      kind,
      via,
      key: fields.key,
      value: fields.value,
      serializable: fields.serializable ?? false,
      startedMs: this.#nowMs,
      status: "pending",
    };
  }

  #submit(
    kind: Operation["kind"],
    command: Uint8Array,
    fields: { key?: string; value?: string },
    via: NodeId | undefined,
  ): Operation {
    const target = via ?? this.#leaderOrFirst();
    const n = this.node(target);
    const op = this.#newOp(kind, target, fields);
    if (n.state !== "up") return this.#finish(op, "failed", `node "${target}" is ${n.state}`);
    try {
      const { index, term } = n.raft.propose(command);
      op.index = index;
      op.term = term;
      this.#writes.get(target)!.set(index, op);
    } catch (e) {
      if (e instanceof NotLeaderError) {
        op.leaderHint = e.leaderHint;
        return this.#finish(op, "failed", e.message);
      }
      // Refused before it reached the log: certainly not applied. No hint: the transferee does
      // not lead yet, and would send the client straight back (a retry after the usual pause).
      if (e instanceof LeadershipTransferError) return this.#finish(op, "failed", e.message);
      throw e;
    }
    this.#afterInput(n);
    return op;
  }

  #forget(op: Operation): void {
    if (op.index !== undefined) this.#writes.get(op.via)!.delete(op.index);
    for (const [readId, o] of this.#reads.get(op.via)!) {
      if (o === op) this.#reads.get(op.via)!.delete(readId);
    }
    const waiting = this.#readsWaiting.get(op.via)!;
    this.#readsWaiting.set(op.via, waiting.filter((w) => w.op !== op));
  }

  #finish(op: Operation, status: OperationStatus, error?: string): Operation {
    if (op.status !== "pending") return op;
    op.status = status;
    op.endedMs = this.#nowMs;
    if (error !== undefined) op.error = error;
    op.onDone?.(op);
    return op;
  }

  /** Processes events until `targetMs` or until `stop` holds. Returns whether `stop` held. */
  #runTo(targetMs: number, stop: (() => boolean) | undefined): boolean {
    for (;;) {
      if (stop?.()) return true;
      // Timers win ties with messages; among timers, node order decides.
      let timerNode: SimNode | undefined;
      let timerMs = Infinity;
      for (const n of this.#nodes.values()) {
        if (n.state !== "up" || n.blockedUntilMs !== undefined) continue;
        const d = Math.max(globalMs(n.clock, n.raft.nextDeadlineMs()), this.#nowMs);
        if (d < timerMs) {
          timerMs = d;
          timerNode = n;
        }
      }
      const messageMs = this.#inFlight.peek()?.atMs ?? Infinity;
      const callbackMs = this.#callbacks.peek()?.atMs ?? Infinity;
      if (messageMs < timerMs || callbackMs < timerMs) timerNode = undefined;
      const next = Math.min(timerMs, messageMs, callbackMs);
      if (next > targetMs) break;
      invariant(next >= this.#nowMs, () => `virtual time went backwards to ${next}`);
      this.#nowMs = next;
      if (timerNode !== undefined) {
        timerNode.raft.tick(localMs(timerNode.clock, next));
        this.#afterInput(timerNode);
      } else if (callbackMs <= messageMs) {
        this.#callbacks.pop()!.run();
      } else {
        this.#deliver(this.#inFlight.pop()!.message);
      }
    }
    this.#nowMs = Math.max(this.#nowMs, targetMs);
    return stop?.() ?? false;
  }

  #deliver(m: Message): void {
    const n = this.#nodes.get(m.to)!;
    if (n.state === "crashed" || !this.connected(m.from, m.to)) {
      this.stats.dropped++;
      return;
    }
    if (n.state === "paused" || n.blockedUntilMs !== undefined) {
      n.held.push(m);
      return;
    }
    this.stats.delivered++;
    this.#record({ atMs: this.#nowMs, kind: "deliver", message: m });
    n.raft.tick(localMs(n.clock, this.#nowMs));
    // A removed node cannot disrupt (§4.2.3): after its removal committed, nothing it says may
    // take a member to a term no member had reached, or depose a leader that way.
    const newTerm = this.#removed.has(m.from) && !this.#removed.has(n.id) &&
      m.term > this.#highestMemberTerm();
    const before = { term: n.raft.term, role: n.raft.role };
    n.raft.step(m);
    if (newTerm && (n.raft.term !== before.term || n.raft.role !== before.role)) {
      throw new SafetyViolation(
        "removed node disrupts",
        `${m.type} of term ${m.term} from "${m.from}", removed, moved "${n.id}" from ` +
          `${before.role} of term ${before.term} to ${n.raft.role} of term ${n.raft.term}`,
      );
    }
    this.#afterInput(n);
  }

  /** The highest term any node that was not removed has reached (crashed ones included). */
  #highestMemberTerm(): number {
    let term = 0;
    for (const n of this.#nodes.values()) {
      if (!this.#removed.has(n.id)) term = Math.max(term, n.raft.term);
    }
    return term;
  }

  #send(m: Message): void {
    const net = this.network;
    this.stats.sent++;
    this.stats.sentByType.set(m.type, (this.stats.sentByType.get(m.type) ?? 0) + 1);
    let fate = "sent";
    if (!this.connected(m.from, m.to)) {
      fate = "dropped (link cut)";
    } else if (this.#netRng.chance(net.dropRate)) {
      fate = "dropped (loss)";
    } else {
      this.#schedule(m);
      if (this.#netRng.chance(net.duplicateRate)) {
        this.#schedule(m);
        this.stats.duplicated++;
        fate = "sent twice";
      }
    }
    if (fate.startsWith("dropped")) this.stats.dropped++;
    this.#record({ atMs: this.#nowMs, kind: "send", message: m, fate });
  }

  #schedule(m: Message): void {
    const net = this.network;
    let delay = this.#netRng.int(net.latencyMinMs, net.latencyMaxMs + 1);
    delay += this.#afterWrite.get(m) ?? 0;
    if (this.#netRng.chance(net.reorderRate)) {
      delay += this.#netRng.int(1, net.reorderDelayMaxMs + 1);
    }
    delay += this.#slowLinks.get(`${m.from}>${m.to}`) ?? 0;
    if (net.longDelayRate > 0 && this.#longDelayRng.chance(net.longDelayRate)) {
      delay += this.#longDelayRng.int(net.longDelayMinMs, net.longDelayMaxMs + 1);
      this.stats.longDelayed++;
    }
    this.#inFlight.push({ atMs: this.#nowMs + delay, seq: ++this.#seq, message: m });
  }

  #storageOf(n: SimNode): Storage {
    return n.disk === undefined ? n.storage : new RecordedStorage(n.disk, n.storage);
  }

  /** After a write is durable: the checks, and a crash armed for this moment. */
  #persisted(
    n: SimNode,
    entries: readonly RaftLogEntry[],
    termAt: (i: number) => number | undefined,
  ): void {
    if (this.checker && entries.length > 0) {
      this.checker.onEntriesPersisted(n.id, entries, termAt);
    }
    for (const l of this.#persistedListeners) l(n, { hardState: n.storage.hardState, entries });
    if (this.#crashAfterPersist.has(n.id)) this.crash(n.id);
  }

  /** Gives a (re)started node its host loop and disk, over its durable storage. */
  #startHost(n: SimNode): void {
    const disk = new SimHostDisk(this.#storageOf(n), {
      termAt: (i) => n.raft.log.term(i),
      onDurable: (entries, termAt) => this.#persisted(n, entries, termAt),
      scheduleSync: (complete) => this.#scheduleSync(n, complete),
      halted: () => n.state === "crashed",
      saveBlockMs: () => this.#diskMs(),
      block: (ms, done) => {
        this.blockStats.saves++;
        this.#block(n, ms, done);
      },
    });
    n.hostDisk = disk;
    // While the process is blocked, the rest of the batch waits (in order) for the block's end.
    const unlessBlocked = <A extends unknown[]>(run: (...a: A) => void) => (...a: A) => {
      if (n.blockedUntilMs !== undefined) n.blockedWork.push(() => run(...a));
      else run(...a);
    };
    n.loop = new HostLoop(n.raft, {
      disk,
      transport: {
        send: unlessBlocked((m) => {
          this.checker?.onSend(n.id, m, n.storage);
          this.#send(m);
        }),
      },
      restore: unlessBlocked((snapshot) => {
        this.#restoreStore(n, snapshot);
        this.snapshotStats.installed++;
        invariant(
          n.applier.lastApplied === snapshot.meta.index,
          () =>
            `after restoring snapshot ${snapshot.meta.index} lastApplied is ${n.applier.lastApplied}`,
        );
      }),
      apply: unlessBlocked((entry) => {
        const apply = () => n.applier.apply([entry], (e, r) => this.#onApplied(n, e, r));
        const slow = this.applyLatency;
        if (slow !== undefined && slow.rate > 0 && this.#slowRng.chance(slow.rate)) {
          // The apply takes this long: its result, and the rest of the loop, come after it.
          this.blockStats.applies++;
          this.#block(n, this.#slowRng.int(slow.msMin, slow.msMax + 1), apply);
        } else apply();
      }),
      readState: unlessBlocked((r) => this.#onReadState(n, r)),
      wake: () => {}, // the cluster drains a node after every event anyway
      // A message that must follow a write (Figure 2: persist before responding) leaves when the
      // write is done: `writeLatencyMs` for entries, `hardStateWriteLatencyMs` for term and vote.
      savedBeforeSend: (ready) => {
        const writeMs = ready.entries.length > 0
          ? this.#writeLatencyMs
          : ready.hardState !== undefined
          ? this.#hardStateWriteLatencyMs
          : 0;
        if (writeMs > 0) { for (const m of ready.messages) this.#afterWrite.set(m, writeMs); }
      },
      fail: (e) => {
        throw e;
      },
      halted: () => n.state === "crashed",
    }, { faultPoints: this.#faultPoints });
  }

  /** How long one sync of a slow disk takes: 0 without `diskLatency`. */
  #diskMs(): number {
    const d = this.diskLatency;
    return d === undefined ? 0 : diskSyncMs(d, this.#slowRng);
  }

  /**
   * Blocks node `n`'s process for `ms` (a synchronous fdatasync, a slow apply): it handles no
   * input meanwhile. At the end `done` runs, then the host loop's waiting work, then the input
   * that arrived meanwhile.
   */
  #block(n: SimNode, ms: number, done?: () => void): void {
    invariant(n.blockedUntilMs === undefined, () => `node ${n.id} is blocked twice`);
    n.blockedUntilMs = this.#nowMs + ms;
    const incarnation = n.incarnation;
    const end = () => {
      if (n.incarnation !== incarnation || n.state === "crashed") return;
      if (n.state === "paused") return this.schedule(10, end); // frozen: it carries on later
      n.blockedUntilMs = undefined;
      if (done !== undefined) this.#completeSync(n, done);
      while (n.state === "up" && n.blockedUntilMs === undefined && n.blockedWork.length > 0) {
        n.blockedWork.shift()!();
      }
      if (n.state !== "up" || n.blockedUntilMs !== undefined) return;
      const due = n.syncDue;
      n.syncDue = undefined;
      if (due !== undefined) this.#completeSync(n, due);
      if (n.state !== "up") return;
      n.raft.tick(localMs(n.clock, this.#nowMs));
      this.#afterInput(n);
      for (const m of n.held.splice(0)) this.#deliver(m);
    };
    this.schedule(ms, end);
  }

  /**
   * A leader's unsynced write (§10.2.1): synced at once, or with `leaderWriteDelayMaxMs` a seeded
   * 0 to that many virtual ms later (plus the slow disk's time), so followers' acknowledgements
   * can arrive first and a crash in between loses the write — what a real server's off-loop
   * fdatasync allows.
   */
  #scheduleSync(n: SimNode, complete: () => void): void {
    if (this.#writeRng === undefined && this.diskLatency === undefined) {
      complete();
      return;
    }
    const incarnation = n.incarnation;
    const delay = (this.#writeRng?.int(0, this.#leaderWriteDelayMaxMs + 1) ?? 0) + this.#diskMs();
    this.schedule(delay, () => {
      if (n.incarnation !== incarnation || n.state === "crashed") return;
      if (n.state === "paused" || n.blockedUntilMs !== undefined) {
        n.syncDue = complete;
        return;
      }
      this.#completeSync(n, complete);
      this.#afterInput(n);
    });
  }

  #completeSync(n: SimNode, complete: () => void): void {
    try {
      complete();
    } catch (e) {
      if (!(e instanceof DiskCrash)) throw e;
      this.crash(n.id);
    }
  }

  /** The host loop for one node after any input: persist, send, apply, serve reads; then check. */
  #afterInput(n: SimNode): void {
    const checker = this.checker;
    try {
      // One batch at a time: a batch may block the process (a slow save), and then the next waits.
      while (n.state !== "crashed" && n.blockedUntilMs === undefined && n.loop.drain(1) > 0);
      if (n.state === "up" && n.blockedUntilMs === undefined) {
        const taken = maybeSnapshot(n.raft, {
          storage: n.hostDisk,
          applier: n.applier,
          capture: () => encodeStoreSnapshot(n.store),
        }, { snapshotEntries: this.#snapshotEntries });
        if (taken !== undefined) this.snapshotStats.taken++;
      }
    } catch (e) {
      if (!(e instanceof DiskCrash)) throw e;
      this.crash(n.id);
    }
    if (n.state === "crashed") {
      this.checker?.afterEvent(this.nodes().map((x) => checkedView(x)));
      return;
    }
    if (n.blockedUntilMs === undefined) this.#serveWaitingReads(n);
    const last = this.#lastRole.get(n.id);
    if (last === undefined || last.role !== n.raft.role || last.term !== n.raft.term) {
      this.#lastRole.set(n.id, { role: n.raft.role, term: n.raft.term });
      this.#record({
        atMs: this.#nowMs,
        kind: "role",
        node: n.id,
        role: n.raft.role,
        term: n.raft.term,
      });
    }
    checker?.afterEvent(this.nodes().map((x) => checkedView(x)));
  }

  #onApplied(n: SimNode, entry: RaftLogEntry, result: unknown): void {
    this.checker?.onApplied(n.id, entry);
    if (entry.kind === "config") {
      const change = decodeConfChange(entry.command);
      // Applied somewhere means committed: from now on the removed node must not disrupt.
      if (change.type === "remove" && !this.#removed.has(change.node)) {
        this.#removed.set(change.node, this.node(change.node).raft.term);
      }
    }
    for (const l of this.#appliedListeners) l(n, entry, result);
    const op = this.#writes.get(n.id)!.get(entry.index);
    if (op === undefined) return;
    this.#writes.get(n.id)!.delete(entry.index);
    if (entry.term === op.term) {
      op.applyResult = result;
      this.#finish(op, "ok");
    } else {
      this.#finish(
        op,
        "failed",
        `index ${entry.index} was taken by an entry of term ${entry.term}; the write was not committed`,
      );
    }
  }

  #onReadState(n: SimNode, r: ReadState): void {
    const op = this.#reads.get(n.id)!.get(r.readId);
    if (op === undefined) return;
    this.#reads.get(n.id)!.delete(r.readId);
    if (!r.ok) {
      this.#finish(op, "failed", r.reason ?? "read refused");
      return;
    }
    this.#readsWaiting.get(n.id)!.push({ op, readIndex: r.readIndex });
  }

  #serveWaitingReads(n: SimNode): void {
    const waiting = this.#readsWaiting.get(n.id)!;
    if (waiting.length === 0) return;
    const still = [];
    for (const w of waiting) {
      if (n.applier.lastApplied >= w.readIndex) {
        w.op.result = n.store.getString(w.op.key!);
        this.#finish(w.op, "ok");
      } else still.push(w);
    }
    this.#readsWaiting.set(n.id, still);
  }

  #fault(detail: string): void {
    this.#record({ atMs: this.#nowMs, kind: "fault", detail });
    this.checker?.afterEvent(this.nodes().map((x) => checkedView(x)));
  }

  #record(e: SimEvent): void {
    for (const l of this.#listeners) l(e);
    if (this.#eventsMax <= 0) return;
    this.events.push(e);
    if (this.events.length > this.#eventsMax) this.events.splice(0, this.events.length >> 1);
  }
}

/**
 * How long one sync of a disk with `latency` takes, drawn from `rng`: 0 to `syncMsMax`, or with
 * `stallRate` a stall of `stallMsMin`–`stallMsMax` (also the server simulation's slow disk).
 */
export function diskSyncMs(latency: DiskLatency, rng: SeededRng): number {
  if (latency.stallRate > 0 && rng.chance(latency.stallRate)) {
    return rng.int(latency.stallMsMin, latency.stallMsMax + 1);
  }
  return latency.syncMsMax > 0 ? rng.int(0, latency.syncMsMax + 1) : 0;
}

/** What `clock` reads at virtual time `t`; exact clocks read `t` itself. */
export function localMs(clock: NodeClock, t: number): number {
  if (clock.rate === 1) return clock.offsetMs + t;
  return Math.floor(clock.offsetMs + clock.rate * t);
}

/** The first virtual time at which `clock` reads `local` or more. */
export function globalMs(clock: NodeClock, local: number): number {
  if (clock.rate === 1) return local - clock.offsetMs;
  if (!Number.isFinite(local)) return local;
  let t = Math.max(0, Math.ceil((local - clock.offsetMs) / clock.rate));
  while (localMs(clock, t) < local) t++;
  while (t > 0 && localMs(clock, t - 1) >= local) t--;
  return t;
}

function sameKeys(a: MetadataStore, b: MetadataStore): boolean {
  if (a.size !== b.size) return false;
  const other = b.entries();
  for (const kv of a.entries()) {
    const o = other.next();
    if (o.done || o.value.key !== kv.key || !bytesEqual(o.value.value, kv.value)) return false;
  }
  return true;
}

function checkedView(n: SimNode): CheckedNode {
  return {
    status: n.raft.status(),
    termAt: (i) => n.raft.log.term(i),
    up: n.state !== "crashed",
    incarnation: n.incarnation,
    durable: n.storage,
  };
}
