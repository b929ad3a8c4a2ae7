// Memory bounds over real node processes (issue 14, item 5): the store quota with etcd's NOSPACE
// alarm, replicated through the log and kept across a restart; snapshots taken by bytes; load
// shedding with Retry-After; a slow request body cut off.

import assert from "node:assert/strict";
import { post, ProcessCluster, until } from "./net_helpers.ts";

const MiB = 1024 * 1024;
const NOSPACE = "etcdserver: mvcc: database space exceeded";

/** base64 of `n` bytes, all `fill`. */
function bigValue(n: number, fill: number): string {
  const bytes = new Uint8Array(n).fill(fill);
  let s = "";
  for (let i = 0; i < n; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function alarms(url: string): Promise<unknown> {
  const r = await post(`${url}/v3/maintenance/alarm`, JSON.stringify({ action: "GET" }));
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.alarms ?? [];
}

Deno.test("quota: overwrites raise NOSPACE; reads, deletes and compaction still work; disarm", async (t) => {
  const cluster = ProcessCluster.start(3, [
    "--quota-backend-bytes",
    String(16 * MiB),
    "--snapshot-bytes",
    String(4 * MiB),
  ]);
  try {
    const leader = await cluster.waitForLeader();
    const url = leader.url;
    const put = (fill: number) =>
      post(
        `${url}/v3/kv/put`,
        JSON.stringify({ key: btoa("/big"), value: bigValue(MiB, fill) }),
      );

    await t.step("overwrites of one key with 1 MiB values end in NOSPACE", async () => {
      let refused: Awaited<ReturnType<typeof put>> | undefined;
      let accepted = 0;
      for (let i = 0; i < 40 && refused === undefined; i++) {
        const r = await put(i & 0xff);
        if (r.status === 200) accepted++;
        else refused = r;
      }
      assert.ok(
        refused !== undefined,
        `40 MiB of overwrites were all accepted under a 16 MiB quota`,
      );
      assert.equal(refused.status, 429);
      assert.equal(refused.json.error, NOSPACE);
      assert.equal(refused.json.code, 8);
      assert.ok(accepted >= 4, `only ${accepted} writes fitted in 16 MiB`);
    });

    await t.step("the alarm is raised on every node; writes stay refused", async () => {
      // The alarm goes through the log: a follower shows it once it has applied that entry.
      // Even the leader shows it only once the alarm's entry is applied.
      let memberID = "";
      await until("the NOSPACE alarm on the node that refused the write", async () => {
        const raised = await alarms(url) as { memberID: string }[];
        memberID = raised[0]?.memberID ?? "";
        return memberID !== "";
      });
      for (const n of cluster.nodes) {
        await until(`the NOSPACE alarm on ${n.id}`, async () => {
          assert.deepEqual((await alarms(n.url)) as unknown[], [{ memberID, alarm: "NOSPACE" }]);
          return true;
        });
      }
      const small = await post(
        `${cluster.nodes[1].url}/v3/kv/put`,
        JSON.stringify({
          key: btoa("/small"),
          value: btoa("x"),
        }),
      );
      assert.equal(small.status, 429);
      assert.equal(small.json.error, NOSPACE);
    });

    await t.step("the in-memory log was snapshotted by bytes, not by entry count", async () => {
      for (const n of cluster.nodes) {
        const s = await n.local();
        assert.ok(s !== undefined);
        assert.ok((s.snapshotIndex as number) > 0, `${n.id}: no snapshot: ${JSON.stringify(s)}`);
        assert.ok((s.logBytes as number) < 6 * MiB, `${n.id}: ${s.logBytes} bytes since snapshot`);
      }
    });

    await t.step("reads are served and the alarm survives a restart of every node", async () => {
      const read = await post(`${url}/v3/kv/range`, JSON.stringify({ key: btoa("/big") }));
      assert.equal(read.status, 200);
      assert.equal(read.json.kvs.length, 1);
      for (const n of cluster.nodes) await n.kill();
      for (const n of cluster.nodes) n.restart();
      const again = await cluster.waitForLeader();
      // A restarted node shows the alarm once it has applied the restored state and log.
      await until(
        "the alarm on the new leader after the restart",
        async () => ((await alarms(again.url)) as unknown[]).length === 1,
      );
      const refused = await post(
        `${again.url}/v3/kv/put`,
        JSON.stringify({
          key: btoa("/small"),
          value: btoa("x"),
        }),
      );
      assert.equal(refused.status, 429);
      assert.equal(refused.json.error, NOSPACE);
    });

    await t.step("delete and compaction free space; disarm; writes accepted again", async () => {
      const leaderNow = await cluster.waitForLeader();
      const u = leaderNow.url;
      const del = await post(`${u}/v3/kv/deleterange`, JSON.stringify({ key: btoa("/big") }));
      assert.equal(del.status, 200, JSON.stringify(del.json));
      assert.equal(del.json.deleted, "1");
      const compact = await post(
        `${u}/v3/kv/compaction`,
        JSON.stringify({ revision: del.json.header.revision }),
      );
      assert.equal(compact.status, 200, JSON.stringify(compact.json));
      const disarm = await post(
        `${u}/v3/maintenance/alarm`,
        JSON.stringify({ action: "DEACTIVATE", memberID: "0", alarm: "NOSPACE" }),
      );
      assert.equal(disarm.status, 200, JSON.stringify(disarm.json));
      assert.deepEqual(await alarms(u), []);
      const ok = await post(
        `${u}/v3/kv/put`,
        JSON.stringify({
          key: btoa("/small"),
          value: btoa("x"),
        }),
      );
      assert.equal(ok.status, 200, JSON.stringify(ok.json));
    });
  } finally {
    await cluster.stop();
  }
});

Deno.test("load shedding: writes over the pending bound get 429 with Retry-After", async () => {
  const cluster = ProcessCluster.start(1, ["--proposals-pending-max", "1"]);
  try {
    const leader = await cluster.waitForLeader();
    const results = await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        fetch(`${leader.url}/v3/kv/put`, {
          method: "POST",
          body: JSON.stringify({ key: btoa(`/k${i}`), value: btoa("v") }),
        }).then(async (r) => ({
          status: r.status,
          retryAfter: r.headers.get("retry-after"),
          json: await r.json(),
        }))),
    );
    const shed = results.filter((r) => r.status === 429);
    assert.ok(shed.length > 0, `no write of 64 concurrent ones was shed`);
    assert.ok(results.some((r) => r.status === 200));
    for (const r of shed) {
      assert.equal(r.retryAfter, "1");
      assert.equal(r.json.error, "etcdserver: too many requests");
      assert.equal(r.json.code, 8);
    }
  } finally {
    await cluster.stop();
  }
});

Deno.test("a client that sends its body slowly gets 408 within the body-read timeout", async () => {
  const cluster = ProcessCluster.start(1, ["--body-read-timeout-ms", "300"]);
  try {
    const leader = await cluster.waitForLeader();
    const port = Number(new URL(leader.url).port);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await conn.write(new TextEncoder().encode(
        'POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"ke',
      ));
      // Read until the answer is in; a server without the deadline never answers (then the
      // 10 s guard below ends the read and the assertion fails).
      let text = "";
      const buf = new Uint8Array(4096);
      const guard = setTimeout(() => conn.close(), 10_000);
      try {
        while (true) {
          const n = await conn.read(buf);
          if (n === null) break;
          text += new TextDecoder().decode(buf.subarray(0, n));
          if (text.includes("did not arrive")) break;
        }
      } catch {
        /* closed by the guard */
      } finally {
        clearTimeout(guard);
      }
      assert.match(text, /^HTTP\/1\.1 408/, `got: ${JSON.stringify(text.slice(0, 200))}`);
    } finally {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  } finally {
    await cluster.stop();
  }
});
