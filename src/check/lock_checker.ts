/**
 * The lock checker of the randomized simulation: from what the lock clients saw (grants, writes
 * and their outcomes) and what the store committed (the events of the lock's keys and of the
 * protected resources, by revision), it checks the guarantees docs/coordination.md states:
 *
 * 1. a grant's fencing token is the createRevision of the holder's key, which the store did create;
 * 2. mutual exclusion in the lock service: at the revision of the read that granted the lock, the
 *    holder's key existed and no key under the lock's prefix was older;
 * 3. tokens of successive grants strictly increase, in the service's order (the grant reads'
 *    revisions) and in real time (a grant that returned before another was asked for is lower);
 * 4. the fenced resource (`fencedPut`) accepts tokens in non-decreasing order: no stale holder's
 *    write lands after a newer holder's;
 * 5. the owned resource (a transaction comparing the holder's lock key) is written only by the
 *    holder the service recognises at that revision: two holders never both get writes in;
 * 6. clients are told the truth: a write reported accepted committed, a refused one did not.
 *
 * The checker reads no clock and drives nothing; `src/check/simulation.ts` records the history.
 *
 * @module
 */

/** A lock acquired: what `lock()` resolved with. */
export interface LockGrant {
  /** Discriminant. */
  readonly kind: "grant";
  /** Unique in the history. */
  readonly id: number;
  /** The client (one incarnation of a lock worker). */
  readonly clientId: string;
  /** The holder's key `<prefix><lease hex>`. */
  readonly key: string;
  /** The fencing token handed out. */
  readonly token: number;
  /** Revision of the read that showed the key first in line. */
  readonly heldAtRevision: number;
  /** Virtual time `lock()` was called. */
  readonly callMs: number;
  /** Virtual time it resolved. */
  readonly returnMs: number;
}

/** A write to a protected resource, carrying the writer's token. */
export interface LockWrite {
  /** Discriminant. */
  readonly kind: "write";
  /** Unique in the history. */
  readonly id: number;
  /** The client that wrote. */
  readonly clientId: string;
  /** `fenced` (through `fencedPut`) or `owned` (a transaction comparing the lock key). */
  readonly resource: "fenced" | "owned";
  /** The token the writer held. */
  readonly token: number;
  /** The value written; unique in the history. */
  readonly value: string;
  /** Virtual time of the call. */
  readonly callMs: number;
  /** Virtual time of the answer; null when the outcome is unknown. */
  returnMs: number | null;
  /** Whether the resource took the write; absent when the outcome is unknown. */
  accepted?: boolean;
}

/** A release (`unlock()`), or a client-side fault done to a holder or waiter. */
export interface LockNote {
  /** Discriminant. */
  readonly kind: "release" | "pause" | "crash" | "partition" | "lost";
  /** Unique in the history. */
  readonly id: number;
  /** The client. */
  readonly clientId: string;
  /** The token held, if any. */
  readonly token?: number;
  /** Virtual time. */
  readonly atMs: number;
}

/** One record of the lock workload's history. */
export type LockRecord = LockGrant | LockWrite | LockNote;

/** A committed change to a key the checker watches (first applied by any node). */
export interface LockStoreEvent {
  /** The revision of the change. */
  readonly revision: number;
  /** PUT or DELETE. */
  readonly type: "PUT" | "DELETE";
  /** The key. */
  readonly key: string;
  /** The value after a PUT (empty for a DELETE). */
  readonly value: string;
  /** The key's createRevision after a PUT (0 for a DELETE). */
  readonly createRevision: number;
}

/** Everything the checker reads. */
export interface LockHistory {
  /** The lock's prefix, `<name>/`. */
  readonly prefix: string;
  /** The key written through `fencedPut`. */
  readonly fencedKey: string;
  /** The key written by transactions that compare the holder's lock key. */
  readonly ownedKey: string;
  /** What the clients saw. */
  readonly records: readonly LockRecord[];
  /** What the store committed, for keys under `prefix` and the two resources. */
  readonly events: readonly LockStoreEvent[];
}

/** The checker's verdict with its figures. */
export interface LockCheckResult {
  /** Grants checked. */
  readonly grants: number;
  /** Resource writes the store took. */
  readonly writesAccepted: number;
  /** Resource writes refused (the client was told so). */
  readonly writesRefused: number;
  /** The first broken guarantee, with its evidence; undefined when all hold. */
  readonly violation?: string;
}

class LockViolation extends Error {}

/** Checks `history` (see the module doc for the six guarantees). Never throws for a violation. */
export function checkLocks(history: LockHistory): LockCheckResult {
  const grants = history.records.filter((r): r is LockGrant => r.kind === "grant");
  const writes = history.records.filter((r): r is LockWrite => r.kind === "write");
  const figures = {
    grants: grants.length,
    writesAccepted: writes.filter((w) => w.accepted === true).length,
    writesRefused: writes.filter((w) => w.accepted === false).length,
  };
  try {
    const events = [...history.events].sort((a, b) => a.revision - b.revision);
    checkGrants(history, grants, events);
    checkWrites(history, writes, events);
    return figures;
  } catch (e) {
    if (!(e instanceof LockViolation)) throw e;
    return { ...figures, violation: e.message };
  }
}

function fail(message: string): never {
  throw new LockViolation(message);
}

function describeGrant(g: LockGrant): string {
  return `${g.clientId}'s grant of token ${g.token} (read at revision ${g.heldAtRevision}, ` +
    `returned at ${g.returnMs} ms)`;
}

