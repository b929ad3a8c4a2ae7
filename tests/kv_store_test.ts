import assert from "node:assert/strict";
import {
  ApplyError,
  type DeleteResponse,
  encodeCommand,
  encodeDelete,
  encodePut,
  type KvEvent,
  MetadataStore,
  type PutResponse,
  type RangeResponse,
  text,
  type TxnResponse,
  utf8,
} from "../src/kv/mod.ts";
import { cmp, delOp, Harness, putOp, rangeOp, txnOp } from "./kv_helpers.ts";

const kvText = (r: RangeResponse) => r.kvs.map((kv) => `${kv.key}=${text(kv.value)}`);

Deno.test("revisions follow etcd across puts and deletes", async (t) => {
  const h = new Harness();
  const s = h.store;

  await t.step("an empty store is at revision 1, applied index 0", () => {
    assert.equal(s.revision, 1);
    assert.equal(s.appliedIndex, 0);
    assert.equal(s.size, 0);
    assert.equal(s.get("/a"), undefined);
  });

  await t.step("a put creates the key at the next revision, version 1", () => {
    const r = h.apply(encodePut("/a", "one"));
    assert.equal(r.status, "applied");
    assert.ok(r.status === "applied");
    assert.deepEqual(r.response, { type: "put", revision: 2 });
    assert.deepEqual(r.events, [{
      type: "PUT",
      kv: { key: "/a", value: utf8("one"), createRevision: 2, modRevision: 2, version: 1 },
    }]);
    assert.equal(s.revision, 2);
    assert.equal(s.appliedIndex, 1);
    assert.deepEqual(s.get("/a"), {
      key: "/a",
      value: utf8("one"),
      createRevision: 2,
      modRevision: 2,
      version: 1,
    });
  });

  await t.step("a second put keeps createRevision, raises modRevision and version", () => {
    const response = h.ok(putOp("/a", "two", true)) as PutResponse;
    assert.equal(response.revision, 3);
    assert.deepEqual(response.prevKv, {
      key: "/a",
      value: utf8("one"),
      createRevision: 2,
      modRevision: 2,
      version: 1,
    });
    const kv = s.get("/a")!;
    assert.deepEqual([kv.createRevision, kv.modRevision, kv.version], [2, 3, 2]);
    assert.equal(s.getString("/a"), "two");
  });

  await t.step("a put without prevKv returns no prevKv", () => {
    const response = h.ok(putOp("/a", "three")) as PutResponse;
    assert.deepEqual(response, { type: "put", revision: 4 });
  });

  await t.step("a put of another key does not touch the first key", () => {
    h.ok(putOp("/b", "x"));
    assert.equal(s.get("/a")!.modRevision, 4);
    assert.deepEqual(
      [s.get("/b")!.createRevision, s.get("/b")!.modRevision, s.get("/b")!.version],
      [5, 5, 1],
    );
  });

  await t.step("a delete raises the revision and removes the key", () => {
    const r = h.apply(encodeDelete("/a"));
    assert.ok(r.status === "applied");
    assert.deepEqual(r.response, { type: "delete", revision: 6, deleted: 1 });
    assert.deepEqual(r.events, [{
      type: "DELETE",
      kv: { key: "/a", value: new Uint8Array(), createRevision: 0, modRevision: 6, version: 0 },
      prevKv: { key: "/a", value: utf8("three"), createRevision: 2, modRevision: 4, version: 3 },
    }]);
    assert.equal(s.get("/a"), undefined);
  });

  await t.step("a delete that deletes nothing does not raise the revision", () => {
    const r = h.apply(encodeDelete("/a"));
    assert.ok(r.status === "applied");
    assert.deepEqual(r.response, { type: "delete", revision: 6, deleted: 0 });
    assert.deepEqual(r.events, []);
    assert.equal(s.revision, 6);
    assert.equal(s.appliedIndex, 6);
  });

  await t.step("re-creating a deleted key starts over at version 1", () => {
    h.ok(putOp("/a", "again"));
    const kv = s.get("/a")!;
    assert.deepEqual([kv.createRevision, kv.modRevision, kv.version], [7, 7, 1]);
  });
});

