/**
 * Node tables: one row per node (id, role, term, votedFor, leader, lastLogIndex, lastLogTerm,
 * commitIndex, lastApplied, status), the leader's nextIndex/matchIndex per follower, the logs as an
 * index-aligned grid (one column per index, the entry's term in each cell, uncommitted and
 * conflicting entries marked) with each node's election timer, and each node's keys. Rendered as
 * text for terminals (at most 100 columns, with a legend) and as HTML for Deno's Jupyter kernel.
 *
 * @module
 */

import type { NodeId, RaftLogEntry, RaftRole } from "../raft/types.ts";
import type { Cluster } from "../sim/cluster.ts";
import { describeCommand, storeStrings } from "./describe.ts";
import { decodeConfChange } from "../raft/membership.ts";

/** One node's row. */
export interface NodeRow {
  /** Node id. */
  readonly id: NodeId;
  /** Role. */
  readonly role: RaftRole;
  /** Current term. */
  readonly term: number;
  /** Vote in the current term ("-" when none). */
  readonly votedFor: NodeId | undefined;
  /** Leader known in the current term. */
  readonly leader: NodeId | undefined;
  /** Index of the last log entry. */
  readonly lastLogIndex: number;
  /** Term of the last log entry. */
  readonly lastLogTerm: number;
  /** Highest index known committed. */
  readonly commitIndex: number;
  /** Highest index applied to the store. */
  readonly lastApplied: number;
  /** up, crashed, paused or cut off. */
  readonly status: string;
  /**
   * Time left before the node's election timeout fires and it stands for election (RaftScope's
   * ring); undefined for a leader and for a node that is down.
   */
  readonly electionTimeoutLeftMs?: number;
}

/** The entry one node holds at one index of the log grid. */
export interface LogCell {
  /** The entry's term (for a compacted index, the node no longer holds it: 0). */
  readonly term: number;
  /** Compacted into the node's snapshot: the entry is no longer held. */
  readonly compacted: boolean;
  /** At or below the node's commitIndex. */
  readonly committed: boolean;
  /** Its term differs from the reference log's entry at the same index. */
  readonly conflict: boolean;
}

/** The logs side by side, one column per index (the state before and after a repair). */
export interface LogGrid {
  /** First index shown. */
  readonly fromIndex: number;
  /** Last index shown. */
  readonly toIndex: number;
  /**
   * The log the others are compared with: the leader's (of the highest term, if it is up), else
   * undefined — then a cell is a conflict when the nodes hold different terms at its index.
   */
  readonly reference: NodeId | undefined;
  /** Per node, a cell per index from `fromIndex` (undefined: no entry there). */
  readonly cells: ReadonlyMap<NodeId, readonly (LogCell | undefined)[]>;
  /** The commands of the entries shown, as `index command`, from the reference (or longest) log. */
  readonly commands: readonly string[];
  /** Whose log `commands` come from. */
  readonly commandsOf: NodeId | undefined;
  /** Entries that differ from the reference, as `node index:term command`. */
  readonly differing: readonly string[];
  /** Per node, the last index its snapshot covers (0: none). */
  readonly snapshotIndexes: ReadonlyMap<NodeId, number>;
  /** Largest election timeout (scale of the timer bars). */
  readonly electionTimeoutMaxMs: number;
  /** Heartbeat interval of the leaders. */
  readonly heartbeatIntervalMs: number;
}

/** A leader's view of one follower. */
export interface ProgressRow {
  /** The leader. */
  readonly leader: NodeId;
  /** The follower. */
  readonly follower: NodeId;
  /** Next index to send. */
  readonly nextIndex: number;
  /** Highest index known replicated. */
  readonly matchIndex: number;
  /** Probe or Replicate. */
  readonly state: string;
}

/** Options for {@linkcode nodeTable}. */
export interface NodeTableOptions {
  /** How many of the newest log indexes to show in the log grid. Default 8. */
  readonly logEntries?: number;
  /** How many keys to show per node. Default 8. */
  readonly keys?: number;
  /** A title printed above the table. */
  readonly title?: string;
  /** Other names of the nodes shown next to theirs, e.g. Figure 8's `{ n3: "S1" }`. */
  readonly aliases?: Readonly<Record<NodeId, string>>;
}

