/**
 * Where linearizable gets lose their speed under `bench:etcd --secure` (issue 20, "cost of
 * security"): the factors one at a time. For each round, each checkout (`--trees`), each cluster
 * size (`--nodes`) and each mode (`--modes`), starts a fresh cluster, preloads the 1,000 keys of
 * bench/etcd_compare.ts's gets, and drives its leader with the same wrk script (64 connections, 2
 * threads, random keys, POST /v3/kv/range) for `--seconds` after a 1 s warm-up. Everything runs
 * interleaved, so all rows see the same machine load; the table gives the mean per row and each
 * mode's ratio to plain within its checkout and cluster size.
 *
 * Modes: `plain`; `auth` (auth on, load as a non-root user with READWRITE on k..l, as
 * `--secure`); `ctls` (HTTPS client port only); `tls` (HTTPS client port and peer TLS with
 * certificates checked both ways, as `--secure`); `tls+auth` (all of it: `--secure`).
 *
 * Also printed per row: the leader's fast-path share (`raftmeta_http_fast_requests_total` over
 * its reads), its CPU time per get (from /proc, Linux only) and the Raft messages it sent its peers
 * per get (each read-index round is one heartbeat to every peer, so this shows how well reads
 * are batched).
 *
 *   deno run -A bench/secure_gets_bench.ts --rounds 2 --seconds 8 --nodes 1,3
 *   deno run -A bench/secure_gets_bench.ts --trees /tmp/old,. --modes plain,tls+auth
 *
 * Needs wrk and openssl.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { makeCerts } from "../scripts/certs.ts";
import { parseWrkOutput, wrkScript } from "./etcd_compare.ts";

const MODES = ["plain", "auth", "ctls", "tls", "tls+auth"] as const;
type Mode = typeof MODES[number];

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "2" },
    seconds: { type: "string", default: "8" },
    nodes: { type: "string", default: "1,3" },
    modes: { type: "string", default: MODES.join(",") },
    trees: { type: "string", default: "." },
    connections: { type: "string", default: "64" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(
    "Usage: deno run -A bench/secure_gets_bench.ts [--rounds N] [--seconds S] [--nodes 1,3]\n" +
      `  [--modes ${MODES.join(",")}] [--trees DIR,DIR] [--connections C]\nNeeds wrk, openssl.`,
  );
  Deno.exit(0);
}
const modes = values.modes.split(",") as Mode[];
for (const m of modes) {
  if (!MODES.includes(m)) throw new Error(`Unknown mode ${m}; modes: ${MODES.join(", ")}`);
}
const nodeCounts = values.nodes.split(",").map(Number);
const trees = values.trees.split(",").map((t) =>
  new URL(t, `file://${Deno.cwd()}/`).pathname.replace(/\/$/, "")
);
const seconds = Number(values.seconds);
const KEYS = 1000;

const dir = Deno.makeTempDirSync({ prefix: "raftmeta-secure-gets-" });
await makeCerts(`${dir}/certs`);
const ca = Deno.readTextFileSync(`${dir}/certs/ca.crt`);
const tlsClient = Deno.createHttpClient({ caCerts: [ca] });

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

const children = new Set<Deno.ChildProcess>();
function stopAll(): void {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
  }
}
Deno.addSignalListener("SIGINT", () => {
  stopAll();
  Deno.exit(130);
});

interface Cluster {
  leaderUrl: string;
  leaderPid: number;
  procs: Deno.ChildProcess[];
}

async function call(
  url: string,
  body: unknown,
  token?: string,
  timeoutMs = 10_000,
): Promise<Record<string, unknown>> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== undefined) headers.authorization = token;
  const res = await fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers,
    signal: AbortSignal.timeout(timeoutMs),
    client: tlsClient,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url}: ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

async function startCluster(tree: string, n: number, mode: Mode, tag: string): Promise<Cluster> {
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`);
  const cp = ids.map(freePort);
  const pp = ids.map(freePort);
  const clientTls = mode === "ctls" || mode === "tls" || mode === "tls+auth";
  const peerTls = mode === "tls" || mode === "tls+auth";
  const scheme = clientTls ? "https" : "http";
  const procs: Deno.ChildProcess[] = [];
  for (const [i, id] of ids.entries()) {
    const c = `${dir}/certs/${id}`;
    const args = [
      "run",
      "-A",
      `${tree}/src/net/main.ts`,
      "--name",
      id,
      "--cluster-id",
      "b",
      "--data-dir",
      `${dir}/${tag}/${id}`,
      "--listen-client",
      `127.0.0.1:${cp[i]}`,
      "--listen-peer",
      `127.0.0.1:${pp[i]}`,
    ];
    if (n > 1) {
      args.push(
        "--peers",
        ids.map((p, j) => `${p}=127.0.0.1:${pp[j]}`).filter((_, j) => j !== i).join(","),
        "--peer-client-urls",
        ids.map((p, j) => `${p}=${scheme}://127.0.0.1:${cp[j]}`).filter((_, j) => j !== i)
          .join(","),
      );
    }
    if (clientTls) {
      args.push(
        "--cert-file",
        `${c}.crt`,
        "--key-file",
        `${c}.key`,
        "--trusted-ca-file",
        `${dir}/certs/ca.crt`,
      );
    }
    if (peerTls) {
      args.push(
        "--peer-cert-file",
        `${c}.crt`,
        "--peer-key-file",
        `${c}.key`,
        "--peer-trusted-ca-file",
        `${dir}/certs/ca.crt`,
        "--peer-client-cert-auth",
      );
    }
    const p = new Deno.Command(Deno.execPath(), {
      args,
      env: { RAFTMETA_CLUSTER_SECRET: "bench-secret-bench-secret" },
      stdout: "null",
      stderr: "null",
    }).spawn();
    children.add(p);
    procs.push(p);
  }
  const urls = cp.map((p) => `${scheme}://127.0.0.1:${p}`);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    for (const [i, u] of urls.entries()) {
      try {
        const res = await fetch(`${u}/v1/status?local=1`, {
          signal: AbortSignal.timeout(300),
          client: tlsClient,
        });
        const body = await res.json();
        if (body?.node?.role === "Leader") return { leaderUrl: u, leaderPid: procs[i].pid, procs };
      } catch { /* not yet */ }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no leader in 30 s (${tree}, ${n} nodes, ${mode})`);
}

async function stopCluster(c: Cluster): Promise<void> {
  for (const p of c.procs) {
    try {
      p.kill("SIGKILL");
    } catch { /* gone */ }
  }
  await Promise.all(c.procs.map((p) => p.status));
  for (const p of c.procs) children.delete(p);
}

async function enableAuth(url: string): Promise<string> {
  const a = (path: string, body: unknown) => call(`${url}/v3/auth/${path}`, body);
  await a("user/add", { name: "root", password: "rootpw" });
  await a("user/grant", { user: "root", role: "root" });
  await a("role/add", { name: "benchrole" });
  await a("role/grant", {
    name: "benchrole",
    perm: { permType: "READWRITE", key: btoa("k"), range_end: btoa("l") },
  });
  await a("user/add", { name: "bench", password: "benchpw" });
  await a("user/grant", { user: "bench", role: "benchrole" });
  await a("enable", {});
  const login = await a("authenticate", { name: "bench", password: "benchpw" });
  return login.token as string;
}

async function preload(url: string, token?: string): Promise<void> {
  const value = btoa("v".repeat(256));
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < KEYS) {
      const k = btoa(`k${String(next++).padStart(7, "0")}`);
      await call(`${url}/v3/kv/put`, { key: k, value }, token);
    }
  }));
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { client: tlsClient })).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " ") || l.startsWith(name + "{"));
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(" ") + 1));
}

/** CPU seconds (user + system) of process `pid`, from /proc. */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (100/s)
}

async function wrk(url: string, secs: number, token?: string) {
  const script = `${dir}/get-${token === undefined ? "plain" : "auth"}.lua`;
  Deno.writeTextFileSync(script, wrkScript("get", KEYS, token));
  const out = await new Deno.Command("wrk", {
    args: ["-t2", `-c${values.connections}`, `-d${secs}s`, "--timeout", "10s", "-s", script, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return parseWrkOutput(new TextDecoder().decode(out.stdout));
}

interface Row {
  rps: number[];
  fastShare: number[];
  cpuUsPerGet: number[];
  peerMessagesPerGet: number[];
  errors: number;
}
const rows = new Map<string, Row>();
const rounds = Number(values.rounds);
let run = 0;
try {
  for (let round = 1; round <= rounds; round++) {
    for (const n of nodeCounts) {
      for (const mode of modes) {
        for (const tree of trees) {
          const tag = `r${++run}`;
          const c = await startCluster(tree, n, mode, tag);
          try {
            const token = mode.includes("auth") ? await enableAuth(c.leaderUrl) : undefined;
            await preload(c.leaderUrl, token);
            await wrk(c.leaderUrl, 1, token);
            const fast0 = await metric(c.leaderUrl, "raftmeta_http_fast_requests_total");
            const sent0 = await metric(c.leaderUrl, "raftmeta_peer_messages_sent_total");
            const cpu0 = cpuSeconds(c.leaderPid);
            const r = await wrk(c.leaderUrl, seconds, token);
            const cpu1 = cpuSeconds(c.leaderPid);
            const fast1 = await metric(c.leaderUrl, "raftmeta_http_fast_requests_total");
            const sent1 = await metric(c.leaderUrl, "raftmeta_peer_messages_sent_total");
            const key = `${tree}|${n}|${mode}`;
            const row = rows.get(key) ??
              { rps: [], fastShare: [], cpuUsPerGet: [], peerMessagesPerGet: [], errors: 0 };
            row.rps.push(r.requestsPerSecond);
            row.fastShare.push((fast1 - fast0 - 1) / r.requests);
            row.cpuUsPerGet.push((cpu1 - cpu0) / r.requests * 1e6);
            row.peerMessagesPerGet.push((sent1 - sent0) / r.requests);
            row.errors += r.errors;
            rows.set(key, row);
            console.log(
              `round ${round} ${tree} ${n} node(s) ${mode.padEnd(8)} ${
                Math.round(r.requestsPerSecond)
              } req/s p50 ${r.latencyMsP50.toFixed(2)} p99 ${r.latencyMsP99.toFixed(1)} ms, ` +
                `leader CPU ${((cpu1 - cpu0) / r.requests * 1e6).toFixed(0)} µs/get, fast ${
                  ((fast1 - fast0 - 1) / r.requests * 100).toFixed(0)
                }%, peer messages ${((sent1 - sent0) / r.requests).toFixed(2)}/get` +
                (r.errors > 0 ? `, errors ${r.errors}` : ""),
            );
          } finally {
            await stopCluster(c);
          }
        }
      }
    }
  }
} finally {
  stopAll();
  tlsClient.close();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
console.log(
  "\n| checkout | nodes | mode | gets/s (rounds) | ÷ plain | leader CPU µs/get | peer msgs/get | fast path |",
);
console.log("|---|---:|---|---|---:|---:|---:|---:|");
for (const tree of trees) {
  for (const n of nodeCounts) {
    const plain = rows.get(`${tree}|${n}|plain`);
    for (const mode of modes) {
      const row = rows.get(`${tree}|${n}|${mode}`);
      if (row === undefined) continue;
      const ratio = plain === undefined ? "–" : `${(mean(row.rps) / mean(plain.rps)).toFixed(2)}×`;
      console.log(
        `| ${tree} | ${n} | ${mode} | ${Math.round(mean(row.rps))} (${
          row.rps.map((x) => Math.round(x)).join(", ")
        }) | ${ratio} | ${mean(row.cpuUsPerGet).toFixed(0)} | ${
          mean(row.peerMessagesPerGet).toFixed(2)
        } | ${(mean(row.fastShare) * 100).toFixed(0)}% |` +
          (row.errors > 0 ? ` errors ${row.errors}` : ""),
      );
    }
  }
}
