// The simulated-cluster scenarios, each a test of its own, run on a reliable network and again
// under 10% message loss with reordering. The cluster checks the safety properties after every
// event (a violation throws), so every test below also asserts election safety, log matching,
// leader completeness and state machine safety throughout.
import assert from "node:assert/strict";
import {
  Cluster,
  type ClusterOptions,
  type NetworkOptions,
  type Operation,
  SeededRng,
} from "../mod.ts";
import { storeStrings } from "../src/observe/describe.ts";

const NETWORKS: { name: string; network: Partial<NetworkOptions> }[] = [
  { name: "reliable network", network: {} },
  { name: "10% loss with reordering", network: { dropRate: 0.1, reorderRate: 0.1 } },
];

/** Seeds per scenario; raise it for a longer soak: RAFTMETA_TEST_SEEDS=200 deno task test. */
const SEEDS = Number(Deno.env.get("RAFTMETA_TEST_SEEDS") ?? 3);

function each(
  name: string,
  body: (mk: (o?: ClusterOptions) => Cluster, lossy: boolean) => void,
): void {
  for (const { name: netName, network } of NETWORKS) {
    Deno.test(`${name} (${netName})`, () => {
      for (let seed = 1; seed <= SEEDS; seed++) {
        body(
          (o = {}) => new Cluster({ seed, ...o, network: { ...network, ...o.network } }),
          netName !== "reliable network",
        );
      }
    });
  }
}

function settle(c: Cluster, timeoutMs = 10_000): void {
  c.runUntil(() => c.converged(), { timeoutMs, description: "the cluster to converge" });
}

/** Retries a put through whoever leads until it succeeds (a lossy network may fail a try). */
function putOk(c: Cluster, key: string, value: string): Operation {
  for (let attempt = 0; attempt < 20; attempt++) {
    c.waitForLeader();
    const op = c.complete(c.put(key, value), { timeoutMs: 2000 });
    if (op.status === "ok") return op;
  }
  throw new Error(`put ${key} never succeeded`);
}

each("no faults: one leader, unchanged through 10 s of quiet", (mk) => {
  const c = mk();
  const leader = c.waitForLeader();
  const term = c.node(leader).raft.term;
  let changes = 0;
  c.onEvent((e) => {
    if (e.kind === "role" && (e.role === "Leader" || e.role === "Candidate")) changes++;
  });
  c.advance(10_000);
  assert.equal(c.leader(), leader);
  assert.equal(c.node(leader).raft.term, term);
  assert.equal(changes, 0, "no elections during quiet");
  assert.deepEqual(c.leaders(), [leader]);
});

each(
  "the leader is cut off: a new leader is elected; a majority cut off leaves no leader",
  (mk) => {
    const c = mk();
    const old = c.waitForLeader();
    c.isolate(old);
    c.runUntil(() => c.leaders().some((id) => id !== old), { description: "a new leader" });
    const fresh = c.leaders().find((id) => id !== old)!;
    assert.ok(c.node(fresh).raft.term > c.node(old).raft.term);
    c.heal();
    settle(c);
    // Cut off two of three: the last one can never gather a majority.
    const [a, b] = c.ids.filter((id) => id !== c.leader());
    c.isolate(a);
    c.isolate(b);
    c.advance(2000); // CheckQuorum makes the lone leader step down
    assert.deepEqual(c.leaders(), [], "no node leads without a majority");
    c.advance(3000);
    assert.deepEqual(c.leaders(), []);
    c.heal();
    c.waitForLeader();
  },
);

each(
  "7 nodes, 10 rounds of 3 random nodes cut off: a leader whenever a majority is connected",
  (mk) => {
    const c = mk({ nodes: 7 });
    const rng = new SeededRng(c.seed + 100);
    c.waitForLeader();
    for (let round = 0; round < 10; round++) {
      const ids = [...c.ids];
      const cut: string[] = [];
      while (cut.length < 3) {
        const id = ids.splice(rng.int(0, ids.length), 1)[0];
        cut.push(id);
      }
      for (const id of cut) c.isolate(id);
      c.runUntil(
        () => {
          const l = c.leader();
          return l !== undefined && !cut.includes(l);
        },
        { description: `a leader among the connected four (round ${round + 1})` },
      );
      c.heal();
      c.advance(500);
    }
  },
);

