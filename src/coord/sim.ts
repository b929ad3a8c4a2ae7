/**
 * Coordination on the simulated cluster: a {@linkcode WatchHub} and a {@linkcode LeaseManager}
 * beside every node (fed by the cluster's applied entries, ticked on its virtual clock), and
 * {@linkcode SimCoordClient}, a {@linkcode CoordClient} whose promises settle in virtual time.
 *
 * Recipes are async functions; {@linkcode SimCoordination.run} drives the virtual clock one
 * millisecond at a time and lets pending continuations run between steps, so a run stays
 * deterministic: one seed, one history.
 *
 * @module
 */

import type { Cluster } from "../sim/cluster.ts";
import { SimClient } from "../sim/client.ts";
import type { NodeId } from "../raft/types.ts";
import type {
  CommandResponse,
  KeyRange,
  PlainCommand,
  RangeResponse,
  TxnCommand,
  TxnResponse,
} from "../kv/types.ts";
import { CompactedError } from "../kv/history.ts";
import { LeaseError, LeaseManager } from "./lease_manager.ts";
import {
  WatchHub,
  type WatchHubOptions,
  type WatchOptions,
  type WatchResponse,
  type WatchStream,
} from "./watch.ts";
import type { CoordClient } from "./client.ts";
import { LeadershipTransferError } from "../raft/types.ts";

/** Options of {@linkcode SimCoordination}. */
export interface SimCoordinationOptions extends WatchHubOptions {
  /** How often lease managers look at their deadlines. Default 10 ms. */
  readonly tickMs?: number;
  /** How often idle watchers get a progress notification. Default 500 ms. */
  readonly progressMs?: number;
}

/** Retry behaviour of a {@linkcode SimCoordClient} (as the simulator's `SimClient`). */
export interface SimCoordClientOptions {
  /** Give up on a command after this long. Default 5,000. */
  readonly timeoutMs?: number;
  /** Give up on one attempt (one node) after this long and try again. Default 500. */
  readonly attemptTimeoutMs?: number;
  /** Wait between attempts when no leader is known. Default 50. */
  readonly retryDelayMs?: number;
}

/** Watch hubs and lease managers beside every node of a simulated cluster. */
export class SimCoordination {
  /** The cluster. */
  readonly cluster: Cluster;
  #hubs = new Map<NodeId, WatchHub>();
  #managers = new Map<NodeId, LeaseManager>();
  #incarnations = new Map<NodeId, number>();
  #down = new Set<NodeId>();
  #notifyPending = new Set<NodeId>();
  #expiriesProposed = 0;
  #attach: (id: NodeId) => void;

