/**
 * Reads at old revisions, checked against a naive full-history model: a map from every revision
 * to a full copy of the key-values at it. Random puts (with and without leases), deletes, txns,
 * lease revokes and compactions (explicit, and the automatic trim of `historyRevisionsMax`); after
 * each, ranges at random revisions (kept, compacted, future) with limit, keys-only, count-only,
 * sorting and revision filters; now and then every kept revision, a snapshot round trip (also one
 * written from a frozen store while later writes and a compaction apply), and watches from every
 * kept revision. With rare compactions the history grows to thousands of revisions, so ranges at
 * old revisions take both of the store's ways (walking the keys, undoing the writes since).
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type Command,
  COMPACTED_ERROR,
  FUTURE_REVISION_ERROR,
  type KeyRange,
  type KeyValue,
  type KvEvent,
  type MetadataStore,
  RevisionUnavailableError,
  type SortOrder,
  type SortTarget,
  text,
  type TxnOp,
  utf8,
} from "../src/kv/mod.ts";
import { compareKeys } from "../src/kv/sorted_map.ts";
import { WatchHub } from "../src/coord/watch.ts";
import {
  decodeStoreSnapshot,
  encodeStoreSnapshot,
  encodeStoreSnapshotChunks,
  joinChunks,
} from "../src/storage/store_snapshot.ts";
import { Harness, TestRng } from "./kv_helpers.ts";

interface ModelKv {
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
  readonly lease: number;
}

type State = Map<string, ModelKv>;

interface ModelRangeOptions {
  revision: number;
  limit: number;
  keysOnly: boolean;
  countOnly: boolean;
  sortOrder?: SortOrder;
  sortTarget?: SortTarget;
  minModRevision?: number;
  maxModRevision?: number;
  minCreateRevision?: number;
  maxCreateRevision?: number;
}

const KEYS = ["/a", "/a/1", "/a/2", "/a/3", "/b", "/b/1", "/b/2", "/c", "/c/x", "/d"];
const LEASES = [1, 2, 3];

function inRange(key: string, r: KeyRange): boolean {
  if ("prefix" in r) return key.startsWith(r.prefix);
  if ("fromKey" in r) return compareKeys(key, r.fromKey) >= 0;
  if (r.rangeEnd === undefined) return key === r.key;
  return compareKeys(key, r.key) >= 0 && compareKeys(key, r.rangeEnd) < 0;
}

/** The store's revisions written the slow, obvious way: every revision's full state. */
class HistoryModel {
  /** states[r] is the state at revision r (revision 1: empty). */
  readonly states: State[] = [new Map(), new Map()];
  compactRevision = 0;
  readonly leases = new Set<number>();

  constructor(readonly historyRevisionsMax: number, readonly rangeKvsMax: number) {}

  get revision(): number {
    return this.states.length - 1;
  }

  /** Applies the changes one command made (`changes` on a copy of the state), if any. */
  commit(change: (next: State, revision: number) => void): void {
    const next = new Map(this.states[this.revision]);
    const before = JSON.stringify([...next]);
    change(next, this.revision + 1);
    if (JSON.stringify([...next]) === before) return;
    this.states.push(next);
    // The automatic trim: at most historyRevisionsMax revisions after the compact revision.
    const kept = this.revision - Math.max(this.compactRevision, 1);
    if (kept > this.historyRevisionsMax) {
      this.compactRevision = this.revision - this.historyRevisionsMax;
    }
  }

  static put(s: State, key: string, value: string, lease: number, revision: number): void {
    const old = s.get(key);
    s.set(key, {
      value,
      createRevision: old?.createRevision ?? revision,
      modRevision: revision,
      version: (old?.version ?? 0) + 1,
      lease,
    });
  }

  static delete(s: State, range: KeyRange): void {
    for (const key of [...s.keys()]) if (inRange(key, range)) s.delete(key);
  }

