/**
 * `deno task sim`: runs many seeded simulations with faults and checks every one (Raft's safety
 * properties, liveness after healing, linearizability of the key-value clients, and the lock
 * checker over the lock workers). Prints a progress line, then one summary line; exits non-zero on
 * any violation and prints, for each failing seed, the command that replays it.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  FAULT_KINDS,
  type FaultKind,
  runSimulation,
  type SimulationOptions,
} from "./simulation.ts";
import { nodeTable } from "../observe/table.ts";
import { historyToJsonLines } from "./history.ts";
import type { FaultPoint } from "../raft/types.ts";

// The classic bugs `--fault-points` may switch on (to see the checks catch them).
const FAULT_POINTS: readonly FaultPoint[] = [
  "commit-earlier-term-by-counting",
  "forget-vote-on-restart",
  "truncate-on-stale-append",
  "read-without-quorum",
  "apply-retry-twice",
  "leader-counts-unstable-self",
  "send-before-persist",
  "credit-stale-replies",
  "config-on-commit",
  "two-changes-in-flight",
  "config-before-term-commit",
];

const LOCKS_DEFAULT = 3;

const HELP = `deno task sim — randomized deterministic simulation with faults

Usage:
  deno task sim [--seeds N] [--start S] [options]   run N seeds: S, S+1, ...
  deno task sim --seed S --verbose [options]        replay one seed with its node tables and history

Options:
  --seeds N       how many seeds to run (default 100)
  --start S       first seed (default 1)
  --seed S        run exactly this seed
  --nodes LIST    cluster sizes to use, e.g. 3 or 3,5,7 (default: chosen by each seed among 3,5,7)
  --faults LIST   fault kinds, comma-separated (default all): ${FAULT_KINDS.join(",")}
  --duration MS   virtual length of the faulty phase (default 10000)
  --clients N     concurrent key-value clients (default 4)
  --locks N       lock workers taking one lock with sessions and fencing tokens, some paused,
                  crashed or cut off past their lease (default 3; 0 turns them off and runs
                  about a third faster)
  --fault-points LIST
                  classic bugs to switch on, comma-separated, to see the checks catch them:
                  ${FAULT_POINTS.join(",")}
  --verbose       print faults, the final node table and the history of each failing seed
  -h, --help      show this help`;

function fail(message: string): never {
  console.error(`error: ${message}\nRun with --help for usage.`);
  Deno.exit(2);
}

function int(name: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    fail(`--${name} must be an integer from ${min} to ${max}: "${text}"`);
  }
  return n;
}

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        seeds: { type: "string" },
        start: { type: "string", default: "1" },
        seed: { type: "string" },
        nodes: { type: "string" },
        faults: { type: "string" },
        "fault-points": { type: "string" },
        duration: { type: "string", default: "10000" },
        clients: { type: "string", default: "4" },
        locks: { type: "string", default: String(LOCKS_DEFAULT) },
        verbose: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    fail((e as Error).message);
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const sizes = values.nodes?.split(",").map((s) => int("nodes", s, 1, 9));
  const faults = values.faults?.split(",").filter((f) => f !== "").map((f) => {
    if (!(FAULT_KINDS as readonly string[]).includes(f)) {
      fail(`unknown fault kind "${f}" (known: ${FAULT_KINDS.join(", ")})`);
    }
    return f as FaultKind;
  });
  const faultPoints = values["fault-points"]?.split(",").filter((f) => f !== "").map((f) => {
    if (!(FAULT_POINTS as readonly string[]).includes(f)) {
      fail(`unknown fault point "${f}" (known: ${FAULT_POINTS.join(", ")})`);
    }
    return f as FaultPoint;
  });
  const durationMs = int("duration", values.duration, 100);
  const clients = int("clients", values.clients, 1, 64);
  const locks = int("locks", values.locks, 0, 16);
  const seeds = values.seed !== undefined ? [int("seed", values.seed, 0)] : Array.from(
    { length: int("seeds", values.seeds ?? "100", 1) },
    (_, i) => int("start", values.start, 0) + i,
  );

  const replayFlags = [
    values.nodes !== undefined ? `--nodes ${values.nodes}` : "",
    values.faults !== undefined ? `--faults ${values.faults}` : "",
    faultPoints !== undefined ? `--fault-points ${faultPoints.join(",")}` : "",
    values.duration !== "10000" ? `--duration ${durationMs}` : "",
    values.clients !== "4" ? `--clients ${clients}` : "",
    locks !== LOCKS_DEFAULT ? `--locks ${locks}` : "",
  ].filter((s) => s !== "").join(" ");

  let operations = 0;
  let grants = 0;
  let faultCount = 0;
  let membershipChanges = 0;
  const failures: { seed: number; kind: string; message: string }[] = [];
  const started = Date.now();
  const tty = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  for (let i = 0; i < seeds.length; i++) {
    const seed = seeds[i];
    const options: SimulationOptions = {
      nodes: sizes?.[seed % sizes.length],
      faults,
      faultPoints,
      durationMs,
      clients,
      locks,
      eventsMax: values.verbose ? 100_000 : 0,
      log: values.verbose ? (line) => console.log(line) : undefined,
    };
    const r = await runSimulation(seed, options);
    operations += r.operations;
    grants += r.locks?.grants ?? 0;
    faultCount += r.faults;
    membershipChanges += r.membershipChanges;
    if (r.violation !== undefined) {
      failures.push({ seed, kind: r.violation.kind, message: r.violation.message });
      console.log(
        `\nseed ${seed} (${r.nodes} nodes): ${r.violation.kind} violation: ${r.violation.message}`,
      );
      console.log(
        `  replay: deno task sim --seed ${seed} --verbose${replayFlags ? " " + replayFlags : ""}`,
      );
    }
    if (values.verbose) {
      console.log(nodeTable(r.cluster, { title: `seed ${seed} final state` }).toString());
      console.log(`history (${r.history.length} operations, JSON lines):`);
      console.log(historyToJsonLines(r.history).trimEnd());
      if (r.locks !== undefined) {
        console.log(
          `lock history (${r.locks.history.records.length} records, then ` +
            `${r.locks.history.events.length} committed events; JSON lines):`,
        );
        for (const x of r.locks.history.records) console.log(JSON.stringify(x));
        for (const x of r.locks.history.events) console.log(JSON.stringify(x));
      }
    }
    const line =
      `seeds ${i + 1}/${seeds.length}, operations ${operations}, lock grants ${grants}, ` +
      `faults ${faultCount} (membership ${membershipChanges}), ` +
      `violations ${failures.length}, ${((Date.now() - started) / 1000).toFixed(0)} s`;
    if (tty) Deno.stderr.writeSync(encoder.encode(`\r${line}`));
    else if ((i + 1) % 50 === 0 && i + 1 < seeds.length) console.error(line);
  }
  if (tty) Deno.stderr.writeSync(encoder.encode("\n"));
  console.log(
    `seeds ${seeds.length}, operations checked ${operations}, lock grants checked ${grants}, ` +
      `faults injected ${faultCount} (membership changes ${membershipChanges}), ` +
      `violations ${failures.length}`,
  );
  return failures.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
