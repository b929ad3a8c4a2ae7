/**
 * Benchmarks of the metadata store at 10,000 and 1,000,000 keys: put, get, a range of 100 keys,
 * a transaction and a range of 100 keys at an old revision (500 revisions back: the older code
 * served it only within its last 1,000 revisions), plus memory per key. Compaction and memory
 * per kept version: bench/kv_history_bench.ts.
 *
 *     deno bench --v8-flags=--expose-gc bench/kv_bench.ts
 *
 * (`--expose-gc` lets the memory figure collect garbage before measuring; without it the figure
 * includes garbage and says so.) Stores are built once, outside the timed loops.
 *
 * @module
 */

import { encodeCommand, encodePut, MetadataStore, utf8 } from "../src/kv/mod.ts";

/** How far back the old-revision range reads. */
const OLD_REVISIONS_BACK = 500;

const SIZES = [10_000, 1_000_000];
/** Pre-encoded commands per benchmark, cycled through, so encoding is not timed. */
const COMMANDS = 4096;

/** Hierarchical keys: 100 directories, keys spread across them. */
function keyOf(i: number): string {
  return `/bench/${String(i % 100).padStart(2, "0")}/key-${String(i).padStart(8, "0")}`;
}

/** A deterministic scramble of [0, n), so lookups hit the tree all over (no Math.random). */
function scrambled(count: number, n: number): number[] {
  let x = 0x9e3779b9;
  return Array.from({ length: count }, () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  });
}

const gc = (globalThis as { gc?: () => void }).gc;

function heapUsed(): number {
  gc?.();
  gc?.();
  return Deno.memoryUsage().heapUsed;
}

function build(n: number): MetadataStore {
  const store = new MetadataStore();
  const value = "10.0.0.1:2379"; // 13 bytes, a typical endpoint
  for (let i = 0; i < n; i++) store.apply(encodePut(keyOf(i), value), i + 1);
  return store;
}

for (const n of SIZES) {
  const before = heapUsed();
  const started = performance.now();
  const store = build(n);
  const buildMs = performance.now() - started;
  const after = heapUsed();
  console.log(
    `kv_bench: ${n.toLocaleString("en")} keys built in ${Math.round(buildMs)} ms ` +
      `(${Math.round((buildMs * 1e6) / n)} ns/put); heap ${
        ((after - before) / 2 ** 20).toFixed(1)
      } MiB, ` +
      `${Math.round((after - before) / n)} bytes per key (key ~25 B, value 13 B)` +
      (gc ? "" : " — run with --v8-flags=--expose-gc for a figure without garbage"),
  );

  const picks = scrambled(COMMANDS, n);
  const keys = picks.map(keyOf);
  const puts = picks.map((i) => encodePut(keyOf(i), `10.0.1.${i % 256}:2379`));
  const txns = picks.map((i) =>
    encodeCommand({
      type: "txn",
      compare: [{ key: keyOf(i), target: "version", result: "greater", value: 0 }],
      success: [{ type: "put", key: keyOf(i), value: utf8("leader"), prevKv: false }],
      failure: [{
        type: "range",
        range: { key: keyOf(i) },
        limit: 0,
        keysOnly: false,
        countOnly: false,
      }],
    })
  );
  let index = store.appliedIndex;
  let c = 0;
  const label = n.toLocaleString("en");

  Deno.bench({
    name: `put (overwrite) at ${label} keys`,
    group: `put ${label}`,
    fn() {
      store.apply(puts[c++ & (COMMANDS - 1)], ++index);
    },
  });
  Deno.bench({
    name: `get at ${label} keys`,
    group: `get ${label}`,
    fn() {
      if (store.get(keys[c++ & (COMMANDS - 1)]) === undefined) throw new Error("key missing");
    },
  });
  Deno.bench({
    name: `range of 100 keys at ${label} keys`,
    group: `range ${label}`,
    fn() {
      const r = store.range({ key: keys[c++ & (COMMANDS - 1)], rangeEnd: "/bench0" }, {
        limit: 100,
      });
      if (r.kvs.length === 0) throw new Error("empty range");
    },
  });
  Deno.bench({
    name: `txn (compare + put) at ${label} keys`,
    group: `txn ${label}`,
    fn() {
      store.apply(txns[c++ & (COMMANDS - 1)], ++index);
    },
  });
  Deno.bench({
    name: `range of 100 keys ${OLD_REVISIONS_BACK} revisions back at ${label} keys`,
    group: `range old ${label}`,
    fn() {
      const r = store.range({ key: keys[c++ & (COMMANDS - 1)], rangeEnd: "/bench0" }, {
        limit: 100,
        revision: Math.max(1, store.revision - OLD_REVISIONS_BACK),
      });
      if (r.kvs.length === 0) throw new Error("empty range");
    },
  });
}
