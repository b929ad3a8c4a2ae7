/**
 * Randomized runs over real servers: clients put, read linearizably and compare-and-swap through
 * etcd's JSON paths on any node of a {@linkcode ServerCluster} (so followers forward writes and
 * run the read barrier), while nodes crash and restart and the network splits; the history is
 * then checked for linearizability. This is what shows the simulator exercises the server that
 * ships: a bug in the server's own code (`ServerFaultPoint`) shows up as a violation.
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
  readonly faults: { crashes: number; restarts: number; partitions: number };
  /** Requests forwarded between servers; linearizable reads the servers served. */
  readonly forwards: number;
  /** Snapshots the servers took (the snapshotter ran). */
  readonly snapshots: number;
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
  const faults = { crashes: 0, restarts: 0, partitions: 0 };
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
      } else if (r < 0.8) {
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
  const running = Promise.all([...clients, options.faults === false ? undefined : nemesis()]);
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
  return {
    seed,
    history,
    check: checkLinearizable(history),
    ops,
    faults,
    forwards,
    snapshots,
    endMs: cluster.nowMs,
  };
}
