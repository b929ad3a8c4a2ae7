/**
 * `ServerCluster`: n real {@linkcode RaftServer}s — request handling, forwarding to the leader,
 * the read barrier, the lease manager, the snapshotter — on a simulated clock, disk and network.
 * Each server runs on {@linkcode VirtualTimers} (one virtual clock for all), a {@linkcode SimFs}
 * of its own (a crash keeps only what was synced) and a seeded network that delays, drops and
 * cuts peer messages and forwarded requests alike. Client requests go to the same `handleHttp`
 * the HTTP listener calls, as `Request` objects, without sockets.
 *
 * Lives in src/check, not src/sim: it imports the server (src/net), and the coordination code the
 * server imports depends on src/sim. Like src/sim it reads no real clock and draws no unseeded
 * number (tests/static_test.ts); the promises of the server's async code are settled
 * between two virtual events, so one seed gives one run.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import {
  type CancelTimer,
  type HostClock,
  type HostTimers,
  timersOn,
  VirtualTimers,
} from "../host/clock.ts";
import { handleHttp } from "../net/http.ts";
import { RaftServer, type ServerFaultPoint, type ServerFetch } from "../net/server.ts";
import type { Address } from "../net/transport.ts";
import { SeededRng } from "../raft/rng.ts";
import type { Message, NodeId, RaftConfig } from "../raft/types.ts";
import type { Fs, FsFile } from "../storage/fs.ts";
import { SimFs } from "../storage/fs.ts";
import {
  type DiskLatency,
  diskSyncMs,
  globalMs,
  localMs,
  type NetworkOptions,
  type NodeClock,
} from "../sim/cluster.ts";

/** Options of a {@linkcode ServerCluster}. */
export interface ServerClusterOptions {
  /** Seed of everything random: timeouts, latencies, drops. */
  readonly seed: number;
  /** Number of servers, 1 to 9. Default 3. */
  readonly nodes?: number;
  /** Server bugs to switch on (tests only). */
  readonly faultPoints?: readonly ServerFaultPoint[];
  /** Raft timings for every server. */
  readonly raftConfig?: Partial<RaftConfig>;
  /** Smallest one-way network delay, ms. Default 1. */
  readonly latencyMinMs?: number;
  /** Largest one-way network delay, ms. Default 10. */
  readonly latencyMaxMs?: number;
  /** Share of peer messages lost, in [0, 1). Default 0.01. */
  readonly dropRate?: number;
  /** Take a snapshot after at most this many applied entries. Default 50 (so snapshots happen). */
  readonly snapshotEntries?: number;
  /**
   * Every server's disk is slow (as the core simulator's `diskLatency`): each fdatasync takes a
   * seeded 0 to `syncMsMax` ms, and with `stallRate` a stall of `stallMsMin`–`stallMsMax`. A
   * synchronous sync (a follower's save) blocks its process — no timer, no input, no output
   * until the disk is done; an asynchronous one (a leader's parallel write) completes later.
   * Default: off.
   */
  readonly diskLatency?: DiskLatency;
  /**
   * Per-server clocks (by node order): server i reads `offsetMs + rate · t` at virtual time t,
   * for its timers, election timeouts, request deadlines and lease deadlines. Default: exact.
   */
  readonly clocks?: readonly NodeClock[];
  /**
   * Share of peer messages and forwarded requests (and answers) held for `longDelayMinMs` to
   * `longDelayMaxMs` on top of their latency: several election timeouts. Default: none.
   */
  readonly longDelay?: Partial<
    Pick<NetworkOptions, "longDelayRate" | "longDelayMinMs" | "longDelayMaxMs">
  >;
}

/** Owner id of the network's and the clients' timers (never halted). */
const WORLD = 0;

