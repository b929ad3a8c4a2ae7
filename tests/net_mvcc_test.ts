/**
 * Reads at old revisions over the JSON API of one node process: the keys as they were, deletions as
 * absence, and etcd's errors (code 11, etcd's messages) for compacted and future revisions, in
 * ranges and in compactions.
 */

import assert from "node:assert/strict";
import { b64, post, ProcessCluster } from "./net_helpers.ts";
import { COMPACTED_ERROR, FUTURE_REVISION_ERROR } from "../src/kv/store.ts";

Deno.test("net: ranges at old revisions and compaction errors", async (t) => {
  const cluster = ProcessCluster.start(1);
  try {
    const u = (await cluster.waitForLeader()).url;
    const range = async (body: Record<string, unknown>) =>
      await post(`${u}/v3/kv/range`, JSON.stringify(body));
    const keys = (r: { json: { kvs?: { key: string; value?: string }[] } }) =>
      (r.json.kvs ?? []).map((kv) => `${atob(kv.key)}=${kv.value ? atob(kv.value) : ""}`);

    await post(`${u}/v3/kv/put`, JSON.stringify({ key: b64("/h/a"), value: b64("1") })); // 2
    await post(`${u}/v3/kv/put`, JSON.stringify({ key: b64("/h/b"), value: b64("2") })); // 3
    await post(`${u}/v3/kv/put`, JSON.stringify({ key: b64("/h/a"), value: b64("3") })); // 4
    await post(`${u}/v3/kv/deleterange`, JSON.stringify({ key: b64("/h/b") })); // 5
    const prefix = { key: b64("/h/"), range_end: b64("/h0") };

    await t.step("a range at each revision returns the keys as they were then", async () => {
      const at = async (revision: number) => keys(await range({ ...prefix, revision }));
      assert.deepEqual(await at(1), []);
      assert.deepEqual(await at(2), ["/h/a=1"]);
      assert.deepEqual(await at(3), ["/h/a=1", "/h/b=2"]);
      assert.deepEqual(await at(4), ["/h/a=3", "/h/b=2"]);
      assert.deepEqual(await at(5), ["/h/a=3"]);
      const old = await range({ key: b64("/h/a"), revision: 3 });
      assert.deepEqual(old.json.kvs[0], {
        key: b64("/h/a"),
        create_revision: "2",
        mod_revision: "2",
        version: "1",
        value: b64("1"),
      });
      assert.equal(old.json.header.revision, "5", "the header carries the current revision");
      const limited = await range({ ...prefix, revision: 4, limit: 1 });
      assert.deepEqual(keys(limited), ["/h/a=3"]);
      assert.equal(limited.json.count, "2");
      assert.equal(limited.json.more, true);
      const counted = await range({ ...prefix, revision: 3, count_only: true });
      assert.equal(counted.json.count, "2");
      assert.equal(counted.json.kvs, undefined);
    });

    await t.step("compacted and future revisions fail as etcd's do", async () => {
      const future = await range({ ...prefix, revision: 6 });
      assert.deepEqual([future.status, future.json.code, future.json.error], [
        400,
        11,
        FUTURE_REVISION_ERROR,
      ]);
      const compact = await post(`${u}/v3/kv/compaction`, JSON.stringify({ revision: 3 }));
      assert.equal(compact.status, 200, JSON.stringify(compact.json));
      const gone = await range({ ...prefix, revision: 2 });
      assert.deepEqual([gone.status, gone.json.code, gone.json.error], [400, 11, COMPACTED_ERROR]);
      assert.deepEqual(keys(await range({ ...prefix, revision: 3 })), ["/h/a=1", "/h/b=2"]);
      for (
        const [revision, error] of [[3, COMPACTED_ERROR], [2, COMPACTED_ERROR], [
          9,
          FUTURE_REVISION_ERROR,
        ]] as const
      ) {
        const r = await post(`${u}/v3/kv/compaction`, JSON.stringify({ revision }));
        assert.deepEqual(
          [r.status, r.json.code, r.json.error],
          [400, 11, error],
          `compact ${revision}`,
        );
      }
    });
  } finally {
    await cluster.stop();
  }
});

Deno.test("net: etcd's range options and txn rules through the JSON gateway", async (t) => {
  const cluster = ProcessCluster.start(1);
  try {
    const u = (await cluster.waitForLeader()).url;
    const put = (key: string, value: string) =>
      post(`${u}/v3/kv/put`, JSON.stringify({ key: b64(key), value: b64(value) }));
    for (const [k, v] of [["/o/a", "2"], ["/o/b", "1"], ["/o/c", "3"]]) {
      assert.equal((await put(k, v)).status, 200);
    }
    const all = { key: b64("/o/"), range_end: b64("/o0") };
    const keys = (kvs: { key: string }[] = []) => kvs.map((kv) => atob(kv.key)).join(",");

    await t.step("sort, filters and keys_only", async () => {
      const r = await post(
        `${u}/v3/kv/range`,
        JSON.stringify({ ...all, sort_order: "DESCEND", sort_target: "VALUE", limit: 2 }),
      );
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.deepEqual([keys(r.json.kvs), r.json.more, r.json.count], ["/o/c,/o/a", true, "3"]);
      const f = await post(
        `${u}/v3/kv/range`,
        JSON.stringify({ ...all, min_mod_revision: "3", keys_only: true }),
      );
      assert.deepEqual([keys(f.json.kvs), f.json.count], ["/o/b,/o/c", "3"]);
    });

    await t.step("nested txn, compare over a range, inner revisions", async () => {
      const r = await post(
        `${u}/v3/kv/txn`,
        JSON.stringify({
          compare: [{ ...all, target: "VERSION", result: "EQUAL", version: "1" }],
          success: [
            { request_range: { key: b64("/o/a") } },
            { request_txn: { success: [{ request_put: { key: b64("/o/d") } }] } },
          ],
        }),
      );
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.succeeded, true);
      assert.deepEqual(r.json.responses[0].response_range.header, { revision: "4" });
      assert.deepEqual(r.json.responses[1].response_txn, {
        header: {},
        succeeded: true,
        responses: [{ response_put: { header: { revision: "5" } } }],
      });
    });

    await t.step("duplicate keys are refused with etcd's error", async () => {
      const r = await post(
        `${u}/v3/kv/txn`,
        JSON.stringify({
          success: [
            { request_delete_range: all },
            { request_txn: { failure: [{ request_put: { key: b64("/o/x") } }] } },
          ],
        }),
      );
      assert.equal(r.status, 400);
      assert.deepEqual(r.json, {
        error: "etcdserver: duplicate key given in txn request",
        message: "etcdserver: duplicate key given in txn request",
        code: 3,
      });
    });
  } finally {
    await cluster.stop();
  }
});
