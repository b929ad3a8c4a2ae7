/**
 * Randomized runs over real servers: clients put, read linearizably and compare-and-swap through
 * etcd's JSON paths on any node of a {@linkcode ServerCluster} (so followers forward writes and
 * run the read barrier), while nodes crash and restart and the network splits; the history is
 * then checked for linearizability. Lease clients grant leases, attach a key of their own to each,
 * keep some alive (through any node: followers forward, the leader confirms its leadership first)
 * and read the key; a read that misses it while a keep-alive's promise still holds is an early
 * expiry (see {@linkcode checkLeases}). This is what shows the simulator exercises the server
 * that ships: a bug in the server's own code (`ServerFaultPoint`) shows up as a violation.
 *
 * @module
 */

import { checkLinearizable, type CheckResult } from "./linearizability.ts";
import type { Operation, OperationKind } from "./history.ts";
import { ServerCluster } from "./server_cluster.ts";
import type { ServerFaultPoint } from "../net/server.ts";
import type { NodeId } from "../raft/types.ts";

/** Options of {@linkcode runServerSimulation}. */
export interface ServerSimulationOptions {
  /** Number of servers. Default 3. */
  readonly nodes?: number;
  /** Concurrent clients. Default 4. */
  readonly clients?: number;
  /** Virtual time with clients and faults, ms. Default 4000. */
  readonly durationMs?: number;
  /** Keys the clients use (few keys: more contention). Default 3. */
  readonly keys?: number;
  /** Server bugs to switch on (tests only). */
  readonly faultPoints?: readonly ServerFaultPoint[];
  /** Whether to crash, restart and partition nodes. Default true. */
  readonly faults?: boolean;
  /** Clients that grant leases, keep them alive and read their keys. Default 2. */
  readonly leaseClients?: number;
}

/** What the lease clients saw of one lease, for {@linkcode checkLeases}. */
export interface LeaseRecord {
  /** The lease id, as the grant answered it. */
  readonly id: string;
  /** The key put with the lease (no other client writes it). */
  readonly key: string;
  /** When the put of the key was acknowledged (virtual ms); undefined when it was not. */
  putAckMs?: number;
  /**
   * Every grant or keep-alive answered with a TTL: sent at `callMs`, so the leader's deadline is at
   * least `callMs + ttlMs` (it is set after the request arrives).
   */
  readonly promises: { callMs: number; ttlMs: number }[];
  /** Reads of the key answered 200: sent, answered, and whether the key was there. */
  readonly reads: { callMs: number; returnMs: number; present: boolean }[];
  /** When the client first sent a revoke (from then on the key may go), if it did. */
  revokeCallMs?: number;
}

/**
 * Leases never expire early: a key attached to a lease is visible to every linearizable read
 * that starts after the key's put was acknowledged and ends while a grant or keep-alive answered
 * before (or a later one answered at all) still promises the lease, unless the client revoked it.
 * Returns one line per violation.
 */
export function checkLeases(leases: readonly LeaseRecord[]): string[] {
  const out: string[] = [];
  for (const l of leases) {
    if (l.putAckMs === undefined) continue;
    for (const r of l.reads) {
      if (r.present || r.callMs < l.putAckMs) continue;
      if (l.revokeCallMs !== undefined && l.revokeCallMs <= r.returnMs) continue;
      // A promise sent at t holds the lease until t + TTL at least; one sent after the read
      // returned found the lease alive later, so it was alive during the read too.
      const promise = l.promises.find((p) => p.callMs + p.ttlMs > r.returnMs);
      if (promise === undefined) continue;
      out.push(
        `lease ${l.id}: key ${JSON.stringify(l.key)} missing from a read sent at ${r.callMs} ms, ` +
          `answered at ${r.returnMs} ms, while a keep-alive sent at ${promise.callMs} ms promised ` +
          `it until ${promise.callMs + promise.ttlMs} ms`,
      );
    }
  }
  return out;
}

/** What one run did and found. */
export interface ServerSimulationResult {
  /** The seed. */
  readonly seed: number;
  /** Every client operation, for the checker and docs/history-format.md. */
  readonly history: Operation[];
  /** The linearizability verdict. */
  readonly check: CheckResult;
  /** Operations by outcome. */
  readonly ops: { total: number; ok: number; failed: number; unknown: number };
  /** Faults injected, by kind. */
  readonly faults: { crashes: number; restarts: number; partitions: number; pauses: number };
  /** Requests forwarded between servers; linearizable reads the servers served. */
  readonly forwards: number;
  /** Snapshots the servers took (the snapshotter ran). */
  readonly snapshots: number;
  /** Leases the lease clients used, and the early expiries {@linkcode checkLeases} found. */
  readonly leases: {
    readonly records: readonly LeaseRecord[];
    readonly keepAlives: number;
    readonly violations: readonly string[];
  };
  /** Whether the history is linearizable and no lease expired early. */
  readonly ok: boolean;
  /** Virtual time at the end, ms. */
  readonly endMs: number;
}