each("3 commands proposed in a row commit at consecutive indexes on every node", (mk, lossy) => {
  const c = mk();
  const leader = c.waitForLeader();
  if (lossy) settle(c);
  const ops = ["a", "b", "c"].map((k) => c.put(`/k/${k}`, k, { via: leader }));
  for (const op of ops) c.complete(op, { timeoutMs: 5000 });
  assert.deepEqual(ops.map((o) => o.status), ["ok", "ok", "ok"]);
  const first = ops[0].index!;
  assert.deepEqual(ops.map((o) => o.index), [first, first + 1, first + 2]);
  settle(c);
  for (const n of c.nodes()) {
    for (let i = 0; i < 3; i++) {
      assert.equal(n.raft.log.entry(first + i).term, ops[i].term, `${n.id} index ${first + i}`);
    }
    assert.deepEqual(storeStrings(n.store), [["/k/a", "a"], ["/k/b", "b"], ["/k/c", "c"]]);
  }
});

each("with a majority down nothing commits; after it returns everything is settled", (mk) => {
  const c = mk({ nodes: 5 });
  const leader = c.waitForLeader();
  settle(c);
  const commitBefore = c.node(leader).raft.commitIndex;
  const down = c.ids.filter((id) => id !== leader).slice(0, 3);
  for (const id of down) c.crash(id);
  const ops = [1, 2, 3].map((i) => c.put(`/m/${i}`, `${i}`, { via: leader }));
  c.advance(1000);
  for (const n of c.nodes()) {
    if (n.state === "up") assert.equal(n.raft.commitIndex, commitBefore, `${n.id} committed`);
  }
  assert.ok(ops.every((o) => o.status === "pending" || o.status === "failed"));
  for (const id of down) c.restart(id);
  c.waitForLeader();
  settle(c);
  for (const op of ops) {
    c.complete(op, { timeoutMs: 3000 });
    assert.ok(op.status === "ok" || op.status === "failed" || op.status === "unknown", op.status);
  }
  // Whatever was acknowledged is on every node; whatever failed is on none.
  for (const op of ops) {
    for (const n of c.nodes()) {
      const v = n.store.getString(op.key!);
      if (op.status === "ok") assert.equal(v, op.value, `${n.id} lost acknowledged ${op.key}`);
      if (op.status === "failed") assert.equal(v, undefined, `${n.id} applied failed ${op.key}`);
    }
  }
});

each("a reconnected follower catches up; 5 concurrent proposals all commit", (mk) => {
  const c = mk();
  const leader = c.waitForLeader();
  const follower = c.ids.find((id) => id !== leader)!;
  c.isolate(follower);
  for (let i = 0; i < 5; i++) putOk(c, `/f/${i}`, `${i}`);
  assert.equal(c.node(follower).store.getString("/f/4"), undefined);
  c.heal();
  settle(c);
  assert.equal(c.node(follower).store.getString("/f/4"), "4");
  const l = c.leader()!;
  const ops = [0, 1, 2, 3, 4].map((i) => c.put(`/g/${i}`, `${i}`, { via: l }));
  for (const op of ops) c.complete(op, { timeoutMs: 5000 });
  if (c.leader() === l) {
    assert.deepEqual(ops.map((o) => o.status), ["ok", "ok", "ok", "ok", "ok"]);
  }
  settle(c);
});

each("a stale leader that took proposals while cut off rejoins; its entries are replaced", (mk) => {
  const c = mk();
  const old = c.waitForLeader();
  settle(c);
  c.isolate(old);
  const stale = [1, 2, 3].map((i) => c.put(`/stale/${i}`, "x", { via: old }));
  c.runUntil(() => c.leaders().some((id) => id !== old), { description: "a new leader" });
  putOk(c, "/fresh", "y");
  c.heal();
  settle(c);
  for (const op of stale) {
    c.complete(op, { timeoutMs: 100 });
    assert.notEqual(op.status, "ok", "a write the minority leader took must not be acknowledged");
  }
  for (const n of c.nodes()) {
    assert.equal(n.store.getString("/stale/1"), undefined);
    assert.equal(n.store.getString("/fresh"), "y");
  }
});

