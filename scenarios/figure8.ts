/**
 * Figure 8 of the Raft paper, step by step on five nodes: an entry of an earlier term that sits on
 * a majority is still not committed by counting replicas, and a later leader may overwrite it.
 * raftmeta's leaders commit only entries of their own term (rule 1), which is what keeps this safe.
 *
 * Run it: `deno run scenarios/figure8.ts --seed 3`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { claim, type ScenarioContext, type Step } from "../src/scenario/scenario.ts";
import { runScenarioCli, type ScenarioScript } from "../src/scenario/cli.ts";
import type { FaultPoint, NodeId } from "../src/raft/types.ts";
import { claimRule, type RuleClaims } from "./figure2.ts";

/** State carried between the steps. */
export interface Figure8Context extends ScenarioContext, RuleClaims {
  /** Index of the contested entry. */
  index: number;
  /** Term of the contested entry (the first leader's term). */
  oldTerm: number;
  /** The first leader. */
  s1: NodeId;
  /** The node that also receives the entry in step 1. */
  s2: NodeId;
  /** A node that receives the entry only later. */
  s3: NodeId;
  /** A node that stays out of the way. */
  s4: NodeId;
  /** The node that leads briefly in step 2 and overwrites in step 4. */
  s5: NodeId;
}

/**
 * Builds a 5-node cluster sending one entry per AppendEntries, so the steps can be separated.
 * `faultPoints` switches rules off ("break it": `commit-earlier-term-by-counting`).
 */
export function figure8Context(
  seed = 1,
  options: { faultPoints?: readonly FaultPoint[] } = {},
): Figure8Context {
  const cluster = new Cluster({
    nodes: 5,
    seed,
    config: { entriesPerMessageMax: 1 },
    faultPoints: options.faultPoints,
  });
  return { cluster, index: 0, oldTerm: 0, s1: "", s2: "", s3: "", s4: "", s5: "" };
}

function lastTermOf(c: Cluster, id: NodeId): number {
  return c.node(id).raft.log.lastTerm;
}

