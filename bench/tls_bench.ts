/**
 * The cost of TLS on the client port (not a timed test): a single-node cluster started with
 * plain HTTP and one with HTTPS (`--cert-file`/`--key-file`, certificates from scripts/certs.ts),
 * in alternating rounds so both see the same machine load; `wrk` drives POST
 * /v3/kv/range and /v3/kv/put over keep-alive connections. Prints requests per second per round
 * and the ratio https / http. Not measured: `--client-cert-auth` (wrk presents no client
 * certificate) and the peer port.
 *
 *   deno run -A bench/tls_bench.ts --rounds 2 --seconds 10 --connections 32
 *
 * @module
 */

import { parseArgs } from "node:util";
import { b64, freePort, NodeProcess, until } from "../tests/net_helpers.ts";
import { makeCerts } from "../scripts/certs.ts";

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
    "Usage: deno run -A bench/tls_bench.ts [--rounds N] [--seconds S] " +
      "[--connections C] [--threads T]\nNeeds wrk and openssl on PATH.",
  );
  Deno.exit(0);
}

const dir = await Deno.makeTempDir({ prefix: "raftmeta-tls-bench-" });
await makeCerts(`${dir}/certs`, { names: ["n1"] });
const ca = Deno.readTextFileSync(`${dir}/certs/ca.crt`);
const lua = (name: string, body: string) => {
  const file = `${dir}/${name}.lua`;
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
  for (const scheme of ["http", "https"]) {
    const port = freePort();
    const data = `${dir}/data-${round}-${scheme}`;
    const tls = scheme === "https"
      ? ["--cert-file", `${dir}/certs/n1.crt`, "--key-file", `${dir}/certs/n1.key`]
      : [];
    const url = `${scheme}://127.0.0.1:${port}`;
    const node = new NodeProcess("n1", url, data, [
      "--data-dir",
      data,
      "--listen-client",
      `127.0.0.1:${port}`,
      "--listen-peer",
      `127.0.0.1:${freePort()}`,
      ...tls,
    ]);
    const client = Deno.createHttpClient({ caCerts: [ca] });
    try {
      await until("the node to serve", async () => {
        const res = await fetch(`${url}/v3/kv/put`, {
          method: "POST",
          body: JSON.stringify({ key: b64("/bench/k"), value: "" }),
          client,
        });
        await res.body?.cancel();
        return res.status === 200;
      }, 30_000);
      for (const [name, path, script] of workloads) {
        const rps = await wrk(url + path, script);
        const key = `${name} ${scheme}`;
        results.set(key, [...(results.get(key) ?? []), rps]);
        console.log(`round ${round + 1} ${key}: ${rps.toFixed(0)} req/s`);
      }
    } finally {
      client.close();
      await node.kill();
    }
  }
}
await Deno.remove(dir, { recursive: true });
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
for (const [name] of workloads) {
  const plain = mean(results.get(`${name} http`)!);
  const tls = mean(results.get(`${name} https`)!);
  console.log(
    `${name}: http ${plain.toFixed(0)} req/s, https ${tls.toFixed(0)} req/s, ` +
      `ratio https/http ${(tls / plain).toFixed(2)}`,
  );
}
