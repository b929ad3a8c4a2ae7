/**
 * Chapter 10 — membership changes (Raft paper §6 and Figure 10; dissertation §4.1): why a cluster
 * must not switch from one set of voters to another in one go, and how raftmeta changes its
 * members one server at a time instead (docs/membership.md). The first step runs the real core with
 * that rule switched off (fault point `two-changes-in-flight`) and shows two leaders in one term;
 * the second runs the same schedule with the rule on. Then the cluster grows from three voters to
 * five through learners, removes its leader, and hands leadership over.
 *
 * Run it: `deno run -A scenarios/10_membership.ts [--seed N]`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { SafetyViolation } from "../src/sim/invariants.ts";
import { claim } from "../src/scenario/scenario.ts";
import { quorumsCanBeDisjoint } from "../src/raft/quorum.ts";
import type { NodeId } from "../src/raft/types.ts";
import {
  type Chapter,
  type ChapterContext,
  type ChapterStep,
  note,
  runChapterCli,
  useCluster,
} from "./_chapter.ts";

/**
 * A learner may be promoted when its match index is within this many entries of the leader's last
 * index (the core's `learnerPromoteLagEntriesMax`; 100 by default, small here to see a refusal).
 */
export const PROMOTE_LAG_ENTRIES_MAX = 10;

/** The key both sides of Figure 10 write. */
const KEY = "/config/primary";

/** State carried from step to step. */
export interface MembershipContext extends ChapterContext {
  /** The chapter's seed (each step that needs a fresh cluster builds it from this seed). */
  readonly seed: number;
}

/** Leaders seen on a cluster, by term, from its role events (every node, every moment). */
export type LeadersByTerm = Map<number, Set<NodeId>>;

/** Starts recording every node that becomes leader, by term. */
export function watchLeaders(c: Cluster): LeadersByTerm {
  const leaders: LeadersByTerm = new Map();
  c.onEvent((e) => {
    if (e.kind !== "role" || e.role !== "Leader") return;
    if (!leaders.has(e.term)) leaders.set(e.term, new Set());
    leaders.get(e.term)!.add(e.node);
  });
  return leaders;
}

/** The terms in which more than one node led. */
export function termsWithTwoLeaders(leaders: LeadersByTerm): number[] {
  return [...leaders].filter(([, ids]) => ids.size > 1).map(([term]) => term);
}

function majority(n: number): number {
  return Math.floor(n / 2) + 1;
}

function list(ids: readonly NodeId[]): string {
  return ids.length === 0 ? "-" : ids.join(",");
}

/**
 * One line per running node: the configuration it uses (the newest in its log) and whether the
 * entry that made it is committed on that node.
 */
export function configLines(c: Cluster): string[] {
  return c.nodes().filter((n) => n.state !== "crashed").map((n) => {
    const s = n.raft.status();
    const state = s.configIndex === 0
      ? "bootstrap"
      : `entry ${s.configIndex}, ${s.configIndex <= s.commitIndex ? "committed" : "NOT committed"}`;
    const removed = c.removed.has(n.id) ? " (removed)" : "";
    return `${n.id}${removed} uses voters ${list(s.voters)} · learners ${list(s.learners)} ` +
      `(${state})`;
  });
}

function showConfigs(ctx: ChapterContext): void {
  note(ctx, ["configuration on each node:", ...configLines(ctx.cluster)].join("\n"));
}

function sameLog(c: Cluster, a: NodeId, b: NodeId): boolean {
  const x = c.node(a).raft.log;
  const y = c.node(b).raft.log;
  return x.lastIndex === y.lastIndex && x.lastTerm === y.lastTerm;
}

