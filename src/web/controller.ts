/**
 * The live demo's scene, without any DOM: a simulated {@linkcode Cluster} (the real src/raft,
 * src/sim and src/kv code), the user's actions on it, the messages on their way and a plain view
 * of everything the page draws. The browser entry (`app.ts`) renders `view()`; the tests drive the
 * same class in Deno. A scene is its settings (seed, node count, speed) plus the actions taken at
 * given virtual times, and both fit in a URL hash, so a shared link replays the scene exactly.
 *
 * @module
 */

import { Cluster, type Operation, type SimEvent, type SimNode } from "../sim/cluster.ts";
import type { Message, NodeId, RaftRole } from "../raft/types.ts";
import { applyConfChange, decodeConfChange } from "../raft/membership.ts";
import type { RaftNode } from "../raft/node.ts";
import { describeEntry, NodeTable, nodeTable, type NodeTableOptions } from "../observe/table.ts";
import { messageLabel } from "../observe/timeline.ts";
import { storeStrings } from "../observe/describe.ts";
import { SafetyViolation } from "../sim/invariants.ts";

/** Virtual milliseconds per real millisecond the page offers, slowest first. */
export const SPEEDS: readonly number[] = [0.02, 0.05, 0.1, 0.25, 0.5, 1];

/** One-way network delay of the page's cluster: fixed, so a message's position is exact. */
export const LATENCY_MS = 25;

/** Smallest and largest cluster the page draws. */
export const NODES_MIN = 3;
/** Largest cluster the page draws. */
export const NODES_MAX = 7;

/** Most nodes the page draws, members or not (ids n1 to n9: one key each; removed ones stay). */
export const NODES_EVER_MAX = 9;
/** Most learners at a time: one, as etcd (and the server's `LEARNERS_MAX`). */
export const LEARNERS_MAX = 1;
/**
 * How far behind the leader a learner may be and still be promoted, in entries. The page's logs
 * are short, so the core's default (100, for servers) would never refuse; here a learner must hold
 * the leader's whole log, and the core refuses with etcd's "in sync with leader" text until it does.
 */
export const LEARNER_PROMOTE_LAG_ENTRIES_MAX = 0;

/** Most actions a scene keeps (and a URL carries). */
export const ACTIONS_MAX = 500;
/** Most client operations listed. */
const OPS_SHOWN_MAX = 8;
/** Most log entries drawn per node. */
const LOG_SHOWN_MAX = 12;
/** Most messages drawn at once (the oldest beyond it are left out). */
const MESSAGES_SHOWN_MAX = 200;
/** Most recent message labels kept for the "recent messages" list. */
const RECENT_MAX = 12;
/** How long a lost message stays drawn after it was lost, in virtual ms. */
const LOST_SHOWN_MS = LATENCY_MS;
/** Longest a single step waits for the next event, in virtual ms. */
const STEP_MAX_MS = 1_000;

/** What fixes a scene: same settings and actions, same run. */
export interface SceneSettings {
  /** Seed of every random choice. */
  readonly seed: number;
  /** Number of nodes, 3 to 7. */
  readonly nodes: number;
  /** Virtual ms per real ms while playing (one of {@linkcode SPEEDS}). */
  readonly speed: number;
}

/** The settings a page opens with. */
export const DEFAULT_SETTINGS: SceneSettings = Object.freeze({ seed: 1, nodes: 5, speed: 0.1 });

/** Something the user did to the cluster, at a virtual time. */
export type SceneAction =
  | { readonly atMs: number; readonly kind: "crash" | "restart" | "isolate"; readonly node: NodeId }
  | { readonly atMs: number; readonly kind: "partition"; readonly group: readonly NodeId[] }
  | { readonly atMs: number; readonly kind: "heal" }
  | { readonly atMs: number; readonly kind: "put"; readonly key: string; readonly value: string }
  | { readonly atMs: number; readonly kind: "delete" | "get"; readonly key: string }
  | { readonly atMs: number; readonly kind: "add"; readonly as: "learner" | "voter" }
  | {
    readonly atMs: number;
    readonly kind: "remove" | "promote" | "transfer";
    readonly node: NodeId;
  };

