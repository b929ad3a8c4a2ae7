/**
 * Chapter 2 — log replication: AppendEntries, the consistency check and nextIndex backing off,
 * conflict repair, and commit by quorum (of entries of the leader's own term).
 *
 * Run it: `deno run -A scenarios/02_log_replication.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster, type Operation } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { NodeId } from "../src/raft/types.ts";
import { quorumSize } from "../src/raft/progress.ts";
import {
  type Chapter,
  type ChapterContext,
  type ChapterStep,
  runChapterCli,
  showLogs,
} from "./_chapter.ts";
import { claimRule } from "./figure2.ts";
import { exchangeOf } from "./_exchange.ts";

/** State carried from step to step. */
export interface ReplicationContext extends ChapterContext {
  /** The current leader. */
  leader?: NodeId;
  /** The follower that falls behind in step 3. */
  laggard?: NodeId;
  /** Writes proposed to a leader cut off from the others (step 5). */
  stranded?: Operation[];
  /** The leader that was cut off in step 6. */
  oldLeader?: NodeId;
}

/**
 * Runs until the leader's commitIndex reaches `index` and asserts Figure 2's commit rule at that
 * very moment: a majority's matchIndex (the leader's own disk included) is at least `index`, and
 * the entry is of the leader's term.
 */
