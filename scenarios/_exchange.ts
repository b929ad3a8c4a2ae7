/**
 * The exchange of a step: every message sent and delivered, every write to storage and every role
 * change, in the order they happened, each with the state of the node concerned at that moment.
 * Steps assert Figure 2's rules on it ("this AppendEntries was rejected, then nextIndex went back"),
 * so a claim is about what the nodes did, not only about where they ended up.
 *
 * @module
 */

import type { Cluster } from "../src/sim/cluster.ts";
import type { HardState, Message, NodeId, RaftRole } from "../src/raft/types.ts";

/** The messages of one type (a vote request's type is a union, so `Extract` would not do). */
export type MessageOf<T extends Message["type"]> = Message & { readonly type: T };

/** A node's state at one moment of the exchange. */
export interface NodeAt {
  /** Role. */
  readonly role: RaftRole;
  /** currentTerm. */
  readonly term: number;
  /** votedFor. */
  readonly votedFor: NodeId | undefined;
  /** commitIndex. */
  readonly commitIndex: number;
  /** Index of the last log entry. */
  readonly lastIndex: number;
  /** Term of the last log entry. */
  readonly lastTerm: number;
  /** On a leader: each follower's nextIndex. */
  readonly nextIndex: ReadonlyMap<NodeId, number>;
  /** On a leader: each follower's matchIndex. */
  readonly matchIndex: ReadonlyMap<NodeId, number>;
}

/** One thing that happened, with the state of the node concerned. */
export type ExchangeEvent =
  /** `sender` is the sender's state after it handled what made it send. */
  | {
    readonly kind: "send";
    readonly atMs: number;
    readonly message: Message;
    readonly fate: string;
    readonly sender: NodeAt;
  }
  /** `receiver` is the receiver's state before it handles the message. */
  | {
    readonly kind: "deliver";
    readonly atMs: number;
    readonly message: Message;
    readonly receiver: NodeAt;
  }
  /**
   * A write that became durable on the node's storage: entries `fromIndex..toIndex` (0 when
   * none), and the hard state on disk after it (`hardStateChanged` when this write changed it).
   */
  | {
    readonly kind: "persist";
    readonly atMs: number;
    readonly node: NodeId;
    readonly hardState: HardState;
    readonly hardStateChanged: boolean;
    readonly fromIndex: number;
    readonly toIndex: number;
  }
  /** `state` is the node's state just after the change. */
  | {
    readonly kind: "role";
    readonly atMs: number;
    readonly node: NodeId;
    readonly role: RaftRole;
    readonly term: number;
    readonly state: NodeAt;
  }
  | { readonly kind: "fault"; readonly atMs: number; readonly detail: string };

/** Most events one step keeps; a step that causes more keeps its first ones (and says so). */
export const EXCHANGE_EVENTS_MAX = 50_000;

/** The exchange log of one cluster: subscribe once, `begin` per step. */
export class ExchangeLog {
  readonly #cluster: Cluster;
  #events: ExchangeEvent[] = [];
  #overflow = 0;

  /** Subscribes to `cluster`. Use {@linkcode exchangeOf} to share one per cluster. */
  constructor(cluster: Cluster) {
    this.#cluster = cluster;
    const at = (id: NodeId): NodeAt => {
      const s = cluster.node(id).raft.status();
      const nextIndex = new Map<NodeId, number>();
      const matchIndex = new Map<NodeId, number>();
      for (const [peer, p] of s.progress) {
        nextIndex.set(peer, p.nextIndex);
        matchIndex.set(peer, p.matchIndex);
      }
      return {
        role: s.role,
        term: s.term,
        votedFor: s.votedFor,
        commitIndex: s.commitIndex,
        lastIndex: s.lastLogIndex,
        lastTerm: s.lastLogTerm,
        nextIndex,
        matchIndex,
      };
    };
    cluster.onEvent((e) => {
      if (e.kind === "send") {
        this.#keep({ ...e, sender: at(e.message.from) });
      } else if (e.kind === "deliver") {
        this.#keep({ ...e, receiver: at(e.message.to) });
      } else if (e.kind === "role") {
        this.#keep({ ...e, state: at(e.node) });
      } else this.#keep(e);
    });
    const onDisk = new Map<NodeId, HardState>();
    cluster.onPersisted((n, written) => {
      const first = written.entries[0]?.index ?? 0;
      const last = written.entries[written.entries.length - 1]?.index ?? 0;
      const was = onDisk.get(n.id);
      const hs = written.hardState;
      onDisk.set(n.id, hs);
      this.#keep({
        kind: "persist",
        atMs: cluster.nowMs,
        node: n.id,
        hardState: hs,
        hardStateChanged: was === undefined || was.term !== hs.term ||
          was.votedFor !== hs.votedFor,
        fromIndex: first,
        toIndex: last,
      });
    });
  }

  /** Forgets what was recorded: the next step starts here. */
  begin(): void {
    this.#events = [];
    this.#overflow = 0;
  }

  /** What happened since `begin`, in order. */
  get events(): readonly ExchangeEvent[] {
    return this.#events;
  }

  /** Events left out because the step caused more than {@linkcode EXCHANGE_EVENTS_MAX}. */
  get overflow(): number {
    return this.#overflow;
  }

  /** The cluster this log follows. */
  get cluster(): Cluster {
    return this.#cluster;
  }

  /** Messages of `type` delivered since `begin` (with the receiver's state before it handled them). */
  delivered<T extends Message["type"]>(
    type: T,
  ): { message: MessageOf<T>; receiver: NodeAt; atMs: number; at: number }[] {
    const out = [];
    for (let i = 0; i < this.#events.length; i++) {
      const e = this.#events[i];
      if (e.kind === "deliver" && e.message.type === type) {
        out.push({
          message: e.message as MessageOf<T>,
          receiver: e.receiver,
          atMs: e.atMs,
          at: i,
        });
      }
    }
    return out;
  }

  /** Messages of `type` sent since `begin` (with the sender's state after it handled the cause). */
  sent<T extends Message["type"]>(
    type: T,
  ): {
    message: MessageOf<T>;
    sender: NodeAt;
    fate: string;
    atMs: number;
    at: number;
  }[] {
    const out = [];
    for (let i = 0; i < this.#events.length; i++) {
      const e = this.#events[i];
      if (e.kind === "send" && e.message.type === type) {
        out.push({
          message: e.message as MessageOf<T>,
          sender: e.sender,
          fate: e.fate,
          atMs: e.atMs,
          at: i,
        });
      }
    }
    return out;
  }

  #keep(e: ExchangeEvent): void {
    if (this.#events.length >= EXCHANGE_EVENTS_MAX) {
      this.#overflow++;
      return;
    }
    this.#events.push(e);
  }
}

const logs = new WeakMap<Cluster, ExchangeLog>();

/** The one exchange log of `cluster` (created and subscribed on first use). */
export function exchangeOf(cluster: Cluster): ExchangeLog {
  let log = logs.get(cluster);
  if (log === undefined) {
    log = new ExchangeLog(cluster);
    logs.set(cluster, log);
  }
  return log;
}
