/**
 * `RaftServer`: one node as a real process — a {@linkcode RaftNode} driven by a real clock, a
 * {@linkcode FileStorage} data directory, a {@linkcode MetadataStore}, the peer transport and the
 * HTTP face. The host loop follows the core's contract: persist, then send, then apply, then serve
 * reads. Everything that arrives in one turn of the event loop (many client proposals, many peer
 * messages) is handled in one ready batch with one fdatasync: group commit.
 *
 * @module
 */

import { NodeAuth } from "./auth.ts";
import { RaftNode } from "../raft/node.ts";
import { SeededRng } from "../raft/rng.ts";
import { ForwardClient } from "./forward_client.ts";
import {
  type Message,
  type NodeId,
  NotLeaderError,
  type RaftConfig,
  type RaftLogEntry,
  type RaftRole,
  type ReadState,
  type Snapshot,
} from "../raft/types.ts";
import { decodeStoreSnapshot } from "../storage/store_snapshot.ts";
import {
  restAfterSlice,
  type SnapshotOutcome,
  Snapshotter,
  staggeredSnapshotEntries,
} from "./snapshotter.ts";
import { SNAPSHOT_ENTRIES_DEFAULT } from "../raft/host.ts";
import { EventHeap } from "../host/heap.ts";
import { HostLoop, type HostTransport } from "../host/loop.ts";
import type { CancelTimer, HostClock, HostTimers } from "../host/clock.ts";
import { type AutoCompactionConfig, AutoCompactor } from "./auto_compaction.ts";
import { FileStorage } from "../storage/file_storage.ts";
import { FILE_MODE, type Fs, RealFs } from "../storage/fs.ts";
import { REAL_TIMERS, RealClock } from "./real_clock.ts";
import { decodeCommand, encodeAuthGuarded, encodeCommand } from "../kv/command.ts";
import {
  addsData,
  type ApplyResult,
  MetadataStore,
  NOSPACE_ERROR,
  RESPONSE_BYTES_MAX_DEFAULT,
} from "../kv/store.ts";
import { LeaseManager } from "../coord/lease_manager.ts";
import { WatchHub } from "../coord/watch.ts";
import type { ClientId, PlainCommand } from "../kv/types.ts";
import { type Address, PeerTransport } from "./transport.ts";
import { Histogram } from "./metrics.ts";
import { LoopStallMeter } from "./loop_stall.ts";
import { type LogTransfer, logTransferFrames, LogTransferReceiver } from "./log_transfer.ts";
import { HttpError } from "./etcd.ts";
import {
  addressOfPeerUrl,
  decodeMemberContext,
  MemberErrors,
  type MemberInfo,
  MemberTable,
} from "./members.ts";
import {
  type ConfChange,
  decodeConfChange,
  type Membership,
  membership as membershipOf,
} from "../raft/membership.ts";
import { BrowserGuard } from "./browser_guard.ts";
import { type Http1FastHandler, Http1Server } from "./http1.ts";
// Types only: tls.ts (node:tls) is imported when a port has TLS.
import type { TlsConnListener, TlsFiles, TlsMaterial } from "./tls.ts";

type TlsModule = typeof import("./tls.ts");

/** How to run one node. */
export interface ServerOptions {
  /** This node's id. Default `"n1"`. */
  readonly nodeId?: NodeId;
  /** The cluster's id; a data directory of another cluster is refused. Default `"raftmeta"`. */
  readonly clusterId?: string;
  /** Data directory. Default `"./data"`. */
  readonly dataDir?: string;
  /** Start despite synced WAL records missing at the end (`--repair-wal`); every cut is logged. */
  readonly repairWal?: boolean;
  /** Client HTTP address. Default 127.0.0.1:2379. Port 0 picks a free port. */
  readonly clientListen?: Address;
  /** Peer address. Default 127.0.0.1:2380. Port 0 picks a free port. */
  readonly peerListen?: Address;
  /** The other voters and their peer addresses (empty: a single-node cluster). */
  readonly peers?: ReadonlyMap<NodeId, Address>;
  /**
   * The client URLs of (some of) the peers, for forwarding requests to the leader and for the
   * cluster status. Never learned from a connection: a peer not listed here cannot be forwarded to.
   */
  readonly peerClientUrls?: ReadonlyMap<NodeId, string>;
  /**
   * etcd's gRPC API (HTTP/2 cleartext) on this second client address (`--listen-grpc`); none when
   * absent. Port 0 picks a free port. Served by src/net/grpc.ts, loaded only then.
   */
  readonly grpcListen?: Address;
  /** The other members' gRPC URLs (`--peer-grpc-urls`), for etcd's MemberList. */
  readonly peerGrpcUrls?: ReadonlyMap<NodeId, string>;
  /** The secret every peer must prove. Required when there are peers, unless `insecurePeers`. */
  readonly secret?: string;
  /** Allow peers with an empty secret: anyone who reaches the peer port can then forge entries. */
  readonly insecurePeers?: boolean;
  /**
   * Open the peer port even with no `peers` (`--serve-peers`), so a single-node cluster can add
   * members. Needs a secret, as `peers` does. Default: a node without peers has no peer port.
   */
  readonly servePeers?: boolean;
  /** How long a simple auth token lives after its last use (`--auth-token-ttl`). Default 300 s. */
  readonly authTokenTtlMs?: number;
  /** PBKDF2 iterations of new password hashes (`--auth-pbkdf2-iterations`). Default 210000. */
  readonly authPbkdf2Iterations?: number;
  /** Time a peer connection has to complete its handshake. Default 3000. */
  readonly peerHandshakeTimeoutMs?: number;
  /** Most peer connections in handshake at once (more are closed at once). Default 64. */
  readonly peerUnauthenticatedMax?: number;
  /** Raft timings and bounds (see {@linkcode RaftConfig}). */
  readonly raftConfig?: Partial<RaftConfig>;
  /** How often the clock ticks the node. Default 5. */
  readonly tickMs?: number;
  /** Largest HTTP request body. Default 1.5 MiB (etcd's `--max-request-bytes`). */
  readonly requestBytesMax?: number;
  /**
   * Most bytes of key-values one answer may carry (a range, a txn's ranges, a delete's previous
   * key-values), counted as they are gathered; beyond, etcd's ResourceExhausted. Default 64 MiB.
   */
  readonly responseBytesMax?: number;
  /** How long a request may wait for commit, a read index or a leader. Default 5000. */
  readonly requestTimeoutMs?: number;
  /** The older name of `initialClusterState: "existing"` (`--join`). */
  readonly join?: boolean;
  /**
   * `"existing"` (`--initial-cluster-state existing`, as etcd's): this node was added with
   * `member add` and starts with an empty data directory; it copies the leader's log (snapshot and
   * entries) and member table from the peers it is given, then serves. A non-empty data directory
   * ignores it (a restart). Default `"new"`: the bootstrap configuration is this node and `peers`.
   */
  readonly initialClusterState?: "new" | "existing";
  /**
   * Take a snapshot and compact the log after at most this many applied entries (each node draws
   * its next threshold between half of it and all of it, so nodes do not snapshot at once).
   * Default 100,000.
   */
  readonly snapshotEntries?: number;
  /**
   * Also take a snapshot once the entries applied since the last one hold this many command bytes,
   * so large values cannot pile up in the in-memory log. Default 64 MiB.
   */
  readonly snapshotBytes?: number;
  /**
   * The store's quota (etcd's `--quota-backend-bytes`): a write that would take the store's size
   * (live keys and values plus watch history) over it is refused and raises the NOSPACE alarm.
   * Default 512 MiB.
   */
  readonly quotaBackendBytes?: number;
  /**
   * Automatic compaction (etcd's `--auto-compaction-mode` and `--auto-compaction-retention`;
   * src/net/auto_compaction.ts): the leader proposes compactions through the log. Default: off.
   */
  readonly autoCompaction?: AutoCompactionConfig;
  /** Longest wait for a request body to arrive; then 408 and the connection closes. Default 10,000. */
  readonly bodyReadTimeoutMs?: number;
  /** Most HTTP requests handled at once (watch streams count only until they start); beyond it, 503. Default 512. */
  readonly httpRequestsMax?: number;
  /**
   * Which HTTP server serves the client port: `"raftmeta"` (src/net/http1.ts, with the limits
   * below) or `"deno"` (Deno.serve, which has none of them). Default `"raftmeta"`.
   */
  readonly httpServer?: "raftmeta" | "deno";
  /**
   * Which HTTP/2 server serves the gRPC port: `"raftmeta"` (src/net/h2.ts, with its limits) or
   * `"grpc-js"` (grpc-js on Deno's node:http2). Default `"raftmeta"`.
   */
  readonly grpcServer?: "raftmeta" | "grpc-js";
  /** Longest wait for a complete request head; then 408 and the connection closes. Default 10,000. */
  readonly httpHeadTimeoutMs?: number;
  /** How long a connection with no request in flight stays open. Default 60,000. */
  readonly httpIdleTimeoutMs?: number;
  /** Most client connections open at once; beyond it, 503 and close. Default 1024. */
  readonly httpConnectionsMax?: number;
  /** Largest request head (request line and headers); beyond it, 431. Default 16 KiB. */
  readonly httpHeadBytesMax?: number;
  /** Most proposals waiting to be applied on the leader; beyond it, 429. Default 10,000. */
  readonly proposalsPendingMax?: number;
  /** Most command bytes waiting to be applied on the leader; beyond it, 429. Default 64 MiB. */
  readonly proposalBytesPendingMax?: number;
  /** How long a node with an empty data directory asks its peers about itself. Default 2000. */
  readonly probeMs?: number;
  /**
   * How long `join` keeps asking its peers for the leader's log before it gives up (exit code 4);
   * also the longest silence allowed within one transfer. Default 30,000.
   */
  readonly joinTimeoutMs?: number;
  /** Where structured log lines go. Default: stdout. */
  readonly log?: (line: string) => void;
  /** Most watchers on this node at once. Default 1,000. */
  readonly watchersMax?: number;
  /** Most events a watcher may have waiting before it is cancelled as slow. Default 10,000. */
  readonly watchBufferEventsMax?: number;
  /** How often idle watchers that asked for it get a progress notification. Default 1,000. */
  readonly watchProgressMs?: number;
  /** Origins whose pages may make requests (etcd's `--cors`; `"*"` any). Default: none. */
  readonly corsOrigins?: readonly string[];
  /**
   * Host names accepted in requests' Host header (etcd's `--host-whitelist`; `"*"` any). Default:
   * on a loopback client address only localhost, 127.0.0.1 and ::1 (against DNS rebinding);
   * otherwise any.
   */
  readonly hostWhitelist?: readonly string[];
  /** Bugs of the server's own code to switch on (tests only: they prove the simulator sees them). */
  readonly faultPoints?: readonly ServerFaultPoint[];
  /**
   * HTTPS on the client port and TLS on the gRPC port (etcd's `--cert-file`, `--key-file`,
   * `--trusted-ca-file`, `--client-cert-auth`); also what forwarding to other nodes' https client
   * URLs trusts and presents. Default: plain HTTP.
   */
  readonly clientTls?: TlsFiles;
  /**
   * TLS on the peer port, both ways (etcd's `--peer-cert-file` and friends); the secret
   * handshake still runs inside it. Default: plain TCP.
   */
  readonly peerTls?: TlsFiles;
}

