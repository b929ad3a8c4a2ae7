/**
 * `deno task bench:etcd`: raftmeta side by side with etcd (issue 9). Starts a 3-node raftmeta
 * cluster and a 3-node etcd cluster on 127.0.0.1 (each node with its own data directory in a temp
 * dir, fsync on), drives both with wrk over etcd's v3 JSON paths (`POST /v3/kv/put`,
 * `POST /v3/kv/range`; keys 8 bytes, values 256 bytes, as etcd's published benchmark), then with
 * h2load over etcd's gRPC API (bench/h2load_grpc.ts: one HTTP/2 connection, 1 or 64 streams, puts
 * and linearizable ranges of one key; raftmeta's --listen-grpc port, etcd's client port), and
 * prints two tables. The two clusters run one after the other so neither steals the other's CPU.
 * The tables and the machine they ran on go to bench/RESULTS.md, newest first.
 *
 *   deno task bench:etcd            # 10 s per row
 *   deno task bench:etcd --quick    # 3 s per row
 *
 * Needs /usr/bin/etcd (Debian: etcd-server) and wrk, and h2load (Debian: nghttp2-client) for the
 * gRPC rows (skipped, saying so, without it); installs them with apt-get when run as root.
 * Every process it starts is stopped at the end, on error and on Ctrl-C.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  GRPC_KEY,
  GRPC_WORKLOADS,
  type GrpcWorkload,
  type H2loadResult,
  h2loadRun,
} from "./h2load_grpc.ts";
import { makeCerts } from "../scripts/certs.ts";

/** One load row as wrk measured it. */
export interface WrkResult {
  /** Requests completed. */
  readonly requests: number;
  /** Wall time of the run, seconds. */
  readonly seconds: number;
  /** Requests per second. */
  readonly requestsPerSecond: number;
  /** Median latency, milliseconds. */
  readonly latencyMsP50: number;
  /** 99th percentile latency, milliseconds. */
  readonly latencyMsP99: number;
  /** Socket errors, timeouts and non-2xx answers. */
  readonly errors: number;
}

/** The rows of the table, in order. */
export const WORKLOADS = [
  { name: "sequential puts", connections: 1, threads: 1, kind: "put" },
  { name: "concurrent puts", connections: 64, threads: 2, kind: "put" },
  { name: "linearizable gets", connections: 64, threads: 2, kind: "get" },
] as const;

/** One workload's name. */
export type WorkloadName = typeof WORKLOADS[number]["name"];

/** Results of one system: a row per workload. */
export type SystemResults = Partial<Record<WorkloadName, WrkResult>>;

/** One gRPC row's name. */
export type GrpcWorkloadName = GrpcWorkload["name"];

/** gRPC results of one system (h2load against its gRPC port): a row per gRPC workload. */
export type GrpcResults = Partial<Record<GrpcWorkloadName, H2loadResult>>;

const RESULT_MARK = "BENCH_RESULT ";

/**
 * Parses the line the Lua `done` hook prints (`BENCH_RESULT {json}`) out of wrk's output.
 * Throws when wrk printed none (it failed to start or to connect).
 */
export function parseWrkOutput(text: string): WrkResult {
  const line = text.split("\n").find((l) => l.startsWith(RESULT_MARK));
  if (line === undefined) {
    throw new Error(`wrk printed no result line; its output was:\n${text.slice(0, 2000)}`);
  }
  const o = JSON.parse(line.slice(RESULT_MARK.length));
  const seconds = o.durationUs / 1e6;
  return {
    requests: o.requests,
    seconds,
    requestsPerSecond: seconds > 0 ? o.requests / seconds : 0,
    latencyMsP50: o.p50Us / 1000,
    latencyMsP99: o.p99Us / 1000,
    errors: o.errors,
  };
}

function fmtRate(x: number | undefined): string {
  return x === undefined ? "–" : Math.round(x).toLocaleString("en-US");
}
function fmtMs(x: number | undefined): string {
  if (x === undefined) return "–";
  return x < 10 ? x.toFixed(2) : x.toFixed(1);
}
function fmtRatio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? "–" : `${(a / b).toFixed(2)}×`;
}

/** Rate, p50 and p99 of each system, then their ratios: the cells every comparison row shares. */
interface RowFigures {
  readonly requestsPerSecond: number;
  readonly latencyMsP50: number;
  readonly latencyMsP99: number;
}

function comparisonCells(r: RowFigures | undefined, e: RowFigures | undefined): string {
  return `${fmtRate(r?.requestsPerSecond)} | ${fmtMs(r?.latencyMsP50)} | ${
    fmtMs(r?.latencyMsP99)
  } | ${fmtRate(e?.requestsPerSecond)} | ${fmtMs(e?.latencyMsP50)} | ${fmtMs(e?.latencyMsP99)} | ${
    fmtRatio(r?.requestsPerSecond, e?.requestsPerSecond)
  } | ${fmtRatio(r?.latencyMsP50, e?.latencyMsP50)} | ${
    fmtRatio(r?.latencyMsP99, e?.latencyMsP99)
  } |`;
}

