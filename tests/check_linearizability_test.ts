import assert from "node:assert/strict";
import {
  historyToJsonLines,
  type Operation,
  parseHistoryJsonLines,
  validateOperation,
} from "../src/check/history.ts";
import { checkLinearizable, type CheckResult } from "../src/check/linearizability.ts";

/** Builds operations with increasing ids; `ret` null means the outcome is unknown. */
class History {
  readonly ops: Operation[] = [];
  #nextId = 1;

  #add(op: Omit<Operation, "id">): this {
    this.ops.push({ id: this.#nextId++, ...op });
    return this;
  }

  put(c: string, key: string, value: string, call: number, ret: number | null): this {
    return this.#add({
      clientId: c,
      kind: "put",
      key,
      value,
      callMs: call,
      returnMs: ret,
      ...(ret === null ? {} : { result: { ok: true } }),
    });
  }

  get(c: string, key: string, value: string | null, call: number, ret: number): this {
    return this.#add({
      clientId: c,
      kind: "get",
      key,
      callMs: call,
      returnMs: ret,
      result: { ok: true, value },
    });
  }

  del(c: string, key: string, call: number, ret: number | null): this {
    return this.#add({
      clientId: c,
      kind: "delete",
      key,
      callMs: call,
      returnMs: ret,
      ...(ret === null ? {} : { result: { ok: true } }),
    });
  }

  cas(
    c: string,
    key: string,
    expected: string | null,
    value: string,
    ok: boolean | null,
    call: number,
    ret: number | null,
    found?: string | null,
  ): this {
    const result = ok === null ? undefined : found === undefined ? { ok } : { ok, value: found };
    return this.#add({
      clientId: c,
      kind: "cas",
      key,
      expected,
      value,
      callMs: call,
      returnMs: ret,
      ...(result === undefined ? {} : { result }),
    });
  }
}

function assertVerdict(verdict: CheckResult, expected: CheckResult["result"]): void {
  assert.equal(verdict.result, expected, verdict.failure?.explanation ?? "linearizable");
  assert.equal(verdict.ok, expected === "linearizable");
}

Deno.test("linearizable histories are accepted", async (t) => {
  await t.step("empty history", () => {
    const verdict = checkLinearizable([]);
    assertVerdict(verdict, "linearizable");
    assert.equal(verdict.checkedOps, 0);
    assert.equal(verdict.keys, 0);
  });

  await t.step("sequential put, get, delete, get, cas", () => {
    const h = new History()
      .get("c1", "k", null, 0, 1)
      .put("c1", "k", "a", 2, 3)
      .get("c1", "k", "a", 4, 5)
      .del("c1", "k", 6, 7)
      .get("c1", "k", null, 8, 9)
      .cas("c1", "k", null, "b", true, 10, 11)
      .cas("c1", "k", "a", "c", false, 12, 13)
      .get("c1", "k", "b", 14, 15);
    const verdict = checkLinearizable(h.ops);
    assertVerdict(verdict, "linearizable");
    assert.equal(verdict.checkedOps, 8);
    assert.equal(verdict.keys, 1);
  });

  await t.step("overlapping put and get see either value", () => {
    for (const seen of [null, "a"]) {
      const h = new History().put("c1", "k", "a", 0, 10).get("c2", "k", seen, 2, 8);
      assertVerdict(checkLinearizable(h.ops), "linearizable");
    }
  });

  await t.step("a get may see the new value before the put returns, the next get too", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .put("c1", "k", "b", 2, 20)
      .get("c2", "k", "b", 3, 4)
      .get("c3", "k", "b", 5, 6);
    assertVerdict(checkLinearizable(h.ops), "linearizable");
  });

  await t.step("touching intervals count as concurrent", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .put("c1", "k", "b", 2, 5)
      .get("c2", "k", "a", 5, 6);
    assertVerdict(checkLinearizable(h.ops), "linearizable");
    h.ops[2].callMs = 6;
    assertVerdict(checkLinearizable(h.ops), "not-linearizable");
  });

  await t.step("concurrent cas where exactly one wins", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .cas("c1", "k", "a", "b", false, 2, 10)
      .cas("c2", "k", "a", "c", true, 3, 9)
      .cas("c3", "k", "a", "d", false, 4, 11, "c")
      .get("c2", "k", "c", 12, 13);
    assertVerdict(checkLinearizable(h.ops), "linearizable");
  });

  await t.step("an unknown-outcome put whose value is later read", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .put("c2", "k", "b", 2, null)
      .get("c1", "k", "a", 3, 4)
      .get("c1", "k", "b", 50, 51)
      .get("c3", "k", "b", 60, 61);
    assertVerdict(checkLinearizable(h.ops), "linearizable");
  });

  await t.step("an unknown-outcome put never seen", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .put("c2", "k", "b", 2, null)
      .get("c1", "k", "a", 3, 4)
      .get("c1", "k", "a", 50, 51);
    assertVerdict(checkLinearizable(h.ops), "linearizable");
  });

  await t.step("an unknown-outcome put explains a failed cas that reports nothing", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .put("c2", "k", "b", 2, null)
      .cas("c1", "k", "a", "c", false, 5, 6);
    assertVerdict(checkLinearizable(h.ops), "linearizable");
  });

  await t.step("unknown-outcome cas and delete, failed get and failed put", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .cas("c2", "k", "a", "b", null, 2, null)
      .del("c3", "k", 3, null)
      .get("c1", "k", "b", 10, 11)
      .get("c1", "k", null, 12, 13);
    h.ops.push(
      {
        id: 100,
        clientId: "c4",
        kind: "get",
        key: "k",
        callMs: 1,
        returnMs: 2,
        result: { ok: false },
      },
      {
        id: 101,
        clientId: "c4",
        kind: "put",
        key: "k",
        value: "zzz",
        callMs: 3,
        returnMs: 4,
        result: { ok: false },
      },
    );
    const verdict = checkLinearizable(h.ops);
    assertVerdict(verdict, "linearizable");
    assert.equal(verdict.checkedOps, 7);
  });
});

