// Automatic compaction (issue 17): etcd's --auto-compaction-mode/--auto-compaction-retention,
// the decision on an injected clock, and a real node compacting through the log.

import assert from "node:assert/strict";
import { AutoCompactor, parseAutoCompaction } from "../src/net/auto_compaction.ts";
import { post, ProcessCluster, until } from "./net_helpers.ts";

Deno.test("auto-compaction flags parse as etcd's, and bad ones are named", () => {
  assert.equal(parseAutoCompaction("periodic", "0"), undefined);
  assert.equal(parseAutoCompaction("revision", "0"), undefined);
  assert.deepEqual(parseAutoCompaction("periodic", "1"), {
    mode: "periodic",
    retention: 3_600_000,
  });
  assert.deepEqual(parseAutoCompaction("periodic", "1h30m"), {
    mode: "periodic",
    retention: 5_400_000,
  });
  assert.deepEqual(parseAutoCompaction("periodic", "10s"), { mode: "periodic", retention: 10_000 });
  assert.deepEqual(parseAutoCompaction("revision", "1000"), { mode: "revision", retention: 1000 });
  assert.throws(() => parseAutoCompaction("daily", "1"), /--auto-compaction-mode must be/);
  assert.throws(() => parseAutoCompaction("revision", "1h"), /a number of revisions: "1h"/);
  assert.throws(() => parseAutoCompaction("periodic", "1d"), /a duration .*: "1d"/);
  assert.throws(() => parseAutoCompaction("periodic", "-5"), /--auto-compaction-retention/);
});

Deno.test("revision mode: every check, current revision minus the retention", () => {
  const c = new AutoCompactor({ mode: "revision", retention: 100 });
  assert.equal(c.intervalMs, 300_000, "etcd's 5 minutes");
  assert.equal(c.poll(0, 50, 0, true), undefined, "not 100 revisions yet");
  assert.equal(c.poll(299_999, 500, 0, true), undefined, "before the next check");
  assert.equal(c.poll(300_000, 500, 0, true), 400);
  assert.equal(c.poll(600_000, 900, 400, false), undefined, "a follower never proposes");
  c.proposing = true;
  assert.equal(c.poll(900_000, 1000, 400, true), undefined, "one proposal at a time");
  c.proposing = false;
  assert.equal(c.poll(1_200_000, 1000, 400, true), 900);
});

Deno.test("periodic mode: compacts each sample once it is a retention old", () => {
  const c = new AutoCompactor({ mode: "periodic", retention: 10_000 });
  assert.equal(c.intervalMs, 1_000, "a tenth of the retention");
  let revision = 1;
  const seen: [number, number][] = [];
  let compacted = 0;
  for (let t = 0; t <= 30_000; t += 100) {
    revision += 3;
    const at = c.poll(t, revision, compacted, true);
    if (at !== undefined) {
      seen.push([t, at]);
      compacted = at;
    }
  }
  assert.equal(seen[0][0], 10_000, "the first after one retention");
  for (const [t, at] of seen) {
    // The revision compacted is the one sampled a retention (and at most one interval) earlier.
    assert.equal(at, 1 + 3 * ((t - 10_000) / 100 + 1), `at ${t}`);
  }
  assert.equal(seen.length, 21, "once per interval from then on");
  const hourly = new AutoCompactor({ mode: "periodic", retention: 72 * 3_600_000 });
  assert.equal(hourly.intervalMs, 3_600_000, "at most hourly");
});

Deno.test("a node with periodic auto-compaction compacts its history through the log", async () => {
  const cluster = ProcessCluster.start(1, [
    "--auto-compaction-mode",
    "periodic",
    "--auto-compaction-retention",
    "2s",
  ]);
  try {
    const { url } = await cluster.waitForLeader();
    const put = (v: string) =>
      post(`${url}/v3/kv/put`, JSON.stringify({ key: btoa("/k"), value: btoa(v) }));
    for (let i = 0; i < 5; i++) assert.equal((await put(`v${i}`)).status, 200);
    const old = await post(`${url}/v3/kv/range`, JSON.stringify({ key: btoa("/k"), revision: 2 }));
    assert.equal(old.status, 200, "history kept at first");
    await until("revision 2 compacted automatically", async () => {
      await put("more");
      const r = await post(
        `${url}/v3/kv/range`,
        JSON.stringify({ key: btoa("/k"), revision: 2 }),
      );
      return r.status === 400 && r.json.code === 11 &&
        r.json.error === "etcdserver: mvcc: required revision has been compacted";
    });
  } finally {
    await cluster.stop();
  }
});
