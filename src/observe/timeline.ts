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
import { JUPYTER_DISPLAY } from "./table.ts";

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
  /** Most arrows drawn (the first ones in time order). Default 150. */
  readonly arrowsMax?: number;
  /** Title shown above the diagram. */
  readonly title?: string;
}

const ARROWS_MAX_DEFAULT = 150;
/** Most events one recording keeps; past it, events are counted but not kept. */
const RECORDED_EVENTS_MAX = 50_000;
/** Most undelivered messages remembered across steps (to draw their send time later). */
const PENDING_MAX = 10_000;

interface Sent {
  readonly message: Message;
  readonly sentMs: number;
  readonly fate: string;
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

  /** Subscribes to `cluster`'s events. Use {@linkcode recorderFor} to share one per cluster. */
  constructor(cluster: Cluster) {
    this.#cluster = cluster;
    cluster.onEvent((e) => {
      if (e.kind === "send") {
        const sent: Sent = { message: e.message, sentMs: e.atMs, fate: e.fate, deliveries: 0 };
        if (!e.fate.startsWith("dropped")) this.#remember(sent);
        this.#keep({ kind: "send", sent });
      } else if (e.kind === "deliver") {
        const sent = this.#pending.get(e.message) ??
          { message: e.message, sentMs: e.atMs, fate: "sent", deliveries: 0 };
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
    });
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
  };
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
  /** Most arrows drawn. */
  readonly arrowsMax: number;
  /** Events the recorder could not keep (a step longer than its bound); 0 normally. */
  readonly eventsOverflow: number;

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
  }) {
    this.title = fields.title;
    this.nodes = fields.nodes;
    this.startMs = fields.startMs;
    this.endMs = fields.endMs;
    this.arrows = fields.arrows;
    this.marks = fields.marks;
    this.arrowsMax = fields.arrowsMax;
    this.eventsOverflow = fields.eventsOverflow;
  }

  /** The arrows that are drawn: the first `arrowsMax`. */
  get shown(): readonly Arrow[] {
    return this.arrows.slice(0, this.arrowsMax);
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
    return this.arrows.filter((a) => a.fate.startsWith("dropped") || a.fate.startsWith("lost"))
      .length;
  }

  /** One line summary: time span and message counts. */
  summary(): string {
    const counts = Object.entries(this.countsByType()).map(([t, n]) => `${t} ${n}`).join(", ");
    const lost = this.lost > 0 ? `; ${this.lost} lost` : "";
    return `t=${this.startMs}–${this.endMs} ms: ${this.arrows.length} messages` +
      (counts ? ` (${counts})` : "") + lost;
  }

  /** A note when not everything is drawn, else undefined. */
  cappedNote(): string | undefined {
    const parts: string[] = [];
    if (this.arrows.length > this.arrowsMax) {
      parts.push(`showing the first ${this.arrowsMax} of ${this.arrows.length} messages`);
    }
    if (this.eventsOverflow > 0) {
      parts.push(`${this.eventsOverflow} later events were not recorded`);
    }
    return parts.length > 0 ? parts.join("; ") : undefined;
  }

  /**
   * Compact text: one line per message, role change and fault, in time order; at most `linesMax`
   * message lines (default 40).
   */
  toString(options: { linesMax?: number } = {}): string {
    const linesMax = Math.min(options.linesMax ?? 40, this.arrowsMax);
    const lines: string[] = [];
    if (this.title !== undefined) lines.push(`-- ${this.title} --`);
    lines.push(this.summary());
    const items: { atMs: number; order: number; text: string }[] = [];
    let order = 0;
    const shown = this.arrows.slice(0, linesMax);
    for (const a of shown) {
      const arrow = a.fate === "delivered" ? "→" : a.fate === "in flight" ? "⇢" : "×";
      const end = a.fate === "delivered" ? `${a.endMs}` : a.fate === "in flight" ? "…" : a.fate;
      items.push({
        atMs: a.sentMs,
        order: order++,
        text: `${pad(a.sentMs)}  ${a.from} ${arrow} ${a.to}  ${a.label}${
          a.duplicate ? " (duplicate)" : ""
        }  [${end}]`,
      });
    }
    const lastShownMs = shown.at(-1)?.sentMs ?? this.endMs;
    for (const m of this.marks) {
      if (this.arrows.length > linesMax && m.atMs > lastShownMs) continue;
      items.push({
        atMs: m.atMs,
        order: order++,
        text: m.kind === "role"
          ? `${pad(m.atMs)}  ${m.node} is ${m.label}`
          : `${pad(m.atMs)}  ** ${m.label}`,
      });
    }
    items.sort((a, b) => a.atMs - b.atMs || a.order - b.order);
    for (const i of items) lines.push(i.text);
    if (this.arrows.length > linesMax) {
      lines.push(`(listing the first ${linesMax} of ${this.arrows.length} messages)`);
    }
    if (this.eventsOverflow > 0) {
      lines.push(`(${this.eventsOverflow} later events were not recorded)`);
    }
    return lines.join("\n");
  }

  /** The sequence diagram as a standalone SVG document. */
  toSvg(): string {
    const shown = this.shown;
    const lastShownMs = this.arrows.length > this.arrowsMax
      ? shown.at(-1)?.endMs ?? this.endMs
      : this.endMs;
    const marks = this.marks.filter((m) => m.atMs <= lastShownMs);
    // One row per message and per mark, in time order: a sequence diagram stays readable when
    // a broadcast sends many messages in the same millisecond. Quiet stretches are labelled.
    type Row = { atMs: number; arrow?: Arrow; mark?: Mark };
    const rows: Row[] = [
      ...marks.map((m): Row => ({ atMs: m.atMs, mark: m })),
      ...shown.map((a): Row => ({ atMs: Math.max(a.sentMs, this.startMs), arrow: a })),
    ].sort((p, q) => p.atMs - q.atMs || (p.mark ? -1 : 0) - (q.mark ? -1 : 0));
    const rowPx = 18;
    const gapPx = 22;
    const quietMs = 20;
    const top = this.title === undefined ? 40 : 60;
    const breaks: { y0: number; y1: number; ms: number }[] = [];
    const rowY: number[] = [];
    let y = top + 10;
    for (let i = 0; i < rows.length; i++) {
      if (i > 0) {
        const gapMs = rows[i].atMs - rows[i - 1].atMs;
        if (gapMs >= quietMs) {
          breaks.push({ y0: y, y1: y + gapPx, ms: gapMs });
          y += gapPx;
        }
        y += rowPx;
      }
      rowY.push(y);
    }
    const sorted = rows.map((r) => r.atMs);
    const yOf = new Map<number, number>();
    rows.forEach((r, i) => {
      if (!yOf.has(r.atMs)) yOf.set(r.atMs, rowY[i]);
    });
    const laneW = 170;
    const left = 90;
    const xOf = new Map(this.nodes.map((id, i) => [id, left + laneW / 2 + i * laneW]));
    const width = left + laneW * this.nodes.length + 20;
    const bottom = y + 24;
    const note = this.cappedNote();
    const height = bottom + (note === undefined ? 10 : 28);
    const out: string[] = [];
    out.push(
      `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
        `viewBox="0 0 ${width} ${height}" font-family="monospace" font-size="10">`,
    );
    out.push(
      `<defs><marker id="ah" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" ` +
        `markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" ` +
        `fill="context-stroke"/></marker></defs>`,
    );
    out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
    if (this.title !== undefined) {
      out.push(`<text x="8" y="18" font-size="13" font-weight="bold">${esc(this.title)}</text>`);
    }
    out.push(`<text x="8" y="${top - 22}" fill="#555">${esc(this.summary())}</text>`);
    // Lifelines and headers.
    for (const [id, x] of xOf) {
      out.push(
        `<text x="${x}" y="${top - 6}" text-anchor="middle" font-size="12" ` +
          `font-weight="bold">${esc(id)}</text>`,
      );
      out.push(
        `<line x1="${x}" y1="${top}" x2="${x}" y2="${y + 10}" stroke="#bbb" stroke-width="2"/>`,
      );
    }
    // Time labels on the left for every distinct time (thinned so they do not overlap).
    let lastLabelY = -Infinity;
    for (const t of sorted) {
      const ty = yOf.get(t)!;
      if (ty - lastLabelY < 11) continue;
      lastLabelY = ty;
      out.push(`<text x="${left - 8}" y="${ty + 3}" text-anchor="end" fill="#888">${t}</text>`);
    }
    for (const b of breaks) {
      const mid = (b.y0 + b.y1) / 2;
      out.push(
        `<line x1="${left}" y1="${mid}" x2="${width - 10}" y2="${mid}" stroke="#ddd" ` +
          `stroke-dasharray="2,4"/>`,
        `<text x="${width - 12}" y="${mid - 2}" text-anchor="end" fill="#aaa">` +
          `${b.ms} ms</text>`,
      );
    }
    const markY = new Map<Mark, number>();
    const arrowY = new Map<Arrow, number>();
    rows.forEach((r, i) => {
      if (r.mark) markY.set(r.mark, rowY[i]);
      if (r.arrow) arrowY.set(r.arrow, rowY[i]);
    });
    for (const m of marks) {
      const my = markY.get(m)!;
      if (m.kind === "fault") {
        out.push(
          `<line x1="${left}" y1="${my}" x2="${width - 10}" y2="${my}" stroke="#c62828" ` +
            `stroke-dasharray="6,3"/>`,
          `<text x="${left + 2}" y="${my - 3}" fill="#c62828">${esc(m.label)}</text>`,
        );
      } else {
        const x = xOf.get(m.node!)!;
        const color = ROLE_COLOR[m.role!];
        out.push(
          `<rect x="${x - 5}" y="${my - 5}" width="10" height="10" fill="${color}"/>`,
          `<text x="${x + 8}" y="${my + 4}" fill="${color}" font-weight="bold">` +
            `${esc(m.label)}</text>`,
        );
      }
    }
    for (const a of shown) {
      const x1 = xOf.get(a.from)!;
      const x2full = xOf.get(a.to)!;
      const y1 = arrowY.get(a)!;
      const color = TYPE_COLOR[a.type] ?? "#333";
      const delivered = a.fate === "delivered";
      const inFlight = a.fate === "in flight";
      // A lost message stops part-way at an ×; one still in flight runs to the bottom edge.
      const x2 = delivered
        ? x2full
        : inFlight
        ? x1 + (x2full - x1) * 0.8
        : x1 + (x2full - x1) * 0.6;
      const y2 = y1 + 8;
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
          `<path d="M${r1(x2 - 4)},${y2 - 4} L${r1(x2 + 4)},${y2 + 4} M${r1(x2 - 4)},${y2 + 4} ` +
            `L${r1(x2 + 4)},${y2 - 4}" stroke="#c62828" stroke-width="2"/>`,
        );
      }
      // Label above the line, next to the sender; delivery time on hover.
      const lx = x1 + (x2 > x1 ? 6 : -6);
      out.push(
        `<text x="${r1(lx)}" y="${r1(y1 - 3)}" text-anchor="${x2 > x1 ? "start" : "end"}" ` +
          `fill="${color}" font-size="9">${esc(shorten(a.label, 44))}</text>`,
      );
    }
    if (note !== undefined) {
      out.push(`<text x="8" y="${bottom + 12}" fill="#c62828">(${esc(note)})</text>`);
    }
    out.push(`</svg>`);
    return out.join("\n");
  }

  /** The diagram as an HTML fragment (the SVG inline, with a caption). */
  toHtml(): string {
    return `<div>${this.toSvg()}</div>`;
  }

  /** Deno's Jupyter kernel calls this to draw the diagram (text as fallback). */
  [JUPYTER_DISPLAY](): Record<string, string> {
    return { "image/svg+xml": this.toSvg(), "text/plain": this.toString() };
  }
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
