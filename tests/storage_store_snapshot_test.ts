// The store's snapshot bytes: a frozen view that later writes leave alone, the sliced encoding
// equal to the one-shot one (also with writes between slices), format 2 restoring the store
// exactly with its watch history, format 1 (JSON) still loading, and damaged bytes refused.
import assert from "node:assert/strict";
import { CompactedError, MetadataStore } from "../src/kv/store.ts";
import type { KvEvent } from "../src/kv/types.ts";
import { encodeCommand, encodePut } from "../src/kv/command.ts";
import {
  decodeStoreSnapshot,
  encodeStoreSnapshot,
  encodeStoreSnapshotChunks,
  joinChunks,
} from "../src/storage/store_snapshot.ts";
import { TestRng } from "./kv_helpers.ts";

const utf8 = (s: string) => new TextEncoder().encode(s);

/**
 * Asserts `actual` and `expected` hold the same bytes, reporting the first difference (a deep
 * equality failure on large arrays would print, and first compute, a huge diff).
 */
function assertSameBytes(actual: Uint8Array, expected: Uint8Array, message = ""): void {
  const n = Math.min(actual.length, expected.length);
  let i = 0;
  while (i < n && actual[i] === expected[i]) i++;
  if (i === n && actual.length === expected.length) return;
  assert.fail(
    `${message} bytes differ at offset ${i} (lengths ${actual.length} and ${expected.length})`,
  );
}

/** Applies `command` at the next index. */
function apply(store: MetadataStore, command: Uint8Array): void {
  store.apply(command, store.appliedIndex + 1);
}

/**
 * A store with a bit of everything a snapshot holds: keys (ASCII and not), a value larger than a
 * chunk, leases with keys, sessions with remembered outcomes, deletes and watch history.
 */
function busyStore(seed: number, writes = 3000): MetadataStore {
  const rng = new TestRng(seed);
  const store = new MetadataStore({ historyRevisionsMax: 500 });
  apply(store, encodeCommand({ type: "leaseGrant", id: 7, ttlMs: 5000 }));
  apply(store, encodeCommand({ type: "leaseGrant", id: 0, ttlMs: 9000 }));
  const keys = ["/a/é", "/a/\u{1F600}", "/a/\uFFFD", "/big"];
  for (let i = 0; i < writes; i++) {
    const key = rng.chance(0.05) ? rng.pick(keys) : `/k/${rng.int(800)}`;
    const value = key === "/big" ? new Uint8Array(100_000).fill(i & 255) : utf8(`v${i}`);
    const kind = rng.int(10);
    if (kind === 0) {
      apply(store, encodeCommand({ type: "delete", range: { key }, prevKv: true }));
    } else if (kind === 1) {
      apply(
        store,
        encodeCommand({
          type: "session",
          clientId: `c${rng.int(20)}`,
          seq: i + 1,
          command: { type: "put", key, value, prevKv: true },
        }),
      );
    } else {
      const lease = rng.chance(0.05) ? 7 : 0;
      apply(store, encodeCommand({ type: "put", key, value, prevKv: false, lease }));
    }
  }
  return store;
}

function history(store: MetadataStore): readonly { revision: number; events: KvEvent[] }[] {
  return store.history(store.oldestRevision).map((r) => ({ ...r, events: [...r.events] }));
}

Deno.test("a frozen store is unaffected by later writes", () => {
  const store = busyStore(1);
  const before = encodeStoreSnapshot(store);
  const kvsBefore = JSON.stringify(store.snapshot().kvs);
  const frozen = store.freeze();
  const rng = new TestRng(2);
  for (let i = 0; i < 2000; i++) {
    const key = `/k/${rng.int(900)}`;
    if (rng.chance(0.3)) {
      apply(store, encodeCommand({ type: "delete", range: { key }, prevKv: false }));
    } else apply(store, encodePut(key, `later ${i}`));
  }
  apply(store, encodeCommand({ type: "leaseRevoke", id: 7, expired: false }));
  apply(store, encodeCommand({ type: "compact", revision: store.revision }));
  assert.notEqual(JSON.stringify(store.snapshot().kvs), kvsBefore);
  assertSameBytes(joinChunks([...encodeStoreSnapshotChunks(frozen)]), before);
  frozen.release();
  // The store itself still works after the view is gone.
  apply(store, encodePut("/after", "x"));
  assert.equal(store.getString("/after"), "x");
});

