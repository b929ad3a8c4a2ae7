/**
 * Message timelines: what flowed between the nodes of a simulated cluster during one step, drawn
 * as a sequence diagram. One vertical lifeline per node, time running down; an arrow from the
 * sender at send time to the receiver at delivery time, labelled with the message type and its key
 * fields; a lost message ends in an ×; role changes and faults are marked. Rendered as SVG (for
 * Jupyter, via {@linkcode JUPYTER_DISPLAY}) and as compact text for terminals. Bounded: at most
 * `arrowsMax` arrows are drawn, and the diagram says so when it leaves some out.
 *
 * @example
 * ```ts
 * import { Cluster } from "../sim/cluster.ts";
 * import { recordTimeline } from "./timeline.ts";
 * const cluster = new Cluster({ nodes: 3, seed: 1 });
 * const timeline = recordTimeline(cluster, () => cluster.waitForLeader());
 * console.log(timeline.toString());
 * ```
 *
 * @module
 */

import type { Message, NodeId, RaftRole } from "../raft/types.ts";
import type { Cluster } from "../sim/cluster.ts";
import { JUPYTER_DISPLAY, TEXT_COLUMNS_MAX } from "./table.ts";

/** What became of one message, as far as the step saw. */
export type ArrowFate =
  | "delivered"
  | "dropped (link cut)"
  | "dropped (loss)"
  | "lost (receiver down)"
  | "lost (link cut)"
  | "in flight";

/** One message drawn as an arrow. */
export interface Arrow {
  /** Sender. */
  readonly from: NodeId;
  /** Receiver. */
  readonly to: NodeId;
  /** Message type, e.g. `AppendEntries`. */
  readonly type: string;
  /** Type and key fields, e.g. `AppendEntries t2 prev=1:1 +1 [2:2] commit=1`. */
  readonly label: string;
  /** Virtual time it was sent (may precede the step). */
  readonly sentMs: number;
  /** Virtual time it arrived, or (for lost and in-flight messages) where its line ends. */
  readonly endMs: number;
  /** What became of it. */
  readonly fate: ArrowFate;
  /** Whether this is the second copy of a duplicated message. */
  readonly duplicate: boolean;
  /**
   * A heartbeat that tells its receiver nothing new (same term and commit index as the last one
   * on that link) or a success reply that acknowledges nothing new: collapsed into rounds.
   */
  readonly routine: boolean;
  /**
   * How much the message matters to the story, 0 first: votes, rejections, entries, snapshots
   * and reads (0); other heartbeats and replies (1); routine ones (2). A capped picture keeps the
   * lowest ranks.
   */
  readonly rank: 0 | 1 | 2;
}

/** A mark on one node's lifeline (role change) or across all of them (fault). */
export interface Mark {
  /** Virtual time. */
  readonly atMs: number;
  /** The node, for a role change; undefined for a fault affecting the cluster. */
  readonly node: NodeId | undefined;
  /** `role` or `fault`. */
  readonly kind: "role" | "fault";
  /** e.g. `Leader t2` or `crash n1`. */
  readonly label: string;
  /** The new role, for a role change. */
  readonly role?: RaftRole;
}

/** Options for {@linkcode recordTimeline} and {@linkcode TimelineRecorder.end}. */
export interface TimelineOptions {
  /** Most arrows drawn one by one (the decisive ones first). Default 150. */
  readonly arrowsMax?: number;
  /** Title shown above the diagram. */
  readonly title?: string;
  /** Other names of the nodes shown next to theirs, e.g. Figure 8's `{ n3: "S1" }`. */
  readonly aliases?: Readonly<Record<NodeId, string>>;
}

/** Consecutive routine messages collapsed into one line of heartbeat rounds. */
export interface Rounds {
  /** Time of the first message. */
  readonly fromMs: number;
  /** Time of the last message. */
  readonly toMs: number;
  /** The messages. */
  readonly arrows: readonly Arrow[];
  /** Heartbeat rounds: the most messages of one type on one link. */
  readonly rounds: number;
  /** Senders of the heartbeats (leaders). */
  readonly leaders: readonly NodeId[];
  /** Receivers of the heartbeats. */
  readonly followers: readonly NodeId[];
  /** How many were lost. */
  readonly lost: number;
}

/** One line of a timeline: a message, collapsed heartbeat rounds, or a mark. */
export type TimelineLine =
  | { readonly kind: "arrow"; readonly atMs: number; readonly arrow: Arrow }
  | { readonly kind: "rounds"; readonly atMs: number; readonly rounds: Rounds }
  | { readonly kind: "mark"; readonly atMs: number; readonly mark: Mark };

/** The fewest consecutive routine messages collapsed into one line. */
const ROUNDS_MIN_MESSAGES = 4;

/** What each mark of a text timeline means. */
export const TIMELINE_LEGEND: readonly string[] = [
  "legend: → delivered [at ms] · ⇢ still in flight […] · × lost [why] · ** fault (crash, cut, …)",
  "  ⇄ heartbeat rounds that changed nothing, collapsed · nX is Role tN = role change",
];

