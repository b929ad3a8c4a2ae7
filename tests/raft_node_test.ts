// Each rule of the consensus core on its own, driving one RaftNode by hand with messages.
import assert from "node:assert/strict";
import {
  type AppendEntries,
  type AppendEntriesReply,
  LogApplier,
  MemoryStorage,
  type Message,
  NotLeaderError,
  RaftLog,
  type RaftLogEntry,
  RaftNode,
  type RaftNodeOptions,
  SeededRng,
} from "../mod.ts";
import { drainReady } from "../src/raft/host.ts";

const VOTERS = ["n1", "n2", "n3"];
const enc = new TextEncoder();

function mk(id = "n1", extra: Partial<RaftNodeOptions> = {}): RaftNode {
  return new RaftNode({ id, voters: VOTERS, rng: new SeededRng(7), ...extra });
}

/** Takes the node's ready batch as a host does, with its entries written durably; its messages. */
function out(node: RaftNode): Message[] {
  const ready = node.takeReady();
  const last = ready.entries[ready.entries.length - 1];
  if (last !== undefined) node.stableTo(last.index, last.term);
  return [...ready.messages];
}

type Of<T extends Message["type"]> = Extract<Message, { type: T }> extends never
  ? Message & { type: T }
  : Extract<Message, { type: T }>;

function of<T extends Message["type"]>(ms: Message[], type: T): Of<T>[] {
  return ms.filter((m) => m.type === type) as Of<T>[];
}

/** Makes `node` leader of term 1 (or its next term) by answering its PreVote and RequestVote. */
function elect(node: RaftNode): Message[] {
  node.tick(node.nextDeadlineMs());
  let ms = out(node);
  for (const m of of(ms, "PreVote")) {
    node.step({
      type: "PreVoteReply",
      from: m.to,
      to: node.id,
      term: m.term,
      requestTerm: m.term,
      granted: true,
    });
  }
  ms = out(node);
  for (const m of of(ms, "RequestVote")) {
    node.step({
      type: "RequestVoteReply",
      from: m.to,
      to: node.id,
      term: m.term,
      requestTerm: m.term,
      granted: true,
    });
  }
  assert.equal(node.role, "Leader");
  return out(node);
}

function entry(index: number, term: number, text = `c${index}`): RaftLogEntry {
  return { index, term, kind: "command", command: enc.encode(text) };
}

function ae(fields: Partial<AppendEntries>): AppendEntries {
  return {
    type: "AppendEntries",
    from: "n2",
    to: "n1",
    term: 1,
    prevLogIndex: 0,
    prevLogTerm: 0,
    entries: [],
    leaderCommit: 0,
    readRound: 0,
    ...fields,
  };
}

function aeReply(fields: Partial<AppendEntriesReply>): AppendEntriesReply {
  return {
    type: "AppendEntriesReply",
    from: "n2",
    to: "n1",
    term: 1,
    requestTerm: fields.term ?? 1,
    success: true,
    matchIndex: 0,
    rejectedIndex: 0,
    conflictTerm: 0,
    conflictIndex: 0,
    readRound: 0,
    ...fields,
  };
}

Deno.test("RaftLog is 1-based with a sentinel of term 0 at index 0", () => {
  const log = new RaftLog();
  assert.equal(log.lastIndex, 0);
  assert.equal(log.lastTerm, 0);
  assert.equal(log.term(0), 0);
  assert.equal(log.term(1), undefined);
  log.append([entry(1, 1), entry(2, 1), entry(3, 2)]);
  assert.equal(log.lastIndex, 3);
  assert.equal(log.term(3), 2);
  assert.equal(log.entry(1).index, 1);
  assert.throws(() => log.append([entry(5, 2)]), /does not follow last index 3/);
  assert.throws(() => log.append([entry(4, 1)]), /below last term 2/);
  log.truncateFrom(2);
  assert.equal(log.lastIndex, 1);
});

Deno.test("election timeouts are randomized in [150, 300) ms and fixed by the seed", () => {
  const deadlines = (seed: number) =>
    Array.from(
      { length: 50 },
      (_, i) =>
        new RaftNode({ id: "n1", voters: VOTERS, rng: new SeededRng(seed * 1000 + i) })
          .nextDeadlineMs(),
    );
  const a = deadlines(1);
  assert.deepEqual(a, deadlines(1));
  assert.notDeepEqual(a, deadlines(2));
  for (const d of a) assert.ok(d >= 150 && d < 300, `deadline ${d}`);
  assert.ok(new Set(a).size > 20, "timeouts should spread over the range");
});

