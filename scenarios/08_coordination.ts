/**
 * Chapter 8 — coordination: a lease kept alive and then expiring (decided by the leader, carried
 * through the log), a watch following the key as it appears and vanishes, and a lock passing from
 * a crashed holder to the next waiter with a higher fencing token.
 *
 * Run it: `deno run -A scenarios/08_coordination.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import { encodeCommand } from "../src/kv/command.ts";
import type { ApplyResult } from "../src/kv/store.ts";
import type { CommandResponse, KvEvent, PlainCommand } from "../src/kv/types.ts";
import { SimCoordination } from "../src/coord/sim.ts";
import type { WatchResponse } from "../src/coord/watch.ts";
import { type Chapter, type ChapterContext, note, runChapterCli, type Step } from "./_chapter.ts";

/** State carried from step to step. */
export interface CoordinationContext extends ChapterContext {
  /** Watch hubs and lease managers beside the nodes. */
  coord: SimCoordination;
  /** What the service watcher has seen, one line per event. */
  watched: string[];
  /** Leases kept alive, by name; a holder that "crashes" is removed. */
  alive: Map<string, number>;
  /** The service's lease. */
  serviceLease?: number;
  /** Lock keys and tokens of clients A and B. */
  lockA?: { key: string; token: number; lease: number };
  /** Client B's lock key, token and lease. */
  lockB?: { key: string; token: number; lease: number };
  /** What B's watch on its predecessor saw. */
  bSaw: string[];
}

const TTL_MS = 1_000;
const SERVICE_KEY = "/services/api/n1";
const LOCK = "/locks/nightly-job/";
const encoder = new TextEncoder();

/** Builds the chapter's cluster with coordination attached. */
export function coordinationContext(seed = 1, nodes = 3): CoordinationContext {
  const cluster = new Cluster({ nodes, seed });
  const ctx: CoordinationContext = {
    cluster,
    coord: new SimCoordination(cluster),
    watched: [],
    alive: new Map(),
    bSaw: [],
  };
  // Holders keep their leases alive every TTL/4 at whichever node leads.
  const keepAlive = () => {
    const leader = cluster.leader();
    if (leader !== undefined) {
      for (const id of ctx.alive.values()) {
        try {
          ctx.coord.leases(leader).keepAlive(id);
        } catch { /* a new leader may not have applied the grant yet */ }
      }
    }
    cluster.schedule(TTL_MS / 4, keepAlive);
  };
  cluster.schedule(TTL_MS / 4, keepAlive);
  return ctx;
}

/** Proposes `command` through the leader and runs until it applies; returns the response. */
function submit(ctx: CoordinationContext, command: PlainCommand): CommandResponse {
  const op = ctx.cluster.complete(ctx.cluster.propose(encodeCommand(command)));
  claim(op.status === "ok", `${command.type} commits (${op.status}: ${op.error})`);
  const result = op.applyResult as ApplyResult;
  claim(result.status === "applied", `${command.type} applies (${result.status})`);
  return result.response;
}

function eventText(revision: number, e: KvEvent): string {
  return `rev ${revision}: ${e.type} ${e.kv.key}` +
    (e.type === "PUT" ? ` = ${new TextDecoder().decode(e.kv.value)}` : "");
}

function grant(ctx: CoordinationContext, ttlMs: number): number {
  const r = submit(ctx, { type: "leaseGrant", id: 0, ttlMs });
  claim(r.type === "leaseGrant", "a grant answers with the lease");
  return r.id;
}

function leaderStore(ctx: CoordinationContext) {
  return ctx.cluster.node(ctx.cluster.waitForLeader()).store;
}

/** Puts this client's lock key with its lease; returns the key and its createRevision. */
function enqueue(ctx: CoordinationContext, name: string, lease: number) {
  const key = `${LOCK}${name}`;
  submit(ctx, { type: "put", key, value: encoder.encode(name), prevKv: false, lease });
  const kv = leaderStore(ctx).get(key)!;
  return { key, token: kv.createRevision, lease };
}

