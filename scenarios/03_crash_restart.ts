/**
 * Chapter 3 — crash, restart and persistence: what a node writes to stable storage before it
 * answers (term, vote, log), what it loses in a crash (everything else), and how it rebuilds.
 *
 * Run it: `deno run -A scenarios/03_crash_restart.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { Message, NodeId } from "../src/raft/types.ts";
import { storeStrings } from "../src/observe/describe.ts";
import { SafetyViolation } from "../src/sim/invariants.ts";
import {
  type Chapter,
  type ChapterContext,
  type ChapterStep,
  type Figure,
  note,
  runChapterCli,
  showFigure,
  useCluster,
} from "./_chapter.ts";
import { claimRule } from "./figure2.ts";
import { type ExchangeEvent, exchangeOf } from "./_exchange.ts";

/** State carried from step to step. */
export interface RestartContext extends ChapterContext {
  /** The leader. */
  leader?: NodeId;
  /** The follower crashed in step 2. */
  victim?: NodeId;
  /** Its persisted term and vote at the crash. */
  persisted?: { term: number; votedFor: NodeId | undefined; lastIndex: number };
  /** The chapter's seed (the "break it" step builds a cluster from it). */
  readonly seed: number;
}

/** Builds the chapter's cluster (MemoryStorage: what is "persisted" survives `crash`). */
export function restartContext(seed = 1, nodes = 3): RestartContext {
  return { cluster: new Cluster({ nodes, seed }), seed };
}

/** One request, the write it caused, and the reply: "persist before replying", drawn. */
class PersistFigure implements Figure {
  constructor(readonly node: NodeId, readonly rows: readonly [string, string][]) {}

  toString(): string {
    return [
      `Persist before replying, on ${this.node}:`,
      ...this.rows.map(([t, what]) => `  ${t.padStart(7)}  ${what}`),
    ].join("\n");
  }

  toSvg(): string {
    const h = 28 * this.rows.length + 34;
    const esc = (x: string) => x.replaceAll("&", "&amp;").replaceAll("<", "&lt;");
    const rows = this.rows.map(([t, what], i) => {
      const y = 40 + 28 * i;
      const disk = what.startsWith("write");
      return `<text x="8" y="${y}" font-size="12" fill="#555">${esc(t)}</text>` +
        `<rect x="70" y="${y - 15}" width="560" height="22" rx="4" fill="${
          disk ? "#fff3cd" : "#e8f0fe"
        }" stroke="${disk ? "#b8860b" : "#4a6fa5"}"/>` +
        `<text x="80" y="${y}" font-size="12" font-family="monospace">${esc(what)}</text>` +
        (i + 1 < this.rows.length
          ? `<line x1="350" y1="${y + 7}" x2="350" y2="${y + 13}" stroke="#333"/>`
          : "");
    }).join("");
    return `<svg xmlns="http://www.w3.org/2000/svg" width="640" height="${h}" ` +
      `font-family="sans-serif"><text x="8" y="18" font-size="13" font-weight="bold">` +
      `Persist before replying, on ${esc(this.node)} (time runs down; yellow: a write to ` +
      `its disk)</text>${rows}</svg>`;
  }
}

/** What a node wrote between receiving `from` and sending `to` (exclusive), as figure rows. */
function persistRows(evs: readonly ExchangeEvent[], from: number, to: number): [string, string][] {
  const rows: [string, string][] = [];
  for (let i = from; i <= to; i++) {
    const e = evs[i];
    if (e.kind === "deliver" && i === from) {
      rows.push([`${e.atMs} ms`, `receive ${describeMessage(e.message)}`]);
    } else if (e.kind === "persist") {
      const hs = e.hardState;
      const parts = [
        ...(!e.hardStateChanged ? [] : [`term=${hs.term} votedFor=${hs.votedFor ?? "-"}`]),
        ...(e.toIndex === 0 ? [] : [`entries ${e.fromIndex}..${e.toIndex}`]),
      ];
      rows.push([`${e.atMs} ms`, `write ${parts.join(", ")} (durable)`]);
    } else if (e.kind === "send" && i === to) {
      rows.push([`${e.atMs} ms`, `send ${describeMessage(e.message)}`]);
    }
  }
  return rows;
}

