/**
 * Checking time of the linearizability checker on histories shaped like the simulation's: five
 * sequential clients, ten keys, a few operations in flight at once.
 *
 * Run with `deno bench bench/check_bench.ts`.
 */

import type { Operation } from "../src/check/history.ts";
import { checkLinearizable } from "../src/check/linearizability.ts";

/** Mulberry32, so every run checks the same histories. */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

/**
 * A linearizable history of `count` operations: a real register per key takes each operation at
 * its linearization point; each client issues one operation at a time, called up to 8 ms before
 * that point and answered up to 8 ms after it. A share `unknownPerMille` of operations time out
 * (returnMs null); half of those took effect.
 */
function clientHistory(seed: number, count: number, unknownPerMille: number): Operation[] {
  const clients = 5;
  const keys = 10;
  const rand = prng(seed);
  const freeAtMs = new Array<number>(clients).fill(0);
  const state = new Map<string, string | null>();
  const ops: Operation[] = [];
  let atMs = 10;
  while (ops.length < count) {
    atMs += 1 + rand(2);
    const free = [...freeAtMs.keys()].filter((c) => freeAtMs[c] <= atMs);
    if (free.length === 0) continue;
    const client = free[rand(free.length)];
    const id = ops.length;
    const key = `k${rand(keys)}`;
    const current = state.get(key) ?? null;
    const callMs = Math.max(freeAtMs[client], atMs - rand(9));
    const unknown = rand(1000) < unknownPerMille;
    const applied = !unknown || rand(2) === 0;
    const returnMs = unknown ? null : atMs + rand(9);
    freeAtMs[client] = (returnMs ?? atMs + 50) + 1;
    const base = { id, clientId: `c${client}`, key, callMs, returnMs };
    const value = `v${id}`;
    const roll = rand(10);
    let op: Operation;
    if (roll < 5) {
      op = { ...base, kind: "get", result: { ok: true, value: current } };
    } else if (roll < 8) {
      op = { ...base, kind: "put", value, result: { ok: true } };
      if (applied) state.set(key, value);
    } else if (roll < 9) {
      op = { ...base, kind: "delete", result: { ok: true } };
      if (applied) state.set(key, null);
    } else {
      const expected = rand(3) === 0 ? null : current;
      const ok = expected === current;
      op = { ...base, kind: "cas", expected, value, result: ok ? { ok } : { ok, value: current } };
      if (ok && applied) state.set(key, value);
    }
    if (unknown) delete op.result;
    ops.push(op);
  }
  return ops;
}

function check(ops: Operation[]): void {
  const verdict = checkLinearizable(ops);
  if (!verdict.ok) throw new Error(verdict.failure?.explanation);
}

for (const count of [1_000, 10_000]) {
  const label = count.toLocaleString("en-US");
  const allKnown = clientHistory(1, count, 0);
  const someUnknown = clientHistory(2, count, 20);
  Deno.bench(`check ${label} ops, 5 clients, 10 keys`, { group: label, baseline: true }, () => {
    check(allKnown);
  });
  Deno.bench(
    `check ${label} ops, 5 clients, 10 keys, 2% unknown outcomes`,
    { group: label },
    () => {
      check(someUnknown);
    },
  );
}