Deno.test("on timeout a node runs PreVote without raising its term, then an election", async (t) => {
  await t.step("PreVote asks about term + 1 and keeps the term", () => {
    const n = mk();
    n.tick(n.nextDeadlineMs());
    assert.equal(n.role, "PreCandidate");
    assert.equal(n.term, 0);
    const pv = of(out(n), "PreVote");
    assert.deepEqual(pv.map((m) => [m.to, m.term]), [["n2", 1], ["n3", 1]]);
  });
  await t.step("a majority of pre-votes starts a real election: term + 1, vote for self", () => {
    const n = mk();
    n.tick(n.nextDeadlineMs());
    out(n);
    n.step({ type: "PreVoteReply", from: "n2", to: "n1", term: 1, requestTerm: 1, granted: true });
    assert.equal(n.role, "Candidate");
    assert.equal(n.term, 1);
    assert.equal(n.votedFor, "n1");
    const rd = n.takeReady();
    assert.deepEqual(rd.hardState, { term: 1, votedFor: "n1", commitIndex: 0 });
    assert.equal(of([...rd.messages], "RequestVote").length, 2);
  });
  await t.step("with PreVote off, a timeout raises the term at once", () => {
    const n = mk("n1", { config: { preVote: false } });
    n.tick(n.nextDeadlineMs());
    assert.equal(n.role, "Candidate");
    assert.equal(n.term, 1);
  });
  await t.step("a majority of votes makes a leader that appends a no-op in its term", () => {
    const n = mk();
    const ms = elect(n);
    assert.equal(n.log.lastIndex, 1);
    assert.equal(n.log.entry(1).kind, "noop");
    assert.equal(n.log.entry(1).term, 1);
    const appends = of(ms, "AppendEntries");
    assert.equal(appends.length, 2);
    assert.deepEqual(appends[0].entries.map((e) => e.kind), ["noop"]);
  });
});

Deno.test("voting: up-to-date rule, one vote per term, also across a restart", async (t) => {
  const follower = () => {
    const n = mk("n1");
    n.step(ae({ entries: [entry(1, 1), entry(2, 2)], term: 2 }));
    n.tick(1000); // leader silent: no lease any more
    out(n);
    return n;
  };
  const rv = (from: string, term: number, lastLogIndex: number, lastLogTerm: number) => ({
    type: "RequestVote" as const,
    from,
    to: "n1",
    term,
    lastLogIndex,
    lastLogTerm,
  });
  await t.step("a candidate with an older last term is refused", () => {
    const n = follower();
    n.step(rv("n2", 5, 10, 1));
    assert.equal(of(out(n), "RequestVoteReply")[0].granted, false);
    assert.equal(n.term, 5, "the higher term is adopted even when the vote is refused");
  });
  await t.step("a candidate with the same last term but a shorter log is refused", () => {
    const n = follower();
    n.step(rv("n2", 5, 1, 2));
    assert.equal(of(out(n), "RequestVoteReply")[0].granted, false);
  });
  await t.step(
    "an up-to-date candidate gets the vote; a second candidate in that term does not",
    () => {
      const n = follower();
      n.step(rv("n2", 5, 2, 2));
      assert.equal(of(out(n), "RequestVoteReply")[0].granted, true);
      n.step(rv("n3", 5, 9, 3));
      assert.equal(of(out(n), "RequestVoteReply")[0].granted, false);
      n.step(rv("n2", 5, 2, 2));
      assert.equal(
        of(out(n), "RequestVoteReply")[0].granted,
        true,
        "a repeat request is re-granted",
      );
    },
  );
  await t.step("the vote is persisted before the reply leaves, and survives a restart", () => {
    const n = follower();
    const storage = new MemoryStorage();
    const sent: Message[] = [];
    n.step(rv("n2", 5, 2, 2));
    drainReady(n, {
      storage,
      applier: new LogApplier({ apply: () => undefined }),
      send: (m) => {
        // At the moment of sending, the vote is already durable.
        assert.equal(storage.hardState.votedFor, "n2");
        assert.equal(storage.hardState.term, 5);
        sent.push(m);
      },
    });
    assert.equal(sent.length, 1);
    const persisted = storage.load();
    const again = new RaftNode({
      id: "n1",
      voters: VOTERS,
      rng: new SeededRng(1),
      hardState: persisted.hardState,
      entries: persisted.entries,
    });
    again.step(rv("n3", 5, 9, 3));
    assert.equal(of(out(again), "RequestVoteReply")[0].granted, false);
  });
});

