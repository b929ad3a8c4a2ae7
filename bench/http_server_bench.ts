/**
 * Compares the client port's two HTTP servers (not a timed test): for each of
 * `--http-server raftmeta` and `--http-server deno`, a 3-node cluster of node processes is
 * started and `wrk` drives the leader with POST /v3/kv/range and /v3/kv/put, in alternating
 * rounds so that both servers see the same machine load; prints requests per second per round
 * and the ratio raftmeta / deno.
 *
 *   deno run -A bench/http_server_bench.ts --rounds 2 --seconds 10 --connections 32
 *
 * @module
 */

import { parseArgs } from "node:util";
import { b64, post, ProcessCluster } from "../tests/net_helpers.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "2" },
    seconds: { type: "string", default: "10" },
    connections: { type: "string", default: "32" },
    threads: { type: "string", default: "2" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(
    "Usage: deno run -A bench/http_server_bench.ts [--rounds N] [--seconds S] " +
      "[--connections C] [--threads T]\nNeeds wrk on PATH.",
  );
  Deno.exit(0);
}

const dir = await Deno.makeTempDir({ prefix: "raftmeta-http-bench-" });
const lua = (path: string, body: string) => {
  const file = `${dir}/${path.replaceAll("/", "_")}.lua`;
  Deno.writeTextFileSync(
    file,
    `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\n` +
      `wrk.headers["Content-Type"] = "application/json"\n`,
  );
  return file;
};
const workloads: [string, string, string][] = [
  ["range", "/v3/kv/range", lua("range", JSON.stringify({ key: b64("/bench/k") }))],
  [
    "put",
    "/v3/kv/put",
    lua("put", JSON.stringify({ key: b64("/bench/k"), value: b64("x".repeat(100)) })),
  ],
];

async function wrk(url: string, script: string): Promise<number> {
  const out = await new Deno.Command("wrk", {
    args: [
      `-t${values.threads}`,
      `-c${values.connections}`,
      `-d${values.seconds}s`,
      "-s",
      script,
      url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  if (rps === null) throw new Error(`wrk printed no Requests/sec:\n${text}`);
  if (non2xx !== null) console.log(`  (${non2xx[1]} non-2xx responses)`);
  return Number(rps[1]);
}

const results = new Map<string, number[]>();
for (let round = 0; round < Number(values.rounds); round++) {
  for (const server of ["raftmeta", "deno"]) {
    const cluster = ProcessCluster.start(3, ["--http-server", server]);
    try {
      const leader = await cluster.waitForLeader({ timeoutMs: 30_000 });
      await post(`${leader.url}/v3/kv/put`, JSON.stringify({ key: b64("/bench/k"), value: "" }));
      for (const [name, path, script] of workloads) {
        const rps = await wrk(leader.url + path, script);
        const key = `${name} ${server}`;
        results.set(key, [...(results.get(key) ?? []), rps]);
        console.log(`round ${round + 1} ${key}: ${rps.toFixed(0)} req/s`);
      }
    } finally {
      await cluster.stop();
    }
  }
}
await Deno.remove(dir, { recursive: true });
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
for (const [name] of workloads) {
  const ours = mean(results.get(`${name} raftmeta`)!);
  const deno = mean(results.get(`${name} deno`)!);
  console.log(
    `${name}: raftmeta ${ours.toFixed(0)} req/s, deno ${deno.toFixed(0)} req/s, ` +
      `ratio ${(ours / deno).toFixed(2)}`,
  );
}
