// The store keeps every version until a compaction (issue 17): ranges and watches far back,
// compaction freeing memory (also when deferred by an open snapshot), history in the quota's
// count, and snapshots of the older binary formats still loading with their history.

import assert from "node:assert/strict";
import {
  type Command,
  COMPACT_BATCH_VERSIONS,
  COMPACTED_ERROR,
  encodeCommand,
  encodePut,
  MetadataStore,
  text,
  utf8,
} from "../src/kv/mod.ts";
import { WatchHub } from "../src/coord/watch.ts";
import {
  decodeStoreSnapshot,
  encodeStoreSnapshot,
  encodeStoreSnapshotChunks,
  joinChunks,
} from "../src/storage/store_snapshot.ts";
import { fromBase64 } from "../src/kv/bytes.ts";
import { VERSION_OVERHEAD_BYTES } from "../src/kv/history.ts";

/** Applies a compaction, and by default frees all it frees (as a host's ticks do over time). */
function compact(store: MetadataStore, revision: number, options = { drain: true }) {
  const r = store.apply(
    encodeCommand({ type: "compact", revision } as Command),
    store.appliedIndex + 1,
  );
  while (options.drain && !store.compactStep());
  return r;
}

/** /other put at revision 2, then `n` overwrites of /k at revisions 3 to n + 2 (value `v<rev>`). */
function overwritten(n: number): MetadataStore {
  const store = new MetadataStore();
  store.apply(encodePut("/other", "x"), 1);
  for (let i = 2; i <= n + 1; i++) store.apply(encodePut("/k", `v${i + 1}`), i);
  return store;
}

Deno.test("history is kept until a compaction, however many revisions", async (t) => {
  const store = overwritten(5_000);
  await t.step("a range 5,000 revisions back reads the key as it was", () => {
    for (const revision of [2, 3, 1_000, 4_000, 5_000]) {
      const r = store.range({ key: "/k" }, { revision });
      assert.deepEqual(
        r.kvs.map((kv) => [text(kv.value), kv.modRevision, kv.version, kv.createRevision]),
        revision < 3 ? [] : [[`v${revision}`, revision, revision - 2, 3]],
        `at ${revision}`,
      );
      assert.equal(r.count, revision < 3 ? 0 : 1);
      assert.equal(
        store.range({ prefix: "/" }, { revision, countOnly: true }).count,
        revision < 3 ? 1 : 2,
      );
    }
  });
  await t.step("a watch from revision 2 replays every revision with its prevKv", () => {
    const seen: [number, string, string | undefined][] = [];
    const hub = new WatchHub(() => store);
    hub.subscribe({ range: { key: "/k" }, startRevision: 2, prevKv: true }, (r) => {
      if (r.kind !== "events") return;
      for (const e of r.events) {
        seen.push([r.revision, text(e.kv.value), e.prevKv && text(e.prevKv.value)]);
      }
    }).cancel();
    assert.equal(seen.length, 5_000);
    assert.deepEqual(seen[0], [3, "v3", undefined]);
    assert.deepEqual(seen[1], [4, "v4", "v3"]);
    assert.deepEqual(seen.at(-1), [5_002, "v5002", "v5001"]);
  });
  await t.step("compaction frees the versions before it and nothing after", () => {
    assert.equal(store.historyVersions, 4_999);
    const before = store.historyBytes;
    assert.equal(compact(store, 4_001).status, "applied");
    assert.equal(store.historyVersions, 1_001, "versions 4,001 to 5,001 are left");
    assert.ok(store.historyBytes < before / 4, `${store.historyBytes} of ${before}`);
    assert.throws(() => store.range({ key: "/k" }, { revision: 4_000 }), {
      message: COMPACTED_ERROR,
    });
    assert.equal(text(store.range({ key: "/k" }, { revision: 4_001 }).kvs[0].value), "v4001");
    assert.equal(compact(store, 5_002).status, "applied");
    assert.equal(store.historyVersions, 0);
    assert.equal(store.historyBytes, 0);
    assert.equal(
      store.backendBytes,
      "/k".length + "v5002".length + "/other".length + 1 + 2 * VERSION_OVERHEAD_BYTES,
    );
  });
});