const ARROWS_MAX_DEFAULT = 150;
/** Most events one recording keeps; past it, events are counted but not kept. */
const RECORDED_EVENTS_MAX = 50_000;
/** Most undelivered messages remembered across steps (to draw their send time later). */
const PENDING_MAX = 10_000;

interface Sent {
  readonly message: Message;
  readonly sentMs: number;
  readonly fate: string;
  readonly routine: boolean;
  deliveries: number;
}

type Recorded =
  | { kind: "send"; sent: Sent }
  | { kind: "deliver"; sent: Sent; atMs: number }
  | { kind: "mark"; mark: Mark };

/** One cluster's message timeline in the making: subscribe once, then `begin`/`end` per step. */
export class TimelineRecorder {
  readonly #cluster: Cluster;
  #recording = false;
  #startMs = 0;
  #recorded: Recorded[] = [];
  #overflow = 0;
  // Messages sent but not yet delivered, by identity (the simulator delivers the same object).
  #pending = new Map<Message, Sent>();
  // Each node's last known role and term; a node starts as a follower at term 0.
  #roles = new Map<NodeId, string>();
  // Per link, what the last heartbeat or success reply said (term and commit or match index).
  #lastSaid = new Map<string, string>();
  #downAtStart: NodeId[] = [];

  /** Subscribes to `cluster`'s events. Use {@linkcode recorderFor} to share one per cluster. */
  constructor(cluster: Cluster) {
    this.#cluster = cluster;
    cluster.onEvent((e) => {
      if (e.kind === "send") {
        const sent: Sent = {
          message: e.message,
          sentMs: e.atMs,
          fate: e.fate,
          routine: this.#routine(e.message),
          deliveries: 0,
        };
        if (!e.fate.startsWith("dropped")) this.#remember(sent);
        this.#keep({ kind: "send", sent });
      } else if (e.kind === "deliver") {
        const sent = this.#pending.get(e.message) ??
          { message: e.message, sentMs: e.atMs, fate: "sent", routine: false, deliveries: 0 };
        sent.deliveries++;
        const copies = sent.fate === "sent twice" ? 2 : 1;
        if (sent.deliveries >= copies) this.#pending.delete(e.message);
        this.#keep({ kind: "deliver", sent, atMs: e.atMs });
      } else if (e.kind === "role") {
        const was = this.#roles.get(e.node) ?? "Follower 0";
        this.#roles.set(e.node, `${e.role} ${e.term}`);
        if (was === `${e.role} ${e.term}`) return;
        this.#keep({
          kind: "mark",
          mark: {
            atMs: e.atMs,
            node: e.node,
            kind: "role",
            label: `${e.role} t${e.term}`,
            role: e.role,
          },
        });
      } else {
        this.#keep({
          kind: "mark",
          mark: { atMs: e.atMs, node: undefined, kind: "fault", label: e.detail },
        });
      }
    });
  }

  /** Whether a step is being recorded. */
  get recording(): boolean {
    return this.#recording;
  }

  /** Starts recording a step at the cluster's current time. */
  begin(): void {
    this.#recording = true;
    this.#startMs = this.#cluster.nowMs;
    this.#recorded = [];
    this.#overflow = 0;
    this.#downAtStart = this.#cluster.ids.filter((id) =>
      this.#cluster.node(id).state === "crashed"
    );
  }

  /** Stops recording and returns the step's timeline. */
  end(options: TimelineOptions = {}): Timeline {
    if (!this.#recording) throw new Error("Timeline recorder: end() without begin()");
    this.#recording = false;
    const c = this.#cluster;
    const endMs = c.nowMs;
    const arrows: Arrow[] = [];
    const marks: Mark[] = [];
    const open = new Map<Sent, Arrow>();
    for (const r of this.#recorded) {
      if (r.kind === "mark") {
        marks.push(r.mark);
      } else if (r.kind === "send") {
        const fate = r.sent.fate;
        if (fate.startsWith("dropped")) {
          // Lost on the way out: draw a short stub ending in an ×.
          arrows.push(arrowOf(r.sent, r.sent.sentMs, fate as ArrowFate, false));
        } else {
          open.set(r.sent, arrowOf(r.sent, r.sent.sentMs, "in flight", false));
        }
      } else {
        const first = open.get(r.sent);
        if (first !== undefined) {
          open.delete(r.sent);
          arrows.push({ ...first, endMs: r.atMs, fate: "delivered" });
        } else {
          // Sent before the step began, or the second copy of a duplicated message.
          arrows.push(arrowOf(r.sent, r.sent.sentMs, "delivered", r.sent.deliveries > 1, r.atMs));
        }
      }
    }
    // Whatever was not delivered by the end of the step: lost at the receiver, or still on the way.
    const netMaxMs = c.network.latencyMaxMs + c.network.reorderDelayMaxMs;
    for (const a of open.values()) {
      const receiverDown = c.node(a.to).state === "crashed";
      const cut = !c.connected(a.from, a.to);
      const overdue = endMs - a.sentMs > netMaxMs;
      if (receiverDown || cut || overdue) {
        arrows.push({
          ...a,
          endMs: Math.min(endMs, a.sentMs + c.network.latencyMaxMs),
          fate: receiverDown ? "lost (receiver down)" : "lost (link cut)",
        });
      } else {
        arrows.push({ ...a, endMs, fate: "in flight" });
      }
    }
    arrows.sort((a, b) => a.sentMs - b.sentMs || a.endMs - b.endMs);
    // Forget messages that can no longer arrive (lost at a crashed receiver or a cut link).
    for (const [m, s] of this.#pending) {
      if (endMs - s.sentMs > netMaxMs + 1) this.#pending.delete(m);
    }
    return new Timeline({
      title: options.title,
      nodes: [...c.ids],
      startMs: this.#startMs,
      endMs,
      arrows,
      marks,
      arrowsMax: options.arrowsMax ?? ARROWS_MAX_DEFAULT,
      eventsOverflow: this.#overflow,
      downAtStart: this.#downAtStart,
      aliases: options.aliases,
    });
  }

  /** Whether a message repeats what the last one on its link said (a heartbeat or its answer). */
  #routine(m: Message): boolean {
    let said: string;
    if (m.type === "AppendEntries" && m.entries.length === 0) {
      said = `${m.term}:${m.leaderCommit}`;
    } else if (m.type === "AppendEntriesReply" && m.success) {
      said = `${m.term}:${m.matchIndex}`;
    } else {
      return false;
    }
    const link = `${m.type} ${m.from}>${m.to}`;
    const same = this.#lastSaid.get(link) === said;
    this.#lastSaid.set(link, said);
    return same;
  }

  #remember(sent: Sent): void {
    this.#pending.set(sent.message, sent);
    if (this.#pending.size > PENDING_MAX) {
      this.#pending.delete(this.#pending.keys().next().value!);
    }
  }

  #keep(r: Recorded): void {
    if (!this.#recording) return;
    if (this.#recorded.length >= RECORDED_EVENTS_MAX) {
      this.#overflow++;
      return;
    }
    this.#recorded.push(r);
  }
}