Deno.test("non-linearizable histories are rejected", async (t) => {
  await t.step("a read of a value never written", () => {
    const h = new History().put("c1", "k", "a", 0, 1).get("c2", "k", "ghost", 0, 5);
    const verdict = checkLinearizable(h.ops);
    assertVerdict(verdict, "not-linearizable");
    assert.match(verdict.failure!.explanation, /#2 c2 get\("k"\) -> "ghost"/);
    assert.match(verdict.failure!.explanation, /it read "ghost"/);
  });

  await t.step("a stale read after a completed put strictly before it", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .put("c1", "k", "b", 2, 3)
      .get("c2", "k", "a", 4, 5);
    const verdict = checkLinearizable(h.ops);
    assertVerdict(verdict, "not-linearizable");
    assert.match(verdict.failure!.explanation, /2 of 3 completed operations/);
    assert.match(verdict.failure!.explanation, /the register holds "b"/);
  });

  await t.step("two cas both succeeding on the same expected value", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .cas("c1", "k", "a", "b", true, 2, 10)
      .cas("c2", "k", "a", "c", true, 3, 9);
    assertVerdict(checkLinearizable(h.ops), "not-linearizable");
  });

  await t.step("a get returns the old value after another get returned the new one", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .put("c1", "k", "b", 2, 20)
      .get("c2", "k", "b", 3, 4)
      .get("c3", "k", "a", 5, 6);
    assertVerdict(checkLinearizable(h.ops), "not-linearizable");
  });

  await t.step("a deleted key read back before any new put", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .del("c1", "k", 2, 3)
      .get("c2", "k", "a", 4, 5)
      .put("c1", "k", "a", 6, 7);
    assertVerdict(checkLinearizable(h.ops), "not-linearizable");
  });

  await t.step("a failed cas whose compare would have matched", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .cas("c2", "k", "a", "b", false, 2, 3);
    assertVerdict(checkLinearizable(h.ops), "not-linearizable");
  });

  await t.step("a failed cas reporting a value the register never held then", () => {
    const h = new History()
      .put("c1", "k", "a", 0, 1)
      .cas("c2", "k", "x", "b", false, 2, 3, "z");
    assertVerdict(checkLinearizable(h.ops), "not-linearizable");
  });

  await t.step("an unknown put cannot take effect before its call", () => {
    const h = new History()
      .get("c1", "k", "b", 0, 1)
      .put("c2", "k", "b", 2, null);
    assertVerdict(checkLinearizable(h.ops), "not-linearizable");
  });
});

