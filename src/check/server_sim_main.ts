/**
 * `deno task sim:servers`: randomized runs over real `RaftServer`s (src/check/server_simulation.ts)
 * with crashes, restarts, pauses and partitions, and in a share of the seeds slow disks, drifting
 * clocks, long-held messages, long pauses and watch clients; every history is checked for
 * linearizability, every lease for early expiry and for coming back, every watch for missed,
 * repeated or reordered events. Prints one line per failing seed with the command that replays
 * it (and with `--verbose` one line per seed), then a summary; exits 1 on a violation.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  runServerSimulation,
  SERVER_SEED_SHARE,
  SERVER_WIDE_KINDS,
  type ServerWideKind,
} from "./server_simulation.ts";
import { historyToJsonLines } from "./history.ts";
import { SERVER_FAULT_POINTS, type ServerFaultPoint } from "../net/server.ts";

const HELP = `deno task sim:servers — randomized runs over real RaftServers on a simulated
clock, disk and network (request handling, forwarding, read barrier, lease
keep-alive, snapshotter, watches), with crashes, pauses and partitions, and in
a share of the seeds the wider kinds: ${SERVER_WIDE_KINDS.join(", ")}

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
  --wide LIST       wider kinds to switch on in every seed, comma-separated, or
                    all or none (default: each in a share of the seeds, ${
  SERVER_WIDE_KINDS.map((k) => `${k} ${SERVER_SEED_SHARE[k] * 100}%`).join(", ")
})
  --watch-clients N watch clients when watch is on (default 2)
  --fault-points LIST
                    server bugs to switch on, comma-separated: ${SERVER_FAULT_POINTS.join(",")}
  --verbose         print one line per seed, and the history of each failing seed
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
      wide: { type: "string" },
      "watch-clients": { type: "string" },
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
const wide = values.wide === undefined
  ? undefined
  : values.wide === "all"
  ? [...SERVER_WIDE_KINDS]
  : values.wide === "none"
  ? []
  : values.wide.split(",").filter((k) => k !== "").map((k) => {
    if (!(SERVER_WIDE_KINDS as readonly string[]).includes(k)) {
      fail(`Unknown wide kind ${JSON.stringify(k)}; known: ${SERVER_WIDE_KINDS.join(", ")}`);
    }
    return k as ServerWideKind;
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
  wide,
  watchClients: positiveInt("watch-clients", values["watch-clients"], 2),
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
  longPauses: 0,
  slowSyncs: 0,
  diskStalls: 0,
  longDelayed: 0,
  watchEvents: 0,
  watchCreates: 0,
};
/** Seeds each wider kind was on in. */
const seedsWith = Object.fromEntries(SERVER_WIDE_KINDS.map((k) => [k, 0])) as Record<
  ServerWideKind,
  number
>;
let driftMax = 0;
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
  totals.longPauses += r.faults.longPauses;
  totals.slowSyncs += r.faults.slowSyncs;
  totals.diskStalls += r.faults.diskStalls;
  totals.longDelayed += r.faults.longDelayed;
  totals.watchEvents += r.watches.events;
  totals.watchCreates += r.watches.creates;
  for (const k of r.wide) seedsWith[k]++;
  for (const rate of r.clockRates) driftMax = Math.max(driftMax, Math.abs(rate - 1));
  if (values.verbose) {
    const f = r.faults;
    console.log(
      `seed ${seed} [${r.wide.join(",")}]: ${r.ops.total} ops, ${f.crashes} crashes, ` +
        `${f.pauses} pauses, ${f.longPauses} long pauses, ${f.partitions} partitions, ` +
        `${f.slowSyncs} slow syncs (${f.diskStalls} stalls), ${f.longDelayed} long-held, ` +
        `clock rates ${r.clockRates.map((x) => x.toFixed(4)).join("/")}, ` +
        `${r.watches.events} watch events (${r.watches.creates} watches)`,
    );
  }
  if (r.ok) continue;
  failing.push(seed);
  const args = [
    `--seed ${seed}`,
    options.nodes !== 3 ? `--nodes ${options.nodes}` : "",
    options.clients !== 4 ? `--clients ${options.clients}` : "",
    options.leaseClients !== 2 ? `--lease-clients ${options.leaseClients}` : "",
    options.durationMs !== 4000 ? `--duration ${options.durationMs}` : "",
    faultPoints !== undefined ? `--fault-points ${faultPoints.join(",")}` : "",
    wide !== undefined ? `--wide ${wide.length === 0 ? "none" : wide.join(",")}` : "",
    options.watchClients !== 2 ? `--watch-clients ${options.watchClients}` : "",
  ].filter((a) => a !== "").join(" ");
  const what = [
    r.check.ok ? "" : r.check.result,
    r.leases.violations.length > 0 ? `${r.leases.violations.length} lease violations` : "",
    r.watches.violations.length > 0 ? `${r.watches.violations.length} watch violations` : "",
  ].filter((w) => w !== "").join(", ");
  console.log(`seed ${seed}: ${what} — replay: deno task sim:servers ${args} --verbose`);
  if (values.verbose) {
    for (const v of r.leases.violations) console.log(v);
    for (const v of r.watches.violations) console.log(v);
    console.log(r.check.failure?.explanation ?? "");
    console.log(historyToJsonLines(r.history));
  }
}
console.log(
  `${count} seeds, ${totals.ops} operations (${totals.unknown} unknown), ${totals.crashes} ` +
    `crashes, ${totals.pauses} pauses, ${totals.partitions} partitions, ${totals.forwards} ` +
    `forwarded requests, ${totals.leases} leases (${totals.keepAlives} keep-alives); ` +
    `seeds with ${SERVER_WIDE_KINDS.map((k) => `${k} ${seedsWith[k]}`).join(", ")}: ` +
    `${totals.slowSyncs} slow fdatasyncs (${totals.diskStalls} stalls of 100 ms or more), ` +
    `clock drift up to ${(driftMax * 100).toFixed(2)}%, ${totals.longDelayed} messages held ` +
    `for seconds, ${totals.longPauses} long pauses, ${totals.watchEvents} watch events ` +
    `(${totals.watchCreates} watches created): ${failing.length} violations`,
);
Deno.exit(failing.length > 0 ? 1 : 0);