Deno.test("ranges", async (t) => {
  const h = new Harness();
  const keys = [
    "/services/db/primary",
    "/services/db/replica/1",
    "/services/db/replica/2",
    "/services/dbx",
    "/services/web",
    "/svc",
    "/a",
  ];
  for (const k of keys) h.ok(putOp(k, `v${k}`));
  const s = h.store;

  await t.step("a single key", () => {
    const r = s.range({ key: "/services/dbx" });
    assert.deepEqual(kvText(r), ["/services/dbx=v/services/dbx"]);
    assert.equal(r.count, 1);
    assert.equal(r.more, false);
    assert.equal(r.revision, 8);
    assert.deepEqual(s.range({ key: "/nope" }), {
      type: "range",
      revision: 8,
      kvs: [],
      more: false,
      count: 0,
    });
  });

  await t.step("a prefix lists a subtree in key order, and only it", () => {
    const r = s.range({ prefix: "/services/db/" });
    assert.deepEqual(r.kvs.map((kv) => kv.key), [
      "/services/db/primary",
      "/services/db/replica/1",
      "/services/db/replica/2",
    ]);
    assert.equal(r.count, 3);
    assert.deepEqual(s.range({ prefix: "/services/db" }).count, 4);
    assert.deepEqual(s.range({ prefix: "/services/db/replica/" }).count, 2);
    assert.deepEqual(s.range({ prefix: "/zzz" }).count, 0);
  });

  await t.step("the empty prefix is every key", () => {
    const r = s.range({ prefix: "" });
    assert.deepEqual(r.kvs.map((kv) => kv.key), [...keys].sort());
    assert.equal(r.count, keys.length);
  });

  await t.step("[key, rangeEnd) includes the start and excludes the end", () => {
    const r = s.range({ key: "/services/db/replica/1", rangeEnd: "/services/web" });
    assert.deepEqual(r.kvs.map((kv) => kv.key), [
      "/services/db/replica/1",
      "/services/db/replica/2",
      "/services/dbx",
    ]);
    assert.equal(r.count, 3);
    assert.equal(s.range({ key: "/services/web", rangeEnd: "/services/db" }).count, 0);
    assert.deepEqual(s.range({ key: "/services/web", rangeEnd: "/services/db" }).kvs, []);
  });

  await t.step("fromKey is every key from the start on", () => {
    const r = s.range({ fromKey: "/services/web" });
    assert.deepEqual(r.kvs.map((kv) => kv.key), ["/services/web", "/svc"]);
    assert.equal(r.count, 2);
  });

  await t.step("a limit cuts the list, says more, and still counts every key", () => {
    const r = s.range({ prefix: "/services/" }, { limit: 2 });
    assert.deepEqual(r.kvs.map((kv) => kv.key), ["/services/db/primary", "/services/db/replica/1"]);
    assert.equal(r.more, true);
    assert.equal(r.count, 5);
    const all = s.range({ prefix: "/services/" }, { limit: 5 });
    assert.equal(all.more, false);
    assert.equal(all.kvs.length, 5);
  });

  await t.step("keysOnly drops the values, countOnly drops the key-values", () => {
    const k = s.range({ prefix: "/services/db/" }, { keysOnly: true });
    assert.deepEqual(k.kvs[0], {
      key: "/services/db/primary",
      value: new Uint8Array(),
      createRevision: 2,
      modRevision: 2,
      version: 1,
    });
    const c = s.range({ prefix: "/services/db/" }, { countOnly: true });
    assert.deepEqual(c, { type: "range", revision: 8, kvs: [], more: false, count: 3 });
  });

  await t.step("the same reads work as a command through the log, and raise nothing", () => {
    const r = h.ok(rangeOp({ prefix: "/services/db/" }, { limit: 1 })) as RangeResponse;
    assert.deepEqual(r.kvs.map((kv) => kv.key), ["/services/db/primary"]);
    assert.equal(r.more, true);
    assert.equal(r.count, 3);
    assert.equal(s.revision, 8);
  });

  await t.step("a malformed range is refused", () => {
    assert.throws(() => s.range({ key: "" }), { message: 'Key must not be empty: ""' });
    assert.throws(
      () => s.range({ key: "/a", prefix: "/b" } as never),
      /Range must have exactly one of key, prefix or fromKey/,
    );
    assert.throws(() => s.range({ prefix: "/" }, { limit: -1 }), /Limit must be a non-negative/);
  });
});

