/**
 * What the tutorial chapters share: a chapter is a scenario (named steps over a simulated cluster)
 * with a number, a title and an introduction. `ChapterRun` steps it one cell at a time for
 * notebooks — each step shows the node table and the SVG timeline of the messages it caused — and
 * `runChapterCli` runs it end to end as a script with text tables and timelines.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Cluster } from "../src/sim/cluster.ts";
import { runStep, type ScenarioContext, type Step, StepFailure } from "../src/scenario/scenario.ts";
import { type ScenarioScript, seedAndNodes } from "../src/scenario/cli.ts";
import {
  JUPYTER_DISPLAY,
  type NodeTable,
  nodeTable,
  TEXT_COLUMNS_MAX,
} from "../src/observe/table.ts";
import { recorderFor, type Timeline } from "../src/observe/timeline.ts";
import { type RuleClaims, type RuleId, rulesLine } from "./figure2.ts";
import { exchangeOf } from "./_exchange.ts";

/** Something a step wants shown besides the table and the timeline (e.g. a chart). */
export interface Figure {
  /** The figure as standalone SVG. */
  toSvg(): string;
  /** The figure as an HTML fragment, when it is better shown as HTML than as SVG. */
  toHtml?(): string;
  /** The figure as text for a terminal. */
  toString(): string;
}

/** The context every chapter uses: the cluster may be replaced by a step, figures may be added. */
export interface ChapterContext extends ScenarioContext, RuleClaims {
  /** The cluster shown in the tables (a step may swap in a new one). */
  cluster: Cluster;
  /** Figures the last step produced; shown after its table and cleared. */
  figures?: Figure[];
  /** Extra lines of text the last step produced (measurements); shown and cleared. */
  notes?: string[];
  /** In a "break it" step: whether the rule is switched off (set by `ChapterRun.step`). */
  ruleOff?: boolean;
}

/**
 * A chapter step: a scenario step that may name the Figure 2 rules it shows (and must then assert
 * each with `claimRule`), or be a "break it" step that switches a rule off.
 */
export interface ChapterStep<C> extends Step<C> {
  /** The Figure 2 rules the step shows (scenarios/figure2.ts). */
  readonly rules?: readonly RuleId[];
  /**
   * Set on a "break it" step: what it switches off. The step reads `ctx.ruleOff` (default true):
   * switched off, it asserts that the checker catches the bug; on, that all is well.
   */
  readonly breakIt?: string;
}

/** Extra command-line flags a chapter accepts, parsed as strings. */
export interface ChapterFlag {
  /** Default value. */
  readonly default: string;
  /** One line of help. */
  readonly help: string;
}

/** A tutorial chapter: a scenario script with a number, a title and an introduction. */
export interface Chapter<C extends ChapterContext> extends ScenarioScript<C> {
  /** Chapter number, 1-based. */
  readonly number: number;
  /** Title, e.g. "Leader election". */
  readonly title: string;
  /** A paragraph or two of Markdown shown at the top of the notebook. */
  readonly intro: string;
  /** Extra flags (e.g. `trials`), passed to `contextWith`. */
  readonly flags?: Readonly<Record<string, ChapterFlag>>;
  /** The steps, with their Figure 2 tags. */
  readonly steps: readonly ChapterStep<C>[];
  /** Builds the context with the extra flags' values. Defaults to `context(seed, nodes)`. */
  contextWith?(seed: number, nodes: number, flags: Readonly<Record<string, string>>): C;
}

/** Swaps a new cluster into the context, and starts recording its timeline for the current step. */
export function useCluster(ctx: ChapterContext, cluster: Cluster): void {
  ctx.cluster = cluster;
  recorderFor(cluster).begin();
  exchangeOf(cluster).begin();
}

/** Adds a figure for the current step to show. */
export function showFigure(ctx: ChapterContext, figure: Figure): void {
  (ctx.figures ??= []).push(figure);
}

/**
 * Shows the logs side by side as they are at this moment of the step (e.g. just before a repair),
 * captioned; the table after the step shows them again once repaired.
 */