/** What the Figure 10 schedule did. */
export interface Figure10Run {
  /** Term of the first leader. */
  readonly term: number;
  /** The first leader (S3 in the paper's figure): it appends the changes. */
  readonly first: NodeId;
  /** The two old voters cut off before the changes (S1 and S2). */
  readonly cutOff: readonly [NodeId, NodeId];
  /** The nodes added as voters (S4, and S5 when the second change was accepted). */
  readonly added: readonly NodeId[];
  /** The first leader's voters right after appending the first change, and its commitIndex. */
  readonly afterFirstAppend: { voters: readonly NodeId[]; commitIndex: number; index: number };
  /** Why the second change was refused (undefined when it was accepted). */
  readonly refused: string | undefined;
  /** Whether the first leader still led when S4 caught up, and handed leadership to it. */
  readonly handedOver: boolean;
  /** S4's term and who had voted for it in that term, just after the elections. */
  readonly s4Votes: { term: number; voters: readonly NodeId[] };
  /** The leader the cut-off old voters elected. */
  readonly oldSideLeader: NodeId;
  /** A leader on the new side in the old side leader's term, if one was elected. */
  readonly newSideLeader: NodeId | undefined;
  /** Every leader of every term during the run. */
  readonly leaders: LeadersByTerm;
}

/**
 * The Figure 10 schedule on a 3-node cluster: the leader, cut off from the two other old voters,
 * adds two voters (n4, n5) one right after the other; the new voters and the leader form one side
 * of the partition, the two old voters the other. The old side elects a leader by its timers; on
 * the new side leadership is handed over (a transfer starts an election in the next term at once)
 * until a new-side leader reaches the old side's term, if the new side can elect at all. Each
 * leader then writes its own value of one key.
 */
export function figure10(c: Cluster): Figure10Run {
  const leaders = watchLeaders(c);
  const first = c.waitForLeader();
  const done = c.complete(c.put(KEY, `${first} (term ${c.node(first).raft.term})`));
  claim(done.status === "ok", `the first write commits (${done.status})`);
  c.runUntil(() => c.converged(), { description: "every node to apply the first write" });
  const term = c.node(first).raft.term;
  const [a, b] = c.ids.filter((id) => id !== first);
  // Cut off before the changes: S1 and S2 never see them. Nodes added later join the other side.
  c.partition([a, b]);
  const added = [c.addNode({ as: "voter" })];
  c.partition([a, b]);
  const l = c.node(first).raft;
  const afterFirstAppend = {
    voters: l.voters,
    commitIndex: l.commitIndex,
    index: l.status().configIndex,
  };
  let refused: string | undefined;
  try {
    added.push(c.addNode({ as: "voter" }));
    c.partition([a, b]);
  } catch (e) {
    if (e instanceof SafetyViolation) throw e;
    refused = (e as Error).message;
  }
  c.runUntil(() => added.every((id) => caughtUp(c, first, id)), {
    description: "the new voters to hold the leader's log",
    timeoutMs: 1000,
  });
  // New side: the first leader hands over to S4 (its election needs a majority of S4's voters).
  const newSide = [first, ...added];
  const handedOver = l.role === "Leader";
  if (handedOver) c.transferLeader(added[0], { from: first });
  const newLeader = () => newSide.find((id) => c.node(id).raft.role === "Leader");
  const oldLeader = () => [a, b].find((id) => c.node(id).raft.role === "Leader");
  c.runUntil(() => oldLeader() !== undefined, {
    description: "the cut-off old voters to elect a leader",
    timeoutMs: 3000,
  });
  const oldSideLeader = oldLeader()!;
  const oldTerm = c.node(oldSideLeader).raft.term;
  const s4 = c.node(added[0]).raft;
  const s4Votes = { term: s4.term, voters: votersFor(c, added[0], s4.term) };
  // Should the old side have needed more than one election, the new side catches up term by term.
  for (let i = 0; i < 5; i++) {
    const nl = newLeader();
    if (nl === undefined || c.node(nl).raft.term >= oldTerm) break;
    const next = newSide.find((id) => id !== nl && caughtUp(c, nl, id))!;
    const term = c.node(nl).raft.term;
    c.transferLeader(next, { from: nl });
    c.runUntil(() => c.node(next).raft.role === "Leader" && c.node(next).raft.term > term, {
      description: `${next} to lead after ${nl}`,
      timeoutMs: 1000,
    });
  }
  const nl = newLeader();
  const newSideLeader = nl !== undefined && c.node(nl).raft.term === oldTerm ? nl : undefined;
  for (const leader of [oldSideLeader, newSideLeader]) {
    if (leader === undefined) continue;
    const op = c.complete(c.put(KEY, `${leader} (term ${oldTerm})`, { via: leader }), {
      timeoutMs: 2000,
    });
    claim(op.status === "ok", `${leader}'s write commits (${op.status}: ${op.error})`);
  }
  return {
    term,
    first,
    cutOff: [a, b],
    added,
    afterFirstAppend,
    refused,
    handedOver,
    s4Votes,
    oldSideLeader,
    newSideLeader,
    leaders,
  };
}