/** Widest line of any text rendering of the observe module (node tables, timelines). */
export const TEXT_COLUMNS_MAX = 100;

/** What each mark of the node table means (text; the HTML shows the same words). */
export const NODE_TABLE_LEGEND: readonly string[] = [
  "legend: 3 = an entry of term 3 · *3 = not committed on that node · !3 = differs from the",
  "  leader's entry there · s = compacted away · snapshot ≤40 = the snapshot covers 1..40",
  "  role - = the node is down (crashed)",
  "  election timer: █ = time left until the node stands for election (RaftScope's ring)",
  "  progress: Probe = the leader seeks where the follower's log matches, one message at a time;",
  "  Replicate = it streams entries; Snapshot = it sends InstallSnapshot chunks",
];

/** The key Deno's Jupyter kernel looks up to render an object richly. */
export const JUPYTER_DISPLAY: unique symbol = Symbol.for("Jupyter.display");

/** The node table's columns, in order: one concept, one name, wherever a node table is shown. */
export const NODE_TABLE_COLUMNS = [
  "node",
  "role",
  "term",
  "votedFor",
  "leader",
  "lastLogIndex",
  "lastLogTerm",
  "commitIndex",
  "lastApplied",
  "status",
] as const;

/** The state of every node at one moment, printable as text or shown as HTML in Jupyter. */
export class NodeTable {
  /** Title, if any. */
  readonly title: string | undefined;
  /** Virtual time of the snapshot. */
  readonly atMs: number;
  /** One row per node. */
  readonly rows: readonly NodeRow[];
  /** Leaders' progress per follower. */
  readonly progress: readonly ProgressRow[];
  /** Per node, the newest log entries rendered as `index:term command`, oldest first. */
  readonly logs: ReadonlyMap<NodeId, { readonly skipped: number; readonly entries: string[] }>;
  /** Per node, its keys as `key=value`. */
  readonly keys: ReadonlyMap<NodeId, { readonly total: number; readonly shown: string[] }>;
  /** The logs as an index-aligned grid, when the table was taken from a cluster. */
  readonly grid: LogGrid | undefined;
  /** Other names of the nodes (e.g. Figure 8's S1–S5). */
  readonly aliases: Readonly<Record<NodeId, string>>;

  /** @internal Built by {@linkcode nodeTable}. */
  constructor(fields: {
    title: string | undefined;
    atMs: number;
    rows: NodeRow[];
    progress: ProgressRow[];
    logs: Map<NodeId, { skipped: number; entries: string[] }>;
    keys: Map<NodeId, { total: number; shown: string[] }>;
    grid?: LogGrid;
    aliases?: Readonly<Record<NodeId, string>>;
  }) {
    this.title = fields.title;
    this.atMs = fields.atMs;
    this.rows = fields.rows;
    this.progress = fields.progress;
    this.logs = fields.logs;
    this.keys = fields.keys;
    this.grid = fields.grid;
    this.aliases = fields.aliases ?? {};
  }

  /** A node's name as shown: `n3` or, with an alias, `n3=S1`. */
  nameOf(id: NodeId): string {
    const alias = this.aliases[id];
    return alias === undefined ? id : `${id}=${alias}`;
  }

  /** The cells of the main table, header first. A crashed node has no role and knows no leader. */
  cells(): string[][] {
    return [
      [...NODE_TABLE_COLUMNS],
      ...this.rows.map((r) => {
        const down = r.status === "crashed";
        return [
          this.nameOf(r.id),
          down ? "-" : r.role,
          String(r.term),
          r.votedFor ?? "-",
          down ? "-" : r.leader ?? "-",
          String(r.lastLogIndex),
          String(r.lastLogTerm),
          String(r.commitIndex),
          String(r.lastApplied),
          r.status,
        ];
      }),
    ];
  }