  /** Attaches coordination to `cluster` (once per cluster). */
  constructor(cluster: Cluster, options: SimCoordinationOptions = {}) {
    this.cluster = cluster;
    const tickMs = options.tickMs ?? 10;
    const progressMs = options.progressMs ?? 500;
    // Nodes added later (membership changes) get theirs when first seen.
    this.#attach = (id) => {
      if (this.#hubs.has(id)) return;
      this.#hubs.set(id, new WatchHub(() => cluster.node(id).store, options));
      this.#managers.set(id, this.#newManager(id));
      this.#incarnations.set(id, cluster.node(id).incarnation);
    };
    for (const id of cluster.ids) this.#attach(id);
    cluster.onApplied((n) => {
      this.#attach(n.id);
      // Deliver after the host loop, never inside it.
      if (this.#notifyPending.has(n.id)) return;
      this.#notifyPending.add(n.id);
      cluster.schedule(0, () => {
        this.#notifyPending.delete(n.id);
        if (cluster.node(n.id).state === "up") this.#hubs.get(n.id)!.notify();
      });
    });
    let sinceProgressMs = 0;
    const tick = () => {
      sinceProgressMs += tickMs;
      const progress = sinceProgressMs >= progressMs;
      if (progress) sinceProgressMs = 0;
      for (const id of cluster.ids) {
        this.#attach(id);
        const n = cluster.node(id);
        if (n.state === "crashed" || n.incarnation !== this.#incarnations.get(id)) {
          if (!this.#down.has(id)) {
            this.#down.add(id);
            this.#hubs.get(id)!.cancelAll(`Node "${id}" crashed`);
            this.#managers.set(id, this.#newManager(id));
          }
          if (n.state === "crashed") continue;
        }
        this.#down.delete(id);
        this.#incarnations.set(id, n.incarnation);
        if (n.state !== "up") continue;
        this.#expiriesProposed += this.#managers.get(id)!.tick().length;
        if (progress) this.#hubs.get(id)!.progress();
      }
      cluster.schedule(tickMs, tick);
    };
    cluster.schedule(tickMs, tick);
  }

  /** Lease expiries proposed by any leader so far (committed or not). */
  get expiriesProposed(): number {
    return this.#expiriesProposed;
  }

  /** The watch hub of node `id`. */
  hub(id: NodeId): WatchHub {
    this.#attach(id);
    return this.#hubs.get(id)!;
  }

  /** The lease manager of node `id`. */
  leases(id: NodeId): LeaseManager {
    this.#attach(id);
    return this.#managers.get(id)!;
  }

  /** A new client named `name`. */
  client(name: string, options: SimCoordClientOptions = {}): SimCoordClient {
    return new SimCoordClient(this, name, options);
  }

  /**
   * Drives virtual time until `promise` settles (at most `timeoutMs`, default 30,000), letting
   * continuations run after every millisecond; returns its value or throws its error.
   */
  async run<T>(promise: Promise<T>, options: { timeoutMs?: number } = {}): Promise<T> {
    let settled = false;
    let value: T | undefined;
    let error: unknown;
    promise.then((v) => {
      settled = true;
      value = v;
    }, (e) => {
      settled = true;
      error = e;
    });
    await this.drive(() => settled, options);
    if (error !== undefined) throw error;
    return value!;
  }

  /** Drives virtual time until `until()` holds; throws after `timeoutMs` (default 30,000). */
  async drive(until: () => boolean, options: { timeoutMs?: number } = {}): Promise<void> {
    const end = this.cluster.nowMs + (options.timeoutMs ?? 30_000);
    await flush();
    while (!until()) {
      if (this.cluster.nowMs >= end) {
        throw new Error(`Timed out after ${options.timeoutMs ?? 30_000} ms of virtual time`);
      }
      this.cluster.advance(1);
      await flush();
    }
  }

  /** Drives virtual time for `ms`. */
  async advance(ms: number): Promise<void> {
    const end = this.cluster.nowMs + ms;
    await this.drive(() => this.cluster.nowMs >= end, { timeoutMs: ms + 1 });
  }

  #newManager(id: NodeId): LeaseManager {
    const c = this.cluster;
    return new LeaseManager({
      nowMs: () => c.clockMs(id), // the leader measures leases on its own clock
      store: () => c.node(id).store,
      leaderTerm: () => {
        const n = c.node(id);
        return n.state === "up" && n.raft.role === "Leader" ? n.raft.term : undefined;
      },
      propose: (command) => {
        const op = c.propose(command, { via: id });
        if (op.status !== "failed") return;
        const transferee = c.node(id).raft.transferee;
        if (transferee !== undefined) throw new LeadershipTransferError(id, transferee);
        throw new Error(op.error);
      },
    });
  }
}

/** Lets every pending continuation run (a chain of awaits settles within a few hundred turns). */
async function flush(): Promise<void> {
  for (let i = 0; i < 200; i++) await Promise.resolve();
}

/** A {@linkcode CoordClient} of a simulated cluster; its promises settle in virtual time. */
export class SimCoordClient implements CoordClient {
  /** The client's name (its session id for exactly-once writes). */
  readonly name: string;
  readonly #coord: SimCoordination;
  readonly #sim: SimClient;
  #chain: Promise<unknown> = Promise.resolve();
  #leaderHint: NodeId | undefined;
  #stopped = false;
  /** Nodes this client cannot reach (its side of a partition) for keep-alives and watches. */
  readonly unreachable: Set<NodeId> = new Set();

  /** Use {@linkcode SimCoordination.client}. */
  constructor(coord: SimCoordination, name: string, options: SimCoordClientOptions = {}) {
    this.#coord = coord;
    this.name = name;
    this.#sim = new SimClient(coord.cluster, name, options);
  }

  /** Stops the client as a crash would: nothing it asks for from now on is answered. */
  stop(): void {
    this.#stopped = true;
  }

