/**
 * Chapter 5 — network partitions: PreVote (a cut-off node cannot raise the term) and CheckQuorum
 * (a cut-off leader steps down), a leader in a minority cannot commit, the majority side moves on,
 * split votes and how randomized timeouts end them, and the Raft paper's Figure 8 step by step
 * (the steps of `scenarios/figure8.ts`).
 *
 * Run it: `deno run -A scenarios/05_partitions.ts [--seed N]`.
 *
 * @module
 */

import { Cluster, type Operation } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { NodeId } from "../src/raft/types.ts";
import { SafetyViolation } from "../src/sim/invariants.ts";
import { type Figure8Context, figure8Context, figure8Steps } from "./figure8.ts";
import {
  type Chapter,
  type ChapterContext,
  type ChapterStep,
  note,
  runChapterCli,
  useCluster,
} from "./_chapter.ts";
import { claimRule, type RuleId } from "./figure2.ts";
import { exchangeOf } from "./_exchange.ts";

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

/** The Figure 2 rules each Figure 8 step shows. */
const FIGURE8_RULES: readonly (readonly RuleId[] | undefined)[] = [undefined, undefined, [
  "L-6",
], undefined];

/** The chapter's steps. */
export const partitionSteps: readonly ChapterStep<PartitionContext>[] = [
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
    name: "PreVote: a cut-off follower cannot raise the term",
    explain: "Chapter 1 ran elections as Figure 2 has them; raftmeta by default adds two rules " +
      "for partitions, and this chapter shows both. The first is PreVote (Raft dissertation " +
      "§9.6). One follower is cut off. Its timer runs out again and again, but a node whose " +
      "timer runs out does not raise its term yet: it becomes a pre-candidate and asks " +
      '"would you vote for me in the next term?". Nobody hears it, so its term never rises. ' +
      "When it is reconnected it simply follows the leader again. Without PreVote it would " +
      "have raised its term on every timeout and, on its return, its higher term in the answer " +
      "to the leader's next heartbeat would have forced the leader to step down (the first " +
      '"break it" step at the end of this chapter does exactly that).',
    run(ctx) {
      const c = ctx.cluster;
      const f = c.ids.find((id) => id !== ctx.leader)!;
      c.isolate(f);
      c.advance(1000);
      const ex = exchangeOf(c);
      const asked = ex.sent("PreVote").filter((s) => s.message.from === f).length;
      claim(asked > 0, `${f} ran PreVote rounds while cut off (${asked} PreVote messages)`);
      claim(
        ex.sent("RequestVote").every((s) => s.message.from !== f),
        `${f} never became a candidate`,
      );
      claim(c.node(f).raft.term === ctx.term, `${f} kept term ${ctx.term}`);
      c.heal();
      c.advance(300);
      claim(c.leader() === ctx.leader, "the leader was not disturbed");
      claim(c.node(f).raft.leaderId === ctx.leader, `${f} follows ${ctx.leader} again`);
      claim(c.nodes().every((n) => n.raft.term === ctx.term), "the term did not change");
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
      "leader, hearing from no majority for an election timeout, steps down: that is the second " +
      "rule, CheckQuorum (dissertation §6.2). Without it (chapter 1) a cut-off leader keeps its " +
      "title until it hears of the higher term.",
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
      "gets a majority: a split vote. A candidate that has voted for itself refuses the others: " +
      "one vote per term. Refused by a majority, a candidate here returns to follower at once " +
      "(Figure 2 keeps it a candidate until its timer runs out). Their timers run out again at " +
      "slightly different times and a later term elects a leader; a candidate of that term that " +
      "hears the winner's AppendEntries gives up and follows it. (Chapter 7 measures how much " +
      "randomness is enough.)",
    rules: ["RV-2", "C-3"],
    run(ctx) {
      // Search from the chapter's seed for a run whose first term splits and whose winning term
      // had a second candidate: deterministic per seed.
      for (let k = 0; k < 200; k++) {
        const c = splitVoteCluster(ctx.seed * 1000 + k);
        const ex = exchangeOf(c);
        const leader = c.waitForLeader({ timeoutMs: 10_000 });
        c.advance(20); // the winner's first AppendEntries reach the other candidates
        const first = ex.events.filter((e) =>
          e.kind === "role" && e.role === "Candidate" && e.term === 1
        ).length;
        if (first < 2 || c.node(leader).raft.term === 1) continue;
        if (!ex.delivered("AppendEntries").some((d) => d.receiver.role === "Candidate")) continue;
        // Replay the same seed with the timeline recording, now that it is known to split.
        const replay = splitVoteCluster(ctx.seed * 1000 + k);
        useCluster(ctx, replay);
        const again = replay.waitForLeader({ timeoutMs: 10_000 });
        replay.advance(20);
        claim(again === leader, "the replay is deterministic");
        const term = replay.node(again).raft.term;
        const rx = exchangeOf(replay);
        const selfVoted = rx.delivered("RequestVote").find((d) =>
          d.receiver.term === d.message.term && d.receiver.votedFor === d.message.to
        );
        const refusal = selfVoted &&
          rx.sent("RequestVoteReply").find((s) =>
            s.at > selfVoted.at && s.message.from === selfVoted.message.to &&
            s.message.requestTerm === selfVoted.message.term
          );
        claimRule(
          ctx,
          "RV-2",
          refusal !== undefined && !refusal.message.granted,
          `${selfVoted?.message.to}, a candidate that voted for itself, refused ${selfVoted?.message.from}`,
        );
        const evs = rx.events;
        const heard = evs.findIndex((e) =>
          e.kind === "deliver" && e.message.type === "AppendEntries" &&
          e.receiver.role === "Candidate" && e.receiver.term === e.message.term
        );
        const gaveUp = heard >= 0 && evs[heard].kind === "deliver"
          ? evs.slice(heard).find((e) =>
            e.kind === "role" &&
            e.node === (evs[heard] as { message: { to: NodeId } }).message.to &&
            e.role === "Follower"
          )
          : undefined;
        claimRule(
          ctx,
          "C-3",
          gaveUp?.kind === "role" && gaveUp.term === term,
          `a candidate of term ${term} heard ${again}'s AppendEntries and became a follower`,
        );
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
  {
    name: "a candidate whose log is behind gets no vote",
    explain: "A fresh five-node cluster configured as the paper's (no PreVote, no CheckQuorum). " +
      "One follower is cut off and misses a committed write; alone, it times out again and " +
      "again and raises its term each time. It is reconnected just before its next timeout " +
      "and asks for votes in a term higher than anyone's. Every node takes the higher term (the " +
      "leader steps down) but refuses the vote: the candidate's log is behind theirs (its last " +
      "entry has an older term, or the same term and a lower index), so it could be missing a " +
      "committed entry (§5.4.1). A node with the whole log wins instead.",
    rules: ["RV-2", "S-2"],
    run(ctx) {
      const c = new Cluster({
        nodes: 5,
        seed: ctx.seed,
        config: { preVote: false, checkQuorum: false },
      });
      useCluster(ctx, c);
      const old = c.waitForLeader();
      const f = c.ids.find((id) => id !== old)!;
      c.isolate(f);
      const op = c.complete(c.put("/services/db/primary", "10.0.0.9:5432"));
      claim(op.status === "ok", `the write commits without ${f} (${op.status})`);
      c.runUntil(() => c.node(f).raft.term >= c.node(old).raft.term + 2, {
        description: `${f} to raise its term twice`,
        timeoutMs: 3000,
      });
      c.advance(Math.max(0, c.node(f).raft.nextDeadlineMs() - c.nowMs - 1));
      const inflated = c.node(f).raft.term;
      c.heal();
      c.runUntil(() => {
        const l = c.leader();
        return l !== undefined && c.node(l).raft.term > inflated;
      }, { description: "a leader above the inflated term", timeoutMs: 3000 });
      const leader = c.leader()!;
      claim(leader !== f, `${f} did not win`);
      const ex = exchangeOf(c);
      const asks = ex.delivered("RequestVote").filter((d) =>
        d.message.from === f && d.message.term > d.receiver.term
      );
      claim(asks.length > 0, `${f}'s RequestVote of a higher term arrived`);
      for (const d of asks) {
        const reply = ex.sent("RequestVoteReply").find((s) =>
          s.at > d.at && s.message.from === d.message.to && s.message.requestTerm === d.message.term
        );
        const r = d.receiver;
        const behind = d.message.lastLogTerm < r.lastTerm ||
          (d.message.lastLogTerm === r.lastTerm && d.message.lastLogIndex < r.lastIndex);
        claimRule(
          ctx,
          "S-2",
          reply !== undefined && reply.sender.term === d.message.term &&
            reply.sender.role === "Follower",
          `${d.message.to} took term ${d.message.term} from ${f}'s request and became a follower`,
        );
        if (!behind) continue;
        claimRule(
          ctx,
          "RV-2",
          !reply!.message.granted && reply!.sender.votedFor !== f,
          `${d.message.to} (last entry ${r.lastIndex}:${r.lastTerm}) refused ${f} (last entry ${d.message.lastLogIndex}:${d.message.lastLogTerm}) though it had not voted in term ${d.message.term}`,
        );
      }
      claim(ctx.shown?.has("RV-2") === true, "a vote was refused for a log that is behind");
      claim(
        c.node(leader).store.getString("/services/db/primary") === "10.0.0.9:5432",
        "the new leader holds the committed write",
      );
      note(
        ctx,
        `${f} asked in term ${inflated + 1} with an old log: refused by all; ${leader} leads term ${
          c.node(leader).raft.term
        }`,
      );
    },
  },
  ...figure8Steps.map((s, i): ChapterStep<PartitionContext> => ({
    name: `Figure 8 (${i + 1}/${figure8Steps.length}): ${s.name}`,
    explain: s.explain,
    rules: FIGURE8_RULES[i],
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
  {
    name: "Break it: PreVote off, the cut-off follower inflates the term",
    explain: "Step 2 again on a fresh cluster, with PreVote switched off. The cut-off follower " +
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
  {
    name: "Break it: Figure 8 with commit by counting",
    explain: "The four Figure 8 steps again on a fresh cluster, with the rule switched off: a " +
      "leader may commit an entry of an earlier term by counting its replicas. In step 3 S1 sees " +
      "X on a majority and commits it, and the simulator's checker, which looks at every node " +
      "after every event, stops the run at once with a violation of the leader commit rule — " +
      "before S5 can overwrite the entry that was declared committed.",
    breakIt: "Figure 8's rule (§5.4.2): fault point commit-earlier-term-by-counting",
    run(ctx) {
      const off = ctx.ruleOff !== false;
      const f = figure8Context(ctx.seed, {
        faultPoints: off ? ["commit-earlier-term-by-counting"] : [],
      });
      useCluster(ctx, f.cluster);
      let caught: unknown;
      let at = 0;
      try {
        for (const s of figure8Steps) {
          at++;
          s.run(f);
        }
      } catch (e) {
        caught = e;
      }
      if (off) {
        claim(
          caught instanceof SafetyViolation && caught.property === "leader commit rule",
          `the checker should catch the bug, got: ${caught}`,
        );
        note(ctx, `caught in Figure 8 step ${at}: ${caught.message}`);
      } else {
        claim(caught === undefined, `with the rule on, Figure 8 runs clean: ${caught}`);
        note(ctx, "with the rule on: the four steps hold and no violation is reported");
      }
    },
  },
];

/** Chapter 5 as a script and a notebook. */
export const chapter: Chapter<PartitionContext> = {
  number: 5,
  name: "05_partitions",
  title: "Network partitions",
  summary: "PreVote, CheckQuorum, a minority leader cannot commit, split votes, Figure 8",
  intro: "A network partition splits the cluster into groups that cannot talk. Raft stays safe " +
    "because every decision needs a **majority**: only one side of a partition can have one. " +
    "A leader on the minority side keeps its title for a while but cannot commit anything. " +
    "Two rules raftmeta adds to Figure 2 keep a partition from disturbing more than it must: " +
    "**PreVote**, so a cut-off node cannot inflate the term, and **CheckQuorum**, so a leader " +
    "that hears from no majority steps down. " +
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
