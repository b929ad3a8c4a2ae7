/**
 * The vocabulary of the consensus core: roles, log entries, messages, hard state and the
 * ready batch a host drains. Nothing here does I/O.
 *
 * @module
 */

/** A node's identity within a cluster, e.g. `"n1"`. */
export type NodeId = string;

/**
 * The role a node plays (the seed's `RaftRole`). `PreCandidate` is the PreVote phase: the node asks
 * whether it could win an election before it raises its term (Raft dissertation §9.6).
 */
export type RaftRole = "Follower" | "PreCandidate" | "Candidate" | "Leader";

/**
 * What a log entry carries: a client command, the no-op a new leader appends (Figure 8 fix), or a
 * membership change (src/raft/membership.ts), which takes effect on every node when appended.
 */
export type EntryKind = "command" | "noop" | "config";

/**
 * One entry of the replicated log (the seed's `RaftLogEntry(term, commandBytes)`), placed at
 * `index` (1-based; index 0 is the sentinel of term 0 and holds no entry).
 */
export interface RaftLogEntry {
  /** Position in the log, starting at 1. */
  readonly index: number;
  /** Term of the leader that created the entry. */
  readonly term: number;
  /** A command for the state machine, or a leader's no-op. */
  readonly kind: EntryKind;
  /** The command's bytes; empty for a no-op. */
  readonly command: Uint8Array;
}

/** What must reach stable storage before a vote or an append is acknowledged (Figure 2). */
export interface HardState {
  /** Latest term the node has seen. */
  readonly term: number;
  /** Candidate the node voted for in `term`, if any. */
  readonly votedFor: NodeId | undefined;
  /** Highest log index known to be committed (persisted so restarts need not rediscover it). */
  readonly commitIndex: number;
}

/** Ask for votes. Also used for PreVote, where `term` is the term the sender would campaign in. */
export interface VoteRequest {
  /** `"RequestVote"`, or `"PreVote"` for the round that does not raise the sender's term. */
  readonly type: "RequestVote" | "PreVote";
  /** Sender. */
  readonly from: NodeId;
  /** Receiver. */
  readonly to: NodeId;
  /** The candidate's term (for PreVote: the term it would use). */
  readonly term: number;
  /** Index of the candidate's last log entry (§5.4.1 up-to-date rule). */
  readonly lastLogIndex: number;
  /** Term of the candidate's last log entry. */
  readonly lastLogTerm: number;
  /**
   * A campaign the leader asked for (leadership transfer, TimeoutNow): voters grant it even while
   * they hear from that leader, as etcd's campaignTransfer.
   */
  readonly transfer?: boolean;
}

/** Answer to a `RequestVote` or `PreVote`. */
export interface VoteReply {
  /** Which request this answers. */
  readonly type: "RequestVoteReply" | "PreVoteReply";
  /** Sender. */
  readonly from: NodeId;
  /** Receiver. */
  readonly to: NodeId;
  /** The voter's term, or for a granted PreVote the term that was asked about. */
  readonly term: number;
  /**
   * Term of the request this answers. A reply to an older term's request says nothing about this
   * term (a late answer to a long-delayed message), so only `term` is taken from it.
   */
  readonly requestTerm: number;
  /** Whether the vote was given. */
  readonly granted: boolean;
}

/** Replicate entries, or with no entries, a heartbeat (Figure 2). */
export interface AppendEntries {
  /** Message kind. */
  readonly type: "AppendEntries";
  /** The leader. */
  readonly from: NodeId;
  /** Receiver. */
  readonly to: NodeId;
  /** The leader's term. */
  readonly term: number;
  /** Index of the entry just before `entries`. */
  readonly prevLogIndex: number;
  /** Term of the entry at `prevLogIndex`. */
  readonly prevLogTerm: number;
  /** Entries to store; empty for a heartbeat. */
  readonly entries: readonly RaftLogEntry[];
  /** The leader's commitIndex. */
  readonly leaderCommit: number;
  /** Read-confirmation round this message belongs to (ReadIndex, §6.4); 0 for none. */
  readonly readRound: number;
}

