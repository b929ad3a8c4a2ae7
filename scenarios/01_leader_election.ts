/**
 * Chapter 1 — leader election as Figure 2 of the Raft paper has it: randomized election timeouts,
 * a candidate raising the term, RequestVote, a majority of votes, terms, heartbeats, and why a
 * higher term always wins. PreVote and CheckQuorum are off here; chapter 5 introduces them.
 *
 * Run it: `deno run -A scenarios/01_leader_election.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { NodeId } from "../src/raft/types.ts";
import { quorumSize } from "../src/raft/progress.ts";
import {
  type Chapter,
  type ChapterContext,
  type ChapterStep,
  note,
  runChapterCli,
  useCluster,
} from "./_chapter.ts";
import { claimRule } from "./figure2.ts";
import { exchangeOf } from "./_exchange.ts";

/** State carried from step to step. */
export interface ElectionContext extends ChapterContext {
  /** The chapter's seed (the later steps build clusters from it). */
  readonly seed: number;
  /** The node whose timer fired first. */
  firstCampaigner?: NodeId;
  /** The elected leader. */
  leader?: NodeId;
  /** Its term. */
  term?: number;
}

/**
 * Builds the chapter's cluster: 150–300 ms timeouts and 50 ms heartbeats (the defaults), but
 * PreVote and CheckQuorum off, so that elections run as Figure 2 describes them.
 */
export function electionContext(seed = 1, nodes = 3): ElectionContext {
  return { cluster: new Cluster({ nodes, seed, config: FIGURE2_CONFIG }), seed };
}

/** The paper's election: no PreVote, no CheckQuorum (both on by default; chapter 5). */
const FIGURE2_CONFIG = { preVote: false, checkQuorum: false } as const;

function majority(c: Cluster): number {
  return Math.floor(c.ids.length / 2) + 1;
}

