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