  /** The table as aligned plain text, at most {@linkcode TEXT_COLUMNS_MAX} columns wide. */
  toString(): string {
    const lines: string[] = [];
    if (this.title !== undefined) {
      lines.push(clip(`== ${this.title} (t=${this.atMs} ms) ==`, TEXT_COLUMNS_MAX));
    }
    const cells = this.cells();
    const widths = cells[0].map((_, c) => Math.max(...cells.map((row) => row[c].length)));
    // Two spaces between columns, one when two would pass the width limit.
    const total = widths.reduce((a, b) => a + b, 0);
    const gap = total + 2 * (widths.length - 1) <= TEXT_COLUMNS_MAX ? "  " : " ";
    for (const row of cells) {
      lines.push(row.map((cell, c) => cell.padEnd(widths[c])).join(gap).trimEnd());
    }
    for (const p of this.progressLines()) lines.push(p);
    if (this.grid !== undefined) {
      lines.push(...this.gridLines());
    } else {
      for (const [id, log] of this.logs) {
        const head = log.skipped > 0 ? [`… ${log.skipped} more`] : [];
        const entries = log.entries.length === 0 ? ["(empty)"] : log.entries;
        lines.push(...wrap(`log ${id}: `, [...head, ...entries], " · "));
      }
    }
    for (const [id, k] of this.keys) {
      const more = k.total > k.shown.length ? [`… ${k.total - k.shown.length} more`] : [];
      const shown = k.shown.length === 0 ? ["(none)"] : k.shown;
      lines.push(...wrap(`keys ${this.nameOf(id)}: `, [...shown, ...more], ", "));
    }
    if (this.grid !== undefined) lines.push(...NODE_TABLE_LEGEND);
    return lines.join("\n");
  }

  /** Per leader, each follower's nextIndex, matchIndex and replication state (wrapped). */
  progressLines(): string[] {
    const byLeader = new Map<NodeId, ProgressRow[]>();
    for (const p of this.progress) {
      byLeader.set(p.leader, [...(byLeader.get(p.leader) ?? []), p]);
    }
    return [...byLeader].flatMap(([leader, rows]) =>
      wrap(
        `progress of leader ${this.nameOf(leader)}: `,
        rows.map((p) =>
          `${
            this.nameOf(p.follower)
          } nextIndex=${p.nextIndex} matchIndex=${p.matchIndex} (${p.state})`
        ),
        ", ",
      )
    );
  }

  /**
   * The log grid as text: a header of indexes, then per node the term of each entry (marked `*`
   * when not committed there, `!` when it differs from the leader's) and its election timer.
   */
  gridLines(): string[] {
    const g = this.grid;
    if (g === undefined) return [];
    const ids = [...g.cells.keys()];
    const nameW = Math.max(4, ...ids.map((id) => this.nameOf(id).length));
    const indexes: number[] = [];
    for (let i = g.fromIndex; i <= g.toIndex; i++) indexes.push(i);
    let termW = 1;
    for (const row of g.cells.values()) {
      for (const c of row) if (c !== undefined) termW = Math.max(termW, String(c.term).length);
    }
    const cellW = Math.max(termW + 1, ...indexes.map((i) => String(i).length));
    // A column for the snapshots, once some node has one.
    const snaps = g.snapshotIndexes;
    const snapW = [...snaps.values()].some((i) => i > 0)
      ? Math.max("snapshot".length, ...[...snaps.values()].map((i) => `≤${i}`.length))
      : 0;
    const snapCell = (id: NodeId) => {
      if (snapW === 0) return "";
      const i = snaps.get(id) ?? 0;
      return ` ${(i > 0 ? `≤${i}` : "-").padEnd(snapW)}`;
    };
    const head = `${"log".padEnd(nameW)}${snapW > 0 ? ` ${"snapshot".padEnd(snapW)}` : ""} ${
      indexes.map((i) => String(i).padStart(cellW)).join(" ")
    }`;
    const lines = [
      `${head.padEnd(nameW + (snapW > 0 ? snapW + 1 : 0) + indexes.length * (cellW + 1))}` +
      `  election timer`,
    ];
    const byId = new Map(this.rows.map((r) => [r.id, r]));
    for (const id of ids) {
      const row = g.cells.get(id)!;
      const text = row.map((c) => cellText(c).padStart(cellW)).join(" ");
      const timer = timerText(byId.get(id), g);
      lines.push(`${this.nameOf(id).padEnd(nameW)}${snapCell(id)} ${text}  ${timer}`.trimEnd());
    }
    if (indexes.length === 0) lines.push("(every log is empty)");
    if (g.commandsOf !== undefined && g.commands.length > 0) {
      lines.push(...wrap(`entries of ${this.nameOf(g.commandsOf)}: `, g.commands, " · "));
    }
    for (const d of g.differing) lines.push(...wrap("  differs: ", [d], ""));
    return lines;
  }

