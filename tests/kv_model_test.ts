/**
 * 100,000 random commands applied to the store and to a naive reference model (a Map scanned in
 * full for every range), comparing every response, every event and, periodically, the whole state.
 */

import assert from "node:assert/strict";
import {
  type Command,
  type CommandResponse,
  type Compare,
  type DeleteCommand,
  encodeCommand,
  type KeyRange,
  type KeyValue,
  type PutCommand,
  type RangeCommand,
  type TxnCommand,
  type TxnOp,
  utf8,
} from "../src/kv/mod.ts";
import { Harness, TestRng } from "./kv_helpers.ts";

const encoded = new Map<string, Uint8Array>();
function bytesOfKey(k: string): Uint8Array {
  let b = encoded.get(k);
  if (b === undefined) encoded.set(k, b = utf8(k));
  return b;
}
function byteOrder(a: string, b: string): number {
  return bytewise(bytesOfKey(a), bytesOfKey(b));
}
function bytewise(x: Uint8Array, y: Uint8Array): number {
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

interface ModelKv {
  value: Uint8Array;
  createRevision: number;
  modRevision: number;
  version: number;
}

type ModelEvent = [string, string, number, number, number | undefined];

/** The store's semantics written the slow, obvious way. */
class Model {
  kvs = new Map<string, ModelKv>();
  revision = 1;
  sessions = new Map<string, { seq: number; response: CommandResponse }>();
  readonly universe: string[];
  readonly rangeKvsMax: number;

  constructor(universe: string[], rangeKvsMax: number) {
    this.universe = [...universe].sort(byteOrder);
    this.rangeKvsMax = rangeKvsMax;
  }

  #inRange(k: string, r: KeyRange): boolean {
    if ("prefix" in r) return k.startsWith(r.prefix);
    if ("fromKey" in r) return byteOrder(k, r.fromKey) >= 0;
    if (r.rangeEnd === undefined) return k === r.key;
    return byteOrder(k, r.key) >= 0 && byteOrder(k, r.rangeEnd) < 0;
  }

  #keys(r: KeyRange): string[] {
    return this.universe.filter((k) => this.kvs.has(k) && this.#inRange(k, r));
  }

  #kv(key: string): KeyValue {
    const m = this.kvs.get(key)!;
    return {
      key,
      value: m.value.slice(),
      createRevision: m.createRevision,
      modRevision: m.modRevision,
      version: m.version,
    };
  }

  apply(
    command: Exclude<TxnOp, TxnCommand> | TxnCommand,
  ): { response: CommandResponse; events: ModelEvent[] } {
    const rev = this.revision + 1;
    const events: ModelEvent[] = [];
    // deno-lint-ignore no-explicit-any
    let response: any;
    if (command.type === "txn") {
      const ok = command.compare.every((c) => this.#compare(c));
      // etcd's inner revisions: a put the new one; a delete or range the new one once the txn
      // changed something, else the one before.
      const responses = (ok ? command.success : command.failure).map((op) => {
        const r = this.#op(op as Exclude<TxnOp, TxnCommand>, rev, events);
        r.revision = op.type === "put" || events.length > 0 ? rev : this.revision;
        return r;
      });
      response = { type: "txn", succeeded: ok, responses };
    } else {
      response = this.#op(command, rev, events);
    }
    if (events.length > 0) this.revision = rev;
    response.revision = this.revision;
    return { response, events };
  }

  // deno-lint-ignore no-explicit-any
  #op(op: Exclude<TxnOp, TxnCommand>, rev: number, events: ModelEvent[]): any {
    if (op.type === "put") {
      const old = this.kvs.get(op.key);
      const prev = old ? this.#kv(op.key) : undefined;
      this.kvs.set(op.key, {
        value: op.value.slice(),
        createRevision: old ? old.createRevision : rev,
        modRevision: rev,
        version: old ? old.version + 1 : 1,
      });
      events.push(["PUT", op.key, rev, this.kvs.get(op.key)!.version, prev?.modRevision]);
      return op.prevKv && prev ? { type: "put", prevKv: prev } : { type: "put" };
    }
    if (op.type === "delete") {
      const keys = this.#keys(op.range);
      const prevKvs = keys.map((k) => this.#kv(k));
      for (const kv of prevKvs) {
        this.kvs.delete(kv.key);
        events.push(["DELETE", kv.key, rev, 0, kv.modRevision]);
      }
      return op.prevKv
        ? { type: "delete", deleted: keys.length, prevKvs }
        : { type: "delete", deleted: keys.length };
    }
    const keys = this.#keys(op.range);
    if (op.countOnly) return { type: "range", kvs: [], more: false, count: keys.length };
    const max = op.limit > 0 ? Math.min(op.limit, this.rangeKvsMax) : this.rangeKvsMax;
    const kvs = keys.slice(0, max).map((k) => {
      const kv = this.#kv(k);
      return op.keysOnly ? { ...kv, value: new Uint8Array() } : kv;
    });
    return { type: "range", kvs, more: keys.length > kvs.length, count: keys.length };
  }

  #compare(c: Compare): boolean {
    const m = this.kvs.get(c.key);
    if (c.target === "value" && m === undefined) return false;
    const d = c.target === "value"
      ? bytewise(m!.value, c.value)
      : (m && c.target !== "lease" ? m[c.target] : 0) - c.value;
    return c.result === "equal"
      ? d === 0
      : c.result === "notEqual"
      ? d !== 0
      : c.result === "greater"
      ? d > 0
      : d < 0;
  }
}

