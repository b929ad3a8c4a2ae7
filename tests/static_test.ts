// The project's static gates run as tests, so one command proves them: formatting, lint,
// documentation of every export, and the determinism rule for the core and the simulator.
import assert from "node:assert/strict";

const root = new URL("..", import.meta.url);

async function deno(args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

Deno.test("deno fmt --check is clean", async () => {
  const r = await deno(["fmt", "--check"]);
  assert.equal(r.code, 0, r.output);
});

Deno.test("deno lint is clean", async () => {
  const r = await deno(["lint"]);
  assert.equal(r.code, 0, r.output);
});

Deno.test("deno doc --lint mod.ts is clean: every export is documented", async () => {
  const r = await deno(["doc", "--lint", "mod.ts"]);
  assert.equal(r.code, 0, r.output);
});

Deno.test("src/raft, src/sim and src/host read no real clock, timer or Math.random", async () => {
  const forbidden =
    /\b(Date\.now|new Date\(|performance\.now|Math\.random|setTimeout|setInterval|crypto\.getRandomValues)\b/;
  const offenders: string[] = [];
  for (const dir of ["src/raft", "src/sim", "src/host"]) {
    for await (const e of Deno.readDir(new URL(dir, root))) {
      if (!e.isFile || !e.name.endsWith(".ts")) continue;
      const text = await Deno.readTextFile(new URL(`${dir}/${e.name}`, root));
      text.split("\n").forEach((line, i) => {
        if (forbidden.test(line)) offenders.push(`${dir}/${e.name}:${i + 1}: ${line.trim()}`);
      });
    }
  }
  assert.deepEqual(offenders, []);
});

Deno.test("no jsr: imports anywhere (JSR is unreachable)", async () => {
  const offenders: string[] = [];
  async function walk(dir: URL, rel: string) {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.startsWith(".") || e.name === "node_modules") continue;
      if (e.isDirectory) await walk(new URL(`${e.name}/`, dir), `${rel}${e.name}/`);
      else if (/\.(ts|json|ipynb)$/.test(e.name)) {
        const text = await Deno.readTextFile(new URL(e.name, dir));
        if (/["']jsr:/.test(text)) offenders.push(`${rel}${e.name}`);
      }
    }
  }
  await walk(root, "");
  assert.deepEqual(offenders, []);
});

/** Every relative import of each .ts file under src/, as paths relative to src/ ("net/http.ts"). */
async function srcImports(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  async function walk(rel: string) {
    for await (const e of Deno.readDir(new URL(`src/${rel}`, root))) {
      if (e.isDirectory) await walk(`${rel}${e.name}/`);
      else if (e.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(new URL(`src/${rel}${e.name}`, root));
        const targets: string[] = [];
        // Static imports and re-exports (type-only ones too: a cycle of types is still a cycle).
        for (const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.[^"]+)"/gms)) {
          targets.push(new URL(m[1], new URL(`src/${rel}${e.name}`, root)).pathname);
        }
        const srcPath = new URL("src/", root).pathname;
        graph.set(`${rel}${e.name}`, targets.map((t) => t.slice(srcPath.length)));
      }
    }
  }
  await walk("");
  return graph;
}

/** A cycle in `edges` as a list of nodes (first repeated at the end), or undefined. */
function findCycle(edges: Map<string, Set<string>>): string[] | undefined {
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (n: string): string[] | undefined => {
    if (state.get(n) === "done") return undefined;
    if (state.get(n) === "open") return [...path.slice(path.indexOf(n)), n];
    state.set(n, "open");
    path.push(n);
    for (const m of edges.get(n) ?? []) {
      const c = visit(m);
      if (c !== undefined) return c;
    }
    path.pop();
    state.set(n, "done");
    return undefined;
  };
  for (const n of edges.keys()) {
    const c = visit(n);
    if (c !== undefined) return c;
  }
  return undefined;
}

Deno.test("src/ folders import each other without cycles; src/net imports nothing from src/sim", async () => {
  const graph = await srcImports();
  const folders = new Map<string, Set<string>>();
  const fileEdges = new Map<string, Set<string>>();
  const netToSim: string[] = [];
  for (const [file, targets] of graph) {
    const from = file.split("/")[0];
    if (!folders.has(from)) folders.set(from, new Set());
    fileEdges.set(file, new Set(targets));
    for (const t of targets) {
      const to = t.split("/")[0];
      if (to !== from && !t.startsWith("..")) folders.get(from)!.add(to);
      if (from === "net" && to === "sim") netToSim.push(`${file} -> ${t}`);
    }
  }
  assert.equal(findCycle(folders)?.join(" -> "), undefined, "a cycle between src/ folders");
  assert.deepEqual(netToSim, [], "the server must not depend on the simulator");
  // Within a folder too: e.g. net/http.ts and net/server.ts once imported each other.
  assert.equal(findCycle(fileEdges)?.join(" -> "), undefined, "a cycle between src/ files");
});