/** Answer to `AppendEntries`. */
export interface AppendEntriesReply {
  /** Message kind. */
  readonly type: "AppendEntriesReply";
  /** The follower. */
  readonly from: NodeId;
  /** The leader. */
  readonly to: NodeId;
  /** The follower's term. */
  readonly term: number;
  /**
   * Term of the request this answers. A reply to an older term's request says nothing about this
   * term (a late answer to a long-delayed message), so only `term` is taken from it.
   */
  readonly requestTerm: number;
  /** Whether the consistency check passed and the entries were stored. */
  readonly success: boolean;
  /** On success: the highest index known to match the leader's log (`prevLogIndex + entries`). */
  readonly matchIndex: number;
  /** On failure: the `prevLogIndex` that was rejected, so stale rejections can be recognised. */
  readonly rejectedIndex: number;
  /** On failure: the term of the follower's entry at `rejectedIndex`, or 0 if it has none. */
  readonly conflictTerm: number;
  /**
   * On failure: the first index of `conflictTerm` in the follower's log, or the follower's
   * `lastLogIndex + 1` when its log is too short. Lets the leader skip a whole term per round trip.
   */
  readonly conflictIndex: number;
  /** Echo of the request's `readRound`. */
  readonly readRound: number;
}

/** A follower asks the leader for a read index on behalf of a client (§6.4). */
export interface ReadIndexRequest {
  /** Message kind. */
  readonly type: "ReadIndex";
  /** The follower. */
  readonly from: NodeId;
  /** The leader. */
  readonly to: NodeId;
  /** The follower's term. */
  readonly term: number;
  /** Caller-chosen identifier of the read, echoed back. */
  readonly readId: string;
}

/** The leader's answer to a `ReadIndex` request. */
export interface ReadIndexReply {
  /** Message kind. */
  readonly type: "ReadIndexReply";
  /** The leader. */
  readonly from: NodeId;
  /** The follower. */
  readonly to: NodeId;
  /** The leader's term. */
  readonly term: number;
  /** Identifier of the read. */
  readonly readId: string;
  /** The index the follower must apply before it reads; 0 when refused. */
  readonly readIndex: number;
  /** Whether the leader could serve the read. */
  readonly ok: boolean;
}

/**
 * The leader tells a caught-up follower to campaign at once (leadership transfer, dissertation
 * §3.10): it starts an election without waiting for its timeout and without PreVote.
 */
export interface TimeoutNow {
  /** Message kind. */
  readonly type: "TimeoutNow";
  /** The leader. */
  readonly from: NodeId;
  /** The transfer's target. */
  readonly to: NodeId;
  /** The leader's term. */
  readonly term: number;
}

/** What a snapshot covers: the log up to `index` (of `term`) folded into the state machine. */
export interface SnapshotMeta {
  /** Last log index the snapshot includes. */
  readonly index: number;
  /** Term of the entry at `index`. */
  readonly term: number;
  /** The cluster's voters as of `index`. */
  readonly voters: readonly NodeId[];
  /** The cluster's learners (non-voting members) as of `index`; absent means none. */
  readonly learners?: readonly NodeId[];
  /**
   * Text the host attached when it took the snapshot, as of `index` (raftmeta's server: its member
   * table, so a node that installs the snapshot learns the URLs of members whose `add` entries
   * the snapshot replaced). The core carries it with the snapshot and never reads it.
   */
  readonly context?: string;
}

/** A state machine snapshot: its metadata and the serialized state. */
export interface Snapshot {
  /** What the snapshot covers. */
  readonly meta: SnapshotMeta;
  /** The serialized state machine. */
  readonly data: Uint8Array;
}

/**
 * One chunk of a snapshot the leader sends to a follower whose next entry it no longer holds
 * (InstallSnapshot, §7 and Figure 13). Chunks go one at a time, each acknowledged.
 */
export interface InstallSnapshot {
  /** Message kind. */
  readonly type: "InstallSnapshot";
  /** The leader. */
  readonly from: NodeId;
  /** Receiver. */
  readonly to: NodeId;
  /** The leader's term. */
  readonly term: number;
  /** What the snapshot covers. */
  readonly meta: SnapshotMeta;
  /** Size of the whole snapshot's data, in bytes. */
  readonly totalBytes: number;
  /** Byte offset of this chunk in the snapshot's data. */
  readonly offset: number;
  /** The chunk's bytes. */
  readonly data: Uint8Array;
  /** Whether this is the last chunk. */
  readonly done: boolean;
}

/** Answer to `InstallSnapshot`. */
export interface InstallSnapshotReply {
  /** Message kind. */
  readonly type: "InstallSnapshotReply";
  /** The follower. */
  readonly from: NodeId;
  /** The leader. */
  readonly to: NodeId;
  /** The follower's term. */
  readonly term: number;
  /**
   * Term of the request this answers. A reply to an older term's request says nothing about this
   * term (a late answer to a long-delayed message), so only `term` is taken from it.
   */
  readonly requestTerm: number;
  /** Index of the snapshot this answers. */
  readonly snapshotIndex: number;
  /** Bytes of the snapshot the follower holds so far: the offset of the next chunk it wants. */
  readonly offset: number;
  /**
   * Whether the follower is done with this snapshot: installed it, or needs none because its
   * commitIndex already covers it (rule 8). The leader then probes from `matchIndex + 1`.
   */
  readonly done: boolean;
  /** When done: the highest index known to match the leader's log (committed on the follower). */
  readonly matchIndex: number;
}

