/**
 * Chapter 4 — network partitions: a leader in a minority cannot commit, the majority side moves on,
 * split votes and how randomized timeouts end them, and the Raft paper's Figure 8 step by step
 * (the steps of `scenarios/figure8.ts`).
 *
 * Run it: `deno run -A scenarios/04_partitions.ts [--seed N]`.
 *
 * @module
 */

import { Cluster, type Operation } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { NodeId } from "../src/raft/types.ts";
import { type Figure8Context, figure8Context, figure8Steps } from "./figure8.ts";
import {
  type Chapter,
  type ChapterContext,
  note,
  runChapterCli,
  type Step,
  useCluster,
} from "./_chapter.ts";

/** State carried from step to step. */
export interface PartitionContext extends Omit<Figure8Context, "cluster">, ChapterContext {
  /** The chapter's seed (the Figure 8 and split-vote steps build clusters from it). */
  readonly seed: number;
  /** The leader before the partition. */
  leader?: NodeId;
  /** Its term. */
  term?: number;
  /** The node cut off together with the old leader. */
  buddy?: NodeId;
  /** The write proposed on the minority side. */
  minorityWrite?: Operation;
}

/** Builds a 5-node cluster with the defaults. */
export function partitionContext(seed = 1): PartitionContext {
  return {
    ...figure8Context(seed),
    cluster: new Cluster({ nodes: 5, seed }),
    seed,
  };
}