  /** The table as an HTML fragment: the main table, the log grid with timers, keys and legend. */
  toHtml(): string {
    const cells = this.cells();
    const roleColor: Record<string, string> = {
      Leader: "#d9f2d9",
      Candidate: "#fff2cc",
      PreCandidate: "#fff8e0",
      Follower: "transparent",
    };
    const head = cells[0].map((h) => `<th style="text-align:left;padding:2px 8px">${esc(h)}</th>`)
      .join("");
    const body = this.rows.map((r, i) => {
      const bg = r.status === "up" ? roleColor[r.role] : "#eeeeee";
      const tds = cells[i + 1].map((c) => `<td style="padding:2px 8px">${esc(c)}</td>`).join("");
      return `<tr style="background:${bg}" data-node="${esc(r.id)}" data-status="${
        esc(r.status)
      }">${tds}</tr>`;
    }).join("");
    const title = this.title === undefined
      ? ""
      : `<div class="raftmeta-title" style="font-weight:bold;overflow-wrap:anywhere">${
        esc(this.title)
      } <span style="color:#888">(t=${this.atMs} ms)</span></div>`;
    const line = (l: string) =>
      `<div style="font-family:monospace;font-size:90%;overflow-wrap:anywhere">${esc(l)}</div>`;
    const logs = this.grid !== undefined ? this.#gridHtml(this.grid) : [...this.logs].map((
      [id, l],
    ) =>
      line(
        `log ${id}: ${l.skipped > 0 ? `… ${l.skipped} more · ` : ""}${
          l.entries.join(" · ") || "(empty)"
        }`,
      )
    ).join("");
    const extra = this.progressLines().map(line).join("") + logs +
      [...this.keys].map(([id, k]) => line(`keys ${id}: ${k.shown.join(", ") || "(none)"}`))
        .join("");
    const legend = this.grid === undefined ? "" : `<div class="raftmeta-legend" ` +
      `style="font-family:monospace;font-size:85%;color:#555;margin-top:4px">` +
      `${NODE_TABLE_LEGEND.map(esc).join("<br>")}</div>`;
    return `<div class="raftmeta-table" style="max-width:100%;overflow-x:auto">${title}` +
      `<table style="border-collapse:collapse;font-family:monospace">` +
      `<thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>${extra}${legend}</div>`;
  }

  /** The log grid (with timers) as an HTML table; empty when the table has no grid. */
  gridHtml(): string {
    return this.grid === undefined ? "" : this.#gridHtml(this.grid);
  }

  /**
   * Whether some node's log lost or replaced an entry between `before` and this table (a repair
   * of conflicting entries, not a compaction): then the grid before is worth showing too.
   */
  repairedSince(before: NodeTable): boolean {
    const a = before.grid;
    const b = this.grid;
    if (a === undefined || b === undefined) return false;
    for (const [id, row] of a.cells) {
      const now = b.cells.get(id);
      if (now === undefined) continue;
      for (let k = 0; k < row.length; k++) {
        const was = row[k];
        if (was === undefined || was.compacted) continue;
        const index = a.fromIndex + k;
        const cell = index >= b.fromIndex ? now[index - b.fromIndex] : undefined;
        if (index < b.fromIndex) continue; // scrolled out of the window, not changed
        if (cell === undefined || (!cell.compacted && cell.term !== was.term)) return true;
      }
    }
    return false;
  }

  #gridHtml(g: LogGrid): string {
    const th = (s: string) => `<th style="padding:1px 4px;color:#666;font-weight:normal">${s}</th>`;
    const hasSnap = [...g.snapshotIndexes.values()].some((i) => i > 0);
    const heads = [th("log"), ...(hasSnap ? [th("snapshot")] : [])];
    for (let i = g.fromIndex; i <= g.toIndex; i++) heads.push(th(String(i)));
    heads.push(th("election timer"));
    const byId = new Map(this.rows.map((r) => [r.id, r]));
    const rows = [...g.cells].map(([id, row]) => {
      const tds = row.map((c) => {
        if (c === undefined) return `<td></td>`;
        const text = cellText(c);
        const style = c.compacted
          ? "background:#eeeeee;color:#888;border:1px dotted #aaa"
          : `background:${termColor(c.term)};border:1px ${
            c.committed ? "solid #333" : "dashed #333"
          }` +
            (c.conflict ? ";outline:2px solid #c62828;color:#c62828;font-weight:bold" : "");
        const kind = c.compacted
          ? "compacted"
          : c.conflict
          ? "conflict"
          : c.committed
          ? "committed"
          : "uncommitted";
        return `<td class="log-cell" data-kind="${kind}" style="padding:1px 4px;text-align:center;${style}">${
          esc(text)
        }</td>`;
      }).join("");
      const r = byId.get(id);
      const timer = timerHtml(r, g);
      const snap = g.snapshotIndexes.get(id) ?? 0;
      const snapTd = hasSnap
        ? `<td style="padding:1px 4px;color:#555">${snap > 0 ? `≤${snap}` : "-"}</td>`
        : "";
      return `<tr><td style="padding:1px 4px;font-weight:bold">${
        esc(this.nameOf(id))
      }</td>${snapTd}${tds}<td style="padding:1px 6px">${timer}</td></tr>`;
    }).join("");
    const commands = g.commandsOf === undefined || g.commands.length === 0 ? "" : `<div ` +
      `style="font-family:monospace;font-size:90%;overflow-wrap:anywhere">${
        esc(`entries of ${g.commandsOf}: ${g.commands.join(" · ")}`)
      }</div>`;
    const differing = g.differing.map((d) =>
      `<div style="font-family:monospace;font-size:90%;color:#c62828">differs: ${esc(d)}</div>`
    ).join("");
    return `<table class="raftmeta-log-grid" style="border-collapse:separate;border-spacing:2px;` +
      `font-family:monospace;font-size:90%;margin-top:4px"><thead><tr>${
        heads.join("")
      }</tr></thead><tbody>${rows}</tbody></table>${commands}${differing}`;
  }

  /** Deno's Jupyter kernel calls this to show the table as HTML (with text as fallback). */
  [JUPYTER_DISPLAY](): Record<string, string> {
    return { "text/html": this.toHtml(), "text/plain": this.toString() };
  }
}

