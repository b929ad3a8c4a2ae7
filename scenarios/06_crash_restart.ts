/**
 * Chapter 6 — crash, restart and persistence: what a node writes to stable storage before it
 * answers (term, vote, log), what it loses in a crash (everything else), and how it rebuilds.
 *
 * Run it: `deno run -A scenarios/06_crash_restart.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { NodeId } from "../src/raft/types.ts";
import { storeStrings } from "../src/observe/describe.ts";
import { type Chapter, type ChapterContext, note, runChapterCli, type Step } from "./_chapter.ts";

/** State carried from step to step. */
export interface RestartContext extends ChapterContext {
  /** The leader. */
  leader?: NodeId;
  /** The follower crashed in step 2. */
  victim?: NodeId;
  /** Its persisted term and vote at the crash. */
  persisted?: { term: number; votedFor: NodeId | undefined; lastIndex: number };
}

/** Builds the chapter's cluster (MemoryStorage: what is "persisted" survives `crash`). */
export function restartContext(seed = 1, nodes = 3): RestartContext {
  return { cluster: new Cluster({ nodes, seed }) };
}

function keysOf(c: Cluster, id: NodeId): string {
  return JSON.stringify(storeStrings(c.node(id).store));
}

/** The chapter's steps. */
export const restartSteps: readonly Step<RestartContext>[] = [
  {
    name: "what each node persists",
    explain: "Before a node answers a vote request or an AppendEntries, it writes its hard state " +
      "(currentTerm, votedFor, commitIndex) and its new log entries to stable storage (Figure 2: " +
      '"updated on stable storage before responding to RPCs"). Here storage is MemoryStorage: ' +
      "it survives a simulated crash, nothing else does.",
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
    explain:
      "The most delicate moment: the leader has written a new entry to storage but crashes " +
      "before sending it. The client cannot know whether the write happened. When the node " +
      "returns, the entry may still be committed by it — or overwritten by another leader. " +
      "Either way every node agrees.",
    run(ctx) {
      const c = ctx.cluster;
      const l = ctx.leader!;
      c.crashAfterPersist(l);
      const op = c.put("/e", "5");
      claim(c.node(l).state === "crashed", "the leader crashed after persisting");
      claim(op.status === "unknown", `the outcome is unknown to the client (${op.status})`);
      claim(c.node(l).storage.load().entries.length >= op.index!, "the entry is on its disk");
      c.restart(l);
      const leader = c.waitForLeader({ timeoutMs: 3000 });
      c.complete(c.put("/f", "6")); // a write in the current term commits everything before it
      c.runUntil(() => c.ids.every((id) => keysOf(c, id) === keysOf(c, leader)), {
        description: "every node to agree",
        timeoutMs: 2000,
      });
      note(ctx, `/e after recovery: ${c.node(leader).store.getString("/e") ?? "(absent)"}`);
    },
  },
];

/** Chapter 6 as a script and a notebook. */
export const chapter: Chapter<RestartContext> = {
  number: 6,
  name: "06_crash_restart",
  title: "Crash, restart and persistence",
  summary: "what survives a crash and why",
  intro: "Raft's safety rests on a few values surviving crashes: **currentTerm**, **votedFor** " +
    "and the **log**. A node writes them to stable storage before it answers anyone. " +
    "Everything else — role, leader, commit and apply progress, the state machine — is " +
    "rebuilt after a restart. The simulator's `crash` keeps only what the node's storage " +
    "persisted.",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: restartContext,
  steps: restartSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
