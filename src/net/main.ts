/**
 * `deno task serve`: runs one raftmeta node. With no flags it is a single-node cluster on
 * 127.0.0.1:2379 with its data in ./data. Run with `--help` for the flags.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Address } from "./transport.ts";
import { RaftServer, StartupError } from "./server.ts";

const HELP = `raftmeta node

Usage: deno task serve [flags]
       deno run -A src/net/main.ts [flags]

  --name ID                     node id (default n1)
  --cluster-id ID               cluster id; a data dir of another cluster is refused (default raftmeta)
  --data-dir DIR                data directory (default ./data)
  --listen-client HOST:PORT     client HTTP address (default 127.0.0.1:2379)
  --listen-peer HOST:PORT       peer address (default 127.0.0.1:2380)
  --peers ID=HOST:PORT,...      the other voters and their peer addresses (default: none,
                                a single-node cluster)
  --cluster-secret SECRET       secret every peer must prove (default: $RAFTMETA_CLUSTER_SECRET,
                                else empty; set one whenever peers are not all on this machine)
  --election-timeout-min-ms N   (default 150)
  --election-timeout-max-ms N   (default 300)
  --heartbeat-interval-ms N     (default 50)
  --tick-ms N                   clock tick of the host loop (default 5)
  --max-request-bytes N         largest HTTP request body (default 1572864, 1.5 MiB)
  --max-response-bytes N        most bytes of key-values one answer may carry (a range, the
                                ranges of a txn, a delete's previous values), counted as
                                base64 key + value + 128 each while they are gathered; beyond,
                                429 with etcd's ResourceExhausted (code 8) (default 67108864,
                                64 MiB; ranges inside a write txn stop at 64 MiB regardless)
  --request-timeout-ms N        longest wait for commit, read index or leader (default 5000)
  --join                        the data dir is empty but peers knew this node: rebuild it
                                from the leader, withholding votes until caught up
  --snapshot-entries N          snapshot and compact the log after at most N applied entries
                                (each node draws N/2..N anew, so nodes do not snapshot at once;
                                default 100000, as etcd's --snapshot-count)
  --probe-ms N                  how long an empty data dir asks peers about itself (default 2000)
  --watchers-max N              most watchers on this node (default 1000)
  --watch-buffer-events N       events a watcher may leave unread before it is cancelled as
                                slow (default 10000)
  --watch-progress-ms N         progress notification period for idle watchers (default 1000)
  -h, --help                    this text

Logs are JSON lines on stdout. Stop with Ctrl-C (SIGINT) or SIGTERM.
`;

/** Parses `host:port`. */
export function parseAddress(text: string, what: string): Address {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text);
  if (m === null || Number(m[2]) > 65535) {
    throw new Error(`${what} must be HOST:PORT: ${JSON.stringify(text)}`);
  }
  return { hostname: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

/** Parses `n2=127.0.0.1:2380,n3=...`. */
export function parsePeers(text: string): Map<string, Address> {
  const out = new Map<string, Address>();
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new Error(`--peers entry must be ID=HOST:PORT: ${JSON.stringify(part)}`);
    const id = part.slice(0, eq);
    if (out.has(id)) throw new Error(`--peers lists "${id}" twice`);
    out.set(id, parseAddress(part.slice(eq + 1), `--peers entry for "${id}"`));
  }
  return out;
}

function int(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new Error(`${what} must be a non-negative integer: ${v}`);
  return Number(v);
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      name: { type: "string", default: "n1" },
      "cluster-id": { type: "string", default: "raftmeta" },
      "data-dir": { type: "string", default: "./data" },
      "listen-client": { type: "string", default: "127.0.0.1:2379" },
      "listen-peer": { type: "string", default: "127.0.0.1:2380" },
      peers: { type: "string", default: "" },
      "cluster-secret": { type: "string" },
      "election-timeout-min-ms": { type: "string" },
      "election-timeout-max-ms": { type: "string" },
      "heartbeat-interval-ms": { type: "string" },
      "tick-ms": { type: "string" },
      "max-request-bytes": { type: "string" },
      "max-response-bytes": { type: "string" },
      "request-timeout-ms": { type: "string" },
      join: { type: "boolean", default: false },
      "probe-ms": { type: "string" },
      "snapshot-entries": { type: "string" },
      "watchers-max": { type: "string" },
      "watch-buffer-events": { type: "string" },
      "watch-progress-ms": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const raftConfig: Record<string, number> = {};
  const min = int(values["election-timeout-min-ms"], "--election-timeout-min-ms");
  const max = int(values["election-timeout-max-ms"], "--election-timeout-max-ms");
  const hb = int(values["heartbeat-interval-ms"], "--heartbeat-interval-ms");
  if (min !== undefined) raftConfig.electionTimeoutMinMs = min;
  if (max !== undefined) raftConfig.electionTimeoutMaxMs = max;
  if (hb !== undefined) raftConfig.heartbeatIntervalMs = hb;
  const responseBytesMax = int(values["max-response-bytes"], "--max-response-bytes");
  if (responseBytesMax === 0) throw new Error("--max-response-bytes must be positive: 0");
  const server = await RaftServer.start({
    nodeId: values.name,
    clusterId: values["cluster-id"],
    dataDir: values["data-dir"],
    clientListen: parseAddress(values["listen-client"]!, "--listen-client"),
    peerListen: parseAddress(values["listen-peer"]!, "--listen-peer"),
    peers: parsePeers(values.peers!),
    secret: values["cluster-secret"] ?? Deno.env.get("RAFTMETA_CLUSTER_SECRET") ?? "",
    raftConfig,
    tickMs: int(values["tick-ms"], "--tick-ms"),
    requestBytesMax: int(values["max-request-bytes"], "--max-request-bytes"),
    responseBytesMax,
    requestTimeoutMs: int(values["request-timeout-ms"], "--request-timeout-ms"),
    join: values.join,
    probeMs: int(values["probe-ms"], "--probe-ms"),
    snapshotEntries: int(values["snapshot-entries"], "--snapshot-entries"),
    watchersMax: int(values["watchers-max"], "--watchers-max"),
    watchBufferEventsMax: int(values["watch-buffer-events"], "--watch-buffer-events"),
    watchProgressMs: int(values["watch-progress-ms"], "--watch-progress-ms"),
  });
  const stop = () => {
    server.logEvent("stopping", {});
    server.close();
    // Whatever still holds the event loop, the process ends soon after a stop signal.
    setTimeout(() => Deno.exit(0), 2000);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.stopped;
  return server.fatal === undefined ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    const code = e instanceof StartupError ? e.exitCode : 2;
    console.error(`raftmeta: ${(e as Error).message}`);
    Deno.exit(code);
  }
}
