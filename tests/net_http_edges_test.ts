/**
 * The edges of the client port on a real node (in-process, 127.0.0.1): a body shorter than its
 * Content-Length, cross-origin requests and CORS preflights (etcd's `--cors`), Host names of a
 * DNS rebinding (etcd's `--host-whitelist`), methods, HEAD and OPTIONS, odd session headers.
 * curl and etcdctl send no Origin and keep working.
 */

import assert from "node:assert/strict";
import { RaftServer, type ServerOptions, StartupError } from "../src/net/server.ts";
import { handleHttp } from "../src/net/http.ts";
import { BrowserGuard, hostnameOf } from "../src/net/browser_guard.ts";
import { b64, freePort } from "./net_helpers.ts";

const dataDirs = new Map<RaftServer, string>();

async function startNode(options: Partial<ServerOptions> = {}): Promise<RaftServer> {
  const dataDir = Deno.makeTempDirSync({ prefix: "raftmeta_http_edges_" });
  let server: RaftServer;
  try {
    server = await RaftServer.start({
      dataDir,
      clientListen: { hostname: "127.0.0.1", port: 0 },
      peerListen: { hostname: "127.0.0.1", port: freePort() },
      log: () => {},
      ...options,
    }, handleHttp);
  } catch (e) {
    Deno.removeSync(dataDir, { recursive: true });
    throw e;
  }
  dataDirs.set(server, dataDir);
  for (let i = 0; i < 500 && server.node.role !== "Leader"; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(server.node.role, "Leader");
  return server;
}

async function stopNode(server: RaftServer): Promise<void> {
  await server.close();
  Deno.removeSync(dataDirs.get(server)!, { recursive: true });
}

/**
 * Sends `request` as raw bytes, closes the sending side when `closeWrite` (so a short body ends
 * there), and returns the status line, the headers (lower case) and the body.
 */
async function raw(
  url: string,
  request: string,
  closeWrite: boolean,
): Promise<{ status: number; headers: Map<string, string>; body: string }> {
  const u = new URL(url);
  const conn = await Deno.connect({ hostname: u.hostname, port: Number(u.port) });
  try {
    await conn.write(new TextEncoder().encode(request));
    if (closeWrite) await conn.closeWrite();
    const chunks: number[] = [];
    const buf = new Uint8Array(16384);
    const guard = setTimeout(() => conn.close(), 10_000);
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        chunks.push(...buf.subarray(0, n));
      }
    } finally {
      clearTimeout(guard);
    }
    const text = new TextDecoder().decode(new Uint8Array(chunks));
    const [head, ...rest] = text.split("\r\n\r\n");
    const [statusLine, ...lines] = head.split("\r\n");
    const headers = new Map<string, string>();
    for (const l of lines) {
      const i = l.indexOf(":");
      headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
    }
    return { status: Number(statusLine.split(" ")[1]), headers, body: rest.join("\r\n\r\n") };
  } finally {
    try {
      conn.close();
    } catch { /* closed by the guard */ }
  }
}

