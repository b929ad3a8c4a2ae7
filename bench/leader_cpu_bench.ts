/**
 * Leader CPU per put, steadier than requests per second on a shared machine: starts a 3-node
 * cluster of the checkout at TREE (this one by default: `.`), drives 64 wrk connections of
 * 256-byte puts to random keys out of 100,000 at the leader for SECONDS, and reads each node's CPU
 * time from /proc before and after, and its garbage-collection pauses from V8's --trace-gc.
 *
 *   deno run -A bench/leader_cpu_bench.ts [TREE] [SECONDS] [server flags...]
 *   deno run -A bench/leader_cpu_bench.ts /path/to/older/checkout 15 --snapshot-entries 10000000
 *
 * Linux only (/proc); needs wrk.
 *
 * @module
 */
const [treeArg, secsArg, ...extra] = Deno.args;
const tree = new URL(
  treeArg ?? "..",
  treeArg === undefined ? import.meta.url : `file://${Deno.cwd()}/`,
).pathname.replace(/\/$/, "");
const secs = Number(secsArg ?? 10);
const freePort = () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
};
const ids = ["n1", "n2", "n3"];
const cp = ids.map(freePort);
const pp = ids.map(freePort);
const dir = Deno.makeTempDirSync({ prefix: "cpuput-" });
const procs: Deno.ChildProcess[] = [];
for (const [i, id] of ids.entries()) {
  const peers = ids.map((p, j) => `${p}=127.0.0.1:${pp[j]}`).filter((_, j) => j !== i).join(",");
  const pcu = ids.map((p, j) => `${p}=http://127.0.0.1:${cp[j]}`).filter((_, j) => j !== i).join(
    ",",
  );
  procs.push(new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--trace-gc",
      `${tree}/src/net/main.ts`,
      "--name",
      id,
      "--cluster-id",
      "b",
      "--data-dir",
      `${dir}/${id}`,
      "--listen-client",
      `127.0.0.1:${cp[i]}`,
      "--listen-peer",
      `127.0.0.1:${pp[i]}`,
      "--peers",
      peers,
      "--peer-client-urls",
      pcu,
      ...extra,
    ],
    env: { RAFTMETA_CLUSTER_SECRET: "s3cretsecretsecret" },
    stdout: "piped",
    stderr: "null",
  }).spawn());
}
const gcMs = [0, 0, 0];
const gcMax = [0, 0, 0];
const gcMaxLine = ["", "", ""];
/** Each node's snapshot-taken events during the run (bytes, loop and total time). */
const snapshots: string[][] = [[], [], []];
let counting = false;
procs.forEach(async (p, i) => {
  const dec = new TextDecoderStream();
  let buf = "";
  for await (const t of p.stdout.pipeThrough(dec)) {
    buf += t;
    let k;
    while ((k = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, k);
      buf = buf.slice(k + 1);
      const m = /MB, (?:pooled: [0-9.]+ MB, )?([0-9.]+) \/ [0-9.]+ ms/.exec(line);
      if (counting && line.includes('"snapshot-taken"')) {
        const e = JSON.parse(line.slice(line.indexOf("{")));
        snapshots[i].push(
          `${(e.bytes / 1e6).toFixed(1)} MB loop ${e.loopMs?.toFixed(0)} ms (slice max ${
            e.sliceMsMax?.toFixed(0)
          }) total ${e.ms} ms`,
        );
      }
      if (m && counting) {
        gcMs[i] += Number(m[1]);
        if (Number(m[1]) > gcMax[i]) gcMaxLine[i] = line.trim();
        gcMax[i] = Math.max(gcMax[i], Number(m[1]));
      }
    }
  }
});
let leader = -1;
for (let t = 0; t < 200 && leader < 0; t++) {
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 3; i++) {
    try {
      const b = await (await fetch(`http://127.0.0.1:${cp[i]}/v1/status?local=1`)).json();
      if (b?.node?.role === "Leader") leader = i;
    } catch { /* */ }
  }
}
const cpu = (p: Deno.ChildProcess) => {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${p.pid}/stat`);
  } catch {
    for (const q of procs) q.kill("SIGKILL");
    throw new Error(
      `a node process (pid ${p.pid}) exited during the run; flags: ${extra.join(" ")}`,
    );
  }
  const f = stat.split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
};
const lua = `${dir}/put.lua`;
Deno.writeTextFileSync(
  lua,
  `local v = "${btoa("v".repeat(256))}"
local hdr = {["Content-Type"]="application/json"}
math.randomseed(7)
request = function() local k = string.format('k%07d', math.random(0, 99999)) return wrk.format('POST', '/v3/kv/put', hdr, '{"key":"'..k..'","value":"'..v..'"}') end
done = function(summary, latency, requests) io.write(string.format("RES %d %d %d\\n", summary.requests, latency:percentile(50), latency:percentile(99))) end`,
);
const lua2 = Deno.readTextFileSync(lua).replace(`'{"key":"'..k..'"`, `'{"key":"'..b64(k)..'"`);
Deno.writeTextFileSync(
  lua,
  `local b='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
function b64(data) return ((data:gsub('.', function(x) local r,b='',x:byte() for i=8,1,-1 do r=r..(b%2^i-b%2^(i-1)>0 and '1' or '0') end return r; end)..'0000'):gsub('%d%d?%d?%d?%d?%d?', function(x) if (#x < 6) then return '' end local c=0 for i=1,6 do c=c+(x:sub(i,i)=='1' and 2^(6-i) or 0) end return b:sub(c+1,c+1) end)..({ '', '==', '=' })[#data%3+1]) end
` + lua2,
);
const before = procs.map(cpu);
counting = true;
const out = new TextDecoder().decode(
  (await new Deno.Command("wrk", {
    args: [
      "-t2",
      "-c64",
      `-d${secs}s`,
      "--timeout",
      "10s",
      "-s",
      lua,
      `http://127.0.0.1:${cp[leader]}`,
    ],
    stdout: "piped",
  }).output()).stdout,
);
counting = false;
const after = procs.map(cpu);
const m = /RES (\d+) (\d+) (\d+)/.exec(out)!;
const n = Number(m[1]);
const per = after.map((a, i) => ((a - before[i]) * 1000 / n).toFixed(0));
console.log(
  `${tree.split("/").pop()} puts ${n} (${(n / secs).toFixed(0)}/s) p50 ${
    (Number(m[2]) / 1000).toFixed(1)
  } p99 ${(Number(m[3]) / 1000).toFixed(1)} ms | cpu µs/put leader ${per[leader]} others ${
    per.filter((_, i) => i !== leader).join(",")
  } | gc ms leader ${gcMs[leader].toFixed(0)} max ${gcMax[leader].toFixed(0)} others ${
    gcMs.filter((_, i) => i !== leader).map((x) => x.toFixed(0)).join(",")
  }`,
);
console.log(`  leader's longest GC pause: ${gcMaxLine[leader]}`);
for (const [i, list] of snapshots.entries()) {
  for (const s of list) console.log(`  ${ids[i]}${i === leader ? " (leader)" : ""} snapshot ${s}`);
}
for (const p of procs) p.kill("SIGKILL");
await Promise.all(procs.map((p) => p.status));
Deno.removeSync(dir, { recursive: true });