Deno.test("per-key partitioning reports the key at fault", () => {
  const h = new History()
    .put("c1", "x", "1", 0, 1)
    .put("c2", "y", "1", 0, 1)
    .get("c1", "x", "1", 2, 3)
    .put("c1", "y", "2", 2, 3)
    .get("c2", "y", "1", 4, 5)
    .get("c3", "z", null, 0, 9);
  const verdict = checkLinearizable(h.ops);
  assertVerdict(verdict, "not-linearizable");
  assert.equal(verdict.keys, 3);
  assert.equal(verdict.failure!.key, "y");
  assert.deepEqual(verdict.failure!.ops.map((op) => op.id), [2, 4, 5]);
  assert.match(verdict.failure!.explanation, /Key "y" is not linearizable/);
});

Deno.test("the search limit yields an unknown verdict, and a violation wins over it", () => {
  const h = new History();
  for (let i = 0; i < 40; i++) h.put(`c${i % 5}`, "k", `v${i}`, i, i + 6);
  h.get("c1", "k", "v39", 100, 101);
  const limited = checkLinearizable(h.ops, { maxStates: 10 });
  assertVerdict(limited, "unknown");
  assert.equal(limited.failure!.key, "k");
  assert.match(limited.failure!.explanation, /^Search limit reached on key "k"/);
  assert.equal(limited.checkedOps, 0);
  assertVerdict(checkLinearizable(h.ops), "linearizable");

  h.put("c1", "a", "1", 0, 1).get("c1", "a", "2", 2, 3);
  const both = checkLinearizable(h.ops, { maxStates: 10 });
  assertVerdict(both, "not-linearizable");
  assert.equal(both.failure!.key, "a");

  assert.throws(() => checkLinearizable([], { maxStates: 0 }), /maxStates must be .*: 0/);
});

Deno.test("malformed operations are refused by the checker", () => {
  const h = new History().put("c1", "k", "a", 0, 1);
  assert.throws(
    () => checkLinearizable([...h.ops, { ...h.ops[0] }]),
    /index 1: field "id" repeats an earlier id: 1/,
  );
  assert.throws(
    () => checkLinearizable([{ ...h.ops[0], returnMs: -1 }]),
    /field "returnMs" must be null or a number not less than callMs \(0\): -1/,
  );
});