/** The paper's names: S1 the old side's leader, S2 the other old voter, S3 the first leader. */
function figure10Aliases(r: Figure10Run): Record<NodeId, string> {
  const other = r.cutOff.find((id) => id !== r.oldSideLeader)!;
  const order = [r.oldSideLeader, other, r.first, ...r.added];
  return Object.fromEntries(order.map((id, i) => [id, `S${i + 1}`]));
}

/** Who voted for `candidate` in `term` (a vote is kept with the term on each node). */
function votersFor(c: Cluster, candidate: NodeId, term: number): NodeId[] {
  return c.nodes().filter((n) => n.raft.term === term && n.raft.votedFor === candidate)
    .map((n) => n.id);
}

/** A 3-node cluster; `twoChangesInFlight` switches the one-change-at-a-time rule off. */
export function membershipCluster(
  seed: number,
  options: { twoChangesInFlight?: boolean; checkSafety?: boolean } = {},
): Cluster {
  return new Cluster({
    nodes: 3,
    seed,
    checkSafety: options.checkSafety ?? true,
    faultPoints: options.twoChangesInFlight ? ["two-changes-in-flight"] : [],
    config: { learnerPromoteLagEntriesMax: PROMOTE_LAG_ENTRIES_MAX },
  });
}

/** The chapter's steps. */
export const membershipSteps: readonly ChapterStep<MembershipContext>[] = [
  {
    name: "Figure 10: two voters added at once, two leaders in one term",
    explain: "Three voters, S1 to S3; S3 leads. S1 and S2 are cut off from the rest. With the " +
      "rule of the next step switched off (fault point `two-changes-in-flight`), S3 appends " +
      "'add voter S4' and, without waiting for it to commit, 'add voter S5'. A node uses a " +
      "configuration as soon as the entry is in its log, committed or not: S3, S4 and S5 now " +
      "count five voters and need three, while S1 and S2, which never received the entries, " +
      "still count three and need two. Those two majorities share no server. S3 hands " +
      "leadership to S4 (a transfer starts an election at once), and S3, S4 and S5 elect S4. " +
      "S1 times out and S2 elects it. Both win the same term, and each commits its own value " +
      "of one key. (Should S1 and S2 need a second round, the new side hands leadership on " +
      "once more so that the terms meet; the note below the table says who won.) The " +
      "simulator's safety checker is off in this step so that the run can go on past the " +
      "first violation.",
    run(ctx) {
      const c = membershipCluster(ctx.seed, { twoChangesInFlight: true, checkSafety: false });
      useCluster(ctx, c);
      claim(c.checker === undefined, "the safety checker is off for this step");
      const r = figure10(c);
      ctx.aliases = figure10Aliases(r);
      const [s1, s2] = r.cutOff;
      claim(r.refused === undefined, `the second change is appended at once (${r.refused})`);
      claim(
        r.afterFirstAppend.voters.length === 4 && r.afterFirstAppend.commitIndex <
            r.afterFirstAppend.index,
        `S3 counted 4 voters right after appending the first change, before it committed ` +
          `(voters ${r.afterFirstAppend.voters}, commitIndex ${r.afterFirstAppend.commitIndex})`,
      );
      const cOld = new Set(c.node(s1).raft.voters);
      const cNew = new Set(c.node(r.added[0]).raft.voters);
      claim(cOld.size === 3 && sameMembers(c.node(s2).raft.voters, cOld), "S1, S2 use C_old");
      claim(
        cNew.size === 5 &&
          [r.first, ...r.added].every((id) => sameMembers(c.node(id).raft.voters, cNew)),
        "S3, S4, S5 use C_new, five voters",
      );
      claim(quorumsCanBeDisjoint(cOld, cNew), "C_old and C_new have disjoint majorities");
      claim(
        r.handedOver && r.leaders.get(r.term + 1)?.has(r.added[0]) === true &&
          sameMembers(r.s4Votes.voters, new Set([r.first, ...r.added])),
        `S3, S4 and S5 elected S4 in term ${r.term + 1} (${r.s4Votes.voters})`,
      );
      const twice = termsWithTwoLeaders(r.leaders);
      claim(r.newSideLeader !== undefined, "a leader on the new side in the old side's term");
      const term = c.node(r.oldSideLeader).raft.term;
      claim(
        twice.includes(term) && r.leaders.get(term)!.has(r.oldSideLeader) &&
          r.leaders.get(term)!.has(r.newSideLeader),
        `two leaders in term ${term}: ${r.oldSideLeader} and ${r.newSideLeader}`,
      );
      const oldVotes = votersFor(c, r.oldSideLeader, term);
      const newVotes = votersFor(c, r.newSideLeader, term);
      claim(
        sameMembers(oldVotes, new Set(r.cutOff)) && oldVotes.length >= majority(cOld.size),
        `S1 and S2 elected ${r.oldSideLeader}, a majority of C_old (${oldVotes})`,
      );
      claim(
        newVotes.length >= majority(cNew.size) && newVotes.every((id) => cNew.has(id)),
        `${r.newSideLeader} won a majority of C_new (${newVotes})`,
      );
      claim(!oldVotes.some((id) => newVotes.includes(id)), "no server voted on both sides");
      const oldValue = c.node(r.oldSideLeader).store.getString(KEY);
      const newValue = c.node(r.newSideLeader).store.getString(KEY);
      claim(
        oldValue !== undefined && newValue !== undefined && oldValue !== newValue &&
          c.node(r.oldSideLeader).raft.commitIndex >= c.node(r.oldSideLeader).raft.log.lastIndex &&
          c.node(r.newSideLeader).raft.commitIndex >= c.node(r.newSideLeader).raft.log.lastIndex,
        `each side committed its own ${KEY}: ${oldValue} / ${newValue}`,
      );
      const name = named(ctx);
      note(
        ctx,
        `term ${term}: ${name(r.oldSideLeader)} elected by ${oldVotes.map(name)} (a majority ` +
          `of C_old = ${[...cOld].map(name)}); ${name(r.newSideLeader)} elected by ` +
          `${newVotes.map(name)} (a majority of C_new = ${[...cNew].map(name)})`,
      );
      note(ctx, `${KEY} is "${oldValue}" on one side and "${newValue}" on the other`);
      showConfigs(ctx);
    },
  },
  {
    name: "The same schedule with one change at a time: one leader per term",
    explain: "The same run on a fresh cluster, with raftmeta's rule on and the safety checker " +
      "on. S3 appends 'add voter S4'; the second change is refused while the first is " +
      "uncommitted, and the first cannot commit: S3 and S4 count four voters and need three. " +
      "S3 hands leadership to S4 as before, but S4 has only its own vote and S3's. Any majority " +
      "of these four voters and any majority of the old three share a server, so S1 and S2 " +
      "elect a leader and the new side elects none: one leader per term. When the partition " +
      "heals, S1 sends its log to S3 and overwrites the uncommitted change there: S3 goes back " +
      "to the three voters it used before. A configuration is in force as soon as it is " +
      "appended, and is undone if its entry is overwritten.",
    run(ctx) {
      const c = membershipCluster(ctx.seed);
      useCluster(ctx, c);
      claim(c.checker !== undefined, "the safety checker is on");
      const r = figure10(c);
      ctx.aliases = figure10Aliases(r);
      claim(
        r.refused !== undefined && /still uncommitted; one change at a time/.test(r.refused),
        `the second change is refused: ${r.refused}`,
      );
      claim(r.added.length === 1, "only S4 was added");
      const s3 = c.node(r.first).raft;
      const four = new Set(s3.voters);
      claim(
        four.size === 4 && s3.status().configIndex > s3.commitIndex,
        `S3 uses the 4 voters of an uncommitted entry (${s3.voters})`,
      );
      claim(
        !quorumsCanBeDisjoint(new Set(c.node(r.cutOff[0]).raft.voters), four),
        "every majority of C_old and every majority of S3's four voters share a server",
      );
      claim(r.newSideLeader === undefined, "no leader on the new side");
      claim(
        r.handedOver && sameMembers(r.s4Votes.voters, new Set([r.first, r.added[0]])),
        `S4 asked for votes and got only S3's and its own (${r.s4Votes.voters})`,
      );
      claim(
        c.node(r.added[0]).raft.role !== "Leader" && s3.role !== "Leader",
        "neither S3 nor S4 leads",
      );
      claim(termsWithTwoLeaders(r.leaders).length === 0, "at most one leader in every term");
      const configIndex = s3.status().configIndex;
      c.heal();
      c.runUntil(() => s3.voters.length === 3 && sameLog(c, r.first, r.oldSideLeader), {
        description: "S3 to take S1's log and drop the uncommitted change",
        timeoutMs: 2000,
      });
      claim(
        c.node(r.first).raft.log.entry(configIndex)?.kind !== "config",
        `entry ${configIndex} of S3 is no longer the change`,
      );
      claim(termsWithTwoLeaders(r.leaders).length === 0, "still one leader per term");
      note(
        ctx,
        `refused: ${r.refused}\nleaders by term: ${
          [...r.leaders].map(([t, ids]) => `${t}: ${[...ids].map(named(ctx))}`).join(" · ")
        }`,
      );
      showConfigs(ctx);
    },
  },
  {
    name: "Grow: add n4 as a learner; its promotion waits until it has caught up",
    explain: "A fresh cluster of three voters takes some writes, then n4 joins as a learner: it " +
      "receives the log but does not vote, and the leader does not wait for it to commit. Here " +
      "its link is cut at once, so it stays empty. The change commits with the three voters " +
      "alone, and so does a write made while n4 is unreachable. Asked to promote n4 now, the " +
      `leader refuses: a learner must be within ${PROMOTE_LAG_ENTRIES_MAX} entries of the ` +
      "leader's last index (this chapter's small `learnerPromoteLagEntriesMax`).",
    run(ctx) {
      const c = membershipCluster(ctx.seed);
      useCluster(ctx, c);
      ctx.aliases = undefined;
      const leader = c.waitForLeader();
      for (let i = 0; i < 2 * PROMOTE_LAG_ENTRIES_MAX; i++) {
        const op = c.complete(c.put(`/services/s${i % 5}`, `v${i}`));
        claim(op.status === "ok", `write ${i} commits (${op.status})`);
      }
      const n4 = c.addNode();
      c.cut(leader, n4, { bothWays: true });
      const l = c.node(leader).raft;
      claim(
        l.learners.includes(n4) && l.voters.length === 3,
        `the leader lists ${n4} as a learner at once, with 3 voters`,
      );
      const index = l.status().configIndex;
      c.runUntil(() => l.commitIndex >= index, { description: "the change to commit" });
      const op = c.complete(c.put("/services/while-n4-is-away", "ok"));
      claim(op.status === "ok", "a write commits without the learner");
      claim(c.node(n4).raft.log.lastIndex === 0, `${n4} holds nothing yet`);
      let refused = "";
      try {
        c.promote(n4);
      } catch (e) {
        refused = (e as Error).message;
      }
      claim(/in sync with leader/.test(refused), `promoting a lagging learner is refused`);
      note(ctx, `promote ${n4}: ${refused}`);
      showConfigs(ctx);
    },
  },
  {
    name: "Grow: n4 catches up and is promoted; n5 the same way: five voters",
    explain: "The link comes back and the leader sends n4 the whole log. Once n4 holds it, the " +
      "promotion is accepted: one more voter, four in all. Then n5 is added as a learner, " +
      "catches up and is promoted: five voters. Each change adds a single voter, so any majority " +
      "of the configuration before it and any majority of the one after it share a server, " +
      "which the step checks for both changes.",
    run(ctx) {
      const c = ctx.cluster;
      c.heal();
      const leader = c.leader()!;
      const l = c.node(leader).raft;
      for (const id of ["n4", "n5"]) {
        if (id === "n5") {
          const added = c.addNode();
          claim(added === id, `the next node is ${id}`);
        }
        c.runUntil(() => caughtUp(c, leader, id) && l.commitIndex >= l.status().configIndex, {
          description: `${id} to catch up`,
          timeoutMs: 3000,
        });
        const before = new Set(l.voters);
        c.promote(id);
        const after = new Set(l.voters);
        claim(after.size === before.size + 1 && after.has(id), `${id} counts as a voter at once`);
        claim(!quorumsCanBeDisjoint(before, after), "majorities before and after overlap");
        const index = l.status().configIndex;
        c.runUntil(() => l.commitIndex >= index, { description: `${id}'s promotion to commit` });
      }
      claim(l.voters.length === 5 && l.learners.length === 0, "five voters, no learner");
      const op = c.complete(c.put("/services/five", "voters"));
      claim(op.status === "ok", "a write commits with five voters");
      c.runUntil(() => c.converged(), { description: "every node to apply it" });
      showConfigs(ctx);
    },
  },
  {
    name: "Shrink: remove the leader",
    explain: "The leader proposes its own removal. From the moment the entry is in its log it " +
      "no longer counts itself among the voters, yet it keeps leading until the entry commits; " +
      "then it steps down. The four elect a new leader among " +
      "themselves. The removed node's process keeps running here; the simulator checks at every " +
      "message that nothing it sends can disturb the members.",
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.leader()!;
      const l = c.node(leader).raft;
      c.removeNode(leader);
      const index = l.status().configIndex;
      claim(
        !l.voters.includes(leader) && l.voters.length === 4 && l.role === "Leader",
        `right after appending, ${leader} leads but is not among its own voters`,
      );
      claim(l.commitIndex < index, "the removal is not committed yet");
      c.runUntil(() => l.role !== "Leader", { description: `${leader} to step down` });
      claim(l.commitIndex >= index, `${leader} stepped down once the removal committed`);
      const next = c.waitForLeader({ timeoutMs: 3000 });
      claim(
        next !== leader && l.voters.includes(next) && c.removed.has(leader),
        `${next}, one of the four, leads; ${leader} is removed`,
      );
      claim(c.node(leader).state === "up", `${leader}'s process still runs`);
      const op = c.complete(c.put("/services/after-removal", next));
      claim(op.status === "ok", "a write commits with four voters");
      c.advance(500);
      claim(c.leader() === next, `${next} still leads: the removed node did not disturb it`);
      showConfigs(ctx);
    },
  },
  {
    name: "Transfer leadership; the new leader's first change must wait",
    explain: "The leader hands leadership to another voter: it brings that voter's log up to " +
      "date and tells it to stand for election at once (TimeoutNow). The new leader is asked " +
      "right away to remove a follower and refuses: it has not yet committed an entry of its own " +
      "term. A change of an earlier leader might still be uncommitted in its log, and a change " +
      "of its own on top of it could make two configurations two servers apart. Once its first " +
      "entry (the no-op it appends on election) commits, the same removal is accepted.",
    run(ctx) {
      const c = ctx.cluster;
      const from = c.leader()!;
      const voters = c.node(from).raft.voters;
      const to = voters.find((id) => id !== from)!;
      const term = c.node(from).raft.term;
      const timeoutNows = c.stats.sentByType.get("TimeoutNow") ?? 0;
      c.transferLeader(to);
      c.runUntil(() => c.leader() === to, { description: `${to} to lead`, timeoutMs: 2000 });
      const t = c.node(to).raft;
      claim(t.term === term + 1, `${to} leads term ${t.term}, the next one`);
      claim((c.stats.sentByType.get("TimeoutNow") ?? 0) > timeoutNows, `${from} sent TimeoutNow`);
      claim(t.log.term(t.commitIndex) !== t.term, `${to} has not committed in its term yet`);
      const victim = voters.find((id) => id !== from && id !== to)!;
      let refused = "";
      try {
        c.removeNode(victim);
      } catch (e) {
        refused = (e as Error).message;
      }
      claim(/not yet committed an entry of its term/.test(refused), "the change is refused");
      c.runUntil(() => t.log.term(t.commitIndex) === t.term, {
        description: `${to} to commit an entry of term ${t.term}`,
      });
      claim(t.log.entry(t.commitIndex)?.kind === "noop", "its committed entry is its no-op");
      c.removeNode(victim);
      const index = t.status().configIndex;
      c.runUntil(() => t.commitIndex >= index, { description: "the removal to commit" });
      claim(t.voters.length === 3 && !t.voters.includes(victim), `${victim} removed: 3 voters`);
      note(ctx, `${to}, just elected: ${refused}`);
      showConfigs(ctx);
    },
  },
  {
    name: "Break it: two changes in flight, caught by the checker",
    explain: "Step 1 again on a fresh cluster, with the rule switched off and the safety checker " +
      "on. The checker looks at every node after every event; it stops the run the moment the " +
      "leader appends its second change while the first is uncommitted, before any second " +
      "leader is elected. (With the rule on, the same run is step 2: the change is refused and nothing is " +
      "reported.)",
    breakIt: "one change at a time (dissertation §4.1): fault point two-changes-in-flight",
    run(ctx) {
      const off = ctx.ruleOff !== false;
      const c = membershipCluster(ctx.seed, { twoChangesInFlight: off });
      useCluster(ctx, c);
      ctx.aliases = undefined;
      let caught: unknown;
      let r: Figure10Run | undefined;
      try {
        r = figure10(c);
      } catch (e) {
        caught = e;
      }
      if (off) {
        claim(
          caught instanceof SafetyViolation && caught.property === "membership change rule",
          `the checker should catch the second change, got: ${caught}`,
        );
        claim(c.leaders().length === 1, "caught while one node leads");
        note(ctx, `caught: ${caught.message}`);
      } else {
        claim(caught === undefined, `with the rule on, the run is clean: ${caught}`);
        claim(r !== undefined && r.refused !== undefined, "the second change is refused");
        claim(termsWithTwoLeaders(r.leaders).length === 0, "at most one leader per term");
        note(ctx, `with the rule on: ${r.refused}; no violation reported`);
      }
      showConfigs(ctx);
    },
  },
];