interface Member {
  readonly id: NodeId;
  readonly fs: SimFs;
  /** Owner of the current process's timers (a new one after each restart). */
  owner: number;
  server: RaftServer | undefined;
  /** While frozen: what reached it (peer messages, requests) by source, to run when it thaws. */
  held: Map<string, (() => void)[]> | undefined;
  /** While blocked: what it sent (messages, answers), in order, to go out when it unblocks. */
  out: (() => void)[];
  /** Reasons it is frozen: a nemesis pause and blocking disk syncs (0: running). */
  frozen: number;
  /** Blocking disk syncs under way (0: what it sends goes out at once). */
  blocks: number;
  /** Whether the nemesis paused it. */
  paused: boolean;
  /** Its machine's clock (kept across restarts). */
  readonly clock: NodeClock;
}

/** n real servers on a simulated clock, disk and network (see the module documentation). */
export class ServerCluster {
  /** The virtual clock and every timer of the servers, the network and the clients. */
  readonly timers: VirtualTimers = new VirtualTimers();
  /** The seeded source of every random choice in the run. */
  readonly rng: SeededRng;
  /** Node ids, sorted. */
  readonly ids: readonly NodeId[];
  readonly #members = new Map<NodeId, Member>();
  readonly #options: ServerClusterOptions;
  /** Links cut one way, as "from>to". */
  readonly #cut = new Set<string>();
  #owners = 0;
  /** Client and forwarding connections opened (each request is one, as a source of input). */
  #connections = 0;
  /**
   * Peer messages delivered and lost, forwarded requests carried, messages (and forwards) held
   * for seconds, fdatasyncs that took time and those that stalled (`diskLatency.stallMsMin` or
   * more).
   */
  readonly counters = {
    messagesDelivered: 0,
    messagesLost: 0,
    forwards: 0,
    longDelayed: 0,
    slowSyncs: 0,
    diskStalls: 0,
  };
  /** The generators of the wider faults, each its own, so runs without them keep their draws. */
  readonly #diskRng: SeededRng;
  readonly #longRng: SeededRng;