/** The chapter's steps. */
export const electionSteps: readonly ChapterStep<ElectionContext>[] = [
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
    name: "a timeout fires: a candidate in a new term",
    explain: "The first node whose timer runs out, having heard from no leader and voted for " +
      "nobody, becomes a candidate: it raises its term to 1, votes for itself and sends " +
      "RequestVote to every other node (Figure 2, §5.2). " +
      "The other nodes' timers have not run out yet.",
    rules: ["F-2", "C-1"],
    run(ctx) {
      const c = ctx.cluster;
      c.runUntil(() => c.nodes().some((n) => n.raft.role !== "Follower"), {
        description: "a first timeout",
        timeoutMs: 1000,
      });
      const first = c.nodes().find((n) => n.raft.role !== "Follower")!;
      ctx.firstCampaigner = first.id;
      claim(first.raft.role === "Candidate", `${first.id} is a candidate`);
      claim(first.raft.term === 1, `${first.id} raised its term to 1`);
      claim(c.nowMs >= 150, `no timer fires before 150 ms (fired at ${c.nowMs})`);
      const ex = exchangeOf(c);
      claimRule(
        ctx,
        "F-2",
        ex.delivered("AppendEntries").every((d) => d.message.to !== first.id) &&
          ex.sent("RequestVoteReply").every((s) => s.message.from !== first.id) &&
          c.nowMs >= first.raft.config.electionTimeoutMinMs,
        `${first.id} campaigned after ${c.nowMs} ms without hearing from a leader or voting`,
      );
      const cand = ex.events.find((e) =>
        e.kind === "role" && e.node === first.id && e.role === "Candidate"
      );
      claimRule(
        ctx,
        "C-1",
        cand?.kind === "role" && cand.term === 1 && cand.state.votedFor === first.id &&
          c.ids.filter((id) => id !== first.id).every((to) =>
            ex.sent("RequestVote").some((s) =>
              s.message.from === first.id && s.message.to === to && s.message.term === 1
            )
          ),
        `${first.id} became a candidate in term 1, voted for itself and sent RequestVote to every other node`,
      );
    },
  },
  {
    name: "RequestVote and a majority",
    explain: "A follower grants one vote per term, to a candidate " +
      "whose log is at least as up to date as its own, and writes it to disk (votedFor) before " +
      "it answers. A majority of " +
      "votes makes the candidate leader, and it tells everyone at once with AppendEntries.",
    rules: ["RV-2", "F-1", "C-2"],
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.waitForLeader();
      c.advance(30); // the leader's first heartbeats arrive
      const ex = exchangeOf(c);
      const evs = ex.events;
      for (const d of ex.delivered("RequestVote")) {
        const reply = ex.sent("RequestVoteReply").find((s) =>
          s.at > d.at && s.message.from === d.message.to && s.message.to === d.message.from &&
          s.message.requestTerm === d.message.term
        );
        claimRule(ctx, "F-1", reply !== undefined, `${d.message.to} answered ${d.message.from}`);
        if (!reply!.message.granted) continue;
        const r = d.receiver;
        const upToDate = d.message.lastLogTerm > r.lastTerm ||
          (d.message.lastLogTerm === r.lastTerm && d.message.lastLogIndex >= r.lastIndex);
        claimRule(
          ctx,
          "RV-2",
          (r.term < d.message.term || r.votedFor === undefined || r.votedFor === d.message.from) &&
            upToDate && reply!.sender.votedFor === d.message.from,
          `${d.message.to} granted its vote to ${d.message.from}: it had not voted in term ${d.message.term} and the candidate's log is as up to date`,
        );
      }
      const won = evs.findIndex((e) =>
        e.kind === "role" && e.node === leader && e.role === "Leader"
      );
      const grants =
        ex.delivered("RequestVoteReply").filter((d) =>
          d.at < won && d.message.to === leader && d.message.granted &&
          d.message.term === c.node(leader).raft.term
        ).length;
      claimRule(
        ctx,
        "C-2",
        won >= 0 && grants + 1 >= quorumSize(c.ids.length),
        `${leader} became leader with ${grants} votes and its own`,
      );
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
    rules: ["L-1"],
    run(ctx) {
      const c = ctx.cluster;
      const votesBefore = c.stats.sentByType.get("RequestVote") ?? 0;
      c.advance(1000);
      const votesAfter = c.stats.sentByType.get("RequestVote") ?? 0;
      claim(votesAfter === votesBefore, "no election while heartbeats flow");
      const beats = exchangeOf(c).sent("AppendEntries").filter((s) =>
        s.message.from === ctx.leader && s.message.entries.length === 0
      );
      const interval = c.node(ctx.leader!).raft.config.heartbeatIntervalMs;
      for (const to of c.ids.filter((id) => id !== ctx.leader)) {
        const times = beats.filter((b) => b.message.to === to).map((b) => b.atMs);
        const gaps = times.slice(1).map((t, i) => t - times[i]);
        claimRule(
          ctx,
          "L-1",
          times.length >= 1000 / interval - 1 && Math.max(...gaps) <= interval,
          `${times.length} empty AppendEntries to ${to} in 1000 ms, at most ${
            Math.max(...gaps)
          } ms apart`,
        );
      }
      claim(c.leader() === ctx.leader, "same leader");
      claim(c.nodes().every((n) => n.raft.term === ctx.term), "same term everywhere");
    },
  },
  {
    name: "the leader is cut off: a higher term wins",
    explain: "Now the leader itself is cut off. The others stop hearing heartbeats and elect a " +
      "new leader in a higher term. The old leader hears nothing of it and still believes it " +
      "leads: for a while there are two leaders, of different terms (only the new one can reach " +
      "a majority, so only it can commit). When the old one is reconnected, the first message " +
      "carrying the higher term makes it a follower of the new leader: terms only go up, and a " +
      "higher term always wins. (Chapter 5 shows CheckQuorum, which makes a cut-off leader step " +
      "down by itself.)",
    rules: ["S-2"],
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
      claim(
        c.node(old).raft.role === "Leader" && c.node(old).raft.term === ctx.term,
        `cut off, ${old} still believes it leads term ${ctx.term}`,
      );
      c.heal();
      c.runUntil(() => c.node(old).raft.term === term && c.node(old).raft.leaderId === leader, {
        description: `${old} to follow ${leader}`,
        timeoutMs: 1000,
      });
      claim(c.leaders().length === 1 && c.leader() === leader, "one leader again");
      const evs = exchangeOf(c).events;
      const heard = evs.findIndex((e) =>
        e.kind === "deliver" && e.message.to === old && e.message.term > e.receiver.term
      );
      const followed = evs.findIndex((e, i) =>
        i > heard && e.kind === "role" && e.node === old && e.role === "Follower" &&
        e.term === term
      );
      claimRule(
        ctx,
        "S-2",
        heard >= 0 && followed > heard,
        `${old} took term ${term} from a message and became a follower`,
      );
      ctx.leader = leader;
      ctx.term = term;
    },
  },
  {
    name: "asleep through two terms: reply false to an old term",
    explain:
      "A fresh three-node cluster, configured as the paper's like the rest of this chapter. " +
      "The leader and one follower are frozen (a long pause, as a garbage collector can cause). " +
      "The third node times out again and again: each time it starts a new election in a new " +
      "term, and nobody answers. Then the frozen follower wakes: its timer has run out, so it " +
      "campaigns in the term after the one it knew. The awake node is far ahead and replies " +
      "false; the old term is refused. Last the old leader wakes and, still believing it leads, " +
      "sends heartbeats in its old term: they are refused the same way, and the higher term in " +
      "the answers makes it a follower.",
    rules: ["C-4", "RV-1", "AE-1"],
    run(ctx) {
      const c = new Cluster({
        nodes: 3,
        seed: ctx.seed,
        config: FIGURE2_CONFIG,
      });
      useCluster(ctx, c);
      const old = c.waitForLeader();
      c.advance(100);
      const term = c.node(old).raft.term;
      const [sleeper, awake] = c.ids.filter((id) => id !== old);
      c.pause(old);
      c.pause(sleeper);
      c.advance(1000);
      const ex = exchangeOf(c);
      const tries = ex.events.filter((e) =>
        e.kind === "role" && e.node === awake && e.role === "Candidate"
      ).map((e) => e.kind === "role" ? e.term : 0);
      claimRule(
        ctx,
        "C-4",
        tries.length >= 2 && tries.every((t, i) => t === term + 1 + i),
        `${awake} started elections in terms ${tries.join(", ")}`,
      );
      c.resume(sleeper);
      c.runUntil(() => c.leader() !== undefined && c.leader() !== old, {
        description: "a new leader",
        timeoutMs: 3000,
      });
      c.advance(50); // the sleeper's own RequestVote is still on its way
      const stale = ex.delivered("RequestVote").find((d) => d.message.term < d.receiver.term);
      const refused = stale &&
        ex.sent("RequestVoteReply").find((s) =>
          s.at > stale.at && s.message.from === stale.message.to &&
          s.message.requestTerm === stale.message.term
        );
      claimRule(
        ctx,
        "RV-1",
        refused !== undefined && !refused.message.granted &&
          refused.message.term === stale!.receiver.term,
        `${stale?.message.to} (term ${stale?.receiver.term}) refused ${stale?.message.from}'s RequestVote of term ${stale?.message.term}`,
      );
      c.resume(old);
      c.runUntil(() => c.node(old).raft.role === "Follower", {
        description: `${old} to step down`,
        timeoutMs: 1000,
      });
      c.advance(50);
      const beat = ex.delivered("AppendEntries").find((d) =>
        d.message.from === old && d.message.term === term && d.receiver.term > term
      );
      const no = beat &&
        ex.sent("AppendEntriesReply").find((s) =>
          s.at > beat.at && s.message.from === beat.message.to && s.message.requestTerm === term
        );
      claimRule(
        ctx,
        "AE-1",
        no !== undefined && !no.message.success && no.message.term === beat!.receiver.term,
        `${beat?.message.to} replied false to ${old}'s AppendEntries of term ${term}`,
      );
      claim(c.leaders().length === 1, `one leader: ${c.leaders().join(", ")}`);
      note(
        ctx,
        `${awake} reached term ${tries.at(-1)} alone; ${sleeper} woke in term ${term} and ` +
          `${old} (leader of term ${term}) woke to find term ${c.node(old).raft.term}`,
      );
    },
  },
];

/** Chapter 1 as a script and a notebook. */
export const chapter: Chapter<ElectionContext> = {
  number: 1,
  name: "01_leader_election",
  title: "Leader election",
  summary: "timeouts, RequestVote, a majority, terms, heartbeats",
  intro: "A Raft cluster has at most one leader per **term**. Followers wait for heartbeats; " +
    "when a follower's randomized election timer runs out it becomes a candidate in a new term, " +
    "votes for itself and sends **RequestVote**. A majority of votes makes it leader, and its " +
    "heartbeats keep everyone else quiet. This chapter runs elections as Figure 2 of the paper " +
    "describes them; the two additions raftmeta has on by default, **PreVote** and " +
    "**CheckQuorum**, come in chapter 5, where partitions show what they are for.",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: electionContext,
  steps: electionSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
