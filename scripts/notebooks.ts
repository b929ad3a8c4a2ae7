/**
 * The tutorial notebooks: build them from the chapter modules, execute them through Deno's Jupyter
 * kernel, or say how to open them.
 *
 * ```sh
 * deno run -A scripts/notebooks.ts            # how to open the notebooks (and what is missing)
 * deno run -A scripts/notebooks.ts build      # write notebooks/*.ipynb from scenarios/0*.ts
 * deno run -A scripts/notebooks.ts execute    # run every notebook in place (outputs committed)
 * deno run -A scripts/notebooks.ts execute 01 # only the chapters whose file starts with 01
 * ```
 *
 * The kernel is the one committed in `notebooks/kernels/deno/kernel.json`, found through
 * `JUPYTER_PATH`; nothing is installed into the user's Jupyter directories.
 *
 * @module
 */

import { chapters } from "../scenarios/chapters.ts";
import { rulesLine } from "../scenarios/figure2.ts";

const root = new URL("../", import.meta.url);
const notebooksDir = new URL("notebooks/", root);

/** One notebook cell in nbformat 4. */
interface Cell {
  cell_type: "markdown" | "code";
  metadata: Record<string, unknown>;
  source: string[];
  execution_count?: null;
  outputs?: unknown[];
  id: string;
}

function lines(text: string): string[] {
  const parts = text.split("\n");
  return parts.map((l, i) => i < parts.length - 1 ? `${l}\n` : l);
}

function markdown(id: string, text: string): Cell {
  return { cell_type: "markdown", id, metadata: {}, source: lines(text) };
}

function code(id: string, text: string): Cell {
  return {
    cell_type: "code",
    id,
    metadata: {},
    execution_count: null,
    outputs: [],
    source: lines(text),
  };
}

/** The notebook of one chapter, without outputs. */
export function notebookOf(file: string, chapter: (typeof chapters)[number]): unknown {
  const cells: Cell[] = [
    markdown(
      "intro",
      `# Chapter ${chapter.number}: ${chapter.title}\n\n${chapter.intro}\n\n` +
        `Each step below explains the Raft rule at work, then runs it on a seeded simulated ` +
        `cluster. The step's checks run inside the cell — it throws when a claim does not hold — ` +
        `and the cell shows the node table and the messages of the step as a sequence diagram ` +
        `(time runs down; an arrow ending in × is a lost message; quiet stretches are squeezed).\n\n` +
        `The same steps run as a script: \`deno run -A scenarios/${file}\`, and under \`deno test\`.`,
    ),
    code(
      "setup",
      `import { nodeTable } from "../mod.ts";\n` +
        `import { start } from "../scenarios/_chapter.ts";\n` +
        `import { chapter } from "../scenarios/${file}";\n\n` +
        `const run = start(chapter, { seed: 1 });\n` +
        `nodeTable(run.cluster, { title: "Before step 1" });`,
    ),
  ];
  chapter.steps.forEach((step, i) => {
    const rules = step.rules === undefined || step.rules.length === 0
      ? ""
      : `\n\n**Figure 2:** ${rulesLine(step.rules).slice("Figure 2: ".length)}`;
    const breakIt = step.breakIt === undefined
      ? ""
      : `\n\n**Break it:** switched off — ${step.breakIt}. In the cell below, \`ruleOff: true\` runs the step with the rule switched off and ` +
        `asserts that the bug is caught; set it to \`false\` and run the cell again to see the ` +
        `same run with the rule on.`;
    cells.push(
      markdown(
        `step-${i + 1}-explain`,
        `## Step ${i + 1}: ${step.name}\n\n${step.explain}${rules}${breakIt}`,
      ),
      code(
        `step-${i + 1}`,
        step.breakIt === undefined
          ? `run.step(${i + 1});`
          : `run.step(${i + 1}, { ruleOff: true }); // false: the same run with the rule on`,
      ),
    );
  });
  return {
    cells,
    metadata: {
      kernelspec: { name: "deno", display_name: "Deno", language: "typescript" },
      language_info: {
        name: "typescript",
        file_extension: ".ts",
        mimetype: "text/x.typescript",
        codemirror_mode: "typescript",
        nb_converter: "script",
        pygments_lexer: "typescript",
        version: "5",
      },
    },
    nbformat: 4,
    nbformat_minor: 5,
  };
}

/** Notebook file name of a chapter module: `01_leader_election.ts` → `01_leader_election.ipynb`. */
export function notebookName(file: string): string {
  return file.replace(/\.ts$/, ".ipynb");
}

async function build(): Promise<void> {
  for (const [file, chapter] of Object.entries(chapters)) {
    const path = new URL(notebookName(file), notebooksDir);
    await Deno.writeTextFile(path, JSON.stringify(notebookOf(file, chapter), null, 1) + "\n");
    console.log(`wrote notebooks/${notebookName(file)}`);
  }
}

