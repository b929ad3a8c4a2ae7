// Every tutorial notebook, executed headless through Deno's real Jupyter kernel (jupyter nbconvert
// --execute); a cell that throws fails the test. Without Jupyter, the test says so and runs each
// chapter's steps as scripts instead — it never passes as if the notebooks had run.
import assert from "node:assert/strict";
import { chapters } from "../scenarios/chapters.ts";
import { runChapter } from "../scenarios/_chapter.ts";
import {
  cellsWithoutOutput,
  executeUntilComplete,
  jupyterAvailable,
  kernelDir,
  notebookName,
  notebookOf,
} from "../scripts/notebooks.ts";

const notebooks = new URL("../notebooks/", import.meta.url);

Deno.test("notebooks: one per chapter, one code cell per step, kernel deno", async () => {
  for (const [file, chapter] of Object.entries(chapters)) {
    const nb = JSON.parse(await Deno.readTextFile(new URL(notebookName(file), notebooks)));
    assert.equal(nb.nbformat, 4);
    assert.equal(nb.metadata.kernelspec.name, "deno");
    assert.equal(nb.metadata.language_info.name, "typescript");
    // Compared modulo whitespace: deno fmt reflows the Markdown cells.
    const flat = (c: { source: string[] }) => c.source.join("").replace(/\s+/g, " ").trim();
    const sources = nb.cells.map(flat);
    const fresh = (notebookOf(file, chapter) as { cells: { source: string[] }[] }).cells.map(flat);
    assert.deepEqual(sources, fresh, `notebooks/${notebookName(file)} is out of date: run build`);
    assert.ok(sources.some((s: string) => s.includes(`"../mod.ts"`)));
    assert.ok(sources.some((s: string) => s.includes(`"../scenarios/${file}"`)));
    const steps = nb.cells.filter((c: { cell_type: string; source: string[] }) =>
      c.cell_type === "code" && c.source.join("").startsWith("await Deno.jupyter.display(run.step(")
    );
    assert.equal(steps.length, chapter.steps.length);
    // Committed with the outputs of a seeded run: every code cell shows its output (the kernel
    // sometimes drops a result; cells display while they run, and `execute` re-runs if one is missing).
    assert.deepEqual(
      cellsWithoutOutput(nb),
      [],
      `notebooks/${notebookName(file)}: cells without output`,
    );
  }
});

// Without Jupyter the kernel test shows as ignored, and the chapters run as scripts in a test of
// their own whose name says so.
const hasJupyter = await jupyterAvailable();

if (!hasJupyter) {
  Deno.test("notebooks: the chapters run as scripts (Jupyter is not installed: apt-get install -y jupyter-nbconvert python3-nbclient)", () => {
    for (const chapter of Object.values(chapters)) {
      runChapter(chapter, { seed: 1, flags: { trials: "100" } });
    }
  });
}

Deno.test({
  name: "notebooks: every notebook executes through the Deno kernel",
  ignore: !hasJupyter,
  fn: async (t) => {
    const jupyterPath = await kernelDir();
    const outputDir = await Deno.makeTempDir({ prefix: "raftmeta-notebooks-" });
    try {
      for (const file of Object.keys(chapters)) {
        await t.step(notebookName(file), async () => {
          const path = new URL(notebookName(file), notebooks).pathname;
          const r = await executeUntilComplete(path, { jupyterPath, outputDir, timeoutS: 300 });
          assert.deepEqual(r.missing, [], "every code cell shows its output");
          assert.ok(r.ok, `notebooks/${notebookName(file)} failed:\n${r.log.slice(-4000)}`);
          const nb = JSON.parse(await Deno.readTextFile(`${outputDir}/${notebookName(file)}`));
          const errors = nb.cells.flatMap((c: { outputs?: { output_type: string }[] }) =>
            (c.outputs ?? []).filter((o) => o.output_type === "error")
          );
          assert.equal(errors.length, 0);
        });
      }
    } finally {
      await Deno.remove(jupyterPath, { recursive: true });
      await Deno.remove(outputDir, { recursive: true });
    }
  },
});

Deno.test("notebooks: a code cell without output is reported", () => {
  const cell = (id: string, outputs: unknown[]) => ({
    cell_type: "code" as const,
    id,
    metadata: {},
    source: [],
    outputs,
  });
  const nb = { cells: [cell("setup", [{ output_type: "execute_result" }]), cell("step-1", [])] };
  assert.deepEqual(cellsWithoutOutput(nb), ["step-1"]);
});

Deno.test("deno task notebooks registers the kernel for this project and opens JupyterLab", async () => {
  const script = new URL("../scripts/notebooks.ts", import.meta.url).pathname;
  const run = async (path: string) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "open", "--dry-run"],
      env: { PATH: path, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, text: new TextDecoder().decode(out.stdout) };
  };
  const count = Object.keys(chapters).length;
  // A stand-in `jupyter` that has JupyterLab.
  const bin = await Deno.makeTempDir({ prefix: "raftmeta-fake-jupyter-" });
  try {
    await Deno.writeTextFile(`${bin}/jupyter`, '#!/bin/sh\n[ "$1" = lab ] && exit 0\nexit 1\n');
    await Deno.chmod(`${bin}/jupyter`, 0o755);
    const lab = await run(`${bin}:/usr/bin:/bin`);
    assert.equal(lab.code, 0, lab.text);
    assert.match(lab.text, new RegExp(`${count} chapters`));
    assert.match(lab.text, /Deno kernel registered for this project/);
    assert.match(lab.text, /JUPYTER_PATH=\S+ jupyter lab \S+notebooks\//);
    // No Jupyter at all: it says what to install, and fails.
    const none = await run(bin.replace(/$/, "-missing"));
    assert.equal(none.code, 1);
    assert.match(none.text, /pip install jupyterlab/);
    assert.match(none.text, /apt-get install -y jupyter-notebook/);
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
});
