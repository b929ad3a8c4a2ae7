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
import { SeededRng } from "../raft/rng.ts";
import { eventJson } from "../net/etcd.ts";

/**
 * The wider kinds of a run, beside crashes, restarts, pauses and partitions. `disk-slow`: every
 * server's fdatasyncs take 0 to a few dozen ms and some stall for 100 ms to 2 s (a follower's
 * save blocks its process: no timer, no input, no output until the disk is done; a leader's
 * background sync completes late). `clock-drift`: each server's clock has its own offset and
 * runs up to ±{@linkcode SERVER_CLOCK_DRIFT_MAX} fast or slow (timers, election timeouts, lease
 * deadlines follow it). `long-delay`: a share of peer messages and forwarded requests and answers
 * is held 1–4 s. `long-pause`: now and then a server (the leader in half the cases) is paused
 * 2.5–5 s, longer than any lease's TTL. `watch`: clients watch every key through `/v3/watch` on
 * a random node, re-create the watch from the last revision seen + 1 when it fails or now and
 * then on another node, and must see each committed event once, in order, without a gap.
 */
export const SERVER_WIDE_KINDS = [
  "disk-slow",
  "clock-drift",
  "long-delay",
  "long-pause",
  "watch",
] as const;

/** One of {@linkcode SERVER_WIDE_KINDS}. */
export type ServerWideKind = typeof SERVER_WIDE_KINDS[number];

/**
 * Share of the seeds each wider kind is on in when the kinds are not chosen (each drawn from a
 * generator of its own, so a seed without them keeps its exact run).
 */
export const SERVER_SEED_SHARE: Readonly<Record<ServerWideKind, number>> = {
  "disk-slow": 0.25,
  "clock-drift": 0.25,
  "long-delay": 0.25,
  "long-pause": 0.25,
  "watch": 0.5,
};

/** Most drift of a server's clock with `clock-drift`: ±2%, what the lease check allows for. */
export const SERVER_CLOCK_DRIFT_MAX = 0.02;

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
  /**
   * The wider kinds to switch on. Default: each in a share of the seeds
   * ({@linkcode SERVER_SEED_SHARE}).
   */
  readonly wide?: readonly ServerWideKind[];
  /** With `watch`: how many watch clients. Default 2. */
  readonly watchClients?: number;
  /** With `disk-slow`: the chance that a sync stalls. Default: 0.1%, 0.3% or 1%, by the seed. */
  readonly diskStallRate?: number;
  /** With `long-delay`: the share of messages held for seconds. Default: 0.5%, 2% or 5%. */
  readonly longDelayRate?: number;
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
export function checkLeases(
  leases: readonly LeaseRecord[],
  options: { readonly clockDriftMax?: number } = {},
): string[] {
  // The leader times a TTL on its own clock: one running fast by d ends it after TTL / (1 + d).
  const stretch = 1 + (options.clockDriftMax ?? 0);
  const out: string[] = [];
  for (const l of leases) {
    if (l.putAckMs === undefined) continue;
    for (const r of l.reads) {
      if (r.present || r.callMs < l.putAckMs) continue;
      if (l.revokeCallMs !== undefined && l.revokeCallMs <= r.returnMs) continue;
      // A promise sent at t holds the lease until t + TTL at least; one sent after the read
      // returned found the lease alive later, so it was alive during the read too.
      const promise = l.promises.find((p) => p.callMs + p.ttlMs / stretch > r.returnMs);
      if (promise === undefined) continue;
      out.push(
        `lease ${l.id}: key ${JSON.stringify(l.key)} missing from a read sent at ${r.callMs} ms, ` +
          `answered at ${r.returnMs} ms, while a keep-alive sent at ${promise.callMs} ms promised ` +
          `it until ${Math.floor(promise.callMs + promise.ttlMs / stretch)} ms`,
      );
    }
  }
  return out;
}

/**
 * The converse of {@linkcode checkLeases}: an expired (or revoked) lease stays gone. Once a read
 * that started after the key's put was acknowledged misses the key, no read sent after that one
 * was answered sees the key again, and no keep-alive sent after it is answered with a TTL.
 * Returns one line per violation.
 */