/** Renders the comparison as a Markdown table (latencies in ms; ratios are raftmeta/etcd). */
export function renderTable(raftmeta: SystemResults, etcd: SystemResults): string {
  const lines = [
    "| workload | raftmeta req/s | p50 ms | p99 ms | etcd req/s | p50 ms | p99 ms | req/s ratio | p50 ratio | p99 ratio |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const w of WORKLOADS) {
    const r = raftmeta[w.name];
    const e = etcd[w.name];
    const errs = (r?.errors ?? 0) + (e?.errors ?? 0) > 0
      ? ` (errors: raftmeta ${r?.errors ?? 0}, etcd ${e?.errors ?? 0})`
      : "";
    lines.push(`| ${w.name} (${w.connections} conn)${errs} | ${comparisonCells(r, e)}`);
  }
  return lines.join("\n");
}

/**
 * Renders the gRPC rows (h2load, one HTTP/2 connection, N streams in flight) as a Markdown table;
 * ratios are raftmeta/etcd. Empty when neither system has a gRPC row.
 */
export function renderGrpcTable(raftmeta: GrpcResults, etcd: GrpcResults): string {
  if (Object.keys(raftmeta).length === 0 && Object.keys(etcd).length === 0) return "";
  const lines = [
    "| workload (h2load) | raftmeta ops/s | p50 ms | p99 ms | etcd ops/s | p50 ms | p99 ms | ops/s ratio | p50 ratio | p99 ratio |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const w of GRPC_WORKLOADS) {
    const r = raftmeta[w.name];
    const e = etcd[w.name];
    const errs = (r?.failed ?? 0) + (e?.failed ?? 0) > 0
      ? ` (failed: raftmeta ${r?.failed ?? 0}, etcd ${e?.failed ?? 0})`
      : "";
    const streams = `${w.streams} stream${w.streams === 1 ? "" : "s"}`;
    lines.push(`| ${w.name} (${streams})${errs} | ${comparisonCells(r, e)}`);
  }
  return lines.join("\n");
}

/** Marker after which runs are inserted in RESULTS.md (newest first). */
export const RUNS_MARK = "<!-- runs: newest first -->";

/** Inserts `section` into the RESULTS.md text right after {@linkcode RUNS_MARK}. */
export function insertRun(existing: string, section: string): string {
  const i = existing.indexOf(RUNS_MARK);
  if (i < 0) {
    const head = existing.trim() === ""
      ? "# raftmeta vs etcd: benchmark results\n\nWritten by `deno task bench:etcd`.\n\n"
      : existing.trimEnd() + "\n\n";
    return `${head}${RUNS_MARK}\n\n${section.trim()}\n`;
  }
  const at = i + RUNS_MARK.length;
  return `${existing.slice(0, at)}\n\n${section.trim()}\n\n${
    existing.slice(at).replace(/^\n+/, "")
  }`
    .trimEnd() + "\n";
}

// ---- The wrk script ------------------------------------------------------------------------------

/**
 * wrk's Lua script: POST bodies with base64 keys "k%07d" (8 bytes) and a 256-byte value; with
 * `token`, every request carries it in the `Authorization` header (etcd's auth token).
 */
export function wrkScript(kind: "put" | "get", keyCount: number, token?: string): string {
  if (token !== undefined && !/^[A-Za-z0-9._\-+/=]+$/.test(token)) {
    throw new Error(`The auth token has characters the wrk script cannot carry: ${token}`);
  }
  return `
local chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = chars:sub(c1 + 1, c1 + 1) .. chars:sub(c2 + 1, c2 + 1) ..
      (b and chars:sub(c3 + 1, c3 + 1) or '=') .. (c and chars:sub(c4 + 1, c4 + 1) or '=')
  end
  return table.concat(out)
end
local threads = {}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set('id', counter)
  table.insert(threads, thread)
end
local kind = '${kind}'
local keys = ${keyCount}
local value = b64(string.rep('v', 256))
local headers = { ['Content-Type'] = 'application/json'${
    token === undefined ? "" : `, ['Authorization'] = '${token}'`
  } }
local path = kind == 'put' and '/v3/kv/put' or '/v3/kv/range'
function init(args)
  math.randomseed(os.time() * 1000 + (id or 0))
end
function request()
  local key = b64(string.format('k%07d', math.random(0, keys - 1)))
  local body
  if kind == 'put' then
    body = '{"key":"' .. key .. '","value":"' .. value .. '"}'
  else
    body = '{"key":"' .. key .. '"}'
  end
  return wrk.format('POST', path, headers, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '${RESULT_MARK}{"requests":%d,"durationUs":%d,"p50Us":%d,"p99Us":%d,"errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
`;
}

// ---- Processes -----------------------------------------------------------------------------------

const children = new Set<Deno.ChildProcess>();

function stopAll(): void {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  children.clear();
}

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).spawn();
  children.add(child);
  const o = await child.output();
  children.delete(child);
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch { /* not here */ }
  }
  return undefined;
}

