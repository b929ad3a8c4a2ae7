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

Deno.test("src/raft and src/sim read no real clock, timer or Math.random", async () => {
  const forbidden =
    /\b(Date\.now|new Date\(|performance\.now|Math\.random|setTimeout|setInterval|crypto\.getRandomValues)\b/;
  const offenders: string[] = [];
  for (const dir of ["src/raft", "src/sim"]) {
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