/** Whether `jupyter nbconvert` can run here. */
export async function jupyterAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command("jupyter", {
      args: ["nbconvert", "--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * A Jupyter data directory holding a kernelspec that runs this very Deno binary (so it works where
 * `deno` is not on PATH, e.g. under `npx deno`). Returns its path.
 */
export async function kernelDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "raftmeta-jupyter-" });
  await Deno.mkdir(`${dir}/kernels/deno`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/kernels/deno/kernel.json`,
    JSON.stringify({
      argv: [Deno.execPath(), "jupyter", "--kernel", "--conn", "{connection_file}"],
      display_name: "Deno",
      language: "typescript",
    }),
  );
  return dir;
}

/** Executes `notebook` with nbconvert; `outputDir` undefined means in place. */
export async function executeNotebook(
  notebook: string,
  options: { outputDir?: string; jupyterPath: string; timeoutS?: number },
): Promise<{ ok: boolean; log: string }> {
  const args = [
    "nbconvert",
    "--to",
    "notebook",
    "--execute",
    `--ExecutePreprocessor.timeout=${options.timeoutS ?? 600}`,
    "--ExecutePreprocessor.kernel_name=deno",
  ];
  if (options.outputDir === undefined) args.push("--inplace");
  else args.push("--output-dir", options.outputDir);
  args.push(notebook);
  const out = await new Deno.Command("jupyter", {
    args,
    env: { JUPYTER_PATH: options.jupyterPath, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const log = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { ok: out.success, log };
}

/** Code cells of an executed notebook that show nothing (the kernel dropped their output). */
export function cellsWithoutOutput(nb: { cells: Cell[] }): string[] {
  return nb.cells.filter((c) => c.cell_type === "code" && (c.outputs ?? []).length === 0)
    .map((c) => c.id);
}

async function execute(filter: string[]): Promise<number> {
  if (!(await jupyterAvailable())) {
    console.error(missingJupyter());
    return 1;
  }
  const jupyterPath = await kernelDir();
  let failed = 0;
  for (const file of Object.keys(chapters)) {
    if (filter.length > 0 && !filter.some((f) => file.startsWith(f))) continue;
    const path = new URL(notebookName(file), notebooksDir).pathname;
    // A kernel now and then drops a cell's output; retry so the committed copy shows every step.
    for (let attempt = 1; attempt <= 4; attempt++) {
      const r = await executeNotebook(path, { jupyterPath });
      if (!r.ok) {
        console.error(`✗ notebooks/${notebookName(file)} failed:\n${r.log.slice(-3000)}`);
        failed++;
        break;
      }
      const missing = cellsWithoutOutput(JSON.parse(await Deno.readTextFile(path)));
      if (missing.length === 0 || attempt === 4) {
        console.log(
          `✓ notebooks/${notebookName(file)}` +
            (missing.length > 0 ? ` (cells without output: ${missing.join(", ")})` : ""),
        );
        break;
      }
      console.log(
        `… notebooks/${notebookName(file)}: output of ${missing.join(", ")} dropped, again`,
      );
    }
  }
  await Deno.remove(jupyterPath, { recursive: true });
  return failed === 0 ? 0 : 1;
}

function missingJupyter(): string {
  return "Jupyter is not installed. On Debian or Ubuntu:\n" +
    "  sudo apt-get install -y jupyter-nbconvert python3-nbclient   # to execute notebooks\n" +
    "  sudo apt-get install -y jupyter-notebook                     # to open them in a browser\n" +
    "or with pip: pip install jupyterlab. Deno's kernel needs no install: this project's " +
    "kernelspec is notebooks/kernels/deno/kernel.json.";
}

async function open(): Promise<number> {
  const here = new URL(".", notebooksDir).pathname;
  console.log(
    "The tutorial notebooks are in notebooks/ (chapters 01–07). To open them with the project's " +
      "Deno kernel:\n\n" +
      `  JUPYTER_PATH=${here} jupyter lab ${here}\n` +
      "  (or: deno jupyter --install, then open the notebooks in Jupyter or VS Code)\n\n" +
      "To run them headless: deno run -A scripts/notebooks.ts execute",
  );
  if (!(await jupyterAvailable())) {
    console.log(`\n${missingJupyter()}`);
  }
  return 0;
}

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  if (command === "build") await build();
  else if (command === "execute") Deno.exit(await execute(rest));
  else if (command === undefined || command === "open") Deno.exit(await open());
  else {
    console.error(`Unknown command "${command}": use build, execute or open`);
    Deno.exit(2);
  }
}
