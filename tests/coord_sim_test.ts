/**
 * Coordination under faults in the simulator: watchers see exactly the committed events (compared
 * with what the nodes applied) through leader crashes and partitions; a leader cut off in a
 * minority cannot expire a lease; a lease survives failovers while kept alive; the lock's fencing
 * tokens rise with every holder across randomized seeds with crashes, partitions and paused
 * holders.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Cluster } from "../src/sim/cluster.ts";
import { SeededRng } from "../src/raft/rng.ts";
import type { NodeId } from "../src/raft/types.ts";
import type { ApplyResult } from "../src/kv/store.ts";
import { type KvEvent, utf8 } from "../src/kv/mod.ts";
import { SimCoordination } from "../src/coord/sim.ts";
import { Session } from "../src/coord/session.ts";
import { campaign, fencedPut, lock, LockLostError, observe } from "../src/coord/lock.ts";

const text = new TextDecoder();

function eventLine(revision: number, e: KvEvent): string {
  return `${revision} ${e.type} ${e.kv.key}=${text.decode(e.kv.value)} v${e.kv.version}` +
    (e.prevKv ? ` prev@${e.prevKv.modRevision}` : "");
}

/** Every committed event by revision, from whatever node applies it first (all must agree). */
function recordCommitted(cluster: Cluster): Map<number, string[]> {
  const byRevision = new Map<number, string[]>();
  cluster.onApplied((_n, _entry, result) => {
    const r = result as ApplyResult | undefined;
    if (r === undefined || r.status !== "applied" || r.events.length === 0) return;
    const lines = r.events.map((e) => eventLine(r.revision, e));
    const known = byRevision.get(r.revision);
    if (known === undefined) byRevision.set(r.revision, lines);
    else assert.deepEqual(lines, known, `nodes disagree on revision ${r.revision}`);
  });
  return byRevision;
}

async function watchersSeeCommittedEvents(seed: number): Promise<{ events: number }> {
  const rng = new SeededRng(seed);
  const cluster = new Cluster({ nodes: 5, seed });
  const committed = recordCommitted(cluster);
  const coord = new SimCoordination(cluster);
  cluster.waitForLeader();
  const streams: string[][] = [];
  for (let i = 0; i < 3; i++) {
    const seen: string[] = [];
    streams.push(seen);
    const w = coord.client(`watcher${i}`).watch({
      range: { prefix: "" },
      startRevision: 1,
      prevKv: true,
    });
    (async () => {
      for await (const r of w) {
        if (r.kind === "events") seen.push(...r.events.map((e) => eventLine(r.revision, e)));
        if (r.kind === "canceled") seen.push(`canceled: ${r.reason}`);
      }
    })();
  }
  const endMs = cluster.nowMs + 6_000;
  let stopped = false;
  const writer = async (name: string) => {
    const c = coord.client(name, { timeoutMs: 2_000 });
    let lease = 0;
    for (let i = 0; !stopped; i++) {
      const key = `/k${rng.int(0, 4)}`;
      const roll = rng.next();
      try {
        if (roll < 0.5) {
          await c.command({ type: "put", key, value: utf8(`${name}-${i}`), prevKv: false });
        } else if (roll < 0.65) {
          await c.command({ type: "delete", range: { prefix: "/k" }, prevKv: false });
        } else if (roll < 0.8 || lease === 0) {
          lease = (await c.leaseGrant(10_000)).id;
          await c.command({
            type: "put",
            key: `/e/${name}`,
            value: utf8(`${i}`),
            prevKv: false,
            lease,
          });
        } else {
          await c.leaseRevoke(lease);
          lease = 0;
        }
      } catch {
        // unknown or failed: the watchers must still agree with what committed
      }
      await c.sleep(rng.int(5, 60));
    }
  };
  const writers = ["w1", "w2", "w3"].map(writer);
  // Faults: crash the leader, isolate it, or split the cluster; repair each after a while.
  const faults = async () => {
    const c = coord.client("faults");
    while (cluster.nowMs < endMs) {
      await c.sleep(rng.int(300, 900));
      const leader = cluster.leader();
      const roll = rng.next();
      if (leader !== undefined && roll < 0.4) {
        cluster.crash(leader);
        await c.sleep(rng.int(200, 900));
        cluster.restart(leader);
      } else if (leader !== undefined && roll < 0.7) {
        cluster.isolate(leader);
        await c.sleep(rng.int(200, 900));
        cluster.heal();
      } else {
        const ids = [...cluster.ids];
        cluster.partition(ids.filter(() => rng.chance(0.5)));
        await c.sleep(rng.int(200, 900));
        cluster.heal();
      }
    }
  };
  await coord.run(faults(), { timeoutMs: 10_000 });
  stopped = true;
  await coord.run(Promise.all(writers), { timeoutMs: 10_000 });
  const leader = cluster.waitForLeader();
  const finalRevision = () => cluster.node(leader).store.revision;
  const expected = () =>
    [...committed.entries()].sort((a, b) => a[0] - b[0]).flatMap(([, lines]) => lines);
  await coord.drive(
    () => streams.every((s) => s.length >= expected().length) && finalRevision() > 1,
    { timeoutMs: 5_000 },
  );
  const want = expected();
  assert.ok(committed.size === finalRevision() - 1, "every revision was seen applied");
  for (const [i, s] of streams.entries()) {
    assert.deepEqual(s, want, `seed ${seed}: watcher ${i} differs from the committed events`);
  }
  return { events: want.length };
}

