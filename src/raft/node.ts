/**
 * `RaftNode`: one server's consensus state machine. Inputs are method calls (`tick`, `step`,
 * `propose`, `readIndex`); outputs collect in a {@linkcode Ready} batch the host drains with
 * `takeReady()` and must handle in order: persist, send, apply. No I/O, no clock, no randomness of
 * its own — time comes in through `tick(nowMs)` and randomness through the injected `rng`.
 *
 * Each role's reaction to a message lives in its own method (`stepLeader`, `stepCandidate`,
 * `stepFollower`), and becoming a role is one method (`becomeLeader`, ...).
 *
 * @module
 */

import { invariant, RaftLog } from "./log.ts";
import { Progress } from "./progress.ts";
import { JointConfig, type QuorumConfig } from "./quorum.ts";
import {
  applyConfChange,
  type ConfChange,
  ConfigHistory,
  encodeConfChange,
  type Membership,
  membership,
} from "./membership.ts";
import {
  type AppendEntries,
  type AppendEntriesReply,
  DEFAULT_CONFIG,
  type EntryKind,
  type FaultPoint,
  type HardState,
  type InstallSnapshot,
  type InstallSnapshotReply,
  LeadershipTransferError,
  type Message,
  type NodeId,
  NotLeaderError,
  type RaftConfig,
  type RaftLogEntry,
  type RaftRole,
  type ReadIndexRequest,
  type ReadState,
  type Ready,
  type Rng,
  type Snapshot,
  SNAPSHOT_TRAILING_ENTRIES_MAX,
  type SnapshotMeta,
  type TimeoutNow,
  type VoteReply,
  type VoteRequest,
} from "./types.ts";

/** How to create a node, fresh or restarted from what its storage kept. */
export interface RaftNodeOptions {
  /** This node's id. */
  readonly id: NodeId;
  /**
   * The bootstrap voters: the configuration at index 0, before any membership change in the log.
   * Every node of a cluster is given the same ones; a node added later need not be among them (it
   * learns its membership from the log or a snapshot). Ignored when `snapshot` is given (its
   * metadata carries the configuration).
   */
  readonly voters: readonly NodeId[];
  /** The bootstrap learners (non-voting members). Default none. */
  readonly learners?: readonly NodeId[];
  /** Randomness for election timeouts. */
  readonly rng: Rng;
  /** Overrides of {@linkcode DEFAULT_CONFIG}. */
  readonly config?: Partial<RaftConfig>;
  /** The clock reading at creation. Default 0. */
  readonly nowMs?: number;
  /** Persisted hard state to restart from. */
  readonly hardState?: HardState;
  /**
   * Persisted log entries to restart from: starting at index 1, or with `snapshot` at or before
   * its index + 1 (a trailing window).
   */
  readonly entries?: readonly RaftLogEntry[];
  /** The newest persisted snapshot to restart from; the host restores its state machine from it. */
  readonly snapshot?: Snapshot;
  /** Fault points to switch on (tests only; see {@linkcode FaultPoint}). */
  readonly faultPoints?: ReadonlySet<FaultPoint>;
  /**
   * Index the state machine has already applied. Default: the snapshot's index, or 0 for an
   * empty state machine.
   */
  readonly lastApplied?: number;
}

/** A snapshot of a node's state for tables and checks. */
export interface NodeStatus {
  /** Node id. */
  readonly id: NodeId;
  /** Current role. */
  readonly role: RaftRole;
  /** Current term. */
  readonly term: number;
  /** Vote given in the current term. */
  readonly votedFor: NodeId | undefined;
  /** Leader known in the current term. */
  readonly leaderId: NodeId | undefined;
  /** Index of the last log entry. */
  readonly lastLogIndex: number;
  /** Term of the last log entry. */
  readonly lastLogTerm: number;
  /** Highest index known committed. */
  readonly commitIndex: number;
  /** Highest index handed to the host to apply. */
  readonly lastApplied: number;
  /** Voters of the configuration in force (the newest in the log), sorted. */
  readonly voters: readonly NodeId[];
  /** Learners of the configuration in force, sorted. */
  readonly learners: readonly NodeId[];
  /** Index of the entry that made that configuration (0: bootstrap; a snapshot's index). */
  readonly configIndex: number;
  /** On a leader: the node leadership is being transferred to, if any. */
  readonly transferee: NodeId | undefined;
  /** On a leader: each follower's replication progress. */
  readonly progress: ReadonlyMap<
    NodeId,
    { readonly matchIndex: number; readonly nextIndex: number; readonly state: string }
  >;
}

interface PendingRead {
  readonly readId: string;
  /** Follower that asked, or undefined for a read on this node. */
  readonly from: NodeId | undefined;
  /** The commit index when the read arrived (0 until this term has committed an entry). */
  readIndex: number;
  /** Confirmation round; 0 until the read is waiting on a round. */
  round: number;
}

/** A snapshot being received in chunks from the leader of `leaderTerm`. */
interface IncomingSnapshot {
  readonly leaderTerm: number;
  readonly meta: Snapshot["meta"];
  readonly totalBytes: number;
  readonly chunks: Uint8Array[];
  bytes: number;
}

/** Heartbeats without an acknowledgement after which a snapshot chunk is sent again. */
const SNAPSHOT_RESEND_HEARTBEATS = 2;

/** Most uncommitted entries a leader accepts before refusing proposals (a bound on memory). */
const UNCOMMITTED_ENTRIES_MAX = 65536;

/** One Raft server (the seed's `RaftNode`, with `LeaderElection` folded in). */
export class RaftNode {
  /** This node's id. */
  readonly id: NodeId;
  /** The effective configuration. */
  readonly config: RaftConfig;
  /** The log. Read it freely; only the node changes it. */
  readonly log: RaftLog;

  #rng: Rng;
  #faults: ReadonlySet<FaultPoint>;
  #role: RaftRole = "Follower";
  #term = 0;
  #votedFor: NodeId | undefined;
  /** A candidate outside our configuration whose PreVote we granted, and for which term. */
  #preVoteGrantedToOutsider: { readonly id: NodeId; readonly term: number } | undefined;
  #leaderId: NodeId | undefined;
  #commitIndex = 0;
  #lastApplied: number;

  #nowMs: number;
  #electionDeadlineMs = 0;
  #heartbeatDeadlineMs = 0;
  #checkQuorumDeadlineMs = 0;
  #leaderContactMs = -Infinity;

  #votes = new Map<NodeId, boolean>();
  #progress = new Map<NodeId, Progress>();
  #readRound = 0;
  #pendingReads: PendingRead[] = [];
  #commitToAnnounce = false;

  #messages: Message[] = [];
  #unstableFrom: number | undefined;
  #readStates: ReadState[] = [];
  #persisted: HardState;
  /**
   * The last index of this node's log that its host reported durable (`stableTo`). A leader
   * counts itself towards a commit only up to here: it sends entries before its own write is
   * durable (§10.2.1), and a leader that counted an entry it could still lose in a crash could
   * report a commit that a quorum does not hold.
   */
  #stableIndex: number;
  /** The newest snapshot: the state machine up to `log.snapshotIndex`, sent to lagging followers. */
  #snapshot: Snapshot | undefined;
  /** A snapshot installed from the leader that the host has yet to persist and restore. */
  #snapshotToInstall: Snapshot | undefined;
  #incoming: IncomingSnapshot | undefined;
  /** Cluster configurations of the log; the newest is in force (membership.ts). */
  #configs: ConfigHistory;
  #quorumOf = new WeakMap<Membership, QuorumConfig>();
  /** On a leader: the target of a leadership transfer in progress, and when it gives up. */
  #transferee: NodeId | undefined;
  #transferDeadlineMs = 0;