function cellText(c: LogCell | undefined): string {
  if (c === undefined) return "";
  if (c.compacted) return "s";
  return `${c.conflict ? "!" : c.committed ? "" : "*"}${c.term}`;
}

const TIMER_BAR = 10;

function timerText(r: NodeRow | undefined, g: LogGrid): string {
  if (r === undefined) return "";
  if (r.status === "crashed") return "(down)";
  if (r.status === "paused") return "(paused)";
  if (r.role === "Leader") return `(leader: heartbeat every ${g.heartbeatIntervalMs} ms)`;
  const left = r.electionTimeoutLeftMs;
  if (left === undefined) return "";
  const full = Math.max(
    0,
    Math.min(TIMER_BAR, Math.round(left / g.electionTimeoutMaxMs * TIMER_BAR)),
  );
  return `${"█".repeat(full)}${"░".repeat(TIMER_BAR - full)} ${left} ms`;
}

function timerHtml(r: NodeRow | undefined, g: LogGrid): string {
  if (r === undefined) return "";
  const left = r.electionTimeoutLeftMs;
  if (r.status !== "up" && r.status !== "cut off" || r.role === "Leader" || left === undefined) {
    return `<span style="color:#888">${esc(timerText(r, g))}</span>`;
  }
  const pct = Math.max(0, Math.min(100, Math.round(left / g.electionTimeoutMaxMs * 100)));
  return `<span class="election-timer" title="${left} ms until this node stands for election" ` +
    `style="display:inline-block;width:80px;height:8px;background:#eee;vertical-align:middle">` +
    `<span style="display:block;width:${pct}%;height:8px;background:#e08a00"></span></span>` +
    ` <span style="color:#555">${left} ms</span>`;
}

