/**
 * Chapter 7 — election timing: a reproduction of Figure 16 of the Raft paper. Five servers, the
 * leader crashed at a random moment within its heartbeat interval, and the time until a new leader
 * is elected, measured over many trials per election-timeout range; then what PreVote changes.
 *
 * Run it: `deno run -A scenarios/07_election_timing.ts [--seed N] [--trials N]` (default 1,000
 * trials per range, as in the paper).
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { SeededRng } from "../src/raft/rng.ts";
import { claim } from "../src/scenario/scenario.ts";
import type { NodeId } from "../src/raft/types.ts";
import { cdfChart, type CdfSummary, summarize } from "../src/observe/svg_chart.ts";
import {
  type Chapter,
  type ChapterContext,
  note,
  runChapterCli,
  showFigure,
  type Step,
  useCluster,
} from "./_chapter.ts";

/** An election-timeout range, both ends inclusive, in ms. */
export interface TimeoutRange {
  /** Smallest timeout. */
  readonly minMs: number;
  /** Largest timeout. */
  readonly maxMs: number;
}

/** How one trial runs. */
export interface TrialOptions {
  /** The timeout range. */
  readonly range: TimeoutRange;
  /** Ask for pre-votes first (the paper's servers did not). */
  readonly preVote: boolean;
  /** Seed of the trial. */
  readonly seed: number;
}

/** What one trial measured. */
export interface TrialResult {
  /** Virtual ms from the leader's crash to a new leader. */
  readonly ms: number;
  /** How many terms the election used (1 when the first candidate won). */
  readonly terms: number;
}

/**
 * The network of the paper's cluster: "broadcast time ≈ 15 ms". One-way latency 5–10 ms makes a
 * request-and-reply round about 15 ms.
 */
export const PAPER_NETWORK = { latencyMinMs: 5, latencyMaxMs: 10 } as const;

/** The ranges of Figure 16: the top graph varies randomness, the bottom one the timeout's size. */
export const TOP_RANGES: readonly TimeoutRange[] = [150, 151, 155, 175, 200, 300].map((maxMs) => ({
  minMs: 150,
  maxMs,
}));
/** The bottom graph's ranges (150–300 from the top graph is its reference). */
export const BOTTOM_RANGES: readonly TimeoutRange[] = [[12, 24], [25, 50], [50, 100], [
  100,
  200,
], [150, 300]].map(([minMs, maxMs]) => ({ minMs, maxMs }));

/** The numbers the paper's text reports, to set ours against. */
export const PAPER_FIGURES = [
  { range: "150–155 ms", paper: "median 287 ms", key: "medianMs" as const, rangeIndex: 2 },
  { range: "12–24 ms", paper: "average 35 ms", key: "meanMs" as const, rangeIndex: -1 },
  { range: "12–24 ms", paper: "worst 152 ms", key: "maxMs" as const, rangeIndex: -1 },
];

/** `150–155 ms`. */
export function rangeLabel(r: TimeoutRange): string {
  return `${r.minMs}–${r.maxMs} ms`;
}

/** The cluster of one trial: 5 servers, heartbeats at half the minimum timeout (as the paper). */
export function trialCluster(options: TrialOptions, record = false): Cluster {
  const { minMs, maxMs } = options.range;
  return new Cluster({
    nodes: 5,
    seed: options.seed,
    checkSafety: record,
    eventsMax: record ? 10_000 : 0,
    config: {
      electionTimeoutMinMs: minMs,
      electionTimeoutMaxMs: maxMs + 1, // the configured maximum is exclusive
      heartbeatIntervalMs: Math.max(1, Math.floor(minMs / 2)),
      preVote: options.preVote,
      checkQuorum: options.preVote, // the paper's servers had neither
    },
    network: PAPER_NETWORK,
  });
}

/**
 * Brings up a leader, lets it settle, crashes it at a random moment within its heartbeat interval
 * and returns the crashed leader's id and term. The clock then stands at the crash.
 */
export function crashSettledLeader(
  c: Cluster,
  options: TrialOptions,
): { id: NodeId; term: number } {
  const hb = Math.max(1, Math.floor(options.range.minMs / 2));
  c.waitForLeader({ timeoutMs: 60_000 });
  c.advance(2 * options.range.maxMs + 2 * hb);
  c.advance(new SeededRng(options.seed ^ 0x5bd1e995).int(0, hb));
  const id = c.leader() ?? c.waitForLeader({ timeoutMs: 60_000 });
  const term = c.node(id).raft.term;
  c.crash(id);
  return { id, term };
}

/** One trial: crash a settled leader and time the election of the next one. */
export function electionTrial(options: TrialOptions): TrialResult {
  const c = trialCluster(options);
  const { term } = crashSettledLeader(c, options);
  const ms = c.runUntil(() => c.leader() !== undefined, {
    timeoutMs: 100_000,
    description: "a new leader",
  });
  return { ms, terms: c.node(c.leader()!).raft.term - term };
}

