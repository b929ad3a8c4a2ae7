/**
 * The lock workload of the randomized simulation: a few lock workers, each a simulated client with
 * a session (a lease kept alive), repeatedly take one lock, write to two protected resources with
 * the fencing token, hold it a while, and release. Some holders pause past their lease, lose
 * their keep-alives to a partition, or crash, so their sessions expire and the lock passes on.
 * Everything the workers see, and every committed change to the lock's keys and the resources, is
 * recorded for {@linkcode checkLocks}.
 *
 * @module
 */

import type { SimCoordClient, SimCoordination } from "../coord/sim.ts";
import { Session } from "../coord/session.ts";
import {
  type CoordFaultPoint,
  fencedPut,
  lock,
  type LockHandle,
  LockLostError,
} from "../coord/lock.ts";
import type { ApplyResult } from "../kv/store.ts";
import type { SeededRng } from "../raft/rng.ts";
import type {
  LockGrant,
  LockHistory,
  LockRecord,
  LockStoreEvent,
  LockWrite,
} from "./lock_checker.ts";

/** The lock every worker takes. */
export const LOCK_NAME = "/locks/sim";
/** The resource written through `fencedPut`. */
export const FENCED_KEY = "/locked/fenced";
/** The resource written by a transaction that compares the holder's lock key. */
export const OWNED_KEY = "/locked/owned";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Options of {@linkcode LockWorkload}. */
export interface LockWorkloadOptions {
  /** How many workers. */
  readonly workers: number;
  /** The workload's own random stream (separate from the fault schedule's). */
  readonly rng: SeededRng;
  /** Bugs of the lock recipe to switch on (tests only). */
  readonly faultPoints?: readonly CoordFaultPoint[];
  /** Called with a line for each client-side fault (verbose replay). */
  readonly log?: (line: string) => void;
}

/** Thrown into a worker whose client was crashed while it waited. */
class ClientCrashed extends Error {}

/** Lock workers on a simulated cluster and the history they leave. */
export class LockWorkload {
  readonly #coord: SimCoordination;
  readonly #rng: SeededRng;
  readonly #faultPoints: readonly CoordFaultPoint[];
  readonly #log: (line: string) => void;
  readonly #workers: number;
  readonly #records: LockRecord[] = [];
  readonly #events: LockStoreEvent[] = [];
  readonly #sessions = new Set<Session>();
  #revisionsSeen = new Set<number>();
  #running = 0;
  #stopped = false;
  #writes = 0;
  #failure: Error | undefined;