/** The membership actions of a scene (each goes through the leader). */
export type MembershipActionKind = "add" | "remove" | "promote" | "transfer";

/** A node's place in the configuration in force. */
export type MemberKind = "voter" | "learner" | "removed" | "none";

/** One log entry as drawn. */
export interface EntryView {
  /** Log index. */
  readonly index: number;
  /** Term of the entry. */
  readonly term: number;
  /** `index:term command`, as in the node table. */
  readonly text: string;
  /** Whether the node knows it committed (index ≤ its commitIndex). */
  readonly committed: boolean;
}

/** One node as drawn. */
export interface NodeView {
  /** Node id. */
  readonly id: NodeId;
  /** Role. */
  readonly role: RaftRole;
  /** Current term. */
  readonly term: number;
  /** up, crashed or paused. */
  readonly state: string;
  /**
   * Its place in the configuration in force (the newest in the leader's log, committed or not):
   * voter, learner, removed, or none (an added node whose entry was lost with its leader).
   */
  readonly member: MemberKind;
  /** Whether every link to and from the node is cut. */
  readonly cutOff: boolean;
  /** Commit index. */
  readonly commitIndex: number;
  /**
   * The node's timer: for a leader the next heartbeat (or CheckQuorum) deadline, otherwise the
   * election timeout. `remaining` runs from 1 (just reset) to 0 (fires now).
   */
  readonly timer: { readonly kind: "election" | "heartbeat"; readonly remaining: number } | null;
  /** The newest log entries, oldest first. */
  readonly log: readonly EntryView[];
  /** Entries older than those in `log`. */
  readonly logSkipped: number;
  /** The node's keys as `[key, value]`. */
  readonly keys: readonly (readonly [string, string])[];
}

/** A message drawn between two nodes. */
export interface MessageView {
  /** Stable id while it is drawn. */
  readonly id: number;
  /** Sender. */
  readonly from: NodeId;
  /** Receiver. */
  readonly to: NodeId;
  /** Message type. */
  readonly type: string;
  /** Type and key fields. */
  readonly label: string;
  /** How far along, 0 (sent) to 1 (arrived). */
  readonly progress: number;
  /** Whether it was lost (a cut link or a crashed receiver); drawn with an ×. */
  readonly lost: boolean;
}

/** A client operation as listed. */
export interface OpView {
  /** Operation number. */
  readonly id: number;
  /** e.g. `PUT k=v via n2`. */
  readonly text: string;
  /** pending, ok, failed or unknown. */
  readonly status: string;
  /** Result or error. */
  readonly detail: string;
}

/** Everything the page draws at one moment. */
export interface SceneView {
  /** Virtual time. */
  readonly nowMs: number;
  /** The nodes, in id order. */
  readonly nodes: readonly NodeView[];
  /** Links that are cut, as `from>to`. */
  readonly cuts: readonly string[];
  /** Messages on their way (or just lost). */
  readonly messages: readonly MessageView[];
  /** The newest client operations, newest first. */
  readonly ops: readonly OpView[];
  /** Labels of the most recent messages sent, newest first. */
  readonly recent: readonly string[];
  /** The leader of the highest term, if any. */
  readonly leader: NodeId | undefined;
  /** Voters of the configuration in force, sorted. */
  readonly voters: readonly NodeId[];
  /** Learners of the configuration in force, sorted. */
  readonly learners: readonly NodeId[];
  /** The membership change appended but not yet committed, e.g. `add-learner n6`. */
  readonly pendingChange: string | undefined;
  /** The voter the leader is handing leadership to, during a transfer. */
  readonly transferee: NodeId | undefined;
  /** Messages sent so far. */
  readonly messagesSent: number;
  /** A safety violation or other failure that stopped the scene. */
  readonly error: string | undefined;
}

interface Flying {
  readonly id: number;
  readonly message: Message;
  readonly sentMs: number;
  copies: number;
  lostAtMs: number | undefined;
}