Deno.test("range with limit pages through many keys", () => {
  const h = new Harness();
  const n = 1000;
  // Insert in a scrambled order so the tree sees splits everywhere.
  for (let i = 0; i < n; i++) {
    const j = (i * 379) % n;
    h.ok(putOp(`/jobs/${String(j).padStart(4, "0")}`, `job ${j}`));
  }
  h.ok(putOp("/jobz", "outside"));
  const seen: string[] = [];
  let start = "/jobs/";
  let pages = 0;
  for (;;) {
    const r = h.store.range({ key: start, rangeEnd: "/jobs0" }, { limit: 100 });
    pages++;
    assert.equal(r.count, n - seen.length);
    for (const kv of r.kvs) seen.push(kv.key);
    if (!r.more) break;
    assert.equal(r.kvs.length, 100);
    // etcd's pagination: the next page starts just after the last key.
    start = r.kvs[r.kvs.length - 1].key + "\0";
  }
  assert.equal(pages, 10);
  assert.equal(seen.length, n);
  for (let i = 0; i < n; i++) assert.equal(seen[i], `/jobs/${String(i).padStart(4, "0")}`);
  assert.equal(h.store.range({ prefix: "/jobs/" }, { countOnly: true }).count, n);
});

Deno.test("the store's rangeKvsMax bounds every range", () => {
  const h = new Harness({ rangeKvsMax: 3 });
  for (let i = 0; i < 5; i++) h.ok(putOp(`/k${i}`, "v"));
  const r = h.store.range({ prefix: "/k" });
  assert.equal(r.kvs.length, 3);
  assert.equal(r.more, true);
  assert.equal(r.count, 5);
  assert.equal(h.store.range({ prefix: "/k" }, { limit: 2 }).kvs.length, 2);
  assert.equal(h.store.range({ prefix: "/k" }, { limit: 4 }).kvs.length, 3);
});

Deno.test("deletes of ranges and prefixes", async (t) => {
  const h = new Harness();
  for (const k of ["/a/1", "/a/2", "/a/3", "/ab", "/b/1", "/b/2", "/c"]) h.ok(putOp(k, k));
  const s = h.store;

  await t.step("a prefix delete removes the subtree at one revision", () => {
    const r = h.apply(delOp({ prefix: "/a/" }, true));
    assert.ok(r.status === "applied");
    const response = r.response as DeleteResponse;
    assert.equal(response.deleted, 3);
    assert.equal(response.revision, 9);
    assert.deepEqual(response.prevKvs!.map((kv) => kv.key), ["/a/1", "/a/2", "/a/3"]);
    assert.deepEqual(response.prevKvs!.map((kv) => text(kv.value)), ["/a/1", "/a/2", "/a/3"]);
    assert.deepEqual(
      r.events.map((e: KvEvent) => [e.type, e.kv.key, e.kv.modRevision, e.prevKv?.modRevision]),
      [["DELETE", "/a/1", 9, 2], ["DELETE", "/a/2", 9, 3], ["DELETE", "/a/3", 9, 4]],
    );
    assert.deepEqual([...s.entries()].map((kv) => kv.key), ["/ab", "/b/1", "/b/2", "/c"]);
    assert.equal(s.revision, 9);
  });

  await t.step("a [key, rangeEnd) delete", () => {
    const response = h.ok(delOp({ key: "/ab", rangeEnd: "/b/2" })) as DeleteResponse;
    assert.deepEqual(response, { type: "delete", revision: 10, deleted: 2 });
    assert.deepEqual([...s.entries()].map((kv) => kv.key), ["/b/2", "/c"]);
  });

  await t.step("a fromKey delete", () => {
    const response = h.ok(delOp({ fromKey: "/c" })) as DeleteResponse;
    assert.equal(response.deleted, 1);
    assert.deepEqual([...s.entries()].map((kv) => kv.key), ["/b/2"]);
  });

  await t.step("a range delete of nothing leaves the revision", () => {
    const response = h.ok(delOp({ prefix: "/zzz" }, true)) as DeleteResponse;
    assert.deepEqual(response, { type: "delete", revision: 11, deleted: 0, prevKvs: [] });
    assert.equal(s.revision, 11);
  });
});