Deno.test("refusing an out-of-date candidate restarts the election timer only if configured", async (t) => {
  // A follower of term 2 with log [1:1, 2:2], its timer started by the leader's last append.
  const follower = (resetElectionTimerOnStepDown: boolean) => {
    const n = mk("n1", {
      config: { preVote: false, checkQuorum: false, resetElectionTimerOnStepDown },
    });
    n.step(ae({ entries: [entry(1, 1), entry(2, 2)], term: 2 }));
    out(n);
    const deadlineMs = n.nextDeadlineMs();
    n.tick(deadlineMs - 10);
    n.step({ type: "RequestVote", from: "n2", to: "n1", term: 5, lastLogIndex: 1, lastLogTerm: 1 });
    assert.equal(of(out(n), "RequestVoteReply")[0].granted, false);
    assert.equal(n.term, 5);
    return { n, deadlineMs };
  };
  await t.step("by default (etcd's choice) stepping down to a higher term restarts it", () => {
    const { n, deadlineMs } = follower(true);
    assert.ok(n.nextDeadlineMs() >= deadlineMs - 10 + 150, `${n.nextDeadlineMs()}`);
  });
  await t.step("Figure 2: only the leader's append or a granted vote restarts it", () => {
    const { n, deadlineMs } = follower(false);
    assert.equal(n.nextDeadlineMs(), deadlineMs, "the timer keeps running");
    n.tick(deadlineMs);
    assert.equal(n.role, "Candidate", "so the up-to-date node stands as soon as it was due to");
    assert.equal(n.term, 6);
  });
});

Deno.test("a candidate counts only votes of its current term", () => {
  const n = mk("n1", { config: { preVote: false } });
  n.tick(n.nextDeadlineMs()); // term 1
  out(n);
  n.tick(n.nextDeadlineMs()); // split vote: term 2
  out(n);
  assert.equal(n.term, 2);
  n.step({
    type: "RequestVoteReply",
    from: "n2",
    to: "n1",
    term: 1,
    requestTerm: 1,
    granted: true,
  });
  assert.equal(n.role, "Candidate", "a vote from term 1 must not count in term 2");
  n.step({
    type: "RequestVoteReply",
    from: "n2",
    to: "n1",
    term: 2,
    requestTerm: 2,
    granted: true,
  });
  assert.equal(n.role, "Leader");
});

Deno.test("any message with a higher term makes a leader a follower", () => {
  const n = mk();
  elect(n);
  n.step(aeReply({ term: 4, success: false }));
  assert.equal(n.role, "Follower");
  assert.equal(n.term, 4);
  assert.equal(n.votedFor, undefined);
});

Deno.test("PreVote: voters refuse while they hear from a live leader", () => {
  const n = mk("n1");
  n.tick(10);
  n.step(ae({ term: 1, from: "n2" }));
  out(n);
  const pv = {
    type: "PreVote" as const,
    from: "n3",
    to: "n1",
    term: 2,
    lastLogIndex: 9,
    lastLogTerm: 1,
  };
  n.step(pv);
  assert.equal(of(out(n), "PreVoteReply")[0].granted, false);
  assert.equal(n.term, 1, "a PreVote never raises the receiver's term");
  n.tick(10 + 150);
  n.step(pv);
  const r = of(out(n), "PreVoteReply")[0];
  assert.equal(r.granted, true);
  assert.equal(r.term, 2);
});

Deno.test("a pre-candidate forgets the old leader", () => {
  const n = mk("n1");
  n.step(ae({ term: 1, from: "n2" }));
  assert.equal(n.leaderId, "n2");
  n.tick(n.nextDeadlineMs());
  assert.equal(n.role, "PreCandidate");
  assert.equal(n.leaderId, undefined);
});

