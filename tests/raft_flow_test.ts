// Leader flow control that judges loss by answers, not timers (issue 15, item 3), and votes
// ignored within a live leader's lease (item 4).
import assert from "node:assert/strict";
import {
  type AppendEntriesReply,
  Cluster,
  type Message,
  RaftNode,
  type RaftNodeOptions,
  SeededRng,
  type VoteRequest,
} from "../mod.ts";

const VOTERS = ["n1", "n2", "n3"];
const enc = new TextEncoder();

function mk(id: string, extra: Partial<RaftNodeOptions> = {}): RaftNode {
  return new RaftNode({ id, voters: VOTERS, rng: new SeededRng(7), ...extra });
}

function out(node: RaftNode): Message[] {
  const ready = node.takeReady();
  const last = ready.entries[ready.entries.length - 1];
  if (last !== undefined) node.stableTo(last.index, last.term);
  return [...ready.messages];
}

function appendsTo(ms: Message[], to: string) {
  return ms.filter((m) => m.type === "AppendEntries" && m.to === to) as Extract<
    Message,
    { type: "AppendEntries" }
  >[];
}

/** Makes n1 leader of term 1 (PreVote off) and n2 a streaming follower at the no-op. */
function leaderWithStream(): RaftNode {
  const n = mk("n1", { config: { preVote: false } });
  n.tick(n.nextDeadlineMs());
  for (const m of out(n)) {
    if (m.type !== "RequestVote") continue;
    n.step({ ...reply(m), type: "RequestVoteReply", granted: true } as Message);
  }
  assert.equal(n.role, "Leader");
  out(n);
  n.step(ack({ matchIndex: 1 }));
  out(n);
  assert.equal(n.status().progress.get("n2")!.state, "Replicate");
  return n;
}

function reply(m: VoteRequest) {
  return { from: m.to, to: m.from, term: m.term, requestTerm: m.term };
}

function ack(fields: Partial<AppendEntriesReply>): AppendEntriesReply {
  return {
    type: "AppendEntriesReply",
    from: "n2",
    to: "n1",
    term: 1,
    requestTerm: 1,
    success: true,
    matchIndex: 0,
    rejectedIndex: 0,
    conflictTerm: 0,
    conflictIndex: 0,
    readRound: 0,
    ...fields,
  };
}

Deno.test("flow control: a slow round trip costs no re-sends; a lost append is re-sent", async (t) => {
  await t.step("appends unanswered for several heartbeats are not sent again", () => {
    const n = leaderWithStream();
    for (let i = 0; i < 4; i++) n.propose(enc.encode(`v${i}`));
    const first = appendsTo(out(n), "n2");
    assert.deepEqual(first.map((m) => m.entries.length), [4]);
    // 300 ms, six heartbeats, and no answer yet: a slow follower, not a lost message.
    const later: ReturnType<typeof appendsTo> = [];
    const t0 = n.nowMs;
    for (let ms = t0 + 10; ms <= t0 + 300; ms += 10) {
      n.tick(ms);
      later.push(...appendsTo(out(n), "n2"));
    }
    assert.ok(later.length >= 5, "heartbeats went out");
    assert.deepEqual(later.filter((m) => m.entries.length > 0), [], "nothing was sent again");
    assert.equal(n.status().progress.get("n2")!.state, "Replicate");
  });
  await t.step("the answer to a later heartbeat without the append's ack re-probes", () => {
    const n = leaderWithStream();
    for (let i = 0; i < 4; i++) n.propose(enc.encode(`v${i}`));
    out(n); // the append carrying 2..5 is lost
    let asked: Extract<Message, { type: "AppendEntries" }> | undefined;
    for (let ms = n.nowMs + 10; asked === undefined; ms += 10) {
      n.tick(ms);
      // The heartbeat that asks is the one of a confirmation round newer than the stream's.
      asked = appendsTo(out(n), "n2").find((m) => m.entries.length === 0 && m.readRound > 1);
      assert.ok(ms < 1000, "no heartbeat asked about the append");
    }
    n.step(ack({ matchIndex: asked.prevLogIndex, readRound: asked.readRound }));
    const resent = appendsTo(out(n), "n2").filter((m) => m.entries.length > 0);
    assert.deepEqual(resent.map((m) => m.prevLogIndex), [1], "probes from matchIndex + 1");
    assert.equal(n.status().progress.get("n2")!.state, "Probe");
  });
});

