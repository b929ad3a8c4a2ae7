/**
 * The cost of auth on the client port (not a timed test): a single-node cluster with auth
 * disabled and one with auth enabled, where every request carries a token of a user whose role
 * holds `--permissions` prefix permissions (the key read and written is under the last one), in
 * alternating rounds; `wrk` drives POST /v3/kv/range and /v3/kv/put over keep-alive connections.
 * Prints requests per second per round and the ratio auth / no auth. Logins (one PBKDF2 hash
 * each, 210,000 iterations by default) are not in the loop: a client logs in once per node.
 *
 *   deno run -A bench/auth_bench.ts --rounds 2 --seconds 10 --connections 32 --permissions 100
 *
 * @module
 */

import { parseArgs } from "node:util";
import { b64, freePort, NodeProcess, post, until } from "../tests/net_helpers.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "2" },
    seconds: { type: "string", default: "10" },
    connections: { type: "string", default: "32" },
    threads: { type: "string", default: "2" },
    permissions: { type: "string", default: "100" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(
    "Usage: deno run -A bench/auth_bench.ts [--rounds N] [--seconds S] [--connections C] " +
      "[--threads T] [--permissions P]\nNeeds wrk on PATH.",
  );
  Deno.exit(0);
}

const dir = await Deno.makeTempDir({ prefix: "raftmeta-auth-bench-" });
const permissions = Number(values.permissions);
const key = `/p${String(permissions - 1).padStart(5, "0")}/k`;
const lua = (name: string, body: string, token?: string) => {
  const file = `${dir}/${name}.lua`;
  Deno.writeTextFileSync(
    file,
    `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\n` +
      `wrk.headers["Content-Type"] = "application/json"\n` +
      (token === undefined ? "" : `wrk.headers["Authorization"] = ${JSON.stringify(token)}\n`),
  );
  return file;
};

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
  if (non2xx !== null) throw new Error(`${non2xx[1]} non-2xx responses: the setup is wrong`);
  return Number(rps[1]);
}

/** Sets up root, a role with `permissions` prefixes, its user; enables auth; returns a token. */
async function setUp(url: string): Promise<string> {
  const ok = async (path: string, body: Record<string, unknown>, token?: string) => {
    const r = await post(url + path, JSON.stringify(body), token ? { authorization: token } : {});
    if (r.status !== 200) throw new Error(`${path}: ${JSON.stringify(r.json)}`);
    return r.json;
  };
  await ok("/v3/auth/user/add", { name: "root", password: "root-pw" });
  await ok("/v3/auth/user/grant", { user: "root", role: "root" });
  await ok("/v3/auth/role/add", { name: "app" });
  for (let i = 0; i < permissions; i++) {
    const p = `/p${String(i).padStart(5, "0")}/`;
    await ok("/v3/auth/role/grant", {
      name: "app",
      perm: { permType: "READWRITE", key: b64(p), range_end: b64(p.slice(0, -1) + "0") },
    });
  }
  await ok("/v3/auth/user/add", { name: "app", password: "app-pw" });
  await ok("/v3/auth/user/grant", { user: "app", role: "app" });
  await ok("/v3/auth/enable", {});
  return (await ok("/v3/auth/authenticate", { name: "app", password: "app-pw" })).token;
}

const results = new Map<string, number[]>();
for (let round = 0; round < Number(values.rounds); round++) {
  for (const mode of ["off", "on"]) {
    const port = freePort();
    const data = `${dir}/data-${round}-${mode}`;
    const url = `http://127.0.0.1:${port}`;
    const node = new NodeProcess("n1", url, data, [
      "--data-dir",
      data,
      "--listen-client",
      `127.0.0.1:${port}`,
      "--listen-peer",
      `127.0.0.1:${freePort()}`,
    ]);
    try {
      await until("the node to serve", async () => {
        const res = await fetch(`${url}/v3/kv/put`, {
          method: "POST",
          body: JSON.stringify({ key: b64(key), value: "" }),
        });
        await res.body?.cancel();
        return res.status === 200;
      }, 30_000);
      const token = mode === "on" ? await setUp(url) : undefined;
      const workloads: [string, string, string][] = [
        ["range", "/v3/kv/range", lua(`range-${mode}`, JSON.stringify({ key: b64(key) }), token)],
        [
          "put",
          "/v3/kv/put",
          lua(
            `put-${mode}`,
            JSON.stringify({ key: b64(key), value: b64("x".repeat(100)) }),
            token,
          ),
        ],
      ];
      for (const [name, path, script] of workloads) {
        const rps = await wrk(url + path, script);
        const k = `${name} ${mode}`;
        results.set(k, [...(results.get(k) ?? []), rps]);
        console.log(`round ${round + 1} ${name} auth ${mode}: ${rps.toFixed(0)} req/s`);
      }
    } finally {
      await node.kill();
    }
  }
}
await Deno.remove(dir, { recursive: true });
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
for (const name of ["range", "put"]) {
  const off = mean(results.get(`${name} off`)!);
  const on = mean(results.get(`${name} on`)!);
  console.log(
    `${name}: auth off ${off.toFixed(0)} req/s, auth on ${on.toFixed(0)} req/s ` +
      `(${permissions} permissions), ratio on/off ${(on / off).toFixed(2)}`,
  );
}