function describeMessage(m: Message): string {
  switch (m.type) {
    case "RequestVote":
      return `RequestVote term ${m.term} from ${m.from}`;
    case "RequestVoteReply":
      return `RequestVoteReply granted=${m.granted} to ${m.to}`;
    case "AppendEntries":
      return `AppendEntries term ${m.term} prev=${m.prevLogIndex}:${m.prevLogTerm} entries=${
        m.entries.map((e) => e.index).join(",") || "none"
      } from ${m.from}`;
    case "AppendEntriesReply":
      return `AppendEntriesReply success=${m.success} matchIndex=${m.matchIndex} to ${m.to}`;
    default:
      return `${m.type} from ${m.from} to ${m.to}`;
  }
}

function keysOf(c: Cluster, id: NodeId): string {
  return JSON.stringify(storeStrings(c.node(id).store));
}

/** The chapter's steps. */
export const restartSteps: readonly ChapterStep<RestartContext>[] = [
  {
    name: "what each node persists",
    explain: "Before a node answers a vote request or an AppendEntries, it writes currentTerm, " +
      "votedFor and its new log entries to stable storage (Figure 2's persistent state, " +
      '"updated on stable storage before responding to RPCs"). raftmeta writes commitIndex ' +
      "along with them, which Figure 2 lists as volatile: it is an optimization (a restarted " +
      "node re-applies its committed entries without waiting for a leader), not a rule. The " +
      "figures below show one vote and one append on a follower: receive, write, then reply. " +
      "Here storage is MemoryStorage: it survives a simulated crash, nothing else does.",
    rules: ["P-1"],
    run(ctx) {
      const c = ctx.cluster;
      ctx.leader = c.waitForLeader();
      for (const [k, v] of [["/a", "1"], ["/b", "2"], ["/c", "3"]]) {
        const op = c.complete(c.put(k, v));
        claim(op.status === "ok", `PUT ${k} commits`);
      }
      c.advance(100);
      for (const n of c.nodes()) {
        const p = n.storage.load();
        claim(p.hardState.term === n.raft.term, `${n.id} persisted its term`);
        claim(p.hardState.votedFor === n.raft.votedFor, `${n.id} persisted its vote`);
        claim(p.entries.length === n.raft.log.lastIndex, `${n.id} persisted its whole log`);
        note(
          ctx,
          `${n.id} storage: term=${p.hardState.term} votedFor=${p.hardState.votedFor ?? "-"} ` +
            `commitIndex=${p.hardState.commitIndex} entries=${p.entries.length}`,
        );
      }
      // Every granted vote and every accepted append of this step, on the exchange: the write
      // that makes it durable lies between the request and the reply.
      const evs = exchangeOf(c).events;
      const drawn = new Set<string>();
      for (let i = 0; i < evs.length; i++) {
        const d = evs[i];
        if (d.kind !== "deliver" || d.receiver.role === "Leader") continue;
        const m = d.message;
        if (m.type !== "RequestVote" && m.type !== "AppendEntries") continue;
        const r = evs.findIndex((e, j) =>
          j > i && e.kind === "send" && e.message.from === m.to && e.message.to === m.from &&
          (e.message.type === "RequestVoteReply" || e.message.type === "AppendEntriesReply") &&
          e.message.requestTerm === m.term
        );
        const reply = evs[r];
        if (reply?.kind !== "send") continue;
        const rm = reply.message;
        const granted = rm.type === "RequestVoteReply" && rm.granted;
        const appended = rm.type === "AppendEntriesReply" && rm.success &&
          rm.matchIndex > d.receiver.lastIndex;
        if (!granted && !appended) continue;
        const wrote = evs.slice(i, r).some((e) =>
          e.kind === "persist" && e.node === m.to &&
          (granted
            ? e.hardState.votedFor === m.from && e.hardState.term === m.term
            : rm.type === "AppendEntriesReply" && e.toIndex >= rm.matchIndex)
        );
        claimRule(
          ctx,
          "P-1",
          wrote,
          `${m.to} wrote ${
            granted ? "its vote" : "the entries"
          } to storage before replying to ${m.type}`,
        );
        if (!drawn.has(m.type)) {
          drawn.add(m.type);
          showFigure(ctx, new PersistFigure(m.to, persistRows(evs, i, r)));
        }
      }
      claim(drawn.size === 2, "the step shows a vote and an append");
    },
  },
  {
    name: "a follower crashes",
    explain: "A crash loses everything in memory: the role, the leader it knew, nextIndex and " +
      "matchIndex (on a leader), the applied state machine. Its storage is kept.",
    run(ctx) {
      const c = ctx.cluster;
      const victim = c.ids.find((id) => id !== ctx.leader)!;
      ctx.victim = victim;
      const p = c.node(victim).storage.load();
      ctx.persisted = {
        term: p.hardState.term,
        votedFor: p.hardState.votedFor,
        lastIndex: p.entries.length,
      };
      c.crash(victim);
      c.advance(50);
      claim(c.node(victim).state === "crashed", `${victim} is down`);
      claim(
        c.node(victim).storage.load().entries.length === ctx.persisted.lastIndex,
        "its storage still holds its log",
      );
    },
  },
  {
    name: "the others carry on",
    explain: "Two of three (or a majority of any size) can still commit, so writes continue " +
      "while the node is down.",
    run(ctx) {
      const c = ctx.cluster;
      for (const [k, v] of [["/d", "4"], ["/a", "1b"]]) {
        const op = c.complete(c.put(k, v));
        claim(op.status === "ok", `PUT ${k} commits with a node down (${op.status})`);
      }
    },
  },
  {
    name: "restart: term and vote come back, the store is rebuilt",
    explain:
      "The node restarts from its storage: the same term and vote (so it cannot vote twice " +
      "in a term it already voted in), the same log. Its state machine starts empty and is " +
      "rebuilt by applying the committed entries again; the leader sends what it missed.",
    run(ctx) {
      const c = ctx.cluster;
      const v = ctx.victim!;
      c.restart(v);
      const n = c.node(v);
      claim(n.raft.term === ctx.persisted!.term, `term ${ctx.persisted!.term} restored`);
      claim(n.raft.votedFor === ctx.persisted!.votedFor, "vote restored");
      claim(n.raft.log.lastIndex === ctx.persisted!.lastIndex, "log restored");
      claim(n.raft.role === "Follower", "it restarts as a follower");
      c.runUntil(() => keysOf(c, v) === keysOf(c, ctx.leader!), {
        description: `${v} to catch up`,
        timeoutMs: 2000,
      });
      claim(n.store.getString("/a") === "1b", "it applied what it missed");
    },
  },
  {
    name: "the whole cluster crashes and restarts",
    explain: "Every node crashes at once — a power cut. Committed entries are on a majority's " +
      "storage, so after the restart a new leader is elected whose log holds every committed " +
      "entry (the election restriction, §5.4.1), and every store is rebuilt with every " +
      "committed write.",
    run(ctx) {
      const c = ctx.cluster;
      const before = keysOf(c, ctx.leader!);
      const termBefore = c.node(ctx.leader!).raft.term;
      for (const id of c.ids) c.crash(id);
      c.advance(500);
      for (const id of c.ids) c.restart(id);
      const leader = c.waitForLeader({ timeoutMs: 3000 });
      ctx.leader = leader;
      claim(c.node(leader).raft.term > termBefore, "a new term after the restart");
      c.runUntil(() => c.ids.every((id) => keysOf(c, id) === before), {
        description: "every store to be rebuilt",
        timeoutMs: 2000,
      });
      note(ctx, `every node holds ${before}`);
    },
  },
  {
    name: "a crash between persist and send",
    explain: "The most delicate moment: a leader writes a new entry to its disk and crashes the " +
      "moment the write is durable. A leader may send entries while it writes them (dissertation " +
      "§10.2.1), so the AppendEntries carrying it may already have left, or not (the note below " +
      "says which, in this run). The client cannot know whether the write happened. The entry " +
      "may still be committed — by whichever leader next commits an entry of its own term after " +
      "it — or overwritten by a leader that never had it. Either way every node agrees.",
    run(ctx) {
      const c = ctx.cluster;
      const l = ctx.leader!;
      c.crashAfterPersist(l);
      const op = c.put("/e", "5");
      claim(c.node(l).state === "crashed", "the leader crashed after persisting");
      claim(op.status === "unknown", `the outcome is unknown to the client (${op.status})`);
      claim(c.node(l).storage.load().entries.length >= op.index!, "the entry is on its disk");
      const sent = exchangeOf(c).sent("AppendEntries").some((s) =>
        s.message.entries.some((e) => e.index === op.index)
      );
      c.restart(l);
      const leader = c.waitForLeader({ timeoutMs: 3000 });
      c.complete(c.put("/f", "6")); // a write in the current term commits everything before it
      c.runUntil(() => c.ids.every((id) => keysOf(c, id) === keysOf(c, leader)), {
        description: "every node to agree",
        timeoutMs: 2000,
      });
      note(
        ctx,
        `entry ${op.index} ${sent ? "had" : "had not"} left in an AppendEntries before the ` +
          `crash; /e after recovery: ${c.node(leader).store.getString("/e") ?? "(absent)"}`,
      );
    },
  },
  {
    name: "Break it: forget the vote on restart",
    explain:
      "A fresh cluster whose nodes never write votedFor to storage: after a restart a node " +
      "would not remember whom it voted for and could vote again in the same term, for another " +
      "candidate — two leaders in one term. The simulator's checker compares every granted vote " +
      "with what the voter's storage holds at the moment the reply leaves, so it stops the run at " +
      "the very first vote, before any restart is needed to do harm.",
    breakIt: "persisting votedFor (Figure 2): fault point forget-vote-on-restart",
    run(ctx) {
      const off = ctx.ruleOff !== false;
      const c = new Cluster({
        nodes: ctx.cluster.ids.length,
        seed: ctx.seed,
        faultPoints: off ? ["forget-vote-on-restart"] : [],
      });
      useCluster(ctx, c);
      let caught: unknown;
      try {
        const leader = c.waitForLeader();
        const voter = c.ids.find((id) => c.node(id).raft.votedFor === leader && id !== leader)!;
        const term = c.node(voter).raft.term;
        c.crash(voter);
        c.restart(voter);
        claim(
          c.node(voter).raft.term === term && c.node(voter).raft.votedFor === leader,
          `${voter} remembers its vote for ${leader} in term ${term} after a restart`,
        );
        note(
          ctx,
          `with the rule on: ${voter} restarted still voting for ${leader} in term ${term}`,
        );
      } catch (e) {
        caught = e;
      }
      if (off) {
        claim(
          caught instanceof SafetyViolation && caught.property === "durability" &&
            caught.message.includes("granted a vote"),
          `the checker should catch the unpersisted vote, got: ${caught}`,
        );
        note(ctx, `caught: ${caught.message}`);
      } else if (caught !== undefined) throw caught;
    },
  },
];

/** Chapter 3 as a script and a notebook. */
export const chapter: Chapter<RestartContext> = {
  number: 3,
  name: "03_crash_restart",
  title: "Crash, restart and persistence",
  summary: "what survives a crash and why",
  intro: "Raft's safety rests on a few values surviving crashes: **currentTerm**, **votedFor** " +
    "and the **log** (Figure 2's persistent state). A node writes them to stable storage " +
    "before it answers anyone. Everything else — role, leader, nextIndex/matchIndex, the " +
    "state machine — is rebuilt after a restart. raftmeta also persists **commitIndex**, which " +
    "Figure 2 lists as volatile; that only spares a restarted node the wait for a leader before " +
    "it re-applies. The simulator's `crash` keeps only what the node's storage persisted." +
    " The cluster runs with raftmeta's defaults, PreVote and CheckQuorum on: the tables show " +
    "**PreCandidate** and the timelines PreVote messages before each election; chapter 5 " +
    "explains both.",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: restartContext,
  steps: restartSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
