/**
 * A distributed lock and leader election in etcd's style (`clientv3/concurrency`): each contender
 * puts a key `<name>/<lease id>` with its session's lease; the holder is the contender whose key
 * has the lowest createRevision. Each waiter watches only the key just before its own (its
 * predecessor), so a release wakes one waiter, not all (no thundering herd).
 *
 * The holder's createRevision is its **fencing token**: it rises with each holder. A lock alone
 * cannot protect a resource from a holder that was paused past its lease (see
 * docs/coordination.md); the resource must refuse writes carrying a token lower than one it has
 * seen — {@linkcode fencedPut} does that for a key in the store.
 *
 * @module
 */

import type { CoordClient } from "./client.ts";
import type { Session } from "./session.ts";
import type { KeyValue, RangeResponse, TxnOp } from "../kv/types.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The lock or the election was lost: the session ended while waiting or holding. */
export class LockLostError extends Error {
  /** Makes the error. */
  constructor(message: string) {
    super(message);
    this.name = "LockLostError";
  }
}

/**
 * Classic bugs of the lock recipe, switched on only by tests to prove that the randomized
 * simulation's lock checker catches them (src/check/lock_checker.ts):
 * - `lock-skip-wait`: `lock` returns as soon as its key is in, without waiting for its
 *   predecessor (two holders at once);
 * - `fence-skip-compare`: `fencedPut` writes without comparing the token to the fence (a paused
 *   holder's stale write lands after a newer holder's).
 */
export type CoordFaultPoint = "lock-skip-wait" | "fence-skip-compare";

/** Options of {@linkcode lock} and {@linkcode fencedPut}. */
export interface LockOptions {
  /** Bugs to switch on (tests only). */
  readonly faultPoints?: readonly CoordFaultPoint[];
}

/** A held lock (or won election). */
export interface LockHandle {
  /** The lock's key `<name>/<lease hex>`. */
  readonly key: string;
  /** The fencing token: the key's createRevision, higher for every later holder. */
  readonly fencingToken: number;
  /**
   * The store revision of the read that found no key before this one: from that revision on the
   * lock service considers this session the holder, until the key is deleted.
   */
  readonly heldAtRevision: number;
  /** Releases the lock (deletes the key). */
  unlock(): Promise<void>;
}

function rangeOf(prefix: string): TxnOp {
  return { type: "range", range: { prefix }, limit: 0, keysOnly: false, countOnly: false };
}

/** The key in `kvs` with the greatest createRevision below `revision`. */
function predecessor(kvs: readonly KeyValue[], revision: number): KeyValue | undefined {
  let best: KeyValue | undefined;
  for (const kv of kvs) {
    if (kv.createRevision < revision && (!best || kv.createRevision > best.createRevision)) {
      best = kv;
    }
  }
  return best;
}

/** A queued key that holds: its createRevision and the revision of the read that showed it first. */
interface Queued {
  readonly key: string;
  readonly revision: number;
  readonly heldAtRevision: number;
}

/**
 * Puts this session's key under `prefix` (if absent) and waits until no key under `prefix` was
 * created before it (unless `skipWait`, a test-only bug).
 */
async function queue(
  session: Session,
  prefix: string,
  value: string,
  skipWait = false,
): Promise<Queued> {
  const client = session.client;
  const key = `${prefix}${session.lease.toString(16)}`;
  const first = await client.txn({
    compare: [{ key, target: "createRevision", result: "equal", value: 0 }],
    success: [
      { type: "put", key, value: encoder.encode(value), prevKv: false, lease: session.lease },
      rangeOf(prefix),
    ],
    failure: [rangeOf(prefix)],
  });
  let listing = first.responses[first.responses.length - 1] as RangeResponse;
  const mine = listing.kvs.find((kv) => kv.key === key);
  if (mine === undefined) throw new LockLostError(`Key ${JSON.stringify(key)} vanished at once`);
  const revision = mine.createRevision;
  if (skipWait) return { key, revision, heldAtRevision: listing.revision };
  for (;;) {
    if (session.state !== "alive") {
      throw new LockLostError(`Session ended while waiting for ${JSON.stringify(prefix)}`);
    }
    const before = predecessor(listing.kvs, revision);
    if (before === undefined) return { key, revision, heldAtRevision: listing.revision };
    await waitDeleted(client, before.key, listing.revision + 1, session);
    listing = await client.range({ prefix });
    if (!listing.kvs.some((kv) => kv.key === key)) {
      throw new LockLostError(
        `Key ${JSON.stringify(key)} was deleted while waiting (its lease ended)`,
      );
    }
  }
}

