/**
 * Randomized deterministic simulation (in the spirit of TigerBeetle's VOPR and FoundationDB's
 * simulator): one seed drives the clock, the network, the faults and the clients. Safety properties
 * are checked after every event; at the end, all faults heal and the cluster must elect a leader and
 * converge (liveness), and the clients' history must be linearizable. With `locks`, lock workers
 * take a lock through sessions and write with fencing tokens (src/check/lock_workload.ts), and
 * their history must pass the lock checker (src/check/lock_checker.ts).
 *
 * @module
 */

import { Cluster } from "../sim/cluster.ts";
import { type ClientRequest, type ClientResult, SimClient } from "../sim/client.ts";
import { SeededRng } from "../raft/rng.ts";
import type { FaultPoint, NodeId, RaftConfig } from "../raft/types.ts";
import type { Operation as HistoryOperation } from "./history.ts";
import { checkLinearizable } from "./linearizability.ts";
import { SafetyViolation } from "../sim/invariants.ts";
import { SimCoordination } from "../coord/sim.ts";
import type { CoordFaultPoint } from "../coord/lock.ts";
import { checkLocks, type LockCheckResult, type LockHistory } from "./lock_checker.ts";
import { LockWorkload } from "./lock_workload.ts";

/** The kinds of fault a run may inject. */
export const FAULT_KINDS = [
  "loss",
  "duplicate",
  "reorder",
  "delay",
  "partition",
  "crash",
  "crash-after-persist",
  "pause",
  "disk",
  "snapshot",
  "disk-slow",
  "slow-apply",
  "clock-drift",
  "long-pause",
  "crash-subset",
  "long-delay",
  "membership",
] as const;

/** Share of seeds that run with `long-delay` when the fault kinds are not chosen explicitly. */
export const LONG_DELAY_SEED_SHARE = 0.25;

/** Share of seeds that run with `membership` when the fault kinds are not chosen explicitly. */
export const MEMBERSHIP_SEED_SHARE = 0.5;

/** Most nodes a run with `membership` adds beyond those it starts with. */
export const MEMBERSHIP_ADDED_NODES_MAX = 4;

/**
 * The kinds that are on in only a share of the seeds when the kinds are not chosen explicitly
 * (each drawn from its own generator, so a seed without them keeps its exact run).
 */
export const SEED_SHARE: Readonly<Partial<Record<FaultKind, number>>> = {
  "disk-slow": 0.25,
  "slow-apply": 0.25,
  "clock-drift": 0.25,
  "long-pause": 0.25,
  "crash-subset": 0.25,
};

/** Most drift of a node's clock with `clock-drift`: ±1% (the bound the lease design assumes). */
export const CLOCK_DRIFT_MAX = 0.01;

/**
 * One kind of fault. `disk` runs every node on a simulated disk (unsynced writes lost and tails
 * torn at every crash) and crashes nodes at chosen steps of the persist path; `snapshot` makes
 * hosts snapshot every few dozen entries and keeps followers down long enough to need
 * InstallSnapshot; `long-delay` holds a share of all messages for 1–4 s of virtual time, several
 * election timeouts, so a request or its reply lands after leadership changed twice (it runs
 * through the whole faulty phase, beside the other kinds; with the default kinds, in one seed in
 * four). `disk-slow`: every node's saves and syncs take 0 to a few dozen ms, and some
 * stall for 100 ms to 2 s, blocking the process (a follower replies only after its write is
 * durable); `slow-apply`: some applied entries block their node for up to half a second;
 * `clock-drift`: each node's clock has its own offset and runs up to ±1% fast or slow (timers and
 * lease deadlines follow it); `long-pause`: a node (often the leader) is paused 1.6–4 s, longer
 * than any lock lease and several election timeouts; `crash-subset`: on the simulated disk, a
 * crash keeps any subset of unsynced writes, not a prefix (it turns the sim disk on). Each
 * wider kind is on in a quarter of the default seeds (`SEED_SHARE`). `membership`: every
 * 200–1,500 ms one change — add a learner or a voter (at most `MEMBERSHIP_ADDED_NODES_MAX` nodes over the
 * run), promote a learner, remove a learner or a voter (the leader in a third of removals; never
 * below three voters), or transfer leadership — beside the other kinds, on a schedule of its own;
 * with the default kinds, in half the seeds (`MEMBERSHIP_SEED_SHARE`).
 */
