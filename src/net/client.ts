/**
 * The TypeScript client of a raftmeta cluster, over the etcd v3 JSON paths with `fetch`. It finds
 * the leader (every answer names it), retries through leader changes, timeouts and dead nodes,
 * and sends each write with this client's id and a sequence number, so a retried write is applied
 * once (Raft dissertation §6.3). Reads are linearizable unless asked to be serializable.
 *
 * Only relative imports: the client can be imported from a URL.
 *
 * @example
 * ```ts ignore
 * import { connect } from "./client.ts";
 * const client = connect(["http://127.0.0.1:2379"]);
 * await client.put("/services/db/primary", "10.0.0.7:5432");
 * const kv = await client.get("/services/db/primary");
 * console.log(kv?.text); // "10.0.0.7:5432"
 * ```
 *
 * @module
 */

import type {
  Compare,
  KeyRange,
  KvEvent,
  RangeResponse,
  TxnCommand,
  TxnOp,
  TxnOpResponse,
  TxnResponse,
} from "../kv/types.ts";
import { keyBytes, keyFromBytes } from "../kv/bytes.ts";
import { fetchErrorText, neverSent } from "./fetch_error.ts";
import type { CoordClient } from "../coord/client.ts";
import type { WatchOptions, WatchResponse, WatchStream } from "../coord/watch.ts";

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /** This client's id in write sessions. Default: a random UUID. */
  readonly clientId?: string;
  /** Give up on an operation after this long. Default 10,000. */
  readonly timeoutMs?: number;
  /** Give up on one attempt (one node) after this long and try again. Default 3,000. */
  readonly attemptTimeoutMs?: number;
  /** Read serializable (local, possibly stale) by default. Default false: linearizable. */
  readonly serializable?: boolean;
  /** The fetch to use (for tests). Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

/** A key and its value with etcd's revisions. */
export interface ClientKeyValue {
  /** The key. */
  readonly key: string;
  /** The value's bytes. */
  readonly value: Uint8Array;
  /** The value as UTF-8 text (malformed bytes shown as U+FFFD). */
  readonly text: string;
  /** Revision that created the key. */
  readonly createRevision: number;
  /** Revision of its last change. */
  readonly modRevision: number;
  /** Puts since creation. */
  readonly version: number;
  /** The lease the key is attached to; absent when none. */
  readonly lease?: number;
}

/** One change seen by a watch. */
export interface ClientWatchEvent {
  /** `PUT` or `DELETE`. */
  readonly type: "PUT" | "DELETE";
  /** The key. */
  readonly key: string;
  /** The key-value after the change (for a DELETE: the key, an empty value). */
  readonly kv: ClientKeyValue;
  /** The key-value before the change, when asked for and the key existed. */
  readonly prevKv?: ClientKeyValue;
}

/** What a watch yields: the events of one revision, or a progress notification (no events). */
export interface ClientWatchResponse {
  /** The revision of the events, or the store's revision for a progress notification. */
  readonly revision: number;
  /** Events of that revision, in order (empty for a progress notification). */
  readonly events: readonly ClientWatchEvent[];
}

/** Options of {@linkcode RaftmetaClient.watch}. */
export interface ClientWatchOptions {
  /** First revision to report; omitted: only changes after the watch starts. */
  readonly startRevision?: number;
  /** Include each event's previous key-value. */
  readonly prevKv?: boolean;
  /** Ask for progress notifications while idle (yielded with no events). */
  readonly progressNotify?: boolean;
  /** Ends the watch. */
  readonly signal?: AbortSignal;
}

/** The answer to a range read. */
export interface ClientRangeResult {
  /** Store revision of the read. */
  readonly revision: number;
  /** Key-values in key order. */
  readonly kvs: readonly ClientKeyValue[];
  /** Whether the limit left keys out. */
  readonly more: boolean;
  /** Keys in the range. */
  readonly count: number;
}

/** Options of a read. */
export interface ReadOptions {
  /** Serve from the node's own state, possibly stale. */
  readonly serializable?: boolean;
  /** Most key-values to return (0: no limit). */
  readonly limit?: number;
  /** Return keys without values. */
  readonly keysOnly?: boolean;
  /** Return only the count. */
  readonly countOnly?: boolean;
}

/** The answer to a transaction. */
export interface ClientTxnResult {
  /** Whether every compare held. */
  readonly succeeded: boolean;
  /** Store revision after it. */
  readonly revision: number;
  /** The raw etcd responses of the operations that ran. */
  readonly responses: readonly Record<string, unknown>[];
}

/** A request the cluster refused (4xx), or one that could not finish in time. */
export class RaftmetaError extends Error {
  /** HTTP status (0 when no node answered). */
  readonly status: number;
  /** Whether the operation may have taken effect (a write whose outcome is unknown). */
  readonly maybeApplied: boolean;
  /** Makes an error. */
  constructor(message: string, status: number, maybeApplied = false) {
    super(message);
    this.name = "RaftmetaError";
    this.status = status;
    this.maybeApplied = maybeApplied;
  }
}