function arrowOf(
  sent: Sent,
  sentMs: number,
  fate: ArrowFate,
  duplicate: boolean,
  endMs = sentMs,
): Arrow {
  const m = sent.message;
  return {
    from: m.from,
    to: m.to,
    type: m.type,
    label: messageLabel(m),
    sentMs,
    endMs,
    fate,
    duplicate,
    routine: sent.routine,
    rank: sent.routine ? 2 : rankOf(m),
  };
}

function rankOf(m: Message): 0 | 1 {
  if (m.type === "AppendEntries") return m.entries.length > 0 ? 0 : 1;
  if (m.type === "AppendEntriesReply") return m.success ? 1 : 0;
  return 0;
}

const recorders = new WeakMap<Cluster, TimelineRecorder>();

/** The one recorder of `cluster` (created and subscribed on first use). */
export function recorderFor(cluster: Cluster): TimelineRecorder {
  let r = recorders.get(cluster);
  if (r === undefined) {
    r = new TimelineRecorder(cluster);
    recorders.set(cluster, r);
  }
  return r;
}

/** Runs `fn` and returns the timeline of the messages it caused. Rethrows what `fn` throws. */
export function recordTimeline(
  cluster: Cluster,
  fn: () => void,
  options: TimelineOptions = {},
): Timeline {
  const r = recorderFor(cluster);
  r.begin();
  try {
    fn();
  } finally {
    if (!r.recording) r.begin(); // fn recorded a nested timeline; keep end() valid
  }
  return r.end(options);
}

/** A message's type and key fields, e.g. `RequestVote t2 last=3:1`. */
export function messageLabel(m: Message): string {
  switch (m.type) {
    case "PreVote":
    case "RequestVote":
      return `${m.type} t${m.term} last=${m.lastLogIndex}:${m.lastLogTerm}`;
    case "PreVoteReply":
    case "RequestVoteReply":
      return `${m.type} t${m.term} ${m.granted ? "granted" : "refused"}`;
    case "AppendEntries": {
      const n = m.entries.length;
      const body = n === 0
        ? "heartbeat"
        : n <= 3
        ? `[${m.entries.map((e) => `${e.index}:${e.term}`).join(",")}]`
        : `[${m.entries[0].index}:${m.entries[0].term}…${m.entries[n - 1].index}:${
          m.entries[n - 1].term
        }] (${n})`;
      return `AppendEntries t${m.term} prev=${m.prevLogIndex}:${m.prevLogTerm} ${body} commit=${m.leaderCommit}`;
    }
    case "AppendEntriesReply":
      return m.success
        ? `AppendEntriesReply t${m.term} ok match=${m.matchIndex}`
        : `AppendEntriesReply t${m.term} reject=${m.rejectedIndex} hint=${m.conflictIndex}`;
    case "InstallSnapshot":
      return `InstallSnapshot t${m.term} snap=${m.meta.index}:${m.meta.term} bytes ` +
        `${m.offset}–${m.offset + m.data.byteLength} of ${m.totalBytes}${m.done ? " done" : ""}`;
    case "InstallSnapshotReply":
      return m.done
        ? `InstallSnapshotReply t${m.term} snap=${m.snapshotIndex} done match=${m.matchIndex}`
        : `InstallSnapshotReply t${m.term} snap=${m.snapshotIndex} next=${m.offset}`;
    case "ReadIndex":
      return `ReadIndex t${m.term} ${m.readId}`;
    case "ReadIndexReply":
      return `ReadIndexReply t${m.term} ${m.readId} ${m.ok ? `index=${m.readIndex}` : "refused"}`;
    default: {
      // Message types added later (e.g. snapshots) still get a readable label.
      const other = m as { type: string; term?: number };
      return `${other.type}${other.term === undefined ? "" : ` t${other.term}`}`;
    }
  }
}

