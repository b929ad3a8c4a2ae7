// Each tutorial chapter's claims, asserted by running the chapter's own steps (the code the
// notebooks and scripts run, not a copy).
import assert from "node:assert/strict";
import { chapters } from "../scenarios/chapters.ts";
import { ChapterRun, runChapter, runChapterCli } from "../scenarios/_chapter.ts";
import { StepFailure } from "../src/scenario/scenario.ts";
import { electionTrial, TOP_RANGES } from "../scenarios/07_election_timing.ts";

// Chapter 7 measures 1,000 trials per range in the notebook and script; tests use fewer.
const FAST = { trials: "40" };

function capture(run: (print: (s: string) => void) => number): { code: number; text: string } {
  const lines: string[] = [];
  const code = run((s) => lines.push(s));
  return { code, text: lines.join("\n") };
}

for (const [file, chapter] of Object.entries(chapters)) {
  Deno.test(`tutorial ${file}: every step holds, with a table and a timeline`, async (t) => {
    const run = new ChapterRun(chapter, { seed: 1, flags: FAST });
    for (let i = 0; i < chapter.steps.length; i++) {
      await t.step(chapter.steps[i].name, () => {
        const view = run.step(i + 1);
        assert.equal(view.table.rows.length, run.cluster.ids.length);
        assert.match(view.toHtml(), /<svg /);
        assert.match(view.toString(), new RegExp(`✓ step ${i + 1} holds`));
        assert.ok(view.timeline.endMs >= view.timeline.startMs);
      });
    }
  });

  Deno.test(`tutorial ${file}: the script's text fits 100 columns and has its legends`, () => {
    const { code, text } = capture((print) =>
      runChapterCli(
        chapter,
        ["--seed", "1", ...(file.startsWith("07") ? ["--trials", "40"] : [])],
        print,
      )
    );
    assert.equal(code, 0, text.slice(-2000));
    for (const line of text.split("\n")) {
      assert.ok([...line].length <= 100, `${[...line].length} columns: ${line}`);
    }
    const steps = chapter.steps.length;
    assert.equal(text.match(/^legend: \d = an entry of term/gm)?.length, steps, "table legends");
    assert.equal(text.match(/^legend: → delivered/gm)?.length, steps, "timeline legends");
  });

  Deno.test(`tutorial ${file}: claims hold for other seeds too`, () => {
    const sizes = chapter.nodesRange[0] === chapter.nodesRange[1]
      ? [chapter.defaultNodes]
      : [chapter.nodesRange[0], 5];
    for (const nodes of sizes) {
      for (let seed = 2; seed <= 4; seed++) {
        runChapter(chapter, { seed, nodes, flags: FAST });
      }
    }
  });
}

Deno.test("tutorial scripts: the same seed prints the same run, timelines included", () => {
  const chapter = chapters["02_log_replication.ts"];
  const a = capture((print) => runChapterCli(chapter, ["--seed", "3"], print));
  assert.equal(a.code, 0, a.text.slice(-2000));
  assert.equal(a.text, capture((print) => runChapterCli(chapter, ["--seed", "3"], print)).text);
  assert.match(a.text, /AppendEntries t\d+ prev=/);
  assert.match(a.text, /All 7 steps hold\./);
  assert.match(a.text, /Figure 2: AE-2 /);
});

Deno.test("tutorial scripts: --help lists the chapter's own flags; bad flags are refused", () => {
  const ch7 = chapters["07_election_timing.ts"];
  const help = capture((print) => runChapterCli(ch7, ["--help"], print));
  assert.equal(help.code, 0);
  assert.match(help.text, /--trials N/);
  assert.match(help.text, /--seed N/);
  const bad = capture((print) => runChapterCli(ch7, ["--trials", "x"], print));
  assert.equal(bad.code, 2);
  assert.match(bad.text, /--trials must be a positive integer: "x"/);
  const nodes = capture((print) => runChapterCli(ch7, ["--nodes", "3"], print));
  assert.equal(nodes.code, 2);
  const ch1 = chapters["01_leader_election.ts"];
  const unknown = capture((print) => runChapterCli(ch1, ["--trials", "3"], print));
  assert.equal(unknown.code, 2, "chapter 1 has no --trials flag");
});

Deno.test("tutorial steps run in order, and a failed claim names its step", () => {
  const run = new ChapterRun(chapters["01_leader_election.ts"], { seed: 1 });
  assert.throws(() => run.step(2), /next step is 1/);
  const broken = {
    ...chapters["01_leader_election.ts"],
    steps: [{
      name: "an impossible claim",
      explain: "",
      run() {
        throw new Error("two leaders");
      },
    }],
  };
  assert.throws(() => new ChapterRun(broken).step(1), StepFailure);
  const r = capture((print) => runChapterCli(broken, [], print));
  assert.equal(r.code, 1);
  assert.match(r.text, /✗ Step 1 "an impossible claim" failed: two leaders/);
});

Deno.test("chapter 7: one election trial is deterministic and elects within a few timeouts", () => {
  const options = { range: TOP_RANGES[5], preVote: false, seed: 11 };
  const a = electionTrial(options);
  assert.deepEqual(a, electionTrial(options));
  assert.ok(a.ms >= 150 - 75 && a.ms < 3000, `${a.ms} ms`);
  assert.ok(a.terms >= 1);
});

Deno.test("chapter scripts run as real processes and exit 0", async () => {
  for (const file of ["01_leader_election.ts", "07_election_timing.ts"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL(`../scenarios/${file}`, import.meta.url).pathname,
        "--seed",
        "2",
        ...(file.startsWith("07") ? ["--trials", "20"] : []),
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, text.slice(-2000) + new TextDecoder().decode(out.stderr));
    assert.match(text, /All \d+ steps hold\./);
  }
});