/** A watch whose next revision is older than the history a node keeps (HTTP 410). */
export class WatchCompactedError extends RaftmetaError {
  /** The newest revision that was compacted away; a new watch may start after it. */
  readonly compactRevision: number;
  /** Makes an error. */
  constructor(message: string, compactRevision: number) {
    super(message, 410);
    this.name = "WatchCompactedError";
    this.compactRevision = compactRevision;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Longest delay one timer takes: a longer one fires after 1 ms instead. */
const TIMER_MS_MAX = 2 ** 31 - 1;

/** Waits `ms`, or less when `signal` aborts (no timer is left behind). */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    let timer: ReturnType<typeof setTimeout>;
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    // A long wait (a keep-alive every third of a TTL of months) goes in timer-sized steps.
    const wait = (left: number) => {
      timer = left > TIMER_MS_MAX
        ? setTimeout(() => wait(left - TIMER_MS_MAX), TIMER_MS_MAX)
        : setTimeout(done, left);
    };
    wait(ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

function b64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

function unb64(text: string | undefined): Uint8Array {
  if (text === undefined) return new Uint8Array(0);
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesOf(v: string | Uint8Array): Uint8Array {
  return typeof v === "string" ? encoder.encode(v) : v;
}

/** etcd's key and range_end for a {@linkcode KeyRange}. */
function rangeFields(range: KeyRange): Record<string, string> {
  if ("prefix" in range) {
    if (range.prefix === "") return { key: "AA==", range_end: "AA==" };
    const key = encoder.encode(range.prefix);
    const end = key.slice();
    let i = end.length - 1;
    while (i >= 0 && end[i] === 0xff) i--;
    if (i < 0) return { key: b64(key), range_end: "AA==" };
    end[i]++;
    return { key: b64(key), range_end: b64(end.subarray(0, i + 1)) };
  }
  if ("fromKey" in range) return { key: b64(keyBytes(range.fromKey)), range_end: "AA==" };
  return range.rangeEnd === undefined
    ? { key: b64(keyBytes(range.key)) }
    : { key: b64(keyBytes(range.key)), range_end: b64(keyBytes(range.rangeEnd)) };
}

function kvOf(j: Record<string, string | undefined>): ClientKeyValue {
  const value = unb64(j.value);
  return {
    key: keyFromBytes(unb64(j.key)),
    value,
    text: decoder.decode(value),
    createRevision: Number(j.create_revision ?? 0),
    modRevision: Number(j.mod_revision ?? 0),
    version: Number(j.version ?? 0),
    ...(j.lease !== undefined ? { lease: Number(j.lease) } : {}),
  };
}

const COMPARE_TARGET = {
  version: ["VERSION", "version"],
  createRevision: ["CREATE", "create_revision"],
  modRevision: ["MOD", "mod_revision"],
  value: ["VALUE", "value"],
  lease: ["LEASE", "lease"],
} as const;
const COMPARE_RESULT = {
  equal: "EQUAL",
  notEqual: "NOT_EQUAL",
  greater: "GREATER",
  less: "LESS",
} as const;

function compareJson(c: Compare): Record<string, unknown> {
  const [target, field] = COMPARE_TARGET[c.target];
  return {
    key: b64(keyBytes(c.key)),
    ...(c.rangeEnd === undefined ? {} : { range_end: b64(keyBytes(c.rangeEnd)) }),
    target,
    result: COMPARE_RESULT[c.result],
    [field]: c.target === "value" ? b64(c.value) : String(c.value),
  };
}

function opJson(op: TxnOp): Record<string, unknown> {
  switch (op.type) {
    case "put":
      return {
        request_put: {
          key: b64(keyBytes(op.key)),
          value: b64(op.value),
          prev_kv: op.prevKv,
          ...(op.lease ? { lease: String(op.lease) } : {}),
        },
      };
    case "delete":
      return { request_delete_range: { ...rangeFields(op.range), prev_kv: op.prevKv } };
    case "range":
      return {
        request_range: {
          ...rangeFields(op.range),
          limit: String(op.limit),
          keys_only: op.keysOnly,
          count_only: op.countOnly,
          ...(op.sortOrder ? { sort_order: op.sortOrder.toUpperCase() } : {}),
          ...(op.sortTarget ? { sort_target: SORT_TARGET[op.sortTarget] } : {}),
          ...(op.minModRevision ? { min_mod_revision: String(op.minModRevision) } : {}),
          ...(op.maxModRevision ? { max_mod_revision: String(op.maxModRevision) } : {}),
          ...(op.minCreateRevision ? { min_create_revision: String(op.minCreateRevision) } : {}),
          ...(op.maxCreateRevision ? { max_create_revision: String(op.maxCreateRevision) } : {}),
        },
      };
    case "txn":
      return {
        request_txn: {
          compare: op.compare.map(compareJson),
          success: op.success.map(opJson),
          failure: op.failure.map(opJson),
        },
      };
  }
}

const SORT_TARGET = {
  key: "KEY",
  version: "VERSION",
  createRevision: "CREATE",
  modRevision: "MOD",
  value: "VALUE",
} as const;

/** Whether ops only read (ranges, nested transactions of ranges). */
function opsReadOnly(ops: readonly TxnOp[]): boolean {
  return ops.every((op) =>
    op.type === "range" || (op.type === "txn" && opsReadOnly([...op.success, ...op.failure]))
  );
}

const LEADER_HEADER = "raftmeta-leader-url";
/** No retry starts with less time than this left before a request's deadline. */
const MIN_RETRY_MS = 50;

/** The paths {@linkcode RaftmetaClient.cluster} takes. */
export type ClusterPath =
  | "/v3/cluster/member/list"
  | "/v3/cluster/member/add"
  | "/v3/cluster/member/remove"
  | "/v3/cluster/member/update"
  | "/v3/cluster/member/promote"
  | "/v3/maintenance/transfer-leadership";

/** A client of one cluster. Writes go one at a time (sessions need it); reads run concurrently. */
export class RaftmetaClient {
  /** The endpoints given. */
  readonly endpoints: readonly string[];
  /** This client's id in write sessions. */
  readonly clientId: string;
  readonly #timeoutMs: number;
  readonly #attemptTimeoutMs: number;
  readonly #serializable: boolean;
  readonly #fetch: typeof fetch;
  #seq = 0;
  #next = 0;
  #leaderUrl: string | undefined;
  #writeChain: Promise<unknown> = Promise.resolve();

  /** Use {@linkcode connect}. */
  constructor(endpoints: readonly string[], options: ConnectOptions = {}) {
    if (endpoints.length === 0) throw new RangeError("At least one endpoint is needed");
    this.endpoints = endpoints.map((e) => e.replace(/\/+$/, ""));
    for (const e of this.endpoints) {
      if (!/^https?:\/\/[^\s/]+$/.test(e)) {
        throw new RangeError(`Endpoint must look like http://host:port: ${JSON.stringify(e)}`);
      }
    }
    this.clientId = options.clientId ?? crypto.randomUUID();
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? 3_000;
    this.#serializable = options.serializable ?? false;
    this.#fetch = options.fetch ?? fetch;
  }

  /** The leader's URL as last reported by a node, if any. */
  get leaderUrl(): string | undefined {
    return this.#leaderUrl;
  }

  /** Stores `value` under `key`. */
  async put(
    key: string,
    value: string | Uint8Array,
    options: { prevKv?: boolean; lease?: number } = {},
  ): Promise<{ revision: number; prevKv?: ClientKeyValue }> {
    const body = { key: b64(keyBytes(key)), value: b64(bytesOf(value)) } as Record<
      string,
      unknown
    >;
    if (options.prevKv) body.prev_kv = true;
    if (options.lease) body.lease = String(options.lease);
    const r = await this.#write("/v3/kv/put", body);
    return {
      revision: Number(r.header.revision),
      ...(r.prev_kv !== undefined ? { prevKv: kvOf(r.prev_kv) } : {}),
    };
  }

  /** The key-value under `key`, or undefined. */
  async get(key: string, options: ReadOptions = {}): Promise<ClientKeyValue | undefined> {
    const r = await this.range({ key }, options);
    return r.kvs[0];
  }

  /** The keys of `range` in key order. */
  async range(range: KeyRange, options: ReadOptions = {}): Promise<ClientRangeResult> {
    const body: Record<string, unknown> = { ...rangeFields(range) };
    if (options.serializable ?? this.#serializable) body.serializable = true;
    if (options.limit) body.limit = String(options.limit);
    if (options.keysOnly) body.keys_only = true;
    if (options.countOnly) body.count_only = true;
    const r = await this.#request("/v3/kv/range", body, undefined);
    return {
      revision: Number(r.header.revision),
      kvs: (r.kvs ?? []).map(kvOf),
      more: r.more === true,
      count: Number(r.count ?? 0),
    };
  }

  /** Deletes `key`, or every key of a range. */
  async delete(
    key: string | KeyRange,
    options: { prevKv?: boolean } = {},
  ): Promise<{ revision: number; deleted: number; prevKvs: ClientKeyValue[] }> {
    const range: KeyRange = typeof key === "string" ? { key } : key;
    const body: Record<string, unknown> = { ...rangeFields(range) };
    if (options.prevKv) body.prev_kv = true;
    const r = await this.#write("/v3/kv/deleterange", body);
    return {
      revision: Number(r.header.revision),
      deleted: Number(r.deleted ?? 0),
      prevKvs: (r.prev_kvs ?? []).map(kvOf),
    };
  }

  /** Runs a transaction: if every compare holds, `success`, else `failure`; atomically. */
  async txn(
    txn: { compare: readonly Compare[]; success: readonly TxnOp[]; failure?: readonly TxnOp[] },
  ): Promise<ClientTxnResult> {
    const body = {
      compare: txn.compare.map(compareJson),
      success: txn.success.map(opJson),
      failure: (txn.failure ?? []).map(opJson),
    };
    // A txn that only reads is served without the log, so it takes no seq of the session.
    const readOnly = opsReadOnly([...txn.success, ...txn.failure ?? []]);
    const r = readOnly
      ? await this.#request("/v3/kv/txn", body, undefined)
      : await this.#write("/v3/kv/txn", body);
    return {
      succeeded: r.succeeded === true,
      revision: Number(r.header.revision),
      responses: r.responses ?? [],
    };
  }

  /**
   * Sets `key` to `value` if it holds `expected` (null: if it does not exist). Returns whether it
   * did.
   */
  async compareAndSwap(
    key: string,
    expected: string | Uint8Array | null,
    value: string | Uint8Array,
  ): Promise<boolean> {
    const compare: Compare = expected === null
      ? { key, target: "version", result: "equal", value: 0 }
      : { key, target: "value", result: "equal", value: bytesOf(expected) };
    const r = await this.txn({
      compare: [compare],
      success: [{ type: "put", key, value: bytesOf(value), prevKv: false }],
    });
    return r.succeeded;
  }

  /** Grants a lease of `ttlSeconds` (its keys vanish when it ends); `id` 0 lets the store pick. */
  async leaseGrant(ttlSeconds: number, id = 0): Promise<{ id: number; ttl: number }> {
    const body: Record<string, unknown> = { TTL: String(ttlSeconds) };
    if (id !== 0) body.ID = String(id);
    const r = await this.#write("/v3/lease/grant", body);
    return { id: Number(r.ID), ttl: Number(r.TTL) };
  }

  /** Revokes lease `id`: its keys are deleted. Rejects (404) when there is no such lease. */
  async leaseRevoke(id: number): Promise<void> {
    await this.#write("/v3/lease/revoke", { ID: String(id) });
  }

  /**
   * Keeps lease `id` alive for another TTL with one request; resolves with the TTL. Rejects (404)
   * when gone (the node answers TTL 0, as etcd does). `timeoutMs` bounds this call (default: the client's timeout): a keep-alive that
   * arrives after the lease expired is no use, so a caller may want to give up sooner and retry.
   */
  async leaseKeepAlive(id: number, options: { timeoutMs?: number } = {}): Promise<{ ttl: number }> {
    const r = await this.#request(
      "/v3/lease/keepalive",
      { ID: String(id) },
      undefined,
      options.timeoutMs,
    );
    const ttl = Number(r.result?.TTL ?? 0);
    if (ttl <= 0) throw new RaftmetaError(`Lease ${id} not found: it expired or was revoked`, 404);
    return { ttl };
  }

  /**
   * Keeps lease `id` alive over one streaming request (etcd's `LeaseKeepAlive` stream: a JSON line
   * sent every `intervalMs`, default a third of the TTL, and one answer line read for each), and
   * yields each answer's TTL. When the connection breaks or an answer takes longer than the
   * attempt timeout, the stream is opened again on another endpoint. Throws
   * {@linkcode RaftmetaError} (404) when the lease is gone, or when no endpoint answers within the
   * timeout. Ends when `options.signal` aborts or the iteration stops.
   */
  async *leaseKeepAlives(
    id: number,
    options: { intervalMs?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<{ ttl: number }> {
    const signal = options.signal;
    let failingSince: number | undefined;
    let lastError = "";
    while (!signal?.aborted) {
      if (failingSince !== undefined && performance.now() - failingSince > this.#timeoutMs) {
        throw new RaftmetaError(`Lease keep-alive: no endpoint answered in time: ${lastError}`, 0);
      }
      const base = this.#pick();
      const abort = new AbortController();
      const onAbort = () => abort.abort();
      signal?.addEventListener("abort", onAbort);
      let send: ((line: string) => void) | undefined;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          send = (line) => controller.enqueue(encoder.encode(line + "\n"));
        },
      });
      const line = JSON.stringify({ ID: String(id) });
      try {
        send!(line);
        const res = await this.#fetch(`${base}/v3/lease/keepalive`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
          signal: abort.signal,
        });
        if (!res.ok) await throwStreamError(res);
        const lines = res.body!.pipeThrough(new TextDecoderStream()).getReader();
        let rest = "";
        for (;;) {
          // One answer per line sent; an answer that does not come in time means a stuck node.
          const timer = setTimeout(() => abort.abort(), this.#attemptTimeoutMs);
          let text: string | undefined;
          try {
            while (text === undefined) {
              const r = await lines.read();
              if (r.done) throw new Error("keep-alive stream ended");
              const parts = (rest + r.value).split("\n");
              rest = parts.pop()!;
              const full = parts.filter((p) => p.trim() !== "");
              if (full.length > 1) throw new Error("more answers than keep-alives sent");
              text = full[0];
            }
          } finally {
            clearTimeout(timer);
          }
          const answer = JSON.parse(text);
          if (answer.error !== undefined) {
            const status = Number(answer.error.http_code ?? 500);
            const message = String(answer.error.message ?? "keep-alive failed");
            if (status < 500) throw new RaftmetaError(message, status);
            throw new Error(message); // another node may lead: reconnect
          }
          const ttl = Number(answer.result?.TTL ?? 0);
          if (ttl <= 0) {
            throw new RaftmetaError(`Lease ${id} not found: it expired or was revoked`, 404);
          }
          failingSince = undefined;
          const leader = res.headers.get(LEADER_HEADER);
          if (leader !== null) this.#leaderUrl = leader;
          yield { ttl };
          await sleep(options.intervalMs ?? Math.max(500, (ttl * 1000) / 3), signal);
          if (signal?.aborted) return;
          send!(line);
        }
      } catch (e) {
        if (signal?.aborted) return;
        if (e instanceof RaftmetaError) throw e;
        lastError = `${base}: ${fetchErrorText(e)}`;
        this.#leaderUrl = undefined;
        failingSince ??= performance.now();
        await sleep(50, signal);
      } finally {
        signal?.removeEventListener("abort", onAbort);
        abort.abort();
      }
    }
  }

  /** Remaining and granted TTL (seconds) of lease `id`, and its keys; `ttl` -1 when gone. */
  async leaseTimeToLive(
    id: number,
  ): Promise<{ id: number; ttl: number; grantedTtl: number; keys: string[] }> {
    const r = await this.#request(
      "/v3/lease/timetolive",
      { ID: String(id), keys: true },
      undefined,
    );
    return {
      id,
      ttl: Number(r.TTL),
      grantedTtl: Number(r.grantedTTL ?? 0),
      keys: (r.keys ?? []).map((k: string) => keyFromBytes(unb64(k))),
    };
  }

  /** Ids of every lease. */
  async leases(): Promise<number[]> {
    const r = await this.#request("/v3/lease/leases", {}, undefined);
    return (r.leases ?? []).map((l: { ID: string }) => Number(l.ID));
  }

  /**
   * The raised alarms (`POST /v3/maintenance/alarm`), or with `"disarm"` clears every NOSPACE
   * alarm first; each as etcd's `{ memberID, alarm }`.
   */
  async alarm(action: "list" | "disarm"): Promise<{ memberID: string; alarm: string }[]> {
    const body = action === "list"
      ? { action: "GET" }
      : { action: "DEACTIVATE", memberID: "0", alarm: "NOSPACE" };
    const r = await this.#request("/v3/maintenance/alarm", body, undefined);
    return r.alarms ?? [];
  }

  /**
   * etcd's Cluster API and MoveLeader (`/v3/cluster/member/list|add|remove|update|promote`,
   * `/v3/maintenance/transfer-leadership`): sends `body` and returns etcd's answer (members with
   * ids as decimal strings). Changes are not retried after an unknown outcome's timeout.
   */
  // deno-lint-ignore no-explicit-any
  async cluster(path: ClusterPath, body: Record<string, unknown> = {}): Promise<any> {
    return await this.#request(path, body, undefined);
  }

  /**
   * Watches `range` (`POST /v3/watch`): yields the events of each revision in order. When the
   * connection breaks or the node cancels the watch (it stops, or the watcher fell behind), the
   * watch is opened again on another endpoint from the next revision it owes: no gap, no repeat.
   * Throws {@linkcode WatchCompactedError} when that revision has been compacted, and
   * {@linkcode RaftmetaError} when no endpoint answers within the timeout. Ends when `options.signal` aborts or the iteration stops.
   */
  async *watch(
    range: KeyRange,
    options: ClientWatchOptions = {},
  ): AsyncGenerator<ClientWatchResponse> {
    let next = options.startRevision ?? 0;
    let failingSince: number | undefined;
    let lastError = "";
    while (!options.signal?.aborted) {
      if (failingSince !== undefined && performance.now() - failingSince > this.#timeoutMs) {
        throw new RaftmetaError(`Watch: no endpoint answered in time: ${lastError}`, 0);
      }
      const base = this.endpoints[this.#next++ % this.endpoints.length];
      const abort = new AbortController();
      const onAbort = () => abort.abort();
      options.signal?.addEventListener("abort", onAbort);
      try {
        const create: Record<string, unknown> = { ...rangeFields(range) };
        if (next > 0) create.start_revision = String(next);
        if (options.prevKv) create.prev_kv = true;
        if (options.progressNotify) create.progress_notify = true;
        const res = await this.#fetch(`${base}/v3/watch`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ create_request: create }),
          signal: abort.signal,
        });
        if (!res.ok) await throwStreamError(res);
        let rest = "";
        for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
          const parts = (rest + chunk).split("\n");
          rest = parts.pop()!;
          for (const line of parts) {
            if (line.trim() === "") continue;
            const r = JSON.parse(line).result ?? {};
            failingSince = undefined;
            if (r.canceled) {
              if (r.compact_revision !== undefined) {
                throw new WatchCompactedError(
                  `Watch canceled: ${r.cancel_reason}`,
                  Number(r.compact_revision),
                );
              }
              throw new Error(`Watch canceled: ${r.cancel_reason}`); // resume elsewhere
            }
            const headerRevision = Number(r.header?.revision ?? 0);
            if (r.created) {
              if (next === 0) next = headerRevision + 1;
              continue;
            }
            if (r.events === undefined) {
              if (headerRevision >= next) next = headerRevision + 1;
              yield { revision: headerRevision, events: [] };
              continue;
            }
            // deno-lint-ignore no-explicit-any
            const events: ClientWatchEvent[] = r.events.map((e: any) => {
              const kv = kvOf(e.kv);
              return {
                type: e.type === "DELETE" ? "DELETE" : "PUT",
                key: kv.key,
                kv,
                ...(e.prev_kv !== undefined ? { prevKv: kvOf(e.prev_kv) } : {}),
              };
            });
            const revision = Math.max(...events.map((e) => e.kv.modRevision));
            next = revision + 1;
            yield { revision, events };
          }
        }
        throw new Error("watch stream ended");
      } catch (e) {
        if (e instanceof RaftmetaError || options.signal?.aborted) {
          if (options.signal?.aborted) return;
          throw e;
        }
        lastError = `${base}: ${fetchErrorText(e)}`;
        failingSince ??= performance.now();
        await sleep(50, options.signal);
      } finally {
        options.signal?.removeEventListener("abort", onAbort);
        abort.abort();
      }
    }
  }

  /**
   * This client as a {@linkcode CoordClient}, so the coordination recipes (`Session`, `lock`,
   * `campaign`, `observe`, `fencedPut`) run against the cluster over HTTP.
   *
   * @example
   * ```ts ignore
   * import { connect } from "./client.ts";
   * import { Session } from "../coord/session.ts";
   * import { fencedPut, lock } from "../coord/lock.ts";
   * const coord = connect("http://127.0.0.1:2379").coord();
   * const session = await Session.create(coord, { ttlMs: 10_000 });
   * const held = await lock(session, "/locks/db");
   * await fencedPut(coord, "/db/config", "v2", held.fencingToken);
   * await held.unlock();
   * await session.close();
   * ```
   */
  coord(): HttpCoordClient {
    return new HttpCoordClient(this);
  }

  /** The cluster's node table as one node sees it (`GET /v1/status`). */
  async status(): Promise<Record<string, unknown>> {
    return await this.#request("/v1/status", undefined, undefined);
  }

  // deno-lint-ignore no-explicit-any
  #write(path: string, body: Record<string, unknown>): Promise<any> {
    const run = this.#writeChain.then(() => {
      const seq = ++this.#seq;
      return this.#request(path, body, seq);
    });
    this.#writeChain = run.catch(() => {});
    return run;
  }

  #pick(): string {
    if (this.#leaderUrl !== undefined) return this.#leaderUrl;
    return this.endpoints[this.#next++ % this.endpoints.length];
  }

  async #request(
    path: string,
    body: Record<string, unknown> | undefined,
    seq: number | undefined,
    timeoutMs = this.#timeoutMs,
    // deno-lint-ignore no-explicit-any
  ): Promise<any> {
    const deadline = performance.now() + timeoutMs;
    let lastError = "";
    let maybeApplied = false;
    let attempts = 0;
    while (performance.now() < deadline) {
      if (attempts > 0) {
        await new Promise((r) => setTimeout(r, Math.min(100, 10 * attempts)));
        // An attempt the deadline cuts short is one whose fate is unknown (it may have been
        // sent), so a retry with too little time left would only turn a clean "refused" into a
        // "maybe applied": give up with what the earlier attempts said instead.
        if (deadline - performance.now() < MIN_RETRY_MS) break;
      }
      attempts++;
      const base = this.#pick();
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (seq !== undefined) {
        headers["raftmeta-client-id"] = this.clientId;
        headers["raftmeta-seq"] = String(seq);
      }
      let res: Response;
      try {
        res = await this.#fetch(base + path, {
          method: body === undefined ? "GET" : "POST",
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(
            Math.max(1, Math.min(this.#attemptTimeoutMs, deadline - performance.now())),
          ),
        });
      } catch (e) {
        // The node may be down, or the answer lost: try another; the session makes a retried
        // write safe. A refused connection never carried the write.
        lastError = `${base}: ${fetchErrorText(e)}`;
        if (seq !== undefined && !neverSent(e)) maybeApplied = true;
        this.#leaderUrl = undefined;
        continue;
      }
      const leader = res.headers.get(LEADER_HEADER);
      let json: Record<string, unknown> | undefined;
      try {
        json = await res.json();
      } catch {
        json = undefined;
      }
      if (res.ok && json !== undefined) {
        if (leader !== null) this.#leaderUrl = leader;
        return json;
      }
      const message = typeof json?.error === "string" ? json.error : `HTTP ${res.status}`;
      lastError = `${base}: ${message}`;
      if (res.status === 503 || res.status === 504 || res.status >= 500) {
        if (res.status === 504 && seq !== undefined) maybeApplied = true;
        this.#leaderUrl = leader !== null && leader !== base ? leader : undefined;
        continue;
      }
      throw new RaftmetaError(message, res.status);
    }
    throw new RaftmetaError(
      `No answer within ${timeoutMs} ms (${attempts} attempts): ${lastError}`,
      0,
      maybeApplied,
    );
  }
}