  /** Creates a follower; with `hardState`/`entries` it resumes from persisted state. */
  constructor(options: RaftNodeOptions) {
    this.id = options.id;
    invariant(
      new Set(options.voters).size === options.voters.length,
      () => `voters must be distinct: ${options.voters.join(",")}`,
    );
    this.config = { ...DEFAULT_CONFIG, ...options.config };
    validateConfig(this.config);
    this.#rng = options.rng;
    this.#faults = options.faultPoints ?? new Set();
    this.#nowMs = options.nowMs ?? 0;
    const snap = options.snapshot;
    this.#snapshot = snap;
    this.log = new RaftLog(
      options.entries ?? [],
      snap === undefined ? undefined : {
        snapshotIndex: snap.meta.index,
        snapshotTerm: snap.meta.term,
        trailingEntries: this.config.snapshotTrailingEntries,
        trailingBytesMax: this.config.snapshotTrailingBytesMax,
      },
    );
    const hs = options.hardState ?? { term: 0, votedFor: undefined, commitIndex: 0 };
    invariant(
      hs.commitIndex <= this.log.lastIndex,
      () =>
        `persisted commitIndex ${hs.commitIndex} is past the last log index ${this.log.lastIndex}`,
    );
    this.#term = hs.term;
    this.#votedFor = hs.votedFor;
    // A snapshot holds only committed entries (§7), so the commit index is at least its index.
    this.#commitIndex = Math.max(hs.commitIndex, this.log.snapshotIndex);
    this.#lastApplied = options.lastApplied ?? this.log.snapshotIndex;
    invariant(
      this.#lastApplied >= this.log.snapshotIndex && this.#lastApplied <= this.#commitIndex,
      () =>
        `lastApplied ${this.#lastApplied} must lie between the snapshot index ` +
        `${this.log.snapshotIndex} and commitIndex ${this.#commitIndex}`,
    );
    this.#persisted = hs;
    this.#stableIndex = this.log.lastIndex; // what it was given was read back from storage
    // The configuration: the snapshot's (or the bootstrap one), then every config entry after it.
    this.#configs = snap === undefined
      ? new ConfigHistory(membership(options.voters, options.learners ?? []), 0)
      : new ConfigHistory(membershipOfMeta(snap.meta), snap.meta.index);
    this.#configs.appended(this.log.slice(this.log.snapshotIndex + 1, this.log.lastIndex + 1));
    this.#resetElectionTimer();
  }

  // ---- Accessors -------------------------------------------------------------------------------

