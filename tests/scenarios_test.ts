// The scenario scripts run as tests: the same steps the demo script prints and notebooks step.
import assert from "node:assert/strict";
import { demo, demoContext, demoSteps } from "../scenarios/demo.ts";
import { figure8, figure8Context, figure8Steps } from "../scenarios/figure8.ts";
import { figure10, membershipCluster, termsWithTwoLeaders } from "../scenarios/10_membership.ts";
import { nodeTable } from "../src/observe/table.ts";
import { SafetyViolation } from "../src/sim/invariants.ts";
import { runScenarioCli } from "../src/scenario/cli.ts";
import { runStep, StepFailure } from "../src/scenario/scenario.ts";

function capture(run: (print: (s: string) => void) => number): { code: number; text: string } {
  const lines: string[] = [];
  const code = run((s) => lines.push(s));
  return { code, text: lines.join("\n") };
}

Deno.test("demo: every step holds, with a node table after each", async (t) => {
  const ctx = demoContext(1, 3);
  for (let i = 0; i < demoSteps.length; i++) {
    await t.step(demoSteps[i].name, () => {
      const table = runStep(demoSteps, i, ctx);
      assert.equal(table.rows.length, 3);
      assert.match(table.toString(), /^== Step \d+: /);
    });
  }
});

Deno.test("demo across seeds and sizes: every node ends with the same keys", () => {
  for (const nodes of [3, 5]) {
    for (let seed = 1; seed <= 10; seed++) {
      const r = capture((print) =>
        runScenarioCli(demo, [`--seed=${seed}`, `--nodes=${nodes}`], print)
      );
      assert.equal(r.code, 0, `seed ${seed}, ${nodes} nodes:\n${r.text.slice(-2000)}`);
      assert.match(r.text, /All 9 steps hold\./);
    }
  }
});

Deno.test("demo output is byte-identical for one seed and differs for another", () => {
  const run = (seed: number) =>
    capture((print) => runScenarioCli(demo, ["--seed", `${seed}`], print));
  const a = run(5);
  assert.equal(a.code, 0);
  assert.equal(a.text, run(5).text);
  assert.notEqual(a.text, run(6).text);
  assert.equal(run(6).code, 0);
});

Deno.test("scenario CLI: --help, and clear errors for bad flags", () => {
  const help = capture((print) => runScenarioCli(demo, ["--help"], print));
  assert.equal(help.code, 0);
  assert.match(help.text, /--seed N/);
  const badSeed = capture((print) => runScenarioCli(demo, ["--seed", "x1"], print));
  assert.equal(badSeed.code, 2);
  assert.match(badSeed.text, /--seed must be an integer: "x1"/);
  const badNodes = capture((print) => runScenarioCli(demo, ["--nodes", "2"], print));
  assert.equal(badNodes.code, 2);
  assert.match(badNodes.text, /--nodes must be an integer from 3 to 7: "2"/);
  const unknown = capture((print) => runScenarioCli(demo, ["--frobnicate"], print));
  assert.equal(unknown.code, 2);
  assert.match(unknown.text, /frobnicate/);
});

Deno.test("a failing step is reported by name and the script exits non-zero", () => {
  const broken = {
    ...demo,
    steps: [demoSteps[0], {
      name: "an impossible claim",
      explain: "",
      run() {
        throw new Error("two leaders");
      },
    }],
  };
  const r = capture((print) => runScenarioCli(broken, [], print));
  assert.equal(r.code, 1);
  assert.match(r.text, /✗ Step 2 "an impossible claim" failed: two leaders/);
  assert.throws(() => runStep(broken.steps, 1, demoContext()), StepFailure);
});

Deno.test("Figure 8: an older-term entry on a majority is not committed, and is overwritten", () => {
  for (let seed = 1; seed <= 10; seed++) {
    const r = capture((print) => runScenarioCli(figure8, [`--seed=${seed}`], print));
    assert.equal(r.code, 0, `seed ${seed}:\n${r.text.slice(-2000)}`);
  }
  // And the claims themselves, on one run.
  const ctx = figure8Context(1);
  for (let i = 0; i < figure8Steps.length; i++) runStep(figure8Steps, i, ctx);
  const s3 = ctx.cluster.node(ctx.s3);
  assert.ok(s3.raft.log.term(ctx.index)! > ctx.oldTerm);
  assert.ok(s3.raft.commitIndex >= ctx.index);
});

Deno.test("Figure 10: two changes in flight elect two leaders in one term; one at a time never does", () => {
  for (let seed = 1; seed <= 10; seed++) {
    // Rule off (and the checker off, so the run goes on): a majority of C_old and a disjoint
    // majority of C_new each elect a leader in the same term, and both commit.
    const off = membershipCluster(seed, { twoChangesInFlight: true, checkSafety: false });
    const bad = figure10(off);
    assert.equal(bad.refused, undefined, `seed ${seed}`);
    assert.equal(bad.added.length, 2);
    const twice = termsWithTwoLeaders(bad.leaders);
    assert.equal(twice.length, 1, `seed ${seed}: one term with two leaders`);
    assert.deepEqual(
      [...bad.leaders.get(twice[0])!].sort(),
      [bad.oldSideLeader, bad.newSideLeader!].sort(),
    );
    assert.equal(off.node(bad.oldSideLeader).raft.voters.length, 3);
    assert.equal(off.node(bad.newSideLeader!).raft.voters.length, 5);
    assert.notEqual(
      off.node(bad.oldSideLeader).store.getString("/config/primary"),
      off.node(bad.newSideLeader!).store.getString("/config/primary"),
    );
    assert.match(nodeTable(off).toString(), /CONF add-voter n5/);
    // Rule on, checker on: the second change is refused and no term has two leaders.
    const on = membershipCluster(seed);
    const good = figure10(on);
    assert.match(good.refused ?? "", /still uncommitted; one change at a time/);
    assert.deepEqual(good.added, ["n4"]);
    assert.equal(good.newSideLeader, undefined);
    assert.deepEqual(termsWithTwoLeaders(good.leaders), []);
    on.heal();
    on.advance(2000);
    assert.deepEqual(termsWithTwoLeaders(good.leaders), [], `seed ${seed}: after healing`);
    // Rule off, checker on: caught at the second append.
    assert.throws(
      () => figure10(membershipCluster(seed, { twoChangesInFlight: true })),
      (e) => e instanceof SafetyViolation && e.property === "membership change rule",
    );
  }
});

Deno.test("the demo script runs as a real process and exits 0", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", new URL("../scenarios/demo.ts", import.meta.url).pathname, "--seed", "2"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(text.match(/^node {2}role/gm)?.length, 9, "a node table after each of 9 steps");
});
