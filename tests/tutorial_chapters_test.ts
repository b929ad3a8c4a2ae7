// Each tutorial chapter's claims, asserted by running the chapter's own steps (the code the
// notebooks and scripts run, not a copy).
import assert from "node:assert/strict";
import { chapters } from "../scenarios/chapters.ts";
import { ChapterRun, runChapter, runChapterCli } from "../scenarios/_chapter.ts";
import { StepFailure } from "../src/scenario/scenario.ts";
import {
  crashSettledLeader,
  electionTrial,
  medianInterval,
  TOP_RANGES,
  trialCluster,
} from "../scenarios/07_election_timing.ts";

// Chapter 7 measures 1,000 trials per range in the notebook and script; tests use fewer.
const FAST = { trials: "40" };

/** A chapter's file by its topic (the name after the number), so renumbering needs no edit here. */
function fileOf(topic: string): string {
  const file = Object.keys(chapters).find((f) => f.replace(/^\d+_/, "") === `${topic}.ts`);
  assert.ok(file !== undefined, `no chapter about ${topic}`);
  return file;
}

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

Deno.test("tutorial chapters are numbered in the order of scenarios/chapters.ts", () => {
  Object.entries(chapters).forEach(([file, chapter], i) => {
    assert.equal(chapter.number, i + 1, `${file} is chapter ${i + 1}`);
    assert.equal(file, `${String(i + 1).padStart(2, "0")}_${file.replace(/^\d+_/, "")}`);
    assert.equal(`${chapter.name}.ts`, file);
  });
});

Deno.test("tutorial scripts: the same seed prints the same run, timelines included", () => {
  const chapter = chapters[fileOf("log_replication")];
  const a = capture((print) => runChapterCli(chapter, ["--seed", "3"], print));
  assert.equal(a.code, 0, a.text.slice(-2000));
  assert.equal(a.text, capture((print) => runChapterCli(chapter, ["--seed", "3"], print)).text);
  assert.match(a.text, /AppendEntries t\d+ prev=/);
  assert.match(a.text, /All 7 steps hold\./);
  assert.match(a.text, /Figure 2: AE-2 /);
});

Deno.test("tutorial scripts: --help lists the chapter's own flags; bad flags are refused", () => {
  const ch7 = chapters[fileOf("election_timing")];
  const help = capture((print) => runChapterCli(ch7, ["--help"], print));
  assert.equal(help.code, 0);
  assert.match(help.text, /--trials N/);
  assert.match(help.text, /--seed N/);
  const bad = capture((print) => runChapterCli(ch7, ["--trials", "x"], print));
  assert.equal(bad.code, 2);
  assert.match(bad.text, /--trials must be a positive integer: "x"/);
  const nodes = capture((print) => runChapterCli(ch7, ["--nodes", "3"], print));
  assert.equal(nodes.code, 2);
  const ch1 = chapters[fileOf("leader_election")];
  const unknown = capture((print) => runChapterCli(ch1, ["--trials", "3"], print));
  assert.equal(unknown.code, 2, "chapter 1 has no --trials flag");
});

Deno.test("tutorial steps run in order, and a failed claim names its step", () => {
  const run = new ChapterRun(chapters[fileOf("leader_election")], { seed: 1 });
  assert.throws(() => run.step(2), /next step is 1/);
  const broken = {
    ...chapters[fileOf("leader_election")],
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

Deno.test("chapter 7: the model's broadcast time is 15 ms, a vote round 6 ms", () => {
  // Whole ms here, to read the times off the events.
  const options = { range: TOP_RANGES[5], preVote: false, seed: 4, ticksPerMs: 1 };
  const c = trialCluster(options);
  const sent = new Map<string, number>();
  const rounds: { type: string; ms: number }[] = [];
  c.onEvent((e) => {
    if (e.kind !== "send" && e.kind !== "deliver") return;
    const m = e.message;
    if (e.kind === "send" && e.fate !== "sent") return;
    if (m.type === "AppendEntries" && m.entries.length > 0 && e.kind === "send") {
      sent.set(`A ${m.from}>${m.to} ${m.prevLogIndex + m.entries.length}`, e.atMs);
    } else if (m.type === "AppendEntriesReply" && m.success && e.kind === "deliver") {
      const key = `A ${m.to}>${m.from} ${m.matchIndex}`;
      const at = sent.get(key);
      sent.delete(key); // later heartbeats' replies carry the same matchIndex
      if (at !== undefined) rounds.push({ type: "append", ms: e.atMs - at });
    } else if (m.type === "RequestVote" && e.kind === "send") {
      sent.set(`V ${m.from}>${m.to} ${m.term}`, e.atMs);
    } else if (m.type === "RequestVoteReply" && m.granted && e.kind === "deliver") {
      rounds.push({ type: "vote", ms: e.atMs - sent.get(`V ${m.to}>${m.from} ${m.term}`)! });
    }
  });
  crashSettledLeader(c, options);
  c.runUntil(() => c.leader() !== undefined);
  const of = (type: string) => new Set(rounds.filter((r) => r.type === type).map((r) => r.ms));
  assert.deepEqual(of("append"), new Set([15]), "sent, written in 13 ms, acknowledged");
  // From the candidate's timeout: its own 2 ms write, 1 ms, the voter's 2 ms write, 1 ms.
  assert.deepEqual(of("vote"), new Set([6]));
});

Deno.test("chapter 7: the median's 99.9% interval is ranks n/2 ± 1.645·√n", () => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.deepEqual(medianInterval(xs), [33, 68]);
  assert.deepEqual(medianInterval([5]), [5, 5]);
});

Deno.test("chapter scripts run as real processes and exit 0", async () => {
  for (const file of [fileOf("leader_election"), fileOf("election_timing")]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL(`../scenarios/${file}`, import.meta.url).pathname,
        "--seed",
        "2",
        ...(file === fileOf("election_timing") ? ["--trials", "20"] : []),
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