Deno.test("CheckQuorum: a leader that hears from no quorum steps down; switched off it stays", () => {
  for (const checkQuorum of [true, false]) {
    const n = mk("n1", { config: { checkQuorum } });
    elect(n);
    const t0 = n.nowMs;
    let leaderUntil = t0;
    for (let t = t0; t <= t0 + 1000; t += 10) {
      n.tick(t);
      out(n);
      if (n.role === "Leader") leaderUntil = t;
    }
    if (checkQuorum) {
      assert.notEqual(n.role, "Leader");
      assert.ok(leaderUntil - t0 < 2 * 300, `stepped down after ${leaderUntil - t0} ms`);
    } else {
      assert.equal(n.role, "Leader");
    }
    assert.equal(n.term, 1, "stepping down and PreVote leave the term alone");
  }
});

Deno.test("heartbeats go out every heartbeatIntervalMs to every follower", () => {
  const n = mk();
  elect(n);
  for (const id of ["n2", "n3"]) n.step(aeReply({ from: id, matchIndex: 1 }));
  out(n);
  const t0 = n.nowMs;
  let heartbeats = 0;
  for (let t = t0 + 1; t <= t0 + 500; t++) {
    n.tick(t);
    for (const id of ["n2", "n3"]) n.step(aeReply({ from: id, matchIndex: 1 }));
    heartbeats += of(out(n), "AppendEntries").length;
  }
  assert.equal(heartbeats, 2 * 10, "500 ms / 50 ms = 10 rounds to 2 followers");
});

Deno.test("follower: consistency check, conflict hints, truncation only on a real conflict", async (t) => {
  await t.step("a missing prevLogIndex is rejected with the follower's length as hint", () => {
    const n = mk();
    n.step(ae({ prevLogIndex: 5, prevLogTerm: 1, entries: [entry(6, 1)] }));
    const r = of(out(n), "AppendEntriesReply")[0];
    assert.equal(r.success, false);
    assert.equal(r.rejectedIndex, 5);
    assert.equal(r.conflictIndex, 1);
    assert.equal(r.conflictTerm, 0);
  });
  await t.step("a term mismatch is rejected with the first index of the conflicting term", () => {
    const n = mk();
    n.step(ae({ entries: [entry(1, 1), entry(2, 1), entry(3, 1)] }));
    n.step(ae({ term: 2, prevLogIndex: 3, prevLogTerm: 2, entries: [entry(4, 2)] }));
    const r = of(out(n), "AppendEntriesReply").at(-1)!;
    assert.equal(r.success, false);
    assert.equal(r.conflictTerm, 1);
    assert.equal(r.conflictIndex, 1);
  });
  await t.step("a stale or duplicate AppendEntries never truncates", () => {
    const n = mk();
    n.step(ae({ entries: [entry(1, 1), entry(2, 1), entry(3, 1)] }));
    n.step(ae({ entries: [entry(1, 1)] })); // older message arriving late
    assert.equal(n.log.lastIndex, 3);
    const r = of(out(n), "AppendEntriesReply").at(-1)!;
    assert.equal(r.matchIndex, 1, "acknowledges only what the message proved");
  });
  await t.step("a real conflict truncates the suffix and appends", () => {
    const n = mk();
    n.step(ae({ entries: [entry(1, 1), entry(2, 1), entry(3, 1)] }));
    n.step(ae({ term: 2, prevLogIndex: 1, prevLogTerm: 1, entries: [entry(2, 2)] }));
    assert.equal(n.log.lastIndex, 2);
    assert.equal(n.log.term(2), 2);
  });
  await t.step("commitIndex follows the leader but not past the entries it proved", () => {
    const n = mk();
    n.step(ae({ entries: [entry(1, 1), entry(2, 1), entry(3, 1)], leaderCommit: 1 }));
    assert.equal(n.commitIndex, 1);
    n.step(ae({ prevLogIndex: 1, prevLogTerm: 1, leaderCommit: 3 }));
    assert.equal(n.commitIndex, 1, "an empty append at index 1 proves only index 1");
    n.step(ae({ prevLogIndex: 3, prevLogTerm: 1, leaderCommit: 3 }));
    assert.equal(n.commitIndex, 3);
  });
  await t.step("an attempt to truncate a committed entry stops the node", () => {
    const n = mk();
    n.step(ae({ entries: [entry(1, 1), entry(2, 1)], leaderCommit: 2 }));
    assert.throws(
      () => n.step(ae({ term: 2, prevLogIndex: 1, prevLogTerm: 1, entries: [entry(2, 2)] })),
      /would truncate committed entry 2/,
    );
  });
});

