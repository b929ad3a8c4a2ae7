/**
 * The tutorial notebooks: build them from the chapter modules, execute them through Deno's Jupyter
 * kernel, or say how to open them.
 *
 * ```sh
 * deno run -A scripts/notebooks.ts            # register the Deno kernel, open JupyterLab (or say what to install)
 * deno run -A scripts/notebooks.ts open --dry-run  # only print what it would run
 * deno run -A scripts/notebooks.ts build      # write notebooks/*.ipynb from the chapter modules
 * deno run -A scripts/notebooks.ts build 10   # only the chapters whose file starts with 10
 * deno run -A scripts/notebooks.ts execute    # run every notebook in place (outputs committed)
 * deno run -A scripts/notebooks.ts execute 01 # only the chapters whose file starts with 01
 * ```
 *
 * The kernel is registered for this project only: a kernelspec that runs this very Deno binary, in
 * a temporary Jupyter data directory passed as `JUPYTER_PATH`; nothing is installed into the
 * user's Jupyter directories. Deno's kernel now and then reports a cell idle before its result and
 * nbconvert then drops the output: `execute` runs a notebook again until every code cell shows
 * output, and fails when one still shows none.
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
        // Displayed while the cell runs: Deno's kernel may report a cell idle before its result,
        // and nbconvert then drops the result; a display it has already sent.
        `await Deno.jupyter.display(nodeTable(run.cluster, { title: "Before step 1" }));`,
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
          ? `await Deno.jupyter.display(run.step(${i + 1}));`
          : `await Deno.jupyter.display(run.step(${i + 1}, { ruleOff: true })); // false: rule on`,
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

async function build(filter: string[]): Promise<void> {
  for (const [file, chapter] of Object.entries(chapters)) {
    if (filter.length > 0 && !filter.some((f) => file.startsWith(f))) continue;
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

/** Attempts {@linkcode executeUntilComplete} makes by default. */
export const EXECUTE_ATTEMPTS = 8;

/**
 * Executes `notebook` until every code cell has output (at most `attempts` times): the kernel
 * sometimes reports a cell idle before its result arrives, and nbconvert then drops the output.
 * `missing` names the cells still without output after the last attempt; `ok` is false when a
 * cell failed or any output is missing.
 */
export async function executeUntilComplete(
  notebook: string,
  options: { outputDir?: string; jupyterPath: string; timeoutS?: number; attempts?: number },
): Promise<{ ok: boolean; log: string; missing: string[]; attempts: number }> {
  const attempts = options.attempts ?? EXECUTE_ATTEMPTS;
  const executed = options.outputDir === undefined
    ? notebook
    : `${options.outputDir}/${notebook.split("/").pop()}`;
  let missing: string[] = [];
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const r = await executeNotebook(notebook, options);
    if (!r.ok) return { ok: false, log: r.log, missing, attempts: attempt };
    missing = cellsWithoutOutput(JSON.parse(await Deno.readTextFile(executed)));
    if (missing.length === 0) return { ok: true, log: r.log, missing, attempts: attempt };
  }
  return {
    ok: false,
    log: `cells without output after ${attempts} runs: ${missing.join(", ")}`,
    missing,
    attempts,
  };
}

async function execute(filter: string[]): Promise<number> {
  if (!(await jupyterAvailable())) {
    console.error(missingJupyter("jupyter nbconvert is not installed."));
    return 1;
  }
  const jupyterPath = await kernelDir();
  let failed = 0;
  for (const file of Object.keys(chapters)) {
    if (filter.length > 0 && !filter.some((f) => file.startsWith(f))) continue;
    const path = new URL(notebookName(file), notebooksDir).pathname;
    const r = await executeUntilComplete(path, { jupyterPath });
    if (r.ok) {
      const again = r.attempts > 1 ? ` (run ${r.attempts} times: the kernel dropped output)` : "";
      console.log(`✓ notebooks/${notebookName(file)}${again}`);
    } else {
      console.error(`✗ notebooks/${notebookName(file)} failed:\n${r.log.slice(-3000)}`);
      failed++;
    }
  }
  await Deno.remove(jupyterPath, { recursive: true });
  return failed === 0 ? 0 : 1;
}

function missingJupyter(what = "Jupyter is not installed."): string {
  return `${what} Install one of:\n` +
    "  pip install jupyterlab                                         # JupyterLab, any OS\n" +
    "  sudo apt-get install -y jupyter-notebook                       # Debian/Ubuntu: Notebook\n" +
    "  sudo apt-get install -y jupyter-nbconvert python3-nbclient     # only to execute headless\n" +
    "then run `deno task notebooks` again. Deno's kernel comes with Deno: this script registers " +
    "it for this project (JUPYTER_PATH), nothing in your home directory.";
}

/** Whether `jupyter <frontEnd>` (lab or notebook) is installed. */
async function hasFrontEnd(frontEnd: string): Promise<boolean> {
  try {
    const out = await new Deno.Command("jupyter", {
      args: [frontEnd, "--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Registers the Deno kernel for this project and opens the notebooks in JupyterLab (or Jupyter
 * Notebook); without either, says exactly what to install and returns 1. With `dryRun` it only
 * prints the command.
 */
async function open(options: { dryRun: boolean }): Promise<number> {
  const here = notebooksDir.pathname;
  const count = Object.keys(chapters).length;
  const frontEnd = (await hasFrontEnd("lab"))
    ? "lab"
    : (await hasFrontEnd("notebook"))
    ? "notebook"
    : undefined;
  console.log(`The tutorial is ${count} chapters, one notebook each, in ${here}`);
  if (frontEnd === undefined) {
    console.log(`\n${missingJupyter("Neither JupyterLab nor Jupyter Notebook is installed.")}`);
    return 1;
  }
  const jupyterPath = await kernelDir();
  try {
    console.log(
      `Deno kernel registered for this project (${Deno.execPath()}), in ${jupyterPath}.\n` +
        `Running: JUPYTER_PATH=${jupyterPath} jupyter ${frontEnd} ${here}`,
    );
    if (options.dryRun) return 0;
    const child = new Deno.Command("jupyter", {
      args: [frontEnd, here],
      env: { JUPYTER_PATH: jupyterPath },
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    return (await child.status).code;
  } finally {
    await Deno.remove(jupyterPath, { recursive: true });
  }
}

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  if (command === "build") await build(rest);
  else if (command === "execute") Deno.exit(await execute(rest));
  else if (command === undefined || command === "open") {
    Deno.exit(await open({ dryRun: rest.includes("--dry-run") }));
  } else {
    console.error(`Unknown command "${command}": use build, execute or open`);
    Deno.exit(2);
  }
}