  /** Starts `options.nodes` servers with empty disks. */
  constructor(options: ServerClusterOptions) {
    const n = options.nodes ?? 3;
    if (!Number.isSafeInteger(n) || n < 1 || n > 9) {
      throw new RangeError(`nodes must be an integer from 1 to 9: ${n}`);
    }
    const dropRate = options.dropRate ?? 0.01;
    if (!(dropRate >= 0 && dropRate < 1)) {
      throw new RangeError(`dropRate must lie in [0, 1): ${dropRate}`);
    }
    this.#options = options;
    this.rng = new SeededRng(options.seed);
    this.#diskRng = new SeededRng(options.seed ^ 0x510e);
    this.#longRng = new SeededRng(options.seed ^ 0x10a9);
    this.ids = Array.from({ length: n }, (_, i) => `n${i + 1}`);
    this.ids.forEach((id, i) => {
      const clock = options.clocks?.[i] ?? { offsetMs: 0, rate: 1 };
      if (!(clock.offsetMs >= 0 && Number.isFinite(clock.offsetMs) && clock.rate > 0)) {
        throw new RangeError(
          `A clock needs a finite offsetMs >= 0 and rate > 0: ${JSON.stringify(clock)}`,
        );
      }
      this.#members.set(id, {
        id,
        fs: new SimFs(),
        owner: 0,
        server: undefined,
        held: undefined,
        out: [],
        frozen: 0,
        blocks: 0,
        paused: false,
        clock,
      });
      this.restart(id);
    });
  }

  /** The client URL of `id` (what forwarding and the clients address). */
  static clientUrl(id: NodeId): string {
    return `http://${id}.sim:2379`;
  }

  /** The running server `id`, or undefined while it is down. */
  server(id: NodeId): RaftServer | undefined {
    return this.#member(id).server;
  }

  /** Whether `id` is running. */
  isUp(id: NodeId): boolean {
    return this.#member(id).server !== undefined;
  }

  /** The virtual time now, ms. */
  get nowMs(): number {
    return this.timers.nowMs();
  }

  /**
   * Crashes `id`: its timers die, unsynced writes are lost, and it never runs again (requests it
   * held never answer). Peers see it as silent.
   */
  crash(id: NodeId): void {
    const m = this.#member(id);
    if (m.server === undefined) return;
    this.timers.halt(m.owner);
    m.fs.crash();
    m.server = undefined;
    m.held = undefined;
    m.out = [];
    m.frozen = 0;
    m.blocks = 0;
    m.paused = false;
  }

  /**
   * Pauses `id` (as SIGSTOP would): its timers stop, and peer messages and requests that reach it
   * wait, in order, until {@linkcode resume}; it does not notice the time that passed.
   */
  pause(id: NodeId): void {
    const m = this.#member(id);
    if (m.server === undefined || m.paused) return;
    m.paused = true;
    this.#freeze(m);
  }

  /**
   * Resumes `id`: what reached it meanwhile is handed over, each source's (a peer link's, a
   * client connection's) in its order but the sources interleaved at random, as a process that
   * wakes finds several sockets readable; then its due timers fire.
   */
  resume(id: NodeId): void {
    const m = this.#member(id);
    if (!m.paused) return;
    m.paused = false;
    this.#flushOut(m);
    this.#thaw(m);
  }

  /** Stops `m`'s process: its timers, what reaches it and what it sends wait for the thaw. */
  #freeze(m: Member): void {
    if (m.frozen++ > 0) return;
    m.held = new Map();
    this.timers.pause(m.owner);
  }

  /** Ends one reason `m` is frozen; with none left, what came in meanwhile is handed over. */
  #thaw(m: Member): void {
    if (m.frozen === 0 || --m.frozen > 0) return;
    const held = m.held!;
    m.held = undefined;
    this.timers.resume(m.owner);
    const queues = [...held.values()];
    while (queues.length > 0) {
      const i = Math.floor(this.rng.next() * queues.length);
      const f = queues[i].shift()!;
      if (queues[i].length === 0) queues.splice(i, 1);
      f();
    }
  }

  /** Whether `id` is paused (by {@linkcode pause}; a blocking disk sync does not count). */
  isPaused(id: NodeId): boolean {
    return this.#member(id).paused;
  }

  /**
   * Runs `f` (an output of `id`: a message, an answer) now, or when a blocking disk sync of `id`
   * ends, or when a pause ends. (Nothing a paused process receives, no timer of its own and no
   * answer to its forwards reaches it during the pause, so it computes nothing new; this holds
   * back anything else, e.g. a promise that settled as it stopped.)
   */
  #whenSending(id: NodeId, f: () => void): void {
    const m = this.#member(id);
    if (m.blocks > 0 || m.paused) m.out.push(f);
    else f();
  }

  /** Sends what `m` computed while it could not (a blocking sync, a pause), once it can. */
  #flushOut(m: Member): void {
    if (m.blocks > 0 || m.paused || m.out.length === 0) return;
    const out = m.out;
    m.out = [];
    for (const f of out) f();
  }

  /** Blocks process `owner` of `id` for `ms` of virtual time (a synchronous fdatasync). */
  #block(id: NodeId, owner: number, ms: number): void {
    if (!this.#alive(id, owner)) return;
    const m = this.#member(id);
    this.#freeze(m);
    m.blocks++;
    this.timers.schedule(WORLD, ms, () => {
      if (!this.#alive(id, owner)) return;
      --m.blocks;
      this.#flushOut(m);
      this.#thaw(m);
    });
  }

  /** How long the next fdatasync of a slow disk takes (0 without `diskLatency`). */
  #syncMs(): number {
    const d = this.#options.diskLatency;
    if (d === undefined) return 0;
    const ms = diskSyncMs(d, this.#diskRng);
    if (ms > 0) this.counters.slowSyncs++;
    if (d.stallRate > 0 && ms >= d.stallMsMin) this.counters.diskStalls++;
    return ms;
  }

  /** The clock a server on `id` reads now (its own, with skew and drift). */
  localNowMs(id: NodeId): number {
    return localMs(this.#member(id).clock, this.nowMs);
  }

  /** Runs `f` on `id` now, or when it resumes if it is paused (after `source`'s earlier ones). */
  #whenRunning(id: NodeId, source: string, f: () => void): void {
    const held = this.#member(id).held;
    if (held === undefined) return f();
    const queue = held.get(source);
    if (queue === undefined) held.set(source, [f]);
    else queue.push(f);
  }

  /** Starts `id` afresh from what its disk holds (a crash first when it is running). */
  restart(id: NodeId): void {
    this.crash(id);
    const m = this.#member(id);
    m.owner = ++this.#owners;
    const owner = m.owner;
    const peers = new Map<NodeId, Address>();
    const peerClientUrls = new Map<NodeId, string>();
    for (const p of this.ids) {
      if (p === id) continue;
      peers.set(p, { hostname: `${p}.sim`, port: 2380 });
      peerClientUrls.set(p, ServerCluster.clientUrl(p));
    }
    const exact = m.clock.offsetMs === 0 && m.clock.rate === 1;
    const host = exact
      ? { clock: this.timers as HostClock, timers: this.timers.host(owner) }
      : driftingHost(this.timers, owner, m.clock);
    const fs = this.#options.diskLatency === undefined ? m.fs : new SlowFs(m.fs, {
      syncMs: () => this.#syncMs(),
      block: (ms) => this.#block(id, owner, ms),
      after: (ms, fire) => this.timers.schedule(owner, ms, fire),
    });
    m.server = RaftServer.open({
      nodeId: id,
      clusterId: "sim",
      dataDir: `/data/${id}`,
      clientUrl: ServerCluster.clientUrl(id),
      peers,
      peerClientUrls,
      raftConfig: this.#options.raftConfig,
      snapshotEntries: this.#options.snapshotEntries ?? 50,
      hostWhitelist: ["*"],
      faultPoints: this.#options.faultPoints,
      log: () => {},
    }, {
      clock: host.clock,
      timers: host.timers,
      random: () => this.rng.next(),
      rngSeed: Math.floor(this.rng.next() * 2 ** 32),
      fs,
      transport: { send: (message) => this.#send(id, owner, message) },
      fetch: this.#fetchFrom(id, owner),
      saveSeen: () => {},
    });
  }

  /** Cuts the network into `groups` (nodes not listed are cut from everyone). */
  partition(groups: readonly (readonly NodeId[])[]): void {
    this.#cut.clear();
    const groupOf = new Map<NodeId, number>();
    groups.forEach((g, i) => g.forEach((id) => groupOf.set(id, i)));
    for (const a of this.ids) {
      for (const b of this.ids) {
        const ga = groupOf.get(a), gb = groupOf.get(b);
        if (a !== b && (ga === undefined || ga !== gb)) this.#cut.add(`${a}>${b}`);
      }
    }
  }

  /** Restores every link. */
  heal(): void {
    this.#cut.clear();
  }

  /** Whether `from` can reach `to` now. */
  linked(from: NodeId, to: NodeId): boolean {
    return !this.#cut.has(`${from}>${to}`);
  }

  /**
   * Sends a client request to `id` as its HTTP listener would hand it over; resolves with the
   * response, or never when the server crashes first (the caller keeps its own timeout).
   */
  request(id: NodeId, path: string, body: unknown): Promise<Response> {
    const server = this.server(id);
    if (server === undefined) return Promise.reject(new Error(`Node "${id}" is down`));
    const req = new Request(ServerCluster.clientUrl(id) + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const owner = this.#member(id).owner;
    return new Promise<Response>((resolve, reject) =>
      this.#whenRunning(id, `client ${++this.#connections}`, () => {
        // Crashed while paused: the request is never answered (the caller times out).
        if (!this.#alive(id, owner)) return;
        handleHttp(server, req).then(
          (res) => this.#whenSending(id, () => resolve(res)),
          (e) => this.#whenSending(id, () => reject(e)),
        );
      })
    );
  }

  /** Runs `fire` after `delayMs` of virtual time (the clients' and the fault schedule's timers). */
  after(delayMs: number, fire: () => void): void {
    this.timers.schedule(WORLD, delayMs, fire);
  }

  /**
   * Runs the simulation until virtual time `untilMs`: pops the next event, runs it, then lets the
   * promises it settled run (one macrotask turn) before the next event.
   */
  async runUntil(untilMs: number): Promise<void> {
    while (this.timers.step(untilMs)) await settle();
    this.timers.advanceTo(Math.max(this.nowMs, untilMs));
    await settle();
  }

  /** Closes every running server (end of a run). */
  async close(): Promise<void> {
    for (const id of this.ids) {
      const m = this.#member(id);
      const server = m.server;
      if (server === undefined) continue;
      m.server = undefined;
      await server.close();
      this.timers.halt(m.owner);
    }
  }

  #member(id: NodeId): Member {
    const m = this.#members.get(id);
    if (m === undefined) throw new RangeError(`Unknown node: ${JSON.stringify(id)}`);
    return m;
  }

  #latencyMs(): number {
    const min = this.#options.latencyMinMs ?? 1;
    const max = this.#options.latencyMaxMs ?? 10;
    return min + Math.floor(this.rng.next() * (max - min + 1));
  }

  /** One crossing of the network: the latency, plus seconds for a share (`longDelay`). */
  #delayMs(): number {
    const latency = this.#latencyMs();
    const long = this.#options.longDelay;
    if (long === undefined || !((long.longDelayRate ?? 0) > 0)) return latency;
    if (!this.#longRng.chance(long.longDelayRate!)) return latency;
    this.counters.longDelayed++;
    return latency +
      this.#longRng.int(long.longDelayMinMs ?? 1_000, (long.longDelayMaxMs ?? 4_000) + 1);
  }

  /** Whether the process `owner` of `id` is still the one running. */
  #alive(id: NodeId, owner: number): boolean {
    const m = this.#member(id);
    return m.server !== undefined && m.owner === owner;
  }

  #send(from: NodeId, owner: number, message: Message): void {
    if (!this.#alive(from, owner)) return;
    this.#whenSending(from, () => this.#carry(from, message));
  }

  #carry(from: NodeId, message: Message): void {
    const to = message.to;
    if (!this.linked(from, to) || this.rng.next() < (this.#options.dropRate ?? 0.01)) {
      this.counters.messagesLost++;
      return;
    }
    this.timers.schedule(WORLD, this.#delayMs(), () => {
      const target = this.#member(to).server;
      if (target === undefined || !this.linked(from, to)) {
        this.counters.messagesLost++;
        return;
      }
      this.counters.messagesDelivered++;
      const targetOwner = this.#member(to).owner;
      this.#whenRunning(to, `peer ${from}`, () => {
        if (this.#alive(to, targetOwner)) target.receive(from, [message]);
      });
    });
  }

  /**
   * Forwarding between servers: the request crosses the network to the target's `handleHttp`,
   * the response crosses back. A down target refuses the connection (never sent); a cut link
   * or a crash meanwhile leaves the caller to its timeout (outcome unknown), as TCP would.
   */
  #fetchFrom(from: NodeId, owner: number): ServerFetch {
    return (url, init, timeoutMs) =>
      new Promise<Response>((resolve, reject) => {
        const to = this.ids.find((id) => url.startsWith(ServerCluster.clientUrl(id)));
        let settled = false;
        // The caller learns the outcome when it runs: a paused caller only once it resumes.
        const settleWith = (f: () => void) => {
          if (settled || !this.#alive(from, owner)) return;
          settled = true;
          this.#whenRunning(from, "forward answers", () => {
            if (this.#alive(from, owner)) f();
          });
        };
        this.timers.schedule(
          WORLD,
          Math.max(1, timeoutMs),
          () => settleWith(() => reject(new DOMException("Signal timed out.", "TimeoutError"))),
        );
        if (to === undefined || this.server(to) === undefined) {
          this.timers.schedule(WORLD, this.#latencyMs(), () =>
            settleWith(() =>
              reject(
                new TypeError("fetch failed", {
                  cause: new Error("tcp connect error: Connection refused (os error 111)"),
                }),
              )
            ));
          return;
        }
        const targetOwner = this.#member(to).owner;
        const req = new Request(url, init);
        this.counters.forwards++;
        this.#whenSending(from, () =>
          this.timers.schedule(WORLD, this.#delayMs(), () => {
            const target = this.#member(to).server;
            if (!this.linked(from, to) || !this.#alive(to, targetOwner) || target === undefined) {
              return;
            }
            this.#whenRunning(to, `forward ${++this.#connections}`, () => {
              if (!this.#alive(to, targetOwner)) return;
              handleHttp(target, req).then((res) =>
                this.#whenSending(to, () =>
                  this.timers.schedule(WORLD, this.#delayMs(), () => {
                    if (!this.linked(to, from) || !this.#alive(to, targetOwner)) return;
                    settleWith(() => resolve(res));
                  }))
              );
            });
          }));
      });
  }
}

