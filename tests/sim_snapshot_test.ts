// Snapshots and the simulated disk in the simulator: a follower that was down while the leader
// compacted catches up by InstallSnapshot; crashes at every step of the persist path lose nothing
// acknowledged; and a storage that forgets to fsync is caught.
import assert from "node:assert/strict";
import { Cluster, type ClusterOptions, type NodeId, SafetyViolation } from "../mod.ts";
import { storeStrings } from "../src/observe/describe.ts";
import type { SimFsOp } from "../src/storage/fs.ts";

const keys = (c: Cluster, id: NodeId) => JSON.stringify(storeStrings(c.node(id).store));

function converge(c: Cluster): NodeId {
  const leader = c.waitForLeader();
  c.runUntil(
    () =>
      c.nodes().every((n) =>
        n.state === "up" && n.applier.lastApplied === c.node(leader).raft.commitIndex &&
        n.raft.log.lastIndex === c.node(leader).raft.log.lastIndex
      ),
    { timeoutMs: 10_000, description: "every node to catch up" },
  );
  return c.leader()!;
}

for (const storage of ["memory", "simdisk"] as const) {
  Deno.test(`${storage}: a follower down while the leader compacts catches up by InstallSnapshot`, () => {
    const c = new Cluster({
      nodes: 3,
      seed: 11,
      storage,
      snapshotEntries: 20,
      config: { snapshotTrailingEntries: 5, snapshotChunkBytesMax: 256 },
    });
    const leader = c.waitForLeader();
    const follower = c.ids.find((id) => id !== leader)!;
    for (let i = 0; i < 10; i++) assert.equal(c.complete(c.put(`/k${i}`, `v${i}`)).status, "ok");
    c.crash(follower);
    for (let i = 0; i < 150; i++) {
      assert.equal(c.complete(c.put(`/k${i % 17}`, `w${i}`)).status, "ok");
    }
    const l = c.node(leader).raft.log;
    assert.ok(l.snapshotIndex >= 140, `leader snapshot at ${l.snapshotIndex}`);
    assert.ok(
      l.firstIndex > c.node(follower).storage.lastIndex + 1,
      "the follower is behind the log",
    );
    const sentBefore = c.stats.sentByType.get("InstallSnapshot") ?? 0;
    c.restart(follower);
    const now = converge(c);
    assert.equal(now, leader);
    const chunks = (c.stats.sentByType.get("InstallSnapshot") ?? 0) - sentBefore;
    assert.ok(chunks >= 2, `sent in ${chunks} chunks of at most 256 bytes`);
    assert.equal(c.snapshotStats.installed, 1);
    assert.equal(keys(c, follower), keys(c, leader));
    assert.equal(c.node(follower).raft.log.snapshotIndex, c.node(leader).raft.log.snapshotIndex);
    // And again after a restart of everyone: stores come back from snapshots plus the log.
    for (const id of c.ids) c.crash(id);
    for (const id of c.ids) c.restart(id);
    c.waitForLeader();
    assert.equal(c.complete(c.put("/after", "restart")).status, "ok");
    const last = converge(c);
    for (const id of c.ids) assert.equal(keys(c, id), keys(c, last));
    assert.equal(c.node(follower).store.getString("/k3"), "w139");
  });
}

/** Writes through the leader until `stop()`; returns the values acknowledged per key. */
function writeUntil(c: Cluster, count: number, tag: string): Map<string, string> {
  const acked = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const key = `/k${i % 5}`;
    const op = c.complete(c.put(key, `${tag}${i}`), { timeoutMs: 2_000 });
    if (op.status === "ok") acked.set(key, `${tag}${i}`);
    else return acked;
  }
  return acked;
}

