/**
 * Node tables: one row per node (id, role, term, votedFor, leader, lastLogIndex, lastLogTerm,
 * commitIndex, lastApplied, status), the leader's nextIndex/matchIndex per follower, a compact
 * view of each log (`index:term` and the command) and each node's keys. Rendered as text for
 * terminals and as HTML for Deno's Jupyter kernel.
 *
 * @module
 */

import type { NodeId, RaftLogEntry, RaftRole } from "../raft/types.ts";
import type { Cluster } from "../sim/cluster.ts";
import { describeCommand, storeStrings } from "./describe.ts";

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
  /** How many of the newest log entries to show per node. Default 8. */
  readonly logEntries?: number;
  /** How many keys to show per node. Default 8. */
  readonly keys?: number;
  /** A title printed above the table. */
  readonly title?: string;
}

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

  /** @internal Built by {@linkcode nodeTable}. */
  constructor(fields: {
    title: string | undefined;
    atMs: number;
    rows: NodeRow[];
    progress: ProgressRow[];
    logs: Map<NodeId, { skipped: number; entries: string[] }>;
    keys: Map<NodeId, { total: number; shown: string[] }>;
  }) {
    this.title = fields.title;
    this.atMs = fields.atMs;
    this.rows = fields.rows;
    this.progress = fields.progress;
    this.logs = fields.logs;
    this.keys = fields.keys;
  }

  /** The cells of the main table, header first. */
  cells(): string[][] {
    return [
      [...NODE_TABLE_COLUMNS],
      ...this.rows.map((r) => [
        r.id,
        r.role,
        String(r.term),
        r.votedFor ?? "-",
        r.leader ?? "-",
        String(r.lastLogIndex),
        String(r.lastLogTerm),
        String(r.commitIndex),
        String(r.lastApplied),
        r.status,
      ]),
    ];
  }

  /** The table as aligned plain text. */
  toString(): string {
    const lines: string[] = [];
    if (this.title !== undefined) lines.push(`== ${this.title} (t=${this.atMs} ms) ==`);
    const cells = this.cells();
    const widths = cells[0].map((_, c) => Math.max(...cells.map((row) => row[c].length)));
    for (const row of cells) {
      lines.push(row.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd());
    }
    for (const p of this.progressLines()) lines.push(p);
    for (const [id, log] of this.logs) {
      const head = log.skipped > 0 ? `… ${log.skipped} more · ` : "";
      lines.push(`log ${id}: ${head}${log.entries.join(" · ") || "(empty)"}`);
    }
    for (const [id, k] of this.keys) {
      const more = k.total > k.shown.length ? ` … ${k.total - k.shown.length} more` : "";
      lines.push(`keys ${id}: ${k.shown.join(", ") || "(none)"}${more}`);
    }
    return lines.join("\n");
  }

  /** One line per leader: each follower's nextIndex, matchIndex and replication state. */
  progressLines(): string[] {
    const byLeader = new Map<NodeId, ProgressRow[]>();
    for (const p of this.progress) {
      byLeader.set(p.leader, [...(byLeader.get(p.leader) ?? []), p]);
    }
    return [...byLeader].map(([leader, rows]) =>
      `progress of leader ${leader}: ` +
      rows.map((p) =>
        `${p.follower} nextIndex=${p.nextIndex} matchIndex=${p.matchIndex} (${p.state})`
      )
        .join(", ")
    );
  }

  /** The table as an HTML fragment. */
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
      return `<tr style="background:${bg}">${tds}</tr>`;
    }).join("");
    const title = this.title === undefined
      ? ""
      : `<div style="font-weight:bold">${
        esc(this.title)
      } <span style="color:#888">(t=${this.atMs} ms)</span></div>`;
    const extra = [
      ...this.progressLines(),
      ...[...this.logs].map(([id, l]) =>
        `log ${id}: ${l.skipped > 0 ? `… ${l.skipped} more · ` : ""}${
          l.entries.join(" · ") || "(empty)"
        }`
      ),
      ...[...this.keys].map(([id, k]) => `keys ${id}: ${k.shown.join(", ") || "(none)"}`),
    ].map((l) => `<div style="font-family:monospace;font-size:90%">${esc(l)}</div>`).join("");
    return `${title}<table style="border-collapse:collapse;font-family:monospace">` +
      `<thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>${extra}`;
  }

  /** Deno's Jupyter kernel calls this to show the table as HTML (with text as fallback). */
  [JUPYTER_DISPLAY](): Record<string, string> {
    return { "text/html": this.toHtml(), "text/plain": this.toString() };
  }
}

/** Renders one log entry as `index:term command`. */
export function describeEntry(e: RaftLogEntry): string {
  return `${e.index}:${e.term} ${e.kind === "noop" ? "no-op" : describeCommand(e.command)}`;
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
  return new NodeTable({ title: options.title, atMs: cluster.nowMs, rows, progress, logs, keys });
}

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
