/**
 * Client histories of the key-value store: the operation record the simulated clients write, its
 * validation, and the JSON-lines format described in `docs/history-format.md`.
 *
 * @example
 * ```ts
 * import { historyToJsonLines, parseHistoryJsonLines } from "./history.ts";
 * const text = historyToJsonLines([
 *   { id: 1, clientId: "c1", kind: "put", key: "k", value: "a", callMs: 0, returnMs: 4, result: { ok: true } },
 * ]);
 * if (parseHistoryJsonLines(text)[0].value !== "a") throw new Error("round trip failed");
 * ```
 *
 * @module
 */

/** The kinds of operation a client issues against the key-value store. */
export type OperationKind = "get" | "put" | "delete" | "cas";

/** Every operation kind, in the order the format documents them. */
export const OPERATION_KINDS: readonly OperationKind[] = ["get", "put", "delete", "cas"];

/**
 * What the store answered. `ok` means, by kind:
 * - get: true when it answered, with `value` the value read (null = key absent); false when it
 *   failed, which tells nothing (then `value` is absent).
 * - put, delete: true when it took effect; false when it certainly did not (`value` is absent).
 * - cas: true when the compare matched and the new value was written; false when the compare
 *   failed, with `value` optionally the value (or null) the store held when it compared.
 */
export interface OperationResult {
  /** Whether the operation succeeded; see {@linkcode OperationResult} for its meaning per kind. */
  ok: boolean;
  /** A get's value read, or a failed cas's observed value; null means the key was absent. */
  value?: string | null;
}

/**
 * One client operation on one key, with its call and return in virtual milliseconds. An operation
 * with `returnMs` null has an unknown outcome (timed out, client crashed): it may have taken
 * effect at any time after `callMs`, or never.
 */
export interface Operation {
  /** Unique in the history; a non-negative integer. */
  id: number;
  /** The client that issued the operation. */
  clientId: string;
  /** What the operation does. */
  kind: OperationKind;
  /** The key it reads or writes. */
  key: string;
  /** A put's value, or a cas's new value; absent for get and delete. */
  value?: string;
  /** A cas's compare value (null = the key must be absent); absent for the other kinds. */
  expected?: string | null;
  /** Virtual time at which the client issued the call, in milliseconds. */
  callMs: number;
  /** Virtual time at which the client received the answer, or null when the outcome is unknown. */
  returnMs: number | null;
  /** The answer; present exactly when `returnMs` is not null. */
  result?: OperationResult;
}

const OPERATION_FIELDS = new Set([
  "id",
  "clientId",
  "kind",
  "key",
  "value",
  "expected",
  "callMs",
  "returnMs",
  "result",
]);
const RESULT_FIELDS = new Set(["ok", "value"]);