Deno.test("leader: matchIndex, pipelining, bounds and fast back-off", async (t) => {
  await t.step("a successful probe switches to pipelined replication, bounded in flight", () => {
    const n = mk("n1", { config: { inflightMessagesMax: 3, entriesPerMessageMax: 2 } });
    elect(n);
    n.step(aeReply({ from: "n2", matchIndex: 1 }));
    out(n);
    for (let i = 0; i < 20; i++) n.propose(enc.encode(`v${i}`));
    const toN2 = of(out(n), "AppendEntries").filter((m) => m.to === "n2");
    assert.equal(toN2.length, 3, "at most inflightMessagesMax messages in flight");
    assert.ok(toN2.every((m) => m.entries.length === 2), "at most entriesPerMessageMax each");
    assert.deepEqual(
      toN2.map((m) => m.prevLogIndex),
      [1, 3, 5],
      "sent optimistically back to back",
    );
    n.step(aeReply({ from: "n2", matchIndex: 3 }));
    const more = of(out(n), "AppendEntries").filter((m) => m.to === "n2");
    assert.deepEqual(more.map((m) => m.prevLogIndex), [7], "one acknowledgement frees one slot");
  });
  await t.step("bytesPerMessageMax bounds a message but always moves one entry", () => {
    const n = mk("n1", { config: { bytesPerMessageMax: 10 } });
    elect(n);
    n.step(aeReply({ from: "n2", matchIndex: 1 }));
    out(n);
    n.propose(new Uint8Array(25));
    n.propose(new Uint8Array(5));
    const toN2 = of(out(n), "AppendEntries").filter((m) => m.to === "n2");
    assert.deepEqual(toN2.map((m) => m.entries.length), [1, 1]);
  });
  await t.step("stale replies never move matchIndex or nextIndex backwards", () => {
    const n = mk();
    elect(n);
    for (let i = 0; i < 5; i++) n.propose(enc.encode(`v${i}`));
    n.step(aeReply({ from: "n2", matchIndex: 6 }));
    n.step(aeReply({ from: "n2", matchIndex: 2 })); // late duplicate
    n.step(aeReply({ from: "n2", success: false, rejectedIndex: 3, conflictIndex: 1 })); // stale
    const pr = n.status().progress.get("n2")!;
    assert.equal(pr.matchIndex, 6);
    assert.equal(pr.nextIndex, 7);
    assert.equal(pr.state, "Replicate");
  });
  await t.step("a conflict hint skips a whole term in one round trip", () => {
    const n = new RaftNode({
      id: "n1",
      voters: VOTERS,
      rng: new SeededRng(3),
      hardState: { term: 5, votedFor: undefined, commitIndex: 0 },
      entries: [entry(1, 1), entry(2, 1), entry(3, 5)],
    });
    elect(n);
    // n2 holds 50 entries of term 3, which the leader never had; its log agrees up to index 2.
    n.step(aeReply({
      from: "n2",
      term: n.term,
      success: false,
      rejectedIndex: 3,
      conflictTerm: 3,
      conflictIndex: 3,
    }));
    const probe = of(out(n), "AppendEntries").find((m) => m.to === "n2")!;
    assert.equal(probe.prevLogIndex, 2, "next probe goes straight to the end of the common prefix");
  });
});

Deno.test("commit: by quorum, and only for an entry of the current term (Figure 8)", () => {
  // The leader of term 3 holds index 2 from term 2, replicated to a majority.
  const n = new RaftNode({
    id: "n1",
    voters: ["n1", "n2", "n3", "n4", "n5"],
    rng: new SeededRng(9),
    hardState: { term: 2, votedFor: undefined, commitIndex: 1 },
    entries: [entry(1, 1), entry(2, 2)],
  });
  n.tick(n.nextDeadlineMs());
  for (const m of of(out(n), "PreVote")) {
    n.step({
      type: "PreVoteReply",
      from: m.to,
      to: "n1",
      term: m.term,
      requestTerm: m.term,
      granted: true,
    });
  }
  for (const m of of(out(n), "RequestVote")) {
    n.step({
      type: "RequestVoteReply",
      from: m.to,
      to: "n1",
      term: m.term,
      requestTerm: m.term,
      granted: true,
    });
  }
  assert.equal(n.role, "Leader");
  assert.equal(n.term, 3);
  out(n);
  n.step(aeReply({ from: "n2", term: 3, matchIndex: 2 }));
  n.step(aeReply({ from: "n3", term: 3, matchIndex: 2 }));
  assert.equal(
    n.commitIndex,
    1,
    "index 2 (term 2) is on a majority but must not commit by counting",
  );
  n.step(aeReply({ from: "n2", term: 3, matchIndex: 3 }));
  assert.equal(n.commitIndex, 1, "the no-op of term 3 is on 2 of 5 nodes: no quorum");
  n.step(aeReply({ from: "n3", term: 3, matchIndex: 3 }));
  assert.equal(
    n.commitIndex,
    3,
    "a quorum holds the term-3 no-op: it and everything before commit",
  );
});