export type FaultKind = typeof FAULT_KINDS[number];

/** How to run one seed. */
export interface SimulationOptions {
  /** Cluster size; default: 3, 5 or 7 chosen by the seed. */
  readonly nodes?: number;
  /** Fault kinds to inject. Default: all. */
  readonly faults?: readonly FaultKind[];
  /** Virtual length of the faulty phase. Default 10,000 ms. */
  readonly durationMs?: number;
  /** Concurrent clients. Default 4. */
  readonly clients?: number;
  /** Keys the clients work on. Default 3. */
  readonly keys?: number;
  /** After healing, how long a leader and convergence may take. Default 10,000 ms. */
  readonly healBoundMs?: number;
  /** Raft configuration for every node. */
  readonly config?: Partial<RaftConfig>;
  /** Classic bugs to switch on (to prove the checks catch them). */
  readonly faultPoints?: readonly FaultPoint[];
  /**
   * Lock workers taking one lock with sessions and fenced writes, beside the key-value clients.
   * Default 0 (none). With any, the run drives virtual time a millisecond at a time (the recipes
   * are async) and is slower.
   */
  readonly locks?: number;
  /** Bugs of the lock recipe to switch on (to prove the lock checker catches them). */
  readonly coordFaultPoints?: readonly CoordFaultPoint[];
  /**
   * Most messages a run may send before it is stopped as a runaway (a livelock, e.g. a leader and
   * follower re-sending forever). Default 30 per virtual millisecond of `durationMs` (a healthy
   * 10-second run of 7 nodes sends about 50,000).
   */
  readonly messagesMax?: number;
  /** Where nodes persist. Default: `"simdisk"` when `disk` faults are on, else `"memory"`. */
  readonly storage?: "memory" | "simdisk";
  /** Snapshot every this many applied entries. Default: 10 to 60 with `snapshot` faults, else 10,000. */
  readonly snapshotEntries?: number;
  /**
   * A leader's own write completes up to this many ms after it sent the batch (§10.2.1), so
   * acknowledgements can overtake it. Default: 0, 3 or 15, drawn per seed.
   */
  readonly leaderWriteDelayMaxMs?: number;
  /**
   * With `long-delay`: the share of messages held for 1–4 s. Default: 0.5%, 2% or 5%, drawn per
   * seed.
   */
  readonly longDelayRate?: number;
  /** Events kept for a verbose replay. Default 2,000. */
  readonly eventsMax?: number;
  /** Called with a line for each fault injected (verbose replay). */
  readonly log?: (line: string) => void;
}

/** What went wrong in a run. */
export interface Violation {
  /**
   * `safety` (an invariant broke), `liveness` (no recovery after healing), `linearizability`,
   * `lock` (the lock checker found a broken guarantee), or `crash` (a node stopped on an
   * assertion).
   */
  readonly kind: "safety" | "liveness" | "linearizability" | "lock" | "crash";
  /** What exactly. */
  readonly message: string;
}

/** The outcome of one seed. */
export interface SimulationResult {
  /** The seed. */
  readonly seed: number;
  /** Cluster size used. */
  readonly nodes: number;
  /** Client operations recorded (and checked, when no other violation came first). */
  readonly operations: number;
  /** Faults injected (accepted membership changes included). */
  readonly faults: number;
  /** Membership changes accepted by a leader (adds, promotions, removals, transfers). */
  readonly membershipChanges: number;
  /** The first violation, if any. */
  readonly violation?: Violation;
  /** The client history. */
  readonly history: readonly HistoryOperation[];
  /** With `locks`: the lock workload's history and the checker's figures. */
  readonly locks?: LockCheckResult & { readonly history: LockHistory };
  /** The cluster as the run left it (for node tables in a verbose replay). */
  readonly cluster: Cluster;
}