/** Waits until `key` is deleted at or after `fromRevision` (or the session ends). */
async function waitDeleted(
  client: CoordClient,
  key: string,
  fromRevision: number,
  session: Session,
): Promise<void> {
  const stream = client.watch({ range: { key }, startRevision: fromRevision });
  const ended = session.ended().then(() => stream.cancel());
  try {
    for await (const r of stream) {
      if (r.kind === "events" && r.events.some((e) => e.type === "DELETE")) return;
      if (r.kind === "canceled") return; // re-check by reading
    }
  } finally {
    stream.cancel();
    void ended;
  }
}

/**
 * Acquires the lock `name` for `session`: resolves when held, with the fencing token. Rejects with
 * {@linkcode LockLostError} when the session ends first.
 */
export async function lock(
  session: Session,
  name: string,
  options: LockOptions = {},
): Promise<LockHandle> {
  const skipWait = options.faultPoints?.includes("lock-skip-wait") ?? false;
  return handle(session, await queue(session, `${name}/`, "", skipWait));
}

function handle(session: Session, { key, revision, heldAtRevision }: Queued): LockHandle {
  return {
    key,
    fencingToken: revision,
    heldAtRevision,
    unlock: async () => {
      await session.client.txn({
        compare: [{ key, target: "createRevision", result: "equal", value: revision }],
        success: [{ type: "delete", range: { key }, prevKv: false }],
        failure: [],
      });
    },
  };
}

/**
 * Campaigns in election `name` with `value` (stored in the candidate's key from the start):
 * resolves when this session leads, with the fencing token of its leadership. `resign()` on the
 * handle steps down.
 */
export async function campaign(
  session: Session,
  name: string,
  value: string,
): Promise<LockHandle & { resign(): Promise<void> }> {
  const h = handle(session, await queue(session, `${name}/`, value));
  return { ...h, resign: h.unlock };
}

/** The current leader of election `name`: the value of the oldest key, or undefined. */
export async function leader(
  client: CoordClient,
  name: string,
): Promise<{ value: string; fencingToken: number } | undefined> {
  const r = await client.range({ prefix: `${name}/` });
  let first: KeyValue | undefined;
  for (const kv of r.kvs) if (!first || kv.createRevision < first.createRevision) first = kv;
  return first && { value: decoder.decode(first.value), fencingToken: first.createRevision };
}

/**
 * Follows election `name`: yields the leader's value each time leadership (or the leader's
 * value) changes, until the returned iterator is closed.
 */
export async function* observe(
  client: CoordClient,
  name: string,
): AsyncGenerator<{ value: string; fencingToken: number } | undefined> {
  let last: string | undefined = undefined;
  const first = await client.range({ prefix: `${name}/` });
  const stream = client.watch({ range: { prefix: `${name}/` }, startRevision: first.revision + 1 });
  try {
    let current = await leader(client, name);
    for (;;) {
      const id = current === undefined ? "" : `${current.fencingToken}:${current.value}`;
      if (id !== last) {
        last = id;
        yield current;
      }
      const r = await stream.next();
      if (r.done || r.value.kind === "canceled") return;
      if (r.value.kind === "events") current = await leader(client, name);
    }
  } finally {
    stream.cancel();
  }
}

/**
 * Writes `value` to `key` only if `fencingToken` is at least the highest token the resource has
 * seen (kept in `<key>.fence`); resolves with whether the write was accepted. This is what makes
 * a lock safe against a holder that was paused past its lease.
 */
export async function fencedPut(
  client: CoordClient,
  key: string,
  value: string,
  fencingToken: number,
  options: LockOptions = {},
): Promise<boolean> {
  const fence = `${key}.fence`;
  const token = encoder.encode(String(fencingToken).padStart(16, "0"));
  const writes: TxnOp[] = [
    { type: "put", key: fence, value: token, prevKv: false },
    { type: "put", key, value: encoder.encode(value), prevKv: false },
  ];
  if (options.faultPoints?.includes("fence-skip-compare")) {
    await client.txn({ compare: [], success: writes, failure: [] });
    return true;
  }
  // Tokens are zero-padded, so byte order is numeric order; a missing fence accepts any token.
  const r = await client.txn({
    compare: [{ key: fence, target: "value", result: "less", value: token }],
    success: writes,
    failure: [],
  });
  if (r.succeeded) return true;
  const equal = await client.txn({
    compare: [{ key: fence, target: "value", result: "equal", value: token }],
    success: writes,
    failure: [],
  });
  if (equal.succeeded) return true;
  const created = await client.txn({
    compare: [{ key: fence, target: "version", result: "equal", value: 0 }],
    success: writes,
    failure: [],
  });
  return created.succeeded;
}