Deno.test("proposals on a follower fail with the leader's id as a hint", () => {
  const n = mk();
  n.step(ae({ term: 1, from: "n3" }));
  assert.throws(() => n.propose(enc.encode("PUT\na\n1")), (e: unknown) => {
    assert.ok(e instanceof NotLeaderError);
    assert.equal(e.leaderHint, "n3");
    assert.match(e.message, /Node "n1" is not the leader; the leader is "n3"/);
    return true;
  });
});

Deno.test("LogApplier applies committed entries in order, exactly once", () => {
  const applied: number[] = [];
  const applier = new LogApplier({ apply: (_c, index) => applied.push(index) });
  applier.apply([entry(1, 1), { index: 2, term: 1, kind: "noop", command: new Uint8Array() }]);
  applier.apply([entry(3, 1)]);
  assert.deepEqual(applied, [1, 3], "no-ops advance the index without reaching the state machine");
  assert.equal(applier.lastApplied, 3);
  assert.throws(() => applier.apply([entry(3, 1)]), /entry 3 applied out of order/);
  assert.throws(() => applier.apply([entry(5, 1)]), /entry 5 applied out of order/);
});

Deno.test("ReadIndex: a leader answers only after its term commits and a quorum confirms", () => {
  const n = mk();
  elect(n);
  n.readIndex("r1");
  let rd = n.takeReady();
  assert.equal(rd.readStates.length, 0, "the no-op of this term has not committed yet");
  n.step(aeReply({ from: "n2", matchIndex: 1 }));
  rd = n.takeReady();
  assert.equal(n.commitIndex, 1);
  assert.equal(rd.readStates.length, 0, "leadership not yet confirmed after the read arrived");
  const hb = of([...rd.messages], "AppendEntries").find((m) => m.to === "n2")!;
  assert.ok(hb.readRound > 0);
  n.step(aeReply({ from: "n2", matchIndex: 1, readRound: hb.readRound - 1 }));
  assert.equal(n.takeReady().readStates.length, 0, "an older round does not confirm");
  n.step(aeReply({ from: "n2", matchIndex: 1, readRound: hb.readRound }));
  assert.deepEqual(n.takeReady().readStates, [{ readId: "r1", readIndex: 1, ok: true }]);
});

Deno.test("configuration is validated with clear errors", () => {
  assert.throws(
    () => mk("n1", { config: { electionTimeoutMinMs: 300, electionTimeoutMaxMs: 150 } }),
    /electionTimeoutMaxMs \(150\) must be at least electionTimeoutMinMs \(300\)/,
  );
  assert.throws(
    () => mk("n1", { config: { heartbeatIntervalMs: 200 } }),
    /heartbeatIntervalMs \(200\) must be below electionTimeoutMinMs \(150\)/,
  );
  assert.throws(
    () => mk("n1", { config: { learnerPromoteLagEntriesMax: -1 } }),
    /learnerPromoteLagEntriesMax must be an integer/,
  );
  // A node outside the bootstrap voters is a joining node: it waits to learn its membership from
  // the log and never campaigns meanwhile.
  const outsider = new RaftNode({ id: "n9", voters: VOTERS, rng: new SeededRng(1) });
  outsider.tick(10_000);
  assert.equal(outsider.role, "Follower");
  assert.equal(outsider.takeReady().messages.length, 0);
});

