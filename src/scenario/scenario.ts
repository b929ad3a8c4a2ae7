/**
 * A scenario is a list of named steps over a simulated cluster. Each step explains the Raft rule
 * at work, acts, and checks its claim (throwing when it does not hold). The same steps run as a
 * script (`deno run scenarios/<name>.ts`), cell by cell in a notebook, and under `deno test`.
 *
 * @module
 */

import type { Cluster } from "../sim/cluster.ts";
import { type NodeTable, nodeTable } from "../observe/table.ts";

/** One named step of a scenario. */
export interface Step<C> {
  /** Short name, printed as the step's heading. */
  readonly name: string;
  /** One or two sentences on the Raft rule at work. */
  readonly explain: string;
  /** Acts on the context and checks the step's claim; throws when the claim does not hold. */
  run(context: C): void;
}

/** What every scenario context has. */
export interface ScenarioContext {
  /** The simulated cluster the steps drive. */
  readonly cluster: Cluster;
  /** Other names of the nodes shown next to theirs in tables and timelines (Figure 8's S1–S5). */
  aliases?: Readonly<Record<string, string>>;
}

/** A step that failed, with its position. */
export class StepFailure extends Error {
  /** The failed step's name. */
  readonly step: string;
  /** Creates the error. */
  constructor(step: string, index: number, cause: unknown) {
    super(`Step ${index + 1} "${step}" failed: ${cause instanceof Error ? cause.message : cause}`, {
      cause,
    });
    this.name = "StepFailure";
    this.step = step;
  }
}

/** Runs one step and returns the node table after it. Wraps a failure in {@linkcode StepFailure}. */
export function runStep<C extends ScenarioContext>(
  steps: readonly Step<C>[],
  index: number,
  context: C,
): NodeTable {
  const step = steps[index];
  try {
    step.run(context);
  } catch (e) {
    throw new StepFailure(step.name, index, e);
  }
  return nodeTable(context.cluster, {
    title: `Step ${index + 1}: ${step.name}`,
    aliases: context.aliases,
  });
}

/**
 * Runs every step in order, calling `print` with each step's heading, explanation and node table.
 * Throws {@linkcode StepFailure} at the first failed step.
 */
export function runScenario<C extends ScenarioContext>(
  steps: readonly Step<C>[],
  context: C,
  print: (text: string) => void = () => {},
): void {
  for (let i = 0; i < steps.length; i++) {
    print(`\n## Step ${i + 1}: ${steps[i].name}\n${steps[i].explain}\n`);
    const table = runStep(steps, i, context);
    print(table.toString());
    print(`✓ step ${i + 1} holds`);
  }
}

/** Throws with `message` when `condition` is false: the claims inside steps. */
export function claim(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}
