/**
 * A client session: a lease the client keeps alive. Keys put with it are ephemeral (ZooKeeper's
 * ephemeral nodes): when the client stops — crashes, pauses too long, loses the network — the
 * leader expires the lease after its TTL and the keys are deleted, as ordinary DELETE events.
 *
 * @module
 */

import type { CoordClient } from "./client.ts";

/** Options of {@linkcode Session.create}. */
export interface SessionOptions {
  /** Lease TTL. Default 5,000 ms (etcd's concurrency default is 60 s). */
  readonly ttlMs?: number;
  /** Keep-alive period. Default a third of the TTL. */
  readonly keepAliveMs?: number;
}

/** A lease kept alive in the background until closed, abandoned or lost. */
export class Session {
  /** The client the session belongs to. */
  readonly client: CoordClient;
  /** The session's lease id. */
  readonly lease: number;
  /** The lease's TTL. */
  readonly ttlMs: number;
  #state: "alive" | "closed" | "lost" = "alive";
  #lostReason: string | undefined;
  #onEnd: (() => void)[] = [];
  /** Aborted when the session ends: cuts the keep-alive loop's wait short. */
  readonly #stop = new AbortController();

  private constructor(client: CoordClient, lease: number, ttlMs: number, keepAliveMs: number) {
    this.client = client;
    this.lease = lease;
    this.ttlMs = ttlMs;
    this.#keepAlive(keepAliveMs);
  }

  /**
   * Grants a lease and starts keeping it alive. The session's `ttlMs` is what the cluster granted
   * (over HTTP a TTL is rounded up to whole seconds), and the default period is a third of it.
   */
  static async create(client: CoordClient, options: SessionOptions = {}): Promise<Session> {
    const { id, ttlMs } = await client.leaseGrant(options.ttlMs ?? 5_000);
    return new Session(client, id, ttlMs, options.keepAliveMs ?? Math.max(1, ttlMs / 3));
  }

  /** `alive`, `closed` (by the client) or `lost` (the lease expired). */
  get state(): "alive" | "closed" | "lost" {
    return this.#state;
  }

  /** Why the session was lost, if it was. */
  get lostReason(): string | undefined {
    return this.#lostReason;
  }

  /** Resolves when the session is no longer alive. */
  ended(): Promise<void> {
    if (this.#state !== "alive") return Promise.resolve();
    return new Promise((r) => this.#onEnd.push(r));
  }

  /** Stops keeping alive and revokes the lease: its keys vanish at once. */
  async close(): Promise<void> {
    if (this.#state !== "alive") return;
    this.#end("closed");
    await this.client.leaseRevoke(this.lease);
  }

  /** Stops keeping alive without revoking (as a crashed client does): keys vanish after the TTL. */
  abandon(): void {
    if (this.#state === "alive") this.#end("closed");
  }

  #end(state: "closed" | "lost", reason?: string): void {
    this.#state = state;
    this.#lostReason = reason;
    this.#stop.abort();
    for (const r of this.#onEnd.splice(0)) r();
  }

  async #keepAlive(periodMs: number): Promise<void> {
    let failingSinceMs = 0;
    while (this.#state === "alive") {
      await this.client.sleep(
        failingSinceMs > 0 ? Math.min(periodMs, 50) : periodMs,
        this.#stop.signal,
      );
      if (this.#state !== "alive") return;
      try {
        await this.client.leaseKeepAlive(this.lease);
        failingSinceMs = 0;
      } catch (e) {
        const message = (e as Error).message;
        if (/not found|expired/.test(message)) {
          this.#end("lost", `Lease ${this.lease} ended: ${message}`);
          return;
        }
        failingSinceMs++; // no leader reachable: retry soon
      }
    }
  }
}
