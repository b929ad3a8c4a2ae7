/**
 * Load tool for a running cluster (not a timed test): N clients put keys for D seconds through
 * the TypeScript client (sessions, leader discovery), then report throughput and latency.
 *
 *   deno task cluster &
 *   deno run -A bench/net_bench.ts --endpoints http://127.0.0.1:2379,http://127.0.0.1:2380 \
 *     --clients 32 --seconds 5 --value-bytes 100
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connect } from "../src/net/client.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    endpoints: { type: "string", default: "http://127.0.0.1:2379" },
    clients: { type: "string", default: "16" },
    seconds: { type: "string", default: "5" },
    "value-bytes": { type: "string", default: "100" },
    reads: { type: "boolean", default: false },
  },
});
const clients = Number(values.clients);
const seconds = Number(values.seconds);
const value = "x".repeat(Number(values["value-bytes"]));
const latenciesMs: number[] = [];
let errors = 0;
const endAt = performance.now() + seconds * 1000;
await Promise.all(Array.from({ length: clients }, async (_, c) => {
  const client = connect(values.endpoints!);
  for (let i = 0; performance.now() < endAt; i++) {
    const t = performance.now();
    try {
      if (values.reads) await client.get(`/bench/c${c}/${i % 100}`);
      else await client.put(`/bench/c${c}/${i % 100}`, value);
      latenciesMs.push(performance.now() - t);
    } catch {
      errors++;
    }
  }
}));
latenciesMs.sort((a, b) => a - b);
const q = (p: number) =>
  latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(p * latenciesMs.length))]
    ?.toFixed(2);
console.log(
  `${values.reads ? "linearizable gets" : "puts"}: ${clients} clients, ${seconds} s: ` +
    `${Math.round(latenciesMs.length / seconds)} ops/s, p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, ` +
    `errors ${errors}`,
);
