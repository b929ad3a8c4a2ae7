// Message timelines: what they record, how they draw lost messages, their bound, determinism.
import assert from "node:assert/strict";
import { Cluster } from "../src/sim/cluster.ts";
import { messageLabel, recordTimeline } from "../src/observe/timeline.ts";
import { cdfChart, summarize } from "../src/observe/svg_chart.ts";
import { JUPYTER_DISPLAY } from "../src/observe/table.ts";

function electionTimeline(seed: number) {
  const c = new Cluster({ nodes: 3, seed });
  return recordTimeline(c, () => c.waitForLeader(), { title: "election" });
}

Deno.test("timeline: an election shows votes, the new leader and its no-op", () => {
  const t = electionTimeline(1);
  const types = Object.keys(t.countsByType());
  for (const type of ["PreVote", "PreVoteReply", "RequestVote", "RequestVoteReply"]) {
    assert.ok(types.includes(type), `${type} in ${types}`);
  }
  assert.ok(t.marks.some((m) => m.kind === "role" && m.role === "Leader"));
  assert.match(t.toString(), /n\d → n\d {2}RequestVote t1 last=0:0/);
  const svg = t.toSvg();
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>$/);
  assert.match(svg, /Leader t1/);
  assert.deepEqual(Object.keys(t[JUPYTER_DISPLAY]()), ["image/svg+xml", "text/plain"]);
});

Deno.test("timeline: the same seed draws the same diagram byte for byte", () => {
  assert.equal(electionTimeline(4).toSvg(), electionTimeline(4).toSvg());
  assert.equal(electionTimeline(4).toString(), electionTimeline(4).toString());
  assert.notEqual(electionTimeline(4).toSvg(), electionTimeline(5).toSvg());
});

Deno.test("timeline: messages to a cut link end in an ×, faults are marked", () => {
  const c = new Cluster({ nodes: 3, seed: 2 });
  const leader = c.waitForLeader();
  c.advance(100);
  const follower = c.ids.find((id) => id !== leader)!;
  const t = recordTimeline(c, () => {
    c.isolate(follower);
    c.advance(120);
  });
  const lost = t.arrows.filter((a) => a.to === follower && a.fate === "dropped (link cut)");
  assert.ok(lost.length >= 2, `heartbeats to ${follower} are dropped: ${lost.length}`);
  assert.ok(t.marks.some((m) => m.kind === "fault" && m.label === `isolate ${follower}`));
  assert.match(t.toSvg(), /stroke="#c62828" stroke-width="2"/); // the ×
  assert.match(t.toString(), /× n\d .*\[dropped \(link cut\)\]/);
  assert.ok(t.lost >= 2);
});

Deno.test("timeline: messages to a crashed node are lost, not delivered", () => {
  const c = new Cluster({ nodes: 3, seed: 3 });
  const leader = c.waitForLeader();
  c.advance(100);
  const follower = c.ids.find((id) => id !== leader)!;
  const t = recordTimeline(c, () => {
    c.crash(follower);
    c.advance(200);
  });
  const toIt = t.arrows.filter((a) => a.to === follower);
  assert.ok(toIt.length > 0);
  assert.ok(toIt.every((a) => a.fate === "lost (receiver down)"), JSON.stringify(toIt[0]));
});

Deno.test("timeline: repeated heartbeat rounds collapse into one line", () => {
  const c = new Cluster({ nodes: 3, seed: 1 });
  const leader = c.waitForLeader();
  recordTimeline(c, () => c.advance(200)); // the recorder hears each link's first message
  const t = recordTimeline(c, () => c.advance(1000));
  assert.ok(t.arrows.length >= 70, `${t.arrows.length} heartbeats and replies`);
  assert.ok(t.arrows.every((a) => a.routine));
  const text = t.toString();
  assert.match(
    text,
    new RegExp(
      `${leader} ⇄ n\\d,n\\d  (19|20|21) heartbeat rounds to \\d+, nothing new \\(\\d+ messages\\)`,
    ),
  );
  assert.ok(text.split("\n").length < 8, text);
  assert.match(t.toSvg(), /class="rounds"/);
  assert.equal(t.shown.length, 0);
});

Deno.test("timeline: over its bound it keeps the decisive messages, not the first ones", () => {
  const c = new Cluster({ nodes: 5, seed: 1 });
  c.waitForLeader();
  c.advance(200);
  const t = recordTimeline(c, () => {
    c.advance(1000);
    c.crash(c.ids.find((id) => id !== c.leader())!); // breaks the runs of heartbeats
    c.advance(300);
    c.complete(c.put("/late", "1"));
  }, { arrowsMax: 6 });
  const withEntries = t.arrows.filter((a) => /\[\d+:\d+\]/.test(a.label));
  assert.ok(withEntries.length >= 3);
  assert.ok(t.arrows.length > 6);
  // The appends that carry the late write are drawn, though dozens of heartbeats came first.
  for (const a of withEntries) assert.ok(t.shown.includes(a), a.label);
  assert.match(t.toSvg(), /messages left out: the picture keeps the decisive ones/);
  assert.match(t.toString({ linesMax: 6 }), /\[\d+:\d+\]/);
});

Deno.test("timeline: labels carry the key fields of each message type", () => {
  assert.equal(
    messageLabel({
      type: "AppendEntries",
      from: "n1",
      to: "n2",
      term: 2,
      prevLogIndex: 3,
      prevLogTerm: 1,
      entries: [{ index: 4, term: 2, kind: "noop", command: new Uint8Array() }],
      leaderCommit: 3,
      readRound: 0,
    }),
    "AppendEntries t2 prev=3:1 [4:2] commit=3",
  );
  assert.equal(
    messageLabel({
      type: "RequestVoteReply",
      from: "n1",
      to: "n2",
      term: 2,
      requestTerm: 2,
      granted: false,
    }),
    "RequestVoteReply t2 refused",
  );
});

Deno.test("CDF chart: summaries, SVG and text", () => {
  const s = summarize("a", [5, 1, 3, 2, 4]);
  assert.equal(s.medianMs, 3);
  assert.equal(s.meanMs, 3);
  assert.equal(s.maxMs, 5);
  const chart = cdfChart([{ label: "150–300 ms", valuesMs: [160, 170, 180] }], { title: "t" });
  assert.match(chart.toSvg(), /<path d="M/);
  assert.match(chart.toString(), /150–300 ms {2}3 {7}170/);
  assert.throws(() => summarize("empty", []), /has no samples/);
});
