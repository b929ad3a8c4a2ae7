// "Importing mod.ts from a URL": serve the repository over HTTP on 127.0.0.1 and run, in a child
// `deno run` from a directory with no deno.json, a script that imports http://127.0.0.1:PORT/mod.ts
// and drives a cluster.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

Deno.test("mod.ts imports from a URL and runs a scenario", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.includes("..")) return new Response("bad path", { status: 400 });
    try {
      const body = await Deno.readFile(new URL(`.${path}`, root));
      const type = path.endsWith(".ts") ? "application/typescript" : "text/plain";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const dir = await Deno.makeTempDir({ prefix: "raftmeta-url-" });
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    await Deno.writeTextFile(
      `${dir}/main.ts`,
      `import { Cluster, nodeTable } from "${base}/mod.ts";\n` +
        `const cluster = new Cluster({ nodes: 3, seed: 7 });\n` +
        `const leader = cluster.waitForLeader();\n` +
        `const op = cluster.complete(cluster.put("/services/db/primary", "10.0.0.7:5432"));\n` +
        `if (op.status !== "ok") throw new Error("put failed: " + op.error);\n` +
        `cluster.runUntil(() => cluster.nodes().every((n) =>\n` +
        `  n.store.getString("/services/db/primary") === "10.0.0.7:5432"));\n` +
        `console.log("leader " + leader);\n` +
        `console.log(nodeTable(cluster).toString());\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        `--allow-import=127.0.0.1:${server.addr.port}`,
        "--reload",
        "main.ts",
      ],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", DENO_DIR: `${dir}/deno_dir` },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stdout, /^leader n\d/m);
    assert.match(stdout, /keys n1: \/services\/db\/primary=10\.0\.0\.7:5432/);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
