/**
 * The store's watch history and leases: bounded history with explicit compaction, lease grant,
 * put with a lease, revoke deleting the keys as DELETE events, codec round trips, snapshots.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  CompactedError,
  decodeCommand,
  encodeCommand,
  MetadataStore,
  utf8,
} from "../src/kv/mod.ts";
import { Harness } from "./kv_helpers.ts";

const put = (key: string, value: string, lease?: number) => ({
  type: "put" as const,
  key,
  value: utf8(value),
  prevKv: false,
  lease,
});

Deno.test("watch history", async (t) => {
  await t.step("keeps every revision from the oldest available, in order", () => {
    const h = new Harness({ historyRevisionsMax: 3 });
    for (let i = 0; i < 5; i++) h.apply(put(`/k${i}`, `${i}`));
    // Revisions 2..6 were made; only the last 3 (4, 5, 6) are kept.
    assert.equal(h.store.revision, 6);
    assert.equal(h.store.oldestRevision, 4);
    assert.deepEqual(h.store.history(4).map((r) => r.revision), [4, 5, 6]);
    assert.deepEqual(h.store.history(6).map((r) => r.events[0].kv.key), ["/k4"]);
    assert.deepEqual(h.store.history(7), []);
  });
  await t.step("a compacted revision fails naming the oldest still available", () => {
    const h = new Harness({ historyRevisionsMax: 3 });
    for (let i = 0; i < 5; i++) h.apply(put(`/k${i}`, `${i}`));
    assert.throws(() => h.store.history(3), (e: unknown) => {
      assert.ok(e instanceof CompactedError);
      assert.equal(e.oldestRevision, 4);
      assert.match(
        e.message,
        /Revision 3 has been compacted: .* oldest revision still available is 4/,
      );
      return true;
    });
  });
  await t.step("explicit compaction goes through the log; a future revision is rejected", () => {
    const h = new Harness();
    for (let i = 0; i < 4; i++) h.apply(put(`/k${i}`, `${i}`));
    const r = h.apply({ type: "compact", revision: 3 });
    assert.equal(r.status, "applied");
    assert.equal(h.store.oldestRevision, 4);
    assert.equal(h.store.revision, 5, "a compaction is no revision");
    const bad = h.apply({ type: "compact", revision: 99 });
    assert.equal(bad.status, "rejected");
    assert.match((bad as { error: string }).error, /required revision is a future revision/);
  });
  await t.step("an empty store can be watched from revision 1", () => {
    const store = new MetadataStore();
    assert.equal(store.oldestRevision, 1);
    assert.deepEqual(store.history(1), []);
  });
});

Deno.test("leases", async (t) => {
  await t.step("grant picks ids; keys put with a lease carry it", () => {
    const h = new Harness();
    const g = h.apply({ type: "leaseGrant", id: 0, ttlMs: 1000 });
    assert.equal(g.status, "applied");
    const id = (g as { response: { id: number } }).response.id;
    assert.equal(id, 1);
    const rev = h.store.revision;
    assert.equal(rev, 1, "a grant is no revision");
    h.apply(put("/e/a", "x", id));
    h.apply(put("/e/b", "y", id));
    h.apply(put("/plain", "z"));
    assert.equal(h.store.get("/e/a")!.lease, id);
    assert.equal(h.store.get("/plain")!.lease, undefined);
    assert.deepEqual(h.store.lease(id)!.keys, ["/e/a", "/e/b"]);
    const g2 = h.apply({ type: "leaseGrant", id: 0, ttlMs: 500 });
    assert.equal((g2 as { response: { id: number } }).response.id, 2);
    assert.equal(h.apply({ type: "leaseGrant", id: 2, ttlMs: 5 }).status, "rejected");
  });
  await t.step("revoke deletes the keys as ordinary DELETE events at one revision", () => {
    const h = new Harness();
    h.apply({ type: "leaseGrant", id: 7, ttlMs: 1000 });
    h.apply(put("/e/a", "x", 7));
    h.apply(put("/e/b", "y", 7));
    const before = h.store.revision;
    const r = h.apply({ type: "leaseRevoke", id: 7, expired: true });
    assert.equal(r.status, "applied");
    if (r.status !== "applied") return;
    assert.deepEqual(r.events.map((e) => [e.type, e.kv.key, e.kv.modRevision]), [
      ["DELETE", "/e/a", before + 1],
      ["DELETE", "/e/b", before + 1],
    ]);
    assert.equal(h.store.revision, before + 1);
    assert.equal(h.store.lease(7), undefined);
    assert.equal(h.store.size, 0);
    const again = h.apply({ type: "leaseRevoke", id: 7, expired: false });
    assert.deepEqual((again as { response: unknown }).response, {
      type: "leaseRevoke",
      revision: before + 1,
      found: false,
      deleted: 0,
    });
  });
  await t.step("a put without a lease detaches the key; a delete detaches it too", () => {
    const h = new Harness();
    h.apply({ type: "leaseGrant", id: 1, ttlMs: 1000 });
    h.apply(put("/a", "1", 1));
    h.apply(put("/a", "2"));
    assert.deepEqual(h.store.lease(1)!.keys, []);
    h.apply(put("/b", "1", 1));
    h.apply({ type: "delete", range: { key: "/b" }, prevKv: false });
    assert.deepEqual(h.store.lease(1)!.keys, []);
  });
  await t.step("a put with an unknown lease is rejected and changes nothing, also in a txn", () => {
    const h = new Harness();
    const r = h.apply(put("/a", "1", 42));
    assert.equal(r.status, "rejected");
    assert.match((r as { error: string }).error, /Lease 42 not found/);
    const t = h.apply({
      type: "txn",
      compare: [],
      success: [put("/b", "1"), put("/c", "1", 42)],
      failure: [],
    });
    assert.equal(t.status, "rejected");
    assert.equal(h.store.size, 0);
    assert.equal(h.store.revision, 1);
  });
  await t.step("leasesMax bounds the leases", () => {
    const h = new Harness({ leasesMax: 2 });
    h.apply({ type: "leaseGrant", id: 0, ttlMs: 1 });
    h.apply({ type: "leaseGrant", id: 0, ttlMs: 1 });
    const r = h.apply({ type: "leaseGrant", id: 0, ttlMs: 1 });
    assert.equal(r.status, "rejected");
    assert.match((r as { error: string }).error, /Too many leases: 2 \(most 2\)/);
  });
  await t.step("leases and attachments survive a snapshot", () => {
    const h = new Harness();
    h.apply({ type: "leaseGrant", id: 0, ttlMs: 900 });
    h.apply(put("/e", "x", 1));
    const copy = MetadataStore.fromSnapshot(JSON.parse(JSON.stringify(h.store.snapshot())));
    assert.deepEqual(copy.leases(), h.store.leases());
    assert.equal(copy.get("/e")!.lease, 1);
    const r = copy.apply(encodeCommand({ type: "leaseGrant", id: 0, ttlMs: 1 }), h.index + 1);
    assert.equal((r as { response: { id: number } }).response.id, 2, "ids keep rising");
  });
});

Deno.test("lease and compact commands round-trip through the codec", () => {
  const commands = [
    { type: "leaseGrant", id: 0, ttlMs: 5000 },
    { type: "leaseGrant", id: 12, ttlMs: 1 },
    { type: "leaseRevoke", id: 3, expired: true },
    { type: "leaseRevoke", id: 3, expired: false },
    { type: "compact", revision: 17 },
    { type: "put", key: "/k", value: utf8("v"), prevKv: true, lease: 9 },
    { type: "put", key: "/k", value: utf8("v"), prevKv: false, lease: 9 },
  ] as const;
  for (const c of commands) {
    const bytes = encodeCommand(c);
    assert.equal(bytes[0], 0xff, `${c.type} uses the binary form`);
    assert.deepEqual(decodeCommand(bytes), c);
  }
  // Put with lease 9: flags 0x02, then the lease as u53.
  assert.deepEqual(
    [...encodeCommand({ type: "put", key: "/k", value: utf8("v"), prevKv: false, lease: 9 })],
    [0xff, 1, 1, 0, 0, 0, 2, 0x2f, 0x6b, 0, 0, 0, 1, 0x76, 2, 0, 0, 0, 0, 0, 0, 0, 9],
  );
  assert.deepEqual(
    [...encodeCommand({ type: "leaseGrant", id: 0, ttlMs: 5000 })],
    [0xff, 1, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x13, 0x88],
  );
  assert.throws(
    () => encodeCommand({ type: "leaseGrant", id: 0, ttlMs: 0 }),
    /Lease TTL \(ms\) must be an integer in \[1, /,
  );
  assert.throws(
    () =>
      encodeCommand({
        type: "txn",
        compare: [],
        // deno-lint-ignore no-explicit-any
        success: [{ type: "leaseGrant", id: 0, ttlMs: 5 } as any],
        failure: [],
      }),
    /A transaction may hold only put, delete and range: "leaseGrant"/,
  );
});
