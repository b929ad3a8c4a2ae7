/**
 * Chapter 4 — leader crash and re-election: the seed's demo, step by step. Replication, a quiet
 * period of heartbeats, the leader's crash, re-election at a higher term, continued replication
 * with a node down, and the old leader's return and catch-up. The steps are those of
 * `scenarios/demo.ts`, not a copy of them.
 *
 * Run it: `deno run -A scenarios/04_leader_crash.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { type DemoContext, demoContext, demoSteps } from "./demo.ts";
import { type Chapter, type ChapterContext, runChapterCli } from "./_chapter.ts";

/** The demo's context, as a chapter context. */
export type CrashContext = DemoContext & ChapterContext;

/** Chapter 4 as a script and a notebook. */
export const chapter: Chapter<CrashContext> = {
  number: 4,
  name: "04_leader_crash",
  title: "Leader crash and re-election",
  summary: "the seed's demo: crash, re-election at a higher term, the old leader's return",
  intro: "This chapter runs the seed's demo: a cluster elects a leader, replicates PUT and DEL " +
    "commands, and sits through a quiet period of heartbeats. Then the leader crashes. The " +
    "followers' election timers run out, one of them wins a **higher term** with the surviving " +
    "majority, and writes continue. The old leader restarts from what it persisted, hears the " +
    "higher term, becomes a follower and catches up. Every committed write survives." +
    " The cluster runs with raftmeta's defaults, PreVote and CheckQuorum on: the tables show " +
    "**PreCandidate** and the timelines PreVote messages before each election; chapter 5 " +
    "explains both.",
  defaultNodes: 3,
  nodesRange: [3, 7],
  context: (seed, nodes) => demoContext(seed, nodes) as CrashContext,
  steps: demoSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
