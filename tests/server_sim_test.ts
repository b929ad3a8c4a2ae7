// Randomized runs over real RaftServers (src/check/server_simulation.ts): the server's request
// handling, forwarding, read barrier and snapshotter on the simulated clock, disk and network.
import assert from "node:assert/strict";
import {
  checkExpiredLeases,
  checkLeases,
  checkWatches,
  type LeaseRecord,
  runServerSimulation,
  SERVER_WIDE_KINDS,
} from "../src/check/server_simulation.ts";
import { ServerCluster } from "../src/check/server_cluster.ts";
import { historyToJsonLines } from "../src/check/history.ts";
import { SERVER_FAULT_POINTS, type ServerFaultPoint } from "../src/net/server.ts";

Deno.test("server sim: one seed gives one run, byte for byte", async () => {
  const a = await runServerSimulation(5);
  const b = await runServerSimulation(5);
  assert.ok(a.history.length > 30, `only ${a.history.length} operations`);
  assert.equal(historyToJsonLines(a.history), historyToJsonLines(b.history));
});

Deno.test("server sim: histories over crashes, pauses and partitions are linearizable, leases hold", async () => {
  let forwards = 0, snapshots = 0, reads = 0, crashes = 0, keepAlives = 0, pauses = 0;
  for (let seed = 1; seed <= 8; seed++) {
    const r = await runServerSimulation(seed);
    assert.equal(r.check.result, "linearizable", `seed ${seed}: ${r.check.failure?.explanation}`);
    forwards += r.forwards;
    snapshots += r.snapshots;
    crashes += r.faults.crashes;
    reads += r.history.filter((o) => o.kind === "get" && o.result?.ok === true).length;
    assert.deepEqual(r.leases.violations, [], `seed ${seed}`);
    keepAlives += r.leases.keepAlives;
    pauses += r.faults.pauses;
  }
  // The runs went through the paths the fault point below breaks, and more.
  assert.ok(forwards > 0, "no request was forwarded to the leader");
  assert.ok(snapshots > 0, "no server took a snapshot");
  assert.ok(reads > 100, `only ${reads} reads answered`);
  assert.ok(crashes > 0, "no server crashed");
  assert.ok(pauses > 0, "no server paused");
  assert.ok(keepAlives > 10, `only ${keepAlives} lease keep-alives`);
});

Deno.test("server sim: the fault points in the server's own code are caught", async (t) => {
  // Measured with pauses and lease clients in the runs: read-before-barrier caught in 19 of seeds
  // 1..20, read-before-apply in 2 of seeds 1..40 (20 and 22).
  // Without the wider kinds, so these seeds keep the runs they were measured on.
  const cases: [ServerFaultPoint, number, number, number][] = [
    ["read-before-barrier", 1, 8, 4],
    ["read-before-apply", 17, 24, 1],
  ];
  // keepalive-before-barrier needs a pause, a new election and a keep-alive to the old leader in
  // one window: rare in random runs, so the directed test below proves it is caught;
  // watch-start-skips has a test of its own below.
  assert.deepEqual(
    [...cases.map(([f]) => f), "keepalive-before-barrier", "watch-start-skips"],
    [...SERVER_FAULT_POINTS],
  );
  for (const [faultPoint, first, last, atLeast] of cases) {
    await t.step(faultPoint, async () => {
      const caught: number[] = [];
      for (let seed = first; seed <= last; seed++) {
        const r = await runServerSimulation(seed, { faultPoints: [faultPoint], wide: [] });
        if (r.check.result === "not-linearizable") caught.push(seed);
      }
      assert.ok(caught.length >= atLeast, `caught only in seeds [${caught}]`);
    });
  }
});

Deno.test("server sim: a paused server answers nothing until it resumes (a forward's answer waits)", async () => {
  // A follower forwards a put to the leader and is paused; the leader's answer reaches it while it
  // is stopped. As with SIGSTOP, its client hears nothing until it resumes, then gets the answer.
  const c = new ServerCluster({ seed: 5, dropRate: 0 });
  const run = (ms: number) => c.runUntil(c.nowMs + ms);
  await run(1000);
  const leader = c.ids.find((id) => c.server(id)?.node.role === "Leader");
  assert.ok(leader !== undefined, "no leader after 1 s");
  const follower = c.ids.find((id) => id !== leader)!;
  let status: number | undefined;
  let answeredMs = 0;
  c.request(follower, "/v3/kv/put", { key: btoa("k"), value: btoa("v") }).then((r) => {
    status = r.status;
    answeredMs = c.nowMs;
  });
  await run(1); // the follower has forwarded it
  const forwards = c.counters.forwards;
  assert.equal(forwards, 1, "the put was not forwarded");
  c.pause(follower);
  const pausedMs = c.nowMs;
  await run(500);
  assert.equal(status, undefined, `answered at ${answeredMs} ms, paused since ${pausedMs} ms`);
  c.resume(follower);
  await run(50);
  assert.equal(status, 200);
  assert.ok(answeredMs >= pausedMs + 500);
  await c.close();
});

