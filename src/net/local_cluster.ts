/**
 * `deno task cluster`: starts a local cluster of node processes (3 by default) on 127.0.0.1, each
 * with its own ports and data directory, prints their endpoints and the leader, and stops them all
 * on Ctrl-C. Node logs go to `<dir>/<id>.log`. The cluster secret is random for each run and
 * reaches the nodes in their environment, never on a command line (which every user can see).
 *
 * @module
 */

import { parseArgs } from "node:util";

const HELP = `raftmeta local cluster

Usage: deno task cluster [flags]

  --nodes N          number of nodes (default 3)
  --dir DIR          parent of the data directories (default ./data/cluster)
  --client-port P    first client port; node i uses P+i-1 (default 2379, so 2379..2381)
  --peer-port P      first peer port (default 12380)
  --grpc-port P      first port of etcd's gRPC API (--listen-grpc; default 2479, so 2479..2481),
                     for etcdctl --endpoints=127.0.0.1:2479
  --cluster-secret-file PATH
                     file with the cluster secret, passed on to the nodes (default: a random
                     secret for this run, given to the nodes in $RAFTMETA_CLUSTER_SECRET)
  --verbose          also print the nodes' log lines
  -h, --help         this text
`;

/** One running node process. */
export interface LocalNode {
  /** Node id. */
  readonly id: string;
  /** Client URL. */
  readonly clientUrl: string;
  /** URL of etcd's gRPC API. */
  readonly grpcUrl: string;
  /** The process. */
  readonly process: Deno.ChildProcess;
}

const MAIN = new URL("./main.ts", import.meta.url);

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      nodes: { type: "string", default: "3" },
      dir: { type: "string", default: "./data/cluster" },
      "client-port": { type: "string", default: "2379" },
      "peer-port": { type: "string", default: "12380" },
      "grpc-port": { type: "string", default: "2479" },
      "cluster-secret-file": { type: "string" },
      verbose: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const n = Number(values.nodes);
  if (!Number.isInteger(n) || n < 1 || n > 9) throw new Error(`--nodes must be 1..9: ${n}`);
  const clientPort = Number(values["client-port"]);
  const peerPort = Number(values["peer-port"]);
  const grpcPort = Number(values["grpc-port"]);
  const dir = values.dir!;
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretFile = values["cluster-secret-file"];
  // Every node restarts with this script, so a fresh secret per run is enough, and none is stored.
  const secretArgs = secretFile === undefined ? [] : ["--cluster-secret-file", secretFile];
  const env: Record<string, string> = secretFile === undefined
    ? { RAFTMETA_CLUSTER_SECRET: randomSecret() }
    : {};
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`);
  const nodes: LocalNode[] = [];
  for (const [i, id] of ids.entries()) {
    const others = ids.filter((p) => p !== id);
    const peers = others.map((p) => `${p}=127.0.0.1:${peerPort + ids.indexOf(p)}`).join(",");
    const peerClientUrls = others.map((p) => `${p}=http://127.0.0.1:${clientPort + ids.indexOf(p)}`)
      .join(",");
    const clientUrl = `http://127.0.0.1:${clientPort + i}`;
    const grpcUrl = `http://127.0.0.1:${grpcPort + i}`;
    const peerGrpcUrls = others.map((p) => `${p}=http://127.0.0.1:${grpcPort + ids.indexOf(p)}`)
      .join(",");
    const args = [
      "run",
      "--allow-all",
      MAIN.href,
      "--name",
      id,
      "--cluster-id",
      "local",
      "--data-dir",
      `${dir}/${id}`,
      "--listen-client",
      `127.0.0.1:${clientPort + i}`,
      "--listen-peer",
      `127.0.0.1:${peerPort + i}`,
      "--peers",
      peers,
      "--peer-client-urls",
      peerClientUrls,
      "--listen-grpc",
      `127.0.0.1:${grpcPort + i}`,
      "--peer-grpc-urls",
      peerGrpcUrls,
      ...secretArgs,
    ];
    const process = new Deno.Command(Deno.execPath(), {
      args,
      env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    nodes.push({ id, clientUrl, grpcUrl, process });
    const log = Deno.openSync(`${dir}/${id}.log`, { create: true, append: true, mode: 0o600 });
    pipeLines(process.stdout, id, log, values.verbose);
    pipeLines(process.stderr, id, log, true);
    process.status.then((s) => {
      if (!stopping) console.log(`${id} exited with code ${s.code}`);
    });
  }
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    console.log("\nstopping all nodes…");
    for (const node of nodes) {
      try {
        node.process.kill("SIGTERM");
      } catch { /* already gone */ }
    }
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);

  console.log(`raftmeta local cluster "local" of ${n} nodes; data in ${dir}`);
  for (const node of nodes) {
    console.log(`  ${node.id}  ${node.clientUrl}  gRPC ${node.grpcUrl}`);
  }
  const leader = await waitForLeader(nodes, 15_000);
  console.log(leader === undefined ? "no leader yet" : `leader: ${leader}`);
  console.log(
    `try: curl -L ${nodes[0].clientUrl}/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'`,
  );
  console.log(`     deno task ctl --endpoints ${nodes.map((x) => x.clientUrl).join(",")} status`);
  console.log(
    `     ETCDCTL_API=3 etcdctl --endpoints=${
      nodes.map((x) => x.grpcUrl.replace("http://", "")).join(",")
    } put foo bar`,
  );
  console.log("Ctrl-C stops every node.");
  await Promise.all(nodes.map((x) => x.process.status));
  return 0;
}

/** 32 random bytes as hex. */
function randomSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function waitForLeader(nodes: LocalNode[], timeoutMs: number): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const node of nodes) {
      try {
        const res = await fetch(`${node.clientUrl}/v1/status?local=1`, {
          signal: AbortSignal.timeout(300),
        });
        const body = await res.json();
        if (body?.node?.role === "Leader") return `${node.id} (${node.clientUrl})`;
      } catch { /* not up yet */ }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return undefined;
}

async function pipeLines(
  stream: ReadableStream<Uint8Array>,
  id: string,
  log: Deno.FsFile,
  print: boolean,
): Promise<void> {
  const encoder = new TextEncoder();
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      log.writeSync(encoder.encode(line + "\n"));
      if (print) console.log(`[${id}] ${line}`);
    }
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`cluster: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