const ROLE_COLOR: Record<RaftRole, string> = {
  Leader: "#2e7d32",
  Candidate: "#e08a00",
  PreCandidate: "#b8a000",
  Follower: "#666666",
};

const TYPE_COLOR: Record<string, string> = {
  PreVote: "#b8a000",
  PreVoteReply: "#b8a000",
  RequestVote: "#e08a00",
  RequestVoteReply: "#e08a00",
  AppendEntries: "#1565c0",
  AppendEntriesReply: "#5e92d6",
  ReadIndex: "#7b1fa2",
  ReadIndexReply: "#7b1fa2",
  InstallSnapshot: "#00838f",
  InstallSnapshotReply: "#4fb3bf",
};

/** The messages, role changes and faults of one step, drawable as SVG or text. */
export class Timeline {
  /** Title, if any. */
  readonly title: string | undefined;
  /** Node ids, one lifeline each, in order. */
  readonly nodes: readonly NodeId[];
  /** Virtual time the step began. */
  readonly startMs: number;
  /** Virtual time the step ended. */
  readonly endMs: number;
  /** Every message of the step, in send order. */
  readonly arrows: readonly Arrow[];
  /** Role changes and faults, in time order. */
  readonly marks: readonly Mark[];
  /** Most arrows drawn one by one. */
  readonly arrowsMax: number;
  /** Events the recorder could not keep (a step longer than its bound); 0 normally. */
  readonly eventsOverflow: number;
  /** Nodes that were crashed when the step began (their lifelines start dashed). */
  readonly downAtStart: readonly NodeId[];
  /** Other names of the nodes (e.g. Figure 8's S1–S5). */
  readonly aliases: Readonly<Record<NodeId, string>>;

  /** @internal Built by {@linkcode TimelineRecorder.end}. */
  constructor(fields: {
    title: string | undefined;
    nodes: NodeId[];
    startMs: number;
    endMs: number;
    arrows: Arrow[];
    marks: Mark[];
    arrowsMax: number;
    eventsOverflow: number;
    downAtStart?: NodeId[];
    aliases?: Readonly<Record<NodeId, string>>;
  }) {
    this.title = fields.title;
    this.nodes = fields.nodes;
    this.startMs = fields.startMs;
    this.endMs = fields.endMs;
    this.arrows = fields.arrows;
    this.marks = fields.marks;
    this.arrowsMax = fields.arrowsMax;
    this.eventsOverflow = fields.eventsOverflow;
    this.downAtStart = fields.downAtStart ?? [];
    this.aliases = fields.aliases ?? {};
  }

  /** The arrows drawn one by one in the SVG (the rest are in collapsed rounds or left out). */
  get shown(): readonly Arrow[] {
    return this.lines(this.arrowsMax).lines.flatMap((l) => l.kind === "arrow" ? [l.arrow] : []);
  }

  /** A node's name as drawn: `n3` or `n3=S1`. */
  nameOf(id: NodeId): string {
    const alias = this.aliases[id];
    return alias === undefined ? id : `${id}=${alias}`;
  }