  /** What a range at `revision` answers, or the etcd error it fails with. */
  range(range: KeyRange, o: ModelRangeOptions): unknown {
    const at = o.revision === 0 ? this.revision : o.revision;
    if (at > this.revision) return FUTURE_REVISION_ERROR;
    if (at < this.compactRevision) return COMPACTED_ERROR;
    let keys = [...this.states[at].keys()].filter((k) => inRange(k, range)).sort(compareKeys);
    const count = keys.length;
    if (o.countOnly) return { count, more: false, kvs: [] };
    const max = o.limit > 0 && o.limit < this.rangeKvsMax ? o.limit : this.rangeKvsMax;
    const state = this.states[at];
    // etcd's sort and filters: filters drop key-values (count stays), then the sort, then the
    // limit; a target other than KEY with order NONE and no filter sorts only the first
    // limit + 1 keys, ascending.
    const order = o.sortOrder ?? "none";
    const target = o.sortTarget ?? "key";
    const [minMod, maxMod] = [o.minModRevision ?? 0, o.maxModRevision ?? 0];
    const [minCreate, maxCreate] = [o.minCreateRevision ?? 0, o.maxCreateRevision ?? 0];
    const filters = minMod !== 0 || maxMod !== 0 || minCreate !== 0 || maxCreate !== 0;
    let more: boolean | undefined;
    if (filters || order !== "none" || target !== "key") {
      keys = keys.filter((k) => {
        const m = state.get(k)!;
        return (maxMod === 0 || m.modRevision <= maxMod) &&
          (minMod === 0 || m.modRevision >= minMod) &&
          (maxCreate === 0 || m.createRevision <= maxCreate) &&
          (minCreate === 0 || m.createRevision >= minCreate);
      });
      if (!filters && order === "none" && o.limit !== 0) keys = keys.slice(0, o.limit + 1);
      const sign = order === "descend" ? -1 : 1;
      const of = (k: string) =>
        target === "key" ? k : target === "value" ? state.get(k)!.value : state.get(k)![target];
      // Values here are ASCII, so string order is byte order; ties keep key order (stable).
      keys.sort((a, b) => {
        const [x, y] = [of(a), of(b)];
        return sign * (x < y ? -1 : x > y ? 1 : 0);
      });
      more = keys.length > max;
    }
    const kvs = keys.slice(0, max).map((key) => {
      const m = this.states[at].get(key)!;
      return {
        key,
        value: o.keysOnly ? "" : m.value,
        createRevision: m.createRevision,
        modRevision: m.modRevision,
        version: m.version,
        // etcd's keys_only drops only the value.
        lease: m.lease,
      };
    });
    return { count, more: more ?? count > kvs.length, kvs };
  }
}

function shown(kv: KeyValue) {
  return {
    key: kv.key,
    value: text(kv.value),
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
    version: kv.version,
    lease: kv.lease ?? 0,
  };
}

function storeRange(store: MetadataStore, range: KeyRange, o: ModelRangeOptions): unknown {
  try {
    const r = store.range(range, o);
    assert.equal(r.revision, store.revision, "a range's header has the current revision");
    return { count: r.count, more: r.more, kvs: r.kvs.map(shown) };
  } catch (e) {
    if (e instanceof RevisionUnavailableError) return e.message;
    throw e;
  }
}

function randomRange(rng: TestRng): KeyRange {
  switch (rng.int(4)) {
    case 0:
      return { key: rng.pick(KEYS) };
    case 1:
      return { prefix: rng.pick(["", "/a", "/a/", "/b/", "/c", "/e"]) };
    case 2:
      return { fromKey: rng.pick(KEYS) };
    default: {
      const [x, y] = [rng.pick(KEYS), rng.pick(KEYS)].sort(compareKeys);
      return { key: x, rangeEnd: x === y ? y + "\u0000" : y };
    }
  }
}

function randomOptions(rng: TestRng, model: HistoryModel): ModelRangeOptions {
  const low = Math.max(0, model.compactRevision - 2);
  const o: ModelRangeOptions = {
    revision: rng.chance(0.1) ? 0 : low + rng.int(model.revision + 3 - low),
    limit: rng.pick([0, 0, 1, 2, 3, 7]),
    keysOnly: rng.chance(0.2),
    countOnly: rng.chance(0.1),
  };
  if (rng.chance(0.3)) {
    o.sortOrder = rng.pick(["none", "ascend", "descend"] as const);
    o.sortTarget = rng.pick(["key", "version", "createRevision", "modRevision", "value"] as const);
  }
  const someRevision = () => rng.chance(0.5) ? 0 : 1 + rng.int(model.revision + 1);
  if (rng.chance(0.2)) {
    o.minModRevision = someRevision();
    o.maxModRevision = someRevision();
    o.minCreateRevision = someRevision();
    o.maxCreateRevision = someRevision();
  }
  return o;
}