/**
 * Named bugs in the server's request handling, which tests switch on to show the randomized runs
 * over real {@linkcode RaftServer}s catch them (src/check/server_simulation.ts).
 */
export type ServerFaultPoint =
  /** `readBarrier` resolves at once: a "linearizable" read is served from the local store. */
  | "read-before-barrier"
  /** A read is served once its read index is known, before the store has applied up to it. */
  | "read-before-apply"
  /**
   * A lease keep-alive is granted without the leader confirming its leadership with a quorum, so
   * a deposed leader that has not noticed yet extends a lease the new leader expires.
   */
  | "keepalive-before-barrier"
  /**
   * A watch created with a start revision starts one revision later (an off-by-one in resuming
   * "after the last revision seen"), so a client that re-creates its watch misses events.
   */
  | "watch-start-skips";

/** Every {@linkcode ServerFaultPoint}. */
export const SERVER_FAULT_POINTS: readonly ServerFaultPoint[] = [
  "read-before-barrier",
  "read-before-apply",
  "keepalive-before-barrier",
  "watch-start-skips",
];

/**
 * What a removed member answers while it stops (Unavailable, so clients try another endpoint; no
 * retry here can help).
 */
export class MemberRemovedError extends HttpError {
  constructor() {
    super(503, "etcdserver: the member has been permanently removed from the cluster", 14);
  }
}

function removedError(): MemberRemovedError {
  return new MemberRemovedError();
}

/** Sends a request to another node's client URL (forwarding to the leader); `fetch` for real. */
export type ServerFetch = (
  url: string,
  init: ServerFetchInit,
  timeoutMs: number,
) => Promise<Response>;
/** A fetch's options; `client` picks Deno's HTTP client (e.g. one without a connection pool). */
export type ServerFetchInit = RequestInit & {
  client?: Deno.HttpClient;
  /**
   * Never send it twice (a write without a session): an http URL goes through raftmeta's own
   * client (src/net/forward_client.ts: persistent connections, no resend), an https URL over a
   * new connection of Deno's TLS client (whose pooled connections may resend).
   */
  unpooled?: boolean;
};

/**
 * What a server runs on besides its options: the process's clock, timers, randomness, disk and
 * network in a real process ({@linkcode RaftServer.start}), simulated ones in the simulator
 * ({@linkcode RaftServer.open}). Nothing else in the server reads a clock or draws a number.
 */
export interface ServerIo {
  /** The clock: request deadlines, lease expiry, latency figures. */
  readonly clock: HostClock;
  /** The tick, the drain after each turn, delays. */
  readonly timers: HostTimers;
  /** A float in [0, 1): staggers snapshots between nodes. */
  readonly random: () => number;
  /** Seed of the node's election-timeout RNG. */
  readonly rngSeed: number;
  /** The file system the data directory is on. */
  readonly fs: Fs;
  /** Where peer messages go; what arrives is fed to {@linkcode RaftServer.receive}. */
  readonly transport: HostTransport;
  /** Sends a forwarded request to the leader. */
  readonly fetch: ServerFetch;
  /** Lets go of what `fetch` keeps open (idle connections), when the server closes. */
  readonly closeFetch?: () => void;
  /** Records which peers have shown durable state (read by the empty-directory check). */
  readonly saveSeen: (seen: ReadonlyMap<NodeId, number>) => void;
}

/**
 * Answers one client request for `server`: src/net/http.ts's `handleHttp`, passed in by the caller
 * so that the server does not import the routes that import it.
 */
export type HttpHandler = (
  server: RaftServer,
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Promise<Response>;

/** Refused to start (with an exit code for the process). */
export class StartupError extends Error {
  /** Process exit code. */
  readonly exitCode: number;
  /** Makes an error. */
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = "StartupError";
    this.exitCode = exitCode;
  }
}

/** One node's row, as in the notebooks' node tables, plus where it listens. */
export interface LocalStatus {
  /** Node id. */
  readonly id: NodeId;
  /** Role. */
  readonly role: RaftRole;
  /** Current term. */
  readonly term: number;
  /** Vote in the current term. */
  readonly votedFor: NodeId | null;
  /** Leader known in the current term. */
  readonly leader: NodeId | null;
  /** Index of the last log entry. */
  readonly lastLogIndex: number;
  /** Term of the last log entry. */
  readonly lastLogTerm: number;
  /** Highest index known committed. */
  readonly commitIndex: number;
  /** Highest index applied to the store. */
  readonly lastApplied: number;
  /** "up", or "joining" while a rebuilt node withholds its votes. */
  readonly status: string;
  /** The voters in force here (the newest configuration in this node's log). */
  readonly voters: readonly NodeId[];
  /** The learners in force here. */
  readonly learners: readonly NodeId[];
  /** The membership change appended but not yet committed, if any ("add-learner n4"). */
  readonly pendingChange: string | null;
  /** Store revision. */
  readonly revision: number;
  /** Number of keys. */
  readonly keys: number;
  /** Client URL. */
  readonly clientUrl: string;
  /** etcd's gRPC API URL (`--listen-grpc`), or null when not served. */
  readonly grpcUrl: string | null;
  /** Last index folded into a snapshot. */
  readonly snapshotIndex: number;
  /** Command bytes applied since the last snapshot (bounded by `--snapshot-bytes`). */
  readonly logBytes: number;
  /** The store's size as the quota counts it (`--quota-backend-bytes`). */
  readonly backendBytes: number;
  /** Worst event-loop stall since the node started, ms (heartbeats wait that long). */
  readonly eventLoopStallMsMax: number;
  /** On a leader: each follower's progress. */
  readonly progress: readonly {
    follower: NodeId;
    nextIndex: number;
    matchIndex: number;
    state: string;
  }[];
}

/** Counters for /metrics. */
export interface ServerCounters {
  /** Proposals accepted by this node as leader. */
  proposals: number;
  /** Proposals that failed (leadership lost, timeout, refused). */
  proposalsFailed: number;
  /** Times this node saw the leader change. */
  leaderChanges: number;
  /** Requests forwarded to the leader. */
  forwarded: number;
  /** Requests refused with a 4xx. */
  badRequests: number;
  /** etcd gateway calls the client port answered on its fast path (no Request/Response objects). */
  fastRequests: number;
  /** Linearizable reads served. */
  readsLinearizable: number;
  /** Serializable reads served. */
  readsSerializable: number;
  /** Ready batches handled. */
  readyBatches: number;
  /** Storage saves (one fdatasync each). */
  saves: number;
}

interface ProposalWaiter {
  readonly term: number;
  readonly bytes: number;
  readonly resolve: (r: ApplyResult) => void;
  readonly reject: (e: Error) => void;
}

const SEEN_FILE = "net-peers-seen.json";

interface ConfWaiter {
  readonly term: number;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}
/** Defaults of the memory bounds (see {@linkcode ServerOptions}). */
export const SNAPSHOT_BYTES_DEFAULT = 64 * 1024 * 1024;
/** Default quota: 512 MiB (see docs/api.md for why not etcd's 2 GiB). */
export const QUOTA_BACKEND_BYTES_DEFAULT = 512 * 1024 * 1024;
const PROPOSALS_PENDING_MAX_DEFAULT = 10_000;
const PROPOSAL_BYTES_PENDING_MAX_DEFAULT = 64 * 1024 * 1024;
/** etcd's error for a leader with too much work queued (gRPC ResourceExhausted). */
export const TOO_MANY_REQUESTS_ERROR = "etcdserver: too many requests";
/** Most ready batches handled in one turn of the event loop. */
const DRAIN_BATCHES_MAX = 256;

/** One raftmeta node: Raft, storage, store, peer transport and HTTP. */
export class RaftServer {
  /** This node. */
  readonly nodeId: NodeId;
  /** Its tokens, login limiter and permission checks (src/net/auth.ts). */
  readonly auth: NodeAuth;
  /** Its cluster. */
  readonly clusterId: string;
  /** Limits and timeouts in force. */
  readonly requestBytesMax: number;
  /** Most bytes of key-values one answer may carry. */
  readonly responseBytesMax: number;
  /** Event-loop stalls of this process. */
  readonly loopStalls: LoopStallMeter = new LoopStallMeter();
  /** Checks the Host and Origin of client requests (see {@linkcode BrowserGuard}). */
  readonly browserGuard: BrowserGuard;
  /** How long a request may wait. */
  readonly requestTimeoutMs: number;
  /** Longest wait for a request body. */
  readonly bodyReadTimeoutMs: number;
  /** Most HTTP requests handled at once. */
  readonly httpRequestsMax: number;
  #httpRequests = 0;
  /** Counters. */
  readonly counters: ServerCounters = {
    proposals: 0,
    proposalsFailed: 0,
    leaderChanges: 0,
    forwarded: 0,
    badRequests: 0,
    fastRequests: 0,
    readsLinearizable: 0,
    readsSerializable: 0,
    readyBatches: 0,
    saves: 0,
  };
  /** Latency of storage saves (each one fdatasync), seconds. */
  readonly walSyncSeconds: Histogram = new Histogram();
  /** Latency of HTTP requests by route, seconds. */
  readonly requestSeconds: Map<string, Histogram> = new Map();

  readonly #node: RaftNode;
  readonly #storage: FileStorage;
  readonly #transport: PeerTransport | undefined;
  readonly #peers: ReadonlyMap<NodeId, Address>;
  readonly #peerClientUrls: ReadonlyMap<NodeId, string>;
  readonly #log: (line: string) => void;
  readonly #io: ServerIo;
  readonly #readBeforeBarrier: boolean;
  /** Fault point `keepalive-before-barrier` (tests only): lease keep-alives skip the barrier. */
  readonly keepAliveBeforeBarrier: boolean;
  /** Fault point `watch-start-skips` (tests only): a watch starts after its start revision. */
  readonly watchStartSkips: boolean;
  readonly #readBeforeApply: boolean;
  #http: { shutdown(): Promise<void> } | undefined;
  #grpc: { readonly url: string; close(): void; reloadTls?(m: TlsMaterial): void } | undefined;
  #clientUrl = "";
  /** The client port's TLS listener, forwarding client and files; set by start(). */
  #clientTls:
    | { files: TlsFiles; listener?: TlsConnListener; httpClient: ForwardClients }
    | undefined;
  #peerTlsFiles: TlsFiles | undefined;
  #tlsModule: TlsModule | undefined;
  #store: MetadataStore;
  readonly #snapshotEntries: number;
  readonly #snapshotBytes: number;
  /** The store's quota in bytes. */
  readonly quotaBackendBytes: number;
  readonly #proposalsPendingMax: number;
  readonly #proposalBytesPendingMax: number;
  #proposalBytesPending = 0;
  /** Command bytes applied since start, and where the current snapshot's base stands in them. */
  #appliedBytes = 0;
  #snapshotBytesBase = { index: 0, appliedBytes: 0 };
  #snapshotBytesNext: { index: number; appliedBytes: number } | undefined;
  /** Log index of a NOSPACE raise proposed by this leader and not yet applied. */
  #alarmRaiseIndex = 0;
  /** The entries due before the next snapshot (staggered), and the snapshot index it was drawn at. */
  #snapshotDue = { entries: 0, drawnAt: -1 };
  #stopTicker: CancelTimer | undefined;
  #drainScheduled = false;
  #draining = false;
  #closed = false;
  #proposals = new Map<number, ProposalWaiter>();
  /** Pending reads, each with the leader it asked (undefined when none was known). */
  #reads = new Map<
    string,
    { resolve: () => void; reject: (e: Error) => void; askedLeader: NodeId | undefined }
  >();
  #readsWaitingApply: { index: number; resolve: () => void }[] = [];
  #readSeq = 0;
  /** Persist, send, apply, serve reads: the loop the simulator runs too (src/host/loop.ts). */
  readonly #loop: HostLoop;
  /** The fdatasync running off the loop now, if any. */
  #syncing: Promise<void> | undefined;
  /** Timeouts of pending proposals and reads, fired by the clock tick. */
  readonly #deadlines = new EventHeap<{ atMs: number; seq: number; fire: () => void }>();
  #deadlineSeq = 0;
  /** Takes snapshots in slices across turns, one at a time. */
  readonly #snapshotter: Snapshotter;
  #seenTerms = new Map<NodeId, number>();
  #seenDirty = false;
  #joinTarget: number | undefined;
  readonly #members: MemberTable;
  readonly #confWaiters = new Map<number, ConfWaiter>();
  readonly #peerGrpcUrls: ReadonlyMap<NodeId, string>;
  #last: { role: RaftRole; term: number; leader: NodeId | undefined };
  #stopped: Promise<void>;
  #stop!: () => void;
  #fatal: Error | undefined;
  readonly #hub: WatchHub;
  readonly #leases: LeaseManager;
  readonly #watchProgressMs: number;
  #lastProgressMs = 0;
  #appliedSinceNotify = false;
  readonly #autoCompactor: AutoCompactor | undefined;

