/**
 * Availability right after a leader dies, on real processes: a follower that forwards a write to
 * the dead leader sees a refused connection, which never carried the write, so it waits for the
 * new leader instead of answering 504 "outcome unknown"; a linearizable read on a follower asks
 * the new leader as soon as it is known. Also how a failed fetch is classified (Deno 2.9 puts the
 * detail in the error's `cause`), and the client's `maybeApplied` for a refused connection.
 */

import assert from "node:assert/strict";
import { b64, freePort, post, ProcessCluster } from "./net_helpers.ts";
import { fetchErrorText, neverSent } from "../src/net/fetch_error.ts";
import { connect, RaftmetaError } from "../src/net/client.ts";

Deno.test("net: survivors of a killed leader take writes and reads once a new leader is elected", async () => {
  // The request timeout equals the read barrier's old per-attempt wait (1 s): a read that waited
  // on the dead leader for all of it fails, one that asks the new leader succeeds.
  const cluster = ProcessCluster.start(3, ["--request-timeout-ms", "1000"]);
  try {
    const leader = await cluster.waitForLeader();
    const survivors = cluster.nodes.filter((n) => n !== leader);
    for (const s of survivors) {
      for (let i = 0; i < 500 && (await s.local())?.leader !== leader.id; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal((await s.local())?.leader, leader.id, `${s.id} follows ${leader.id}`);
    }
    await leader.kill();
    const killedAt = performance.now();

    const writes = Array.from({ length: 20 }, (_, i) =>
      post(
        `${survivors[i % 2].url}/v3/kv/put`,
        JSON.stringify({ key: b64(`/after-kill/${i}`), value: b64(String(i)) }),
      ));
    const reads = survivors.map(async (s) => {
      try {
        const res = await fetch(`${s.url}/v1/kv/after-kill-read`, {
          signal: AbortSignal.timeout(15_000),
        });
        const body = await res.json();
        return { status: res.status, body, ms: performance.now() - killedAt };
      } catch (e) {
        return { status: 0, body: fetchErrorText(e), ms: performance.now() - killedAt };
      }
    });
    const results = await Promise.all(writes);
    const failed = results.filter((r) => r.status !== 200).map((r) =>
      `${r.status} ${JSON.stringify(r.json)}`
    );
    assert.deepEqual(failed, [], "every write waits for the new leader and is applied");
    for (const read of await Promise.all(reads)) {
      // Not found: the read was served (linearizable), not refused with 503.
      assert.equal(read.status, 404, JSON.stringify(read.body));
      console.log(`linearizable read on a follower answered ${read.ms.toFixed(0)} ms after kill`);
    }

    const newLeader = await cluster.waitForLeader({ among: survivors });
    const range = await post(
      `${newLeader.url}/v3/kv/range`,
      JSON.stringify({ key: b64("/after-kill/"), range_end: b64("/after-kill0") }),
    );
    assert.equal(range.json.count, "20", "each acknowledged write is in the store");
  } finally {
    await cluster.stop();
  }
});

Deno.test("net: a forwarded request cut off at a dying leader is resent only when that is safe", async () => {
  const cluster = ProcessCluster.start(3);
  try {
    const leader = await cluster.waitForLeader();
    const follower = cluster.nodes.find((n) => n !== leader)!;
    for (let i = 0; i < 500 && (await follower.local())?.leader !== leader.id; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const grant = await post(`${leader.url}/v3/lease/grant`, '{"TTL": 60}');
    assert.equal(grant.status, 200);
    const forwarded = async () => {
      const text = await (await fetch(`${follower.url}/metrics`)).text();
      return Number(/^raftmeta_forwarded_requests_total (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    const before = await forwarded();
    // A stopped leader's kernel still accepts the connections and takes the requests; killing it
    // then resets them: each request was sent, and its outcome at the leader is unknown.
    leader.signal("SIGSTOP");
    const keepAlive = post(`${follower.url}/v3/lease/keepalive`, `{"ID": "${grant.json.ID}"}`);
    const plainPut = post(
      `${follower.url}/v3/kv/put`,
      JSON.stringify({ key: b64("/cut/plain"), value: b64("v") }),
    );
    const sessionPut = post(
      `${follower.url}/v3/kv/put`,
      JSON.stringify({ key: b64("/cut/session"), value: b64("v") }),
      { "raftmeta-client-id": "cut-test", "raftmeta-seq": "1" },
    );
    for (let i = 0; i < 500 && (await forwarded()) < before + 3; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(await forwarded(), before + 3, "the three requests went to the stopped leader");
    await new Promise((r) => setTimeout(r, 100)); // the request bytes reach its socket
    leader.signal("SIGKILL");
    await leader.exited;

    const plain = await plainPut;
    assert.equal(plain.status, 504, JSON.stringify(plain.json));
    assert.match(plain.json.error, /its outcome is unknown/);
    const session = await sessionPut;
    assert.equal(session.status, 200, JSON.stringify(session.json));
    const renewed = await keepAlive;
    assert.equal(renewed.status, 200, JSON.stringify(renewed.json));
    assert.equal(renewed.json.result.ID, grant.json.ID);
  } finally {
    await cluster.stop();
  }
});

Deno.test("net: a failed fetch is 'never sent' only when no connection was made", async (t) => {
  await t.step("a refused connection (Deno 2.9: 'fetch failed', detail in its cause)", async () => {
    const error = await fetch(`http://127.0.0.1:${freePort()}/`, { method: "POST", body: "x" })
      .then(() => undefined, (e) => e);
    assert.ok(error !== undefined);
    assert.equal(neverSent(error), true, fetchErrorText(error));
    assert.match(fetchErrorText(error), /refused/i);
  });

  await t.step("a connection closed after the request was sent", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = (async () => {
      const conn = await listener.accept();
      await conn.read(new Uint8Array(4096)); // the request arrived; then the "leader" dies
      conn.close();
    })();
    const port = (listener.addr as Deno.NetAddr).port;
    const error = await fetch(`http://127.0.0.1:${port}/`, { method: "POST", body: "x" })
      .then(() => undefined, (e) => e);
    await served;
    listener.close();
    assert.ok(error !== undefined);
    assert.equal(neverSent(error), false, fetchErrorText(error));
  });

  await t.step("a timeout or an abort", () => {
    assert.equal(neverSent(new DOMException("The operation timed out", "TimeoutError")), false);
    assert.equal(neverSent(new TypeError("fetch failed")), false);
  });
});

Deno.test("net: the client does not call a write refused at connect 'maybe applied'", async () => {
  const client = connect([`http://127.0.0.1:${freePort()}`], { timeoutMs: 300 });
  const error = await client.put("/k", "v").then(() => undefined, (e) => e);
  assert.ok(error instanceof RaftmetaError, String(error));
  assert.equal(error.maybeApplied, false, error.message);
  assert.match(error.message, /refused/i);
});

Deno.test("net: a slow refusal near the deadline does not turn into 'maybe applied'", async () => {
  // A loaded machine: every connect is refused, but only after 45 ms. Without the minimum time
  // for a retry, the fifth attempt starts ~20 ms before the 300 ms deadline, is cut by it and
  // counts as a timeout (maybe sent), so a write no node ever saw was reported maybe applied.
  let calls = 0;
  const slowRefusal: typeof fetch = (_input, init) => {
    calls++;
    return new Promise((_resolve, reject) => {
      const timer = setTimeout(
        () => reject(new TypeError("fetch failed", { cause: new Error("Connection refused") })),
        45,
      );
      init?.signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(init.signal!.reason);
      });
    });
  };
  const client = connect(["http://127.0.0.1:9"], { timeoutMs: 300, fetch: slowRefusal });
  const error = await client.put("/k", "v").then(() => undefined, (e) => e);
  assert.ok(error instanceof RaftmetaError, String(error));
  assert.ok(calls >= 2, `only ${calls} attempt(s)`);
  assert.equal(error.maybeApplied, false, error.message);
  assert.match(error.message, /refused/i);
});