/** A simulated cluster the page plays, steps and changes. */
export class SimController {
  /** The scene's settings. */
  readonly settings: SceneSettings;
  /** The cluster (rebuilt by {@linkcode SimController.replay}). */
  cluster: Cluster;
  /** Whether `advanceReal` moves the clock. */
  playing = false;
  /** Actions already applied, oldest first. */
  readonly applied: SceneAction[] = [];
  /** Actions of a replayed scene still to come, oldest first. */
  readonly pending: SceneAction[] = [];
  /** What stopped the scene, if anything did. */
  error: string | undefined;
  /** The last refused or skipped action, for the page to show. */
  notice: string | undefined;

  #flying = new Map<Message, Flying>();
  #lost: Flying[] = [];
  #messageSeq = 0;
  #ops: Operation[] = [];
  #recent: string[] = [];
  #carryMs = 0;
  #timers = new Map<NodeId, { deadlineMs: number; setMs: number }>();
  #eventCount = 0;

  /** A scene with these settings; `actions` (from a URL) are applied when their time comes. */
  constructor(settings: SceneSettings, options: { actions?: readonly SceneAction[] } = {}) {
    this.settings = checkSettings(settings);
    this.pending.push(...[...(options.actions ?? [])].sort((a, b) => a.atMs - b.atMs));
    this.cluster = this.#build();
  }

  #build(): Cluster {
    const cluster = new Cluster({
      nodes: this.settings.nodes,
      seed: this.settings.seed,
      network: { latencyMinMs: LATENCY_MS, latencyMaxMs: LATENCY_MS },
      eventsMax: 1_000,
      config: { learnerPromoteLagEntriesMax: LEARNER_PROMOTE_LAG_ENTRIES_MAX },
    });
    cluster.onEvent((e) => this.#onEvent(e));
    return cluster;
  }

  /** Starts the scene again from time 0 and replays every action (applied and pending). */
  replay(): void {
    const all = [...this.applied, ...this.pending];
    this.applied.length = 0;
    this.pending.length = 0;
    this.pending.push(...all);
    this.#flying.clear();
    this.#lost = [];
    this.#ops = [];
    this.#recent = [];
    this.#carryMs = 0;
    this.#timers.clear();
    this.error = undefined;
    this.notice = undefined;
    this.cluster = this.#build();
  }

  // ---- Time --------------------------------------------------------------------------------------