  /**
   * The lines of the picture in time order: runs of at least four consecutive routine messages
   * become one line of heartbeat rounds; past `linesMax` message lines, the lines kept are the
   * decisive ones (lowest {@linkcode Arrow.rank}), not the first ones. Marks are always kept.
   */
  lines(linesMax: number): { lines: TimelineLine[]; leftOut: number } {
    type Item = { atMs: number; arrow?: Arrow; mark?: Mark };
    const items: Item[] = [
      ...this.arrows.map((a): Item => ({ atMs: Math.max(a.sentMs, this.startMs), arrow: a })),
      ...this.marks.map((m): Item => ({ atMs: m.atMs, mark: m })),
    ];
    // Stable: at one time, messages in send order, then marks.
    items.sort((p, q) => p.atMs - q.atMs);
    const out: TimelineLine[] = [];
    let run: Arrow[] = [];
    const flush = () => {
      if (run.length >= ROUNDS_MIN_MESSAGES) {
        out.push({
          kind: "rounds",
          atMs: Math.max(run[0].sentMs, this.startMs),
          rounds: roundsOf(run),
        });
      } else {
        for (const a of run) {
          out.push({ kind: "arrow", atMs: Math.max(a.sentMs, this.startMs), arrow: a });
        }
      }
      run = [];
    };
    for (const it of items) {
      if (it.arrow?.routine) {
        run.push(it.arrow);
        continue;
      }
      flush();
      if (it.arrow !== undefined) out.push({ kind: "arrow", atMs: it.atMs, arrow: it.arrow });
      else out.push({ kind: "mark", atMs: it.atMs, mark: it.mark! });
    }
    flush();
    const rankOfLine = (l: TimelineLine) =>
      l.kind === "arrow" ? l.arrow.rank : l.kind === "rounds" ? 1 : -1;
    const messageLines = out.filter((l) => l.kind !== "mark");
    if (messageLines.length <= linesMax) return { lines: out, leftOut: 0 };
    const keep = new Set(
      messageLines.map((l, i) => ({ l, i })).sort((p, q) =>
        rankOfLine(p.l) - rankOfLine(q.l) || p.i - q.i
      ).slice(0, Math.max(0, linesMax)).map((p) => p.l),
    );
    let leftOut = 0;
    const kept = out.filter((l) => {
      if (l.kind === "mark" || keep.has(l)) return true;
      leftOut += l.kind === "rounds" ? l.rounds.arrows.length : 1;
      return false;
    });
    return { lines: kept, leftOut };
  }