/** The chapter's steps. */
export const coordinationSteps: readonly Step<CoordinationContext>[] = [
  {
    name: "a lease, an ephemeral key, and a watch",
    explain: "A client grants a lease with a TTL (a command in the log) and puts its service " +
      "address with that lease: an ephemeral key. Another client watches the prefix /services/ " +
      "from revision 1: it first gets the history, then live events, in revision order.",
    run(ctx) {
      const c = ctx.cluster;
      const leader = c.waitForLeader();
      ctx.serviceLease = grant(ctx, TTL_MS);
      ctx.alive.set("service", ctx.serviceLease);
      submit(ctx, {
        type: "put",
        key: SERVICE_KEY,
        value: encoder.encode("10.0.0.7:8080"),
        prevKv: false,
        lease: ctx.serviceLease,
      });
      ctx.coord.hub(leader).subscribe(
        { range: { prefix: "/services/" }, startRevision: 1 },
        (r: WatchResponse) => {
          if (r.kind === "events") {
            ctx.watched.push(...r.events.map((e) => eventText(r.revision, e)));
          }
        },
      );
      claim(ctx.watched.length === 1, `the watch replays the PUT (${ctx.watched.join("; ")})`);
      note(ctx, `lease ${ctx.serviceLease} (TTL ${TTL_MS} ms); watcher saw: ${ctx.watched[0]}`);
    },
  },
  {
    name: "kept alive, the lease outlives its TTL",
    explain: "The holder sends keep-alives to the leader every quarter TTL. Keep-alives are not " +
      "in the log: the leader's lease manager pushes the lease's deadline back on its own clock. " +
      "Three TTLs later the key is still there and the watcher has seen nothing new.",
    run(ctx) {
      ctx.cluster.advance(3 * TTL_MS);
      claim(leaderStore(ctx).getString(SERVICE_KEY) === "10.0.0.7:8080", "the key is still there");
      claim(ctx.watched.length === 1, "no new event");
    },
  },
  {
    name: "the holder stops: the leader expires the lease through the log",
    explain: "The service crashes and its keep-alives stop. When the deadline passes, the " +
      "leader proposes a revoke marked expired; once it commits, every node deletes the key at " +
      "the same revision, as an ordinary DELETE event. The state machine never reads a clock, and " +
      "a leader cut off in a minority could not expire anything: its revoke would never commit.",
    run(ctx) {
      const c = ctx.cluster;
      ctx.alive.delete("service");
      const stoppedAt = c.nowMs;
      c.runUntil(() => ctx.watched.length === 2, {
        description: "the watcher to see the DELETE",
        timeoutMs: 3 * TTL_MS,
      });
      const tookMs = c.nowMs - stoppedAt;
      claim(ctx.watched[1].includes(`DELETE ${SERVICE_KEY}`), `the watcher saw ${ctx.watched[1]}`);
      claim(leaderStore(ctx).get(SERVICE_KEY) === undefined, "the key is gone");
      claim(leaderStore(ctx).lease(ctx.serviceLease!) === undefined, "and so is the lease");
      c.runUntil(() => c.nodes().every((n) => n.store.get(SERVICE_KEY) === undefined), {
        description: "every node to apply the expiry",
      });
      note(
        ctx,
        `${
          ctx.watched[1]
        } — ${tookMs} ms after the holder stopped (TTL ${TTL_MS} ms from its last keep-alive)`,
      );
    },
  },
  {
    name: "two clients queue for a lock",
    explain:
      "A lock is a prefix: each client puts a key under it with its own lease. The key with " +
      "the lowest createRevision holds the lock, and that revision is its fencing token. B's key " +
      "came later, so B waits — watching only its predecessor, A's key (no thundering herd).",
    run(ctx) {
      const c = ctx.cluster;
      const leaseA = grant(ctx, TTL_MS);
      const leaseB = grant(ctx, TTL_MS);
      ctx.alive.set("A", leaseA);
      ctx.alive.set("B", leaseB);
      ctx.lockA = enqueue(ctx, "A", leaseA);
      ctx.lockB = enqueue(ctx, "B", leaseB);
      claim(ctx.lockA.token < ctx.lockB.token, "A's key is older: A holds the lock");
      const predecessor = ctx.lockA.key;
      ctx.coord.hub(c.waitForLeader()).subscribe(
        { range: { key: predecessor }, startRevision: ctx.lockB.token + 1 },
        (r) => {
          if (r.kind === "events") ctx.bSaw.push(...r.events.map((e) => eventText(r.revision, e)));
        },
      );
      note(
        ctx,
        `A holds with fencing token ${ctx.lockA.token}; B waits (token ${ctx.lockB.token})`,
      );
    },
  },
  {
    name: "the holder crashes: the lock passes with a higher token",
    explain: "A crashes while holding the lock. Its lease expires, its key is deleted, and B's " +
      "watch fires. B reads the prefix: its key is now the oldest, so B holds the lock with a " +
      "higher fencing token. A resource that remembers the highest token it accepted would refuse " +
      "a late write from A (Kleppmann's fencing-token argument; docs/coordination.md explains " +
      "why the lock alone cannot).",
    run(ctx) {
      const c = ctx.cluster;
      ctx.alive.delete("A");
      c.runUntil(() => ctx.bSaw.length > 0, {
        description: "B's watch to see A's key deleted",
        timeoutMs: 3 * TTL_MS,
      });
      claim(ctx.bSaw[0].includes(`DELETE ${ctx.lockA!.key}`), `B saw ${ctx.bSaw[0]}`);
      const holders = [...leaderStore(ctx).entries({ prefix: LOCK })].sort((x, y) =>
        x.createRevision - y.createRevision
      );
      claim(holders[0]?.key === ctx.lockB!.key, "B's key is the oldest: B holds the lock");
      claim(ctx.lockB!.token > ctx.lockA!.token, "with a higher fencing token");
      note(
        ctx,
        `B holds with fencing token ${ctx.lockB!.token} > A's ${ctx.lockA!.token}; B saw: ${
          ctx.bSaw[0]
        }`,
      );
    },
  },
];

/** Chapter 8 as a script and a notebook. */
export const chapter: Chapter<CoordinationContext> = {
  number: 8,
  name: "08_coordination",
  title: "Coordination: leases, watches and locks",
  summary: "a lease expiring through the log, a watch following it, a lock passing on a crash",
  intro: "A metadata store becomes a coordination service when clients can **wait for changes** " +
    "(watches) and **hold things that vanish when they die** (leases). This chapter grants a " +
    "lease, puts an ephemeral key with it, and follows the key with a **watch** as the lease is " +
    "kept alive and then expires — expiry decided by the leader and carried through the log. " +
    "Then two clients queue for a **lock**; the holder crashes and the lock passes to the next " +
    "waiter with a higher **fencing token**.",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: coordinationContext,
  steps: coordinationSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
