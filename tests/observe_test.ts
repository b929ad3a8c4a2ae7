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
  assert.match(text, new RegExp(`log ${leader}: 1:\\d+ no-op · 2:\\d+ PUT /a=1`));
  assert.match(text, new RegExp(`keys ${leader}: /a=1`));
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