export function checkExpiredLeases(leases: readonly LeaseRecord[]): string[] {
  const out: string[] = [];
  for (const l of leases) {
    if (l.putAckMs === undefined) continue;
    const gone = l.reads.find((r) => !r.present && r.callMs >= l.putAckMs!);
    if (gone === undefined) continue;
    const back = l.reads.find((r) => r.present && r.callMs > gone.returnMs);
    if (back !== undefined) {
      out.push(
        `lease ${l.id}: key ${JSON.stringify(l.key)} missing from a read answered at ` +
          `${gone.returnMs} ms, visible again to a read sent at ${back.callMs} ms`,
      );
    }
    const revived = l.promises.find((p) => p.callMs > gone.returnMs);
    if (revived !== undefined) {
      out.push(
        `lease ${l.id}: key ${JSON.stringify(l.key)} missing from a read answered at ` +
          `${gone.returnMs} ms, yet a keep-alive sent at ${revived.callMs} ms got a TTL`,
      );
    }
  }
  return out;
}

/** What one watch client received, for {@linkcode checkWatches}. */
export interface WatchRecord {
  /** The client. */
  readonly clientId: string;
  /** Every event received, in order, as `revision TYPE key value` (base64 key and value). */
  readonly events: string[];
  /** Watches created (the first and each re-creation). */
  creates: number;
}

/** An event as {@linkcode WatchRecord.events} holds it, from etcd's JSON event. */
export function watchEventLine(e: Record<string, unknown>): string {
  const kv = e.kv as Record<string, unknown>;
  return `${kv.mod_revision} ${e.type ?? "PUT"} ${kv.key} ${kv.value ?? ""}`;
}

/**
 * Watchers see every committed event exactly once, in revision order, with no gap: what each
 * received (from revision 1 on) is a prefix of the committed history. Returns one line per
 * violation (the first difference of each watcher).
 */