  /** Current role. */
  get role(): RaftRole {
    return this.#role;
  }
  /** Current term. */
  get term(): number {
    return this.#term;
  }
  /** Vote given in the current term, if any. */
  get votedFor(): NodeId | undefined {
    return this.#votedFor;
  }
  /** Leader known in the current term, if any. */
  get leaderId(): NodeId | undefined {
    return this.#leaderId;
  }
  /** Highest log index known to be committed. */
  get commitIndex(): number {
    return this.#commitIndex;
  }
  /** Highest index handed to the host to apply. */
  get lastApplied(): number {
    return this.#lastApplied;
  }
  /** The clock reading of the latest `tick`. */
  get nowMs(): number {
    return this.#nowMs;
  }
  /** The newest snapshot the node holds (taken by the host, or installed from the leader). */
  get snapshot(): Snapshot | undefined {
    return this.#snapshot;
  }
  /** Voters of the configuration in force (the newest in the log, committed or not), sorted. */
  get voters(): readonly NodeId[] {
    return this.#configs.current.voters;
  }
  /** Learners of the configuration in force, sorted. */
  get learners(): readonly NodeId[] {
    return this.#configs.current.learners;
  }
  /** The configuration in force: voters and learners. */
  get membership(): Membership {
    return this.#configs.current;
  }
  /**
   * The configuration in force at `index`, for snapshot metadata: `index` must not be below the
   * log's snapshot index.
   */
  membershipAt(index: number): Membership {
    invariant(
      index >= this.log.snapshotIndex,
      () => `configuration at ${index} is compacted (snapshot index ${this.log.snapshotIndex})`,
    );
    return this.#configs.at(index);
  }
  /** The leadership transfer in progress on this leader, if any. */
  get transferee(): NodeId | undefined {
    return this.#transferee;
  }
  /** The hard state as it stands now (persisted or about to be). */
  get hardState(): HardState {
    return { term: this.#term, votedFor: this.#votedFor, commitIndex: this.#commitIndex };
  }

  /** The earliest clock reading at which `tick` has work to do. */
  nextDeadlineMs(): number {
    if (this.#role === "Leader") {
      const transferMs = this.#transferee === undefined ? Infinity : this.#transferDeadlineMs;
      return this.config.checkQuorum
        ? Math.min(this.#heartbeatDeadlineMs, this.#checkQuorumDeadlineMs, transferMs)
        : Math.min(this.#heartbeatDeadlineMs, transferMs);
    }
    return this.#electionDeadlineMs;
  }

  /** A copy of the node's state for tables and checks. */
  status(): NodeStatus {
    const progress = new Map<
      NodeId,
      { matchIndex: number; nextIndex: number; state: string }
    >();
    for (const [id, pr] of this.#progress) {
      progress.set(id, { matchIndex: pr.matchIndex, nextIndex: pr.nextIndex, state: pr.state });
    }
    return {
      id: this.id,
      role: this.#role,
      term: this.#term,
      votedFor: this.#votedFor,
      leaderId: this.#leaderId,
      lastLogIndex: this.log.lastIndex,
      lastLogTerm: this.log.lastTerm,
      commitIndex: this.#commitIndex,
      lastApplied: this.#lastApplied,
      voters: this.voters,
      learners: this.learners,
      configIndex: this.#configs.currentIndex,
      transferee: this.#transferee,
      progress,
    };
  }

  // ---- Inputs ----------------------------------------------------------------------------------

  /** Moves the node's clock to `nowMs` and fires any timer that is due. */
  tick(nowMs: number): void {
    invariant(nowMs >= this.#nowMs, () => `clock went backwards: ${nowMs} < ${this.#nowMs}`);
    this.#nowMs = nowMs;
    if (this.#role === "Leader") {
      // A transfer that has not produced a new leader within an election timeout is abandoned.
      if (this.#transferee !== undefined && nowMs >= this.#transferDeadlineMs) {
        this.#transferee = undefined;
      }
      if (this.config.checkQuorum && nowMs >= this.#checkQuorumDeadlineMs) {
        this.#checkQuorumDeadlineMs = nowMs + this.config.electionTimeoutMaxMs;
        if (!this.#quorumActive()) {
          this.#becomeFollower(this.#term, undefined);
          return;
        }
      }
      if (nowMs >= this.#heartbeatDeadlineMs) {
        this.#heartbeatDeadlineMs = nowMs + this.config.heartbeatIntervalMs;
        this.#broadcastHeartbeat();
      }
    } else if (nowMs >= this.#electionDeadlineMs) {
      // Learners, and nodes outside the configuration (removed, or added but not yet told), never
      // campaign: they would only disturb the voters.
      if (this.#isVoter()) this.#campaign();
      else this.#resetElectionTimer();
    }
  }

  /** Feeds one message received from a peer. */
  step(m: Message): void {
    if (m.to !== this.id || m.from === this.id) return;
    // A leader's messages are taken from anyone (a node may not know yet that the sender joined);
    // anything else only from a member of our configuration (a removed node cannot disrupt), but
    // for a candidate our log has not told about yet (dissertation §4.1): without our vote it may
    // have no quorum. Its PreVote is answered while no leader's lease holds (it never raises our
    // term); its RequestVote only for the term whose PreVote we granted, so a removed node, whose
    // log lacks its removal and which we refuse at PreVote, never moves our term.
    const leaderMessage = m.type === "AppendEntries" || m.type === "InstallSnapshot" ||
      m.type === "TimeoutNow";
    if (!leaderMessage && !this.#isMember(m.from)) {
      const g = this.#preVoteGrantedToOutsider;
      const outsiderVote = (m.type === "PreVote" && !this.#inLeaderLease()) ||
        (m.type === "RequestVote" && g !== undefined && g.id === m.from && g.term === m.term);
      if (!outsiderVote) return;
    }
    if (m.term > this.#term) {
      // Dissertation §4.2.3: while a live leader's lease holds, a vote request of a higher term
      // comes from a node that was cut off; ignored, it cannot depose the leader or raise our
      // term. A campaign the leader asked for (leadership transfer) is exempt, as etcd's is.
      if (
        m.type === "RequestVote" && m.transfer !== true && this.config.checkQuorum &&
        this.#inLeaderLease()
      ) return;
      // A PreVote, or a granted answer to ours, carries a future term without raising ours (§9.6).
      const futureTermOnly = m.type === "PreVote" || (m.type === "PreVoteReply" && m.granted);
      if (!futureTermOnly) {
        const fromLeader = m.type === "AppendEntries" || m.type === "InstallSnapshot";
        this.#becomeFollower(m.term, fromLeader ? m.from : undefined);
      }
    } else if (m.term < this.#term) {
      this.#answerStale(m);
      return;
    }

    switch (m.type) {
      case "PreVote":
        return this.#handlePreVote(m);
      case "RequestVote":
        return this.#handleRequestVote(m);
      case "ReadIndexReply":
        if (m.to === this.id) {
          this.#readStates.push(
            m.ok ? { readId: m.readId, readIndex: m.readIndex, ok: true } : {
              readId: m.readId,
              readIndex: 0,
              ok: false,
              reason: "the leader refused the read",
            },
          );
        }
        return;
    }
    switch (this.#role) {
      case "Leader":
        return this.#stepLeader(m);
      case "Candidate":
      case "PreCandidate":
        return this.#stepCandidate(m);
      case "Follower":
        return this.#stepFollower(m);
    }
  }

  /**
   * Appends a command to the leader's log. It is committed once a quorum stores it; the result
   * arrives through `committedEntries`. Throws {@linkcode NotLeaderError} on a non-leader.
   */
  propose(command: Uint8Array, kind: EntryKind = "command"): { index: number; term: number } {
    if (this.#role !== "Leader") throw new NotLeaderError(this.id, this.#leaderId);
    invariant(kind !== "config", () => "membership changes go through proposeConfChange");
    if (this.#transferee !== undefined) {
      throw new LeadershipTransferError(this.id, this.#transferee);
    }
    if (this.log.lastIndex - this.#commitIndex >= UNCOMMITTED_ENTRIES_MAX) {
      throw new Error(
        `Node "${this.id}" has ${UNCOMMITTED_ENTRIES_MAX} uncommitted entries; retry later`,
      );
    }
    const entry: RaftLogEntry = { index: this.log.lastIndex + 1, term: this.#term, kind, command };
    this.#appendLocal([entry]);
    this.#maybeCommit();
    return { index: entry.index, term: entry.term };
  }

  /**
   * Proposes a membership change (one server at a time, dissertation §4.1). It takes effect on
   * each node as soon as its entry is appended; the result arrives through `committedEntries`
   * like any entry. Refused (with an error saying why) on a non-leader, during a leadership
   * transfer, before this leader has committed an entry of its term, while an earlier change is
   * uncommitted, when the change does not fit the configuration, and when promoting a learner more
   * than `learnerPromoteLagEntriesMax` entries behind.
   */
  proposeConfChange(change: ConfChange): { index: number; term: number } {
    if (this.#role !== "Leader") throw new NotLeaderError(this.id, this.#leaderId);
    if (this.#transferee !== undefined) {
      throw new LeadershipTransferError(this.id, this.#transferee);
    }
    // The 2015 erratum: a new leader may hold an uncommitted change of an earlier leader; a change
    // of its own on top could make configurations two servers apart. Its term's first commit
    // settles the log before it.
    if (
      this.log.term(this.#commitIndex) !== this.#term &&
      !this.#faults.has("config-before-term-commit")
    ) {
      throw new Error(
        `Node "${this.id}" has not yet committed an entry of its term ${this.#term}; ` +
          `retry the membership change shortly`,
      );
    }
    const pending = this.#configs.currentIndex;
    if (pending > this.#commitIndex && !this.#faults.has("two-changes-in-flight")) {
      throw new Error(
        `A membership change (entry ${pending}) is still uncommitted; one change at a time`,
      );
    }
    applyConfChange(this.membership, change); // throws when the change does not fit
    if (change.type === "promote") {
      const match = this.#progress.get(change.node)?.matchIndex ?? 0;
      const lag = this.log.lastIndex - match;
      if (lag > this.config.learnerPromoteLagEntriesMax) {
        throw new Error(
          `etcdserver: can only promote a learner member which is in sync with leader ` +
            `("${change.node}" is ${lag} entries behind; at most ` +
            `${this.config.learnerPromoteLagEntriesMax} allowed)`,
        );
      }
    }
    const entry: RaftLogEntry = {
      index: this.log.lastIndex + 1,
      term: this.#term,
      kind: "config",
      command: encodeConfChange(change),
    };
    this.#appendLocal([entry]);
    this.#maybeCommit();
    return { index: entry.index, term: entry.term };
  }

  /**
   * Hands leadership to the voter `target` (dissertation §3.10): the leader stops accepting
   * proposals, brings `target` up to date, then tells it to campaign at once (TimeoutNow). The
   * transfer ends when a new leader is elected, or is abandoned after an election timeout
   * (`electionTimeoutMaxMs`). Throws on a non-leader or when `target` is not another voter.
   */
  transferLeadership(target: NodeId): void {
    if (this.#role !== "Leader") throw new NotLeaderError(this.id, this.#leaderId);
    if (target === this.id) throw new Error(`Node "${target}" already leads`);
    if (!this.voters.includes(target)) {
      throw new Error(`Cannot transfer leadership to "${target}": not a voter`);
    }
    this.#transferee = target;
    this.#transferDeadlineMs = this.#nowMs + this.config.electionTimeoutMaxMs;
    this.#maybeSendTimeoutNow();
  }

  /** Sends TimeoutNow once the transfer's target holds the whole log. */
  #maybeSendTimeoutNow(): void {
    const target = this.#transferee;
    if (target === undefined) return;
    const pr = this.#progress.get(target);
    if (pr === undefined || pr.matchIndex !== this.log.lastIndex) return;
    const m: TimeoutNow = { type: "TimeoutNow", from: this.id, to: target, term: this.#term };
    this.#send(m);
  }

  /**
   * Asks for a linearizable read (ReadIndex, §6.4). When leadership is confirmed by a quorum after
   * this call, a {@linkcode ReadState} with `readId` appears in a ready batch; the host applies up
   * to its `readIndex` and then reads. A follower asks its leader.
   */
  readIndex(readId: string): void {
    if (this.#role === "Leader") {
      this.#leaderRead(readId, undefined);
    } else if (this.#role === "Follower" && this.#leaderId !== undefined) {
      this.#send({
        type: "ReadIndex",
        from: this.id,
        to: this.#leaderId,
        term: this.#term,
        readId,
      });
    } else {
      this.#readStates.push({
        readId,
        readIndex: 0,
        ok: false,
        reason: `node "${this.id}" knows no leader (role ${this.#role})`,
      });
    }
  }

  /**
   * Tells the node the state machine is captured in `snapshot`, up to `snapshot.meta.index`, which
   * the host has applied and persisted with `Storage.saveSnapshot` (§7). The log drops the entries
   * it covers, but the last `snapshotTrailingEntries`; followers that need older entries get the
   * snapshot instead. An index at or below the current snapshot's is ignored.
   */
  compact(snapshot: Snapshot): void {
    const { index, term } = snapshot.meta;
    if (index <= this.log.snapshotIndex) return;
    invariant(
      index <= this.#lastApplied,
      () => `snapshot at ${index} is past lastApplied ${this.#lastApplied}`,
    );
    invariant(
      this.log.term(index) === term,
      () => `snapshot ${index}:${term} does not match the log's term ${this.log.term(index)}`,
    );
    this.log.compact(
      index,
      term,
      this.config.snapshotTrailingEntries,
      this.config.snapshotTrailingBytesMax,
    );
    this.#configs.compacted(index);
    invariant(
      this.#unstableFrom === undefined || this.#unstableFrom > this.log.baseIndex,
      () => `compaction to ${index} would drop entries not yet persisted (${this.#unstableFrom})`,
    );
    this.#snapshot = snapshot;
  }

  // ---- Output ----------------------------------------------------------------------------------

  /** Whether `takeReady` would return anything. */
  hasReady(): boolean {
    if (this.#role === "Leader" && this.#hasAppendsToSend()) return true;
    return this.#messages.length > 0 || this.#unstableFrom !== undefined ||
      this.#snapshotToInstall !== undefined ||
      this.#readStates.length > 0 || this.#commitIndex > this.#lastApplied ||
      !sameHardState(this.#persisted, this.hardState);
  }

  /**
   * Drains the outputs. The host must persist `hardState` and `entries` before it sends
   * `messages`, and apply `committedEntries` in order.
   */
  takeReady(): Ready {
    if (this.#role === "Leader") this.#flushAppends();
    const hs = this.hardState;
    // A leader's messages acknowledge nothing, so they need not wait for its own write — unless
    // the batch also changes term or vote, which must be on disk before any message names them.
    const persistFirst = this.#role !== "Leader" || this.#snapshotToInstall !== undefined ||
      hs.term !== this.#persisted.term || hs.votedFor !== this.#persisted.votedFor;
    let hardState = sameHardState(this.#persisted, hs) ? undefined : hs;
    if (hardState !== undefined && this.#faults.has("forget-vote-on-restart")) {
      hardState = { ...hardState, votedFor: undefined };
    }
    const entries = this.#unstableFrom === undefined
      ? []
      : this.log.slice(this.#unstableFrom, this.log.lastIndex + 1);
    const committedEntries = this.#commitIndex > this.#lastApplied
      ? this.log.slice(this.#lastApplied + 1, this.#commitIndex + 1)
      : [];
    const ready: Ready = {
      snapshot: this.#snapshotToInstall,
      hardState,
      entries,
      messages: this.#messages,
      persistFirst,
      mustSync: entries.length > 0 || hs.term !== this.#persisted.term ||
        hs.votedFor !== this.#persisted.votedFor,
      committedEntries,
      readStates: this.#readStates,
    };
    this.#persisted = hs;
    this.#snapshotToInstall = undefined;
    this.#unstableFrom = undefined;
    this.#lastApplied = this.#commitIndex;
    this.#messages = [];
    this.#readStates = [];
    return ready;
  }

  // ---- Role changes ----------------------------------------------------------------------------

  #becomeFollower(term: number, leaderId: NodeId | undefined): void {
    invariant(term >= this.#term, () => `term would go backwards: ${term} < ${this.#term}`);
    if (term > this.#term) {
      this.#term = term;
      this.#votedFor = undefined;
    }
    this.#failPendingReads(`node "${this.id}" is no longer the leader`);
    this.#transferee = undefined;
    const wasLeader = this.#role === "Leader";
    this.#role = "Follower";
    this.#leaderId = leaderId;
    this.#progress.clear();
    // A leader had no election timer running; others keep theirs unless configured (Figure 2).
    if (wasLeader || this.config.resetElectionTimerOnStepDown) this.#resetElectionTimer();
  }

  #campaign(): void {
    if (this.config.preVote) this.#becomePreCandidate();
    else this.#becomeCandidate();
  }

  #becomePreCandidate(): void {
    this.#role = "PreCandidate";
    this.#leaderId = undefined; // a pre-candidate forgets the old leader (rule 7)
    this.#votes = new Map([[this.id, true]]);
    this.#resetElectionTimer();
    if (this.#won()) return this.#becomeCandidate();
    for (const to of this.#peers()) {
      this.#send({
        type: "PreVote",
        from: this.id,
        to,
        term: this.#term + 1,
        lastLogIndex: this.log.lastIndex,
        lastLogTerm: this.log.lastTerm,
      });
    }
  }

  /** `transfer`: the leader asked for this campaign (TimeoutNow), so voters ignore its lease. */
  #becomeCandidate(transfer = false): void {
    this.#role = "Candidate";
    this.#term += 1;
    this.#votedFor = this.id;
    this.#leaderId = undefined;
    this.#votes = new Map([[this.id, true]]);
    this.#resetElectionTimer();
    if (this.#won()) return this.#becomeLeader();
    for (const to of this.#peers()) {
      this.#send({
        type: "RequestVote",
        from: this.id,
        to,
        term: this.#term,
        lastLogIndex: this.log.lastIndex,
        lastLogTerm: this.log.lastTerm,
        ...(transfer ? { transfer: true } : {}),
      });
    }
  }

  #becomeLeader(): void {
    invariant(this.#role === "Candidate", () => `only a candidate becomes leader (${this.#role})`);
    this.#role = "Leader";
    this.#leaderId = this.id;
    this.#transferee = undefined;
    this.#progress.clear();
    this.#syncProgress();
    // Rounds count per term: a reply is credited only when it answers a request of this term.
    this.#readRound = 0;
    this.#pendingReads = [];
    this.#heartbeatDeadlineMs = this.#nowMs + this.config.heartbeatIntervalMs;
    this.#checkQuorumDeadlineMs = this.#nowMs + this.config.electionTimeoutMaxMs;
    // Figure 8: a leader may count replicas only for entries of its own term, so it appends a
    // no-op at once to be able to commit (and so learn the commit point) without waiting for clients.
    this.#appendLocal([{
      index: this.log.lastIndex + 1,
      term: this.#term,
      kind: "noop",
      command: new Uint8Array(0),
    }]);
    this.#maybeCommit();
  }

  // ---- Votes -----------------------------------------------------------------------------------

  #handlePreVote(m: VoteRequest): void {
    // Refuse while a live leader is known (rule 7): a rejoining node cannot disrupt a healthy term.
    const granted = m.term > this.#term && !this.#inLeaderLease() &&
      this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);
    if (granted && !this.#isMember(m.from)) {
      this.#preVoteGrantedToOutsider = { id: m.from, term: m.term };
    }
    this.#send({
      type: "PreVoteReply",
      from: this.id,
      to: m.from,
      term: granted ? m.term : this.#term,
      requestTerm: m.term,
      granted,
    });
  }

  /** Whether this node leads, or heard from its leader within the minimum election timeout. */
  #inLeaderLease(): boolean {
    return this.#role === "Leader" ||
      (this.#leaderId !== undefined &&
        this.#nowMs - this.#leaderContactMs < this.config.electionTimeoutMinMs);
  }

  #handleRequestVote(m: VoteRequest): void {
    invariant(m.term === this.#term, () => "RequestVote term must equal ours after the term check");
    // One vote per term (rule 2); a follower that already follows a leader in this term refuses.
    const canVote = this.#votedFor === m.from ||
      (this.#votedFor === undefined && this.#leaderId === undefined);
    const granted = canVote && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);
    if (granted) {
      this.#votedFor = m.from;
      this.#resetElectionTimer();
    }
    this.#send({
      type: "RequestVoteReply",
      from: this.id,
      to: m.from,
      term: this.#term,
      requestTerm: m.term,
      granted,
    });
  }