export function showLogs(ctx: ChapterContext, caption: string): void {
  const table = nodeTable(ctx.cluster, { aliases: ctx.aliases });
  const lines = [`${caption} (t=${table.atMs} ms):`, ...table.gridLines()];
  showFigure(ctx, {
    toString: () => lines.join("\n"),
    toHtml: () =>
      `<div class="raftmeta-logs-at"><div style="font-family:monospace;color:#555">${
        esc(`${caption} (t=${table.atMs} ms):`)
      }</div>${table.gridHtml()}</div>`,
    toSvg: () => {
      const h = 16 * lines.length + 8;
      const w = Math.max(...lines.map((l) => l.length)) * 7 + 16;
      return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" ` +
        `font-family="monospace" font-size="11">${
          lines.map((l, i) =>
            `<text x="8" y="${16 * (i + 1)}" xml:space="preserve">${esc(l)}</text>`
          )
            .join("")
        }</svg>`;
    },
  });
}

/** Adds a line of text for the current step to show. */
export function note(ctx: ChapterContext, text: string): void {
  (ctx.notes ??= []).push(text);
}

/** The outcome of one step: its node table, its timeline, and any figures and notes. */
export class StepView {
  /** 1-based step number. */
  readonly number: number;
  /** Step name. */
  readonly name: string;
  /** The node table after the step. */
  readonly table: NodeTable;
  /** The messages of the step. */
  readonly timeline: Timeline;
  /** Charts the step drew. */
  readonly figures: readonly Figure[];
  /** Measurements the step wrote. */
  readonly notes: readonly string[];
  /** The Figure 2 rules the step showed (and asserted). */
  readonly rules: readonly RuleId[];
  /** The node table before the step, kept when the step repaired (replaced) log entries. */
  readonly before: NodeTable | undefined;

  /** @internal Built by {@linkcode ChapterRun.step}. */
  constructor(
    fields: {
      number: number;
      name: string;
      table: NodeTable;
      timeline: Timeline;
      figures: Figure[];
      notes: string[];
      rules?: readonly RuleId[];
      before?: NodeTable;
    },
  ) {
    this.number = fields.number;
    this.name = fields.name;
    this.table = fields.table;
    this.timeline = fields.timeline;
    this.figures = fields.figures;
    this.notes = fields.notes;
    this.rules = fields.rules ?? [];
    this.before = fields.before;
  }

  /** The log grid before the step, as text lines (empty unless the step repaired a log). */
  beforeLines(): string[] {
    if (this.before === undefined) return [];
    return [
      `log before this step (entries were replaced; the grid below the table is after):`,
      ...this.before.gridLines(),
    ];
  }

  /** Table, notes, figures (as text) and the timeline as text. */
  toString(): string {
    return [
      ...(this.rules.length > 0 ? [wrapText(rulesLine(this.rules))] : []),
      ...this.beforeLines(),
      this.table.toString(),
      ...this.notes.map((n) => wrapText(n)),
      ...this.figures.map((f) => f.toString()),
      this.timeline.toString(),
      `✓ step ${this.number} holds`,
    ].join("\n");
  }

  /** Table, notes, figures and timeline as one HTML fragment (SVG inline). */
  toHtml(): string {
    const notes = this.notes.length === 0
      ? ""
      : `<pre style="font-size:90%;white-space:pre-wrap">${esc(this.notes.join("\n"))}</pre>`;
    const figures = this.figures.map((f) =>
      `<div style="max-width:100%">${f.toHtml?.() ?? f.toSvg()}</div>`
    )
      .join("");
    const before = this.before === undefined ? "" : `<div class="raftmeta-before">` +
      `<div style="font-family:monospace;color:#555">log before this step (entries were ` +
      `replaced):</div>${this.before.gridHtml()}</div>`;
    const rules = this.rules.length === 0
      ? ""
      : `<div style="font-size:90%"><b>Figure 2:</b> ${
        esc(rulesLine(this.rules).slice("Figure 2: ".length))
      }</div>`;
    return `${rules}${before}${this.table.toHtml()}${notes}${figures}` +
      `<div style="max-width:100%">${this.timeline.toSvg()}</div>` +
      `<div style="color:#2e7d32">✓ step ${this.number} holds</div>`;
  }

  /** Deno's Jupyter kernel calls this to show the step. */
  [JUPYTER_DISPLAY](): Record<string, string> {
    return { "text/html": this.toHtml(), "text/plain": this.toString() };
  }
}

/** A chapter being stepped, one step per notebook cell. */
export class ChapterRun<C extends ChapterContext> {
  /** The chapter. */
  readonly chapter: Chapter<C>;
  /** The context the steps share. */
  readonly context: C;
  #next = 0;