/** Many trials of one range; trial `i` uses a seed derived from `seed`, the range and `i`. */
export function electionTrials(
  range: TimeoutRange,
  options: { trials: number; seed: number; preVote: boolean },
): TrialResult[] {
  const out: TrialResult[] = [];
  for (let i = 0; i < options.trials; i++) {
    const seed = options.seed * 1_000_003 + range.minMs * 10_007 + range.maxMs * 101 + i;
    out.push(electionTrial({ range, preVote: options.preVote, seed }));
  }
  return out;
}

/** State carried from step to step. */
export interface TimingContext extends ChapterContext {
  /** The chapter's seed. */
  readonly seed: number;
  /** Trials per range. */
  readonly trials: number;
  /** Summaries without PreVote, by range label. */
  results: Map<string, { summary: CdfSummary; termsMean: number; values: number[] }>;
}

/** Builds the context; `trials` per timeout range (the paper used 1,000). */
export function timingContext(seed = 1, trials = 1000): TimingContext {
  return {
    cluster: trialCluster({ range: { minMs: 150, maxMs: 300 }, preVote: false, seed }, true),
    seed,
    trials,
    results: new Map(),
  };
}

function measure(ctx: TimingContext, ranges: readonly TimeoutRange[], preVote: boolean) {
  return ranges.map((range) => {
    const label = rangeLabel(range);
    const rs = electionTrials(range, { trials: ctx.trials, seed: ctx.seed, preVote });
    const values = rs.map((r) => r.ms);
    const termsMean = rs.reduce((s, r) => s + r.terms, 0) / rs.length;
    const res = { summary: summarize(label, values), termsMean, values };
    if (!preVote) ctx.results.set(label, res);
    return { range, label, ...res };
  });
}

function medianOf(ctx: TimingContext, label: string): number {
  return ctx.results.get(label)!.summary.medianMs;
}