  #handleVoteReply(m: VoteReply): void {
    // Count only replies to the current round (rule 5): a PreVote round asks about term + 1. A
    // refusal of an older round's request must not undo a vote given in this one.
    if (this.#role === "PreCandidate") {
      if (m.type !== "PreVoteReply" || m.requestTerm !== this.#term + 1) return;
      if (m.granted && m.term !== this.#term + 1) return;
    } else {
      if (m.type !== "RequestVoteReply" || m.term !== this.#term) return;
      if (m.requestTerm !== this.#term) return;
    }
    this.#votes.set(m.from, m.granted);
    if (this.#won()) {
      if (this.#role === "PreCandidate") this.#becomeCandidate();
      else this.#becomeLeader();
    } else if (this.#lost()) {
      this.#becomeFollower(this.#term, undefined);
    }
  }

  #won(): boolean {
    return this.#quorum().voteResult(this.#votes) === "won";
  }

  #lost(): boolean {
    return this.#quorum().voteResult(this.#votes) === "lost";
  }

  // ---- Per-role message handling ---------------------------------------------------------------

  #stepFollower(m: Message): void {
    switch (m.type) {
      case "AppendEntries":
        this.#leaderId = m.from;
        this.#leaderContactMs = this.#nowMs;
        this.#resetElectionTimer();
        return this.#handleAppendEntries(m);
      case "InstallSnapshot":
        this.#leaderId = m.from;
        this.#leaderContactMs = this.#nowMs;
        this.#resetElectionTimer();
        return this.#handleInstallSnapshot(m);
      case "ReadIndex":
        return this.#refuseRead(m, `node "${this.id}" is not the leader`);
      case "TimeoutNow":
        // The leader hands over (§3.10): campaign now, without PreVote; a learner or a node
        // outside the configuration ignores it.
        if (this.#isVoter()) this.#becomeCandidate(true);
        return;
      default:
        return; // stale vote replies and the like
    }
  }

  #stepCandidate(m: Message): void {
    switch (m.type) {
      case "AppendEntries":
      case "InstallSnapshot":
        // A leader exists in our term (§5.2): give up and follow it.
        this.#becomeFollower(this.#term, m.from);
        return this.#stepFollower(m);
      case "PreVoteReply":
      case "RequestVoteReply":
        return this.#handleVoteReply(m);
      case "ReadIndex":
        return this.#refuseRead(m, `node "${this.id}" is not the leader`);
      default:
        return;
    }
  }

  #stepLeader(m: Message): void {
    switch (m.type) {
      case "AppendEntriesReply":
        return this.#handleAppendEntriesReply(m);
      case "InstallSnapshotReply":
        return this.#handleInstallSnapshotReply(m);
      case "ReadIndex": {
        const pr = this.#progress.get(m.from);
        if (pr !== undefined) pr.recentActive = true;
        return this.#leaderRead(m.readId, m.from);
      }
      case "AppendEntries":
      case "InstallSnapshot":
        invariant(false, () => `two leaders in term ${this.#term}: "${this.id}" and "${m.from}"`);
        return;
      default:
        return;
    }
  }

