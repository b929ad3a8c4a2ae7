/**
 * `deno run -A bench/grpc_compare.ts [--seconds N] [--grpc-server raftmeta|grpc-js]`: raftmeta's gRPC API (`--listen-grpc`) side by
 * side with etcd's, in one run. Starts a 3-node raftmeta cluster and a 3-node etcd cluster on
 * 127.0.0.1 (temp data directories, fsync on), one after the other so neither steals the other's
 * CPU, and drives each leader with the same load generator: a grpc-js client in this process with
 * etcd's protos from npm's etcd3 package (keys 8 bytes, values 256 bytes).
 *
 * Rows: sequential puts (1 in flight), concurrent puts (64 in flight on one HTTP/2 connection),
 * linearizable ranges of one key (64 in flight). Prints a Markdown table; ratios are
 * raftmeta/etcd. Beside throughput and latency, the CPU time the leader (and the whole cluster)
 * spent per operation, from /proc: on a shared machine that figure moves much less than ops/s.
 * `--grpc-server` picks raftmeta's HTTP/2 server for the gRPC port (its own, the default, or
 * grpc-js). Needs /usr/bin/etcd (Debian: etcd-server).
 *
 * @module
 */

import { parseArgs } from "node:util";
// Full npm: specifiers, as DESIGN.md asks (no import map).
// deno-lint-ignore no-import-prefix
import * as grpc from "npm:@grpc/grpc-js@1.14.3";
// deno-lint-ignore no-import-prefix
import * as protoLoader from "npm:@grpc/proto-loader@0.7.15";
// deno-lint-ignore no-import-prefix
import "npm:etcd3@1.1.2/package.json" with { type: "json" };

interface Row {
  readonly ops: number;
  readonly opsPerSecond: number;
  readonly latencyMsP50: number;
  readonly latencyMsP99: number;
  readonly errors: number;
  /** CPU time (user + system) of the leader's process per operation, in µs. */
  readonly leaderCpuUsPerOp: number;
  /** CPU time of all three members per operation, in µs. */
  readonly clusterCpuUsPerOp: number;
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name (which may hold spaces) start after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticksPerSecond = 100; // USER_HZ on Linux
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

const WORKLOADS = [
  { name: "sequential puts", inFlight: 1, kind: "put" },
  { name: "concurrent puts", inFlight: 64, kind: "put" },
  { name: "linearizable ranges", inFlight: 64, kind: "range" },
] as const;

const children: Deno.ChildProcess[] = [];

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function spawn(cmd: string, args: string[], log: string, env?: Record<string, string>): void {
  const c = new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).spawn();
  // Both streams read at once (a full pipe would stall the process): stdout to the log, stderr
  // beside it.
  const out = Deno.openSync(log, { create: true, write: true, truncate: true });
  const err = Deno.openSync(`${log}.stderr`, { create: true, write: true, truncate: true });
  c.stdout.pipeTo(out.writable).catch(() => {});
  c.stderr.pipeTo(err.writable).catch(() => {});
  children.push(c);
}

// deno-lint-ignore no-explicit-any
type Pb = any;

function loadPb(): Pb {
  const rpc = new URL(import.meta.resolve("npm:etcd3@1.1.2/proto/rpc.proto"));
  const def = protoLoader.loadSync(decodeURIComponent(rpc.pathname), {
    keepCase: true,
    longs: String,
    enums: Number,
    bytes: String,
    defaults: false,
    oneofs: false,
  });
  return (grpc.loadPackageDefinition(def) as Pb).etcdserverpb;
}

function unary(client: Pb, method: string, req: unknown, timeoutMs = 10_000): Promise<Pb> {
  return new Promise((resolve, reject) =>
    client[method](
      req,
      { deadline: new Date(Date.now() + timeoutMs) },
      (e: Error | null, r: unknown) => e === null ? resolve(r) : reject(e),
    )
  );
}

