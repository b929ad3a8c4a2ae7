/**
 * Chapter 2 — log replication: AppendEntries, the consistency check, conflict repair, and commit by
 * quorum.
 *
 * Run it: `deno run -A scenarios/02_log_replication.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster, type Operation } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { NodeId } from "../src/raft/types.ts";
import {
  type Chapter,
  type ChapterContext,
  runChapterCli,
  showLogs,
  type Step,
} from "./_chapter.ts";

/** State carried from step to step. */
export interface ReplicationContext extends ChapterContext {
  /** The current leader. */
  leader?: NodeId;
  /** The follower that falls behind in step 3. */
  laggard?: NodeId;
  /** Writes proposed to a leader cut off from the others (step 5). */
  stranded?: Operation[];
  /** The leader that was cut off in step 5. */
  oldLeader?: NodeId;
}

/** Builds the chapter's cluster with the default configuration. */
export function replicationContext(seed = 1, nodes = 3): ReplicationContext {
  return { cluster: new Cluster({ nodes, seed }) };
}

function put(c: Cluster, key: string, value: string): Operation {
  const op = c.complete(c.put(key, value));
  claim(op.status === "ok", `PUT ${key} should commit, got ${op.status}: ${op.error}`);
  return op;
}

/** The chapter's steps. */
export const replicationSteps: readonly Step<ReplicationContext>[] = [
  {
    name: "a new leader appends a no-op",
    explain: "A new leader first appends an empty entry (a no-op) in its own term and replicates " +
      "it. Raft commits entries only by counting replicas of the leader's current term " +
      "(Figure 8), so the no-op is how a new leader learns what is committed.",
    run(ctx) {
      const c = ctx.cluster;
      ctx.leader = c.waitForLeader();
      c.runUntil(() => c.nodes().every((n) => n.raft.commitIndex >= 1), {
        description: "the no-op to commit everywhere",
      });
      const entry = c.node(ctx.leader).raft.log.entry(1);
      claim(entry?.kind === "noop", "entry 1 is the leader's no-op");
      claim(entry.term === c.node(ctx.leader).raft.term, "the no-op has the leader's term");
    },
  },
  {
    name: "AppendEntries carries a write",
    explain: "A client's PUT is appended to the leader's log and sent in AppendEntries with " +
      "prevLogIndex/prevLogTerm, the position just before it. Once a majority has stored it, the " +
      "leader advances commitIndex and applies it; followers learn the new commitIndex in the " +
      "next AppendEntries and apply it too.",
    run(ctx) {
      const c = ctx.cluster;
      const op = put(c, "/services/db/primary", "10.0.0.7:5432");
      const leader = c.node(ctx.leader!);
      claim(leader.raft.commitIndex >= op.index!, "the leader committed the write");
      c.runUntil(() => c.nodes().every((n) => n.applier.lastApplied >= op.index!), {
        description: "every node to apply the write",
        timeoutMs: 1000,
      });
      for (const n of c.nodes()) {
        claim(
          n.store.getString("/services/db/primary") === "10.0.0.7:5432",
          `${n.id} applied the write`,
        );
      }
    },
  },
  {
    name: "commit by quorum, without a lagging follower",
    explain: "One follower is cut off. The leader keeps committing: a majority is enough. The " +
      "cut-off follower's log falls behind.",
    run(ctx) {
      const c = ctx.cluster;
      const laggard = c.ids.find((id) => id !== ctx.leader)!;
      ctx.laggard = laggard;
      c.isolate(laggard);
      let last: Operation | undefined;
      for (let i = 1; i <= 3; i++) last = put(c, `/jobs/${i}`, `job ${i}`);
      claim(c.node(ctx.leader!).raft.commitIndex >= last!.index!, "committed without it");
      claim(
        c.node(laggard).raft.log.lastIndex < last!.index!,
        `${laggard} missed the entries (its log ends at ${c.node(laggard).raft.log.lastIndex})`,
      );
    },
  },
  {
    name: "the consistency check catches up the laggard",
    explain:
      "The follower is reconnected. An AppendEntries whose prevLogIndex it does not have is " +
      "rejected, with a hint (conflictIndex) of where its log ends. The leader moves nextIndex " +
      "back and resends from there, and the follower's log converges with the leader's.",
    run(ctx) {
      const c = ctx.cluster;
      const laggard = c.node(ctx.laggard!);
      c.heal();
      const leader = c.node(ctx.leader!);
      c.runUntil(() => laggard.raft.log.lastIndex === leader.raft.log.lastIndex, {
        description: `${ctx.laggard} to catch up`,
        timeoutMs: 2000,
      });
      c.advance(100);
      claim(
        laggard.store.getString("/jobs/3") === "job 3",
        `${ctx.laggard} applied the missed writes`,
      );
    },
  },
  {
    name: "conflicting entries are repaired",
    explain:
      "The leader is cut off and accepts two writes it cannot commit: they sit only in its " +
      "own log. The others elect a new leader, which writes at the same indexes in a newer term. " +
      "When the old leader returns, its AppendEntries consistency check fails, it truncates " +
      "the conflicting suffix (never a committed entry) and takes the new leader's entries. The " +
      "two stranded writes fail: they were never committed.",
    run(ctx) {
      const c = ctx.cluster;
      const old = ctx.leader!;
      ctx.oldLeader = old;
      c.isolate(old);
      ctx.stranded = [c.put("/stranded/a", "lost"), c.put("/stranded/b", "lost")];
      const strandedIndex = ctx.stranded[0].index!;
      const strandedTerm = ctx.stranded[0].term!;
      c.runUntil(() => c.leader() !== undefined && c.leader() !== old, {
        description: "a new leader",
        timeoutMs: 3000,
      });
      const leader = c.leader()!;
      ctx.leader = leader;
      put(c, "/services/db/primary", "10.0.0.8:5432");
      put(c, "/services/db/replica", "10.0.0.9:5432");
      showLogs(ctx, `logs before the repair: ${old}'s uncommitted entries conflict (!)`);
      c.heal();
      c.runUntil(() => ctx.stranded!.every((op) => op.status !== "pending"), {
        description: "the stranded writes to be resolved",
        timeoutMs: 2000,
      });
      const oldNode = c.node(old);
      c.runUntil(() => oldNode.raft.log.lastIndex === c.node(leader).raft.log.lastIndex, {
        description: `${old} to converge`,
        timeoutMs: 2000,
      });
      claim(
        oldNode.raft.log.term(strandedIndex)! > strandedTerm,
        `index ${strandedIndex} now holds the new leader's term, not ${strandedTerm}`,
      );
      for (const op of ctx.stranded) {
        claim(op.status === "failed", `stranded write ${op.key} failed (${op.status})`);
      }
      c.advance(100);
      for (const n of c.nodes()) {
        claim(
          n.store.getString("/stranded/a") === undefined,
          `${n.id} never applied a stranded write`,
        );
        claim(n.store.getString("/services/db/replica") === "10.0.0.9:5432", `${n.id} converged`);
      }
    },
  },
  {
    name: "no majority, no commit",
    explain: "Now every follower is cut off for 60 ms. The leader appends a write but cannot " +
      "commit it: only a majority's acknowledgement advances commitIndex. When the links " +
      "return, the entry reaches the followers and commits.",
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.node(ctx.leader!);
      for (const id of c.ids) if (id !== ctx.leader) c.isolate(id);
      const before = leader.raft.commitIndex;
      const op = c.put("/config/alone", "1");
      c.advance(60);
      claim(op.status === "pending", "the write waits");
      claim(leader.raft.log.lastIndex === op.index, "the entry is in the leader's log");
      claim(leader.raft.commitIndex === before, "but not committed");
      c.heal();
      const done = c.complete(op);
      claim(
        done.status === "ok",
        `it commits once a majority has it (${done.status}: ${done.error})`,
      );
    },
  },
];

/** Chapter 2 as a script and a notebook. */
export const chapter: Chapter<ReplicationContext> = {
  number: 2,
  name: "02_log_replication",
  title: "Log replication",
  summary: "AppendEntries, the consistency check, conflict repair, commit by quorum",
  intro: "Every write goes through the leader's log. The leader sends entries with " +
    "**AppendEntries**; a follower accepts them only if its log matches the leader's at " +
    "`prevLogIndex`/`prevLogTerm` (the **consistency check**), which by induction keeps every " +
    "log a prefix-consistent copy of the leader's. An entry is **committed** once a majority " +
    "stores it — never earlier, unlike the seed's simplified demo.",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: replicationContext,
  steps: replicationSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
