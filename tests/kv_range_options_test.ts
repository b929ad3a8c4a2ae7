/**
 * etcd 3.4's range options and transaction rules at the store and codec level: sorting, revision
 * filters, keys_only with leases, nested transactions, compares over a range and on LEASE, inner
 * header revisions, and the duplicate-key check. tests/etcd_diff_test.ts checks the same against a
 * real etcd through the JSON gateway.
 */

import assert from "node:assert/strict";
import {
  type Command,
  CommandError,
  type Compare,
  decodeCommand,
  DUPLICATE_KEY_ERROR,
  encodeCommand,
  type RangeResponse,
  type TxnCommand,
  type TxnResponse,
  utf8,
} from "../src/kv/mod.ts";
import { cmp, delOp, Harness, putOp, rangeOp, TestRng, txnOp } from "./kv_helpers.ts";
import { ResponseTooLargeError } from "../src/kv/store.ts";

/** A store holding, in this order: b=2, a=3, c=1, a=1 (so a: version 2, mod 4), d=2 with lease 5. */
function fixture(): Harness {
  const h = new Harness();
  h.ok({ type: "leaseGrant", id: 5, ttlMs: 60_000 });
  h.ok(putOp("b", "2")); // rev 2
  h.ok(putOp("a", "3")); // rev 3
  h.ok(putOp("c", "1")); // rev 4
  h.ok(putOp("a", "1")); // rev 5
  h.ok({ type: "put", key: "d", value: utf8("2"), prevKv: false, lease: 5 }); // rev 6
  return h;
}

const ALL = { prefix: "" } as const;
const keys = (r: RangeResponse) => r.kvs.map((kv) => kv.key).join(",");

Deno.test("range sorting as etcd 3.4", async (t) => {
  const { store } = fixture();
  await t.step("KEY descending", () => {
    assert.equal(keys(store.range(ALL, { sortOrder: "descend" })), "d,c,b,a");
  });
  await t.step("a target other than KEY with order NONE sorts ascending; ties in key order", () => {
    assert.equal(keys(store.range(ALL, { sortTarget: "value" })), "a,c,b,d");
    assert.equal(keys(store.range(ALL, { sortTarget: "version" })), "b,c,d,a");
    assert.equal(keys(store.range(ALL, { sortTarget: "createRevision" })), "b,a,c,d");
    assert.equal(
      keys(store.range(ALL, { sortTarget: "modRevision", sortOrder: "descend" })),
      "d,a,c,b",
    );
  });
  await t.step("with an order, the limit cuts after sorting the whole range", () => {
    const r = store.range(ALL, { sortTarget: "modRevision", sortOrder: "descend", limit: 2 });
    assert.equal(keys(r), "d,a");
    assert.equal(r.more, true);
    assert.equal(r.count, 4);
  });
  await t.step("etcd's quirk: order NONE sorts only the first limit + 1 keys", () => {
    // a, b, c read in key order, sorted by version: b(1), c(1), a(2); cut to 2.
    const r = store.range(ALL, { sortTarget: "version", limit: 2 });
    assert.equal(keys(r), "b,c");
    assert.equal(r.more, true);
  });
  await t.step("count_only counts, sorting or not", () => {
    const r = store.range(ALL, { sortTarget: "value", countOnly: true });
    assert.deepEqual([r.kvs.length, r.count, r.more], [0, 4, false]);
  });
  await t.step("unknown sort names are refused", () => {
    assert.throws(
      () => store.range(ALL, { sortTarget: "size" as "key" }),
      new CommandError('Unknown sort target: "size"'),
    );
  });
});