/** Waits for the member whose Status says it leads; returns its endpoint. */
async function leaderOf(pb: Pb, endpoints: string[], timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const ep of endpoints) {
      const m = new pb.Maintenance(ep, grpc.credentials.createInsecure());
      try {
        const s = await unary(m, "Status", {}, 500);
        if (s.leader !== undefined && s.leader === s.header?.member_id) return ep;
      } catch {
        /* not up yet */
      } finally {
        m.close();
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no leader among ${endpoints.join(",")} in ${timeoutMs} ms`);
}

function startRaftmeta(dir: string, grpcServer: string): string[] {
  const ids = ["n1", "n2", "n3"];
  const client = ids.map(() => freePort());
  const peer = ids.map(() => freePort());
  const grpcPorts = ids.map(() => freePort());
  const main = new URL("../src/net/main.ts", import.meta.url).href;
  const secret = crypto.randomUUID();
  for (const [i, id] of ids.entries()) {
    const others = (f: (j: number) => string) =>
      ids.flatMap((p, j) => j === i ? [] : [`${p}=${f(j)}`]).join(",");
    spawn(
      Deno.execPath(),
      [
        "run",
        "-A",
        // Extra flags for the raftmeta nodes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
        // (scripts/bench_etcd_profile.ts summarizes the leader's profile).
        ...(Deno.env.get("RAFTMETA_BENCH_DENO_FLAGS") ?? "").split(" ").filter((f) => f !== ""),
        main,
        "--name",
        id,
        "--data-dir",
        `${dir}/${id}`,
        "--listen-client",
        `127.0.0.1:${client[i]}`,
        "--listen-peer",
        `127.0.0.1:${peer[i]}`,
        "--listen-grpc",
        `127.0.0.1:${grpcPorts[i]}`,
        "--peers",
        others((j) => `127.0.0.1:${peer[j]}`),
        "--peer-client-urls",
        others((j) => `http://127.0.0.1:${client[j]}`),
        "--grpc-server",
        grpcServer,
      ],
      `${dir}/${id}.log`,
      { RAFTMETA_CLUSTER_SECRET: secret },
    );
  }
  return grpcPorts.map((p) => `127.0.0.1:${p}`);
}

function startEtcd(dir: string): string[] {
  const ids = ["e1", "e2", "e3"];
  const client = ids.map(() => freePort());
  const peer = ids.map(() => freePort());
  const initial = ids.map((id, i) => `${id}=http://127.0.0.1:${peer[i]}`).join(",");
  const token = `bench-${crypto.randomUUID()}`;
  for (const [i, id] of ids.entries()) {
    spawn("etcd", [
      "--name",
      id,
      "--data-dir",
      `${dir}/${id}`,
      "--listen-client-urls",
      `http://127.0.0.1:${client[i]}`,
      "--advertise-client-urls",
      `http://127.0.0.1:${client[i]}`,
      "--listen-peer-urls",
      `http://127.0.0.1:${peer[i]}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${peer[i]}`,
      "--initial-cluster",
      initial,
      "--initial-cluster-token",
      token,
      "--log-level",
      "warn",
    ], `${dir}/${id}.log`);
  }
  return client.map((p) => `127.0.0.1:${p}`);
}

async function load(
  pb: Pb,
  endpoint: string,
  w: typeof WORKLOADS[number],
  seconds: number,
  pids: { leader: number; all: number[] },
): Promise<Row> {
  const kv = new pb.KV(endpoint, grpc.credentials.createInsecure());
  const value = btoa("v".repeat(256));
  const key = (i: number) => btoa(`k${String(i % 100_000).padStart(7, "0")}`);
  await unary(kv, "Put", { key: key(0), value });
  const latencies: number[] = [];
  let errors = 0;
  let n = 0;
  const leaderCpu0 = cpuSeconds(pids.leader);
  const clusterCpu0 = pids.all.reduce((sum, p) => sum + cpuSeconds(p), 0);
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(Array.from({ length: w.inFlight }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        if (w.kind === "put") await unary(kv, "Put", { key: key(n++), value });
        else await unary(kv, "Range", { key: key(0) });
        latencies.push(performance.now() - t0);
      } catch {
        errors++;
      }
    }
  }));
  const elapsed = (performance.now() - start) / 1000;
  const leaderCpu = cpuSeconds(pids.leader) - leaderCpu0;
  const clusterCpu = pids.all.reduce((sum, p) => sum + cpuSeconds(p), 0) - clusterCpu0;
  kv.close();
  latencies.sort((a, b) => a - b);
  const q = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  return {
    ops: latencies.length,
    opsPerSecond: latencies.length / elapsed,
    latencyMsP50: q(0.5),
    latencyMsP99: q(0.99),
    errors,
    leaderCpuUsPerOp: leaderCpu * 1e6 / Math.max(1, latencies.length),
    clusterCpuUsPerOp: clusterCpu * 1e6 / Math.max(1, latencies.length),
  };
}

