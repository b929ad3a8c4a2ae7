// The randomized simulation: a fixed seed set must run clean (also with lock workers), and each
// classic bug, switched on by its fault point (Raft's or the lock recipe's), must be caught within a
// bounded number of seeds (proof the harness bites).
import assert from "node:assert/strict";
import { FAULT_KINDS, runSimulation, type SimulationOptions } from "../src/check/simulation.ts";
import { historyToJsonLines } from "../src/check/history.ts";
import type { CoordFaultPoint, FaultPoint } from "../mod.ts";
import type { LockRecord } from "../src/check/lock_checker.ts";
import { Cluster, type Operation as SimOperation } from "../src/sim/cluster.ts";
import { checkLinearizable } from "../src/check/linearizability.ts";
import type { Operation as HistoryOperation } from "../src/check/history.ts";

Deno.test("CI seed set: 300 seeds across 3, 5 and 7 nodes and every fault kind, no violation", async (t) => {
  const mixes: { name: string; options: SimulationOptions }[] = [
    { name: "every fault kind", options: {} },
    { name: "network faults only", options: { faults: ["loss", "duplicate", "reorder", "delay"] } },
    { name: "partitions and pauses", options: { faults: ["partition", "pause"] } },
    { name: "crashes", options: { faults: ["crash", "crash-after-persist", "loss"] } },
  ];
  let seed = 1_000;
  let operations = 0;
  for (const nodes of [3, 5, 7]) {
    for (const mix of mixes) {
      await t.step(`${nodes} nodes, ${mix.name}`, async () => {
        for (let i = 0; i < 25; i++, seed++) {
          const r = await runSimulation(seed, { ...mix.options, nodes, durationMs: 5_000 });
          operations += r.operations;
          assert.equal(
            r.violation,
            undefined,
            `seed ${seed}: ${r.violation?.kind}: ${r.violation?.message}\n` +
              `replay: deno task sim --seed ${seed} --verbose --nodes ${nodes} --duration 5000` +
              (mix.options.faults ? ` --faults ${mix.options.faults.join(",")}` : ""),
          );
          // With every kind on, half the seeds also change membership (a leader may crash right
          // after a change, a removal leaves four voters that tolerate one failure): seed 1104
          // keeps a quorum up for little of its 5 s and runs 45 operations. The set must be busy.
          const floor = mix.options.faults === undefined ? 30 : 50;
          assert.ok(r.operations > floor, `seed ${seed} ran only ${r.operations} operations`);
        }
      });
    }
  }
  assert.equal(seed - 1_000, 300);
  assert.ok(operations > 300 * 300, `the seeds ran only ${operations} operations`);
});

Deno.test("CI seed set: 30 more seeds on the simulated disk with snapshots every few dozen entries", async (t) => {
  const faults = ["disk", "snapshot", "crash-after-persist", "reorder"] as const;
  for (const [k, nodes] of [3, 5, 7].entries()) {
    await t.step(`${nodes} nodes`, async () => {
      let installs = 0;
      let operations = 0;
      for (let seed = 2_000 + k * 10; seed < 2_010 + k * 10; seed++) {
        const r = await runSimulation(seed, { faults, nodes, durationMs: 5_000 });
        assert.equal(
          r.violation,
          undefined,
          `seed ${seed}: ${r.violation?.kind}: ${r.violation?.message}\n` +
            `replay: deno task sim --seed ${seed} --verbose --nodes ${nodes} --duration 5000 ` +
            `--faults ${faults.join(",")}`,
        );
        // Some schedules leave no quorum up for most of the run (seed 2009 crashes two of three
        // nodes for seconds), so the floor per seed is low and the set as a whole must be busy.
        assert.ok(r.operations > 10, `seed ${seed} ran only ${r.operations} operations`);
        operations += r.operations;
        installs += r.cluster.snapshotStats.installed;
      }
      assert.ok(operations > 50 * 10, `the seeds ran only ${operations} operations`);
      assert.ok(installs > 0, "no follower needed InstallSnapshot");
    });
  }
});