async function ensureTools(): Promise<{ etcd: string; wrk: string; h2load?: string }> {
  let etcd = which("etcd");
  let wrk = which("wrk");
  let h2load = which("h2load");
  if (etcd !== undefined && wrk !== undefined && h2load !== undefined) return { etcd, wrk, h2load };
  const missing = [
    etcd === undefined ? "etcd-server" : "",
    wrk === undefined ? "wrk" : "",
    h2load === undefined ? "nghttp2-client" : "",
  ].filter((x) => x !== "");
  const isRoot = Deno.uid?.() === 0;
  if (isRoot && which("apt-get") !== undefined) {
    console.log(`installing ${missing.join(" ")} with apt-get…`);
    let r = await run("apt-get", ["install", "-y", ...missing]);
    if (r.code !== 0) {
      await run("apt-get", ["update"]);
      r = await run("apt-get", ["install", "-y", ...missing]);
    }
    if (r.code !== 0) console.log(`apt-get install ${missing.join(" ")} failed:\n${r.out}`);
    etcd = which("etcd");
    wrk = which("wrk");
    h2load = which("h2load");
  }
  if (etcd === undefined || wrk === undefined) {
    throw new Error(
      `Missing ${
        missing.join(" and ")
      } (etcd-server and wrk are needed). Install with: sudo apt-get install -y ${
        missing.join(" ")
      } (Debian/Ubuntu), then run again.`,
    );
  }
  if (h2load === undefined) {
    console.log(
      "h2load is missing, so the gRPC rows are skipped (install: sudo apt-get install -y " +
        "nghttp2-client)",
    );
  }
  return { etcd, wrk, h2load };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function spawnLogged(cmd: string, args: string[], logPath: string, env?: Record<string, string>) {
  const child = new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).spawn();
  children.add(child);
  const file = Deno.openSync(logPath, { create: true, append: true, write: true });
  const enc = new TextEncoder();
  const pump = async (s: ReadableStream<Uint8Array>) => {
    try {
      for await (const chunk of s) file.writeSync(chunk);
    } catch { /* process gone */ }
  };
  Promise.all([pump(child.stdout), pump(child.stderr)]).finally(() => {
    try {
      file.writeSync(enc.encode(""));
      file.close();
    } catch { /* closed */ }
  });
  return child;
}

interface RunningCluster {
  readonly name: string;
  readonly leaderUrl: string;
  /** The leader's gRPC endpoint (`http(s)://host:port`): raftmeta's --listen-grpc, etcd's client port. */
  readonly grpcUrl: string;
  /** Every member's gRPC endpoint (`http(s)://host:port`), for etcdctl. */
  readonly grpcUrls: readonly string[];
  /** Process ids of the members, and of the leader (for CPU per request, from /proc). */
  readonly pids: readonly number[];
  readonly leaderPid: number;
  readonly stop: () => Promise<void>;
  /** With `--secure`: the token every benchmark request carries. */
  token?: string;
}

/**
 * `--secure`: both clusters serve their client port over HTTPS and talk to their peers over TLS
 * with certificates checked both ways, from one test CA (`deno task certs`); auth is enabled and
 * the load runs as a user whose role may read and write the benchmark's keys (not root, so the
 * permission check runs on every request). Client certificates are not asked for (wrk cannot
 * present one).
 */
interface Security {
  /** Directory of ca.crt and n1..n3.crt/.key (the node certificates serve both clusters). */
  readonly certDir: string;
  /** An HTTP client that trusts the test CA. */
  readonly client: Deno.HttpClient;
}

let security: Security | undefined;

/**
 * The TLS flags raftmeta and etcd share (same names, same meaning): certificate `name` on the
 * client and peer ports, peers checked against the test CA both ways.
 */
function tlsFlags(sec: Security, name: string): string[] {
  const crt = `${sec.certDir}/${name}.crt`;
  const key = `${sec.certDir}/${name}.key`;
  return [
    "--cert-file",
    crt,
    "--key-file",
    key,
    "--peer-cert-file",
    crt,
    "--peer-key-file",
    key,
    "--peer-trusted-ca-file",
    `${sec.certDir}/ca.crt`,
    "--peer-client-cert-auth",
  ];
}

/** The benchmark user's name and password, and the root password (a throwaway cluster's). */
const BENCH_USER = "bench";
const BENCH_PASSWORD = crypto.randomUUID();
const ROOT_PASSWORD = crypto.randomUUID();

async function postJson(
  url: string,
  body: unknown,
  timeoutMs = 500,
  token?: string,
): Promise<unknown> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== undefined) headers.authorization = token;
  const res = await fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers,
    signal: AbortSignal.timeout(timeoutMs),
    ...(security !== undefined ? { client: security.client } : {}),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url}: ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function stopChildren(list: Deno.ChildProcess[]): Promise<void> {
  for (const c of list) {
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
  }
  const timeout = new Promise((r) => setTimeout(r, 3000));
  await Promise.race([Promise.all(list.map((c) => c.status)), timeout]);
  for (const c of list) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
    children.delete(c);
  }
}

