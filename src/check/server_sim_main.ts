/**
 * `deno task sim:servers`: randomized runs over real `RaftServer`s (src/check/server_simulation.ts)
 * with crashes, restarts, pauses and partitions; every history is checked for linearizability and
 * every lease for early expiry. Prints one
 * line per failing seed with the command that replays it, then a summary; exits 1 on a violation.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { runServerSimulation } from "./server_simulation.ts";
import { historyToJsonLines } from "./history.ts";
import { SERVER_FAULT_POINTS, type ServerFaultPoint } from "../net/server.ts";

const HELP = `deno task sim:servers — randomized runs over real RaftServers on a simulated
clock, disk and network (request handling, forwarding, read barrier, lease
keep-alive, snapshotter), with crashes, pauses and partitions

Usage:
  deno task sim:servers [--seeds N] [--start S] [options]
  deno task sim:servers --seed S --verbose            replay one seed and print its history

Options:
  --seeds N         how many seeds to run (default 100)
  --start S         first seed (default 1)
  --seed S          run exactly this seed
  --nodes N         servers per cluster (default 3)
  --clients N       concurrent clients (default 4)
  --lease-clients N clients that grant, keep alive and read leases (default 2; 0 for none)
  --duration MS     virtual length of the faulty phase (default 4000)
  --fault-points LIST
                    server bugs to switch on, comma-separated: ${SERVER_FAULT_POINTS.join(",")}
  --verbose         print the history of each failing seed
  -h, --help        show this help`;

function fail(message: string): never {
  console.error(`error: ${message}\nRun with --help for usage.`);
  Deno.exit(2);
}

function positiveInt(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1) {
    fail(`--${name} must be a positive integer: ${JSON.stringify(text)}`);
  }
  return Number(text);
}

let values;
try {
  ({ values } = parseArgs({
    args: Deno.args,
    options: {
      seeds: { type: "string" },
      start: { type: "string" },
      seed: { type: "string" },
      nodes: { type: "string" },
      clients: { type: "string" },
      "lease-clients": { type: "string" },
      duration: { type: "string" },
      "fault-points": { type: "string" },
      verbose: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  }));
} catch (e) {
  fail((e as Error).message);
}
if (values.help) {
  console.log(HELP);
  Deno.exit(0);
}
const faultPoints = values["fault-points"]?.split(",").filter((f) => f !== "").map((f) => {
  if (!(SERVER_FAULT_POINTS as readonly string[]).includes(f)) {
    fail(`Unknown fault point ${JSON.stringify(f)}; known: ${SERVER_FAULT_POINTS.join(", ")}`);
  }
  return f as ServerFaultPoint;
});
const single = values.seed === undefined ? undefined : positiveInt("seed", values.seed, 1);
const start = single ?? positiveInt("start", values.start, 1);
const count = single === undefined ? positiveInt("seeds", values.seeds, 100) : 1;
const options = {
  nodes: positiveInt("nodes", values.nodes, 3),
  clients: positiveInt("clients", values.clients, 4),
  leaseClients: values["lease-clients"] === "0"
    ? 0
    : positiveInt("lease-clients", values["lease-clients"], 2),
  durationMs: positiveInt("duration", values.duration, 4000),
  faultPoints,
};
if (options.nodes > 9) fail(`--nodes must be at most 9: ${options.nodes}`);

const totals = {
  ops: 0,
  unknown: 0,
  crashes: 0,
  partitions: 0,
  pauses: 0,
  forwards: 0,
  leases: 0,
  keepAlives: 0,
};
const failing: number[] = [];
for (let seed = start; seed < start + count; seed++) {
  const r = await runServerSimulation(seed, options);
  totals.ops += r.ops.total;
  totals.unknown += r.ops.unknown;
  totals.crashes += r.faults.crashes;
  totals.partitions += r.faults.partitions;
  totals.forwards += r.forwards;
  totals.pauses += r.faults.pauses;
  totals.leases += r.leases.records.length;
  totals.keepAlives += r.leases.keepAlives;
  if (r.ok) continue;
  failing.push(seed);
  const args = [
    `--seed ${seed}`,
    options.nodes !== 3 ? `--nodes ${options.nodes}` : "",
    options.clients !== 4 ? `--clients ${options.clients}` : "",
    options.leaseClients !== 2 ? `--lease-clients ${options.leaseClients}` : "",
    options.durationMs !== 4000 ? `--duration ${options.durationMs}` : "",
    faultPoints !== undefined ? `--fault-points ${faultPoints.join(",")}` : "",
  ].filter((a) => a !== "").join(" ");
  const what = [
    r.check.ok ? "" : r.check.result,
    r.leases.violations.length > 0 ? `${r.leases.violations.length} early lease expiries` : "",
  ].filter((w) => w !== "").join(", ");
  console.log(`seed ${seed}: ${what} — replay: deno task sim:servers ${args} --verbose`);
  if (values.verbose) {
    for (const v of r.leases.violations) console.log(v);
    console.log(r.check.failure?.explanation ?? "");
    console.log(historyToJsonLines(r.history));
  }
}
console.log(
  `${count} seeds, ${totals.ops} operations (${totals.unknown} unknown), ${totals.crashes} ` +
    `crashes, ${totals.pauses} pauses, ${totals.partitions} partitions, ${totals.forwards} ` +
    `forwarded requests, ${totals.leases} leases (${totals.keepAlives} keep-alives): ` +
    `${failing.length} violations`,
);
Deno.exit(failing.length > 0 ? 1 : 0);