/** One random command, applied to both; the store's answer must agree with the model. */
function step(rng: TestRng, h: Harness, model: HistoryModel, compactEvery: number): void {
  const leaseOf = () => {
    const id = rng.chance(0.3) ? rng.pick(LEASES) : 0;
    return model.leases.has(id) ? id : 0;
  };
  let kind = rng.int(20);
  // Compactions (kind 16 and up) only one step in `compactEvery`; the others write.
  if (kind >= 16 && compactEvery > 5 && !rng.chance(5 / compactEvery)) kind = rng.int(16);
  if (kind < 8) {
    const key = rng.pick(KEYS);
    const value = `v${rng.int(1000)}`;
    const lease = leaseOf();
    h.ok({ type: "put", key, value: utf8(value), prevKv: false, lease });
    model.commit((s, rev) => HistoryModel.put(s, key, value, lease, rev));
  } else if (kind < 11) {
    const range = randomRange(rng);
    h.ok({ type: "delete", range, prevKv: false });
    model.commit((s) => HistoryModel.delete(s, range));
  } else if (kind < 14) {
    // Distinct keys: a txn writes each key at most once.
    const pool = [...KEYS];
    const take = () => rng.chance(0.15) ? undefined : pool.splice(rng.int(pool.length), 1)[0];
    const [k1, k2, k3] = [take(), take(), take()];
    const guard = rng.pick(KEYS);
    const expect = `v${rng.int(3)}`;
    const ops: TxnOp[] = [];
    if (k1 !== undefined) ops.push({ type: "put", key: k1, value: utf8("t"), prevKv: false });
    if (k2 !== undefined) ops.push({ type: "delete", range: { key: k2 }, prevKv: false });
    const other: TxnOp[] = k3 === undefined
      ? []
      : [{ type: "put", key: k3, value: utf8("f"), prevKv: false }];
    h.ok({
      type: "txn",
      compare: [{ key: guard, target: "value", result: "notEqual", value: utf8(expect) }],
      success: ops,
      failure: other,
    });
    const held = model.states[model.revision].get(guard);
    const succeeded = held !== undefined && held.value !== expect;
    model.commit((s, rev) => {
      if (succeeded) {
        if (k1 !== undefined) HistoryModel.put(s, k1, "t", 0, rev);
        if (k2 !== undefined) s.delete(k2);
      } else if (k3 !== undefined) HistoryModel.put(s, k3, "f", 0, rev);
    });
  } else if (kind < 16) {
    const id = rng.pick(LEASES);
    if (model.leases.has(id)) {
      h.ok({ type: "leaseRevoke", id, expired: false });
      model.leases.delete(id);
      model.commit((s) => {
        for (const [key, kv] of [...s]) if (kv.lease === id) s.delete(key);
      });
    } else {
      h.ok({ type: "leaseGrant", id, ttlMs: 60_000 });
      model.leases.add(id);
    }
  } else {
    const low = Math.max(1, model.compactRevision - 1);
    // Rare compactions move a little, so the history stays long.
    const revision = compactEvery > 5
      ? Math.min(low + rng.int(50), model.revision + 1)
      : low + rng.int(model.revision + 2 - low);
    const r = h.apply({ type: "compact", revision } as Command);
    if (revision > model.revision) {
      assert.deepEqual(r, { ...r, status: "rejected", error: FUTURE_REVISION_ERROR });
    } else if (revision <= model.compactRevision) {
      assert.deepEqual(r, { ...r, status: "rejected", error: COMPACTED_ERROR });
    } else {
      assert.equal(r.status, "applied", JSON.stringify(r));
      model.compactRevision = revision;
    }
  }
  assert.equal(h.store.revision, model.revision, "revision");
  assert.equal(h.store.oldestRevision, model.compactRevision + 1, "compact revision");
}

/** Every kept revision, whole keyspace and a few ranges, and the bounds just outside. */
function checkAllRevisions(rng: TestRng, store: MetadataStore, model: HistoryModel): void {
  for (let rev = Math.max(0, model.compactRevision - 1); rev <= model.revision + 1; rev++) {
    for (const range of [{ prefix: "" }, randomRange(rng), randomRange(rng)]) {
      const o = { revision: rev, limit: 0, keysOnly: false, countOnly: false };
      assert.deepEqual(
        storeRange(store, range, o),
        model.range(range, o),
        `${JSON.stringify(range)} at ${rev}`,
      );
    }
  }
}

/** A watch from each kept revision replays the history: applied to the state then, each revision's
 * events make the state at that revision, and each event's prevKv is the key's previous value. */