async function startRaftmeta(
  dir: string,
  extraArgs: string[],
  serverArgs: string[],
): Promise<RunningCluster> {
  const ids = ["n1", "n2", "n3"];
  const clientPorts = ids.map(() => freePort());
  const peerPorts = ids.map(() => freePort());
  const grpcPorts = ids.map(() => freePort());
  const main = new URL("../src/net/main.ts", import.meta.url).href;
  const procs: Deno.ChildProcess[] = [];
  const secret = crypto.randomUUID();
  for (const [i, id] of ids.entries()) {
    const peers = ids.map((p, j) => `${p}=127.0.0.1:${peerPorts[j]}`).filter((_, j) => j !== i);
    const scheme = security === undefined ? "http" : "https";
    const peerClientUrls = ids.map((p, j) => `${p}=${scheme}://127.0.0.1:${clientPorts[j]}`)
      .filter((_, j) => j !== i);
    // A follower forwards over https, so it trusts the CA on the client side too.
    const tls = security === undefined
      ? []
      : [...tlsFlags(security, id), "--trusted-ca-file", `${security.certDir}/ca.crt`];
    Deno.mkdirSync(`${dir}/${id}`, { recursive: true });
    procs.push(spawnLogged(
      Deno.execPath(),
      [
        "run",
        "--allow-net",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        ...extraArgs,
        main,
        "--name",
        id,
        "--cluster-id",
        "bench",
        "--data-dir",
        `${dir}/${id}/data`,
        "--listen-client",
        `127.0.0.1:${clientPorts[i]}`,
        "--listen-peer",
        `127.0.0.1:${peerPorts[i]}`,
        "--listen-grpc",
        `127.0.0.1:${grpcPorts[i]}`,
        "--peers",
        peers.join(","),
        "--peer-client-urls",
        peerClientUrls.join(","),
        ...tls,
        ...serverArgs,
      ],
      `${dir}/${id}.log`,
      { RAFTMETA_CLUSTER_SECRET: secret },
    ));
  }
  const urls = clientPorts.map((p) =>
    `${security === undefined ? "http" : "https"}://127.0.0.1:${p}`
  );
  const leaderUrl = await waitFor("a raftmeta leader", 20_000, async () => {
    for (const u of urls) {
      const res = await fetch(`${u}/v1/status?local=1`, {
        signal: AbortSignal.timeout(300),
        ...(security !== undefined ? { client: security.client } : {}),
      });
      const body = await res.json();
      if (body?.node?.role === "Leader") return u;
    }
    return undefined;
  });
  const leaderIndex = urls.indexOf(leaderUrl);
  return {
    name: "raftmeta",
    leaderUrl,
    grpcUrl: `${security === undefined ? "http" : "https"}://127.0.0.1:${grpcPorts[leaderIndex]}`,
    grpcUrls: grpcPorts.map((p) => `${security === undefined ? "http" : "https"}://127.0.0.1:${p}`),
    pids: procs.map((p) => p.pid),
    leaderPid: procs[urls.indexOf(leaderUrl)].pid,
    stop: () => stopChildren(procs),
  };
}

async function startEtcd(etcd: string, dir: string): Promise<RunningCluster> {
  const ids = ["e1", "e2", "e3"];
  const clientPorts = ids.map(() => freePort());
  const peerPorts = ids.map(() => freePort());
  const scheme = security === undefined ? "http" : "https";
  const initial = ids.map((id, i) => `${id}=${scheme}://127.0.0.1:${peerPorts[i]}`).join(",");
  const procs: Deno.ChildProcess[] = [];
  const token = `bench-${crypto.randomUUID()}`;
  for (const [i, id] of ids.entries()) {
    // The node certificates n1..n3 name 127.0.0.1, so they serve etcd's members as well.
    const tls = security === undefined ? [] : tlsFlags(security, `n${i + 1}`);
    procs.push(spawnLogged(etcd, [
      "--name",
      id,
      "--data-dir",
      `${dir}/${id}`,
      "--listen-client-urls",
      `${scheme}://127.0.0.1:${clientPorts[i]}`,
      "--advertise-client-urls",
      `${scheme}://127.0.0.1:${clientPorts[i]}`,
      "--listen-peer-urls",
      `${scheme}://127.0.0.1:${peerPorts[i]}`,
      "--initial-advertise-peer-urls",
      `${scheme}://127.0.0.1:${peerPorts[i]}`,
      ...tls,
      "--initial-cluster",
      initial,
      "--initial-cluster-token",
      token,
      "--initial-cluster-state",
      "new",
      "--log-level",
      "warn",
    ], `${dir}/${id}.log`));
  }
  const urls = clientPorts.map((p) => `${scheme}://127.0.0.1:${p}`);
  const leaderUrl = await waitFor("an etcd leader", 30_000, async () => {
    for (const u of urls) {
      // deno-lint-ignore no-explicit-any
      const s = await postJson(`${u}/v3/maintenance/status`, {}) as any;
      if (s?.leader !== undefined && s.leader === s?.header?.member_id) return u;
    }
    return undefined;
  });
  return {
    name: "etcd",
    leaderUrl,
    // etcd serves gRPC and its JSON gateway on the same client port.
    grpcUrl: leaderUrl,
    grpcUrls: urls,
    pids: procs.map((p) => p.pid),
    leaderPid: procs[urls.indexOf(leaderUrl)].pid,
    stop: () => stopChildren(procs),
  };
}

// ---- Measuring ---------------------------------------------------------------------------------

const KEY_COUNT = 100_000;
const GET_KEY_COUNT = 1_000;

/**
 * Enables auth the same way on either system through etcd's JSON gateway: root (with the root
 * role), a role with READWRITE on the benchmark's keys ("k" up to "l": every "k%07d"), a user with
 * that role; then auth enable, and a login as that user. Returns its token.
 */
async function enableAuth(url: string): Promise<string> {
  const b64 = (s: string) => btoa(s);
  const call = (path: string, body: unknown, token?: string) =>
    postJson(`${url}/v3/auth/${path}`, body, 10_000, token);
  await call("user/add", { name: "root", password: ROOT_PASSWORD });
  await call("user/grant", { user: "root", role: "root" });
  await call("role/add", { name: "benchrole" });
  await call("role/grant", {
    name: "benchrole",
    perm: { permType: "READWRITE", key: b64("k"), range_end: b64("l") },
  });
  await call("user/add", { name: BENCH_USER, password: BENCH_PASSWORD });
  await call("user/grant", { user: BENCH_USER, role: "benchrole" });
  await call("enable", {});
  // deno-lint-ignore no-explicit-any
  const login = await call("authenticate", { name: BENCH_USER, password: BENCH_PASSWORD }) as any;
  if (typeof login?.token !== "string") throw new Error(`No token in ${JSON.stringify(login)}`);
  // A put outside the role's keys must be refused, or auth is not really on.
  const res = await fetch(`${url}/v3/kv/put`, {
    method: "POST",
    body: JSON.stringify({ key: b64("outside"), value: b64("x") }),
    headers: { "content-type": "application/json", authorization: login.token },
    ...(security !== undefined ? { client: security.client } : {}),
  });
  const text = await res.text();
  if (res.ok || !/permission denied/.test(text)) {
    throw new Error(`auth is not enforced: a put outside the role answered ${res.status} ${text}`);
  }
  return login.token;
}

