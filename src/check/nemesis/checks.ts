/**
 * The checks of a real-process fault run, over what the run recorded: the key-value history, the
 * lock records, the watcher's events and each node's committed history. Pure: no processes, no
 * clock, so a test can feed it a recorded run with one thing broken and see it caught.
 *
 * @module
 */

import { checkLinearizable } from "../linearizability.ts";
import type { Operation } from "../history.ts";
import { checkLocks, type LockCheckResult, type LockRecord } from "../lock_checker.ts";

/** Keys of the run: every key the clients touch is under {@linkcode NEMESIS_PREFIX}. */
export const NEMESIS_PREFIX = "/nemesis/";
/** Keys of the key-value clients. */
export const KV_PREFIX = "/nemesis/kv/";
/** The lock the lock workers take. */
export const LOCK_NAME = "/nemesis/lock";
/** The resource written with `fencedPut`. */
export const FENCED_KEY = "/nemesis/locked/fenced";
/** The resource written by a transaction comparing the holder's lock key. */
export const OWNED_KEY = "/nemesis/locked/owned";

/** A committed change under the run's prefix (a DELETE has value "" and createRevision 0). */
export interface CommittedEvent {
  /** The revision. */
  revision: number;
  /** PUT or DELETE. */
  type: "PUT" | "DELETE";
  /** The key. */
  key: string;
  /** The value after a PUT. */
  value: string;
  /** The key's createRevision after a PUT. */
  createRevision: number;
}

/** What a run recorded. */
export interface RunRecord {
  /** The key-value history (docs/history-format.md). */
  readonly ops: readonly Operation[];
  /** The lock workers' records. */
  readonly lockRecords: readonly LockRecord[];
  /** The watcher's events, in the order it received them. */
  readonly watched: readonly CommittedEvent[];
  /** Each node's committed history (same revisions on every node), by node id. */
  readonly committed: ReadonlyMap<string, readonly CommittedEvent[]>;
  /** The watcher must have seen every committed event up to this revision. */
  readonly watchedTo: number;
}

/** The verdicts. */
export interface RunVerdict {
  /** Every violation found, in words (empty: none). */
  readonly violations: string[];
  /** Acknowledged puts and cas missing from the committed history. */
  readonly lostAcknowledgedWrites: number;
  /** The linearizability checker's verdict. */
  readonly linearizability: string;
  /** The lock checker's figures. */
  readonly locks: LockCheckResult;
}

/** The first difference between two event lists, or undefined when equal. */
export function firstDifference(
  a: readonly CommittedEvent[],
  b: readonly CommittedEvent[],
): string | undefined {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i] === undefined ? undefined : JSON.stringify(a[i]);
    const y = b[i] === undefined ? undefined : JSON.stringify(b[i]);
    if (x !== y) return `event ${i}: ${x ?? "(none)"} vs ${y ?? "(none)"}`;
  }
  return undefined;
}

/**
 * Checks a run: nodes agree on the committed history; the watcher saw each committed event once,
 * in revision order; every acknowledged put and cas committed and no committed value is one no
 * client wrote; the history is linearizable; the lock guarantees hold.
 */
export function checkRun(record: RunRecord): RunVerdict {
  const violations: string[] = [];
  const [[firstId, committed], ...others] = [...record.committed];
  for (const [id, events] of others) {
    const diff = firstDifference(committed, events);
    if (diff !== undefined) violations.push(`nodes disagree: ${firstId} vs ${id}, ${diff}`);
  }
  const upTo = (e: CommittedEvent) => e.revision <= record.watchedTo;
  const diff = firstDifference(record.watched.filter(upTo), committed.filter(upTo));
  if (diff !== undefined) {
    violations.push(`watcher (first) and committed history (second) differ at ${diff}`);
  }
  const committedPuts = new Set(
    committed.filter((e) => e.type === "PUT" && e.key.startsWith(KV_PREFIX))
      .map((e) => `${e.key}=${e.value}`),
  );
  const written = new Set(
    record.ops.filter((o) => o.value !== undefined).map((o) => `${o.key}=${o.value}`),
  );
  const lost = record.ops.filter((o) =>
    (o.kind === "put" || o.kind === "cas") && o.result?.ok === true &&
    !committedPuts.has(`${o.key}=${o.value}`)
  );
  for (const o of lost.slice(0, 5)) {
    violations.push(`acknowledged ${o.kind} never committed: ${JSON.stringify(o)}`);
  }
  for (const v of [...committedPuts].filter((v) => !written.has(v)).slice(0, 5)) {
    violations.push(`committed value no client wrote: ${v}`);
  }
  const verdict = checkLinearizable(record.ops);
  if (verdict.result === "not-linearizable") {
    violations.push(`not linearizable: ${verdict.failure?.explanation}`);
  } else if (verdict.result === "unknown") {
    violations.push(`linearizability undecided: ${verdict.failure?.explanation}`);
  }
  const locks = checkLocks({
    prefix: `${LOCK_NAME}/`,
    fencedKey: FENCED_KEY,
    ownedKey: OWNED_KEY,
    records: record.lockRecords,
    events: committed.filter((e) =>
      e.key.startsWith(`${LOCK_NAME}/`) || e.key === FENCED_KEY || e.key === OWNED_KEY
    ),
  });
  if (locks.violation !== undefined) violations.push(`locks: ${locks.violation}`);
  return {
    violations,
    lostAcknowledgedWrites: lost.length,
    linearizability: verdict.result,
    locks,
  };
}
