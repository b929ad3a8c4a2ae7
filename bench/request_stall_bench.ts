/**
 * The event-loop stall under the expensive requests of issue 14 (items 4 and 6), on a fresh
 * 3-node cluster of real processes per attack: each node's worst stall
 * (`raftmeta_event_loop_stall_ms`: how late a 10 ms timer fired, so how long heartbeats waited),
 * every node's term before and after, and what the attacker got back.
 *
 *   deno run -A bench/request_stall_bench.ts [--keys 10000] [--value-bytes 1024] [-- serve flags]
 *
 * Attacks: a txn of 128 full ranges (read-only, 5 times; and once with a put in it), the largest
 * answer the default bound allows (4 full ranges), 20 bodies of 5·10^5 nested brackets, and a watch
 * burst (200 puts from 8 writers, 10 watchers on a follower, then 10 watches from revision 1).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { b64, post, ProcessCluster } from "../tests/net_helpers.ts";
import { ChunkedResponse } from "../tests/net_chunked.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: {
    keys: { type: "string", default: "10000" },
    "value-bytes": { type: "string", default: "1024" },
  },
  allowPositionals: true,
});
const keys = Number(values.keys);
const valueBytes = Number(values["value-bytes"]);

async function stallMs(url: string): Promise<number | string> {
  try {
    const text = await (await fetch(`${url}/metrics`)).text();
    const m = /^raftmeta_event_loop_stall_ms (\S+)$/m.exec(text);
    return m === null ? "n/a" : Number(m[1]);
  } catch {
    return "down";
  }
}

async function populate(url: string): Promise<void> {
  const value = b64("x".repeat(valueBytes));
  for (let start = 0; start < keys; start += 100) {
    const success = [];
    for (let i = start; i < Math.min(keys, start + 100); i++) {
      success.push({ request_put: { key: b64(`/data/${String(i).padStart(6, "0")}`), value } });
    }
    const r = await post(`${url}/v3/kv/txn`, JSON.stringify({ success }));
    if (r.status !== 200) throw new Error(`populate: ${r.status} ${JSON.stringify(r.json)}`);
  }
}

const fullRange = { request_range: { key: b64("\0"), range_end: b64("\0") } };

interface Attack {
  name: string;
  populate: boolean;
  run(cluster: ProcessCluster, leaderUrl: string, followerUrl: string): Promise<string>;
}

async function timed(what: () => Promise<{ status: number; json: unknown }>): Promise<string> {
  const t0 = performance.now();
  const r = await what();
  const ms = Math.round(performance.now() - t0);
  const error = (r.json as { error?: string })?.error;
  return `${r.status} in ${ms} ms${error ? ` (${error.slice(0, 60)}…)` : ""}`;
}

const attacks: Attack[] = [
  {
    name: "idle (baseline)",
    populate: false,
    run: async () => {
      await new Promise((r) => setTimeout(r, 3000));
      return "-";
    },
  },
  {
    name: "txn of 128 full ranges, 5 times (read-only)",
    populate: true,
    run: async (_c, leader) => {
      const out = [];
      for (let i = 0; i < 5; i++) {
        out.push(
          await timed(() =>
            post(`${leader}/v3/kv/txn`, JSON.stringify({ success: Array(128).fill(fullRange) }))
          ),
        );
      }
      return out.join("; ");
    },
  },
  {
    name: "txn of a put and 127 full ranges (write)",
    populate: true,
    run: async (_c, leader) =>
      await timed(() =>
        post(
          `${leader}/v3/kv/txn`,
          JSON.stringify({
            success: [{ request_put: { key: b64("/w"), value: b64("1") } }].concat(
              Array(127).fill(fullRange),
            ),
          }),
        )
      ),
  },
  {
    name: "txn of 4 full ranges (the largest answer allowed), 3 times",
    populate: true,
    run: async (_c, leader) => {
      const out = [];
      for (let i = 0; i < 3; i++) {
        out.push(
          await timed(() =>
            post(`${leader}/v3/kv/txn`, JSON.stringify({ success: Array(4).fill(fullRange) }))
          ),
        );
      }
      return out.join("; ");
    },
  },
  {
    name: "20 bodies of 5·10^5 nested brackets (1 MB)",
    populate: false,
    run: async (_c, leader) => {
      const deep = "[".repeat(500_000) + "]".repeat(500_000);
      const out = new Map<string, number>();
      for (let i = 0; i < 20; i++) {
        const r = await timed(() => post(`${leader}/v3/kv/put`, deep));
        const k = r.replace(/ in \d+ ms/, "");
        out.set(k, (out.get(k) ?? 0) + 1);
      }
      return [...out].map(([k, n]) => `${n}× ${k}`).join("; ");
    },
  },
  {
    name: "watch burst: 10 watchers, 200 puts from 8 writers, 10 watches from revision 1",
    populate: false,
    run: async (_c, leader, follower) => {
      const watch = (start: number) =>
        ChunkedResponse.post(
          follower,
          "/v3/watch",
          JSON.stringify({
            create_request: {
              key: b64("/burst/"),
              range_end: b64("/burst0"),
              start_revision: start,
            },
          }),
        );
      const live = await Promise.all(Array.from({ length: 10 }, () => watch(0)));
      await Promise.all(Array.from({ length: 8 }, async (_, w) => {
        for (let j = 0; j < 25; j++) {
          await post(
            `${leader}/v3/kv/put`,
            JSON.stringify({ key: b64(`/burst/${w}/${j}`), value: b64("v") }),
          );
        }
      }));
      const old = await Promise.all(Array.from({ length: 10 }, () => watch(1)));
      const counts = await Promise.all([...live, ...old].map(async (res) => {
        let events = 0;
        let chunks = 0;
        let bad = 0;
        while (events < 200) {
          const chunk = await Promise.race([
            res.chunk(),
            new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
          ]);
          if (chunk === null) break;
          chunks++;
          try {
            events += JSON.parse(chunk).result.events?.length ?? 0;
          } catch {
            bad++;
          }
        }
        res.close();
        return { events, chunks, bad };
      }));
      const all = counts.every((c) => c.events === 200 && c.bad === 0);
      const bad = counts.reduce((n, c) => n + c.bad, 0);
      return `${
        all ? "all 20 watchers got 200 events" : "events lost"
      }, ${bad} chunks of more than one message`;
    },
  },
];

console.log(
  `keys ${keys} × ${valueBytes} B values; serve flags: ${positionals.join(" ") || "(defaults)"}`,
);
console.log("| attack | answer | worst stall per node, ms | terms before → after |");
console.log("|---|---|---|---|");
for (const attack of attacks) {
  const cluster = ProcessCluster.start(3, positionals);
  try {
    const leader = await cluster.waitForLeader();
    const follower = cluster.nodes.find((n) => n !== leader)!;
    if (attack.populate) await populate(leader.url);
    const before = await Promise.all(cluster.nodes.map(async (n) => (await n.local())?.term));
    const stallsBefore = await Promise.all(cluster.nodes.map((n) => stallMs(n.url)));
    const answer = await attack.run(cluster, leader.url, follower.url);
    await new Promise((r) => setTimeout(r, 500));
    const stalls = await Promise.all(cluster.nodes.map((n) => stallMs(n.url)));
    const after = await Promise.all(cluster.nodes.map(async (n) => (await n.local())?.term));
    console.log(
      `| ${attack.name} | ${answer} | ${stalls.join(" / ")} (before: ${
        stallsBefore.join(" / ")
      }) | ${before.join(",")} → ${after.join(",")} |`,
    );
  } finally {
    await cluster.stop();
  }
}
