// Every tutorial notebook, executed headless through Deno's real Jupyter kernel (jupyter nbconvert
// --execute); a cell that throws fails the test. Without Jupyter, the test says so and runs each
// chapter's steps as scripts instead — it never passes as if the notebooks had run.
import assert from "node:assert/strict";
import { chapters } from "../scenarios/chapters.ts";
import { runChapter } from "../scenarios/_chapter.ts";
import {
  executeNotebook,
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
      c.cell_type === "code" && c.source.join("").startsWith("run.step(")
    );
    assert.equal(steps.length, chapter.steps.length);
    // Committed with the outputs of a seeded run.
    const shown = steps.filter((c: { outputs: unknown[] }) => c.outputs.length > 0).length;
    assert.ok(shown >= chapter.steps.length - 1, `${file}: ${shown} steps with output`);
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
          const r = await executeNotebook(path, { jupyterPath, outputDir, timeoutS: 300 });
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