/** The chapter's steps. */
export const timingSteps: readonly Step<TimingContext>[] = [
  {
    name: "one trial up close",
    explain:
      "The setup of the paper's experiment: five servers, election timeouts of 150–300 ms, " +
      "heartbeats every 75 ms (half the minimum timeout), a network where a broadcast takes " +
      "about 15 ms, and no PreVote. The leader is crashed at a random moment within its " +
      "heartbeat interval; we measure the time until a new leader is elected.",
    run(ctx) {
      const options = { range: { minMs: 150, maxMs: 300 }, preVote: false, seed: ctx.seed };
      const c = trialCluster(options, true);
      const crashed = crashSettledLeader(c, options);
      useCluster(ctx, c); // the timeline shows the election after the crash
      const ms = c.runUntil(() => c.leader() !== undefined, { description: "a new leader" });
      const leader = c.leader()!;
      claim(leader !== crashed.id, "a different node leads");
      claim(c.node(leader).raft.term > crashed.term, "in a higher term");
      claim(ms >= 150 - 75, `no election before a timeout can run out (${ms} ms)`);
      note(
        ctx,
        `leader ${crashed.id} (term ${crashed.term}) crashed; ${leader} leads term ` +
          `${c.node(leader).raft.term} after ${ms} ms`,
      );
    },
  },
  {
    name: "Figure 16, top: randomness prevents split votes",
    explain: "Each curve is the cumulative distribution of the time without a leader over many " +
      "trials. With no randomness (150–150 ms) the followers time out together, split the vote " +
      "and try again, term after term. A few milliseconds of randomness help a lot; 150–300 ms " +
      "almost always elects in one round.",
    run(ctx) {
      const rows = measure(ctx, TOP_RANGES, false);
      showFigure(
        ctx,
        cdfChart(rows.map((r) => ({ label: r.label, valuesMs: r.values })), {
          title: `Time to elect a new leader, no PreVote (${ctx.trials} trials per range)`,
          xMinMs: 100,
          xMaxMs: 10_000,
        }),
      );
      for (const r of rows) {
        note(ctx, `${r.label.padEnd(12)} terms per election: ${r.termsMean.toFixed(2)}`);
      }
      claim(
        medianOf(ctx, "150–150 ms") > medianOf(ctx, "150–175 ms"),
        "no randomness is slower than 25 ms of it",
      );
      claim(
        medianOf(ctx, "150–155 ms") > medianOf(ctx, "150–300 ms"),
        "5 ms of randomness is slower than 150 ms of it",
      );
      const t150 = ctx.results.get("150–150 ms")!.termsMean;
      const t300 = ctx.results.get("150–300 ms")!.termsMean;
      claim(t150 > 2 * t300, `split votes waste terms: ${t150.toFixed(2)} vs ${t300.toFixed(2)}`);
      claim(
        ctx.results.get("150–300 ms")!.summary.p90Ms < ctx.results.get("150–155 ms")!.summary.p90Ms,
        "150–300 ms has the shorter tail",
      );
    },
  },
  {
    name: "Figure 16, bottom: shorter timeouts, shorter downtime",
    explain: "With enough randomness (the range as wide as its minimum), the time without a " +
      "leader scales with the timeout. The paper warns that timeouts near the broadcast time " +
      "cause needless elections; in our simulated network 12–24 ms is already that close.",
    run(ctx) {
      const rows = measure(ctx, BOTTOM_RANGES, false);
      showFigure(
        ctx,
        cdfChart(rows.map((r) => ({ label: r.label, valuesMs: r.values })), {
          title: `Time to elect a new leader, no PreVote (${ctx.trials} trials per range)`,
          xMinMs: 10,
          xMaxMs: 1000,
        }),
      );
      const m = (l: string) => ctx.results.get(l)!.summary.meanMs;
      claim(m("25–50 ms") < m("50–100 ms"), "25–50 ms elects faster than 50–100 ms");
      claim(m("50–100 ms") < m("100–200 ms"), "50–100 ms elects faster than 100–200 ms");
      claim(m("100–200 ms") < m("150–300 ms"), "100–200 ms elects faster than 150–300 ms");
    },
  },
  {
    name: "set against the paper",
    explain:
      "The paper reports, for its five-server cluster: with 150–155 ms a median of 287 ms; " +
      "with 12–24 ms an average of 35 ms and a worst case of 152 ms. Our simulated network is " +
      "not their LAN (its latency distribution, and how often followers' timers line up, " +
      "differ), so the shapes should agree more than the numbers.",
    run(ctx) {
      const lines = ["range        paper            raftmeta (simulated)"];
      for (const f of PAPER_FIGURES) {
        const label = f.rangeIndex === -1 ? "12–24 ms" : f.range;
        const s = ctx.results.get(label)!.summary;
        const ours = `${
          f.key === "medianMs" ? "median" : f.key === "meanMs" ? "average" : "worst"
        } ${Math.round(s[f.key])} ms`;
        lines.push(`${f.range.padEnd(12)} ${f.paper.padEnd(16)} ${ours}`);
      }
      note(ctx, lines.join("\n"));
      const s155 = ctx.results.get("150–155 ms")!.summary;
      claim(s155.medianMs > 150, "150–155 ms needs more than one timeout at the median");
      const s12 = ctx.results.get("12–24 ms")!.summary;
      claim(s12.meanMs < s155.medianMs, "12–24 ms is far faster on average than 150–155 ms");
    },
  },
  {
    name: "what PreVote changes",
    explain: 'PreVote (with CheckQuorum) makes a node ask "would you vote for me?" before it ' +
      "raises its term. After a leader crash that adds a round trip to every election, so with " +
      "ample randomness elections take slightly longer — but with little randomness far fewer " +
      "terms are burnt on split votes, because a node that cannot win leaves the term alone.",
    run(ctx) {
      const ranges = [TOP_RANGES[0], TOP_RANGES[2], TOP_RANGES[5]];
      const rows = measure(ctx, ranges, true);
      const series = [];
      const lines = ["range        without PreVote               with PreVote"];
      for (const r of rows) {
        const base = ctx.results.get(r.label)!;
        series.push({ label: `${r.label}`, valuesMs: base.values });
        series.push({ label: `${r.label} +PV`, valuesMs: r.values });
        lines.push(
          `${r.label.padEnd(12)} median ${String(base.summary.medianMs).padStart(4)} ms, ` +
            `${base.termsMean.toFixed(2)} terms   median ${
              String(r.summary.medianMs).padStart(4)
            } ms, ` +
            `${r.termsMean.toFixed(2)} terms`,
        );
      }
      showFigure(
        ctx,
        cdfChart(series, {
          title: `With and without PreVote (${ctx.trials} trials per range)`,
          xMinMs: 100,
          xMaxMs: 10_000,
        }),
      );
      note(ctx, lines.join("\n"));
      const narrow = rows[0];
      claim(
        narrow.termsMean < ctx.results.get(narrow.label)!.termsMean,
        "with no randomness, PreVote burns fewer terms",
      );
      const wide = rows[2];
      claim(
        wide.summary.medianMs >= ctx.results.get(wide.label)!.summary.medianMs,
        "with ample randomness, PreVote's extra round makes elections no faster",
      );
    },
  },
];

/** Chapter 7 as a script and a notebook. */
export const chapter: Chapter<TimingContext> = {
  number: 7,
  name: "07_election_timing",
  title: "Election timing (Raft paper, Figure 16)",
  summary: "time to elect a new leader after a crash, per timeout range, with and without PreVote",
  intro: "How long is a cluster without a leader after the leader crashes? Figure 16 of the " +
    "Raft paper answers with an experiment: five servers, a broadcast time of about 15 ms, " +
    "the leader crashed 1,000 times per election-timeout range, and the time until a new " +
    "leader plotted as a cumulative distribution. This chapter repeats the experiment on the " +
    "simulator — the paper's servers had no PreVote, so neither do ours at first — and then " +
    "shows what PreVote changes. Run it with fewer trials via `--trials N`.",
  defaultNodes: 5,
  nodesRange: [5, 5],
  flags: { trials: { default: "1000", help: "trials per timeout range" } },
  context: (seed) => timingContext(seed),
  contextWith: (seed, _nodes, flags) => timingContext(seed, Number(flags.trials)),
  steps: timingSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
