// The retrying simulated client: leader discovery, retries, exactly-once writes, cas.
import assert from "node:assert/strict";
import { Cluster, decodeCommand } from "../mod.ts";
import { type ClientResult, SimClient } from "../src/sim/client.ts";

Deno.test("the client finds the leader from any node and reads its own writes", () => {
  const c = new Cluster({ seed: 3 });
  c.waitForLeader();
  c.advance(100);
  const client = new SimClient(c, "alice");
  const put = client.run({ kind: "put", key: "/a", value: "1" });
  assert.equal(put.status, "ok");
  const get = client.run({ kind: "get", key: "/a" });
  assert.deepEqual([get.status, get.value], ["ok", "1"]);
  const missing = client.run({ kind: "get", key: "/nope" });
  assert.deepEqual([missing.status, missing.value], ["ok", null]);
});

Deno.test("a write retried after the leader crashes applies exactly once", () => {
  for (let seed = 1; seed <= 10; seed++) {
    const c = new Cluster({ seed });
    const leader = c.waitForLeader();
    c.advance(100);
    const client = new SimClient(c, "bob", { attemptTimeoutMs: 400 });
    let result: ClientResult | undefined;
    client.start({ kind: "put", key: "/once", value: "v" }, (r) => result = r);
    // Crash the leader as soon as a follower stores the entry, before anyone answers the client.
    c.runUntil(
      () =>
        c.nodes().some((n) =>
          n.id !== leader && n.raft.log.lastIndex > c.node(leader).raft.commitIndex
        ),
      { description: "the entry to reach a follower" },
    );
    c.crash(leader);
    c.runUntil(() => result !== undefined, { description: "the client's answer" });
    assert.equal(result!.status, "ok", `seed ${seed}: ${result!.error}`);
    assert.ok(result!.attempts >= 2, "the first attempt's answer was lost with the leader");
    c.restart(leader);
    c.runUntil(() => c.nodes().every((n) => n.store.get("/once") !== undefined), {
      description: "the write everywhere",
    });
    c.advance(500);
    // The premise: the log really holds the write twice (the original and the retry).
    const l = c.node(c.leader()!);
    let copies = 0;
    for (let i = 1; i <= l.raft.log.lastIndex; i++) {
      const e = l.raft.log.entry(i);
      if (e.kind !== "command") continue;
      const cmd = decodeCommand(e.command);
      if (cmd.type === "session" && cmd.clientId === "bob" && cmd.seq === 1) copies++;
    }
    assert.ok(
      copies >= 2,
      `seed ${seed}: expected the retried write twice in the log, saw ${copies}`,
    );
    for (const n of c.nodes()) {
      const kv = n.store.get("/once")!;
      assert.equal(kv.version, 1, `seed ${seed}: ${n.id} applied the write ${kv.version} times`);
    }
  }
});

Deno.test("compare-and-swap: one of two racing swaps wins; the loser sees the winner's value", () => {
  const c = new Cluster({ seed: 5 });
  c.waitForLeader();
  const a = new SimClient(c, "a");
  const b = new SimClient(c, "b");
  assert.equal(a.run({ kind: "cas", key: "/lock", expected: null, value: "a" }).succeeded, true);
  let ra: ClientResult | undefined, rb: ClientResult | undefined;
  a.start({ kind: "cas", key: "/lock", expected: "a", value: "a2" }, (r) => ra = r);
  b.start({ kind: "cas", key: "/lock", expected: "a", value: "b2" }, (r) => rb = r);
  c.runUntil(() => ra !== undefined && rb !== undefined);
  const wins = [ra!, rb!].filter((r) => r.succeeded);
  assert.equal(wins.length, 1);
  const loser = [ra!, rb!].find((r) => !r.succeeded)!;
  assert.equal(loser.status, "ok");
  assert.ok(loser.value === "a2" || loser.value === "b2");
});

Deno.test("with no majority the client gives up: failed for reads, unknown for writes", () => {
  const c = new Cluster({ seed: 6 });
  const leader = c.waitForLeader();
  for (const id of c.ids) if (id !== leader) c.crash(id);
  const client = new SimClient(c, "carol", { timeoutMs: 1500 });
  const w = client.run({ kind: "put", key: "/x", value: "1" });
  assert.equal(w.status, "unknown");
  const r = client.run({ kind: "get", key: "/x" });
  assert.equal(r.status, "failed");
});