  /** Builds the chapter's context for a seed and node count (and extra flags). */
  constructor(
    chapter: Chapter<C>,
    options: { seed?: number; nodes?: number; flags?: Record<string, string> } = {},
  ) {
    this.chapter = chapter;
    const seed = options.seed ?? 1;
    const nodes = options.nodes ?? chapter.defaultNodes;
    const flags: Record<string, string> = {};
    for (const [k, f] of Object.entries(chapter.flags ?? {})) flags[k] = f.default;
    Object.assign(flags, options.flags ?? {});
    this.context = chapter.contextWith?.(seed, nodes, flags) ?? chapter.context(seed, nodes);
  }

  /** The cluster the steps drive (it may change from step to step). */
  get cluster(): Cluster {
    return this.context.cluster;
  }

  /**
   * Runs step `number` (1-based; steps must run in order) and returns its view. Throws a
   * `StepFailure` when the step's claim does not hold, or when it is tagged with a Figure 2 rule it
   * did not assert. `ruleOff` is for "break it" steps only: false runs the step with the rule on.
   */
  step(number: number, options: { ruleOff?: boolean } = {}): StepView {
    const steps = this.chapter.steps;
    // A "break it" step runs on a cluster of its own, so its cell may be flipped and run again.
    const again = number === this.#next && steps[number - 1]?.breakIt !== undefined;
    if (number !== this.#next + 1 && !again) {
      throw new Error(
        `Run the steps in order: the next step is ${this.#next + 1}, not ${number}`,
      );
    }
    if (number > steps.length) throw new RangeError(`Chapter has ${steps.length} steps`);
    const step = steps[number - 1];
    if (options.ruleOff !== undefined && step.breakIt === undefined) {
      throw new Error(
        `Step ${number} "${step.name}" is not a "break it" step: ruleOff does not apply`,
      );
    }
    const ctx = this.context;
    ctx.figures = [];
    ctx.notes = [];
    ctx.shown = new Set();
    ctx.ruleOff = step.breakIt === undefined ? undefined : options.ruleOff ?? true;
    recorderFor(ctx.cluster).begin();
    exchangeOf(ctx.cluster).begin();
    const clusterBefore = ctx.cluster;
    const tableBefore = nodeTable(ctx.cluster, { aliases: ctx.aliases });
    const table = runStep(steps, number - 1, ctx);
    const unasserted = (step.rules ?? []).filter((r) => !ctx.shown!.has(r));
    if (unasserted.length > 0) {
      throw new StepFailure(
        step.name,
        number - 1,
        `it shows Figure 2 rule ${unasserted.join(", ")} but asserted nothing about it`,
      );
    }
    this.#next = number;
    const timeline = recorderFor(ctx.cluster).end({
      title: `Step ${number}: ${steps[number - 1].name} — messages`,
      aliases: ctx.aliases,
    });
    // A step on the same cluster that replaced log entries shows the logs before it, too.
    const before = ctx.cluster === clusterBefore && table.repairedSince(tableBefore)
      ? tableBefore
      : undefined;
    const view = new StepView({
      number,
      name: steps[number - 1].name,
      table,
      timeline,
      figures: ctx.figures,
      notes: ctx.notes,
      rules: step.rules,
      before,
    });
    ctx.figures = [];
    ctx.notes = [];
    return view;
  }