/** A nested etcd response's header revision. */
function innerRevision(r: Record<string, unknown>, fallback: number): number {
  const h = r.header as { revision?: string } | undefined;
  return h?.revision === undefined ? fallback : Number(h.revision);
}

/** A {@linkcode TxnResponse} (the store's shape) from the client's etcd-shaped answer. */
function txnResponse(r: ClientTxnResult): TxnResponse {
  const responses = r.responses.map((x): TxnOpResponse => {
    // deno-lint-ignore no-explicit-any
    const j = x as any;
    if (j.response_put !== undefined) {
      const p = j.response_put;
      return {
        type: "put",
        revision: innerRevision(p, r.revision),
        ...(p.prev_kv !== undefined ? { prevKv: kvOf(p.prev_kv) } : {}),
      };
    }
    if (j.response_delete_range !== undefined) {
      const d = j.response_delete_range;
      return {
        type: "delete",
        revision: innerRevision(d, r.revision),
        deleted: Number(d.deleted ?? 0),
        ...(d.prev_kvs !== undefined ? { prevKvs: d.prev_kvs.map(kvOf) } : {}),
      };
    }
    if (j.response_txn !== undefined) {
      const t = j.response_txn;
      return txnResponse({
        succeeded: t.succeeded === true,
        revision: innerRevision(t, 0),
        responses: t.responses ?? [],
      });
    }
    const g = j.response_range ?? {};
    return {
      type: "range",
      revision: innerRevision(g, r.revision),
      kvs: (g.kvs ?? []).map(kvOf),
      more: g.more === true,
      count: Number(g.count ?? 0),
    };
  });
  return { type: "txn", revision: r.revision, succeeded: r.succeeded, responses };
}