const TERM_COLORS = ["#e3f2fd", "#fff3e0", "#e8f5e9", "#f3e5f5", "#fffde7", "#e0f7fa", "#fce4ec"];

function termColor(term: number): string {
  return TERM_COLORS[term % TERM_COLORS.length];
}

/** `prefix` then the items joined by `sep`, wrapped to {@linkcode TEXT_COLUMNS_MAX} columns. */
function wrap(prefix: string, items: readonly string[], sep: string): string[] {
  const lines: string[] = [];
  const indent = "    ";
  let line = prefix;
  let fresh = true;
  for (const raw of items) {
    const item = clip(raw, TEXT_COLUMNS_MAX - indent.length);
    const next = fresh ? line + item : line + sep + item;
    // Room for the separator that ends the line when the next item wraps.
    if (!fresh && (next + sep).trimEnd().length > TEXT_COLUMNS_MAX) {
      lines.push((line + sep).trimEnd());
      line = indent + item;
    } else {
      line = next;
    }
    fresh = false;
  }
  lines.push(clip(line, TEXT_COLUMNS_MAX));
  return lines;
}

function clip(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** Renders one log entry as `index:term command` (a membership change: `CONF add-learner n4`). */
export function describeEntry(e: RaftLogEntry): string {
  return entryCommand(e, false);
}

/** A membership change entry as e.g. `CONF add-learner n4` (as `/v1/status`'s pendingChange). */
function describeConfigEntry(bytes: Uint8Array): string {
  try {
    const c = decodeConfChange(bytes);
    return `CONF ${c.type} ${c.node}`;
  } catch {
    return `<${bytes.byteLength} bytes>`;
  }
}

/** Takes a node table of a simulated cluster now. */
export function nodeTable(cluster: Cluster, options: NodeTableOptions = {}): NodeTable {
  const logMax = options.logEntries ?? 8;
  const keyMax = options.keys ?? 8;
  const rows: NodeRow[] = [];
  const progress: ProgressRow[] = [];
  const logs = new Map<NodeId, { skipped: number; entries: string[] }>();
  const keys = new Map<NodeId, { total: number; shown: string[] }>();
  for (const n of cluster.nodes()) {
    const s = n.raft.status();
    const cutOff = cluster.ids.every((o) => o === n.id || !cluster.connected(o, n.id)) &&
      cluster.ids.length > 1;
    const status = n.state === "up" && cutOff ? "cut off" : n.state;
    rows.push({
      id: s.id,
      role: s.role,
      term: s.term,
      votedFor: s.votedFor,
      leader: s.leaderId,
      lastLogIndex: s.lastLogIndex,
      lastLogTerm: s.lastLogTerm,
      commitIndex: s.commitIndex,
      lastApplied: n.applier.lastApplied,
      status,
      // A non-leader's next deadline is its election timeout (RaftNode.nextDeadlineMs).
      electionTimeoutLeftMs: n.state === "crashed" || s.role === "Leader"
        ? undefined
        : Math.max(0, n.raft.nextDeadlineMs() - cluster.nowMs),
    });
    if (n.state !== "crashed") {
      for (const [follower, p] of s.progress) {
        progress.push({ leader: s.id, follower, ...p });
      }
    }
    const first = Math.max(n.raft.log.firstIndex, s.lastLogIndex - logMax + 1);
    logs.set(s.id, {
      skipped: first - 1,
      entries: n.raft.log.slice(first, s.lastLogIndex + 1).map((e) =>
        (e.index <= s.commitIndex ? "" : "*") + describeEntry(e)
      ),
    });
    const all = storeStrings(n.store);
    keys.set(s.id, {
      total: all.length,
      shown: all.slice(0, keyMax).map(([k, v]) => `${k}=${v}`),
    });
  }
  return new NodeTable({
    title: options.title,
    atMs: cluster.nowMs,
    rows,
    progress,
    logs,
    keys,
    grid: logGrid(cluster, rows, logMax),
    aliases: options.aliases,
  });
}

/** The last `logMax` indexes of every node's log side by side, compared with the leader's. */
function logGrid(cluster: Cluster, rows: readonly NodeRow[], logMax: number): LogGrid {
  const nodes = cluster.nodes();
  const toIndex = Math.max(0, ...nodes.map((n) => n.raft.log.lastIndex));
  const fromIndex = Math.max(1, toIndex - logMax + 1);
  const up = rows.filter((r) => r.status !== "crashed");
  const leaderRow = up.filter((r) => r.role === "Leader").sort((a, b) => b.term - a.term)[0];
  const reference = leaderRow?.id;
  const termAt = (id: NodeId, i: number) => cluster.node(id).raft.log.term(i);
  const cells = new Map<NodeId, (LogCell | undefined)[]>();
  for (const n of nodes) {
    const log = n.raft.log;
    const row: (LogCell | undefined)[] = [];
    for (let i = fromIndex; i <= toIndex; i++) {
      if (i > log.lastIndex) {
        row.push(undefined);
        continue;
      }
      if (i <= log.baseIndex) {
        row.push({ term: 0, compacted: true, committed: true, conflict: false });
        continue;
      }
      const term = log.term(i)!;
      let conflict: boolean;
      if (reference !== undefined) {
        const ref = termAt(reference, i);
        conflict = ref !== undefined && ref !== term;
      } else {
        // No leader: mark the indexes where the nodes disagree.
        conflict = nodes.some((o) => {
          const t = o.raft.log.term(i);
          return t !== undefined && t !== term;
        });
      }
      row.push({ term, compacted: false, committed: i <= n.raft.commitIndex, conflict });
    }
    cells.set(n.id, row);
  }
  // Commands from the leader's log, else from the longest log.
  const commandsOf = reference ??
    [...nodes].sort((a, b) => b.raft.log.lastIndex - a.raft.log.lastIndex)[0]?.id;
  const commands: string[] = [];
  const differing: string[] = [];
  if (commandsOf !== undefined) {
    const log = cluster.node(commandsOf).raft.log;
    for (
      let i = Math.max(fromIndex, log.baseIndex + 1);
      i <= Math.min(toIndex, log.lastIndex);
      i++
    ) {
      commands.push(entryCommand(log.entry(i), true));
    }
    for (const [id, row] of cells) {
      if (id === commandsOf) continue;
      row.forEach((c, k) => {
        if (c?.conflict && reference !== undefined) {
          differing.push(
            `${id} ${entryCommand(cluster.node(id).raft.log.entry(fromIndex + k), false)}`,
          );
        }
      });
    }
  }
  const config = nodes[0]?.raft.config;
  return {
    fromIndex,
    toIndex,
    reference,
    cells,
    commands,
    commandsOf,
    differing,
    snapshotIndexes: new Map(nodes.map((n) => [n.id, n.raft.log.snapshotIndex])),
    electionTimeoutMaxMs: config?.electionTimeoutMaxMs ?? 300,
    heartbeatIntervalMs: config?.heartbeatIntervalMs ?? 50,
  };
}

function entryCommand(e: RaftLogEntry, indexOnly: boolean): string {
  const what = e.kind === "noop"
    ? "no-op"
    : e.kind === "config"
    ? describeConfigEntry(e.command)
    : describeCommand(e.command);
  return indexOnly ? `${e.index} ${what}` : `${e.index}:${e.term} ${what}`;
}

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
