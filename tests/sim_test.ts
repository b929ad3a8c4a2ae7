// The simulator's own mechanics: crash keeps only what was persisted, pause holds messages,
// one-way cuts, duplicates, client outcomes.
import assert from "node:assert/strict";
import { Cluster } from "../mod.ts";

Deno.test("a crash keeps exactly what storage persisted; restart rebuilds the store by replay", () => {
  const c = new Cluster({ seed: 8 });
  const leader = c.waitForLeader();
  for (let i = 0; i < 5; i++) c.complete(c.put(`/k${i}`, `${i}`));
  c.advance(100);
  const n = c.node(leader);
  const persisted = n.storage.load();
  assert.equal(persisted.entries.length, n.raft.log.lastIndex);
  assert.equal(persisted.hardState.term, n.raft.term);
  c.crash(leader);
  c.restart(leader);
  assert.equal(c.node(leader).raft.term, persisted.hardState.term);
  assert.equal(c.node(leader).raft.log.lastIndex, persisted.entries.length);
  assert.equal(c.node(leader).raft.role, "Follower");
  c.runUntil(() => c.node(leader).store.getString("/k4") === "4", { description: "replay" });
});

Deno.test("a paused node handles nothing until resumed, then gets the messages it missed", () => {
  const c = new Cluster({ seed: 8 });
  const leader = c.waitForLeader();
  const f = c.ids.find((id) => id !== leader)!;
  c.pause(f);
  c.complete(c.put("/p", "1"));
  c.advance(1000);
  assert.equal(c.node(f).store.getString("/p"), undefined);
  assert.ok(c.node(f).held.length > 0, "messages wait for the paused node");
  c.resume(f);
  c.runUntil(() => c.node(f).store.getString("/p") === "1", { description: "catch-up" });
});

Deno.test("a one-way cut drops messages in one direction only", () => {
  const c = new Cluster({ seed: 8 });
  const leader = c.waitForLeader();
  const [f, other] = c.ids.filter((id) => id !== leader);
  c.cut(leader, f);
  assert.equal(c.connected(leader, f), false);
  assert.equal(c.connected(f, leader), true);
  const cutAtMs = c.nowMs;
  c.complete(c.put("/one-way", "1"));
  c.advance(600); // long enough for f to time out and campaign towards the leader
  const after = c.events.filter((e) => e.atMs > cutAtMs && e.kind === "deliver");
  const delivered = (from: string, to: string) =>
    after.filter((e) => e.kind === "deliver" && e.message.from === from && e.message.to === to);
  assert.equal(delivered(leader, f).length, 0, "a message crossed the cut");
  assert.ok(delivered(f, leader).length > 0, "nothing went the other way");
  assert.equal(c.node(other).store.getString("/one-way"), "1");
  assert.equal(c.node(f).store.getString("/one-way"), undefined);
  c.heal();
  assert.equal(c.connected(leader, f), true);
  c.runUntil(() => c.node(f).store.getString("/one-way") === "1", { description: "catch-up" });
});

Deno.test("duplicated messages are delivered twice and change nothing", () => {
  const c = new Cluster({ seed: 8, network: { duplicateRate: 0.5 } });
  c.waitForLeader();
  for (let i = 0; i < 20; i++) c.complete(c.put(`/d${i}`, `${i}`));
  assert.ok(c.stats.duplicated > 10);
  c.advance(200);
  for (const n of c.nodes()) assert.equal(n.store.getString("/d19"), "19");
});

Deno.test("client outcomes: not-leader fails with a hint, a crash makes a write unknown", () => {
  const c = new Cluster({ seed: 8 });
  const leader = c.waitForLeader();
  c.advance(100); // followers hear the new leader's first heartbeat
  const f = c.ids.find((id) => id !== leader)!;
  const viaFollower = c.put("/a", "1", { via: f });
  assert.equal(viaFollower.status, "failed");
  assert.match(viaFollower.error!, new RegExp(`the leader is "${leader}"`));
  const w = c.put("/b", "1");
  c.crash(leader);
  assert.equal(w.status, "unknown");
  assert.match(w.error!, /crashed before the outcome was known/);
  const r = c.get("/b", { via: leader });
  assert.equal(r.status, "failed");
});

Deno.test("linearizable get goes through ReadIndex; serializable get answers locally", () => {
  const c = new Cluster({ seed: 8 });
  const leader = c.waitForLeader();
  c.complete(c.put("/r", "1"));
  const f = c.ids.find((id) => id !== leader)!;
  const lin = c.complete(c.get("/r", { via: f }));
  assert.equal(lin.status, "ok");
  assert.equal(lin.result, "1");
  assert.ok(lin.endedMs! > lin.startedMs, "a linearizable read takes a round trip");
  const ser = c.get("/r", { via: f, serializable: true });
  assert.equal(ser.status, "ok");
  assert.equal(ser.endedMs, ser.startedMs);
});

Deno.test("a deposed leader cut off in a minority does not serve a linearizable read", () => {
  const c = new Cluster({ seed: 9 });
  const old = c.waitForLeader();
  c.complete(c.put("/v", "old"));
  c.advance(100);
  c.isolate(old);
  c.runUntil(() => c.leaders().some((id) => id !== old), { description: "a new leader" });
  const w = c.complete(c.put("/v", "new"));
  assert.equal(w.status, "ok");
  const r = c.complete(c.get("/v", { via: old }), { timeoutMs: 2000 });
  assert.notEqual(r.status, "ok", `the old leader answered ${r.result}`);
  const stale = c.get("/v", { via: old, serializable: true });
  assert.equal(stale.result, "old", "a serializable read may be stale, and says so by its mode");
});

Deno.test("cluster arguments are validated", () => {
  assert.throws(() => new Cluster({ nodes: 0 }), /Cluster size must be an integer from 1 to 99: 0/);
  const c = new Cluster();
  assert.throws(() => c.node("n9"), /No node "n9"/);
  assert.throws(() => c.restart("n1"), /is not crashed/);
  assert.throws(() => c.partition(["n1"], ["n1"]), /in two partition groups/);
  assert.throws(() => c.advance(-1), /Cannot advance by -1/);
});

Deno.test("a single-node cluster elects itself and commits alone", () => {
  const c = new Cluster({ nodes: 1 });
  assert.equal(c.waitForLeader(), "n1");
  assert.equal(c.complete(c.put("/solo", "1")).status, "ok");
});

Deno.test("a command that does not decode is refused before it reaches the log", () => {
  const c = new Cluster({ seed: 2 });
  const leader = c.waitForLeader();
  const before = c.node(leader).raft.log.lastIndex;
  assert.throws(() => c.propose(new TextEncoder().encode("FROB\nx")), /command/i);
  assert.throws(() => c.propose(new Uint8Array([0xff, 0x09])), /version|command/i);
  assert.equal(c.node(leader).raft.log.lastIndex, before);
});