Deno.test("transaction compares", async (t) => {
  const h = new Harness();
  h.ok(putOp("/k", "m")); // rev 2
  h.ok(putOp("/other", "x")); // rev 3
  h.ok(putOp("/k", "m")); // rev 4: /k create 2, mod 4, version 2, value "m"
  const holds = (compare: ReturnType<typeof cmp>) => {
    const response = h.ok(txnOp([compare], [], [])) as TxnResponse;
    return response.succeeded;
  };

  const table: [ReturnType<typeof cmp>, boolean][] = [
    [cmp("/k", "value", "equal", "m"), true],
    [cmp("/k", "value", "equal", "n"), false],
    [cmp("/k", "value", "notEqual", "n"), true],
    [cmp("/k", "value", "notEqual", "m"), false],
    [cmp("/k", "value", "greater", "l"), true],
    [cmp("/k", "value", "greater", "m"), false],
    [cmp("/k", "value", "greater", "ma"), false],
    [cmp("/k", "value", "less", "ma"), true],
    [cmp("/k", "value", "less", "m"), false],
    [cmp("/k", "version", "equal", 2), true],
    [cmp("/k", "version", "equal", 1), false],
    [cmp("/k", "version", "notEqual", 1), true],
    [cmp("/k", "version", "greater", 1), true],
    [cmp("/k", "version", "greater", 2), false],
    [cmp("/k", "version", "less", 3), true],
    [cmp("/k", "version", "less", 2), false],
    [cmp("/k", "createRevision", "equal", 2), true],
    [cmp("/k", "createRevision", "equal", 4), false],
    [cmp("/k", "createRevision", "notEqual", 4), true],
    [cmp("/k", "createRevision", "greater", 1), true],
    [cmp("/k", "createRevision", "less", 2), false],
    [cmp("/k", "modRevision", "equal", 4), true],
    [cmp("/k", "modRevision", "equal", 2), false],
    [cmp("/k", "modRevision", "notEqual", 4), false],
    [cmp("/k", "modRevision", "greater", 3), true],
    [cmp("/k", "modRevision", "less", 5), true],
    [cmp("/k", "modRevision", "less", 4), false],
  ];
  await t.step("each target and relation on an existing key", () => {
    for (const [compare, expected] of table) {
      assert.equal(
        holds(compare),
        expected,
        JSON.stringify({ ...compare, value: String(compare.value) }),
      );
    }
  });

  await t.step("a missing key reads as version, createRevision, modRevision 0", () => {
    assert.equal(holds(cmp("/missing", "version", "equal", 0)), true);
    assert.equal(holds(cmp("/missing", "createRevision", "equal", 0)), true);
    assert.equal(holds(cmp("/missing", "modRevision", "less", 1)), true);
    assert.equal(holds(cmp("/missing", "version", "greater", 0)), false);
  });

  await t.step("every value compare on a missing key fails, as in etcd", () => {
    assert.equal(holds(cmp("/missing", "value", "equal", "")), false);
    assert.equal(holds(cmp("/missing", "value", "notEqual", "x")), false);
    assert.equal(holds(cmp("/missing", "value", "greater", "")), false);
    assert.equal(holds(cmp("/missing", "value", "less", "zzz")), false);
  });

  await t.step("all compares must hold; none means success", () => {
    assert.equal(
      (h.ok(
        txnOp([cmp("/k", "version", "equal", 2), cmp("/other", "version", "equal", 9)], []),
      ) as TxnResponse)
        .succeeded,
      false,
    );
    assert.equal((h.ok(txnOp([], [])) as TxnResponse).succeeded, true);
  });

  await t.step("read-only transactions never raised the revision", () => {
    assert.equal(h.store.revision, 4);
  });
});

