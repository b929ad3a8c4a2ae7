// A write a follower forwards to the leader is applied at most once, even when the connection
// between them breaks (found by `deno task nemesis --seed 400`: a cas told "compare failed, found
// <its own new value>"). Deno's fetch sends a request again on a new connection when its pooled
// connection closes under it, even when the first copy had arrived.

import assert from "node:assert/strict";
import { NemesisCluster } from "../src/check/nemesis/cluster.ts";
import { healthyLink } from "../src/check/nemesis/proxy.ts";

function b64(text: string): string {
  return btoa(text);
}

Deno.test({
  name: "a forwarded write without a session is applied at most once when the link resets",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "raftmeta-forward-once-" });
    let seed = 1;
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    const cluster = await NemesisCluster.start({ nodes: 3, dir, random, diskBytes: 0 });
    try {
      let leader = await cluster.leader();
      for (let i = 0; leader === undefined && i < 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        leader = await cluster.leader();
      }
      assert.ok(leader !== undefined, "a leader was elected");
      const follower = cluster.nodes.find((n) => n !== leader!.node)!;
      // Only the follower's forwarded requests cross a faulty link; Raft traffic is healthy.
      cluster.forwards.get(`${follower.id}>${leader.node.id}`)!.set({
        ...healthyLink(),
        resetRate: 0.5,
      });
      const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
      let created = 0;
      let unknown = 0;
      const twice: string[] = [];
      for (let i = 0; i < 200; i++) {
        const key = b64(`/once/${i}`);
        // Create-if-absent on a fresh key: a second application finds the key and fails.
        const res = await fetch(`${follower.url}/v3/kv/txn`, {
          method: "POST",
          client,
          body: JSON.stringify({
            compare: [{ key, target: "VERSION", result: "EQUAL", version: "0" }],
            success: [{ request_put: { key, value: b64(`v${i}`) } }],
            failure: [{ request_range: { key } }],
          }),
        });
        const json = await res.json();
        if (res.status !== 200) unknown++;
        else if (json.succeeded === true) created++;
        else twice.push(`/once/${i}`);
      }
      client.close();
      assert.deepEqual(twice, [], `told "compare failed" for keys only it wrote`);
      assert.ok(created > 0, `some writes went through (${created} created, ${unknown} unknown)`);
    } finally {
      await cluster.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "a leader that stops with a write proposed answers 504 (outcome unknown), not 503",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // Found by `deno task nemesis --seed 501`: the leader's disk filled, it stopped and answered
    // 503 ("retry") for a write its followers already had; the follower that had forwarded it sent
    // it again to the next leader, which applied it a second time.
    const dir = await Deno.makeTempDir({ prefix: "raftmeta-stop-pending-" });
    const cluster = await NemesisCluster.start({
      nodes: 3,
      dir,
      random: Math.random,
      diskBytes: 0,
      // A long CheckQuorum window: the leader stays leader while the test stops it.
      extraArgs: ["--election-timeout-min-ms", "2000", "--election-timeout-max-ms", "4000"],
    });
    try {
      let leader = await cluster.leader();
      for (let i = 0; leader === undefined && i < 300; i++) {
        await new Promise((r) => setTimeout(r, 50));
        leader = await cluster.leader();
      }
      assert.ok(leader !== undefined, "a leader was elected");
      const l = leader.node;
      for (const n of cluster.nodes) if (n !== l) await n.kill();
      // Proposed, but no follower can acknowledge it: it waits in the leader's queue.
      const answer = fetch(`${l.url}/v3/kv/put`, {
        method: "POST",
        body: JSON.stringify({ key: b64("/pending"), value: b64("x") }),
      }).then(async (res) => ({ status: res.status, text: await res.text() }));
      await new Promise((r) => setTimeout(r, 300));
      l.signal("SIGTERM");
      const { status, text } = await answer;
      assert.equal(status, 504, `a proposed write's outcome is unknown: ${status} ${text}`);
    } finally {
      await cluster.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
