/**
 * The client port's HTTP/1.1 server (src/net/http1.ts): the limits Deno.serve lacks (a request
 * head timeout against slowloris, an idle timeout that spares requests in flight, a connection
 * cap, head and framing limits) and the HTTP semantics etcd clients, curl and wrk rely on. Unit
 * tests speak raw TCP to an {@linkcode Http1Server}; the last ones go through a node process.
 */

import assert from "node:assert/strict";
import { type Http1FastHandler, type Http1Options, Http1Server } from "../src/net/http1.ts";
import { b64, freePort, NodeProcess, post, until } from "./net_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A parsed response as it came on the wire. */
interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
  /** The chunks of a chunked body, as framed. */
  chunks: string[];
}

/** A raw HTTP/1.1 client connection that reads responses itself. */
class Raw {
  #buf = new Uint8Array(0);
  eof = false;

  private constructor(readonly conn: Deno.TcpConn) {}

  static async open(port: number): Promise<Raw> {
    return new Raw(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Writes `text`; false when the server has closed or reset the connection. */
  async send(text: string | Uint8Array): Promise<boolean> {
    const bytes = typeof text === "string" ? encoder.encode(text) : text;
    try {
      let off = 0;
      while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
      return true;
    } catch {
      return false;
    }
  }

  async #more(): Promise<boolean> {
    if (this.eof) return false;
    const chunk = new Uint8Array(65536);
    let n: number | null;
    try {
      n = await this.conn.read(chunk);
    } catch {
      n = null;
    }
    if (n === null) {
      this.eof = true;
      return false;
    }
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  async #line(): Promise<string> {
    while (true) {
      const i = this.#buf.indexOf(10);
      if (i >= 0) {
        const line = decoder.decode(this.#buf.subarray(0, i)).replace(/\r$/, "");
        this.#buf = this.#buf.subarray(i + 1);
        return line;
      }
      if (!await this.#more()) throw new Error("connection closed in a line");
    }
  }

  async #bytes(n: number): Promise<string> {
    while (this.#buf.length < n) {
      if (!await this.#more()) throw new Error(`connection closed with ${n} bytes expected`);
    }
    const out = decoder.decode(this.#buf.subarray(0, n));
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Reads one response head (status and headers). */
  async head(): Promise<{ status: number; headers: Map<string, string> }> {
    const status = Number((await this.#line()).split(" ")[1]);
    const headers = new Map<string, string>();
    while (true) {
      const line = await this.#line();
      if (line === "") return { status, headers };
      const colon = line.indexOf(":");
      headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
    }
  }

  /** Reads one whole response (`bodyless` for the answer to a HEAD). */
  async response(bodyless = false): Promise<RawResponse> {
    const { status, headers } = await this.head();
    const chunks: string[] = [];
    let body = "";
    if (bodyless) { /* no body */ }
    else if (headers.get("transfer-encoding") === "chunked") {
      while (true) {
        const chunk = await this.chunk();
        if (chunk === null) break;
        chunks.push(chunk);
      }
      body = chunks.join("");
    } else if (headers.has("content-length")) {
      body = await this.#bytes(Number(headers.get("content-length")));
    } else {
      while (await this.#more()) { /* until the server closes */ }
      body = decoder.decode(this.#buf);
    }
    return { status, headers, body, chunks };
  }

  /** Reads one chunk of a chunked body; null after the last. */
  async chunk(): Promise<string | null> {
    const size = parseInt(await this.#line(), 16);
    if (size === 0) {
      await this.#line();
      return null;
    }
    const data = await this.#bytes(size);
    await this.#line();
    return data;
  }

  /** Resolves once the server has closed the connection (reading away anything it sends). */
  async closed(): Promise<void> {
    while (await this.#more()) { /* read on */ }
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** Starts a server on a free port with `handler` (default: echo method, url and body as JSON). */
function start(
  options: Partial<Http1Options> = {},
  handler?: (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Promise<Response>,
): Http1Server {
  return new Http1Server(
    { hostname: "127.0.0.1", port: 0, ...options },
    handler ?? (async (req, info) => {
      const body = req.body === null ? "" : await req.text();
      return Response.json({
        method: req.method,
        url: req.url,
        body,
        remotePort: info.remoteAddr.port,
      });
    }),
  );
}

/**
 * Sends one head byte every 50 ms (never the blank line) until the server answers or closes;
 * fails if it has not after 600 bytes (30 s).
 */
async function trickle(c: Raw, answered: Promise<unknown>): Promise<void> {
  let done = false;
  answered.then(() => done = true, () => done = true);
  let sent = 0;
  while (!done && !c.eof && sent < 600) {
    if (!await c.send(sent % 2 === 0 ? "X" : "-")) break;
    sent++;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(sent < 600, `the server did not cut a head trickled for ${sent} bytes (30 s)`);
}

function get(path: string, extra = ""): string {
  return `GET ${path} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`;
}

Deno.test("http1: the request head has a deadline (slowloris gets 408)", async (t) => {
  const server = start({ headTimeoutMs: 300 });
  try {
    await t.step("a client trickling its head a byte at a time is cut with 408", async () => {
      const c = await Raw.open(server.addr.port);
      await c.send("GET / HTTP/1.1\r\nHost: localhost\r\n");
      const answered = c.response();
      answered.catch(() => {});
      // One header byte after another, never the blank line: the head never completes.
      await trickle(c, answered);
      const res = await answered;
      assert.equal(res.status, 408);
      assert.equal(res.headers.get("connection"), "close");
      const json = JSON.parse(res.body);
      assert.equal(json.code, 4);
      assert.match(json.message, /Request head did not arrive within 300 ms/);
      await c.closed();
      c.close();
    });
    await t.step("a connection that sends nothing is cut too", async () => {
      const c = await Raw.open(server.addr.port);
      const res = await c.response();
      assert.equal(res.status, 408);
      await c.closed();
      c.close();
    });
    await t.step("a head that arrives in time is served", async () => {
      const c = await Raw.open(server.addr.port);
      await c.send(get("/fine"));
      assert.equal((await c.response()).status, 200);
      c.close();
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("http1: an idle connection closes, a request in flight is never cut", async (t) => {
  let cancelled = 0;
  const server = start({ idleTimeoutMs: 300, headTimeoutMs: 300 }, async (req) => {
    if (new URL(req.url).pathname === "/stream") {
      let n = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            // Ten messages, 150 ms apart: the stream outlives both timers several times over.
            await new Promise((r) => setTimeout(r, 150));
            if (n++ < 10) controller.enqueue(encoder.encode(`{"n":${n}}\n`));
            else controller.close();
          },
          cancel() {
            cancelled++;
          },
        }),
      );
    }
    return Response.json({ ok: await req.text() });
  });
  try {
    await t.step("a kept-alive connection with nothing in flight is closed", async () => {
      const c = await Raw.open(server.addr.port);
      await c.send(get("/a"));
      assert.equal((await c.response()).status, 200);
      await until("the idle connection to close", async () => (await c.closed(), true));
      c.close();
      await until("the server to forget the connection", () => server.connections === 0);
    });
    await t.step("a stream that lasts longer than the idle timeout runs to its end", async () => {
      const c = await Raw.open(server.addr.port);
      await c.send(get("/stream"));
      const res = await c.response();
      assert.equal(res.status, 200);
      assert.equal(res.chunks.length, 10);
      assert.equal(res.chunks[9], `{"n":10}\n`);
      assert.equal(cancelled, 0);
      c.close();
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("http1: over --max-connections a client gets 503 until one closes", async () => {
  const server = start({ connectionsMax: 4 });
  const held: Raw[] = [];
  try {
    for (let i = 0; i < 4; i++) held.push(await Raw.open(server.addr.port));
    await until("four connections accepted", () => server.connections === 4);
    const fifth = await Raw.open(server.addr.port);
    await fifth.send(get("/over"));
    const res = await fifth.response();
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("retry-after"), "1");
    assert.equal(res.headers.get("connection"), "close");
    assert.equal(JSON.parse(res.body).code, 14);
    assert.match(JSON.parse(res.body).message, /Too many connections to this node: 4/);
    await fifth.closed();
    fifth.close();
    assert.equal(server.connections, 4);
    // The held ones are served all the same.
    await held[0].send(get("/held"));
    assert.equal((await held[0].response()).status, 200);
    held.pop()!.close();
    await until("a freed slot serves the next client", async () => {
      const next = await Raw.open(server.addr.port);
      try {
        await next.send(get("/next"));
        return (await next.response()).status === 200;
      } finally {
        next.close();
      }
    });
  } finally {
    for (const c of held) c.close();
    await server.shutdown();
  }
});

Deno.test("http1: bad request heads get a JSON error and the connection closes", async (t) => {
  let handled = 0;
  const server = start({ headBytesMax: 1024 }, () => {
    handled++;
    return Promise.resolve(Response.json({}));
  });
  const cases: [string, string, number, RegExp][] = [
    ["a head over the limit", get("/", `x-big: ${"a".repeat(2000)}\r\n`), 431, /over 1024 bytes/],
    [
      "Content-Length with Transfer-Encoding",
      "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
      400,
      /both Content-Length and Transfer-Encoding/,
    ],
    [
      "an invalid Content-Length",
      "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3x\r\n\r\nabc",
      400,
      /Invalid Content-Length: "3x"/,
    ],
    [
      "two different Content-Lengths",
      "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
      400,
      /Invalid Content-Length/,
    ],
    [
      "an unsupported Transfer-Encoding",
      "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: gzip\r\n\r\n",
      501,
      /Transfer-Encoding not supported: "gzip"/,
    ],
    ["a bad request line", "GET /\r\n\r\n", 400, /Bad request line: "GET \/"/],
    ["a header line without a colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", 400, /Bad header/],
    ["HTTP/2's preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, /HTTP\/2.0/],
  ];
  try {
    for (const [name, request, status, message] of cases) {
      await t.step(`${name}: ${status}`, async () => {
        const c = await Raw.open(server.addr.port);
        await c.send(request);
        const res = await c.response();
        assert.equal(res.status, status);
        assert.equal(res.headers.get("connection"), "close");
        assert.equal(res.headers.get("content-type"), "application/json");
        const json = JSON.parse(res.body);
        assert.match(json.message, message);
        assert.equal(json.error, json.message);
        assert.equal(typeof json.code, "number");
        await c.closed();
        c.close();
      });
    }
    assert.equal(handled, 0);
  } finally {
    await server.shutdown();
  }
});

Deno.test("http1: a request body is read only as far as the handler reads it", async (t) => {
  const firstChunks: number[] = [];
  const server = start({}, async (req) => {
    const reader = req.body!.getReader();
    const { value } = await reader.read();
    firstChunks.push(value!.length);
    await reader.cancel();
    return Response.json({ error: "too large", code: 8, message: "too large" }, { status: 413 });
  });
  const payload = new Uint8Array(64 * 1024).fill(97);
  try {
    for (
      const [name, head] of [
        ["a huge Content-Length", "content-length: 1000000000000\r\n"],
        ["an endless chunked body", "transfer-encoding: chunked\r\n"],
      ]
    ) {
      await t.step(`${name}: the answer comes, the connection closes`, async () => {
        const c = await Raw.open(server.addr.port);
        await c.send(`POST /big HTTP/1.1\r\nHost: a\r\n${head}\r\n`);
        const answered = c.response();
        answered.catch(() => {});
        const chunked = head.startsWith("transfer");
        const piece = chunked
          ? new Uint8Array([...encoder.encode("10000\r\n"), ...payload, 13, 10])
          : payload;
        // Keep sending until the server closes: it must not wait for (or hold) the rest.
        let sent = 0;
        while (!c.eof && sent < 4096 && await c.send(piece)) sent++;
        const res = await answered;
        assert.equal(res.status, 413);
        assert.equal(res.headers.get("connection"), "close");
        await c.closed();
        c.close();
        assert.ok(sent < 4096, `the server read all of ${sent} pieces of 64 KiB`);
      });
    }
    assert.ok(firstChunks.every((n) => n <= 64 * 1024), `chunks of ${firstChunks}`);
  } finally {
    await server.shutdown();
  }
});

Deno.test("http1: HTTP semantics clients rely on", async (t) => {
  let cancelled = 0;
  let streams = 0;
  const server = start({}, async (req, info) => {
    const url = new URL(req.url);
    if (url.pathname === "/slow") await new Promise((r) => setTimeout(r, 100));
    if (url.pathname === "/big") return new Response(new Uint8Array(300_000).fill(98));
    if (url.pathname === "/bigstream") {
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            await new Promise((r) => setTimeout(r, 1));
            controller.enqueue(new Uint8Array(200_000).fill(99));
            controller.close();
          },
        }),
      );
    }
    if (url.pathname === "/stream") {
      streams++;
      let n = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (n > 0) await new Promise((r) => setTimeout(r, 20));
            if (n < 3) controller.enqueue(encoder.encode(`{"n":${++n}}`));
            else if (url.searchParams.has("forever")) await new Promise(() => {});
            else controller.close();
          },
          cancel() {
            cancelled++;
          },
        }, { highWaterMark: 0 }),
      );
    }
    const body = req.body === null ? "" : await req.text();
    return Response.json({
      method: req.method,
      path: url.pathname,
      host: url.host,
      body,
      remotePort: info.remoteAddr.port,
      remoteHost: info.remoteAddr.hostname,
    });
  });
  const port = server.addr.port;
  try {
    await t.step("HTTP/1.1 keeps the connection; Date, Content-Length, remoteAddr", async () => {
      const c = await Raw.open(port);
      for (const path of ["/one", "/two"]) {
        await c.send(get(path));
        const res = await c.response();
        assert.equal(res.status, 200);
        assert.ok(!res.headers.has("connection"));
        assert.equal(Number(res.headers.get("content-length")), encoder.encode(res.body).length);
        assert.match(res.headers.get("date")!, /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/);
        const json = JSON.parse(res.body);
        assert.equal(json.path, path);
        assert.equal(json.host, "localhost");
        assert.equal(json.remotePort, c.conn.localAddr.port);
        assert.equal(json.remoteHost, "127.0.0.1");
      }
      c.close();
    });
    await t.step("Connection: close and HTTP/1.0 close after the response", async () => {
      for (
        const request of [
          get("/c", "Connection: close\r\n"),
          "GET /old HTTP/1.0\r\n\r\n",
        ]
      ) {
        const c = await Raw.open(port);
        await c.send(request);
        const res = await c.response();
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("connection"), "close");
        await c.closed();
        c.close();
      }
    });
    await t.step("HTTP/1.0 with keep-alive stays open", async () => {
      const c = await Raw.open(port);
      for (let i = 0; i < 2; i++) {
        await c.send("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        const res = await c.response();
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("connection"), "keep-alive");
      }
      c.close();
    });
    await t.step("pipelined requests are answered in order", async () => {
      const c = await Raw.open(port);
      const body = "abc";
      await c.send(
        get("/slow") +
          `POST /post HTTP/1.1\r\nHost: a\r\ncontent-length: ${body.length}\r\n\r\n${body}` +
          get("/fast"),
      );
      const paths = [];
      for (let i = 0; i < 3; i++) paths.push(JSON.parse((await c.response()).body).path);
      assert.deepEqual(paths, ["/slow", "/post", "/fast"]);
      c.close();
    });
    await t.step("a chunked request body reaches the handler whole", async () => {
      const c = await Raw.open(port);
      await c.send(
        "POST /chunked HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n" +
          "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n",
      );
      assert.equal(JSON.parse((await c.response()).body).body, "hello world");
      await c.send(get("/after"));
      assert.equal(JSON.parse((await c.response()).body).path, "/after");
      c.close();
    });
    await t.step("Expect: 100-continue gets 100 Continue before the body is sent", async () => {
      const c = await Raw.open(port);
      await c.send(
        "POST /expect HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n",
      );
      assert.equal((await c.head()).status, 100);
      await c.send("body");
      const res = await c.response();
      assert.equal(res.status, 200);
      assert.equal(JSON.parse(res.body).body, "body");
      c.close();
    });
    await t.step("HEAD gets the headers of GET and no body", async () => {
      const c = await Raw.open(port);
      await c.send("HEAD /h HTTP/1.1\r\nHost: localhost\r\n\r\n");
      const res = await c.response(true);
      assert.equal(res.status, 200);
      assert.ok(Number(res.headers.get("content-length")) > 0);
      // The next response starts right away: no body bytes came after the HEAD's headers.
      await c.send(get("/next"));
      assert.equal(JSON.parse((await c.response()).body).path, "/next");
      c.close();
    });
    await t.step("a streamed body is chunked, one chunk per message as it comes", async () => {
      const c = await Raw.open(port);
      await c.send(get("/stream"));
      const res = await c.response();
      assert.equal(res.headers.get("transfer-encoding"), "chunked");
      assert.ok(!res.headers.has("content-length"));
      assert.deepEqual(res.chunks, ['{"n":1}', '{"n":2}', '{"n":3}']);
      c.close();
    });
    await t.step("a streamed body to HTTP/1.0 ends with the connection", async () => {
      const c = await Raw.open(port);
      await c.send("GET /stream HTTP/1.0\r\n\r\n");
      const res = await c.response();
      assert.equal(res.body, '{"n":1}{"n":2}{"n":3}');
      c.close();
    });
    await t.step("a client that goes away cancels its response stream", async () => {
      const before = cancelled;
      const c = await Raw.open(port);
      await c.send(get("/stream?forever"));
      const { status } = await c.head();
      assert.equal(status, 200);
      for (let i = 0; i < 3; i++) assert.ok(await c.chunk());
      c.close();
      await until("the stream to be cancelled", () => cancelled === before + 1);
    });
    await t.step("fetch() speaks to it (GET, POST, streams)", async () => {
      const url = `http://127.0.0.1:${port}`;
      assert.equal((await (await fetch(`${url}/f`)).json()).path, "/f");
      const posted = await fetch(`${url}/p`, { method: "POST", body: "x".repeat(100_000) });
      assert.equal((await posted.json()).body.length, 100_000);
      assert.equal(await (await fetch(`${url}/stream`)).text(), '{"n":1}{"n":2}{"n":3}');
      const big = await fetch(`${url}/big`);
      assert.equal(big.headers.get("content-length"), "300000");
      assert.equal(await big.text(), "b".repeat(300_000));
      assert.equal(await (await fetch(`${url}/bigstream`)).text(), "c".repeat(200_000));
    });
    assert.ok(streams > 0);
  } finally {
    await server.shutdown();
  }
});

Deno.test("http1: the fast path takes whole small bodies it accepts, the rest goes as Requests", async (t) => {
  const seen: string[] = [];
  const fast: Http1FastHandler = {
    accepts: (method, target, bodyBytes) =>
      method === "POST" && target.startsWith("/fast") && bodyBytes <= 64,
    handle: (req) => {
      seen.push(`${req.target} ${new TextDecoder().decode(req.body)}`);
      if (req.target === "/fast/throw") throw new Error("boom");
      if (req.target === "/fast/response") {
        return Promise.resolve(
          new Response("as a Response", { headers: { "x-kind": "response" } }),
        );
      }
      return Promise.resolve({
        status: 201,
        fields: [["x-kind", "fast"], ["x-token", req.header("x-token") ?? "none"]],
        body: encoder.encode(`fast:${new TextDecoder().decode(req.body)}`),
      });
    },
  };
  const server = start({ fast });
  const post = (path: string, body: string, extra = "") =>
    `POST ${path} HTTP/1.1\r\nHost: localhost\r\n${extra}Content-Length: ${body.length}\r\n\r\n${body}`;
  try {
    await t.step(
      "an accepted request is answered by the fast handler, header lookup in any case",
      async () => {
        const c = await Raw.open(server.addr.port);
        await c.send(post("/fast", "abc", "X-Token: t1\r\nx-token: t2\r\n"));
        const res = await c.response();
        assert.equal(res.status, 201);
        assert.equal(res.headers.get("x-kind"), "fast");
        assert.equal(res.headers.get("x-token"), "t1, t2");
        assert.equal(res.headers.get("content-length"), "8");
        assert.ok(res.headers.has("date"));
        assert.equal(res.body, "fast:abc");
        // The connection carries the next request.
        await c.send(post("/fast", "again"));
        assert.equal((await c.response()).body, "fast:again");
        c.close();
      },
    );
    await t.step("pipelined requests are answered in order, fast and general mixed", async () => {
      const c = await Raw.open(server.addr.port);
      await c.send(post("/fast", "1") + post("/other", "2") + post("/fast", "3"));
      const a = await c.response(), b = await c.response(), d = await c.response();
      assert.equal(a.body, "fast:1");
      assert.equal(JSON.parse(b.body).body, "2"); // the echo handler
      assert.equal(d.body, "fast:3");
      c.close();
    });
    await t.step(
      "a body it does not accept, or one not yet whole, goes to the general handler",
      async () => {
        const c = await Raw.open(server.addr.port);
        const big = "x".repeat(65);
        await c.send(post("/fast", big));
        assert.equal(JSON.parse((await c.response()).body).body, big);
        // Chunked: no Content-Length, so never the fast path.
        await c.send(
          "POST /fast HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert.equal(JSON.parse((await c.response()).body).body, "abc");
        // The head first, the body a moment later: the general handler reads it as it comes.
        await c.send("POST /fast HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\n");
        await new Promise((r) => setTimeout(r, 50));
        await c.send("late");
        assert.equal(JSON.parse((await c.response()).body).body, "late");
        c.close();
      },
    );
    await t.step(
      "a Response from the fast handler is written as the general handler's",
      async () => {
        const c = await Raw.open(server.addr.port);
        await c.send(post("/fast/response", ""));
        const res = await c.response();
        assert.equal(res.headers.get("x-kind"), "response");
        assert.equal(res.body, "as a Response");
        c.close();
      },
    );
    await t.step(
      "a fast handler that throws gives a 500 and closes; Connection: close is kept",
      async () => {
        const c = await Raw.open(server.addr.port);
        await c.send(post("/fast/throw", ""));
        const res = await c.response();
        assert.equal(res.status, 500);
        assert.equal(JSON.parse(res.body).code, 13);
        await c.closed();
        const d = await Raw.open(server.addr.port);
        await d.send(post("/fast", "bye", "Connection: close\r\n"));
        assert.equal((await d.response()).headers.get("connection"), "close");
        await d.closed();
      },
    );
  } finally {
    await server.close();
  }
  assert.ok(seen.includes("/fast abc") && !seen.some((x) => x.startsWith("/fast x")));
});

Deno.test("http1: shutdown closes idle and streaming connections", async () => {
  let cancelled = false;
  const server = start({}, () =>
    Promise.resolve(
      new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(encoder.encode("first"));
          },
          cancel() {
            cancelled = true;
          },
        }),
      ),
    ));
  const idle = await Raw.open(server.addr.port);
  const streaming = await Raw.open(server.addr.port);
  await streaming.send(get("/s"));
  await streaming.head();
  assert.equal(await streaming.chunk(), "first");
  await until("both connections accepted", () => server.connections === 2);
  await server.shutdown(0);
  await idle.closed();
  await streaming.closed();
  idle.close();
  streaming.close();
  assert.ok(cancelled);
  assert.equal(server.connections, 0);
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.addr.port }));
});

// ---- Through a node process ------------------------------------------------------------------

async function startNode(extra: string[]): Promise<{ node: NodeProcess; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "raftmeta-http1-" });
  const port = freePort();
  const node = new NodeProcess("n1", `http://127.0.0.1:${port}`, `${dir}/n1`, [
    "--data-dir",
    `${dir}/n1`,
    "--listen-client",
    `127.0.0.1:${port}`,
    ...extra,
  ]);
  await until("the node to serve", async () => (await node.local())?.role === "Leader");
  return { node, dir };
}

async function watchers(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^raftmeta_watchers (\d+)$/m.exec(text)![1]);
}

Deno.test("http1: a node cuts slowloris, keeps watches and frees them", async (t) => {
  const { node, dir } = await startNode([
    "--http-header-timeout-ms",
    "300",
    "--http-idle-timeout-ms",
    "300",
    "--max-request-bytes",
    "100000",
  ]);
  const port = Number(new URL(node.url).port);
  try {
    await t.step("a trickled head gets 408", async () => {
      const c = await Raw.open(port);
      await c.send("POST /v3/kv/range HTTP/1.1\r\n");
      const answered = c.response();
      answered.catch(() => {});
      await trickle(c, answered);
      assert.equal((await answered).status, 408);
      c.close();
    });
    await t.step("a watch outlives the idle timeout; closing it frees the watcher", async () => {
      assert.equal(
        (await post(`${node.url}/v3/kv/put`, JSON.stringify({ key: b64("k"), value: b64("v") })))
          .status,
        200,
      );
      const c = await Raw.open(port);
      const body = JSON.stringify({
        create_request: { key: b64("k"), progress_notify: true },
      });
      await c.send(
        `POST /v3/watch HTTP/1.1\r\nHost: localhost\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
      );
      assert.equal((await c.head()).status, 200);
      await until("the watcher to exist", async () => await watchers(node.url) === 1);
      // Progress notifications come every second; three of them outlast 300 ms tenfold.
      for (let i = 0; i < 4; i++) assert.ok(JSON.parse((await c.chunk())!).result);
      c.close();
      await until("the watcher to be released", async () => await watchers(node.url) === 0);
    });
    await t.step("an endless chunked body is cut at --max-request-bytes", async () => {
      const c = await Raw.open(port);
      await c.send(
        "POST /v3/kv/put HTTP/1.1\r\nHost: localhost\r\ntransfer-encoding: chunked\r\n\r\n",
      );
      const answered = c.response();
      answered.catch(() => {});
      const piece = encoder.encode(`1000\r\n${"a".repeat(4096)}\r\n`);
      for (let i = 0; !c.eof && i < 100_000; i++) if (!await c.send(piece)) break;
      const res = await answered;
      assert.equal(res.status, 413);
      // An etcd JSON body may have 4/3 × (--max-request-bytes + 512 KiB) = 832384 bytes.
      assert.match(JSON.parse(res.body).message, /over 832384 bytes/);
      c.close();
    });
  } finally {
    await node.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("http1: a node's fast path answers exactly as the general path", async (t) => {
  // /v3/... takes the fast path; the /v3beta/ alias of the same route goes through Request and
  // handleHttp. Every answer must match: status, body and the headers clients read.
  const { node, dir } = await startNode([
    "--cors",
    "http://allowed.example",
    "--host-whitelist",
    "127.0.0.1,localhost",
  ]);
  const port = Number(new URL(node.url).port);
  const c = await Raw.open(port);
  const send = async (path: string, body: string, extra = "") => {
    await c.send(
      `POST ${path} HTTP/1.1\r\nHost: localhost\r\n${extra}Content-Length: ${
        encoder.encode(body).length
      }\r\n\r\n${body}`,
    );
    return await c.response();
  };
  const same = async (what: string, route: string, body: string, extra = "") => {
    const fast = await send(`/v3/${route}`, body, extra);
    const general = await send(`/v3beta/${route}`, body, extra);
    assert.equal(fast.status, general.status, `${what}: status`);
    assert.deepEqual(JSON.parse(fast.body), JSON.parse(general.body), `${what}: body`);
    for (
      const h of [
        "content-type",
        "raftmeta-leader-url",
        "access-control-allow-origin",
        "access-control-expose-headers",
        "vary",
        "retry-after",
        "allow",
      ]
    ) {
      assert.equal(fast.headers.get(h), general.headers.get(h), `${what}: header ${h}`);
    }
    return fast;
  };
  try {
    const put = await send("/v3/kv/put", JSON.stringify({ key: b64("k"), value: b64("v") }));
    assert.equal(put.status, 200);
    assert.ok(put.headers.has("raftmeta-leader-url"));
    const cases: [string, string, string, string?][] = [
      ["a range", "kv/range", JSON.stringify({ key: b64("k") })],
      ["a missing key", "kv/range", JSON.stringify({ key: b64("nothing") })],
      ["an empty body", "kv/range", ""],
      ["bad JSON", "kv/range", "{"],
      ["a key that is not base64", "kv/range", JSON.stringify({ key: "%%%" })],
      ["JSON nested too deep", "kv/range", "[".repeat(200) + "]".repeat(200)],
      ["a compaction in the future", "kv/compaction", JSON.stringify({ revision: "99999" })],
      ["an unknown lease's time-to-live", "lease/timetolive", JSON.stringify({ ID: "77" })],
      ["a txn compare with a bad target", "kv/txn", JSON.stringify({ compare: [{ target: "X" }] })],
      ["a status", "maintenance/status", "{}"],
      ["a member list", "cluster/member/list", "{}"],
      [
        "an allowed origin",
        "kv/range",
        JSON.stringify({ key: b64("k") }),
        "Origin: http://allowed.example\r\n",
      ],
      [
        "a refused origin",
        "kv/put",
        JSON.stringify({ key: b64("k"), value: b64("w") }),
        "Origin: http://evil.example\r\n",
      ],
      [
        "half a session",
        "kv/put",
        JSON.stringify({ key: b64("k"), value: b64("w") }),
        "raftmeta-client-id: c1\r\n",
      ],
    ];
    for (const [what, route, body, extra] of cases) {
      await t.step(what, async () => {
        await same(what, route, body, extra);
      });
    }
    await t.step("a Host that is not accepted", async () => {
      await c.send(
        `POST /v3/kv/range HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\n\r\n{}`,
      );
      const fast = await c.response();
      await c.send(
        `POST /v3beta/kv/range HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\n\r\n{}`,
      );
      const general = await c.response();
      assert.equal(fast.status, 421);
      assert.deepEqual(JSON.parse(fast.body), JSON.parse(general.body));
    });
    await t.step("the fast path was taken (and only for /v3/ paths)", async () => {
      const text = await (await fetch(`${node.url}/metrics`)).text();
      const n = Number(/^raftmeta_http_fast_requests_total (\d+)$/m.exec(text)![1]);
      // The first put, one per case, the Host case.
      assert.equal(n, 1 + cases.length + 1);
    });
    await t.step("the value written is the value read, either way", async () => {
      const w = await send("/v3/kv/put", JSON.stringify({ key: b64("k"), value: b64("fast") }));
      assert.equal(w.status, 200);
      const r = await send("/v3beta/kv/range", JSON.stringify({ key: b64("k") }));
      assert.equal(atob(JSON.parse(r.body).kvs[0].value), "fast");
    });
  } finally {
    c.close();
    await node.kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