/** The chapter's steps. */
export const partitionSteps: readonly Step<PartitionContext>[] = [
  {
    name: "five nodes, one leader",
    explain: "Five nodes elect a leader and commit a first write. With five nodes a majority is " +
      "three: the cluster survives any two failures.",
    run(ctx) {
      const c = ctx.cluster;
      ctx.leader = c.waitForLeader();
      ctx.term = c.node(ctx.leader).raft.term;
      const op = c.complete(c.put("/services/db/primary", "10.0.0.7:5432"));
      claim(op.status === "ok", `the first write commits (${op.status})`);
    },
  },
  {
    name: "a leader in the minority cannot commit",
    explain: "The network splits: the leader and one follower on one side, three nodes on the " +
      "other. The leader still accepts a write, but only two of five nodes can store it, so it " +
      "never commits and the client gets no answer.",
    run(ctx) {
      const c = ctx.cluster;
      ctx.buddy = c.ids.find((id) => id !== ctx.leader)!;
      c.partition([ctx.leader!, ctx.buddy]);
      const op = c.put("/services/db/primary", "minority", { via: ctx.leader });
      ctx.minorityWrite = op;
      c.advance(250);
      const l = c.node(ctx.leader!);
      claim(op.status === "pending", "no answer to the client");
      claim(l.raft.commitIndex < op.index!, `entry ${op.index} is not committed`);
    },
  },
  {
    name: "the majority side elects a leader and commits",
    explain: "The three nodes on the other side stop hearing heartbeats, elect a leader in a " +
      "higher term (three votes are a majority of five) and commit writes. Meanwhile the old " +
      "leader, hearing from no majority for an election timeout, steps down (CheckQuorum).",
    run(ctx) {
      const c = ctx.cluster;
      const minority = [ctx.leader!, ctx.buddy!];
      c.runUntil(() => {
        const l = c.leader();
        return l !== undefined && !minority.includes(l);
      }, { description: "a leader on the majority side", timeoutMs: 3000 });
      const leader = c.leader()!;
      claim(c.node(leader).raft.term > ctx.term!, "a higher term");
      const op = c.complete(c.put("/services/db/primary", "majority", { via: leader }));
      claim(op.status === "ok", `the majority side commits (${op.status})`);
      c.advance(400);
      claim(c.node(ctx.leader!).raft.role !== "Leader", "the old leader stepped down");
      ctx.leader = leader;
    },
  },
  {
    name: "healing: the minority's write is discarded",
    explain: "The partition heals. The old leader and its follower hear the higher term and " +
      "follow the new leader; the uncommitted entry from the minority side is overwritten by " +
      "the new leader's log. Its client learns that the write failed.",
    run(ctx) {
      const c = ctx.cluster;
      c.heal();
      c.runUntil(() => ctx.minorityWrite!.status !== "pending", {
        description: "the minority write to be resolved",
        timeoutMs: 2000,
      });
      claim(ctx.minorityWrite!.status === "failed", "the minority's write failed");
      c.runUntil(
        () => c.nodes().every((n) => n.store.getString("/services/db/primary") === "majority"),
        { description: "every node to apply the majority's write", timeoutMs: 2000 },
      );
      claim(c.leaders().length === 1, "one leader");
    },
  },
  {
    name: "split votes",
    explain: "Election timeouts are randomized so that usually one node times out first and wins " +
      "before anyone else campaigns. With almost no randomness (150–151 ms) and no PreVote, " +
      "several nodes become candidates in the same term, each votes for itself, and nobody " +
      "gets a majority: a split vote. Their timers run out again at slightly different times and " +
      "a later term elects a leader. (Chapter 7 measures how much randomness is enough.)",
    run(ctx) {
      // Search from the chapter's seed for a run whose first term splits: deterministic per seed.
      for (let k = 0; k < 200; k++) {
        const c = splitVoteCluster(ctx.seed * 1000 + k);
        const candidates = new Map<number, Set<NodeId>>();
        c.onEvent((e) => {
          if (e.kind === "role" && e.role === "Candidate") {
            if (!candidates.has(e.term)) candidates.set(e.term, new Set());
            candidates.get(e.term)!.add(e.node);
          }
        });
        const leader = c.waitForLeader({ timeoutMs: 10_000 });
        const first = candidates.get(1)?.size ?? 0;
        if (first < 2 || c.node(leader).raft.term === 1) continue;
        // Replay the same seed with the timeline recording, now that it is known to split.
        const replay = splitVoteCluster(ctx.seed * 1000 + k);
        useCluster(ctx, replay);
        const again = replay.waitForLeader({ timeoutMs: 10_000 });
        claim(again === leader, "the replay is deterministic");
        const term = replay.node(again).raft.term;
        note(
          ctx,
          `seed ${ctx.seed * 1000 + k}: ${first} candidates in term 1, nobody won; ` +
            `${again} won in term ${term}`,
        );
        claim(term >= 2, "the split term produced no leader");
        return;
      }
      throw new Error("no split vote found in 200 runs");
    },
  },
  ...figure8Steps.map((s, i): Step<PartitionContext> => ({
    name: `Figure 8 (${i + 1}/${figure8Steps.length}): ${s.name}`,
    explain: s.explain,
    run(ctx) {
      if (i === 0) {
        // Figure 8 runs on its own 5-node cluster that sends one entry per AppendEntries.
        const fresh = figure8Context(ctx.seed);
        Object.assign(ctx, { ...fresh, cluster: ctx.cluster });
        useCluster(ctx, fresh.cluster);
      }
      s.run(ctx);
    },
  })),
];

/** Chapter 4 as a script and a notebook. */
export const chapter: Chapter<PartitionContext> = {
  number: 4,
  name: "04_partitions",
  title: "Network partitions",
  summary: "a minority leader cannot commit, split votes, Figure 8",
  intro: "A network partition splits the cluster into groups that cannot talk. Raft stays safe " +
    "because every decision needs a **majority**: only one side of a partition can have one. " +
    "A leader on the minority side keeps its title for a while but cannot commit anything. " +
    "Then two subtler cases: **split votes**, and the paper's **Figure 8**, where an entry " +
    "stored on a majority is still not committed because it belongs to an older term.",
  defaultNodes: 5,
  nodesRange: [5, 5],
  context: (seed) => partitionContext(seed),
  steps: partitionSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}

/** Five nodes with almost no randomness in their timeouts and no PreVote: split votes are likely. */
function splitVoteCluster(seed: number): Cluster {
  return new Cluster({
    nodes: 5,
    seed,
    config: {
      preVote: false,
      checkQuorum: false,
      electionTimeoutMinMs: 150,
      electionTimeoutMaxMs: 152,
    },
  });
}