  /** Message counts by type, e.g. `{ AppendEntries: 4, AppendEntriesReply: 4 }`, sorted by type. */
  countsByType(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const a of [...this.arrows].sort((x, y) => x.type < y.type ? -1 : 1)) {
      counts[a.type] = (counts[a.type] ?? 0) + 1;
    }
    return counts;
  }

  /** How many messages were lost (dropped at sending or at the receiver). */
  get lost(): number {
    return this.arrows.filter(isLost).length;
  }

  /** One line summary: time span and message counts. */
  summary(): string {
    const counts = Object.entries(this.countsByType()).map(([t, n]) => `${t} ${n}`).join(", ");
    const lost = this.lost > 0 ? `; ${this.lost} lost` : "";
    return `t=${this.startMs}–${this.endMs} ms: ${this.arrows.length} messages` +
      (counts ? ` (${counts})` : "") + lost;
  }

  /** A note when not every message is drawn or counted in a line, else undefined. */
  cappedNote(linesMax = this.arrowsMax): string | undefined {
    const parts: string[] = [];
    const { leftOut } = this.lines(linesMax);
    if (leftOut > 0) {
      parts.push(
        `${leftOut} of ${this.arrows.length} messages left out: the picture keeps the decisive ` +
          `ones (votes, rejections, entries) over heartbeats`,
      );
    }
    if (this.eventsOverflow > 0) {
      parts.push(`${this.eventsOverflow} later events were not recorded`);
    }
    return parts.length > 0 ? parts.join("; ") : undefined;
  }

  /**
   * Compact text, at most {@linkcode TEXT_COLUMNS_MAX} columns: one line per message, collapsed
   * heartbeat rounds, role change and fault, in time order; at most `linesMax` message lines
   * (default 40, the decisive ones first); then a legend.
   */
  toString(options: { linesMax?: number } = {}): string {
    const linesMax = Math.min(options.linesMax ?? 40, this.arrowsMax);
    const lines: string[] = [];
    if (this.title !== undefined) lines.push(`-- ${this.title} --`);
    lines.push(...wrapWords(this.summary(), TEXT_COLUMNS_MAX));
    for (const l of this.lines(linesMax).lines) {
      if (l.kind === "arrow") {
        const a = l.arrow;
        const arrow = a.fate === "delivered" ? "→" : a.fate === "in flight" ? "⇢" : "×";
        const end = a.fate === "delivered" ? `${a.endMs}` : a.fate === "in flight" ? "…" : a.fate;
        lines.push(
          `${pad(a.sentMs)}  ${this.nameOf(a.from)} ${arrow} ${this.nameOf(a.to)}  ${a.label}${
            a.duplicate ? " (duplicate)" : ""
          }  [${end}]`,
        );
      } else if (l.kind === "rounds") {
        lines.push(`${pad(l.rounds.fromMs)}  ${this.roundsText(l.rounds)}`);
      } else {
        const m = l.mark;
        lines.push(
          m.kind === "role"
            ? `${pad(m.atMs)}  ${this.nameOf(m.node!)} is ${m.label}`
            : `${pad(m.atMs)}  ** ${m.label}`,
        );
      }
    }
    const note = this.cappedNote(linesMax);
    if (note !== undefined) lines.push(...wrapWords(`(${note})`, TEXT_COLUMNS_MAX));
    lines.push(...TIMELINE_LEGEND);
    return lines.map((l) => clipText(l, TEXT_COLUMNS_MAX)).join("\n");
  }

  /** One line for collapsed rounds, e.g. `n2 ⇄ n1,n3  3 heartbeat rounds, nothing new (…)`. */
  roundsText(r: Rounds): string {
    const lost = r.lost > 0 ? `, ${r.lost} lost` : "";
    const who = r.leaders.length === 0
      ? r.followers.map((id) => this.nameOf(id)).join(",")
      : `${r.leaders.map((id) => this.nameOf(id)).join(",")} ⇄ ${
        r.followers.map((id) => this.nameOf(id)).join(",")
      }`;
    return `${who}  ${r.rounds} heartbeat round${r.rounds === 1 ? "" : "s"} to ${r.toMs}, ` +
      `nothing new (${r.arrows.length} messages${lost})`;
  }

  /** The sequence diagram as a standalone SVG document, with a legend. */
  toSvg(): string {
    const { lines } = this.lines(this.arrowsMax);
    const rowPx = 22;
    const gapPx = 22;
    const quietMs = 20;
    const top = this.title === undefined ? 40 : 60;
    const breaks: { y0: number; y1: number; ms: number }[] = [];
    const rowY: number[] = [];
    let y = top + 14;
    for (let i = 0; i < lines.length; i++) {
      if (i > 0) {
        const gapMs = lines[i].atMs - lines[i - 1].atMs;
        if (gapMs >= quietMs) {
          breaks.push({ y0: y, y1: y + gapPx, ms: gapMs });
          y += gapPx;
        }
        y += rowPx;
      }
      rowY.push(y);
    }
    const laneW = 170;
    const left = 90;
    const xOf = new Map(this.nodes.map((id, i) => [id, left + laneW / 2 + i * laneW]));
    const note = this.cappedNote();
    const legendItems = svgLegendItems();
    // Wide enough for the title and the summary (no clipped text); the page scales it down.
    const width = Math.max(
      left + laneW * this.nodes.length + 20,
      textPx(this.title ?? "", 13 * 0.62) + 16,
      textPx(this.summary(), CHAR_PX) + 16,
      textPx(`(${note ?? ""})`, CHAR_PX) + 16,
    );
    const lastY = y;
    const bottom = lastY + 24;
    const legendRows = layoutLegend(legendItems, width - 16);
    const noteH = note === undefined ? 0 : 18;
    const legendTop = bottom + noteH + 6;
    const height = legendTop + legendRows.length * 16 + 8;
    const out: string[] = [];
    out.push(
      `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
        `viewBox="0 0 ${width} ${height}" style="max-width:100%;height:auto" ` +
        `font-family="monospace" font-size="10">`,
    );
    out.push(
      `<defs><marker id="ah" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" ` +
        `markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" ` +
        `fill="context-stroke"/></marker></defs>`,
    );
    out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
    if (this.title !== undefined) {
      out.push(
        `<text class="title" x="8" y="18" font-size="13" font-weight="bold">${
          esc(this.title)
        }</text>`,
      );
    }
    out.push(`<text x="8" y="${top - 22}" fill="#555">${esc(this.summary())}</text>`);
    // Lifelines and headers; a node's lifeline is dashed red while it is down.
    const downSpans = this.#downSpans(lines, rowY, top, lastY + 10);
    for (const [id, x] of xOf) {
      out.push(
        `<text x="${x}" y="${top - 6}" text-anchor="middle" font-size="12" ` +
          `font-weight="bold">${esc(this.nameOf(id))}</text>`,
      );
      out.push(
        `<line x1="${x}" y1="${top}" x2="${x}" y2="${lastY + 10}" stroke="#bbb" stroke-width="2"/>`,
      );
      for (const [y0, y1] of downSpans.get(id) ?? []) {
        out.push(
          `<line class="down" x1="${x}" y1="${y0}" x2="${x}" y2="${y1}" stroke="#c62828" ` +
            `stroke-width="2" stroke-dasharray="2,3"><title>${esc(id)} is down</title></line>`,
        );
      }
    }
    // Time labels on the left (thinned so they do not overlap).
    let lastLabelY = -Infinity;
    lines.forEach((l, i) => {
      const ty = rowY[i];
      if (ty - lastLabelY < 11 || (i > 0 && lines[i - 1].atMs === l.atMs)) return;
      lastLabelY = ty;
      out.push(
        `<text x="${left - 8}" y="${ty + 3}" text-anchor="end" fill="#888">${l.atMs}</text>`,
      );
    });
    for (const b of breaks) {
      const mid = (b.y0 + b.y1) / 2 + rowPx / 2;
      out.push(
        `<line x1="${left}" y1="${mid}" x2="${width - 10}" y2="${mid}" stroke="#ddd" ` +
          `stroke-dasharray="2,4"/>`,
        `<text x="${left - 8}" y="${mid + 3}" text-anchor="end" fill="#aaa">` +
          `+${b.ms}</text>`,
      );
    }
    lines.forEach((l, i) => {
      const ly = rowY[i];
      if (l.kind === "mark") out.push(...this.#markSvg(l.mark, ly, xOf, left, width));
      else if (l.kind === "rounds") out.push(...this.#roundsSvg(l.rounds, ly, xOf));
      else out.push(...arrowSvg(l.arrow, ly, xOf));
    });
    if (note !== undefined) {
      out.push(`<text x="8" y="${bottom + 10}" fill="#c62828">(${esc(note)})</text>`);
    }
    out.push(`<g class="legend">`);
    legendRows.forEach((row, r) => {
      let x = 8;
      const ly = legendTop + r * 16 + 8;
      for (const item of row) {
        out.push(item.draw(x, ly));
        x += item.width + 14;
      }
    });
    out.push(`</g>`);
    out.push(`</svg>`);
    return out.join("\n");
  }

  /** Per node, the y spans of its lifeline while it is down. */
  #downSpans(
    lines: readonly TimelineLine[],
    rowY: readonly number[],
    top: number,
    bottom: number,
  ): Map<NodeId, [number, number][]> {
    const spans = new Map<NodeId, [number, number][]>();
    const since = new Map<NodeId, number>(this.downAtStart.map((id) => [id, top]));
    lines.forEach((l, i) => {
      if (l.kind !== "mark" || l.mark.kind !== "fault") return;
      const [what, id] = l.mark.label.split(" ");
      if (what === "crash" && !since.has(id)) since.set(id, rowY[i]);
      if (what === "restart" && since.has(id)) {
        spans.set(id, [...(spans.get(id) ?? []), [since.get(id)!, rowY[i]]]);
        since.delete(id);
      }
    });
    for (const [id, y0] of since) spans.set(id, [...(spans.get(id) ?? []), [y0, bottom]]);
    return spans;
  }

  #markSvg(m: Mark, my: number, xOf: Map<NodeId, number>, left: number, width: number): string[] {
    if (m.kind === "fault") {
      return [
        `<line x1="${left}" y1="${my}" x2="${width - 10}" y2="${my}" stroke="#c62828" ` +
        `stroke-dasharray="6,3"/>`,
        `<text x="${left + 2}" y="${my - 4}" fill="#c62828">${esc(m.label)}</text>`,
      ];
    }
    const x = xOf.get(m.node!)!;
    const color = ROLE_COLOR[m.role!];
    return [
      `<rect class="mark" x="${x - 5}" y="${my - 5}" width="10" height="10" fill="${color}"/>`,
      `<text x="${x + 8}" y="${my + 4}" fill="${color}" font-weight="bold">` +
      `${esc(m.label)}</text>`,
    ];
  }

  #roundsSvg(r: Rounds, ry: number, xOf: Map<NodeId, number>): string[] {
    const xs = [...r.leaders, ...r.followers].map((id) => xOf.get(id)!);
    const x0 = Math.min(...xs) - 6;
    const x1 = Math.max(...xs) + 6;
    const label = `⇄ ${this.roundsText(r)}`;
    return [
      // The label sits above the band and below the previous row's × (rows are 22 px apart).
      `<rect class="rounds" x="${x0}" y="${ry - 2}" width="${x1 - x0}" height="8" ` +
      `fill="#e3ecf7" stroke="#9bb5d8"><title>${esc(label)}</title></rect>`,
      `<text x="${x0}" y="${ry - 4}" fill="#5e7fa8" font-size="9">${esc(label)}</text>`,
    ];
  }

  /** The diagram as an HTML fragment (the SVG inline, with a caption). */
  toHtml(): string {
    return `<div style="max-width:100%">${this.toSvg()}</div>`;
  }

  /** Deno's Jupyter kernel calls this to draw the diagram (text as fallback). */
  [JUPYTER_DISPLAY](): Record<string, string> {
    return { "image/svg+xml": this.toSvg(), "text/plain": this.toString() };
  }
}

