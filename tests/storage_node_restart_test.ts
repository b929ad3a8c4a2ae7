// A RaftNode on real files: run it, stop it, open the data directory again and check that term,
// vote, log and store come back — the store from the newest snapshot plus the log after it.
import assert from "node:assert/strict";
import { type RunningNode, startNode } from "./storage_helpers.ts";
import { encodePut } from "../mod.ts";
import { drainReady, maybeSnapshot } from "../src/raft/host.ts";
import { encodeStoreSnapshot } from "../src/storage/store_snapshot.ts";
import { snapshotName } from "../src/storage/snapshot_file.ts";

function drain(r: RunningNode): void {
  drainReady(r.node, {
    storage: r.storage,
    applier: r.applier,
    send: () => {},
  });
  maybeSnapshot(r.node, {
    storage: r.storage,
    applier: r.applier,
    capture: () => encodeStoreSnapshot(r.store),
  }, { snapshotEntries: 10 });
}

Deno.test("a node restarted from FileStorage on a real directory resumes term, vote, log and store", () => {
  const root = Deno.makeTempDirSync({ prefix: "raftmeta_restart_" });
  try {
    const dir = `${root}/n1`;
    const a = startNode(dir, 1);
    a.node.tick(a.node.nextDeadlineMs()); // a single voter elects itself
    drain(a);
    assert.equal(a.node.role, "Leader");
    for (let i = 0; i < 25; i++) {
      a.node.propose(encodePut(`/k${i % 7}`, `v${i}`));
      drain(a);
    }
    assert.equal(a.node.commitIndex, 26);
    assert.equal(a.node.log.snapshotIndex, 20);
    const { term, votedFor } = a.node;
    const expected = JSON.stringify(a.store.snapshot().kvs);
    a.storage.close(); // as good as kill -9 here: every save returned after its fdatasync

    const b = startNode(dir, 2);
    assert.equal(b.node.term, term);
    assert.equal(b.node.votedFor, votedFor);
    assert.equal(b.node.log.snapshotIndex, 20);
    assert.equal(b.node.log.lastIndex, 26);
    assert.equal(b.node.log.firstIndex, 18); // the trailing window of 3 entries
    assert.ok(b.node.commitIndex >= 20);
    // The store comes back from the snapshot, then the entries after it are applied again.
    b.node.tick(b.node.nextDeadlineMs());
    drain(b);
    assert.equal(b.node.role, "Leader");
    assert.equal(b.node.term, term + 1);
    assert.equal(b.applier.lastApplied, 27); // 26 entries, and the new term's no-op
    assert.equal(JSON.stringify(b.store.snapshot().kvs), expected);
    assert.equal(b.store.getString("/k3"), "v24");
    b.storage.close();
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("a node whose newest snapshot is corrupt restarts from the older one and the WAL, with the same state", () => {
  const root = Deno.makeTempDirSync({ prefix: "raftmeta_restart_" });
  try {
    const dir = `${root}/n1`;
    const a = startNode(dir, 1);
    a.node.tick(a.node.nextDeadlineMs());
    drain(a);
    for (let i = 0; i < 25; i++) {
      a.node.propose(encodePut(`/k${i % 7}`, `v${i}`));
      drain(a);
    }
    assert.equal(a.node.log.snapshotIndex, 20);
    const expected = JSON.stringify(a.store.snapshot().kvs);
    const { term, commitIndex } = a.node;
    a.storage.close();
    // Flip one byte of the newest snapshot's state machine data (snapshot 10 is still there).
    const newest = `${dir}/${snapshotName(20)}`;
    const bytes = Deno.readFileSync(newest);
    bytes[bytes.length - 5] ^= 0xff;
    Deno.writeFileSync(newest, bytes);

    const b = startNode(dir, 2);
    assert.equal(b.storage.snapshotFallback?.used, `${dir}/${snapshotName(10)}`);
    assert.equal(b.node.log.snapshotIndex, 10);
    assert.equal(b.node.term, term);
    assert.equal(b.node.commitIndex, commitIndex);
    // Before any new entry: the store from snapshot 10 plus the entries 11..26 from the WAL.
    drain(b);
    assert.equal(b.applier.lastApplied, 26);
    assert.equal(JSON.stringify(b.store.snapshot().kvs), expected);
    b.storage.close();
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