  /** Moves the clock by `realMs × speed` virtual ms (in whole ms, carrying the rest). */
  advanceReal(realMs: number): void {
    if (!this.playing || this.error !== undefined) return;
    this.#carryMs += Math.min(realMs, 250) * this.settings.speed;
    const whole = Math.floor(this.#carryMs);
    this.#carryMs -= whole;
    if (whole > 0) this.advance(whole);
  }

  /** Moves the virtual clock by `ms`, applying pending actions at their times. */
  advance(ms: number): void {
    if (this.error !== undefined) return;
    const targetMs = this.cluster.nowMs + ms;
    this.#guard(() => {
      while (this.pending.length > 0 && this.pending[0].atMs <= targetMs) {
        const action = this.pending.shift()!;
        this.cluster.advance(Math.max(0, action.atMs - this.cluster.nowMs));
        try {
          this.#apply(action);
        } catch (e) {
          if (isFatal(e)) throw e;
          this.notice = `Skipped ${action.kind} at ${action.atMs} ms: ${(e as Error).message}`;
        }
      }
      this.cluster.advance(targetMs - this.cluster.nowMs);
    });
    this.#sampleTimers();
  }

  /** Runs to the next event (a timer firing or a message arriving), at most 1 s ahead. */
  step(): void {
    if (this.error !== undefined) return;
    const before = this.#eventCount;
    const nextAction = this.pending[0]?.atMs;
    const limitMs = Math.min(this.cluster.nowMs + STEP_MAX_MS, nextAction ?? Infinity);
    this.#guard(() => {
      try {
        this.cluster.runUntil(() => this.#eventCount > before, {
          timeoutMs: limitMs - this.cluster.nowMs,
        });
      } catch (e) {
        if (!(e instanceof Error && e.message.startsWith("Timed out"))) throw e;
      }
    });
    if (this.#eventCount === before) this.advance(0); // applies an action now due
    this.#sampleTimers();
  }

  /** Runs until a leader exists or `timeoutMs` passes; returns it (for tests and the console). */
  runUntilLeader(timeoutMs = 5_000): NodeId | undefined {
    const endMs = this.cluster.nowMs + timeoutMs;
    while (this.cluster.leader() === undefined && this.cluster.nowMs < endMs) this.advance(5);
    return this.cluster.leader();
  }

  // ---- Actions -----------------------------------------------------------------------------------

  /** Crashes a running node, or restarts a crashed one. */
  toggleCrash(id: NodeId): void {
    const state = this.cluster.node(id).state;
    this.act({
      atMs: this.cluster.nowMs,
      kind: state === "crashed" ? "restart" : "crash",
      node: id,
    });
  }

  /** Cuts every link of a node. */
  isolate(id: NodeId): void {
    this.act({ atMs: this.cluster.nowMs, kind: "isolate", node: id });
  }

  /** Splits the cluster into `group` and the rest. */
  partition(group: readonly NodeId[]): void {
    this.act({ atMs: this.cluster.nowMs, kind: "partition", group: [...group] });
  }

  /** Restores every link. */
  heal(): void {
    this.act({ atMs: this.cluster.nowMs, kind: "heal" });
  }

  /** Writes a key through the leader. */
  put(key: string, value: string): void {
    this.act({ atMs: this.cluster.nowMs, kind: "put", key, value });
  }

  /** Deletes a key through the leader. */
  delete(key: string): void {
    this.act({ atMs: this.cluster.nowMs, kind: "delete", key });
  }

  /** Reads a key (linearizable, through the leader). */
  get(key: string): void {
    this.act({ atMs: this.cluster.nowMs, kind: "get", key });
  }

  /** Adds a node (a learner unless `as` says voter) through the leader. */
  addNode(as: "learner" | "voter" = "learner"): void {
    this.act({ atMs: this.cluster.nowMs, kind: "add", as });
  }

  /** Removes member `id` (the leader too: it steps down once the change commits). */
  removeNode(id: NodeId): void {
    this.act({ atMs: this.cluster.nowMs, kind: "remove", node: id });
  }

  /** Promotes learner `id` to voter (the core refuses while it is behind the leader). */
  promote(id: NodeId): void {
    this.act({ atMs: this.cluster.nowMs, kind: "promote", node: id });
  }

  /** Asks the leader to hand leadership to voter `id` (§3.10). */
  transferLeader(id: NodeId): void {
    this.act({ atMs: this.cluster.nowMs, kind: "transfer", node: id });
  }

  /**
   * Why a membership action is refused now (the page disables its button and says this), or
   * undefined when the page may try it. The core may still refuse what passes here: a learner
   * behind the leader.
   */
  membershipRefusal(kind: MembershipActionKind, id?: NodeId): string | undefined {
    if (this.error !== undefined) return `The scene stopped: ${this.error}`;
    const c = this.cluster;
    if (kind === "add" && c.ids.length >= NODES_EVER_MAX) {
      return `The page draws at most ${NODES_EVER_MAX} nodes (removed ones stay drawn)`;
    }
    if (kind !== "add" && id === undefined) return "Select one node first";
    if (id !== undefined && !c.ids.includes(id)) return `No node "${id}"`;
    const leader = c.leader();
    if (leader === undefined) {
      return "No leader: membership changes and transfers go through the leader; wait for one";
    }
    const l = c.node(leader).raft;
    if (l.transferee !== undefined) {
      return `A leadership transfer to ${l.transferee} is in progress; wait until it ends`;
    }
    if (kind === "transfer") {
      if (id === leader) return `${id} already leads`;
      if (!l.voters.includes(id!)) {
        return `Cannot transfer leadership to "${id}": not a voter` +
          (l.learners.includes(id!) ? " (promote it first)" : "");
      }
      return undefined;
    }
    // The 2015 erratum, as the core: a new leader first commits an entry of its own term.
    if (l.log.term(l.commitIndex) !== l.term) {
      return `The new leader ${leader} has not yet committed an entry of its term ${l.term}; ` +
        `wait a moment`;
    }
    const pending = pendingChangeOf(l);
    if (pending !== undefined) {
      return `A membership change is pending (${pending}): one change at a time; ` +
        `wait until it commits`;
    }
    if (kind === "add") {
      return l.learners.length >= LEARNERS_MAX
        ? "etcdserver: too many learner members in cluster (one learner at a time, as etcd: " +
          "promote or remove it first)"
        : undefined;
    }
    try {
      applyConfChange(l.membership, { type: kind, node: id! }); // the core's own refusals
    } catch (e) {
      return (e as Error).message;
    }
    return undefined;
  }

  /** Applies an action now and records it. Throws (and records nothing) when it makes no sense. */
  act(action: SceneAction): void {
    if (this.error !== undefined) throw new Error(`The scene stopped: ${this.error}`);
    if (this.applied.length + this.pending.length >= ACTIONS_MAX) {
      throw new Error(`A scene holds at most ${ACTIONS_MAX} actions`);
    }
    this.#guard(() => this.#apply({ ...action, atMs: this.cluster.nowMs }));
    this.#sampleTimers();
  }

  #apply(action: SceneAction): void {
    const c = this.cluster;
    switch (action.kind) {
      case "crash":
        c.crash(action.node);
        break;
      case "restart":
        c.restart(action.node);
        break;
      case "isolate":
        c.isolate(action.node);
        break;
      case "partition":
        c.partition([...action.group]);
        break;
      case "heal":
        c.heal();
        break;
      case "put":
        this.#track(c.put(action.key, action.value));
        break;
      case "delete":
        this.#track(c.delete(action.key));
        break;
      case "get":
        this.#track(c.get(action.key));
        break;
      case "add":
      case "remove":
      case "promote":
      case "transfer": {
        const id = action.kind === "add" ? undefined : action.node;
        const refused = this.membershipRefusal(action.kind, id);
        if (refused !== undefined) throw new Error(refused);
        if (action.kind === "add") c.addNode({ as: action.as });
        else if (action.kind === "remove") c.removeNode(id!);
        else if (action.kind === "promote") c.promote(id!);
        else c.transferLeader(id!);
        break;
      }
    }
    this.applied.push(action);
  }

  #track(op: Operation): void {
    this.#ops.unshift(op);
    if (this.#ops.length > OPS_SHOWN_MAX) this.#ops.length = OPS_SHOWN_MAX;
  }

  /**
   * Runs `f`. A safety violation or a broken invariant stops the scene with the error shown (not a
   * dead page); any other error (a refused action) is thrown to the caller.
   */
  #guard(f: () => void): void {
    try {
      f();
    } catch (e) {
      if (!isFatal(e)) throw e;
      this.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      this.playing = false;
    }
  }

  // ---- Events ------------------------------------------------------------------------------------

  #onEvent(e: SimEvent): void {
    this.#eventCount++;
    const now = e.atMs;
    if (e.kind === "send") {
      this.#recent.unshift(`${e.message.from}→${e.message.to} ${messageLabel(e.message)}`);
      if (this.#recent.length > RECENT_MAX) this.#recent.length = RECENT_MAX;
      const f: Flying = {
        id: ++this.#messageSeq,
        message: e.message,
        sentMs: e.atMs,
        copies: e.fate === "sent twice" ? 2 : 1,
        lostAtMs: undefined,
      };
      if (e.fate.startsWith("dropped")) {
        f.lostAtMs = e.atMs;
        this.#lost.push(f);
      } else {
        this.#flying.set(e.message, f);
      }
      this.#sampleTimer(e.message.from, now);
    } else if (e.kind === "deliver") {
      const f = this.#flying.get(e.message);
      if (f !== undefined && --f.copies <= 0) this.#flying.delete(e.message);
    } else if (e.kind === "role") {
      this.#sampleTimer(e.node, now);
    }
  }

  #sampleTimers(): void {
    for (const id of this.cluster.ids) this.#sampleTimer(id, this.cluster.nowMs);
    // Messages due but not delivered were lost at the receiver (crashed, or the link was cut).
    const now = this.cluster.nowMs;
    for (const [m, f] of this.#flying) {
      if (f.sentMs + LATENCY_MS < now) {
        this.#flying.delete(m);
        f.lostAtMs = f.sentMs + LATENCY_MS;
        this.#lost.push(f);
      }
    }
    this.#lost = this.#lost.filter((f) => f.lostAtMs! + LOST_SHOWN_MS >= now);
  }

  #sampleTimer(id: NodeId, nowMs: number): void {
    const n = this.cluster.node(id);
    if (n.state !== "up") {
      this.#timers.delete(id);
      return;
    }
    const deadlineMs = n.raft.nextDeadlineMs();
    const t = this.#timers.get(id);
    if (t === undefined || t.deadlineMs !== deadlineMs) {
      this.#timers.set(id, { deadlineMs, setMs: Math.min(nowMs, deadlineMs) });
    }
  }

  // ---- View --------------------------------------------------------------------------------------

  /** The node whose configuration is in force: the leader, else the one `Cluster.membership` reads. */
  #membershipNode(): SimNode {
    const c = this.cluster;
    const leader = c.leader();
    if (leader !== undefined) return c.node(leader);
    const m = c.membership();
    return c.nodes().find((n) => n.raft.membership === m) ?? c.nodes()[0];
  }

  /** Each node's place in the configuration in force. */
  #members(): Map<NodeId, MemberKind> {
    const raft = this.#membershipNode().raft;
    const pending = pendingChangeOf(raft);
    const kinds = new Map<NodeId, MemberKind>();
    for (const id of this.cluster.ids) {
      kinds.set(
        id,
        raft.voters.includes(id)
          ? "voter"
          : raft.learners.includes(id)
          ? "learner"
          : this.cluster.removed.has(id) || pending === `remove ${id}`
          ? "removed"
          : "none",
      );
    }
    return kinds;
  }

  /** Everything the page draws now. */
  view(): SceneView {
    const c = this.cluster;
    const now = c.nowMs;
    const members = this.#members();
    const source = this.#membershipNode().raft;
    const nodes: NodeView[] = c.nodes().map((n) => {
      const s = n.raft.status();
      const t = this.#timers.get(n.id);
      const span = t === undefined ? 0 : t.deadlineMs - t.setMs;
      const remaining = t === undefined || span <= 0
        ? 0
        : Math.max(0, Math.min(1, (t.deadlineMs - now) / span));
      const first = Math.max(n.raft.log.firstIndex, s.lastLogIndex - LOG_SHOWN_MAX + 1);
      const log = n.raft.log.slice(first, s.lastLogIndex + 1).map((e) => ({
        index: e.index,
        term: e.term,
        text: describeEntry(e),
        committed: e.index <= s.commitIndex,
      }));
      return {
        id: n.id,
        role: s.role,
        term: s.term,
        state: n.state,
        member: members.get(n.id)!,
        cutOff: c.ids.length > 1 &&
          c.ids.every((o) => o === n.id || (!c.connected(o, n.id) && !c.connected(n.id, o))),
        commitIndex: s.commitIndex,
        timer: n.state === "up" && t !== undefined
          ? { kind: s.role === "Leader" ? "heartbeat" : "election", remaining }
          : null,
        log,
        logSkipped: first - 1,
        keys: storeStrings(n.store),
      };
    });
    const cuts: string[] = [];
    for (const a of c.ids) {
      for (const b of c.ids) if (a !== b && !c.connected(a, b)) cuts.push(`${a}>${b}`);
    }
    const messages: MessageView[] = [];
    for (const f of [...this.#flying.values(), ...this.#lost].slice(-MESSAGES_SHOWN_MAX)) {
      const lost = f.lostAtMs !== undefined;
      // A lost message travels halfway and stops there with an ×.
      const progress = lost
        ? Math.min(0.5, (f.lostAtMs! - f.sentMs) / LATENCY_MS)
        : Math.max(0, Math.min(1, (now - f.sentMs) / LATENCY_MS));
      messages.push({
        id: f.id,
        from: f.message.from,
        to: f.message.to,
        type: f.message.type,
        label: messageLabel(f.message),
        progress,
        lost,
      });
    }
    return {
      nowMs: now,
      nodes,
      cuts,
      messages,
      ops: this.#ops.map(opView),
      recent: [...this.#recent],
      leader: c.leader(),
      voters: [...source.voters],
      learners: [...source.learners],
      pendingChange: pendingChangeOf(source),
      transferee: source.role === "Leader" ? source.transferee : undefined,
      messagesSent: c.stats.sent,
      error: this.error,
    };
  }

  /**
   * The notebooks' node table with membership, as the server's (`deno task ctl status`): a
   * learner's status says "(learner)", a removed node's "(removed)".
   */
  #table(options: NodeTableOptions = {}): NodeTable {
    const t = nodeTable(this.cluster, options);
    const members = this.#members();
    const rows = t.rows.map((r) => {
      const m = members.get(r.id);
      return m === "learner" || m === "removed" ? { ...r, status: `${r.status} (${m})` } : r;
    });
    return new NodeTable({
      title: t.title,
      atMs: t.atMs,
      rows,
      progress: [...t.progress],
      logs: new Map(t.logs),
      keys: new Map(t.keys),
      grid: t.grid,
      aliases: t.aliases,
    });
  }

  /** The lines the server prints under its node table: voters, learners, a pending change. */
  membershipLines(): string[] {
    const raft = this.#membershipNode().raft;
    const lines = [
      `voters: ${raft.voters.join(",")}`,
      `learners: ${raft.learners.length === 0 ? "none" : raft.learners.join(",")}`,
    ];
    const pending = pendingChangeOf(raft);
    if (pending !== undefined) lines.push(`pending membership change: ${pending}`);
    return lines;
  }

  /** The node table (the notebooks' table, with membership) as HTML. */
  tableHtml(): string {
    const lines = this.membershipLines().map((l) => `<div>${esc(l)}</div>`).join("");
    return `<div class="membership-lines">${lines}</div>` +
      this.#table({ logEntries: 6, keys: 6 }).toHtml();
  }

  /** The node table as text, the membership lines under it. */
  tableText(): string {
    return [this.#table().toString(), ...this.membershipLines()].join("\n");
  }

  /** The URL hash that replays this scene: settings and every action. */
  hash(): string {
    return sceneHash(this.settings, [...this.applied, ...this.pending]);
  }
}

/** The membership change in `raft`'s log not yet committed there, as `type node`, if any. */
function pendingChangeOf(raft: RaftNode): string | undefined {
  const s = raft.status();
  if (s.configIndex <= s.commitIndex) return undefined;
  const c = decodeConfChange(raft.log.entry(s.configIndex).command);
  return `${c.type} ${c.node}`;
}

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

function isFatal(e: unknown): boolean {
  return e instanceof SafetyViolation ||
    (e instanceof Error && e.message.startsWith("Invariant violated"));
}

function opView(op: Operation): OpView {
  const what = op.kind === "put"
    ? `PUT ${op.key}=${op.value}`
    : op.kind === "delete"
    ? `DEL ${op.key}`
    : op.kind === "get"
    ? `GET ${op.key}`
    : "command";
  let detail = "";
  if (op.status === "ok") {
    detail = op.kind === "get"
      ? (op.result === undefined ? "(absent)" : JSON.stringify(op.result))
      : `index ${op.index}`;
  } else if (op.error !== undefined) {
    detail = op.error;
  }
  return { id: op.id, text: `${what} via ${op.via}`, status: op.status, detail };
}

/** Settings with every field in range; throws a RangeError naming a bad one. */
export function checkSettings(s: SceneSettings): SceneSettings {
  if (!Number.isSafeInteger(s.seed) || s.seed < 0) {
    throw new RangeError(`Seed must be a non-negative integer: ${s.seed}`);
  }
  if (!Number.isInteger(s.nodes) || s.nodes < NODES_MIN || s.nodes > NODES_MAX) {
    throw new RangeError(`Node count must be ${NODES_MIN} to ${NODES_MAX}: ${s.nodes}`);
  }
  if (!SPEEDS.includes(s.speed)) {
    throw new RangeError(`Speed must be one of ${SPEEDS.join(", ")}: ${s.speed}`);
  }
  return { seed: s.seed, nodes: s.nodes, speed: s.speed };
}

// ---- URL -----------------------------------------------------------------------------------------

const enc = encodeURIComponent;

/** Encodes settings and actions as `#seed=1&nodes=5&speed=0.1&actions=1200:crash:n2;…`. */
export function sceneHash(settings: SceneSettings, actions: readonly SceneAction[]): string {
  let h = `#seed=${settings.seed}&nodes=${settings.nodes}&speed=${settings.speed}`;
  if (actions.length > 0) {
    h += "&actions=" + actions.map((a) => {
      const fields: string[] = [String(a.atMs), a.kind];
      if (a.kind === "crash" || a.kind === "restart" || a.kind === "isolate") fields.push(a.node);
      else if (a.kind === "partition") fields.push(a.group.join(","));
      else if (a.kind === "put") fields.push(a.key, a.value);
      else if (a.kind === "delete" || a.kind === "get") fields.push(a.key);
      else if (a.kind === "add") fields.push(a.as);
      else if (a.kind === "remove" || a.kind === "promote" || a.kind === "transfer") {
        fields.push(a.node);
      }
      return fields.map(enc).join(":");
    }).join(";");
  }
  return h;
}

/**
 * Reads settings and actions from a URL's query and hash (the hash wins). Missing or bad values
 * fall back to the defaults and are reported in `problems`.
 */
export function parseScene(
  url: string,
): { settings: SceneSettings; actions: SceneAction[]; problems: string[] } {
  const problems: string[] = [];
  const params = new Map<string, string>();
  const u = new URL(url, "http://localhost/");
  for (const [k, v] of u.searchParams) params.set(k, v);
  for (const part of u.hash.replace(/^#/, "").split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const k = eq < 0 ? part : part.slice(0, eq);
    const v = eq < 0 ? "" : part.slice(eq + 1);
    // Actions keep their own encoding (fields are percent-encoded one by one).
    params.set(k, k === "actions" ? v : safeDecode(v));
  }
  const num = (name: keyof SceneSettings): number => {
    const text = params.get(name);
    if (text === undefined) return DEFAULT_SETTINGS[name];
    const n = Number(text);
    const ok = name === "speed"
      ? SPEEDS.includes(n)
      : name === "nodes"
      ? Number.isInteger(n) && n >= NODES_MIN && n <= NODES_MAX
      : Number.isSafeInteger(n) && n >= 0;
    if (!ok) {
      problems.push(`Ignored ${name}=${JSON.stringify(text)}`);
      return DEFAULT_SETTINGS[name];
    }
    return n;
  };
  const settings = { seed: num("seed"), nodes: num("nodes"), speed: num("speed") };
  // Nodes n1..n<nodes>, and one more after each add (ids are given out in order).
  const ids = new Set(Array.from({ length: settings.nodes }, (_, i) => `n${i + 1}`));
  const actions: SceneAction[] = [];
  const text = params.get("actions") ?? "";
  for (const item of text === "" ? [] : text.split(";").slice(0, ACTIONS_MAX)) {
    const f = item.split(":").map(safeDecode);
    const atMs = Number(f[0]);
    const kind = f[1];
    let action: SceneAction | undefined;
    if (!Number.isSafeInteger(atMs) || atMs < 0) action = undefined;
    else if ((kind === "crash" || kind === "restart" || kind === "isolate") && ids.has(f[2])) {
      action = { atMs, kind, node: f[2] };
    } else if (kind === "partition" && f[2]?.split(",").every((id) => ids.has(id))) {
      action = { atMs, kind, group: f[2].split(",") };
    } else if (kind === "heal") action = { atMs, kind };
    else if (kind === "put" && f.length >= 4) action = { atMs, kind, key: f[2], value: f[3] };
    else if ((kind === "delete" || kind === "get") && f.length >= 3) {
      action = { atMs, kind, key: f[2] };
    } else if (kind === "add" && (f[2] === "learner" || f[2] === "voter")) {
      if (ids.size < NODES_EVER_MAX) ids.add(`n${ids.size + 1}`);
      action = { atMs, kind, as: f[2] };
    } else if ((kind === "remove" || kind === "promote" || kind === "transfer") && ids.has(f[2])) {
      action = { atMs, kind, node: f[2] };
    }
    if (action === undefined) problems.push(`Ignored action ${JSON.stringify(item)}`);
    else actions.push(action);
  }
  return { settings, actions, problems };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