Deno.test("JSON lines", async (t) => {
  const h = new History()
    .put("c1", "k", "a", 0, 1)
    .get("c2", "k", null, 0, 2.5)
    .del("c1", "k", 3, null)
    .cas("c2", "k", null, "b", true, 4, 6)
    .cas("c3", "k", "a", "c", false, 5, 7, "b")
    .cas("c3", "k", "a", "c", false, 8, 9)
    .cas("c1", "other", "x", "y", null, 10, null);

  await t.step("round trip", () => {
    const text = historyToJsonLines(h.ops);
    assert.equal(text.split("\n").length, h.ops.length + 1);
    assert.ok(text.endsWith("\n"));
    assert.deepEqual(parseHistoryJsonLines(text), h.ops);
    assert.deepEqual(parseHistoryJsonLines(text.replaceAll("\n", "\r\n") + "\n  \n"), h.ops);
    assert.equal(historyToJsonLines([]), "");
    assert.deepEqual(parseHistoryJsonLines(""), []);
  });

  await t.step("fields are written in the documented order", () => {
    const first = historyToJsonLines(h.ops).split("\n")[0];
    assert.equal(
      first,
      '{"id":1,"clientId":"c1","kind":"put","key":"k","value":"a","callMs":0,"returnMs":1,' +
        '"result":{"ok":true}}',
    );
    const { id, clientId, kind, key, value, callMs, returnMs, result } = h.ops[0];
    const shuffled = { result, returnMs, callMs, value, key, kind, clientId, id };
    assert.equal(historyToJsonLines([shuffled]).split("\n")[0], first);
  });

  await t.step("parse errors name the line and the field", () => {
    const good = historyToJsonLines(h.ops.slice(0, 1));
    const cases: [string, RegExp][] = [
      ["{not json", /: Line 2: not valid JSON .*: "\{not json"$/],
      ["[1]", /: Line 2: operation must be a JSON object: \[1\]$/],
      ['{"id":2,"clientId":"c","kind":"put","key":"k","value":"v","callMs":0}', /field "returnMs"/],
      [
        '{"id":2,"clientId":"c","kind":"update","key":"k","callMs":0,"returnMs":null}',
        /: Line 2: field "kind" must be one of "get", "put", "delete", "cas": "update"$/,
      ],
      [
        '{"id":2,"clientId":"c","kind":"get","key":"k","callMs":5,"returnMs":3,"result":{"ok":true,"value":null}}',
        /: Line 2: field "returnMs" must be null or a number not less than callMs \(5\): 3$/,
      ],
      [
        '{"id":1,"clientId":"c","kind":"delete","key":"k","callMs":0,"returnMs":null}',
        /: Line 2: field "id" repeats the id of line 1: 1$/,
      ],
      [
        '{"id":2,"clientId":"c","kind":"delete","key":"k","callMs":0,"returnMs":null,"return_ms":4}',
        /: Line 2: field "return_ms" is not a field of an operation: 4$/,
      ],
      [
        '{"id":2,"clientId":"c","kind":"delete","key":"k","callMs":0,"returnMs":null,"result":{"ok":true}}',
        /: Line 2: field "result" must be absent when returnMs is null/,
      ],
      [
        '{"id":2,"clientId":"c","kind":"get","key":"k","value":"v","callMs":0,"returnMs":null}',
        /: Line 2: field "value" must be absent for a get: "v"$/,
      ],
      [
        '{"id":2,"clientId":"c","kind":"get","key":"k","callMs":0,"returnMs":1,"result":{"ok":true}}',
        /: Line 2: field "result.value" must be a string or null for a successful get: undefined$/,
      ],
      [
        '{"id":2,"clientId":"c","kind":"cas","key":"k","value":"v","callMs":0,"returnMs":null}',
        /: Line 2: field "expected" must be a string or null for a cas: undefined$/,
      ],
      [
        '{"id":2,"clientId":"c","kind":"cas","key":"k","expected":"a","value":"v","callMs":0,"returnMs":1,"result":{"ok":false,"value":"a"}}',
        /: Line 2: field "result.value" of a failed cas must differ from its expected value: "a"$/,
      ],
      [
        '{"id":2.5,"clientId":"c","kind":"get","key":"k","callMs":0,"returnMs":null}',
        /: Line 2: field "id" must be a non-negative integer: 2.5$/,
      ],
      [
        '{"id":2,"clientId":"","kind":"get","key":"k","callMs":0,"returnMs":null}',
        /: Line 2: field "clientId" must be a non-empty string: ""$/,
      ],
      [
        '{"id":2,"clientId":"c","kind":"put","key":"k","value":"v","callMs":0,"returnMs":1,"result":{"ok":"yes"}}',
        /: Line 2: field "result.ok" must be a boolean: "yes"$/,
      ],
    ];
    for (const [line, message] of cases) {
      assert.throws(() => parseHistoryJsonLines(good + line + "\n"), message, line);
    }
  });

  await t.step("validateOperation returns a normalized copy", () => {
    const raw = { returnMs: null, callMs: 1, key: "k", kind: "delete", clientId: "c", id: 9 };
    const op = validateOperation(raw, "Here");
    assert.deepEqual(Object.keys(op), ["id", "clientId", "kind", "key", "callMs", "returnMs"]);
    assert.throws(() => validateOperation(null, "Here"), /^TypeError: Here: operation must/);
  });
});

// ---------------------------------------------------------------------------------------------
// Randomized tests.

/** Mulberry32: a tiny seeded generator, so every failure reproduces from its seed. */
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
 * Runs a real register sequentially: operation i takes effect at time 10 i, and its call and
 * return are drawn around that point, so the true order is a linearization. Some operations get
 * an unknown outcome, and of those some never take effect.
 */
