/**
 * `--join` under a large store (issue 14, item 8): starts a 3-node cluster on 127.0.0.1, loads
 * `--keys` keys (in transactions of 128 puts, one entry each: `--snapshot-entries`
 * is low by default so that the leader holds a snapshot of nearly the whole store), then wipes a
 * follower's data directory, removes it (`member remove`) and adds a new member in its place,
 * started with `--join` (`--initial-cluster-state existing`; a wiped node never rejoins under its
 * old name). Reports how long the rebuild took and what the leader's clients saw meanwhile:
 * one client polls the leader's `/health` back to back, and the longest answer is an upper bound
 * on the leader's worst event-loop stall (the same poll on the idle cluster first, as a baseline).
 * Also checks that the leader kept its term.
 *
 *   deno run -A bench/join_bench.ts --keys 200000 --value-bytes 100 --snapshot-entries 1000
 *   deno run -A bench/join_bench.ts --main /other/checkout/src/net/main.ts   # compare a version
 *
 * Every process it starts is killed at the end.
 *
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    keys: { type: "string", default: "200000" },
    "value-bytes": { type: "string", default: "100" },
    "snapshot-entries": { type: "string", default: "1000" },
    main: { type: "string", default: new URL("../src/net/main.ts", import.meta.url).pathname },
  },
});
const keys = Number(values.keys);
const valueBytes = Number(values["value-bytes"]);

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

interface Node {
  id: string;
  url: string;
  args: string[];
  dataDir: string;
  process: Deno.ChildProcess;
  lines: string[];
}

const dir = Deno.makeTempDirSync({ prefix: "raftmeta-join-bench-" });
const ids = ["n1", "n2", "n3"];
const clientPorts = ids.map(() => freePort());
const peerPorts = ids.map(() => freePort());

function spawn(node: Omit<Node, "process" | "lines">, extra: string[] = []): Node {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", values.main!, ...node.args, ...extra],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: string[] = [];
  (async () => {
    let rest = "";
    for await (const chunk of process.stdout.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      lines.push(...parts);
    }
  })().catch(() => {});
  return { ...node, process, lines };
}

const nodes: Node[] = ids.map((id, i) =>
  spawn({
    id,
    url: `http://127.0.0.1:${clientPorts[i]}`,
    dataDir: `${dir}/${id}`,
    args: [
      "--name",
      id,
      "--cluster-id",
      "bench",
      "--data-dir",
      `${dir}/${id}`,
      "--listen-client",
      `127.0.0.1:${clientPorts[i]}`,
      "--listen-peer",
      `127.0.0.1:${peerPorts[i]}`,
      "--cluster-secret",
      "bench",
      "--snapshot-entries",
      values["snapshot-entries"]!,
      "--peers",
      ids.flatMap((p, j) => j === i ? [] : [`${p}=127.0.0.1:${peerPorts[j]}`]).join(","),
    ],
  })
);

async function local(n: Node): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await fetch(`${n.url}/v1/status?local=1`, { signal: AbortSignal.timeout(2000) });
    return (await res.json()).node;
  } catch {
    return undefined;
  }
}

async function leader(): Promise<Node> {
  for (let i = 0; i < 1000; i++) {
    for (const n of nodes) if ((await local(n))?.role === "Leader") return n;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("no leader");
}

/** Polls `url` back to back until `stop` resolves; returns the longest answer in ms. */
async function pollWorstMs(url: string, stop: Promise<unknown>): Promise<number> {
  let done = false;
  stop.finally(() => done = true);
  let worst = 0;
  while (!done) {
    const t = performance.now();
    try {
      await (await fetch(url, { signal: AbortSignal.timeout(30_000) })).arrayBuffer();
    } catch { /* counted by its time */ }
    worst = Math.max(worst, performance.now() - t);
  }
  return worst;
}

