/**
 * The leader's lease manager: it keeps, on its own clock, a deadline per lease, pushes it back on
 * each keep-alive, and when a deadline passes proposes a revoke marked `expired` through the log.
 * The state machine stores only TTLs and never reads a clock; every node deletes the lease's
 * keys when, and only when, that revoke commits — so a leader cut off in a minority cannot expire
 * anything. A node that becomes leader gives every lease a fresh TTL from the moment it noticed,
 * so a failover never ends a lease early (it may end one late, by at most one TTL).
 *
 * @module
 */

import { encodeCommand } from "../kv/command.ts";
import type { MetadataStore } from "../kv/store.ts";
import { LeadershipTransferError } from "../raft/types.ts";

/** What a lease manager needs from its node. */
export interface LeaseManagerHost {
  /** The node's clock, in milliseconds (virtual in the simulator). */
  nowMs(): number;
  /** The node's store (read only). */
  store(): MetadataStore;
  /** The term in which this node leads, or undefined when it does not lead. */
  leaderTerm(): number | undefined;
  /**
   * Proposes a command to the log (fire and forget: the revoke takes effect once applied); throws
   * when the node does not lead.
   */
  propose(command: Uint8Array): void;
}

/** A keep-alive or time-to-live refused. */
export class LeaseError extends Error {
  /** `notLeader`: ask the leader; `notFound`: no such lease, or it has expired. */
  readonly code: "notLeader" | "notFound";
  /** Makes the error. */
  constructor(code: "notLeader" | "notFound", message: string) {
    super(message);
    this.name = "LeaseError";
    this.code = code;
  }
}

/** What {@linkcode LeaseManager.timeToLive} reports. */
export interface LeaseTimeToLive {
  /** Lease id. */
  readonly id: number;
  /** Granted TTL in milliseconds. */
  readonly ttlMs: number;
  /** Milliseconds until the leader expires it, without keep-alives (0: expiring now). */
  readonly remainingMs: number;
  /** Keys attached. */
  readonly keys: readonly string[];
}

/** Options of a {@linkcode LeaseManager}. */
export interface LeaseManagerOptions {
  /** Re-propose an expiry that has not applied after this long. Default 1,000. */
  readonly expiryRetryMs?: number;
}

/** Lease deadlines on the leader; call {@linkcode LeaseManager.tick} every few milliseconds. */
export class LeaseManager {
  readonly #host: LeaseManagerHost;
  readonly #expiryRetryMs: number;
  #term: number | undefined;
  #deadlines = new Map<number, number>();
  #expiring = new Map<number, number>();
  /** Expiries proposed by this manager (for tests and metrics). */
  expiriesProposed = 0;

  /** A manager for the node `host`. */
  constructor(host: LeaseManagerHost, options: LeaseManagerOptions = {}) {
    this.#host = host;
    this.#expiryRetryMs = options.expiryRetryMs ?? 1_000;
  }

  /** Whether this node leads now (as far as it knows). */
  get isLeader(): boolean {
    return this.#host.leaderTerm() !== undefined;
  }

  /**
   * Follows leadership and expires leases whose deadline passed: proposes one revoke per lease
   * (again after `expiryRetryMs` if it has not applied). Returns the ids proposed now. Throws
   * when a proposal fails while this node still leads (the host's `propose` throws only when it
   * does not).
   */
  tick(): number[] {
    const term = this.#host.leaderTerm();
    if (term === undefined) {
      this.#term = undefined;
      this.#deadlines.clear();
      this.#expiring.clear();
      return [];
    }
    const now = this.#host.nowMs();
    if (term !== this.#term) {
      // A new leadership: every lease starts a fresh TTL now (see the module comment).
      this.#term = term;
      this.#deadlines.clear();
      this.#expiring.clear();
    }
    const store = this.#host.store();
    const live = new Set<number>();
    const proposed: number[] = [];
    for (const lease of store.leases()) {
      live.add(lease.id);
      let deadline = this.#deadlines.get(lease.id);
      if (deadline === undefined) {
        deadline = now + lease.ttlMs;
        this.#deadlines.set(lease.id, deadline);
      }
      if (now < deadline) continue;
      const at = this.#expiring.get(lease.id);
      if (at !== undefined && now - at < this.#expiryRetryMs) continue;
      this.#expiring.set(lease.id, now);
      // Outside the try: the store hands out only encodable ids, so a failure here is a bug.
      const revoke = encodeCommand({ type: "leaseRevoke", id: lease.id, expired: true });
      try {
        this.#host.propose(revoke);
      } catch (e) {
        // Refused because this node no longer leads: the next tick notices. Anything else would
        // leave the lease alive for good, so it is not swallowed.
        if (this.#host.leaderTerm() !== term) return proposed;
        // Refused while leadership moves away (transfer): retried after expiryRetryMs, or by the
        // next leader.
        if (e instanceof LeadershipTransferError) return proposed;
        throw e;
      }
      this.expiriesProposed++;
      proposed.push(lease.id);
    }
    for (const id of this.#deadlines.keys()) {
      if (!live.has(id)) {
        this.#deadlines.delete(id);
        this.#expiring.delete(id);
      }
    }
    return proposed;
  }

  /**
   * Pushes lease `id`'s deadline to now + its TTL and returns the TTL. Refused on a node that
   * does not lead, for an unknown lease, and for one whose deadline has passed (its revoke may be
   * committing: the client must not believe it still holds it).
   */
  keepAlive(id: number): { ttlMs: number } {
    const lease = this.#leaderLease(id);
    const now = this.#host.nowMs();
    const deadline = this.#deadlines.get(id);
    if (deadline !== undefined && now >= deadline) {
      throw new LeaseError("notFound", `Lease ${id} has expired`);
    }
    this.#deadlines.set(id, now + lease.ttlMs);
    return { ttlMs: lease.ttlMs };
  }

  /** Granted TTL, remaining time and keys of lease `id` (on the leader). */
  timeToLive(id: number): LeaseTimeToLive {
    const lease = this.#leaderLease(id);
    const now = this.#host.nowMs();
    const deadline = this.#deadlines.get(id) ?? now + lease.ttlMs;
    return { id, ttlMs: lease.ttlMs, remainingMs: Math.max(0, deadline - now), keys: lease.keys };
  }

  #leaderLease(id: number) {
    if (this.#host.leaderTerm() === undefined) {
      throw new LeaseError("notLeader", `This node is not the leader; lease ${id} lives there`);
    }
    const lease = this.#host.store().lease(id);
    if (lease === undefined) throw new LeaseError("notFound", `Lease ${id} not found`);
    return lease;
  }
}