async function preload(url: string, token?: string): Promise<void> {
  const value = btoa("v".repeat(256));
  const keys = Array.from(
    { length: GET_KEY_COUNT },
    (_, i) => btoa(`k${String(i).padStart(7, "0")}`),
  );
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < keys.length) {
      const k = keys[next++];
      await postJson(`${url}/v3/kv/put`, { key: k, value }, 5000, token);
    }
  }));
}

async function wrkRun(
  wrk: string,
  dir: string,
  url: string,
  w: typeof WORKLOADS[number],
  seconds: number,
  token?: string,
): Promise<WrkResult> {
  const script = `${dir}/${w.kind}.lua`;
  Deno.writeTextFileSync(
    script,
    wrkScript(w.kind, w.kind === "put" ? KEY_COUNT : GET_KEY_COUNT, token),
  );
  const r = await run(wrk, [
    "-t",
    String(w.threads),
    "-c",
    String(w.connections),
    "-d",
    `${seconds}s`,
    "--timeout",
    "10s",
    "-s",
    script,
    url,
  ]);
  if (r.code !== 0) throw new Error(`wrk failed (exit ${r.code}):\n${r.out}`);
  return parseWrkOutput(r.out);
}

/** What `etcdctl check perf` reported for one load. */
export interface CheckPerfResult {
  /** Writes per second it measured. */
  readonly writesPerSecond: number;
  /** Its slowest request and the standard deviation of all, in seconds. */
  readonly slowestSeconds: number;
  readonly stddevSeconds: number;
  /** Its overall verdict: PASS or FAIL (against the load's own targets). */
  readonly verdict: "PASS" | "FAIL";
  /** Lines that name an error (rpc error, etcdserver: …); a clean run has none. */
  readonly errors: readonly string[];
  /** Set when it ended without its summary: its exit status and last error line. */
  readonly gaveUp?: string;
}

/** etcdctl check perf's loads (etcd's presets: s, m, l, xl). */
export const CHECK_PERF_LOADS = ["s", "m", "l", "xl"] as const;

/**
 * Parses `etcdctl check perf`'s output (its PASS/FAIL lines). Throws when it printed no verdict
 * (it gave up).
 */
export function parseCheckPerf(text: string): CheckPerfResult {
  const lines = text.split(/[\r\n]+/);
  // A figure it did not print (it reports only what it measured) is NaN.
  const num = (re: RegExp) => {
    for (const l of lines) {
      const m = l.match(re);
      if (m !== null) return Number(m[1]);
    }
    return NaN;
  };
  const verdict = lines.filter((l) => /^(PASS|FAIL)\s*$/.test(l.trim())).pop()?.trim();
  if (verdict !== "PASS" && verdict !== "FAIL") {
    throw new Error(`etcdctl check perf printed no verdict:\n${text.slice(-1500)}`);
  }
  return {
    // etcdctl 3.4's wording: "PASS: Throughput is N writes/s" or "FAIL: Throughput too low: N
    // writes/s"; "Slowest request took too long: Xs" has no FAIL: in front.
    writesPerSecond: num(/^(?:PASS: Throughput is|FAIL: Throughput too low:) (\d+) writes\/s/),
    slowestSeconds: num(/^(?:PASS: )?Slowest request took(?: too long:)? ([\d.]+)s/),
    stddevSeconds: num(/^(?:PASS: Stddev is|FAIL: Stddev too high:) ([\d.]+)s/),
    verdict,
    errors: lines.filter((l) => /rpc error|^Error|etcdserver:/.test(l)),
  };
}

function fmtNum(x: number, digits: number): string {
  return Number.isNaN(x) ? "–" : x.toFixed(digits);
}

/** Renders the check perf rows as a Markdown table (raftmeta beside etcd, per load). */
export function renderCheckPerfTable(
  raftmeta: Partial<Record<string, CheckPerfResult>>,
  etcd: Partial<Record<string, CheckPerfResult>>,
): string {
  const loads = CHECK_PERF_LOADS.filter((l) => raftmeta[l] !== undefined || etcd[l] !== undefined);
  if (loads.length === 0) return "";
  const cell = (r: CheckPerfResult | undefined) =>
    r === undefined
      ? "– | – | – | –"
      : r.gaveUp !== undefined
      ? `– | – | – | gave up (${r.errors.length} errors)`
      : `${fmtNum(r.writesPerSecond, 0)} | ${fmtNum(r.slowestSeconds, 3)} | ${
        fmtNum(r.stddevSeconds, 3)
      } | ${r.verdict}${r.errors.length > 0 ? ` (${r.errors.length} errors)` : ""}`;
  return [
    "| etcdctl check perf | raftmeta writes/s | slowest s | stddev s | verdict | etcd writes/s | slowest s | stddev s | verdict |",
    "|---|---:|---:|---:|---|---:|---:|---:|---|",
    ...loads.map((l) => `| --load=${l} | ${cell(raftmeta[l])} | ${cell(etcd[l])} |`),
  ].join("\n");
}