Deno.test("transactions apply atomically at one revision", async (t) => {
  const h = new Harness();
  h.ok(putOp("/config/a", "1")); // 2
  h.ok(putOp("/config/b", "2")); // 3
  h.ok(putOp("/lock", "free")); // 4
  const s = h.store;

  await t.step("success list: every write shares the new revision", () => {
    const r = h.apply(txnOp(
      [cmp("/lock", "value", "equal", "free")],
      [
        putOp("/lock", "n1", true),
        putOp("/config/c", "3"),
        delOp("/config/a", true),
        rangeOp({ prefix: "/config/" }),
      ],
      [putOp("/never", "x")],
    ));
    assert.ok(r.status === "applied");
    const response = r.response as TxnResponse;
    assert.equal(response.succeeded, true);
    assert.equal(response.revision, 5);
    assert.equal(s.revision, 5);
    assert.deepEqual(response.responses.map((x) => x.type), ["put", "put", "delete", "range"]);
    assert.equal(text((response.responses[0] as PutResponse).prevKv!.value), "free");
    assert.deepEqual((response.responses[2] as DeleteResponse).prevKvs!.map((kv) => kv.key), [
      "/config/a",
    ]);
    // A read later in the transaction sees the transaction's earlier writes.
    assert.deepEqual(kvText(response.responses[3] as RangeResponse), [
      "/config/b=2",
      "/config/c=3",
    ]);
    assert.deepEqual(r.events.map((e) => [e.type, e.kv.key, e.kv.modRevision]), [
      ["PUT", "/lock", 5],
      ["PUT", "/config/c", 5],
      ["DELETE", "/config/a", 5],
    ]);
    assert.equal(s.get("/lock")!.modRevision, 5);
    assert.equal(s.get("/config/c")!.createRevision, 5);
    assert.equal(s.get("/never"), undefined);
  });

  await t.step("failure list runs when a compare fails", () => {
    const response = h.ok(txnOp(
      [cmp("/lock", "value", "equal", "free")],
      [putOp("/lock", "n2")],
      [rangeOp("/lock"), putOp("/attempts", "1")],
    )) as TxnResponse;
    assert.equal(response.succeeded, false);
    assert.deepEqual(kvText(response.responses[0] as RangeResponse), ["/lock=n1"]);
    assert.equal(s.getString("/lock"), "n1");
    assert.equal(s.getString("/attempts"), "1");
    assert.equal(s.revision, 6);
  });

  await t.step("compare-and-swap on modRevision", () => {
    const seen = s.get("/config/b")!.modRevision;
    const first = h.ok(
      txnOp([cmp("/config/b", "modRevision", "equal", seen)], [putOp("/config/b", "x")]),
    );
    const second = h.ok(
      txnOp([cmp("/config/b", "modRevision", "equal", seen)], [putOp("/config/b", "y")]),
    );
    assert.equal((first as TxnResponse).succeeded, true);
    assert.equal((second as TxnResponse).succeeded, false);
    assert.equal(s.getString("/config/b"), "x");
  });

  await t.step("two puts of one key in a transaction count two versions at one revision", () => {
    const before = s.revision;
    h.ok(txnOp([], [putOp("/twice", "a"), putOp("/twice", "b")]));
    const kv = s.get("/twice")!;
    assert.deepEqual([text(kv.value), kv.createRevision, kv.modRevision, kv.version], [
      "b",
      before + 1,
      before + 1,
      2,
    ]);
  });

  await t.step("a transaction whose writes change nothing keeps the revision", () => {
    const before = s.revision;
    const r = h.apply(
      txnOp([], [delOp("/nothing"), rangeOp({ prefix: "/" }, { countOnly: true })]),
    );
    assert.ok(r.status === "applied");
    assert.equal((r.response as TxnResponse).revision, before);
    assert.deepEqual(r.events, []);
    assert.equal(s.revision, before);
  });
});

