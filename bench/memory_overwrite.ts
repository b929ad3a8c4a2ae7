/**
 * Memory under the overwrite attack of issue 14 item 5: N overwrites of one key with 1 MiB values
 * on a 3-node cluster of real processes, then each node's resident set (VmRSS from
 * /proc/<pid>/status), before and after a restart of every node.
 *
 *   deno run -A bench/memory_overwrite.ts [--writes 1500] [-- extra serve flags]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { post, ProcessCluster } from "../tests/net_helpers.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: { writes: { type: "string", default: "1500" } },
  allowPositionals: true,
});
const writes = Number(values.writes);
const MiB = 1024 * 1024;

function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return Math.round(kb / 1024);
}

const value = btoa(String.fromCharCode(...new Uint8Array(1024)).repeat(MiB / 1024));
const cluster = ProcessCluster.start(3, positionals);
try {
  let leader = await cluster.waitForLeader();
  let ok = 0;
  const refused = new Map<string, number>();
  for (let i = 0; i < writes; i++) {
    const r = await post(`${leader.url}/v3/kv/put`, JSON.stringify({ key: btoa("/big"), value }));
    if (r.status === 200) ok++;
    else {
      const why = `${r.status} ${r.json?.error}`;
      refused.set(why, (refused.get(why) ?? 0) + 1);
      if (r.status === 503) leader = await cluster.waitForLeader();
    }
  }
  const rows = cluster.nodes.map((n) => `${n.id} ${rssMiB(n.process.pid)} MiB`);
  console.log(
    `${writes} x 1 MiB overwrites: ${ok} accepted, refused: ${JSON.stringify([...refused])}`,
  );
  console.log(`RSS after the writes: ${rows.join(", ")}`);
  for (const n of cluster.nodes) await n.kill();
  for (const n of cluster.nodes) n.restart();
  await cluster.waitForLeader({ timeoutMs: 120_000 });
  await new Promise((r) => setTimeout(r, 2000));
  console.log(
    `RSS after restart: ${
      cluster.nodes.map((n) => `${n.id} ${rssMiB(n.process.pid)} MiB`).join(", ")
    }`,
  );
} finally {
  await cluster.stop();
}