  /** Whether {@linkcode stop} was called. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Sends `command` through the log (one at a time, with the client's session envelope). */
  command(command: PlainCommand, label = command.type): Promise<CommandResponse> {
    const next = this.#chain.then(() =>
      new Promise<CommandResponse>((resolve, reject) => {
        if (this.#stopped) return reject(new Error(`Client "${this.name}" is stopped`));
        this.#sim.start({ kind: "command", key: label, command }, (r) => {
          if (this.#stopped) return; // a stopped client hears nothing
          if (r.status === "ok") resolve(r.response!);
          else reject(new Error(`${command.type} ${r.status}: ${r.error}`));
        });
      })
    );
    this.#chain = next.catch(() => {});
    return next;
  }

  /** {@inheritDoc CoordClient.txn} */
  async txn(txn: Omit<TxnCommand, "type">): Promise<TxnResponse> {
    const r = await this.command({ type: "txn", ...txn }, "txn");
    if (r.type !== "txn") throw new Error(`Expected a txn response, got ${r.type}`);
    return r;
  }

  /** {@inheritDoc CoordClient.range} */
  async range(range: KeyRange): Promise<RangeResponse> {
    const r = await this.command(
      { type: "range", range, limit: 0, keysOnly: false, countOnly: false },
      "range",
    );
    if (r.type !== "range") throw new Error(`Expected a range response, got ${r.type}`);
    return r;
  }

  /** {@inheritDoc CoordClient.leaseGrant} */
  async leaseGrant(ttlMs: number): Promise<{ id: number; ttlMs: number }> {
    const r = await this.command({ type: "leaseGrant", id: 0, ttlMs }, "leaseGrant");
    if (r.type !== "leaseGrant") throw new Error(`Expected a lease grant response, got ${r.type}`);
    return { id: r.id, ttlMs: r.ttlMs };
  }

  /** {@inheritDoc CoordClient.leaseRevoke} */
  async leaseRevoke(id: number): Promise<void> {
    await this.command({ type: "leaseRevoke", id, expired: false }, "leaseRevoke");
  }

  /**
   * Keeps lease `id` alive at the node that says it leads (trying nodes in turn, as a real
   * client follows "not the leader" answers); answers after 1 ms of virtual time.
   */
  leaseKeepAlive(id: number): Promise<{ ttlMs: number }> {
    const c = this.#coord.cluster;
    return new Promise((resolve, reject) => {
      c.schedule(1, () => {
        if (this.#stopped) return;
        const ids = c.ids;
        const start = Math.max(0, ids.indexOf(this.#leaderHint ?? ids[0]));
        for (let i = 0; i < ids.length; i++) {
          const nodeId = ids[(start + i) % ids.length];
          if (c.node(nodeId).state !== "up" || this.unreachable.has(nodeId)) continue;
          try {
            const r = this.#coord.leases(nodeId).keepAlive(id);
            this.#leaderHint = nodeId;
            return resolve(r);
          } catch (e) {
            if (e instanceof LeaseError && e.code === "notFound") return reject(e);
          }
        }
        this.#leaderHint = undefined;
        reject(new LeaseError("notLeader", `No leader reachable to keep lease ${id} alive`));
      });
    });
  }

  /** {@inheritDoc CoordClient.sleep} */
  sleep(ms: number): Promise<void> {
    return new Promise((r) => this.#coord.cluster.schedule(ms, r));
  }

  /**
   * Watches through one node's hub; when that node crashes the watch resumes on another node
   * from the next revision it owes, so the stream has no gap and no repeat. Ends with `canceled`
   * only when the history no longer holds that revision.
   */
  watch(options: WatchOptions): WatchStream {
    const c = this.#coord.cluster;
    const queue: WatchResponse[] = [];
    let wake: (() => void) | undefined;
    let closed = false;
    let next = options.startRevision ?? 0;
    let cancelCurrent: (() => void) | undefined;
    let watchId = 0;
    const push = (r: WatchResponse) => {
      queue.push(r);
      if (r.kind === "canceled") closed = true;
      wake?.();
    };
    const attach = () => {
      if (closed || this.#stopped) return;
      const up = c.ids.filter((id) => c.node(id).state === "up" && !this.unreachable.has(id));
      const leader = c.leader();
      const id = leader !== undefined && up.includes(leader) ? leader : up[0];
      if (id === undefined) return c.schedule(50, attach);
      try {
        const w = this.#coord.hub(id).subscribe(
          { ...options, startRevision: next > 0 ? next : undefined },
          (r) => {
            if (closed) return;
            if (r.kind === "canceled") {
              if (r.resumeRevision !== undefined) {
                next = Math.max(next, r.resumeRevision);
                cancelCurrent = undefined;
                c.schedule(10, attach); // reconnect elsewhere
                return;
              }
              return push({ ...r, watchId });
            }
            if (r.kind === "events") next = r.revision + 1;
            push({ ...r, watchId });
          },
        );
        if (watchId === 0) watchId = w.id;
        if (next === 0) next = w.nextRevision;
        cancelCurrent = () => w.cancel();
      } catch (e) {
        if (!(e instanceof CompactedError)) throw e;
        push({
          kind: "canceled",
          watchId,
          reason: e.message,
          compactRevision: e.oldestRevision - 1,
        });
      }
    };
    attach();
    const stream: WatchStream = {
      get id() {
        return watchId;
      },
      cancel() {
        closed = true;
        cancelCurrent?.();
        wake?.();
      },
      async next(): Promise<IteratorResult<WatchResponse>> {
        while (queue.length === 0) {
          if (closed) return { done: true, value: undefined };
          await new Promise<void>((r) => wake = r);
          wake = undefined;
        }
        return { done: false, value: queue.shift()! };
      },
      return(): Promise<IteratorResult<WatchResponse>> {
        stream.cancel();
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator]() {
        return stream;
      },
    };
    return stream;
  }
}