  /** Runs every remaining step; returns their views. */
  rest(): StepView[] {
    const views: StepView[] = [];
    while (this.#next < this.chapter.steps.length) views.push(this.step(this.#next + 1));
    return views;
  }
}

/** Starts stepping a chapter (for notebooks): `const run = start(chapter); run.step(1)`. */
export function start<C extends ChapterContext>(
  chapter: Chapter<C>,
  options: { seed?: number; nodes?: number; flags?: Record<string, string> } = {},
): ChapterRun<C> {
  return new ChapterRun(chapter, options);
}

/**
 * Parses `args` (`--seed`, `--nodes`, `--help`, the chapter's own flags, and `--no-timeline`),
 * runs every step printing its explanation, node table and timeline, and returns the exit code.
 * Same flags and messages as `runScenarioCli`.
 */
export function runChapterCli<C extends ChapterContext>(
  chapter: Chapter<C>,
  args: string[],
  print: (text: string) => void = console.log,
): number {
  const extra = chapter.flags ?? {};
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        seed: { type: "string", default: "1" },
        nodes: { type: "string", default: String(chapter.defaultNodes) },
        "no-timeline": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
        ...Object.fromEntries(
          Object.entries(extra).map(([k, f]) => [k, { type: "string", default: f.default }]),
        ),
      },
      strict: true,
    }) as { values: Record<string, string | boolean | undefined> });
  } catch (e) {
    print(`error: ${(e as Error).message}\nRun with --help for usage.`);
    return 2;
  }
  const file = `scenarios/${chapter.name}.ts`;
  if (values.help) {
    const own = Object.entries(extra).map(([k, f]) =>
      `  --${k} N`.padEnd(14) + `${f.help} (default ${f.default})\n`
    ).join("");
    const ownUsage = Object.keys(extra).map((k) => ` [--${k} N]`).join("");
    print(
      `${chapter.name}: ${chapter.summary}\n\n` +
        `Usage: deno run -A ${file} [--seed N] [--nodes N]${ownUsage} [--no-timeline]\n\n` +
        `  --seed N    seed for every random choice; the same seed prints the same run (default 1)\n` +
        `  --nodes N   cluster size, ${chapter.nodesRange[0]} to ${
          chapter.nodesRange[1]
        } (default ${chapter.defaultNodes})\n` + own +
        `  --no-timeline  leave out the message timelines\n` +
        `  -h, --help  show this help`,
    );
    return 0;
  }
  const parsed = seedAndNodes(values, chapter.nodesRange);
  if (typeof parsed === "string") {
    print(`error: ${parsed}`);
    return 2;
  }
  const { seed, nodes } = parsed;
  const flags: Record<string, string> = {};
  for (const k of Object.keys(extra)) {
    const v = String(values[k]);
    if (!/^[0-9]+$/.test(v) || Number(v) < 1) {
      print(`error: --${k} must be a positive integer: "${v}"`);
      return 2;
    }
    flags[k] = v;
  }
  print(
    wrapText(`# Chapter ${chapter.number}: ${chapter.title} — ${chapter.summary}`) +
      `\n(seed ${seed}, ${nodes} nodes)`,
  );
  try {
    const run = new ChapterRun(chapter, { seed, nodes, flags });
    for (let i = 0; i < chapter.steps.length; i++) {
      const step = chapter.steps[i];
      print(`\n${wrapText(`## Step ${i + 1}: ${step.name}`)}\n${wrapText(step.explain)}\n`);
      if (step.rules !== undefined && step.rules.length > 0) {
        print(`${wrapText(rulesLine(step.rules))}\n`);
      }
      if (step.breakIt !== undefined) {
        print(`${wrapText(`Break it: switched off — ${step.breakIt}`)}\n`);
      }
      const view = run.step(i + 1);
      for (const l of view.beforeLines()) print(l);
      print(view.table.toString());
      for (const n of view.notes) print(wrapText(n));
      for (const f of view.figures) print(f.toString());
      if (values["no-timeline"] !== true) print(view.timeline.toString());
      print(`✓ step ${i + 1} holds`);
    }
  } catch (e) {
    print(`\n✗ ${(e as Error).message}`);
    return 1;
  }
  print(`\nAll ${chapter.steps.length} steps hold.`);
  return 0;
}

/** Runs every step of a chapter with no output; throws at the first failed claim. */
export function runChapter<C extends ChapterContext>(
  chapter: Chapter<C>,
  options: { seed?: number; nodes?: number; flags?: Record<string, string> } = {},
): ChapterRun<C> {
  const run = new ChapterRun(chapter, options);
  run.rest();
  return run;
}

/** Re-exported so chapter modules need one import for their steps. */
export type { Step };

/** Prose wrapped at word boundaries to fit a terminal of {@linkcode TEXT_COLUMNS_MAX} columns. */
export function wrapText(text: string, width = TEXT_COLUMNS_MAX): string {
  return text.split("\n").map((para) => {
    const lines: string[] = [];
    let line = "";
    for (const word of para.split(" ")) {
      if (line !== "" && line.length + 1 + word.length > width) {
        lines.push(line);
        line = word;
      } else {
        line = line === "" ? word : `${line} ${word}`;
      }
    }
    lines.push(line);
    return lines.join("\n");
  }).join("\n");
}

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
