/**
 * The adversarial suite (`deno task attack`, and part of `deno task test`): hostile requests
 * against a real 3-node cluster of node processes. After every attack each node must still be
 * alive and answering, the leader must keep its term (no request may keep it from heartbeating
 * within the election timeout), and every node's resident memory must stay under the documented
 * bound. A writer puts keys all along; at the end every node is killed and restarted and every
 * acknowledged write must be there.
 *
 * `ATTACK_SCALE=N` (default 1) multiplies the sizes of the attacks; `ATTACK_ONLY=REGEX` runs only
 * the attacks whose names match.
 */

import assert from "node:assert/strict";
import { b64, type NodeProcess, post, ProcessCluster } from "./net_helpers.ts";

const SCALE = Math.max(1, Number(Deno.env.get("ATTACK_SCALE") ?? "1") || 1);
const ONLY = new RegExp(Deno.env.get("ATTACK_ONLY") ?? "");
/** The bound every node's resident set stays under in this suite (README: "Limits"). */
const RSS_BOUND_MIB = 512;
/** The store quota of the attacked cluster (`--quota-backend-bytes`). */
const QUOTA_BYTES = 32 * 1024 * 1024;
/** The attacked cluster's `--http-header-timeout-ms` (short, so slowloris is cut soon). */
const HEAD_TIMEOUT_MS = 2000;
/** The attacked cluster's `--max-connections`. */
const CONNECTIONS_MAX = 300;

/** Resident set size of a process in MiB, from /proc (undefined where there is no /proc). */
function rssMiB(pid: number): number | undefined {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = /VmRSS:\s+(\d+) kB/.exec(status);
    return kb === null ? undefined : Number(kb[1]) / 1024;
  } catch {
    return undefined;
  }
}

/** The worst event-loop stall a node reports for the last 10-20 s in /metrics, in ms. */
async function loopStallMs(node: NodeProcess): Promise<number | undefined> {
  try {
    const res = await fetch(`${node.url}/metrics`, { signal: AbortSignal.timeout(2000) });
    const text = await res.text();
    const m = /^raftmeta_event_loop_stall_recent_ms(?:\{[^}]*\})?\s+([0-9.e+]+)$/m.exec(text);
    return m === null ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** Puts unique keys one after another; remembers which ones were acknowledged. */
class AckedWriter {
  readonly acked: string[] = [];
  refused = 0;
  #stop = false;
  #done: Promise<void>;

  constructor(cluster: ProcessCluster) {
    this.#done = this.#run(cluster);
  }

  async #run(cluster: ProcessCluster): Promise<void> {
    for (let i = 0; !this.#stop; i++) {
      const node = cluster.nodes[i % cluster.nodes.length];
      const key = `/acked/${String(i).padStart(6, "0")}`;
      try {
        const r = await post(
          `${node.url}/v3/kv/put`,
          JSON.stringify({ key: b64(key), value: b64(`v${i}`) }),
        );
        if (r.status === 200) this.acked.push(key);
        else this.refused++;
      } catch {
        this.refused++;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#done;
  }
}

interface Context {
  cluster: ProcessCluster;
  leader: NodeProcess;
  term: number;
  /** Peer address of each node, from its arguments. */
  peerPort: Map<string, number>;
  stalls: Map<string, number>;
  /** Largest resident set seen per node, MiB. */
  rssMax: Map<string, number>;
}

/** Checks that every node is alive and answering, the leader kept its term, memory is bounded. */
async function checkHealthy(ctx: Context, attack: string): Promise<void> {
  for (const node of ctx.cluster.nodes) {
    const exited = await Promise.race([
      node.exited.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 0)),
    ]);
    assert.equal(exited, false, `${attack}: ${node.id} exited\n${node.stderr}`);
    const deadline = Date.now() + 5000;
    let row = await node.local();
    while (row === undefined && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      row = await node.local();
    }
    assert.ok(row !== undefined, `${attack}: ${node.id} does not answer /v1/status`);
    assert.equal(
      row.term,
      ctx.term,
      `${attack}: ${node.id} is in term ${row.term}, not ${ctx.term}: an election happened`,
    );
    const rss = rssMiB(node.process.pid);
    if (rss !== undefined) {
      ctx.rssMax.set(node.id, Math.max(ctx.rssMax.get(node.id) ?? 0, rss));
      assert.ok(rss < RSS_BOUND_MIB, `${attack}: ${node.id} uses ${rss.toFixed(0)} MiB`);
    }
    const stall = await loopStallMs(node);
    if (stall !== undefined) ctx.stalls.set(`${attack} ${node.id}`, stall);
  }
  const leader = await ctx.leader.local();
  assert.equal(leader?.role, "Leader", `${attack}: ${ctx.leader.id} is no longer the leader`);
}