/**
 * Runs one seeded simulation; never throws for a violation, it reports it. Without `locks` the
 * run is synchronous inside (the promise is settled when it returns).
 */
export async function runSimulation(
  seed: number,
  options: SimulationOptions = {},
): Promise<SimulationResult> {
  const rng = new SeededRng(seed ^ 0x5eed);
  const nodes = options.nodes ?? [3, 5, 7][rng.int(0, 3)];
  const faults = new Set<FaultKind>(options.faults ?? FAULT_KINDS);
  // The wider kinds each run in a share of the seeds, from generators of their own.
  const wideRng = new SeededRng(seed ^ 0x71de);
  for (const [kind, share] of Object.entries(SEED_SHARE) as [FaultKind, number][]) {
    if (options.faults === undefined && !wideRng.chance(share)) faults.delete(kind);
  }
  // From its own generator, so the seeds without it keep their exact runs.
  const longRng = new SeededRng(seed ^ 0x10a7);
  if (options.faults === undefined && !longRng.chance(LONG_DELAY_SEED_SHARE)) {
    faults.delete("long-delay");
  }
  // Likewise: membership changes draw from a generator of their own.
  const memberRng = new SeededRng(seed ^ 0x3e3c);
  if (options.faults === undefined && !memberRng.chance(MEMBERSHIP_SEED_SHARE)) {
    faults.delete("membership");
  }
  const durationMs = options.durationMs ?? 10_000;
  const healBoundMs = options.healBoundMs ?? 10_000;
  const keys = Array.from({ length: options.keys ?? 3 }, (_, i) => `/k${i}`);
  const log = options.log ?? (() => {});
  const snapshots = faults.has("snapshot");
  // Drawn only when used, so runs without these kinds keep their exact sequences.
  const snapshotEntries = options.snapshotEntries ?? (snapshots ? rng.int(10, 61) : undefined);
  const snapshotConfig: Partial<RaftConfig> = snapshots
    ? {
      snapshotTrailingEntries: [0, 3, 20][rng.int(0, 3)],
      snapshotChunkBytesMax: [64, 512, 1 << 20][rng.int(0, 3)],
    }
    : {};
  const cluster = new Cluster({
    nodes,
    seed,
    eventsMax: options.eventsMax ?? 2_000,
    faultPoints: options.faultPoints,
    storage: options.storage ??
      (faults.has("disk") || faults.has("crash-subset") ? "simdisk" : "memory"),
    crashKeepsSubset: faults.has("crash-subset"),
    diskLatency: faults.has("disk-slow")
      ? {
        syncMsMax: [2, 10, 30][wideRng.int(0, 3)],
        stallRate: [0.001, 0.003, 0.01][wideRng.int(0, 3)],
        stallMsMin: 100,
        stallMsMax: 2_000,
      }
      : undefined,
    applyLatency: faults.has("slow-apply")
      ? {
        rate: [0.005, 0.02, 0.05][wideRng.int(0, 3)],
        msMin: 1,
        msMax: [20, 100, 500][wideRng.int(0, 3)],
      }
      : undefined,
    clocks: faults.has("clock-drift")
      ? Array.from({ length: nodes }, () => ({
        offsetMs: wideRng.int(0, 100_000),
        rate: 1 + (wideRng.next() * 2 - 1) * CLOCK_DRIFT_MAX,
      }))
      : undefined,
    snapshotEntries,
    // Small message and pipeline bounds for some seeds reach states big batches hide.
    config: options.config ?? {
      entriesPerMessageMax: [1, 8, 256][rng.int(0, 3)],
      inflightMessagesMax: [1, 4, 16][rng.int(0, 3)],
      ...snapshotConfig,
    },
    // From its own generator, so the fault schedule of a seed stays what it was without it.
    leaderWriteDelayMaxMs: options.leaderWriteDelayMaxMs ??
      [0, 3, 15][new SeededRng(seed ^ 0xd15c).int(0, 3)],
  });
  const history: HistoryOperation[] = [];
  // Lock workers, on a random stream of their own so the fault schedule keeps its draws.
  const coord = (options.locks ?? 0) > 0 ? new SimCoordination(cluster) : undefined;
  const locks = coord && new LockWorkload(coord, {
    workers: options.locks!,
    rng: new SeededRng(seed ^ 0x10c4),
    faultPoints: options.coordFaultPoints,
    log,
  });
  // Virtual time: in one go without locks; a millisecond at a time with them, letting the
  // recipes' continuations run in between.
  const advance = async (ms: number) => {
    if (coord) await coord.advance(ms);
    else cluster.advance(ms);
  };
  const runUntil = async (until: () => boolean, timeoutMs: number, description: string) => {
    if (!coord) return void cluster.runUntil(until, { timeoutMs, description });
    try {
      await coord.drive(until, { timeoutMs });
    } catch (e) {
      if (!/^Timed out after/.test((e as Error).message)) throw e;
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${description}`);
    }
  };
  let faultCount = 0;
  let stopped = false;
  let violation: Violation | undefined;

  // Clients: each issues one operation at a time, with a short random pause between them.
  const clients = Array.from(
    { length: options.clients ?? 4 },
    (_, i) => new SimClient(cluster, `c${i + 1}`, { timeoutMs: 3_000, attemptTimeoutMs: 400 }),
  );
  let values = 0;
  const issue = (client: SimClient) => {
    if (stopped) return;
    const key = keys[rng.int(0, keys.length)];
    const roll = rng.next();
    let request: ClientRequest;
    if (roll < 0.4) request = { kind: "get", key };
    else if (roll < 0.7) request = { kind: "put", key, value: `v${++values}` };
    else if (roll < 0.8) request = { kind: "delete", key };
    else {
      const expected = rng.chance(0.3) ? null : `v${rng.int(Math.max(1, values - 3), values + 1)}`;
      request = { kind: "cas", key, expected, value: `v${++values}` };
    }
    const id = history.length;
    history.push(toHistory(id, client.clientId, request, cluster.nowMs, undefined));
    client.start(request, (r) => {
      history[id] = toHistory(id, client.clientId, request, r.callMs, r);
      cluster.schedule(rng.int(0, 20), () => issue(client));
    });
  };

  const fault = (what: string) => {
    faultCount++;
    log(`t=${cluster.nowMs} fault: ${what}`);
  };

  // The fault schedule: every 100–800 ms one change, chosen by the seed.
  const crashed = new Set<NodeId>();
  const paused = new Set<NodeId>();
  const upIds = () => cluster.ids.filter((id) => cluster.node(id).state === "up");
  const injectOne = () => {
    if (stopped) return;
    // Whole-run settings (`long-delay` is on from the start, below), not changes drawn here.
    const kinds = [...faults].filter((k) =>
      k !== "long-delay" && k !== "disk-slow" && k !== "slow-apply" && k !== "clock-drift" &&
      k !== "crash-subset" && k !== "membership"
    );
    if (kinds.length > 0) {
      const kind = kinds[rng.int(0, kinds.length)];
      injectKind(kind);
    }
    cluster.schedule(rng.int(100, 800), injectOne);
  };
  const injectKind = (kind: FaultKind) => {
    const net = cluster.network;
    switch (kind) {
      case "loss":
        cluster.network = { ...net, dropRate: rng.chance(0.3) ? 0 : rng.next() * 0.3 };
        return fault(`loss ${(cluster.network.dropRate * 100).toFixed(0)}%`);
      case "duplicate":
        cluster.network = { ...net, duplicateRate: rng.next() * 0.2 };
        return fault(`duplicate ${(cluster.network.duplicateRate * 100).toFixed(0)}%`);
      case "reorder":
        cluster.network = { ...net, reorderRate: rng.next() * 0.3 };
        return fault(`reorder ${(cluster.network.reorderRate * 100).toFixed(0)}%`);
      case "delay": {
        const long = rng.chance(0.3);
        cluster.network = { ...net, latencyMaxMs: long ? rng.int(50, 400) : 5 };
        return fault(`latency up to ${cluster.network.latencyMaxMs} ms`);
      }
      case "partition":
        return partition();
      case "long-delay":
      case "membership":
        return;
      case "crash":
      case "crash-after-persist":
      case "disk":
      case "snapshot": {
        const up = upIds();
        if (up.length === 0) return;
        let id = up[rng.int(0, up.length)];
        let downMs = rng.int(100, 2_000);
        let what: string = kind;
        if (kind === "crash") cluster.crash(id);
        else if (kind === "crash-after-persist") cluster.crashAfterPersist(id);
        else if (kind === "disk") {
          // Crash at a step of the persist path: before a write, between write and sync, ...
          const op = (["write", "syncData", "rename", "syncDir"] as const)[rng.int(0, 4)];
          const skip = rng.int(0, 4);
          cluster.crashAtDiskOp(id, op, { skip });
          what = `crash at disk ${op} (after ${skip} more) of`;
        } else {
          // A follower down long enough for the leader to compact past it: it needs a snapshot.
          const followers = up.filter((x) => x !== cluster.leader());
          if (followers.length === 0) return;
          id = followers[rng.int(0, followers.length)];
          cluster.crash(id);
          downMs = rng.int(1_500, 4_000);
          what = "long crash";
        }
        crashed.add(id);
        fault(`${what} ${id}`);
        cluster.schedule(downMs, () => {
          if (cluster.node(id).state !== "crashed") {
            cluster.schedule(100, () => restartLater(id));
            return;
          }
          restartLater(id);
        });
        return;
      }
      case "disk-slow":
      case "slow-apply":
      case "clock-drift":
      case "crash-subset":
        return;
      case "long-pause": {
        // Longer than any lock lease (at most 1.5 s) and several election timeouts.
        const up = upIds();
        if (up.length === 0) return;
        const leader = cluster.leader();
        const id = leader !== undefined && rng.chance(0.5) ? leader : up[rng.int(0, up.length)];
        cluster.pause(id);
        paused.add(id);
        fault(`long pause ${id}`);
        cluster.schedule(rng.int(1_600, 4_001), () => {
          if (cluster.node(id).state === "paused") {
            cluster.resume(id);
            paused.delete(id);
            log(`t=${cluster.nowMs} resume ${id}`);
          }
        });
        return;
      }
      case "pause": {
        const up = upIds();
        if (up.length === 0) return;
        const id = up[rng.int(0, up.length)];
        cluster.pause(id);
        paused.add(id);
        fault(`pause ${id}`);
        cluster.schedule(rng.int(50, 1_500), () => {
          if (cluster.node(id).state === "paused") {
            cluster.resume(id);
            paused.delete(id);
            log(`t=${cluster.nowMs} resume ${id}`);
          }
        });
        return;
      }
    }
  };
  const restartLater = (id: NodeId) => {
    if (cluster.node(id).state === "crashed") {
      cluster.restart(id);
      log(`t=${cluster.nowMs} restart ${id}`);
    }
    crashed.delete(id);
  };
  const partition = () => {
    cluster.heal();
    const ids = [...cluster.ids];
    const shape = rng.int(0, 5);
    if (shape === 0) {
      fault("heal");
      return;
    }
    if (shape === 1) {
      // Random halves.
      const a = ids.filter(() => rng.chance(0.5));
      cluster.partition(a);
      return fault(`partition [${a.join(",")}] | rest`);
    }
    if (shape === 2) {
      const leader = cluster.leader() ?? ids[rng.int(0, ids.length)];
      cluster.isolate(leader);
      return fault(`isolate ${leader}`);
    }
    if (shape === 3) {
      // Majority ring: each node reaches its ring neighbours within a majority, no two alike.
      const n = ids.length;
      const reach = Math.ceil(Math.floor(n / 2) / 2); // neighbours on each side: self + 2·reach ≥ majority
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          const d = Math.min((i - j + n) % n, (j - i + n) % n);
          if (i !== j && d > reach) cluster.cut(ids[i], ids[j]);
        }
      }
      return fault("majority ring");
    }
    // One-way cuts.
    const cuts = rng.int(1, ids.length);
    for (let k = 0; k < cuts; k++) {
      const from = ids[rng.int(0, ids.length)];
      const to = ids[rng.int(0, ids.length)];
      if (from !== to) cluster.cut(from, to);
    }
    fault(`${cuts} one-way cut(s)`);
  };

  // Stalled connections: every message on one link arrives seconds late, in order, for a while.
  const slow = new Set<string>();
  const slowOne = () => {
    if (stopped) return;
    const ids = cluster.ids;
    const from = ids[longRng.int(0, ids.length)];
    const to = ids[longRng.int(0, ids.length)];
    if (from !== to && !slow.has(`${from}>${to}`) && !slow.has(`${to}>${from}`)) {
      // A stalled connection is slow both ways, each by its own amount (a request held for
      // seconds, its answer held too, while the cluster moves on).
      for (const [a, b] of [[from, to], [to, from]]) {
        slow.add(`${a}>${b}`);
        cluster.slowLink(a, b, longRng.int(200, 4_001));
      }
      fault(`slow link ${from}<>${to}`);
      cluster.schedule(longRng.int(200, 2_000), () => {
        for (const [a, b] of [[from, to], [to, from]]) {
          if (slow.delete(`${a}>${b}`)) cluster.slowLink(a, b, 0);
        }
      });
    }
    cluster.schedule(longRng.int(300, 2_000), slowOne);
  };

  // Membership changes, on their own schedule and generator (so seeds without them keep their
  // runs). A refusal (no leader, a change still uncommitted, a learner behind) is logged, not
  // counted.
  let membershipChanges = 0;
  /** One change request; whether the leader accepted it. */
  const changeMembership = (): boolean => {
    if (stopped) return false;
    const members = cluster.membership();
    const leader = cluster.leader();
    // Voters are removed only down to three, so crashes leave the cluster some availability.
    const removable = [
      ...(members.voters.length > 3 ? members.voters : []),
      ...members.learners,
    ];
    // Leadership goes to a running voter (as an operator would choose; a transfer to a node that
    // is down holds writes back for an election timeout).
    const others = members.voters.filter((id) => id !== leader && cluster.node(id).state === "up");
    const actions = [
      ...(cluster.ids.length < nodes + MEMBERSHIP_ADDED_NODES_MAX ? ["add"] : []),
      ...(members.learners.length > 0 ? ["promote"] : []),
      ...(removable.length > 0 ? ["remove"] : []),
      ...(leader !== undefined && others.length > 0 ? ["transfer"] : []),
    ];
    let what = "";
    try {
      if (actions.length === 0) return false;
      const action = actions[memberRng.int(0, actions.length)];
      if (action === "add") {
        // Mostly as a learner, promoted later; sometimes straight as a voter (etcd allows both).
        const as = memberRng.chance(0.3) ? "voter" : "learner";
        what = `add ${as}`;
        what = `add ${as} ${cluster.addNode({ as })}`;
      } else if (action === "promote") {
        const id = members.learners[memberRng.int(0, members.learners.length)];
        what = `promote ${id}`;
        cluster.promote(id);
      } else if (action === "remove") {
        const id = leader !== undefined && removable.includes(leader) && memberRng.chance(0.33)
          ? leader
          : removable[memberRng.int(0, removable.length)];
        what = `remove ${id}${id === leader ? " (the leader)" : ""}`;
        cluster.removeNode(id);
      } else {
        const id = others[memberRng.int(0, others.length)];
        what = `transfer leadership ${leader} -> ${id}`;
        cluster.transferLeader(id);
      }
      membershipChanges++;
      fault(`membership: ${what}`);
      return true;
    } catch (e) {
      if (e instanceof SafetyViolation) throw e;
      log(`t=${cluster.nowMs} membership: ${what} refused: ${(e as Error).message}`);
      return false;
    }
  };
  // Operators race the cluster: now and then a second request right after an accepted one (a
  // correct leader refuses it while the first is uncommitted), and a request just after a new
  // leader is elected (refused until it committed in its term).
  // And the leader may crash just after it accepted a change, before the change reached a
  // majority: the next leader may never have seen it.
  const membershipTick = () => {
    if (stopped) return;
    const leader = cluster.leader();
    if (changeMembership()) {
      if (memberRng.chance(0.3)) changeMembership();
      if (leader !== undefined && memberRng.chance(0.25)) {
        cluster.schedule(memberRng.int(0, 4), () => {
          if (stopped || cluster.node(leader).state !== "up") return;
          cluster.crash(leader);
          crashed.add(leader);
          fault(`membership: crash ${leader} right after the change`);
          cluster.schedule(memberRng.int(200, 1_500), () => restartLater(leader));
        });
      }
    }
    cluster.schedule(memberRng.int(200, 1_500), membershipTick);
  };
  if (faults.has("membership")) {
    cluster.onEvent((e) => {
      if (e.kind !== "role" || e.role !== "Leader" || stopped) return;
      if (memberRng.chance(0.5)) cluster.schedule(memberRng.int(0, 3), changeMembership);
    });
  }

  const messagesMax = options.messagesMax ?? 30 * durationMs;
  const watchdog = () => {
    if (cluster.stats.sent > messagesMax) {
      throw new RunawayError(
        `the run sent more than ${messagesMax} messages by t=${cluster.nowMs} ms: a livelock`,
      );
    }
    cluster.schedule(100, watchdog);
  };

  try {
    cluster.schedule(100, watchdog);
    if (faults.has("long-delay")) {
      cluster.network = {
        ...cluster.network,
        longDelayRate: options.longDelayRate ?? [0.005, 0.02, 0.05][longRng.int(0, 3)],
        longDelayMinMs: 1_000,
        longDelayMaxMs: 4_000,
      };
      fault(`long delays: ${(cluster.network.longDelayRate * 100).toFixed(1)}% of messages`);
      cluster.schedule(longRng.int(100, 800), slowOne);
    }
    if (faults.has("membership")) cluster.schedule(memberRng.int(200, 1_500), membershipTick);
    for (const c of clients) issue(c);
    locks?.start();
    cluster.schedule(rng.int(100, 800), injectOne);
    await advance(durationMs);

    // Healing: every fault stops; a leader must emerge and every node converge within the bound.
    stopped = true;
    locks?.stop();
    log(`t=${cluster.nowMs} heal everything`);
    cluster.network = {
      ...cluster.network,
      dropRate: 0,
      duplicateRate: 0,
      reorderRate: 0,
      latencyMaxMs: 5,
      longDelayRate: 0,
    };
    cluster.heal();
    cluster.diskLatency = undefined;
    cluster.applyLatency = undefined;
    for (const link of slow) {
      const [from, to] = link.split(">");
      cluster.slowLink(from, to, 0);
    }
    slow.clear();
    cluster.disarmCrashes();
    for (const n of cluster.nodes()) {
      if (n.state === "paused") cluster.resume(n.id);
      else if (n.state === "crashed") cluster.restart(n.id);
    }
    const healedAt = cluster.nowMs;
    try {
      await runUntil(
        () => cluster.converged(),
        healBoundMs,
        "a leader and convergence after healing",
      );
    } catch (e) {
      if (e instanceof SafetyViolation || e instanceof RunawayError) throw e;
      violation = {
        kind: "liveness",
        message: `${(e as Error).message} (healed at t=${healedAt})`,
      };
    }
    // Let clients still waiting finish (they time out by themselves; a lock worker may be in a
    // fencedPut of three transactions).
    await runUntil(
      () => clients.every((c) => !c.busy) && (locks?.idle ?? true),
      locks ? 20_000 : 10_000,
      "clients to finish",
    );
    // The lock must pass on once healed: every stopped holder's lease expires.
    if (coord && locks && violation === undefined) {
      try {
        await coord.run(locks.probe(), { timeoutMs: healBoundMs });
      } catch (e) {
        if (e instanceof SafetyViolation || e instanceof RunawayError) throw e;
        violation = {
          kind: "liveness",
          message: `a fresh client could not take the lock within ${healBoundMs} ms after ` +
            `healing: ${(e as Error).message}`,
        };
      }
    }
  } catch (e) {
    violation = e instanceof SafetyViolation
      ? { kind: "safety", message: e.message }
      : e instanceof RunawayError
      ? { kind: "liveness", message: e.message }
      : { kind: "crash", message: (e as Error).stack ?? String(e) };
  }

  if (violation === undefined && locks?.failure !== undefined) {
    violation = { kind: "crash", message: locks.failure.stack ?? String(locks.failure) };
  }
  const lockCheck = locks && { ...checkLocks(locks.history()), history: locks.history() };
  if (violation === undefined && lockCheck?.violation !== undefined) {
    violation = { kind: "lock", message: lockCheck.violation };
  }
  if (violation === undefined) {
    const check = checkLinearizable(history);
    if (!check.ok) {
      violation = {
        kind: "linearizability",
        message: check.failure?.explanation ?? `verdict ${check.result}`,
      };
    }
  }
  return {
    seed,
    nodes,
    operations: history.length,
    faults: faultCount,
    membershipChanges,
    violation,
    history,
    locks: lockCheck,
    cluster,
  };
}

class RunawayError extends Error {}

function toHistory(
  id: number,
  clientId: string,
  request: ClientRequest,
  callMs: number,
  r: ClientResult | undefined,
): HistoryOperation {
  const op: HistoryOperation = {
    id,
    clientId,
    kind: request.kind,
    key: request.key,
    callMs,
    returnMs: null,
  };
  if (request.kind === "put") op.value = request.value;
  if (request.kind === "cas") {
    op.value = request.value;
    op.expected = request.expected;
  }
  if (r === undefined) return op;
  if (r.status === "unknown" || (r.status === "failed" && request.kind !== "get")) {
    // A put or delete that failed for certain had no effect (ok: false). For a cas, ok: false means
    // "the compare failed", so a cas that never ran is recorded as unknown: weaker, but true.
    if (r.status === "failed" && request.kind !== "cas") {
      op.returnMs = r.returnMs;
      op.result = { ok: false };
    }
    return op;
  }
  if (r.status === "failed") {
    op.returnMs = r.returnMs;
    op.result = { ok: false };
    return op;
  }
  op.returnMs = r.returnMs;
  if (request.kind === "get") op.result = { ok: true, value: r.value ?? null };
  else if (request.kind === "cas") {
    op.result = r.succeeded ? { ok: true } : { ok: false, value: r.value ?? null };
  } else op.result = { ok: true };
  return op;
}