/** Every message the core sends or receives. */
export type Message =
  | VoteRequest
  | VoteReply
  | AppendEntries
  | AppendEntriesReply
  | InstallSnapshot
  | InstallSnapshotReply
  | ReadIndexRequest
  | ReadIndexReply
  | TimeoutNow;

/** The type names of all messages, e.g. `"AppendEntries"`. */
export type MessageType = Message["type"];

/** A read that may proceed once the node has applied `readIndex` (or failed, with a reason). */
export interface ReadState {
  /** Caller-chosen identifier of the read. */
  readonly readId: string;
  /** Apply up to this index, then read. Meaningless when `ok` is false. */
  readonly readIndex: number;
  /** Whether leadership was confirmed for the read. */
  readonly ok: boolean;
  /** Why the read was refused, when `ok` is false. */
  readonly reason?: string;
}

/**
 * What the host must do after feeding the node input, in this order: persist `snapshot`, then
 * `hardState` and `entries`, then send `messages`, then restore the state machine from `snapshot`,
 * then apply `committedEntries`, then serve `readStates`.
 */
export interface Ready {
  /**
   * A snapshot received from the leader: persist it (before the entries, which continue it) and
   * restore the state machine from it before applying `committedEntries` (§7).
   */
  readonly snapshot: Snapshot | undefined;
  /** New hard state to persist, if it changed. */
  readonly hardState: HardState | undefined;
  /**
   * Entries to persist. They start at `entries[0].index`; anything stored at or after that index
   * is replaced.
   */
  readonly entries: readonly RaftLogEntry[];
  /**
   * Messages to send: once the above is durable when `persistFirst` is true, or right away (in
   * parallel with the write) when it is false.
   */
  readonly messages: readonly Message[];
  /**
   * Whether `messages` must wait until `hardState` and `entries` are durable (rule 2). False only
   * for a leader whose batch leaves term and vote as they are on disk: its messages acknowledge
   * nothing, so it sends AppendEntries while it writes its own log (Raft dissertation §10.2.1) and
   * counts itself towards a commit only once the host reports the write durable with
   * `RaftNode.stableTo`.
   */
  readonly persistFirst: boolean;
  /**
   * Whether `hardState` and `entries` need an fsync (etcd's MustSync): true when entries were
   * appended or term or vote changed. A batch whose hard state moved only its commitIndex need
   * not be synced (a node that loses it relearns it from the leader); the host may let it ride
   * along with the next synced write.
   */
  readonly mustSync: boolean;
  /** Committed entries to apply, in order, each exactly once. */
  readonly committedEntries: readonly RaftLogEntry[];
  /** Reads whose index is now known. */
  readonly readStates: readonly ReadState[];
}

/** Tunables of a node. Times are in milliseconds of the injected clock. */
export interface RaftConfig {
  /** Lower bound of the randomized election timeout. Default 150. */
  readonly electionTimeoutMinMs: number;
  /** Upper bound (exclusive) of the randomized election timeout. Default 300. */
  readonly electionTimeoutMaxMs: number;
  /** Interval between heartbeats from a leader. Default 50. */
  readonly heartbeatIntervalMs: number;
  /** Ask "would you vote for me?" before raising the term (§9.6). Default true. */
  readonly preVote: boolean;
  /** Leader steps down when it has not heard from a quorum for an election timeout. Default true. */
  readonly checkQuorum: boolean;
  /**
   * A node that steps down to follower on seeing a higher term restarts its election timer.
   * Default true (etcd's choice). Figure 2 (and LogCabin, the paper's implementation) restarts it
   * only on an AppendEntries from the leader or a granted vote: with false, a node that refuses an
   * out-of-date candidate still stands when its own timer runs out (Figure 16's setup).
   */
  readonly resetElectionTimerOnStepDown: boolean;
  /** Most AppendEntries messages in flight to one follower. Default 16. */
  readonly inflightMessagesMax: number;
  /** Most entries in one AppendEntries. Default 256. */
  readonly entriesPerMessageMax: number;
  /** Most command bytes in one AppendEntries (at least one entry is always sent). Default 1 MiB. */
  readonly bytesPerMessageMax: number;
  /** Most client reads waiting for leadership confirmation. Default 4096. */
  readonly pendingReadsMax: number;
  /**
   * Entries kept in the log below a snapshot's index when it is compacted (§7), so a follower that
   * lags by fewer still gets entries instead of a whole snapshot. Default 1,000; at most 1,000,000.
   */
  readonly snapshotTrailingEntries: number;
  /** Most command bytes in that trailing window (it holds fewer entries when they are large). Default 16 MiB. */
  readonly snapshotTrailingBytesMax: number;
  /** Most snapshot bytes in one InstallSnapshot chunk. Default 1 MiB. */
  readonly snapshotChunkBytesMax: number;
  /**
   * A learner is caught up, and may be promoted to voter, when its match index is within this many
   * entries of the leader's last index (etcd refuses to promote a learner that is behind).
   * Default 100.
   */
  readonly learnerPromoteLagEntriesMax: number;
}