async function checkPerfRun(
  etcdctl: string,
  c: RunningCluster,
  load: string,
  dir: string,
): Promise<CheckPerfResult> {
  const args = ["--endpoints", c.grpcUrls.join(","), "--dial-timeout", "5s"];
  if (security !== undefined) args.push("--cacert", `${security.certDir}/ca.crt`);
  // check perf writes under its own prefix, outside the bench user's keys: with auth on it runs
  // as root.
  if (c.token !== undefined) args.push("--user", `root:${ROOT_PASSWORD}`);
  const r = await run(etcdctl, [...args, "check", "perf", `--load=${load}`]);
  const outFile = `${dir}/check-perf-${c.name}-${load}.txt`;
  Deno.writeTextFileSync(outFile, r.out);
  let result: CheckPerfResult;
  try {
    result = parseCheckPerf(r.out);
  } catch {
    // It gave up before its summary (e.g. a request failed for good): recorded, not fatal.
    const errors = r.out.split(/[\r\n]+/).filter((l) => /rpc error|^Error|etcdserver:/.test(l));
    const last = errors[errors.length - 1] ?? r.out.trim().split("\n").pop() ?? "";
    result = {
      writesPerSecond: NaN,
      slowestSeconds: NaN,
      stddevSeconds: NaN,
      verdict: "FAIL",
      errors: errors.length > 0 ? errors : [last],
      gaveUp: `exit ${r.code}: ${last.slice(0, 300)}; its output: ${outFile}`,
    };
  }
  if (result.gaveUp !== undefined) {
    console.log(`  ${c.name} check perf --load=${load}: gave up (${result.gaveUp})`);
    return result;
  }
  console.log(
    `  ${c.name} check perf --load=${load}: ${result.writesPerSecond} writes/s, slowest ` +
      `${result.slowestSeconds} s, stddev ${result.stddevSeconds} s, ${result.verdict}` +
      (result.errors.length > 0 ? `, errors: ${result.errors.slice(0, 3).join(" | ")}` : ""),
  );
  return result;
}

/** CPU seconds the leader and the whole cluster used while `work` ran. */
async function cpuDuring<T>(
  c: RunningCluster,
  work: () => Promise<T>,
): Promise<{ result: T; leaderSeconds: number; clusterSeconds: number }> {
  const leaderBefore = cpuSeconds(c.leaderPid);
  const allBefore = c.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const result = await work();
  return {
    result,
    leaderSeconds: cpuSeconds(c.leaderPid) - leaderBefore,
    clusterSeconds: c.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) - allBefore,
  };
}

/** The version of the gRPC rows' key on `c`, read through the JSON gateway (0 when absent). */
async function grpcKeyVersion(c: RunningCluster): Promise<number> {
  const r = await postJson(`${c.leaderUrl}/v3/kv/range`, { key: btoa(GRPC_KEY) }, 5000, c.token);
  const kvs = (r as { kvs?: { version?: string }[] }).kvs;
  return Number(kvs?.[0]?.version ?? 0);
}

async function benchSystem(
  c: RunningCluster,
  tools: { wrk: string; h2load?: string },
  dir: string,
  seconds: number,
  warmupSeconds: number,
  rows: readonly typeof WORKLOADS[number][],
  grpcRows: readonly GrpcWorkload[],
  checkPerf: { etcdctl: string; loads: readonly string[] } | undefined,
): Promise<
  { http: SystemResults; grpc: GrpcResults; checkPerf: Record<string, CheckPerfResult> }
> {
  const out: SystemResults = {};
  const grpc: GrpcResults = {};
  const perf: Record<string, CheckPerfResult> = {};
  const wrk = tools.wrk;
  if (security !== undefined) {
    c.token = await enableAuth(c.leaderUrl);
    console.log(`  ${c.name}: auth enabled; the load runs as user ${BENCH_USER}`);
  }
  console.log(`  ${c.name}: leader at ${c.leaderUrl}; preloading ${GET_KEY_COUNT} keys…`);
  await preload(c.leaderUrl, c.token);
  for (const w of rows) {
    if (warmupSeconds > 0) {
      await wrkRun(wrk, dir, c.leaderUrl, w, warmupSeconds, c.token);
    }
    const m = await cpuDuring(c, () => wrkRun(wrk, dir, c.leaderUrl, w, seconds, c.token));
    const r = m.result;
    const leaderUs = m.leaderSeconds * 1e6 / Math.max(1, r.requests);
    const allUs = m.clusterSeconds * 1e6 / Math.max(1, r.requests);
    out[w.name] = r;
    // CPU per request moves much less than req/s when other work shares the cores.
    console.log(
      `  ${c.name} ${w.name.padEnd(18)} ${fmtRate(r.requestsPerSecond).padStart(7)} req/s  ` +
        `p50 ${fmtMs(r.latencyMsP50)} ms  p99 ${fmtMs(r.latencyMsP99)} ms  ` +
        `CPU/request: leader ${leaderUs.toFixed(0)} µs, cluster ${allUs.toFixed(0)} µs` +
        (r.errors > 0 ? `  errors ${r.errors}` : ""),
    );
  }
  for (const w of grpcRows) {
    if (tools.h2load === undefined) break;
    const h2load = tools.h2load;
    const go = (s: number) =>
      h2loadRun(h2load, dir, c.grpcUrl, w, s, () => grpcKeyVersion(c), c.token);
    if (warmupSeconds > 0) await go(warmupSeconds);
    const m = await cpuDuring(c, () => go(seconds));
    const r = m.result;
    grpc[w.name] = r;
    console.log(
      `  ${c.name} ${w.name.padEnd(24)} ${fmtRate(r.requestsPerSecond).padStart(7)} ops/s  ` +
        `p50 ${fmtMs(r.latencyMsP50)} ms  p99 ${fmtMs(r.latencyMsP99)} ms  ` +
        `CPU/op: leader ${(m.leaderSeconds * 1e6 / r.succeeded).toFixed(0)} µs, cluster ${
          (m.clusterSeconds * 1e6 / r.succeeded).toFixed(0)
        } µs` + (r.failed > 0 ? `  failed ${r.failed}` : ""),
    );
  }
  for (const load of checkPerf?.loads ?? []) {
    perf[load] = await checkPerfRun(checkPerf!.etcdctl, c, load, dir);
  }
  return { http: out, grpc, checkPerf: perf };
}