function isLost(a: Arrow): boolean {
  return a.fate.startsWith("dropped") || a.fate.startsWith("lost");
}

function roundsOf(run: readonly Arrow[]): Rounds {
  const perLink = new Map<string, number>();
  const leaders = new Set<NodeId>();
  const followers = new Set<NodeId>();
  for (const a of run) {
    const k = `${a.type} ${a.from}>${a.to}`;
    perLink.set(k, (perLink.get(k) ?? 0) + 1);
    if (a.type === "AppendEntries") {
      leaders.add(a.from);
      followers.add(a.to);
    } else {
      leaders.add(a.to);
      followers.add(a.from);
    }
  }
  return {
    fromMs: run[0].sentMs,
    toMs: run[run.length - 1].sentMs,
    arrows: run,
    rounds: Math.max(...perLink.values()),
    leaders: [...leaders].sort(),
    followers: [...followers].filter((id) => !leaders.has(id)).sort(),
    lost: run.filter(isLost).length,
  };
}

function arrowSvg(a: Arrow, y1: number, xOf: Map<NodeId, number>): string[] {
  const out: string[] = [];
  const x1 = xOf.get(a.from)!;
  const x2full = xOf.get(a.to)!;
  const color = TYPE_COLOR[a.type] ?? "#333";
  const delivered = a.fate === "delivered";
  const inFlight = a.fate === "in flight";
  // A lost message stops part-way at an ×; one still in flight stops short with a dashed line.
  const x2 = delivered ? x2full : inFlight ? x1 + (x2full - x1) * 0.8 : x1 + (x2full - x1) * 0.6;
  const y2 = y1 + 6;
  const dash = inFlight || a.duplicate ? ` stroke-dasharray="4,3"` : "";
  const head = delivered || inFlight ? ` marker-end="url(#ah)"` : "";
  out.push(
    `<line x1="${x1}" y1="${y1}" x2="${r1(x2)}" y2="${y2}" stroke="${color}" ` +
      `stroke-width="1.2"${dash}${head}><title>${
        esc(`${a.label}: sent at ${a.sentMs} ms, ${a.fate} at ${a.endMs} ms`)
      }</title></line>`,
  );
  if (!delivered && !inFlight) {
    out.push(
      `<path class="lost" d="M${r1(x2 - 3.5)},${r1(y2 - 3.5)} L${r1(x2 + 3.5)},${r1(y2 + 3.5)} ` +
        `M${r1(x2 - 3.5)},${r1(y2 + 3.5)} L${r1(x2 + 3.5)},${r1(y2 - 3.5)}" stroke="#c62828" ` +
        `stroke-width="2"/>`,
    );
  }
  // Label above the line, next to the sender; delivery time on hover.
  const lx = x1 + (x2 > x1 ? 6 : -6);
  out.push(
    `<text x="${r1(lx)}" y="${r1(y1 - 4)}" text-anchor="${x2 > x1 ? "start" : "end"}" ` +
      `fill="${color}" font-size="9">${esc(shorten(a.label, 44))}</text>`,
  );
  return out;
}

