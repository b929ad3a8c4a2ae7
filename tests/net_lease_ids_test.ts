/**
 * Issue 14, item 1, against three real node processes: a grant with ID 2^53 - 1 followed by
 * automatic grants must leave every node responsive, a lease granted after it must expire, and
 * after a snapshot every node must restart with all acknowledged data.
 *
 * @module
 */

import assert from "node:assert/strict";
import { b64, post, ProcessCluster } from "./net_helpers.ts";

const MAX = "9007199254740991";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, predicate: () => Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A request that must answer 200; fails (bounded by post's timeout) when a node hangs. */
async function ok(url: string, body: unknown) {
  const r = await post(url, JSON.stringify(body));
  assert.equal(r.status, 200, `${url}: ${JSON.stringify(r.json)}`);
  return r.json;
}

Deno.test("net: lease id 2^53 - 1, then automatic grants, a snapshot and a restart", async (t) => {
  // Small snapshot interval, so the leases and keys below end up in a snapshot.
  const cluster = ProcessCluster.start(3, ["--snapshot-entries", "20"]);
  const [n1, n2, n3] = cluster.nodes;
  const acked = new Map<string, string>();
  const ids: string[] = [];
  try {
    await cluster.waitForLeader();

    await t.step(
      "the attack: grant ID 2^53 - 1, then automatic grants via every node",
      async () => {
        const g = await ok(`${n1.url}/v3/lease/grant`, { TTL: 600, ID: MAX });
        assert.equal(g.ID, MAX);
        ids.push(g.ID);
        for (const n of [n1, n2, n3, n1]) {
          const r = await ok(`${n.url}/v3/lease/grant`, { TTL: 600 });
          assert.ok(BigInt(r.ID) >= 1n && BigInt(r.ID) <= BigInt(MAX), `lease id ${r.ID}`);
          assert.ok(!ids.includes(r.ID), `lease id ${r.ID} handed out twice`);
          ids.push(r.ID);
        }
        assert.deepEqual(ids, [MAX, "1", "2", "3", "4"]);
        for (const [i, id] of ids.entries()) {
          await ok(`${cluster.nodes[i % 3].url}/v3/kv/put`, {
            key: b64(`/lease/${id}`),
            value: b64(id),
            lease: id,
          });
          acked.set(`/lease/${id}`, id);
        }
      },
    );

    await t.step("an id beyond 2^53 - 1 is refused up front with a 400", async () => {
      for (const id of ["9007199254740992", "9223372036854775807", "18446744073709551616"]) {
        const r = await post(`${n2.url}/v3/lease/grant`, JSON.stringify({ TTL: 600, ID: id }));
        assert.equal(r.status, 400, JSON.stringify(r.json));
        assert.equal(r.json.code, 3);
        assert.match(r.json.message, /Field "ID" of LeaseGrantRequest is out of range/);
      }
    });

    await t.step("every node stays responsive and takes writes", async () => {
      for (let i = 0; i < 30; i++) {
        const n = cluster.nodes[i % 3];
        await ok(`${n.url}/v3/kv/put`, { key: b64(`/after/${i}`), value: b64(String(i)) });
        acked.set(`/after/${i}`, String(i));
      }
      for (const n of cluster.nodes) {
        const status = await n.local();
        assert.ok(status !== undefined, `${n.id} answers its status`);
      }
    });

    await t.step("a lease granted after the wrap expires, and its key goes", async () => {
      const g = await ok(`${n3.url}/v3/lease/grant`, { TTL: 1 });
      assert.equal(g.ID, "5");
      await ok(`${n3.url}/v3/kv/put`, { key: b64("/short"), value: b64("x"), lease: g.ID });
      await waitFor("the short lease to expire", async () => {
        const r = await ok(`${n1.url}/v3/kv/range`, { key: b64("/short") });
        return r.kvs === undefined;
      });
      const leases = await ok(`${n2.url}/v3/lease/leases`, {});
      assert.ok(!leases.leases.some((l: { ID: string }) => l.ID === "5"));
    });

    await t.step("every node has taken a snapshot", async () => {
      await waitFor("snapshots on every node", () =>
        Promise.resolve(cluster.nodes.every((n) => {
          try {
            return [...Deno.readDirSync(n.dataDir)].some((e) => /^snap-.*\.snap$/.test(e.name));
          } catch {
            return false;
          }
        })));
    });

    await t.step("every node restarts cleanly with the acknowledged data", async () => {
      await Promise.all(cluster.nodes.map((n) => n.kill()));
      for (const n of cluster.nodes) n.restart();
      await cluster.waitForLeader({ timeoutMs: 30_000 });
      for (const n of cluster.nodes) {
        await waitFor(`${n.id} to serve every acknowledged key`, async () => {
          const r = await post(
            `${n.url}/v3/kv/range`,
            JSON.stringify({ key: b64("/"), range_end: b64("0") }),
          );
          if (r.status !== 200) return false;
          const got = new Map<string, string>(
            (r.json.kvs ?? []).map((kv: { key: string; value: string }) => [
              atob(kv.key),
              atob(kv.value),
            ]),
          );
          return [...acked].every(([k, v]) => got.get(k) === v);
        });
      }
      for (const n of cluster.nodes) {
        assert.equal(n.stderr.includes("Snapshot is invalid"), false, n.stderr);
      }
      const leases = await ok(`${n1.url}/v3/lease/leases`, {});
      assert.deepEqual(
        leases.leases.map((l: { ID: string }) => l.ID).sort(),
        [...ids].sort(),
      );
      // The automatic choice goes on after a restart, from where it was.
      const g = await ok(`${n2.url}/v3/lease/grant`, { TTL: 600 });
      assert.equal(g.ID, "6");
    });
  } finally {
    await cluster.stop();
  }
});
