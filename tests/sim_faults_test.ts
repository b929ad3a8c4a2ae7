// The wider fault space of the simulator (issue 15): slow disks that block a follower until its
// write is durable, slow applies, per-node clocks with skew and drift.
import assert from "node:assert/strict";
import { Cluster } from "../mod.ts";
import type { Message } from "../src/raft/types.ts";

Deno.test("a follower on a slow disk replies only once its write is durable; a crash meanwhile loses it", () => {
  const c = new Cluster({ seed: 8 });
  const leader = c.waitForLeader();
  c.complete(c.put("/a", "1"));
  c.advance(100);
  const f = c.ids.find((id) => id !== leader)!;
  const appendAt = new Map<number, number>(); // index → when f received it
  const acks: { atMs: number; matchIndex: number }[] = [];
  c.onEvent((e) => {
    if (e.kind === "deliver" && e.message.to === f && e.message.type === "AppendEntries") {
      for (const x of e.message.entries) if (!appendAt.has(x.index)) appendAt.set(x.index, e.atMs);
    }
    if (e.kind === "send" && e.message.from === f && e.message.type === "AppendEntriesReply") {
      const m = e.message as Extract<Message, { type: "AppendEntriesReply" }>;
      if (m.success) acks.push({ atMs: e.atMs, matchIndex: m.matchIndex });
    }
  });
  // Every save stalls 400 ms.
  c.diskLatency = { syncMsMax: 0, stallRate: 1, stallMsMin: 400, stallMsMax: 400 };
  const put = c.put("/b", "2");
  c.advance(200);
  const index = put.index!;
  assert.ok(appendAt.has(index), "the follower got the entry");
  assert.equal(c.node(f).storage.lastIndex, index - 1, "not durable during the stall");
  assert.ok(!acks.some((a) => a.matchIndex >= index), "no acknowledgement during the stall");
  c.advance(400);
  const ack = acks.find((a) => a.matchIndex >= index);
  assert.ok(ack !== undefined, "acknowledged after the stall");
  assert.ok(ack.atMs >= appendAt.get(index)! + 400, `acknowledged at ${ack.atMs}`);
  assert.ok(c.node(f).storage.lastIndex >= index, "durable before the acknowledgement");
  // A crash in the middle of a stall: the write was never durable, nothing acknowledged it.
  const put2 = c.put("/c", "3");
  c.advance(100);
  const before = acks.length;
  c.crash(f);
  assert.equal(c.node(f).storage.lastIndex, put2.index! - 1);
  assert.equal(acks.length, before);
  c.diskLatency = undefined;
  c.restart(f);
  c.runUntil(() => c.converged(), { description: "convergence" });
});

Deno.test("a slow apply blocks its node: the write's outcome comes after the apply's time", () => {
  const c = new Cluster({ seed: 8 });
  const leader = c.waitForLeader();
  c.complete(c.put("/a", "1"));
  c.applyLatency = { rate: 1, msMin: 300, msMax: 300 };
  const put = c.put("/b", "2", { via: leader });
  const start = c.nowMs;
  c.complete(put);
  assert.equal(put.status, "ok");
  assert.ok(c.blockStats.applies > 0);
  // The leader applies the no-op-free entry /b after /a's block (if any) has ended: at least one
  // slow apply of 300 ms lies between the call and the outcome.
  assert.ok(put.endedMs! - start >= 300, `outcome after ${put.endedMs! - start} ms`);
  c.applyLatency = undefined;
  c.runUntil(() => c.converged(), { description: "convergence" });
});

Deno.test("per-node clocks: a node's timers and clockMs run at its own rate and offset", () => {
  const c = new Cluster({
    seed: 3,
    clocks: [{ offsetMs: 5_000, rate: 1.01 }, { offsetMs: 0, rate: 0.99 }, {
      offsetMs: 77,
      rate: 1,
    }],
  });
  assert.equal(c.clockMs("n1"), 5_000);
  c.advance(1_000);
  assert.equal(c.clockMs("n1"), 6_010);
  assert.equal(c.clockMs("n2"), 990);
  assert.equal(c.clockMs("n3"), 1_077);
  c.waitForLeader();
  for (let i = 0; i < 5; i++) c.complete(c.put(`/k${i}`, `${i}`));
  c.runUntil(() => c.converged(), { description: "convergence" });
  assert.throws(
    () => new Cluster({ clocks: [{ offsetMs: -1, rate: 1 }] }),
    /offsetMs >= 0 and rate > 0/,
  );
});