Deno.test("flow control: a rejection of a message sent before the stream restarted is stale", () => {
  const n = leaderWithStream();
  for (let i = 0; i < 6; i++) n.propose(enc.encode(`v${i}`));
  const sent = appendsTo(out(n), "n2");
  const round = sent[0].readRound; // the confirmation round the stream started in
  // Overtaken on a reordering network: a message of an earlier stream was rejected at index 4.
  n.step(ack({ success: false, rejectedIndex: 4, conflictIndex: 2, readRound: round - 1 }));
  const pr = n.status().progress.get("n2")!;
  assert.equal(pr.state, "Replicate", "a stale rejection does not drop the follower to Probe");
  assert.equal(pr.nextIndex, 8);
  assert.deepEqual(appendsTo(out(n), "n2"), [], "and sends nothing again");
  // A rejection from this stream is news: back to probing where the follower's log ends.
  n.step(ack({ success: false, rejectedIndex: 4, conflictIndex: 2, readRound: round }));
  assert.equal(n.status().progress.get("n2")!.state, "Probe");
  assert.deepEqual(appendsTo(out(n), "n2").map((m) => m.prevLogIndex), [1]);
});

Deno.test("flow control: over a 120 ms round trip the leader re-sends (almost) nothing", () => {
  const c = new Cluster({
    nodes: 3,
    seed: 1,
    eventsMax: 0,
    network: { latencyMinMs: 60, latencyMaxMs: 60 },
  });
  const leader = c.waitForLeader();
  c.runUntil(() => c.converged());
  let sent = 0;
  let resent = 0;
  const highest = new Map<string, number>();
  c.onEvent((e) => {
    if (e.kind !== "send" || e.message.type !== "AppendEntries") return;
    for (const entry of e.message.entries) {
      sent++;
      if (entry.index <= (highest.get(e.message.to) ?? 0)) resent++;
      highest.set(e.message.to, Math.max(highest.get(e.message.to) ?? 0, entry.index));
    }
  });
  for (let i = 0; i < 500; i++) {
    c.put(`/k${i % 10}`, "v", { via: leader });
    c.advance(1);
  }
  c.runUntil(() => c.converged());
  assert.equal(c.leader(), leader);
  assert.equal(sent, 1000, "each entry went once to each follower");
  assert.ok(resent <= sent / 100, `re-sent ${resent} of ${sent} entries`);
});

Deno.test("votes in a leader's lease: with CheckQuorum, a higher-term RequestVote is ignored", async (t) => {
  const vote = (term: number): VoteRequest => ({
    type: "RequestVote",
    from: "n3",
    to: "n1",
    term,
    lastLogIndex: 9,
    lastLogTerm: 1,
  });
  await t.step("a follower that heard from its leader 10 ms ago neither votes nor moves on", () => {
    const n = mk("n1", { config: { preVote: false, checkQuorum: true } });
    n.tick(10);
    n.step({
      type: "AppendEntries",
      from: "n2",
      to: "n1",
      term: 1,
      prevLogIndex: 0,
      prevLogTerm: 0,
      entries: [],
      leaderCommit: 0,
      readRound: 0,
    });
    out(n);
    n.tick(20);
    n.step(vote(5));
    assert.equal(n.term, 1, "the term is not raised");
    assert.equal(n.votedFor, undefined);
    assert.equal(n.leaderId, "n2", "the live leader is kept");
    assert.deepEqual(out(n).filter((m) => m.type === "RequestVoteReply"), []);
    // Once the lease has run out (the minimum election timeout), the vote counts as before.
    n.tick(10 + 150);
    n.step(vote(5));
    assert.equal(n.term, 5);
    assert.equal(n.votedFor, "n3");
  });
  await t.step("without CheckQuorum the vote is granted at once (no lease to rely on)", () => {
    const n = mk("n1", { config: { preVote: false, checkQuorum: false } });
    n.step({
      type: "AppendEntries",
      from: "n2",
      to: "n1",
      term: 1,
      prevLogIndex: 0,
      prevLogTerm: 0,
      entries: [],
      leaderCommit: 0,
      readRound: 0,
    });
    out(n);
    n.step(vote(5));
    assert.equal(n.term, 5);
    assert.equal(n.votedFor, "n3");
  });
  await t.step("in the simulator, a node that hears no leader cannot depose it", () => {
    const c = new Cluster({ nodes: 3, seed: 3, config: { preVote: false, checkQuorum: true } });
    const leader = c.waitForLeader();
    c.runUntil(() => c.converged());
    const term = c.node(leader).raft.term;
    const [cutOff, other] = c.ids.filter((id) => id !== leader);
    // One way: the leader's messages do not reach `cutOff`, whose vote requests reach everyone.
    c.cut(leader, cutOff);
    c.advance(2_000);
    assert.ok(c.node(cutOff).raft.term > term + 3, "the cut-off node campaigned again and again");
    assert.equal(c.node(leader).raft.role, "Leader", "the leader kept its place");
    assert.equal(c.node(leader).raft.term, term);
    assert.equal(c.node(other).raft.term, term, "the other follower's term was not raised");
    assert.equal(c.put("/after", "v", { via: leader }).status, "pending");
  });
});
