/**
 * Runs in a Worker for tests/kv_int_limits_test.ts: grants lease 2^53 − 1, then automatic leases,
 * round-trips a snapshot and grants more. It runs apart because the bug it guards against made an
 * automatic grant loop forever; the test terminates this worker if it does not answer.
 *
 * @module
 */

import { encodeCommand, MetadataStore } from "../src/kv/mod.ts";
import { decodeStoreSnapshot, encodeStoreSnapshot } from "../src/storage/store_snapshot.ts";

const self = globalThis as unknown as { postMessage(m: unknown): void; close(): void };
try {
  const store = new MetadataStore();
  let index = 0;
  const grant = (s: MetadataStore, id: number, at = ++index) => {
    const r = s.apply(encodeCommand({ type: "leaseGrant", id, ttlMs: 1000 }), at);
    if (r.status !== "applied" || r.response.type !== "leaseGrant") {
      throw new Error(`grant ${id}: ${JSON.stringify(r)}`);
    }
    return r.response.id;
  };
  const ids = [grant(store, Number.MAX_SAFE_INTEGER)];
  for (let i = 0; i < 3; i++) ids.push(grant(store, 0));
  const restored = decodeStoreSnapshot(encodeStoreSnapshot(store));
  // The original and the restored store choose the same next id.
  const next = ++index;
  const after = [grant(store, 0, next), grant(restored, 0, next)];
  self.postMessage({ ids, after, leases: restored.leases().map((l) => l.id) });
} catch (e) {
  self.postMessage({ error: String((e as Error)?.stack ?? e) });
}
self.close();
