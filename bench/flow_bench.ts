/**
 * Leader flow control on the simulator: how much a leader re-sends, how many AppendEntries it
 * needs, and how long a follower spends in Probe, in two runs:
 *
 * - `slow`: a round trip of 120 ms (60 ms each way, no reordering) under a steady write load;
 * - `gap`: a follower cut off while 5,000 entries commit, then healed on a jittery, reordering
 *   network (1–5 ms, 30% of messages held back up to 30 ms); measured until it has caught up.
 *
 * Run: `deno run bench/flow_bench.ts` (`--seeds 5` sets how many seeds each run uses).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Cluster, type NodeId } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { seeds: { type: "string", default: "5" } },
});
const seeds = Number(values.seeds);
if (!Number.isInteger(seeds) || seeds < 1) throw new RangeError(`--seeds must be >= 1: ${seeds}`);

/** What the leader sent to its followers while the counters ran. */
interface Counters {
  /** AppendEntries that carried entries. */
  appends: number;
  /** AppendEntries without entries (heartbeats, commit notices, confirmation rounds). */
  empty: number;
  /** Entries carried. */
  entries: number;
  /** Entries at an index already sent to that follower in this term. */
  resent: number;
  /** Milliseconds (sampled every ms) any counted follower was in Probe, summed over followers. */
  probeMs: number;
  /** Milliseconds counted, summed over followers. */
  followerMs: number;
}

/** Counts the leader's AppendEntries to `followers` while `counting()` holds. */
function watch(c: Cluster, followers: () => readonly NodeId[], counting: () => boolean): Counters {
  const k: Counters = { appends: 0, empty: 0, entries: 0, resent: 0, probeMs: 0, followerMs: 0 };
  const highestSent = new Map<string, number>();
  c.onEvent((e) => {
    if (e.kind !== "send" || e.message.type !== "AppendEntries" || !counting()) return;
    const m = e.message;
    if (!followers().includes(m.to)) return;
    if (m.entries.length === 0) {
      k.empty++;
      return;
    }
    k.appends++;
    k.entries += m.entries.length;
    const key = `${m.to}@${m.term}`;
    const highest = highestSent.get(key) ?? 0;
    for (const entry of m.entries) if (entry.index <= highest) k.resent++;
    highestSent.set(key, Math.max(highest, m.entries[m.entries.length - 1].index));
  });
  return k;
}

function sampleProbe(c: Cluster, k: Counters, followers: readonly NodeId[]): void {
  const leader = c.leader();
  if (leader === undefined) return;
  const progress = c.node(leader).raft.status().progress;
  for (const f of followers) {
    k.followerMs++;
    if (progress.get(f)?.state === "Probe") k.probeMs++;
  }
}

/** Steady writes (one per ms for `writes` ms) over a 120 ms round trip. */
function slowRun(seed: number, writes: number): Counters & { ms: number } {
  const c = new Cluster({
    nodes: 3,
    seed,
    eventsMax: 0,
    checkSafety: false,
    network: { latencyMinMs: 60, latencyMaxMs: 60 },
  });
  const leader = c.waitForLeader({ timeoutMs: 20_000 });
  c.runUntil(() => c.converged(), { timeoutMs: 20_000, description: "the no-op committed" });
  const followers = c.ids.filter((id) => id !== leader);
  let on = true;
  const k = watch(c, () => followers, () => on);
  const start = c.nowMs;
  for (let t = 0; t < writes; t++) {
    if (c.leader() !== leader) throw new Error(`seed ${seed}: leadership changed`);
    c.put(`/flow/${t % 100}`, "v".repeat(64), { via: leader });
    c.advance(1);
    sampleProbe(c, k, followers);
  }
  while (!c.converged()) {
    c.advance(1);
    sampleProbe(c, k, followers);
    if (c.nowMs - start > 60_000) throw new Error(`seed ${seed}: no convergence`);
  }
  on = false;
  return { ...k, ms: c.nowMs - start };
}

/** A follower cut off while `gap` entries commit, healed on a reordering network. */
function gapRun(seed: number, gap: number): Counters & { ms: number } {
  const c = new Cluster({ nodes: 3, seed, eventsMax: 0, checkSafety: false });
  const leader = c.waitForLeader({ timeoutMs: 20_000 });
  c.runUntil(() => c.converged(), { timeoutMs: 20_000, description: "the no-op committed" });
  const lagging = c.ids.find((id) => id !== leader)!;
  c.isolate(lagging);
  for (let i = 0; i < gap; i++) {
    c.put(`/flow/${i % 100}`, "v".repeat(64), { via: leader });
    if (i % 64 === 63) c.advance(1);
  }
  const l = c.node(leader).raft;
  c.runUntil(() => l.commitIndex === l.log.lastIndex, { timeoutMs: 20_000, description: "commit" });
  c.advance(500);
  let on = true;
  const k = watch(c, () => [lagging], () => on);
  c.network = { ...c.network, reorderRate: 0.3, reorderDelayMaxMs: 30 };
  c.heal();
  const start = c.nowMs;
  const f = c.node(lagging).raft;
  while (f.log.lastIndex < l.log.lastIndex || f.commitIndex < l.commitIndex) {
    if (c.leader() !== leader) throw new Error(`seed ${seed}: leadership changed`);
    c.advance(1);
    sampleProbe(c, k, [lagging]);
    if (c.nowMs - start > 60_000) throw new Error(`seed ${seed}: the follower did not catch up`);
  }
  on = false;
  return { ...k, ms: c.nowMs - start };
}

function range(xs: number[], digits = 0): string {
  const lo = Math.min(...xs);
  const hi = Math.max(...xs);
  const f = (x: number) => x.toFixed(digits);
  return lo === hi ? f(lo) : `${f(lo)}–${f(hi)}`;
}

function report(label: string, runs: (Counters & { ms: number })[]): void {
  console.log(
    `| ${label} | ${range(runs.map((r) => r.appends))} | ${range(runs.map((r) => r.empty))} | ${
      range(runs.map((r) => r.entries))
    } | ${range(runs.map((r) => r.resent))} | ${
      range(runs.map((r) => (100 * r.probeMs) / Math.max(1, r.followerMs)), 1)
    }% | ${range(runs.map((r) => r.ms))} |`,
  );
}

const seedList = Array.from({ length: seeds }, (_, i) => i + 1);
console.log(`3 nodes, seeds 1–${seeds}; ranges over the seeds\n`);
console.log(
  "| run | appends with entries | empty appends | entries sent | entries re-sent | time in Probe | virtual ms |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|");
report(
  "slow: 120 ms round trip, 5,000 writes (2 followers)",
  seedList.map((s) => slowRun(s, 5000)),
);
report(
  "gap: repair 5,000 entries, 30% reordered ≤ 30 ms (1 follower)",
  seedList.map((s) => gapRun(s, 5000)),
);