Deno.test("sliced encoding equals the one-shot encoding, also with writes between slices", () => {
  for (const [seed, chunkBytes] of [[3, 64], [4, 1000], [5, 64 * 1024]]) {
    const store = busyStore(seed);
    const oneShot = encodeStoreSnapshot(store);
    const frozen = store.freeze();
    const chunks: Uint8Array[] = [];
    let i = 0;
    for (const chunk of encodeStoreSnapshotChunks(frozen, { chunkBytes })) {
      chunks.push(chunk);
      // The store goes on between slices: puts, range deletes, a lease revoke, a compaction.
      apply(store, encodePut(`/k/${i % 900}`, `between ${i}`));
      if (i % 7 === 0) {
        apply(
          store,
          encodeCommand({ type: "delete", range: { prefix: `/k/${i % 50}` }, prevKv: true }),
        );
      }
      if (i === 3) apply(store, encodeCommand({ type: "leaseRevoke", id: 7, expired: true }));
      if (i === 5) apply(store, encodeCommand({ type: "compact", revision: store.revision - 5 }));
      i++;
    }
    frozen.release();
    if (chunkBytes === 64) assert.ok(chunks.length > 100, `${chunks.length} chunks`);
    assert.ok(i > 1, `${i} slices`);
    assertSameBytes(joinChunks(chunks), oneShot, `seed ${seed}, chunks of ${chunkBytes}:`);
    assert.throws(() => assertSameBytes(encodeStoreSnapshot(store), oneShot), /differ/);
  }
  // Every chunk size gives the same bytes for one unchanging state.
  const store = busyStore(6);
  const oneShot = encodeStoreSnapshot(store);
  for (const chunkBytes of [64, 333, 4096, 1 << 20]) {
    const frozen = store.freeze();
    assertSameBytes(joinChunks([...encodeStoreSnapshotChunks(frozen, { chunkBytes })]), oneShot);
    frozen.release();
  }
});

Deno.test("format 2 restores the store exactly, watch history included", () => {
  const store = busyStore(7);
  const bytes = encodeStoreSnapshot(store);
  assert.deepEqual([...bytes.subarray(0, 4)], [0x52, 0x4d, 0x53, 0x53]);
  const restored = decodeStoreSnapshot(bytes, { historyRevisionsMax: 500 });
  assert.deepEqual(restored.snapshot(), store.snapshot());
  assertSameBytes(encodeStoreSnapshot(restored), bytes);
  assert.deepEqual(restored.leases(), store.leases());
  assert.equal(restored.oldestRevision, store.oldestRevision);
  assert.ok(store.oldestRevision < store.revision - 400, "the history holds revisions");
  assert.deepEqual(history(restored), history(store));
  // Both go on alike: the same command gives the same result and the same next snapshot.
  for (const s of [store, restored]) {
    apply(s, encodeCommand({ type: "leaseRevoke", id: 7, expired: false }));
    apply(s, encodePut("/k/1", "next"));
  }
  assertSameBytes(encodeStoreSnapshot(restored), encodeStoreSnapshot(store));
});

Deno.test("a store restored from a snapshot serves watch history from before it", () => {
  const store = new MetadataStore({ historyRevisionsMax: 100 });
  for (let i = 0; i < 250; i++) apply(store, encodePut(`/w/${i % 10}`, `v${i}`));
  assert.equal(store.revision, 251);
  const restored = decodeStoreSnapshot(encodeStoreSnapshot(store), { historyRevisionsMax: 100 });
  // A watch from 200, before the snapshot's revision 251, gets the same 52 revisions.
  const watched = restored.history(200);
  assert.equal(watched.length, 52);
  assert.deepEqual(watched, store.history(200));
  assert.equal(watched[0].events[0].kv.key, "/w/8");
  assert.equal(new TextDecoder().decode(watched[0].events[0].prevKv?.value), "v188");
  // Older than the retained history: compacted, on both alike.
  assert.throws(() => restored.history(151), CompactedError);
  assert.equal(restored.oldestRevision, store.oldestRevision);
  // A node configured to keep less keeps the newest revisions only.
  const smaller = decodeStoreSnapshot(encodeStoreSnapshot(store), { historyRevisionsMax: 10 });
  assert.equal(smaller.oldestRevision, 242);
  assert.deepEqual(smaller.history(242), store.history(242));
  assert.throws(() => smaller.history(241), CompactedError);
  // An explicit compaction is kept too.
  apply(store, encodeCommand({ type: "compact", revision: 230 }));
  const compacted = decodeStoreSnapshot(encodeStoreSnapshot(store), { historyRevisionsMax: 100 });
  assert.equal(compacted.oldestRevision, 231);
  assert.throws(() => compacted.history(230), CompactedError);
});