Deno.test("a leader replicates while it writes, and counts itself only once durable (§10.2.1)", async (t) => {
  await t.step("the leader's batch may be sent first; other roles' batches may not", () => {
    const n = mk();
    n.tick(n.nextDeadlineMs());
    assert.equal(n.takeReady().persistFirst, true, "a pre-candidate's batch");
    n.step({ type: "PreVoteReply", from: "n2", to: "n1", term: 1, requestTerm: 1, granted: true });
    const rd = n.takeReady();
    assert.equal(rd.persistFirst, true, "a new term and vote must be durable before RequestVote");
    n.step({
      type: "RequestVoteReply",
      from: "n2",
      to: "n1",
      term: 1,
      requestTerm: 1,
      granted: true,
    });
    assert.equal(n.role, "Leader");
    const lead = n.takeReady();
    assert.equal(lead.persistFirst, false, "the leader's no-op goes out with its own write");
    assert.deepEqual(lead.entries.map((e) => e.index), [1]);
    assert.ok(of([...lead.messages], "AppendEntries").length > 0);
    const f = mk("n2");
    f.step(ae({ term: 1, from: "n1", to: "n2", entries: [entry(1, 1)] }));
    assert.equal(f.takeReady().persistFirst, true, "a follower's acknowledgement waits for disk");
  });
  await t.step("not durable on the leader: one follower is not a quorum of 3", () => {
    const n = mk();
    elect(n); // the no-op (index 1) is durable
    n.propose(enc.encode("PUT\na\n1"));
    const rd = n.takeReady(); // sent, but the host has not finished writing it
    assert.equal(rd.persistFirst, false);
    n.step(aeReply({ from: "n2", matchIndex: 2 }));
    assert.equal(n.commitIndex, 1, "index 2 is durable on n2 only");
    n.stableTo(2, n.term);
    assert.equal(n.commitIndex, 2, "leader + n2 are a quorum once the leader's write is durable");
  });
  await t.step("two followers are a quorum without the leader's own write", () => {
    const n = mk();
    elect(n);
    n.propose(enc.encode("PUT\na\n1"));
    n.takeReady();
    n.step(aeReply({ from: "n2", matchIndex: 2 }));
    n.step(aeReply({ from: "n3", matchIndex: 2 }));
    assert.equal(n.commitIndex, 2);
  });
  await t.step("a report for entries replaced since is ignored", () => {
    const f = mk("n2");
    f.step(ae({ term: 1, from: "n1", to: "n2", entries: [entry(1, 1), entry(2, 1)] }));
    const first = f.takeReady();
    assert.equal(first.entries.length, 2);
    f.stableTo(2, 1);
    assert.equal(f.stableIndex, 2);
    // A new leader replaces index 2; the old write's report arrives late.
    f.step(
      ae({
        term: 2,
        from: "n3",
        to: "n2",
        prevLogIndex: 1,
        prevLogTerm: 1,
        entries: [entry(2, 2)],
      }),
    );
    assert.equal(f.stableIndex, 1, "truncation drops what was durable past the conflict");
    f.stableTo(first.entries[1].index, first.entries[1].term);
    assert.equal(f.stableIndex, 1, "(2, term 1) is no longer in the log");
    f.stableTo(2, 2);
    assert.equal(f.stableIndex, 2);
  });
  await t.step("with the fault point on, the leader counts its unwritten entry", () => {
    const n = mk("n1", { faultPoints: new Set(["leader-counts-unstable-self"]) });
    elect(n);
    n.propose(enc.encode("PUT\na\n1"));
    n.takeReady();
    n.step(aeReply({ from: "n2", matchIndex: 2 }));
    assert.equal(n.commitIndex, 2, "the broken rule commits on one durable copy of three");
  });
});

/** Three real nodes wired by hand: `run` delivers, drops or holds each message as `route` says. */
function wired(config: RaftNodeOptions["config"] = { preVote: false, checkQuorum: false }) {
  const nodes = new Map(VOTERS.map((id) => [id, mk(id, { config })]));
  const run = (route: (m: Message) => "deliver" | "drop" | "hold" = () => "deliver") => {
    const held: Message[] = [];
    for (let round = 0; round < 100; round++) {
      const ms = [...nodes.values()].flatMap((n) => n.hasReady() ? out(n) : []);
      if (ms.length === 0) return held;
      for (const m of ms) {
        const r = route(m);
        if (r === "deliver") nodes.get(m.to)!.step(m);
        else if (r === "hold") held.push(m);
      }
    }
    throw new Error("messages kept flowing for 100 rounds");
  };
  const campaign = (id: string) => {
    const n = nodes.get(id)!;
    n.tick(n.nextDeadlineMs());
  };
  return { nodes, run, campaign };
}

