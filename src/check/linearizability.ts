/**
 * A linearizability checker for key-value client histories.
 *
 * The model is one register per key, whose state is a value or absent. The history is split by
 * key first (P-compositionality: a history is linearizable iff each key's sub-history is, as
 * Herlihy & Wing's locality and Porcupine's partitioning use). Each sub-history is then searched
 * with Wing & Gong's algorithm (1993) in Lowe's form ("Testing for linearizability", 2017): walk
 * a list of call and return events; at a call, try to linearize that operation now; at a return
 * whose operation is not yet linearized, backtrack. Lowe's memoization cuts the search: a
 * configuration (set of linearized operations, register state) fully explored once is never
 * explored again.
 *
 * An operation with an unknown outcome (`returnMs` null) is given a return at +infinity and is
 * optional: it may take effect at any point after its call, or never. Three reductions keep
 * many such operations affordable: values no operation observes share one state, unobserved
 * unknown writes are dropped when that is sound, and unknown operations with the same effect are
 * used in call order only (see `compile`).
 *
 * @example
 * ```ts
 * import { checkLinearizable } from "./linearizability.ts";
 * const verdict = checkLinearizable([
 *   { id: 1, clientId: "c1", kind: "put", key: "k", value: "a", callMs: 0, returnMs: 10, result: { ok: true } },
 *   { id: 2, clientId: "c2", kind: "get", key: "k", callMs: 5, returnMs: 8, result: { ok: true, value: "a" } },
 * ]);
 * if (verdict.result !== "linearizable") throw new Error(verdict.failure?.explanation);
 * ```
 *
 * @module
 */

import { type Operation, validateOperation } from "./history.ts";

/** The checker's verdict: "unknown" means the search hit its state limit before deciding. */
export type CheckVerdict = "linearizable" | "not-linearizable" | "unknown";

/** Options of {@linkcode checkLinearizable}. */
export interface CheckOptions {
  /**
   * Most (linearized set, state) configurations the search may memoize for one key before it
   * gives up with verdict "unknown". Default {@linkcode MAX_STATES_DEFAULT}.
   */
  maxStates?: number;
}

/** Why a history was not found linearizable: the key at fault and a readable account. */
export interface CheckFailure {
  /** The key whose sub-history failed (or could not be decided). */
  key: string;
  /** That key's whole sub-history, ordered by call time then id. */
  ops: Operation[];
  /** Human-readable account: the longest linearizable prefix found and the op that could not be placed, or the search limit. */
  explanation: string;
}

/** The outcome of {@linkcode checkLinearizable}. */
export interface CheckResult {
  /** True exactly when `result` is "linearizable". */
  ok: boolean;
  /** The verdict; "not-linearizable" wins over "unknown" when keys differ. */
  result: CheckVerdict;
  /** Operations in the keys whose check finished (all of them when `ok`). */
  checkedOps: number;
  /** Distinct keys in the history. */
  keys: number;
  /** Configurations memoized by the search, summed over the keys searched. */
  statesExplored: number;
  /** Present unless `ok`: the first failing key in key order (a violation before an unknown). */
  failure?: CheckFailure;
}

/** Default for {@linkcode CheckOptions.maxStates}: a million configurations per key. */
export const MAX_STATES_DEFAULT = 1_000_000;

/**
 * Checks that a key-value history is linearizable against a per-key register model: get returns
 * the state (null = absent), put sets it, delete makes it absent, and cas(expected, value)
 * succeeds iff the state equals `expected`, then sets `value`. Operation A precedes B in real
 * time only when `A.returnMs < B.callMs`; equal times count as concurrent. Failed gets, and puts
 * and deletes with `result.ok` false, took no effect and constrain nothing.
 *
 * @example
 * ```ts
 * import { checkLinearizable } from "./linearizability.ts";
 * const stale = checkLinearizable([
 *   { id: 1, clientId: "c1", kind: "put", key: "k", value: "a", callMs: 0, returnMs: 1, result: { ok: true } },
 *   { id: 2, clientId: "c1", kind: "put", key: "k", value: "b", callMs: 2, returnMs: 3, result: { ok: true } },
 *   { id: 3, clientId: "c2", kind: "get", key: "k", callMs: 4, returnMs: 5, result: { ok: true, value: "a" } },
 * ]);
 * if (stale.result !== "not-linearizable" || stale.failure?.key !== "k") throw new Error("missed");
 * ```
 *
 * @throws {TypeError} when an operation is malformed or an id repeats.
 * @throws {RangeError} when `maxStates` is not a positive integer.
 */
