/**
 * Helpers shared by the kv tests: a store driven with consecutive log indexes, and short builders
 * for commands.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type ApplyResult,
  type ClientId,
  type Command,
  type CommandResponse,
  type Compare,
  type CompareResult,
  type DeleteCommand,
  encodeCommand,
  type KeyRange,
  MetadataStore,
  type MetadataStoreOptions,
  type PutCommand,
  type RangeCommand,
  type TxnCommand,
  type TxnOp,
  utf8,
} from "../src/kv/mod.ts";

/** A store plus the next log index, so tests read like a log. */
export class Harness {
  /** The store under test. */
  readonly store: MetadataStore;
  /** Index of the last entry applied through this harness. */
  index = 0;

  /** A harness around a new store built with `options`. */
  constructor(options: MetadataStoreOptions = {}) {
    this.store = new MetadataStore(options);
  }

  /** Applies `command` (an object is encoded first) at the next index. */
  apply(command: Command | Uint8Array): ApplyResult {
    const bytes = command instanceof Uint8Array ? command : encodeCommand(command);
    return this.store.apply(bytes, ++this.index);
  }

  /** Applies `command` and returns its response, failing unless it was applied fresh. */
  ok(command: Command | Uint8Array): CommandResponse {
    const r = this.apply(command);
    assert.equal(r.status, "applied", JSON.stringify(r));
    assert.ok(r.status === "applied" && !r.duplicate);
    return r.response;
  }
}

/** A put of text. */
export function putOp(key: string, value: string, prevKv = false): PutCommand {
  return { type: "put", key, value: utf8(value), prevKv };
}

/** A delete of one key (a string) or a range. */
export function delOp(range: KeyRange | string, prevKv = false): DeleteCommand {
  return { type: "delete", range: typeof range === "string" ? { key: range } : range, prevKv };
}

/** A range read. */
export function rangeOp(
  range: KeyRange | string,
  options: { limit?: number; keysOnly?: boolean; countOnly?: boolean } = {},
): RangeCommand {
  return {
    type: "range",
    range: typeof range === "string" ? { key: range } : range,
    limit: options.limit ?? 0,
    keysOnly: options.keysOnly ?? false,
    countOnly: options.countOnly ?? false,
  };
}

/** A compare; a string operand is a value compare. */
export function cmp(
  key: string,
  target: Compare["target"],
  result: CompareResult,
  value: number | string,
): Compare {
  return target === "value"
    ? { key, target, result, value: utf8(String(value)) }
    : { key, target, result, value: value as number };
}

/** A transaction. */
export function txnOp(
  compare: Compare[],
  success: TxnOp[],
  failure: TxnOp[] = [],
): TxnCommand {
  return { type: "txn", compare, success, failure };
}

/** A session envelope. */
export function session(clientId: ClientId, seq: number, command: Command): Command {
  assert.notEqual(command.type, "session");
  return {
    type: "session",
    clientId,
    seq,
    command: command as Exclude<Command, { type: "session" }>,
  };
}

/** A seeded generator (xorshift32) for randomized tests; never Math.random. */
export class TestRng {
  #s: number;
  /** Starts at `seed` (non-zero after folding). */
  constructor(seed: number) {
    this.#s = (seed >>> 0) || 0x2545f491;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    let x = this.#s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#s = x;
    return x % n;
  }
  /** One of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.int(1_000_000) < p * 1_000_000;
  }
}