async function count(url: string, key: string): Promise<string> {
  const res = await fetch(`${url}/v3/kv/range`, {
    method: "POST",
    body: JSON.stringify({ key: b64(key), count_only: true }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).count ?? "0";
}

Deno.test("net: HTTP edges of a node with the default settings", async (t) => {
  const server = await startNode();
  const u = server.clientUrl;
  const host = new URL(u).host;
  try {
    await t.step("a body shorter than its Content-Length is a 400, not a 500", async () => {
      const put = await raw(
        u,
        `POST /v3/kv/put HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 100\r\n\r\n{"key":"YQ=="}`,
        true,
      );
      assert.equal(put.status, 400, put.body);
      assert.match(
        JSON.parse(put.body).error,
        /^Request body is shorter than its Content-Length of 100 bytes/,
      );
      const rest = await raw(
        u,
        `PUT /v1/kv/short HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 10\r\n\r\nabc`,
        true,
      );
      assert.equal(rest.status, 400, rest.body);
      const chunked = await raw(
        u,
        `POST /v3/kv/put HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{"key"`,
        true,
      );
      assert.equal(chunked.status, 400, chunked.body);
      assert.match(JSON.parse(chunked.body).error, /^Request body broke off after \d+ bytes/);
      assert.equal(await count(u, "a"), "0");
      assert.equal(await count(u, "short"), "0");
    });

    await t.step("a cross-origin simple POST is refused and nothing is applied", async () => {
      // What a page on another site can send without a preflight: text/plain, a form's type.
      for (const type of ["text/plain", "application/x-www-form-urlencoded"]) {
        const res = await fetch(`${u}/v3/kv/put`, {
          method: "POST",
          headers: { origin: "http://evil.example", "content-type": type },
          body: JSON.stringify({ key: b64("/csrf"), value: b64("owned") }),
        });
        assert.equal(res.status, 403);
        assert.equal(res.headers.get("access-control-allow-origin"), null);
        assert.match((await res.json()).error, /^Origin "http:\/\/evil\.example" may not make/);
      }
      const rest = await fetch(`${u}/v1/kv/csrf`, {
        method: "PUT",
        headers: { origin: "null" },
        body: "owned",
      });
      assert.equal(rest.status, 403);
      await rest.body?.cancel();
      const read = await fetch(`${u}/v1/status`, { headers: { origin: "http://evil.example" } });
      assert.equal(read.status, 403);
      await read.body?.cancel();
      assert.equal(await count(u, "/csrf"), "0");
      assert.equal(await count(u, "csrf"), "0");
    });

    await t.step("etcd's curl example (form content type, no Origin) still works", async () => {
      // curl -L http://localhost:2379/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'
      const res = await fetch(`http://localhost:${new URL(u).port}/v3/kv/put`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: '{"key": "Zm9v", "value": "YmFy"}',
      });
      assert.equal(res.status, 200, await res.clone().text());
      await res.body?.cancel();
      assert.equal(await count(u, "foo"), "1");
    });

    await t.step("a CORS preflight from a foreign origin gets no allow headers", async () => {
      const res = await fetch(`${u}/v3/kv/put`, {
        method: "OPTIONS",
        headers: {
          origin: "http://evil.example",
          "access-control-request-method": "POST",
          "access-control-request-headers": "content-type",
        },
      });
      assert.equal(res.status, 403);
      assert.equal(res.headers.get("access-control-allow-origin"), null);
      assert.equal(res.headers.get("access-control-allow-methods"), null);
      await res.body?.cancel();
    });

    await t.step("a Host name that is not loopback is refused (DNS rebinding)", async () => {
      const put = await raw(
        u,
        `PUT /v1/kv/rebound HTTP/1.1\r\nHost: rebind.example:${
          new URL(u).port
        }\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`,
        false,
      );
      assert.equal(put.status, 421, put.body);
      assert.match(JSON.parse(put.body).error, /^Host "rebind\.example:\d+" is not accepted/);
      const status = await raw(
        u,
        `GET /v1/status HTTP/1.1\r\nHost: rebind.example\r\nConnection: close\r\n\r\n`,
        false,
      );
      assert.equal(status.status, 421);
      assert.equal(await count(u, "rebound"), "0");
      for (const name of ["localhost", "127.0.0.1", "[::1]"]) {
        const ok = await raw(
          u,
          `GET /health HTTP/1.1\r\nHost: ${name}:${new URL(u).port}\r\nConnection: close\r\n\r\n`,
          false,
        );
        assert.equal(ok.status, 200, `${name}: ${ok.body}`);
      }
    });

    await t.step("methods: 405 names the allowed ones; HEAD and OPTIONS answer", async () => {
      const post = await fetch(`${u}/health`, { method: "POST", body: "" });
      assert.equal(post.status, 405);
      assert.equal(post.headers.get("allow"), "GET, HEAD, OPTIONS");
      assert.match((await post.json()).error, /^Method "POST" is not allowed here; use GET/);
      const get = await fetch(`${u}/v3/kv/put`);
      assert.equal(get.status, 405);
      assert.equal(get.headers.get("allow"), "POST, OPTIONS");
      await get.body?.cancel();
      const head = await fetch(`${u}/v1/status?local=1`, { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.equal(await head.text(), "");
      const headKv = await fetch(`${u}/v1/kv/foo`, { method: "HEAD" });
      assert.equal(headKv.status, 200);
      await headKv.body?.cancel();
      const options = await fetch(`${u}/v1/kv/foo`, { method: "OPTIONS" });
      assert.equal(options.status, 204);
      assert.equal(options.headers.get("allow"), "GET, HEAD, PUT, DELETE, OPTIONS");
      const unknown = await fetch(`${u}/v9/nothing`, { method: "OPTIONS" });
      assert.equal(unknown.status, 404);
      await unknown.body?.cancel();
    });

    await t.step("odd session headers are a 400 naming the value", async () => {
      const cases: [Record<string, string>, RegExp][] = [
        [{ "raftmeta-client-id": "c", "raftmeta-seq": "abc" }, /raftmeta-seq .*"abc"/],
        [{ "raftmeta-client-id": "c", "raftmeta-seq": "0" }, /raftmeta-seq .*"0"/],
        [{ "raftmeta-client-id": "c", "raftmeta-seq": "1e3" }, /raftmeta-seq .*"1e3"/],
        [{ "raftmeta-client-id": "c", "raftmeta-seq": "-1" }, /raftmeta-seq .*"-1"/],
        [{ "raftmeta-client-id": "c", "raftmeta-seq": "1234567890123456" }, /raftmeta-seq/],
        [{ "raftmeta-client-id": "x".repeat(129), "raftmeta-seq": "1" }, /raftmeta-client-id/],
        [{ "raftmeta-client-id": "c" }, /go together/],
        [{ "raftmeta-seq": "1" }, /go together/],
      ];
      for (const [headers, error] of cases) {
        const res = await fetch(`${u}/v3/kv/put`, {
          method: "POST",
          headers,
          body: JSON.stringify({ key: b64("/session"), value: b64("v") }),
        });
        assert.equal(res.status, 400, JSON.stringify(headers));
        assert.match((await res.json()).error, error);
      }
      assert.equal(await count(u, "/session"), "0");
    });
  } finally {
    await stopNode(server);
  }
});

Deno.test("net: --cors lets an allowed origin's page call the node", async () => {
  const server = await startNode({ corsOrigins: ["http://localhost:8080"] });
  const u = server.clientUrl;
  try {
    const preflight = await fetch(`${u}/v1/kv/page`, {
      method: "OPTIONS",
      headers: {
        origin: "http://localhost:8080",
        "access-control-request-method": "PUT",
        "access-control-request-headers": "content-type",
      },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "http://localhost:8080");
    assert.match(preflight.headers.get("access-control-allow-methods") ?? "", /\bPUT\b/);
    assert.match(preflight.headers.get("access-control-allow-headers") ?? "", /content-type/);
    assert.equal(preflight.headers.get("vary"), "Origin");

    const put = await fetch(`${u}/v1/kv/page`, {
      method: "PUT",
      headers: { origin: "http://localhost:8080" },
      body: "hello",
    });
    assert.equal(put.status, 200);
    assert.equal(put.headers.get("access-control-allow-origin"), "http://localhost:8080");
    assert.match(put.headers.get("access-control-expose-headers") ?? "", /raftmeta-leader-url/);
    await put.body?.cancel();

    // Another origin is still refused, preflight and request alike.
    const other = await fetch(`${u}/v1/kv/page`, {
      method: "OPTIONS",
      headers: { origin: "http://localhost:9999", "access-control-request-method": "PUT" },
    });
    assert.equal(other.status, 403);
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    await other.body?.cancel();
    const get = await fetch(`${u}/v1/kv/page`);
    assert.equal((await get.json()).value, "hello");
  } finally {
    await stopNode(server);
  }
});

Deno.test("net: --host-whitelist and --cors values", async (t) => {
  await t.step("a configured host name is accepted, the loopback defaults are then not", () => {
    const guard = new BrowserGuard({ hostWhitelist: ["meta.example"], listenHostname: "10.1.2.3" });
    const req = (host: string) => new Request("http://x/", { headers: { host } });
    guard.check(req("meta.example:2379"));
    guard.check(req("10.1.2.3:2379")); // its own listen address, used by the other nodes
    assert.throws(() => guard.check(req("localhost:2379")), /Host "localhost:2379"/);
    const any = new BrowserGuard({ listenHostname: "0.0.0.0" });
    any.check(req("anything.example"));
  });

  await t.step("Host names parse with ports and IPv6 brackets", () => {
    assert.equal(hostnameOf("[::1]:2379"), "::1");
    assert.equal(hostnameOf("LocalHost:80"), "localhost");
    assert.equal(hostnameOf("127.0.0.1"), "127.0.0.1");
  });

  await t.step("an origin with a path is refused at start, naming it", async () => {
    await assert.rejects(
      startNode({ corsOrigins: ["http://localhost:8080/app"] }),
      (e) =>
        e instanceof StartupError &&
        /CORS origin must be scheme:\/\/host\[:port\].*"http:\/\/localhost:8080\/app"/.test(
          e.message,
        ),
    );
  });
});