/** CPU seconds (user + system) process `pid` has used so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The fields after the command name (which may hold spaces) start after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ ticks
}

/** write+fdatasync of 4 KiB at growing offsets for `ms`; returns syncs per second. */
function fdatasyncRate(dir: string, ms: number): number {
  const path = `${dir}/fdatasync-probe`;
  const f = Deno.openSync(path, { create: true, write: true, truncate: true });
  const block = new Uint8Array(4096).fill(7);
  let n = 0;
  const t0 = performance.now();
  try {
    while (performance.now() - t0 < ms) {
      f.writeSync(block);
      f.syncDataSync();
      n++;
    }
  } finally {
    f.close();
    Deno.removeSync(path);
  }
  return n / ((performance.now() - t0) / 1000);
}

async function machine(dir: string): Promise<string[]> {
  let cpu = "unknown";
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    cpu = /model name\s*:\s*(.+)/.exec(info)?.[1]?.trim() ?? cpu;
  } catch { /* not Linux */ }
  const memGiB = Deno.systemMemoryInfo().total / 2 ** 30;
  const syncs = fdatasyncRate(dir, 2000);
  const etcdVersion = /etcd Version:\s*(\S+)/.exec((await run("etcd", ["--version"])).out)?.[1] ??
    "?";
  const wrkVersion = /wrk (\S+)/.exec((await run("wrk", ["--version"])).out)?.[1] ?? "?";
  return [
    `- date: ${new Date().toISOString()}`,
    `- cpu: ${cpu}, ${navigator.hardwareConcurrency} cores; memory ${
      memGiB.toFixed(1)
    } GiB; ${Deno.build.os}/${Deno.build.arch}`,
    `- disk (data dirs' filesystem): write 4 KiB + fdatasync ${
      Math.round(syncs).toLocaleString("en-US")
    }/s (${(1e6 / syncs).toFixed(0)} µs each)`,
    `- Deno ${Deno.version.deno} (V8 ${Deno.version.v8}); etcd ${etcdVersion}; wrk ${wrkVersion}`,
  ];
}