/** The Figure 8 steps. */
export const figure8Steps: readonly Step<Figure8Context>[] = [
  {
    name: "S1 leads and replicates an entry to S2 only",
    explain: "S1 is elected and commits a first write everywhere. Then its links to all but S2 " +
      "are cut, and it appends entry X at the next index: only S1 and S2 hold it.",
    run(ctx) {
      const c = ctx.cluster;
      ctx.s1 = c.waitForLeader();
      c.complete(c.put("/base", "0"));
      c.runUntil(() => c.nodes().every((n) => n.applier.lastApplied === 2), {
        description: "the first write to apply everywhere",
      });
      const others = c.ids.filter((id) => id !== ctx.s1);
      [ctx.s2, ctx.s3, ctx.s4, ctx.s5] = others;
      // The paper's names next to ours in every table and timeline: n3=S1 and so on.
      ctx.aliases = Object.fromEntries(
        [ctx.s1, ctx.s2, ctx.s3, ctx.s4, ctx.s5].map((id, i) => [id, `S${i + 1}`]),
      );
      for (const id of [ctx.s3, ctx.s4, ctx.s5]) c.cut(ctx.s1, id, { bothWays: true });
      const x = c.put("/x", "from S1");
      ctx.index = x.index!;
      ctx.oldTerm = x.term!;
      c.runUntil(() => c.node(ctx.s2).raft.log.term(ctx.index) === ctx.oldTerm, {
        description: "X to reach S2",
      });
      claim(c.node(ctx.s1).raft.commitIndex < ctx.index, "X is on 2 of 5 nodes: not committed");
    },
  },
  {
    name: "S1 crashes; S5 leads a new term but its entry reaches nobody",
    explain:
      "S2 is cut off and S3 cannot reach S4, so only S5 can gather three votes. S5 leads a " +
      "higher term and appends its no-op at X's index; it is cut off before anyone receives the " +
      "no-op, then crashes.",
    run(ctx) {
      const c = ctx.cluster;
      c.crash(ctx.s1);
      c.isolate(ctx.s2);
      c.cut(ctx.s3, ctx.s4, { bothWays: true });
      c.runUntil(() => c.node(ctx.s5).raft.role === "Leader", {
        description: "S5 to win",
        timeoutMs: 5000,
      });
      c.isolate(ctx.s5);
      claim(
        c.node(ctx.s5).raft.log.term(ctx.index)! > ctx.oldTerm,
        "S5 holds a newer-term entry at X's index",
      );
      c.crash(ctx.s5);
      c.advance(50); // messages already on the wire from S5 meet the cut links and are lost
    },
  },
  {
    name: "S1 returns, leads again, and X reaches a majority, yet is not committed",
    explain: "S1 restarts and wins a later term with S3's and S4's votes (its log is more up to " +
      "date than theirs). It sends X to S3: S1, S2 and S3 hold X, a majority, and S1 knows it. " +
      "Counting replicas would commit X; raftmeta does not, because X is from an older term. Only " +
      "the new term's no-op could commit it, and S3 is cut off before the no-op arrives.",
    run(ctx) {
      const c = ctx.cluster;
      c.heal();
      c.isolate(ctx.s2);
      c.restart(ctx.s1);
      c.runUntil(() => c.node(ctx.s1).raft.role === "Leader", {
        description: "S1 to lead again",
        timeoutMs: 5000,
      });
      c.heal();
      c.cut(ctx.s1, ctx.s4, { bothWays: true });
      const s1 = c.node(ctx.s1);
      c.runUntil(() => (s1.raft.status().progress.get(ctx.s3)?.matchIndex ?? 0) >= ctx.index, {
        description: "S1 to learn that S3 holds X",
      });
      c.isolate(ctx.s3);
      c.runUntil(() => (s1.raft.status().progress.get(ctx.s2)?.matchIndex ?? 0) >= ctx.index, {
        description: "S1 to learn that S2 holds X",
      });
      const known =
        [...s1.raft.status().progress.values()].filter((p) => p.matchIndex >= ctx.index).length + 1;
      claim(known >= 3, `S1 should know X is on a majority, knows ${known} of 5`);
      claimRule(
        ctx,
        "L-6",
        s1.raft.commitIndex < ctx.index && s1.raft.log.term(ctx.index) !== s1.raft.term,
        `an older-term entry on a majority must not commit by counting (commitIndex ${s1.raft.commitIndex})`,
      );
    },
  },
  {
    name: "S1 crashes; S5 returns and overwrites X",
    explain: "S5's last term is newer than X's, so S3 and S4 vote for it (S2 is cut off). It " +
      "leads, commits its own term, and replaces X on S3. Had X been counted as committed, a " +
      "committed entry would now be lost.",
    run(ctx) {
      const c = ctx.cluster;
      c.crash(ctx.s1);
      c.heal();
      c.isolate(ctx.s2);
      c.restart(ctx.s5);
      c.runUntil(() => c.leader() === ctx.s5, { description: "S5 to lead", timeoutMs: 5000 });
      const s3 = c.node(ctx.s3);
      c.runUntil(() => s3.raft.commitIndex >= ctx.index, { description: "S5's term to commit" });
      claim(
        s3.raft.log.term(ctx.index)! > ctx.oldTerm,
        `S3 now holds term ${s3.raft.log.term(ctx.index)} at index ${ctx.index}, not X`,
      );
      claim(lastTermOf(c, ctx.s5) > ctx.oldTerm, "S5 leads a newer term");
      claim(s3.store.getString("/x") === undefined, "X was never applied");
    },
  },
];

/** Figure 8 as a script. */
export const figure8: ScenarioScript<Figure8Context> = {
  name: "figure8",
  summary: "Raft paper Figure 8: why a leader commits only entries of its own term",
  defaultNodes: 5,
  nodesRange: [5, 5],
  context: (seed) => figure8Context(seed),
  steps: figure8Steps,
};

if (import.meta.main) {
  Deno.exit(runScenarioCli(figure8, Deno.args));
}