Deno.test("CI seed set: 45 seeds with membership changes (adds, promotions, removals of the leader too, transfers) under crashes, partitions and loss, no violation", async (t) => {
  const faults = ["membership", "crash", "partition", "loss", "reorder"] as const;
  let changes = 0;
  let removedLeaders = 0;
  for (const nodes of [3, 5, 7]) {
    await t.step(`${nodes} nodes`, async () => {
      for (let seed = 4_000 + nodes * 100; seed < 4_015 + nodes * 100; seed++) {
        const lines: string[] = [];
        const r = await runSimulation(seed, {
          nodes,
          faults,
          durationMs: 5_000,
          log: (line) => lines.push(line),
        });
        assert.equal(
          r.violation,
          undefined,
          `seed ${seed}: ${r.violation?.kind}: ${r.violation?.message}\n` +
            `replay: deno task sim --seed ${seed} --verbose --nodes ${nodes} --duration 5000 ` +
            `--faults ${faults.join(",")}`,
        );
        assert.ok(r.operations > 50, `seed ${seed} ran only ${r.operations} operations`);
        changes += r.membershipChanges;
        removedLeaders += lines.filter((l) => /fault: membership: remove .* \(the leader\)/.test(l))
          .length;
      }
    });
  }
  assert.ok(changes > 100, `membership changes over all seeds: ${changes}`);
  assert.ok(removedLeaders > 0, "no leader was removed");
});

Deno.test("one seed reproduces a run exactly", async () => {
  const a = await runSimulation(77, { durationMs: 3_000 });
  const b = await runSimulation(77, { durationMs: 3_000 });
  assert.equal(historyToJsonLines(a.history), historyToJsonLines(b.history));
  assert.equal(a.faults, b.faults);
  const c = await runSimulation(78, { durationMs: 3_000 });
  assert.notEqual(historyToJsonLines(a.history), historyToJsonLines(c.history));
});

const BUGS: { point: FaultPoint; options: SimulationOptions; expect: RegExp }[] = [
  {
    point: "commit-earlier-term-by-counting",
    options: { faults: ["crash", "partition"], config: { entriesPerMessageMax: 1 } },
    expect: /leader commit rule|state machine safety|leader completeness/,
  },
  {
    point: "forget-vote-on-restart",
    options: { faults: ["crash", "partition"] },
    expect: /durability|election safety/,
  },
  {
    point: "truncate-on-stale-append",
    options: { faults: ["duplicate", "reorder", "crash"] },
    expect:
      /leader completeness|state machine safety|log matching|truncate|not linearizable|livelock|commit durability/,
  },
  {
    point: "read-without-quorum",
    options: { faults: ["partition", "pause"], nodes: 3 },
    expect: /not linearizable/,
  },
  {
    point: "leader-counts-unstable-self",
    options: { faults: ["crash", "partition"], leaderWriteDelayMaxMs: 15 },
    expect: /commit durability|leader completeness|state machine safety|not linearizable/,
  },
  {
    // In the host loop the server runs too (src/host/loop.ts): acknowledging before durable.
    point: "send-before-persist",
    options: { faults: ["crash", "partition"] },
    expect: /durability/,
  },
  {
    point: "apply-retry-twice",
    options: { faults: ["crash", "partition", "loss"] },
    expect: /not linearizable/,
  },
  {
    // A leader counts the old voters after appending a change: a commit the new ones lack.
    point: "config-on-commit",
    options: { faults: ["membership", "crash", "partition"] },
    expect: /commit durability|configuration overlap|election safety|leader completeness/,
  },
  {
    point: "two-changes-in-flight",
    options: { faults: ["membership", "crash", "partition"] },
    expect: /membership change rule|configuration overlap|election safety/,
  },
  {
    point: "config-before-term-commit",
    options: { faults: ["membership", "crash", "partition"] },
    expect: /membership change rule|configuration overlap|election safety/,
  },
];

for (const bug of BUGS) {
  Deno.test(`the harness catches the bug "${bug.point}" within 100 seeds`, async () => {
    for (let seed = 1; seed <= 100; seed++) {
      const r = await runSimulation(seed, {
        ...bug.options,
        faultPoints: [bug.point],
        durationMs: 5_000,
      });
      if (r.violation !== undefined) {
        assert.match(r.violation.message, bug.expect, `seed ${seed}: ${r.violation.message}`);
        return;
      }
    }
    assert.fail(`"${bug.point}" went unnoticed for 100 seeds`);
  });
}

/**
 * Issue 14's stale read on a fixed schedule of the `long-delay` fault's slow links: the leader's
 * heartbeat of term t is held 3 s on its way to a follower, who answers it in a later term t' in
 * which the same node leads again, over a link that is slow too; meanwhile the leader is cut off
 * and the others elect and write. The history of the put and the two gets goes to the checker.
 * CheckQuorum is off: the leader's step-down bounds such a window but is no part of read safety,
 * and the schedule need not race it.
 */