/** How long a client waits for an answer before it counts the outcome as unknown, ms. */
const CLIENT_TIMEOUT_MS = 6000;
/** Virtual time after the faults for healing and the last answers, ms. */
const SETTLE_MS = 7000;

const enc = new TextEncoder();
const dec = new TextDecoder();
const b64 = (s: string) => btoa(String.fromCharCode(...enc.encode(s)));
const unb64 = (s: string) => dec.decode(Uint8Array.from(atob(s), (c) => c.charCodeAt(0)));

/**
 * Runs one seeded randomized run over real servers and checks its history (see the module
 * documentation).
 *
 * @example
 * ```ts ignore
 * const r = await runServerSimulation(7);
 * if (!r.check.ok) console.log(r.check.failure?.explanation);
 * ```
 */
export async function runServerSimulation(
  seed: number,
  options: ServerSimulationOptions = {},
): Promise<ServerSimulationResult> {
  const cluster = new ServerCluster({
    seed,
    nodes: options.nodes,
    faultPoints: options.faultPoints,
  });
  const rng = cluster.rng;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.next() * xs.length)];
  const durationMs = options.durationMs ?? 4000;
  const keys = Array.from({ length: options.keys ?? 3 }, (_, i) => `k${i}`);
  const history: Operation[] = [];
  const faults = { crashes: 0, restarts: 0, partitions: 0, pauses: 0 };
  let nextId = 0;
  let snapshots = 0;

  const sleep = (ms: number) => new Promise<void>((r) => cluster.after(ms, r));
  /** The response body, or undefined when no answer came in time (outcome unknown). */
  const call = async (
    id: NodeId,
    path: string,
    body: unknown,
  ): Promise<{ status: number; json: Record<string, unknown> } | undefined> => {
    const answer = cluster.request(id, path, body).then(async (res) => ({
      status: res.status,
      json: await res.json() as Record<string, unknown>,
    }));
    const timeout = sleep(CLIENT_TIMEOUT_MS).then(() => undefined);
    return await Promise.race([answer, timeout]);
  };

  const client = async (clientId: string) => {
    let n = 0;
    while (cluster.nowMs < durationMs) {
      await sleep(Math.floor(rng.next() * 20));
      const up = cluster.ids.filter((id) => cluster.isUp(id));
      if (up.length === 0) continue;
      const node = pick(up);
      const key = pick(keys);
      const r = rng.next();
      const kind: OperationKind = r < 0.4 ? "get" : r < 0.75 ? "put" : "cas";
      const op: Operation = {
        id: nextId++,
        clientId,
        kind,
        key,
        callMs: cluster.nowMs,
        returnMs: null,
      };
      history.push(op);
      if (kind === "get") {
        const res = await call(node, "/v3/kv/range", { key: b64(key) });
        if (res === undefined) continue;
        op.returnMs = cluster.nowMs;
        if (res.status !== 200) op.result = { ok: false };
        else {
          const kvs = res.json.kvs as { value?: string }[] | undefined;
          op.result = { ok: true, value: kvs?.[0] ? unb64(kvs[0].value ?? "") : null };
        }
      } else if (kind === "put") {
        op.value = `${clientId}.${++n}`;
        const res = await call(node, "/v3/kv/put", { key: b64(key), value: b64(op.value) });
        // Any failure may still have taken effect (a forwarded write, a timeout): unknown.
        if (res === undefined || res.status !== 200) continue;
        op.returnMs = cluster.nowMs;
        op.result = { ok: true };
      } else {
        op.value = `${clientId}.${++n}`;
        const last = [...history].reverse().find((o) =>
          o.key === key && o.result?.ok === true && (o.kind === "get" || o.kind === "put")
        );
        const expected = last === undefined
          ? null
          : last.kind === "get"
          ? last.result!.value ?? null
          : last.value!;
        op.expected = expected;
        const compare = expected === null
          ? { key: b64(key), target: "CREATE", result: "EQUAL", create_revision: "0" }
          : { key: b64(key), target: "VALUE", result: "EQUAL", value: b64(expected) };
        const res = await call(node, "/v3/kv/txn", {
          compare: [compare],
          success: [{ request_put: { key: b64(key), value: b64(op.value) } }],
        });
        if (res === undefined || res.status !== 200) continue;
        op.returnMs = cluster.nowMs;
        op.result = { ok: res.json.succeeded === true };
      }
    }
  };

  const leases: LeaseRecord[] = [];
  let keepAlives = 0;
  const leaseClient = async (clientId: string) => {
    let n = 0;
    while (cluster.nowMs < durationMs) {
      await sleep(Math.floor(rng.next() * 50));
      const up = () => cluster.ids.filter((id) => cluster.isUp(id));
      if (up().length === 0) continue;
      const grantMs = cluster.nowMs;
      const ttlSeconds = 1 + Math.floor(rng.next() * 2);
      const granted = await call(pick(up()), "/v3/lease/grant", { TTL: ttlSeconds });
      if (granted === undefined || granted.status !== 200) continue;
      const record: LeaseRecord = {
        id: String(granted.json.ID),
        key: `lease.${clientId}.${++n}`,
        promises: [{ callMs: grantMs, ttlMs: Number(granted.json.TTL) * 1000 }],
        reads: [],
      };
      leases.push(record);
      if (up().length === 0) continue;
      const put = await call(pick(up()), "/v3/kv/put", {
        key: b64(record.key),
        value: b64("held"),
        lease: record.id,
      });
      if (put?.status === 200) record.putAckMs = cluster.nowMs;
      const rounds = 1 + Math.floor(rng.next() * 10);
      for (let i = 0; i < rounds && cluster.nowMs < durationMs; i++) {
        // Sometimes longer than the TTL, so leases also expire as they should.
        await sleep(50 + Math.floor(rng.next() * 400));
        if (up().length === 0) continue;
        const callMs = cluster.nowMs;
        if (rng.next() < 0.5) {
          const res = await call(pick(up()), "/v3/lease/keepalive", { ID: record.id });
          keepAlives++;
          const ttl = Number((res?.json.result as { TTL?: string } | undefined)?.TTL ?? 0);
          if (res?.status === 200 && ttl > 0) record.promises.push({ callMs, ttlMs: ttl * 1000 });
        } else {
          const res = await call(pick(up()), "/v3/kv/range", { key: b64(record.key) });
          if (res?.status !== 200) continue;
          const kvs = res.json.kvs as unknown[] | undefined;
          record.reads.push({ callMs, returnMs: cluster.nowMs, present: (kvs?.length ?? 0) > 0 });
        }
      }
      if (rng.next() < 0.3 && up().length > 0) {
        record.revokeCallMs = cluster.nowMs;
        await call(pick(up()), "/v3/lease/revoke", { ID: record.id });
      }
    }
  };

  const nemesis = async () => {
    const quorum = Math.floor(cluster.ids.length / 2) + 1;
    while (cluster.nowMs < durationMs) {
      await sleep(200 + Math.floor(rng.next() * 400));
      if (cluster.nowMs >= durationMs) break;
      const down = cluster.ids.filter((id) => !cluster.isUp(id));
      const r = rng.next();
      if (r < 0.3 && cluster.ids.length - down.length > quorum - 1) {
        cluster.crash(pick(cluster.ids.filter((id) => cluster.isUp(id))));
        faults.crashes++;
      } else if (r < 0.55 && down.length > 0) {
        cluster.restart(pick(down));
        faults.restarts++;
      } else if (r < 0.65) {
        // A pause of up to 2.5 s: past an election timeout, sometimes past a lease's TTL.
        const running = cluster.ids.filter((id) => cluster.isUp(id) && !cluster.isPaused(id));
        if (running.length === 0) continue;
        const id = pick(running);
        cluster.pause(id);
        faults.pauses++;
        cluster.after(300 + Math.floor(rng.next() * 2200), () => cluster.resume(id));
      } else if (r < 0.85) {
        const shuffled = [...cluster.ids].sort(() => rng.next() - 0.5);
        const cut = 1 + Math.floor(rng.next() * (shuffled.length - 1));
        cluster.partition([shuffled.slice(0, cut), shuffled.slice(cut)]);
        faults.partitions++;
      } else {
        cluster.heal();
      }
    }
    cluster.heal();
    for (const id of cluster.ids) {
      cluster.resume(id);
      if (!cluster.isUp(id)) {
        cluster.restart(id);
        faults.restarts++;
      }
    }
  };

  const clients = Array.from(
    { length: options.clients ?? 4 },
    (_, i) => client(`c${i + 1}`),
  );
  const leaseClients = Array.from(
    { length: options.leaseClients ?? 2 },
    (_, i) => leaseClient(`l${i + 1}`),
  );
  const running = Promise.all([
    ...clients,
    ...leaseClients,
    options.faults === false ? undefined : nemesis(),
  ]);
  await cluster.runUntil(durationMs + SETTLE_MS);
  await running;
  for (const id of cluster.ids) {
    snapshots += cluster.server(id)?.node.log.snapshotIndex !== 0 ? 1 : 0;
  }
  const forwards = cluster.counters.forwards;
  await cluster.close();
  const ops = {
    total: history.length,
    ok: history.filter((o) => o.result?.ok === true).length,
    failed: history.filter((o) => o.result?.ok === false).length,
    unknown: history.filter((o) => o.returnMs === null).length,
  };
  const check = checkLinearizable(history);
  const violations = checkLeases(leases);
  return {
    seed,
    history,
    check,
    ops,
    faults,
    forwards,
    snapshots,
    leases: { records: leases, keepAlives, violations },
    ok: check.ok && violations.length === 0,
    endMs: cluster.nowMs,
  };
}
