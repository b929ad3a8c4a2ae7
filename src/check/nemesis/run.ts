/**
 * One run of the real-process fault tests (`deno task nemesis`): start a {@linkcode NemesisCluster},
 * drive key-value clients, lock workers and a watcher against it over HTTP while a nemesis injects
 * faults, then heal everything and check:
 *
 * - the key-value history (docs/history-format.md, times in wall-clock ms since the run started)
 *   with the linearizability checker;
 * - no acknowledged put or cas is missing from the committed history, and no committed value is
 *   one no client wrote;
 * - every node replays the same committed history (watch from revision 1 on each node);
 * - the watcher saw every committed event under its prefix once, in revision order;
 * - the lock history with the lock checker (mutual exclusion, fencing tokens).
 *
 * The seed fixes the runner's choices (operations, keys, fault kinds, targets and durations), not
 * the processes' timing: a seed names a run's script, it does not replay it exactly.
 *
 * @module
 */

import { historyToJsonLines, type Operation, type OperationKind } from "../history.ts";
import type { LockRecord } from "../lock_checker.ts";
import {
  checkRun,
  type CommittedEvent,
  FENCED_KEY,
  KV_PREFIX,
  LOCK_NAME,
  NEMESIS_PREFIX as PREFIX,
  OWNED_KEY,
  type RunRecord,
} from "./checks.ts";
import { connect } from "../../net/client.ts";
import { neverSent } from "../../net/fetch_error.ts";
import { Session } from "../../coord/session.ts";
import { fencedPut, lock } from "../../coord/lock.ts";
import { NemesisCluster, type NemesisNode } from "./cluster.ts";
import { FileStorage } from "../../storage/file_storage.ts";
import { MetadataStore } from "../../kv/store.ts";
import { healthyLink, type LinkFaults } from "./proxy.ts";

/** The fault kinds the nemesis can inject. */
export const NEMESIS_FAULTS = [
  "partition",
  "oneway",
  "delay",
  "drop",
  "stall",
  "kill",
  "pause",
  "killall",
  "diskfull",
] as const;

/** One fault kind. */
export type NemesisFault = typeof NEMESIS_FAULTS[number];

/** Options of {@linkcode runNemesis}. */
export interface NemesisOptions {
  /** Seed of the runner's choices. */
  readonly seed: number;
  /** Node processes (3 or more). */
  readonly nodes: number;
  /** Key-value clients. */
  readonly clients: number;
  /** Lock workers. */
  readonly lockWorkers: number;
  /** How long clients run, in seconds (the checks come after). */
  readonly durationS: number;
  /** Fault kinds to inject, taken in turn at random. */
  readonly faults: readonly NemesisFault[];
  /** Where data, logs, histories and the report go; a new temp directory when absent. */
  readonly dir?: string;
  /** Size of each node's tmpfs for the disk-full fault. Default 64 MiB. */
  readonly diskBytes?: number;
  /** Longest wait for one client request before its outcome is unknown, ms. Default 6000. */
  readonly requestTimeoutMs?: number;
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
}

/** One fault injected. */
export interface FaultRecord {
  /** The kind. */
  readonly kind: NemesisFault;
  /** What exactly: shape, targets, amounts. */
  readonly detail: string;
  /** When it began, ms since the run started. */
  readonly startMs: number;
  /** When it was healed. */
  endMs: number;
  /** The leader when it began, if any answered. */
  readonly leaderBefore?: string;
  /** The leader's term when it began. */
  readonly termBefore?: number;
  /** Whether the fault took the leader away (killed, paused, cut off, disk filled). */
  readonly leaderLoss: boolean;
  /**
   * For a leader loss: ms from the fault taking effect to the first acknowledged write called
   * after it and committed in a later term (by a new leader).
   */
  recoveryMs?: number;
}

/** A run's report, and what it recorded (absent when the run failed before its checks). */
export interface NemesisRun {
  /** The report (also in `<dir>/report.json`). */
  readonly report: NemesisReport;
  /** The histories the checks read. */
  readonly record?: RunRecord;
}

/** The report of a run. */
export interface NemesisReport {
  /** Seed. */
  seed: number;
  /** Nodes, clients, lock workers, duration. */
  config: { nodes: number; clients: number; lockWorkers: number; durationS: number };
  /** Fault kinds enabled and run. */
  faultsEnabled: NemesisFault[];
  /** Fault kinds asked for that could not run, with why. */
  faultsSkipped: { kind: NemesisFault; reason: string }[];
  /** Operations by kind, and their outcomes. */
  operations: {
    byKind: Record<string, number>;
    total: number;
    ok: number;
    failed: number;
    unknown: number;
    refusedLeftOut: number;
  };
  /** Lock figures. */
  locks: { grants: number; writesAccepted: number; writesRefused: number; writesUnknown: number };
  /** Faults by kind, and the log. */
  faults: { byKind: Record<string, number>; total: number; log: FaultRecord[] };
  /** Share of operations called during / outside faults that got a definite answer. */
  availability: { duringFaults: number | null; outsideFaults: number | null };
  /** Recovery after each leader loss, ms (kill/pause/cut of the leader → first acknowledged write). */
  recoveryMs: { count: number; median: number | null; max: number | null; unrecovered: number };
  /** Watch figures. */
  watch: {
    events: number;
    reconnects: number;
    lagAtEnd: number | null;
    compacted: string | null;
  };
  /** Committed revisions under the run's prefix. */
  committedEvents: number;
  /** Acknowledged writes missing from the committed history. */
  lostAcknowledgedWrites: number;
  /** Linearizability verdict. */
  linearizability: string;
  /** Every violation found, in words. */
  violations: string[];
  /** Times the node processes exited by themselves (e.g. on a full disk). */
  nodeSelfExits: number;
  /** Where the histories, logs and report are. */
  dir: string;
  /** Wall time of the whole run, s. */
  wallS: number;
}