  private constructor(
    options: ServerOptions,
    node: RaftNode,
    storage: FileStorage,
    store: MetadataStore,
    transport: PeerTransport | undefined,
    seen: Map<NodeId, number>,
    joinTarget: number | undefined,
    io: ServerIo,
    members: MemberTable,
  ) {
    this.nodeId = node.id;
    this.#members = members;
    this.#peerGrpcUrls = options.peerGrpcUrls ?? new Map();
    this.#io = io;
    this.auth = new NodeAuth({
      nowMs: () => io.clock.nowMs(),
      tokenTtlMs: options.authTokenTtlMs,
      pbkdf2Iterations: options.authPbkdf2Iterations,
      secret: options.secret,
      logEvent: (event, fields) => this.logEvent(event, fields),
    });
    this.#readBeforeBarrier = options.faultPoints?.includes("read-before-barrier") ?? false;
    this.#readBeforeApply = options.faultPoints?.includes("read-before-apply") ?? false;
    this.keepAliveBeforeBarrier = options.faultPoints?.includes("keepalive-before-barrier") ??
      false;
    this.watchStartSkips = options.faultPoints?.includes("watch-start-skips") ?? false;
    this.#snapshotter = new Snapshotter({
      nowMs: () => io.clock.nowMs(),
      yieldTurn: (sliceMs) =>
        new Promise((resolve) => io.timers.after(restAfterSlice(sliceMs), resolve)),
    });
    this.clusterId = options.clusterId ?? "raftmeta";
    this.#node = node;
    this.#storage = storage;
    this.#store = store;
    this.#snapshotEntries = options.snapshotEntries ?? SNAPSHOT_ENTRIES_DEFAULT;
    this.#snapshotBytes = options.snapshotBytes ?? SNAPSHOT_BYTES_DEFAULT;
    this.quotaBackendBytes = options.quotaBackendBytes ?? QUOTA_BACKEND_BYTES_DEFAULT;
    this.#autoCompactor = options.autoCompaction && new AutoCompactor(options.autoCompaction);
    this.#proposalsPendingMax = options.proposalsPendingMax ?? PROPOSALS_PENDING_MAX_DEFAULT;
    this.#proposalBytesPendingMax = options.proposalBytesPendingMax ??
      PROPOSAL_BYTES_PENDING_MAX_DEFAULT;
    this.#transport = transport;
    this.#peers = options.peers ?? new Map();
    this.#peerClientUrls = options.peerClientUrls ?? new Map();
    this.#log = options.log ?? ((line) => console.log(line));
    this.requestBytesMax = options.requestBytesMax ?? 1.5 * 1024 * 1024;
    this.responseBytesMax = options.responseBytesMax ?? RESPONSE_BYTES_MAX_DEFAULT;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    this.browserGuard = browserGuardOf(options);
    this.bodyReadTimeoutMs = options.bodyReadTimeoutMs ?? 10_000;
    this.httpRequestsMax = options.httpRequestsMax ?? 512;
    this.#seenTerms = seen;
    this.#joinTarget = joinTarget;
    this.#last = { role: node.role, term: node.term, leader: node.leaderId };
    this.#loop = new HostLoop(node, {
      disk: {
        saveSnapshot: (snapshot) => storage.saveSnapshot(snapshot),
        save: (hardState, entries) => {
          const t = io.clock.nowMs();
          storage.save(hardState, entries);
          this.walSyncSeconds.observe((io.clock.nowMs() - t) / 1000);
          this.counters.saves++;
        },
        write: (hardState, entries) => {
          storage.write(hardState, entries);
          this.counters.saves++;
        },
        // An fdatasync on Deno's blocking pool: the loop replicates and parses requests meanwhile.
        sync: (done) => {
          const t = io.clock.nowMs();
          const syncing = storage.sync().then(() => {
            if (this.#syncing === syncing) this.#syncing = undefined;
            if (!this.#closed) this.walSyncSeconds.observe((io.clock.nowMs() - t) / 1000);
            done();
          }, (e) => {
            if (this.#syncing === syncing) this.#syncing = undefined;
            done(e as Error);
          });
          this.#syncing = syncing;
        },
      },
      transport: {
        send: (m) => {
          if (this.#joinTarget !== undefined && withheld(m)) return;
          io.transport.send(m);
        },
      },
      restore: (snapshot) => this.#restore(snapshot),
      apply: (entry) => this.#apply(entry),
      readState: (read) => this.#readState(read),
      wake: () => this.#scheduleDrain(),
      fail: (e) => {
        if (!this.#closed) this.#die(e);
      },
      halted: () => this.#closed,
    });
    this.#stopped = new Promise((r) => this.#stop = r);
    this.#hub = new WatchHub(() => this.#store, {
      watchersMax: options.watchersMax,
      bufferEventsMax: options.watchBufferEventsMax,
    });
    this.#watchProgressMs = options.watchProgressMs ?? 1_000;
    // Only the leader proposes expiries, on this process's clock; a new leader gives every lease
    // a fresh TTL first (see src/coord/lease_manager.ts).
    this.#leases = new LeaseManager({
      nowMs: () => this.#nowMs(),
      store: () => this.#store,
      leaderTerm: () => this.#node.role === "Leader" ? this.#node.term : undefined,
      propose: (command) => {
        if (this.#closed || this.#node.role !== "Leader") throw new Error("not the leader");
        this.#node.propose(command);
        this.counters.proposals++;
        this.#scheduleDrain();
      },
    });
  }

  /**
   * Opens the data directory, checks (for an empty one) that peers have never seen this node,
   * starts the peer transport, the clock and the HTTP listener. Throws {@linkcode StartupError}
   * when the node must not start.
   */
  static async start(
    options: ServerOptions,
    handler: HttpHandler,
    fastHandler?: (server: RaftServer) => Http1FastHandler,
  ): Promise<RaftServer> {
    const nodeId = options.nodeId ?? "n1";
    const clusterId = options.clusterId ?? "raftmeta";
    const dataDir = options.dataDir ?? "./data";
    const peers = options.peers ?? new Map<NodeId, Address>();
    const log = options.log ?? ((line: string) => console.log(line));
    const emit = (event: string, fields: Record<string, unknown>) =>
      log(JSON.stringify({ ts: new Date().toISOString(), node: nodeId, event, ...fields }));
    try {
      browserGuardOf(options); // refuse a bad origin before anything is opened
    } catch (e) {
      throw new StartupError((e as Error).message);
    }
    if (peers.has(nodeId)) throw new StartupError(`--peers must not list this node "${nodeId}"`);
    for (const [id, url] of options.peerClientUrls ?? []) {
      if (!peers.has(id)) {
        throw new StartupError(`--peer-client-urls names "${id}", which --peers does not list`);
      }
      checkClientUrl(url, `--peer-client-urls entry for "${id}"`);
    }
    for (const [id, url] of options.peerGrpcUrls ?? []) {
      if (!peers.has(id)) {
        throw new StartupError(`--peer-grpc-urls names "${id}", which --peers does not list`);
      }
      checkClientUrl(url, `--peer-grpc-urls entry for "${id}"`);
    }
    for (
      const [what, v] of [
        ["peerHandshakeTimeoutMs", options.peerHandshakeTimeoutMs],
        ["peerUnauthenticatedMax", options.peerUnauthenticatedMax],
      ] as const
    ) {
      if (v !== undefined && !(Number.isSafeInteger(v) && v >= 1)) {
        throw new StartupError(`${what} must be a positive integer: ${v}`);
      }
    }
    const secret = options.secret ?? "";
    if ((peers.size > 0 || options.servePeers === true) && secret === "") {
      if (!options.insecurePeers) {
        throw new StartupError(
          `Node "${nodeId}" has ${
            peers.size > 0 ? "peers" : "a peer port (--serve-peers)"
          } but no cluster secret: anyone who reaches its peer port ` +
            `could forge log entries. Give one with --cluster-secret-file or ` +
            `$RAFTMETA_CLUSTER_SECRET (or accept the risk with --insecure-peers)`,
        );
      }
      emit("insecure-peers", {
        warning: "No cluster secret (--insecure-peers): anyone who reaches the peer port " +
          "can join as a peer, forge log entries and overwrite data",
      });
    }
    warnIfShared(dataDir, emit);
    let members: MemberTable;
    try {
      members = new MemberTable({ dir: dataDir, clusterId, self: nodeId });
    } catch (e) {
      throw new StartupError((e as Error).message);
    }
    if (members.removedSelf !== undefined) {
      throw new StartupError(
        `Node "${nodeId}" (member ${members.idOf(nodeId).toString(16)}) was removed from the ` +
          `cluster (${members.removedSelf}): its data directory "${dataDir}" must not serve ` +
          `again. To bring this machine back, add it as a new member under a new name ` +
          `(deno task ctl member add NAME --peer-urls URL) and start it with an empty data ` +
          `directory and --initial-cluster-state existing`,
        5,
      );
    }
    // `--join` is the older name of `--initial-cluster-state existing`.
    const existing = options.initialClusterState === "existing" || options.join === true;
    if (existing && peers.size === 0) {
      throw new StartupError(
        "--initial-cluster-state existing needs --peers: the members to copy the log from",
      );
    }
    // Whom to talk to: the flags, then every member the table recorded (added ones, new URLs).
    const transportPeers = new Map(peers);
    for (const [id, info] of members.known()) {
      if (id !== nodeId && info.peerUrl !== undefined) {
        transportPeers.set(id, addressOfPeerUrl(info.peerUrl));
      }
    }
    for (const id of [...transportPeers.keys()]) {
      if (members.isRemoved(id)) transportPeers.delete(id);
    }
    let clientTls: TlsMaterial | undefined;
    let peerTls: TlsMaterial | undefined;
    const tlsModule = options.clientTls === undefined && options.peerTls === undefined
      ? undefined
      : await import("./tls.ts");
    try {
      clientTls = options.clientTls === undefined
        ? undefined
        : tlsModule!.readTlsMaterial(options.clientTls);
      peerTls = options.peerTls === undefined
        ? undefined
        : tlsModule!.readTlsMaterial(options.peerTls);
    } catch (e) {
      throw new StartupError((e as Error).message);
    }
    if (clientTls !== undefined && options.httpServer === "deno") {
      throw new StartupError(
        "--cert-file needs --http-server raftmeta (Deno.serve cannot ask for client certificates " +
          "or reload them)",
      );
    }
    // Forwarding to another node's https client URL trusts the client CA and presents this node's
    // client-port certificate (needed when that node has --client-cert-auth).
    const forwardClient: ForwardClients = {
      current: clientTls === undefined ? undefined : tlsModule!.httpClientWith(clientTls),
      unpooled: clientTls === undefined
        ? undefined
        : tlsModule!.httpClientWith(clientTls, { pooled: false }),
    };

    // Writes forwarded to a leader's http client URL: kept-open connections, never resent.
    const forwarder = new ForwardClient({
      responseBytesMax: (options.responseBytesMax ?? RESPONSE_BYTES_MAX_DEFAULT) + 1024 * 1024,
    });

    const fresh = !exists(`${dataDir}/meta.json`);
    const seen = readSeen(dataDir);

    // The transport starts before the node exists so that an empty directory can ask its peers;
    // messages arriving before the node is built are dropped (Raft tolerates loss).
    const ref: { server?: RaftServer } = {};
    const clientListen = options.clientListen ?? { hostname: "127.0.0.1", port: 2379 };
    // Without peers there is no peer port, unless asked for (a one-node cluster that may grow).
    const withTransport = transportPeers.size > 0 || options.servePeers === true;
    let http: DeferredHttp | undefined;
    try {
      http = !withTransport
        ? undefined
        : await retryWhileInUse(() => startHttpDeferred(clientListen, options, emit, clientTls));
    } catch (e) {
      throw new StartupError(`Cannot listen for clients: ${(e as Error).message}`);
    }
    let removedAtStart: string | undefined;
    const transport: PeerTransport | undefined = !withTransport ? undefined : new PeerTransport({
      nodeId,
      clusterId,
      secret,
      tls: peerTls,
      listen: options.peerListen ?? { hostname: "127.0.0.1", port: 2380 },
      peers: transportPeers,
      isRemoved: (id) => members.isRemoved(id),
      onRemoved: (by, why) => {
        if (ref.server !== undefined) ref.server.#removed(`peer "${by}" says: ${why}`);
        else removedAtStart ??= `peer "${by}" says: ${why}`;
      },
      handshakeTimeoutMs: options.peerHandshakeTimeoutMs,
      unauthenticatedConnectionsMax: options.peerUnauthenticatedMax,
      onMessages: (from, messages) => {
        ref.server?.receive(from, messages);
      },
      localState: () => ({
        term: ref.server?.node.term ?? 0,
        commitIndex: ref.server?.node.commitIndex ?? 0,
      }),
      seenTermOf: (peer) => seen.get(peer) ?? 0,
      log: emit,
      logTransfer: (peer) => {
        if (ref.server === undefined) throw new Error(`Node "${nodeId}" is still starting`);
        const server = ref.server;
        return logTransferFrames(server.node, peer, () => server.#members.toJSON());
      },
    });
    try {
      await retryWhileInUse(() => transport?.start());
    } catch (e) {
      http?.close();
      throw new StartupError(`Cannot listen for peers: ${(e as Error).message}`);
    }

    let joinTarget: number | undefined;
    let transfer: LogTransfer | undefined;
    if (fresh && transport !== undefined) {
      const probeMs = options.probeMs ?? 2000;
      const deadline = Date.now() + probeMs;
      while (Date.now() < deadline) {
        const infos = [...transport.peerInfo.values()];
        if (infos.some((i) => i.seenTerm > 0) || infos.every((i) => i.handshakeAtMs > 0)) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const witnesses = [...transport.peerInfo].filter(([, i]) => i.seenTerm > 0);
      if (witnesses.length > 0) {
        // Rebuilding it under its old name could forget a vote it cast (two leaders in a term):
        // a member whose data is lost comes back only as a new member (issue 19).
        const [peer, info] = witnesses[0];
        transport.close();
        http?.close();
        throw new StartupError(
          `Data directory "${dataDir}" is empty, but peer "${peer}" has seen node "${nodeId}" at ` +
            `term ${info.seenTerm}: this is a member that lost its data, not a new one. Remove it ` +
            `(deno task ctl member remove ${members.idOf(nodeId).toString(16)}) and add it again ` +
            `under a new name (member add), then start that with --initial-cluster-state existing`,
          3,
        );
      }
      if (witnesses.length === 0 && existing) {
        const joinTimeoutMs = options.joinTimeoutMs ?? 30_000;
        try {
          transfer = await fetchLeaderLog(transport, nodeId, joinTimeoutMs, emit);
        } catch (e) {
          transport.close();
          http?.close();
          const why = removedAtStart === undefined
            ? ""
            : ` This node was removed from the cluster (${removedAtStart}).`;
          throw new StartupError(
            `${(e as Error).message}.${why} A new member must first be added ` +
              `(deno task ctl member add ${nodeId} --peer-urls URL)`,
            4,
          );
        }
        joinTarget = transfer.leaderCommit;
        emit("join", {
          reason: "new member (--initial-cluster-state existing)",
          from: transfer.from,
          snapshotIndex: transfer.snapshot?.meta.index ?? 0,
          snapshotBytes: transfer.snapshot?.data.length ?? 0,
          entries: transfer.entries.length,
          catchUpTo: joinTarget,
        });
      }
    }

    let storage: FileStorage;
    try {
      storage = FileStorage.open(dataDir, { clusterId, nodeId, repairWal: options.repairWal });
    } catch (e) {
      transport?.close();
      http?.close();
      throw new StartupError(`Cannot open data directory "${dataDir}": ${(e as Error).message}`);
    }
    const torn = storage.tornTail;
    if (torn !== undefined) emit("wal-cut", { ...torn, reason: `torn write: ${torn.reason}` });
    for (const damage of storage.repaired) emit("wal-repaired", { damage });
    if (storage.snapshotFallback) emit("snapshot-fallback", { ...storage.snapshotFallback });
    if (transfer !== undefined) {
      // The leader's whole log (snapshot and entries after it): the leader may remember this node
      // at any index up to its last, and never moves a follower's matchIndex back (rule 4).
      if (transfer.snapshot !== undefined) storage.saveSnapshot(transfer.snapshot);
      // A new member has cast no vote (no peer has seen it: checked above); it starts in the
      // leader's term, counted as having voted for itself, and withholds votes until caught up.
      const term = transfer.term;
      storage.save(
        { term, votedFor: nodeId, commitIndex: transfer.leaderCommit },
        transfer.entries,
      );
      emit("join-vote-withheld", { term });
      members.adopt(transfer.members, transfer.bootstrap);
    } else if (fresh) {
      members.setBootstrap(membershipOf([nodeId, ...peers.keys()]));
    }
    const io: ServerIo = {
      clock: new RealClock(),
      timers: REAL_TIMERS,
      random: Math.random,
      rngSeed: crypto.getRandomValues(new Uint32Array(1))[0],
      fs: new RealFs(),
      transport: { send: (m) => transport?.send(m) },
      fetch: (url, init, timeoutMs) =>
        init.unpooled && url.startsWith("http:")
          ? forwarder.request(url, {
            method: init.method ?? "GET",
            headers: new Headers(init.headers),
            body: init.body as Uint8Array | undefined,
          }, timeoutMs)
          : fetch(url, {
            ...init,
            client: url.startsWith("https:") && forwardClient.current !== undefined
              ? (init.unpooled ? forwardClient.unpooled : forwardClient.current)
              : init.client,
            signal: AbortSignal.timeout(Math.max(1, timeoutMs)),
          }),
      closeFetch: () => forwarder.close(),
      saveSeen: (seenTerms) => writeSeen(dataDir, seenTerms),
    };
    let built: { node: RaftNode; store: MetadataStore };
    try {
      built = buildNode(
        nodeId,
        members.bootstrap ?? membershipOf([nodeId, ...peers.keys()]),
        storage,
        options,
        io,
      );
    } catch (e) {
      storage.close();
      transport?.close();
      http?.close();
      throw e;
    }
    const { node, store } = built;
    const voters = [...node.voters];
    const server = new RaftServer(
      options,
      node,
      storage,
      store,
      transport,
      seen,
      joinTarget,
      io,
      members,
    );
    ref.server = server;
    emit("started", {
      clusterId,
      dataDir,
      voters,
      fresh,
      term: node.term,
      snapshotIndex: node.log.snapshotIndex,
      lastLogIndex: node.log.lastIndex,
      commitIndex: node.commitIndex,
      peerListen: transport?.listenAddress ?? null,
    });
    if (http !== undefined) {
      server.#clientUrl = http.url;
      server.#http = http.serve(
        (req, info) => handler(server, req, info),
        fastHandler?.(server),
      );
    } else {
      try {
        const h = await retryWhileInUse(() =>
          startHttpDeferred(clientListen, options, emit, clientTls)
        );
        http = h;
        server.#clientUrl = h.url;
        server.#http = h.serve((req, info) => handler(server, req, info), fastHandler?.(server));
      } catch (e) {
        storage.close();
        throw new StartupError(`Cannot listen for clients: ${(e as Error).message}`);
      }
    }
    if (options.grpcListen !== undefined) {
      try {
        const { startGrpc } = await import("./grpc.ts");
        server.#grpc = await startGrpc(server, handler, {
          listen: options.grpcListen,
          peerGrpcUrls: options.peerGrpcUrls,
          tls: clientTls,
          server: options.grpcServer,
          idleTimeoutMs: options.httpIdleTimeoutMs,
          onTlsRefused: (remote, reason) => emit("client-tls-refused", { remote, reason }),
        });
      } catch (e) {
        await server.close();
        throw new StartupError(`Cannot listen for gRPC clients: ${(e as Error).message}`);
      }
    }
    server.#peerTlsFiles = options.peerTls;
    server.#tlsModule = tlsModule;
    if (options.clientTls !== undefined) {
      server.#clientTls = {
        files: options.clientTls,
        listener: http?.tlsListener,
        httpClient: forwardClient,
      };
    }
    emit("listening", { clientUrl: server.#clientUrl, grpcUrl: server.#grpc?.url ?? null });
    server.loopStalls.start();
    server.#startTicker(options.tickMs ?? 5);
    return server;
  }

  /**
   * Opens a node on `io`'s disk, clock, timers and network, without listeners: the simulator's
   * way in (src/check/server_cluster.ts). Requests go to {@linkcode handleHttp}-style handlers
   * called directly, peer messages to {@linkcode receive}. Node and store are built as `start`
   * builds them; the checks and the log transfer of an empty directory are `start`'s alone.
   */
  static open(options: ServerOptions & { clientUrl: string }, io: ServerIo): RaftServer {
    const nodeId = options.nodeId ?? "n1";
    const clusterId = options.clusterId ?? "raftmeta";
    const dataDir = options.dataDir ?? "./data";
    const peers = options.peers ?? new Map<NodeId, Address>();
    if (peers.has(nodeId)) throw new StartupError(`peers must not list this node "${nodeId}"`);
    const storage = FileStorage.open(dataDir, { fs: io.fs, clusterId, nodeId });
    const bootstrap = membershipOf([nodeId, ...peers.keys()]);
    const { node, store } = buildNode(nodeId, bootstrap, storage, options, io);
    const server = new RaftServer(
      options,
      node,
      storage,
      store,
      undefined,
      new Map(),
      undefined,
      io,
      new MemberTable({ clusterId, self: nodeId }),
    );
    server.#clientUrl = options.clientUrl;
    server.#startTicker(options.tickMs ?? 5);
    return server;
  }

  #startTicker(tickMs: number): void {
    if (!(Number.isSafeInteger(tickMs) && tickMs >= 1)) {
      throw new StartupError(`tickMs must be a positive integer: ${tickMs}`);
    }
    this.#stopTicker = this.#io.timers.every(tickMs, () => this.#tick());
    this.#tick();
  }

  // ---- Accessors ---------------------------------------------------------------------------------

  /** The metadata store (read it; writes go through the log). Replaced when a snapshot arrives. */
  get store(): MetadataStore {
    return this.#store;
  }

  /** The client URL, e.g. `http://127.0.0.1:2379`. */
  get clientUrl(): string {
    return this.#clientUrl;
  }
  /** The Raft node (read only: inputs go through the server). */
  get node(): RaftNode {
    return this.#node;
  }
  /** Peer transport, when the cluster has more than one node. */
  get transport(): PeerTransport | undefined {
    return this.#transport;
  }
  /** Resolves when the server has stopped. */
  get stopped(): Promise<void> {
    return this.#stopped;
  }
  /** The error that stopped the node, if one did. */
  get fatal(): Error | undefined {
    return this.#fatal;
  }
  /** Whether the node is rebuilding after an empty data directory and withholds votes. */
  get joining(): boolean {
    return this.#joinTarget !== undefined;
  }

  /** This node's watchers (fed after every apply). */
  get watchHub(): WatchHub {
    return this.#hub;
  }
  /** This node's lease deadlines (acting only while it leads). */
  get leaseManager(): LeaseManager {
    return this.#leases;
  }

  /**
   * The client URL of `id`: this node's own, or a peer's as configured or as its `member add`
   * recorded it through the log (never as a peer claims it).
   */
  clientUrlOf(id: NodeId): string | undefined {
    if (id === this.nodeId) return this.#clientUrl;
    return this.#peerClientUrls.get(id) ?? this.#members.infoOf(id).clientUrl;
  }

  /** The peer URL of `id` (`http://host:port`), as recorded or configured. */
  peerUrlOf(id: NodeId): string | undefined {
    const recorded = this.#members.infoOf(id).peerUrl;
    if (recorded !== undefined) return recorded;
    const listen = id === this.nodeId ? this.#transport?.listenAddress : this.#peers.get(id);
    return listen === undefined ? undefined : `http://${listen.hostname}:${listen.port}`;
  }

  /** The gRPC URL of `id`, when known. */
  grpcUrlOf(id: NodeId): string | undefined {
    if (id === this.nodeId && this.#grpc !== undefined) return this.#grpc.url;
    return this.#peerGrpcUrls.get(id) ?? this.#members.infoOf(id).grpcUrl;
  }

  /** The members' ids, URLs and removed names (src/net/members.ts). */
  get memberTable(): MemberTable {
    return this.#members;
  }

  /** The member id (etcd's uint64) of `id`. */
  memberIdOf(id: NodeId): bigint {
    return this.#members.idOf(id);
  }

  /** Every member, voters then learners, with its addresses. */
  members(): {
    id: NodeId;
    memberId: bigint;
    isLearner: boolean;
    clientUrl: string | null;
    peerAddress: string | null;
    peerUrl: string | null;
    grpcUrl: string | null;
  }[] {
    // The configuration as applied (as etcd lists members): a change appended but not applied yet
    // has not reached the member table, which holds the new member's id and URLs.
    const node = this.#node;
    const config = node.membershipAt(Math.max(this.#store.appliedIndex, node.log.snapshotIndex));
    const all = [
      ...[...config.voters].map((id) => ({ id, isLearner: false })),
      ...[...config.learners].map((id) => ({ id, isLearner: true })),
    ];
    return all.map(({ id, isLearner }) => {
      const peerUrl = this.peerUrlOf(id);
      return {
        id,
        memberId: this.memberIdOf(id),
        isLearner,
        clientUrl: this.clientUrlOf(id) ?? null,
        peerAddress: peerUrl === undefined ? null : peerUrl.replace(/^https?:\/\//, ""),
        peerUrl: peerUrl ?? null,
        grpcUrl: this.grpcUrlOf(id) ?? null,
      };
    });
  }

  /** The change appended but not committed yet, e.g. `"add-learner n4"`, or null. */
  pendingChange(): string | null {
    const n = this.#node;
    for (let i = n.commitIndex + 1; i <= n.log.lastIndex; i++) {
      const e = n.log.entry(i);
      if (e?.kind === "config") {
        const c = decodeConfChange(e.command);
        return `${c.type} ${c.node}`;
      }
    }
    return null;
  }

  /**
   * Proposes a membership change on this leader and resolves once it is applied here. An added or
   * updated member's peer link opens before the proposal: the configuration takes effect when
   * appended, and the leader replicates to it at once. Throws {@linkcode NotLeaderError} on a
   * follower, etcd's errors (src/net/members.ts) when the change does not fit.
   */
  async changeMembership(change: ConfChange): Promise<void> {
    this.#usable();
    const n = this.#node;
    if (n.role !== "Leader") throw new NotLeaderError(this.nodeId, n.leaderId);
    if (change.type === "promote" && n.learners.includes(change.node)) {
      // etcd's rule as well as the core's: the learner's match index is within 90% of the
      // leader's (a learner that never answered is never ready, however short the log).
      const match = n.status().progress.get(change.node)?.matchIndex ?? 0;
      if (match < n.log.lastIndex * 0.9) {
        throw MemberErrors.learnerNotReady(
          `"${change.node}" has ${match} of the leader's ${n.log.lastIndex} entries; at least 90% needed`,
        );
      }
    }
    const info = decodeMemberContext(change.context);
    if (info?.peerUrl !== undefined && change.node !== this.nodeId) {
      if (this.#transport === undefined) {
        throw new HttpError(
          412,
          `Node "${this.nodeId}" runs without a peer transport (started without --peers or ` +
            `--serve-peers), so it cannot reach new members; restart it with --serve-peers`,
          9,
        );
      }
      this.#transport.addPeer(change.node, addressOfPeerUrl(info.peerUrl));
    }
    let proposed: { index: number; term: number };
    try {
      proposed = n.proposeConfChange(change);
    } catch (e) {
      const known = n.voters.includes(change.node) || n.learners.includes(change.node);
      if (change.type.startsWith("add") && !known) this.#transport?.removePeer(change.node);
      const message = (e as Error).message;
      if (e instanceof NotLeaderError) throw e;
      if (message.startsWith("etcdserver: can only promote a learner member which is in sync")) {
        throw MemberErrors.learnerNotReady(message.replace(/^[^(]*\(|\)$/g, ""));
      }
      if (/last voter/.test(message)) throw MemberErrors.notEnoughStarted(message);
      if (/not found/.test(message)) throw MemberErrors.notFound();
      if (/already a voter/.test(message)) throw MemberErrors.notLearner();
      // One change at a time, the term's first commit, a transfer: all pass soon.
      throw new HttpError(503, message, 14, 1);
    }
    this.counters.proposals++;
    this.logEvent("membership-change-proposed", {
      change: `${change.type} ${change.node}`,
      index: proposed.index,
      term: proposed.term,
    });
    this.#scheduleDrain();
    await new Promise<void>((resolve, reject) => {
      const cancel = this.#io.timers.after(this.requestTimeoutMs, () => {
        if (this.#confWaiters.delete(proposed.index)) {
          reject(
            new HttpError(
              504,
              `Membership change ${change.type} ${change.node} (entry ${proposed.index}) was ` +
                `not applied within ${this.requestTimeoutMs} ms; its outcome is unknown`,
              4,
            ),
          );
        }
      });
      this.#confWaiters.set(proposed.index, {
        term: proposed.term,
        resolve: () => {
          cancel();
          resolve();
        },
        reject: (e) => {
          cancel();
          reject(e);
        },
      });
    });
  }

  /**
   * Moves leadership to the voter `target` (etcd's MoveLeader): the core brings it up to date and
   * sends TimeoutNow; resolves once `target` leads as far as this node knows, throws etcd's
   * "leader transfer took too long" after `timeoutMs`.
   */
  async moveLeader(target: NodeId, timeoutMs: number): Promise<void> {
    this.#usable();
    const n = this.#node;
    if (n.role !== "Leader") throw new NotLeaderError(this.nodeId, n.leaderId);
    if (target === this.nodeId) return;
    if (!n.voters.includes(target)) throw MemberErrors.badTransferee();
    n.transferLeadership(target);
    this.logEvent("leader-transfer-started", { target, term: n.term });
    this.#scheduleDrain();
    const deadline = this.#nowMs() + timeoutMs;
    while (this.#nowMs() < deadline && !this.#closed) {
      if (n.role !== "Leader" && n.leaderId === target) return;
      if (n.role === "Leader" && n.transferee === undefined && n.term > 0) {
        // Abandoned by the core (an election timeout passed): try again while time remains.
        try {
          n.transferLeadership(target);
          this.#scheduleDrain();
        } catch { /* lost leadership meanwhile: the loop sees it */ }
      }
      await new Promise<void>((r) => this.#io.timers.after(10, () => r()));
    }
    if (n.role !== "Leader" && n.leaderId === target) return;
    throw MemberErrors.transferTimeout();
  }

  /**
   * Before a graceful stop: a leader hands leadership to the voter with the highest match index
   * and waits until another node leads, at most `timeoutMs`. Never throws; logs the outcome.
   */
  async transferLeadershipAway(timeoutMs: number): Promise<void> {
    const n = this.#node;
    if (timeoutMs <= 0 || this.#closed || n.role !== "Leader") return;
    const progress = n.status().progress;
    const target = n.voters.filter((v) => v !== this.nodeId)
      .sort((a, b) => (progress.get(b)?.matchIndex ?? 0) - (progress.get(a)?.matchIndex ?? 0))[0];
    if (target === undefined) return;
    const started = this.#nowMs();
    try {
      await this.moveLeader(target, timeoutMs);
      this.logEvent("shutdown-leader-transferred", { to: target, ms: this.#nowMs() - started });
    } catch (e) {
      this.logEvent("shutdown-leader-transfer-failed", {
        to: target,
        error: (e as Error).message,
      });
    }
  }

  /** This node learned it was removed: its directory is marked, and it stops. */
  #removed(reason: string): void {
    if (this.#members.removedSelf !== undefined || this.#closed) return;
    try {
      this.#members.markRemovedSelf(reason);
    } catch (e) {
      this.logEvent("members-save-failed", { error: (e as Error).message });
    }
    this.logEvent("removed-from-cluster", {
      reason,
      note: "this node stops; its data directory will refuse to start",
    });
    this.#fatal = new Error(`Node "${this.nodeId}" was removed from the cluster (${reason})`);
    // Reads waiting here would wait for the stop: they go to a current member now.
    for (const r of this.#reads.values()) r.reject(removedError());
    this.#reads.clear();
    // A moment for the answer to the request that removed it, then stop.
    this.#io.timers.after(300, () => this.close());
  }

  /** This node's row of the node table, with its progress view when leader. */
  localStatus(): LocalStatus {
    const s = this.#node.status();
    return {
      id: s.id,
      role: s.role,
      term: s.term,
      votedFor: s.votedFor ?? null,
      leader: s.leaderId ?? null,
      lastLogIndex: s.lastLogIndex,
      lastLogTerm: s.lastLogTerm,
      commitIndex: s.commitIndex,
      lastApplied: this.store.appliedIndex,
      status: this.joining ? "joining" : "up",
      voters: [...this.#node.voters],
      learners: [...this.#node.learners],
      pendingChange: this.pendingChange(),
      revision: this.store.revision,
      keys: this.store.size,
      clientUrl: this.#clientUrl,
      grpcUrl: this.#grpc?.url ?? null,
      snapshotIndex: this.#node.log.snapshotIndex,
      logBytes: this.logBytes,
      backendBytes: this.store.backendBytes,
      eventLoopStallMsMax: this.loopStalls.stalls.stallMsMax,
      progress: [...s.progress].map(([follower, p]) => ({ follower, ...p })),
    };
  }

  // ---- Client operations -------------------------------------------------------------------------

  /**
   * Proposes `command` (wrapped in a session envelope when `session` is given, and in an auth
   * guard when `authRevision` is: the auth revision its permissions were checked at) and resolves
   * with its result once applied here. Throws {@linkcode NotLeaderError} on a follower,
   * {@linkcode HttpError} 400 for a command over the limits, 503/504 when it cannot finish.
   */
  propose(
    command: PlainCommand,
    session?: { clientId: ClientId; seq: number },
    authRevision?: number,
  ): Promise<ApplyResult> {
    this.#usable();
    const plain = encodeCommand(
      session === undefined ? command : { type: "session", ...session, command },
    );
    const bytes = authRevision === undefined ? plain : encodeAuthGuarded(authRevision, plain);
    try {
      decodeCommand(bytes, { limits: this.store.limits });
    } catch (e) {
      throw new HttpError(400, (e as Error).message, 3);
    }
    if (this.#node.role !== "Leader") throw new NotLeaderError(this.nodeId, this.#node.leaderId);
    // Load shedding: refuse before the queue of unapplied proposals grows without bound.
    if (
      this.#proposals.size >= this.#proposalsPendingMax ||
      this.#proposalBytesPending + bytes.length > this.#proposalBytesPendingMax
    ) {
      this.counters.proposalsFailed++;
      throw new HttpError(429, TOO_MANY_REQUESTS_ERROR, 8, 1);
    }
    if (addsData(session === undefined ? command : { type: "session", ...session, command })) {
      this.#checkQuota(bytes.length);
    }
    let proposed: { index: number; term: number };
    try {
      proposed = this.#node.propose(bytes);
    } catch (e) {
      if (e instanceof NotLeaderError) throw e;
      this.counters.proposalsFailed++;
      throw new HttpError(503, (e as Error).message, 14);
    }
    this.counters.proposals++;
    const { promise, resolve, reject } = Promise.withResolvers<ApplyResult>();
    this.#proposals.set(proposed.index, {
      term: proposed.term,
      bytes: bytes.length,
      resolve,
      reject,
    });
    this.#proposalBytesPending += bytes.length;
    this.#scheduleDrain();
    this.#after(this.requestTimeoutMs, () => {
      if (this.#proposals.get(proposed.index)?.resolve !== resolve) return;
      this.#proposals.delete(proposed.index);
      this.#proposalBytesPending -= bytes.length;
      this.counters.proposalsFailed++;
      reject(
        new HttpError(
          504,
          `Entry ${proposed.index} was not applied within ${this.requestTimeoutMs} ms; its outcome is unknown (retry with the same client id and seq to settle it)`,
          4,
        ),
      );
    });
    return promise;
  }

  /**
   * Refuses a write of `bytes` with etcd's NOSPACE error when the alarm is raised or the write
   * would take the store over its quota; then raises the alarm through the log (once), so every
   * node refuses such writes at apply from the same replicated state.
   */
  #checkQuota(bytes: number): void {
    const store = this.store;
    if (store.alarms.length > 0) throw new HttpError(429, NOSPACE_ERROR, 8);
    if (store.backendBytes + bytes <= this.quotaBackendBytes) return;
    if (this.#alarmRaiseIndex <= store.appliedIndex) {
      const raise = encodeCommand({
        type: "alarm",
        action: "activate",
        memberId: this.nodeId,
        alarm: "NOSPACE",
      });
      this.#alarmRaiseIndex = this.#node.propose(raise).index;
      this.counters.proposals++;
      this.logEvent("alarm-raised", {
        alarm: "NOSPACE",
        backendBytes: store.backendBytes,
        quotaBackendBytes: this.quotaBackendBytes,
      });
      this.#scheduleDrain();
    }
    throw new HttpError(429, NOSPACE_ERROR, 8);
  }

  /**
   * Waits until a linearizable read may be served here (ReadIndex, §6.4): leadership confirmed by
   * a quorum after this call, and the store applied up to the read index. On a follower the read
   * index comes from the leader. Throws {@linkcode HttpError} 503 when no leader confirms it.
   */
  readBarrier(timeoutMs = this.requestTimeoutMs): Promise<void> {
    this.#usable();
    if (this.#readBeforeBarrier) return Promise.resolve(); // fault point: the local, stale state
    const readId = `${this.nodeId}.${++this.#readSeq}`;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#reads.set(readId, { resolve, reject, askedLeader: this.#node.leaderId });
    this.#after(timeoutMs, () => {
      if (!this.#reads.delete(readId)) return;
      reject(
        new HttpError(503, `No leader confirmed the read within ${Math.round(timeoutMs)} ms`, 14),
      );
    });
    this.#node.readIndex(readId);
    this.#scheduleDrain();
    return promise;
  }

  /** Counts a new HTTP request in; false (and not counted) when `httpRequestsMax` are in flight. */
  admitRequest(): boolean {
    if (this.#httpRequests >= this.httpRequestsMax) return false;
    this.#httpRequests++;
    return true;
  }

  /** Counts a request admitted by {@linkcode admitRequest} out. */
  releaseRequest(): void {
    this.#httpRequests--;
  }

  /** Runs `fire` about `ms` from now on the clock tick; `fire` must check it is still wanted. */
  afterMs(ms: number, fire: () => void): void {
    this.#after(ms, fire);
  }

  /**
   * Runs `fire` about `ms` from now, on the clock tick (within `tickMs`): one interval timer for
   * every pending request's timeout instead of a timer each (timers cost about 5% of a busy
   * leader's CPU in profiles). `fire` must check whether its request is still pending.
   */
  #after(ms: number, fire: () => void): void {
    this.#deadlines.push({ atMs: this.#nowMs() + ms, seq: ++this.#deadlineSeq, fire });
  }

  /** Resolves when a leader is known (or this node leads), false after `timeoutMs`. */
  async waitForLeader(timeoutMs: number): Promise<boolean> {
    const deadline = this.nowMs() + timeoutMs;
    while (this.#node.leaderId === undefined || this.#node.role === "PreCandidate") {
      if (this.nowMs() >= deadline || this.#closed) return false;
      await this.sleep(10);
    }
    return true;
  }

  /** Milliseconds on this server's clock (the real one, or the simulator's). */
  nowMs(): number {
    return this.#io.clock.nowMs();
  }

  /** Resolves `ms` from now on this server's timers. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.#io.timers.after(ms, resolve));
  }

  /** Sends a request to another node's client URL, giving up after `timeoutMs` (forwarding). */
  fetch(url: string, init: ServerFetchInit, timeoutMs: number): Promise<Response> {
    return this.#io.fetch(url, init, timeoutMs);
  }

  /**
   * Reads the TLS files again (`kill -HUP`): new client, gRPC and peer connections, and forwarded
   * requests, use them; open connections keep what they began with. Throws, changing nothing,
   * when a file cannot be read or the pair does not match. Returns the ports reloaded.
   */
  reloadTls(): string[] {
    const client = this.#clientTls;
    const peerFiles = this.#peerTlsFiles;
    const m = this.#tlsModule;
    if (m === undefined) {
      this.logEvent("tls-reloaded", { ports: [] });
      return [];
    }
    const clientMaterial = client === undefined ? undefined : m.readTlsMaterial(client.files);
    const peerMaterial = peerFiles === undefined ? undefined : m.readTlsMaterial(peerFiles);
    const done: string[] = [];
    if (client !== undefined && clientMaterial !== undefined) {
      client.listener?.reload(clientMaterial);
      const old = [client.httpClient.current, client.httpClient.unpooled];
      client.httpClient.current = m.httpClientWith(clientMaterial);
      client.httpClient.unpooled = m.httpClientWith(clientMaterial, { pooled: false });
      // Requests in flight on the old clients finish first.
      Deno.unrefTimer(setTimeout(() => old.forEach((c) => c?.close()), 60_000));
      done.push("client");
      if (this.#grpc?.reloadTls !== undefined) {
        this.#grpc.reloadTls(clientMaterial);
        done.push("grpc");
      }
    }
    if (peerMaterial !== undefined && this.#transport !== undefined) {
      this.#transport.reloadTls(peerMaterial);
      done.push("peer");
    }
    this.logEvent("tls-reloaded", { ports: done });
    return done;
  }

  /** Stops the clock, the listeners and the storage. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#loop.stop();
    this.#stopTicker?.();
    this.loopStalls.stop();
    this.#hub.cancelAll(`Node "${this.nodeId}" is stopping`);
    this.#transport?.close();
    this.#io.closeFetch?.();
    this.#grpc?.close();
    // A proposed write may still commit (its followers may hold it): its outcome is unknown, and
    // a 503 would tell the client, or the follower that forwarded it, to send it again.
    for (const w of this.#proposals.values()) {
      w.reject(
        new HttpError(504, "Node is stopping; the write was proposed, its outcome is unknown", 4),
      );
    }
    for (const r of this.#reads.values()) r.reject(new HttpError(503, "Node is stopping", 14));
    for (const w of this.#confWaiters.values()) {
      w.reject(
        new HttpError(504, "Node is stopping; the membership change's outcome is unknown", 4),
      );
    }
    this.#confWaiters.clear();
    this.#proposals.clear();
    this.#proposalBytesPending = 0;
    this.#reads.clear();
    try {
      // In-flight requests get a moment; a stuck client connection must not keep the node up.
      if (this.#http !== undefined) {
        let cancel: CancelTimer = () => {};
        await Promise.race([
          this.#http.shutdown(),
          new Promise((r) => cancel = this.#io.timers.after(500, () => r(undefined))),
        ]);
        cancel();
      }
    } catch { /* already closed */ }
    try {
      // A leader's own writes still waiting for their sync become durable before the files close.
      await this.#syncing;
      await this.#storage.sync();
    } catch { /* a failed disk: the data directory's recovery deals with it */ }
    try {
      const deferred = this.#loop.hardStateDeferred;
      if (deferred !== undefined) this.#storage.save(deferred, []);
      this.#storage.close();
    } catch { /* already closed */ }
    this.#stop();
  }

  /** Writes a structured log line. */
  logEvent(event: string, fields: Record<string, unknown> = {}): void {
    this.#log(
      JSON.stringify({ ts: new Date().toISOString(), node: this.nodeId, event, ...fields }),
    );
  }

  // ---- The host loop -----------------------------------------------------------------------------

  #usable(): void {
    if (this.#closed) throw new HttpError(503, "Node is stopping", 14);
    if (this.#members.removedSelf !== undefined) throw removedError();
  }

  #nowMs(): number {
    return Math.floor(this.#io.clock.nowMs());
  }

  #tick(): void {
    if (this.#closed) return;
    const now = this.#nowMs();
    const due = this.#deadlines;
    while ((due.peek()?.atMs ?? Infinity) <= now) due.pop()!.fire();
    this.#node.tick(now);
    this.#drain();
    if (this.#closed) return;
    this.#leases.tick();
    if (now - this.#lastProgressMs >= this.#watchProgressMs) {
      this.#lastProgressMs = now;
      this.#hub.progress();
    }
    this.#autoCompact(now);
    // A large compaction frees its versions a batch per tick (and per apply), also when idle.
    if (this.#store.compactPending) this.#store.compactStep();
  }

  /** Proposes the compaction the automatic compactor asks for, on the leader. */
  #autoCompact(now: number): void {
    const c = this.#autoCompactor;
    const store = this.#store;
    const leader = this.#node.role === "Leader";
    const revision = c?.poll(now, store.revision, store.compactRevision, leader);
    if (c === undefined || revision === undefined) return;
    c.proposing = true;
    this.propose({ type: "compact", revision }).then(
      (r) =>
        this.logEvent("auto-compaction", {
          revision,
          status: r.status,
          ...(r.status === "applied" ? {} : { error: (r as { error?: string }).error }),
        }),
      (e) => this.logEvent("auto-compaction-failed", { revision, error: (e as Error).message }),
    ).finally(() => c.proposing = false);
  }

  /** Feeds messages from a peer to the node (called by the transport). */
  receive(from: NodeId, messages: Message[]): void {
    if (this.#closed) return;
    for (const m of messages) {
      // Terms in these messages were persisted by the sender before it sent them (PreVote and
      // its reply carry a hoped-for term instead), so they prove the sender has durable state.
      if (m.type !== "PreVote" && m.type !== "PreVoteReply" && m.term > 0) {
        if (m.term > (this.#seenTerms.get(from) ?? 0)) {
          this.#seenTerms.set(from, m.term);
          this.#seenDirty = true;
        }
      }
      this.#node.step(m);
    }
    this.#scheduleDrain();
  }

  #scheduleDrain(): void {
    if (this.#drainScheduled || this.#closed) return;
    this.#drainScheduled = true;
    // A macrotask, not a microtask: requests that arrive in the same turn join this batch.
    this.#io.timers.nextTurn(() => {
      this.#drainScheduled = false;
      this.#drain();
    });
  }

  #drain(): void {
    if (this.#draining || this.#closed) return;
    this.#draining = true;
    try {
      // Bounded, so that no input can keep the event loop from serving anything else.
      for (let i = 0; i < DRAIN_BATCHES_MAX && this.#node.hasReady(); i++) {
        this.counters.readyBatches++;
        this.#loop.handle(this.#node.takeReady());
        this.#serveReadsApplied();
      }
      this.#afterDrain();
      if (this.#node.hasReady()) this.#scheduleDrain();
    } catch (e) {
      this.#die(e as Error);
    } finally {
      this.#draining = false;
    }
  }

  /** Replaces the store with a snapshot installed from the leader (§7). */
  #restore(snapshot: Snapshot): void {
    this.#store = decodeStoreSnapshot(snapshot.data);
    const context = snapshot.meta.context;
    if (context !== undefined) {
      try {
        if (this.#members.adoptSnapshotContext(context)) this.#linkMembers(snapshot.meta);
        else this.logEvent("snapshot-members-unreadable", { index: snapshot.meta.index });
      } catch (err) {
        this.logEvent("members-save-failed", { error: (err as Error).message });
      }
    }
    this.#snapshotBytesBase = { index: snapshot.meta.index, appliedBytes: this.#appliedBytes };
    this.#appliedSinceNotify = true;
    this.logEvent("snapshot-installed", {
      index: snapshot.meta.index,
      term: snapshot.meta.term,
      bytes: snapshot.data.length,
      from: this.#node.leaderId ?? null,
    });
  }

  /**
   * Points the peer links at the members a snapshot's configuration lists, as the member table now
   * records them, and drops the links of members it removed: a snapshot installed past a member's
   * `add` is the only news this node gets of that member's address.
   */
  #linkMembers(meta: Snapshot["meta"]): void {
    for (const id of [...meta.voters, ...(meta.learners ?? [])]) {
      const url = this.#members.infoOf(id).peerUrl;
      if (id !== this.nodeId && url !== undefined) {
        this.#transport?.addPeer(id, addressOfPeerUrl(url));
      }
    }
    for (const [id] of this.#transport?.peerInfo ?? []) {
      if (this.#members.isRemoved(id)) this.#transport?.removePeer(id);
    }
  }

  /** Applies one committed entry and settles the proposal waiting for its index, if any. */
  #apply(e: RaftLogEntry): void {
    this.#appliedSinceNotify = true;
    let result: ApplyResult | undefined;
    if (e.kind === "command") result = this.store.apply(e.command, e.index);
    else this.store.applyNoop(e.index);
    if (e.kind === "config") this.#applyConfig(e);
    else {
      const replaced = this.#confWaiters.get(e.index);
      if (replaced !== undefined) {
        this.#confWaiters.delete(e.index);
        replaced.reject(
          new HttpError(503, `Leadership changed; entry ${e.index} was replaced, retry`, 14),
        );
      }
    }
    this.#appliedBytes += e.command.byteLength;
    const waiter = this.#proposals.get(e.index);
    if (waiter === undefined) return;
    this.#proposals.delete(e.index);
    this.#proposalBytesPending -= waiter.bytes;
    if (waiter.term === e.term && result !== undefined) waiter.resolve(result);
    else {
      this.counters.proposalsFailed++;
      // Another leader's entry took the index: ours was never committed.
      waiter.reject(
        new HttpError(503, `Leadership changed; entry ${e.index} was replaced, retry`, 14),
      );
    }
  }

  /** A committed membership change: the member table, the peer links, this node's own fate. */
  #applyConfig(e: RaftLogEntry): void {
    const change = decodeConfChange(e.command);
    try {
      this.#members.apply(change);
    } catch (err) {
      this.logEvent("members-save-failed", { error: (err as Error).message });
    }
    const info: MemberInfo | undefined = decodeMemberContext(change.context);
    if (change.type === "remove") {
      this.#transport?.removePeer(change.node);
    } else if (info?.peerUrl !== undefined && change.node !== this.nodeId) {
      this.#transport?.addPeer(change.node, addressOfPeerUrl(info.peerUrl));
    }
    this.logEvent("membership-changed", {
      change: `${change.type} ${change.node}`,
      index: e.index,
      voters: [...this.#node.membershipAt(Math.max(e.index, this.#node.log.snapshotIndex)).voters],
      learners: [...this.#node.learners],
    });
    const waiter = this.#confWaiters.get(e.index);
    if (waiter !== undefined) {
      this.#confWaiters.delete(e.index);
      if (waiter.term === e.term) waiter.resolve();
      else {
        waiter.reject(
          new HttpError(503, `Leadership changed; entry ${e.index} was replaced, retry`, 14),
        );
      }
    }
    if (change.type === "remove" && change.node === this.nodeId) {
      this.#removed(`membership change at index ${e.index}`);
    }
  }

  /** A read whose index is known: served once the store has applied up to it. */
  #readState(r: ReadState): void {
    const waiter = this.#reads.get(r.readId);
    if (waiter === undefined) return;
    this.#reads.delete(r.readId);
    if (!r.ok) {
      waiter.reject(new ReadRefused(r.reason ?? "the leader refused the read"));
    } else if (this.store.appliedIndex >= r.readIndex || this.#readBeforeApply) {
      waiter.resolve();
    } else {
      this.#readsWaitingApply.push({ index: r.readIndex, resolve: waiter.resolve });
    }
  }

  /** Serves the reads that waited for the store to apply up to their index. */
  #serveReadsApplied(): void {
    if (this.#readsWaitingApply.length === 0) return;
    const applied = this.store.appliedIndex;
    const still: { index: number; resolve: () => void }[] = [];
    for (const w of this.#readsWaitingApply) {
      if (w.index <= applied) w.resolve();
      else still.push(w);
    }
    this.#readsWaitingApply = still;
  }

  /**
   * Asks `leader` again for each pending read that asked another node: the one asked may be dead,
   * and the read should not wait out its timeout while a new leader can confirm it now (§6.4).
   * Whichever answer comes first serves the read; a later one finds no waiter.
   */
  #reaskReads(leader: NodeId): void {
    let asked = false;
    for (const [readId, r] of this.#reads) {
      if (r.askedLeader === leader) continue;
      r.askedLeader = leader;
      this.#node.readIndex(readId);
      asked = true;
    }
    if (asked) this.#scheduleDrain();
  }

  #afterDrain(): void {
    if (this.#appliedSinceNotify) {
      // Watchers hear of what was applied after the batch, never inside it.
      this.#appliedSinceNotify = false;
      try {
        this.#hub.notify();
      } catch (e) {
        this.logEvent("watch-notify-failed", { error: (e as Error).message });
      }
    }
    const n = this.#node;
    const last = this.#last;
    if (n.term !== last.term || n.role !== last.role || n.leaderId !== last.leader) {
      if (n.leaderId !== last.leader && n.leaderId !== undefined) this.counters.leaderChanges++;
      const event = n.role === "Leader" && last.role !== "Leader"
        ? "became-leader"
        : n.role === "Candidate" && last.role !== "Candidate"
        ? "election-started"
        : n.role !== last.role
        ? "role-changed"
        : n.term !== last.term
        ? "term-changed"
        : "leader-changed";
      this.logEvent(event, {
        role: n.role,
        term: n.term,
        leader: n.leaderId ?? null,
        previousRole: last.role,
        previousTerm: last.term,
        commitIndex: n.commitIndex,
        lastLogIndex: n.log.lastIndex,
      });
      this.#last = { role: n.role, term: n.term, leader: n.leaderId };
      if (n.leaderId !== undefined) this.#reaskReads(n.leaderId);
      // A follower's pending proposals cannot finish here; they fail when their index is applied
      // with another entry, or time out.
    }
    if (
      this.#joinTarget !== undefined && n.leaderId !== undefined &&
      this.store.appliedIndex >= this.#joinTarget
    ) {
      this.logEvent("joined", { caughtUpTo: this.store.appliedIndex, term: n.term });
      this.#joinTarget = undefined;
    }
    this.#maybeSnapshot();
    if (this.#seenDirty) {
      this.#seenDirty = false;
      this.#io.saveSeen(this.#seenTerms);
    }
  }

  /**
   * Starts a snapshot every `snapshotEntries` applied entries so the log stays bounded (§7). It
   * is encoded in slices across event-loop turns and written off the loop (src/net/snapshotter.ts);
   * one at a time, abandoned if the node closes or installs a newer snapshot meanwhile.
   */
  #maybeSnapshot(): void {
    const next = this.#snapshotBytesNext;
    if (next !== undefined && this.#node.log.snapshotIndex >= next.index) {
      this.#snapshotBytesBase = next;
      this.#snapshotBytesNext = undefined;
    }
    // By bytes as well as by entries: 1,500 entries of 1 MiB must not wait for 100,000 entries.
    const byBytes = this.logBytes >= this.#snapshotBytes;
    const started = this.#snapshotter.maybeStart({
      node: this.#node,
      storage: this.#storage,
      store: this.store,
      everyEntries: byBytes ? 1 : this.#snapshotEntriesDue(),
      context: () => this.#members.snapshotContext(),
      closed: () => this.#closed,
      log: (event, fields) => this.logEvent(event, fields),
      fail: (e) => this.#die(e),
    });
    if (started === undefined) return;
    this.#snapshotBytesNext = { index: this.store.appliedIndex, appliedBytes: this.#appliedBytes };
    started.catch(() => {
      // Already handed to `fail`.
    });
  }

  /** Command bytes applied since the last snapshot (what `snapshotBytes` bounds). */
  get logBytes(): number {
    return this.#appliedBytes - this.#snapshotBytesBase.appliedBytes;
  }

  /** Proposals this leader waits to see applied, and their command bytes (load shedding). */
  get proposalsPending(): { count: number; bytes: number } {
    return { count: this.#proposals.size, bytes: this.#proposalBytesPending };
  }

  #snapshotEntriesDue(): number {
    const due = this.#snapshotDue;
    const at = this.#node.log.snapshotIndex;
    if (due.drawnAt !== at) {
      due.drawnAt = at;
      due.entries = staggeredSnapshotEntries(this.#snapshotEntries, this.#io.random);
    }
    return due.entries;
  }

  /** The snapshot being taken now, if any (it settles when written or abandoned). */
  get snapshotInFlight(): Promise<SnapshotOutcome> | undefined {
    return this.#snapshotter.inFlight;
  }

  #die(e: Error): void {
    this.#fatal = e;
    this.logEvent("fatal", { error: e.message, stack: e.stack ?? null });
    this.close();
  }
}