export function checkWatches(
  watches: readonly WatchRecord[],
  committed: readonly string[],
): string[] {
  const out: string[] = [];
  for (const w of watches) {
    const i = w.events.findIndex((e, i) => e !== committed[i]);
    if (i < 0) continue;
    out.push(
      `watch ${w.clientId}: event #${i + 1} received is "${w.events[i]}", the committed ` +
        `history has ${committed[i] === undefined ? "no more events" : `"${committed[i]}"`}` +
        (i > 0 ? ` (after "${w.events[i - 1]}")` : ""),
    );
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
  /** The wider kinds on in this run. */
  readonly wide: readonly ServerWideKind[];
  /**
   * Faults injected, by kind: crashes, restarts, partitions, pauses, long pauses; fdatasyncs that
   * took time and those that stalled; messages and forwards held for seconds.
   */
  readonly faults: {
    crashes: number;
    restarts: number;
    partitions: number;
    pauses: number;
    longPauses: number;
    slowSyncs: number;
    diskStalls: number;
    longDelayed: number;
  };
  /** With `clock-drift`: each server's clock rate (1 for an exact one). */
  readonly clockRates: readonly number[];
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
  /** With `watch`: what the watch clients received and the violations of {@linkcode checkWatches}. */
  readonly watches: {
    readonly records: readonly WatchRecord[];
    readonly events: number;
    readonly creates: number;
    readonly violations: readonly string[];
  };
  /** Whether the history is linearizable, no lease broke its promise and watches hold. */
  readonly ok: boolean;
  /** Virtual time at the end, ms. */
  readonly endMs: number;
}

/** How long a client waits for an answer before it counts the outcome as unknown, ms. */
const CLIENT_TIMEOUT_MS = 6000;
/** How long a watch client waits for its watch to be created, ms. */
const WATCH_CREATE_TIMEOUT_MS = 1000;
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
  const wide = new Set<ServerWideKind>(options.wide ?? SERVER_WIDE_KINDS);
  // The wider kinds and their settings draw from generators of their own.
  const wideRng = new SeededRng(seed ^ 0x71de);
  for (const kind of SERVER_WIDE_KINDS) {
    if (options.wide === undefined && !wideRng.chance(SERVER_SEED_SHARE[kind])) wide.delete(kind);
  }
  const nodes = options.nodes ?? 3;
  const clocks = wide.has("clock-drift")
    ? Array.from({ length: nodes }, () => ({
      offsetMs: wideRng.int(0, 100_000),
      rate: 1 + (wideRng.next() * 2 - 1) * SERVER_CLOCK_DRIFT_MAX,
    }))
    : undefined;
  const cluster = new ServerCluster({
    seed,
    nodes: options.nodes,
    faultPoints: options.faultPoints,
    diskLatency: wide.has("disk-slow")
      ? {
        syncMsMax: [2, 10, 30][wideRng.int(0, 3)],
        stallRate: options.diskStallRate ?? [0.001, 0.003, 0.01][wideRng.int(0, 3)],
        stallMsMin: 100,
        stallMsMax: 2_000,
      }
      : undefined,
    clocks,
    longDelay: wide.has("long-delay")
      ? { longDelayRate: options.longDelayRate ?? [0.005, 0.02, 0.05][wideRng.int(0, 3)] }
      : undefined,
  });
  const rng = cluster.rng;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.next() * xs.length)];
  const durationMs = options.durationMs ?? 4000;
  const keys = Array.from({ length: options.keys ?? 3 }, (_, i) => `k${i}`);
  const history: Operation[] = [];
  const faults = {
    crashes: 0,
    restarts: 0,
    partitions: 0,
    pauses: 0,
    longPauses: 0,
    slowSyncs: 0,
    diskStalls: 0,
    longDelayed: 0,
  };
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
      // No call starts after the faulty phase: its timeout must end before the run does.
      if (up().length === 0 || cluster.nowMs >= durationMs) continue;
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
      if (rng.next() < 0.3 && up().length > 0 && cluster.nowMs < durationMs) {
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

  // Long pauses, on a schedule and a generator of their own: past every lease's TTL.
  const longRng = new SeededRng(seed ^ 0x10a7);
  const longPauses = async () => {
    while (cluster.nowMs < durationMs) {
      await sleep(longRng.int(500, 1_501));
      if (cluster.nowMs >= durationMs) break;
      const running = cluster.ids.filter((id) => cluster.isUp(id) && !cluster.isPaused(id));
      if (running.length === 0) continue;
      const leader = running.find((id) => cluster.server(id)?.node.role === "Leader");
      const id = leader !== undefined && longRng.chance(0.5)
        ? leader
        : running[longRng.int(0, running.length)];
      cluster.pause(id);
      faults.longPauses++;
      cluster.after(longRng.int(2_500, 5_001), () => cluster.resume(id));
    }
  };

  // Watch clients, on a generator of their own: one watch over every key from revision 1, read
  // as the JSON stream, re-created from the last revision seen + 1 when it fails, stalls or now
  // and then on another node.
  const watchRng = new SeededRng(seed ^ 0x3a7c);
  const watches: WatchRecord[] = [];
  // Every timer a watch client waits on ends before the run does (at most 1,100 ms on).
  const watchEndMs = durationMs + SETTLE_MS - 1_500;
  const watchClient = async (clientId: string) => {
    const record: WatchRecord = { clientId, events: [], creates: 0 };
    watches.push(record);
    let nextRevision = 1;
    while (cluster.nowMs < watchEndMs) {
      const up = cluster.ids.filter((id) => cluster.isUp(id));
      if (up.length === 0) {
        await sleep(50);
        continue;
      }
      const node = up[watchRng.int(0, up.length)];
      const server = cluster.server(node);
      record.creates++;
      const res = await Promise.race([
        cluster.request(node, "/v3/watch", {
          create_request: {
            key: b64("\0"),
            range_end: b64("\0"),
            start_revision: String(nextRevision),
            progress_notify: true,
          },
        }),
        sleep(WATCH_CREATE_TIMEOUT_MS).then(() => undefined),
      ]);
      if (res === undefined || res.status !== 200 || res.body === null) {
        await res?.body?.cancel();
        await sleep(watchRng.int(10, 200));
        continue;
      }
      const reader = res.body.getReader();
      // A stream stays on this node until it fails, falls silent or the client moves on.
      const leaveMs = cluster.nowMs + watchRng.int(300, 3_000);
      let lastHeardMs = cluster.nowMs;
      let pending = reader.read();
      let buffered = "";
      while (cluster.nowMs < watchEndMs) {
        const r = await Promise.race([pending, sleep(100).then(() => undefined)]);
        const gone = cluster.server(node) !== server;
        if (r === undefined) {
          if (gone || cluster.nowMs - lastHeardMs > 3_000 || cluster.nowMs >= leaveMs) break;
          continue;
        }
        if (r.done) break;
        lastHeardMs = cluster.nowMs;
        pending = reader.read();
        buffered += dec.decode(r.value, { stream: true });
        let canceled = false;
        for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          const result = (JSON.parse(line) as { result: Record<string, unknown> }).result;
          if (result.canceled === true) canceled = true;
          for (const e of (result.events ?? []) as Record<string, unknown>[]) {
            record.events.push(watchEventLine(e));
            nextRevision = Number((e.kv as Record<string, unknown>).mod_revision) + 1;
          }
        }
        if (canceled || gone) break;
      }
      await reader.cancel().catch(() => {});
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
  const watchClients = wide.has("watch")
    ? Array.from({ length: options.watchClients ?? 2 }, (_, i) => watchClient(`w${i + 1}`))
    : [];
  const running = Promise.all([
    ...clients,
    ...leaseClients,
    ...watchClients,
    options.faults === false ? undefined : nemesis(),
    options.faults === false || !wide.has("long-pause") ? undefined : longPauses(),
  ]);
  let finished = false;
  running.then(() => finished = true);
  await cluster.runUntil(durationMs + SETTLE_MS);
  // A client still waiting on a timer would wait forever once the clock stops: drive on a while,
  // then say so rather than hang.
  for (let i = 0; i < 20 && !finished; i++) await cluster.runUntil(cluster.nowMs + 1000);
  if (!finished) throw new Error(`Seed ${seed}: clients still waiting 20 s after the run's end`);
  await running;
  for (const id of cluster.ids) {
    snapshots += cluster.server(id)?.node.log.snapshotIndex !== 0 ? 1 : 0;
  }
  const forwards = cluster.counters.forwards;
  faults.slowSyncs = cluster.counters.slowSyncs;
  faults.diskStalls = cluster.counters.diskStalls;
  faults.longDelayed = cluster.counters.longDelayed;
  // The committed history: the events of the server that applied the most.
  let committed: string[] = [];
  let revision = -1;
  for (const id of cluster.ids) {
    const store = cluster.server(id)?.store;
    if (store === undefined || store.revision <= revision) continue;
    revision = store.revision;
    committed = store.history(1).flatMap((r) =>
      r.events.map((e) => watchEventLine(eventJson(e) as Record<string, unknown>))
    );
  }
  await cluster.close();
  const ops = {
    total: history.length,
    ok: history.filter((o) => o.result?.ok === true).length,
    failed: history.filter((o) => o.result?.ok === false).length,
    unknown: history.filter((o) => o.returnMs === null).length,
  };
  const check = checkLinearizable(history);
  const violations = [
    ...checkLeases(leases, { clockDriftMax: clocks === undefined ? 0 : SERVER_CLOCK_DRIFT_MAX }),
    ...checkExpiredLeases(leases),
  ];
  const watchViolations = checkWatches(watches, committed);
  return {
    seed,
    history,
    check,
    ops,
    wide: SERVER_WIDE_KINDS.filter((k) => wide.has(k)),
    faults,
    clockRates: clocks?.map((c) => c.rate) ?? cluster.ids.map(() => 1),
    forwards,
    snapshots,
    leases: { records: leases, keepAlives, violations },
    watches: {
      records: watches,
      events: watches.reduce((n, w) => n + w.events.length, 0),
      creates: watches.reduce((n, w) => n + w.creates, 0),
      violations: watchViolations,
    },
    ok: check.ok && violations.length === 0 && watchViolations.length === 0,
    endMs: cluster.nowMs,
  };
}