const STEPS: { name: string; arm: (c: Cluster, id: NodeId, skip: number) => void }[] = [
  { name: "before a write", arm: (c, id, skip) => c.crashAtDiskOp(id, "write", { skip }) },
  {
    name: "after a write, before its sync",
    arm: (c, id, skip) => c.crashAtDiskOp(id, "syncData", { skip }),
  },
  { name: "after the sync, before the send", arm: (c, id) => c.crashAfterPersist(id) },
  {
    name: "at a rename (snapshot file)",
    arm: (c, id, skip) => c.crashAtDiskOp(id, "rename", { skip }),
  },
  { name: "at a directory sync", arm: (c, id, skip) => c.crashAtDiskOp(id, "syncDir", { skip }) },
];

Deno.test("sim disk: a crash at every step of the persist path loses nothing acknowledged", async (t) => {
  for (const step of STEPS) {
    await t.step(step.name, () => {
      let crashes = 0;
      for (let skip = 0; skip < 6; skip++) {
        for (const who of ["leader", "follower"] as const) {
          const c = new Cluster({
            nodes: 3,
            seed: 100 + skip,
            storage: "simdisk",
            snapshotEntries: 7,
          });
          const leader = c.waitForLeader();
          const victim = who === "leader" ? leader : c.ids.find((id) => id !== leader)!;
          const before = writeUntil(c, 10, "a");
          step.arm(c, victim, skip);
          const during = writeUntil(c, 20, "b");
          if (c.node(victim).state === "crashed") crashes++;
          c.disarmCrashes();
          // Restart: the checker compares what the disk gives back with every save that returned.
          if (c.node(victim).state === "crashed") c.restart(victim);
          const after = writeUntil(c, 5, "c");
          const final = converge(c);
          const expected = new Map([...before, ...during, ...after]);
          for (const id of c.ids) {
            for (const [k, v] of expected) {
              const got = c.node(id).store.getString(k);
              // A later unacknowledged write may have overwritten an acknowledged one: only the
              // final acknowledged value per key is certain when nothing followed it.
              if (after.has(k)) assert.equal(got, v, `${id} ${k}`);
              else assert.ok(got !== undefined, `${id} lost ${k}`);
            }
            assert.equal(keys(c, id), keys(c, final));
          }
        }
      }
      assert.ok(crashes >= 6, `the armed step fired ${crashes} times`);
    });
  }
});

Deno.test("sim disk: a storage that forgets to fsync is caught losing acknowledged data", () => {
  let caught: SafetyViolation | undefined;
  for (let seed = 1; seed <= 5 && caught === undefined; seed++) {
    const c = new Cluster({ nodes: 3, seed, storage: "simdisk", tornTail: false });
    const leader = c.waitForLeader();
    const victim = c.ids.find((id) => id !== leader)!;
    c.node(victim).fs!.ignoreSyncData = true;
    writeUntil(c, 5, "v");
    c.crash(victim);
    try {
      c.restart(victim);
    } catch (e) {
      if (!(e instanceof SafetyViolation)) throw e;
      caught = e;
    }
  }
  assert.ok(caught !== undefined, "the lost writes went unnoticed");
  assert.equal(caught.property, "durability");
  assert.match(caught.message, /lost/);
});

Deno.test("sim disk: torn tails at crashes are cut off and the node rejoins", () => {
  const options: ClusterOptions = { nodes: 3, seed: 7, storage: "simdisk", snapshotEntries: 15 };
  const c = new Cluster(options);
  let restarts = 0;
  for (let round = 0; round < 12; round++) {
    const leader = c.waitForLeader();
    const victim = c.ids[round % 3];
    const op: SimFsOp = round % 2 === 0 ? "syncData" : "write";
    if (victim !== leader || round % 4 === 0) c.crashAtDiskOp(victim, op, { skip: round % 3 });
    writeUntil(c, 6, `r${round}-`);
    c.disarmCrashes();
    if (c.node(victim).state === "crashed") {
      c.restart(victim);
      restarts++;
    }
  }
  const final = converge(c);
  for (const id of c.ids) assert.equal(keys(c, id), keys(c, final));
  assert.ok(restarts >= 4, `${restarts} restarts`);
});