const b64 = (s: string) => btoa(s);
try {
  let l = await leader();
  const value = b64("v".repeat(valueBytes));
  const loadStart = performance.now();
  let next = 0;
  let loadRetries = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < keys) {
      const from = next;
      next = Math.min(keys, next + 128);
      const success = [];
      for (let k = from; k < next; k++) {
        success.push({
          request_put: { key: b64(`/bench/${String(k).padStart(8, "0")}`), value },
        });
      }
      // Puts are idempotent here: after a leader change, find the leader and send the batch again.
      for (let attempt = 1;; attempt++) {
        const res = await fetch(`${l.url}/v3/kv/txn`, {
          method: "POST",
          body: JSON.stringify({ success }),
        }).catch((e) => e as Error);
        if (!(res instanceof Error) && res.status === 200) {
          await res.arrayBuffer();
          break;
        }
        const why = res instanceof Error ? res.message : `${res.status} ${await res.text()}`;
        if (attempt === 20) throw new Error(`load: ${why}`);
        loadRetries++;
        await new Promise((r) => setTimeout(r, 200));
        l = await leader();
      }
    }
  }));
  console.log(
    `loaded ${keys} keys of ${valueBytes} bytes in ${
      ((performance.now() - loadStart) / 1000).toFixed(1)
    } s`,
  );
  l = await leader();
  const before = await local(l);
  const idleWorstMs = await pollWorstMs(`${l.url}/health`, new Promise((r) => setTimeout(r, 3000)));

  const victim = nodes.find((n) => n !== l)!;
  victim.process.kill("SIGKILL");
  await victim.process.status;
  Deno.removeSync(victim.dataDir, { recursive: true });
  const cluster = async (path: string, body: unknown) => {
    const res = await fetch(`${l.url}/v3/cluster/member/${path}`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    const json = await res.json();
    if (res.status !== 200) throw new Error(`member ${path}: ${JSON.stringify(json)}`);
    return json;
  };
  const list = await cluster("list", {});
  // deno-lint-ignore no-explicit-any
  await cluster("remove", { ID: list.members.find((m: any) => m.name === victim.id).ID });
  const newId = `${victim.id}b`;
  const ports = { client: freePort(), peer: freePort() };
  await cluster("add", {
    name: newId,
    peerURLs: [`http://127.0.0.1:${ports.peer}`],
    clientURLs: [`http://127.0.0.1:${ports.client}`],
  });
  const others = nodes.filter((n) => n !== victim);
  const t0 = performance.now();
  const rebuilt = spawn({
    id: newId,
    url: `http://127.0.0.1:${ports.client}`,
    dataDir: `${dir}/${newId}`,
    args: [
      "--name",
      newId,
      "--cluster-id",
      "bench",
      "--data-dir",
      `${dir}/${newId}`,
      "--listen-client",
      `127.0.0.1:${ports.client}`,
      "--listen-peer",
      `127.0.0.1:${ports.peer}`,
      "--cluster-secret",
      "bench",
      "--snapshot-entries",
      values["snapshot-entries"]!,
      "--peers",
      others.map((n) => `${n.id}=${n.args[n.args.indexOf("--listen-peer") + 1]}`).join(","),
    ],
  }, ["--join"]);
  nodes[nodes.indexOf(victim)] = rebuilt;
  const joined = (async () => {
    while (!rebuilt.lines.some((x) => x.includes('"event":"joined"'))) {
      const status = await Promise.race([
        rebuilt.process.status,
        new Promise((r) => setTimeout(r, 20)),
      ]);
      if (status !== undefined) {
        throw new Error(`the joining node exited: ${JSON.stringify(status)}`);
      }
      if (performance.now() - t0 > 600_000) throw new Error("no 'joined' within 600 s");
    }
    return performance.now() - t0;
  })();
  const [joinMs, joinWorstMs] = await Promise.all([joined, pollWorstMs(`${l.url}/health`, joined)]);
  const after = await local(l);
  const events = rebuilt.lines.map((x) => JSON.parse(x));
  const join = events.find((e) => e.event === "join");
  const sent = l.lines.map((x) => JSON.parse(x)).find((e) => e.event === "log-transfer-sent");
  console.log(`join event: ${JSON.stringify(join)}`);
  if (sent !== undefined) console.log(`leader: ${JSON.stringify(sent)}`);
  console.log(
    `rebuilt with --join in ${(joinMs / 1000).toFixed(2)} s; leader /health worst ` +
      `${joinWorstMs.toFixed(1)} ms during the join (${idleWorstMs.toFixed(1)} ms idle); ` +
      `leader term ${before?.term} -> ${after?.term}, role ${after?.role}`,
  );
} finally {
  for (const n of nodes) {
    try {
      n.process.kill("SIGKILL");
    } catch { /* gone */ }
    await n.process.status;
  }
  Deno.removeSync(dir, { recursive: true });
}