  /** A message from an older term: tell its sender our term so it steps down (§5.1). */
  #answerStale(m: Message): void {
    switch (m.type) {
      case "AppendEntries":
        this.#send({
          type: "AppendEntriesReply",
          from: this.id,
          to: m.from,
          term: this.#term,
          requestTerm: m.term,
          success: false,
          matchIndex: 0,
          rejectedIndex: m.prevLogIndex,
          conflictTerm: 0,
          conflictIndex: 0,
          // The read rounds of another term mean nothing to the leader of ours.
          readRound: this.#faults.has("credit-stale-replies") ? m.readRound : 0,
        });
        return;
      case "InstallSnapshot":
        this.#send({
          type: "InstallSnapshotReply",
          from: this.id,
          to: m.from,
          term: this.#term,
          requestTerm: m.term,
          snapshotIndex: m.meta.index,
          offset: 0,
          done: false,
          matchIndex: 0,
        });
        return;
      case "RequestVote":
      case "PreVote":
        this.#send({
          type: m.type === "PreVote" ? "PreVoteReply" : "RequestVoteReply",
          from: this.id,
          to: m.from,
          term: this.#term,
          requestTerm: m.term,
          granted: false,
        });
        return;
      case "ReadIndex":
        return this.#refuseRead(m, `stale term ${m.term}`);
      default:
        return;
    }
  }

  // ---- Replication: follower side --------------------------------------------------------------

  #handleAppendEntries(m: AppendEntries): void {
    const reply = (fields: Partial<AppendEntriesReply>) =>
      this.#send({
        type: "AppendEntriesReply",
        from: this.id,
        to: m.from,
        term: this.#term,
        requestTerm: m.term,
        success: false,
        matchIndex: 0,
        rejectedIndex: 0,
        conflictTerm: 0,
        conflictIndex: 0,
        readRound: m.readRound,
        ...fields,
      });

    // Entries up to our log's base are committed here (a snapshot holds only committed entries),
    // so they match the leader's (Leader Completeness, §5.4): skip them and check at the base.
    let prevLogIndex = m.prevLogIndex;
    let prevLogTerm = m.prevLogTerm;
    let entries = m.entries;
    const base = this.log.baseIndex;
    if (prevLogIndex < base) {
      entries = entries.slice(base - prevLogIndex);
      prevLogIndex = base;
      prevLogTerm = this.log.term(base)!;
    }
    const prevTerm = this.log.term(prevLogIndex);
    if (prevTerm !== prevLogTerm) {
      // The consistency check failed. Hint where our log might agree (§5.3, fast back-off).
      let conflictTerm = 0;
      let conflictIndex = this.log.lastIndex + 1;
      if (prevTerm !== undefined) {
        conflictTerm = prevTerm;
        conflictIndex = Math.max(
          this.log.firstIndexOfTermAt(prevLogIndex),
          this.#commitIndex + 1,
        );
      }
      return reply({ rejectedIndex: m.prevLogIndex, conflictTerm, conflictIndex });
    }

    // Rule 3: skip entries we already hold; truncate only at a real conflict, never a committed one.
    let toAppend: RaftLogEntry[] = [];
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const have = this.log.term(e.index);
      if (have === e.term) continue;
      if (have !== undefined) {
        invariant(
          e.index > this.#commitIndex,
          () => `would truncate committed entry ${e.index} (commitIndex ${this.#commitIndex})`,
        );
        this.log.truncateFrom(e.index);
        this.#configs.truncatedFrom(e.index); // back to the configuration before (§4.1)
        this.#stableIndex = Math.min(this.#stableIndex, e.index - 1);
      }
      toAppend = entries.slice(i) as RaftLogEntry[];
      break;
    }
    if (toAppend.length > 0) this.#appendLocal(toAppend);
    if (this.#faults.has("truncate-on-stale-append")) {
      const end = m.prevLogIndex + m.entries.length;
      if (end < this.log.lastIndex && end >= this.#commitIndex) {
        this.log.truncateFrom(end + 1);
        this.#configs.truncatedFrom(end + 1);
        this.#stableIndex = Math.min(this.#stableIndex, end);
      }
    }

    const lastNewIndex = prevLogIndex + entries.length;
    const commit = Math.min(m.leaderCommit, lastNewIndex);
    if (commit > this.#commitIndex) this.#commitIndex = commit;
    reply({ success: true, matchIndex: lastNewIndex });
  }

  /**
   * A chunk of the leader's snapshot (§7, Figure 13). Chunks must arrive in order; the reply names
   * the offset wanted next, so a lost or duplicated chunk costs one resend. Rule 8: a snapshot at
   * or below commitIndex is never installed — the reply says "done" so the leader moves on.
   */
  #handleInstallSnapshot(m: InstallSnapshot): void {
    const { index, term } = m.meta;
    const reply = (offset: number, done: boolean, matchIndex: number) =>
      this.#send({
        type: "InstallSnapshotReply",
        from: this.id,
        to: m.from,
        term: this.#term,
        requestTerm: m.term,
        snapshotIndex: index,
        offset,
        done,
        matchIndex,
      });
    if (index <= this.#commitIndex) {
      this.#incoming = undefined;
      return reply(0, true, this.#commitIndex);
    }
    let inc = this.#incoming;
    const same = inc !== undefined && inc.leaderTerm === this.#term &&
      inc.meta.index === index && inc.meta.term === term && inc.totalBytes === m.totalBytes;
    if (m.offset === 0) {
      inc = {
        leaderTerm: this.#term,
        meta: m.meta,
        totalBytes: m.totalBytes,
        chunks: [],
        bytes: 0,
      };
      this.#incoming = inc;
    } else if (!same || m.offset !== inc!.bytes) {
      // Out of order, or a snapshot we are not receiving: ask for what we want next.
      return reply(same ? inc!.bytes : 0, false, 0);
    }
    const end = m.offset + m.data.byteLength;
    if (end > m.totalBytes || m.done !== (end === m.totalBytes)) {
      this.#incoming = undefined;
      return reply(0, false, 0); // a malformed chunk: start over
    }
    inc!.chunks.push(m.data);
    inc!.bytes = end;
    if (!m.done) return reply(inc!.bytes, false, 0);
    this.#incoming = undefined;
    const data = new Uint8Array(inc!.totalBytes);
    let at = 0;
    for (const c of inc!.chunks) {
      data.set(c, at);
      at += c.byteLength;
    }
    this.#installSnapshot({ meta: m.meta, data });
    reply(m.totalBytes, true, index);
  }

  /**
   * Installs a complete snapshot newer than commitIndex. The log after it is kept only when the
   * entry at its index has its term (rule 8); otherwise the log restarts after it. The host
   * persists it and restores the state machine from it through the next ready batch.
   */
  #installSnapshot(snapshot: Snapshot): void {
    const { index } = snapshot.meta;
    invariant(index > this.#commitIndex, () => `snapshot ${index} is not past commitIndex`);
    const kept = this.log.installSnapshot(index, snapshot.meta.term);
    // The snapshot's configuration, then any config entry of the log kept after it.
    this.#configs = new ConfigHistory(membershipOfMeta(snapshot.meta), index);
    this.#configs.appended(this.log.slice(index + 1, this.log.lastIndex + 1));
    // The snapshot is saved before anything else of its batch (persistFirst), so it counts as
    // durable; a log it replaced is not.
    this.#stableIndex = kept ? Math.max(this.#stableIndex, index) : index;
    this.#snapshot = snapshot;
    this.#snapshotToInstall = snapshot;
    this.#commitIndex = index;
    this.#lastApplied = index;
    if (this.#unstableFrom !== undefined) {
      const from = Math.max(this.#unstableFrom, index + 1);
      this.#unstableFrom = kept && from <= this.log.lastIndex ? from : undefined;
    }
  }

  // ---- Replication: leader side ----------------------------------------------------------------

  #handleAppendEntriesReply(m: AppendEntriesReply): void {
    // A late answer to another term's request: its read round, match and hints are of that term,
    // and it shows no recent contact (CheckQuorum). Its term was handled in `step`.
    if (m.requestTerm !== this.#term && !this.#faults.has("credit-stale-replies")) return;
    const pr = this.#progress.get(m.from);
    if (pr === undefined) return; // from a member removed since

    pr.recentActive = true;
    if (m.readRound > pr.readRoundAcked) {
      pr.readRoundAcked = m.readRound;
      this.#confirmReads();
    }
    this.#handleAppendOutcome(m, pr);
    // Flow control: an answer to the heartbeat that asked after a long-waiting append, and that
    // append still unacknowledged: it or its answer was lost (replies come back in order).
    if (pr.state === "Replicate" && pr.stallRound !== 0 && m.readRound >= pr.stallRound) {
      if (pr.matchIndex < pr.stallIndex) pr.becomeProbe(pr.matchIndex + 1);
      else pr.stallRound = 0;
    }
    if (m.from === this.#transferee && this.#role === "Leader") this.#maybeSendTimeoutNow();
  }

  /** What a reply says about the follower's log: acknowledge, repair a lost log, or back off. */
  #handleAppendOutcome(m: AppendEntriesReply, pr: Progress): void {
    if (m.success) {
      if (m.readRound >= pr.lostLogRound) pr.lostLogRound = 0;
      // Within one term a success stays true, so even a late one may only raise matchIndex.
      const advanced = pr.acknowledge(m.matchIndex);
      // A new confirmation round marks where the stream starts (older rejections are stale).
      if (pr.state === "Probe" && m.matchIndex >= pr.matchIndex) {
        pr.becomeReplicate(++this.#readRound);
      }
      // A late success may show the follower caught up with entries after all: stop the snapshot.
      if (pr.state === "Snapshot" && pr.matchIndex >= this.log.baseIndex) {
        pr.becomeProbe(pr.matchIndex + 1);
      }
      if (advanced) this.#maybeCommit();
      return;
    }
    if (pr.state === "Snapshot") return; // a rejection from before the snapshot started
    // The follower says its log ends below matchIndex. Either the reply is stale (sent before the
    // entries reached it: rule 4, ignore) or it lost acknowledged entries in a restart (a damaged
    // disk) and would stay behind until a leader change. etcd's follower panics on a heartbeat's
    // commit past its log; here the leader repairs it, once the loss is proven by an answer to a
    // message sent after the suspicion arose (the same confirmation rounds as ReadIndex).
    if (m.conflictTerm === 0 && m.conflictIndex >= 1 && m.conflictIndex <= pr.matchIndex) {
      if (pr.lostLogRound !== 0 && m.readRound >= pr.lostLogRound) {
        pr.resetLostLog(Math.max(m.conflictIndex, 1));
      } else if (pr.lostLogRound === 0) {
        pr.lostLogRound = ++this.#readRound;
        // Or acknowledgements overtook this reply, and the append it rejects was discarded:
        // unless the round's answer shows that append acknowledged after all, re-probe then.
        const discarded = pr.state === "Replicate" && m.rejectedIndex >= pr.matchIndex &&
          m.readRound >= pr.replicateRound;
        if (discarded && pr.stallRound === 0) {
          pr.stallRound = pr.lostLogRound;
          pr.stallIndex = m.rejectedIndex + 1;
        }
        this.#sendAppend(m.from, pr, false);
      }
      return;
    }
    // Rule 4: a rejection of something we have moved past is stale and must not move us back. In
    // Replicate that is also a rejection of a message sent before the stream (re)started: on a
    // reordering network the follower rejects every message that overtook a missing one, and
    // each of those is news only once.
    const stale = pr.state === "Replicate"
      ? m.rejectedIndex <= pr.matchIndex || m.readRound < pr.replicateRound
      : m.rejectedIndex !== pr.nextIndex - 1;
    if (stale) return;
    let next = m.conflictIndex;
    if (m.conflictTerm > 0) {
      const last = this.log.lastIndexOfTerm(m.conflictTerm);
      if (last > 0) next = last + 1;
    }
    pr.becomeProbe(Math.min(next, m.rejectedIndex));
  }

  /**
   * A follower's answer to a snapshot chunk. "Done" means it holds the log up to `matchIndex`
   * (committed there, so matching ours): probe from the next index. Otherwise send from the offset
   * it wants. Replies to another snapshot than the one being sent are stale.
   */
  #handleInstallSnapshotReply(m: InstallSnapshotReply): void {
    if (m.requestTerm !== this.#term) return; // a late answer to another term's chunk
    const pr = this.#progress.get(m.from);
    if (pr === undefined) return; // from a member removed since
    pr.recentActive = true;
    const current = pr.state === "Snapshot" && pr.snapshot!.meta.index === m.snapshotIndex;
    if (m.done) {
      const advanced = pr.acknowledge(m.matchIndex);
      if (current) pr.becomeProbe(pr.matchIndex + 1);
      if (advanced) this.#maybeCommit();
      return;
    }
    if (!current || m.offset === pr.snapshotOffset) return;
    // Forward: the chunk arrived. Backward: the follower lost its partial copy; resend from there.
    pr.snapshotOffset = Math.min(m.offset, pr.snapshot!.data.byteLength);
    pr.snapshotInflight = false;
  }

  /** Whether the follower needs entries this log no longer holds: only a snapshot can help (§7). */
  #needsSnapshot(pr: Progress): boolean {
    return pr.state !== "Snapshot" && pr.nextIndex - 1 < this.log.baseIndex;
  }

  #startSnapshot(pr: Progress): void {
    invariant(this.#snapshot !== undefined, () => "the log is compacted but there is no snapshot");
    pr.becomeSnapshot(this.#snapshot);
  }

  #sendSnapshotChunk(peer: NodeId, pr: Progress): void {
    // Until the follower holds a byte of it, a newer snapshot replaces the one being sent.
    if (pr.snapshotOffset === 0) pr.snapshot = this.#snapshot;
    const s = pr.snapshot!;
    const total = s.data.byteLength;
    const end = Math.min(total, pr.snapshotOffset + this.config.snapshotChunkBytesMax);
    this.#send({
      type: "InstallSnapshot",
      from: this.id,
      to: peer,
      term: this.#term,
      meta: s.meta,
      totalBytes: total,
      offset: pr.snapshotOffset,
      data: s.data.subarray(pr.snapshotOffset, end),
      done: end === total,
    });
    pr.snapshotInflight = true;
    pr.snapshotHeartbeats = 0;
  }

  #hasAppendsToSend(): boolean {
    for (const pr of this.#progress.values()) {
      if (pr.state === "Snapshot" ? !pr.snapshotInflight : this.#needsSnapshot(pr)) return true;
      if (pr.nextIndex <= this.log.lastIndex && pr.canSend(this.config.inflightMessagesMax)) {
        return true;
      }
    }
    return this.#commitToAnnounce;
  }

  /** Sends what each follower's flow control allows; batches every proposal since the last flush. */
  #flushAppends(): void {
    for (const [peer, pr] of this.#progress) {
      if (this.#needsSnapshot(pr)) this.#startSnapshot(pr);
      if (pr.state === "Snapshot") {
        if (!pr.snapshotInflight) this.#sendSnapshotChunk(peer, pr);
        continue;
      }
      let sentAny = false;
      while (pr.nextIndex <= this.log.lastIndex && pr.canSend(this.config.inflightMessagesMax)) {
        this.#sendAppend(peer, pr, true);
        sentAny = true;
        if (pr.state === "Probe") break;
      }
      // Tell an up-to-date follower about a new commitIndex now rather than at the next heartbeat.
      if (this.#commitToAnnounce && !sentAny && pr.state === "Replicate") {
        this.#sendAppend(peer, pr, false);
      }
    }
    this.#commitToAnnounce = false;
  }

  #sendAppend(peer: NodeId, pr: Progress, withEntries: boolean): void {
    if (pr.state === "Snapshot") return; // nothing but chunks until the follower has it
    // Without entries: a streaming follower gets a beat at matchIndex, which always passes the
    // consistency check and carries the commitIndex; a probing one a beat at the probe, whose
    // answer either confirms the probe's position or rejects it with a hint — and so resumes it.
    const prevLogIndex = withEntries || pr.state === "Probe" ? pr.nextIndex - 1 : pr.matchIndex;
    const prevLogTerm = this.log.term(prevLogIndex);
    if (prevLogTerm === undefined) {
      // The follower is behind the compacted log (§7): the flush sends the snapshot.
      this.#startSnapshot(pr);
      return;
    }
    const entries = withEntries
      ? this.log.sliceBounded(
        pr.nextIndex,
        this.config.entriesPerMessageMax,
        this.config.bytesPerMessageMax,
      )
      : [];
    this.#send({
      type: "AppendEntries",
      from: this.id,
      to: peer,
      term: this.#term,
      prevLogIndex,
      prevLogTerm,
      entries,
      leaderCommit: this.#commitIndex,
      readRound: this.#readRound,
    });
    if (withEntries) pr.sent(prevLogIndex + entries.length);
  }

  #broadcastHeartbeat(): void {
    let round = 0; // a confirmation round, started only if some stream needs one
    for (const [peer, pr] of this.#progress) {
      if (pr.state === "Snapshot") {
        // A chunk unanswered for two heartbeats was probably lost: the flush sends it again.
        if (pr.snapshotInflight && ++pr.snapshotHeartbeats >= SNAPSHOT_RESEND_HEARTBEATS) {
          pr.snapshotInflight = false;
        }
        continue;
      }
      if (pr.state === "Replicate") {
        // An append in flight since the previous heartbeat may be lost, or only slow: this beat
        // asks, in a round of its own, and its answer decides (see #handleAppendEntriesReply).
        const oldest = pr.inflight.length > 0 ? pr.inflight[0] : 0;
        if (oldest !== 0 && oldest === pr.oldestInflightAtHeartbeat && pr.stallRound === 0) {
          if (round === 0) round = ++this.#readRound;
          pr.stallRound = round;
          pr.stallIndex = oldest;
        }
        pr.oldestInflightAtHeartbeat = oldest;
      }
      // A paused probe is not re-sent here: the beat's answer resumes it if it is still needed.
      this.#sendAppend(peer, pr, false);
    }
  }

  /**
   * The host reports that this node's log up to `index`, whose entry has `term`, is durable. Hosts
   * call it after every save of entries. A report for entries replaced since (the term at `index`
   * differs now) is ignored. On a leader this may commit entries: it counts itself only up to
   * the last index reported here.
   */
  stableTo(index: number, term: number): void {
    if (index <= this.#stableIndex || this.log.term(index) !== term) return;
    this.#stableIndex = index;
    if (this.#role === "Leader") this.#maybeCommit();
  }

  /** The last index of the log its host reported durable (see {@linkcode RaftNode.stableTo}). */
  get stableIndex(): number {
    return this.#stableIndex;
  }

  #maybeCommit(): void {
    const self = this.#faults.has("leader-counts-unstable-self")
      ? this.log.lastIndex
      : Math.min(this.#stableIndex, this.log.lastIndex);
    const index = this.#quorum().committedIndex((id) =>
      id === this.id ? self : this.#progress.get(id)?.matchIndex
    );
    // Figure 8: only an entry of the current term is committed by counting replicas.
    const countable = this.log.term(index) === this.#term ||
      this.#faults.has("commit-earlier-term-by-counting");
    if (index > this.#commitIndex && countable) {
      this.#commitIndex = index;
      this.#commitToAnnounce = this.#progress.size > 0;
      this.#startWaitingReads();
      // A leader the configuration no longer lists leads until that change commits (§4.2.2),
      // then tells the others the commit and steps down.
      if (!this.#isVoter() && this.#configs.currentIndex <= this.#commitIndex) {
        this.#flushAppends();
        this.#becomeFollower(this.#term, undefined);
      }
    }
  }

  #quorumActive(): boolean {
    const active = new Map<NodeId, boolean>([[this.id, true]]);
    for (const [id, pr] of this.#progress) {
      active.set(id, pr.recentActive);
      pr.recentActive = false;
    }
    return this.#quorum().voteResult(active) === "won";
  }

  // ---- Linearizable reads (ReadIndex, rule 6) --------------------------------------------------

  #leaderRead(readId: string, from: NodeId | undefined): void {
    if (this.#faults.has("read-without-quorum")) {
      if (from === undefined) {
        this.#readStates.push({ readId, readIndex: this.#commitIndex, ok: true });
      } else this.#replyRead(from, readId, this.#commitIndex, true);
      return;
    }
    if (this.#pendingReads.length >= this.config.pendingReadsMax) {
      const reason = `node "${this.id}" has ${this.config.pendingReadsMax} reads pending`;
      if (from === undefined) this.#readStates.push({ readId, readIndex: 0, ok: false, reason });
      else this.#replyRead(from, readId, 0, false);
      return;
    }
    this.#pendingReads.push({ readId, from, readIndex: 0, round: 0 });
    this.#startWaitingReads();
  }

  /** Gives waiting reads a read index and a confirmation round, once this term has committed. */
  #startWaitingReads(): void {
    if (this.log.term(this.#commitIndex) !== this.#term) return;
    let started = false;
    for (const r of this.#pendingReads) {
      if (r.round !== 0) continue;
      if (!started) {
        this.#readRound += 1;
        started = true;
      }
      r.readIndex = this.#commitIndex;
      r.round = this.#readRound;
    }
    if (!started) return;
    // Confirm leadership with a round that starts after these reads arrived; a leader that is the
    // only voter (its peers, if any, all learners) is a quorum by itself and answers at once.
    for (const [peer, pr] of this.#progress) this.#sendAppend(peer, pr, false);
    this.#confirmReads();
  }

  #confirmReads(): void {
    while (this.#pendingReads.length > 0) {
      const r = this.#pendingReads[0];
      if (r.round === 0) return;
      const acks = new Map<NodeId, boolean>([[this.id, true]]);
      for (const [id, pr] of this.#progress) acks.set(id, pr.readRoundAcked >= r.round);
      if (this.#quorum().voteResult(acks) !== "won") return;
      this.#pendingReads.shift();
      if (r.from === undefined) {
        this.#readStates.push({ readId: r.readId, readIndex: r.readIndex, ok: true });
      } else {
        this.#replyRead(r.from, r.readId, r.readIndex, true);
      }
    }
  }

  #failPendingReads(reason: string): void {
    for (const r of this.#pendingReads) {
      if (r.from === undefined) {
        this.#readStates.push({ readId: r.readId, readIndex: 0, ok: false, reason });
      } else this.#replyRead(r.from, r.readId, 0, false);
    }
    this.#pendingReads = [];
  }

  #refuseRead(m: ReadIndexRequest, _reason: string): void {
    this.#replyRead(m.from, m.readId, 0, false);
  }

  #replyRead(to: NodeId, readId: string, readIndex: number, ok: boolean): void {
    this.#send({
      type: "ReadIndexReply",
      from: this.id,
      to,
      term: this.#term,
      readId,
      readIndex,
      ok,
    });
  }

  // ---- Helpers ---------------------------------------------------------------------------------

  /** The other voters: whom a (pre-)candidate asks for votes. */
  #peers(): NodeId[] {
    return this.voters.filter((v) => v !== this.id);
  }

  #isVoter(): boolean {
    return this.#configs.current.voters.includes(this.id);
  }

  #isMember(id: NodeId): boolean {
    const m = this.#configs.current;
    return m.voters.includes(id) || m.learners.includes(id);
  }

  /**
   * The quorum rule in force: the newest configuration in the log (§4.1, a change takes effect
   * when appended). The fault point `config-on-commit` uses the committed one instead.
   */
  #quorum(): QuorumConfig {
    const m = this.#faults.has("config-on-commit")
      ? this.#configs.at(this.#commitIndex)
      : this.#configs.current;
    let q = this.#quorumOf.get(m);
    if (q === undefined) {
      q = new JointConfig(m.voters);
      this.#quorumOf.set(m, q);
    }
    return q;
  }

  /** A leader replicates to every member, voter or learner, and to no one else. */
  #syncProgress(): void {
    const m = this.#configs.current;
    const members = new Set([...m.voters, ...m.learners]);
    members.delete(this.id);
    for (const id of members) {
      if (!this.#progress.has(id)) this.#progress.set(id, new Progress(this.log.lastIndex + 1));
    }
    for (const id of [...this.#progress.keys()]) {
      if (!members.has(id)) this.#progress.delete(id);
    }
    if (this.#transferee !== undefined && !m.voters.includes(this.#transferee)) {
      this.#transferee = undefined;
    }
  }

  #send(m: Message): void {
    this.#messages.push(m);
  }

  #appendLocal(entries: readonly RaftLogEntry[]): void {
    if (entries.length === 0) return;
    const from = entries[0].index;
    this.log.append(entries);
    if (entries.some((e) => e.kind === "config")) {
      this.#configs.appended(entries);
      if (this.#role === "Leader") this.#syncProgress();
    }
    this.#unstableFrom = this.#unstableFrom === undefined
      ? from
      : Math.min(this.#unstableFrom, from);
  }

  #resetElectionTimer(): void {
    const { electionTimeoutMinMs: min, electionTimeoutMaxMs: max } = this.config;
    this.#electionDeadlineMs = this.#nowMs + min + Math.floor(this.#rng.next() * (max - min));
  }
}

