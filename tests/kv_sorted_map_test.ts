import assert from "node:assert/strict";
import { compareKeys, SortedMap, utf8 } from "../src/kv/mod.ts";
import { TestRng } from "./kv_helpers.ts";

function byteOrder(a: string, b: string): number {
  const x = utf8(a), y = utf8(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

const ALPHABET = [
  "a",
  "b",
  "/",
  "\0",
  "é",
  "\u07ff",
  "\u0800",
  "\ud7ff",
  "\ue000",
  "\uffff",
  "\u{10000}",
  "\u{1F600}",
];

Deno.test("compareKeys agrees with UTF-8 byte order", () => {
  const rng = new TestRng(7);
  const word = () => Array.from({ length: rng.int(5) }, () => rng.pick(ALPHABET)).join("");
  for (let i = 0; i < 20_000; i++) {
    const a = word(), b = rng.chance(0.3) ? a + word() : word();
    assert.equal(Math.sign(compareKeys(a, b)), Math.sign(byteOrder(a, b)), JSON.stringify([a, b]));
  }
});

Deno.test("SortedMap matches a reference map through inserts and deletes", () => {
  const rng = new TestRng(99);
  const map = new SortedMap<number>();
  const ref = new Map<string, number>();
  const key = () =>
    rng.chance(0.05) ? `/u/${rng.pick(ALPHABET)}${rng.int(50)}` : `/k/${rng.int(3000)}`;
  for (let step = 0; step < 60_000; step++) {
    const k = key();
    // Grow for the first half, then shrink, so merges and root collapse happen too.
    if (rng.chance(step < 30_000 ? 0.7 : 0.25)) {
      assert.equal(map.set(k, step), !ref.has(k));
      ref.set(k, step);
    } else {
      assert.equal(map.delete(k), ref.delete(k));
    }
    assert.equal(map.size, ref.size);
    if (step % 5000 === 0 || step === 59_999) {
      map.assertValid();
      const sorted = [...ref.keys()].sort(byteOrder);
      assert.deepEqual([...map.entries()].map(([k]) => k), sorted);
      for (let i = 0; i < 50; i++) {
        const probe = key();
        const rank = sorted.filter((k) => byteOrder(k, probe) < 0).length;
        assert.equal(map.rank(probe), rank);
        assert.deepEqual([...map.entries(probe)].map(([k]) => k), sorted.slice(rank));
        assert.equal(map.get(probe), ref.get(probe));
        assert.equal(map.has(probe), ref.has(probe));
      }
    }
  }
  for (const k of [...ref.keys()]) map.delete(k);
  map.assertValid();
  assert.equal(map.size, 0);
  assert.deepEqual([...map.entries()], []);
});

Deno.test("SortedMap stays valid with sequential inserts and deletes at 200,000 keys", () => {
  const map = new SortedMap<number>();
  const n = 200_000;
  const key = (i: number) => `/seq/${String(i).padStart(7, "0")}`;
  for (let i = 0; i < n; i++) map.set(key(i), i);
  map.assertValid();
  assert.equal(map.size, n);
  assert.equal(map.rank(key(123_456)), 123_456);
  assert.equal(map.countWhile((k) => k < key(1000)), 1000);
  assert.equal(map.firstKey(), key(0));
  for (let i = 0; i < n; i += 2) map.delete(key(i));
  map.assertValid();
  for (let i = n - 1; i >= n / 2; i--) map.delete(key(i));
  map.assertValid();
  assert.equal(map.size, n / 4);
  assert.deepEqual([...map.entries()].slice(0, 3).map(([, v]) => v), [1, 3, 5]);
});
