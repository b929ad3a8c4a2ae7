/**
 * One real node process: etcd's documented curl examples (same bodies, sent with fetch), the REST
 * face, metrics, bad input, exactly-once sessions, the TypeScript client and the CLI.
 */

import assert from "node:assert/strict";
import { b64, post, ProcessCluster } from "./net_helpers.ts";
import { connect } from "../src/net/client.ts";
import { runCtl } from "../src/net/ctl.ts";

Deno.test("net: one node process", async (t) => {
  const cluster = ProcessCluster.start(1, ["--max-request-bytes", "65536"]);
  try {
    const node = await cluster.waitForLeader();
    const u = node.url;

    await t.step("etcd's curl examples work unchanged", async () => {
      // curl -L http://localhost:2379/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'
      const put = await post(`${u}/v3/kv/put`, '{"key": "Zm9v", "value": "YmFy"}');
      assert.equal(put.status, 200);
      assert.deepEqual(Object.keys(put.json.header).sort(), [
        "cluster_id",
        "member_id",
        "raft_term",
        "revision",
      ]);
      assert.equal(put.json.header.revision, "2");
      assert.match(put.json.header.cluster_id, /^\d+$/);

      // curl -L http://localhost:2379/v3/kv/range -X POST -d '{"key": "Zm9v"}'
      const range = await post(`${u}/v3/kv/range`, '{"key": "Zm9v"}');
      assert.equal(range.status, 200);
      assert.deepEqual(range.json.kvs, [{
        key: "Zm9v",
        create_revision: "2",
        mod_revision: "2",
        version: "1",
        value: "YmFy",
      }]);
      assert.equal(range.json.count, "1");

      // get all keys prefixed with "foo"
      await post(`${u}/v3/kv/put`, JSON.stringify({ key: b64("foo2"), value: b64("x") }));
      await post(`${u}/v3/kv/put`, JSON.stringify({ key: b64("fop"), value: b64("y") }));
      const prefix = await post(`${u}/v3/kv/range`, '{"key": "Zm9v", "range_end": "Zm9w"}');
      assert.deepEqual(prefix.json.kvs.map((kv: { key: string }) => atob(kv.key)), [
        "foo",
        "foo2",
      ]);
      const camel = await post(`${u}/v3/kv/range`, '{"key": "Zm9v", "rangeEnd": "Zm9w"}');
      assert.equal(camel.json.count, "2");
      const all = await post(`${u}/v3/kv/range`, '{"key": "AA==", "range_end": "AA=="}');
      assert.equal(all.json.count, "3");

      // Transactions, as in etcd's gateway guide.
      const txn = await post(
        `${u}/v3/kv/txn`,
        '{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}]}',
      );
      assert.equal(txn.status, 200);
      assert.equal(txn.json.succeeded, true);
      assert.deepEqual(txn.json.responses, [{ response_put: { header: { revision: "5" } } }]);
      await post(`${u}/v3/kv/put`, '{"key": "Zm9v", "value": "YmF6"}');
      await post(`${u}/v3/kv/put`, '{"key": "Zm9v", "value": "YmF6"}');
      const txn2 = await post(
        `${u}/v3/kv/txn`,
        '{"compare":[{"version":"4","result":"EQUAL","target":"VERSION","key":"Zm9v"}],"success":[{"requestRange":{"key":"Zm9v"}}]}',
      );
      assert.equal(txn2.json.succeeded, true);
      const rr = txn2.json.responses[0].response_range;
      assert.deepEqual(rr.kvs[0], {
        key: "Zm9v",
        create_revision: "2",
        mod_revision: "7",
        version: "4",
        value: "YmF6",
      });
      const failed = await post(
        `${u}/v3/kv/txn`,
        '{"compare":[{"target":"VALUE","key":"Zm9v","value":"bm9wZQ=="}],"success":[{"requestPut":{"key":"Zm9v","value":"eA=="}}],"failure":[{"request_range":{"key":"Zm9v"}}]}',
      );
      assert.equal(failed.json.succeeded, undefined); // false is left out, as etcd does
      assert.ok(failed.json.responses[0].response_range);

      const del = await post(`${u}/v3/kv/deleterange`, '{"key": "Zm9v", "prev_kv": true}');
      assert.equal(del.json.deleted, "1");
      assert.equal(del.json.prev_kvs[0].value, "YmF6");
      const status = await post(`${u}/v3/maintenance/status`, "{}");
      assert.equal(status.status, 200);
      assert.equal(status.json.leader, status.json.header.member_id);
      assert.equal(status.json.raftTerm, status.json.header.raft_term);
    });

    await t.step("REST face: /v1/kv, /v1/status, /metrics", async () => {
      let res = await fetch(`${u}/v1/kv//services/db`, { method: "PUT", body: "10.0.0.7" });
      assert.equal(res.status, 200);
      await res.body?.cancel();
      res = await fetch(`${u}/v1/kv//services/cache`, { method: "PUT", body: "10.0.0.8" });
      await res.body?.cancel();
      const one = await (await fetch(`${u}/v1/kv/%2Fservices%2Fdb`)).json();
      assert.equal(one.key, "/services/db");
      assert.equal(one.value, "10.0.0.7");
      const list = await (await fetch(`${u}/v1/kv//services/?prefix`)).json();
      assert.deepEqual(list.kvs.map((k: { key: string }) => k.key), [
        "/services/cache",
        "/services/db",
      ]);
      const stale = await (await fetch(`${u}/v1/kv//services/db?serializable`)).json();
      assert.equal(stale.value, "10.0.0.7");
      res = await fetch(`${u}/v1/kv//nothing`);
      assert.equal(res.status, 404);
      assert.match((await res.json()).error, /Key not found/);
      const deleted = await (await fetch(`${u}/v1/kv//services/?prefix`, { method: "DELETE" }))
        .json();
      assert.equal(deleted.deleted, 2);
      const status = await (await fetch(`${u}/v1/status`)).json();
      assert.equal(status.rows[0].role, "Leader");
      assert.ok(status.rows[0].commitIndex >= 1);
      const metrics = await (await fetch(`${u}/metrics`)).text();
      for (
        const name of [
          "raftmeta_term 1",
          "raftmeta_role 3",
          "raftmeta_commit_index",
          "raftmeta_last_applied",
          "raftmeta_proposals_total",
          "raftmeta_leader_changes_total",
          'raftmeta_http_request_duration_seconds_bucket{route="/v3/kv/put",le="+Inf"}',
          "raftmeta_wal_fsync_duration_seconds_count",
        ]
      ) assert.ok(metrics.includes(name), `metrics lack ${name}`);
    });

    await t.step("bad input gets a 4xx naming what is wrong", async () => {
      const cases: [string, string, number, RegExp][] = [
        ["/v3/kv/put", "{not json", 400, /not valid JSON/],
        ["/v3/kv/put", '{"key": "!!!!"}', 400, /not valid base64/],
        ["/v3/kv/put", '{"key": 42}', 400, /must be a base64 string/],
        ["/v3/kv/put", '{"value": "YmFy"}', 400, /key.*not provided/],
        [
          "/v3/kv/put",
          '{"key": "Zm9v", "lease": "7"}',
          404,
          /^etcdserver: requested lease not found$/,
        ],
        ["/v3/kv/put", '{"key": "Zm9v", "prev_kv": "yes"}', 400, /true or false/],
        ["/v3/kv/put", "[1,2]", 400, /must be a JSON object/],
        ["/v3/kv/range", '{"key": "Zm9v", "limit": "ten"}', 400, /must be an integer/],
        ["/v3/kv/range", '{"key": "Zm9v", "sort_order": "UP"}', 400, /sort_order/],
        ["/v3/kv/range", '{"key": "Zm9v", "revision": "99"}', 400, /future revision/],
        ["/v3/kv/txn", '{"compare": {"a": 1}}', 400, /must be an array/],
        ["/v3/kv/txn", '{"success": [{}]}', 400, /exactly one of/],
        ["/v3/kv/txn", '{"compare":[{"target":"SIZE","key":"Zm9v"}]}', 400, /target/],
        ["/v3/watch", "{}", 400, /create_request.*not provided/],
        ["/v3/nowhere", "{}", 404, /Unknown path/],
        // The limit (65536 here) applies to the decoded request; the body may have up to
        // 4/3 × (65536 + 512 KiB) = 786432 bytes before it is refused unread.
        ["/v3/kv/put", "x".repeat(800_000), 413, /too large/],
        [
          "/v3/kv/put",
          JSON.stringify({ key: "YQ==", value: btoa("x".repeat(70_000)) }),
          400,
          /^etcdserver: request is too large$/,
        ],
      ];
      for (const [path, body, status, pattern] of cases) {
        const r = await post(`${u}${path}`, body);
        assert.equal(r.status, status, `${path} ${body.slice(0, 40)}: ${JSON.stringify(r.json)}`);
        assert.match(r.json.error, pattern, `${path} ${body.slice(0, 40)}`);
        assert.equal(typeof r.json.code, "number");
      }
      // A key that is not UTF-8 (byte 0xFF) is a key, as in etcd: stored and read back as bytes.
      const byteKey = await post(`${u}/v3/kv/put`, JSON.stringify({ key: "/w==", value: "AQ==" }));
      assert.equal(byteKey.status, 200, JSON.stringify(byteKey.json));
      const readBack = await post(`${u}/v3/kv/range`, JSON.stringify({ key: "/w==" }));
      assert.equal(readBack.json.kvs[0].key, "/w==");
      assert.equal(readBack.json.kvs[0].value, "AQ==");
      const get = await fetch(`${u}/v3/kv/put`);
      assert.equal(get.status, 405);
      await get.body?.cancel();
      const longKey = await post(
        `${u}/v3/kv/put`,
        JSON.stringify({ key: b64("k".repeat(5000)), value: "" }),
      );
      assert.equal(longKey.status, 400);
      assert.match(longKey.json.error, /Key is too large/);
      const badSeq = await post(`${u}/v3/kv/put`, '{"key":"Zm9v"}', {
        "raftmeta-client-id": "c",
        "raftmeta-seq": "zero",
      });
      assert.equal(badSeq.status, 400);
      await (await fetch(`${u}/v1/kv/%E0%A4%A`)).body?.cancel();
    });

    await t.step("a flood of bad requests neither crashes nor stalls the node", async () => {
      const bodies = [
        "{",
        '{"key":1,"success":2}',
        "\u0000\u0001",
        '{"key":"***","compare":1}',
        "null",
        "[]",
        '"x"',
      ];
      const paths = ["/v3/kv/put", "/v3/kv/range", "/v3/kv/txn", "/v3/kv/deleterange", "/zzz"];
      const all: Promise<unknown>[] = [];
      for (let i = 0; i < 600; i++) {
        all.push(
          post(`${u}${paths[i % paths.length]}`, bodies[i % bodies.length]).then((r) => {
            assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
          }),
        );
      }
      // Raw garbage on a TCP connection to the HTTP port as well.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(u).port) });
      await conn.write(new TextEncoder().encode("GARBAGE \u0000\r\n\r\n"));
      conn.close();
      await Promise.all(all);
      const ok = await post(`${u}/v3/kv/put`, '{"key": "YWxpdmU=", "value": "eWVz"}');
      assert.equal(ok.status, 200);
    });

    await t.step("a write retried with the same client id and seq applies once", async () => {
      const h = { "raftmeta-client-id": "test-client", "raftmeta-seq": "1" };
      const body = '{"key": "Y291bnRlcg==", "value": "MQ=="}';
      const first = await post(`${u}/v3/kv/put`, body, h);
      const again = await post(`${u}/v3/kv/put`, body, h);
      assert.equal(first.status, 200);
      assert.equal(again.json.header.revision, first.json.header.revision);
      const r = await post(`${u}/v3/kv/range`, '{"key": "Y291bnRlcg=="}');
      assert.equal(r.json.kvs[0].version, "1");
      const stale = await post(`${u}/v3/kv/put`, body, { ...h, "raftmeta-seq": "3" });
      assert.equal(stale.status, 200);
      const old = await post(`${u}/v3/kv/put`, body, { ...h, "raftmeta-seq": "2" });
      assert.equal(old.status, 409);
    });

    await t.step("the TypeScript client", async () => {
      const client = connect([u]);
      const { revision } = await client.put("/lock", "a");
      assert.ok(revision > 1);
      assert.equal((await client.get("/lock"))?.text, "a");
      assert.equal(await client.compareAndSwap("/lock", "b", "c"), false);
      assert.equal(await client.compareAndSwap("/lock", "a", "c"), true);
      assert.equal(await client.compareAndSwap("/new", null, "1"), true);
      assert.equal((await client.get("/lock", { serializable: true }))?.text, "c");
      const r = await client.range({ prefix: "/" });
      assert.deepEqual(r.kvs.map((kv) => kv.key), ["/lock", "/new"]);
      assert.equal((await client.delete({ prefix: "/" })).deleted, 2);
      assert.equal(await client.get("/lock"), undefined);
    });

    await t.step("the CLI against the live node", async () => {
      const out: string[] = [];
      const ctl = (...args: string[]) => runCtl(["--endpoints", u, ...args], (l) => out.push(l));
      assert.equal(await ctl("put", "/cfg/a", "1"), 0);
      assert.equal(await ctl("put", "/cfg/b", "2"), 0);
      assert.deepEqual(out.splice(0), ["OK", "OK"]);
      assert.equal(await ctl("get", "/cfg/", "--prefix"), 0);
      assert.deepEqual(out.splice(0), ["/cfg/a", "1", "/cfg/b", "2"]);
      assert.equal(await ctl("get", "/cfg/a", "-w", "json"), 0);
      assert.equal(JSON.parse(out.splice(0)[0]).kvs[0].value, "1");
      assert.equal(await ctl("txn", "--compare-value", "/cfg/a=1", "--put", "/cfg/a=9"), 0);
      assert.equal(await ctl("txn", "--compare-value", "/cfg/a=1", "--put", "/cfg/a=7"), 1);
      assert.deepEqual(out.splice(0), ["SUCCESS", "FAILURE"]);
      assert.equal(await ctl("get", "/cfg/a"), 0);
      assert.deepEqual(out.splice(0), ["/cfg/a", "9"]);
      assert.equal(await ctl("del", "/cfg/", "--prefix"), 0);
      assert.deepEqual(out.splice(0), ["2"]);
      assert.equal(await ctl("status", "-w", "table"), 0);
      const table = out.splice(0).join("\n");
      assert.match(table, /node\s+role\s+term\s+votedFor\s+leader\s+lastLogIndex/);
      assert.match(table, /n1\s+Leader/);
      // And as a separate process, as a user runs it.
      const p = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL("../src/net/ctl.ts", import.meta.url).pathname, "status"],
        env: { RAFTMETA_ENDPOINTS: u },
        stdout: "piped",
      }).output();
      assert.equal(p.code, 0);
      assert.match(new TextDecoder().decode(p.stdout), /n1\s+Leader/);
    });

    await t.step("it logs role and term changes as JSON lines", () => {
      const events = node.lines.map((l) => JSON.parse(l));
      assert.ok(events.some((e) => e.event === "became-leader" && e.term === 1));
      assert.ok(events.every((e) => typeof e.ts === "string" && e.node === "n1"));
    });
  } finally {
    await cluster.stop();
  }
});