/** Lets every promise settled by the last event run: one macrotask turn, no clock read. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A host's clock and timers on its own machine clock: it reads `clock` at the virtual time, and a
 * delay of d ms on it fires when that clock has moved by d (sooner on a fast clock).
 */
function driftingHost(
  timers: VirtualTimers,
  owner: number,
  clock: NodeClock,
): { clock: HostClock; timers: HostTimers } {
  const nowLocal = () => localMs(clock, timers.nowMs());
  const schedule = (delayMs: number, fire: () => void): CancelTimer => {
    const atMs = globalMs(clock, nowLocal() + delayMs);
    return timers.schedule(owner, Math.max(0, atMs - timers.nowMs()), fire);
  };
  // The next turn comes at the same virtual instant whatever the host's clock.
  const nextTurn = (fire: () => void) => void timers.schedule(owner, 0, fire);
  return { clock: { nowMs: nowLocal }, timers: timersOn(schedule, nextTurn) };
}

/** What a {@linkcode SlowFs} asks its cluster. */
interface SlowFsHooks {
  /** How long the next fdatasync takes, ms. */
  syncMs(): number;
  /** Blocks the process for `ms` (a synchronous fdatasync on the event loop). */
  block(ms: number): void;
  /** Runs `fire` after `ms` on the process's timers (dies with it). */
  after(ms: number, fire: () => void): void;
}