Deno.test("ReadIndex: a heartbeat reply delayed across two leadership changes confirms no later read", () => {
  const { nodes, run, campaign } = wired();
  const [n1, n2, n3] = VOTERS.map((id) => nodes.get(id)!);
  const cut = (a: string, b: string) => (m: Message) =>
    (m.from === a && m.to === b) || (m.from === b && m.to === a);

  // Term 1: n1 leads; the heartbeat of its read round 1 to n3 is delayed in the network.
  campaign("n1");
  run();
  assert.equal(n1.role, "Leader");
  n1.readIndex("r0");
  const [delayedHeartbeat] = run((m) =>
    m.type === "AppendEntries" && m.to === "n3" && m.readRound > 0 ? "hold" : "deliver"
  );
  assert.equal(delayedHeartbeat.term, 1);
  // Term 2: n2 leads and replicates its no-op everywhere. Term 3: n1 leads again, with n3.
  campaign("n2");
  run();
  assert.equal(n2.role, "Leader");
  campaign("n1");
  run((m) => cut("n1", "n2")(m) ? "drop" : "deliver");
  assert.equal(n1.role, "Leader");
  assert.equal(n1.term, 3);
  assert.equal(n1.commitIndex, 3, "n1's term-3 no-op is committed with n3");
  // The term-1 heartbeat reaches n3 (term 3) at last; its answer to n1 is delayed in turn.
  n3.step(delayedHeartbeat);
  const [staleReply] = run(() => "hold");
  assert.equal(staleReply.type, "AppendEntriesReply");
  assert.equal(staleReply.term, 3, "the stale answer carries n3's current term");
  // n1 is cut off; n3 and n2 move on to term 4 and commit a write n1 never sees.
  const isolated = (m: Message) => m.from === "n1" || m.to === "n1";
  campaign("n3");
  run((m) => isolated(m) ? "drop" : "deliver");
  assert.equal(n3.role, "Leader");
  n3.propose(enc.encode("PUT\n/x\n2"));
  run((m) => isolated(m) ? "drop" : "deliver");
  assert.ok(n3.commitIndex > n1.commitIndex, "the majority side committed past n1");

  // n1 still believes it leads term 3; a read arrives and starts its round 1.
  n1.readIndex("r1");
  run((m) => isolated(m) ? "drop" : "deliver");
  n1.step(staleReply);
  const reads = n1.takeReady().readStates.filter((r) => r.readId === "r1" && r.ok);
  assert.deepEqual(reads, [], "a reply to a term-1 heartbeat must not confirm a term-3 read");
});

Deno.test("a follower that restarts with less log than the leader's matchIndex is repaired at once", () => {
  const { nodes, run, campaign } = wired({ preVote: false, checkQuorum: true });
  const n1 = nodes.get("n1")!;
  campaign("n1");
  run();
  for (let i = 0; i < 6; i++) n1.propose(enc.encode(`PUT\n/k${i}\nv`));
  run();
  const n3 = nodes.get("n3")!;
  assert.equal(n3.log.lastIndex, 7);
  assert.equal(n1.status().progress.get("n3")!.matchIndex, 7);
  // n3 comes back with the tail of its log gone (a damaged disk repaired by hand): it holds 3.
  const restarted = mk("n3", {
    config: { preVote: false, checkQuorum: true },
    hardState: { ...n3.hardState, commitIndex: 3 },
    entries: n3.log.slice(1, 4),
    nowMs: n3.nowMs,
  });
  nodes.set("n3", restarted);
  // Two heartbeat intervals of the same leader: the first finds the loss, the second proves it.
  for (let beat = 0; beat < 2; beat++) {
    n1.tick(n1.nowMs + n1.config.heartbeatIntervalMs);
    run();
  }
  assert.equal(n1.role, "Leader");
  assert.equal(n1.term, 1, "repaired without a leader change");
  assert.equal(restarted.log.lastIndex, 7);
  assert.equal(restarted.commitIndex, 7);
  assert.equal(n1.status().progress.get("n3")!.matchIndex, 7);
});
