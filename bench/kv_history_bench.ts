/**
 * Memory and speed of the store's history (issue 17): builds `--keys` keys with `--versions`
 * versions each (one put per version, round-robin, so every key has its whole history), then
 * reports heap per kept version, the time of ranges of 100 keys at the newest and at an old
 * revision, and the time and heap freed by one compaction of every older version.
 *
 *     deno run --v8-flags=--expose-gc,--max-old-space-size=16000 bench/kv_history_bench.ts \
 *       --keys 1000000 --versions 10
 *
 * Without `--expose-gc` the heap figures include garbage and say so. Times are wall-clock on
 * whatever else the machine runs: read them as orders of magnitude, and compare runs made
 * side by side.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { encodeCommand, encodePut, MetadataStore } from "../src/kv/mod.ts";

const args = parseArgs({
  options: {
    keys: { type: "string", default: "100000" },
    versions: { type: "string", default: "10" },
    "value-bytes": { type: "string", default: "13" },
  },
});
const keyCount = Number(args.values.keys);
const versions = Number(args.values.versions);
const valueBytes = Number(args.values["value-bytes"]);
for (const [name, v] of [["keys", keyCount], ["versions", versions], ["value-bytes", valueBytes]]) {
  if (!Number.isSafeInteger(v) || (v as number) < 1) {
    throw new Error(`--${name} must be a positive integer: ${v}`);
  }
}

const gc = (globalThis as { gc?: () => void }).gc;
function heapUsed(): number {
  gc?.();
  gc?.();
  return Deno.memoryUsage().heapUsed;
}
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

function keyOf(i: number): string {
  return `/bench/${String(i % 100).padStart(2, "0")}/key-${String(i).padStart(8, "0")}`;
}

// The older store kept a bounded window (1,000 revisions, 64 MiB) unless told otherwise: make it
// keep everything too (the newer one ignores historyBytesMax: the quota bounds its history).
const store = new MetadataStore({ historyRevisionsMax: 1e15, historyBytesMax: 1e15 } as never);
const value = "v".repeat(valueBytes - 1);
const heap0 = heapUsed();
let index = 0;
const started = performance.now();
const revisionOfRound: number[] = [];
for (let round = 0; round < versions; round++) {
  for (let i = 0; i < keyCount; i++) {
    store.apply(encodePut(keyOf(i), `${value}${round % 10}`), ++index);
  }
  revisionOfRound.push(store.revision);
}
const buildMs = performance.now() - started;
const heap1 = heapUsed();
const total = keyCount * versions;
console.log(
  `${keyCount.toLocaleString("en")} keys x ${versions} versions (${
    total.toLocaleString("en")
  } puts, values ${valueBytes} B) in ${Math.round(buildMs)} ms (${
    Math.round(buildMs * 1e6 / total)
  } ns/put); heap ${mib(heap1 - heap0)}: ${Math.round((heap1 - heap0) / total)} bytes per version` +
    (gc ? "" : " (with garbage: run with --v8-flags=--expose-gc)"),
);
if ("backendBytes" in store) {
  console.log(`backendBytes (quota's count): ${mib(store.backendBytes)}`);
}

/**
 * Mean time of ranges at `revision`, for at most 2 s or 2,000 ranges: `span` 100 reads the 100
 * keys of [k, k + 100 keys) of one directory; `span` "to end" reads [k, end of the keys) with
 * limit 100, so its count needs every key after k (as etcd 3.4's count does at any revision).
 */
function timeRanges(revision: number, span: "100 keys" | "to end"): string {
  const t0 = performance.now();
  let got = 0;
  let n = 0;
  let x = 12345;
  while (n < 2000 && performance.now() - t0 < 2000) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const i = x % keyCount;
    const end = span === "to end" ? "/bench0" : keyOf(i + 100 * 100);
    const r = store.range({ key: keyOf(i), rangeEnd: end }, { limit: 100, revision });
    got += r.kvs.length;
    n++;
  }
  const us = (performance.now() - t0) * 1000 / n;
  return `${us.toFixed(1)} µs per range (${n} ranges, ${Math.round(got / n)} keys each)`;
}
timeRanges(0, "100 keys"); // warm-up: the first ranges run before the JIT compiles them
for (
  const [label, revision] of [
    ["current revision", 0],
    ["1 round back", revisionOfRound.at(-2) ?? 0],
    ["first round (oldest kept)", revisionOfRound[0]],
  ] as const
) {
  for (const span of ["100 keys", "to end"] as const) {
    try {
      console.log(`range(${span}) at ${label}: ${timeRanges(revision, span)}`);
    } catch (e) {
      console.log(`range(${span}) at ${label}: fails: ${(e as Error).message}`);
    }
  }
}

const compactAt = store.revision;
const t0 = performance.now();
const r = store.apply(encodeCommand({ type: "compact", revision: compactAt }), ++index);
// The store frees a batch per apply or step (a host calls compactStep on its ticks); the older
// store freed everything in the apply.
let steps = 0;
let stepMsMax = performance.now() - t0;
const s = store as unknown as { compactPending?: boolean; compactStep?: () => boolean };
while (s.compactPending) {
  const t = performance.now();
  s.compactStep!();
  stepMsMax = Math.max(stepMsMax, performance.now() - t);
  steps++;
}
const compactMs = performance.now() - t0;
console.log(
  `compaction: ${steps + 1} steps, longest ${
    stepMsMax.toFixed(1)
  } ms (the longest pause a node sees)`,
);
const heap2 = heapUsed();
console.log(
  `compaction at ${compactAt} (${r.status}): ${Math.round(compactMs)} ms for ${
    (total - keyCount).toLocaleString("en")
  } older versions; heap ${mib(heap1 - heap0)} -> ${mib(heap2 - heap0)} (freed ${
    mib(heap1 - heap2)
  })`,
);
if ("backendBytes" in store) console.log(`backendBytes after: ${mib(store.backendBytes)}`);
