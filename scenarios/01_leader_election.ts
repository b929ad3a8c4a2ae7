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

/** Builds the chapter's cluster: the defaults (150–300 ms timeouts, 50 ms heartbeats, PreVote). */
export function electionContext(seed = 1, nodes = 3): ElectionContext {
  return { cluster: new Cluster({ nodes, seed }), seed };
}

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
    name: "a timeout fires: the PreVote round",
    explain: "The first node whose timer runs out does not raise its term yet. It becomes a " +
      'pre-candidate and asks the others "would you vote for me in term 1?" (PreVote, Raft ' +
      "dissertation §9.6). Nobody's term changes, so a node that cannot win disturbs nobody. " +
      "Figure 2 has no PreVote: there the node would become a candidate at once.",
    rules: ["F-2"],
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
      const ex = exchangeOf(c);
      claimRule(
        ctx,
        "F-2",
        ex.delivered("AppendEntries").every((d) => d.message.to !== first.id) &&
          ex.sent("RequestVoteReply").every((s) => s.message.from !== first.id) &&
          c.nowMs >= first.raft.config.electionTimeoutMinMs,
        `${first.id} campaigned after ${c.nowMs} ms without hearing from a leader or voting`,
      );
    },
  },
  {
    name: "RequestVote and a majority",
    explain:
      "With a majority of pre-votes the node becomes a candidate: it raises its term, votes " +
      "for itself and sends RequestVote. A follower grants one vote per term, to a candidate " +
      "whose log is at least as up to date as its own, and writes it to disk (votedFor) before " +
      "it answers. A majority of " +
      "votes makes the candidate leader, and it tells everyone at once with AppendEntries.",
    rules: ["C-1", "RV-2", "F-1", "C-2"],
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.waitForLeader();
      c.advance(30); // the leader's first heartbeats arrive
      const ex = exchangeOf(c);
      const evs = ex.events;
      const became = evs.findIndex((e) =>
        e.kind === "role" && e.node === leader && e.role === "Candidate"
      );
      const cand = evs[became];
      claimRule(
        ctx,
        "C-1",
        cand?.kind === "role" && cand.state.votedFor === leader &&
          c.ids.filter((id) => id !== leader).every((to) =>
            ex.sent("RequestVote").some((s) =>
              s.message.from === leader && s.message.to === to &&
              s.message.term === cand.term
            )
          ),
        `${leader} became a candidate, voted for itself and sent RequestVote to every other node`,
      );
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
        won > became && grants + 1 >= quorumSize(c.ids.length),
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
      const votesBefore = (c.stats.sentByType.get("RequestVote") ?? 0) +
        (c.stats.sentByType.get("PreVote") ?? 0);
      c.advance(1000);
      const votesAfter = (c.stats.sentByType.get("RequestVote") ?? 0) +
        (c.stats.sentByType.get("PreVote") ?? 0);
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
    name: "a cut-off follower cannot raise the term",
    explain:
      "One follower is cut off. Its timer runs out again and again, but its pre-votes reach " +
      "nobody, so its term never rises. When it is reconnected it simply follows the leader " +
      "again. Without PreVote it would have raised its term on every timeout and, on its " +
      "return, its higher term in the answer to the leader's next heartbeat would have forced " +
      "the leader to step down (the last step of this chapter does exactly that).",
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
      claim(c.node(old).raft.role !== "Leader", `${old} stepped down without a majority`);
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
    explain: "A fresh three-node cluster configured as the paper's (no PreVote, no CheckQuorum). " +
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
        config: { preVote: false, checkQuorum: false },
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
  {
    name: "Break it: PreVote off, the cut-off follower inflates the term",
    explain: "Step 5 again on a fresh cluster, with PreVote switched off. The cut-off follower " +
      "now becomes a candidate on every timeout and raises its term each time. When it is " +
      "reconnected, the leader's next heartbeat reaches a node of a higher term: the answer " +
      "deposes the leader, and the whole cluster moves to the inflated term for nothing. (With " +
      "the rule on, the same run leaves the term and the leader alone.)",
    breakIt: "PreVote (dissertation §9.6): config preVote false",
    run(ctx) {
      const off = ctx.ruleOff !== false;
      const c = new Cluster({
        nodes: ctx.cluster.ids.length,
        seed: ctx.seed,
        config: off ? { preVote: false } : {},
      });
      useCluster(ctx, c);
      const leader = c.waitForLeader();
      c.advance(300);
      const term = c.node(leader).raft.term;
      const f = c.ids.find((id) => id !== leader)!;
      c.isolate(f);
      c.advance(1000);
      const inflated = c.node(f).raft.term;
      c.heal();
      c.advance(300);
      c.waitForLeader({ timeoutMs: 3000 });
      const now = c.node(c.leader()!).raft.term;
      if (off) {
        claim(inflated >= term + 2, `cut off, ${f} raised its term from ${term} to ${inflated}`);
        claim(
          now >= inflated && c.node(leader).raft.term >= inflated,
          `the cluster moved to term ${now} (was ${term})`,
        );
        const deposed = exchangeOf(c).events.some((e) =>
          e.kind === "role" && e.node === leader && e.role === "Follower" && e.term >= inflated
        );
        claim(deposed, `the leader ${leader} was deposed by the returning node's term`);
        note(
          ctx,
          `caught: without PreVote ${f} came back in term ${inflated}; leader ${leader} of ` +
            `term ${term} was deposed and the cluster now leads in term ${now}`,
        );
      } else {
        claim(inflated === term, `with PreVote ${f} kept term ${term}`);
        claim(c.leader() === leader && now === term, "the leader and the term are unchanged");
        note(ctx, `with PreVote: ${f} kept term ${term}, ${leader} still leads`);
      }
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