Deno.test("server sim: a deposed leader must not extend a lease (keepalive-before-barrier)", async (t) => {
  // The leader pauses, cut off from the others, which elect a new leader; it times the 2 s lease
  // from its election. A client's keep-alive reaches the old leader 700 ms after that election
  // and is handled first thing when it resumes, while it still believes it leads. Without the fault point it cannot
  // confirm its leadership and refuses; with it, it answers with a TTL that the new leader does
  // not honour, and a read on the majority side misses the key while that TTL still runs.
  const scenario = async (faultPoints: ServerFaultPoint[]) => {
    const c = new ServerCluster({ seed: 3, faultPoints, dropRate: 0 });
    const run = (ms: number) => c.runUntil(c.nowMs + ms);
    const call = async (id: string, path: string, body: unknown) => {
      let out: { status: number; json: Record<string, unknown> } | undefined;
      c.request(id, path, body).then(async (r) => out = { status: r.status, json: await r.json() });
      for (let i = 0; i < 700 && out === undefined; i++) await run(10);
      return out;
    };
    const leaderNow = () => c.ids.find((id) => c.server(id)?.node.role === "Leader");
    await run(1000);
    const old = leaderNow()!;
    assert.ok(old !== undefined, "no leader after 1 s");
    const grant = await call(old, "/v3/lease/grant", { TTL: 2 });
    assert.equal(grant?.status, 200);
    const record: LeaseRecord = {
      id: String(grant!.json.ID),
      key: "held",
      promises: [{ callMs: c.nowMs, ttlMs: 2000 }],
      reads: [],
    };
    const put = await call(old, "/v3/kv/put", { key: btoa("held"), value: "", lease: record.id });
    assert.equal(put?.status, 200);
    record.putAckMs = c.nowMs;
    c.pause(old);
    c.partition([[old], c.ids.filter((id) => id !== old)]);
    await run(600);
    const next = c.ids.find((id) => id !== old && c.server(id)?.node.role === "Leader");
    assert.ok(next !== undefined, "no new leader while the old one was paused");
    await run(700);
    // The keep-alive reaches the paused process; it handles it first thing when it resumes.
    const callMs = c.nowMs;
    const keeping = call(old, "/v3/lease/keepalive", { ID: record.id });
    await run(100);
    c.resume(old);
    const kept = await keeping;
    const ttl = Number((kept?.json.result as { TTL?: string } | undefined)?.TTL ?? 0);
    if (kept?.status === 200 && ttl > 0) record.promises.push({ callMs, ttlMs: ttl * 1000 });
    for (let i = 0; i < 40; i++) {
      await run(50);
      const readMs = c.nowMs;
      const r = await call(next!, "/v3/kv/range", { key: btoa("held") });
      if (r?.status !== 200) continue;
      const present = ((r.json.kvs as unknown[] | undefined)?.length ?? 0) > 0;
      record.reads.push({ callMs: readMs, returnMs: c.nowMs, present });
    }
    await c.close();
    return { kept, violations: checkLeases([record]), reads: record.reads };
  };
  await t.step("as the server ships: the keep-alive is refused, no early expiry", async () => {
    const r = await scenario([]);
    const result = r.kept?.json.result as { TTL?: string } | undefined;
    assert.ok(!(Number(result?.TTL) > 0), `the deposed leader answered ${JSON.stringify(r.kept)}`);
    assert.deepEqual(r.violations, []);
    assert.ok(r.reads.some((x) => !x.present), "the new leader never expired the lease");
  });
  await t.step("with the fault point: the check finds the early expiry", async () => {
    const r = await scenario(["keepalive-before-barrier"]);
    const result = r.kept?.json.result as { TTL?: string } | undefined;
    assert.ok(Number(result?.TTL) > 0, `no TTL: ${JSON.stringify(r.kept)}`);
    assert.ok(r.violations.length > 0, `no violation; reads ${JSON.stringify(r.reads)}`);
  });
});