Deno.test("deleted keys keep their history until a compaction drops it", () => {
  const store = new MetadataStore();
  let i = 0;
  const apply = (c: Command | Uint8Array) =>
    store.apply(c instanceof Uint8Array ? c : encodeCommand(c), ++i);
  apply(encodePut("/a", "1")); // 2
  apply(encodePut("/b", "1")); // 3
  apply({ type: "delete", range: { prefix: "/" }, prevKv: false }); // 4
  apply(encodePut("/b", "2")); // 5
  const at = (revision: number) =>
    store.range({ prefix: "/" }, { revision }).kvs.map((kv) => `${kv.key}=${text(kv.value)}`);
  assert.deepEqual(at(3), ["/a=1", "/b=1"]);
  assert.deepEqual(at(4), []);
  assert.deepEqual(at(5), ["/b=2"]);
  assert.equal(store.historyVersions, 4, "/a: 1 and its tombstone; /b: 1 and its tombstone");
  assert.equal(compact(store, 4).status, "applied");
  assert.deepEqual(at(4), []);
  assert.equal(store.historyVersions, 0, "at 4 both keys were deleted: nothing to keep");
  assert.equal(store.backendBytes, "/b".length + 1 + VERSION_OVERHEAD_BYTES);
});

Deno.test("overwrites count toward the quota's bytes until compacted", () => {
  const value = "x".repeat(100);
  const store = new MetadataStore();
  for (let i = 1; i <= 3_000; i++) store.apply(encodePut("/big", value), i);
  // Every overwritten version is kept: 2,999 of them, each key + value + its heap overhead.
  assert.equal(store.backendBytes, 3_000 * ("/big".length + 100 + VERSION_OVERHEAD_BYTES));
  compact(store, store.revision);
  assert.equal(store.backendBytes, "/big".length + 100 + VERSION_OVERHEAD_BYTES);
});

Deno.test("a compaction while a frozen store is open frees only after its release", () => {
  const store = overwritten(100);
  const frozen = store.freeze();
  const bytes0 = store.historyBytes;
  assert.equal(compact(store, 101, { drain: false }).status, "applied");
  assert.equal(store.historyVersions, 99);
  assert.equal(store.oldestRevision, 102, "reads below the compaction fail at once");
  assert.equal(store.historyBytes, bytes0, "kept for the snapshot being written");
  const bytes = joinChunks([...encodeStoreSnapshotChunks(frozen)]);
  frozen.release();
  store.apply(encodePut("/k", "after"), store.appliedIndex + 1);
  assert.equal(store.historyVersions, 2, "freed at the first apply after the release");
  const then = decodeStoreSnapshot(bytes);
  assert.equal(then.oldestRevision, 1);
  for (let revision = 3; revision <= 102; revision++) {
    assert.equal(text(then.range({ key: "/k" }, { revision }).kvs[0].value), `v${revision}`);
  }
  assert.deepEqual(then.history(2).length, 101);
});

Deno.test("a snapshot keeps the history: ranges and watches at every revision alike", () => {
  const store = overwritten(300);
  store.apply(encodeCommand({ type: "delete", range: { key: "/other" }, prevKv: true }), 400);
  compact(store, 150);
  const again = decodeStoreSnapshot(encodeStoreSnapshot(store));
  assert.equal(again.oldestRevision, 151);
  assert.equal(again.historyVersions, store.historyVersions);
  assert.equal(again.backendBytes, store.backendBytes);
  for (let revision = 150; revision <= store.revision; revision++) {
    assert.deepEqual(
      again.range({ prefix: "/" }, { revision }),
      store.range({ prefix: "/" }, { revision }),
    );
  }
  assert.deepEqual(again.history(151), store.history(151));
  // The same writes go on alike.
  store.apply(encodePut("/other", "y"), 500);
  again.apply(encodePut("/other", "y"), 500);
  assert.deepEqual(again.history(151), store.history(151));
});