/** Format 1 bytes as raftmeta wrote them before format 2 (JSON; no history). */
const FORMAT_1 = JSON.stringify({
  format: 1,
  appliedIndex: 9,
  revision: 6,
  kvs: [
    ["/a", "MQ==", 2, 5, 2],
    ["/b/é", "dHdv", 3, 3, 1, 4],
  ],
  leases: [[4, 3000]],
  leaseIdLast: 4,
  sessions: [{
    clientId: "c1",
    lastSeq: 2,
    lastIndex: 8,
    outcome: { status: "applied", response: { type: "put", revision: 5 } },
  }],
});

Deno.test("format 1 snapshots (JSON, before watch history) still load", () => {
  const store = decodeStoreSnapshot(utf8(FORMAT_1));
  assert.equal(store.appliedIndex, 9);
  assert.equal(store.revision, 6);
  assert.equal(store.getString("/a"), "1");
  assert.deepEqual(store.get("/b/é"), {
    key: "/b/é",
    value: utf8("two"),
    createRevision: 3,
    modRevision: 3,
    version: 1,
    lease: 4,
  });
  assert.deepEqual(store.lease(4), { id: 4, ttlMs: 3000, keys: ["/b/é"] });
  assert.equal(store.session("c1")?.lastSeq, 2);
  // No history in format 1: it starts after the snapshot's revision.
  assert.equal(store.oldestRevision, 7);
  assert.throws(() => store.history(6), CompactedError);
  // Re-encoded, it is format 2 and restores to the same state.
  const again = decodeStoreSnapshot(encodeStoreSnapshot(store));
  assert.deepEqual(again.snapshot(), store.snapshot());
  // The JSON the store still offers (snapshot()) loads through the same path.
  const json = utf8(JSON.stringify(busyStore(8).snapshot()));
  assert.deepEqual(decodeStoreSnapshot(json).snapshot(), busyStore(8).snapshot());
});

Deno.test("damaged binary snapshot bytes are refused with a clear error", () => {
  const bytes = encodeStoreSnapshot(busyStore(9, 300));
  for (const cut of [5, 20, 100, bytes.length >> 1, bytes.length - 1]) {
    assert.throws(() => decodeStoreSnapshot(bytes.subarray(0, cut)), /^Error: Snapshot is invalid/);
  }
  const longer = new Uint8Array(bytes.length + 1);
  longer.set(bytes);
  longer[bytes.length] = 0x41;
  assert.throws(() => decodeStoreSnapshot(longer), /Snapshot is invalid/);
  const future = bytes.slice();
  future[4] = 8; // format 8 (7 is the one written now)
  assert.throws(() => decodeStoreSnapshot(future), /Snapshot is invalid: unknown format 8/);
  const badKey = bytes.slice();
  badKey[bytes.length - 1] = 0xff; // the last key's last byte: not UTF-8
  assert.throws(() => decodeStoreSnapshot(badKey), /Snapshot is invalid/);
  assert.throws(() => decodeStoreSnapshot(utf8("not a snapshot")), /Snapshot is invalid/);
});

Deno.test("a raised NOSPACE alarm survives a snapshot (format 3) and still refuses puts", () => {
  const store = new MetadataStore();
  store.apply(encodePut("/a", "1"), 1);
  store.apply(
    encodeCommand({ type: "alarm", action: "activate", memberId: "n1", alarm: "NOSPACE" }),
    2,
  );
  const restored = decodeStoreSnapshot(encodeStoreSnapshot(store));
  assert.deepEqual(restored.alarms, [{ memberId: "n1", alarm: "NOSPACE" }]);
  const r = restored.apply(encodePut("/b", "2"), 3);
  assert.equal(r.status, "rejected");
  assert.equal(restored.backendBytes, store.backendBytes);
});