// ---- Main ----------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      seconds: { type: "string" },
      only: { type: "string" },
      rows: { type: "string" },
      "check-perf": { type: "string" },
      note: { type: "string", default: "" },
      "no-write": { type: "boolean", default: false },
      "keep-dir": { type: "boolean", default: false },
      secure: { type: "boolean", default: false },
      results: { type: "string", default: new URL("./RESULTS.md", import.meta.url).pathname },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(`raftmeta vs etcd

Usage: deno task bench:etcd [--quick] [--seconds N] [--only raftmeta|etcd] [--note TEXT]
                            [--rows sequential,concurrent,gets] [--check-perf s,m,l]
                            [--no-write] [--keep-dir] [--secure] [--results FILE]

  --quick      3 s per row, 1 s warm-up (default 10 s per row, 2 s warm-up)
  --only       measure one system
  --rows       measure only the rows whose names start with these words (comma-separated,
               e.g. "concurrent" or "gRPC"); such a run is not written to RESULTS.md
  --check-perf also run \`etcdctl check perf\` at these loads (s, m, l, xl) against every
               member of each system, after the other rows (60 s per load and system; needs
               etcdctl, Debian: etcd-client)
  --note       a line recorded with the run in RESULTS.md (what changed)
  --no-write   print the table only
  --keep-dir   keep the data directories and node logs (the path is printed)
  --secure     both clusters with TLS (HTTPS client port; peer TLS with certificates checked
               both ways; one test CA made with openssl) and auth on (the load runs as a
               non-root user with READWRITE on its keys, carrying a simple token)

Environment (for experiments):
  RAFTMETA_BENCH_DENO_FLAGS    extra deno flags for the raftmeta nodes,
                               e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  RAFTMETA_BENCH_SERVER_FLAGS  extra raftmeta server flags, e.g. "--snapshot-entries 10000"`);
    return 0;
  }
  const rowWords = values.rows?.split(",").map((w) => w.trim()).filter((w) => w !== "");
  // A word picks the rows whose name starts with it: "concurrent" the JSON row, "gRPC" all gRPC rows.
  const picked = (name: string) =>
    rowWords === undefined || rowWords.some((word) => name.startsWith(word));
  const rows = WORKLOADS.filter((w) => picked(w.name));
  const grpcRows = GRPC_WORKLOADS.filter((w) => picked(w.name));
  if (rows.length + grpcRows.length === 0) {
    console.error(
      `--rows ${values.rows}: no row matches; the rows are ${
        [...WORKLOADS, ...GRPC_WORKLOADS].map((w) => `"${w.name}"`).join(", ")
      }`,
    );
    return 2;
  }
  const loads = values["check-perf"]?.split(",").map((l) => l.trim()).filter((l) => l !== "") ??
    [];
  const badLoad = loads.find((l) => !(CHECK_PERF_LOADS as readonly string[]).includes(l));
  if (badLoad !== undefined) {
    console.error(
      `--check-perf ${values["check-perf"]}: unknown load "${badLoad}"; the loads are ${
        CHECK_PERF_LOADS.join(", ")
      }`,
    );
    return 2;
  }
  let checkPerf: { etcdctl: string; loads: readonly string[] } | undefined;
  if (loads.length > 0) {
    const etcdctl = which("etcdctl");
    if (etcdctl === undefined) {
      console.error("--check-perf needs etcdctl (sudo apt-get install -y etcd-client)");
      return 2;
    }
    checkPerf = { etcdctl, loads };
  }
  const seconds = values.seconds !== undefined ? Number(values.seconds) : values.quick ? 3 : 10;
  const warmup = values.quick ? 1 : 2;
  const tools = await ensureTools();
  // Extra flags for the raftmeta node processes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const denoFlags = (Deno.env.get("RAFTMETA_BENCH_DENO_FLAGS") ?? "").split(" ").filter((x) =>
    x !== ""
  );
  // Extra flags for the raftmeta servers, e.g. "--snapshot-entries 100000" (for experiments).
  const serverFlags = (Deno.env.get("RAFTMETA_BENCH_SERVER_FLAGS") ?? "").split(" ").filter((x) =>
    x !== ""
  );
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-bench-etcd-" });
  const onSignal = () => {
    console.log("\ninterrupted: stopping every process started…");
    stopAll();
    try {
      if (!values["keep-dir"]) Deno.removeSync(dir, { recursive: true });
    } catch { /* gone */ }
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    console.log(`temp dir ${dir}; measuring the disk (2 s of write+fdatasync)…`);
    const about = await machine(dir);
    if (values.secure) {
      const certDir = `${dir}/certs`;
      await makeCerts(certDir);
      security = {
        certDir,
        client: Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${certDir}/ca.crt`)] }),
      };
      about.push(
        "- --secure: HTTPS client port and peer TLS (P-256 certificates, one test CA), auth on, " +
          "load as a non-root user with a READWRITE role, simple tokens",
      );
    }
    for (const l of about) console.log(l);
    const results: Record<string, SystemResults> = { raftmeta: {}, etcd: {} };
    const grpcResults: Record<string, GrpcResults> = { raftmeta: {}, etcd: {} };
    const perfResults: Record<string, Record<string, CheckPerfResult>> = {
      raftmeta: {},
      etcd: {},
    };
    for (const name of ["raftmeta", "etcd"] as const) {
      if (values.only !== undefined && values.only !== name) continue;
      console.log(`starting a 3-node ${name} cluster…`);
      const sysDir = `${dir}/${name}`;
      Deno.mkdirSync(sysDir, { recursive: true });
      const c = name === "raftmeta"
        ? await startRaftmeta(sysDir, denoFlags, serverFlags)
        : await startEtcd(tools.etcd, sysDir);
      try {
        const r = await benchSystem(c, tools, dir, seconds, warmup, rows, grpcRows, checkPerf);
        results[name] = r.http;
        grpcResults[name] = r.grpc;
        perfResults[name] = r.checkPerf;
      } finally {
        await c.stop();
      }
    }
    const grpcTable = renderGrpcTable(grpcResults.raftmeta, grpcResults.etcd);
    const perfTable = renderCheckPerfTable(perfResults.raftmeta, perfResults.etcd);
    const table = renderTable(results.raftmeta, results.etcd) +
      (grpcTable === "" ? "" : `\n\n${grpcTable}`) +
      (perfTable === "" ? "" : `\n\n${perfTable}`);
    const command = `deno task bench:etcd${values.quick ? " --quick" : ""}${
      values.secure ? " --secure" : ""
    }${values.seconds !== undefined ? ` --seconds ${values.seconds}` : ""}${
      values.only !== undefined ? ` --only ${values.only}` : ""
    }${values["check-perf"] !== undefined ? ` --check-perf ${values["check-perf"]}` : ""}`;
    console.log(`\n${table}\n`);
    if (!values["no-write"] && rowWords === undefined) {
      const section = [
        `## ${about[0].slice("- date: ".length)}${values.note ? ` — ${values.note}` : ""}`,
        "",
        `\`${command}\` (${seconds} s per row after a ${warmup} s warm-up; wrk (HTTP/1.1, ` +
        `JSON) and h2load (gRPC, one HTTP/2 connection) against each cluster's leader; 3 ` +
        `processes per cluster on 127.0.0.1, one cluster at a time)`,
        "",
        ...about,
        "",
        table,
      ].join("\n");
      let existing = "";
      try {
        existing = Deno.readTextFileSync(values.results!);
      } catch { /* new file */ }
      Deno.writeTextFileSync(values.results!, insertRun(existing, section));
      console.log(`written to ${values.results}`);
    }
    return 0;
  } finally {
    stopAll();
    if (!values["keep-dir"]) {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* gone */ }
    } else console.log(`kept ${dir}`);
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    stopAll();
    console.error(`bench:etcd: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