Deno.test("range revision filters: count stays unfiltered, more only past the limit", () => {
  const { store } = fixture();
  const r = store.range(ALL, { minModRevision: 3, maxModRevision: 5 });
  assert.equal(keys(r), "a,c");
  assert.deepEqual([r.count, r.more], [4, false]);
  assert.equal(keys(store.range(ALL, { minCreateRevision: 3 })), "a,c,d");
  assert.equal(keys(store.range(ALL, { maxCreateRevision: 3 })), "a,b");
  const limited = store.range(ALL, { minCreateRevision: 3, limit: 2 });
  assert.deepEqual([keys(limited), limited.more, limited.count], ["a,c", true, 4]);
  // etcd's filters are int64: a negative maximum keeps nothing.
  assert.equal(store.range(ALL, { maxModRevision: -1 }).kvs.length, 0);
  // At an old revision too (a was 3 at revision 4).
  const old = store.range(ALL, { revision: 4, sortTarget: "value", sortOrder: "descend" });
  assert.deepEqual(old.kvs.map((kv) => `${kv.key}=${new TextDecoder().decode(kv.value)}`), [
    "a=3",
    "b=2",
    "c=1",
  ]);
});

Deno.test("keys_only drops only the value: the lease stays", () => {
  const { store } = fixture();
  const [d] = store.range({ key: "d" }, { keysOnly: true }).kvs;
  assert.deepEqual({ ...d, value: [...d.value] }, {
    key: "d",
    value: [],
    createRevision: 6,
    modRevision: 6,
    version: 1,
    lease: 5,
  });
  const [old] = store.range({ key: "d" }, { keysOnly: true, revision: 6 }).kvs;
  assert.equal(old.lease, 5);
});

Deno.test("compares over a range end and on LEASE", async (t) => {
  const h = fixture();
  const holds = (...compare: Compare[]) =>
    (h.store.txnRead(txnOp(compare, [], [])) as TxnResponse).succeeded;
  await t.step("a compare over a range holds only if it holds for every key", () => {
    assert.equal(holds({ ...cmp("a", "version", "greater", 0), rangeEnd: "c" }), true);
    assert.equal(holds({ ...cmp("a", "version", "equal", 1), rangeEnd: "c" }), false);
    assert.equal(holds({ ...cmp("b", "version", "equal", 1), rangeEnd: "d" }), true);
    // "\u0000": every key from b on.
    assert.equal(holds({ ...cmp("b", "modRevision", "greater", 1), rangeEnd: "\u0000" }), true);
    assert.equal(holds({ ...cmp("b", "modRevision", "less", 6), rangeEnd: "\u0000" }), false);
  });
  await t.step("an empty range reads as a missing key; a value compare on it fails", () => {
    assert.equal(holds({ ...cmp("x", "createRevision", "equal", 0), rangeEnd: "z" }), true);
    assert.equal(holds({ ...cmp("x", "value", "notEqual", "q"), rangeEnd: "z" }), false);
  });
  await t.step("LEASE reads the key's lease (0 for none or missing)", () => {
    assert.equal(holds(cmp("d", "lease", "equal", 5)), true);
    assert.equal(holds(cmp("a", "lease", "equal", 0)), true);
    assert.equal(holds(cmp("zz", "lease", "equal", 0)), true);
    assert.equal(holds({ ...cmp("a", "lease", "equal", 0), rangeEnd: "\u0000" }), false);
  });
});

Deno.test("nested transactions: compares decided first, etcd's response shape and revisions", () => {
  const h = fixture(); // revision 6
  const r = h.ok(txnOp([], [
    rangeOp("a"),
    delOp("nothing"),
    // Decided before the outer put below runs: "n" does not exist yet.
    txnOp([cmp("n", "version", "equal", 0)], [putOp("m", "1")], [putOp("m", "2")]),
    putOp("n", "x"),
    rangeOp("n"),
  ])) as TxnResponse;
  assert.equal(r.revision, 7);
  assert.equal(h.store.getString("m"), "1");
  const [range, del, inner, put, after] = r.responses;
  // Before any write the inner reads report the old revision; after one, the new.
  assert.deepEqual([range.revision, del.revision, put.revision, after.revision], [6, 6, 7, 7]);
  assert.equal(inner.type, "txn");
  // etcd leaves a nested transaction's header empty.
  assert.deepEqual(inner, {
    type: "txn",
    revision: 0,
    succeeded: true,
    responses: [{ type: "put", revision: 7 }],
  });
  assert.equal((after as RangeResponse).kvs[0].key, "n");
  // A nested missing lease refuses the whole transaction, changing nothing.
  const missing = h.apply(txnOp([], [
    putOp("p", "1"),
    txnOp([], [{
      type: "put",
      key: "q",
      value: utf8("1"),
      prevKv: false,
      lease: 99,
    }]),
  ]));
  assert.equal(missing.status, "rejected");
  assert.equal(h.store.get("p"), undefined);
});