// Format 2 and 3 bytes as the previous code wrote them (gen: 12 puts over /k0../k3, a delete of
// /k1, compaction at 6, a txn putting /k1 and deleting /k2, a put of /k3; format 3 adds an
// alarm). Their watch history becomes the store's history.
const FORMAT_2 =
  "Uk1TUwIQEAAAAwAGCgcBAgMvazECdjUDBwIAAy9rMQJ2MQMDAQAIAQIDL2syAnY2BAgCAAMvazICdjIEBAEACQECAy9rMwJ2NwUJAgADL2szAnYzBQUBAAoBAgMvazACdjgCCgMAAy9rMAJ2NAIGAgALAQIDL2sxAnY5AwsDAAMvazECdjUDBwIADAECAy9rMgN2MTAEDAMAAy9rMgJ2NgQIAgANAQIDL2szA3YxMQUNAwADL2szAnY3BQkCAA4BAwMvazEAAA4AAAMvazECdjkDCwMADwIAAy9rMQVhZ2Fpbg8PAQADAy9rMgAADwAAAy9rMgN2MTAEDAMAEAECAy9rMwRsYXN0BRAEAAMvazMDdjExBQ0DAAMCdjgCCgMAAwVhZ2Fpbg8PAQADBGxhc3QFEAQAL2swL2sxL2sz";
const FORMAT_3 =
  "Uk1TUwMBAm0xB05PU1BBQ0VkEAAAAwAGCgcBAgMvazECdjUDBwIAAy9rMQJ2MQMDAQAIAQIDL2syAnY2BAgCAAMvazICdjIEBAEACQECAy9rMwJ2NwUJAgADL2szAnYzBQUBAAoBAgMvazACdjgCCgMAAy9rMAJ2NAIGAgALAQIDL2sxAnY5AwsDAAMvazECdjUDBwIADAECAy9rMgN2MTAEDAMAAy9rMgJ2NgQIAgANAQIDL2szA3YxMQUNAwADL2szAnY3BQkCAA4BAwMvazEAAA4AAAMvazECdjkDCwMADwIAAy9rMQVhZ2Fpbg8PAQADAy9rMgAADwAAAy9rMgN2MTAEDAMAEAECAy9rMwRsYXN0BRAEAAMvazMDdjExBQ0DAAMCdjgCCgMAAwVhZ2Fpbg8PAQADBGxhc3QFEAQAL2swL2sxL2sz";

// Format 4 bytes as the previous code wrote them, of the same commands (each current value twice).
const FORMAT_4 =
  "Uk1TUwQAEBAAAAMABgIDL2sxAnYxAwMBAAEDL2sxAnY1AwcCAAIDL2syAnYyBAQBAAEDL2syAnY2BAgCAAIDL2szAnYzBQUBAAEDL2szAnY3BQkCAAIDL2swAnY0AgYCAAEDL2swAnY4AgoDAAEDL2sxAnY5AwsDAAEDL2syA3YxMAQMAwABAy9rMwN2MTEFDQMAAQMvazEAAA4AAAEDL2sxBWFnYWluDw8BAAEDL2syAAAPAAABAy9rMwRsYXN0BRAEAAADAnY4AgoDAAMFYWdhaW4PDwEAAwRsYXN0BRAEAC9rMC9rMS9rMw==";

