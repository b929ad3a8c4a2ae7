// The server's snapshotter: a snapshot encoded in slices across event-loop turns while the node
// goes on applying entries, written off the loop, then adopted; abandoned cleanly when the host
// closes or a newer snapshot lands meanwhile; and a real server that snapshots under writes and
// restarts from it.
import assert from "node:assert/strict";
import { type RunningNode, startNode } from "./storage_helpers.ts";
import { encodePut } from "../mod.ts";
import { drainReady } from "../src/raft/host.ts";
import { listSnapshots } from "../src/storage/snapshot_file.ts";
import { encodeStoreSnapshot } from "../src/storage/store_snapshot.ts";
import {
  restAfterSlice,
  type SnapshotHost,
  Snapshotter,
  staggeredSnapshotEntries,
} from "../src/net/snapshotter.ts";
import { RaftServer } from "../src/net/server.ts";
import { handleHttp } from "../src/net/http.ts";
import { connect } from "../src/net/client.ts";
import { freePort } from "./net_helpers.ts";

function drain(r: RunningNode): void {
  drainReady(r.node, { storage: r.storage, applier: r.applier, send: () => {} });
}

function put(r: RunningNode, key: string, value: string): void {
  r.node.propose(encodePut(key, value));
  drain(r);
}

/** A leader with `n` puts applied, on a fresh directory under `root`. */
function leader(root: string, n: number): RunningNode {
  const r = startNode(`${root}/n1`);
  r.node.tick(r.node.nextDeadlineMs());
  drain(r);
  assert.equal(r.node.role, "Leader");
  for (let i = 0; i < n; i++) put(r, `/k/${i % 500}`, `value ${i} `.repeat(20));
  return r;
}

function hostOf(r: RunningNode, closed = () => false, events: string[] = []): SnapshotHost {
  return {
    node: r.node,
    storage: r.storage,
    store: r.store,
    everyEntries: 1,
    closed,
    log: (event) => events.push(event),
    fail: (e) => {
      throw e;
    },
  };
}