/** Sends raw bytes on a new TCP connection; returns what came back (up to `readMax` bytes). */
async function raw(port: number, bytes: Uint8Array, readMax = 64 * 1024): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(bytes);
    await conn.closeWrite(); // the request ends here, whatever it announced
    const buf = new Uint8Array(readMax);
    let got = 0;
    const deadline = Date.now() + 5000;
    while (got < readMax && Date.now() < deadline) {
      const n = await Promise.race([
        conn.read(buf.subarray(got)),
        new Promise<null>((r) => setTimeout(() => r(null), deadline - Date.now())),
      ]);
      if (n === null) break;
      got += n;
      if (new TextDecoder().decode(buf.subarray(0, got)).includes("\r\n\r\n")) break;
    }
    return new TextDecoder().decode(buf.subarray(0, got));
  } finally {
    try {
      conn.close();
    } catch { /* closed by the server */ }
  }
}

const ATTACKS: [string, (ctx: Context) => Promise<void>][] = [
  ["lease IDs at the edge of the integer range", async (ctx) => {
    const url = `${ctx.leader.url}/v3/lease/grant`;
    const first = await post(url, JSON.stringify({ TTL: "60", ID: "9007199254740991" }));
    assert.ok(first.status === 200 || first.status === 400, JSON.stringify(first));
    for (let i = 0; i < 3; i++) {
      const r = await post(url, JSON.stringify({ TTL: "60" }));
      assert.equal(r.status, 200, `automatic grant ${i}: ${JSON.stringify(r.json)}`);
    }
    for (const id of ["9223372036854775807", "9223372036854775808", "-1", "1e3", "0x10"]) {
      const r = await post(url, JSON.stringify({ TTL: "60", ID: id }));
      assert.ok(r.status < 500, `grant with ID ${id}: ${r.status} ${JSON.stringify(r.json)}`);
    }
  }],

  ["a stranger on the peer port", async (ctx) => {
    const port = ctx.peerPort.get(ctx.leader.id)!;
    // A hello with a made-up MAC, then an AppendEntries-sized frame: never past the handshake.
    const hello = new TextEncoder().encode(
      JSON.stringify({ clusterId: "test", from: "n2", to: ctx.leader.id, nonce: "x", mac: "00" }),
    );
    const frame = new Uint8Array(5 + hello.length);
    new DataView(frame.buffer).setUint32(0, hello.length + 1);
    frame[4] = 2;
    frame.set(hello, 5);
    await raw(port, frame).catch(() => "");
  }],

  ["100 unauthenticated peer connections announcing 64 MiB frames", async (ctx) => {
    const port = ctx.peerPort.get(ctx.leader.id)!;
    const conns: Deno.Conn[] = [];
    const junk = new Uint8Array(64 * 1024).fill(0x41);
    try {
      for (let i = 0; i < 100; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        conns.push(conn);
        const head = new Uint8Array(5);
        new DataView(head.buffer).setUint32(0, 64 * 1024 * 1024 - 1);
        head[4] = 2;
        try {
          await conn.write(head);
          for (let j = 0; j < 64 * SCALE; j++) await conn.write(junk);
        } catch { /* the node closed it: what we want */ }
      }
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    }
  }],

  ["a read-only txn of 128 full-range reads", async (ctx) => {
    const value = b64("x".repeat(1024));
    for (let i = 0; i < 200 * SCALE; i++) {
      const r = await post(
        `${ctx.leader.url}/v3/kv/put`,
        JSON.stringify({ key: b64(`/bulk/${i}`), value }),
      );
      assert.equal(r.status, 200);
    }
    const ranges = Array.from({ length: 128 }, () => ({
      request_range: { key: b64("\0"), range_end: b64("\0") },
    }));
    const r = await post(`${ctx.leader.url}/v3/kv/txn`, JSON.stringify({ success: ranges }));
    assert.ok(r.status < 500, `${r.status} ${JSON.stringify(r.json).slice(0, 200)}`);
  }],

  ["JSON nested 500,000 levels deep", async (ctx) => {
    const body = "[".repeat(500_000) + "]".repeat(500_000);
    for (const path of ["/v3/kv/put", "/v3/kv/txn", "/v3/watch"]) {
      const r = await post(`${ctx.leader.url}${path}`, body);
      assert.equal(r.status, 400, `${path}: ${r.status}`);
    }
  }],

  ["the log transfer on the client port", async (ctx) => {
    const res = await fetch(`${ctx.leader.url}/v1/raft/log?for=n2`);
    await res.body?.cancel();
    assert.equal(res.status, 404, "the client port serves the peer-only log transfer");
  }],

  ["a Content-Length longer than the body", async (ctx) => {
    const port = Number(new URL(ctx.leader.url).port);
    const req =
      "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
      "Content-Length: 1000\r\nConnection: close\r\n\r\n" + '{"key":"YQ=="}';
    const answer = await raw(port, new TextEncoder().encode(req)).catch((e) => String(e));
    assert.match(answer, /^HTTP\/1\.1 4\d\d/, answer.slice(0, 100));
  }],

  ["a cross-origin form POST", async (ctx) => {
    const res = await fetch(`${ctx.leader.url}/v3/kv/put`, {
      method: "POST",
      headers: { origin: "http://evil.example", "content-type": "text/plain" },
      body: JSON.stringify({ key: b64("/csrf"), value: b64("owned") }),
    });
    await res.body?.cancel();
    assert.equal(res.status, 403);
    const got = await post(`${ctx.leader.url}/v3/kv/range`, JSON.stringify({ key: b64("/csrf") }));
    assert.equal(got.json.kvs, undefined, "the cross-origin write was applied");
  }],

  ["1 MiB overwrites of one key until the quota refuses them", async (ctx) => {
    const url = ctx.leader.url;
    const big = btoa("v".repeat(1024 * 1024));
    let refused: { status: number; json: { error?: string } } | undefined;
    for (let i = 0; i < 200 * SCALE && refused === undefined; i++) {
      const r = await post(`${url}/v3/kv/put`, JSON.stringify({ key: b64("/big"), value: big }));
      if (r.status !== 200) refused = r;
    }
    assert.equal(refused?.status, 429, `never refused: ${JSON.stringify(refused)}`);
    assert.equal(refused?.json.error, "etcdserver: mvcc: database space exceeded");
    // Reads still served; delete, compact and disarm free it again.
    assert.equal(
      (await post(`${url}/v3/kv/range`, JSON.stringify({ key: b64("/a") }))).status,
      200,
    );
    const del = await post(`${url}/v3/kv/deleterange`, JSON.stringify({ key: b64("/big") }));
    assert.equal(del.status, 200);
    const revision = del.json.header.revision;
    assert.equal(
      (await post(`${url}/v3/kv/compaction`, JSON.stringify({ revision, physical: true }))).status,
      200,
    );
    const disarm = await post(
      `${url}/v3/maintenance/alarm`,
      JSON.stringify({ action: "DEACTIVATE", memberID: "0", alarm: "NOSPACE" }),
    );
    assert.equal(disarm.status, 200);
    const again = await post(`${url}/v3/kv/put`, JSON.stringify({ key: b64("/b"), value: big }));
    assert.equal(again.status, 200, JSON.stringify(again.json));
  }],

  ["a keep-alive stream of deeply nested lines", async (ctx) => {
    const line = "[".repeat(100_000) + "]".repeat(100_000) + "\n";
    const r = await post(`${ctx.leader.url}/v3/lease/keepalive`, line.repeat(5));
    assert.ok(r.status < 500, `${r.status}`);
  }],

  ["200 connections that send half a request and wait", async (ctx) => {
    const port = Number(new URL(ctx.leader.url).port);
    const conns: Deno.Conn[] = [];
    try {
      for (let i = 0; i < 200; i++) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        conns.push(c);
        await c.write(new TextEncoder().encode("POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
      }
      // The node still serves others meanwhile.
      const r = await post(`${ctx.leader.url}/v3/kv/range`, JSON.stringify({ key: b64("/a") }));
      assert.equal(r.status, 200);
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by the server */ }
      }
    }
  }],

  ["50 slowloris connections trickling their request heads", async (ctx) => {
    const port = Number(new URL(ctx.leader.url).port);
    const conns = await Promise.all(
      Array.from({ length: 50 }, () => Deno.connect({ hostname: "127.0.0.1", port })),
    );
    const cut = new Set<number>();
    // Each connection is cut when the node closes it (after its 408).
    const readers = conns.map(async (c, i) => {
      const buf = new Uint8Array(4096);
      try {
        while (await c.read(buf) !== null) { /* the 408 */ }
      } catch { /* reset */ }
      cut.add(i);
    });
    const head = new TextEncoder().encode("POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    const oneByte = new TextEncoder().encode("x");
    try {
      for (const c of conns) await c.write(head);
      const deadline = Date.now() + 15 * HEAD_TIMEOUT_MS;
      while (cut.size < conns.length && Date.now() < deadline) {
        for (const [i, c] of conns.entries()) {
          if (cut.has(i)) continue;
          try {
            await c.write(oneByte);
          } catch {
            cut.add(i);
          }
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(
        cut.size,
        conns.length,
        `${conns.length - cut.size} of ${conns.length} connections trickling a byte every 250 ms ` +
          `were never cut (--http-header-timeout-ms ${HEAD_TIMEOUT_MS})`,
      );
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by the server */ }
      }
      await Promise.all(readers);
    }
  }],

  [`${CONNECTIONS_MAX + 100} idle connections to one node`, async (ctx) => {
    const port = Number(new URL(ctx.leader.url).port);
    const conns: Deno.Conn[] = [];
    try {
      for (let i = 0; i < CONNECTIONS_MAX + 100; i++) {
        conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      }
      // Over the cap a connection gets a 503 at once; under it, nothing until the head timeout.
      const answers = await Promise.all(conns.map(async (c) => {
        const buf = new Uint8Array(512);
        let timer: ReturnType<typeof setTimeout> | undefined;
        try {
          const n = await Promise.race([
            c.read(buf),
            new Promise<null>((r) => timer = setTimeout(() => r(null), HEAD_TIMEOUT_MS / 2)),
          ]);
          return n === null ? "" : new TextDecoder().decode(buf.subarray(0, n));
        } catch {
          return "reset";
        } finally {
          clearTimeout(timer);
        }
      }));
      // Past a few hundred refusals at once the node closes without answering (a reset).
      const refused = answers.filter((a) => a.startsWith("HTTP/1.1 503 "));
      const reset = answers.filter((a) => a === "reset");
      assert.ok(
        refused.length + reset.length >= 100 && refused.length > 0,
        `${refused.length} of ${conns.length} connections were refused, ${reset.length} reset ` +
          `(--max-connections ${CONNECTIONS_MAX})`,
      );
      assert.match(refused[0], /retry-after: 1\r\n/);
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by the server */ }
      }
    }
  }],
];