function commitByQuorum(ctx: ReplicationContext, index: number): void {
  const c = ctx.cluster;
  const leader = c.node(ctx.leader!).raft;
  c.runUntil(() => leader.commitIndex >= index, { description: `entry ${index} to commit` });
  const s = leader.status();
  const holders = [...s.progress.values()].filter((p) => p.matchIndex >= index).length +
    (leader.stableIndex >= index ? 1 : 0);
  claimRule(
    ctx,
    "L-6",
    holders >= quorumSize(c.ids.length) && leader.log.term(index) === leader.term,
    `commitIndex reached ${index} with ${holders} of ${c.ids.length} holding it (term ${
      leader.log.term(index)
    }, leader's term ${leader.term})`,
  );
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
export const replicationSteps: readonly ChapterStep<ReplicationContext>[] = [
  {
    name: "a new leader appends a no-op",
    explain: "A new leader first appends an empty entry (a no-op) in its own term and replicates " +
      "it. Raft commits entries only by counting replicas of the leader's current term " +
      "(Figure 8), so the no-op is how a new leader learns what is committed. On election it " +
      "sets every follower's nextIndex just past its log and matchIndex to 0: it knows nothing " +
      "of their logs yet.",
    rules: ["LS-1"],
    run(ctx) {
      const c = ctx.cluster;
      ctx.leader = c.waitForLeader();
      c.runUntil(() => c.nodes().every((n) => n.raft.commitIndex >= 1), {
        description: "the no-op to commit everywhere",
      });
      const entry = c.node(ctx.leader).raft.log.entry(1);
      claim(entry?.kind === "noop", "entry 1 is the leader's no-op");
      claim(entry.term === c.node(ctx.leader).raft.term, "the no-op has the leader's term");
      const elected = exchangeOf(c).events.find((e) =>
        e.kind === "role" && e.node === ctx.leader && e.role === "Leader"
      );
      claim(elected?.kind === "role", `the exchange shows ${ctx.leader} becoming leader`);
      const s = elected.state;
      // The no-op is appended right after; nextIndex was set before it, to the no-op's index.
      claimRule(
        ctx,
        "LS-1",
        [...s.nextIndex.values()].every((i) => i === s.lastIndex) &&
          [...s.matchIndex.values()].every((i) => i === 0),
        `on election nextIndex = ${[...s.nextIndex.values()]} (last index ${
          s.lastIndex - 1
        } + 1), matchIndex = ${[...s.matchIndex.values()]}`,
      );
    },
  },
  {
    name: "AppendEntries carries a write",
    explain: "A client's PUT is appended to the leader's log and sent to each follower in " +
      "AppendEntries starting at its nextIndex, with prevLogIndex/prevLogTerm, the position just " +
      "before it. A follower appends what it does not have yet and answers; on success the leader " +
      "raises that follower's matchIndex and nextIndex. Once a majority stores the entry (of the " +
      "leader's own term) the leader commits it, applies it and only then answers the client. " +
      "Followers learn the new commitIndex from the leader's next AppendEntries " +
      "(leaderCommit), and every node applies committed entries in log order.",
    rules: ["L-2", "L-3", "L-4", "AE-4", "AE-5", "S-1"],
    run(ctx) {
      const c = ctx.cluster;
      const applied = new Map<NodeId, number[]>();
      let recording = true;
      c.onApplied((n, entry) => {
        if (!recording) return;
        claimRule(
          ctx,
          "S-1",
          entry.index <= n.raft.commitIndex,
          `${n.id} applied ${entry.index} past its commitIndex ${n.raft.commitIndex}`,
        );
        applied.set(n.id, [...(applied.get(n.id) ?? []), entry.index]);
      });
      const leader = c.node(ctx.leader!);
      let appliedAtAnswer = -1;
      const pending = c.put("/services/db/primary", "10.0.0.7:5432");
      pending.onDone = () => appliedAtAnswer = leader.applier.lastApplied;
      const op = c.complete(pending);
      claim(op.status === "ok", `PUT commits (${op.status}: ${op.error})`);
      claimRule(
        ctx,
        "L-2",
        op.term === leader.raft.term && appliedAtAnswer >= op.index!,
        `the client was answered when the leader had applied ${appliedAtAnswer} (entry ${op.index})`,
      );
      claim(leader.raft.commitIndex >= op.index!, "the leader committed the write");
      c.runUntil(() => c.nodes().every((n) => n.applier.lastApplied >= op.index!), {
        description: "every node to apply the write",
        timeoutMs: 1000,
      });
      recording = false;
      for (const [id, indexes] of applied) {
        claimRule(
          ctx,
          "S-1",
          indexes.every((x, i) => i === 0 || x === indexes[i - 1] + 1),
          `${id} applied ${indexes} in log order`,
        );
      }
      const ex = exchangeOf(c);
      for (const f of c.ids.filter((id) => id !== ctx.leader)) {
        const carried = ex.sent("AppendEntries").find((s) =>
          s.message.to === f && s.message.entries.some((e) => e.index === op.index)
        );
        claimRule(
          ctx,
          "L-3",
          carried !== undefined &&
            carried.message.entries[0].index === carried.message.prevLogIndex + 1 &&
            carried.sender.nextIndex.get(f) === carried.message.entries.at(-1)!.index + 1,
          `the write went to ${f} in entries starting at its nextIndex`,
        );
        const stored = ex.sent("AppendEntriesReply").find((s) =>
          s.message.from === f && s.message.success && s.message.matchIndex >= op.index!
        );
        claimRule(
          ctx,
          "AE-4",
          stored !== undefined && stored.sender.lastIndex >= op.index!,
          `${f} appended entry ${op.index} and said so`,
        );
        const acked = ex.delivered("AppendEntriesReply").find((d) =>
          d.message.from === f && d.message.success && d.message.matchIndex >= op.index!
        );
        const pr = leader.raft.status().progress.get(f)!;
        claimRule(
          ctx,
          "L-4",
          acked !== undefined && (acked.receiver.matchIndex.get(f) ?? 0) < op.index! &&
            pr.matchIndex >= op.index! && pr.nextIndex > pr.matchIndex,
          `on ${f}'s success the leader raised its matchIndex to ${pr.matchIndex} (nextIndex ${pr.nextIndex})`,
        );
        // AE-5 on every AppendEntries the follower accepted: its commitIndex right after.
        let rose = false;
        const evs = ex.events;
        for (let i = 0; i < evs.length; i++) {
          const d = evs[i];
          if (d.kind !== "deliver" || d.message.type !== "AppendEntries" || d.message.to !== f) {
            continue;
          }
          const m = d.message;
          const reply = evs.slice(i + 1).find((e) =>
            e.kind === "send" && e.message.from === f && e.message.type === "AppendEntriesReply"
          );
          if (reply?.kind !== "send" || reply.message.type !== "AppendEntriesReply") continue;
          if (!reply.message.success) continue;
          const want = Math.max(
            d.receiver.commitIndex,
            Math.min(m.leaderCommit, m.prevLogIndex + m.entries.length),
          );
          claimRule(
            ctx,
            "AE-5",
            reply.sender.commitIndex === want,
            `${f} set commitIndex ${reply.sender.commitIndex} on leaderCommit ${m.leaderCommit}, expected ${want}`,
          );
          if (want > d.receiver.commitIndex) rose = true;
        }
        claimRule(ctx, "AE-5", rose, `${f} learned a new commitIndex from leaderCommit`);
      }
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
      "cut-off follower's log falls behind. The leader commits entry N the moment a majority's " +
      "matchIndex (its own log counts) reaches N and the entry is of its own term.",
    rules: ["L-6"],
    run(ctx) {
      const c = ctx.cluster;
      const laggard = c.ids.find((id) => id !== ctx.leader)!;
      ctx.laggard = laggard;
      c.isolate(laggard);
      let last: Operation | undefined;
      for (let i = 1; i <= 3; i++) {
        const op = c.put(`/jobs/${i}`, `job ${i}`);
        commitByQuorum(ctx, op.index!);
        last = c.complete(op);
        claim(last.status === "ok", `PUT /jobs/${i} commits (${last.status})`);
      }
      claim(c.node(ctx.leader!).raft.commitIndex >= last!.index!, "committed without it");
      claim(
        c.node(laggard).raft.log.lastIndex < last!.index!,
        `${laggard} missed the entries (its log ends at ${c.node(laggard).raft.log.lastIndex})`,
      );
    },
  },
  {
    name: "the laggard is reconnected: the missing entries are sent again",
    explain:
      "The follower is reconnected. Nothing is rejected here: the leader sends a heartbeat at " +
      "the follower's matchIndex, which always passes the consistency check. But the appends it " +
      "sent while the follower was cut off are still unacknowledged when the follower answers a " +
      "later heartbeat, so they were lost: the leader sets nextIndex back to matchIndex + 1 and " +
      "sends the missing entries from there (raftmeta's flow control; a rejection is in the next " +
      "step).",
    rules: ["L-3", "L-4"],
    run(ctx) {
      const c = ctx.cluster;
      const laggard = c.node(ctx.laggard!);
      const lag = ctx.laggard!;
      c.heal();
      const leader = c.node(ctx.leader!);
      c.runUntil(() => laggard.raft.log.lastIndex === leader.raft.log.lastIndex, {
        description: `${ctx.laggard} to catch up`,
        timeoutMs: 2000,
      });
      const ex = exchangeOf(c);
      claim(
        ex.sent("AppendEntriesReply").every((s) => s.message.from !== lag || s.message.success),
        `${lag} rejected nothing`,
      );
      const resend = ex.sent("AppendEntries").find((s) =>
        s.message.to === lag && s.message.entries.length > 0
      );
      claimRule(
        ctx,
        "L-3",
        resend !== undefined &&
          resend.message.entries[0].index === (resend.sender.matchIndex.get(lag) ?? 0) + 1 &&
          resend.message.entries[0].index === resend.sender.nextIndex.get(lag),
        `the leader resent from nextIndex = matchIndex + 1 = ${resend?.sender.nextIndex.get(lag)}`,
      );
      c.advance(100);
      const pr = leader.raft.status().progress.get(lag)!;
      claimRule(
        ctx,
        "L-4",
        pr.matchIndex === leader.raft.log.lastIndex && pr.nextIndex === pr.matchIndex + 1,
        `the leader's matchIndex for ${lag} reached ${pr.matchIndex} (nextIndex ${pr.nextIndex})`,
      );
      claim(
        laggard.store.getString("/jobs/3") === "job 3",
        `${ctx.laggard} applied the missed writes`,
      );
    },
  },
  {
    name: "a new leader's first guess is wrong: rejected, nextIndex backs off",
    explain: "The same follower is cut off again and misses a write. Then the leader is cut off " +
      "and the follower reconnected: the others elect a new leader (the follower cannot win, its " +
      "log is behind). The new leader knows nothing of the follower's log and guesses nextIndex " +
      "just past its own. That AppendEntries names a prevLogIndex the follower does not have, so " +
      "the follower replies false, with a hint of where its log ends. The leader sets nextIndex " +
      "back and retries, and the retry succeeds.",
    rules: ["AE-2", "L-5"],
    run(ctx) {
      const c = ctx.cluster;
      const lag = ctx.laggard!;
      const old = ctx.leader!;
      c.isolate(lag);
      put(c, "/jobs/4", "job 4");
      c.heal();
      c.isolate(old);
      c.runUntil(() => c.leader() !== undefined && c.leader() !== old, {
        description: "a new leader",
        timeoutMs: 3000,
      });
      const leader = c.leader()!;
      claim(leader !== lag, `${lag}, whose log is behind, did not win`);
      c.runUntil(() => c.node(lag).raft.log.lastIndex === c.node(leader).raft.log.lastIndex, {
        description: `${lag} to catch up with ${leader}`,
        timeoutMs: 2000,
      });
      const ex = exchangeOf(c);
      const evs = ex.events;
      const at = evs.findIndex((e) =>
        e.kind === "send" && e.message.type === "AppendEntriesReply" && e.message.from === lag &&
        !e.message.success && e.message.term === e.message.requestTerm
      );
      const rejection = evs[at];
      claimRule(
        ctx,
        "AE-2",
        rejection?.kind === "send" && rejection.message.type === "AppendEntriesReply" &&
          rejection.message.rejectedIndex > rejection.sender.lastIndex &&
          rejection.message.conflictIndex === rejection.sender.lastIndex + 1,
        `${lag} replied false to an AppendEntries whose prevLogIndex its log does not have`,
      );
      const rejected = rejection.message.rejectedIndex;
      const retry = evs.slice(at).find((e) =>
        e.kind === "send" && e.message.type === "AppendEntries" && e.message.to === lag &&
        e.message.from === leader && e.message.prevLogIndex < rejected
      );
      claimRule(
        ctx,
        "L-5",
        retry?.kind === "send" && retry.message.type === "AppendEntries" &&
          retry.sender.nextIndex.get(lag) === retry.message.prevLogIndex + 1 &&
          retry.message.entries.length > 0,
        `the leader moved nextIndex for ${lag} back from ${rejected + 1} and retried`,
      );
      const accepted = ex.sent("AppendEntriesReply").find((s) =>
        s.message.from === lag && s.message.success && s.at > at
      );
      claim(accepted !== undefined, "the retry was accepted");
      c.heal();
      c.runUntil(() => c.node(old).raft.leaderId === leader, {
        description: `${old} to follow ${leader}`,
        timeoutMs: 2000,
      });
      ctx.leader = leader;
      c.runUntil(() => c.node(lag).store.getString("/jobs/4") === "job 4", {
        description: `${lag} to apply the write it missed`,
        timeoutMs: 2000,
      });
    },
  },
  {
    name: "conflicting entries are repaired",
    explain:
      "The leader is cut off and accepts two writes it cannot commit: they sit only in its " +
      "own log. The others elect a new leader, which writes at the same indexes in a newer term. " +
      "When the old leader returns, the new leader's AppendEntries passes the consistency check " +
      "at prevLogIndex (the entry before the stranded ones matches), but its entries conflict " +
      "with the stranded ones: same index, different term. The old leader deletes the " +
      "conflicting entry and all that follow it (never a committed one) and appends the new " +
      "leader's. The two stranded writes fail: they were never committed.",
    rules: ["AE-3"],
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
      // The exchange: an AppendEntries with a different term at the stranded index was accepted,
      // the old leader's log was rewritten from there, and it ends at the last new entry.
      const evs = exchangeOf(c).events;
      const i = evs.findIndex((e) =>
        e.kind === "deliver" && e.message.type === "AppendEntries" && e.message.to === old &&
        e.receiver.lastIndex >= strandedIndex && e.receiver.term === e.message.term &&
        e.message.entries.some((x) => x.index === strandedIndex && x.term !== strandedTerm)
      );
      const d = evs[i];
      const rewrite = evs.slice(i).find((e) => e.kind === "persist" && e.node === old);
      const reply = evs.slice(i).find((e) =>
        e.kind === "send" && e.message.from === old && e.message.type === "AppendEntriesReply"
      );
      claimRule(
        ctx,
        "AE-3",
        d?.kind === "deliver" && d.message.type === "AppendEntries" &&
          rewrite?.kind === "persist" && rewrite.fromIndex === strandedIndex &&
          reply?.kind === "send" && reply.message.type === "AppendEntriesReply" &&
          reply.message.success &&
          reply.sender.lastIndex === d.message.prevLogIndex + d.message.entries.length,
        `${old} deleted its entries from ${strandedIndex} on and wrote the new leader's there`,
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
      "commit it: only a majority's matchIndex advances commitIndex. When the links return, the " +
      "entry reaches the followers and commits.",
    rules: ["L-6"],
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
      commitByQuorum(ctx, op.index!);
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
  summary: "AppendEntries, the consistency check, nextIndex backing off, conflict repair, commit",
  intro: "Every write goes through the leader's log. The leader sends entries with " +
    "**AppendEntries**; a follower accepts them only if its log holds an entry at " +
    "`prevLogIndex` with term `prevLogTerm` (the **consistency check**, §5.3), which by " +
    "induction keeps every log a prefix-consistent copy of the leader's. A leader commits an " +
    "entry of **its own term** once a majority stores it; earlier entries are committed with it, " +
    "never by counting their own replicas (§5.4.2, Figure 8). Nothing is committed before a " +
    "majority stores it, unlike the seed's simplified demo." +
    " The cluster runs with raftmeta's defaults, PreVote and CheckQuorum on: the tables show " +
    "**PreCandidate** and the timelines PreVote messages before each election; chapter 5 " +
    "explains both.",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: replicationContext,
  steps: replicationSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