  /** Records committed changes from now on; {@linkcode start} launches the workers. */
  constructor(coord: SimCoordination, options: LockWorkloadOptions) {
    this.#coord = coord;
    this.#rng = options.rng;
    this.#faultPoints = options.faultPoints ?? [];
    this.#log = options.log ?? (() => {});
    this.#workers = options.workers;
    coord.cluster.onApplied((_n, _entry, result) => this.#onApplied(result as ApplyResult));
  }

  /** Launches the workers. */
  start(): void {
    for (let i = 1; i <= this.#workers; i++) void this.#worker(i);
  }

  /** Workers stop taking the lock; every live session is abandoned, as by a crash. */
  stop(): void {
    this.#stopped = true;
    for (const s of this.#sessions) s.abandon();
    this.#sessions.clear();
  }

  /** Whether every worker has finished (after {@linkcode stop}). */
  get idle(): boolean {
    return this.#running === 0;
  }

  /** Grants recorded so far. */
  get grants(): number {
    return this.#records.filter((r) => r.kind === "grant").length;
  }

  /** The history for the checker. */
  history(): LockHistory {
    return {
      prefix: `${LOCK_NAME}/`,
      fencedKey: FENCED_KEY,
      ownedKey: OWNED_KEY,
      records: this.#records,
      events: this.#events,
    };
  }

  /**
   * After healing: a fresh client takes the lock and writes with its token. Every earlier holder's
   * key must have been released or expired for this to finish.
   */
  async probe(): Promise<void> {
    const c = this.#coord.client("probe", { timeoutMs: 3_000 });
    const session = await Session.create(c, { ttlMs: 1_000 });
    const callMs = this.#now();
    const held = await lock(session, LOCK_NAME, { faultPoints: this.#faultPoints });
    this.#grant("probe", callMs, held);
    await this.#write(c, "probe", held, "fenced");
    await held.unlock();
    await session.close();
  }

  #now(): number {
    return this.#coord.cluster.nowMs;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((r) => this.#coord.cluster.schedule(ms, r));
  }

  #onApplied(r: ApplyResult | undefined): void {
    if (r === undefined || r.status !== "applied" || r.events.length === 0) return;
    if (this.#revisionsSeen.has(r.revision)) return; // another node applied it first
    this.#revisionsSeen.add(r.revision);
    for (const e of r.events) {
      const key = e.kv.key;
      if (!key.startsWith(`${LOCK_NAME}/`) && key !== FENCED_KEY && key !== OWNED_KEY) continue;
      this.#events.push({
        revision: r.revision,
        type: e.type,
        key,
        value: decoder.decode(e.kv.value),
        createRevision: e.type === "PUT" ? e.kv.createRevision : 0,
      });
    }
  }

  /** One worker: incarnations of a client until stopped; a crash starts a new one later. */
  async #worker(index: number): Promise<void> {
    this.#running++;
    try {
      for (let incarnation = 1; !this.#stopped; incarnation++) {
        const crashed = await this.#incarnation(`l${index}.${incarnation}`);
        if (!crashed) return;
        await this.#sleep(this.#rng.int(50, 500));
      }
    } finally {
      this.#running--;
    }
  }

  /** Runs one client until stopped; resolves true when the client crashed. */
  async #incarnation(name: string): Promise<boolean> {
    const rng = this.#rng;
    const c = this.#coord.client(name, { timeoutMs: 2_000, attemptTimeoutMs: 400 });
    let crash: (() => void) | undefined;
    const crashed = new Promise<never>((_, reject) => crash = () => reject(new ClientCrashed()));
    crashed.catch(() => {});
    // Every wait on the client races its crash: a crashed client's calls never answer.
    const call = <T>(p: Promise<T>) => Promise.race([p, crashed]);
    while (!this.#stopped) {
      let session: Session | undefined;
      try {
        session = await call(Session.create(c, { ttlMs: rng.int(400, 1_500) }));
        this.#sessions.add(session);
        while (!this.#stopped && session.state === "alive") {
          const callMs = this.#now();
          const held = await call(lock(session, LOCK_NAME, { faultPoints: this.#faultPoints }));
          this.#grant(name, callMs, held);
          const roll = rng.next();
          if (roll < 0.05) {
            // Crash at a random moment of the critical section.
            const s = session;
            this.#coord.cluster.schedule(rng.int(0, 40), () => {
              this.#note("crash", name, held.fencingToken);
              c.stop();
              s.abandon();
              crash!();
            });
          } else if (roll < 0.17) {
            // A pause past the lease: no keep-alives, then it writes as if it still held the lock.
            this.#note("pause", name, held.fencingToken);
            session.abandon();
            await call(this.#sleep(session.ttlMs + rng.int(100, 1_200)));
          } else if (roll < 0.25) {
            // Keep-alives cannot reach the cluster for a while; writes still can.
            this.#note("partition", name, held.fencingToken);
            for (const id of this.#coord.cluster.ids) c.unreachable.add(id);
            const ms = rng.int(session.ttlMs / 2, session.ttlMs * 2);
            this.#coord.cluster.schedule(ms, () => c.unreachable.clear());
          }
          for (let w = rng.int(1, 4); w > 0 && !this.#stopped; w--) {
            await call(this.#write(c, name, held, rng.chance(0.5) ? "fenced" : "owned"));
            await call(this.#sleep(rng.int(0, 60)));
          }
          if (session.state !== "alive") break;
          this.#note("release", name, held.fencingToken);
          await call(held.unlock());
          await call(this.#sleep(rng.int(0, 100)));
        }
      } catch (e) {
        if (e instanceof ClientCrashed) return true;
        this.#expected(e); // timed out, failed, or the session ended while waiting: start over
      }
      if (session !== undefined) {
        if (session.state === "lost") this.#note("lost", name);
        session.abandon();
        this.#sessions.delete(session);
      }
      try {
        await call(this.#sleep(rng.int(10, 100)));
      } catch {
        return true;
      }
    }
    return false;
  }

  /** Rethrows an error a client of a faulty cluster should not see (a bug, not a fault). */
  #expected(e: unknown): void {
    if (e instanceof LockLostError) return;
    const message = e instanceof Error ? e.message : String(e);
    if (/ (unknown|failed): |is stopped/.test(message)) return;
    this.#failure ??= e instanceof Error ? e : new Error(message);
  }

  /** The first unexpected error a worker hit (a bug in the recipe or the harness), if any. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  #grant(clientId: string, callMs: number, held: LockHandle): void {
    const g: LockGrant = {
      kind: "grant",
      id: this.#records.length,
      clientId,
      key: held.key,
      token: held.fencingToken,
      heldAtRevision: held.heldAtRevision,
      callMs,
      returnMs: this.#now(),
    };
    this.#records.push(g);
  }

  #note(
    kind: "release" | "pause" | "crash" | "partition" | "lost",
    clientId: string,
    token?: number,
  ) {
    this.#records.push({ kind, id: this.#records.length, clientId, token, atMs: this.#now() });
    if (kind !== "release") this.#log(`t=${this.#now()} lock client ${clientId}: ${kind}`);
  }

  /** One write to a resource with the held token; its record is completed when it answers. */
  async #write(
    c: SimCoordClient,
    clientId: string,
    held: LockHandle,
    resource: "fenced" | "owned",
  ): Promise<void> {
    const w: LockWrite = {
      kind: "write",
      id: this.#records.length,
      clientId,
      resource,
      token: held.fencingToken,
      value: `${clientId}#${++this.#writes}@${held.fencingToken}`,
      callMs: this.#now(),
      returnMs: null,
    };
    this.#records.push(w);
    let accepted: boolean;
    try {
      if (resource === "fenced") {
        accepted = await fencedPut(c, FENCED_KEY, w.value, held.fencingToken, {
          faultPoints: this.#faultPoints,
        });
      } else {
        // etcd's IsOwner: the write lands only while the holder's key still exists.
        const r = await c.txn({
          compare: [
            { key: held.key, target: "createRevision", result: "equal", value: held.fencingToken },
          ],
          success: [{ type: "put", key: OWNED_KEY, value: encoder.encode(w.value), prevKv: false }],
          failure: [],
        });
        accepted = r.succeeded;
      }
    } catch (e) {
      this.#expected(e);
      return; // timed out or failed: unknown outcome
    }
    w.returnMs = this.#now();
    w.accepted = accepted;
  }
}