Deno.test("duplicate keys in a txn are refused before proposing, as etcd", async (t) => {
  const refused = (c: TxnCommand) =>
    assert.throws(() => decodeCommand(encodeCommand(c)), new CommandError(DUPLICATE_KEY_ERROR));
  const fine = (c: TxnCommand) => decodeCommand(encodeCommand(c));
  await t.step("two puts, a put inside a delete's range, across nested levels", () => {
    refused(txnOp([], [putOp("k", "1"), putOp("k", "2")]));
    refused(txnOp([], [], [putOp("k", "1"), putOp("k", "2")]));
    refused(txnOp([], [delOp({ prefix: "k/" }), putOp("k/1", "2")]));
    refused(txnOp([], [delOp({ key: "a", rangeEnd: "m" }), putOp("k", "2")]));
    refused(txnOp([], [putOp("k", "1"), txnOp([], [putOp("k", "2")])]));
    refused(txnOp([], [delOp("k"), txnOp([], [], [putOp("k", "2")])]));
  });
  await t.step("what etcd allows", () => {
    fine(txnOp([], [delOp("k"), delOp({ prefix: "k" })]));
    fine(txnOp([], [putOp("k", "1"), rangeOp("k")]));
    fine(txnOp([], [putOp("k", "1")], [putOp("k", "2")]));
    // The two branches of one nested txn never both run.
    fine(txnOp([], [txnOp([], [putOp("k", "1")], [putOp("k", "2")])]));
    // etcd 3.4 compares the range end "\0" as a key below every key: such a delete conflicts
    // with nothing.
    fine(txnOp([], [delOp({ fromKey: "a" }), putOp("k", "1")]));
  });
  await t.step("an entry logged before the check still applies as it did", () => {
    const h = new Harness();
    const r = h.ok(txnOp([], [putOp("k", "1"), putOp("k", "2")]));
    assert.equal(r.revision, 2);
    assert.equal(h.store.get("k")?.version, 2);
  });
});

Deno.test("codec: range options, compare range ends, LEASE and nested txns round-trip", () => {
  const rng = new TestRng(17);
  const SORTS = ["none", "ascend", "descend"] as const;
  const TARGETS = ["key", "version", "createRevision", "modRevision", "value"] as const;
  const range = () => ({
    ...rangeOp({ key: "a", rangeEnd: "z" }, { limit: rng.int(5) }),
    ...(rng.chance(0.5) ? { sortOrder: rng.pick(SORTS) } : {}),
    ...(rng.chance(0.5) ? { sortTarget: rng.pick(TARGETS) } : {}),
    ...(rng.chance(0.5) ? { minModRevision: rng.int(100) - 50 } : {}),
    ...(rng.chance(0.5) ? { maxCreateRevision: 2 ** 53 - 1 } : {}),
  });
  for (let i = 0; i < 200; i++) {
    const nested = txnOp(
      [{ ...cmp("k", "lease", "greater", rng.int(9)), rangeEnd: "\u0000" }],
      [range(), txnOp([{ ...cmp("a", "value", "equal", "x"), rangeEnd: "b" }], [range()])],
    );
    const c: Command = rng.chance(0.5) ? nested : range();
    const round = decodeCommand(encodeCommand(c));
    // Default options (none, key, 0) decode as absent.
    const strip = (x: unknown): unknown =>
      JSON.parse(
        JSON.stringify(x, (k, v) =>
          (k === "sortOrder" && v === "none") || (k === "sortTarget" && v === "key") ||
            (/Revision$/.test(k) && v === 0)
            ? undefined
            : v instanceof Uint8Array
            ? [...v]
            : v),
      );
    assert.deepEqual(strip(round), strip(c));
  }
  // A range without options keeps its old bytes (flags byte without bit 2).
  const plain = encodeCommand(rangeOp("a", { keysOnly: true }));
  assert.equal(plain.at(-1), 1);
});