function staleReadAcrossTerms(faultPoints: FaultPoint[]): HistoryOperation[] {
  const c = new Cluster({ nodes: 3, seed: 1, faultPoints, config: { checkQuorum: false } });
  c.runUntil(() => c.leader() !== undefined, { timeoutMs: 5_000, description: "a leader" });
  const leader = c.leader()!;
  const [f, g] = c.ids.filter((x) => x !== leader);
  const history: HistoryOperation[] = [];
  const record = (op: SimOperation) => {
    const h: HistoryOperation = {
      id: history.length,
      clientId: `c${history.length}`,
      kind: op.kind === "get" ? "get" : "put",
      key: op.key!,
      callMs: op.startedMs,
      returnMs: op.status === "pending" || op.status === "unknown" ? null : op.endedMs!,
    };
    if (op.kind === "put") h.value = op.value;
    if (h.returnMs !== null) {
      h.result = op.status === "ok"
        ? { ok: true, ...(op.kind === "get" ? { value: op.result ?? null } : {}) }
        : { ok: false };
    }
    history.push(h);
  };
  record(c.complete(c.put("/k", "v1", { via: leader })));
  // Read rounds of this term climb past 100.
  for (let i = 0; i < 100; i++) c.complete(c.get("/k", { via: leader }));
  const heldAtMs = c.nowMs;
  c.slowLink(leader, f, 3_000);
  c.complete(c.get("/k", { via: leader }));
  c.advance(60);
  c.slowLink(leader, f, 0);
  // Leadership moves on and comes back to the same node, a few terms later.
  for (let changes = 0; changes === 0 || c.leader() !== leader; changes++) {
    assert.ok(changes < 20, "the first leader never led again");
    const current = c.leader()!;
    c.isolate(current);
    c.runUntil(() => c.leader() !== undefined && c.leader() !== current, {
      timeoutMs: 3_000,
      description: "another leader",
    });
    c.heal();
    c.advance(100);
  }
  // The follower's answers crawl from before the held heartbeats reach it; then the leader can
  // reach nobody and hear only the follower.
  c.advance(heldAtMs + 2_950 - c.nowMs);
  c.slowLink(f, leader, 2_000);
  c.advance(heldAtMs + 3_075 - c.nowMs);
  c.cut(leader, f);
  c.cut(leader, g);
  c.cut(g, leader);
  c.runUntil(() => c.leader() !== leader && c.leader() !== undefined, {
    timeoutMs: 3_000,
    description: "a leader on the majority side",
  });
  record(c.complete(c.put("/k", "v2", { via: c.leader() })));
  c.advance(5); // the read starts after the write returned
  record(c.complete(c.get("/k", { via: leader }), { timeoutMs: 3_000 }));
  return history;
}

Deno.test('the checker catches the bug "credit-stale-replies" on a schedule of slow links (a heartbeat answered two leader changes late)', () => {
  const fixed = checkLinearizable(staleReadAcrossTerms([]));
  assert.equal(fixed.ok, true, fixed.failure?.explanation);
  const buggy = checkLinearizable(staleReadAcrossTerms(["credit-stale-replies"]));
  assert.equal(buggy.ok, false);
  assert.match(buggy.failure!.explanation, /it read "v1", the register holds "v2"/);
});

// Issue 15: the default randomized mix (every fault kind, 3 lock workers, as `deno task sim`)
// finds the stale read of issue 14 on its own: seed 171 is the first of seeds 1..300 that
// catches it (`deno task sim --seeds 300 --fault-points credit-stale-replies`). The seed is
// pinned to keep the default run short; a change to the simulator that moves the schedule makes
// this fail, and that scan finds the new first seed.
Deno.test('the default randomized mix catches "credit-stale-replies" (seed 171) and passes without it', async () => {
  const options = { locks: 3 };
  const fixed = await runSimulation(171, options);
  assert.equal(fixed.violation, undefined, fixed.violation?.message);
  const buggy = await runSimulation(171, { ...options, faultPoints: ["credit-stale-replies"] });
  assert.ok(buggy.violation !== undefined, "seed 171 no longer catches the stale read");
  assert.match(buggy.violation.message, /not linearizable/);
});

