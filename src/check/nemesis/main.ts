/**
 * `deno task nemesis`: fault tests against real node processes (docs/nemesis.md). Prints one
 * summary line per run and writes `report.json` beside the histories; exits non-zero on any
 * violation.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { NemesisCluster } from "./cluster.ts";
import { NEMESIS_FAULTS, type NemesisFault, runNemesis, summaryLine } from "./run.ts";

const HELP = `raftmeta nemesis: fault tests against real processes

Usage: deno task nemesis [flags]

  --duration-s N    seconds of client load per run (default 30)
  --runs N          runs, seeds seed, seed+1, ... (default 1)
  --seed N          seed of the runner's choices (default: random)
  --nodes N         node processes, at least 3 (default 3)
  --clients N       key-value clients, each on one node in turn (default 6)
  --locks N         lock workers (default 2)
  --faults LIST     comma-separated, from: ${NEMESIS_FAULTS.join(",")}
                    (default: all; "none" for a run without faults)
  --dir DIR         where runs go (DIR/seed-N); default a new temp directory
  --keep-dir        keep data and logs of runs without violations (runs with one are always kept)
  -v, --verbose     print each fault as it is injected
  -h, --help        this text
`;

function int(text: string | undefined, what: string, min: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
    throw new Error(`${what} must be an integer of at least ${min}: ${JSON.stringify(text)}`);
  }
  return Number(text);
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      "duration-s": { type: "string" },
      runs: { type: "string" },
      seed: { type: "string" },
      nodes: { type: "string" },
      clients: { type: "string" },
      locks: { type: "string" },
      faults: { type: "string" },
      dir: { type: "string" },
      "keep-dir": { type: "boolean", default: false },
      verbose: { type: "boolean", short: "v", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const faults = values.faults === undefined
    ? [...NEMESIS_FAULTS]
    : values.faults === "none"
    ? []
    : values.faults.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const f of faults) {
    if (!(NEMESIS_FAULTS as readonly string[]).includes(f)) {
      throw new Error(
        `Unknown fault ${JSON.stringify(f)} in --faults; known: ${NEMESIS_FAULTS.join(", ")}`,
      );
    }
  }
  const runs = int(values.runs, "--runs", 1) ?? 1;
  const seed0 = int(values.seed, "--seed", 0) ?? Math.floor(Math.random() * 1e9);
  const root = values.dir ?? await Deno.makeTempDir({ prefix: "raftmeta-nemesis-" });
  let failed = 0;
  for (let i = 0; i < runs; i++) {
    const seed = seed0 + i;
    const dir = `${root}/seed-${seed}`;
    const { report } = await runNemesis({
      seed,
      nodes: int(values.nodes, "--nodes", 3) ?? 3,
      clients: int(values.clients, "--clients", 0) ?? 6,
      lockWorkers: int(values.locks, "--locks", 0) ?? 2,
      durationS: int(values["duration-s"], "--duration-s", 1) ?? 30,
      faults: faults as NemesisFault[],
      dir,
      log: values.verbose ? (line) => console.log(`  ${line}`) : undefined,
    });
    console.log(summaryLine(report));
    for (const v of report.violations) console.log(`  VIOLATION: ${v}`);
    for (const s of report.faultsSkipped) console.log(`  skipped ${s.kind}: ${s.reason}`);
    if (report.violations.length > 0) failed++;
    else if (!values["keep-dir"]) {
      // Keep the report and histories; drop the bulky data directories and logs.
      for (const entry of Deno.readDirSync(dir)) {
        if (entry.isDirectory) await Deno.remove(`${dir}/${entry.name}`, { recursive: true });
      }
    }
  }
  console.log(`nemesis: ${runs} runs, ${failed} with violations; reports under ${root}`);
  return failed > 0 ? 1 : 0;
}

if (import.meta.main) {
  // Ctrl-C: leave no node process or tmpfs mount behind.
  Deno.addSignalListener("SIGINT", async () => {
    await Promise.all([...NemesisCluster.live].map((c) => c.stop()));
    Deno.exit(130);
  });
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`nemesis: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
