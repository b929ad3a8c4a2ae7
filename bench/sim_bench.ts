/**
 * Simulator speed: a 5-node cluster under client load, with and without the per-event safety
 * checks. Prints simulated messages per real second and simulated seconds per real second.
 *
 * Run: `deno task bench:sim` (or `deno run bench/sim_bench.ts --seconds 20`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Cluster } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "10" },
    "puts-per-ms": { type: "string", default: "1" },
  },
});
const simSeconds = Number(values.seconds);
const putsPerMs = Number(values["puts-per-ms"]);

interface Row {
  label: string;
  realMs: number;
  messages: number;
  committed: number;
}

function run(label: string, checkSafety: boolean, loss: number): Row {
  const c = new Cluster({
    nodes: 5,
    seed: 42,
    checkSafety,
    eventsMax: 0,
    network: { dropRate: loss, reorderRate: loss },
  });
  c.waitForLeader();
  const start = performance.now();
  const msgs0 = c.stats.sent;
  let committed = 0;
  for (let t = 0; t < simSeconds * 1000; t++) {
    const leader = c.leader();
    if (leader !== undefined) {
      for (let i = 0; i < putsPerMs; i++) {
        const op = c.put(`/bench/${(t * putsPerMs + i) % 1000}`, "v".repeat(64), { via: leader });
        if (op.status !== "failed") committed++;
      }
    }
    c.advance(1);
  }
  return { label, realMs: performance.now() - start, messages: c.stats.sent - msgs0, committed };
}

const rows = [
  run("safety checks on, reliable network", true, 0),
  run("safety checks off, reliable network", false, 0),
  run("safety checks on, 10% loss + reorder", true, 0.1),
];
console.log(
  `5 nodes, ${simSeconds} simulated s, ${putsPerMs} put(s) per simulated ms (64-byte values)\n`,
);
console.log("| run | real s | sim s / real s | messages / real s | proposals |");
console.log("|---|---:|---:|---:|---:|");
for (const r of rows) {
  const realS = r.realMs / 1000;
  console.log(
    `| ${r.label} | ${realS.toFixed(2)} | ${(simSeconds / realS).toFixed(1)} | ${
      Math.round(r.messages / realS).toLocaleString("en-US")
    } | ${r.committed.toLocaleString("en-US")} |`,
  );
}