each("a follower 50 conflicting entries behind is repaired in a handful of round trips", (mk) => {
  const c = mk({ nodes: 5 });
  const old = c.waitForLeader();
  settle(c);
  // The old leader, cut off, appends 50 entries no one else gets.
  c.isolate(old);
  for (let i = 0; i < 50; i++) c.put(`/lost/${i}`, "x", { via: old });
  c.runUntil(() => c.leaders().some((id) => id !== old), { description: "a new leader" });
  for (let i = 0; i < 60; i++) putOk(c, `/kept/${i}`, "y");
  // A third leader starts with nextIndex at the end of its long log, far past the divergence.
  c.crash(c.leader()!);
  c.runUntil(() => c.leaders().some((id) => id !== old && c.node(id).state === "up"), {
    description: "a third leader",
  });
  const leader = c.leaders().find((id) => id !== old && c.node(id).state === "up")!;
  const term = c.node(leader).raft.term;
  let rejections = 0;
  c.onEvent((e) => {
    if (
      e.kind === "send" && e.message.type === "AppendEntriesReply" && e.message.from === old &&
      !e.message.success && e.message.term === term
    ) rejections++;
  });
  c.heal();
  c.runUntil(() => c.node(old).store.getString("/kept/59") === "y", {
    description: "the old leader to be repaired",
  });
  if (Deno.env.get("RAFTMETA_VERBOSE")) console.log(`repair rounds: ${rejections}`);
  assert.ok(rejections >= 1, "the repair must actually need back-off");
  assert.ok(rejections <= 6, `repair took ${rejections} rejected round trips, expected a handful`);
  assert.equal(c.node(old).store.getString("/lost/0"), undefined);
});

for (const { name: netName, network } of NETWORKS) {
  Deno.test(`message budget: an election and a quiet second cost what the rules allow (${netName})`, () => {
    const lossy = network.dropRate !== undefined;
    for (const seed of [1, 2, 3, 4, 5]) {
      const c = new Cluster({ seed, nodes: 5, network });
      c.waitForLeader();
      const electionMessages = c.stats.sent;
      // PreVote + RequestVote rounds, each request and reply: about 4 per peer per round. A lost
      // vote may cost another round, so a lossy network gets three rounds' worth.
      const rounds = lossy ? 3 : 1;
      assert.ok(
        electionMessages <= 5 * 4 * 2 * rounds,
        `seed ${seed}: election sent ${electionMessages} messages`,
      );
      settle(c);
      const before = c.stats.sentByType.get("AppendEntries") ?? 0;
      const total = c.stats.sent;
      c.advance(1000);
      const heartbeats = (c.stats.sentByType.get("AppendEntries") ?? 0) - before;
      assert.ok(heartbeats <= 4 * (1000 / 50 + 1), `seed ${seed}: ${heartbeats} heartbeats`);
      assert.ok(c.stats.sent - total <= 2 * 4 * (1000 / 50 + 1), "only heartbeats and replies");
    }
  });
}

Deno.test("the same seed gives the same run; another seed a different, equally correct one", () => {
  const run = (seed: number) => {
    const c = new Cluster({ seed, network: { dropRate: 0.05, reorderRate: 0.1 } });
    const log: string[] = [];
    c.onEvent((e) => log.push(JSON.stringify(e, (_k, v) => v instanceof Uint8Array ? [...v] : v)));
    c.waitForLeader();
    for (let i = 0; i < 10; i++) c.complete(c.put(`/d/${i}`, `${i}`), { timeoutMs: 1000 });
    c.crash(c.leader()!);
    c.waitForLeader();
    c.advance(500);
    return log.join("\n");
  };
  const a = run(11);
  assert.equal(a, run(11));
  assert.notEqual(a, run(12));
});

Deno.test("bad keys are refused before they reach the log", () => {
  const c = new Cluster({ seed: 1 });
  const leader = c.waitForLeader();
  const before = c.node(leader).raft.log.lastIndex;
  assert.throws(() => c.put("", "v"), /empty/i);
  // Not a key string: a lone surrogate that stands for no bytes (src/kv/bytes.ts).
  assert.throws(() => c.put("a\ud800", "v"), /well-formed Unicode, or bytes/);
  assert.throws(() => c.delete("x\udcc3\udca9"), /well-formed Unicode, or bytes/);
  assert.equal(c.node(leader).raft.log.lastIndex, before);
});
