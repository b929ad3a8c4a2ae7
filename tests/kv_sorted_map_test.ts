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

Deno.test("a frozen view keeps its entries through later inserts, updates and deletes", () => {
  const rng = new TestRng(4242);
  const map = new SortedMap<number>();
  const ref = new Map<string, number>();
  const key = () =>
    rng.chance(0.05) ? `/u/${rng.pick(ALPHABET)}${rng.int(40)}` : `/k/${rng.int(4000)}`;
  // Views taken at several points, each with what the map held then, checked at the end.
  const views: { view: ReturnType<SortedMap<number>["freeze"]>; held: [string, number][] }[] = [];
  for (let step = 0; step < 40_000; step++) {
    const k = key();
    if (rng.chance(step < 20_000 ? 0.7 : 0.3)) {
      map.set(k, step);
      ref.set(k, step);
    } else {
      map.delete(k);
      ref.delete(k);
    }
    if (step % 4000 === 1999) {
      views.push({ view: map.freeze(), held: [...ref].sort((a, b) => byteOrder(a[0], b[0])) });
    }
    // Release some views early, so the map also runs with no view open between freezes.
    if (step % 8000 === 7999) views.at(-1)!.view.release();
  }
  map.assertValid();
  assert.deepEqual([...map.entries()], [...ref].sort((a, b) => byteOrder(a[0], b[0])));
  assert.equal(views.length, 10);
  for (const { view, held } of views) {
    assert.equal(view.size, held.length);
    assert.deepEqual([...view.entries()], held);
    const [probe, value] = held[held.length >> 1];
    assert.equal(view.get(probe), value);
    const from = held.findIndex(([k]) => byteOrder(k, "/k/2") >= 0);
    assert.deepEqual(
      [...view.entries("/k/2", "/k/3")],
      held.slice(from).filter(([k]) => k < "/k/3"),
    );
    view.release();
    view.release(); // a second release does nothing
  }
  assert.equal(map.viewsOpen, 0);
  // With every view released the map writes in place again and stays valid.
  for (let i = 0; i < 2000; i++) map.delete(`/k/${i}`);
  map.assertValid();
});

Deno.test("a view's iterator survives writes to the map between its steps", () => {
  const map = new SortedMap<number>();
  for (let i = 0; i < 10_000; i++) map.set(`/k/${String(i).padStart(5, "0")}`, i);
  const view = map.freeze();
  const seen: number[] = [];
  let i = 0;
  for (const [, v] of view.entries()) {
    seen.push(v);
    // Every step rewrites, deletes and inserts around the view's position.
    map.set(`/k/${String(i).padStart(5, "0")}`, -1);
    map.delete(`/k/${String(9999 - i).padStart(5, "0")}`);
    map.set(`/k/${String(i).padStart(5, "0")}x`, -2);
    i++;
  }
  assert.deepEqual(seen, Array.from({ length: 10_000 }, (_, j) => j));
  view.release();
  map.assertValid();
  // Keys from 5000 on were deleted, then rewritten; the 10,000 `x` keys are new.
  assert.equal(map.size, 15_000);
});

Deno.test("SortedMap.fromSorted builds a valid tree of any size and refuses disorder", () => {
  for (const n of [0, 1, 2, 63, 64, 65, 95, 96, 97, 3071, 3072, 3073, 4096, 100_003]) {
    const keys = Array.from({ length: n }, (_, i) => `/b/${String(i).padStart(6, "0")}`);
    const map = SortedMap.fromSorted(keys, keys.map((_, i) => i));
    map.assertValid();
    assert.equal(map.size, n, `n = ${n}`);
    assert.deepEqual([...map.entries()].map(([k]) => k), keys, `n = ${n}`);
    if (n > 0) assert.equal(map.get(keys[n - 1]), n - 1);
    // It behaves like any other map afterwards.
    for (let i = 0; i < n; i += 3) map.delete(keys[i]);
    for (let i = 0; i < 200; i++) map.set(`/b/${i}z`, i);
    map.assertValid();
  }
  const mixed = ["/a", "/\ufffd", "/\u{1F600}"]; // UTF-8 order, not UTF-16 order
  SortedMap.fromSorted(mixed, [1, 2, 3]).assertValid();
  assert.throws(() => SortedMap.fromSorted(["/b", "/a"], [1, 2]), /strictly increasing/);
  assert.throws(() => SortedMap.fromSorted(["/a", "/a"], [1, 2]), /strictly increasing/);
  assert.throws(() => SortedMap.fromSorted(["/\u{1F600}", "/\ufffd"], [1, 2]), /strictly/);
});