/**
 * A slow disk over a {@linkcode SimFs}: `syncData` blocks the process for the sync's time (the
 * data is durable at once, the process carries on only later); `syncDataAsync` makes the data
 * durable and resolves only when the disk is done (a crash before loses the writes).
 */
class SlowFs implements Fs {
  readonly #fs: SimFs;
  readonly #hooks: SlowFsHooks;

  constructor(fs: SimFs, hooks: SlowFsHooks) {
    this.#fs = fs;
    this.#hooks = hooks;
  }

  exists(path: string): boolean {
    return this.#fs.exists(path);
  }
  mkdir(path: string): void {
    this.#fs.mkdir(path);
  }
  list(dir: string): string[] {
    return this.#fs.list(dir);
  }
  readFile(path: string): Uint8Array {
    return this.#fs.readFile(path);
  }
  size(path: string): number {
    return this.#fs.size(path);
  }
  truncate(path: string, length: number): void {
    this.#fs.truncate(path, length);
  }
  rename(from: string, to: string): void {
    this.#fs.rename(from, to);
  }
  remove(path: string): void {
    this.#fs.remove(path);
  }
  syncDir(dir: string): void {
    this.#fs.syncDir(dir);
  }

  openAppend(path: string): FsFile {
    const file = this.#fs.openAppend(path);
    const hooks = this.#hooks;
    let syncing: Promise<void> | undefined;
    let closeAfterSync = false;
    return {
      path: file.path,
      write: (bytes) => file.write(bytes),
      syncData: () => {
        file.syncData();
        const ms = hooks.syncMs();
        if (ms > 0) hooks.block(ms);
      },
      syncDataAsync: () => {
        const ms = hooks.syncMs();
        if (ms === 0) return file.syncDataAsync();
        const p = new Promise<void>((resolve, reject) =>
          hooks.after(ms, () => {
            if (syncing === p) syncing = undefined;
            try {
              file.syncData();
              resolve();
            } catch (e) {
              reject(e);
            } finally {
              if (syncing === undefined && closeAfterSync) file.close();
            }
          })
        );
        syncing = p;
        return p;
      },
      // As a real file: a close waits for the sync under way.
      close: () => {
        if (syncing !== undefined) closeAfterSync = true;
        else file.close();
      },
    };
  }
}