/** The configuration a snapshot's metadata records. */
function membershipOfMeta(meta: SnapshotMeta): Membership {
  return membership(meta.voters, meta.learners ?? []);
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.votedFor === b.votedFor && a.commitIndex === b.commitIndex;
}

function validateConfig(c: RaftConfig): void {
  const positive = [
    "electionTimeoutMinMs",
    "heartbeatIntervalMs",
    "inflightMessagesMax",
    "entriesPerMessageMax",
    "bytesPerMessageMax",
    "pendingReadsMax",
    "snapshotChunkBytesMax",
    "snapshotTrailingBytesMax",
  ] as const;
  for (const k of positive) {
    if (!(Number.isFinite(c[k]) && c[k] > 0)) {
      throw new RangeError(`Config ${k} must be a positive number: ${c[k]}`);
    }
  }
  const trailing = c.snapshotTrailingEntries;
  if (
    !(Number.isSafeInteger(trailing) && trailing >= 0 && trailing <= SNAPSHOT_TRAILING_ENTRIES_MAX)
  ) {
    throw new RangeError(
      `Config snapshotTrailingEntries must be an integer from 0 to ${SNAPSHOT_TRAILING_ENTRIES_MAX}: ${trailing}`,
    );
  }
  const lag = c.learnerPromoteLagEntriesMax;
  if (!(Number.isSafeInteger(lag) && lag >= 0)) {
    throw new RangeError(`Config learnerPromoteLagEntriesMax must be an integer >= 0: ${lag}`);
  }
  if (!(c.electionTimeoutMaxMs >= c.electionTimeoutMinMs)) {
    throw new RangeError(
      `Config electionTimeoutMaxMs (${c.electionTimeoutMaxMs}) must be at least electionTimeoutMinMs (${c.electionTimeoutMinMs})`,
    );
  }
  if (!(c.heartbeatIntervalMs < c.electionTimeoutMinMs)) {
    throw new RangeError(
      `Config heartbeatIntervalMs (${c.heartbeatIntervalMs}) must be below electionTimeoutMinMs (${c.electionTimeoutMinMs})`,
    );
  }
}