/** Most leases whose TTL an {@linkcode HttpCoordClient} remembers (to bound its keep-alives). */
const REMEMBERED_LEASES_MAX = 1_000;

/**
 * A {@linkcode CoordClient} over HTTP, from {@linkcode RaftmetaClient.coord}: transactions and
 * linearizable reads through the leader, leases in whole seconds (etcd's unit; a TTL is rounded
 * up), keep-alives answered by the leader, and watches that reopen on another endpoint from the
 * next revision they owe when a node fails — no gap, no repeat.
 */
export class HttpCoordClient implements CoordClient {
  /** The HTTP client underneath. */
  readonly client: RaftmetaClient;
  /** Granted TTL per lease, so a keep-alive gives up (and is retried) before the lease ends. */
  readonly #ttlMs = new Map<number, number>();
  /** Watches still open, so {@linkcode HttpCoordClient.close} can end them. */
  readonly #watches = new Set<WatchStream>();
  #watchIds = 0;

  /** Use {@linkcode RaftmetaClient.coord}. */
  constructor(client: RaftmetaClient) {
    this.client = client;
  }

  /** {@inheritDoc CoordClient.txn} */
  async txn(txn: Omit<TxnCommand, "type">): Promise<TxnResponse> {
    return txnResponse(await this.client.txn(txn));
  }