async function withRoot(f: (root: string) => Promise<void>): Promise<void> {
  const root = Deno.makeTempDirSync({ prefix: "raftmeta_snapshotter_" });
  try {
    await f(root);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
}

Deno.test("a snapshot in slices: the node applies entries between them; adopted, then restored", async () => {
  await withRoot(async (root) => {
    const r = leader(root, 1500);
    const index = r.store.appliedIndex;
    const expected = encodeStoreSnapshot(r.store);
    let turns = 0;
    const events: string[] = [];
    // A slice of at most a nanosecond: every chunk of 1 KiB ends a slice, and each turn between
    // slices applies a write, as the server's loop would.
    const snapshotter = new Snapshotter({
      sliceMs: 1e-6,
      chunkBytes: 1024,
      yieldTurn: async () => {
        turns++;
        put(r, `/k/${turns % 600}`, `during ${turns}`);
        await new Promise((resolve) => setTimeout(resolve, 0));
      },
    });
    const outcome = await snapshotter.start(hostOf(r, () => false, events));
    assert.equal(outcome.status, "taken");
    assert.ok(outcome.status === "taken" && outcome.slices > 100, `${turns} turns`);
    assert.equal(outcome.index, index);
    assert.ok(r.store.appliedIndex > index + 100, "entries were applied during the snapshot");
    assert.deepEqual(events, ["snapshot-taken"]);
    // The snapshot is the state at its start, not later; the node and storage adopted it.
    assert.deepEqual(r.node.snapshot?.data, expected);
    assert.equal(r.node.log.snapshotIndex, index);
    assert.equal(r.storage.snapshotIndex, index);
    assert.equal(snapshotter.inFlight, undefined);
    const kvs = JSON.stringify(r.store.snapshot().kvs);
    r.storage.close();

    // A restart reads the file (its CRC checked), restores the store and replays the rest.
    const b = startNode(`${root}/n1`);
    assert.equal(b.node.log.snapshotIndex, index);
    assert.deepEqual(encodeStoreSnapshot(b.store), expected);
    b.node.tick(b.node.nextDeadlineMs());
    drain(b);
    assert.equal(b.node.role, "Leader");
    assert.equal(JSON.stringify(b.store.snapshot().kvs), kvs);
    b.storage.close();
  });
});

Deno.test("each pause between slices is told the slice it follows; the server rests as long again", async () => {
  assert.equal(restAfterSlice(0), 1);
  assert.equal(restAfterSlice(3.2), 4);
  assert.equal(restAfterSlice(12), 12);
  await withRoot(async (root) => {
    const r = leader(root, 400);
    // A clock that moves 1 ms each time it is read: slices of at least 2 ms end after one chunk.
    let clock = 0;
    const told: number[] = [];
    const snapshotter = new Snapshotter({
      sliceMs: 2,
      chunkBytes: 1024,
      nowMs: () => clock++,
      yieldTurn: (sliceMs) => {
        told.push(sliceMs);
        return Promise.resolve();
      },
    });
    const outcome = await snapshotter.start(hostOf(r));
    assert.ok(outcome.status === "taken");
    assert.ok(told.length > 3, `${told.length} pauses`);
    // Each pause got the slice's own length, which the outcome's longest slice bounds.
    for (const ms of told) assert.ok(ms >= 2 && ms <= outcome.sliceMsMax, `slice ${ms} ms`);
    r.storage.close();
  });
});

Deno.test("a snapshot is abandoned when the host closes meanwhile", async () => {
  await withRoot(async (root) => {
    const r = leader(root, 300);
    let closed = false;
    let turns = 0;
    const events: string[] = [];
    const snapshotter = new Snapshotter({
      sliceMs: 1e-6,
      chunkBytes: 1024,
      yieldTurn: () => {
        if (++turns === 3) closed = true;
        return Promise.resolve();
      },
    });
    const outcome = await snapshotter.start(hostOf(r, () => closed, events));
    assert.deepEqual(outcome, {
      status: "abandoned",
      index: r.store.appliedIndex,
      reason: "closed",
    });
    assert.deepEqual(events, ["snapshot-abandoned"]);
    assert.equal(r.node.log.snapshotIndex, 0);
    assert.equal(r.storage.snapshotIndex, 0);
    assert.deepEqual(listSnapshots(fsOf(r), r.storage.dir), []);
    // The storage works on, and a later snapshot is taken.
    const again = await new Snapshotter().start(hostOf(r));
    assert.equal(again.status, "taken");
    r.storage.close();
  });
});

Deno.test("a snapshot superseded by a newer one (installed meanwhile) is abandoned, its file removed", async () => {
  await withRoot(async (root) => {
    for (const when of ["between slices", "during the file write"] as const) {
      const r = leader(`${root}/${when.replaceAll(" ", "_")}`, 300);
      const index = r.store.appliedIndex;
      // The newer snapshot, as a leader's InstallSnapshot or a synchronous host would save it.
      const newer = () => {
        put(r, "/newer", "x");
        const snap = {
          meta: { index: r.store.appliedIndex, term: r.node.term, voters: ["n1"] },
          data: encodeStoreSnapshot(r.store),
        };
        r.storage.saveSnapshot(snap);
        r.node.compact(snap);
        return snap.meta.index;
      };
      let newerIndex = 0;
      const snapshotter = new Snapshotter({
        sliceMs: when === "between slices" ? 1e-6 : 1e6,
        chunkBytes: 1024,
        yieldTurn: () => {
          if (newerIndex === 0) newerIndex = newer();
          return Promise.resolve();
        },
      });
      const running = snapshotter.start(hostOf(r));
      // With slices of 1,000 s the encoding ends in the first turn: the first await is the write.
      if (when === "during the file write") newerIndex = newer();
      const outcome = await running;
      assert.deepEqual(outcome, { status: "abandoned", index, reason: "superseded" }, when);
      assert.equal(r.storage.snapshotIndex, newerIndex);
      assert.equal(r.node.log.snapshotIndex, newerIndex);
      const files = listSnapshots(fsOf(r), r.storage.dir).map((s) => s.index);
      assert.deepEqual(files, [newerIndex], when);
      r.storage.close();
    }
  });
});

Deno.test("one snapshot in flight at a time", async () => {
  await withRoot(async (root) => {
    const r = leader(root, 50);
    const snapshotter = new Snapshotter();
    const first = snapshotter.maybeStart(hostOf(r));
    assert.ok(first !== undefined);
    assert.equal(snapshotter.maybeStart(hostOf(r)), undefined);
    assert.throws(() => snapshotter.start(hostOf(r)), /already in flight/);
    assert.equal((await first).status, "taken");
    // Nothing applied since: not due.
    assert.equal(snapshotter.maybeStart({ ...hostOf(r), everyEntries: 10 }), undefined);
    r.storage.close();
  });
});

function fsOf(_r: RunningNode) {
  return {
    list: (dir: string) => [...Deno.readDirSync(dir)].filter((e) => e.isFile).map((e) => e.name),
  } as Parameters<typeof listSnapshots>[0];
}

Deno.test("a server under writes snapshots asynchronously; a restart from it has the same store", async () => {
  await withRoot(async (root) => {
    const lines: string[] = [];
    const options = {
      nodeId: "n1",
      dataDir: `${root}/n1`,
      clientListen: { hostname: "127.0.0.1", port: freePort() },
      snapshotEntries: 400,
      log: (line: string) => lines.push(line),
    };
    const server = await RaftServer.start(options, handleHttp);
    const client = connect(server.clientUrl);
    try {
      assert.ok(await server.waitForLeader(5000));
      // 2,000 puts, 40 at a time, values of 1 KiB: snapshots of up to about 2 MiB.
      for (let i = 0; i < 2000; i += 40) {
        await Promise.all(
          Array.from(
            { length: 40 },
            (_, j) => client.put(`/s/${(i + j) % 700}`, `${i + j}:`.padEnd(1024, "x")),
          ),
        );
      }
      while (server.snapshotInFlight !== undefined) {
        await server.snapshotInFlight;
      }
    } catch (e) {
      await server.close();
      throw e;
    }
    const taken = lines.map((l) => JSON.parse(l)).filter((e) => e.event === "snapshot-taken");
    assert.ok(taken.length >= 3, `${taken.length} snapshots`);
    // Each threshold is drawn between 200 and 400 entries (staggered).
    for (let k = 1; k < taken.length; k++) {
      const gap = taken[k].index - taken[k - 1].index;
      assert.ok(gap >= 200, `snapshots ${taken[k - 1].index} and ${taken[k].index}: gap ${gap}`);
    }
    for (const e of taken) {
      assert.ok(e.loopMs <= e.ms + 1 && e.slices >= 2 && e.bytes > 0, JSON.stringify(e));
    }
    assert.equal(server.node.log.snapshotIndex, taken.at(-1).index);
    const kvs = JSON.stringify(server.store.snapshot().kvs);
    await server.close();

    const againLines: string[] = [];
    const again = await RaftServer.start(
      { ...options, log: (l) => againLines.push(l) },
      handleHttp,
    );
    try {
      assert.ok(await again.waitForLeader(5000));
      // It starts from the newest snapshot (and may take another soon: its threshold is redrawn).
      const started = againLines.map((l) => JSON.parse(l)).find((e) => e.event === "started");
      assert.equal(started?.snapshotIndex, taken.at(-1).index, JSON.stringify(started));
      assert.equal(JSON.stringify(again.store.snapshot().kvs), kvs);
      assert.equal(again.store.size, 700);
    } finally {
      await again.close();
    }
  });
});

Deno.test("snapshot thresholds are staggered between half and all of snapshotEntries", () => {
  assert.equal(staggeredSnapshotEntries(100_000, () => 0), 100_000);
  assert.equal(staggeredSnapshotEntries(100_000, () => 0.5), 75_000);
  assert.equal(staggeredSnapshotEntries(100_000, () => 0.999_999), 50_001);
  assert.equal(staggeredSnapshotEntries(1, () => 0.9), 1);
  assert.equal(staggeredSnapshotEntries(3, () => 0.9), 3);
  assert.throws(() => staggeredSnapshotEntries(10, () => 1), /random\(\) must lie in \[0, 1\): 1/);
});