Deno.test("attack suite: hostile requests against a 3-node cluster", async (t) => {
  // A small quota so the overwrite attack reaches it in a few dozen writes.
  const cluster = ProcessCluster.start(3, [
    "--quota-backend-bytes",
    String(QUOTA_BYTES),
    "--http-header-timeout-ms",
    String(HEAD_TIMEOUT_MS),
    "--max-connections",
    String(CONNECTIONS_MAX),
  ]);
  try {
    const leader = await cluster.waitForLeader();
    const term = (await leader.local())!.term as number;
    const peerPort = new Map(cluster.nodes.map((n) => {
      const i = n.args.indexOf("--listen-peer");
      return [n.id, Number(n.args[i + 1].split(":")[1])] as const;
    }));
    const ctx: Context = { cluster, leader, term, peerPort, stalls: new Map(), rssMax: new Map() };
    const writer = new AckedWriter(cluster);
    for (const [name, attack] of ATTACKS.filter(([name]) => ONLY.test(name))) {
      await t.step(name, async () => {
        try {
          await attack(ctx);
          await checkHealthy(ctx, name);
        } finally {
          // A failed attack must not be blamed on the next one: start it from the current leader.
          ctx.leader = await cluster.waitForLeader({ timeoutMs: 30_000 });
          ctx.term = (await ctx.leader.local())!.term as number;
        }
      });
    }
    await writer.stop();
    assert.ok(writer.acked.length > 0, "no write was acknowledged during the attacks");

    await t.step("every acknowledged write survives a restart of every node", async () => {
      await Promise.all(cluster.nodes.map((n) => n.kill()));
      for (const n of cluster.nodes) n.restart();
      const newLeader = await cluster.waitForLeader({ timeoutMs: 30_000 });
      const r = await post(
        `${newLeader.url}/v3/kv/range`,
        JSON.stringify({ key: b64("/acked/"), range_end: b64("/acked0"), keys_only: true }),
      );
      assert.equal(r.status, 200);
      const have = new Set((r.json.kvs ?? []).map((kv: { key: string }) => atob(kv.key)));
      const lost = writer.acked.filter((k) => !have.has(k));
      assert.deepEqual(
        lost,
        [],
        `${lost.length} of ${writer.acked.length} acknowledged writes lost`,
      );
    });
    const rss = [...ctx.rssMax].map(([id, mib]) => `${id} ${mib.toFixed(0)} MiB`).join(", ");
    console.log(`largest resident set during the attacks: ${rss}`);
    if (ctx.stalls.size > 0) {
      console.log("worst event-loop stall in the 10-20 s up to the end of each attack (ms):");
      for (const [k, v] of ctx.stalls) console.log(`  ${k}: ${v}`);
    }
  } finally {
    await cluster.stop();
  }
});
