// The client followers forward writes with (src/net/forward_client.ts): it keeps connections open
// and never sends a request twice. A raw TCP server plays the leader, counting connections and
// requests, and misbehaving on cue.

import assert from "node:assert/strict";
import { ForwardClient, ForwardUnknownError } from "../src/net/forward_client.ts";
import { neverSent } from "../src/net/fetch_error.ts";
import { freePort } from "./net_helpers.ts";

type Behaviour = "answer" | "chunked" | "reset-after-read" | "silent";

/** A scripted HTTP/1.1 server: answers each request by `behaviour()`; counts what it saw. */
function scriptedServer(behaviour: () => Behaviour) {
  const port = freePort();
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const seen = { connections: 0, requests: 0, bodies: [] as string[] };
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const conn of listener) {
      seen.connections++;
      conns.add(conn);
      (async () => {
        const buf = new Uint8Array(64 * 1024);
        let text = "";
        try {
          while (true) {
            const n = await conn.read(buf);
            if (n === null) break;
            text += new TextDecoder().decode(buf.subarray(0, n));
            while (true) {
              const end = text.indexOf("\r\n\r\n");
              if (end < 0) break;
              const length = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
              if (text.length < end + 4 + length) break;
              seen.requests++;
              seen.bodies.push(text.slice(end + 4, end + 4 + length));
              text = text.slice(end + 4 + length);
              const b = behaviour();
              if (b === "reset-after-read") {
                conn.close();
                conns.delete(conn);
                return;
              }
              if (b === "silent") continue;
              const body = `{"n":${seen.requests}}`;
              const answer = b === "chunked"
                ? `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n` +
                  `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`
                : `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
              await conn.write(new TextEncoder().encode(answer));
            }
          }
        } catch { /* closed */ }
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    /** Closes every open connection (as a leader's idle timeout or restart would). */
    closeConnections() {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      conns.clear();
    },
    close() {
      listener.close();
      this.closeConnections();
    },
  };
}

const post = (body: string) => ({
  method: "POST",
  headers: new Headers({ "content-type": "application/json" }),
  body: new TextEncoder().encode(body),
});

Deno.test("forward client: one connection carries request after request", async () => {
  const server = scriptedServer(() => "answer");
  const client = new ForwardClient({ responseBytesMax: 1 << 20 });
  try {
    for (let i = 0; i < 20; i++) {
      const res = await client.request(`${server.url}/v3/kv/put`, post(`{"i":${i}}`), 2000);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { n: i + 1 });
    }
    assert.equal(server.seen.connections, 1);
    assert.equal(server.seen.requests, 20);
    assert.equal(server.seen.bodies[19], '{"i":19}');
    // Chunked answers are read too, on the same connection.
    const chunkedServer = scriptedServer(() => "chunked");
    try {
      const res = await client.request(`${chunkedServer.url}/x`, post("{}"), 2000);
      assert.deepEqual(await res.json(), { n: 1 });
      const again = await client.request(`${chunkedServer.url}/x`, post("{}"), 2000);
      assert.deepEqual(await again.json(), { n: 2 });
      assert.equal(chunkedServer.seen.connections, 1);
    } finally {
      chunkedServer.close();
    }
  } finally {
    client.close();
    server.close();
  }
});

Deno.test("forward client: a connection the leader closed while idle does not carry the next request", async () => {
  const server = scriptedServer(() => "answer");
  const client = new ForwardClient({ responseBytesMax: 1 << 20 });
  try {
    assert.equal((await client.request(`${server.url}/a`, post("1"), 2000)).status, 200);
    assert.equal(client.idleConnections, 1);
    server.closeConnections();
    await new Promise((r) => setTimeout(r, 50)); // the close reaches the client
    const res = await client.request(`${server.url}/a`, post("2"), 2000);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    assert.equal(server.seen.connections, 2);
    assert.equal(server.seen.requests, 2);
  } finally {
    client.close();
    server.close();
  }
});

/**
 * Sends one put to a server behaving as `behaviour` and expects the unknown-outcome error; then
 * (after the connection's close settles) returns what the server saw.
 */
async function unknownOutcome(behaviour: Behaviour, timeoutMs: number) {
  const server = scriptedServer(() => behaviour);
  const client = new ForwardClient({ responseBytesMax: 1 << 20 });
  try {
    await assert.rejects(
      () => client.request(`${server.url}/v3/kv/put`, post(behaviour), timeoutMs),
      (e) => e instanceof ForwardUnknownError && !neverSent(e),
    );
    await new Promise((r) => setTimeout(r, 100));
    return { ...server.seen };
  } finally {
    client.close();
    server.close();
  }
}

Deno.test("forward client: a request is never sent twice; failures say whether it was sent", async (t) => {
  await t.step(
    "the leader read it and reset the connection: unknown outcome, one copy",
    async () => {
      const seen = await unknownOutcome("reset-after-read", 2000);
      assert.equal(seen.requests, 1);
      assert.equal(seen.connections, 1);
    },
  );
  await t.step("no answer before the deadline: unknown outcome, one copy", async () => {
    assert.equal((await unknownOutcome("silent", 200)).requests, 1);
  });
  await t.step("nobody listens: the connect error, which says nothing was sent", async () => {
    const client = new ForwardClient({ responseBytesMax: 1 << 20 });
    try {
      await assert.rejects(
        () => client.request(`http://127.0.0.1:${freePort()}/v3/kv/put`, post("x"), 2000),
        (e) => neverSent(e),
      );
    } finally {
      client.close();
    }
  });
});