async function stopChildren(): Promise<void> {
  // SIGTERM first (a node then writes its --cpu-prof profile), SIGKILL after 3 s.
  const list = children.splice(0);
  for (const c of list) {
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(list.map((c) => c.status)),
    new Promise((r) => timer = setTimeout(r, 3000)),
  ]);
  clearTimeout(timer);
  for (const c of list) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
    await c.status;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seconds: { type: "string", default: "10" },
      "grpc-server": { type: "string", default: "raftmeta" },
    },
  });
  const seconds = Number(values.seconds);
  if (!(seconds > 0)) throw new Error(`--seconds must be positive: ${values.seconds}`);
  const pb = loadPb();
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-grpc-bench-" });
  const results: Record<string, Record<string, Row>> = {};
  try {
    for (const system of ["raftmeta", "etcd"] as const) {
      Deno.mkdirSync(`${dir}/${system}`, { recursive: true });
      const endpoints = system === "raftmeta"
        ? startRaftmeta(`${dir}/${system}`, values["grpc-server"]!)
        : startEtcd(`${dir}/${system}`);
      const leader = await leaderOf(pb, endpoints, 30_000);
      const all = children.map((c) => c.pid);
      const pids = { leader: all[endpoints.indexOf(leader)], all };
      results[system] = {};
      for (const w of WORKLOADS) {
        results[system][w.name] = await load(pb, leader, w, seconds, pids);
        console.error(`${system} ${w.name}: ${JSON.stringify(results[system][w.name])}`);
      }
      await stopChildren();
    }
  } catch (e) {
    await stopChildren();
    console.error(`logs kept in ${dir}`);
    throw e;
  } finally {
    await stopChildren();
  }
  Deno.removeSync(dir, { recursive: true });
  const f = (x: number) => x >= 100 ? x.toFixed(0) : x.toFixed(2);
  console.log(`raftmeta's gRPC server: ${values["grpc-server"]}; ${new Date().toISOString()}`);
  console.log(
    "| workload (gRPC) | raftmeta ops/s | p50 ms | p99 ms | etcd ops/s | p50 ms | p99 ms | ops/s ratio | p50 ratio |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const w of WORKLOADS) {
    const r = results.raftmeta[w.name];
    const e = results.etcd[w.name];
    const errors = r.errors + e.errors > 0
      ? ` (errors: raftmeta ${r.errors}, etcd ${e.errors})`
      : "";
    console.log(
      `| ${w.name}${errors} | ${f(r.opsPerSecond)} | ${f(r.latencyMsP50)} | ${
        f(r.latencyMsP99)
      } | ` +
        `${f(e.opsPerSecond)} | ${f(e.latencyMsP50)} | ${f(e.latencyMsP99)} | ` +
        `${(r.opsPerSecond / e.opsPerSecond).toFixed(2)} | ${
          (r.latencyMsP50 / e.latencyMsP50).toFixed(2)
        } |`,
    );
  }
  console.log();
  console.log(
    "| workload (gRPC) | raftmeta leader CPU µs/op | cluster µs/op | etcd leader CPU µs/op | cluster µs/op | leader CPU ratio |",
  );
  console.log("|---|---|---|---|---|---|");
  for (const w of WORKLOADS) {
    const r = results.raftmeta[w.name];
    const e = results.etcd[w.name];
    console.log(
      `| ${w.name} | ${r.leaderCpuUsPerOp.toFixed(0)} | ${r.clusterCpuUsPerOp.toFixed(0)} | ` +
        `${e.leaderCpuUsPerOp.toFixed(0)} | ${e.clusterCpuUsPerOp.toFixed(0)} | ` +
        `${(r.leaderCpuUsPerOp / e.leaderCpuUsPerOp).toFixed(2)} |`,
    );
  }
}

if (import.meta.main) {
  Deno.addSignalListener("SIGINT", () => {
    stopChildren().finally(() => Deno.exit(130));
  });
  await main();
}
