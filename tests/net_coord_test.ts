/**
 * Coordination over HTTP against real node processes: etcd's lease endpoints, puts with a lease,
 * `POST /v3/watch` streaming newline-delimited JSON, expiry and revoke seen as DELETE events,
 * compaction, bad lease ids; the TypeScript client and `ctl watch` / `ctl lease`.
 */

import assert from "node:assert/strict";
import { b64, post, ProcessCluster } from "./net_helpers.ts";
import { connect } from "../src/net/client.ts";
import { runCtl } from "../src/net/ctl.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** A `POST /v3/watch` stream read line by line. */
class WatchLines {
  readonly #reader: ReadableStreamDefaultReader<string>;
  readonly #abort = new AbortController();
  #rest = "";
  #lines: Json[] = [];
  status = 0;

  private constructor(reader: ReadableStreamDefaultReader<string>, abort: AbortController) {
    this.#reader = reader;
    this.#abort = abort;
  }

  static async open(url: string, body: unknown): Promise<WatchLines> {
    const abort = new AbortController();
    const res = await fetch(`${url}/v3/watch`, {
      method: "POST",
      body: JSON.stringify(body),
      signal: abort.signal,
    });
    const w = new WatchLines(res.body!.pipeThrough(new TextDecoderStream()).getReader(), abort);
    w.status = res.status;
    return w;
  }

  /** The next JSON line (within `timeoutMs`), or undefined at the end of the stream. */
  async next(timeoutMs = 10_000): Promise<Json | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.#lines.length === 0) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error("no watch line in time");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        this.#reader.read(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("no watch line in time")), remaining);
        }),
      ]).finally(() => clearTimeout(timer));
      if (r.done) return undefined;
      const parts = (this.#rest + r.value).split("\n");
      this.#rest = parts.pop()!;
      for (const p of parts) if (p.trim() !== "") this.#lines.push(JSON.parse(p));
    }
    return this.#lines.shift();
  }

  /** The next line carrying events (progress notifications skipped). */
  async nextEvents(timeoutMs = 10_000): Promise<Json> {
    for (;;) {
      const line = await this.next(timeoutMs);
      if (line === undefined) throw new Error("watch ended");
      if (line.result.events !== undefined || line.result.canceled) return line;
    }
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#reader.cancel().catch(() => {});
  }
}