/** Upper bound of {@linkcode RaftConfig.snapshotTrailingEntries}: the log must stay bounded. */
export const SNAPSHOT_TRAILING_ENTRIES_MAX = 1_000_000;

/**
 * Named fault points: classic Raft bugs that tests switch on to prove the checks catch them (as
 * etcd's failpoints do). Production code never enables any.
 */
export type FaultPoint =
  /** Commit an entry of an earlier term by counting replicas (breaks Figure 8's rule). */
  | "commit-earlier-term-by-counting"
  /** Do not persist votedFor, so a restarted node may vote twice in one term. */
  | "forget-vote-on-restart"
  /** Truncate the log after any AppendEntries, even a stale or duplicate one. */
  | "truncate-on-stale-append"
  /** Serve a read without confirming leadership with a quorum. */
  | "read-without-quorum"
  /** Apply a retried write again instead of returning the remembered result (state machine). */
  | "apply-retry-twice"
  /** A leader counts its own entries towards a commit before they are durable on its disk. */
  | "leader-counts-unstable-self"
  /**
   * The host loop (src/host/loop.ts, the server's as well as the simulator's) sends every batch's
   * messages before persisting it: votes and acknowledgements of entries not yet durable.
   */
  | "send-before-persist"
  /**
   * A leader credits a reply to an older term's AppendEntries (its echoed read round, match and
   * activity) as if it answered this term: the stale read across terms of issue 14.
   */
  | "credit-stale-replies"
  /**
   * Membership: a configuration takes effect when its entry commits instead of when it is
   * appended, so a leader counts a quorum of the old voters for entries after a change.
   */
  | "config-on-commit"
  /** Membership: a leader appends a change while the previous one is still uncommitted. */
  | "two-changes-in-flight"
  /**
   * Membership: a new leader appends a change before it committed an entry of its own term (the
   * single-server bug of the dissertation's 2015 erratum).
   */
  | "config-before-term-commit";

/** The defaults: the Raft paper's timings, PreVote and CheckQuorum on. */
export const DEFAULT_CONFIG: RaftConfig = Object.freeze({
  electionTimeoutMinMs: 150,
  electionTimeoutMaxMs: 300,
  heartbeatIntervalMs: 50,
  preVote: true,
  checkQuorum: true,
  resetElectionTimerOnStepDown: true,
  inflightMessagesMax: 16,
  entriesPerMessageMax: 256,
  bytesPerMessageMax: 1024 * 1024,
  pendingReadsMax: 4096,
  snapshotTrailingEntries: 1000,
  snapshotTrailingBytesMax: 16 * 1024 * 1024,
  snapshotChunkBytesMax: 1024 * 1024,
  learnerPromoteLagEntriesMax: 100,
});

/** A source of randomness the host injects; the same seed gives the same sequence. */
export interface Rng {
  /** A float in [0, 1). */
  next(): number;
}

/** Thrown when a proposal or read is made on a node that is not the leader. */
export class NotLeaderError extends Error {
  /** The leader this node knows of, if any, so a client can retry there. */
  readonly leaderHint: NodeId | undefined;
  /** Creates the error. */
  constructor(nodeId: NodeId, leaderHint: NodeId | undefined) {
    super(
      `Node "${nodeId}" is not the leader` +
        (leaderHint === undefined ? " and knows no leader" : `; the leader is "${leaderHint}"`),
    );
    this.name = "NotLeaderError";
    this.leaderHint = leaderHint;
  }
}

/** Thrown when a proposal reaches a leader that is handing leadership over (transfer, §3.10). */
export class LeadershipTransferError extends Error {
  /** The node leadership is moving to: retry there once it leads. */
  readonly transferee: NodeId;
  /** Creates the error. */
  constructor(nodeId: NodeId, transferee: NodeId) {
    super(
      `Node "${nodeId}" is transferring leadership to "${transferee}" and refuses proposals ` +
        `until the transfer ends (at most an election timeout)`,
    );
    this.name = "LeadershipTransferError";
    this.transferee = transferee;
  }
}