function registerHistory(seed: number, count: number, clients: number, keys: number): Operation[] {
  const rand = prng(seed);
  const state = new Map<string, string | null>();
  const ops: Operation[] = [];
  for (let i = 0; i < count; i++) {
    const at = 10 * i + 30;
    const key = `k${rand(keys)}`;
    const current = state.get(key) ?? null;
    const callMs = at - rand(25);
    const returnMs = at + rand(25);
    const unknown = rand(10) === 0;
    const applied = !unknown || rand(2) === 0;
    const base = { id: i, clientId: `c${rand(clients)}`, key, callMs };
    const value = `v${i}`;
    const roll = rand(10);
    let op: Operation;
    if (roll < 4) {
      op = { ...base, kind: "get", returnMs, result: { ok: true, value: current } };
    } else if (roll < 7) {
      op = { ...base, kind: "put", value, returnMs, result: { ok: true } };
      if (applied) state.set(key, value);
    } else if (roll < 8) {
      op = { ...base, kind: "delete", returnMs, result: { ok: true } };
      if (applied) state.set(key, null);
    } else {
      const candidates = [current, null, `v${rand(i + 1)}`];
      const expected = candidates[rand(candidates.length)];
      const ok = expected === current;
      const found = !ok && rand(2) === 0 ? { value: current } : {};
      op = { ...base, kind: "cas", expected, value, returnMs, result: { ok, ...found } };
      if (ok && applied) state.set(key, value);
    }
    if (unknown) {
      delete op.result;
      op.returnMs = null;
    }
    ops.push(op);
  }
  return ops;
}

Deno.test("randomized register histories", async (t) => {
  await t.step("are always linearizable", () => {
    for (let seed = 1; seed <= 200; seed++) {
      const ops = registerHistory(seed, 150, 4, 3);
      const verdict = checkLinearizable(ops);
      assert.equal(verdict.result, "linearizable", `seed ${seed}: ${verdict.failure?.explanation}`);
      assert.equal(verdict.checkedOps, 150);
    }
  });

  await t.step("are caught with one get result corrupted", () => {
    for (let seed = 1; seed <= 200; seed++) {
      const ops = registerHistory(seed, 150, 4, 3);
      const rand = prng(seed * 7919);
      const gets = ops.filter((op) => op.kind === "get" && op.returnMs !== null);
      const victim = gets[rand(gets.length)];
      victim.result = { ok: true, value: `never-written-${seed}` };
      const verdict = checkLinearizable(ops);
      assert.equal(verdict.result, "not-linearizable", `seed ${seed}`);
      assert.equal(verdict.failure!.key, victim.key);
      assert.ok(verdict.failure!.explanation.includes(`#${victim.id} `), `seed ${seed}`);
    }
  });

  await t.step("are caught with a stale read moved after a later write", () => {
    // A get that reads the value of a write which was overwritten, and which is called after
    // the overwrite returned, is never linearizable.
    let caught = 0;
    for (let seed = 1; seed <= 100; seed++) {
      const ops = registerHistory(seed, 120, 4, 1);
      const known = ops.filter((op) => op.returnMs !== null);
      const puts = known.filter((op) => op.kind === "put");
      const rand = prng(seed * 31);
      const old = puts[rand(puts.length - 1)];
      const overwrite = puts.find((op) => op.callMs > old.returnMs!);
      if (overwrite === undefined) continue;
      const later = known.find((op) =>
        op.kind === "get" && op.callMs > overwrite.returnMs! &&
        !ops.some((w) => w.kind === "put" && w.value === old.value && w.id !== old.id)
      );
      if (later === undefined) continue;
      later.result = { ok: true, value: old.value! };
      const verdict = checkLinearizable(ops);
      assert.equal(verdict.result, "not-linearizable", `seed ${seed}`);
      caught++;
    }
    assert.ok(caught > 75, `only ${caught} seeds had a stale read to plant`);
  });
});

/**
 * A brute-force reference: try every order of the operations that respects real time, letting
 * unknown-outcome operations be skipped. Only for a handful of operations.
 */