const CLUSTER_ID = "nemesis";
/** Keys in use at once; every OPS_PER_KEY_WINDOW operations the window moves on to fresh keys. */
const KEYS_ACTIVE = 5;
const OPS_PER_KEY_WINDOW = 500;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function b64(text: string): string {
  let s = "";
  for (const byte of encoder.encode(text)) s += String.fromCharCode(byte);
  return btoa(s);
}

function unb64(text: string | undefined): string {
  if (text === undefined) return "";
  return decoder.decode(Uint8Array.from(atob(text), (c) => c.charCodeAt(0)));
}

/** The key after every key with `prefix` (etcd's range_end for a prefix), as text. */
function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/** mulberry32: a small seeded generator, so a seed fixes the runner's choices. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function eventOf(e: Record<string, Record<string, string>>): CommittedEvent {
  const kv = e.kv ?? {};
  return normalized({
    revision: Number(kv.mod_revision ?? 0),
    type: (e.type as unknown as string) === "DELETE" ? "DELETE" : "PUT",
    key: unb64(kv.key),
    value: unb64(kv.value),
    createRevision: Number(kv.create_revision ?? 0),
  });
}

/**
 * Reads a watch stream line by line (however the lines are split into chunks) and calls `onLine`
 * with each parsed `result`; ends when the stream ends, throws on a broken stream. A line must come
 * within `idleMs` (progress notifications keep an idle watch talking), else the read is aborted.
 */
async function readWatch(
  url: string,
  startRevision: number,
  idleMs: number,
  signal: AbortSignal,
  // deno-lint-ignore no-explicit-any
  onLine: (result: any) => boolean,
): Promise<void> {
  const abort = new AbortController();
  const onStop = () => abort.abort();
  signal.addEventListener("abort", onStop);
  let idle = setTimeout(() => abort.abort(), idleMs);
  try {
    const res = await fetch(`${url}/v3/watch`, {
      method: "POST",
      body: JSON.stringify({
        create_request: {
          key: b64(PREFIX),
          range_end: b64(prefixEnd(PREFIX)),
          start_revision: String(startRevision),
          progress_notify: true,
        },
      }),
      signal: abort.signal,
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`HTTP ${res.status}`);
    }
    let rest = "";
    for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
      clearTimeout(idle);
      idle = setTimeout(() => abort.abort(), idleMs);
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        if (line.trim() === "") continue;
        if (!onLine(JSON.parse(line).result ?? {})) return;
      }
    }
  } finally {
    clearTimeout(idle);
    signal.removeEventListener("abort", onStop);
    abort.abort();
  }
}

/** Everything the run's tasks share. */
class Run {
  /** The nemesis's choices (each client has a generator of its own, so timing does not mix them). */
  readonly random: () => number;
  readonly startMs = performance.now();
  readonly ops: Operation[] = [];
  readonly lockRecords: LockRecord[] = [];
  readonly faults: FaultRecord[] = [];
  readonly watched: CommittedEvent[] = [];
  /** The `raft_term` of each acknowledged write's answer, by operation id. */
  readonly writeTerms = new Map<number, number>();
  watchReconnects = 0;
  /** Set when the watcher was told the revision it owed was compacted. */
  watchCompacted: string | undefined;
  refusedLeftOut = 0;
  stopping = false;
  #nextId = 0;
  #opsStarted = 0;

  constructor(readonly options: NemesisOptions, readonly cluster: NemesisCluster) {
    this.random = seeded(options.seed);
  }

  now(): number {
    return Math.round((performance.now() - this.startMs) * 1000) / 1000;
  }

  nextId(): number {
    return this.#nextId++;
  }

  pick<T>(items: readonly T[], random = this.random): T {
    return items[Math.floor(random() * items.length)];
  }

  /** A key from the current window: each key sees a bounded number of operations. */
  key(random: () => number): string {
    const window = Math.floor(this.#opsStarted++ / OPS_PER_KEY_WINDOW);
    return `${KV_PREFIX}${window * KEYS_ACTIVE + Math.floor(random() * KEYS_ACTIVE)}`;
  }

  log(line: string): void {
    this.options.log?.(`[${(this.now() / 1000).toFixed(1)}s] ${line}`);
  }
}

/** One request of a key-value client: the answer, or how it failed. */
type Answer =
  // deno-lint-ignore no-explicit-any
  | { kind: "ok"; json: any }
  | { kind: "refused" } // certainly not applied: connection refused, or a 4xx
  | { kind: "unknown" }; // timed out, reset, 5xx: may have been applied

/**
 * The key-value clients' HTTP client: a new connection per request. Deno's fetch sends a request
 * again on a new connection when its pooled connection closes under it, and then reports that
 * connection's error: "connection refused" for a request the server did receive (seen when the
 * node is killed mid-request). Without pooling a refused connection really carried nothing.
 */
const unpooled = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });

async function request(url: string, body: unknown, timeoutMs: number): Promise<Answer> {
  try {
    const res = await fetch(url, {
      client: unpooled,
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": "application/json" },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (res.ok) return { kind: "ok", json: JSON.parse(text) };
    // A 4xx is a refusal before the write was proposed (bad request, quota, too many requests);
    // a 5xx may come after it was proposed (a forward or commit wait that failed).
    if (res.status >= 400 && res.status < 500 && res.status !== 408) return { kind: "refused" };
    return { kind: "unknown" };
  } catch (e) {
    return neverSent(e) ? { kind: "refused" } : { kind: "unknown" };
  }
}

/**
 * A key-value client: gets, puts, compare-and-swaps and deletes on its node until stopped. Each
 * client stays with one node (as Jepsen's do), so a paused or cut-off node holds up only its own
 * clients and the others show what the rest of the cluster serves.
 */
async function kvClient(
  run: Run,
  clientId: string,
  node: NemesisNode,
  random: () => number,
): Promise<void> {
  const timeoutMs = run.options.requestTimeoutMs ?? 6000;
  const lastSeen = new Map<string, string | null>();
  let n = 0;
  while (!run.stopping) {
    const key = run.key(random);
    const r = random();
    const kind: OperationKind = r < 0.4 ? "get" : r < 0.7 ? "put" : r < 0.95 ? "cas" : "delete";
    const value = `${clientId}.${++n}`;
    const expected = kind === "cas" ? (lastSeen.get(key) ?? null) : undefined;
    const callMs = run.now();
    let answer: Answer;
    if (kind === "get") {
      answer = await request(`${node.url}/v3/kv/range`, { key: b64(key) }, timeoutMs);
    } else if (kind === "put") {
      answer = await request(
        `${node.url}/v3/kv/put`,
        { key: b64(key), value: b64(value) },
        timeoutMs,
      );
    } else if (kind === "delete") {
      answer = await request(`${node.url}/v3/kv/deleterange`, { key: b64(key) }, timeoutMs);
    } else {
      const compare = expected === null
        ? { key: b64(key), target: "VERSION", result: "EQUAL", version: "0" }
        : { key: b64(key), target: "VALUE", result: "EQUAL", value: b64(expected!) };
      answer = await request(`${node.url}/v3/kv/txn`, {
        compare: [compare],
        success: [{ request_put: { key: b64(key), value: b64(value) } }],
        failure: [{ request_range: { key: b64(key) } }],
      }, timeoutMs);
    }
    const returnMs = run.now();
    const op: Operation = {
      id: run.nextId(),
      clientId,
      kind,
      key,
      ...(kind === "put" || kind === "cas" ? { value } : {}),
      ...(kind === "cas" ? { expected } : {}),
      callMs,
      returnMs: null,
    };
    if (answer.kind === "ok") {
      op.returnMs = returnMs;
      if (kind !== "get") run.writeTerms.set(op.id, Number(answer.json.header?.raft_term ?? 0));
      if (kind === "get") {
        const kv = answer.json.kvs?.[0];
        const read = kv === undefined ? null : unb64(kv.value);
        op.result = { ok: true, value: read };
        lastSeen.set(key, read);
      } else if (kind === "cas") {
        if (answer.json.succeeded === true) {
          op.result = { ok: true };
          lastSeen.set(key, value);
        } else {
          const kv = answer.json.responses?.[0]?.response_range?.kvs?.[0];
          const found = kv === undefined ? null : unb64(kv.value);
          op.result = { ok: false, value: found };
          lastSeen.set(key, found);
        }
      } else {
        op.result = { ok: true };
        lastSeen.set(key, kind === "put" ? value : null);
      }
    } else if (answer.kind === "refused") {
      if (kind === "cas") {
        // A cas refused before comparing is no compare failure (docs/history-format.md).
        run.refusedLeftOut++;
        await sleep(50);
        continue;
      }
      op.returnMs = returnMs;
      op.result = { ok: false };
    }
    run.ops.push(op);
    if (answer.kind !== "ok") await sleep(50);
    else await sleep(random() * 20);
  }
}

/** A lock worker: session, lock, a fenced write and an owned write, unlock; again until stopped. */
async function lockWorker(run: Run, workerId: string, random: () => number): Promise<void> {
  const endpoints = run.cluster.nodes.map((n) => n.url);
  // Leader hints name forward proxies; the worker talks to nodes directly, as clients do.
  const realFetch: typeof fetch = (input, init) => {
    let url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    for (const [proxy, real] of run.cluster.realUrl) {
      if (url.startsWith(proxy)) url = real + url.slice(proxy.length);
    }
    return fetch(url, init);
  };
  let incarnation = 0;
  while (!run.stopping) {
    const clientId = `${workerId}.${++incarnation}`;
    const coord = connect(endpoints, {
      clientId: crypto.randomUUID(),
      timeoutMs: 5000,
      attemptTimeoutMs: 2000,
      fetch: realFetch,
    }).coord();
    let session: Session | undefined;
    try {
      session = await Session.create(coord, { ttlMs: 2000 });
    } catch {
      await sleep(200);
      continue;
    }
    const s = session;
    try {
      const callMs = run.now();
      const timer = setTimeout(() => s.abandon(), 10_000);
      let held;
      try {
        held = await lock(s, LOCK_NAME);
      } finally {
        clearTimeout(timer);
      }
      const returnMs = run.now();
      const token = held.fencingToken;
      run.lockRecords.push({
        kind: "grant",
        id: run.nextId(),
        clientId,
        key: held.key,
        token,
        heldAtRevision: held.heldAtRevision,
        callMs,
        returnMs,
      });
      for (const resource of ["fenced", "owned"] as const) {
        const write: LockRecord & { kind: "write" } = {
          kind: "write",
          id: run.nextId(),
          clientId,
          resource,
          token,
          value: `${clientId}#${resource}@${token}`,
          callMs: run.now(),
          returnMs: null,
        };
        run.lockRecords.push(write);
        try {
          if (resource === "fenced") {
            write.accepted = await fencedPut(coord, FENCED_KEY, write.value, token);
          } else {
            const r = await coord.txn({
              compare: [{ key: held.key, target: "createRevision", result: "equal", value: token }],
              success: [{
                type: "put",
                key: OWNED_KEY,
                value: encoder.encode(write.value),
                prevKv: false,
              }],
              failure: [],
            });
            write.accepted = r.succeeded;
          }
          write.returnMs = run.now();
        } catch {
          break; // outcome unknown; give the lock up
        }
      }
      await sleep(random() * 200);
      run.lockRecords.push({ kind: "release", id: run.nextId(), clientId, token, atMs: run.now() });
      await held.unlock().catch(() => {});
      await s.close().catch(() => {});
    } catch {
      s.abandon();
      await sleep(100);
    }
  }
}

/** The watcher: one watch on the run's prefix, resumed on another node from the revision it owes. */
async function watcher(run: Run, stop: AbortSignal, state: { next: number }): Promise<void> {
  let i = 0;
  while (!stop.aborted) {
    const node = run.cluster.nodes[i++ % run.cluster.nodes.length];
    try {
      await readWatch(node.url, state.next, 3000, stop, (r) => {
        if (r.canceled && r.compact_revision !== undefined) {
          run.watchCompacted = `at revision ${state.next}: ${r.cancel_reason}`;
          return false;
        }
        if (r.canceled) throw new Error(`canceled: ${r.cancel_reason}`);
        if (r.events !== undefined) {
          for (const e of r.events) {
            const ev = eventOf(e);
            run.watched.push(ev);
            state.next = Math.max(state.next, ev.revision + 1);
          }
        } else if (!r.created) {
          const revision = Number(r.header?.revision ?? 0);
          if (revision >= state.next) state.next = revision + 1;
        }
        return !stop.aborted;
      });
    } catch { /* node down, cut off, paused or canceled: resume elsewhere */ }
    // The history it owes is gone on the node that said so: the watcher is told, not misled;
    // the report says where, and the check covers what it saw before.
    if (stop.aborted || run.watchCompacted !== undefined) return;
    run.watchReconnects++;
    await sleep(50);
  }
}

/**
 * The committed history under the prefix as node `nodeId`'s write-ahead log holds it: its entries
 * up to `commitIndex` applied to a fresh store that keeps every revision. This reads the disk, not
 * the watch code, so the watcher is checked against an independent account. The node must be
 * stopped.
 */
function walHistory(dataDir: string, nodeId: string, commitIndex: number): CommittedEvent[] {
  const storage = FileStorage.open(dataDir, { clusterId: CLUSTER_ID, nodeId });
  try {
    const persisted = storage.load();
    if (persisted.snapshot !== undefined) {
      throw new Error(
        `${nodeId}'s data holds a snapshot (index ${persisted.snapshot.meta.index}): ` +
          "the revisions before it cannot be replayed (raise --snapshot-entries)",
      );
    }
    const store = new MetadataStore({ historyRevisionsMax: 100_000_000 });
    for (const e of persisted.entries) {
      if (e.index > commitIndex) break;
      if (e.kind === "command") store.apply(e.command, e.index);
      else store.applyNoop(e.index);
    }
    if (store.appliedIndex < commitIndex) {
      throw new Error(
        `${nodeId}'s log ends at ${store.appliedIndex}, before commit ${commitIndex}`,
      );
    }
    return store.history(1).flatMap((r) =>
      r.events.filter((e) => e.kv.key.startsWith(PREFIX)).map((e): CommittedEvent =>
        normalized({
          revision: r.revision,
          type: e.type,
          key: e.kv.key,
          value: decoder.decode(e.kv.value),
          createRevision: e.kv.createRevision,
        })
      )
    );
  } finally {
    storage.close();
  }
}

/** A DELETE carries no value or createRevision (the watch API leaves them out). */
function normalized(e: CommittedEvent): CommittedEvent {
  return e.type === "DELETE" ? { ...e, value: "", createRevision: 0 } : e;
}

// ---- The nemesis ---------------------------------------------------------------------------------

interface Injected {
  detail: string;
  leaderLoss: boolean;
  heal: () => Promise<void>;
}

function setLinks(cluster: NemesisCluster, pairs: [string, string][], faults: LinkFaults): void {
  for (const [a, b] of pairs) for (const l of cluster.linksOf(a, b)) l.set(faults);
}

function healLinks(cluster: NemesisCluster): void {
  for (const l of cluster.allLinks()) l.set(healthyLink());
}

/** Every ordered pair (a, b) with a in `from` and b in `to`. */
function across(from: readonly string[], to: readonly string[]): [string, string][] {
  return from.flatMap((a) => to.filter((b) => b !== a).map((b): [string, string] => [a, b]));
}

async function inject(
  run: Run,
  kind: NemesisFault,
  leader: NemesisNode | undefined,
): Promise<Injected> {
  const c = run.cluster;
  const ids = c.nodes.map((n) => n.id);
  const leaderId = leader?.id;
  const target = leader !== undefined && run.random() < 0.6 ? leader : run.pick(c.nodes);
  const cut: LinkFaults = { ...healthyLink(), mode: "cut" };
  const restartDown = () => {
    for (const n of c.nodes) if (n.state === "down") n.start();
    return Promise.resolve();
  };
  switch (kind) {
    case "partition": {
      const shape = run.pick(["halves", "isolate-leader", "bridge"] as const);
      let groups: string[][];
      if (shape === "isolate-leader" && leaderId !== undefined) {
        groups = [[leaderId], ids.filter((x) => x !== leaderId)];
      } else {
        const order = shuffle(ids, run.random);
        const small = Math.floor(ids.length / 2);
        groups = [order.slice(0, small), order.slice(small)];
      }
      if (shape === "bridge") {
        // The bridge node (last of the larger group) keeps links to both sides.
        const bridge = groups[1][groups[1].length - 1];
        const rest = groups[1].slice(0, -1);
        setLinks(c, [...across(groups[0], rest), ...across(rest, groups[0])], cut);
        groups = [groups[0], rest, [bridge]];
      } else {
        setLinks(c, [...across(groups[0], groups[1]), ...across(groups[1], groups[0])], cut);
      }
      const minority = groups[0];
      return {
        detail: `${shape}: ${groups.map((g) => g.join(",")).join(" | ")}`,
        // Behind a bridge the leader still reaches a quorum through the bridge node.
        leaderLoss: shape !== "bridge" && leaderId !== undefined && minority.includes(leaderId),
        heal: () => Promise.resolve(healLinks(c)),
      };
    }
    case "oneway": {
      const shape = leaderId === undefined ? "link" : run.pick(["leader-out", "leader-in", "link"]);
      const others = ids.filter((x) => x !== leaderId);
      let pairs: [string, string][];
      if (shape === "leader-out") pairs = across([leaderId!], others);
      else if (shape === "leader-in") pairs = across(others, [leaderId!]);
      else {
        const [a, b] = shuffle(ids, run.random);
        pairs = [[a, b]];
      }
      setLinks(c, pairs, cut);
      return {
        detail: `${shape}: ${pairs.map(([a, b]) => `${a}>${b}`).join(",")}`,
        // Cut off from its followers' answers, the leader steps down (CheckQuorum).
        leaderLoss: shape === "leader-out" || shape === "leader-in",
        heal: () => Promise.resolve(healLinks(c)),
      };
    }
    case "delay": {
      // From well under an election timeout to several of them.
      const delayMs = Math.round(20 + run.random() * 1500);
      const all = run.random() < 0.5;
      const pairs = all ? across(ids, ids) : across([target.id], ids);
      setLinks(c, pairs, { ...healthyLink(), delayMs });
      return {
        detail: `${delayMs} ms on ${all ? "every link" : `links from ${target.id}`}`,
        leaderLoss: false,
        heal: () => Promise.resolve(healLinks(c)),
      };
    }
    case "drop": {
      const resetRate = Math.round((0.02 + run.random() * 0.2) * 1000) / 1000;
      setLinks(c, across(ids, ids), { ...healthyLink(), resetRate });
      return {
        detail: `connection reset with probability ${resetRate} per chunk on every link`,
        leaderLoss: false,
        heal: () => Promise.resolve(healLinks(c)),
      };
    }
    case "stall": {
      const pairs = across([target.id], ids);
      setLinks(c, pairs, { ...healthyLink(), mode: "stall" });
      return {
        detail: `links from ${target.id} stall`,
        leaderLoss: target.id === leaderId,
        heal: () => Promise.resolve(healLinks(c)),
      };
    }
    case "kill": {
      await target.kill();
      return {
        detail: `SIGKILL ${target.id}`,
        leaderLoss: target.id === leaderId,
        heal: restartDown,
      };
    }
    case "pause": {
      target.pause();
      return {
        detail: `SIGSTOP ${target.id}`,
        leaderLoss: target.id === leaderId,
        heal: () => Promise.resolve(target.resume()),
      };
    }
    case "killall": {
      await Promise.all(c.nodes.map((n) => n.kill()));
      return {
        detail: "SIGKILL every node",
        leaderLoss: leaderId !== undefined,
        heal: restartDown,
      };
    }
    case "diskfull": {
      const bytes = await c.fillDisk(target.id);
      return {
        detail: `filled ${target.id}'s disk (${bytes} filler bytes)`,
        leaderLoss: target.id === leaderId,
        heal: async () => {
          await c.freeDisk(target.id);
          await restartDown();
        },
      };
    }
  }
}

async function nemesis(run: Run, kinds: readonly NemesisFault[], endMs: number): Promise<void> {
  await sleep(2000);
  while (!run.stopping && kinds.length > 0) {
    const kind = run.pick(kinds);
    const faultMs = kind === "killall" ? 500 + run.random() * 1500 : 2000 + run.random() * 3000;
    if (run.now() + faultMs + 1000 > endMs) break;
    const leader = await run.cluster.leader();
    const injected = await inject(run, kind, leader?.node);
    // In effect from here: a kill has been waited for, a disk filled.
    const startMs = run.now();
    const record: FaultRecord = {
      kind,
      detail: injected.detail,
      startMs,
      endMs: startMs,
      ...(leader !== undefined ? { leaderBefore: leader.node.id, termBefore: leader.term } : {}),
      leaderLoss: injected.leaderLoss,
    };
    run.faults.push(record);
    run.log(`fault ${kind}: ${injected.detail}`);
    await sleep(faultMs);
    await injected.heal();
    record.endMs = run.now();
    await sleep(1500 + run.random() * 2000);
  }
}

/** Waits until every node answers and all have applied the same index, or `timeoutMs` passes. */
async function settle(
  cluster: NemesisCluster,
  timeoutMs: number,
): Promise<{ revision: number; commitIndex: number }> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const rows = await Promise.all(cluster.nodes.map((n) => n.row(1000)));
    const leader = rows.find((r) => r?.role === "Leader");
    if (
      leader !== undefined &&
      rows.every((r) => r !== undefined && r.lastApplied === leader.commitIndex)
    ) return { revision: leader.revision, commitIndex: leader.commitIndex };
    if (performance.now() > deadline) {
      const states = cluster.nodes.map((n, i) =>
        `${n.id} ${n.state} (exited by itself ${n.selfExits}x): ${JSON.stringify(rows[i] ?? null)}`
      );
      throw new Error(`Cluster did not settle in ${timeoutMs} ms: ${states.join("; ")}`);
    }
    await sleep(200);
  }
}

