/**
 * `CoordClient`: what the coordination recipes (sessions, locks, elections) need from a cluster.
 * The simulator implements it on virtual time ({@linkcode SimCoordination}) and the HTTP client
 * on a real cluster (`connect(endpoints).coord()`, src/net/client.ts); any host with a
 * linearizable transaction, leases and watches can.
 *
 * @module
 */

import type { KeyRange, RangeResponse, TxnCommand, TxnResponse } from "../kv/types.ts";
import type { WatchOptions, WatchStream } from "./watch.ts";

/** A client of a coordination service. Every method may reject when the cluster cannot answer. */
export interface CoordClient {
  /** Runs a transaction through the log (linearizable). */
  txn(txn: Omit<TxnCommand, "type">): Promise<TxnResponse>;
  /** Reads a range linearizably. */
  range(range: KeyRange): Promise<RangeResponse>;
  /** Grants a lease of `ttlMs`; resolves with its id. */
  leaseGrant(ttlMs: number): Promise<{ id: number; ttlMs: number }>;
  /** Revokes a lease: its keys are deleted. */
  leaseRevoke(id: number): Promise<void>;
  /** Keeps a lease alive for another TTL; rejects when it is gone. */
  leaseKeepAlive(id: number): Promise<{ ttlMs: number }>;
  /** Watches keys; a stream that resumes by itself across node failures where it can. */
  watch(options: WatchOptions): WatchStream;
  /**
   * Waits `ms` on the client's clock (virtual in the simulator). A client may end the wait early
   * when `signal` aborts, so a stopped session leaves no timer behind.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}