Deno.test("CI seed set: 12 seeds with 3 lock workers (sessions, fenced writes, holders paused, crashed or cut off), no violation", async (t) => {
  // Clock drift and pauses past a lease are on in every seed here; the kinds that mostly slow the
  // cluster down (long delays, slow disks and applies, subset crashes) are left to the
  // default-kind seeds above, as they can push a 5-second run below the operation floor.
  const slowing: readonly string[] = ["long-delay", "disk-slow", "slow-apply", "crash-subset"];
  const faults = FAULT_KINDS.filter((k) => !slowing.includes(k));
  let grants = 0;
  let refused = 0;
  let passedOn = 0;
  for (const nodes of [3, 5, 7]) {
    await t.step(`${nodes} nodes`, async () => {
      for (let seed = 3_000 + nodes * 10; seed < 3_004 + nodes * 10; seed++) {
        const r = await runSimulation(seed, { nodes, locks: 3, durationMs: 5_000, faults });
        assert.equal(
          r.violation,
          undefined,
          `seed ${seed}: ${r.violation?.kind}: ${r.violation?.message}\n` +
            `replay: deno task sim --seed ${seed} --verbose --nodes ${nodes} --duration 5000 ` +
            `--faults ${faults.join(",")}`,
        );
        assert.ok(r.operations > 50, `seed ${seed} ran only ${r.operations} operations`);
        grants += r.locks!.grants;
        refused += r.locks!.writesRefused;
        passedOn += grantsAfterAStrandedHolder(r.locks!.history.records);
      }
    });
  }
  assert.ok(grants > 100, `lock grants over all seeds: ${grants}`);
  assert.ok(refused > 0, "no stale holder's write was refused");
  assert.ok(passedOn > 0, "the lock never passed on from a paused, crashed or cut-off holder");
});

/** Grants whose previous holder was paused, crashed or cut off while holding (never released). */
function grantsAfterAStrandedHolder(records: readonly LockRecord[]): number {
  const stranded = new Set<number>();
  for (const r of records) {
    if ((r.kind === "pause" || r.kind === "crash" || r.kind === "partition") && r.token) {
      stranded.add(r.token);
    }
  }
  for (const r of records) if (r.kind === "release" && r.token) stranded.delete(r.token);
  const grants = records.filter((r) => r.kind === "grant").sort((a, b) =>
    a.heldAtRevision - b.heldAtRevision
  );
  return grants.filter((_, i) => i > 0 && stranded.has(grants[i - 1].token)).length;
}

const COORD_BUGS: { point: CoordFaultPoint; expect: RegExp }[] = [
  { point: "lock-skip-wait", expect: /mutual exclusion/ },
  { point: "fence-skip-compare", expect: /fencing: .* landed at revision \d+ after/ },
];

for (const bug of COORD_BUGS) {
  Deno.test(`the lock checker catches the bug "${bug.point}" within 20 seeds`, async () => {
    for (let seed = 1; seed <= 20; seed++) {
      const r = await runSimulation(seed, {
        nodes: 3,
        locks: 3,
        coordFaultPoints: [bug.point],
        durationMs: 5_000,
      });
      if (r.violation !== undefined) {
        assert.equal(r.violation.kind, "lock", `seed ${seed}: ${r.violation.message}`);
        assert.match(r.violation.message, bug.expect, `seed ${seed}: ${r.violation.message}`);
        return;
      }
    }
    assert.fail(`"${bug.point}" went unnoticed for 20 seeds`);
  });
}

Deno.test("seeds that once failed stay clean (found by `deno task sim --seeds 1000 --start 30001`)", async (t) => {
  // A disk crash while a host wrote a leader's deferred batches (before a batch that must persist
  // first) left the host loop going on the crashed node's storage: an I/O error or a stale file
  // handle surfaced as a crash of the harness.
  // The membership checks once misread the default mix: a snapshot taken in the event that
  // appended a change hid the committed entry's term (seeds 410, 766), and a lagging member that
  // learned the current term from a removed node looked like a disruption (seed 622); found by
  // `deno task sim --seeds 1000`.
  for (const seed of [30280, 30565, 410, 622, 766]) {
    await t.step(`seed ${seed}`, async () => {
      const r = await runSimulation(seed, { locks: 3 });
      assert.equal(r.violation, undefined, `seed ${seed}: ${r.violation?.message}`);
    });
  }
});

Deno.test("fault kinds are the documented ones", () => {
  assert.deepEqual([...FAULT_KINDS].sort(), [
    "clock-drift",
    "crash",
    "crash-after-persist",
    "crash-subset",
    "delay",
    "disk",
    "disk-slow",
    "duplicate",
    "long-delay",
    "long-pause",
    "loss",
    "membership",
    "partition",
    "pause",
    "reorder",
    "slow-apply",
    "snapshot",
  ]);
});