// ---- Checks and report -------------------------------------------------------------------------

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function definite(op: Operation): boolean {
  if (op.returnMs === null || op.result === undefined) return false;
  if (op.kind === "cas") return true; // a compare failure is an answer
  return op.result.ok;
}

/** Whether this machine can mount a tmpfs (for the disk-full fault); the reason when not. */
async function tmpfsProblem(dir: string): Promise<string | undefined> {
  const probe = `${dir}/tmpfs-probe`;
  await Deno.mkdir(probe, { recursive: true });
  try {
    await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe],
      stdout: "null",
      stderr: "piped",
    }).output().then((o) => {
      if (!o.success) throw new Error(new TextDecoder().decode(o.stderr).trim());
    });
    await new Deno.Command("umount", { args: [probe] }).output();
    return undefined;
  } catch (e) {
    return `cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): ${(e as Error).message}`;
  } finally {
    await Deno.remove(probe).catch(() => {});
  }
}

/**
 * Runs the fault test described by `options` and returns its report and record (also written to
 * `<dir>/report.json`, with `history.jsonl`, `locks.jsonl`, `watch.jsonl`, `committed.jsonl` and
 * the node logs in `<dir>/logs`). Never throws for a violation: it is in `report.violations`.
 */
export async function runNemesis(options: NemesisOptions): Promise<NemesisRun> {
  if (!Number.isSafeInteger(options.nodes) || options.nodes < 3) {
    throw new RangeError(`Nodes must be an integer of at least 3: ${options.nodes}`);
  }
  for (const f of options.faults) {
    if (!(NEMESIS_FAULTS as readonly string[]).includes(f)) {
      throw new RangeError(
        `Unknown fault ${JSON.stringify(f)}; known: ${NEMESIS_FAULTS.join(", ")}`,
      );
    }
  }
  const wallStart = performance.now();
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "raftmeta-nemesis-" });
  await Deno.mkdir(dir, { recursive: true });
  const faultsSkipped: { kind: NemesisFault; reason: string }[] = [];
  let kinds = [...new Set(options.faults)];
  let diskBytes = 0;
  if (kinds.includes("diskfull")) {
    const problem = await tmpfsProblem(dir);
    if (problem === undefined) diskBytes = options.diskBytes ?? 64 << 20;
    else {
      faultsSkipped.push({ kind: "diskfull", reason: problem });
      kinds = kinds.filter((k) => k !== "diskfull");
    }
  }
  const random = seeded(options.seed ^ 0x9e3779b9);
  const cluster = await NemesisCluster.start({ nodes: options.nodes, dir, random, diskBytes });
  const run = new Run(options, cluster);
  const violations: string[] = [];
  let committed: CommittedEvent[] = [];
  let lagAtEnd: number | null = null;
  try {
    await settleLeader(cluster);
    run.log(`cluster of ${options.nodes} up in ${dir}; faults: ${kinds.join(",") || "none"}`);
    const endMs = run.now() + options.durationS * 1000;
    const watchStop = new AbortController();
    const watchState = { next: 1 };
    const watching = watcher(run, watchStop.signal, watchState);
    const tasks = [
      ...Array.from(
        { length: options.clients },
        (_, i) =>
          kvClient(
            run,
            `c${i + 1}`,
            cluster.nodes[i % cluster.nodes.length],
            seeded(options.seed * 1000 + i + 1),
          ),
      ),
      ...Array.from(
        { length: options.lockWorkers },
        (_, i) => lockWorker(run, `l${i + 1}`, seeded(options.seed * 1000 + 500 + i)),
      ),
    ];
    const faulting = nemesis(run, kinds, endMs);
    await sleep(Math.max(0, endMs - run.now()));
    run.stopping = true;
    await faulting;
    await Promise.all(tasks);
    // Heal everything that may still be faulted, then check.
    healLinks(cluster);
    for (const n of cluster.nodes) {
      n.resume();
      await cluster.freeDisk(n.id);
      if (n.state === "down") n.start();
    }
    const settled = await settle(cluster, 60_000);
    const upTo = settled.revision;
    run.log(`settled at revision ${upTo}, index ${settled.commitIndex}; checking`);
    const waitUntil = performance.now() + 15_000;
    while (watchState.next <= upTo && performance.now() < waitUntil) await sleep(100);
    watchStop.abort();
    await watching;
    lagAtEnd = Math.max(0, upTo - (watchState.next - 1));

    // Every node's committed history, read from its log, which must agree.
    await Promise.all(cluster.nodes.map((n) => n.kill()));
    const histories = new Map(cluster.nodes.map((n) => [
      n.id,
      walHistory(n.dataDir, n.id, settled.commitIndex).filter((e) => e.revision <= upTo),
    ]));
    committed = histories.get(cluster.nodes[0].id)!;
    // Lease expiries of abandoned lock sessions may commit after `upTo`: compare up to it.
    const record: RunRecord = {
      ops: run.ops,
      lockRecords: run.lockRecords,
      watched: run.watched,
      committed: histories,
      watchedTo: run.watchCompacted === undefined ? upTo : watchState.next - 1,
    };
    const verdict = checkRun(record);
    violations.push(...verdict.violations);
    const report = buildReport(run, kinds, faultsSkipped, {
      committed,
      lost: verdict.lostAcknowledgedWrites,
      linearizability: verdict.linearizability,
      lockFigures: verdict.locks,
      lagAtEnd,
      violations,
      dir,
      wallS: (performance.now() - wallStart) / 1000,
    });
    await writeArtifacts(dir, run, committed, report);
    return { report, record };
  } catch (e) {
    // A run that could not finish its checks is a finding too: keep everything.
    violations.push(`run failed: ${(e as Error).message}`);
    const report = buildReport(run, kinds, faultsSkipped, {
      committed,
      lost: 0,
      linearizability: "not checked",
      lockFigures: { grants: 0, writesAccepted: 0, writesRefused: 0 },
      lagAtEnd,
      violations,
      dir,
      wallS: (performance.now() - wallStart) / 1000,
    });
    await writeArtifacts(dir, run, committed, report);
    return { report };
  } finally {
    run.stopping = true;
    await cluster.stop();
  }
}

