/**
 * Growing a cluster (issue 19): starts a 3-node cluster on 127.0.0.1, loads `--keys` keys (in
 * transactions of 128 puts), then adds a fourth member as a learner (`member add`), starts it with
 * `--initial-cluster-state existing`, waits until it has applied the leader's commit index, and
 * promotes it. A writer puts one key after another through the leader all along; the report
 * gives each step's time and the writer's slowest put (what clients saw meanwhile).
 *
 *   deno run -A bench/membership_bench.ts --keys 100000 --value-bytes 100
 *
 * Every process it starts is killed at the end.
 *
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    keys: { type: "string", default: "100000" },
    "value-bytes": { type: "string", default: "100" },
    "snapshot-entries": { type: "string", default: "100000" },
  },
});
const keys = Number(values.keys);
const valueBytes = Number(values["value-bytes"]);
const MAIN = new URL("../src/net/main.ts", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

interface Node {
  id: string;
  url: string;
  peer: string;
  process: Deno.ChildProcess;
}

const dir = Deno.makeTempDirSync({ prefix: "raftmeta-membership-bench-" });
const nodes: Node[] = [];

async function local(n: Node): Promise<Record<string, number | string> | undefined> {
  try {
    const res = await fetch(`${n.url}/v1/status?local=1`, { signal: AbortSignal.timeout(2000) });
    return (await res.json()).node;
  } catch {
    return undefined;
  }
}

async function post(url: string, body: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(url, { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

async function leaderOf(among: Node[]): Promise<Node> {
  for (let i = 0; i < 1000; i++) {
    for (const n of among) if ((await local(n))?.role === "Leader") return n;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("no leader");
}

try {
  // Three bootstrap members: each is told the others' peer addresses.
  const ports = ["n1", "n2", "n3"].map((id) => ({ id, peer: `127.0.0.1:${freePort()}` }));
  const bootstrap: Node[] = [];
  for (const p of ports) {
    const client = freePort();
    const others = ports.filter((o) => o !== p);
    const process = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "--name",
        p.id,
        "--cluster-id",
        "bench",
        "--data-dir",
        `${dir}/${p.id}`,
        "--listen-client",
        `127.0.0.1:${client}`,
        "--listen-peer",
        p.peer,
        "--cluster-secret",
        "bench",
        "--snapshot-entries",
        values["snapshot-entries"]!,
        "--peers",
        others.map((o) => `${o.id}=${o.peer}`).join(","),
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    const n = { id: p.id, url: `http://127.0.0.1:${client}`, peer: p.peer, process };
    nodes.push(n);
    bootstrap.push(n);
  }
  let leader = await leaderOf(bootstrap);
  const value = btoa("v".repeat(valueBytes));
  const loadStart = performance.now();
  for (let next = 0; next < keys;) {
    const success = [];
    for (let j = 0; j < 128 && next < keys; j++, next++) {
      success.push({ requestPut: { key: btoa(`/bench/${next}`), value } });
    }
    for (let attempt = 0;; attempt++) {
      const r = await post(`${leader.url}/v3/kv/txn`, { success }).catch((e) => e as Error);
      if (!(r instanceof Error) && r.status === 200) break;
      if (attempt === 20) throw new Error(`load failed: ${JSON.stringify(r)}`);
      await new Promise((res) => setTimeout(res, 200));
      leader = await leaderOf(bootstrap);
    }
  }
  console.log(
    `loaded ${keys} keys of ${valueBytes} bytes in ${
      ((performance.now() - loadStart) / 1000).toFixed(1)
    } s`,
  );

  // A writer through the leader for the whole change: its slowest put is what clients saw.
  let writing = true;
  let worstPutMs = 0;
  let puts = 0;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      const t = performance.now();
      const l = await leaderOf(bootstrap);
      await post(`${l.url}/v3/kv/put`, { key: btoa(`/w/${i}`), value: btoa("x") }).catch(() => {});
      worstPutMs = Math.max(worstPutMs, performance.now() - t);
      puts++;
    }
  })();

  const newPeer = `127.0.0.1:${freePort()}`;
  const t0 = performance.now();
  const added = await post(`${leader.url}/v3/cluster/member/add`, {
    name: "n4",
    peerURLs: [`http://${newPeer}`],
    isLearner: true,
  });
  if (added.status !== 200) throw new Error(`member add: ${JSON.stringify(added.json)}`);
  const addMs = performance.now() - t0;
  // The new member, on the port member add was told.
  const client = freePort();
  const t1 = performance.now();
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "--name",
      "n4",
      "--cluster-id",
      "bench",
      "--data-dir",
      `${dir}/n4`,
      "--listen-client",
      `127.0.0.1:${client}`,
      "--listen-peer",
      newPeer,
      "--cluster-secret",
      "bench",
      "--peers",
      bootstrap.map((o) => `${o.id}=${o.peer}`).join(","),
      "--initial-cluster-state",
      "existing",
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const n4 = { id: "n4", url: `http://127.0.0.1:${client}`, peer: newPeer, process };
  nodes.push(n4);
  const target = Number((await local(leader))?.commitIndex ?? 0);
  for (;;) {
    const s = await local(n4);
    if (s !== undefined && Number(s.lastApplied) >= target && s.status === "up") break;
    if (performance.now() - t1 > 600_000) throw new Error("n4 did not catch up in 600 s");
    await new Promise((r) => setTimeout(r, 20));
  }
  const catchUpMs = performance.now() - t1;
  const list = await post(`${leader.url}/v3/cluster/member/list`, {});
  // deno-lint-ignore no-explicit-any
  const id = (list.json as any).members.find((m: any) => m.name === "n4").ID;
  const t2 = performance.now();
  for (;;) {
    const r = await post(`${leader.url}/v3/cluster/member/promote`, { ID: id });
    if (r.status === 200) break;
    if (performance.now() - t2 > 60_000) throw new Error(`promote: ${JSON.stringify(r.json)}`);
    await new Promise((res) => setTimeout(res, 20));
  }
  const promoteMs = performance.now() - t2;
  writing = false;
  await writer;
  console.log(
    `member add ${addMs.toFixed(0)} ms; new member started and caught up to index ${target} in ` +
      `${(catchUpMs / 1000).toFixed(2)} s; promote ${promoteMs.toFixed(0)} ms; ` +
      `writer: ${puts} puts, slowest ${worstPutMs.toFixed(0)} ms`,
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
