/**
 * The seed's demo: a 3-node cluster through initial election, replication of PUT/DEL commands,
 * log convergence, a quiet period of heartbeats, leader crash, re-election at a higher term,
 * continued replication, the old leader's return and catch-up, and final consistency.
 *
 * Run it: `deno task demo` (or `deno run scenarios/demo.ts --seed 7`).
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { claim, type ScenarioContext, type Step } from "../src/scenario/scenario.ts";
import { runScenarioCli, type ScenarioScript } from "../src/scenario/cli.ts";
import type { NodeId } from "../src/raft/types.ts";
import { storeStrings } from "../src/observe/describe.ts";

/** State carried from step to step. */
export interface DemoContext extends ScenarioContext {
  /** The first leader, crashed in step 5. */
  firstLeader?: NodeId;
  /** Its term. */
  firstTerm?: number;
  /** The leader elected after the crash. */
  secondLeader?: NodeId;
}

/** Builds the demo's cluster. */
export function demoContext(seed = 1, nodes = 3): DemoContext {
  return { cluster: new Cluster({ nodes, seed }) };
}

function putAll(c: Cluster, pairs: [string, string][]): void {
  for (const [k, v] of pairs) {
    const op = c.complete(c.put(k, v));
    claim(op.status === "ok", `PUT ${k} should commit, got ${op.status}: ${op.error}`);
  }
}

/** The demo's steps. */
export const demoSteps: readonly Step<DemoContext>[] = [
  {
    name: "initial election",
    explain: "Every node starts as a follower with a randomized election timeout (150–300 ms). " +
      "The first to time out asks for pre-votes, then votes; a majority makes it leader.",
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.waitForLeader();
      c.advance(100); // let the leader's first heartbeats reach everyone
      ctx.firstLeader = leader;
      ctx.firstTerm = c.node(leader).raft.term;
      claim(c.leaders().length === 1, `exactly one leader expected, got ${c.leaders().join(", ")}`);
      for (const n of c.nodes()) {
        claim(
          n.raft.leaderId === leader,
          `${n.id} should follow ${leader}, not ${n.raft.leaderId}`,
        );
      }
    },
  },
  {
    name: "replicate PUT and DEL",
    explain:
      "Clients write through the leader. Each command (the seed's PUT\\n<key>\\n<value> and " +
      "DEL\\n<key>) is appended to the leader's log, replicated with AppendEntries, and " +
      "committed once a majority stores it — never earlier. (A leader counts replicas only of " +
      "entries of its own term; earlier ones commit with them: Figure 8, chapter 5.)",
    run(ctx) {
      const c = ctx.cluster;
      putAll(c, [
        ["/services/db/primary", "10.0.0.7:5432"],
        ["/services/db/replica", "10.0.0.8:5432"],
        ["/config/feature-x", "on"],
      ]);
      const del = c.complete(c.delete("/config/feature-x"));
      claim(del.status === "ok", `DEL should commit, got ${del.status}: ${del.error}`);
      const leader = c.node(c.leader()!);
      claim(
        leader.store.getString("/config/feature-x") === undefined,
        "deleted key must be gone",
      );
    },
  },
  {
    name: "log convergence",
    explain: "Followers learn the commitIndex from the next AppendEntries and apply the same " +
      "entries in the same order: every log and every store ends up identical.",
    run(ctx) {
      const c = ctx.cluster;
      c.runUntil(() => c.converged(), { timeoutMs: 2000, description: "logs to converge" });
    },
  },
  {
    name: "quiet period: stable heartbeats",
    explain: "With no client traffic the leader sends an empty AppendEntries every 50 ms. " +
      "Heartbeats reset the followers' election timers, so nobody starts an election.",
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.leader()!;
      const term = c.node(leader).raft.term;
      const before = c.stats.sentByType.get("AppendEntries") ?? 0;
      c.advance(2000);
      const heartbeats = (c.stats.sentByType.get("AppendEntries") ?? 0) - before;
      claim(c.leader() === leader, `leader changed to ${c.leader()} during a quiet period`);
      claim(c.node(leader).raft.term === term, "term changed during a quiet period");
      const followers = c.ids.length - 1;
      claim(
        heartbeats <= (2000 / 50 + 1) * followers,
        `at most one heartbeat per follower per 50 ms expected, saw ${heartbeats}`,
      );
      claim(heartbeats >= (2000 / 50 - 1) * followers, `too few heartbeats: ${heartbeats}`);
    },
  },
  {
    name: "leader crash",
    explain: "The leader's process stops. Its heartbeats stop with it; the followers keep their " +
      "logs and wait for their election timers to run out.",
    run(ctx) {
      const c = ctx.cluster;
      c.crash(ctx.firstLeader!);
      c.advance(50);
      claim(c.node(ctx.firstLeader!).state === "crashed", "the old leader should be down");
    },
  },
  {
    name: "re-election at a higher term",
    explain: "A follower times out, wins a pre-vote and then a vote from the surviving majority, " +
      "and leads a new, higher term. Its log is up to date, so no committed entry is lost.",
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.waitForLeader({ timeoutMs: 3000 });
      ctx.secondLeader = leader;
      claim(leader !== ctx.firstLeader, "the crashed node cannot lead");
      const term = c.node(leader).raft.term;
      claim(term > ctx.firstTerm!, `new term ${term} must exceed ${ctx.firstTerm}`);
      claim(
        c.node(leader).store.getString("/services/db/primary") === "10.0.0.7:5432",
        "the new leader holds every committed write",
      );
    },
  },
  {
    name: "continued replication",
    explain: "The new leader commits with a majority of two out of three: the cluster keeps " +
      "accepting writes with one node down.",
    run(ctx) {
      const c = ctx.cluster;
      putAll(c, [
        ["/services/db/primary", "10.0.0.8:5432"],
        ["/services/cache/primary", "10.0.0.9:6379"],
      ]);
    },
  },
  {
    name: "old leader returns and catches up",
    explain: "The old leader restarts from its persisted term, vote and log, hears the new " +
      "leader's higher term, becomes a follower, and receives the entries it missed.",
    run(ctx) {
      const c = ctx.cluster;
      c.restart(ctx.firstLeader!);
      c.runUntil(() => c.converged(), {
        timeoutMs: 3000,
        description: "the old leader to catch up",
      });
      const old = c.node(ctx.firstLeader!);
      claim(old.raft.role === "Follower", `the old leader should follow, is ${old.raft.role}`);
      claim(c.leader() === ctx.secondLeader, "the returning node must not disrupt the leader");
    },
  },
  {
    name: "final consistency",
    explain: "Every node holds the same keys, applied at the same index.",
    run(ctx) {
      const c = ctx.cluster;
      const expected = [
        ["/services/cache/primary", "10.0.0.9:6379"],
        ["/services/db/primary", "10.0.0.8:5432"],
        ["/services/db/replica", "10.0.0.8:5432"],
      ];
      for (const n of c.nodes()) {
        claim(
          JSON.stringify(storeStrings(n.store)) === JSON.stringify(expected),
          `${n.id} holds ${JSON.stringify(storeStrings(n.store))}`,
        );
      }
    },
  },
];

/** The demo as a script. */
export const demo: ScenarioScript<DemoContext> = {
  name: "demo",
  summary: "the seed's 3-node demo through leader failure",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: demoContext,
  steps: demoSteps,
};

if (import.meta.main) {
  Deno.exit(runScenarioCli(demo, Deno.args));
}
