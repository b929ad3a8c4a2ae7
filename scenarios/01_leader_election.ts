/**
 * Chapter 1 — leader election: randomized election timeouts, the PreVote round, RequestVote, a
 * majority of votes, terms, heartbeats, and why a higher term always wins.
 *
 * Run it: `deno run -A scenarios/01_leader_election.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { NodeId } from "../src/raft/types.ts";
import { type Chapter, type ChapterContext, runChapterCli, type Step } from "./_chapter.ts";

/** State carried from step to step. */
export interface ElectionContext extends ChapterContext {
  /** The node whose timer fired first. */
  firstCampaigner?: NodeId;
  /** The elected leader. */
  leader?: NodeId;
  /** Its term. */
  term?: number;
}

/** Builds the chapter's cluster: the defaults (150–300 ms timeouts, 50 ms heartbeats, PreVote). */
export function electionContext(seed = 1, nodes = 3): ElectionContext {
  return { cluster: new Cluster({ nodes, seed }) };
}

function majority(c: Cluster): number {
  return Math.floor(c.ids.length / 2) + 1;
}

/** The chapter's steps. */
export const electionSteps: readonly Step<ElectionContext>[] = [
  {
    name: "everyone starts as a follower",
    explain: "A new node is a follower at term 0 and waits for a leader. Its election timer is " +
      "randomized between 150 and 300 ms, so the nodes' timers run out at different times. " +
      "Nothing happens before the shortest timeout.",
    run(ctx) {
      const c = ctx.cluster;
      c.advance(140);
      claim(c.stats.sent === 0, `no message before the first timeout, saw ${c.stats.sent}`);
      for (const n of c.nodes()) {
        claim(n.raft.role === "Follower" && n.raft.term === 0, `${n.id} is a follower at term 0`);
      }
    },
  },
  {
    name: "a timeout fires: the PreVote round",
    explain: "The first node whose timer runs out does not raise its term yet. It becomes a " +
      'pre-candidate and asks the others "would you vote for me in term 1?" (PreVote, Raft ' +
      "dissertation §9.6). Nobody's term changes, so a node that cannot win disturbs nobody.",
    run(ctx) {
      const c = ctx.cluster;
      c.runUntil(() => c.nodes().some((n) => n.raft.role !== "Follower"), {
        description: "a first timeout",
        timeoutMs: 1000,
      });
      const first = c.nodes().find((n) => n.raft.role !== "Follower")!;
      ctx.firstCampaigner = first.id;
      claim(first.raft.role === "PreCandidate", `${first.id} starts with PreVote`);
      claim(c.nodes().every((n) => n.raft.term === 0), "no term was raised by a pre-vote");
      claim(c.nowMs >= 150, `no timer fires before 150 ms (fired at ${c.nowMs})`);
      const preVotes = c.stats.sentByType.get("PreVote") ?? 0;
      claim(preVotes === c.ids.length - 1, `one PreVote per peer, saw ${preVotes}`);
    },
  },
  {
    name: "RequestVote and a majority",
    explain:
      "With a majority of pre-votes the node becomes a candidate: it raises its term, votes " +
      "for itself and sends RequestVote. A follower grants one vote per term, to a candidate " +
      "whose log is at least as up to date as its own, and remembers it (votedFor). A majority of " +
      "votes makes the candidate leader.",
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.waitForLeader();
      c.advance(30); // the leader's first heartbeats arrive
      ctx.leader = leader;
      const term = c.node(leader).raft.term;
      ctx.term = term;
      claim(term >= 1, "the leader's term is at least 1");
      const voters = c.nodes().filter((n) => n.raft.term === term && n.raft.votedFor === leader);
      claim(
        voters.length >= majority(c),
        `a majority (${majority(c)}) voted for ${leader} in term ${term}: ${
          voters.map((n) => n.id)
        }`,
      );
      claim(c.leaders().length === 1, `one leader, not ${c.leaders().join(", ")}`);
    },
  },
  {
    name: "heartbeats hold the term",
    explain: "The leader sends an empty AppendEntries (a heartbeat) every 50 ms. Each one resets " +
      "the followers' election timers, so while the leader lives nobody campaigns and the term " +
      "stays the same.",
    run(ctx) {
      const c = ctx.cluster;
      const votesBefore = (c.stats.sentByType.get("RequestVote") ?? 0) +
        (c.stats.sentByType.get("PreVote") ?? 0);
      c.advance(1000);
      const votesAfter = (c.stats.sentByType.get("RequestVote") ?? 0) +
        (c.stats.sentByType.get("PreVote") ?? 0);
      claim(votesAfter === votesBefore, "no election while heartbeats flow");
      claim(c.leader() === ctx.leader, "same leader");
      claim(c.nodes().every((n) => n.raft.term === ctx.term), "same term everywhere");
    },
  },
  {
    name: "a cut-off follower cannot raise the term",
    explain:
      "One follower is cut off. Its timer runs out again and again, but its pre-votes reach " +
      "nobody, so its term never rises. When it is reconnected it simply follows the leader " +
      "again. Without PreVote it would have raised its term on every timeout and forced the " +
      "leader to step down on return.",
    run(ctx) {
      const c = ctx.cluster;
      const f = c.ids.find((id) => id !== ctx.leader)!;
      c.isolate(f);
      c.advance(1000);
      claim(c.node(f).raft.term === ctx.term, `${f} kept term ${ctx.term}`);
      c.heal();
      c.advance(300);
      claim(c.leader() === ctx.leader, "the leader was not disturbed");
      claim(c.node(f).raft.leaderId === ctx.leader, `${f} follows ${ctx.leader} again`);
      claim(c.nodes().every((n) => n.raft.term === ctx.term), "the term did not change");
    },
  },
  {
    name: "the leader is cut off: a higher term wins",
    explain: "Now the leader itself is cut off. The others stop hearing heartbeats, elect a new " +
      "leader in a higher term, and the old leader, hearing from no majority, steps down " +
      "(CheckQuorum). When it is reconnected, the first message carrying the higher term makes it " +
      "a follower of the new leader: terms only go up, and a higher term always wins.",
    run(ctx) {
      const c = ctx.cluster;
      const old = ctx.leader!;
      c.isolate(old);
      c.runUntil(() => c.leader() !== undefined && c.leader() !== old, {
        description: "a new leader",
        timeoutMs: 3000,
      });
      const leader = c.leader()!;
      const term = c.node(leader).raft.term;
      claim(term > ctx.term!, `the new term ${term} is higher than ${ctx.term}`);
      c.advance(350);
      claim(c.node(old).raft.role !== "Leader", `${old} stepped down without a majority`);
      c.heal();
      c.runUntil(() => c.node(old).raft.term === term && c.node(old).raft.leaderId === leader, {
        description: `${old} to follow ${leader}`,
        timeoutMs: 1000,
      });
      claim(c.leaders().length === 1 && c.leader() === leader, "one leader again");
      ctx.leader = leader;
      ctx.term = term;
    },
  },
];

/** Chapter 1 as a script and a notebook. */
export const chapter: Chapter<ElectionContext> = {
  number: 1,
  name: "01_leader_election",
  title: "Leader election",
  summary: "timeouts, PreVote, RequestVote, a majority, terms",
  intro: "A Raft cluster has at most one leader per **term**. Followers wait for heartbeats; " +
    "when a follower's randomized election timer runs out it campaigns: first a **PreVote** round " +
    "that does not raise its term, then **RequestVote** in a new term. A majority of votes " +
    "makes it leader, and its heartbeats keep everyone else quiet.",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: electionContext,
  steps: electionSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