Deno.test("server sim: the wider kinds happen, and their seeds stay clean", async () => {
  const sum = {
    slowSyncs: 0,
    diskStalls: 0,
    longDelayed: 0,
    longPauses: 0,
    watchEvents: 0,
    watchCreates: 0,
    drift: 0,
  };
  for (let seed = 1; seed <= 3; seed++) {
    // A stall rate above the default, so a short run surely stalls a disk.
    const r = await runServerSimulation(seed, {
      wide: SERVER_WIDE_KINDS,
      diskStallRate: 0.05,
      durationMs: 3000,
    });
    assert.equal(r.check.result, "linearizable", `seed ${seed}: ${r.check.failure?.explanation}`);
    assert.deepEqual(r.leases.violations, [], `seed ${seed}`);
    assert.deepEqual(r.watches.violations, [], `seed ${seed}`);
    assert.deepEqual(r.wide, SERVER_WIDE_KINDS);
    sum.slowSyncs += r.faults.slowSyncs;
    sum.diskStalls += r.faults.diskStalls;
    sum.longDelayed += r.faults.longDelayed;
    sum.longPauses += r.faults.longPauses;
    sum.watchEvents += r.watches.events;
    sum.watchCreates += r.watches.creates;
    sum.drift = Math.max(sum.drift, ...r.clockRates.map((x) => Math.abs(x - 1)));
  }
  assert.ok(sum.slowSyncs > 0, "no fdatasync took time");
  assert.ok(sum.diskStalls > 0, "no disk stalled");
  assert.ok(sum.longDelayed > 0, "no message was held for seconds");
  assert.ok(sum.longPauses > 0, "no long pause");
  assert.ok(sum.drift > 0.001, `clocks drift by at most ${sum.drift}`);
  assert.ok(sum.watchEvents > 20, `only ${sum.watchEvents} watch events`);
  // Each watcher re-created its watch at least once, so resuming was exercised.
  assert.ok(sum.watchCreates > 6, `only ${sum.watchCreates} watches created`);
});

Deno.test("server sim: the wider kinds keep one seed one run", async () => {
  const a = await runServerSimulation(2, { wide: SERVER_WIDE_KINDS, durationMs: 2000 });
  const b = await runServerSimulation(2, { wide: SERVER_WIDE_KINDS, durationMs: 2000 });
  assert.equal(historyToJsonLines(a.history), historyToJsonLines(b.history));
  assert.deepEqual(a.watches.records, b.watches.records);
  assert.deepEqual(a.faults, b.faults);
});

Deno.test("server sim: a watch that resumes one revision late is caught (watch-start-skips)", async () => {
  const caught: number[] = [];
  for (let seed = 1; seed <= 2; seed++) {
    const r = await runServerSimulation(seed, {
      wide: ["watch"],
      faultPoints: ["watch-start-skips"],
      durationMs: 2000,
    });
    assert.ok(r.watches.events > 0, `seed ${seed}: no watch event`);
    if (r.watches.violations.length > 0) caught.push(seed);
  }
  assert.deepEqual(caught, [1, 2]);
});

Deno.test("server sim: checkWatches finds a missed, a repeated and a reordered event", () => {
  const committed = ["2 PUT a 1", "3 PUT b 1", "4 DELETE a "];
  const w = (events: string[]) => [{ clientId: "w1", events, creates: 1 }];
  assert.deepEqual(checkWatches(w(committed.slice(0, 2)), committed), []);
  for (
    const events of [["2 PUT a 1", "4 DELETE a "], ["2 PUT a 1", "2 PUT a 1"], [
      "3 PUT b 1",
      "2 PUT a 1",
    ], [...committed, "5 PUT c 1"]]
  ) {
    assert.equal(checkWatches(w(events), committed).length, 1, JSON.stringify(events));
  }
});

Deno.test("server sim: lease checks allow for bounded clock drift, and an expired lease stays gone", () => {
  const lease = (reads: LeaseRecord["reads"], promises: LeaseRecord["promises"]): LeaseRecord => ({
    id: "7",
    key: "k",
    putAckMs: 10,
    promises,
    reads,
  });
  // A 2% fast leader clock ends a 1,000 ms TTL sent at 0 at 980 ms: a miss answered at 990 ms is
  // early only when no drift is allowed for; one answered at 970 ms is early either way.
  const late = lease([{ callMs: 985, returnMs: 990, present: false }], [{
    callMs: 0,
    ttlMs: 1000,
  }]);
  assert.equal(checkLeases([late]).length, 1);
  assert.deepEqual(checkLeases([late], { clockDriftMax: 0.02 }), []);
  const early = lease([{ callMs: 965, returnMs: 970, present: false }], [{
    callMs: 0,
    ttlMs: 1000,
  }]);
  assert.equal(checkLeases([early], { clockDriftMax: 0.02 }).length, 1);
  // Gone, then visible again; gone, then kept alive.
  const gone = { callMs: 1500, returnMs: 1510, present: false };
  assert.deepEqual(checkExpiredLeases([lease([gone], [{ callMs: 0, ttlMs: 1000 }])]), []);
  const back = lease([gone, { callMs: 1600, returnMs: 1610, present: true }], []);
  assert.equal(checkExpiredLeases([back]).length, 1);
  const revived = lease([gone], [{ callMs: 1700, ttlMs: 1000 }]);
  assert.equal(checkExpiredLeases([revived]).length, 1);
});
