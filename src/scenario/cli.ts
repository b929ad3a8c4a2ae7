/**
 * The command line shared by scenario scripts: `--seed`, `--nodes`, `--help`, then run the steps
 * and exit non-zero when a step fails.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { runScenario, type ScenarioContext, type Step } from "./scenario.ts";

/** What a scenario script declares about itself. */
export interface ScenarioScript<C extends ScenarioContext> {
  /** Script name, e.g. `demo`. */
  readonly name: string;
  /** One line on what it shows. */
  readonly summary: string;
  /** Default node count. */
  readonly defaultNodes: number;
  /** Allowed node counts (inclusive range). */
  readonly nodesRange: readonly [number, number];
  /** Builds the context for a seed and node count. */
  context(seed: number, nodes: number): C;
  /** The steps. */
  readonly steps: readonly Step<C>[];
}

/** Parses `args`, runs the scenario and returns the process exit code (0 when every step holds). */
export function runScenarioCli<C extends ScenarioContext>(
  script: ScenarioScript<C>,
  args: string[],
  print: (text: string) => void = console.log,
): number {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        seed: { type: "string", default: "1" },
        nodes: { type: "string", default: String(script.defaultNodes) },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (e) {
    print(`error: ${(e as Error).message}\nRun with --help for usage.`);
    return 2;
  }
  if (values.help) {
    print(
      `${script.name}: ${script.summary}\n\n` +
        `Usage: deno run scenarios/${script.name}.ts [--seed N] [--nodes N]\n\n` +
        `  --seed N    seed for every random choice; the same seed prints the same run (default 1)\n` +
        `  --nodes N   cluster size, ${script.nodesRange[0]} to ${
          script.nodesRange[1]
        } (default ${script.defaultNodes})\n` +
        `  -h, --help  show this help`,
    );
    return 0;
  }
  const parsed = seedAndNodes(values, script.nodesRange);
  if (typeof parsed === "string") {
    print(`error: ${parsed}`);
    return 2;
  }
  const { seed, nodes } = parsed;
  print(`# ${script.name} — ${script.summary}\n(seed ${seed}, ${nodes} nodes)`);
  try {
    runScenario(script.steps, script.context(seed, nodes), print);
  } catch (e) {
    print(`\n✗ ${(e as Error).message}`);
    return 1;
  }
  print(`\nAll ${script.steps.length} steps hold.`);
  return 0;
}

/**
 * Validates the `--seed` and `--nodes` flags every scenario script takes. Returns the numbers, or
 * the error message naming the bad flag and value.
 */
export function seedAndNodes(
  values: { readonly seed?: unknown; readonly nodes?: unknown },
  nodesRange: readonly [number, number],
): { seed: number; nodes: number } | string {
  const seed = Number(values.seed);
  const nodes = Number(values.nodes);
  if (!Number.isSafeInteger(seed)) return `--seed must be an integer: "${values.seed}"`;
  const [lo, hi] = nodesRange;
  if (!Number.isInteger(nodes) || nodes < lo || nodes > hi) {
    return `--nodes must be an integer from ${lo} to ${hi}: "${values.nodes}"`;
  }
  return { seed, nodes };
}