/** Replays the lock keys' events: the live keys (key → createRevision) as of each revision. */
class LockKeys {
  readonly live = new Map<string, number>();
  readonly created = new Map<string, number[]>(); // key → every createRevision it had
  #next = 0;
  constructor(readonly prefix: string, readonly events: readonly LockStoreEvent[]) {}

  /** Applies every event up to and including `revision`. */
  advanceTo(revision: number): void {
    while (this.#next < this.events.length && this.events[this.#next].revision <= revision) {
      const e = this.events[this.#next++];
      if (!e.key.startsWith(this.prefix)) continue;
      if (e.type === "DELETE") this.live.delete(e.key);
      else {
        if (!this.live.has(e.key)) {
          const list = this.created.get(e.key) ?? [];
          list.push(e.createRevision);
          this.created.set(e.key, list);
        }
        this.live.set(e.key, e.createRevision);
      }
    }
  }

  /** The first key in line (lowest createRevision), if any. */
  holder(): { key: string; createRevision: number } | undefined {
    let best: { key: string; createRevision: number } | undefined;
    for (const [key, createRevision] of this.live) {
      if (best === undefined || createRevision < best.createRevision) {
        best = { key, createRevision };
      }
    }
    return best;
  }
}

function checkGrants(
  history: LockHistory,
  grants: readonly LockGrant[],
  events: readonly LockStoreEvent[],
): void {
  const byRevision = [...grants].sort((a, b) => a.heldAtRevision - b.heldAtRevision || a.id - b.id);
  const keys = new LockKeys(history.prefix, events);
  let previous: LockGrant | undefined;
  for (const g of byRevision) {
    keys.advanceTo(g.heldAtRevision);
    // 1. The token is the createRevision of a key the store created.
    if (!(keys.created.get(g.key) ?? []).includes(g.token)) {
      fail(
        `${describeGrant(g)}: the store never created ${JSON.stringify(g.key)} at revision ` +
          `${g.token}`,
      );
    }
    // 2. At the grant's read, the key was live and first in line.
    const live = keys.live.get(g.key);
    if (live !== g.token) {
      fail(
        `${describeGrant(g)}: at that revision its key ${JSON.stringify(g.key)} ` +
          (live === undefined ? "no longer existed" : `had createRevision ${live}`),
      );
    }
    const first = keys.holder()!;
    if (first.key !== g.key) {
      fail(
        `mutual exclusion: ${describeGrant(g)} while ${JSON.stringify(first.key)} ` +
          `(token ${first.createRevision}) was still first in line`,
      );
    }
    // 3. Successive grants, in the service's order, carry strictly rising tokens.
    if (previous !== undefined && g.token <= previous.token) {
      fail(`fencing tokens: ${describeGrant(g)} came after ${describeGrant(previous)}`);
    }
    previous = g;
  }
  // 3. In real time: a grant that returned before another was asked for has the lower token.
  const byReturn = [...grants].sort((a, b) => a.returnMs - b.returnMs);
  const byCall = [...grants].sort((a, b) => a.callMs - b.callMs);
  let maxBefore: LockGrant | undefined;
  let i = 0;
  for (const g of byCall) {
    while (i < byReturn.length && byReturn[i].returnMs < g.callMs) {
      if (maxBefore === undefined || byReturn[i].token > maxBefore.token) maxBefore = byReturn[i];
      i++;
    }
    if (maxBefore !== undefined && g.token <= maxBefore.token) {
      fail(
        `fencing tokens in real time: ${describeGrant(g)}, asked for at ${g.callMs} ms, is not ` +
          `above ${describeGrant(maxBefore)}`,
      );
    }
  }
}

function checkWrites(
  history: LockHistory,
  writes: readonly LockWrite[],
  events: readonly LockStoreEvent[],
): void {
  const byValue = new Map<string, LockWrite>();
  for (const w of writes) byValue.set(w.value, w);
  const landed = new Set<string>();
  const keys = new LockKeys(history.prefix, events);
  let fenceMax: LockWrite | undefined;
  for (const e of events) {
    if (e.type !== "PUT" || (e.key !== history.fencedKey && e.key !== history.ownedKey)) continue;
    const w = byValue.get(e.value);
    if (w === undefined) {
      fail(`${JSON.stringify(e.key)} took a value no client wrote at revision ${e.revision}`);
    }
    landed.add(w.value);
    const what = `${w.clientId}'s write of token ${w.token} (called at ${w.callMs} ms)`;
    if (e.key === history.fencedKey) {
      // 4. Non-decreasing tokens at the fenced resource.
      if (fenceMax !== undefined && w.token < fenceMax.token) {
        fail(
          `fencing: ${what} landed at revision ${e.revision} after ${fenceMax.clientId}'s ` +
            `write of token ${fenceMax.token}`,
        );
      }
      if (fenceMax === undefined || w.token > fenceMax.token) fenceMax = w;
    } else {
      // 5. The owned resource is written only by the first key in line just before the write.
      keys.advanceTo(e.revision - 1);
      const first = keys.holder();
      if (first === undefined || first.createRevision !== w.token) {
        fail(
          `mutual exclusion: ${what} landed at revision ${e.revision} while ` +
            (first === undefined
              ? "nobody held the lock"
              : `${JSON.stringify(first.key)} (token ${first.createRevision}) held it`),
        );
      }
    }
  }
  // 6. What the clients were told matches what committed.
  for (const w of writes) {
    if (w.accepted === true && !landed.has(w.value)) {
      fail(
        `${w.clientId} was told its write ${
          JSON.stringify(w.value)
        } was accepted; it never committed`,
      );
    }
    if (w.accepted === false && landed.has(w.value)) {
      fail(`${w.clientId} was told its write ${JSON.stringify(w.value)} was refused; it committed`);
    }
  }
}
