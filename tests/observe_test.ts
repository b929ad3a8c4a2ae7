// Node tables: the columns the issue names, text and HTML renderings, Jupyter display.
import assert from "node:assert/strict";
import { Cluster, JUPYTER_DISPLAY, nodeTable } from "../mod.ts";

Deno.test("node table lists every node with the named columns, progress, logs and keys", () => {
  const c = new Cluster({ seed: 4 });
  const leader = c.waitForLeader();
  c.complete(c.put("/a", "1"));
  c.advance(100);
  const follower = c.ids.find((id) => id !== leader)!;
  c.crash(follower);
  const t = nodeTable(c, { title: "after a put" });
  const text = t.toString();
  assert.match(
    text.split("\n")[1],
    /^node\s+role\s+term\s+votedFor\s+leader\s+lastLogIndex\s+lastLogTerm\s+commitIndex\s+lastApplied\s+status$/,
  );
  assert.equal(t.rows.length, 3);
  const row = t.rows.find((r) => r.id === leader)!;
  assert.equal(row.role, "Leader");
  assert.equal(row.lastLogIndex, 2);
  assert.equal(row.commitIndex, 2);
  assert.equal(t.rows.find((r) => r.id === follower)!.status, "crashed");
  assert.match(
    text,
    new RegExp(`progress of leader ${leader}: .*nextIndex=3 matchIndex=2 \\(Replicate\\)`),
  );
  // The logs as a grid: a header of indexes, a row of terms per node, the commands once.
  assert.match(text, /^log\s+1\s+2\s+election timer$/m);
  assert.match(
    text,
    new RegExp(`^${leader}\\s+1\\s+1\\s+\\(leader: heartbeat every 50 ms\\)$`, "m"),
  );
  assert.match(text, new RegExp(`entries of ${leader}: 1 no-op · 2 PUT /a=1`));
  assert.match(text, new RegExp(`keys ${leader}: /a=1`));
  // A crashed node has no role and knows no leader: it is shown as down, not as it was.
  assert.match(text, new RegExp(`^${follower}\\s+-\\s+1\\s+\\S+\\s+-\\s+.*crashed$`, "m"));
  assert.match(text, new RegExp(`^${follower}\\s+1\\s+1\\s+\\(down\\)$`, "m"));
  assert.match(text, /^legend: /m);
});

Deno.test("log grid: index-aligned terms, uncommitted entries starred, conflicts marked", () => {
  const c = new Cluster({ seed: 4 });
  const old = c.waitForLeader();
  c.complete(c.put("/a", "1"));
  c.advance(100);
  c.isolate(old);
  const stranded = c.put("/stranded", "x"); // only on the old leader: uncommitted, then conflicting
  c.advance(20);
  let t = nodeTable(c);
  const at = stranded.index!;
  assert.deepEqual(t.grid!.cells.get(old)![at - t.grid!.fromIndex], {
    term: 1,
    compacted: false,
    committed: false,
    conflict: false,
  });
  assert.match(t.toString(), new RegExp(`^${old}\\s+1\\s+1\\s+\\*1\\s`, "m"));
  c.runUntil(() => c.leader() !== undefined && c.leader() !== old, { timeoutMs: 3000 });
  const leader = c.leader()!;
  c.complete(c.put("/b", "2"));
  t = nodeTable(c);
  const cell = t.grid!.cells.get(old)![at - t.grid!.fromIndex]!;
  assert.equal(cell.conflict, true, "the old leader's entry differs from the new leader's");
  assert.equal(t.grid!.reference, leader);
  assert.match(t.toString(), new RegExp(`^${old}\\s+1\\s+1\\s+!1`, "m"));
  assert.match(t.toString(), new RegExp(`differs: ${old} ${at}:1 PUT /stranded=x`));
  assert.match(t.toHtml(), /data-kind="conflict"/);
  // Repaired once the link heals: the table after says so against the table before.
  c.heal();
  c.runUntil(() => c.node(old).raft.log.term(at) !== 1, { timeoutMs: 3000 });
  assert.equal(nodeTable(c).repairedSince(t), true);
  assert.equal(nodeTable(c).repairedSince(nodeTable(c)), false);
});

Deno.test("election timers: time left until each non-leader's timeout, from the node", () => {
  const c = new Cluster({ seed: 4 });
  const leader = c.waitForLeader();
  c.advance(37);
  const t = nodeTable(c);
  for (const r of t.rows) {
    if (r.id === leader) {
      assert.equal(r.electionTimeoutLeftMs, undefined);
      continue;
    }
    const n = c.node(r.id).raft;
    assert.equal(r.electionTimeoutLeftMs, n.nextDeadlineMs() - c.nowMs);
    assert.ok(r.electionTimeoutLeftMs! > 0 && r.electionTimeoutLeftMs! <= 300);
    assert.match(
      t.toString(),
      new RegExp(`^${r.id} .*[█░]{10} ${r.electionTimeoutLeftMs} ms$`, "m"),
    );
  }
  assert.match(t.toHtml(), /class="election-timer"/);
});

Deno.test("node table text fits 100 columns, with seven nodes and long keys", () => {
  const c = new Cluster({ nodes: 7, seed: 2 });
  c.waitForLeader();
  for (let i = 0; i < 12; i++) c.complete(c.put(`/a/rather/long/key/name/${i}`, "x".repeat(40)));
  c.crash(c.ids[1]);
  c.advance(100);
  const text = nodeTable(c, { title: "a title that is long enough ".repeat(5) }).toString();
  for (const line of text.split("\n")) {
    assert.ok([...line].length <= 100, `${[...line].length} columns: ${line}`);
  }
});

Deno.test("status shows paused and cut-off nodes", () => {
  const c = new Cluster({ seed: 4 });
  c.waitForLeader();
  c.pause("n1");
  c.isolate("n2");
  const rows = nodeTable(c).rows;
  assert.equal(rows[0].status, "paused");
  assert.equal(rows[1].status, "cut off");
  assert.equal(rows[2].status, "up");
});

Deno.test("Jupyter display gives HTML with the same cells, escaped", () => {
  const c = new Cluster({ seed: 4 });
  c.waitForLeader();
  c.complete(c.put("/x<y>", "a&b"));
  const t = nodeTable(c);
  const shown = t[JUPYTER_DISPLAY]();
  assert.match(shown["text/html"], /<table/);
  assert.match(shown["text/html"], /<th[^>]*>commitIndex<\/th>/);
  assert.match(shown["text/html"], /\/x&lt;y&gt;=a&amp;b/);
  assert.equal(shown["text/plain"], t.toString());
});
