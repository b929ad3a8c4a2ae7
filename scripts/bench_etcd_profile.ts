/**
 * Summarizes a V8 `.cpuprofile` (from `deno run --cpu-prof`) as Markdown: the top frames by self
 * time and by total (inclusive) time, for bench/profiles/*.md.
 *
 *   RAFTMETA_BENCH_DENO_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" \
 *     deno task bench:etcd --quick --only raftmeta --no-write
 *   deno run -A scripts/bench_etcd_profile.ts /tmp/prof/<leader>.cpuprofile [--top 25]
 *
 * @module
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

/** Self and total sample shares of each frame (function + file + line), largest first. */
export function summarize(
  profile: { nodes: ProfileNode[] },
  top = 25,
): { self: [string, number][]; total: [string, number][]; samples: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const name = (n: ProfileNode) => {
    const f = n.callFrame;
    const file = f.url.replace(/^.*\/(src|bench|ext|node)\//, "$1/");
    return `${f.functionName || "(anonymous)"} ${file}${file ? `:${f.lineNumber + 1}` : ""}`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let samples = 0;
  const walk = (n: ProfileNode, onStack: Set<string>): number => {
    let sum = n.hitCount ?? 0;
    samples += n.hitCount ?? 0;
    const key = name(n);
    self.set(key, (self.get(key) ?? 0) + (n.hitCount ?? 0));
    const fresh = !onStack.has(key);
    if (fresh) onStack.add(key);
    for (const c of n.children ?? []) sum += walk(byId.get(c)!, onStack);
    if (fresh) {
      onStack.delete(key);
      total.set(key, (total.get(key) ?? 0) + sum);
    }
    return sum;
  };
  const childIds = new Set(profile.nodes.flatMap((n) => n.children ?? []));
  for (const n of profile.nodes) if (!childIds.has(n.id)) walk(n, new Set());
  const sorted = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) =>
      [k, v / Math.max(1, samples)] as [string, number]
    );
  return { self: sorted(self), total: sorted(total), samples };
}

if (import.meta.main) {
  const path = Deno.args[0];
  const topAt = Deno.args.indexOf("--top");
  const top = topAt >= 0 ? Number(Deno.args[topAt + 1]) : 25;
  const s = summarize(JSON.parse(Deno.readTextFileSync(path)), top);
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  console.log(`samples: ${s.samples}\n\n| self | frame |\n|---:|---|`);
  for (const [k, v] of s.self) console.log(`| ${pct(v)} | \`${k}\` |`);
  console.log(`\n| total | frame |\n|---:|---|`);
  for (const [k, v] of s.total) console.log(`| ${pct(v)} | \`${k}\` |`);
}