Deno.test("snapshots of formats 2, 3 and 4 load with their history", () => {
  const reference = new MetadataStore();
  const commands: Uint8Array[] = [];
  for (let i = 0; i < 12; i++) commands.push(encodePut(`/k${i % 4}`, `v${i}`));
  commands.push(encodeCommand({ type: "delete", range: { prefix: "/k1" }, prevKv: false }));
  commands.push(encodeCommand({ type: "compact", revision: 6 } as Command));
  commands.push(encodeCommand({
    type: "txn",
    compare: [],
    success: [
      { type: "put", key: "/k1", value: utf8("again"), prevKv: false },
      { type: "delete", range: { key: "/k2" }, prevKv: false },
    ],
    failure: [],
  }));
  commands.push(encodePut("/k3", "last"));
  commands.forEach((c, i) => reference.apply(c, i + 1));
  for (
    const [name, b64] of [["format 2", FORMAT_2], ["format 3", FORMAT_3], ["format 4", FORMAT_4]]
  ) {
    const old = decodeStoreSnapshot(fromBase64(b64));
    assert.equal(old.oldestRevision, 7, name);
    assert.equal(old.size, reference.size, name);
    for (let revision = 6; revision <= reference.revision; revision++) {
      assert.deepEqual(
        old.range({ prefix: "" }, { revision }),
        reference.range({ prefix: "" }, { revision }),
        `${name} at ${revision}`,
      );
    }
    assert.deepEqual(old.history(7), reference.history(7), name);
    assert.equal(old.alarms.length, name === "format 3" ? 1 : 0);
  }
});

Deno.test("a large compaction frees in batches; reads are right all along", () => {
  const store = overwritten(3 * COMPACT_BATCH_VERSIONS);
  const top = store.revision;
  assert.equal(compact(store, top - 10, { drain: false }).status, "applied");
  assert.ok(store.compactPending, "one batch freed in the apply, more to go");
  let steps = 0;
  let left = store.historyVersions;
  while (!store.compactStep()) {
    steps++;
    assert.ok(store.historyVersions <= left, "a step never adds");
    left = store.historyVersions;
    for (const revision of [top - 10, top - 3, top]) {
      assert.equal(text(store.range({ key: "/k" }, { revision }).kvs[0].value), `v${revision}`);
    }
  }
  // About 2 x 15,000 units of work (log entries, then the chain cut off), 5,000 a step.
  assert.ok(steps >= 3, `${steps} steps after the apply: each at most ${COMPACT_BATCH_VERSIONS}`);
  assert.equal(store.historyVersions, 10, "versions top - 10 to top - 1");
  assert.equal(store.history(top - 9).length, 10);
});

Deno.test("a snapshot writes each kept value once (format 5)", () => {
  // 200 keys of 1 KiB values, each written twice, then a compaction that keeps 50 keys unchanged
  // since it: 400 versions of which 200 are current. Every value once is ~400 KiB; format 4 wrote
  // each current value changed after the compaction a second time in its key record.
  const store = new MetadataStore();
  let index = 0;
  const value = (i: number, round: number) => `${round}:${i}:`.padEnd(1024, "x");
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 200; i++) {
      // Keys 150..199 are written once only, before the compaction.
      if (round === 1 && i >= 150) continue;
      store.apply(encodePut(`/k${String(i).padStart(3, "0")}`, value(i, round)), ++index);
    }
  }
  store.apply(encodeCommand({ type: "compact", revision: 151 } as Command), ++index);
  for (let i = 0; i < 150; i++) {
    store.apply(encodePut(`/k${String(i).padStart(3, "0")}`, value(i, 2)), ++index);
  }
  const kept = store.historyVersions + store.size; // every version kept, current or older
  const bytes = encodeStoreSnapshot(store);
  assert.ok(
    bytes.length < kept * 1024 + 64 * 1024,
    `${bytes.length} bytes for ${kept} kept versions of 1 KiB: some value is written twice`,
  );
  const again = decodeStoreSnapshot(bytes);
  for (let revision = store.compactRevision; revision <= store.revision; revision += 7) {
    assert.deepEqual(
      again.range({ prefix: "" }, { revision }),
      store.range({ prefix: "" }, { revision }),
    );
  }
  assert.deepEqual(again.history(store.oldestRevision), store.history(store.oldestRevision));
  assert.equal(again.backendBytes, store.backendBytes);
});