/**
 * Copies the leader's log for a node rebuilding itself: asks each peer in turn on the peer port
 * (only the leader sends it), with backoff between rounds, logging every failed attempt with its
 * reason. Throws, naming each peer's last error, when `timeoutMs` passes without a transfer.
 */
async function fetchLeaderLog(
  transport: PeerTransport,
  nodeId: NodeId,
  timeoutMs: number,
  emit: (event: string, fields: Record<string, unknown>) => void,
): Promise<LogTransfer> {
  const deadline = Date.now() + timeoutMs;
  const errors = new Map<NodeId, string>();
  let backoffMs = 100;
  while (true) {
    for (const peer of transport.peerInfo.keys()) {
      const receiver = new LogTransferReceiver(peer, nodeId);
      try {
        await transport.fetchLog(peer, (payload) => receiver.push(payload), timeoutMs);
        return receiver.result!;
      } catch (e) {
        const error = (e as Error).message;
        errors.set(peer, error);
        emit("join-attempt-failed", { peer, error });
      }
    }
    if (Date.now() + backoffMs > deadline) break;
    await new Promise((r) => setTimeout(r, backoffMs));
    backoffMs = Math.min(2000, backoffMs * 2);
  }
  const why = [...errors].map(([peer, error]) => `${peer}: ${error}`).join("; ");
  throw new Error(
    `Cannot rebuild "${nodeId}": no leader sent its log within ${timeoutMs} ms ` +
      `(--join-timeout-ms). Last errors: ${why}`,
  );
}