/** Whether `leader` knows that `id` holds its whole log. */
function caughtUp(c: Cluster, leader: NodeId, id: NodeId): boolean {
  const l = c.node(leader).raft;
  return l.status().progress.get(id)?.matchIndex === l.log.lastIndex;
}

/** Names a node as the tables do: `n1=S1` when it has an alias. */
function named(ctx: ChapterContext): (id: NodeId) => string {
  return (id) => ctx.aliases?.[id] === undefined ? id : `${id}=${ctx.aliases[id]}`;
}

function sameMembers(a: readonly NodeId[], b: ReadonlySet<NodeId>): boolean {
  return a.length === b.size && a.every((id) => b.has(id));
}

/** Chapter 10 as a script and a notebook. */
export const chapter: Chapter<MembershipContext> = {
  number: 10,
  name: "10_membership",
  title: "Membership changes",
  summary: "Figure 10's two leaders, one change at a time, learners, removing the leader",
  intro: "The voters of a cluster define its majorities. Changing them on a running cluster — " +
    "growing from three servers to five, replacing a machine, retiring one — must never let " +
    "two majorities that share no server act at once, or each could elect its own leader in " +
    "the same term. The paper's **Figure 10** shows how that happens when servers switch " +
    "straight from the old configuration (C_old) to the new one (C_new). raftmeta changes " +
    "members **one server at a time** (dissertation §4.1, docs/membership.md): each change is " +
    "a log entry that adds or removes one voter, a node uses the newest configuration in its " +
    "log as soon as the entry is appended, and a leader appends a change only when the previous " +
    "one is committed and it has committed an entry of its own term. New servers join as " +
    "**learners**, which receive the log without voting, and are promoted once caught up. " +
    "Below each node table, a note lists the configuration each node uses.",
  defaultNodes: 3,
  nodesRange: [3, 3],
  context: (seed) => ({ cluster: membershipCluster(seed), seed }),
  steps: membershipSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