export function checkLinearizable(
  ops: readonly Operation[],
  options: CheckOptions = {},
): CheckResult {
  const maxStates = options.maxStates ?? MAX_STATES_DEFAULT;
  if (!Number.isSafeInteger(maxStates) || maxStates < 1) {
    throw new RangeError(`Option maxStates must be a positive integer: ${maxStates}`);
  }
  const ids = new Set<number>();
  const byKey = new Map<string, Operation[]>();
  ops.forEach((op, index) => {
    validateOperation(op, `Operation at index ${index}`);
    if (ids.has(op.id)) {
      throw new TypeError(
        `Operation at index ${index}: field "id" repeats an earlier id: ${op.id}`,
      );
    }
    ids.add(op.id);
    const keyOps = byKey.get(op.key);
    if (keyOps === undefined) byKey.set(op.key, [op]);
    else keyOps.push(op);
  });

  const keys = [...byKey.keys()].sort();
  let checkedOps = 0;
  let statesExplored = 0;
  let undecided: CheckFailure | undefined;
  for (const key of keys) {
    const keyOps = byKey.get(key)!.sort((a, b) => a.callMs - b.callMs || a.id - b.id);
    const outcome = searchKey(key, keyOps, maxStates);
    statesExplored += outcome.states;
    if (outcome.verdict === "unknown") {
      undecided ??= { key, ops: keyOps, explanation: outcome.explanation };
      continue;
    }
    checkedOps += keyOps.length;
    if (outcome.verdict === "not-linearizable") {
      const failure = { key, ops: keyOps, explanation: outcome.explanation };
      return {
        ok: false,
        result: "not-linearizable",
        checkedOps,
        keys: keys.length,
        statesExplored,
        failure,
      };
    }
  }
  if (undecided !== undefined) {
    return {
      ok: false,
      result: "unknown",
      checkedOps,
      keys: keys.length,
      statesExplored,
      failure: undecided,
    };
  }
  return { ok: true, result: "linearizable", checkedOps, keys: keys.length, statesExplored };
}

// ---------------------------------------------------------------------------------------------
// One key's search.

/** State id of "key absent". */
const ABSENT = 0;
/** State id shared by every value no operation can tell apart (see `compile`). */
const UNOBSERVED = 1;
/** Returned by `apply` when the operation cannot take effect in the given state. */
const REJECT = -1;

/** What a step requires of the state and what it leaves there. */
const enum Code {
  Get, // state must equal arg
  Write, // put (arg = value) or delete (arg = ABSENT)
  CasOk, // state must equal expect; then arg
  CasFailed, // state must differ from expect (and equal observed when observed >= 0)
  CasMaybe, // unknown outcome: linearized only when it would succeed (a failed cas is a no-op)
}

/** One operation as the search sees it: values interned to state ids. */
interface Step {
  op: Operation;
  code: Code;
  arg: number;
  expect: number;
  observed: number;
  /** False for an unknown outcome: may be left out, return at +infinity. */
  required: boolean;
  returnMs: number;
  /** Index into the required or the optional linearized set. */
  slot: number;
  /** For optional steps, the group of interchangeable steps; -1 for required ones. */
  group: number;
}

interface KeyOutcome {
  verdict: CheckVerdict;
  states: number;
  explanation: string;
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`Linearizability checker invariant broken: ${message}`);
}

function apply(state: number, step: Step): number {
  switch (step.code) {
    case Code.Get:
      return state === step.arg ? state : REJECT;
    case Code.Write:
      return step.arg;
    case Code.CasOk:
    case Code.CasMaybe:
      return state === step.expect ? step.arg : REJECT;
    case Code.CasFailed:
      return state !== step.expect && (step.observed < 0 || state === step.observed)
        ? state
        : REJECT;
  }
}