Deno.test("limits make a rejected result that changes nothing", async (t) => {
  const h = new Harness({ limits: { keyBytesMax: 8, valueBytesMax: 4, txnOpsMax: 2 } });
  const s = h.store;
  h.ok(putOp("/a", "1"));

  await t.step("key too large", () => {
    const r = h.apply(putOp("/abcdefgh", "1"));
    assert.deepEqual(r, {
      status: "rejected",
      index: 2,
      revision: 2,
      error: 'Key is too large: 9 bytes (most 8): "/abcdefgh"',
      duplicate: false,
    });
  });

  await t.step("value too large", () => {
    const r = h.apply(putOp("/a", "12345"));
    assert.equal(r.status, "rejected");
    assert.ok(r.status === "rejected");
    assert.equal(r.error, 'Value is too large: 5 bytes (most 4) for key "/a"');
  });

  await t.step("too many operations in a transaction: none applies", () => {
    const r = h.apply(txnOp([], [putOp("/b", "1"), putOp("/c", "1"), putOp("/d", "1")]));
    assert.ok(r.status === "rejected");
    assert.equal(r.error, "Transaction has too many success entries: 3 (most 2)");
    assert.equal(s.get("/b"), undefined);
  });

  await t.step("a transaction with one bad operation applies none of them", () => {
    const r = h.apply(txnOp([], [putOp("/b", "1"), putOp("/c", "toolong")]));
    assert.equal(r.status, "rejected");
    assert.equal(s.get("/b"), undefined);
    assert.equal(s.revision, 2);
    assert.equal(s.appliedIndex, 5);
  });
});

Deno.test("apply refuses entries out of order or undecodable, loudly", async (t) => {
  const h = new Harness();
  h.ok(putOp("/a", "1"));
  const s = h.store;

  await t.step("a repeated index throws", () => {
    assert.throws(
      () => s.apply(encodePut("/a", "2"), 1),
      (e: unknown) =>
        e instanceof ApplyError && e.message === "Log index must increase: 1 after applied index 1",
    );
  });

  await t.step("an index going back throws", () => {
    assert.throws(() => s.apply(encodePut("/a", "2"), 0), ApplyError);
  });

  await t.step("a non-integer index throws", () => {
    assert.throws(() => s.apply(encodePut("/a", "2"), 2.5), /Log index must increase: 2.5/);
  });

  await t.step("bytes that do not decode throw, and nothing moves", () => {
    assert.throws(
      () => s.apply(utf8("GET\n/a"), 2),
      (e: unknown) =>
        e instanceof ApplyError &&
        e.message.startsWith("Entry 2 does not decode, so it cannot be applied: Unknown command"),
    );
    assert.equal(s.appliedIndex, 1);
    assert.equal(s.getString("/a"), "1");
  });

  await t.step("a gap forward is allowed (entries without commands)", () => {
    s.apply(encodePut("/a", "2"), 5);
    assert.equal(s.appliedIndex, 5);
    s.applyNoop(6);
    assert.equal(s.appliedIndex, 6);
    assert.throws(() => s.applyNoop(6), ApplyError);
    assert.equal(s.revision, 3);
  });
});

Deno.test("reads hand out copies", () => {
  const h = new Harness();
  h.ok(putOp("/a", "abc"));
  h.store.get("/a")!.value[0] = 0x7a;
  h.store.range({ key: "/a" }).kvs[0].value[1] = 0x7a;
  [...h.store.entries()][0].value[2] = 0x7a;
  assert.equal(h.store.getString("/a"), "abc");
});