/** A read the leader refused or that lost its leader; the client may retry. */
export class ReadRefused extends Error {
  /** Makes an error. */
  constructor(message: string) {
    super(message);
    this.name = "ReadRefused";
  }
}

/** Messages a rebuilding node must not send: its campaign and its granted votes. */
function withheld(m: Message): boolean {
  switch (m.type) {
    case "PreVote":
    case "RequestVote":
      return true;
    case "PreVoteReply":
    case "RequestVoteReply":
      return m.granted;
    default:
      return false;
  }
}

/** Runs `bind`, retrying for a few seconds while the port is still held (a quick restart). */
async function retryWhileInUse<T>(bind: () => T | Promise<T>): Promise<T> {
  const deadline = Date.now() + 3000;
  while (true) {
    try {
      return await bind();
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse) || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Checks a configured client URL: `http(s)://host:port` and nothing else. */
export function checkClientUrl(url: string, what: string): void {
  let u: URL | undefined;
  try {
    u = new URL(url);
  } catch { /* reported below */ }
  if (
    u === undefined || (u.protocol !== "http:" && u.protocol !== "https:") || u.username !== "" ||
    u.password !== "" || u.pathname !== "/" || u.search !== "" || u.hash !== "" ||
    url.endsWith("/")
  ) {
    throw new StartupError(
      `${what} must be http://HOST:PORT or https://HOST:PORT: ${JSON.stringify(url)}`,
    );
  }
}

/** Logs a warning when the data directory is open to other users (etcd wants 0700 too). */
function warnIfShared(dir: string, emit: (event: string, fields: Record<string, unknown>) => void) {
  let mode: number | null;
  try {
    mode = Deno.statSync(dir).mode;
  } catch {
    return; // created below, 0700
  }
  if (mode !== null && (mode & 0o077) !== 0) {
    emit("data-dir-permissions", {
      warning: `Data directory "${dir}" is open to other users (mode ${
        (mode & 0o777).toString(8)
      }); its files hold every key and value. Run: chmod 700 "${dir}"`,
    });
  }
}

/** Builds the node and its store from what `storage` holds. */
function buildNode(
  nodeId: NodeId,
  bootstrap: Membership,
  storage: FileStorage,
  options: ServerOptions,
  io: ServerIo,
): { node: RaftNode; store: MetadataStore } {
  const persisted = storage.load();
  let store: MetadataStore;
  try {
    store = persisted.snapshot === undefined
      ? new MetadataStore()
      : decodeStoreSnapshot(persisted.snapshot.data);
  } catch (e) {
    throw new StartupError(
      `Cannot restore the snapshot in "${storage.dir}": ${(e as Error).message}`,
    );
  }
  const node = new RaftNode({
    id: nodeId,
    voters: [...bootstrap.voters],
    learners: [...bootstrap.learners],
    rng: new SeededRng(io.rngSeed),
    config: options.raftConfig,
    nowMs: Math.floor(io.clock.nowMs()),
    hardState: persisted.hardState,
    entries: persisted.entries,
    snapshot: persisted.snapshot,
    lastApplied: store.appliedIndex,
  });
  return { node, store };
}

function readSeen(dir: string): Map<NodeId, number> {
  try {
    const obj = JSON.parse(Deno.readTextFileSync(`${dir}/${SEEN_FILE}`));
    const out = new Map<NodeId, number>();
    for (const [k, v] of Object.entries(obj?.seenTerms ?? {})) {
      if (typeof v === "number" && Number.isSafeInteger(v)) out.set(k, v);
    }
    return out;
  } catch {
    return new Map();
  }
}

/** Records which peers have shown durable state (written atomically; rare: on term changes). */
function writeSeen(dir: string, seen: ReadonlyMap<NodeId, number>): void {
  const path = `${dir}/${SEEN_FILE}`;
  const temp = `${path}.tmp`;
  const f = Deno.openSync(temp, { write: true, create: true, truncate: true, mode: FILE_MODE });
  try {
    f.writeSync(
      new TextEncoder().encode(JSON.stringify({ seenTerms: Object.fromEntries(seen) }) + "\n"),
    );
    f.syncDataSync();
  } finally {
    f.close();
  }
  Deno.renameSync(temp, path);
}

/**
 * Binds the client port at once (a taken port fails the start before peers hear of this node) and
 * serves requests later: until `serve` is called, requests get a 503.
 */
function browserGuardOf(options: ServerOptions): BrowserGuard {
  return new BrowserGuard({
    corsOrigins: options.corsOrigins,
    hostWhitelist: options.hostWhitelist,
    listenHostname: options.clientListen?.hostname ?? "127.0.0.1",
  });
}

/** The HTTP clients for other nodes' https client URLs (replaced on a TLS reload). */
interface ForwardClients {
  current?: Deno.HttpClient;
  /** One without a connection pool, for requests that must not be sent twice. */
  unpooled?: Deno.HttpClient;
}

/** A client port that answers 503 until a handler is given. */
interface DeferredHttp {
  url: string;
  /** The TLS listener, when the port serves HTTPS (for reloading its certificate). */
  tlsListener?: TlsConnListener;
  serve: (handler: ClientHandler, fast?: Http1FastHandler) => { shutdown(): Promise<void> };
  close: () => void;
}

type ClientHandler = (
  req: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Promise<Response>;

async function startHttpDeferred(
  listen: Address,
  options: ServerOptions,
  emit: (event: string, fields: Record<string, unknown>) => void,
  tls: TlsMaterial | undefined,
): Promise<DeferredHttp> {
  let handler: ClientHandler | undefined;
  // The fast path for small etcd calls (src/net/http1.ts), once serving starts.
  let fast: Http1FastHandler | undefined;
  const serve = (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => {
    if (handler === undefined) {
      return Response.json({ error: "Node is starting", code: 14, message: "Node is starting" }, {
        status: 503,
      });
    }
    return handler(req, info);
  };
  let server: { addr: Deno.NetAddr; shutdown(): Promise<void> };
  let tlsListener: TlsConnListener | undefined;
  if (options.httpServer === "deno") {
    server = Deno.serve(
      { hostname: listen.hostname, port: listen.port, onListen: () => {} },
      serve,
    );
  } else {
    tlsListener = tls === undefined
      ? undefined
      : await (await import("./tls.ts")).TlsConnListener.listen(listen, tls, (remote, reason) => {
        emit("client-tls-refused", { remote, reason });
      });
    server = new Http1Server({
      listener: tlsListener,
      hostname: listen.hostname,
      port: listen.port,
      headTimeoutMs: options.httpHeadTimeoutMs,
      idleTimeoutMs: options.httpIdleTimeoutMs,
      connectionsMax: options.httpConnectionsMax,
      headBytesMax: options.httpHeadBytesMax,
      onError: (e) => emit("http-internal-error", { error: (e as Error)?.message ?? String(e) }),
      fast: {
        accepts: (method, target, bodyBytes) =>
          fast !== undefined && fast.accepts(method, target, bodyBytes),
        handle: (req) => fast!.handle(req),
      },
    }, serve);
  }
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    url: `${tls === undefined ? "http" : "https"}://${host}:${addr.port}`,
    tlsListener,
    serve: (h, f) => {
      handler = h;
      fast = f;
      return server;
    },
    close: () => {
      server.shutdown().catch(() => {});
    },
  };
}