async function settleLeader(cluster: NemesisCluster): Promise<void> {
  const deadline = performance.now() + 30_000;
  while ((await cluster.leader()) === undefined) {
    if (performance.now() > deadline) throw new Error("No leader within 30 s of the start");
    await sleep(100);
  }
}

function buildReport(
  run: Run,
  kinds: NemesisFault[],
  faultsSkipped: { kind: NemesisFault; reason: string }[],
  r: {
    committed: CommittedEvent[];
    lost: number;
    linearizability: string;
    lockFigures: { grants: number; writesAccepted: number; writesRefused: number };
    lagAtEnd: number | null;
    violations: string[];
    dir: string;
    wallS: number;
  },
): NemesisReport {
  const o = run.options;
  const byKind: Record<string, number> = { get: 0, put: 0, cas: 0, delete: 0 };
  for (const op of run.ops) byKind[op.kind]++;
  const unknown = run.ops.filter((op) => op.returnMs === null).length;
  const ok = run.ops.filter((op) => op.result?.ok === true).length;
  // Recovery after each leader loss: the first acknowledged write called after the fault took
  // effect and committed in a later term than the lost leader's.
  const writes = run.ops.filter((op) => op.kind !== "get" && op.result?.ok === true);
  for (const f of run.faults) {
    if (!f.leaderLoss) continue;
    const first = writes.filter((w) =>
      w.callMs >= f.startMs && (run.writeTerms.get(w.id) ?? 0) > (f.termBefore ?? 0)
    ).reduce((m, w) => Math.min(m, w.returnMs!), Infinity);
    if (first !== Infinity) f.recoveryMs = Math.round(first - f.startMs);
  }
  const losses = run.faults.filter((f) => f.leaderLoss);
  const recoveries = losses.flatMap((f) => f.recoveryMs === undefined ? [] : [f.recoveryMs]);
  const during = (op: Operation) =>
    run.faults.some((f) => op.callMs >= f.startMs && op.callMs <= f.endMs);
  const inFault = run.ops.filter(during);
  const outside = run.ops.filter((op) => !during(op));
  const share = (ops: Operation[]) =>
    ops.length === 0 ? null : Math.round(ops.filter(definite).length / ops.length * 1000) / 1000;
  const faultsByKind: Record<string, number> = {};
  for (const f of run.faults) faultsByKind[f.kind] = (faultsByKind[f.kind] ?? 0) + 1;
  const writesUnknown = run.lockRecords.filter((x) => x.kind === "write" && x.returnMs === null)
    .length;
  return {
    seed: o.seed,
    config: {
      nodes: o.nodes,
      clients: o.clients,
      lockWorkers: o.lockWorkers,
      durationS: o.durationS,
    },
    faultsEnabled: kinds,
    faultsSkipped,
    operations: {
      byKind,
      total: run.ops.length,
      ok,
      failed: run.ops.length - ok - unknown,
      unknown,
      refusedLeftOut: run.refusedLeftOut,
    },
    locks: { ...r.lockFigures, writesUnknown },
    faults: { byKind: faultsByKind, total: run.faults.length, log: run.faults },
    availability: { duringFaults: share(inFault), outsideFaults: share(outside) },
    recoveryMs: {
      count: recoveries.length,
      median: median(recoveries),
      max: recoveries.length === 0 ? null : Math.max(...recoveries),
      unrecovered: losses.length - recoveries.length,
    },
    watch: {
      events: run.watched.length,
      reconnects: run.watchReconnects,
      lagAtEnd: r.lagAtEnd,
      compacted: run.watchCompacted ?? null,
    },
    committedEvents: r.committed.length,
    lostAcknowledgedWrites: r.lost,
    linearizability: r.linearizability,
    violations: r.violations,
    nodeSelfExits: run.cluster.nodes.reduce((s, n) => s + n.selfExits, 0),
    dir: r.dir,
    wallS: Math.round(r.wallS * 10) / 10,
  };
}