Deno.test("keys are ordered by UTF-8 bytes, not UTF-16 units", () => {
  const h = new Harness();
  const keys = ["/\u{1F600}", "/\uFFFD", "/z", "/\u00e9", "/\uE000"];
  for (const k of keys) h.ok(putOp(k, "v"));
  const bytesOrder = [...keys].sort((a, b) => {
    const x = utf8(a), y = utf8(b);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  });
  assert.deepEqual(bytesOrder, ["/z", "/\u00e9", "/\uE000", "/\uFFFD", "/\u{1F600}"]);
  assert.deepEqual(h.store.range({ prefix: "/" }).kvs.map((kv) => kv.key), bytesOrder);
  assert.deepEqual(
    h.store.range({ key: "/\uFFFD", rangeEnd: "/\u{1F601}" }).kvs.map((kv) => kv.key),
    ["/\uFFFD", "/\u{1F600}"],
  );
  assert.equal(h.store.range({ key: "/\uE000", rangeEnd: "/\u{1F600}" }).count, 2);
});

Deno.test("view and toJSON summarize a bounded number of keys", () => {
  const h = new Harness();
  for (let i = 0; i < 150; i++) h.ok(putOp(`/k/${String(i).padStart(3, "0")}`, `v${i}`));
  const v = h.store.view({ kvsMax: 2 });
  assert.deepEqual(v, {
    appliedIndex: 150,
    revision: 151,
    keys: 150,
    sessions: 0,
    kvs: { "/k/000": "v0", "/k/001": "v1" },
    more: true,
  });
  const json = JSON.parse(JSON.stringify(h.store));
  assert.equal(Object.keys(json.kvs).length, 100);
  assert.equal(json.more, true);
});

Deno.test("snapshot round-trips exactly", () => {
  const h = new Harness();
  h.ok(putOp("/a", "1"));
  h.ok({ type: "put", key: "/bin", value: new Uint8Array([0, 255, 128, 10]), prevKv: false });
  h.ok(putOp("/a", "2"));
  h.ok(putOp("/gone", "x"));
  h.ok(delOp("/gone"));
  h.ok({ type: "session", clientId: "c1", seq: 1, command: putOp("/s", "v", true) });
  h.ok({ type: "session", clientId: 7, seq: 1, command: delOp({ prefix: "/none" }, true) });
  const snap = h.store.snapshot();
  const restored = MetadataStore.fromSnapshot(JSON.parse(JSON.stringify(snap)));
  assert.deepEqual(restored.snapshot(), snap);
  assert.equal(restored.revision, h.store.revision);
  assert.equal(restored.appliedIndex, h.store.appliedIndex);
  assert.deepEqual([...restored.entries()], [...h.store.entries()]);
  assert.deepEqual(restored.session("c1"), h.store.session("c1"));
  // Both apply the next entries identically, sessions included.
  const next = [
    encodeCommand({ type: "session", clientId: "c1", seq: 1, command: putOp("/s", "v", true) }),
    encodeCommand({ type: "session", clientId: 7, seq: 2, command: putOp("/a", "3", true) }),
    encodePut("/b", "4"),
  ];
  for (const bytes of next) {
    const index = h.store.appliedIndex + 1;
    assert.deepEqual(restored.apply(bytes, index), h.store.apply(bytes, index));
  }
  assert.deepEqual(restored.snapshot(), h.store.snapshot());
});

Deno.test("fromSnapshot refuses inconsistent snapshots", () => {
  const h = new Harness();
  h.ok(putOp("/a", "1"));
  h.ok(putOp("/b", "1"));
  const snap = h.store.snapshot();
  assert.throws(
    () => MetadataStore.fromSnapshot({ ...snap, kvs: [snap.kvs[1], snap.kvs[0]] }),
    { message: 'Snapshot is invalid: keys out of order at "/a"' },
  );
  assert.throws(
    () => MetadataStore.fromSnapshot({ ...snap, revision: 2 }),
    /Snapshot is invalid: revisions of "\/b"/,
  );
  assert.throws(
    () => MetadataStore.fromSnapshot({ ...snap, format: 2 as 1 }),
    { message: 'Snapshot is invalid: unknown format "2"' },
  );
});
