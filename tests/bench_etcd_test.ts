// Smoke test of bench/etcd_compare.ts's (and bench/h2load_grpc.ts's) parsing and table code only;
// the benchmark itself (slow, needs etcd, wrk and h2load) never runs in the tests.
import assert from "node:assert/strict";
import {
  insertRun,
  parseCheckPerf,
  parseWrkOutput,
  renderCheckPerfTable,
  renderGrpcTable,
  renderTable,
  RUNS_MARK,
  wrkScript,
} from "../bench/etcd_compare.ts";
import { GRPC_KEY, GRPC_VALUE_BYTES, grpcBody, parseH2load } from "../bench/h2load_grpc.ts";

Deno.test("bench:etcd parses wrk's result line, renders the table, inserts runs newest first", () => {
  const r = parseWrkOutput(
    "Running 3s test\nBENCH_RESULT " +
      '{"requests":3000,"durationUs":3000000,"p50Us":1500,"p99Us":12000,"errors":0}\n',
  );
  assert.equal(r.requestsPerSecond, 1000);
  assert.equal(r.latencyMsP50, 1.5);
  assert.equal(r.latencyMsP99, 12);
  assert.throws(() => parseWrkOutput("unable to connect"), /no result line/);
  const e = { ...r, requestsPerSecond: 500, latencyMsP50: 3 };
  const table = renderTable({ "sequential puts": r }, { "sequential puts": e });
  assert.match(
    table,
    /\| sequential puts \(1 conn\) \| 1,000 \| 1\.50 \| 12\.0 \| 500 \| 3\.00 \| 12\.0 \| 2\.00× \| 0\.50× \| 1\.00× \|/,
  );
  assert.match(table, /\| concurrent puts \(64 conn\) \| – /);
  const once = insertRun("", "## run 1");
  assert.ok(once.includes(RUNS_MARK));
  const twice = insertRun(once, "## run 2");
  assert.ok(twice.indexOf("## run 2") < twice.indexOf("## run 1"));
  assert.match(wrkScript("put", 10), /\/v3\/kv\/put/);
});

Deno.test("bench:etcd's gRPC rows: request bodies, h2load's output, the table", () => {
  // PutRequest {key: "grpc-bench", value: 256 × "v"} behind gRPC's 5-byte prefix.
  const put = grpcBody("put");
  const len = new DataView(put.buffer).getUint32(1);
  assert.equal(put[0], 0); // not compressed
  assert.equal(len, put.length - 5);
  assert.deepEqual([...put.subarray(5, 7)], [0x0a, GRPC_KEY.length]);
  assert.equal(new TextDecoder().decode(put.subarray(7, 7 + GRPC_KEY.length)), GRPC_KEY);
  const v = 7 + GRPC_KEY.length;
  assert.deepEqual([...put.subarray(v, v + 3)], [0x12, 0x80, 0x02]); // field 2, length 256
  assert.equal(put.length, v + 3 + GRPC_VALUE_BYTES);
  assert.deepEqual([...grpcBody("range").subarray(5, 7)], [0x0a, GRPC_KEY.length]);

  const summary = [
    "finished in 2.00s, 1500.00 req/s, 100KB/s",
    "requests: 3000 total, 3000 started, 3000 done, 2998 succeeded, 2 failed, 2 errored, 0 timeout",
    "status codes: 2998 2xx, 0 3xx, 0 4xx, 0 5xx",
    "traffic: 300.00KB (307200) total, 30.00KB (30720) headers (space savings 90.00%), 120.00KB (122880) data",
  ].join("\n");
  // Durations 1..100 ms for status 200, one failed stream (-1) that must not count.
  const log = Array.from({ length: 100 }, (_, i) => `1700000000000000\t200\t${(i + 1) * 1000}`)
    .concat(["1700000000000000\t-1\t5"]).join("\n");
  const r = parseH2load(summary, log, 2);
  assert.equal(r.succeeded, 2998);
  assert.equal(r.failed, 2);
  assert.equal(r.requestsPerSecond, 1499);
  assert.equal(r.latencyMsP50, 51);
  assert.equal(r.latencyMsP99, 100);
  assert.equal(r.dataBytes, 122880);
  assert.throws(() => parseH2load("connect failed", "", 1), /no summary/);

  const table = renderGrpcTable({ "gRPC concurrent puts": r }, {
    "gRPC concurrent puts": { ...r, requestsPerSecond: 1000, latencyMsP50: 102 },
  });
  assert.match(
    table,
    /\| gRPC concurrent puts \(64 streams\) \(failed: raftmeta 2, etcd 2\) \| 1,499 \| 51\.0 \|/,
  );
  assert.match(table, /\| 1\.50× \| 0\.50× \| 1\.00× \|/);
  assert.equal(renderGrpcTable({}, {}), "");
});

Deno.test("bench:etcd --check-perf: etcdctl check perf's lines parsed, the table rendered", () => {
  const pass = parseCheckPerf(
    " 60 / 60 Booooooooo! 100.00% 1m0s\nPASS: Throughput is 150 writes/s\n" +
      "PASS: Slowest request took 0.156894s\nPASS: Stddev is 0.010663s\nPASS\n",
  );
  assert.deepEqual(pass, {
    writesPerSecond: 150,
    slowestSeconds: 0.156894,
    stddevSeconds: 0.010663,
    verdict: "PASS",
    errors: [],
  });
  const fail = parseCheckPerf(
    // etcdctl 3.4's wording when a check fails.
    "FAIL: Throughput too low: 6012 writes/s\nSlowest request took too long: 0.4s\n" +
      "FAIL: Stddev too high: 0.2s\n" +
      '{"level":"warn","msg":"retrying","error":"rpc error: code = Unavailable"}\nFAIL\n',
  );
  assert.equal(fail.verdict, "FAIL");
  assert.equal(fail.writesPerSecond, 6012);
  assert.equal(fail.errors.length, 1);
  assert.throws(() => parseCheckPerf("Error: context deadline exceeded"), /printed no/);
  // A verdict without the figures (it reports only what it measured): NaN, shown as "–".
  const bare = parseCheckPerf("FAIL: too many errors\nFAIL\n");
  assert.ok(Number.isNaN(bare.writesPerSecond) && bare.verdict === "FAIL");
  assert.match(renderCheckPerfTable({ l: bare }, {}), /\| --load=l \| – \| – \| – \| FAIL \|/);
  const table = renderCheckPerfTable({ s: pass }, { s: pass, m: fail });
  assert.match(table, /\| --load=s \| 150 \| 0\.157 \| 0\.011 \| PASS \| 150 \|/);
  assert.match(
    table,
    /\| --load=m \| – \| – \| – \| – \| 6012 \| 0\.400 \| 0\.200 \| FAIL \(1 errors\) \|/,
  );
  assert.equal(renderCheckPerfTable({}, {}), "");
});