  /** {@inheritDoc CoordClient.range} */
  async range(range: KeyRange): Promise<RangeResponse> {
    const r = await this.client.range(range, { serializable: false });
    return { type: "range", revision: r.revision, kvs: r.kvs, more: r.more, count: r.count };
  }

  /** {@inheritDoc CoordClient.leaseGrant} The TTL is rounded up to whole seconds. */
  async leaseGrant(ttlMs: number): Promise<{ id: number; ttlMs: number }> {
    if (!(ttlMs > 0)) throw new RangeError(`Lease TTL must be positive: ${ttlMs} ms`);
    const r = await this.client.leaseGrant(Math.ceil(ttlMs / 1000));
    if (this.#ttlMs.size >= REMEMBERED_LEASES_MAX) {
      this.#ttlMs.delete(this.#ttlMs.keys().next().value!);
    }
    this.#ttlMs.set(r.id, r.ttl * 1000);
    return { id: r.id, ttlMs: r.ttl * 1000 };
  }

  /** {@inheritDoc CoordClient.leaseRevoke} A lease that is already gone is not an error. */
  async leaseRevoke(id: number): Promise<void> {
    this.#ttlMs.delete(id);
    try {
      await this.client.leaseRevoke(id);
    } catch (e) {
      if (!(e instanceof RaftmetaError && e.status === 404)) throw e;
    }
  }