function bruteForceLinearizable(ops: readonly Operation[]): boolean {
  const live = ops.filter((op) => {
    if (op.returnMs === null) return op.kind !== "get";
    return op.result!.ok || op.kind === "cas";
  });
  const placed = new Array(live.length).fill(false);
  const search = (state: Map<string, string | null>): boolean => {
    if (live.every((op, i) => placed[i] || op.returnMs === null)) return true;
    for (let i = 0; i < live.length; i++) {
      if (placed[i]) continue;
      const op = live[i];
      const blocked = live.some((other, j) =>
        !placed[j] && other.returnMs !== null && other.returnMs < op.callMs
      );
      if (blocked) continue;
      const current = state.get(op.key) ?? null;
      const next = new Map(state);
      if (op.kind === "get" && op.result!.value !== current) continue;
      if (op.kind === "put") next.set(op.key, op.value!);
      if (op.kind === "delete") next.set(op.key, null);
      if (op.kind === "cas") {
        const succeeds = current === op.expected;
        if (op.result === undefined || op.result.ok) {
          if (!succeeds) continue;
          next.set(op.key, op.value!);
        } else {
          if (succeeds) continue;
          if (op.result.value !== undefined && op.result.value !== current) continue;
        }
      }
      placed[i] = true;
      if (search(next)) return true;
      placed[i] = false;
    }
    return false;
  };
  return search(new Map());
}

function randomSmallHistory(
  rand: (n: number) => number,
  count: number,
  unknownOdds: number,
): Operation[] {
  const values = [null, "a", "b"];
  const pick = () => values[rand(values.length)];
  const ops: Operation[] = [];
  for (let id = 0; id < count; id++) {
    const callMs = rand(12);
    const returnMs = rand(unknownOdds) === 0 ? null : callMs + rand(6);
    const base = { id, clientId: `c${id}`, key: rand(4) === 0 ? "j" : "k", callMs, returnMs };
    const roll = rand(4);
    const ok = rand(5) !== 0;
    const known = returnMs !== null;
    let op: Operation;
    if (roll === 0) {
      op = { ...base, kind: "get", result: ok ? { ok, value: pick() } : { ok } };
    } else if (roll === 1) {
      op = { ...base, kind: "put", value: pick() ?? "c", result: { ok } };
    } else if (roll === 2) {
      op = { ...base, kind: "delete", result: { ok } };
    } else {
      const expected = pick();
      let found = rand(3) === 0 ? pick() : undefined;
      if (found === expected) found = undefined;
      const casOk = rand(2) === 0;
      op = {
        ...base,
        kind: "cas",
        expected,
        value: pick() ?? "c",
        result: !casOk && found !== undefined ? { ok: casOk, value: found } : { ok: casOk },
      };
    }
    if (!known) delete op.result;
    ops.push(op);
  }
  return ops;
}

Deno.test("agrees with a brute-force reference on small random histories", () => {
  const tally = { linearizable: 0, "not-linearizable": 0 };
  for (let seed = 1; seed <= 3000; seed++) {
    const rand = prng(seed);
    const ops = randomSmallHistory(rand, 3 + rand(6), seed % 2 === 0 ? 2 : 6);
    const expected = bruteForceLinearizable(ops) ? "linearizable" : "not-linearizable";
    const verdict = checkLinearizable(ops);
    assert.equal(
      verdict.result,
      expected,
      `seed ${seed}:\n${historyToJsonLines(ops)}${verdict.failure?.explanation ?? ""}`,
    );
    tally[expected]++;
  }
  // Both outcomes must be well represented, or the comparison proves little.
  assert.ok(tally.linearizable > 500 && tally["not-linearizable"] > 500, JSON.stringify(tally));
});

Deno.test("thousands of operations from five clients check quickly", () => {
  const ops = registerHistory(42, 5000, 5, 10);
  const verdict = checkLinearizable(ops);
  assertVerdict(verdict, "linearizable");
  assert.equal(verdict.checkedOps, 5000);
  assert.equal(verdict.keys, 10);
  assert.ok(verdict.statesExplored < 100_000, `explored ${verdict.statesExplored}`);
});