Deno.test("100,000 random commands agree with a naive reference model", () => {
  const rng = new TestRng(0xC0FFEE);
  const universe: string[] = [];
  for (const a of ["a", "b", "c"]) {
    for (let b = 0; b < 8; b++) for (let c = 0; c < 10; c++) universe.push(`/${a}/${b}/${c}`);
  }
  for (const u of ["é", "\uffff", "\u{1F600}", "\ue000", "z", "\0"]) {
    universe.push(`/u/${u}`, `/u/${u}${u}`);
  }
  const prefixes = [
    "",
    "/",
    "/a/",
    "/a/3",
    "/a/3/",
    "/b/1/",
    "/c/7/9",
    "/u/",
    "/u/\u{1F600}",
    "/zz",
  ];
  const rangeKvsMax = 50;
  const h = new Harness({ rangeKvsMax });
  const model = new Model(universe, rangeKvsMax);

  const key = () => rng.pick(universe);
  const value = () =>
    rng.chance(0.1)
      ? new Uint8Array(Array.from({ length: rng.int(4) }, () => rng.int(256)))
      : utf8(rng.pick(["", "x", "y", "leader", "10.0.0.1", "é"]));
  const range = (): KeyRange => {
    switch (rng.int(4)) {
      case 0:
        return { key: key() };
      case 1:
        return { key: key(), rangeEnd: key() };
      case 2:
        return { prefix: rng.pick(prefixes) };
      default:
        return { fromKey: key() };
    }
  };
  const put = (): PutCommand => ({
    type: "put",
    key: key(),
    value: value(),
    prevKv: rng.chance(0.5),
  });
  const del = (): DeleteCommand => ({
    type: "delete",
    range: rng.chance(0.7) ? { key: key() } : range(),
    prevKv: rng.chance(0.5),
  });
  const read = (): RangeCommand => ({
    type: "range",
    range: range(),
    limit: rng.pick([0, 0, 1, 3, 10, 60]),
    keysOnly: rng.chance(0.2),
    countOnly: rng.chance(0.1),
  });
  const compare = (): Compare => {
    const k = key();
    const result = rng.pick(["equal", "notEqual", "greater", "less"] as const);
    const existing = model.kvs.get(k);
    const target = rng.pick(["value", "version", "createRevision", "modRevision"] as const);
    if (target === "value") {
      return {
        key: k,
        target,
        result,
        value: existing && rng.chance(0.5) ? existing.value.slice() : value(),
      };
    }
    const near = existing ? existing[target] : 0;
    return { key: k, target, result, value: Math.max(0, near + rng.int(3) - 1) };
  };
  const op = (): TxnOp => {
    const p = rng.int(10);
    return p < 5 ? put() : p < 7 ? del() : read();
  };
  const plain = (): TxnOp | TxnCommand => {
    const p = rng.int(100);
    if (p < 40) return put();
    if (p < 55) return del();
    if (p < 70) return read();
    return {
      type: "txn",
      compare: Array.from({ length: rng.int(3) }, compare),
      success: Array.from({ length: rng.int(4) }, op),
      failure: Array.from({ length: rng.int(3) }, op),
    };
  };

  const clients = ["c0", "c1", 2, 3];
  const seqs = new Map<string | number, number>();
  const lastSent = new Map<string | number, Command>();
  let duplicates = 0;
  let compares = 0;
  for (let step = 0; step < 100_000; step++) {
    let command: Command;
    let expected: { response: CommandResponse; events: ModelEvent[] };
    let duplicate = false;
    const client = rng.pick(clients);
    if (rng.chance(0.3)) {
      const previous = lastSent.get(client);
      if (previous !== undefined && rng.chance(0.15)) {
        // A retry: same client, same seq, same command.
        command = previous;
        duplicate = true;
        expected = { response: model.sessions.get(String(client))!.response, events: [] };
      } else {
        const seq = (seqs.get(client) ?? 0) + 1;
        seqs.set(client, seq);
        const inner = plain();
        command = { type: "session", clientId: client, seq, command: inner };
        lastSent.set(client, command);
        expected = model.apply(inner);
        model.sessions.set(String(client), { seq, response: expected.response });
      }
    } else {
      command = plain();
      expected = model.apply(command);
    }
    const result = h.apply(encodeCommand(command));
    assert.ok(result.status === "applied", `step ${step}: ${JSON.stringify(result)}`);
    assert.equal(result.duplicate, duplicate, `step ${step}`);
    if (duplicate) duplicates++;
    assert.deepEqual(result.response, expected.response, `step ${step}`);
    assert.deepEqual(
      result.events.map((
        e,
      ) => [e.type, e.kv.key, e.kv.modRevision, e.kv.version, e.prevKv?.modRevision]),
      expected.events,
      `step ${step}`,
    );
    assert.equal(h.store.revision, model.revision, `step ${step}`);
    if (command.type === "txn" || (command.type === "session" && command.command.type === "txn")) {
      compares++;
    }
    if (step % 2500 === 0 || step === 99_999) {
      const sorted = model.universe.filter((k) => model.kvs.has(k));
      assert.deepEqual(
        [...h.store.entries()],
        sorted.map((k) => ({ key: k, ...model.kvs.get(k)! })),
        `state at step ${step}`,
      );
    }
  }
  // The run exercised what it claims to.
  assert.ok(duplicates > 500, `${duplicates} duplicates`);
  assert.ok(compares > 20_000, `${compares} transactions`);
  assert.ok(h.store.revision > 40_000, `revision ${h.store.revision}`);
  assert.ok(h.store.size > 50, `${h.store.size} keys at the end`);
});