function checkWatches(store: MetadataStore, model: HistoryModel): void {
  const hub = new WatchHub(() => store);
  // Every kept revision, or about 40 spread over a long history.
  const stride = Math.max(1, Math.floor((model.revision - model.compactRevision) / 40));
  for (let from = model.compactRevision; from <= model.revision; from += stride) {
    const state = new Map(model.states[from]);
    const revisions: number[] = [];
    const events: KvEvent[][] = [];
    const w = hub.subscribe(
      { range: { prefix: "" }, startRevision: from + 1, prevKv: true },
      (r) => {
        if (r.kind !== "events") return;
        revisions.push(r.revision);
        events.push([...r.events]);
      },
    );
    w.cancel();
    const expected = [];
    // Revision 1 (the empty store) has no events.
    for (let r = Math.max(from + 1, 2); r <= model.revision; r++) expected.push(r);
    assert.deepEqual(revisions, expected, `watch from ${from + 1}: one response per revision`);
    for (let i = 0; i < revisions.length; i++) {
      for (const e of events[i]) {
        const before = state.get(e.kv.key);
        assert.deepEqual(
          e.prevKv === undefined ? undefined : shown(e.prevKv),
          before === undefined ? undefined : { key: e.kv.key, ...before },
          `prevKv of ${e.kv.key} at ${revisions[i]}`,
        );
        if (e.type === "DELETE") state.delete(e.kv.key);
        else {
          const { key: _, ...kv } = shown(e.kv);
          state.set(e.kv.key, kv);
        }
      }
      assert.deepEqual(
        [...state].sort(([a], [b]) => compareKeys(a, b)),
        [...model.states[revisions[i]]].sort(([a], [b]) => compareKeys(a, b)),
        `state after the events of ${revisions[i]}`,
      );
    }
  }
}

function run(
  seed: number,
  steps: number,
  historyRevisionsMax: number,
  rangeKvsMax: number,
  compactEvery = 5,
) {
  const rng = new TestRng(seed);
  const options = { historyRevisionsMax, rangeKvsMax };
  let h = new Harness(options);
  const model = new HistoryModel(historyRevisionsMax, rangeKvsMax);
  for (let i = 1; i <= steps; i++) {
    step(rng, h, model, compactEvery);
    for (let j = 0; j < 3; j++) {
      const range = randomRange(rng);
      const o = randomOptions(rng, model);
      assert.deepEqual(
        storeRange(h.store, range, o),
        model.range(range, o),
        `step ${i}: ${JSON.stringify(range)} ${JSON.stringify(o)}`,
      );
    }
    if (i % 100 === 0) {
      checkAllRevisions(rng, h.store, model);
      checkWatches(h.store, model);
      // A snapshot round trip keeps the history: the restored store answers every read alike.
      const restored = decodeStoreSnapshot(encodeStoreSnapshot(h.store), options);
      assert.equal(restored.oldestRevision, h.store.oldestRevision);
      checkAllRevisions(rng, restored, model);
      h = Object.assign(new Harness(options), { store: restored, index: h.index });
    }
    if (i % 250 === 125) {
      // A snapshot written bit by bit from a frozen store while writes and a compaction apply
      // (the compaction frees versions only after the release) holds the history at the freeze.
      const frozen = h.store.freeze();
      const [revision, compactRevision] = [model.revision, model.compactRevision];
      const chunks: Uint8Array[] = [];
      for (const chunk of encodeStoreSnapshotChunks(frozen, { chunkBytes: 64 })) {
        chunks.push(chunk);
        if (chunks.length % 4 === 0) step(rng, h, model, compactEvery);
      }
      // One compaction past a few revisions, applied while the frozen store is open.
      const at = Math.min(model.compactRevision + 3, model.revision);
      if (at > model.compactRevision) {
        const r = h.apply({ type: "compact", revision: at } as Command);
        assert.equal(r.status, "applied", JSON.stringify(r));
        model.compactRevision = at;
      }
      frozen.release();
      step(rng, h, model, compactEvery);
      const then = decodeStoreSnapshot(joinChunks(chunks), options);
      assert.equal(then.revision, revision);
      assert.equal(then.oldestRevision, compactRevision + 1);
      const past = new HistoryModel(historyRevisionsMax, rangeKvsMax);
      past.states.length = 0;
      past.states.push(...model.states.slice(0, revision + 1));
      past.compactRevision = compactRevision;
      checkAllRevisions(rng, then, past);
      checkWatches(then, past);
    }
  }
  return h.store;
}

Deno.test("mvcc model: reads at every kept revision match a full-history model", async (t) => {
  await t.step("explicit compactions, wide history", () => void run(1, 1_500, 100_000, 10_000));
  await t.step("automatic trim at 40 revisions, rangeKvsMax 4", () => void run(7, 1_500, 40, 4));
  await t.step("another seed", () => void run(12345, 1_000, 200, 6));
  await t.step("no trim, rare compactions: thousands of revisions of history", () => {
    const store = run(99, 2_000, Infinity, 10_000, 400);
    assert.ok(store.revision - store.compactRevision > 1_000, "a long history was checked");
  });
});