/**
 * A set of linearized steps, as a bitset with a compact memo key. Lowe's search linearizes
 * mostly in call order, so the set is nearly always "all steps below i, plus a few": the key
 * encodes the count of leading full words and then only the words up to the highest set bit.
 */
class LinearizedSet {
  readonly #words: Uint32Array;
  #fullBelow = 0; // words [0, fullBelow) are all ones
  #top = -1; // highest non-zero word, -1 when empty

  constructor(size: number) {
    this.#words = new Uint32Array(Math.ceil(size / 32));
  }

  add(i: number): void {
    const w = i >>> 5;
    this.#words[w] |= 1 << (i & 31);
    if (w > this.#top) this.#top = w;
    while (this.#fullBelow < this.#words.length && this.#words[this.#fullBelow] === 0xffffffff) {
      this.#fullBelow++;
    }
  }

  delete(i: number): void {
    const w = i >>> 5;
    this.#words[w] &= ~(1 << (i & 31));
    if (w < this.#fullBelow) this.#fullBelow = w;
    while (this.#top >= 0 && this.#words[this.#top] === 0) this.#top--;
  }

  /** A self-delimiting, injective encoding of the set, for the memo. */
  memoKey(): string {
    const count = Math.max(0, this.#top - this.#fullBelow + 1);
    let key = `${this.#fullBelow}:${count}:`;
    for (let w = this.#fullBelow; w <= this.#top; w++) {
      const word = this.#words[w];
      key += String.fromCharCode(word & 0xffff, word >>> 16);
    }
    return key;
  }
}

interface Compiled {
  steps: Step[];
  requiredCount: number;
  optionalCount: number;
  /** Per group, its optional steps in call order. */
  groups: number[][];
}

/**
 * Turns a key's operations (ordered by call) into search steps, with three reductions that keep
 * the verdict and tame the search when many outcomes are unknown:
 * 1. Values that no operation can observe (no get reads them, no cas compares to or reports
 *    them) are indistinguishable to the model, so all share the state {@linkcode UNOBSERVED}.
 * 2. An unknown-outcome write of an unobserved value can be left out when no failed cas without
 *    a reported value exists: the ops between it and the next write then observe nothing.
 * 3. Unknown-outcome steps with the same effect form a group; whichever members are used, using
 *    the earliest-called ones at the same points is as good, so the search only ever uses a
 *    group's members in call order (the set of used ones is always a prefix).
 */
function compile(keyOps: readonly Operation[]): Compiled {
  const observedValues = new Set<string>();
  for (const op of keyOps) {
    if (op.kind === "cas" && op.expected !== null) observedValues.add(op.expected!);
    const answer = op.result?.value;
    if (typeof answer === "string" && op.result!.ok === (op.kind === "get")) {
      observedValues.add(answer);
    }
  }
  const ids = new Map<string, number>();
  const intern = (value: string | null | undefined): number => {
    if (value === null || value === undefined) return ABSENT;
    if (!observedValues.has(value)) return UNOBSERVED;
    let id = ids.get(value);
    if (id === undefined) {
      id = UNOBSERVED + 1 + ids.size;
      ids.set(value, id);
    }
    return id;
  };

  let steps: Step[] = [];
  for (const op of keyOps) {
    const known = op.returnMs !== null;
    const ok = op.result?.ok ?? false;
    // No effect and nothing observed: unknown or failed gets, certainly failed puts and deletes.
    if (op.kind === "get" && !(known && ok)) continue;
    if ((op.kind === "put" || op.kind === "delete") && known && !ok) continue;
    const step: Step = {
      op,
      code: Code.Write,
      arg: ABSENT,
      expect: ABSENT,
      observed: -1,
      required: known,
      returnMs: op.returnMs ?? Infinity,
      slot: -1,
      group: -1,
    };
    if (op.kind === "get") {
      step.code = Code.Get;
      step.arg = intern(op.result!.value);
    } else if (op.kind === "put") {
      step.arg = intern(op.value);
    } else if (op.kind === "cas") {
      step.expect = intern(op.expected);
      step.arg = intern(op.value);
      step.code = !known ? Code.CasMaybe : ok ? Code.CasOk : Code.CasFailed;
      if (known && !ok && op.result!.value !== undefined) step.observed = intern(op.result!.value);
    }
    steps.push(step);
  }

  const blindFailedCas = steps.some((s) => s.code === Code.CasFailed && s.observed < 0);
  if (!blindFailedCas) steps = steps.filter((s) => s.required || s.arg !== UNOBSERVED);

  let requiredCount = 0;
  let optionalCount = 0;
  const groupOf = new Map<string, number>();
  const groups: number[][] = [];
  steps.forEach((step, index) => {
    if (step.required) {
      step.slot = requiredCount++;
      return;
    }
    step.slot = optionalCount++;
    const effect = `${step.code},${step.expect},${step.arg}`;
    let group = groupOf.get(effect);
    if (group === undefined) {
      group = groups.length;
      groupOf.set(effect, group);
      groups.push([]);
    }
    step.group = group;
    groups[group].push(index);
  });
  return { steps, requiredCount, optionalCount, groups };
}

function describeValue(value: string | null | undefined): string {
  return value === null || value === undefined ? "absent" : JSON.stringify(value);
}

/** One line per operation, e.g. `#7 c2 get("k") -> "b" at 10..20 ms`. */
function describe(op: Operation): string {
  const key = JSON.stringify(op.key);
  const call = op.kind === "put"
    ? `put(${key}, ${describeValue(op.value)})`
    : op.kind === "cas"
    ? `cas(${key}, ${describeValue(op.expected)} -> ${describeValue(op.value)})`
    : `${op.kind}(${key})`;
  let answer = "?";
  if (op.result !== undefined) {
    if (op.kind === "get") answer = op.result.ok ? describeValue(op.result.value) : "failed";
    else answer = op.result.ok ? "ok" : "failed";
    if (op.kind === "cas" && op.result.value !== undefined) {
      answer += ` (found ${describeValue(op.result.value)})`;
    }
  }
  const window = `${op.callMs}..${op.returnMs ?? "?"} ms`;
  return `#${op.id} ${op.clientId} ${call} -> ${answer} at ${window}`;
}

/** Wing & Gong's search with Lowe's memoization over one key's sub-history. */
function searchKey(key: string, keyOps: readonly Operation[], maxStates: number): KeyOutcome {
  const { steps, requiredCount, optionalCount, groups } = compile(keyOps);
  const n = steps.length;
  let requiredLeft = requiredCount;
  if (requiredLeft === 0) return { verdict: "linearizable", states: 0, explanation: "" };

  // Events: entry i is step i's call, entry n + i its return, entry 2n the list head. Ordered by
  // time; at equal times calls come first, so touching intervals count as concurrent.
  const order: number[] = [];
  for (let i = 0; i < 2 * n; i++) order.push(i);
  const timeOf = (e: number) => e < n ? steps[e].op.callMs : steps[e - n].returnMs;
  order.sort((a, b) => timeOf(a) - timeOf(b) || (a < n ? 0 : 1) - (b < n ? 0 : 1) || a - b);
  const head = 2 * n;
  const next = new Int32Array(2 * n + 1).fill(-1);
  const prev = new Int32Array(2 * n + 1).fill(-1);
  let last = head;
  for (const e of order) {
    next[last] = e;
    prev[e] = last;
    last = e;
  }
  // Dancing links: an unlinked entry keeps its neighbours, so undoing in reverse order restores it.
  const unlink = (e: number) => {
    next[prev[e]] = next[e];
    if (next[e] >= 0) prev[next[e]] = prev[e];
  };
  const relink = (e: number) => {
    next[prev[e]] = e;
    if (next[e] >= 0) prev[next[e]] = e;
  };

  const requiredSet = new LinearizedSet(requiredCount);
  const optionalSet = new LinearizedSet(optionalCount);
  const setOf = (step: Step) => step.required ? requiredSet : optionalSet;
  const groupUsed = new Int32Array(groups.length);
  const memo = new Set<string>();
  const stackStep = new Int32Array(n);
  const stackState = new Int32Array(n);
  let depth = 0;
  let state = ABSENT;
  let best: { prefix: Int32Array; blocked: number } | undefined;

  let entry = next[head];
  while (requiredLeft > 0) {
    assert(entry >= 0, "a required operation's return must remain in the event list");
    if (entry < n) {
      const step = steps[entry];
      const inTurn = step.required || groups[step.group][groupUsed[step.group]] === entry;
      const after = inTurn ? apply(state, step) : REJECT;
      if (after !== REJECT) {
        setOf(step).add(step.slot);
        const memoKey = `${after}:${requiredSet.memoKey()}${optionalSet.memoKey()}`;
        if (!memo.has(memoKey)) {
          if (memo.size >= maxStates) {
            return {
              verdict: "unknown",
              states: memo.size,
              explanation: `Search limit reached on key ${JSON.stringify(key)}: ` +
                `${memo.size} configurations explored (maxStates = ${maxStates}) without ` +
                `deciding its ${keyOps.length} operations; raise maxStates or shorten the history`,
            };
          }
          memo.add(memoKey);
          stackStep[depth] = entry;
          stackState[depth] = state;
          depth++;
          state = after;
          if (step.required) requiredLeft--;
          else groupUsed[step.group]++;
          unlink(entry);
          unlink(entry + n);
          entry = next[head];
          continue;
        }
        setOf(step).delete(step.slot);
      }
      entry = next[entry];
    } else {
      // The return of an operation not yet linearized: undo the last choice.
      const blocked = entry - n;
      assert(steps[blocked].required, "optional returns lie at +infinity, after required ones");
      if (best === undefined || depth > best.prefix.length) {
        best = { prefix: stackStep.slice(0, depth), blocked };
      }
      if (depth === 0) break;
      depth--;
      const undone = stackStep[depth];
      const step = steps[undone];
      state = stackState[depth];
      setOf(step).delete(step.slot);
      if (step.required) requiredLeft++;
      else groupUsed[step.group]--;
      assert(step.required || groups[step.group][groupUsed[step.group]] === undone, "LIFO groups");
      relink(undone + n);
      relink(undone);
      entry = next[undone];
    }
  }
  if (requiredLeft === 0) return { verdict: "linearizable", states: memo.size, explanation: "" };

  assert(best !== undefined, "a failed search has met a return");
  const placed = [...best.prefix].filter((i) => steps[i].required).length;
  const blocked = steps[best.blocked];
  // State ids merge unobserved values; name the value actually held by replaying the writes.
  let held = describeValue(null);
  for (const i of best.prefix) {
    const op = steps[i].op;
    const writes = op.kind === "put" || (op.kind === "cas" && steps[i].code !== Code.CasFailed);
    if (writes) held = describeValue(op.value);
    if (op.kind === "delete") held = describeValue(null);
  }
  const tail = [...best.prefix].slice(-5).map((i) =>
    `  ${describe(steps[i].op)}${steps[i].required ? "" : " (took effect)"}`
  );
  const elided = best.prefix.length > tail.length
    ? `  ... ${best.prefix.length - tail.length} earlier\n`
    : "";
  let reason = "";
  if (blocked.code === Code.Get) {
    reason = `: it read ${describeValue(blocked.op.result!.value)}, the register holds ${held}`;
  }
  if (blocked.code === Code.CasOk) {
    reason = `: it expected ${describeValue(blocked.op.expected)}, the register holds ${held}`;
  }
  const explanation = `Key ${JSON.stringify(key)} is not linearizable: no order of its ` +
    `operations respects both real time and the register.\n` +
    `Longest linearizable prefix found: ${placed} of ${requiredCount} completed operations` +
    (best.prefix.length === 0 ? ".\n" : `, ending with\n${elided}${tail.join("\n")}\n`) +
    `After it the register holds ${held}, and no placement of\n  ${describe(blocked.op)}\n` +
    `before its return leads to a linearization${reason}.`;
  return { verdict: "not-linearizable", states: memo.size, explanation };
}