  /**
   * {@inheritDoc CoordClient.leaseKeepAlive} One request, given up after a third of the TTL (so
   * the session's loop can retry while the lease still lives); rejects with a 404
   * {@linkcode RaftmetaError} ("not found") when the lease is gone.
   */
  async leaseKeepAlive(id: number): Promise<{ ttlMs: number }> {
    const ttlMs = this.#ttlMs.get(id);
    try {
      const r = await this.client.leaseKeepAlive(id, {
        timeoutMs: ttlMs === undefined ? undefined : Math.max(300, ttlMs / 3),
      });
      return { ttlMs: r.ttl * 1000 };
    } catch (e) {
      if (e instanceof RaftmetaError && e.status === 404) this.#ttlMs.delete(id);
      throw e;
    }
  }

  /** {@inheritDoc CoordClient.sleep} */
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleep(ms, signal);
  }

  /**
   * Cancels every watch this client has open: a pending `next()` returns done. This ends a recipe
   * blocked on a watch (such as an `observe` loop) from outside.
   */
  close(): void {
    for (const w of [...this.#watches]) w.cancel();
  }

  /**
   * {@inheritDoc CoordClient.watch} Ends with `canceled` when the revision it owes was compacted
   * (with `compactRevision`) or when no endpoint answered within the client's timeout.
   */
  watch(options: WatchOptions): WatchStream {
    const watchId = ++this.#watchIds;
    const abort = new AbortController();
    const responses = this.client.watch(options.range, {
      startRevision: options.startRevision,
      prevKv: options.prevKv,
      progressNotify: options.progressNotify ?? true,
      signal: abort.signal,
    });
    const open = this.#watches;
    let ended = false;
    const end = () => {
      ended = true;
      open.delete(stream);
    };
    const stream: WatchStream = {
      id: watchId,
      cancel() {
        end();
        abort.abort();
      },
      async next(): Promise<IteratorResult<WatchResponse>> {
        if (ended) return { done: true, value: undefined };
        try {
          const r = await responses.next();
          if (r.done || ended) {
            end();
            return { done: true, value: undefined };
          }
          const v = r.value;
          if (v.events.length === 0) {
            return { done: false, value: { kind: "progress", watchId, revision: v.revision } };
          }
          const events: KvEvent[] = v.events.map((e) => ({
            type: e.type,
            kv: e.kv,
            ...(e.prevKv !== undefined ? { prevKv: e.prevKv } : {}),
          }));
          return { done: false, value: { kind: "events", watchId, revision: v.revision, events } };
        } catch (e) {
          end();
          if (abort.signal.aborted) return { done: true, value: undefined };
          const reason = (e as Error).message;
          const value: WatchResponse = e instanceof WatchCompactedError
            ? { kind: "canceled", watchId, reason, compactRevision: e.compactRevision }
            : { kind: "canceled", watchId, reason };
          return { done: false, value };
        }
      },
      return(): Promise<IteratorResult<WatchResponse>> {
        stream.cancel();
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator]() {
        return stream;
      },
    };
    open.add(stream);
    return stream;
  }
}

/**
 * A client of the cluster at `endpoints` (client URLs such as `http://127.0.0.1:2379`; a comma
 * separated string works too). Any node will do: followers forward writes to the leader, and the
 * client then talks to the leader directly.
 */
export function connect(
  endpoints: string | readonly string[],
  options: ConnectOptions = {},
): RaftmetaClient {
  const list = typeof endpoints === "string"
    ? endpoints.split(",").map((s) => s.trim()).filter((s) => s !== "")
    : endpoints;
  return new RaftmetaClient(list, options);
}

/**
 * Throws for a stream request (watch, keep-alive) that failed before streaming: a
 * {@linkcode RaftmetaError} for a refusal (4xx, not worth retrying elsewhere), a plain error for a
 * node that could not serve it (5xx: the caller tries another endpoint).
 */
async function throwStreamError(res: Response): Promise<never> {
  const j = await res.json().catch(() => undefined);
  const message = typeof j?.error === "string" ? j.error : `HTTP ${res.status}`;
  if (res.status < 500) throw new RaftmetaError(message, res.status);
  throw new Error(message);
}