async function writeArtifacts(
  dir: string,
  run: Run,
  committed: CommittedEvent[],
  report: NemesisReport,
): Promise<void> {
  const lines = (xs: readonly unknown[]) => xs.map((x) => JSON.stringify(x) + "\n").join("");
  await Deno.writeTextFile(`${dir}/history.jsonl`, historyToJsonLines(run.ops));
  await Deno.writeTextFile(`${dir}/locks.jsonl`, lines(run.lockRecords));
  await Deno.writeTextFile(`${dir}/watch.jsonl`, lines(run.watched));
  await Deno.writeTextFile(`${dir}/committed.jsonl`, lines(committed));
  await Deno.writeTextFile(`${dir}/report.json`, JSON.stringify(report, null, 2) + "\n");
}

/** The report as one line. */
export function summaryLine(r: NemesisReport): string {
  const pct = (x: number | null) => x === null ? "-" : `${Math.round(x * 100)}%`;
  const kinds = Object.entries(r.operations.byKind).map(([k, v]) => `${k} ${v}`).join(", ");
  const faults = Object.entries(r.faults.byKind).map(([k, v]) => `${k} ${v}`).join(", ");
  return `nemesis seed ${r.seed}: ${r.violations.length} violations, ` +
    `${r.lostAcknowledgedWrites} acknowledged writes lost, ${r.linearizability}; ` +
    `ops ${r.operations.total} (${kinds}), unknown ${r.operations.unknown}; ` +
    `locks ${r.locks.grants} grants; watch ${r.watch.events} events` +
    (r.watch.compacted !== null ? ` (compacted ${r.watch.compacted})` : "") + "; " +
    `faults ${r.faults.total} (${faults || "none"})` +
    (r.faultsSkipped.length > 0
      ? ` [skipped: ${r.faultsSkipped.map((s) => s.kind).join(",")}]`
      : "") +
    `; availability during faults ${pct(r.availability.duringFaults)}, outside ` +
    `${pct(r.availability.outsideFaults)}; leader-loss recovery median ` +
    `${r.recoveryMs.median ?? "-"} ms, max ${r.recoveryMs.max ?? "-"} ms` +
    (r.recoveryMs.unrecovered > 0 ? ` (${r.recoveryMs.unrecovered} without a write after)` : "") +
    `; ${r.wallS} s; ${r.dir}`;
}