/** Approximate width of a monospace character of the 10px font, in pixels. */
const CHAR_PX = 6.1;

function textPx(s: string, charPx: number): number {
  return Math.ceil(s.length * charPx);
}

interface LegendItem {
  readonly width: number;
  draw(x: number, y: number): string;
}

/** The SVG legend: a sample of each mark and what it means. */
function svgLegendItems(): LegendItem[] {
  const item = (sample: (x: number, y: number) => string, text: string): LegendItem => ({
    width: 26 + textPx(text, CHAR_PX),
    draw: (x, y) =>
      `${sample(x, y)}<text x="${x + 26}" y="${y + 3}" fill="#444">${esc(text)}</text>`,
  });
  return [
    item(
      (x, y) =>
        `<line x1="${x}" y1="${y}" x2="${
          x + 20
        }" y2="${y}" stroke="#1565c0" marker-end="url(#ah)"/>`,
      "delivered",
    ),
    item(
      (x, y) =>
        `<line x1="${x}" y1="${y}" x2="${x + 20}" y2="${y}" stroke="#1565c0" ` +
        `stroke-dasharray="4,3" marker-end="url(#ah)"/>`,
      "dashed: in flight at the step's end, or a duplicate",
    ),
    item(
      (x, y) =>
        `<line x1="${x}" y1="${y}" x2="${x + 14}" y2="${y}" stroke="#1565c0"/>` +
        `<path d="M${x + 11},${y - 3.5} L${x + 18},${y + 3.5} M${x + 11},${y + 3.5} ` +
        `L${x + 18},${y - 3.5}" stroke="#c62828" stroke-width="2"/>`,
      "× lost (link cut, loss, receiver down)",
    ),
    item(
      (x, y) => `<rect x="${x + 5}" y="${y - 5}" width="10" height="10" fill="#2e7d32"/>`,
      "role change",
    ),
    item(
      (x, y) =>
        `<line x1="${x}" y1="${y}" x2="${
          x + 20
        }" y2="${y}" stroke="#c62828" stroke-dasharray="6,3"/>`,
      "fault (crash, cut, heal, …)",
    ),
    item(
      (x, y) =>
        `<line x1="${x + 10}" y1="${y - 6}" x2="${x + 10}" y2="${y + 6}" stroke="#c62828" ` +
        `stroke-width="2" stroke-dasharray="2,3"/>`,
      "node down",
    ),
    item(
      (x, y) =>
        `<rect x="${x}" y="${y - 4}" width="20" height="8" fill="#e3ecf7" stroke="#9bb5d8"/>`,
      "heartbeat rounds that changed nothing, collapsed",
    ),
    item(
      (x, y) => `<text x="${x}" y="${y + 3}" fill="#aaa">+ms</text>`,
      "quiet time skipped",
    ),
  ];
}

function layoutLegend(items: readonly LegendItem[], widthPx: number): LegendItem[][] {
  const rows: LegendItem[][] = [[]];
  let used = 0;
  for (const it of items) {
    if (rows.at(-1)!.length > 0 && used + it.width > widthPx) {
      rows.push([]);
      used = 0;
    }
    rows.at(-1)!.push(it);
    used += it.width + 14;
  }
  return rows;
}

function wrapWords(s: string, max: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of s.split(" ")) {
    if (line !== "" && (line + " " + word).length > max) {
      out.push(line);
      line = "  " + word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  out.push(line);
  return out;
}

function clipText(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function pad(ms: number): string {
  return `t=${String(ms).padStart(6)}`;
}

function r1(x: number): string {
  return String(Math.round(x * 10) / 10);
}

function shorten(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}