Deno.test("watchers see exactly the committed events through leader crashes and partitions", async (t) => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    await t.step(`seed ${seed}`, async () => {
      const { events } = await watchersSeeCommittedEvents(seed);
      assert.ok(events > 50, `seed ${seed}: enough events to mean something (${events})`);
    });
  }
});

Deno.test("a leader cut off in a minority cannot expire a lease", async () => {
  // CheckQuorum off: the cut-off leader keeps believing it leads, the worst case.
  const cluster = new Cluster({ nodes: 5, seed: 11, config: { checkQuorum: false } });
  const coord = new SimCoordination(cluster);
  const old = cluster.waitForLeader();
  const holder = coord.client("holder");
  holder.unreachable.add(old); // the holder is on the majority's side
  const session = await coord.run(Session.create(holder, { ttlMs: 500, keepAliveMs: 100 }));
  await coord.run(holder.command({
    type: "put",
    key: "/members/holder",
    value: utf8("up"),
    prevKv: false,
    lease: session.lease,
  }));
  await coord.advance(50);
  cluster.isolate(old);
  // The old leader hears no keep-alive: its deadline passes and it proposes the expiry...
  await coord.drive(() => coord.leases(old).expiriesProposed > 0, { timeoutMs: 2_000 });
  assert.equal(cluster.node(old).raft.role, "Leader", "it still believes it leads");
  await coord.advance(1_000);
  // ...which never commits: no node deletes the key, and the holder keeps its lease.
  for (const n of cluster.nodes()) {
    assert.equal(n.store.getString("/members/holder"), "up", `key gone on ${n.id}`);
  }
  assert.equal(session.state, "alive");
  cluster.heal();
  await coord.advance(1_000);
  const now = cluster.leader()!;
  assert.notEqual(now, old, "the majority's leader leads after healing");
  for (const n of cluster.nodes()) {
    assert.equal(n.store.getString("/members/holder"), "up", `key gone on ${n.id} after heal`);
  }
  assert.equal(session.state, "alive");
});

Deno.test("a lease survives failovers while its holder keeps it alive, and expires after", async () => {
  const cluster = new Cluster({ nodes: 3, seed: 5 });
  const deletes: number[] = [];
  cluster.onApplied((_n, _e, result) => {
    const r = result as ApplyResult | undefined;
    if (r?.status === "applied" && r.events.some((e) => e.type === "DELETE")) {
      deletes.push(r.revision);
    }
  });
  const coord = new SimCoordination(cluster);
  cluster.waitForLeader();
  const holder = coord.client("holder");
  const session = await coord.run(Session.create(holder, { ttlMs: 600 }));
  await coord.run(holder.command({
    type: "put",
    key: "/eph",
    value: utf8("x"),
    prevKv: false,
    lease: session.lease,
  }));
  for (let i = 0; i < 4; i++) {
    const leader = cluster.waitForLeader();
    cluster.crash(leader);
    await coord.advance(500);
    cluster.restart(leader);
    await coord.advance(300);
  }
  assert.deepEqual(deletes, [], "no expiry through four leader crashes");
  assert.equal(session.state, "alive");
  session.abandon(); // the holder stops, as a crashed client would
  const stoppedAt = cluster.nowMs;
  await coord.drive(() => deletes.length > 0, { timeoutMs: 5_000 });
  const tookMs = cluster.nowMs - stoppedAt;
  assert.ok(tookMs >= 600 - 200 && tookMs <= 600 + 500, `expired ${tookMs} ms after the stop`);
  const leader = cluster.waitForLeader();
  assert.equal(cluster.node(leader).store.get("/eph"), undefined);
});

interface Acquisition {
  readonly client: string;
  readonly token: number;
  readonly atMs: number;
}

