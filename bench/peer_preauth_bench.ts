/**
 * Memory a stranger can make a node hold through its peer port before proving the cluster secret.
 * Starts one node process (with a peer that never answers), opens `--connections` connections to
 * its peer port, and on each announces a frame of `--announce-bytes` (default 64 MiB − 1, the
 * largest frame an authenticated peer may send) and sends data for `--seconds`
 * (less than the 3 s handshake timeout), in `--chunk-bytes` pieces every `--interval-ms`. Prints
 * the node's resident memory (VmRSS from /proc, Linux only) before, at its peak during the attack,
 * and 2 s after, and whether the node still answered /health during it.
 *
 *     deno run -A bench/peer_preauth_bench.ts [--connections 100] [--seconds 2.5]
 *       [--chunk-bytes 65536] [--interval-ms 0] [--announce-bytes 67108863]
 *
 * @module
 */

import { parseArgs } from "node:util";

const MAIN = new URL("../src/net/main.ts", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]);
  return kb / 1024;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      connections: { type: "string", default: "100" },
      seconds: { type: "string", default: "2.5" },
      "chunk-bytes": { type: "string", default: "65536" },
      "interval-ms": { type: "string", default: "0" },
      "announce-bytes": { type: "string", default: String(64 * 1024 * 1024 - 1) },
    },
  });
  const connections = Number(values.connections);
  const seconds = Number(values.seconds);
  const chunkBytes = Number(values["chunk-bytes"]);
  const intervalMs = Number(values["interval-ms"]);
  const announceBytes = Number(values["announce-bytes"]);
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-preauth-" });
  const clientPort = freePort();
  const peerPort = freePort();
  const node = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "--data-dir",
      `${dir}/n1`,
      "--listen-client",
      `127.0.0.1:${clientPort}`,
      "--listen-peer",
      `127.0.0.1:${peerPort}`,
      "--peers",
      `n2=127.0.0.1:${freePort()}`,
      "--probe-ms",
      "10",
    ],
    env: { RAFTMETA_CLUSTER_SECRET: crypto.randomUUID() },
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    const url = `http://127.0.0.1:${clientPort}`;
    for (let i = 0; i < 300; i++) {
      try {
        await (await fetch(`${url}/v1/status?local=1`)).body?.cancel();
        break;
      } catch {
        await sleep(50);
      }
    }
    await sleep(500);
    const before = rssMiB(node.pid);
    let peak = before;
    let sent = 0;
    let closedByNode = 0;
    let healthWorstMs = 0;
    const stopAt = performance.now() + seconds * 1000;
    const chunk = new Uint8Array(chunkBytes).fill(0x5a);
    const attack = Array.from({ length: connections }, async () => {
      let conn: Deno.Conn;
      try {
        conn = await Deno.connect({ hostname: "127.0.0.1", port: peerPort });
      } catch {
        closedByNode++;
        return;
      }
      try {
        const head = new Uint8Array(4);
        new DataView(head.buffer).setUint32(0, announceBytes);
        await conn.write(head);
        while (performance.now() < stopAt) {
          sent += await conn.write(chunk);
          if (intervalMs > 0) await sleep(intervalMs);
        }
      } catch {
        closedByNode++;
      } finally {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    });
    const sampler = (async () => {
      while (performance.now() < stopAt) {
        peak = Math.max(peak, rssMiB(node.pid));
        const t = performance.now();
        try {
          await (await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) })).body
            ?.cancel();
        } catch { /* counted as slow below */ }
        healthWorstMs = Math.max(healthWorstMs, performance.now() - t);
        await sleep(50);
      }
    })();
    await Promise.all([...attack, sampler]);
    peak = Math.max(peak, rssMiB(node.pid));
    await sleep(2000);
    const after = rssMiB(node.pid);
    console.log(
      JSON.stringify({
        connections,
        seconds,
        chunkBytes,
        intervalMs,
        announceBytes,
        sentMiB: +(sent / 1024 / 1024).toFixed(1),
        connectionsClosedByNode: closedByNode,
        rssMiB: { before: +before.toFixed(1), peak: +peak.toFixed(1), after: +after.toFixed(1) },
        healthWorstMs: Math.round(healthWorstMs),
      }),
    );
  } finally {
    node.kill("SIGKILL");
    await node.status;
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
