/**
 * Availability right after a leader dies (not a timed test): a 3-process cluster on 127.0.0.1;
 * each round kills the leader with SIGKILL, then sends `--writes` plain writes (no session, as
 * curl sends them) spread over the next `--window-ms` to the two survivors, and `--reads`
 * linearizable reads to them in the same window. Reports how the writes ended (200, 504 "outcome
 * unknown", other) and the reads' latency, then restarts the old leader for the next round.
 *
 *   deno run -A bench/failover_bench.ts --rounds 5 --writes 90 --reads 6 --window-ms 250
 *
 * @module
 */

import { parseArgs } from "node:util";
import { b64, ProcessCluster } from "../tests/net_helpers.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "5" },
    writes: { type: "string", default: "90" },
    reads: { type: "string", default: "6" },
    "window-ms": { type: "string", default: "250" },
  },
});
const rounds = Number(values.rounds);
const writesPerRound = Number(values.writes);
const readsPerRound = Number(values.reads);
const windowMs = Number(values["window-ms"]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const outcomes = new Map<string, number>();
const writeMs: number[] = [];
const readMs: number[] = [];
const readOutcomes = new Map<string, number>();
const errorTexts = new Map<string, number>();
const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

async function send(url: string, init: RequestInit): Promise<{ status: number; text: string }> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
    return { status: res.status, text: await res.text() };
  } catch (e) {
    return { status: 0, text: (e as Error).message };
  }
}

const cluster = ProcessCluster.start(3);
try {
  for (let round = 0; round < rounds; round++) {
    const leader = await cluster.waitForLeader();
    const survivors = cluster.nodes.filter((n) => n !== leader);
    // Every survivor follows this leader before the kill (so they forward to it).
    for (const s of survivors) {
      while ((await s.local())?.leader !== leader.id) await sleep(20);
    }
    await sleep(300); // keep-alive connections to the leader are open and idle
    leader.signal("SIGKILL");
    const killedAt = performance.now();
    const pending: Promise<void>[] = [];
    for (let i = 0; i < writesPerRound; i++) {
      const at = killedAt + (windowMs * i) / writesPerRound;
      await sleep(Math.max(0, at - performance.now()));
      const node = survivors[i % survivors.length];
      const t = performance.now();
      pending.push(
        send(`${node.url}/v3/kv/put`, {
          method: "POST",
          body: JSON.stringify({ key: b64(`/failover/${round}/${i}`), value: b64("v") }),
        }).then((r) => {
          writeMs.push(performance.now() - t);
          const kind = r.status === 504 && /outcome is unknown/.test(r.text)
            ? "504 outcome unknown"
            : String(r.status);
          count(outcomes, kind);
          if (r.status !== 200) count(errorTexts, r.text.slice(0, 300));
        }),
      );
      if (i % Math.max(1, Math.floor(writesPerRound / readsPerRound)) === 0) {
        const t2 = performance.now();
        pending.push(
          send(`${node.url}/v1/kv/failover-read`, { method: "GET" }).then((r) => {
            readMs.push(performance.now() - t2);
            count(readOutcomes, String(r.status));
          }),
        );
      }
    }
    await Promise.all(pending);
    await leader.exited;
    leader.restart();
    await cluster.waitForLeader();
  }
} finally {
  await cluster.stop();
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const total = rounds * writesPerRound;
console.log(
  `writes sent to survivors in the ${windowMs} ms after a leader kill: ${total} over ${rounds} rounds`,
);
for (const [k, v] of [...outcomes].sort()) console.log(`  ${k}: ${v}`);
console.log(
  `  write latency ms: p50 ${pct(writeMs, 50).toFixed(0)}, p90 ${
    pct(writeMs, 90).toFixed(0)
  }, max ${pct(writeMs, 100).toFixed(0)}`,
);
for (const [k, v] of errorTexts) console.log(`    ${v} × ${k}`);
console.log(`linearizable reads on survivors in the same window: ${readMs.length}`);
for (const [k, v] of [...readOutcomes].sort()) console.log(`  ${k}: ${v}`);
console.log(
  `  read latency ms: p50 ${pct(readMs, 50).toFixed(0)}, p90 ${pct(readMs, 90).toFixed(0)}, max ${
    pct(readMs, 100).toFixed(0)
  }`,
);