Deno.test("net: leases and watches on one node process", async (t) => {
  const cluster = ProcessCluster.start(1, ["--watch-progress-ms", "200"]);
  try {
    const node = await cluster.waitForLeader();
    const u = node.url;

    await t.step("grant, put with the lease, watch, revoke: DELETE event", async () => {
      const grant = await post(`${u}/v3/lease/grant`, '{"TTL": 30}');
      assert.equal(grant.status, 200, JSON.stringify(grant.json));
      assert.match(grant.json.ID, /^\d+$/);
      assert.equal(grant.json.TTL, "30");
      assert.ok(grant.json.header.revision);
      const id = grant.json.ID;

      const before = await post(`${u}/v3/kv/range`, JSON.stringify({ key: b64("x") }));
      const start = Number(before.json.header.revision) + 1;
      const watch = await WatchLines.open(u, {
        create_request: { key: b64("svc/a"), start_revision: String(start), prev_kv: true },
      });
      assert.equal(watch.status, 200);
      const created = await watch.next();
      assert.equal(created.result.created, true);
      assert.match(created.result.watch_id, /^\d+$/);

      const put = await post(
        `${u}/v3/kv/put`,
        JSON.stringify({ key: b64("svc/a"), value: b64("10.0.0.7"), lease: id }),
      );
      assert.equal(put.status, 200, JSON.stringify(put.json));
      const got = await post(`${u}/v3/kv/range`, JSON.stringify({ key: b64("svc/a") }));
      assert.equal(got.json.kvs[0].lease, id);

      const ev = await watch.nextEvents();
      assert.equal(ev.result.events.length, 1);
      assert.equal(ev.result.events[0].type, undefined, "PUT is etcd's zero value: omitted");
      assert.equal(atob(ev.result.events[0].kv.key), "svc/a");
      assert.equal(atob(ev.result.events[0].kv.value), "10.0.0.7");
      assert.equal(ev.result.events[0].kv.lease, id);

      const ttl = await post(`${u}/v3/lease/timetolive`, JSON.stringify({ ID: id, keys: true }));
      assert.equal(ttl.status, 200, JSON.stringify(ttl.json));
      assert.equal(ttl.json.ID, id);
      assert.equal(ttl.json.grantedTTL, "30");
      assert.ok(Number(ttl.json.TTL) > 25 && Number(ttl.json.TTL) <= 30, ttl.json.TTL);
      assert.deepEqual(ttl.json.keys.map(atob), ["svc/a"]);

      const keep = await post(`${u}/v3/lease/keepalive`, JSON.stringify({ ID: id }));
      assert.equal(keep.status, 200, JSON.stringify(keep.json));
      assert.equal(keep.json.result.ID, id);
      assert.equal(keep.json.result.TTL, "30");

      const list = await post(`${u}/v3/lease/leases`, "{}");
      assert.deepEqual(list.json.leases, [{ ID: id }]);
      // etcd 3.4's other path for the same call.
      const list2 = await post(`${u}/v3/kv/lease/leases`, "{}");
      assert.deepEqual(list2.json.leases, [{ ID: id }]);

      const revoke = await post(`${u}/v3/lease/revoke`, JSON.stringify({ ID: id }));
      assert.equal(revoke.status, 200, JSON.stringify(revoke.json));
      const del = await watch.nextEvents();
      assert.equal(del.result.events[0].type, "DELETE");
      assert.equal(atob(del.result.events[0].kv.key), "svc/a");
      assert.equal(atob(del.result.events[0].prev_kv.value), "10.0.0.7");
      const gone = await post(`${u}/v3/kv/range`, JSON.stringify({ key: b64("svc/a") }));
      assert.equal(gone.json.kvs, undefined);
      const after = await post(`${u}/v3/lease/timetolive`, JSON.stringify({ ID: id }));
      assert.equal(after.status, 200);
      assert.equal(after.json.TTL, "-1", "etcd's answer for a lease that is gone");
      await watch.close();
    });

    await t.step("a lease expires after its TTL: DELETE event in the stream", async () => {
      const grant = await post(`${u}/v3/lease/grant`, '{"TTL": "1"}');
      const id = grant.json.ID;
      await post(
        `${u}/v3/kv/put`,
        JSON.stringify({ key: b64("eph/1"), value: b64("v"), lease: id }),
      );
      const watch = await WatchLines.open(u, {
        create_request: { key: b64("eph/"), range_end: b64("eph0"), progress_notify: true },
      });
      assert.equal((await watch.next()).result.created, true);
      const started = Date.now();
      const line = await watch.nextEvents(5_000);
      assert.equal(line.result.events[0].type, "DELETE");
      assert.equal(atob(line.result.events[0].kv.key), "eph/1");
      assert.ok(Date.now() - started < 3_000);
      // As etcd: a keep-alive of an expired lease is answered with TTL 0 (left out).
      const keep = await post(`${u}/v3/lease/keepalive`, JSON.stringify({ ID: id }));
      assert.equal(keep.status, 200);
      assert.equal(keep.json.result.ID, id);
      assert.equal(keep.json.result.TTL, undefined);
      await watch.close();
    });

    await t.step("progress notifications on an idle watch", async () => {
      const watch = await WatchLines.open(u, {
        create_request: { key: b64("idle"), progress_notify: true },
      });
      assert.equal((await watch.next()).result.created, true);
      const p = await watch.next(3_000);
      assert.equal(p.result.events, undefined);
      assert.match(p.result.header.revision, /^\d+$/);
      await watch.close();
    });

    await t.step("a watch from a compacted revision names the oldest available", async () => {
      for (let i = 0; i < 3; i++) {
        await post(`${u}/v3/kv/put`, JSON.stringify({ key: b64("c"), value: b64(`${i}`) }));
      }
      const r = await post(`${u}/v3/kv/range`, JSON.stringify({ key: b64("c") }));
      const rev = Number(r.json.header.revision);
      const compact = await post(`${u}/v3/kv/compaction`, JSON.stringify({ revision: rev - 1 }));
      assert.equal(compact.status, 200, JSON.stringify(compact.json));
      const watch = await WatchLines.open(u, {
        create_request: { key: b64("c"), start_revision: 2 },
      });
      assert.equal((await watch.next()).result.created, true);
      const c = await watch.next();
      assert.equal(c.result.canceled, true);
      assert.equal(c.result.compact_revision, String(rev - 1));
      assert.match(c.result.cancel_reason, new RegExp(`oldest revision still available is ${rev}`));
      assert.equal(await watch.next(), undefined, "the stream ends");
      // From the oldest one it works.
      const ok = await WatchLines.open(u, {
        create_request: { key: b64("c"), start_revision: rev },
      });
      assert.equal((await ok.next()).result.created, true);
      const ev = await ok.nextEvents();
      assert.equal(atob(ev.result.events[0].kv.value), "2");
      await ok.close();
    });

    await t.step("bad lease ids and bad requests: 4xx JSON errors", async () => {
      const cases: [string, string, number][] = [
        ["/v3/lease/revoke", '{"ID": "987654"}', 404],
        ["/v3/lease/revoke", '{"ID": "x"}', 400],
        // No lease has id 0: etcd answers NotFound.
        ["/v3/lease/revoke", "{}", 404],
        ["/v3/lease/grant", '{"TTL": 9000000001}', 400],
        ["/v3/kv/put", JSON.stringify({ key: b64("k"), lease: "987654" }), 404],
        ["/v3/kv/put", JSON.stringify({ key: b64("k"), lease: "-1" }), 400],
        ["/v3/watch", '{"create_request": {}}', 400],
        ["/v3/watch", '{"cancel_request": {"watch_id": 1}}', 400],
      ];
      for (const [path, body, status] of cases) {
        const r = await post(`${u}${path}`, body);
        assert.equal(r.status, status, `${path} ${body}: ${JSON.stringify(r.json)}`);
        assert.equal(typeof r.json.error, "string");
        assert.equal(typeof r.json.code, "number");
      }
      const g = await post(`${u}/v3/lease/grant`, '{"TTL": 5, "ID": 777}');
      assert.equal(g.json.ID, "777");
      const again = await post(`${u}/v3/lease/grant`, '{"TTL": 5, "ID": 777}');
      assert.equal(again.status, 400);
      await post(`${u}/v3/lease/revoke`, '{"ID": 777}');
    });

    await t.step("client and ctl: lease grant, put --lease, watch", async () => {
      const client = connect(u);
      const lease = await client.leaseGrant(30);
      const from = (await client.range({ key: "none" })).revision + 1;
      assert.equal(lease.ttl, 30);
      const lines: string[] = [];
      const abort = new AbortController();
      const watching = runCtl(
        ["--endpoints", u, "watch", "cli/", "--prefix"],
        (l) => lines.push(l),
        abort.signal,
      );
      await new Promise((r) => setTimeout(r, 300));
      const out: string[] = [];
      assert.equal(
        await runCtl(
          ["--endpoints", u, "put", "cli/a", "1", "--lease", String(lease.id)],
          (l) => out.push(l),
        ),
        0,
      );
      assert.deepEqual(out, ["OK"]);
      const granted: string[] = [];
      assert.equal(
        await runCtl(["--endpoints", u, "lease", "grant", "5"], (l) => granted.push(l)),
        0,
      );
      assert.match(granted[0], /^lease \d+ granted with TTL\(5s\)$/);
      await client.leaseRevoke(lease.id);
      const deadline = Date.now() + 5_000;
      while (lines.length < 6 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      abort.abort();
      assert.equal(await watching, 0);
      assert.deepEqual(lines, ["PUT", "cli/a", "1", "DELETE", "cli/a", ""]);

      const events: string[] = [];
      const stream = client.watch({ prefix: "cli/" }, { startRevision: from });
      for await (const r of stream) {
        for (const e of r.events) events.push(`${e.type} ${e.key}`);
        if (events.length >= 2) break;
      }
      assert.deepEqual(events, ["PUT cli/a", "DELETE cli/a"]);
    });
  } finally {
    await cluster.stop();
  }
});

Deno.test("net: a lease and a watch on three node processes", async () => {
  const cluster = ProcessCluster.start(3, ["--watchers-max", "1"]);
  try {
    const leader = await cluster.waitForLeader();
    const follower = cluster.nodes.find((n) => n !== leader)!;
    // Lease calls on a follower go to the leader.
    const grant = await post(`${follower.url}/v3/lease/grant`, '{"TTL": 1}');
    assert.equal(grant.status, 200, JSON.stringify(grant.json));
    const id = grant.json.ID;
    const keep = await post(`${follower.url}/v3/lease/keepalive`, JSON.stringify({ ID: id }));
    assert.equal(keep.status, 200, JSON.stringify(keep.json));
    const watch = await WatchLines.open(follower.url, { create_request: { key: b64("e") } });
    assert.equal((await watch.next()).result.created, true);
    // Bounded: a second watcher on this node is refused while the first one lives.
    const full = await post(`${follower.url}/v3/watch`, '{"create_request": {"key": "ZQ=="}}');
    assert.equal(full.status, 429, JSON.stringify(full.json));
    assert.match(full.json.error, /Too many watchers/);
    await post(`${follower.url}/v3/kv/put`, JSON.stringify({ key: b64("e"), lease: id }));
    const put = await watch.nextEvents();
    assert.equal(put.result.events[0].type, undefined);
    const del = await watch.nextEvents(5_000);
    assert.equal(del.result.events[0].type, "DELETE");
    await watch.close();
  } finally {
    await cluster.stop();
  }
});