function show(value: unknown): string {
  return value === undefined ? "undefined" : JSON.stringify(value);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isTime(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0;
}

/**
 * Checks that `raw` is a well-formed {@linkcode Operation} and returns a normalized copy (fields in
 * the documented order, absent optional fields left out). `where` starts each error message,
 * e.g. `"Line 3"`.
 *
 * @throws {TypeError} naming the field and quoting the offending value.
 */
export function validateOperation(raw: unknown, where: string): Operation {
  const fail = (field: string, rule: string, value: unknown): never => {
    throw new TypeError(`${where}: field "${field}" ${rule}: ${show(value)}`);
  };
  if (!isObject(raw)) {
    throw new TypeError(`${where}: operation must be a JSON object: ${show(raw)}`);
  }
  for (const field of Object.keys(raw)) {
    if (!OPERATION_FIELDS.has(field)) fail(field, "is not a field of an operation", raw[field]);
  }
  const { id, clientId, kind, key, value, expected, callMs, returnMs, result } = raw;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
    fail("id", "must be a non-negative integer", id);
  }
  if (typeof clientId !== "string" || clientId === "") {
    fail("clientId", "must be a non-empty string", clientId);
  }
  if (typeof kind !== "string" || !(OPERATION_KINDS as readonly string[]).includes(kind)) {
    fail("kind", `must be one of ${OPERATION_KINDS.map(show).join(", ")}`, kind);
  }
  if (typeof key !== "string") fail("key", "must be a string", key);
  const writes = kind === "put" || kind === "cas";
  if (writes && typeof value !== "string") fail("value", `must be a string for a ${kind}`, value);
  if (!writes && value !== undefined) fail("value", `must be absent for a ${kind}`, value);
  if (kind === "cas" && expected !== null && typeof expected !== "string") {
    fail("expected", "must be a string or null for a cas", expected);
  }
  if (kind !== "cas" && expected !== undefined) {
    fail("expected", `must be absent for a ${kind}`, expected);
  }
  if (!isTime(callMs)) fail("callMs", "must be a finite non-negative number", callMs);
  if (returnMs !== null && (!isTime(returnMs) || returnMs < (callMs as number))) {
    fail("returnMs", `must be null or a number not less than callMs (${callMs})`, returnMs);
  }
  if (returnMs === null && result !== undefined) {
    fail("result", "must be absent when returnMs is null (unknown outcome)", result);
  }
  let normalizedResult: OperationResult | undefined;
  if (returnMs !== null) {
    if (!isObject(result)) fail("result", "must be an object when returnMs is set", result);
    const answer = result as Record<string, unknown>;
    for (const field of Object.keys(answer)) {
      if (!RESULT_FIELDS.has(field)) {
        fail(`result.${field}`, "is not a field of a result", answer[field]);
      }
    }
    if (typeof answer.ok !== "boolean") fail("result.ok", "must be a boolean", answer.ok);
    const observed = answer.value;
    const stringOrNull = observed === null || typeof observed === "string";
    if (kind === "get" && answer.ok && !stringOrNull) {
      fail("result.value", "must be a string or null for a successful get", observed);
    }
    if (kind === "get" && !answer.ok && observed !== undefined) {
      fail("result.value", "must be absent for a failed get", observed);
    }
    if ((kind === "put" || kind === "delete") && observed !== undefined) {
      fail("result.value", `must be absent for a ${kind}`, observed);
    }
    if (kind === "cas" && answer.ok && observed !== undefined) {
      fail("result.value", "must be absent for a successful cas", observed);
    }
    if (kind === "cas" && !answer.ok && observed !== undefined) {
      if (!stringOrNull) {
        fail("result.value", "must be a string or null for a failed cas", observed);
      }
      if (observed === expected) {
        fail("result.value", "of a failed cas must differ from its expected value", observed);
      }
    }
    normalizedResult = { ok: answer.ok as boolean };
    if (observed !== undefined) normalizedResult.value = observed as string | null;
  }
  return {
    id: id as number,
    clientId: clientId as string,
    kind: kind as OperationKind,
    key: key as string,
    ...(value === undefined ? {} : { value: value as string }),
    ...(expected === undefined ? {} : { expected: expected as string | null }),
    callMs: callMs as number,
    returnMs: returnMs as number | null,
    ...(normalizedResult === undefined ? {} : { result: normalizedResult }),
  };
}

/**
 * Serializes a history as JSON lines: one operation per line, fields in the documented order,
 * each line ending in `\n` (an empty history is the empty string).
 *
 * @throws {TypeError} when an operation is malformed or an id repeats, naming its index.
 */
export function historyToJsonLines(ops: readonly Operation[]): string {
  const ids = new Set<number>();
  let text = "";
  ops.forEach((raw, index) => {
    const op = validateOperation(raw, `Operation at index ${index}`);
    if (ids.has(op.id)) {
      throw new TypeError(
        `Operation at index ${index}: field "id" repeats an earlier id: ${op.id}`,
      );
    }
    ids.add(op.id);
    text += JSON.stringify(op) + "\n";
  });
  return text;
}

/**
 * Parses a JSON-lines history (see `docs/history-format.md`). Blank lines are skipped; `\r\n`
 * line ends are accepted.
 *
 * @throws {TypeError} naming the 1-based line number and the field at fault.
 */
export function parseHistoryJsonLines(text: string): Operation[] {
  const ops: Operation[] = [];
  const lineOfId = new Map<number, number>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].endsWith("\r") ? lines[i].slice(0, -1) : lines[i];
    if (line.trim() === "") continue;
    const where = `Line ${i + 1}`;
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new TypeError(`${where}: not valid JSON (${reason}): ${show(line)}`);
    }
    const op = validateOperation(raw, where);
    const earlier = lineOfId.get(op.id);
    if (earlier !== undefined) {
      throw new TypeError(`${where}: field "id" repeats the id of line ${earlier}: ${op.id}`);
    }
    lineOfId.set(op.id, i + 1);
    ops.push(op);
  }
  return ops;
}
