// Smoke test of bench/etcd_compare.ts's parsing and table code only; the benchmark itself (slow,
// needs etcd and wrk) never runs in the tests.
import assert from "node:assert/strict";
import {
  insertRun,
  parseWrkOutput,
  renderTable,
  RUNS_MARK,
  wrkScript,
} from "../bench/etcd_compare.ts";

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
