/**
 * Chapter 6 — the metadata store on top of the log: the seed's PUT/DEL encoding, etcd's revisions,
 * a transaction (compare-and-swap), and linearizable reads (ReadIndex) against serializable ones.
 *
 * Run it: `deno run -A scenarios/06_metadata_store.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { SimClient } from "../src/sim/client.ts";
import { claim } from "../src/scenario/scenario.ts";
import { decodeCommand, encodeDelete, encodePut } from "../src/kv/command.ts";
import type { NodeId } from "../src/raft/types.ts";
import { type Chapter, type ChapterContext, note, runChapterCli, type Step } from "./_chapter.ts";

/** State carried from step to step. */
export interface StoreContext extends ChapterContext {
  /** The leader. */
  leader?: NodeId;
  /** A client with a session (exactly-once writes, transactions). */
  client: SimClient;
  /** The follower cut off in the read steps. */
  follower?: NodeId;
}

/** Builds the chapter's cluster and a client. */
export function storeContext(seed = 1, nodes = 3): StoreContext {
  const cluster = new Cluster({ nodes, seed });
  return { cluster, client: new SimClient(cluster, "tutorial-client") };
}

const KEY = "/services/db/primary";
const text = new TextDecoder();

function leaderStore(ctx: StoreContext) {
  return ctx.cluster.node(ctx.cluster.leader()!).store;
}

