// The real-process fault tests: the fault proxy on its own, then a short `deno task nemesis` run
// (3 node processes, partitions, kills and pauses) that must find nothing, and the same run's
// record with one thing broken at a time, which its checks must catch.

import assert from "node:assert/strict";
import { healthyLink, LinkProxy } from "../src/check/nemesis/proxy.ts";
import { checkRun, type RunRecord } from "../src/check/nemesis/checks.ts";
import { runNemesis } from "../src/check/nemesis/run.ts";

/** An echo server on a free port; returns its port and a closer. */
function echoServer(): { port: number; close: () => void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      conn.readable.pipeTo(conn.writable).catch(() => {});
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close: () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** What one read brings: text, null when the connection closed, "timeout" when nothing came. */
async function readSome(conn: Deno.Conn, timeoutMs: number): Promise<string | null | "timeout"> {
  const buf = new Uint8Array(1024);
  const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), timeoutMs));
  const read = conn.read(buf).then((n) =>
    n === null ? null : new TextDecoder().decode(buf.subarray(0, n))
  )
    .catch(() => null);
  const out = await Promise.race([read, timer]);
  return out;
}

Deno.test("fault proxy: forwards, cuts, stalls, delays and resets a link", async (t) => {
  const echo = echoServer();
  const proxy = new LinkProxy({ hostname: "127.0.0.1", port: echo.port }, () => 0);
  const encode = (s: string) => new TextEncoder().encode(s);
  try {
    await t.step("healthy: bytes go through and back", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await c.write(encode("ping"));
      assert.equal(await readSome(c, 2000), "ping");
      c.close();
    });
    await t.step(
      "stall: nothing forwarded, connection open; healed, the bytes arrive",
      async () => {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
        await c.write(encode("a"));
        assert.equal(await readSome(c, 2000), "a");
        proxy.set({ ...healthyLink(), mode: "stall" });
        await c.write(encode("held"));
        const pending = readSome(c, 5000);
        const early = await Promise.race([
          pending.then(() => "arrived"),
          new Promise((r) => setTimeout(() => r("held back"), 300)),
        ]);
        assert.equal(early, "held back");
        proxy.set(healthyLink());
        assert.equal(await pending, "held");
        c.close();
      },
    );
    await t.step("delay: a chunk arrives no sooner than the delay", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      proxy.set({ ...healthyLink(), delayMs: 300 });
      const start = performance.now();
      await c.write(encode("slow"));
      assert.equal(await readSome(c, 5000), "slow");
      // Two crossings of the link (there and back), each held 300 ms.
      assert.ok(performance.now() - start >= 590, `arrived after ${performance.now() - start} ms`);
      proxy.set(healthyLink());
      c.close();
    });
    await t.step("cut: the open connection is closed, a new one refused", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await c.write(encode("x"));
      assert.equal(await readSome(c, 2000), "x");
      proxy.set({ ...healthyLink(), mode: "cut" });
      assert.equal(await readSome(c, 2000), null);
      c.close();
      const d = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await d.write(encode("y")).catch(() => 0);
      assert.equal(await readSome(d, 2000), null);
      d.close();
      proxy.set(healthyLink());
      const e = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await e.write(encode("z"));
      assert.equal(await readSome(e, 2000), "z", "healed: forwards again");
      e.close();
    });
    await t.step("reset: with rate 1 the first chunk closes the connection", async () => {
      proxy.set({ ...healthyLink(), resetRate: 1 });
      const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await c.write(encode("lost"));
      assert.equal(await readSome(c, 2000), null);
      assert.ok(proxy.resets >= 1);
      c.close();
    });
  } finally {
    proxy.close();
    echo.close();
  }
});

Deno.test({
  name:
    "nemesis: a short run with partitions, kills and pauses finds nothing; broken records are caught",
  // Node processes, sockets and timers of the proxies outlive single steps by design.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "raftmeta-nemesis-test-" });
    let record: RunRecord | undefined;
    let keep = false;
    try {
      await t.step("a 15 s run against 3 processes", async () => {
        const run = await runNemesis({
          seed: 7,
          nodes: 3,
          clients: 3,
          lockWorkers: 2,
          durationS: 15,
          faults: ["partition", "kill", "pause"],
          dir,
        });
        const r = run.report;
        // A failed run keeps its data, logs and histories for a look.
        keep = r.violations.length > 0;
        assert.deepEqual(r.violations, [], JSON.stringify(r, null, 2));
        assert.equal(r.lostAcknowledgedWrites, 0);
        assert.equal(r.linearizability, "linearizable");
        assert.ok(r.faults.total >= 2, `faults: ${JSON.stringify(r.faults.log)}`);
        assert.ok(r.operations.byKind.put > 0 && r.operations.byKind.cas > 0);
        assert.ok(r.operations.byKind.get > 0);
        assert.ok(r.locks.grants > 0, "lock workers were granted the lock");
        assert.ok(r.watch.events > 0 && r.committedEvents > 0);
        record = run.record;
        assert.ok(record !== undefined);
      });
      if (record === undefined) return;
      const rec = record;
      const verdict = (changed: Partial<RunRecord>) => checkRun({ ...rec, ...changed }).violations;

      await t.step("the record as it is passes", () => {
        assert.deepEqual(verdict({}), []);
      });
      await t.step("a watcher that missed an event, or saw one twice, is caught", () => {
        const missing = rec.watched.filter((_, i) => i !== 5);
        assert.match(verdict({ watched: missing }).join("\n"), /watcher .* differ/);
        const twice = [...rec.watched.slice(0, 6), rec.watched[5], ...rec.watched.slice(6)];
        assert.match(verdict({ watched: twice }).join("\n"), /watcher .* differ/);
      });
      await t.step("nodes whose committed histories differ are caught", () => {
        const committed = new Map(rec.committed);
        const [id, events] = [...committed][1];
        committed.set(id, events.slice(0, -1));
        assert.match(verdict({ committed }).join("\n"), /nodes disagree/);
      });
      await t.step("an acknowledged put that never committed is caught", () => {
        const put = rec.ops.find((o) => o.kind === "put" && o.result?.ok === true)!;
        const ops = [...rec.ops, { ...put, id: 1e9, value: "never-sent" }];
        assert.match(verdict({ ops }).join("\n"), /acknowledged put never committed/);
      });
      await t.step("a stale read is caught by the linearizability checker", () => {
        // A get that returned after a later acknowledged put to its key, reading the older value.
        const byKey = Map.groupBy(
          rec.ops.filter((o) => o.kind === "put" && o.result?.ok),
          (o) => o.key,
        );
        const [key, puts] = [...byKey].find(([, ps]) =>
          ps.length >= 2 && ps[0].returnMs! < ps[ps.length - 1].callMs
        )!;
        const [a, b] = [puts[0], puts[puts.length - 1]];
        const ops = [...rec.ops, {
          id: 1e9,
          clientId: "liar",
          kind: "get" as const,
          key,
          callMs: b.returnMs! + 1_000_000,
          returnMs: b.returnMs! + 1_000_001,
          result: { ok: true, value: a.value },
        }];
        assert.match(verdict({ ops }).join("\n"), /not linearizable/);
      });
      await t.step("a lock grant with a token the store never handed out is caught", () => {
        const grant = rec.lockRecords.find((x) => x.kind === "grant")!;
        const lockRecords = rec.lockRecords.map((x) =>
          x === grant ? { ...grant, token: grant.token + 100_000 } : x
        );
        assert.match(verdict({ lockRecords }).join("\n"), /^locks: /m);
      });
    } finally {
      if (keep) console.log(`nemesis run kept in ${dir}`);
      else await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