Deno.test("an answer over its byte bound copies no value", async (t) => {
  // 40 keys of 1,000-byte values; a bound of 10,000 bytes holds fewer than 10 of them.
  const h = new Harness({ applyResponseBytesMax: 10_000 });
  for (let i = 0; i < 40; i++) h.ok(putOp(`k${String(i).padStart(2, "0")}`, "v".repeat(1000)));
  const { store } = h;
  const copied = () => store.rangeValueBytesCopied;

  await t.step("range: refused, nothing copied", () => {
    const before = copied();
    assert.throws(
      () => store.range(ALL, { responseBytesMax: 10_000 }),
      (e: unknown) => e instanceof ResponseTooLargeError && e.bytesMax === 10_000,
    );
    assert.equal(copied(), before);
  });

  await t.step("read-only txn: the third range overflows, the first two are not copied", () => {
    const before = copied();
    const txn = txnOp([], [rangeOp("k00"), rangeOp("k01"), rangeOp(ALL)]);
    assert.throws(
      () => store.txnRead(txn, { responseBytesMax: 10_000 }),
      ResponseTooLargeError,
    );
    assert.equal(copied(), before);
    // Within the bound: every picked key-value is copied, in its place.
    const r = store.txnRead(txnOp([], [rangeOp("k00"), rangeOp({ key: "k01", rangeEnd: "k04" })]), {
      responseBytesMax: 10_000,
    });
    const ranges = r.responses as RangeResponse[];
    assert.deepEqual(ranges.map(keys), ["k00", "k01,k02,k03"]);
    assert.ok(ranges.every((x) => x.kvs.every((kv) => kv.value.length === 1000)));
    assert.equal(copied(), before + 4000);
  });

  await t.step("write txn: applied, answer without key-values, nothing copied", () => {
    const before = copied();
    const r = h.ok(txnOp([], [putOp("k00", "new"), rangeOp(ALL)])) as TxnResponse;
    assert.equal(r.responseTooLarge, true);
    assert.deepEqual((r.responses[1] as RangeResponse).kvs, []);
    assert.equal(store.getString("k00"), "new");
    assert.equal(copied(), before);
  });

  await t.step("a range copied after the txn still reads what it read before a later put", () => {
    const r = h.ok(
      txnOp([], [rangeOp("k01"), putOp("k01", "changed"), rangeOp("k01")]),
    ) as TxnResponse;
    const [before, , after] = r.responses as RangeResponse[];
    assert.equal(new TextDecoder().decode(before.kvs[0].value), "v".repeat(1000));
    assert.equal(before.kvs[0].version, 1);
    assert.equal(new TextDecoder().decode(after.kvs[0].value), "changed");
    assert.equal(after.kvs[0].version, 2);
  });
});

Deno.test("shareValues: the store's own value arrays, unchanged by later writes", () => {
  const h = new Harness();
  h.ok(putOp("k1", "one"));
  h.ok(putOp("k2", "two"));
  const { store } = h;
  const before = store.rangeValueBytesCopied;
  const shared = { responseBytesMax: 1 << 20, shareValues: true };
  const a = store.range({ key: "k1", rangeEnd: "k3" }, shared);
  const b = store.txnRead(txnOp([], [rangeOp({ key: "k1", rangeEnd: "k3" })]), shared);
  // Nothing copied, and both answers hold the very same arrays.
  assert.equal(store.rangeValueBytesCopied, before);
  assert.equal((b.responses[0] as RangeResponse).kvs[0].value, a.kvs[0].value);
  // A copy is a different array with the same bytes.
  const copied = store.range({ key: "k1" }, { responseBytesMax: 1 << 20 });
  assert.notEqual(copied.kvs[0].value, a.kvs[0].value);
  assert.deepEqual(copied.kvs[0].value, a.kvs[0].value);
  // A later write replaces the value; the shared array still reads as before.
  h.ok(putOp("k1", "changed"));
  assert.equal(new TextDecoder().decode(a.kvs[0].value), "one");
  assert.equal(store.getString("k1"), "changed");
});