/** The chapter's steps. */
export const storeSteps: readonly Step<StoreContext>[] = [
  {
    name: "PUT in the seed's encoding",
    explain:
      "A write is a command in the log. The seed's two commands are self-describing UTF-8: " +
      "`PUT\\n<key>\\n<value>` and `DEL\\n<key>`. Once the entry commits, every node applies it " +
      "to its MetadataStore. The store's revision (etcd's model) starts at 1 and each write " +
      "raises it by one; the key records createRevision, modRevision and version.",
    run(ctx) {
      const c = ctx.cluster;
      ctx.leader = c.waitForLeader();
      const bytes = encodePut(KEY, "10.0.0.7:5432");
      claim(text.decode(bytes) === `PUT\n${KEY}\n10.0.0.7:5432`, "the seed's PUT encoding");
      const op = c.complete(c.put(KEY, "10.0.0.7:5432"));
      claim(op.status === "ok", `PUT commits (${op.status})`);
      const entry = c.node(ctx.leader).raft.log.entry(op.index!);
      claim(text.decode(entry.command) === text.decode(bytes), "the log holds those bytes");
      claim(decodeCommand(entry.command).type === "put", "and they decode as a put");
      const kv = leaderStore(ctx).get(KEY)!;
      note(
        ctx,
        `log entry ${op.index}: ${JSON.stringify(text.decode(entry.command))}; ` +
          `store revision ${
            leaderStore(ctx).revision
          }; ${KEY}: createRevision=${kv.createRevision} ` +
          `modRevision=${kv.modRevision} version=${kv.version}`,
      );
      claim(kv.version === 1 && kv.createRevision === kv.modRevision, "a new key: version 1");
      claim(leaderStore(ctx).revision === 2, "revision 1 → 2");
    },
  },
  {
    name: "a second PUT: revisions move",
    explain: "Writing the key again raises the store's revision and the key's modRevision and " +
      "version; createRevision stays. Clients use these numbers to detect changes.",
    run(ctx) {
      const c = ctx.cluster;
      const before = leaderStore(ctx).get(KEY)!;
      const op = c.complete(c.put(KEY, "10.0.0.8:5432"));
      claim(op.status === "ok", `PUT commits (${op.status})`);
      const kv = leaderStore(ctx).get(KEY)!;
      note(
        ctx,
        `${KEY}: createRevision=${kv.createRevision} modRevision=${kv.modRevision} ` +
          `version=${kv.version}; store revision ${leaderStore(ctx).revision}`,
      );
      claim(kv.version === 2, "version 2");
      claim(kv.createRevision === before.createRevision, "createRevision unchanged");
      claim(kv.modRevision === before.modRevision + 1, "modRevision raised by one");
    },
  },
  {
    name: "DEL, and a key created again",
    explain: "`DEL\\n<key>` removes the key (a new revision). Creating it again starts a new " +
      "life: version 1 and a new createRevision.",
    run(ctx) {
      const c = ctx.cluster;
      claim(text.decode(encodeDelete(KEY)) === `DEL\n${KEY}`, "the seed's DEL encoding");
      const rev = leaderStore(ctx).revision;
      const del = c.complete(c.delete(KEY));
      claim(del.status === "ok", `DEL commits (${del.status})`);
      claim(leaderStore(ctx).get(KEY) === undefined, "the key is gone");
      claim(leaderStore(ctx).revision === rev + 1, "a delete is a revision too");
      c.complete(c.put(KEY, "10.0.0.9:5432"));
      const kv = leaderStore(ctx).get(KEY)!;
      claim(kv.version === 1 && kv.createRevision === rev + 2, "created again: version 1");
    },
  },
  {
    name: "a transaction: compare-and-swap",
    explain: "A transaction compares, then writes, atomically in one log entry. The client's " +
      "compare-and-swap succeeds when the value is what it expects and changes nothing " +
      "otherwise. Writes carry the client's id and a sequence number, so a retried write " +
      "applies once (Raft dissertation §6.3).",
    run(ctx) {
      const ok = ctx.client.run({
        kind: "cas",
        key: KEY,
        expected: "10.0.0.9:5432",
        value: "10.0.0.10:5432",
      });
      claim(ok.status === "ok" && ok.succeeded, `the swap happens (${ok.status}, ${ok.error})`);
      const rev = leaderStore(ctx).revision;
      const stale = ctx.client.run({
        kind: "cas",
        key: KEY,
        expected: "10.0.0.9:5432",
        value: "wrong",
      });
      claim(stale.status === "ok" && !stale.succeeded, "a stale swap does not happen");
      claim(stale.value === "10.0.0.10:5432", `it reports the value it found: ${stale.value}`);
      claim(leaderStore(ctx).getString(KEY) === "10.0.0.10:5432", "the value is the swapped one");
      claim(leaderStore(ctx).revision === rev, "a transaction that writes nothing is no revision");
    },
  },
  {
    name: "a linearizable read (ReadIndex)",
    explain: "A read must not return stale data (ReadIndex, dissertation §6.4). A leader first " +
      "needs an entry of its own term committed — its no-op: until then its commitIndex may lag " +
      "behind entries an earlier leader committed. Then it notes its commitIndex as the read " +
      "index, confirms with a round of heartbeats, sent after the read arrived, that a majority " +
      "still follows it (so no newer leader can exist), waits until it has applied the read " +
      "index, and answers.",
    run(ctx) {
      const c = ctx.cluster;
      const op = c.complete(c.get(KEY));
      claim(op.status === "ok", `the read succeeds (${op.status}: ${op.error})`);
      claim(op.result === "10.0.0.10:5432", `it returns the latest value: ${op.result}`);
      const leader = c.node(c.leader()!).raft;
      claim(
        leader.log.term(leader.commitIndex) === leader.term,
        "the leader has committed an entry of its own term",
      );
    },
  },
  {
    name: "serializable reads can be stale",
    explain: "A serializable read is answered from one node's own store at once — fast, but " +
      "possibly stale. A follower cut off from the leader keeps answering serializable reads " +
      "with an old value, while a linearizable read through it fails instead of lying.",
    run(ctx) {
      const c = ctx.cluster;
      const f = c.ids.find((id) => id !== c.leader())!;
      ctx.follower = f;
      c.isolate(f);
      const w = c.complete(c.put(KEY, "10.0.0.11:5432"));
      claim(w.status === "ok", "the majority commits a new value");
      const stale = c.complete(c.get(KEY, { via: f, serializable: true }));
      claim(stale.status === "ok", "the serializable read answers");
      claim(stale.result === "10.0.0.10:5432", `with the old value: ${stale.result}`);
      const lin = c.complete(c.get(KEY, { via: f }), { timeoutMs: 1000 });
      claim(lin.status === "failed", `the linearizable read through ${f} fails (${lin.status})`);
      note(ctx, `serializable read via ${f}: ${stale.result} (stale); linearizable: ${lin.error}`);
    },
  },
  {
    name: "reconnected, the follower catches up",
    explain: "Once reconnected the follower receives the missing entry; its serializable reads " +
      "show the new value again.",
    run(ctx) {
      const c = ctx.cluster;
      c.heal();
      c.runUntil(
        () => c.node(ctx.follower!).store.getString(KEY) === "10.0.0.11:5432",
        { description: "the follower to catch up", timeoutMs: 2000 },
      );
      const r = c.complete(c.get(KEY, { via: ctx.follower, serializable: true }));
      claim(r.result === "10.0.0.11:5432", "fresh again");
    },
  },
];

/** Chapter 6 as a script and a notebook. */
export const chapter: Chapter<StoreContext> = {
  number: 6,
  name: "06_metadata_store",
  title: "The metadata store",
  summary:
    "PUT/DEL in the seed's encoding, revisions, transactions, linearizable vs serializable reads",
  intro: "Raft replicates a log; the **MetadataStore** gives it meaning. Every committed entry " +
    "is applied, in order, on every node, so every store holds the same keys. This chapter " +
    "shows the commands in the log (the seed's `PUT`/`DEL` encoding), etcd's **revision** " +
    "model, a **transaction**, and the two kinds of read: **linearizable** (ReadIndex through " +
    "the leader) and **serializable** (local, possibly stale).",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: storeContext,
  steps: storeSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
