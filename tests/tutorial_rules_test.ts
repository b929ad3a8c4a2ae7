// Figure 2 of the Raft paper, rule by rule, in the tutorial: every rule is shown by a step that
// asserts it, docs/tutorial.md maps each rule to its steps, and every "break it" step shows the
// bug caught with the rule off and a clean run with it on.
import assert from "node:assert/strict";
import { chapters } from "../scenarios/chapters.ts";
import { type Chapter, type ChapterContext, ChapterRun } from "../scenarios/_chapter.ts";
import {
  claimRule,
  FIGURE2_RULES,
  figure2Table,
  type RuleId,
  ruleSites,
} from "../scenarios/figure2.ts";
import { StepFailure } from "../src/scenario/scenario.ts";

const FAST = { trials: "20" };

Deno.test("Figure 2: every rule is shown by at least one tutorial step", () => {
  const sites = ruleSites(chapters);
  const missing = FIGURE2_RULES.filter((r) => !sites.some((s) => s.rules.includes(r.id)))
    .map((r) => `${r.id} ${r.text}`);
  assert.deepEqual(missing, [], `rules no step shows:\n${missing.join("\n")}`);
  assert.equal(new Set(FIGURE2_RULES.map((r) => r.id)).size, FIGURE2_RULES.length, "ids unique");
});

Deno.test("Figure 2: each tagged step asserts every rule it is tagged with", () => {
  for (const [file, chapter] of Object.entries(chapters)) {
    if (!chapter.steps.some((s) => (s.rules ?? []).length > 0)) continue;
    const run = new ChapterRun(chapter, { seed: 1, flags: FAST });
    chapter.steps.forEach((step, i) => {
      run.step(i + 1);
      const shown = run.context.shown ?? new Set<RuleId>();
      for (const r of step.rules ?? []) {
        assert.ok(shown.has(r), `${file} step ${i + 1} "${step.name}" never asserted ${r}`);
      }
    });
  }
});

Deno.test("Figure 2: a step tagged with a rule it does not assert fails, naming the rule", () => {
  const base = chapters["01_leader_election.ts"];
  const silent: Chapter<ChapterContext> = {
    ...base,
    steps: [{ name: "tagged, silent", explain: "", rules: ["AE-1"], run() {} }],
  };
  assert.throws(
    () => new ChapterRun(silent).step(1),
    (e) =>
      e instanceof StepFailure &&
      /shows Figure 2 rule AE-1 but asserted nothing about it/.test(e.message),
  );
  const asserting: Chapter<ChapterContext> = {
    ...base,
    steps: [{
      name: "tagged, asserting",
      explain: "",
      rules: ["AE-1"],
      run(ctx) {
        claimRule(ctx, "AE-1", true, "holds");
      },
    }],
  };
  assert.deepEqual(new ChapterRun(asserting).step(1).rules, ["AE-1"]);
  const wrong: Chapter<ChapterContext> = {
    ...base,
    steps: [{
      name: "tagged, false claim",
      explain: "",
      rules: ["RV-1"],
      run(ctx) {
        claimRule(ctx, "RV-1", false, "the vote was granted");
      },
    }],
  };
  assert.throws(() => new ChapterRun(wrong).step(1), /RV-1: the vote was granted/);
});

Deno.test("Figure 2: a step's tags show in its view and in the script's output", () => {
  const run = new ChapterRun(chapters["02_log_replication.ts"], { seed: 1 });
  const view = run.step(1);
  assert.match(view.toString(), /^Figure 2: LS-1 Leaders' volatile state/);
  assert.match(view.toHtml(), /<b>Figure 2:<\/b> LS-1 /);
});

Deno.test("docs/tutorial.md maps every Figure 2 rule to its steps and test", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/tutorial.md", import.meta.url));
  const table = figure2Table(ruleSites(chapters));
  // Compared cell by cell: deno fmt pads the Markdown table's columns.
  const norm = (line: string) =>
    line.split("|").map((c) => c.trim().replace(/^-+$/, "-")).join("|");
  const docLines = new Set(doc.split("\n").map(norm));
  const stale = table.split("\n").filter((l) => !docLines.has(norm(l)));
  assert.ok(
    stale.length === 0,
    `docs/tutorial.md lacks the current rule map; regenerate it with ` +
      `deno run -A scripts/figure2_table.ts:\n${table}`,
  );
});

for (const [file, chapter] of Object.entries(chapters)) {
  chapter.steps.forEach((step, i) => {
    if (step.breakIt === undefined) return;
    Deno.test(`break it: ${file} step ${i + 1} "${step.name}": caught with the rule off, clean with it on`, () => {
      const run = new ChapterRun(chapter, { seed: 1, flags: FAST });
      for (let k = 1; k < i + 1; k++) run.step(k);
      const off = run.step(i + 1);
      assert.ok(off.notes.some((n) => n.startsWith("caught")), off.notes.join("\n"));
      const on = run.step(i + 1, { ruleOff: false }); // the cell flipped and run again
      assert.ok(on.notes.some((n) => n.startsWith("with")), on.notes.join("\n"));
      for (const seed of [2, 3]) {
        const other = new ChapterRun(chapter, { seed, flags: FAST });
        other.rest();
      }
    });
  });
}

Deno.test("ruleOff applies only to break-it steps; a break-it step may run again", () => {
  const run = new ChapterRun(chapters["01_leader_election.ts"], { seed: 1 });
  assert.throws(() => run.step(1, { ruleOff: true }), /not a "break it" step/);
  run.step(1);
  assert.throws(() => run.step(1), /next step is 2/);
});