async function lockUnderFaults(seed: number) {
  const rng = new SeededRng(seed);
  const cluster = new Cluster({ nodes: [3, 5][seed % 2], seed });
  const coord = new SimCoordination(cluster);
  cluster.waitForLeader();
  const acquisitions: Acquisition[] = [];
  let accepted = 0;
  let refused = 0;
  let maxAccepted = 0;
  const endMs = cluster.nowMs + 5_000;
  const worker = async (name: string) => {
    const c = coord.client(name, { timeoutMs: 1_500 });
    while (cluster.nowMs < endMs) {
      let session: Session;
      try {
        session = await Session.create(c, { ttlMs: 400 });
      } catch {
        await c.sleep(50);
        continue;
      }
      try {
        while (cluster.nowMs < endMs && session.state === "alive") {
          const held = await lock(session, "/locks/resource");
          assert.ok(
            held.heldAtRevision >= held.fencingToken,
            `seed ${seed}: held at revision ${held.heldAtRevision}, before its key was created`,
          );
          acquisitions.push({ client: name, token: held.fencingToken, atMs: cluster.nowMs });
          if (rng.chance(0.15)) {
            // A paused holder: it stops (no keep-alives) past its TTL, then writes anyway.
            session.abandon();
            await c.sleep(rng.int(500, 900));
          } else {
            await c.sleep(rng.int(5, 40));
          }
          const ok = await fencedPut(c, "/resource", name, held.fencingToken);
          if (ok) {
            accepted++;
            assert.ok(
              held.fencingToken >= maxAccepted,
              `seed ${seed}: token ${held.fencingToken} accepted after ${maxAccepted}`,
            );
            maxAccepted = held.fencingToken;
          } else refused++;
          if (session.state === "alive") await held.unlock();
        }
      } catch (e) {
        if (!(e instanceof LockLostError) && !/unknown|failed/.test((e as Error).message)) {
          throw e;
        }
      }
      session.abandon();
    }
  };
  const faults = async () => {
    const c = coord.client("faults");
    while (cluster.nowMs < endMs) {
      await c.sleep(rng.int(300, 1_000));
      const ids = [...cluster.ids];
      const victim: NodeId = cluster.leader() ?? ids[rng.int(0, ids.length)];
      if (rng.chance(0.5)) {
        cluster.crash(victim);
        await c.sleep(rng.int(100, 700));
        cluster.restart(victim);
      } else {
        cluster.isolate(victim);
        await c.sleep(rng.int(100, 700));
        cluster.heal();
      }
    }
  };
  await coord.run(Promise.all([faults(), ...["a", "b", "c", "d"].map(worker)]), {
    timeoutMs: 20_000,
  });
  return { acquisitions, accepted, refused };
}

Deno.test("lock: fencing tokens rise with every holder under faults (randomized seeds)", async () => {
  let total = 0;
  let refusedTotal = 0;
  for (let seed = 1; seed <= 24; seed++) {
    const { acquisitions, accepted, refused } = await lockUnderFaults(seed);
    assert.ok(acquisitions.length >= 5, `seed ${seed}: only ${acquisitions.length} acquisitions`);
    for (let i = 1; i < acquisitions.length; i++) {
      const [prev, next] = [acquisitions[i - 1], acquisitions[i]];
      assert.ok(
        next.token > prev.token,
        `seed ${seed}: ${next.client} got token ${next.token} at ${next.atMs} ms after ${prev.client}'s ${prev.token}`,
      );
    }
    assert.ok(accepted > 0);
    total += acquisitions.length;
    refusedTotal += refused;
  }
  assert.ok(total > 200, `acquisitions over all seeds: ${total}`);
  assert.ok(refusedTotal > 0, "some paused holder's late write was refused by its fencing token");
});

Deno.test("election: campaign, observe, resign, and a crashed leader's successor", async () => {
  const cluster = new Cluster({ nodes: 3, seed: 3 });
  const coord = new SimCoordination(cluster);
  cluster.waitForLeader();
  const a = coord.client("a");
  const b = coord.client("b");
  const c = coord.client("c");
  const sa = await coord.run(Session.create(a, { ttlMs: 500 }));
  const sb = await coord.run(Session.create(b, { ttlMs: 500 }));
  const sc = await coord.run(Session.create(c, { ttlMs: 500 }));
  const seen: string[] = [];
  const watcher = observe(coord.client("observer"), "/election/db");
  (async () => {
    for await (const l of watcher) {
      seen.push(l === undefined ? "none" : `${l.value}@${l.fencingToken}`);
    }
  })();
  const la = await coord.run(campaign(sa, "/election/db", "a:5432"));
  let lb: Awaited<ReturnType<typeof campaign>> | undefined;
  campaign(sb, "/election/db", "b:5432").then((h) => lb = h);
  let lc: Awaited<ReturnType<typeof campaign>> | undefined;
  campaign(sc, "/election/db", "c:5432").then((h) => lc = h);
  await coord.advance(300);
  assert.equal(lb, undefined, "b waits while a leads");
  await coord.run(la.resign());
  await coord.drive(() => lb !== undefined, { timeoutMs: 2_000 });
  assert.ok(lb!.fencingToken > la.fencingToken);
  assert.equal(lc, undefined, "c waits behind b");
  sb.abandon(); // b's process dies while leading
  await coord.drive(() => lc !== undefined, { timeoutMs: 3_000 });
  assert.ok(lc!.fencingToken > lb!.fencingToken);
  await coord.advance(100);
  // The observer may start before or after a's first campaign applied.
  assert.deepEqual(seen.filter((l) => l !== "none"), [
    `a:5432@${la.fencingToken}`,
    `b:5432@${lb!.fencingToken}`,
    `c:5432@${lc!.fencingToken}`,
  ]);
});
